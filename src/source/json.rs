//! JSON lines: one object per line; types come from the JSON values, declared columns are cast.

use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::infer_json_schema;
use datafusion::arrow::record_batch::RecordBatch;

use super::SourceOptions;
use crate::error::{Error, Result};

/// Read a JSON-lines file into one record batch.
pub fn read_json(path: &Path, options: &SourceOptions) -> Result<RecordBatch> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::SourceEmpty {
            path: path.to_path_buf(),
        });
    }
    let malformed = |e: &dyn std::fmt::Display| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!("malformed JSON lines ({e}). Each line must hold one JSON object."),
    };
    let (inferred, _) =
        infer_json_schema(BufReader::new(Cursor::new(&bytes)), None).map_err(|e| malformed(&e))?;
    // Declared columns are read with their declared type where JSON allows it, else cast below.
    let schema = Arc::new(inferred);
    let reader = ReaderBuilder::new(schema.clone())
        .with_batch_size(64 * 1024)
        .build(BufReader::new(Cursor::new(&bytes)))
        .map_err(|e| malformed(&e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| malformed(&e))?;
    let batch =
        concat_batches(&schema, &batches).map_err(|e| Error::engine("reading JSON", e.into()))?;
    apply_declared(path, batch, options)
}

fn apply_declared(path: &Path, batch: RecordBatch, options: &SourceOptions) -> Result<RecordBatch> {
    if options.columns.is_empty() {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, values) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        match options.declared_type(field.name()) {
            Some(t) if t != field.data_type() => {
                let cast = cast(values, t).map_err(|e| Error::SourceData {
                    path: path.to_path_buf(),
                    row: None,
                    column: Some(field.name().clone()),
                    message: format!(
                        "cannot read the column as {}: {e}",
                        super::types::type_name(t)
                    ),
                })?;
                fields.push(Field::new(field.name(), t.clone(), true));
                columns.push(cast);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(values.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::engine("reading JSON", e.into()))
}
