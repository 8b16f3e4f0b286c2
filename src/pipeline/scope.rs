//! Scope: which of the baseline's rows this run speaks for. Rows below the stored watermark
//! were taken by an earlier run; the baseline rows of rejected keys are held, and the rows of
//! partitions the run does not hold (or that an increment lacks) are kept: both are carried
//! into the new snapshot as they were, so that they are neither DELETED nor changed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;

use super::TableJob;
use super::prepare::with_row_hash;
use super::prepare::{Hashed, Validated};
use super::report::PartitionCounts;
use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::diff::sql::sql_type;
use crate::diff::{self, CHANGE_TYPE_COLUMN, Counts, ident, ident_list, key_equal};
use crate::engine::{self, register_batches};
use crate::error::{Error, Result};
use crate::source;
use crate::spec::{TableMode, TablePlan};
use crate::store::{self, CommitRecord};

/// Today's valid rows inside the run's scope, and the watermark an earlier run stored.
pub(super) struct InScope {
    pub rows: Validated,
    pub stored_watermark: Option<store::Watermark>,
}

/// Register the partitions every row read holds, and leave out the rows an earlier run took
/// (below the stored watermark of an incremental table).
pub(super) async fn rows_in_scope(
    job: &TableJob<'_>,
    ctx: &SessionContext,
    mut validated: Validated,
    baseline: Option<&CommitRecord>,
) -> Result<InScope> {
    let (table, name) = (job.table, job.name());
    // The partitions a run holds are those of every row it read, rejected rows included: a file
    // that holds a partition speaks for it.
    register_present_partitions(ctx, table, &validated.schema, &validated.all_rows).await?;
    validated.all_rows = Vec::new();
    if let TableMode::Incremental { watermark } = &table.mode {
        check_watermark_type(table, watermark, &validated.schema)?;
    }
    let stored_watermark = match (&table.mode, baseline) {
        (TableMode::Incremental { watermark }, Some(b)) => b
            .watermark
            .as_ref()
            .filter(|w| &w.column == watermark)
            .cloned(),
        _ => None,
    };
    if let Some(w) = &stored_watermark {
        let valid = std::mem::take(&mut validated.valid);
        let (kept, ignored) = above_watermark(name, &validated.schema, valid, w)?;
        if ignored > 0 {
            validated.facts.notes.push(format!(
                "{ignored} rows below the watermark ({} = {}) ignored",
                w.column, w.value
            ));
        }
        validated.valid = kept;
    }
    Ok(InScope {
        rows: validated,
        stored_watermark,
    })
}

/// The new snapshot with the baseline rows it does not speak for carried in, ready to compare.
pub(super) struct Scoped {
    pub hashed: Hashed,
    /// Baseline rows carried in for rejected rows' keys.
    pub held: u64,
    /// Baseline rows carried in from outside the run's scope.
    pub kept: u64,
    /// The partitions today's rows hold.
    pub partitions: Vec<PartitionRows>,
    /// The watermark the new version stores.
    pub watermark: Option<store::Watermark>,
    /// The baseline's columns (today's, without a baseline).
    pub baseline_columns: Vec<String>,
}

