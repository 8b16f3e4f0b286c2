//! The careful reader: a file read in one piece, with the checks that name a bad line (not
//! text, an unclosed quote, another delimiter), and the line numbers of records.

use super::*;

/// The careful path alone (see [`read_in_one_piece`]): what reading in pieces must agree with.
pub fn read_csv_in_one_piece(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    read_in_one_piece(path, options, &|_| {})
}

/// Read the whole file into memory, check it and parse it in one piece: the careful path,
/// whose errors name the file's line.
pub(super) fn read_in_one_piece(
    path: &Path,
    options: &SourceOptions,
    step: &dyn Fn(&str),
) -> Result<FileRead> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    step("read");
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
    // A workbook, a Parquet file or other binary data under a .csv name would otherwise be
    // reported as "not valid UTF-8 (is it Latin-1?)", which sends the user the wrong way.
    if let Some(what) = not_text(bytes) {
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: format!("the file is not a CSV text file: {what}."),
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
            column: column_holding(body, options.delimiter, e.valid_up_to()),
            message: "the file is not valid UTF-8 (is it Latin-1 or Windows-1252?). Re-export it as UTF-8.".into(),
        });
    }

    // arrow-csv ends a quoted field that is never closed at the end of the file, silently
    // reading every later line into one value; refuse it, naming the line the quote opens on.
    if let Some(line) = unclosed_quote(body, options.delimiter) {
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: Some((skip + line) as u64),
            column: None,
            message: "malformed CSV: the quote that opens a field on this line is never closed, so the rest of the file would be read as one value. Add the closing quote; a quote inside a quoted value is written twice (\"\").".into(),
        });
    }
    step("checked");
    let names = header_names(body, options.delimiter)
        .map_err(|e| data_error(path, options.header_row, &e))?;
    check_header(path, options.header_row, &names)?;
    warn_if_other_delimiter(path, options.delimiter, &names);
    let text_schema = text_schema(&names);
    let nulls = null_regex(&options.null_values);
    let batches = parse_text(body, true, &text_schema, options.delimiter, &nulls)
        .map_err(|e| data_error(path, options.header_row, &e))?;
    step("parsed");
    let read = finish_typing(path, options, &text_schema, batches, None, Vec::new())?;
    step("typed");
    Ok(read)
}

/// Byte offset just after the first `lines` lines, or None when the file has fewer.
pub(super) fn offset_after_lines(bytes: &[u8], lines: usize) -> Option<usize> {
    let mut offset = 0;
    for _ in 0..lines {
        let newline = bytes[offset..].iter().position(|&b| b == b'\n')?;
        offset += newline + 1;
    }
    Some(offset)
}

/// The regex of the cell texts read as null; None for the default (only the empty text), which
/// the reader checks without a regex for every field.
pub(super) fn null_regex(null_values: &[String]) -> Option<regex::Regex> {
    if null_values == [""] {
        return None;
    }
    let pattern = if null_values.is_empty() {
        // Matches nothing: every field is a value, "" included.
        r"\A\b\B\z".to_string()
    } else {
        let alternatives: Vec<String> = null_values.iter().map(|v| regex::escape(v)).collect();
        format!("^(?:{})$", alternatives.join("|"))
    };
    Some(regex::Regex::new(&pattern).expect("escaped literals form a valid regex"))
}

pub(super) fn check_header(path: &Path, header_row: usize, names: &[String]) -> Result<()> {
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

/// What a file that is not text is, judging by its first bytes, or None for text.
pub(super) fn not_text(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(8192)];
    let real_format = if head.starts_with(b"PK\x03\x04") {
        "it is a ZIP file, such as an Excel workbook (.xlsx); if it is one, set `format: excel`"
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        "it is an OLE2 file, such as a legacy Excel workbook (.xls); if it is one, set `format: excel`"
    } else if head.starts_with(b"PAR1") {
        "it is a Parquet file; set `format: parquet`"
    } else if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        "it is UTF-16 text (Excel's \"Unicode text\"); re-export it as UTF-8 CSV"
    } else if head.contains(&0) && std::str::from_utf8(head).is_err_and(|e| e.error_len().is_some())
    {
        "it holds binary data; check `source.path`, or set `format:` to the file's real format"
    } else {
        return None;
    };
    Some(real_format)
}

/// The 1-based line (counted from the start of `body`) on which a quoted field opens that is
/// never closed, if any. Follows the quoting arrow-csv applies: a quote opens a field only at
/// the start of a field, `""` inside it is a quote, and quotes inside unquoted fields are text.
pub(super) fn unclosed_quote(body: &[u8], delimiter: u8) -> Option<usize> {
    // A closed quoted field holds an even number of quotes, so an odd total is needed for an
    // unclosed one (quotes inside unquoted fields aside); the common case costs one count.
    if body.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
        return None;
    }
    let (state, opened_on) = scan_quotes(body, delimiter);
    (state == QuoteState::Quoted).then_some(opened_on)
}

/// The name of the column the byte at `offset` lies in (the header's name for that field, or
/// `column_N`), or `None` when the byte is in the header itself.
fn column_holding(body: &[u8], delimiter: u8, offset: usize) -> Option<String> {
    let mut in_quotes = false;
    let mut field = 0;
    let mut header_len = None;
    for (i, &b) in body[..offset].iter().enumerate() {
        match b {
            // A doubled quote inside a quoted field toggles twice: boundaries stay right.
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => {
                field = 0;
                header_len.get_or_insert(i + 1);
            }
            b if b == delimiter && !in_quotes => field += 1,
            _ => {}
        }
    }
    let names = super::header_names(&body[..header_len?], delimiter).unwrap_or_default();
    Some(
        names
            .get(field)
            .cloned()
            .unwrap_or_else(|| format!("column_{}", field + 1)),
    )
}

