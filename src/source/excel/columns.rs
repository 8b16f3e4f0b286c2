//! A column's type: inferred from the kinds its cells share, or declared and each cell
//! converted to it; the Arrow builders the cells go into.

use super::*;

/// The kinds an undeclared column can settle on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Int,
    Float,
    Bool,
    Timestamp,
    Text,
}

pub(super) fn kind_of(value: &Value<'_>) -> Option<Kind> {
    Some(match value {
        Value::Null => return None,
        Value::Int(v) if (*v as f64).abs() < MAX_EXACT_INT => Kind::Int,
        Value::Int(_) => Kind::Float,
        Value::Float(v) if v.fract() == 0.0 && v.abs() < MAX_EXACT_INT => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Bool(_) => Kind::Bool,
        Value::Timestamp(_) => Kind::Timestamp,
        Value::Text(_) | Value::Owned(_) => Kind::Text,
    })
}

/// An undeclared column: typed by the cells seen so far, widened (int to float, anything mixed
/// to text) when a cell does not fit, so that values still go straight into a builder.
pub(super) enum Inferred {
    Nulls(usize),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

impl Inferred {
    pub(super) fn accepts(&self, kind: Kind) -> bool {
        match self {
            Inferred::Nulls(_) => false,
            Inferred::Int(_) => kind == Kind::Int,
            Inferred::Float(_) => matches!(kind, Kind::Int | Kind::Float),
            Inferred::Bool(_) => kind == Kind::Bool,
            Inferred::Timestamp(_) => kind == Kind::Timestamp,
            Inferred::Text(_) => true,
        }
    }

