//! Conclude: a classified run brought to its end. The guard refuses a run that would delete
//! or change too much; each output's delta is shaped; then the commit protocol of
//! [`crate::store`]: the snapshot and change rows stored under names only this run can choose,
//! the commit record created only if absent, the delta files put in place after it.

use std::collections::HashMap;

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::progress::Progress;
use super::report::{PendingCommit, record_run};
use super::scope::{PartitionRows, count_partitions};
use super::{Facts, Partial, TableJob, TableRun, TableStatus};
use crate::deliver::{self, Fresh, files};
use crate::diff::strategy::Strategy;
use crate::diff::{Counts, Delta};
use crate::error::{Error, Result};
use crate::sink;
use crate::sink::background::SideEncoding;
use crate::sink::shape::{shape_batches, stored_changes};
use crate::spec::DEFAULT_INCLUDE;
use crate::spec::{DEFAULT_MAX_DELETED, Plan, TablePlan, limit_or_default};
use crate::store::{self, ColumnSchema, CommitKind, CommitRecord, HashSpec, Store};

/// The end of an `atomic: true` run: when every table ran well, their prepared versions are
/// committed together (`Store::commit_atomic`) and then their deltas written; otherwise none
/// is, and each prepared table says why. Every prepared table's run is recorded here.
pub(super) async fn commit_together(
    plan: &Plan,
    store: &Store,
    id: &str,
    outcomes: &mut [TableRun],
    deliver: bool,
) {
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.error.is_some() || o.status == TableStatus::Skipped)
        .map(|o| o.table.as_str())
        .collect();
    let records: Vec<CommitRecord> = outcomes
        .iter()
        .filter_map(|o| o.pending.as_ref().map(|p| p.record.clone()))
        .collect();
    // Why nothing was committed, if so; a lost race is a conflict (exit 4), as for one table.
    let verdict: std::result::Result<(), (String, bool)> = if !failed.is_empty() {
        Err((
            format!(
                "the pipeline is atomic and {} did not commit",
                failed.join(", ")
            ),
            false,
        ))
    } else {
        match store.commit_atomic(id, &plan.name, &records).await {
            Ok(()) => Ok(()),
            Err(e @ Error::Conflict { .. }) => Err((e.to_string(), true)),
            Err(e) => Err((format!("the pipeline commit failed: {e}"), false)),
        }
    };
    for outcome in outcomes.iter_mut() {
        let Some(pending) = outcome.pending.take() else {
            continue;
        };
        let version = pending.record.version;
        match &verdict {
            Ok(()) => {
                let table = plan.table(&outcome.table).expect("a pipeline table");
                if deliver {
                    deliver_committed(store, table, &pending.record, pending.outputs, outcome)
                        .await;
                }
            }
            Err((_, true)) => {
                outcome.status = TableStatus::Conflict;
                outcome.error = Some(Error::Conflict {
                    table: outcome.table.clone(),
                    version,
                });
            }
            Err((reason, false)) => {
                outcome.status = TableStatus::Failed;
                outcome.error = Some(Error::NotCommitted {
                    reason: reason.clone(),
                });
            }
        }
        let table = plan.table(&outcome.table).expect("a pipeline table");
        record_run(
            plan,
            table,
            store,
            outcome,
            pending.started_at,
            &pending.run_id,
        )
        .await;
    }
}

/// What a table's run hands to [`conclude`] once its rows are classified.
pub(crate) struct Concluding {
    pub facts: Facts,
    pub delta: Delta,
    /// Baseline rows carried in for rejected rows' keys.
    pub held: u64,
    /// Baseline rows carried in from outside the run's scope.
    pub kept: u64,
    pub partitions: Vec<PartitionRows>,
    pub column_types: HashMap<String, DataType>,
    pub empty_today: Vec<String>,
    pub hash_spec: HashSpec,
    pub watermark: Option<store::Watermark>,
    pub snapshot: NewSnapshot,
    /// The strategy that classified the rows.
    pub strategy: Strategy,
}

/// The new snapshot, on its way to the store.
pub(crate) enum NewSnapshot {
    /// Being encoded on the side.
    Encoding(SideEncoding),
    /// In memory, to encode.
    Batches(SchemaRef, Vec<RecordBatch>),
    /// Already written to a file, as it streamed in.
    Spooled(store::Spool),
}

