//! Which PostgreSQL column a snapshot's column goes into: the type `create: true` gives it, and
//! whether an existing column holds its values exactly (an `integer` column does not hold a
//! 64-bit one; a `numeric(10,2)` does not hold three decimals).

use super::super::database::quoted;

use datafusion::arrow::datatypes::DataType;

/// A column of the target table, as the catalogue describes it.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    /// Its name.
    pub name: String,
    /// Its type's name (`int8`, `numeric`, `timestamptz`, `_int4`…).
    pub udt_name: String,
    /// `numeric(p, s)`: p and s, when the column sets them.
    pub precision: Option<i32>,
    /// See `precision`.
    pub scale: Option<i32>,
}

/// The PostgreSQL type a column of `data_type` is created with; `None`: none holds it.
pub fn type_for(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20, 0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "bytea".into(),
        t if is_nested(t) => "jsonb".into(),
        _ => return None,
    })
}

/// Whether values of `data_type` are sent as JSON text.
pub fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Map(_, _)
    )
}

/// Whether `column` holds every value of `data_type` exactly.
pub fn fits(data_type: &DataType, column: &TargetColumn) -> bool {
    let udt = column.udt_name.as_str();
    let whole_digits = |digits: i32| match (column.precision, column.scale) {
        (Some(p), Some(s)) => p - s >= digits,
        _ => true,
    };
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            matches!(udt, "int2" | "int4" | "int8") || (udt == "numeric" && whole_digits(5))
        }
        DataType::Int32 | DataType::UInt16 => {
            matches!(udt, "int4" | "int8") || (udt == "numeric" && whole_digits(10))
        }
        DataType::Int64 | DataType::UInt32 => {
            udt == "int8" || (udt == "numeric" && whole_digits(19))
        }
        DataType::UInt64 => udt == "numeric" && whole_digits(20),
        DataType::Float16 | DataType::Float32 => matches!(udt, "float4" | "float8"),
        DataType::Float64 => udt == "float8",
        DataType::Decimal128(p, s) => {
            udt == "numeric"
                && match (column.precision, column.scale) {
                    (Some(cp), Some(cs)) => cs >= *s as i32 && cp - cs >= *p as i32 - *s as i32,
                    _ => true,
                }
        }
        // Nested values are stored as JSON text, which a jsonb or json column takes.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            matches!(udt, "text" | "varchar" | "bpchar" | "jsonb" | "json")
        }
        DataType::Null => true,
        DataType::Boolean => udt == "bool",
        DataType::Date32 | DataType::Date64 => udt == "date",
        DataType::Timestamp(_, None) => udt == "timestamp",
        DataType::Timestamp(_, Some(_)) => udt == "timestamptz",
        DataType::Time32(_) | DataType::Time64(_) => udt == "time",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => udt == "bytea",
        t if is_nested(t) => matches!(udt, "jsonb" | "json"),
        _ => false,
    }
}

/// A column's type as people read it (`numeric(12,2)`).
pub fn shown(column: &TargetColumn) -> String {
    match (column.udt_name.as_str(), column.precision, column.scale) {
        ("numeric", Some(p), Some(s)) => format!("numeric({p},{s})"),
        (udt, _, _) => udt.to_string(),
    }
}

/// A table name (`schema.table` or `table`) quoted part by part, and its two parts (the
/// schema `None` for the connection's current one).
pub fn table_name(name: &str) -> (String, Option<String>, String) {
    match name.split_once('.') {
        Some((schema, table)) => (
            format!("{}.{}", quoted(schema), quoted(table)),
            Some(schema.to_string()),
            table.to_string(),
        ),
        None => (quoted(name), None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(udt: &str, precision: Option<i32>, scale: Option<i32>) -> TargetColumn {
        TargetColumn {
            name: "c".into(),
            udt_name: udt.into(),
            precision,
            scale,
        }
    }

    #[test]
    fn a_column_fits_when_it_holds_every_value_exactly() {
        assert!(fits(&DataType::Int32, &column("int8", None, None)));
        assert!(!fits(&DataType::Int64, &column("int4", None, None)));
        assert!(fits(&DataType::Int64, &column("numeric", None, None)));
        assert!(!fits(
            &DataType::Int64,
            &column("numeric", Some(10), Some(0))
        ));
        let price = DataType::Decimal128(12, 2);
        assert!(fits(&price, &column("numeric", Some(12), Some(2))));
        assert!(fits(&price, &column("numeric", Some(14), Some(4))));
        assert!(!fits(&price, &column("numeric", Some(12), Some(1))));
        assert!(!fits(&price, &column("float8", None, None)));
        assert!(!fits(&DataType::Float64, &column("float4", None, None)));
        let tz = DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        assert!(fits(&tz, &column("timestamptz", None, None)));
        assert!(!fits(&tz, &column("timestamp", None, None)));
        assert_eq!(type_for(&tz).unwrap(), "timestamptz");
        assert_eq!(type_for(&price).unwrap(), "numeric(12, 2)");
        assert!(
            type_for(&DataType::Duration(
                datafusion::arrow::datatypes::TimeUnit::Second
            ))
            .is_none()
        );
    }

    #[test]
    fn table_names_are_quoted_part_by_part() {
        assert_eq!(
            table_name("public.catalog_items"),
            (
                "\"public\".\"catalog_items\"".into(),
                Some("public".into()),
                "catalog_items".into()
            )
        );
        assert_eq!(table_name("a\"b").0, "\"a\"\"b\"");
    }
}
