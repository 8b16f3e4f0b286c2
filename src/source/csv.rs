//! CSV: every field is read as text by arrow-csv (quotes, embedded delimiters and newlines,
//! UTF-8), then declared columns are parsed to their type and the others inferred as whole
//! columns, so that codes like `0123` never silently lose their leading zero.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::csv::reader::{Format, ReaderBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::types::type_text_batch;
use super::{FileRead, FileRows, SourceOptions};
use crate::error::{Error, Result};

/// Read a CSV file into one typed record batch, reporting the cells that do not fit their
/// declared type (they are null in the batch).
pub fn read_csv_rows(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let skip = options.header_row.saturating_sub(1);
    let start = offset_after_lines(bytes, skip).ok_or_else(|| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "`header_row: {}` is beyond the end of the file, which has fewer lines. Check `header_row`.",
            options.header_row
        ),
    })?;
    let body = &bytes[start..];
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::SourceEmpty {
            path: path.to_path_buf(),
        });
    }
    if let Err(e) = std::str::from_utf8(body) {
        let line = 1
            + skip
            + body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: Some(line as u64),
            column: None,
            message: "the file is not valid UTF-8 (is it Latin-1 or Windows-1252?). Re-export it as UTF-8.".into(),
        });
    }

    let format = Format::default()
        .with_header(true)
        .with_delimiter(options.delimiter);
    let (inferred, _) = format
        .infer_schema(body, Some(1))
        .map_err(|e| data_error(path, skip, &e.to_string()))?;
    let names: Vec<String> = inferred.fields().iter().map(|f| f.name().clone()).collect();
    check_header(path, options.header_row, &names)?;
    let text_schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = ReaderBuilder::new(text_schema.clone())
        .with_header(true)
        .with_delimiter(options.delimiter)
        .with_null_regex(null_regex(&options.null_values))
        .with_batch_size(64 * 1024)
        .build(body)
        .map_err(|e| data_error(path, skip, &e.to_string()))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| data_error(path, skip, &e.to_string()))?);
    }
    let text = concat_batches(&text_schema, &batches)
        .map_err(|e| Error::engine("reading CSV", e.into()))?;
    let (batch, cell_errors) = type_text_batch(&text, &options.columns)?;
    Ok(FileRead {
        batch,
        rows: FileRows::CsvLines {
            path: path.to_path_buf(),
            header_row: options.header_row,
        },
        cell_errors,
    })
}

/// Byte offset just after the first `lines` lines, or None when the file has fewer.
fn offset_after_lines(bytes: &[u8], lines: usize) -> Option<usize> {
    let mut offset = 0;
    for _ in 0..lines {
        let newline = bytes[offset..].iter().position(|&b| b == b'\n')?;
        offset += newline + 1;
    }
    Some(offset)
}

fn null_regex(null_values: &[String]) -> regex::Regex {
    let pattern = if null_values.is_empty() {
        // Matches nothing: every field is a value, "" included.
        r"\A\b\B\z".to_string()
    } else {
        let alternatives: Vec<String> = null_values.iter().map(|v| regex::escape(v)).collect();
        format!("^(?:{})$", alternatives.join("|"))
    };
    regex::Regex::new(&pattern).expect("escaped literals form a valid regex")
}

fn check_header(path: &Path, header_row: usize, names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            return Err(Error::SourceData {
                path: path.to_path_buf(),
                row: Some(header_row as u64),
                column: Some(name.clone()),
                message: format!(
                    "the header names column \"{name}\" twice (columns {} and {}). Rename one in the file.",
                    j + 1,
                    i + 1
                ),
            });
        }
    }
    Ok(())
}

/// arrow-csv counts lines from the first line it was given; shift them to the file's lines.
fn data_error(path: &Path, skipped_lines: usize, message: &str) -> Error {
    // arrow-csv says "records" where it means fields on a line.
    let shifted = shift_line_numbers(message, skipped_lines).replace(" records", " fields");
    Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "malformed CSV: {shifted}. Check the delimiter (`delimiter`), quoting and the number of fields on that line."
        ),
    }
}

fn shift_line_numbers(message: &str, skipped_lines: usize) -> String {
    let re = regex::Regex::new(r"line (\d+)").expect("valid regex");
    re.replace_all(message, |caps: &regex::Captures<'_>| {
        let n: usize = caps[1].parse().unwrap_or(0);
        format!("line {}", n + skipped_lines)
    })
    .into_owned()
}

/// The line on which data record `index` (0-based) starts, as a person counts lines in the file,
/// for error messages.
pub fn record_line(path: &Path, header_row: usize, index: u64) -> Option<u64> {
    record_lines(path, header_row, &[index]).remove(0)
}

/// The lines on which data records `indexes` (0-based, any order) start. Quoted fields may span
/// lines, so records and lines differ; the file is read again only here, once for all indexes,
/// on the error and rejects path.
pub fn record_lines(path: &Path, header_row: usize, indexes: &[u64]) -> Vec<Option<u64>> {
    let mut found = vec![None; indexes.len()];
    let mut order: Vec<usize> = (0..indexes.len()).collect();
    order.sort_by_key(|&k| indexes[k]);
    let Ok(bytes) = std::fs::read(path) else {
        return found;
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let Some(start) = offset_after_lines(bytes, header_row.saturating_sub(1)) else {
        return found;
    };
    let mut wanted = order.into_iter().peekable();
    // Scan from the header record (record 0 of the scan, on line `header_row`).
    let mut line = header_row as u64;
    let mut record = 0u64;
    let mut in_quotes = false;
    let mut at_record_start = false;
    for &b in &bytes[start..] {
        if at_record_start {
            while let Some(&k) = wanted.peek() {
                if indexes[k] + 1 == record {
                    found[k] = Some(line);
                    wanted.next();
                } else if indexes[k] + 1 < record {
                    wanted.next();
                } else {
                    break;
                }
            }
            if wanted.peek().is_none() {
                break;
            }
            at_record_start = false;
        }
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' => {
                line += 1;
                if !in_quotes {
                    record += 1;
                    at_record_start = true;
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_count_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "title\nid,note\n1,\"two\nlines\"\n2,x\n3,\"a \"\"q\"\"\"\n4,y\n",
        )
        .unwrap();
        let lines: Vec<_> = (0..4).map(|i| record_line(&path, 2, i)).collect();
        assert_eq!(lines, [Some(3), Some(5), Some(6), Some(7)]);
    }
}
