//! Arrow values written in PostgreSQL's binary format, for `COPY … FROM STDIN (FORMAT binary)`:
//! each cell is encoded for the type of the column it goes into (checked beforehand by
//! [`super::schema`]), straight from the Arrow array, without a text form in between.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

type Failure = Box<dyn StdError + Sync + Send>;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const EPOCH_DAYS: i64 = 10_957;
/// The same in microseconds.
const EPOCH_MICROS: i64 = EPOCH_DAYS * 86_400 * 1_000_000;

/// A column's values as they are sent: Arrow's, or (nested columns) JSON texts.
#[derive(Debug)]
pub enum Values {
    /// An Arrow array of a scalar type.
    Arrow(ArrayRef),
    /// Each row's value as JSON text (`None`: null), for a `jsonb` or `json` column.
    Json(Vec<Option<String>>),
}

/// One value of a column, for [`tokio_postgres::binary_copy::BinaryCopyInWriter`].
#[derive(Debug)]
pub struct Cell<'a> {
    /// The column.
    pub values: &'a Values,
    /// The row.
    pub row: usize,
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Failure> {
        match self.values {
            Values::Json(texts) => match &texts[self.row] {
                None => Ok(IsNull::Yes),
                Some(text) => {
                    if *ty == Type::JSONB {
                        out.put_u8(1);
                    }
                    out.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
            },
            // A column of no values (type Null) has no null buffer: every row is null.
            Values::Arrow(array)
                if array.is_null(self.row) || array.data_type() == &DataType::Null =>
            {
                Ok(IsNull::Yes)
            }
            Values::Arrow(array) => {
                encode(array.as_ref(), self.row, ty, out)?;
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        // Which Arrow type goes into which column is decided before the copy starts.
        true
    }

    to_sql_checked!();
}

fn unsupported(from: &DataType, ty: &Type) -> Failure {
    format!("a value of type {from} cannot be written to a column of type {ty}").into()
}

/// Write row `row` of `array` (not null) as a value of `ty`.
fn encode(array: &dyn Array, row: usize, ty: &Type, out: &mut BytesMut) -> Result<(), Failure> {
    let from = array.data_type();
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => {
            let v = integer(array, row).ok_or_else(|| unsupported(from, ty))?;
            let fits = match *ty {
                Type::INT2 => i16::try_from(v).map(|v| out.put_i16(v)).is_ok(),
                Type::INT4 => i32::try_from(v).map(|v| out.put_i32(v)).is_ok(),
                _ => i64::try_from(v).map(|v| out.put_i64(v)).is_ok(),
            };
            if !fits {
                return Err(format!("{v} is out of range for a column of type {ty}").into());
            }
        }
        Type::NUMERIC => {
            let (unscaled, scale) = match from {
                // A negative scale counts tens: 12 at scale -2 is 1200.
                DataType::Decimal128(_, scale) if *scale < 0 => {
                    let unscaled = array.as_primitive::<Decimal128Type>().value(row);
                    let tens = 10i128.checked_pow(scale.unsigned_abs() as u32);
                    let value = tens.and_then(|t| unscaled.checked_mul(t));
                    (value.ok_or("a decimal value beyond 38 digits")?, 0)
                }
                DataType::Decimal128(_, scale) => (
                    array.as_primitive::<Decimal128Type>().value(row),
                    *scale as u32,
                ),
                _ => (integer(array, row).ok_or_else(|| unsupported(from, ty))?, 0),
            };
            put_numeric(out, unscaled, scale);
        }
        Type::FLOAT4 => out.put_f32(float(array, row).ok_or_else(|| unsupported(from, ty))? as f32),
        Type::FLOAT8 => out.put_f64(float(array, row).ok_or_else(|| unsupported(from, ty))?),
        Type::BOOL => out.put_u8(
            array
                .as_boolean_opt()
                .ok_or_else(|| unsupported(from, ty))?
                .value(row) as u8,
        ),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => out.put_slice(
            text(array, row)
                .ok_or_else(|| unsupported(from, ty))?
                .as_bytes(),
        ),
        // Nested values are kept as JSON text: a jsonb column takes them as they are.
        Type::JSONB | Type::JSON => {
            let json = text(array, row).ok_or_else(|| unsupported(from, ty))?;
            if *ty == Type::JSONB {
                out.put_u8(1);
            }
            out.put_slice(json.as_bytes());
        }
        Type::BYTEA => out.put_slice(binary(array, row).ok_or_else(|| unsupported(from, ty))?),
        Type::DATE => {
            let days = match from {
                DataType::Date32 => array.as_primitive::<Date32Type>().value(row) as i64,
                DataType::Date64 => array
                    .as_primitive::<Date64Type>()
                    .value(row)
                    .div_euclid(86_400_000),
                _ => return Err(unsupported(from, ty)),
            };
            out.put_i32(i32::try_from(days - EPOCH_DAYS)?);
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = timestamp_micros(array, row).ok_or_else(|| unsupported(from, ty))??;
            let since = micros.checked_sub(EPOCH_MICROS);
            out.put_i64(since.ok_or("a timestamp beyond the years PostgreSQL holds")?);
        }
        Type::TIME => out.put_i64(time_micros(array, row).ok_or_else(|| unsupported(from, ty))?),
        _ => return Err(unsupported(from, ty)),
    }
    Ok(())
}

/// An integer cell's value.
fn integer(array: &dyn Array, row: usize) -> Option<i128> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row) as i128,
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row) as i128,
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row) as i128,
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row) as i128,
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row) as i128,
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row) as i128,
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row) as i128,
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row) as i128,
        _ => return None,
    })
}