    pub(super) fn push(&mut self, value: &Value<'_>) {
        let Some(kind) = kind_of(value) else {
            self.push_null();
            return;
        };
        if !self.accepts(kind) {
            self.widen(kind);
        }
        match (self, value) {
            (Inferred::Int(b), Value::Int(v)) => b.append_value(*v),
            (Inferred::Int(b), Value::Float(v)) => b.append_value(*v as i64),
            (Inferred::Float(b), Value::Int(v)) => b.append_value(*v as f64),
            (Inferred::Float(b), Value::Float(v)) => b.append_value(*v),
            (Inferred::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (Inferred::Timestamp(b), Value::Timestamp(v)) => b.append_value(*v),
            (Inferred::Text(b), value) => append_text(b, value),
            // `widen` made the builder fit the value; this arm only keeps the row count right.
            (other, _) => other.push_null(),
        }
    }

    pub(super) fn push_null(&mut self) {
        match self {
            Inferred::Nulls(n) => *n += 1,
            Inferred::Int(b) => b.append_null(),
            Inferred::Float(b) => b.append_null(),
            Inferred::Bool(b) => b.append_null(),
            Inferred::Timestamp(b) => b.append_null(),
            Inferred::Text(b) => b.append_null(),
        }
    }

    /// Rebuild the column as `kind` (from nothing but nulls), as float (from int) or as text
    /// (anything mixed), re-appending the values seen so far.
    pub(super) fn widen(&mut self, kind: Kind) {
        let old = std::mem::replace(self, Inferred::Nulls(0));
        *self = match old {
            Inferred::Nulls(n) => {
                let mut fresh = match kind {
                    Kind::Int => Inferred::Int(Int64Builder::new()),
                    Kind::Float => Inferred::Float(Float64Builder::new()),
                    Kind::Bool => Inferred::Bool(BooleanBuilder::new()),
                    Kind::Timestamp => Inferred::Timestamp(TimestampMicrosecondBuilder::new()),
                    Kind::Text => Inferred::Text(StringBuilder::new()),
                };
                for _ in 0..n {
                    fresh.push_null();
                }
                fresh
            }
            Inferred::Int(mut b) if kind == Kind::Float => {
                let ints = b.finish();
                let mut floats = Float64Builder::with_capacity(ints.len());
                floats.extend(ints.iter().map(|v| v.map(|v| v as f64)));
                Inferred::Float(floats)
            }
            Inferred::Int(mut b) => {
                let values = b.finish();
                Inferred::Text(text_from(values.iter().map(|v| v.map(Value::Int))))
            }
            Inferred::Float(mut b) => {
                let values = b.finish();
                Inferred::Text(text_from(values.iter().map(|v| v.map(Value::Float))))
            }
            Inferred::Bool(mut b) => {
                let values = b.finish();
                Inferred::Text(text_from(values.iter().map(|v| v.map(Value::Bool))))
            }
            Inferred::Timestamp(mut b) => {
                let values = b.finish();
                Inferred::Text(text_from(values.iter().map(|v| v.map(Value::Timestamp))))
            }
            text @ Inferred::Text(_) => text,
        };
    }

    pub(super) fn finish(self) -> (DataType, ArrayRef) {
        match self {
            Inferred::Nulls(n) => (DataType::Utf8, new_null_array(&DataType::Utf8, n)),
            Inferred::Int(mut b) => (DataType::Int64, Arc::new(b.finish())),
            Inferred::Float(mut b) => (DataType::Float64, Arc::new(b.finish())),
            Inferred::Bool(mut b) => (DataType::Boolean, Arc::new(b.finish())),
            Inferred::Timestamp(mut b) => (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Arc::new(b.finish()),
            ),
            Inferred::Text(mut b) => (DataType::Utf8, Arc::new(b.finish())),
        }
    }
}

pub(super) fn text_from<'a>(values: impl Iterator<Item = Option<Value<'a>>>) -> StringBuilder {
    let mut builder = StringBuilder::new();
    for value in values {
        append_text(&mut builder, &value.unwrap_or(Value::Null));
    }
    builder
}

/// A declared column, converted cell by cell. Types without a direct builder (decimals) are
/// collected as text and parsed as a whole column, as CSV columns are.
pub(super) enum Declared {
    Text(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    ViaText(StringBuilder, DataType),
}

impl Declared {
    pub(super) fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Utf8 => Declared::Text(StringBuilder::new()),
            DataType::Int64 => Declared::Int64(Int64Builder::new()),
            DataType::Int32 => Declared::Int32(Int32Builder::new()),
            DataType::Float64 => Declared::Float64(Float64Builder::new()),
            DataType::Boolean => Declared::Boolean(BooleanBuilder::new()),
            DataType::Date32 => Declared::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Microsecond, None) => {
                Declared::Timestamp(TimestampMicrosecondBuilder::new())
            }
            other => Declared::ViaText(StringBuilder::new(), other.clone()),
        }
    }

    pub(super) fn data_type(&self) -> DataType {
        match self {
            Declared::Text(_) => DataType::Utf8,
            Declared::Int64(_) => DataType::Int64,
            Declared::Int32(_) => DataType::Int32,
            Declared::Float64(_) => DataType::Float64,
            Declared::Boolean(_) => DataType::Boolean,
            Declared::Date(_) => DataType::Date32,
            Declared::Timestamp(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
            Declared::ViaText(_, t) => t.clone(),
        }
    }

    /// Append one value; `Err` carries why it does not fit, without its location.
    pub(super) fn push(
        &mut self,
        value: &Value<'_>,
        is_1904: bool,
    ) -> std::result::Result<(), String> {
        let fitted = match self {
            // A date in a column declared text is how Excel mangles codes (a barcode or part
            // number typed into a date-formatted cell); its text would be a wrong value.
            Declared::Text(_) if matches!(value, Value::Timestamp(_)) => {
                return Err(format!(
                    "cell holds the date {} but the column is declared string (was a code turned into a date by Excel?). Format the cells as text in the sheet and export it again.",
                    describe(value)
                ));
            }
            Declared::Text(b) | Declared::ViaText(b, _) => {
                append_text(b, value);
                true
            }
            Declared::Int64(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                other => to_i64(other).map(|v| b.append_value(v)).is_some(),
            },
            Declared::Int32(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                Value::Text(s) => Int32Type::parse(s).map(|v| b.append_value(v)).is_some(),
                other => to_i64(other)
                    .and_then(|v| i32::try_from(v).ok())
                    .map(|v| b.append_value(v))
                    .is_some(),
            },
            Declared::Float64(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                Value::Int(v) => {
                    b.append_value(*v as f64);
                    true
                }
                Value::Float(v) => {
                    b.append_value(*v);
                    true
                }
                Value::Text(s) => Float64Type::parse(s).map(|v| b.append_value(v)).is_some(),
                _ => false,
            },
            Declared::Boolean(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                other => to_bool(other).map(|v| b.append_value(v)).is_some(),
            },
            Declared::Date(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                Value::Text(s) => Date32Type::parse(s.trim())
                    .map(|v| b.append_value(v))
                    .is_some(),
                // A date cell with a time of day keeps its date, as Excel's INT() would.
                other => to_micros(other, is_1904)
                    .and_then(|m| i32::try_from(m.div_euclid(MICROS_PER_DAY)).ok())
                    .map(|v| b.append_value(v))
                    .is_some(),
            },
            Declared::Timestamp(b) => match value {
                Value::Null => {
                    b.append_null();
                    true
                }
                Value::Text(s) => TimestampMicrosecondType::parse(s.trim())
                    .map(|v| b.append_value(v))
                    .is_some(),
                other => to_micros(other, is_1904)
                    .map(|v| b.append_value(v))
                    .is_some(),
            },
        };
        if fitted {
            Ok(())
        } else {
            Err(format!(
                "value \"{}\" is not a valid {}. Fix the cell, or declare the column with another type under `source.columns`.",
                describe(value),
                type_name(&self.data_type())
            ))
        }
    }

    pub(super) fn finish(self, column: &str) -> Result<(DataType, ArrayRef, Vec<CellError>)> {
        let typed = |t: DataType, a: ArrayRef| (t, a, Vec::new());
        Ok(match self {
            Declared::Text(mut b) => typed(DataType::Utf8, Arc::new(b.finish())),
            Declared::Int64(mut b) => typed(DataType::Int64, Arc::new(b.finish())),
            Declared::Int32(mut b) => typed(DataType::Int32, Arc::new(b.finish())),
            Declared::Float64(mut b) => typed(DataType::Float64, Arc::new(b.finish())),
            Declared::Boolean(mut b) => typed(DataType::Boolean, Arc::new(b.finish())),
            Declared::Date(mut b) => typed(DataType::Date32, Arc::new(b.finish())),
            Declared::Timestamp(mut b) => typed(
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Arc::new(b.finish()),
            ),
            Declared::ViaText(mut b, target) => {
                let text: ArrayRef = Arc::new(b.finish());
                let (parsed, misfits) = parse_text_column(column, &text, &target)?;
                (target, parsed, misfits)
            }
        })
    }
}

