//! Column types: the names a pipeline file declares (`int64`, `decimal(12,2)`...), inference of
//! undeclared text columns, and parsing text columns to their type with errors that name the
//! row, column and value. All of it runs as Arrow cast kernels over whole columns.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use regex::Regex;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{FormatOptions, array_value_to_string};

use super::CellError;
use crate::engine;
use crate::error::{Error, Result};

/// Parse a type name as written in a pipeline file's `columns:`.
pub fn parse_type(name: &str) -> Option<DataType> {
    let n = name.trim().to_ascii_lowercase();
    let t = match n.as_str() {
        "string" | "text" | "utf8" | "varchar" => DataType::Utf8,
        "int" | "int64" | "bigint" | "integer" => DataType::Int64,
        "int32" => DataType::Int32,
        "float" | "float64" | "double" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" | "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => {
            let inner = n.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            let precision: u8 = p.trim().parse().ok()?;
            let scale: i8 = s.trim().parse().ok()?;
            if precision == 0 || precision > 38 || scale < 0 || scale as u8 > precision {
                return None;
            }
            DataType::Decimal128(precision, scale)
        }
    };
    Some(t)
}

/// The type names `parse_type` accepts, for error messages.
pub const TYPE_NAMES: &str =
    "string, int64, int32, float64, boolean, date, timestamp, decimal(P,S)";

/// The name of a type as a pipeline file would declare it.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Int64 => "int64".into(),
        DataType::Int32 => "int32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        // Types a Parquet or JSON file may bring that a pipeline cannot declare: in words, never
        // the engine's notation (`Struct("x": Int64)`, `FixedSizeBinary(4)`).
        DataType::Int8 | DataType::Int16 => format!("int{}", t.primitive_width().unwrap_or(0) * 8),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            format!("unsigned int{}", t.primitive_width().unwrap_or(0) * 8)
        }
        DataType::Float16 | DataType::Float32 => "float32".into(),
        DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time of day".into(),
        DataType::Duration(_) | DataType::Interval(_) => "duration".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("decimal({p},{s})"),
        DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::FixedSizeBinary(n) => format!("binary of {n} bytes"),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => format!("list of {}", type_name(item.data_type())),
        DataType::Struct(fields) => {
            let names: Vec<&str> = fields.iter().take(5).map(|f| f.name().as_str()).collect();
            let more = fields.len().saturating_sub(names.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("object with fields {}{more}", names.join(", "))
        }
        DataType::Map(_, _) => "map".into(),
        DataType::Dictionary(_, values) => type_name(values),
        DataType::RunEndEncoded(_, values) => type_name(values.data_type()),
        DataType::Null => "empty (no values)".into(),
        DataType::Union(_, _) => "mixed values".into(),
    }
}

fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    }
}

fn lenient() -> CastOptions<'static> {
    CastOptions {
        safe: true,
        format_options: FormatOptions::default(),
    }
}

/// Parse a text column to `target`. A value that does not fit is null in the result and reported
/// as a [`CellError`] of its row; the caller rejects those rows.
pub fn parse_text_column(
    column: &str,
    values: &ArrayRef,
    target: &DataType,
) -> Result<(ArrayRef, Vec<CellError>)> {
    if values.data_type() == target {
        return Ok((values.clone(), Vec::new()));
    }
    let source = if matches!(target, DataType::Boolean) {
        normalise_booleans(values)?
    } else {
        values.clone()
    };
    let unreadable = |e: &dyn std::fmt::Display| Error::SourceData {
        path: std::path::PathBuf::new(),
        row: None,
        column: Some(column.to_string()),
        message: format!("cannot read the column as {}: {e}", type_name(target)),
    };
    let mut parsed = cast_leniently(&source, target).map_err(|e| unreadable(&e))?;
    if target.is_integer() && parsed.null_count() != values.null_count() {
        parsed = integral_numbers(&source, &parsed, target)?;
    }
    let mut errors = Vec::new();
    if parsed.null_count() != values.null_count() {
        let strings = values.as_string::<i32>();
        for i in 0..values.len() {
            if parsed.is_null(i) && !values.is_null(i) {
                errors.push(CellError {
                    row: i,
                    column: column.to_string(),
                    value: strings.value(i).to_string(),
                    message: format!(
                        "column \"{column}\": {}",
                        not_valid(strings.value(i), target)
                    ),
                });
            }
        }
    }
    // No strict cast follows: a text cast that is not `safe` fails exactly where the `safe` one
    // gives null (arrow-cast's text parsers share one parse per value), so with no new nulls it
    // could only agree, at the cost of parsing every value again.
    Ok((parsed, errors))
}