/// The end of a table's run, once its rows are classified: guard, shaped outputs (or the dry
/// run's preview), then [`commit`].
pub(super) async fn conclude(
    job: &TableJob<'_>,
    concluding: Concluding,
    baseline: Option<&CommitRecord>,
    partial: &mut Partial,
) -> Result<TableRun> {
    let (table, name) = (job.table, job.name());
    let Concluding {
        facts,
        delta,
        held,
        kept,
        partitions,
        column_types,
        ..
    } = &concluding;
    // What the run reports: rows read, and held rows are rejected rather than unchanged; rows
    // kept from outside the run's scope are not counted.
    let reported = Counts {
        rows_in: delta.counts.rows_in - held - kept + facts.rejected,
        unchanged: delta.counts.unchanged - held - kept,
        ..delta.counts
    };
    partial.counts = reported;
    // The strategy that decided, once any hand-over happened (logged at -v).
    tracing::info!("{name}: classified by the {} strategy", concluding.strategy);
    let partitions = count_partitions(table, delta, partitions);
    if !job.options.force {
        let baseline_rows = baseline.map_or(0, |b| b.counts.rows_in);
        check_guard(table, &delta.counts, baseline_rows)?;
    }
    // Every output is shaped before the commit, so a bad output setting fails the run while
    // nothing is committed yet; only the file writes come after the commit.
    let mut shaped = Vec::with_capacity(table.outputs.len());
    for output in &table.outputs {
        shaped.push(files::shape(table, output, delta).await?);
    }
    let run = TableRun {
        table: name.to_string(),
        status: TableStatus::Committed,
        version: Some(facts.version),
        counts: reported,
        rejected: facts.rejected,
        rejects_file: partial.rejects_file.clone(),
        notes: facts.notes.clone(),
        duration_ms: 0,
        delta_files: Vec::new(),
        sources: facts.files.iter().map(|f| f.path.clone()).collect(),
        error: None,
        skipped_because: None,
        preview: None,
        partitions,
        pending: None,
        strategy: Some(concluding.strategy),
        deliveries: Vec::new(),
    };
    if job.options.dry_run {
        let preview = match shaped.into_iter().next() {
            Some(first) => first,
            None => shape_batches(table, delta, &DEFAULT_INCLUDE, None, column_types).await?,
        };
        return Ok(TableRun {
            status: TableStatus::DryRun,
            rejects_file: None,
            preview: Some(preview),
            ..run
        });
    }
    commit(job, concluding, baseline, shaped, run).await
}

/// Store the version's files, commit it (or stage it, in an atomic pipeline), and put the
/// delta files in place.
async fn commit(
    job: &TableJob<'_>,
    concluding: Concluding,
    baseline: Option<&CommitRecord>,
    shaped: Vec<(SchemaRef, Vec<RecordBatch>)>,
    mut run: TableRun,
) -> Result<TableRun> {
    let (table, store, name) = (job.table, job.store, job.name());
    let Concluding {
        facts,
        delta,
        column_types,
        empty_today,
        hash_spec,
        watermark,
        snapshot,
        ..
    } = concluding;
    let version = facts.version;
    job.progress.phase("writing the snapshot and committing");
    // One time for the record and the delta files' names: a delivery repeated later names
    // its files as this one does.
    let committed_at = Utc::now();
    let delivering = !job.options.no_deliver;
    // The delta files are written on another core while the version's files are stored,
    // under temporary names beside their places; only once the commit succeeded are they
    // renamed into place. An atomic pipeline writes them once every table committed.
    let (shaped, preparing) = match (&job.options.atomic_run, delivering) {
        (Some(_), _) => (shaped, None),
        (None, false) => (Vec::new(), None),
        (None, true) => {
            let (table, name) = (table.clone(), name.to_string());
            let preparing = tokio::task::spawn_blocking(move || {
                (table.outputs.iter().zip(&shaped))
                    .map(|(output, shaped)| {
                        files::prepare(&name, output, version, committed_at, shaped).map(Some)
                    })
                    .collect::<Result<Vec<_>>>()
            });
            (Vec::new(), Some(preparing))
        }
    };
    // The change rows are encoded on another core while the snapshot is stored.
    let (changes_schema, changes_batches) = stored_changes(table, &delta).await?;
    let changes_encoding = SideEncoding::start(changes_schema, changes_batches);
    // Step 1 of the commit protocol: data files under names only this run can choose.
    let snapshot = store_snapshot(
        store,
        name,
        &store::snapshot_name(version, job.run_id),
        snapshot,
        job.progress,
    )
    .await?;
    tracing::debug!("{name}: stored the snapshot");
    job.progress.phase("committing");
    let changes_bytes = changes_encoding.finish().await?;
    let changes = store
        .put_file(
            name,
            &store::changes_name(version, job.run_id),
            changes_bytes,
        )
        .await?;
    // Step 2: the commit record, created only if absent.
    let record = CommitRecord {
        format: store::RECORD_FORMAT,
        table: name.to_string(),
        version,
        kind: CommitKind::Run,
        committed_at,
        started_at: job.started_at,
        run_id: job.run_id.to_string(),
        pipeline: job.plan.name.clone(),
        pipeline_hash: job.plan.file_hash.clone(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        snapshot,
        changes,
        counts: delta.counts,
        source_files: facts.files.clone(),
        key: table.key.clone(),
        schema: facts
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.clone(),
                data_type: column_types[c].to_string(),
                empty: empty_today.contains(c),
            })
            .collect(),
        hash: hash_spec,
        duration_ms: job.started.elapsed().as_millis() as u64,
        watermark,
        previous_version: baseline.map(|b| b.version),
        atomic: None,
    };
    // A destination seen for the first time receives this version, even if this process
    // dies right after the commit.
    deliver::join_missing(store, table, version - 1).await?;
    if let Some(id) = &job.options.atomic_run {
        // An atomic pipeline commits every table together, once all have run; the tables that
        // depend on this one read this version meanwhile.
        let mut record = record;
        record.atomic = Some(id.clone());
        store.stage(record.clone());
        run.pending = Some(Box::new(PendingCommit {
            record,
            outputs: shaped,
            started_at: job.started_at,
            run_id: job.run_id.to_string(),
        }));
        return Ok(run);
    }
    // A delta that cannot be written fails the run before anything is committed.
    let prepared = match preparing {
        Some(task) => task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?,
        None => Vec::new(),
    };
    store.commit(&record).await?;
    tracing::info!(
        "{name}: committed v{version} ({:.2} s)",
        job.started.elapsed().as_secs_f64()
    );
    if job.options.abort_after_commit {
        // A test's stand-in for kill -9 at the worst moment: nothing after the commit runs.
        std::process::abort();
    }
    if delivering {
        let fresh = Fresh { version, prepared };
        run.deliveries = deliver::bring_up_to_date(store, table, Some(fresh), None).await;
        run.delta_files = run
            .deliveries
            .iter()
            .flat_map(|d| d.files.clone())
            .collect();
    }
    Ok(run)
}

