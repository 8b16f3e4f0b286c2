//! Parquet: read as is; the file's own types are its declared types.

use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};

/// Read a Parquet file into record batches of one schema (at least one, maybe empty): kept as
/// read, not concatenated, which would hold the file's rows in memory twice.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let not_parquet = |e: &dyn std::fmt::Display| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: match what_is_wrong(path) {
            Some(what) => what.to_string(),
            None => format!(
                "not a readable Parquet file ({e}). Is it truncated, or another format with a .parquet name?"
            ),
        },
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_parquet(&e))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(super::batch_rows(schema.fields().len()))
        .build()
        .map_err(|e| not_parquet(&e))?;
    let mut batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| not_parquet(&e))?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// The Parquet reader says "corrupt footer" both for a file cut short and for a CSV with a
/// .parquet name; tell them apart by the `PAR1` magic that starts and ends every Parquet file.
fn what_is_wrong(path: &Path) -> Option<&'static str> {
    let bytes = std::fs::read(path).ok()?;
    if !bytes.starts_with(b"PAR1") {
        let head = &bytes[..bytes.len().min(4096)];
        let text = !head.contains(&0)
            && std::str::from_utf8(head).map_or_else(|e| e.error_len().is_none(), |_| true);
        return Some(if text {
            "not a Parquet file: it holds text (a CSV or JSON file with a .parquet name?). Check `source.path`, or set `format:` to the file's real format."
        } else {
            "not a Parquet file: it does not start with Parquet's signature (PAR1). Check `source.path`, or set `format:` to the file's real format."
        });
    }
    if !bytes.ends_with(b"PAR1") {
        return Some(
            "not a readable Parquet file: it is truncated (its footer is missing), a download or copy cut short? Fetch the file again.",
        );
    }
    None
}