/// Why a text value is not a valid `target`, in words: an integer out of the type's range is
/// said to be one.
fn not_valid(text: &str, target: &DataType) -> String {
    if target.is_integer() && INTEGER.is_match(text.trim()) {
        return format!(
            "value {} is beyond the range of {}; declare the column as a decimal or a string under `source.columns`",
            text.trim(),
            type_name(target)
        );
    }
    format!("value \"{text}\" is not a valid {}", type_name(target))
}

/// The `safe` cast of `values` to `target`: values that do not fit are null.
fn cast_leniently(
    values: &ArrayRef,
    target: &DataType,
) -> std::result::Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    if let DataType::Decimal128(precision, scale) = *target
        && let Some(strings) = values.as_string_opt::<i32>()
        && let Some(decimals) = plain_decimals(strings, precision, scale)
    {
        return Ok(Arc::new(decimals));
    }
    cast_with_options(values, target, &lenient())
}

/// Text decimals in their plain form (`-12.5`: a sign, digits, a point, no more fraction
/// digits than the scale) parsed straight to Decimal128 by arrow's byte-level
/// `parse_decimal`, or None when a value is in another form or does not fit: the cast kernel
/// then reads the column. For plain values both give the same number (they differ only on
/// forms excluded here: `parse_decimal` cuts extra fraction digits where the kernel rounds).
/// Prices are written this way; the kernel's parser builds a string and a 256-bit number for
/// every value, which made it a tenth of a streamed run's time.
fn plain_decimals(
    strings: &StringArray,
    precision: u8,
    scale: i8,
) -> Option<datafusion::arrow::array::Decimal128Array> {
    use datafusion::arrow::compute::kernels::cast_utils::parse_decimal;
    use datafusion::arrow::datatypes::Decimal128Type;
    let scale_digits = usize::try_from(scale).ok()?;
    let plain = |text: &str| {
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        !(whole.is_empty() && fraction.is_empty())
            && fraction.len() <= scale_digits
            && whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
    };
    let parse = |text: &str| {
        plain(text)
            .then(|| parse_decimal::<Decimal128Type>(text, precision, scale).ok())
            .flatten()
    };
    let values = strings
        .iter()
        .map(|text| text.map(parse).map_or(Some(None), |v| v.map(Some)))
        .collect::<Option<datafusion::arrow::array::Decimal128Array>>()?;
    values.with_precision_and_scale(precision, scale).ok()
}