/// Deliver an atomic pipeline's committed version of `table` (its outputs shaped, not written)
/// and everything before it its destinations lack; the outcome says what reached where.
async fn deliver_committed(
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    shaped: Vec<files::Shaped>,
    outcome: &mut TableRun,
) {
    let mut prepared = Vec::with_capacity(shaped.len());
    for (output, shaped) in table.outputs.iter().zip(&shaped) {
        let file = files::prepare(
            &table.name,
            output,
            record.version,
            record.committed_at,
            shaped,
        );
        match file {
            Ok(file) => prepared.push(Some(file)),
            // Read back from the store by the delivery instead, which says what went wrong.
            Err(e) => {
                tracing::debug!("{}: preparing {}: {e}", table.name, output.name);
                prepared.push(None);
            }
        }
    }
    let fresh = Fresh {
        version: record.version,
        prepared,
    };
    outcome.deliveries = deliver::bring_up_to_date(store, table, Some(fresh), None).await;
    outcome.delta_files = (outcome.deliveries.iter())
        .flat_map(|d| d.files.clone())
        .collect();
}

/// Store the new snapshot under `relative` (step 1 of the commit protocol).
async fn store_snapshot(
    store: &Store,
    name: &str,
    relative: &str,
    snapshot: NewSnapshot,
    progress: &Progress,
) -> Result<store::StoredFile> {
    let payload = match snapshot {
        NewSnapshot::Spooled(spool) => return store.put_spooled(name, relative, spool).await,
        NewSnapshot::Encoding(encoding) => encoding.finish().await?,
        NewSnapshot::Batches(schema, batches) => sink::encode_parquet(&schema, &batches)?,
    };
    tracing::debug!(
        "{name}: encoded the snapshot ({} bytes)",
        payload.content_length()
    );
    progress.phase("writing the snapshot");
    store.put_file(name, relative, payload).await
}

/// Refuse the run when it would delete or change more than the guard allows, or when the new
/// snapshot holds fewer rows than it requires. Limits in percent are of the baseline's rows.
fn check_guard(table: &TablePlan, counts: &Counts, baseline_rows: u64) -> Result<()> {
    let guard = &table.guard;
    let share = |n: u64| {
        if baseline_rows == 0 {
            0.0
        } else {
            n as f64 * 100.0 / baseline_rows as f64
        }
    };
    let refuse = |what: String| Error::Refused {
        table: table.name.clone(),
        message: format!("{what}. Check the source file, or run again with --force."),
    };
    let max_deleted = limit_or_default(guard.max_deleted, DEFAULT_MAX_DELETED, baseline_rows);
    let max_changed = guard.max_changed.map(|limit| (limit, false));
    for (count, limit, verb, key) in [
        (counts.deleted, max_deleted, "deleted", "max_deleted"),
        (counts.changed, max_changed, "changed", "max_changed"),
    ] {
        if let Some((limit, default)) = limit
            && count as f64 > limit.rows(baseline_rows)
        {
            let source = match default {
                true => format!(
                    " (the default; set `guard: {{{key}: …}}` in the pipeline to allow more)"
                ),
                false => String::new(),
            };
            return Err(refuse(format!(
                "{} of {} rows ({:.1}%) would be {verb}; guard {key} is {limit}{source}",
                thousands(count),
                thousands(baseline_rows),
                share(count)
            )));
        }
    }
    if let Some(limit) = guard.min_rows
        && (counts.rows_in as f64) < limit.rows(baseline_rows)
    {
        return Err(refuse(format!(
            "the new snapshot holds {} rows ({:.1}% of the baseline's {}); guard min_rows is {limit}",
            thousands(counts.rows_in),
            share(counts.rows_in),
            thousands(baseline_rows)
        )));
    }
    Ok(())
}

/// 1034 -> "1,034", as people read counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
