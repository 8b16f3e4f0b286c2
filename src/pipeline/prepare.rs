//! Prepare: today's rows made comparable. They are read as the types the baseline pins (a
//! value that does not fit rejects its row), cleaned up by `normalize`, validated (rejected rows
//! go to the rejects file, and their keys are held), and hashed over the compared columns.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use super::load::LoadedSnapshot;
use super::progress::Counting;
use super::{Facts, Partial, TableJob};
use crate::diff::comparable;
use crate::diff::keys::deduplicate;
use crate::diff::row_hash::{self, ROW_HASH_COLUMN};
use crate::engine::{self, register_batches};
use crate::error::{Error, Result};
use crate::normalize;
use crate::sink;
use crate::source::{self, types::Pinned};
use crate::store::{self, CommitRecord, HashSpec};
use crate::validate::{self, Rejection};

/// Today's rows read as their pinned types and normalised; nothing rejected yet but the
/// cells that did not fit.
pub(super) struct Typed {
    pub facts: Facts,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The rows as the snapshot gave them, before typing (shown in the rejects file when
    /// rows are not traced to the source).
    pub read: Vec<RecordBatch>,
    /// The source's rows as read.
    pub source_batches: Vec<RecordBatch>,
    pub rejections: Vec<Rejection>,
    /// Source rows rejected before the transform, and the keys it gives them.
    pub early_rejects: Vec<validate::RejectedRow>,
    pub early_held_keys: Vec<RecordBatch>,
}

/// Read the loaded snapshot (running the transform), with every column as the type the
/// baseline pins unless `source.columns` declares another.
pub(super) async fn type_rows(
    job: &TableJob<'_>,
    loaded: LoadedSnapshot,
    baseline: Option<&CommitRecord>,
) -> Result<Typed> {
    let (table, name) = (job.table, job.name());
    let LoadedSnapshot {
        frame,
        mut facts,
        source_batches,
        cell_errors,
        early_rejects,
        early_held_keys,
    } = loaded;
    // The baseline pins every column's type; a declared type wins (the user changed it).
    let pinned: HashMap<&str, &str> = baseline
        .map(|b| {
            b.schema
                .iter()
                .map(|c| (c.name.as_str(), c.data_type.as_str()))
                .collect()
        })
        .unwrap_or_default();
    job.progress.phase("typing and hashing rows");
    let plan_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut raw = frame
        .collect()
        .await
        .map_err(engine::context(name, "reading the snapshot"))?;
    let mut raw_schema = raw.first().map(|b| b.schema()).unwrap_or(plan_schema);
    job.log_step("applied the transform");
    if facts.traced {
        // The transform carried each row's source row: strip it, and name rows by it.
        let mut source_rows = Vec::new();
        for batch in &mut raw {
            let last = batch.num_columns() - 1;
            let ordinals = batch.column(last).clone();
            source_rows.extend(
                ordinals
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default(),
            );
            batch.remove_column(last);
        }
        let mut fields: Vec<FieldRef> = raw_schema.fields().iter().cloned().collect();
        fields.pop();
        raw_schema = Arc::new(Schema::new(fields));
        facts.rows = facts.rows.through(source_rows);
    }
    // Nested, binary, small-integer and float32 values in the form they are compared in, but
    // where the baseline stored such a column in its own type (before tidemark compared them so).
    let kept: Vec<&str> = raw_schema
        .fields()
        .iter()
        .filter(|f| pinned.get(f.name().as_str()) == Some(&f.data_type().to_string().as_str()))
        .map(|f| f.name().as_str())
        .collect();
    let raw = raw
        .iter()
        .map(|b| comparable::comparable_batch(b, &kept))
        .collect::<Result<Vec<_>>>()?;
    let raw_schema = comparable::comparable_schema(&raw_schema, &kept);
    let mut targets: Vec<Option<DataType>> = Vec::with_capacity(raw_schema.fields().len());
    for field in raw_schema.fields() {
        let declared = table.source.declared_type(field.name());
        let target = match pinned.get(field.name().as_str()) {
            Some(type_text) if *type_text != field.data_type().to_string() => {
                let pinned_type = type_text.parse::<DataType>().map_err(|_| Error::Store {
                    location: job.store.location().to_string(),
                    message: format!("table {name}: the baseline's type `{type_text}` of column \"{}\" is not readable", field.name()),
                })?;
                match declared {
                    Some(d) => {
                        facts.notes.push(format!(
                            "column \"{}\" changes type from {} to {}, as declared in `source.columns`",
                            field.name(),
                            source::types::type_name(&pinned_type),
                            source::types::type_name(d)
                        ));
                        None
                    }
                    None => Some(pinned_type),
                }
            }
            _ => None,
        };
        targets.push(target);
    }
    // Cells that did not fit their declared type at load, then values that do not fit the
    // type the baseline pins: each rejects its row.
    let mut rejections: Vec<Rejection> = cell_errors
        .into_iter()
        .map(|e| Rejection {
            index: e.row as u64,
            rule: "type".into(),
            message: e.message,
            cell: Some((e.column, e.value)),
        })
        .collect();
    let (typed_schema, typed) = pin_types(
        &table.key,
        &raw_schema,
        &raw,
        &targets,
        &facts.rows,
        &facts.origin,
        &mut rejections,
        &mut facts.notes,
    )?;
    let typed = typed
        .iter()
        .map(|b| normalize::apply(name, b, &table.normalize))
        .collect::<Result<Vec<_>>>()?;
    job.log_step("typed and normalised");
    Ok(Typed {
        facts,
        schema: typed_schema,
        batches: typed,
        read: raw,
        source_batches,
        rejections,
        early_rejects,
        early_held_keys,
    })
}

/// Today's rows with the invalid ones set aside.
pub(super) struct Validated {
    pub facts: Facts,
    pub schema: SchemaRef,
    /// Every row read, typed, rejected ones too (a file that holds a partition speaks for it).
    pub all_rows: Vec<RecordBatch>,
    /// The rows that passed.
    pub valid: Vec<RecordBatch>,
    /// Indexes (in `all_rows`) of the rows rejected.
    pub rejected: HashSet<u64>,
    /// How many rows the snapshot had before any was rejected.
    pub total: u64,
    /// The keys of rejected rows: they keep their baseline rows, so a bad row is never DELETED.
    pub held_keys: Vec<RecordBatch>,
}

/// Check `not_null`, the rules and the references; write the rejected rows to the rejects file
/// and refuse the run above `max_invalid`.
pub(super) async fn validate_rows(
    job: &TableJob<'_>,
    typed: Typed,
    partial: &mut Partial,
) -> Result<Validated> {
    let (table, name) = (job.table, job.name());
    let Typed {
        mut facts,
        schema: typed_schema,
        batches: typed,
        read: raw,
        source_batches,
        mut rejections,
        early_rejects,
        early_held_keys,
    } = typed;
    let mut rejected: HashSet<u64> = rejections.iter().map(|r| r.index).collect();
    let nulls = validate::check_nulls(table, &typed, &rejected);
    rejected.extend(nulls.iter().map(|r| r.index));
    rejections.extend(nulls);
    let ruled = validate::check_rules(table, &typed_schema, &typed, &rejected).await?;
    rejected.extend(ruled.iter().map(|r| r.index));
    rejections.extend(ruled);
    let orphans =
        validate::check_references(table, job.store, &typed_schema, &typed, &rejected).await?;
    rejected.extend(orphans.iter().map(|r| r.index));
    rejections.extend(orphans);
    let held_keys = held_keys(
        job,
        &typed_schema,
        &typed,
        early_held_keys,
        &mut rejected,
        &mut rejections,
    )?;
    let rows_read =
        raw.iter().map(|b| b.num_rows() as u64).sum::<u64>() + early_rejects.len() as u64;
    let mut rejected_rows = early_rejects;
    // Rows are shown as read from the source when each maps to one source row.
    let (as_read, from_source) = if facts.traced {
        (&source_batches, true)
    } else {
        (&raw, false)
    };
    rejected_rows.extend(validate::locate(
        &rejections,
        &facts.rows,
        as_read,
        from_source,
    ));
    partial.rejected = rejected_rows.len() as u64;
    facts.rejected = rejected_rows.len() as u64;
    facts.version = job.store.next_version(name).await?;
    if !rejected_rows.is_empty() && !job.options.dry_run {
        partial.rejects_file = Some(write_rejects(job, &facts, &rejected_rows).await?);
    }
    partial.counts = crate::diff::Counts {
        rows_in: rows_read,
        ..Default::default()
    };
    validate::check_limits(
        table,
        &rejected_rows,
        rows_read,
        partial.rejects_file.as_deref(),
    )?;
    let valid = validate::without_rows(&typed, &rejected)?;
    Ok(Validated {
        facts,
        schema: typed_schema,
        total: raw.iter().map(|b| b.num_rows() as u64).sum(),
        all_rows: typed,
        valid,
        rejected,
        held_keys,
    })
}

/// The keys rejected rows hold (and those of rows rejected before the transform); every other
/// row of such a key is held out with them.
fn held_keys(
    job: &TableJob<'_>,
    typed_schema: &SchemaRef,
    typed: &[RecordBatch],
    early_held_keys: Vec<RecordBatch>,
    rejected: &mut HashSet<u64>,
    rejections: &mut Vec<Rejection>,
) -> Result<Vec<RecordBatch>> {
    let (table, name) = (job.table, job.name());
    let mut held_keys = early_held_keys
        .iter()
        .map(|b| normalize::apply(name, b, &table.normalize))
        .collect::<Result<Vec<_>>>()?;
    if !rejected.is_empty() {
        let key_schema = Arc::new(Schema::new(
            table
                .key
                .iter()
                .map(|k| typed_schema.field_with_name(k).cloned())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| engine::error("selecting keys", e.into()))?,
        ));
        let key_columns: Vec<usize> = table
            .key
            .iter()
            .map(|k| typed_schema.index_of(k).expect("key columns exist"))
            .collect();
        for batch in validate::only_rows(typed, rejected)? {
            held_keys.push(
                batch
                    .project(&key_columns)
                    .map_err(|e| engine::error("selecting keys", e.into()))?
                    .with_schema(key_schema.clone())
                    .map_err(|e| engine::error("selecting keys", e.into()))?,
            );
        }
    }
    // A key's other rows are held out with its rejected one (a repeated key, or the rows an
    // aggregating transform sums): one bad row never half-updates a key.
    for index in validate::rows_with_keys(typed, &table.key, &held_keys, rejected) {
        rejections.push(Rejection {
            index,
            rule: "held".into(),
            message: "its key also has a rejected row; the key keeps its baseline row until every row of it is valid".into(),
            cell: None,
        });
        rejected.insert(index);
    }
    Ok(held_keys)
}