/// Integers written with a zero fraction (`2.0`, as Excel and pandas export them) are integers:
/// fill the values the integer parse left null where the text is such a number.
fn integral_numbers(text: &ArrayRef, parsed: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    let floats = cast_with_options(text, &DataType::Float64, &lenient())
        .map_err(|e| engine::error("reading integers", e.into()))?;
    let floats = floats.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let whole = |i: usize| {
        let v = floats.value(i);
        (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
    };
    let parsed = cast_with_options(parsed, &DataType::Int64, &lenient())
        .map_err(|e| engine::error("reading integers", e.into()))?;
    let parsed = parsed.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let merged: datafusion::arrow::array::Int64Array = (0..parsed.len())
        .map(|i| {
            if !parsed.is_null(i) {
                Some(parsed.value(i))
            } else if floats.is_null(i) {
                None
            } else {
                whole(i)
            }
        })
        .collect();
    cast_with_options(&(Arc::new(merged) as ArrayRef), target, &lenient())
        .map_err(|e| engine::error("reading integers", e.into()))
}

/// A snapshot column read as the type the baseline pinned for it.
#[derive(Debug)]
pub enum Pinned {
    /// The column has the pinned type; values that do not fit (or would change, 5.5 read as an
    /// integer) are null and listed by row with why: each rejects its row.
    Fits {
        /// The column as the pinned type.
        values: ArrayRef,
        /// 0-based rows and messages.
        misfits: Vec<(usize, String)>,
    },
    /// An integer column whose values now have decimals: every value is a number, so the column
    /// widens to float64 (a schema change, reported) rather than rejecting rows.
    Widened {
        /// The column as float64.
        values: ArrayRef,
        /// A row with a fraction, for the report.
        example_row: usize,
    },
}

/// Read a column as the type the baseline pins for it. A value that does not fit, or that would
/// change (5.5 read as an integer, an integer beyond the type's range), is a misfit of its row:
/// never a silent change. A non-key integer column widens to float64 when values gain decimals;
/// a key column (`key_column`) never does (its values are identities, and `2.5` is no new form
/// of `2`), and refuses text with a leading zero (`007` would become the key `7`, another code).
pub fn pin_column(
    column: &str,
    values: &ArrayRef,
    target: &DataType,
    key_column: bool,
) -> Result<Pinned> {
    let show = |i: usize| array_value_to_string(values, i).unwrap_or_default();
    let source =
        if matches!(target, DataType::Boolean) && matches!(values.data_type(), DataType::Utf8) {
            normalise_booleans(values)?
        } else {
            values.clone()
        };
    let mut cast = cast_leniently(&source, target).map_err(|e| Error::SourceData {
        path: std::path::PathBuf::new(),
        row: None,
        column: Some(column.to_string()),
        message: format!(
            "cannot read the column as {} (the type the baseline pins): {e}. Declare the column's type under `source.columns` to change it.",
            type_name(target)
        ),
    })?;
    if target.is_integer()
        && matches!(values.data_type(), DataType::Utf8)
        && cast.null_count() != values.null_count()
    {
        cast = integral_numbers(&source, &cast, target)?;
    }
    let mut misfit = vec![false; values.len()];
    if cast.null_count() != values.null_count() {
        for (i, m) in misfit.iter_mut().enumerate() {
            *m = cast.is_null(i) && !values.is_null(i);
        }
    }
    let leading_zero = |i: usize| {
        key_column
            && target.is_integer()
            && values
                .as_string_opt::<i32>()
                .is_some_and(|t| !t.is_null(i) && LEADING_ZERO.is_match(t.value(i)))
    };
    for (i, m) in misfit.iter_mut().enumerate() {
        *m |= leading_zero(i);
    }
    // Numbers must survive the cast unchanged: 5.5 must not become 5.
    if values.data_type().is_numeric() {
        let back = cast_with_options(&cast, values.data_type(), &lenient())
            .map_err(|e| engine::error("checking a cast", e.into()))?;
        let differs =
            distinct(&back, values).map_err(|e| engine::error("checking a cast", e.into()))?;
        for (i, m) in misfit.iter_mut().enumerate() {
            *m |= differs.value(i) && !values.is_null(i);
        }
    }
    let misfits: Vec<usize> = (0..values.len()).filter(|&i| misfit[i]).collect();
    if misfits.is_empty() {
        return Ok(Pinned::Fits {
            values: cast,
            misfits: Vec::new(),
        });
    }
    // Widened only for decimals: an integer beyond the range (a whole float) rejects its row.
    let with_fraction = |floats: &ArrayRef| {
        let floats = floats.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        misfits.iter().all(|&i| floats.value(i).fract() != 0.0)
    };
    if !key_column
        && target.is_integer()
        && let Ok(floats) = cast_with_options(values, &DataType::Float64, &lenient())
        && floats.null_count() == values.null_count()
        && with_fraction(&floats)
    {
        return Ok(Pinned::Widened {
            values: floats,
            example_row: misfits[0],
        });
    }
    let misfits = misfits
        .into_iter()
        .map(|i| {
            let became = array_value_to_string(&cast, i).unwrap_or_default();
            let why = if leading_zero(i) {
                format!(
                    "value \"{}\" has a leading zero: read as an integer key it would be the key {became}, another code; declare the key column a string under `source.columns` (e.g. {column}: string)",
                    show(i)
                )
            } else if values.data_type().is_numeric() && !cast.is_null(i) {
                format!(
                    "value {} would become {became} as {}",
                    show(i),
                    type_name(target)
                )
            } else {
                not_valid(&show(i), target)
            };
            (
                i,
                format!(
                    "column \"{column}\": {why}; the baseline pins the column as {}",
                    type_name(target)
                ),
            )
        })
        .collect();
    // Misfits the lenient cast turned into another value (5.5 -> 5) must be null, not that value.
    let misfit_mask = BooleanArray::from(misfit);
    let values_out = datafusion::arrow::compute::nullif(&cast, &misfit_mask)
        .map_err(|e| engine::error("checking a cast", e.into()))?;
    Ok(Pinned::Fits {
        values: values_out,
        misfits,
    })
}

/// Map the usual spellings of booleans to ones the cast kernel reads.
fn normalise_booleans(values: &ArrayRef) -> Result<ArrayRef> {
    let strings = values.as_string::<i32>();
    let mapped: StringArray = strings
        .iter()
        .map(|v| {
            v.map(|s| match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => "true".to_string(),
                "false" | "f" | "no" | "n" | "0" => "false".to_string(),
                _ => s.to_string(),
            })
        })
        .collect();
    Ok(Arc::new(mapped))
}