pub(super) fn to_i64(value: &Value<'_>) -> Option<i64> {
    match value {
        Value::Int(v) => Some(*v),
        // Beyond ±2^63 the cast would saturate; such a number is no integer of int64.
        Value::Float(v)
            if v.fract() == 0.0
                && *v >= -9.223_372_036_854_776e18
                && *v < 9.223_372_036_854_776e18 =>
        {
            Some(*v as i64)
        }
        Value::Text(s) => Int64Type::parse(s),
        _ => None,
    }
}

pub(super) fn to_bool(value: &Value<'_>) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Int(1) => Some(true),
        Value::Int(0) => Some(false),
        Value::Float(v) if *v == 1.0 => Some(true),
        Value::Float(v) if *v == 0.0 => Some(false),
        Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Some(true),
            "false" | "f" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Date cells, and plain numbers read as Excel serial dates.
pub(super) fn to_micros(value: &Value<'_>, is_1904: bool) -> Option<i64> {
    match value {
        Value::Timestamp(m) => Some(*m),
        Value::Int(v) => serial_to_micros(*v as f64, is_1904),
        Value::Float(v) => serial_to_micros(*v, is_1904),
        _ => None,
    }
}

pub(super) enum ColumnBuilder {
    Inferred(Inferred),
    Declared(Declared),
}

pub(super) struct Column {
    pub(super) name: String,
    pub(super) builder: ColumnBuilder,
}

impl Column {
    /// Append one cell. A cell that does not fit (an error cell, a value that does not fit the
    /// declared type) is appended as null and returned as (value as read, why).
    pub(super) fn push(&mut self, cell: Cell<'_>, ctx: &Ctx<'_>) -> Option<(String, String)> {
        let value = match ctx.value(cell) {
            Ok(v) => v,
            Err(message) => {
                self.push_null(ctx);
                let shown = match cell {
                    Cell::Error(e) => e.to_string(),
                    _ => String::new(),
                };
                return Some((shown, format!("column \"{}\": {message}", self.name)));
            }
        };
        match &mut self.builder {
            ColumnBuilder::Inferred(b) => {
                b.push(&value);
                None
            }
            ColumnBuilder::Declared(b) => match b.push(&value, ctx.is_1904) {
                Ok(()) => None,
                Err(message) => {
                    let shown = describe(&value);
                    self.push_null(ctx);
                    Some((shown, format!("column \"{}\": {message}", self.name)))
                }
            },
        }
    }

    pub(super) fn push_null(&mut self, ctx: &Ctx<'_>) {
        match &mut self.builder {
            ColumnBuilder::Inferred(b) => b.push(&Value::Null),
            ColumnBuilder::Declared(b) => {
                let _ = b.push(&Value::Null, ctx.is_1904);
            }
        }
    }
}
