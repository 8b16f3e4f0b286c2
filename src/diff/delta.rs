//! The one delta builder: whichever strategy matched the rows, the delta is made here.
//!
//! Every strategy ends with [`Pairs`]: the rows of each side the delta needs and, per delta
//! row, its kind and where its values are (a row of today's snapshot, of the baseline, or
//! both). [`build`] puts each row's values side by side (the baseline's for a DELETED row,
//! today's for the others), says what changed, and orders the rows by key.
//!
//! The semantics are those of `sql/delta.sql`, which stays as their readable statement and
//! as the oracle the builder is tested against (`diff::sql::delta_by_query`): the same
//! comparison (`IS DISTINCT FROM`, or beyond a column's tolerance), the same text for values
//! (`CAST(... AS VARCHAR)`: the same Arrow kernels), the same order.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, StringBuilder,
    UInt32Array, new_null_array,
};
use datafusion::arrow::compute::kernels::cmp::distinct;
use datafusion::arrow::compute::{
    CastOptions, SortColumn, SortOptions, cast_with_options, concat, interleave,
    lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::format::DEFAULT_CAST_OPTIONS;

use super::matching::Matched;
use super::side::Side;
use super::{
    CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Counts, Delta, DiffSettings, previous_key_column,
    renames,
};
use crate::engine;
use crate::error::{Error, Result};
use crate::spec::{ChangeKind, Tolerance};

/// Rows of the delta per batch, as the query engine hands them out.
const BATCH_ROWS: usize = 8192;

/// One delta row: its kind, and its row among [`Pairs::new_rows`] and [`Pairs::old_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// NEW, CHANGED, DELETED or UNCHANGED.
    pub kind: ChangeKind,
    /// Today's row (none for a DELETED row).
    pub new: Option<usize>,
    /// The baseline's row (none for a NEW row).
    pub old: Option<usize>,
}

/// What every strategy yields: the rows the delta needs from each side, how they pair, and
/// the counts of the whole comparison.
#[derive(Debug, Clone)]
pub struct Pairs {
    /// Today's columns and their types: the delta's, in this order.
    pub new_schema: SchemaRef,
    /// Today's rows the delta needs.
    pub new_rows: Vec<RecordBatch>,
    /// The baseline's rows the delta needs, their columns cast to today's types.
    old_rows: Vec<RecordBatch>,
    /// The delta's rows, in any order.
    pub rows: Vec<Pair>,
    /// Counts by kind over every row compared.
    pub counts: Counts,
}