/// Infer the type of an undeclared text column, given as the arrays of its batches: int64,
/// float64, boolean (true/false only), timestamp, else string. Every value of every batch must
/// fit. Texts with a leading zero (`0123`) stay strings, because they are codes (barcodes, zip
/// codes), not numbers; so do integers beyond 18 digits.
pub fn infer_text_column(pieces: &[ArrayRef]) -> Result<DataType> {
    Ok(infer_and_parse(pieces, false).0)
}

/// [`infer_text_column`], with the pieces as parsed to the type when the inference had to
/// parse them to decide (numbers and timestamps) and `keep` asks for them: the caller need not
/// parse them again. Without `keep`, each piece's parse is dropped once checked (a whole
/// file's pieces would otherwise be held at once).
fn infer_and_parse(pieces: &[ArrayRef], keep: bool) -> (DataType, Option<Vec<ArrayRef>>) {
    let non_null = |values: &ArrayRef| values.len() - values.null_count();
    if pieces.iter().map(non_null).sum::<usize>() == 0 {
        return (DataType::Utf8, None);
    }
    let fits = |t: &DataType| -> Option<Vec<ArrayRef>> {
        let mut parsed = Vec::new();
        for values in pieces {
            let cast = cast_with_options(values, t, &lenient())
                .ok()
                .filter(|a| a.null_count() == values.null_count())?;
            if keep {
                parsed.push(cast);
            }
        }
        Some(parsed)
    };
    let all_match = |matches: &dyn Fn(&str) -> bool| pieces.iter().all(|v| texts(v).all(matches));
    let any_match = |matches: &dyn Fn(&str) -> bool| pieces.iter().any(|v| texts(v).any(matches));
    let matching = |pattern: &'static Regex| move |t: &str| pattern.is_match(t);
    // Each whole-column check costs a pass; the first value says which one can succeed (a name
    // or a description is text at once).
    let first = pieces.iter().find_map(|v| texts(v).next()).unwrap_or("");
    if NUMBER.is_match(first) {
        if !any_match(&matching(&CODE_LIKE)) && all_match(&matching(&NUMBER)) {
            if !any_match(&matching(&DECIMAL_POINT))
                && let Some(parsed) = fits(&DataType::Int64)
            {
                return (DataType::Int64, Some(parsed));
            }
            if let Some(parsed) = fits(&DataType::Float64) {
                return (DataType::Float64, Some(parsed));
            }
        }
    } else if BOOLEAN.is_match(first) {
        if all_match(&matching(&BOOLEAN)) {
            return (DataType::Boolean, None);
        }
    } else if is_iso_timestamp(first) && all_match(&is_iso_timestamp) {
        let t = DataType::Timestamp(TimeUnit::Microsecond, None);
        if let Some(parsed) = fits(&t) {
            return (t, Some(parsed));
        }
    }
    (DataType::Utf8, None)
}

/// The non-null values of a text column.
fn texts(values: &ArrayRef) -> impl Iterator<Item = &str> {
    values.as_string::<i32>().iter().flatten()
}

/// Compiled once: inference runs for every column of every batch.
fn pattern(text: &str) -> Regex {
    Regex::new(text).expect("a valid pattern")
}