/// Write the rejected rows (as the source holds them, unless the transform hides which source
/// row a result row came from: then the result's columns follow); returns where they went.
async fn write_rejects(
    job: &TableJob<'_>,
    facts: &Facts,
    rejected_rows: &[validate::RejectedRow],
) -> Result<String> {
    let (table, name) = (job.table, job.name());
    let mut reject_columns = facts.source_columns.clone();
    if table.transform.is_some() && !facts.traced {
        reject_columns.extend(
            facts
                .columns
                .iter()
                .filter(|c| !facts.source_columns.contains(c))
                .cloned(),
        );
    }
    let (schema, batch) = validate::rejects_batch(rejected_rows, &reject_columns)?;
    match &table.validate.rejects_path {
        Some(template) => {
            // Another run's rejects file of the same name stays: this one goes beside it.
            let (path, beside) =
                crate::deliver::files::places(template, name, facts.version, Utc::now());
            let path = match beside {
                Some(beside) if path.exists() => beside,
                _ => path,
            };
            sink::write_location(&path, &schema, &[batch]).await
        }
        None => {
            let mut csv = Vec::new();
            sink::write_to(&mut csv, source::SourceFormat::Csv, &schema, &[batch])?;
            let relative = store::rejects_name(facts.version, job.run_id);
            job.store.put_plain(name, &relative, csv.into()).await
        }
    }
}