/// A floating-point (or integer) cell's value.
fn float(array: &dyn Array, row: usize) -> Option<f64> {
    Some(match array.data_type() {
        DataType::Float16 => array.as_primitive::<Float16Type>().value(row).to_f64(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row) as f64,
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
        _ => integer(array, row)? as f64,
    })
}

fn text(array: &dyn Array, row: usize) -> Option<&str> {
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        DataType::Utf8View => array.as_string_view().value(row),
        _ => return None,
    })
}

fn binary(array: &dyn Array, row: usize) -> Option<&[u8]> {
    Some(match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().value(row),
        DataType::LargeBinary => array.as_binary::<i64>().value(row),
        DataType::BinaryView => array.as_binary_view().value(row),
        DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(row),
        _ => return None,
    })
}

/// A timestamp cell in microseconds since 1970; `None` for another type.
fn timestamp_micros(array: &dyn Array, row: usize) -> Option<Result<i64, Failure>> {
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return None;
    };
    let beyond = || -> Failure { "a timestamp beyond the years PostgreSQL holds".into() };
    Some(match unit {
        TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().value(row))
            .checked_mul(1_000_000)
            .ok_or_else(beyond),
        TimeUnit::Millisecond => (array.as_primitive::<TimestampMillisecondType>().value(row))
            .checked_mul(1_000)
            .ok_or_else(beyond),
        TimeUnit::Microsecond => Ok(array.as_primitive::<TimestampMicrosecondType>().value(row)),
        // PostgreSQL keeps microseconds.
        TimeUnit::Nanosecond => Ok(array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1_000)),
    })
}

fn time_micros(array: &dyn Array, row: usize) -> Option<i64> {
    Some(match array.data_type() {
        DataType::Time32(TimeUnit::Second) => {
            array.as_primitive::<Time32SecondType>().value(row) as i64 * 1_000_000
        }
        DataType::Time32(_) => {
            array.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1_000
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            array.as_primitive::<Time64MicrosecondType>().value(row)
        }
        DataType::Time64(_) => array.as_primitive::<Time64NanosecondType>().value(row) / 1_000,
        _ => return None,
    })
}

/// `unscaled × 10^-scale` in PostgreSQL's NUMERIC binary form: the number of base-10000
/// digits, the weight of the first, the sign, the display scale, then the digits.
pub fn put_numeric(out: &mut BytesMut, unscaled: i128, scale: u32) {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    let whole = format!("{whole:0>width$}", width = whole.len().div_ceil(4) * 4);
    let fraction = format!(
        "{fraction:0<width$}",
        width = fraction.len().div_ceil(4) * 4
    );
    let mut groups: Vec<i16> = (whole.as_bytes().chunks(4))
        .chain(fraction.as_bytes().chunks(4))
        .map(|g| std::str::from_utf8(g).map_or(0, |g| g.parse().unwrap_or(0)))
        .collect();
    let mut weight = (whole.len() / 4) as i16 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.put_i16(groups.len() as i16);
    out.put_i16(weight);
    out.put_u16(if unscaled < 0 && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(scale as u16);
    for g in groups {
        out.put_i16(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: i128, scale: u32) -> Vec<i16> {
        let mut out = BytesMut::new();
        put_numeric(&mut out, unscaled, scale);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_are_base_ten_thousand_digits_with_weight_sign_and_scale() {
        // 12.30: digits 12 and 3000 (the fraction's first four digits), weight 0, scale 2.
        assert_eq!(numeric(1230, 2), [2, 0, 0, 2, 12, 3000]);
        // -123456.789: 12, 3456, 7890; weight 1; negative.
        assert_eq!(numeric(-123_456_789, 3), [3, 1, 0x4000, 3, 12, 3456, 7890]);
        // 0.0001: one digit of weight -1.
        assert_eq!(numeric(1, 4), [1, -1, 0, 4, 1]);
        // 100000000 (scale 0): 1 and two zero groups dropped, weight 2.
        assert_eq!(numeric(100_000_000, 0), [1, 2, 0, 0, 1]);
        assert_eq!(numeric(0, 2), [0, 0, 0, 2]);
        assert_eq!(numeric(-0, 0), [0, 0, 0, 0]);
        // A negative scale counts tens: 12 at scale -2 is 1200 (and a column of no values
        // is null in every row).
        use datafusion::arrow::array::{Decimal128Array, NullArray};
        let hundreds = Values::Arrow(std::sync::Arc::new(
            Decimal128Array::from(vec![12])
                .with_precision_and_scale(5, -2)
                .unwrap(),
        ));
        let mut out = BytesMut::new();
        let cell = Cell {
            values: &hundreds,
            row: 0,
        };
        assert!(matches!(
            cell.to_sql(&Type::NUMERIC, &mut out).unwrap(),
            IsNull::No
        ));
        let mut expected = BytesMut::new();
        put_numeric(&mut expected, 1200, 0);
        assert_eq!(out, expected);
        let nothing = Values::Arrow(std::sync::Arc::new(NullArray::new(2)));
        let cell = Cell {
            values: &nothing,
            row: 1,
        };
        assert!(matches!(
            cell.to_sql(&Type::TEXT, &mut out).unwrap(),
            IsNull::Yes
        ));
        // The largest Decimal128 value keeps all its 38 digits.
        let big = numeric(i128::MAX / 10, 0);
        assert_eq!(big[0], 10);
    }
}
