//! The store's versions as tables of a query session: a stored snapshot registered under a
//! name, read from its Parquet file where it lies (local disk or a bucket).

use datafusion::common::TableReference;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::{CommitRecord, Store};
use crate::error::{Error, Result};

/// Register a stored snapshot (with `_row_hash`) under `alias`, once its size and checksum
/// match its commit record (a damaged baseline is refused, never compared against).
pub async fn register_snapshot(
    ctx: &SessionContext,
    store: &Store,
    table: &str,
    record: &CommitRecord,
    alias: &str,
) -> Result<()> {
    store
        .check_before_reading(record, &record.snapshot, "snapshot")
        .await?;
    store.attach(ctx);
    let path_text = store.file_url(table, &record.snapshot.path);
    ctx.register_parquet(
        TableReference::bare(alias),
        &path_text,
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| Error::Store {
        location: path_text.clone(),
        message: format!(
            "cannot read the snapshot of {table} v{}: {e}. Run `tidemark verify`.",
            record.version
        ),
    })
}