/// Today's rows, hashed over the compared columns, with repeated keys resolved: the new
/// snapshot as it will be stored (before baseline rows are carried into it).
pub(super) struct Hashed {
    pub facts: Facts,
    /// The rows' schema: the columns, then `_row_hash`.
    pub schema: SchemaRef,
    pub rows: Vec<RecordBatch>,
    pub column_types: HashMap<String, DataType>,
    /// The columns that make a row CHANGED (empty columns left out).
    pub compared: Vec<String>,
    /// Those of them in the row hash (tolerance columns are compared outside it).
    pub hashed: Vec<String>,
    pub hash_spec: HashSpec,
    /// Columns without a value in any row today.
    pub empty_today: Vec<String>,
    pub held_keys: Vec<RecordBatch>,
}

/// Hash the valid rows over the compared columns and register them as `incoming`; resolve
/// repeated keys as `duplicates` says.
pub(super) async fn hash_rows(
    job: &TableJob<'_>,
    ctx: &SessionContext,
    validated: Validated,
    baseline: Option<&CommitRecord>,
) -> Result<Hashed> {
    let (table, name) = (job.table, job.name());
    let Validated {
        facts,
        schema: typed_schema,
        valid,
        rejected,
        total,
        held_keys,
        ..
    } = validated;
    let valid_rows: u64 = valid.iter().map(|b| b.num_rows() as u64).sum();
    let empty_today = empty_columns(&typed_schema, &valid);
    let empty_in_baseline: Vec<String> = baseline
        .map(|b| {
            b.schema
                .iter()
                .filter(|c| c.empty)
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let compared: Vec<String> = table
        .compare
        .resolve(&facts.columns, &table.key)
        .into_iter()
        .filter(|c| !empty_today.contains(c) && !empty_in_baseline.contains(c))
        .collect();
    // Tolerance columns are compared outside the hash (a hash cannot say "close enough").
    let hashed: Vec<String> = compared
        .iter()
        .filter(|c| !table.tolerance.iter().any(|(t, _)| t == *c))
        .cloned()
        .collect();
    job.log_step("validated");
    let mut schema: SchemaRef = {
        let mut fields: Vec<FieldRef> = typed_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            ROW_HASH_COLUMN,
            DataType::UInt64,
            false,
        )));
        Arc::new(Schema::new(fields))
    };
    job.progress.bar("hashing rows", valid_rows, Counting::Rows);
    let mut rows = Vec::with_capacity(valid.len());
    for hashed_batch in crate::parallel::map(&valid, |batch| {
        let hashed = with_row_hash(name, batch, &hashed, &schema);
        job.progress.advance(batch.num_rows() as u64);
        hashed
    }) {
        rows.push(hashed_batch?);
    }
    drop(valid);
    schema = rows.first().map(|b| b.schema()).unwrap_or(schema);
    register_batches(ctx, "incoming", schema.clone(), rows.clone())?;
    // Repeated keys are named by their rows in the source, also when rejected rows are gone.
    let valid_locator = if rejected.is_empty() {
        facts.rows.clone()
    } else {
        facts.rows.through(
            (0..total)
                .filter(|i| !rejected.contains(i))
                .map(|i| facts.rows.source_row(i))
                .collect(),
        )
    };
    if let Some(batches) = deduplicate(
        ctx,
        (table, "the new snapshot"),
        &rows,
        &facts.origin,
        &valid_locator,
    )
    .await?
    {
        rows = batches;
        ctx.deregister_table("incoming")
            .map_err(engine::context(name, "registering tables"))?;
        register_batches(ctx, "incoming", schema.clone(), rows.clone())?;
    }
    tracing::info!(
        "{name}: loaded, typed and hashed {valid_rows} rows, rejected {} ({:.2} s)",
        facts.rejected,
        job.started.elapsed().as_secs_f64()
    );
    let column_types: HashMap<String, DataType> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    check_tolerance_types(job, &column_types)?;
    let hash_spec = HashSpec::today(&hashed, |c| column_types[c].to_string(), &table.normalize);
    Ok(Hashed {
        facts,
        schema,
        rows,
        column_types,
        compared,
        hashed,
        hash_spec,
        empty_today,
        held_keys,
    })
}

