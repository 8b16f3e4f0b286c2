//! Every Arrow type a source can give, made comparable (SPEC section 3): nested values
//! (structs, lists, maps from JSON or Parquet) become their canonical JSON text (object keys
//! sorted, so that two files that write a record's fields in another order agree); binary and
//! fixed-size binary values become their bytes in lowercase hex; 8- and 16-bit and unsigned
//! integers become int64 (unsigned 64-bit ones decimal(20,0)) and float16/float32 become float64, by value.
//!
//! The snapshot is made comparable after the transform (which still sees the source's own
//! types) and before it is typed, hashed and stored, so that the hash, the comparison, the
//! reasons, the delta files and the baseline all see one form.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder};

use crate::engine;
use crate::error::Result;

/// The type a column of `data_type` is compared as, when it is not compared as it is.
pub fn comparable_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Struct(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Map(_, _)
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Some(DataType::Utf8),
        DataType::Int8
        | DataType::Int16
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(DataType::Int64),
        DataType::UInt64 => Some(DataType::Decimal128(20, 0)),
        DataType::Float16 | DataType::Float32 => Some(DataType::Float64),
        _ => None,
    }
}

/// `schema` with every column of a type [`comparable_type`] changes in its comparable type,
/// but those `kept` names (a baseline that stored the type as it is keeps comparing it so).
pub fn comparable_schema(schema: &SchemaRef, kept: &[&str]) -> SchemaRef {
    let changes = |f: &FieldRef| {
        comparable_type(f.data_type()).filter(|_| !kept.contains(&f.name().as_str()))
    };
    if !schema.fields().iter().any(|f| changes(f).is_some()) {
        return schema.clone();
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match changes(f) {
            Some(t) => Arc::new(Field::new(f.name(), t, true)),
            None => f.clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `batch` with every column in its comparable type, but those `kept` (see
/// [`comparable_schema`]).
pub fn comparable_batch(batch: &RecordBatch, kept: &[&str]) -> Result<RecordBatch> {
    let schema = comparable_schema(&batch.schema(), kept);
    if Arc::ptr_eq(&schema, &batch.schema()) {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(
            |(column, field)| match kept.contains(&field.name().as_str()) {
                true => Ok(column.clone()),
                false => comparable_column(column),
            },
        )
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns)
        .map_err(|e| engine::error("making values comparable", e.into()))
}

/// One column in its comparable type.
fn comparable_column(column: &ArrayRef) -> Result<ArrayRef> {
    let fail = |e: datafusion::arrow::error::ArrowError| {
        engine::error("making values comparable", e.into())
    };
    match (column.data_type(), comparable_type(column.data_type())) {
        (_, None) => Ok(column.clone()),
        (
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_),
            _,
        ) => Ok(hex_column(column)),
        (_, Some(DataType::Utf8)) => json_column(column),
        // A float32 by the value it shows (0.1, not 0.10000000149011612).
        (DataType::Float16 | DataType::Float32, Some(to)) => cast(column, &DataType::Utf8)
            .and_then(|text| cast(&text, &to))
            .map_err(fail),
        (_, Some(to)) => cast(column, &to).map_err(fail),
    }
}

/// Binary values as lowercase hex.
fn hex_column(column: &ArrayRef) -> ArrayRef {
    let bytes: Box<dyn Iterator<Item = Option<&[u8]>>> = match column.data_type() {
        DataType::Binary => Box::new(column.as_binary::<i32>().iter()),
        DataType::LargeBinary => Box::new(column.as_binary::<i64>().iter()),
        DataType::BinaryView => Box::new(column.as_binary_view().iter()),
        _ => Box::new(column.as_fixed_size_binary().iter()),
    };
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 16);
    for value in bytes {
        match value {
            None => out.append_null(),
            Some(b) => out.append_value(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        }
    }
    Arc::new(out.finish())
}

/// Nested values as canonical JSON text (null stays null).
fn json_column(column: &ArrayRef) -> Result<ArrayRef> {
    let fail = |e: datafusion::arrow::error::ArrowError| {
        engine::error("making values comparable", e.into())
    };
    let field = Field::new("v", column.data_type().clone(), true);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![column.clone()])
        .map_err(fail)?;
    let mut written = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut written);
    writer.write(&batch).map_err(fail)?;
    writer.finish().map_err(fail)?;
    drop(writer);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&written).map_err(|e| {
        engine::error(
            "making values comparable",
            datafusion::error::DataFusionError::External(Box::new(e)),
        )
    })?;
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 32);
    for (i, row) in rows.iter().enumerate() {
        match row.get("v") {
            _ if column.is_null(i) => out.append_null(),
            None | Some(serde_json::Value::Null) => out.append_null(),
            Some(value) => {
                let mut text = String::new();
                canonical(value, &mut text);
                out.append_value(text);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `value` as JSON text with every object's keys in order.
fn canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, FixedSizeBinaryArray, Float32Array, Int16Array, ListArray, StringArray,
        StructArray, UInt64Array,
    };
    use datafusion::arrow::datatypes::Int32Type;

    fn text(column: &ArrayRef) -> Vec<Option<String>> {
        comparable_column(column)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn nested_values_become_canonical_json() {
        let w: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![
            Some(1),
            None,
        ]));
        let h: ArrayRef = Arc::new(StringArray::from(vec![Some("a\"b"), Some("c")]));
        // Fields in the order h, w: the text sorts them.
        let dims: ArrayRef = Arc::new(StructArray::from(vec![
            (Arc::new(Field::new("w", DataType::Int64, true)), w),
            (Arc::new(Field::new("h", DataType::Utf8, true)), h),
        ]));
        assert_eq!(
            text(&dims),
            [
                Some(r#"{"h":"a\"b","w":1}"#.to_string()),
                Some(r#"{"h":"c","w":null}"#.to_string())
            ]
        );
        let tags: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
        ]));
        assert_eq!(
            text(&tags),
            [Some("[1,2]".to_string()), None, Some("[]".to_string())]
        );
    }

    #[test]
    fn binary_values_become_hex() {
        let b: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&[0u8, 255, 16][..]), None]));
        assert_eq!(text(&b), [Some("00ff10".to_string()), None]);
        let f: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_iter(vec![vec![1u8, 2], vec![171, 205]].into_iter())
                .unwrap(),
        );
        assert_eq!(
            text(&f),
            [Some("0102".to_string()), Some("abcd".to_string())]
        );
    }

    #[test]
    fn small_unsigned_and_float32_numbers_compare_by_value() {
        let small: ArrayRef = Arc::new(Int16Array::from(vec![Some(-3), None]));
        assert_eq!(
            comparable_column(&small).unwrap().data_type(),
            &DataType::Int64
        );
        let big: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
        let as_decimal = comparable_column(&big).unwrap();
        assert_eq!(as_decimal.data_type(), &DataType::Decimal128(20, 0));
        assert_eq!(
            datafusion::arrow::util::display::array_value_to_string(&as_decimal, 0).unwrap(),
            "18446744073709551615"
        );
        let f: ArrayRef = Arc::new(Float32Array::from(vec![0.5f32]));
        assert_eq!(
            comparable_column(&f).unwrap().data_type(),
            &DataType::Float64
        );
    }
}