/// A plain number: what a CSV holds for int64 or float64 columns.
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"));
/// Values that make a numeric-looking column a code: a leading zero, surrounding spaces, or more
/// digits than an int64 holds.
static CODE_LIKE: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[+-]?0[0-9]|^\s|\s$|^[+-]?[0-9]{19,}$"));
/// An integer as text.
static INTEGER: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[+-]?[0-9]+$"));
/// An integer written with a leading zero, a code rather than a number (`007`).
static LEADING_ZERO: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[+-]?0[0-9]"));
/// A number that is no integer.
static DECIMAL_POINT: LazyLock<Regex> = LazyLock::new(|| pattern(r"[.eE]"));
/// `true` / `false` in any case.
static BOOLEAN: LazyLock<Regex> = LazyLock::new(|| pattern(r"^(?i)(true|false)$"));

/// An ISO date or date-time, optionally with a zone: what the regex
/// `^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$` accepts, with
/// ASCII digits (the only ones the cast to a timestamp reads). Checked by hand: a timestamp
/// column is checked value by value, and the regex was a twentieth of a 10M-row run's CPU.
fn is_iso_timestamp(text: &str) -> bool {
    fn digits(bytes: &[u8], count: usize) -> Option<&[u8]> {
        let (head, rest) = bytes.split_at_checked(count)?;
        head.iter().all(u8::is_ascii_digit).then_some(rest)
    }
    fn byte(bytes: &[u8], wanted: impl Fn(u8) -> bool) -> Option<&[u8]> {
        let (&first, rest) = bytes.split_first()?;
        wanted(first).then_some(rest)
    }
    let date = || {
        let rest = byte(digits(text.as_bytes(), 4)?, |b| b == b'-')?;
        digits(byte(digits(rest, 2)?, |b| b == b'-')?, 2)
    };
    let Some(rest) = date() else { return false };
    if rest.is_empty() {
        return true;
    }
    let time = || {
        let rest = byte(rest, |b| b == b'T' || b == b' ')?;
        let mut rest = digits(byte(digits(rest, 2)?, |b| b == b':')?, 2)?;
        if let Some(seconds) = byte(rest, |b| b == b':') {
            rest = digits(seconds, 2)?;
            if let Some(fraction) = byte(rest, |b| b == b'.') {
                let count = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
                rest = digits(fraction, count.max(1))?;
            }
        }
        Some(rest)
    };
    let Some(zone) = time() else { return false };
    match zone {
        [] | [b'Z'] => true,
        [b'+' | b'-', rest @ ..] => {
            let rest = digits(rest, 2);
            let rest = rest.map(|r| byte(r, |b| b == b':').unwrap_or(r));
            rest.and_then(|r| digits(r, 2))
                .is_some_and(<[u8]>::is_empty)
        }
        _ => false,
    }
}

/// Parse the declared columns of a batch of text columns to their types; the others stay
/// text. Cells that do not fit are null and listed, by row of this batch. Loaders call it on
/// each piece as soon as it is read, while other pieces are still being read.
pub fn parse_declared(
    batch: &RecordBatch,
    declared: &[(String, DataType)],
) -> Result<(RecordBatch, Vec<CellError>)> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut errors = Vec::new();
    for (field, values) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        match declared.iter().find(|(n, _)| n == field.name()) {
            Some((_, target)) => {
                let (parsed, mut misfits) = parse_text_column(field.name(), values, target)?;
                errors.append(&mut misfits);
                fields.push(Field::new(field.name(), target.clone(), true));
                columns.push(parsed);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(values.clone());
            }
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| engine::error("typing the source columns", e.into()))?;
    Ok((batch, errors))
}

/// An undeclared column of one batch, typed by what that batch's values alone suggest.
pub type Guess = Option<(DataType, ArrayRef)>;

/// For each column of a batch of text columns: the type its values alone suggest and the
/// values parsed to it, or None (a declared column, no values, or a value that does not fit).
/// Loaders guess on each piece while other pieces are still read; the guesses hold for the file
/// when every batch with values guesses the same type (see [`type_text_batches`]).
pub fn guess_types(batch: &RecordBatch, declared: &[(String, DataType)]) -> Vec<Guess> {
    let schema = batch.schema();
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(values, field)| {
            let undeclared = declared.iter().all(|(n, _)| n != field.name());
            if !undeclared || values.null_count() == values.len() {
                return None;
            }
            let (target, parsed) = infer_and_parse(std::slice::from_ref(values), true);
            if let Some(mut parsed) = parsed {
                return parsed.pop().map(|parsed| (target, parsed));
            }
            match parse_text_column(field.name(), values, &target) {
                Ok((parsed, misfits)) if misfits.is_empty() => Some((target, parsed)),
                _ => None,
            }
        })
        .collect()
}