/// Where a CSV scanner is after some bytes, as far as quoting goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Scan `bytes` from the start of a record: the state at the end, and the line (from 1) on
/// which the last quoted field opened.
pub(super) fn scan_quotes(bytes: &[u8], delimiter: u8) -> (QuoteState, usize) {
    let mut state = QuoteState::FieldStart;
    let mut line = 1;
    let mut opened_on = 1;
    for &b in bytes {
        state = match (state, b) {
            (QuoteState::Quoted, b'"') => QuoteState::QuoteInQuoted,
            (QuoteState::Quoted, _) => QuoteState::Quoted,
            (QuoteState::QuoteInQuoted, b'"') => QuoteState::Quoted,
            (QuoteState::FieldStart, b'"') => {
                opened_on = line;
                QuoteState::Quoted
            }
            // The reader ends a record at \n, \r\n and a lone \r alike.
            (_, b'\n' | b'\r') => QuoteState::FieldStart,
            (_, b) if b == delimiter => QuoteState::FieldStart,
            _ => QuoteState::Unquoted,
        };
        if b == b'\n' {
            line += 1;
        }
    }
    (state, opened_on)
}

/// The state [`scan_quotes`] ends in, found faster: by jumping from quote to quote, since only
/// quotes change it (a quote at the start of a field opens a quoted value, up to a quote not
/// followed by another).
pub(super) fn end_state(bytes: &[u8], delimiter: u8) -> QuoteState {
    let mut at = 0;
    while let Some(quote) = memchr::memchr(b'"', &bytes[at..]).map(|k| at + k) {
        let opens = quote == 0
            || matches!(bytes[quote - 1], b'\n' | b'\r')
            || bytes[quote - 1] == delimiter;
        at = quote + 1;
        if !opens {
            continue;
        }
        loop {
            let Some(close) = memchr::memchr(b'"', &bytes[at..]).map(|k| at + k) else {
                return QuoteState::Quoted;
            };
            match bytes.get(close + 1) {
                None => return QuoteState::QuoteInQuoted,
                Some(b'"') => at = close + 2,
                Some(_) => {
                    at = close + 1;
                    break;
                }
            }
        }
    }
    match bytes.last() {
        None => QuoteState::FieldStart,
        Some(&b) if b == b'\n' || b == b'\r' || b == delimiter => QuoteState::FieldStart,
        Some(_) => QuoteState::Unquoted,
    }
}

/// A header of one column that holds another common delimiter: most likely a file separated by
/// that delimiter, read with the wrong one. The key then "does not exist"; say why.
pub(super) fn warn_if_other_delimiter(path: &Path, delimiter: u8, names: &[String]) {
    let [name] = names else { return };
    let other = [b';', b'\t', b'|', b',']
        .into_iter()
        .find(|&d| d != delimiter && name.as_bytes().contains(&d));
    if let Some(d) = other {
        let written = if d == b'\t' {
            "\\t".to_string()
        } else {
            (d as char).to_string()
        };
        tracing::warn!(
            "{}: the header has a single column, \"{name}\"; if the file's fields are separated by \"{written}\", set `delimiter: \"{written}\"` in the table's source.",
            path.display()
        );
    }
}

/// arrow-csv's messages about a line: name the line as a person counts it in the file (the
/// reader counts records from the header, which differ from lines after a field that spans
/// lines) and say what is wrong in plain words.
pub(super) fn data_error(path: &Path, header_row: usize, message: &str) -> Error {
    let skipped_lines = header_row.saturating_sub(1);
    let fields = |n: &str| {
        if n == "1" {
            "1 field".to_string()
        } else {
            format!("{n} fields")
        }
    };
    let what_to_do =
        "Check the delimiter (`delimiter`), quoting and the number of fields on that line.";
    // The reader: "incorrect number of fields for line N, expected E got G", N counting
    // records from the header (1).
    let reader =
        regex::Regex::new(r"incorrect number of fields for line (\d+), expected (\d+) got (\d+)")
            .expect("valid regex");
    // Schema inference (the csv crate): "... Expected E records, found G records at line N",
    // N counting lines from the header.
    let inference = regex::Regex::new(
        r"Expected (\d+) (?:records|fields), found (\d+) (?:records|fields) at line (\d+)",
    )
    .expect("valid regex");
    let (row, expected, got) = if let Some(c) = reader.captures(message) {
        let record: u64 = c[1].parse().unwrap_or(0);
        let index = record.saturating_sub(2);
        let row = record_line(path, header_row, index).unwrap_or(record + skipped_lines as u64);
        (row, c[2].to_string(), c[3].to_string())
    } else if let Some(c) = inference.captures(message) {
        let line: u64 = c[3].parse().unwrap_or(0);
        (
            line + skipped_lines as u64,
            c[1].to_string(),
            c[2].to_string(),
        )
    } else {
        let message = message.strip_prefix("Csv error: ").unwrap_or(message);
        return Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: format!(
                "malformed CSV: {}. {what_to_do}",
                shift_line_numbers(message, skipped_lines)
            ),
        };
    };
    Error::SourceData {
        path: path.to_path_buf(),
        row: Some(row),
        column: None,
        message: format!(
            "malformed CSV: this line has {} where the header has {expected}. {what_to_do}",
            fields(&got)
        ),
    }
}

pub(super) fn shift_line_numbers(message: &str, skipped_lines: usize) -> String {
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
