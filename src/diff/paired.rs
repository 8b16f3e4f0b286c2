//! The delta of rows matched by position (see [`super::matching`]), built with Arrow kernels:
//! the rows, labels and reasons the delta query (`sql/delta.sql`) gives for them, without its
//! joins and sort over all their columns.
//!
//! The matching already knows each row's kind: the NEW and DELETED rows, and the pairs of a
//! CHANGED key. What is left is to put each row's values side by side, to name what changed
//! (the same comparison and the same text as the query's `IS DISTINCT FROM` and
//! `CAST(... AS VARCHAR)`: the same Arrow kernels), and to order the rows by key. The result
//! has the exact schema the query would give (planned, not run), and anything this cannot
//! give as the query would (a column whose type differs between the sides, a CHANGED pair
//! whose keys differ) is left to the query.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast_with_options, concat, interleave, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::format::DEFAULT_CAST_OPTIONS;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::matching::Matched;
use super::{CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Counts, Delta, DiffSettings};
use crate::engine;
use crate::error::{Error, Result};
use crate::spec::ChangeKind;

/// Rows of the delta per batch, as the query engine hands them out.
const BATCH_ROWS: usize = 8192;

/// One side's rows, in the batches they were taken in: the `n`th row taken is found by its
/// batch and its row there.
struct Side<'a> {
    batches: &'a [RecordBatch],
    /// The first row of each batch, counted over the side.
    starts: Vec<usize>,
}

impl<'a> Side<'a> {
    fn new(batches: &'a [RecordBatch]) -> Self {
        let starts = batches
            .iter()
            .scan(0, |start, b| {
                let first = *start;
                *start += b.num_rows();
                Some(first)
            })
            .collect();
        Side { batches, starts }
    }

    /// How many rows the side has.
    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// (batch, row) of the side's `n`th row.
    fn locate(&self, n: usize) -> (usize, usize) {
        let batch = self.starts.partition_point(|&s| s <= n) - 1;
        (batch, n - self.starts[batch])
    }

    /// The side's column `name`, one array per batch; None when a batch lacks it.
    fn column(&self, name: &str) -> Option<Vec<&'a ArrayRef>> {
        self.batches
            .iter()
            .map(|b| b.column_by_name(name))
            .collect()
    }
}

/// Where a delta row's values come from: a row of the new rows, of the old rows, or both.
#[derive(Clone, Copy)]
struct Row {
    kind: ChangeKind,
    new: Option<usize>,
    old: Option<usize>,
}

