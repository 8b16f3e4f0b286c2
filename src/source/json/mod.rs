//! JSON lines: one object per line; types come from the JSON values, declared columns are cast.

use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::infer_json_schema;
use datafusion::arrow::record_batch::RecordBatch;

use super::types::parse_text_column;
use super::{CellError, FileRead, FileRows, SourceOptions};
use crate::engine;
use crate::error::{Error, Result};

mod shapes;

/// Read a JSON-lines file into one record batch; values that do not fit a declared type are
/// null and reported by line.
pub fn read_json_rows(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::SourceEmpty {
            path: path.to_path_buf(),
        });
    }
    // arrow-json's messages name no line (or "line 1" of the value it was parsing) and show
    // Rust debug output of the value; find the offending line instead (on the error path only).
    let malformed = |e: &dyn std::fmt::Display| match first_bad_line(&bytes) {
        Some((line, message)) => Error::SourceData {
            path: path.to_path_buf(),
            row: Some(line),
            column: None,
            message,
        },
        None => match shapes::first_conflict(&bytes) {
            Some(conflict) => Error::SourceData {
                path: path.to_path_buf(),
                row: Some(conflict.line),
                column: Some(conflict.column),
                message: conflict.message,
            },
            None => Error::SourceData {
                path: path.to_path_buf(),
                row: None,
                column: None,
                message: format!(
                    "malformed JSON lines ({}). Each line must hold one JSON object.",
                    e.to_string().trim_start_matches("Json error: ")
                ),
            },
        },
    };
    let (inferred, _) =
        infer_json_schema(BufReader::new(Cursor::new(&bytes)), None).map_err(|e| malformed(&e))?;
    let schema = Arc::new(in_file_order(&bytes, inferred));
    // A column whose values mix numbers and text is inferred as text; numbers are then read as
    // their text rather than failing the file.
    let reader = ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .with_batch_size(super::batch_rows(schema.fields().len()))
        .build(BufReader::new(Cursor::new(&bytes)))
        .map_err(|e| malformed(&e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| malformed(&e))?;
    let batch =
        concat_batches(&schema, &batches).map_err(|e| engine::error("reading JSON", e.into()))?;
    let (batch, cell_errors) = apply_declared(path, batch, options)?;
    Ok(FileRead {
        batches: vec![batch],
        // Blank lines are skipped by the reader: each object's row is the line it is on.
        rows: FileRows::Listed(std::sync::Arc::new(object_lines(&bytes))),
        cell_errors,
    })
}

/// The first line (1-based, as a person counts lines in the file) that is not one JSON object,
/// and what is wrong with it.
fn first_bad_line(bytes: &[u8]) -> Option<(u64, String)> {
    use serde_json::Value;
    const ONE_OBJECT: &str = "Each line must hold one JSON object (JSON lines).";
    let mut seen_object = false;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if std::str::from_utf8(line).is_err() {
            return Some((
                number,
                "not valid UTF-8 (is the file Latin-1 or Windows-1252?). Re-export it as UTF-8."
                    .into(),
            ));
        }
        let parsed = serde_json::from_slice::<Value>(line);
        // A file that starts with an array of objects, on one line or over several, is a JSON
        // document rather than JSON lines.
        if !seen_object && line.trim_ascii_start().starts_with(b"[") {
            let of_objects = match &parsed {
                Ok(Value::Array(items)) => items.iter().all(Value::is_object),
                Ok(_) => false,
                Err(_) => true,
            };
            if of_objects {
                return Some((
                    number,
                    "the file holds one JSON array; tidemark reads JSON lines, one object per line. Convert it, for example with `jq -c '.[]' FILE.json > FILE.jsonl`, and point `source.path` at the result.".into(),
                ));
            }
        }
        let kind = match parsed {
            Ok(Value::Object(_)) => {
                seen_object = true;
                continue;
            }
            Ok(Value::Array(_)) => "a JSON array",
            Ok(Value::String(_)) => "a JSON string",
            Ok(Value::Number(_)) => "a JSON number",
            Ok(Value::Bool(_)) => "true or false",
            Ok(Value::Null) => "null",
            Err(e) if e.is_eof() => {
                return Some((
                    number,
                    format!(
                        "not valid JSON: the line ends before its value is complete (cut short, or one object written over several lines?). {ONE_OBJECT}"
                    ),
                ));
            }
            Err(e) => {
                // serde_json appends " at line L column C"; the line is always 1 here.
                let text = e.to_string();
                let text = text
                    .rsplit_once(" at line ")
                    .map_or(text.as_str(), |(t, _)| t);
                return Some((
                    number,
                    format!(
                        "not valid JSON: {text} (column {}). {ONE_OBJECT}",
                        e.column()
                    ),
                ));
            }
        };
        return Some((
            number,
            format!("the line holds {kind}, not an object. {ONE_OBJECT}"),
        ));
    }
    None
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
    path: &Path,
    batch: RecordBatch,
    options: &SourceOptions,
) -> Result<(RecordBatch, Vec<CellError>)> {
    if options.columns.is_empty() {
        return Ok((batch, Vec::new()));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut errors = Vec::new();
    for (field, values) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        match options.declared_type(field.name()) {
            Some(t) if t != field.data_type() && field.data_type().is_nested() => {
                return Err(Error::SourceData {
                    path: path.to_path_buf(),
                    row: None,
                    column: Some(field.name().clone()),
                    message: format!(
                        "the column's values are of type {}; they cannot be read as {}. Remove the column from `columns:` to keep them as they are.",
                        super::types::type_name(field.data_type()),
                        super::types::type_name(t)
                    ),
                });
            }
            Some(t) if t != field.data_type() => {
                // Through text, as CSV columns are parsed: 4.5 is no int64 (a cast would cut it
                // to 4) and "abc" no number; each such value rejects its row.
                let text = cast(values, &DataType::Utf8)
                    .map_err(|e| engine::error("reading JSON", e.into()))?;
                let (parsed, mut misfits) = parse_text_column(field.name(), &text, t)?;
                errors.append(&mut misfits);
                fields.push(Field::new(field.name(), t.clone(), true));
                columns.push(parsed);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(values.clone());
            }
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| engine::error("reading JSON", e.into()))?;
    errors.sort_by_key(|e| e.row);
    Ok((batch, errors))
}

/// The 1-based line of each object: every line that is not blank.
fn object_lines(bytes: &[u8]) -> Vec<u64> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, _)| i as u64 + 1)
        .collect()
}
