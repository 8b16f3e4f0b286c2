//! A Parquet file encoded on another core while the run goes on (the new snapshot while the
//! comparison runs, the change rows while the snapshot is stored).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;

/// A Parquet file (a snapshot, change rows) being encoded on a blocking thread while the run
/// goes on. Dropped unfinished (the run failed first), it tells the encoder to stop, so the
/// process does not wait for it.
pub struct SideEncoding {
    task: Option<tokio::task::JoinHandle<Result<object_store::PutPayload>>>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl SideEncoding {
    /// Start encoding `batches` on a blocking thread.
    pub fn start(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cancelled.clone();
        let task = tokio::task::spawn_blocking(move || {
            super::encode_parquet_unless(&schema, &batches, &flag)
        });
        SideEncoding {
            task: Some(task),
            cancelled,
        }
    }

    /// The encoded file, once done.
    pub async fn finish(mut self) -> Result<object_store::PutPayload> {
        let task = self.task.take().expect("finished once");
        // Never cancelled while awaited: an error here is the encoder's panic, a bug.
        task.await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl Drop for SideEncoding {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancelled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