/// Register the baseline as `baseline`, and carry into the new snapshot the baseline rows of
/// rejected keys and those outside the run's scope.
pub(super) async fn carry_baseline_rows(
    job: &TableJob<'_>,
    ctx: &SessionContext,
    mut hashed: Hashed,
    baseline: Option<&CommitRecord>,
    stored_watermark: Option<store::Watermark>,
) -> Result<Scoped> {
    let (table, name) = (job.table, job.name());
    let baseline_columns: Vec<String> = match baseline {
        Some(b) => {
            diff::baseline::register(ctx, job.store, table, b, &hashed.column_types).await?;
            b.schema.iter().map(|c| c.name.clone()).collect()
        }
        None => {
            register_batches(ctx, "baseline", hashed.schema.clone(), Vec::new())?;
            hashed.facts.columns.clone()
        }
    };
    if let Some(b) = baseline {
        super::prepare::schema_notes(
            b,
            &hashed.facts.columns,
            &hashed.empty_today,
            &mut hashed.facts.notes,
        );
    }
    // What this run's rows say about the partitions and the watermark, before baseline rows
    // are carried in.
    let partitions = partition_rows(ctx, table).await?;
    let watermark = match &table.mode {
        TableMode::Incremental { watermark } => highest_watermark(ctx, name, watermark)
            .await?
            .or_else(|| stored_watermark.as_ref().map(|w| w.value.clone()))
            .map(|value| store::Watermark {
                column: watermark.clone(),
                value,
            }),
        _ => None,
    };
    // Rejected rows keep their baseline rows: carried into the new snapshot unchanged.
    let mut held = 0u64;
    if baseline.is_some() && !hashed.held_keys.is_empty() {
        register_held_keys(ctx, table, &hashed.held_keys, &hashed.schema)?;
        let matches = key_equal(&table.key, "h", "b");
        let condition = format!("EXISTS (SELECT 1 FROM held_keys h WHERE {matches})");
        held = carry(ctx, table, &condition, &mut hashed, &baseline_columns).await?;
    }
    // Baseline rows this run does not speak for are kept as they are: every row an increment
    // does not hold, and the rows of partitions a partitioned run does not hold.
    let mut kept = match (out_of_scope(table), baseline) {
        (Some(condition), Some(_)) => {
            carry(ctx, table, &condition, &mut hashed, &baseline_columns).await?
        }
        _ => 0,
    };
    if kept > 0 {
        hashed.facts.notes.push(match &table.mode {
            TableMode::Incremental { .. } => {
                format!("{kept} baseline rows not in this increment kept as they were")
            }
            _ => format!(
                "{kept} baseline rows of partitions this run does not hold kept as they were"
            ),
        });
    }
    // A rejected row whose key is unknown (null, or hidden under a merged cell) may be any
    // baseline row: none is deleted, unless `--force`.
    let keyless = rows_without_key(&hashed.held_keys);
    if keyless > 0 && baseline.is_some() && !job.options.force {
        let unmatched = carry(ctx, table, "TRUE", &mut hashed, &baseline_columns).await?;
        if unmatched > 0 {
            hashed.facts.notes.push(format!(
                "{unmatched} baseline rows not deleted: {keyless} rejected rows have no key, so which rows they stand for is unknown; fix them, or run with --force to delete the rows"
            ));
        }
        kept += unmatched;
    }
    Ok(Scoped {
        hashed,
        held,
        kept,
        partitions,
        watermark,
        baseline_columns,
    })
}

/// How many rejected rows have a key column without a value (`held_keys`: their keys).
fn rows_without_key(held_keys: &[RecordBatch]) -> usize {
    held_keys
        .iter()
        .map(|batch| {
            (0..batch.num_rows())
                .filter(|&row| batch.columns().iter().any(|c| c.is_null(row)))
                .count()
        })
        .sum()
}

/// Add the baseline rows meeting `condition` (and whose key today's rows lack) to today's rows;
/// returns how many.
async fn carry(
    ctx: &SessionContext,
    table: &TablePlan,
    condition: &str,
    hashed: &mut Hashed,
    baseline_columns: &[String],
) -> Result<u64> {
    let carried = baseline_rows_where(
        ctx,
        table,
        condition,
        &hashed.schema,
        baseline_columns,
        &hashed.hashed,
    )
    .await?;
    add_rows(ctx, &table.name, &mut hashed.rows, &hashed.schema, carried)
}

