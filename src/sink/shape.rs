//! The delta shaped for its consumers: for each output the kinds it includes, `on_delete.set`
//! applied to DELETED rows, the configured labels and column names (a RENAMED row's old key
//! in `previous_<key>`), and the columns it asks for; and the change rows as the store keeps
//! them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::{DataFrame, ident};

use crate::diff::{CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Delta, previous_key_column};
use crate::engine;
use crate::error::Result;
use crate::spec::{ChangeKind, TablePlan, YamlScalar};

/// The change rows as stored: every kind but UNCHANGED, canonical labels, configured names.
/// Arrow's kernels rather than a query: planning a projection is quadratic in the columns
/// (a table of 10,000 columns took minutes), filtering and renaming are linear.
pub async fn stored_changes(
    table: &TablePlan,
    delta: &Delta,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let cc = &table.change_columns;
    let fields: Vec<Field> = (delta.schema.fields().iter())
        .map(|f| {
            let name = match f.name().as_str() {
                CHANGE_TYPE_COLUMN => cc.type_column.clone(),
                CHANGE_REASON_COLUMN => cc.reason_column.clone(),
                other => stored_name(table, other),
            };
            f.as_ref().clone().with_name(name)
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let fail = |e: datafusion::arrow::error::ArrowError| {
        engine::error(
            format!("table {}: storing change rows", table.name),
            e.into(),
        )
    };
    let kind_at = delta.schema.index_of(CHANGE_TYPE_COLUMN).map_err(fail)?;
    let unchanged = ChangeKind::Unchanged.canonical();
    let mut batches = Vec::with_capacity(delta.batches.len());
    for batch in &delta.batches {
        let kinds = batch.column(kind_at).as_string::<i32>();
        let changes: BooleanArray = kinds.iter().map(|k| Some(k != Some(unchanged))).collect();
        let kept = filter_record_batch(batch, &changes).map_err(fail)?;
        if kept.num_rows() > 0 {
            batches
                .push(RecordBatch::try_new(schema.clone(), kept.columns().to_vec()).map_err(fail)?);
        }
    }
    Ok((schema, batches))
}

fn yaml_scalar(value: &YamlScalar) -> ScalarValue {
    match value {
        YamlScalar::Bool(b) => ScalarValue::Boolean(Some(*b)),
        YamlScalar::Int(i) => ScalarValue::Int64(Some(*i)),
        YamlScalar::Float(f) => ScalarValue::Float64(Some(*f)),
        YamlScalar::Text(t) => ScalarValue::Utf8(Some(t.clone())),
        YamlScalar::Null(()) => ScalarValue::Null,
    }
}

/// A column of the delta as its consumers see it: a RENAMED row's old key column as
/// `change_columns.previous` names it, the others as they are.
fn named(table: &TablePlan, column: &str) -> Expr {
    match stored_name(table, column) {
        name if name != column => ident(column).alias(name),
        _ => ident(column),
    }
}

/// The name a delta column has for consumers and in the store (see [`named`]).
fn stored_name(table: &TablePlan, column: &str) -> String {
    let previous = (table.key.iter()).find(|k| table.renames && previous_key_column(k) == column);
    match previous {
        Some(k) => table.change_columns.previous(k).to_string(),
        None => column.to_string(),
    }
}

/// Shape the delta for one output and collect it.
pub async fn shape_batches(
    table: &TablePlan,
    delta: &Delta,
    include: &[ChangeKind],
    columns: Option<&[String]>,
    types: &HashMap<String, DataType>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let frame = shape_output(table, delta, include, columns, types).await?;
    let plan_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(engine::context(&table.name, "shaping the delta"))?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(plan_schema);
    Ok((schema, batches))
}

/// The delta as a DataFrame (with its schema even when it has no rows).
fn delta_frame(delta: &Delta) -> datafusion::error::Result<DataFrame> {
    // The delta is in key order; shaping it (a filter, a projection) keeps that order.
    let ctx = engine::in_order_session();
    if delta.batches.is_empty() {
        ctx.read_batch(RecordBatch::new_empty(delta.schema.clone()))
    } else {
        ctx.read_batches(delta.batches.clone())
    }
}

/// Shape the delta for one output: kinds, `on_delete.set`, labels, names, projection.
pub async fn shape_output(
    table: &TablePlan,
    delta: &Delta,
    include: &[ChangeKind],
    columns: Option<&[String]>,
    types: &HashMap<String, DataType>,
) -> Result<DataFrame> {
    let fail = engine::context(&table.name, "shaping the delta");
    let frame = delta_frame(delta).map_err(&fail)?;
    let kinds: Vec<Expr> = include
        .iter()
        .filter(|k| **k != ChangeKind::Deleted || table.emit_deleted)
        .map(|k| lit(k.canonical()))
        .collect();
    let frame = frame
        .filter(ident(CHANGE_TYPE_COLUMN).in_list(kinds, false))
        .map_err(&fail)?;
    let is_deleted = ident(CHANGE_TYPE_COLUMN).eq(lit(ChangeKind::Deleted.canonical()));
    let mut exprs = Vec::new();
    for field in delta.schema.fields() {
        let name = field.name();
        if name == CHANGE_TYPE_COLUMN || name == CHANGE_REASON_COLUMN {
            continue;
        }
        let expr = match table.delete_set.iter().find(|(c, _)| c == name) {
            Some((_, value)) => {
                let target = types.get(name).cloned().unwrap_or(DataType::Utf8);
                let replacement = cast(lit(yaml_scalar(value)), target.clone());
                when(is_deleted.clone(), replacement)
                    .otherwise(cast(ident(name), target))
                    .map_err(&fail)?
                    .alias(name)
            }
            None => named(table, name),
        };
        exprs.push(expr);
    }
    let cc = &table.change_columns;
    let mut label = when(
        ident(CHANGE_TYPE_COLUMN).eq(lit(ChangeKind::New.canonical())),
        lit(cc.label(ChangeKind::New)),
    );
    for kind in [
        ChangeKind::Changed,
        ChangeKind::Deleted,
        ChangeKind::Renamed,
    ] {
        label = label.when(
            ident(CHANGE_TYPE_COLUMN).eq(lit(kind.canonical())),
            lit(cc.label(kind)),
        );
    }
    exprs.push(
        label
            .otherwise(lit(cc.label(ChangeKind::Unchanged)))
            .map_err(&fail)?
            .alias(&cc.type_column),
    );
    exprs.push(ident(CHANGE_REASON_COLUMN).alias(&cc.reason_column));
    let frame = frame.select(exprs).map_err(&fail)?;
    match columns {
        None => Ok(frame),
        // `check_columns` has already refused names the delta does not have.
        Some(wanted) => frame
            .select(wanted.iter().map(ident).collect::<Vec<_>>())
            .map_err(&fail),
    }
}
