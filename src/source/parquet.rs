//! Parquet: read as is; the file's own types are its declared types.

use std::path::Path;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

/// Read a Parquet file into one record batch.
pub fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let not_parquet = |e: &dyn std::fmt::Display| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "not a readable Parquet file ({e}). Is it truncated, or another format with a .parquet name?"
        ),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_parquet(&e))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| not_parquet(&e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| not_parquet(&e))?;
    concat_batches(&schema, &batches).map_err(|e| Error::engine("reading Parquet", e.into()))
}