/// The delta of `matched`, built from the rows taken by position: `new_batches` hold the
/// snapshot rows [`Matched::snapshot_rows`] names, in that order; `old_batches` the baseline
/// rows [`Matched::baseline_rows`] names, cast to the `baseline` view's types. The tables the
/// delta query reads (`incoming`, `baseline` and their hash views) must be registered on `ctx`,
/// so that the query can be planned for its schema. None when the query must decide.
pub async fn delta_by_position(
    ctx: &SessionContext,
    settings: &DiffSettings,
    (new_batches, old_batches): (&[RecordBatch], &[RecordBatch]),
    matched: &Matched,
    rows_in: u64,
) -> Result<Option<Delta>> {
    if !settings.tolerance.is_empty() || settings.include_unchanged {
        return Ok(None);
    }
    let delta_rows = matched.new.len() + matched.changed.len() + matched.deleted.len();
    let schema = planned_schema(ctx, settings, delta_rows).await?;
    let (new_side, old_side) = (Side::new(new_batches), Side::new(old_batches));
    let snapshot_rows = matched.snapshot_rows();
    let baseline_rows = matched.baseline_rows();
    if new_side.rows() != snapshot_rows.len() || old_side.rows() != baseline_rows.len() {
        return Ok(None);
    }
    let new_at = |p: u32| snapshot_rows.binary_search(&p).expect("a taken row");
    let old_at = |p: u32| baseline_rows.binary_search(&p).expect("a taken row");
    let mut rows: Vec<Row> = Vec::with_capacity(snapshot_rows.len() + matched.deleted.len());
    rows.extend(matched.new.iter().map(|&p| Row {
        kind: ChangeKind::New,
        new: Some(new_at(p)),
        old: None,
    }));
    rows.extend(matched.changed.iter().map(|&(p, q)| Row {
        kind: ChangeKind::Changed,
        new: Some(new_at(p)),
        old: Some(old_at(q)),
    }));
    rows.extend(matched.deleted.iter().map(|&q| Row {
        kind: ChangeKind::Deleted,
        new: None,
        old: Some(old_at(q)),
    }));

    // Each delta column as the query chooses it: the baseline's value for a DELETED row, the
    // snapshot's for the others (a column the baseline lacks: null). None when a side's type
    // is not the one the query gives.
    let value_column = |name: &str, rows: &[Row]| -> Result<Option<ArrayRef>> {
        let Ok(field) = schema.field_with_name(name) else {
            return Ok(None);
        };
        let data_type = field.data_type();
        let in_baseline = settings.baseline_columns.iter().any(|c| c == name);
        let Some(new) = new_side.column(name) else {
            return Ok(None);
        };
        let old = match in_baseline {
            true => match old_side.column(name) {
                Some(old) => old,
                None => return Ok(None),
            },
            false => Vec::new(),
        };
        if new.iter().chain(&old).any(|a| a.data_type() != data_type) {
            return Ok(None);
        }
        let missing = new_null_array(data_type, 1);
        let mut arrays: Vec<&dyn Array> = new.iter().map(|a| a.as_ref() as &dyn Array).collect();
        let old_from = arrays.len();
        arrays.extend(old.iter().map(|a| a.as_ref() as &dyn Array));
        let null_at = arrays.len();
        arrays.push(missing.as_ref());
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|row| match (row.kind, row.new, row.old) {
                (ChangeKind::Deleted, _, Some(o)) if in_baseline => {
                    let (b, r) = old_side.locate(o);
                    (old_from + b, r)
                }
                (ChangeKind::Deleted, _, _) => (null_at, 0),
                (_, Some(n), _) => new_side.locate(n),
                _ => (null_at, 0),
            })
            .collect();
        interleave(&arrays, &indices).map(Some).map_err(arrow_error)
    };

    // Ordered by key, as the query's ORDER BY.
    let mut keys = Vec::with_capacity(settings.key.len());
    for k in &settings.key {
        let Some(column) = value_column(k, &rows)? else {
            return Ok(None);
        };
        keys.push(SortColumn {
            values: column,
            options: Some(SortOptions {
                descending: false,
                nulls_first: false,
            }),
        });
    }
    let order = lexsort_to_indices(&keys, None).map_err(arrow_error)?;
    let rows: Vec<Row> = order.values().iter().map(|&i| rows[i as usize]).collect();

    // A column per core at a time.
    let built = crate::parallel::map(&settings.columns, |name| value_column(name, &rows));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for ((name, field), column) in settings.columns.iter().zip(schema.fields()).zip(built) {
        match column? {
            Some(column) if field.name() == name => columns.push(column),
            _ => return Ok(None),
        }
    }
    if !changed_keys_agree(settings, &rows, &new_side, &old_side)? {
        return Ok(None);
    }
    let kinds: StringArray = rows.iter().map(|r| Some(r.kind.canonical())).collect();
    columns.push(Arc::new(kinds));
    let Some(reasons) = reason_column(settings, &rows, &new_side, &old_side)? else {
        return Ok(None);
    };
    columns.push(reasons);
    let n = settings.columns.len();
    for (at, name) in [(n, CHANGE_TYPE_COLUMN), (n + 1, CHANGE_REASON_COLUMN)] {
        let Some(field) = schema.fields().get(at).filter(|f| f.name() == name) else {
            return Ok(None);
        };
        columns[at] = cast_with_options(&columns[at], field.data_type(), &DEFAULT_CAST_OPTIONS)
            .map_err(arrow_error)?;
    }
    if columns.len() != schema.fields().len() {
        return Ok(None);
    }
    // Nullability as the query's: a column the plan calls non-null that has nulls is the
    // query's to explain.
    let Ok(delta) = RecordBatch::try_new(schema.clone(), columns) else {
        return Ok(None);
    };
    tracing::debug!("built the delta of the rows matched by position");
    Ok(Some(as_delta(schema, &delta, matched, rows_in)))
}