/// SQL over the baseline (alias `b`) that is true for the rows outside the run's scope: every
/// row of an increment's table, the rows of partitions a partitioned run does not hold.
fn out_of_scope(table: &TablePlan) -> Option<String> {
    match &table.mode {
        TableMode::Incremental { .. } => Some("TRUE".to_string()),
        _ if !table.partition_by.is_empty() => {
            let same = table
                .partition_by
                .iter()
                .map(|c| {
                    let c = ident(c);
                    format!("(p.{c} IS NOT DISTINCT FROM b.{c})")
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            Some(format!(
                "NOT EXISTS (SELECT 1 FROM present_partitions p WHERE {same})"
            ))
        }
        _ => None,
    }
}

/// Register the keys of rejected rows as `held_keys`, typed as the snapshot's key columns.
fn register_held_keys(
    ctx: &SessionContext,
    table: &TablePlan,
    held_keys: &[RecordBatch],
    incoming_schema: &SchemaRef,
) -> Result<()> {
    let name = table.name.as_str();
    let key_fields: Vec<Field> = table
        .key
        .iter()
        .map(|k| {
            incoming_schema
                .field_with_name(k)
                .map(|f| f.clone().with_nullable(true))
                .map_err(|e| engine::error("holding keys", e.into()))
        })
        .collect::<Result<_>>()?;
    let key_schema = Arc::new(Schema::new(key_fields));
    let mut keys = Vec::with_capacity(held_keys.len());
    for batch in held_keys {
        let mut columns = Vec::with_capacity(table.key.len());
        for field in key_schema.fields() {
            let values = batch.column_by_name(field.name()).ok_or_else(|| {
                engine::error(
                    "holding keys",
                    datafusion::error::DataFusionError::Plan(format!(
                        "no key column {}",
                        field.name()
                    )),
                )
            })?;
            columns.push(
                datafusion::arrow::compute::kernels::cast::cast(values, field.data_type())
                    .map_err(|e| engine::error("holding keys", e.into()))?,
            );
        }
        keys.push(
            RecordBatch::try_new(key_schema.clone(), columns)
                .map_err(|e| engine::error("holding keys", e.into()))?,
        );
    }
    ctx.deregister_table("held_keys")
        .map_err(engine::context(name, "holding keys"))?;
    register_batches(ctx, "held_keys", key_schema, keys)
}

/// Add carried rows to today's rows (and to the `incoming` table); returns how many.
fn add_rows(
    ctx: &SessionContext,
    name: &str,
    incoming: &mut Vec<RecordBatch>,
    schema: &SchemaRef,
    carried: Vec<RecordBatch>,
) -> Result<u64> {
    let count: u64 = carried.iter().map(|b| b.num_rows() as u64).sum();
    if count == 0 {
        return Ok(0);
    }
    incoming.extend(carried);
    ctx.deregister_table("incoming")
        .map_err(engine::context(name, "registering tables"))?;
    register_batches(ctx, "incoming", schema.clone(), incoming.clone())?;
    Ok(count)
}

/// The baseline rows (alias `b`) meeting `condition` whose key today's rows do not hold, as
/// rows of the new snapshot: the baseline rows of rejected keys, so that a rejected row is never
/// DELETED, and the rows outside the run's scope (other partitions, rows an increment lacks).
async fn baseline_rows_where(
    ctx: &SessionContext,
    table: &TablePlan,
    condition: &str,
    incoming_schema: &SchemaRef,
    baseline_columns: &[String],
    hashed: &[String],
) -> Result<Vec<RecordBatch>> {
    let name = table.name.as_str();
    let matches = |other: &str| key_equal(&table.key, other, "b");
    let projection = incoming_schema
        .fields()
        .iter()
        .filter(|f| f.name() != ROW_HASH_COLUMN)
        .map(|f| {
            let source = if baseline_columns.contains(f.name()) {
                format!("b.{}", ident(f.name()))
            } else {
                "NULL".to_string()
            };
            format!(
                "CAST({source} AS {}) AS {}",
                sql_type(f.data_type()),
                ident(f.name())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {projection} FROM baseline b WHERE ({condition}) AND NOT EXISTS (SELECT 1 FROM incoming i WHERE {})",
        matches("i")
    );
    let rows = engine::sql_batches(ctx, &sql, name, "carrying baseline rows").await?;
    let mut fields: Vec<FieldRef> = incoming_schema.fields().iter().cloned().collect();
    fields.pop();
    let row_schema = Arc::new(Schema::new(fields));
    rows.iter()
        .map(|b| {
            // SQL casts may pick other physical string types; the snapshot's are the ones.
            let columns = b
                .columns()
                .iter()
                .zip(row_schema.fields())
                .map(|(c, f)| datafusion::arrow::compute::kernels::cast::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| engine::error("holding rows", e.into()))?;
            let b = RecordBatch::try_new(row_schema.clone(), columns)
                .map_err(|e| engine::error("holding rows", e.into()))?;
            with_row_hash(name, &b, hashed, incoming_schema)
        })
        .collect()
}

/// `mode: incremental`: the rows whose watermark is at or above the stored one (or null: such a
/// row cannot be placed in time), and how many were below. Rows at the stored value are taken
/// again, because a row changed in the same second (or on the same day, for a date) as the last
/// run's newest row may have been exported after that run; taken again unchanged, it is
/// UNCHANGED.
fn above_watermark(
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    stored: &store::Watermark,
) -> Result<(Vec<RecordBatch>, u64)> {
    use datafusion::arrow::array::{BooleanArray, Scalar, StringArray};
    // The column exists: `check_columns` made sure of it, and typing keeps every column.
    let index = schema
        .index_of(&stored.column)
        .map_err(|e| engine::error("comparing watermarks", e.into()))?;
    let data_type = schema.field(index).data_type();
    let unreadable = |reason: String| {
        Error::WatermarkUnreadable(Box::new(crate::error::WatermarkProblem {
            table: name.to_string(),
            column: stored.column.clone(),
            value: stored.value.clone(),
            found: source::types::type_name(data_type),
            reason,
        }))
    };
    let threshold = datafusion::arrow::compute::kernels::cast::cast(
        &StringArray::from(vec![stored.value.as_str()]),
        data_type,
    )
    .map_err(|e| unreadable(e.to_string()))?;
    if threshold.is_null(0) {
        return Err(unreadable("not a value of that type".into()));
    }
    let threshold = Scalar::new(threshold);
    let mut kept = Vec::with_capacity(batches.len());
    let mut ignored = 0u64;
    for batch in batches {
        let values = batch.column(index);
        let above = datafusion::arrow::compute::kernels::cmp::gt_eq(values, &threshold)
            .map_err(|e| engine::error("comparing watermarks", e.into()))?;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(values.is_null(i) || (above.is_valid(i) && above.value(i))))
            .collect();
        ignored += (batch.num_rows() - keep.true_count()) as u64;
        kept.push(
            datafusion::arrow::compute::filter_record_batch(&batch, &keep)
                .map_err(|e| engine::error("comparing watermarks", e.into()))?,
        );
    }
    Ok((kept, ignored))
}

/// The highest watermark among today's rows (`incoming`), as text.
async fn highest_watermark(
    ctx: &SessionContext,
    name: &str,
    column: &str,
) -> Result<Option<String>> {
    let sql = format!(
        "SELECT CAST(max({}) AS VARCHAR) FROM incoming",
        ident(column)
    );
    let batches = engine::sql_batches(ctx, &sql, name, "finding the watermark").await?;
    Ok(batches
        .iter()
        .find(|b| b.num_rows() > 0 && b.column(0).is_valid(0))
        .map(|b| array_value_to_string(b.column(0), 0).unwrap_or_default()))
}

/// One partition's values and row count in today's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRows {
    /// The partition columns' values, as text (`null` for null).
    pub values: Vec<String>,
    /// Today's rows in it.
    pub rows: u64,
}

/// `partition_by`: the partitions today's valid rows (`incoming`) hold, with their row counts.
async fn partition_rows(ctx: &SessionContext, table: &TablePlan) -> Result<Vec<PartitionRows>> {
    if table.partition_by.is_empty() {
        return Ok(Vec::new());
    }
    // The columns exist: `check_columns` made sure of it.
    let name = table.name.as_str();
    let columns = ident_list(&table.partition_by);
    let sql = format!(
        "SELECT {columns}, count(*) AS __tidemark_rows FROM incoming GROUP BY {columns} ORDER BY {columns}"
    );
    let batches = engine::sql_batches(ctx, &sql, name, "listing partitions").await?;
    let mut present = Vec::new();
    for batch in &batches {
        let counts = batch
            .column(table.partition_by.len())
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("count(*) is Int64");
        for row in 0..batch.num_rows() {
            present.push(PartitionRows {
                values: (0..table.partition_by.len())
                    .map(|j| display_value(batch.column(j), row))
                    .collect(),
                rows: counts.value(row) as u64,
            });
        }
    }
    Ok(present)
}

/// `partition_by`: register the distinct partitions of every row read (rejected ones too) as
/// `present_partitions`: the baseline rows of the others are carried.
async fn register_present_partitions(
    ctx: &SessionContext,
    table: &TablePlan,
    schema: &SchemaRef,
    rows: &[RecordBatch],
) -> Result<()> {
    if table.partition_by.is_empty() {
        return Ok(());
    }
    // The columns exist: `check_columns` made sure of it, and typing keeps every column.
    let name = table.name.as_str();
    register_batches(ctx, "all_rows_read", schema.clone(), rows.to_vec())?;
    let frame = ctx
        .sql(&format!(
            "SELECT DISTINCT {} FROM all_rows_read",
            ident_list(&table.partition_by)
        ))
        .await
        .map_err(engine::context(name, "listing partitions"))?;
    let present_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let present = frame
        .collect()
        .await
        .map_err(engine::context(name, "listing partitions"))?;
    ctx.deregister_table("all_rows_read")
        .map_err(engine::context(name, "listing partitions"))?;
    register_batches(ctx, "present_partitions", present_schema, present)
}

/// `mode: incremental` orders rows by the watermark: it must be a number, a date or a time, not
/// text (`1/10/2024` sorts before `1/9/2024` as text).
fn check_watermark_type(table: &TablePlan, watermark: &str, schema: &SchemaRef) -> Result<()> {
    let Ok(field) = schema.field_with_name(watermark) else {
        return Err(Error::MissingColumn {
            table: table.name.clone(),
            column: watermark.to_string(),
            setting: "watermark".into(),
            origin: "the snapshot".into(),
            available: source::column_names(schema),
        });
    };
    let data_type = field.data_type();
    if data_type.is_numeric() || data_type.is_temporal() {
        return Ok(());
    }
    Err(Error::WatermarkNotOrdered {
        table: table.name.clone(),
        column: watermark.to_string(),
        found: source::types::type_name(data_type),
    })
}

/// A value as the summary shows it.
fn display_value(values: &ArrayRef, row: usize) -> String {
    if values.is_null(row) {
        "null".to_string()
    } else {
        array_value_to_string(values, row).unwrap_or_default()
    }
}

/// Counts per partition today's rows hold: new, changed and deleted from the delta.
pub(super) fn count_partitions(
    table: &TablePlan,
    delta: &diff::Delta,
    partitions: &[PartitionRows],
) -> Vec<PartitionCounts> {
    if table.partition_by.is_empty() {
        return Vec::new();
    }
    let mut by_partition: std::collections::BTreeMap<Vec<String>, Counts> = partitions
        .iter()
        .map(|p| {
            (
                p.values.clone(),
                Counts {
                    rows_in: p.rows,
                    ..Counts::default()
                },
            )
        })
        .collect();
    for batch in &delta.batches {
        let kinds = batch
            .column_by_name(CHANGE_TYPE_COLUMN)
            .expect("the delta has its change type");
        let columns: Vec<&ArrayRef> = table
            .partition_by
            .iter()
            .filter_map(|c| batch.column_by_name(c))
            .collect();
        for row in 0..batch.num_rows() {
            let values: Vec<String> = columns.iter().map(|c| display_value(c, row)).collect();
            let counts = by_partition.entry(values).or_default();
            match array_value_to_string(kinds, row)
                .unwrap_or_default()
                .as_str()
            {
                "NEW" => counts.new += 1,
                "CHANGED" => counts.changed += 1,
                "DELETED" => counts.deleted += 1,
                "RENAMED" => counts.renamed += 1,
                _ => {}
            }
        }
    }
    by_partition
        .into_iter()
        .map(|(values, mut counts)| {
            counts.unchanged =
                (counts.rows_in).saturating_sub(counts.new + counts.changed + counts.renamed);
            PartitionCounts {
                partition: table.partition_by.iter().cloned().zip(values).collect(),
                counts,
            }
        })
        .collect()
}
