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
    let schema = Arc::new(in_file_order(&bytes, inferred));
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

/// Arrow's inference sorts keys by name; a person expects the file's order, which the first
/// object gives (keys that appear only later follow, in inferred order).
fn in_file_order(bytes: &[u8], inferred: Schema) -> Schema {
    let first_line = bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace));
    let Some(Ok(first)) =
        first_line.map(serde_json::from_slice::<indexmap::IndexMap<String, serde_json::Value>>)
    else {
        return inferred;
    };
    let mut fields: Vec<_> = first
        .keys()
        .filter_map(|k| inferred.field_with_name(k).ok().cloned())
        .collect();
    for f in inferred.fields() {
        if !first.contains_key(f.name()) {
            fields.push(f.as_ref().clone());
        }
    }
    Schema::new(fields)
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
