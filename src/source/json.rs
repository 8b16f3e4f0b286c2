//! JSON lines: one object per line; types come from the JSON values, declared columns are cast.

use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::infer_json_schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;

use super::{CellError, FileRead, FileRows, SourceOptions};
use crate::error::{Error, Result};

/// Read a JSON-lines file into one record batch; values that do not fit a declared type are
/// null and reported by line.
pub fn read_json_rows(path: &Path, options: &SourceOptions) -> Result<FileRead> {
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
    let (batch, cell_errors) = apply_declared(batch, options)?;
    Ok(FileRead {
        batch,
        // Blank lines are skipped by the reader, so objects are counted, not lines.
        rows: FileRows::From(1),
        cell_errors,
    })
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

fn apply_declared(
    batch: RecordBatch,
    options: &SourceOptions,
) -> Result<(RecordBatch, Vec<CellError>)> {
    if options.columns.is_empty() {
        return Ok((batch, Vec::new()));
    }
    let lenient = CastOptions {
        safe: true,
        ..Default::default()
    };
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut errors = Vec::new();
    for (field, values) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        match options.declared_type(field.name()) {
            Some(t) if t != field.data_type() => {
                let cast =
                    cast_with_options(values, t, &lenient).map_err(|e| Error::SourceData {
                        path: std::path::PathBuf::new(),
                        row: None,
                        column: Some(field.name().clone()),
                        message: format!(
                            "cannot read the column as {}: {e}",
                            super::types::type_name(t)
                        ),
                    })?;
                for i in 0..values.len() {
                    if cast.is_null(i) && !values.is_null(i) {
                        let value = array_value_to_string(values, i).unwrap_or_default();
                        errors.push(CellError {
                            row: i,
                            column: field.name().clone(),
                            message: format!(
                                "column \"{}\": value {value} is not a valid {}",
                                field.name(),
                                super::types::type_name(t)
                            ),
                            value,
                        });
                    }
                }
                fields.push(Field::new(field.name(), t.clone(), true));
                columns.push(cast);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(values.clone());
            }
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::engine("reading JSON", e.into()))?;
    errors.sort_by_key(|e| e.row);
    Ok((batch, errors))
}