/// A column entirely empty today is compared as if absent, so that an export that blanks a
/// column, and the day it comes back, change no row.
fn empty_columns(schema: &SchemaRef, valid: &[RecordBatch]) -> Vec<String> {
    if valid.iter().all(|b| b.num_rows() == 0) {
        return Vec::new();
    }
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(j, _)| {
            valid
                .iter()
                .all(|b| b.column(*j).null_count() == b.num_rows())
        })
        .map(|(_, f)| f.name().clone())
        .collect()
}

/// Tolerances apply to numbers only.
fn check_tolerance_types(
    job: &TableJob<'_>,
    column_types: &HashMap<String, DataType>,
) -> Result<()> {
    for (c, _) in &job.table.tolerance {
        if !column_types[c].is_numeric() {
            return Err(Error::ToleranceNotNumeric {
                table: job.name().to_string(),
                column: c.clone(),
                found: source::types::type_name(&column_types[c]),
            });
        }
    }
    Ok(())
}

/// One column of every batch read as a pinned type: the arrays, misfits by snapshot row with
/// why, and a row that made an integer column widen.
type PinnedColumn = (Vec<ArrayRef>, Vec<(u64, String)>, Option<u64>);

/// Read every column as the type the baseline pins for it (`targets`, per column). Values
/// that do not fit reject their rows; an integer column whose values all are numbers, some with
/// decimals, widens to float64 (a note says so); a column where no value fits any more changed
/// its type, which is an error unless declared.
#[allow(clippy::too_many_arguments)]
fn pin_types(
    key: &[String],
    raw_schema: &SchemaRef,
    raw: &[RecordBatch],
    targets: &[Option<DataType>],
    rows: &source::RowLocator,
    origin: &str,
    rejections: &mut Vec<Rejection>,
    notes: &mut Vec<String>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut columns: Vec<Vec<ArrayRef>> = raw.iter().map(|b| b.columns().to_vec()).collect();
    let mut fields: Vec<FieldRef> = raw_schema.fields().iter().cloned().collect();
    let at_origin = |e: Error| match e {
        Error::SourceData {
            row,
            column,
            message,
            ..
        } => Error::SourceData {
            path: PathBuf::from(origin),
            row,
            column,
            message,
        },
        other => other,
    };
    for (j, target) in targets.iter().enumerate() {
        let Some(target) = target else { continue };
        let name = fields[j].name().clone();
        let pin_all = |to: &DataType| -> Result<PinnedColumn> {
            let mut arrays = Vec::with_capacity(raw.len());
            let mut misfits = Vec::new();
            let mut widened = None;
            let mut offset = 0u64;
            for batch in raw {
                let key_column = key.contains(&name);
                match source::types::pin_column(&name, batch.column(j), to, key_column)
                    .map_err(at_origin)?
                {
                    Pinned::Fits { values, misfits: m } => {
                        arrays.push(values);
                        misfits.extend(m.into_iter().map(|(i, msg)| (offset + i as u64, msg)));
                    }
                    Pinned::Widened {
                        values,
                        example_row,
                    } => {
                        widened.get_or_insert(offset + example_row as u64);
                        arrays.push(values);
                    }
                }
                offset += batch.num_rows() as u64;
            }
            Ok((arrays, misfits, widened))
        };
        let (mut arrays, mut misfits, widened) = pin_all(target)?;
        let mut final_type = target.clone();
        if let Some(example) = widened {
            // Every batch must agree: read the whole column as float64.
            (arrays, misfits, _) = pin_all(&DataType::Float64)?;
            final_type = DataType::Float64;
            let shown = validate::render_rows(raw, &[example])
                .pop()
                .and_then(|mut row| row.remove(&name).flatten())
                .unwrap_or_default();
            notes.push(format!(
                "column \"{name}\" now has decimals ({shown} in row {}): widened from {} to float64; values compare as numbers, so this alone changes no row",
                rows.row(example),
                source::types::type_name(target)
            ));
        }
        let non_null: usize = raw
            .iter()
            .map(|b| b.column(j).len() - b.column(j).null_count())
            .sum();
        if non_null > 1 && misfits.len() == non_null {
            let (index, message) = &misfits[0];
            return Err(Error::SourceData {
                path: PathBuf::from(origin),
                row: Some(rows.row(*index)),
                column: Some(name.clone()),
                message: format!(
                    "no value fits the column's type any more ({message}): its type changed. Declare the new type under `source.columns` to accept the change (the baseline is then compared by the new type), or fix the file."
                ),
            });
        }
        rejections.extend(misfits.into_iter().map(|(index, message)| Rejection {
            index,
            rule: "type".into(),
            message,
            cell: None,
        }));
        for (batch_columns, array) in columns.iter_mut().zip(arrays) {
            batch_columns[j] = array;
        }
        fields[j] = Arc::new(Field::new(&name, final_type, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let batches = raw
        .iter()
        .zip(columns)
        .map(|(b, cols)| {
            RecordBatch::try_new_with_options(
                schema.clone(),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )
            .map_err(|e| engine::error("typing the snapshot", e.into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// Lines for the summary about columns added, removed, emptied or refilled since the baseline.
pub(super) fn schema_notes(
    baseline: &CommitRecord,
    columns: &[String],
    empty_today: &[String],
    notes: &mut Vec<String>,
) {
    for c in columns {
        match baseline.schema.iter().find(|b| &b.name == c) {
            None => notes.push(format!(
                "column \"{c}\" is new in the source: stored from this version, compared from the next run"
            )),
            Some(b) if b.empty && !empty_today.contains(c) => notes.push(format!(
                "column \"{c}\" has values again after an empty run: compared from the next run"
            )),
            Some(b) if !b.empty && empty_today.contains(c) => notes.push(format!(
                "column \"{c}\" is empty in every row: not compared in this run, so it changes no row (it is stored empty)"
            )),
            _ => {}
        }
    }
    for b in &baseline.schema {
        if !columns.contains(&b.name) {
            notes.push(format!(
                "column \"{}\" is no longer in the source: rows are compared without it, and the new version does not have it",
                b.name
            ));
        }
    }
}

/// `batch` with its row hash over `hashed` appended, as `schema` (its columns then `_row_hash`).
pub(super) fn with_row_hash(
    table: &str,
    batch: &RecordBatch,
    hashed: &[String],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    // By place, found once: a lookup by name per column is quadratic in a wide table.
    let places = engine::column_places(batch.schema_ref());
    let inputs: Vec<ArrayRef> = hashed
        .iter()
        .map(|c| batch.column(places[c.as_str()]).clone())
        .collect();
    let hashes = row_hash::hash_rows(&inputs, batch.num_rows())
        .map_err(|e| engine::error(format!("table {table}: hashing rows"), e))?;
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(hashes));
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| engine::error("hashing rows", e.into()))
}