impl Pairs {
    /// The pairs of `rows`, the baseline's rows cast to today's types once, here (a value
    /// the type cannot hold fails, as an SQL cast does).
    pub fn new(
        new_schema: SchemaRef,
        (new_rows, old_rows): (Vec<RecordBatch>, Vec<RecordBatch>),
        rows: Vec<Pair>,
        counts: Counts,
    ) -> Result<Self> {
        let old_rows = (old_rows.iter())
            .map(|batch| conform(batch, &new_schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Pairs {
            new_schema,
            new_rows,
            old_rows,
            rows,
            counts,
        })
    }

    /// The pairs of rows matched by position: `new_rows` are the snapshot rows
    /// [`Matched::snapshot_rows`] names, in that order; `old_rows` the baseline rows
    /// [`Matched::baseline_rows`] names.
    pub fn of_matched(
        matched: &Matched,
        new_schema: SchemaRef,
        (new_rows, old_rows): (Vec<RecordBatch>, Vec<RecordBatch>),
        rows_in: u64,
    ) -> Result<Self> {
        let snapshot_rows = matched.snapshot_rows();
        let baseline_rows = matched.baseline_rows();
        let new_at = |p: u32| snapshot_rows.binary_search(&p).ok();
        let old_at = |p: u32| baseline_rows.binary_search(&p).ok();
        let mut rows = Vec::with_capacity(snapshot_rows.len() + matched.deleted.len());
        let pair = |kind, new, old| Pair { kind, new, old };
        rows.extend((matched.new.iter()).map(|&p| pair(ChangeKind::New, new_at(p), None)));
        rows.extend(
            matched
                .changed
                .iter()
                .map(|&(p, q)| pair(ChangeKind::Changed, new_at(p), old_at(q))),
        );
        rows.extend((matched.deleted.iter()).map(|&q| pair(ChangeKind::Deleted, None, old_at(q))));
        let (new, changed, deleted) = (
            matched.new.len() as u64,
            matched.changed.len() as u64,
            matched.deleted.len() as u64,
        );
        let counts = Counts {
            rows_in,
            new,
            changed,
            deleted,
            renamed: 0,
            unchanged: rows_in - new - changed,
        };
        Pairs::new(new_schema, (new_rows, old_rows), rows, counts)
    }

    /// Whether every CHANGED pair names one key on both sides. Keys matched by digest pair
    /// otherwise only when two keys share a digest: the caller then joins the full rows.
    pub fn changed_keys_agree(&self, settings: &DiffSettings) -> Result<bool> {
        let (new_side, old_side) = self.sides();
        let changed = |side: fn(&Pair) -> Option<usize>| -> Option<Vec<usize>> {
            (self.rows.iter())
                .filter(|r| r.kind == ChangeKind::Changed)
                .map(side)
                .collect()
        };
        let (Some(changed_new), Some(changed_old)) = (changed(|r| r.new), changed(|r| r.old))
        else {
            return Ok(false);
        };
        if changed_new.is_empty() {
            return Ok(true);
        }
        for k in &settings.key {
            let (Some(new), Some(old)) = (
                new_side.gather(k, &changed_new)?,
                old_side.gather(k, &changed_old)?,
            ) else {
                return Ok(false);
            };
            if distinct(&new, &old).map_err(arrow_error)?.true_count() > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Today's side and the baseline's.
    fn sides(&self) -> (Side<'_>, Side<'_>) {
        (Side::new(&self.new_rows), Side::new(&self.old_rows))
    }
}

/// The delta of `pairs`: today's columns, with renames the old key's columns
/// (`_previous_<key>`), then `_change_type` and `_change_reason`, ordered by key.
pub fn build(settings: &DiffSettings, pairs: &Pairs) -> Result<Delta> {
    let (new_side, old_side) = pairs.sides();
    let (paired, counts) = match settings.renames {
        true => with_renames(settings, pairs, &new_side, &old_side)?,
        false => (pairs.rows.clone(), pairs.counts),
    };
    let names = Names::of(&pairs.new_schema, &settings.baseline_columns);
    let value = |column: &DeltaColumn, rows: &[Pair]| {
        value_column(&names, column, rows, &new_side, &old_side)
    };

    // Ordered by key, as the query's ORDER BY.
    let keys = (settings.key.iter())
        .map(|k| {
            Ok(SortColumn {
                values: value(&DeltaColumn::Value(k), &paired)?,
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: false,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<Pair> = match keys.is_empty() || paired.is_empty() {
        true => paired,
        false => {
            let order = lexsort_to_indices(&keys, None).map_err(arrow_error)?;
            order.values().iter().map(|&i| paired[i as usize]).collect()
        }
    };

    let mut wanted: Vec<DeltaColumn> = settings.columns.iter().map(DeltaColumn::Value).collect();
    if settings.renames {
        wanted.extend(settings.key.iter().map(DeltaColumn::PreviousKey));
    }
    // A column per core at a time.
    let mut columns = crate::parallel::map(&wanted, |column| value(column, &rows))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let kinds: StringArray = rows.iter().map(|r| Some(r.kind.canonical())).collect();
    columns.push(Arc::new(kinds));
    columns.push(reason_column(settings, &rows, &new_side, &old_side)?);

    let mut fields: Vec<Field> = (wanted.iter())
        .zip(&columns)
        .map(|(column, array)| Field::new(column.name(), array.data_type().clone(), true))
        .collect();
    fields.push(Field::new(CHANGE_TYPE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(CHANGE_REASON_COLUMN, DataType::Utf8, true));
    let schema = Arc::new(Schema::new(fields));
    let delta = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)?;
    let batches = (0..delta.num_rows())
        .step_by(BATCH_ROWS)
        .map(|start| delta.slice(start, BATCH_ROWS.min(delta.num_rows() - start)))
        .collect();
    Ok(Delta {
        schema,
        batches,
        counts,
    })
}

/// `pairs`' rows with each DELETED and NEW row that [`renames::pair`] pairs made one RENAMED
/// row (today's row and the baseline's), and the counts that follow.
fn with_renames(
    settings: &DiffSettings,
    pairs: &Pairs,
    new_side: &Side<'_>,
    old_side: &Side<'_>,
) -> Result<(Vec<Pair>, Counts)> {
    let added = rows_of_kind(&pairs.rows, ChangeKind::New, |r| r.new);
    let removed = rows_of_kind(&pairs.rows, ChangeKind::Deleted, |r| r.old);
    let renamed = renames::pair(&settings.compared, (new_side, &added), (old_side, &removed))?;
    let came: HashSet<usize> = renamed.iter().map(|&(n, _)| n).collect();
    let went: HashSet<usize> = renamed.iter().map(|&(_, o)| o).collect();
    let paired = |r: &Pair| match r.kind {
        ChangeKind::New => r.new.is_some_and(|n| came.contains(&n)),
        ChangeKind::Deleted => r.old.is_some_and(|o| went.contains(&o)),
        _ => false,
    };
    let mut rows: Vec<Pair> = pairs.rows.iter().filter(|r| !paired(r)).copied().collect();
    rows.extend(renamed.iter().map(|&(n, o)| Pair {
        kind: ChangeKind::Renamed,
        new: Some(n),
        old: Some(o),
    }));
    let k = renamed.len() as u64;
    let counts = Counts {
        new: pairs.counts.new - k,
        deleted: pairs.counts.deleted - k,
        renamed: k,
        ..pairs.counts
    };
    Ok((rows, counts))
}

/// The rows on one side (`side` of each pair) of the pairs of `kind` among `rows`, in order.
fn rows_of_kind(rows: &[Pair], kind: ChangeKind, side: fn(&Pair) -> Option<usize>) -> Vec<usize> {
    (rows.iter())
        .filter(|r| r.kind == kind)
        .filter_map(side)
        .collect()
}

/// A column of the delta.
enum DeltaColumn<'a> {
    /// One of today's columns: the baseline's value for a DELETED row (null when the baseline
    /// lacks the column), today's for the others.
    Value(&'a String),
    /// A key column's value in the baseline for a RENAMED row, null for the others.
    PreviousKey(&'a String),
}

impl DeltaColumn<'_> {
    fn name(&self) -> String {
        match self {
            DeltaColumn::Value(name) => name.to_string(),
            DeltaColumn::PreviousKey(key) => previous_key_column(key),
        }
    }
}

/// The values of one delta column over `rows`.
/// Today's column types and the baseline's column names, found by name in constant time: the
/// builder looks up every column, and a schema's lookup is linear in its columns.
struct Names<'a> {
    types: std::collections::HashMap<&'a str, &'a DataType>,
    in_baseline: HashSet<&'a str>,
}

impl<'a> Names<'a> {
    fn of(schema: &'a SchemaRef, baseline_columns: &'a [String]) -> Self {
        Names {
            types: (schema.fields().iter())
                .map(|f| (f.name().as_str(), f.data_type()))
                .collect(),
            in_baseline: baseline_columns.iter().map(String::as_str).collect(),
        }
    }
}

fn value_column(
    names: &Names<'_>,
    column: &DeltaColumn,
    rows: &[Pair],
    new_side: &Side<'_>,
    old_side: &Side<'_>,
) -> Result<ArrayRef> {
    let (name, previous) = match column {
        DeltaColumn::Value(name) => (name.as_str(), false),
        DeltaColumn::PreviousKey(key) => (key.as_str(), true),
    };
    let data_type = *names.types.get(name).ok_or_else(|| missing_column(name))?;
    let new = match previous {
        true => Vec::new(),
        false => new_side.column(name).unwrap_or_default(),
    };
    let old = match names.in_baseline.contains(name) {
        true => old_side.column(name).unwrap_or_default(),
        false => Vec::new(),
    };
    let missing = new_null_array(data_type, 1);
    let mut arrays: Vec<&dyn Array> = new.iter().map(|a| a.as_ref() as &dyn Array).collect();
    let old_from = arrays.len();
    arrays.extend(old.iter().map(|a| a.as_ref() as &dyn Array));
    let null_at = arrays.len();
    arrays.push(missing.as_ref());
    let from_old = |o: usize| {
        let (b, r) = old_side.locate(o);
        (old_from + b, r)
    };
    let indices: Vec<(usize, usize)> = rows
        .iter()
        .map(|row| match (row.kind, row.new, row.old) {
            (ChangeKind::Renamed, _, Some(o)) if previous && !old.is_empty() => from_old(o),
            _ if previous => (null_at, 0),
            (ChangeKind::Deleted, _, Some(o)) if !old.is_empty() => from_old(o),
            (ChangeKind::Deleted, _, _) => (null_at, 0),
            (_, Some(n), _) if !new.is_empty() => new_side.locate(n),
            _ => (null_at, 0),
        })
        .collect();
    interleave(&arrays, &indices).map_err(arrow_error)
}

fn missing_column(name: &str) -> Error {
    engine::error(
        "building the delta",
        datafusion::error::DataFusionError::Internal(format!("no column {name} to compare")),
    )
}

/// `batch`'s columns named by `schema` (those it has), cast to its types.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let fail = |e| {
        engine::error(
            "reading the baseline",
            datafusion::error::DataFusionError::from(e),
        )
    };
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let places = engine::column_places(batch.schema_ref());
    for field in schema.fields() {
        let Some(column) = places.get(field.name().as_str()).map(|&i| batch.column(i)) else {
            continue;
        };
        // Not `safe`: a value the type cannot hold fails, as an SQL cast does.
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        columns.push(cast_with_options(column, field.data_type(), &options).map_err(fail)?);
        fields.push(field.as_ref().clone().with_nullable(true));
    }
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
        .map_err(fail)
}

/// The reasons of `rows`, made a run of rows per core (writing values out as text is most of
/// the work).
fn reason_column(
    settings: &DiffSettings,
    rows: &[Pair],
    new_side: &Side<'_>,
    old_side: &Side<'_>,
) -> Result<ArrayRef> {
    let runs: Vec<&[Pair]> = rows
        .chunks(rows.len().div_ceil(crate::parallel::cores()).max(1))
        .collect();
    let reasons_by_run =
        crate::parallel::map(&runs, |run| reasons(settings, run, new_side, old_side))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
    let reasons: Vec<&dyn Array> = reasons_by_run.iter().map(|r| r as &dyn Array).collect();
    Ok(match reasons.is_empty() {
        true => Arc::new(StringArray::from(Vec::<&str>::new())),
        false => concat(&reasons).map_err(arrow_error)?,
    })
}

/// Where one compared column's values differ between the sides of the CHANGED rows: distinct
/// values, or for a column with a tolerance, values that moved by more than it (or became
/// null, or stopped being null). The small slack absorbs floating-point noise, so that a move
/// of exactly the tolerance is none.
fn differs(old: &ArrayRef, new: &ArrayRef, tolerance: Option<Tolerance>) -> Result<BooleanArray> {
    let Some(tolerance) = tolerance else {
        return distinct(old, new).map_err(arrow_error);
    };
    let as_numbers = |values: &ArrayRef| -> Result<Float64Array> {
        let numbers = cast_with_options(
            values,
            &DataType::Float64,
            &CastOptions {
                safe: false,
                ..Default::default()
            },
        )
        .map_err(arrow_error)?;
        Ok(numbers
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("a cast to Float64")
            .clone())
    };
    let (old, new) = (as_numbers(old)?, as_numbers(new)?);
    Ok((0..old.len())
        .map(|i| {
            Some(match (old.is_null(i), new.is_null(i)) {
                (true, true) => false,
                (false, false) => {
                    let (o, n) = (old.value(i), new.value(i));
                    let allowed = match tolerance {
                        Tolerance::Absolute(t) => t,
                        Tolerance::Relative(r) => r * o.abs(),
                    };
                    (n - o).abs() > allowed * (1.0 + 1e-9) + 1e-12
                }
                _ => true,
            })
        })
        .collect())
}

/// The reasons: `new row`, `row removed`; for a CHANGED row each compared column whose
/// values differ, `<column> changed from <old> to <new>` (null as `null`), joined by `; `;
/// for a RENAMED row each key column that differs, `key <column> changed from <old> to
/// <new>`; none for an UNCHANGED row.
fn reasons(settings: &DiffSettings, rows: &[Pair], new: &Side, old: &Side) -> Result<StringArray> {
    let mut changes = column_changes(
        (rows, ChangeKind::Changed),
        (&settings.compared, &settings.tolerance, ""),
        new,
        old,
    )?;
    let mut key_changes = column_changes(
        (rows, ChangeKind::Renamed),
        (&settings.key, &[], "key "),
        new,
        old,
    )?;
    let mut built = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
    let (mut changed, mut renamed) = (0, 0);
    let mut reason = String::new();
    for row in rows {
        match row.kind {
            ChangeKind::New => built.append_value("new row"),
            ChangeKind::Deleted => built.append_value("row removed"),
            ChangeKind::Unchanged => built.append_null(),
            ChangeKind::Changed => {
                write_reason(&mut reason, &mut changes, changed);
                built.append_value(&reason);
                changed += 1;
            }
            ChangeKind::Renamed => {
                write_reason(&mut reason, &mut key_changes, renamed);
                built.append_value(&reason);
                renamed += 1;
            }
        }
    }
    Ok(built.finish())
}

/// One column's differences over the rows of one kind, in their order: where its values
/// differ, and the values that differ as text (old and new).
struct ColumnChanges {
    /// `<column>` or `key <column>`.
    label: String,
    differs: BooleanArray,
    old: StringArray,
    new: StringArray,
    /// The next of `old` and `new` to write.
    next: usize,
}

/// The differences of `columns` between the sides of the `kind` rows among `rows` (none when
/// there are no such rows).
fn column_changes(
    (rows, kind): (&[Pair], ChangeKind),
    (columns, tolerance, label): (&[String], &[(String, Tolerance)], &str),
    new: &Side,
    old: &Side,
) -> Result<Vec<ColumnChanges>> {
    let (at_new, at_old) = (
        rows_of_kind(rows, kind, |r| r.new),
        rows_of_kind(rows, kind, |r| r.old),
    );
    if at_new.is_empty() {
        return Ok(Vec::new());
    }
    let mut changes = Vec::with_capacity(columns.len());
    for c in columns {
        let (Some(new_values), Some(old_values)) =
            (new.gather(c, &at_new)?, old.gather(c, &at_old)?)
        else {
            return Err(missing_column(c));
        };
        let tolerance = tolerance.iter().find(|(t, _)| t == c).map(|(_, t)| *t);
        let differs = differs(&old_values, &new_values, tolerance)?;
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
        changes.push(ColumnChanges {
            label: format!("{label}{c}"),
            differs,
            old: text(&old_values)?,
            new: text(&new_values)?,
            next: 0,
        });
    }
    Ok(changes)
}

/// The reason of the `row`th row of the kind `changes` were made for: each column that
/// differs, `<label> changed from <old> to <new>`, joined by `; `.
fn write_reason(reason: &mut String, changes: &mut [ColumnChanges], row: usize) {
    reason.clear();
    for change in changes.iter_mut() {
        if !change.differs.value(row) {
            continue;
        }
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        for part in [
            change.label.as_str(),
            " changed from ",
            shown(&change.old, change.next),
            " to ",
            shown(&change.new, change.next),
        ] {
            reason.push_str(part);
        }
        change.next += 1;
    }
}

/// A value as a reason writes it: null as `null`, the text `null` as `"null"`.
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
