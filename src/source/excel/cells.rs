//! Cell values as a person reads them in Excel: numbers without a trailing `.0` or an
//! exponent, dates and times, booleans, error cells; and their text.

use super::*;

/// One cell as either calamine reader hands it over, borrowed so shared strings are not copied.
#[derive(Clone, Copy)]
pub(super) enum Cell<'a> {
    Empty,
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bool(bool),
    DateTime(ExcelDateTime),
    DateTimeIso(&'a str),
    DurationIso(&'a str),
    Error(&'a CellErrorType),
}

pub(super) trait AsCell {
    fn as_cell(&self) -> Cell<'_>;
}

impl AsCell for Data {
    fn as_cell(&self) -> Cell<'_> {
        match self {
            Data::Empty => Cell::Empty,
            Data::Int(v) => Cell::Int(*v),
            Data::Float(v) => Cell::Float(*v),
            Data::String(s) => Cell::Text(s),
            Data::Bool(b) => Cell::Bool(*b),
            Data::DateTime(d) => Cell::DateTime(*d),
            Data::DateTimeIso(s) => Cell::DateTimeIso(s),
            Data::DurationIso(s) => Cell::DurationIso(s),
            Data::Error(e) => Cell::Error(e),
        }
    }
}

impl AsCell for DataRef<'_> {
    fn as_cell(&self) -> Cell<'_> {
        match self {
            DataRef::Empty => Cell::Empty,
            DataRef::Int(v) => Cell::Int(*v),
            DataRef::Float(v) => Cell::Float(*v),
            DataRef::String(s) => Cell::Text(s),
            DataRef::SharedString(s) => Cell::Text(s),
            DataRef::Bool(b) => Cell::Bool(*b),
            DataRef::DateTime(d) => Cell::DateTime(*d),
            DataRef::DateTimeIso(s) => Cell::DateTimeIso(s),
            DataRef::DurationIso(s) => Cell::DurationIso(s),
            DataRef::Error(e) => Cell::Error(e),
        }
    }
}

/// Blank cells do not make a row: styled empty cells and empty strings are common below data.
pub(super) fn is_blank(cell: Cell<'_>) -> bool {
    matches!(cell, Cell::Empty | Cell::Text(""))
}

/// A cell's value once nulls, dates and errors are resolved.
pub(super) enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Microseconds since 1970-01-01, no time zone (Excel has none).
    Timestamp(i64),
    Text(&'a str),
    /// Text made from a cell that is no date: a time of day or a duration.
    Owned(String),
}

/// What the row/column-independent part of reading needs.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) null_values: &'a [String],
    pub(super) is_1904: bool,
}

impl Ctx<'_> {
    pub(super) fn value<'c>(&self, cell: Cell<'c>) -> std::result::Result<Value<'c>, String> {
        Ok(match cell {
            Cell::Empty => Value::Null,
            Cell::Text(s) if self.null_values.iter().any(|n| n == s) => Value::Null,
            Cell::Text(s) => Value::Text(s),
            Cell::Int(v) => Value::Int(v),
            Cell::Float(v) => Value::Float(v),
            Cell::Bool(b) => Value::Bool(b),
            Cell::DateTime(d) => excel_datetime_value(d),
            Cell::DateTimeIso(s) => match TimestampMicrosecondType::parse(s) {
                Some(micros) => Value::Timestamp(micros),
                None => Value::Text(s),
            },
            Cell::DurationIso(s) => Value::Text(s),
            Cell::Error(e) => {
                return Err(format!(
                    "cell holds the Excel error {e}; fix the sheet (or the formula that produces it) and export it again"
                ));
            }
        })
    }

    pub(super) fn error(&self, row: u64, column: &str, message: String) -> Error {
        Error::SourceData {
            path: self.path.to_path_buf(),
            row: Some(row),
            column: Some(column.to_string()),
            message,
        }
    }
}

/// Date cells become timestamps; a time of day without a date (serial below 1) and a duration
/// are not instants, so they stay text as Excel shows them.
pub(super) fn excel_datetime_value(d: ExcelDateTime) -> Value<'static> {
    let serial = d.as_f64();
    if d.is_duration() {
        return Value::Owned(render_clock(serial, true));
    }
    if (0.0..1.0).contains(&serial) {
        return Value::Owned(render_clock(serial, false));
    }
    match d.as_datetime() {
        Some(dt) if serial >= 0.0 => Value::Timestamp(dt.and_utc().timestamp_micros()),
        _ => Value::Float(serial),
    }
}

/// An Excel serial number (days since the workbook's epoch) as microseconds since 1970.
pub(super) fn serial_to_micros(serial: f64, is_1904: bool) -> Option<i64> {
    if !serial.is_finite() || serial < 0.0 {
        return None;
    }
    ExcelDateTime::new(serial, ExcelDateTimeType::DateTime, is_1904)
        .as_datetime()
        .map(|dt| dt.and_utc().timestamp_micros())
}

/// `h:mm:ss` for a time of day or `[h]:mm:ss` for a duration, milliseconds only when present.
pub(super) fn render_clock(days: f64, duration: bool) -> String {
    let total_ms = (days.abs() * MILLIS_PER_DAY).round() as i64;
    let (h, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    let sign = if duration && days < 0.0 { "-" } else { "" };
    let mut out = format!("{sign}{h:02}:{m:02}:{s:02}");
    if ms != 0 {
        let _ = write!(out, ".{ms:03}");
    }
    out
}

/// A number as a person reads it: integral values without `.0`, never an exponent, otherwise
/// the shortest text that reads back as the same f64 (Rust's `Display` for f64 does both).
pub(super) fn write_float(out: &mut impl std::fmt::Write, v: f64) -> std::fmt::Result {
    if v == 0.0 {
        // Avoids "-0" for a negative zero.
        return out.write_str("0");
    }
    write!(out, "{v}")
}

/// ISO 8601; the date alone when there is no time of day, as Excel users type dates.
pub(super) fn write_timestamp(out: &mut impl std::fmt::Write, micros: i64) -> std::fmt::Result {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(dt) => {
            let dt = dt.naive_utc();
            if micros.rem_euclid(MICROS_PER_DAY) == 0 {
                write!(out, "{}", dt.format("%Y-%m-%d"))
            } else {
                write!(out, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.f"))
            }
        }
        None => write!(out, "{micros}"),
    }
}

pub(super) fn write_value(out: &mut impl std::fmt::Write, value: &Value<'_>) -> std::fmt::Result {
    match value {
        Value::Null => Ok(()),
        Value::Int(v) => write!(out, "{v}"),
        Value::Float(v) => write_float(out, *v),
        Value::Bool(true) => out.write_str("TRUE"),
        Value::Bool(false) => out.write_str("FALSE"),
        Value::Timestamp(micros) => write_timestamp(out, *micros),
        Value::Text(s) => out.write_str(s),
        Value::Owned(s) => out.write_str(s),
    }
}

pub(super) fn append_text(builder: &mut StringBuilder, value: &Value<'_>) {
    match value {
        Value::Null => builder.append_null(),
        Value::Text(s) => builder.append_value(s),
        other => {
            // Writing into a String builder cannot fail.
            let _ = write_value(builder, other);
            builder.append_value("");
        }
    }
}

pub(super) fn describe(value: &Value<'_>) -> String {
    let mut out = String::new();
    let _ = write_value(&mut out, value);
    out
}