/// A batch of one piece (declared columns parsed, the others text, see [`parse_declared`])
/// typed as `targets` *only where its own guesses say so*: each undeclared column with values
/// must have guessed its target (text too: a text column whose values all look like numbers
/// would be typed as numbers by the file's own inference, then written back as text in their
/// canonical form), so that the batch comes out as [`type_text_batches`] would type it were
/// every batch of the file to agree on that type. None when a column does not: the caller then
/// reads the file the usual way, which looks at all batches first.
pub fn type_batch_as(
    batch: &RecordBatch,
    guesses: Vec<Guess>,
    targets: &[DataType],
    declared: &[(String, DataType)],
) -> Result<Option<RecordBatch>> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (((values, guess), target), field) in batch
        .columns()
        .iter()
        .zip(guesses)
        .zip(targets)
        .zip(schema.fields())
    {
        let is_declared = declared.iter().any(|(name, _)| name == field.name());
        columns.push(if is_declared {
            if values.data_type() != target {
                return Ok(None);
            }
            values.clone()
        } else if values.null_count() == values.len() {
            datafusion::arrow::array::new_null_array(target, values.len())
        } else {
            match guess {
                Some((guessed, parsed)) if &guessed == target => parsed,
                _ => return Ok(None),
            }
        });
    }
    let schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .zip(targets)
            .map(|(f, t)| Field::new(f.name(), t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns)
        .map(Some)
        .map_err(|e| engine::error("typing the source columns", e.into()))
}