/// The delta's rows in batches of [`BATCH_ROWS`], with the matching's counts.
fn as_delta(schema: SchemaRef, delta: &RecordBatch, matched: &Matched, rows_in: u64) -> Delta {
    let batches = (0..delta.num_rows())
        .step_by(BATCH_ROWS)
        .map(|start| delta.slice(start, BATCH_ROWS.min(delta.num_rows() - start)))
        .collect();
    let (new, changed, deleted) = (
        matched.new.len() as u64,
        matched.changed.len() as u64,
        matched.deleted.len() as u64,
    );
    Delta {
        schema,
        batches,
        counts: Counts {
            rows_in,
            new,
            changed,
            deleted,
            unchanged: rows_in - new - changed,
        },
    }
}

/// A CHANGED pair names one key on both sides, or the matching erred (a digest collision):
/// the query then finds otherwise, and the caller joins the full rows.
fn changed_keys_agree(
    settings: &DiffSettings,
    rows: &[Row],
    new_side: &Side<'_>,
    old_side: &Side<'_>,
) -> Result<bool> {
    let (changed_new, changed_old) = (changed_rows(rows, |r| r.new), changed_rows(rows, |r| r.old));
    for k in &settings.key {
        let (Some(new), Some(old)) = (new_side.column(k), old_side.column(k)) else {
            return Ok(false);
        };
        let (new, old) = (
            gather(&new, new_side, &changed_new)?,
            gather(&old, old_side, &changed_old)?,
        );
        if new.data_type() != old.data_type()
            || distinct(&new, &old).map_err(arrow_error)?.true_count() > 0
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The reasons of `rows`, made a run of rows per core (writing values out as text is most of
/// the work); None when the query must say them.
fn reason_column(
    settings: &DiffSettings,
    rows: &[Row],
    new_side: &Side<'_>,
    old_side: &Side<'_>,
) -> Result<Option<ArrayRef>> {
    let runs: Vec<&[Row]> = rows
        .chunks(rows.len().div_ceil(crate::parallel::cores()).max(1))
        .collect();
    let mut reasons_by_run = Vec::with_capacity(runs.len());
    for run in crate::parallel::map(&runs, |run| reasons(settings, run, new_side, old_side)) {
        match run? {
            Some(reasons) => reasons_by_run.push(reasons),
            None => return Ok(None),
        }
    }
    let reasons: Vec<&dyn Array> = reasons_by_run.iter().map(|r| r as &dyn Array).collect();
    Ok(Some(match reasons.is_empty() {
        true => Arc::new(StringArray::from(Vec::<&str>::new())),
        false => concat(&reasons).map_err(arrow_error)?,
    }))
}

/// The schema the delta query gives `rows` rows in, planned over the registered tables (the
/// classification's schema, then the delta's) without running either.
async fn planned_schema(
    ctx: &SessionContext,
    settings: &DiffSettings,
    rows: usize,
) -> Result<SchemaRef> {
    let plan = |what: &'static str| move |e| engine::error(what, e);
    let classified = ctx
        .sql(&super::sql::classify_sql(settings))
        .await
        .map_err(plan("planning the classification"))?
        .create_physical_plan()
        .await
        .map_err(plan("planning the classification"))?
        .schema();
    let empty = MemTable::try_new(classified, vec![Vec::new()])
        .map_err(plan("holding the classified keys"))?;
    ctx.deregister_table("classified")
        .map_err(plan("registering tables"))?;
    ctx.register_table("classified", Arc::new(empty))
        .map_err(plan("registering tables"))?;
    let delta = ctx
        .sql(&super::sql::delta_sql(settings))
        .await
        .map_err(plan("planning the delta"))?;
    let logical: SchemaRef = Arc::new(delta.schema().as_arrow().clone());
    let physical = delta
        .create_physical_plan()
        .await
        .map_err(plan("planning the delta"))?
        .schema();
    ctx.deregister_table("classified")
        .map_err(plan("registering tables"))?;
    // As [`super::classify`] takes it: the batches' own schema, the plan's when there are none.
    Ok(if rows == 0 { logical } else { physical })
}

/// For each CHANGED row, in order, its row on one side.
fn changed_rows(rows: &[Row], side: impl Fn(&Row) -> Option<usize>) -> Vec<usize> {
    rows.iter()
        .filter(|r| r.kind == ChangeKind::Changed)
        .filter_map(side)
        .collect()
}

/// A side's column at the side's rows `at`, as one array.
fn gather(column: &[&ArrayRef], side: &Side, at: &[usize]) -> Result<ArrayRef> {
    let arrays: Vec<&dyn Array> = column.iter().map(|a| a.as_ref() as &dyn Array).collect();
    if arrays.is_empty() {
        return Ok(new_null_array(&DataType::Null, 0));
    }
    let indices: Vec<(usize, usize)> = at.iter().map(|&n| side.locate(n)).collect();
    interleave(&arrays, &indices).map_err(arrow_error)
}

/// The query's reasons: `new row`, `row removed`, and for a CHANGED row each compared column
/// whose values are distinct, `<column> changed from <old> to <new>` (null as `null`), joined
/// by `; `.
/// None when a compared column's type differs between the sides.
fn reasons(
    settings: &DiffSettings,
    rows: &[Row],
    new: &Side,
    old: &Side,
) -> Result<Option<StringArray>> {
    let (changed_new, changed_old) = (changed_rows(rows, |r| r.new), changed_rows(rows, |r| r.old));
    // Per compared column, the CHANGED rows' old and new values as text, and which differ.
    let mut changes = Vec::with_capacity(settings.compared.len());
    for c in &settings.compared {
        let (Some(new_column), Some(old_column)) = (new.column(c), old.column(c)) else {
            return Ok(None);
        };
        let new_values = gather(&new_column, new, &changed_new)?;
        let old_values = gather(&old_column, old, &changed_old)?;
        if new_values.data_type() != old_values.data_type() {
            return Ok(None);
        }
        let differs = distinct(&old_values, &new_values).map_err(arrow_error)?;
        // Only the values that changed are written out (formatting is the costly part).
        let at: UInt32Array = (0..differs.len() as u32)
            .filter(|&i| differs.value(i as usize))
            .collect();
        let text = |values: &ArrayRef| -> Result<StringArray> {
            let values = take(values, &at, None).map_err(arrow_error)?;
            let text = cast_with_options(&values, &DataType::Utf8, &DEFAULT_CAST_OPTIONS)
                .map_err(arrow_error)?;
            Ok(text
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("a cast to Utf8 is a StringArray")
                .clone())
        };
        changes.push((c, differs, text(&old_values)?, text(&new_values)?, 0usize));
    }
    let mut built = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
    let mut changed = 0;
    let mut reason = String::new();
    for row in rows {
        match row.kind {
            ChangeKind::New => built.append_value("new row"),
            ChangeKind::Deleted => built.append_value("row removed"),
            _ => {
                reason.clear();
                for (c, differs, old, new, next) in changes.iter_mut() {
                    if !differs.value(changed) {
                        continue;
                    }
                    if !reason.is_empty() {
                        reason.push_str("; ");
                    }
                    for part in [
                        c.as_str(),
                        " changed from ",
                        shown(old, *next),
                        " to ",
                        shown(new, *next),
                    ] {
                        reason.push_str(part);
                    }
                    *next += 1;
                }
                built.append_value(&reason);
                changed += 1;
            }
        }
    }
    Ok(Some(built.finish()))
}

/// A value as the query writes it in a reason: null as `null`, the text `null` as `"null"`.
fn shown(text: &StringArray, i: usize) -> &str {
    if text.is_null(i) {
        "null"
    } else if text.value(i) == "null" {
        "\"null\""
    } else {
        text.value(i)
    }
}

fn arrow_error(e: datafusion::arrow::error::ArrowError) -> Error {
    engine::error("building the delta", e.into())
}