/// Type the batches of one file, read as text (declared columns may already be parsed by
/// [`parse_declared`]): declared columns are parsed, the others inferred over all batches
/// together, so a column has one type across the file. Columns keep their order. Cells that do
/// not fit are null and listed (unordered; the caller orders them with its own), by row counted
/// from the first batch.
/// The work is spread over the cores by column and batch.
///
/// `guesses` (from [`guess_types`], one list per batch) save the inference: when every batch
/// that has values in a column guessed the same type, that is the type the inference over the
/// whole column finds (the first value picks the same family, every value matches and fits),
/// and the guessed values are used as they are.
pub fn type_text_batches(
    batches: &[RecordBatch],
    declared: &[(String, DataType)],
    mut guesses: Option<Vec<Vec<Guess>>>,
) -> Result<(Vec<RecordBatch>, Vec<CellError>)> {
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let schema = first.schema();
    let declared_type = |name: &String| declared.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let column =
        |i: usize| -> Vec<ArrayRef> { batches.iter().map(|b| b.column(i).clone()).collect() };
    let positions: Vec<usize> = (0..schema.fields().len()).collect();
    // The type all batches with values guessed for column i, if they agree.
    let agreed = |i: usize| -> Option<DataType> {
        let guesses = guesses.as_ref()?;
        let mut agreed: Option<&DataType> = None;
        for (batch, guessed) in batches.iter().zip(guesses) {
            let values = batch.column(i);
            if values.null_count() == values.len() {
                continue;
            }
            let (t, _) = guessed[i].as_ref()?;
            if agreed.is_some_and(|a| a != t) {
                return None;
            }
            agreed = Some(t);
        }
        agreed.cloned()
    };
    let targets = crate::parallel::map(&positions, |&i| -> Result<DataType> {
        let field = schema.field(i);
        match declared_type(field.name()) {
            Some(t) => Ok(t.clone()),
            None => match agreed(i) {
                Some(t) => Ok(t),
                None => infer_text_column(&column(i)),
            },
        }
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    // Guessed values of the agreed type stand in for the text.
    let mut batches: Vec<RecordBatch> = batches.to_vec();
    if let Some(guesses) = guesses.as_mut() {
        for (batch, guessed) in batches.iter_mut().zip(guesses) {
            let mut columns = batch.columns().to_vec();
            let mut fields: Vec<Field> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            for (i, guess) in guessed.iter_mut().enumerate() {
                if let Some((t, values)) = guess.take()
                    && t == targets[i]
                {
                    fields[i] = Field::new(fields[i].name(), t, true);
                    columns[i] = values;
                }
            }
            *batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                .map_err(|e| engine::error("typing the source columns", e.into()))?;
        }
    }
    let batches = &batches[..];
    let mut starts = Vec::with_capacity(batches.len());
    let mut rows = 0;
    for batch in batches {
        starts.push(rows);
        rows += batch.num_rows();
    }
    // Each (column, batch) that is not yet of its type is one piece of work.
    let work: Vec<(usize, usize)> = positions
        .iter()
        .flat_map(|&c| (0..batches.len()).map(move |b| (c, b)))
        .filter(|&(c, b)| batches[b].column(c).data_type() != &targets[c])
        .collect();
    let parsed = crate::parallel::map(&work, |&(c, b)| {
        parse_text_column(schema.field(c).name(), batches[b].column(c), &targets[c])
    });
    let mut columns: Vec<Vec<ArrayRef>> = batches.iter().map(|b| b.columns().to_vec()).collect();
    let mut errors = Vec::new();
    for (&(c, b), result) in work.iter().zip(parsed) {
        let (values, misfits) = result?;
        columns[b][c] = values;
        errors.extend(misfits.into_iter().map(|mut e| {
            e.row += starts[b];
            e
        }));
    }
    let typed_schema = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .zip(&targets)
            .map(|(f, t)| Field::new(f.name(), t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batches = columns
        .into_iter()
        .map(|columns| RecordBatch::try_new(typed_schema.clone(), columns))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| engine::error("typing the source columns", e.into()))?;
    Ok((batches, errors))
}

/// Cast a batch to `schema` (same column names, possibly wider types), for files concatenated
/// with `files: all`.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef, path: &Path) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, values) in schema.fields().iter().zip(batch.columns()) {
        let cast = cast_with_options(values, field.data_type(), &strict()).map_err(|e| Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: Some(field.name().clone()),
            message: format!(
                "its values do not fit the type {} found in the first file: {e}. Declare the column's type under `source.columns`.",
                type_name(field.data_type())
            ),
        })?;
        columns.push(cast);
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| engine::error("combining source files", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written timestamp check accepts what the inference regex did, with ASCII
    /// digits: every well-formed shape, and every string made by cutting, doubling or
    /// replacing a character of one.
    #[test]
    fn iso_timestamps_are_what_the_regex_accepts() {
        let regex = Regex::new(
            r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$",
        )
        .unwrap();
        let shapes = [
            "2024-01-15",
            "2024-01-15T10:00",
            "2024-01-15 10:00:59",
            "2024-01-15T10:00:59.5",
            "2024-01-15T10:00:59.123456Z",
            "2024-01-15T10:00+01:00",
            "2024-01-15T10:00:59-0530",
            "2024-01-15 10:00:59.1+05",
            "2024-01-15Z",
            "20240115",
            "",
        ];
        let mut checked = 0;
        for shape in shapes {
            let mut variants = vec![shape.to_string()];
            for (i, c) in shape.char_indices() {
                let (head, tail) = (&shape[..i], &shape[i + c.len_utf8()..]);
                variants.push(format!("{head}{tail}"));
                variants.push(format!("{head}{c}{c}{tail}"));
                for other in ['0', '9', 'x', '-', ':', '.', 'T', ' ', 'Z', '+', '٣'] {
                    variants.push(format!("{head}{other}{tail}"));
                }
            }
            for text in variants {
                assert_eq!(is_iso_timestamp(&text), regex.is_match(&text), "{text:?}");
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
        assert!(is_iso_timestamp("2024-01-15T10:00:59.123456Z"));
        assert!(!is_iso_timestamp("2024-01-15T10:00:59."));
    }

    /// Baselines store column types as text; every type tidemark produces must read back.
    #[test]
    fn types_a_pipeline_cannot_declare_are_named_in_words() {
        use datafusion::arrow::datatypes::Fields;
        let object = DataType::Struct(Fields::from(vec![
            Field::new("w", DataType::Int64, true),
            Field::new("h", DataType::Int64, true),
        ]));
        assert_eq!(type_name(&object), "object with fields w, h");
        assert_eq!(
            type_name(&DataType::FixedSizeBinary(4)),
            "binary of 4 bytes"
        );
        assert_eq!(
            type_name(&DataType::List(Arc::new(Field::new("item", object, true)))),
            "list of object with fields w, h"
        );
        assert_eq!(type_name(&DataType::UInt16), "unsigned int16");
        assert_eq!(
            type_name(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            )),
            "string"
        );
    }

    #[test]
    fn pinned_type_names_round_trip() {
        for name in [
            "string",
            "int64",
            "int32",
            "float64",
            "boolean",
            "date",
            "timestamp",
            "decimal(12,2)",
        ] {
            let t = parse_type(name).unwrap();
            let back: DataType = t.to_string().parse().unwrap();
            assert_eq!(back, t, "{name}");
        }
        let zoned = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(zoned.to_string().parse::<DataType>().unwrap(), zoned);
    }

    /// The plain-decimal parser agrees with the cast kernel value by value, and hands every
    /// other form (rounding, exponents, spaces, out of range) to the kernel.
    #[test]
    fn plain_decimals_read_as_the_cast_kernel_does() {
        let texts = [
            "12.5", "-12.50", "+3", "007.1", "-0", "5.", ".5", "-.25", "99999.99", "0.00",
        ];
        let values = StringArray::from(
            texts
                .iter()
                .map(|t| Some(*t))
                .chain([None])
                .collect::<Vec<_>>(),
        );
        let target = DataType::Decimal128(7, 2);
        let fast = plain_decimals(&values, 7, 2).expect("all plain");
        let kernel =
            cast_with_options(&(Arc::new(values.clone()) as ArrayRef), &target, &lenient())
                .unwrap();
        assert_eq!(&(Arc::new(fast) as ArrayRef), &kernel);
        assert_eq!(kernel.null_count(), 1);
        for other in [
            "1.005",
            "1e3",
            " 4",
            "100000.00",
            ".",
            "-",
            "",
            "1.2.3",
            "x1",
        ] {
            let one = StringArray::from(vec![Some("1.5"), Some(other)]);
            assert!(plain_decimals(&one, 7, 2).is_none(), "{other:?}");
            let through = cast_leniently(&(Arc::new(one.clone()) as ArrayRef), &target).unwrap();
            let kernel =
                cast_with_options(&(Arc::new(one) as ArrayRef), &target, &lenient()).unwrap();
            assert_eq!(&through, &kernel, "{other:?}");
        }
    }

    #[test]
    fn codes_with_leading_zeros_stay_strings() {
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("0123"), Some("456"), None]));
        assert_eq!(
            infer_text_column(std::slice::from_ref(&values)).unwrap(),
            DataType::Utf8
        );
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("123"), Some("-456"), None]));
        assert_eq!(
            infer_text_column(std::slice::from_ref(&values)).unwrap(),
            DataType::Int64
        );
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("1.5"), Some("0.25")]));
        assert_eq!(
            infer_text_column(std::slice::from_ref(&values)).unwrap(),
            DataType::Float64
        );
        let values: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-15 10:00:00"),
            Some("2024-01-16"),
        ]));
        assert_eq!(
            infer_text_column(std::slice::from_ref(&values)).unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
    }

    #[test]
    fn a_value_that_does_not_fit_is_reported_with_its_row() {
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("1"), Some("12 pcs")]));
        let (parsed, errors) = parse_text_column("Qty", &values, &DataType::Int64).unwrap();
        assert!(parsed.is_null(1));
        assert_eq!(
            errors,
            [CellError {
                row: 1,
                column: "Qty".into(),
                value: "12 pcs".into(),
                message: "column \"Qty\": value \"12 pcs\" is not a valid int64".into(),
            }]
        );
    }

    #[test]
    fn pinned_integers_widen_for_decimals_and_reject_text() {
        let floats: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![
            Some(1.0),
            Some(5.5),
            None,
        ]));
        match pin_column("Qty", &floats, &DataType::Int64, false).unwrap() {
            Pinned::Widened { example_row, .. } => assert_eq!(example_row, 1),
            other => panic!("{other:?}"),
        }
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("1"),
            Some("12 pcs"),
            Some("3"),
        ]));
        match pin_column("Qty", &text, &DataType::Int64, false).unwrap() {
            Pinned::Fits { values, misfits } => {
                assert_eq!(misfits.len(), 1);
                assert_eq!(misfits[0].0, 1);
                assert!(values.is_null(1) && !values.is_null(2));
            }
            other => panic!("{other:?}"),
        }
    }
}
