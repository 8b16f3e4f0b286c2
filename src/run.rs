//! One table's run end to end (load, transform, pin types, hash, classify, commit, write
//! outputs) and the scheduler that runs a pipeline's tables in dependency order.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, ident};
use futures::StreamExt;

use crate::diff::row_hash::{self, HASH_VERSION, ROW_HASH_COLUMN};
use crate::diff::{self, CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Counts, Delta, DiffSettings};
use crate::engine;
use crate::error::{Error, Result};
use crate::normalize;
use crate::sink;
use crate::source::types::Pinned;
use crate::source::{self, SourceFile};
use crate::spec::{ChangeKind, Duplicates, Plan, TableMode, TablePlan, YamlScalar};
use crate::store::{self, ColumnSchema, CommitKind, CommitRecord, HashSpec, RunRecord, Store};
use crate::validate::{self, RejectedRow, Rejection};

mod streamed;

/// What `tidemark run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only these tables (empty: all).
    pub tables: Vec<String>,
    /// Compute and print, commit and write nothing.
    pub dry_run: bool,
    /// `--source T=PATH`.
    pub source_overrides: HashMap<String, PathBuf>,
    /// Show a progress spinner per table on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Commit even when a guard trips.
    pub force: bool,
    /// `--unsafe-single-writer`: commit to a store without put-if-absent.
    pub unsafe_single_writer: bool,
    /// Most tables run at once (`--jobs`); 0: the number of cores.
    pub jobs: usize,
    /// Skip every table not yet started once one fails.
    pub fail_fast: bool,
    /// Set by the scheduler for an `atomic: true` pipeline: the id of its pipeline commit.
    #[doc(hidden)]
    pub atomic_run: Option<String>,
}

/// Tables run at once share the terminal: one spinner line each, drawn together.
fn progress_bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}

/// Print (with `print`) above the spinners of tables still running, not through them.
pub fn above_progress<R>(print: impl FnOnce() -> R) -> R {
    progress_bars().suspend(print)
}

/// A table's line on the terminal: a bar while the amount of work is known (bytes loaded, rows
/// hashed, rows written), else a spinner naming the phase. Draws nothing when stderr is not a
/// terminal or with `--quiet`.
struct Progress(Option<indicatif::ProgressBar>);

/// What a progress bar counts.
#[derive(Clone, Copy)]
enum Counting {
    Bytes,
    Rows,
}

impl Progress {
    fn new(enabled: bool, table: &str) -> Self {
        if !enabled {
            return Progress(None);
        }
        let bar = progress_bars().add(indicatif::ProgressBar::new_spinner());
        bar.set_prefix(table.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let progress = Progress(Some(bar));
        progress.phase("starting");
        progress
    }

    /// A spinner: the phase's length is not known.
    fn phase(&self, message: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                    .expect("a valid template"),
            );
            bar.set_message(message);
        }
    }

    /// A bar of `total` bytes or rows.
    fn bar(&self, message: &'static str, total: u64, counting: Counting) {
        if let Some(bar) = &self.0 {
            let amounts = match counting {
                Counting::Bytes => "{bytes}/{total_bytes}",
                Counting::Rows => "{human_pos}/{human_len} rows",
            };
            // The spinner first, then the amounts: no frame shows the last bar's amounts.
            self.phase(message);
            bar.set_position(0);
            bar.set_length(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{spinner}} {{prefix}}: {{msg}} [{{bar:30}}] {amounts} ({{elapsed}})"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    fn advance(&self, amount: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(amount);
        }
    }
}

impl source::LoadProgress for Progress {
    fn total_bytes(&self, bytes: u64) {
        self.bar("loading the source", bytes, Counting::Bytes);
    }

    fn bytes_read(&self, bytes: u64) {
        self.advance(bytes);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// How a table's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableStatus {
    /// A new version was committed.
    Committed,
    /// Dry run: computed, nothing written.
    DryRun,
    /// Failed; nothing committed.
    Failed,
    /// Another run committed the version first.
    Conflict,
    /// A guard tripped; nothing committed.
    Refused,
    /// Not run because a table it depends on failed.
    Skipped,
}

/// The outcome of one table's run.
#[derive(Debug)]
pub struct TableRun {
    /// Table name.
    pub table: String,
    /// How it ended.
    pub status: TableStatus,
    /// The version committed (or that would have been).
    pub version: Option<u64>,
    /// Counts by change kind.
    pub counts: Counts,
    /// Rows rejected by validation.
    pub rejected: u64,
    /// Where the rejected rows were written.
    pub rejects_file: Option<String>,
    /// Schema changes and other things the user should know, one line each.
    pub notes: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
    /// Delta files written.
    pub delta_files: Vec<String>,
    /// Source files read.
    pub sources: Vec<String>,
    /// The failure, if any.
    pub error: Option<Error>,
    /// Why it was skipped.
    pub skipped_because: Option<String>,
    /// Dry runs: the delta as the first output would receive it.
    pub preview: Option<(SchemaRef, Vec<RecordBatch>)>,
    /// `partition_by`: the counts of each partition the run held.
    pub partitions: Vec<PartitionCounts>,
    /// An atomic pipeline's prepared version, committed with the others at the end.
    pub pending: Option<Box<PendingCommit>>,
}

/// The outcome of a pipeline run.
#[derive(Debug)]
pub struct PipelineRun {
    /// Pipeline name.
    pub pipeline: String,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End (UTC).
    pub finished_at: DateTime<Utc>,
    /// One entry per table run, in run order.
    pub tables: Vec<TableRun>,
}

impl PipelineRun {
    /// The exit code: 0, or 1 when any table failed, else the code of the failure (4 conflict).
    pub fn exit_code(&self) -> u8 {
        // Tables an atomic run did not commit because another failed take that one's code.
        let causes = self
            .tables
            .iter()
            .filter_map(|t| t.error.as_ref())
            .filter(|e| !matches!(e, Error::NotCommitted { .. }));
        let mut codes: Vec<u8> = causes.map(Error::exit_code).collect();
        if codes.is_empty() && self.tables.iter().any(|t| t.error.is_some()) {
            codes.push(crate::error::exit_code::FAILED);
        }
        if codes.is_empty() {
            0
        } else if codes.contains(&crate::error::exit_code::FAILED) {
            crate::error::exit_code::FAILED
        } else {
            codes
                .into_iter()
                .max()
                .unwrap_or(crate::error::exit_code::FAILED)
        }
    }
}

/// Run a pipeline's tables in dependency order. `on_table` sees each outcome as it ends.
pub async fn run_pipeline(
    plan: &Plan,
    options: &RunOptions,
    on_table: impl FnMut(&TableRun),
) -> Result<PipelineRun> {
    let store =
        Store::open(&plan.store, !options.dry_run)?.single_writer(options.unsafe_single_writer);
    run_pipeline_in(plan, &store, options, on_table).await
}

/// [`run_pipeline`] against an opened store.
pub async fn run_pipeline_in(
    plan: &Plan,
    store: &Store,
    options: &RunOptions,
    mut on_table: impl FnMut(&TableRun),
) -> Result<PipelineRun> {
    for name in options.tables.iter().chain(options.source_overrides.keys()) {
        if plan.table(name).is_none() {
            let known: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::Usage {
                message: format!(
                    "the pipeline has no table `{name}`; its tables are: {}.",
                    known.join(", ")
                ),
            });
        }
    }
    let selected: Vec<&TablePlan> = plan
        .tables
        .iter()
        .filter(|t| options.tables.is_empty() || options.tables.contains(&t.name))
        .collect();
    let selected_names: HashSet<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    for t in &selected {
        for dep in &t.depends_on {
            if !selected_names.contains(dep.as_str()) && store.versions(dep).await?.is_empty() {
                return Err(Error::Usage {
                    message: format!(
                        "table {} depends on {dep}, which has no baseline yet and is not selected; add --table {dep}.",
                        t.name
                    ),
                });
            }
        }
    }
    let started_at = Utc::now();
    let tables = schedule(plan, &selected, store, options, &mut on_table).await;
    Ok(PipelineRun {
        pipeline: plan.name.clone(),
        started_at,
        finished_at: Utc::now(),
        tables,
    })
}

/// Where a selected table is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Running,
    /// Ended; `true` when it committed (or would have, in a dry run).
    Ended(bool),
}

/// Run the selected tables (in dependency order) with at most `--jobs` at once: a table starts
/// once every table it depends on has ended well; a table whose dependency did not is skipped,
/// and so is every table not yet started once one fails under `--fail-fast`. `on_table` sees
/// each outcome in the pipeline's order, so logs read the same whatever the timing.
async fn schedule(
    plan: &Plan,
    selected: &[&TablePlan],
    store: &Store,
    options: &RunOptions,
    on_table: &mut impl FnMut(&TableRun),
) -> Vec<TableRun> {
    let jobs = match options.jobs {
        0 => crate::parallel::cores(),
        n => n,
    };
    let mut options = options.clone();
    if plan.atomic && !options.dry_run {
        options.atomic_run = Some(uuid::Uuid::new_v4().simple().to_string());
    }
    let shared = Arc::new((plan.clone(), store.clone(), options));
    let options = &shared.2;
    let atomic = &options.atomic_run;
    let mut stages = vec![Stage::Waiting; selected.len()];
    let mut outcomes: Vec<Option<TableRun>> = selected.iter().map(|_| None).collect();
    let mut reported = 0;
    let mut first_failure: Option<String> = None;
    let mut running = futures::stream::FuturesUnordered::new();
    // Each table's selected dependencies, by index (those not selected have a baseline).
    let dependencies: Vec<Vec<(usize, &String)>> = selected
        .iter()
        .map(|t| {
            t.depends_on
                .iter()
                .filter_map(|d| selected.iter().position(|s| &s.name == d).map(|j| (j, d)))
                .collect()
        })
        .collect();
    loop {
        for i in 0..selected.len() {
            if stages[i] != Stage::Waiting {
                continue;
            }
            let table = selected[i];
            let deps = &dependencies[i];
            let blocked = deps
                .iter()
                .find(|(j, _)| stages[*j] == Stage::Ended(false))
                .map(|(j, d)| match outcomes[*j].as_ref().map(|o| o.status) {
                    Some(TableStatus::Skipped) => format!("{d} was skipped"),
                    Some(TableStatus::Refused) => format!("{d} was refused"),
                    Some(TableStatus::Conflict) => format!("{d} lost a commit race"),
                    _ => format!("{d} failed"),
                })
                .or_else(|| {
                    options
                        .fail_fast
                        .then(|| {
                            first_failure
                                .as_ref()
                                .map(|f| format!("--fail-fast: {f} failed"))
                        })
                        .flatten()
                });
            if let Some(reason) = blocked {
                stages[i] = Stage::Ended(false);
                outcomes[i] = Some(skip(plan, table, store, options, reason).await);
                continue;
            }
            let ready = deps.iter().all(|(j, _)| stages[*j] == Stage::Ended(true));
            if ready && running.len() < jobs {
                stages[i] = Stage::Running;
                let shared = Arc::clone(&shared);
                let name = table.name.clone();
                running.push(async move {
                    let task = tokio::spawn(async move {
                        let (plan, store, options) = &*shared;
                        let table = plan.table(&name).expect("a selected table");
                        run_table(plan, table, store, options).await
                    });
                    (i, task.await)
                });
            }
        }
        // An atomic run's outcomes are known only once the pipeline commit decided.
        while atomic.is_none()
            && let Some(Some(outcome)) = outcomes.get(reported)
        {
            on_table(outcome);
            reported += 1;
        }
        let Some((i, joined)) = running.next().await else {
            break;
        };
        let outcome = joined.unwrap_or_else(|e| {
            failed_run(
                &selected[i].name,
                Error::Usage {
                    message: format!(
                        "internal error while running table {}: {e}. Please report it.",
                        selected[i].name
                    ),
                },
            )
        });
        let ok = outcome.error.is_none();
        if !ok && first_failure.is_none() {
            first_failure = Some(selected[i].name.clone());
        }
        stages[i] = Stage::Ended(ok);
        outcomes[i] = Some(outcome);
    }
    let mut outcomes: Vec<TableRun> = outcomes.into_iter().flatten().collect();
    if let Some(id) = &atomic {
        commit_together(plan, store, id, &mut outcomes).await;
        for outcome in &outcomes {
            on_table(outcome);
        }
    }
    outcomes
}

/// The end of an `atomic: true` run: when every table ran well, their prepared versions are
/// committed together (`Store::commit_atomic`) and then their deltas written; otherwise none
/// is, and each prepared table says why. Every prepared table's run is recorded here.
async fn commit_together(plan: &Plan, store: &Store, id: &str, outcomes: &mut [TableRun]) {
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
                match write_outputs(&outcome.table, version, pending.outputs, &Progress(None)).await
                {
                    Ok(files) => outcome.delta_files = files,
                    Err(e) => {
                        // Committed: the data is in the store; only a delta file is missing.
                        outcome
                            .notes
                            .push(format!("the delta could not be written: {e}"));
                    }
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

/// A table that did not start, recorded in `runs` as skipped.
async fn skip(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    options: &RunOptions,
    reason: String,
) -> TableRun {
    let outcome = TableRun {
        status: TableStatus::Skipped,
        skipped_because: Some(reason),
        ..not_started(&table.name)
    };
    if !options.dry_run {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        record_run(plan, table, store, &outcome, Utc::now(), &run_id).await;
    }
    outcome
}

/// The outcome of a table run that ended with `error` before learning anything.
fn failed_run(table: &str, error: Error) -> TableRun {
    TableRun {
        error: Some(error),
        ..not_started(table)
    }
}

/// A table run that learned nothing (the base of failed and skipped outcomes).
fn not_started(table: &str) -> TableRun {
    TableRun {
        table: table.to_string(),
        status: TableStatus::Failed,
        version: None,
        counts: Counts::default(),
        rejected: 0,
        rejects_file: None,
        notes: Vec::new(),
        duration_ms: 0,
        delta_files: Vec::new(),
        sources: Vec::new(),
        error: None,
        skipped_because: None,
        preview: None,
        partitions: Vec::new(),
        pending: None,
    }
}

/// Run one table and record the run in the store (unless dry).
pub async fn run_table(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    options: &RunOptions,
) -> TableRun {
    let started = Instant::now();
    let started_at = Utc::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut partial = Partial::default();
    let result = execute(
        plan,
        table,
        store,
        options,
        started,
        started_at,
        &run_id,
        &mut partial,
    )
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let outcome = match result {
        Ok(mut o) => {
            o.duration_ms = duration_ms;
            o
        }
        Err(e) => TableRun {
            status: match e {
                Error::Conflict { .. } => TableStatus::Conflict,
                Error::Refused { .. } => TableStatus::Refused,
                _ => TableStatus::Failed,
            },
            version: match &e {
                Error::Conflict { version, .. } => Some(*version),
                _ => None,
            },
            counts: match &e {
                Error::Refused { counts, .. } => *counts,
                _ => Counts::default(),
            },
            rejected: partial.rejected,
            rejects_file: partial.rejects_file,
            duration_ms,
            sources: partial.sources,
            ..failed_run(&table.name, e)
        },
    };
    // A version an atomic pipeline prepared is recorded once the pipeline commit decided.
    if !options.dry_run && outcome.pending.is_none() {
        record_run(plan, table, store, &outcome, started_at, &run_id).await;
    }
    outcome
}

/// Record a table run in the store's `runs`.
async fn record_run(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    outcome: &TableRun,
    started_at: DateTime<Utc>,
    run_id: &str,
) {
    let record = RunRecord {
        pipeline: plan.name.clone(),
        table: table.name.clone(),
        version: outcome.version,
        status: match outcome.status {
            TableStatus::Committed => "committed",
            TableStatus::DryRun => "dry_run",
            TableStatus::Failed => "failed",
            TableStatus::Conflict => "conflict",
            TableStatus::Refused => "refused",
            TableStatus::Skipped => "skipped",
        }
        .to_string(),
        started_at,
        finished_at: Utc::now(),
        duration_ms: outcome.duration_ms,
        rows_in: outcome.counts.rows_in,
        new: outcome.counts.new,
        changed: outcome.counts.changed,
        deleted: outcome.counts.deleted,
        unchanged: outcome.counts.unchanged,
        rejected: outcome.rejected,
        source: (!outcome.sources.is_empty()).then(|| outcome.sources.join(", ")),
        error: outcome
            .error
            .as_ref()
            .map(|e| e.to_string())
            .or_else(|| outcome.skipped_because.clone()),
    };
    if let Err(e) = store.write_run(&record, run_id).await {
        // The run record is a log entry: after a commit, failing to write it must not
        // report an error for data that was committed.
        tracing::warn!("could not record the run of {} in `runs`: {e}", table.name);
    }
}

fn engine_err(table: &str, doing: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error {
    let context = format!("table {table}: {doing}");
    move |e| Error::engine(context.clone(), e)
}

/// What a run learned before it failed, for the run record and report.
#[derive(Debug, Default)]
struct Partial {
    sources: Vec<String>,
    rejected: u64,
    rejects_file: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    options: &RunOptions,
    started: Instant,
    started_at: DateTime<Utc>,
    run_id: &str,
    partial: &mut Partial,
) -> Result<TableRun> {
    let name = table.name.as_str();
    let progress = Progress::new(options.progress, name);
    if let Some(run) = streamed::run(
        plan, table, store, options, started, started_at, run_id, &progress, partial,
    )
    .await?
    {
        return Ok(run);
    }
    progress.phase("loading the source");
    let ctx = engine::session();
    let loaded = load_snapshot(
        &ctx,
        table,
        store,
        options.source_overrides.get(name),
        &progress,
    )
    .await?;
    let LoadedSnapshot {
        frame,
        columns,
        source_columns,
        files: source_files,
        origin,
        rows,
        traced,
        source_batches,
        cell_errors,
        early_rejects,
        early_held_keys,
    } = loaded;
    partial.sources = source_files.iter().map(|f| f.path.clone()).collect();
    tracing::debug!(
        "{name}: read the source ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    let baseline = store.latest(name).await?;
    // The baseline pins every column's type; a declared type wins (the user changed it).
    let pinned: HashMap<&str, &str> = baseline
        .as_ref()
        .map(|b| {
            b.schema
                .iter()
                .map(|c| (c.name.as_str(), c.data_type.as_str()))
                .collect()
        })
        .unwrap_or_default();
    progress.phase("typing and hashing rows");
    let plan_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let mut raw = frame
        .collect()
        .await
        .map_err(engine_err(name, "reading the snapshot"))?;
    let mut raw_schema = raw.first().map(|b| b.schema()).unwrap_or(plan_schema);
    tracing::debug!(
        "{name}: applied the transform ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let rows = if traced {
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
        rows.through(source_rows)
    } else {
        rows
    };
    let mut notes: Vec<String> = Vec::new();
    let mut targets: Vec<Option<DataType>> = Vec::with_capacity(raw_schema.fields().len());
    for field in raw_schema.fields() {
        let declared = table.source.declared_type(field.name());
        let target = match pinned.get(field.name().as_str()) {
            Some(type_text) if *type_text != field.data_type().to_string() => {
                let pinned_type = type_text.parse::<DataType>().map_err(|_| Error::Store {
                    location: store.location().to_string(),
                    message: format!("table {name}: the baseline's type `{type_text}` of column \"{}\" is not readable", field.name()),
                })?;
                match declared {
                    Some(d) => {
                        notes.push(format!(
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
        &rows,
        &origin,
        &mut rejections,
        &mut notes,
    )?;
    let typed = typed
        .iter()
        .map(|b| normalize::apply(name, b, &table.normalize))
        .collect::<Result<Vec<_>>>()?;
    tracing::debug!(
        "{name}: typed and normalised ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let mut rejected: HashSet<u64> = rejections.iter().map(|r| r.index).collect();
    let nulls = validate::check_nulls(table, &typed, &rejected);
    rejected.extend(nulls.iter().map(|r| r.index));
    rejections.extend(nulls);
    let ruled = validate::check_rules(table, &typed_schema, &typed, &rejected).await?;
    rejected.extend(ruled.iter().map(|r| r.index));
    rejections.extend(ruled);
    let orphans =
        validate::check_references(table, store, &typed_schema, &typed, &rejected).await?;
    rejected.extend(orphans.iter().map(|r| r.index));
    rejections.extend(orphans);
    // Keys of rejected rows keep their baseline rows (below), so a bad row is never DELETED.
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
                .map_err(|e| Error::engine("selecting keys", e.into()))?,
        ));
        for batch in validate::only_rows(&typed, &rejected)? {
            held_keys.push(
                batch
                    .project(
                        &table
                            .key
                            .iter()
                            .map(|k| typed_schema.index_of(k).expect("key columns exist"))
                            .collect::<Vec<_>>(),
                    )
                    .map_err(|e| Error::engine("selecting keys", e.into()))?
                    .with_schema(key_schema.clone())
                    .map_err(|e| Error::engine("selecting keys", e.into()))?,
            );
        }
    }
    // A key's other rows are held out with its rejected one (a repeated key, or the rows an
    // aggregating transform sums): one bad row never half-updates a key.
    for index in validate::rows_with_keys(&typed, &table.key, &held_keys, &rejected) {
        rejections.push(Rejection {
            index,
            rule: "held".into(),
            message: "its key also has a rejected row; the key keeps its baseline row until every row of it is valid".into(),
            cell: None,
        });
        rejected.insert(index);
    }
    let rows_read =
        raw.iter().map(|b| b.num_rows() as u64).sum::<u64>() + early_rejects.len() as u64;
    let mut rejected_rows = early_rejects;
    // Rows are shown as read from the source when each maps to one source row.
    let (as_read, from_source) = if traced {
        (&source_batches, true)
    } else {
        (&raw, false)
    };
    rejected_rows.extend(validate::locate(&rejections, &rows, as_read, from_source));
    partial.rejected = rejected_rows.len() as u64;
    let version = store.next_version(name).await?;
    if !rejected_rows.is_empty() && !options.dry_run {
        // Rows are shown as the source holds them, unless the transform hides which source
        // row a result row came from: then the result's columns follow.
        let mut reject_columns = source_columns.clone();
        if table.transform.is_some() && !traced {
            reject_columns.extend(
                columns
                    .iter()
                    .filter(|c| !source_columns.contains(c))
                    .cloned(),
            );
        }
        let (schema, batch) = validate::rejects_batch(&rejected_rows, &reject_columns)?;
        let written = match &table.validate.rejects_path {
            Some(template) => {
                let path = sink::output_path(template, name, version, Utc::now());
                sink::write_location(&path, &schema, &[batch]).await?
            }
            None => {
                let mut csv = Vec::new();
                sink::write_to(&mut csv, source::SourceFormat::Csv, &schema, &[batch])?;
                let relative = store::rejects_name(version, run_id);
                store.put_plain(name, &relative, csv.into()).await?
            }
        };
        partial.rejects_file = Some(written);
    }
    let read_counts = Counts {
        rows_in: rows_read,
        ..Counts::default()
    };
    validate::check_limits(
        table,
        &rejected_rows,
        rows_read,
        partial.rejects_file.as_deref(),
        read_counts,
    )?;
    let valid = validate::without_rows(&typed, &rejected)?;
    // The partitions a run holds are those of every row it read, rejected rows included: a file
    // that holds a partition speaks for it.
    register_present_partitions(&ctx, table, &typed_schema, &typed).await?;
    drop(typed);
    if let TableMode::Incremental { watermark } = &table.mode {
        check_watermark_type(table, watermark, &typed_schema)?;
    }
    // Incremental: rows below the stored watermark were taken by an earlier run.
    let stored_watermark = match (&table.mode, baseline.as_ref()) {
        (TableMode::Incremental { watermark }, Some(b)) => b
            .watermark
            .as_ref()
            .filter(|w| &w.column == watermark)
            .cloned(),
        _ => None,
    };
    let valid = match &stored_watermark {
        Some(w) => {
            let (kept, ignored) = above_watermark(name, &typed_schema, valid, w)?;
            if ignored > 0 {
                notes.push(format!(
                    "{ignored} rows below the watermark ({} = {}) ignored",
                    w.column, w.value
                ));
            }
            kept
        }
        None => valid,
    };

    // A column entirely empty today (or in the baseline) is compared as if absent, so that an
    // export that blanks a column, and the day it comes back, change no row.
    let valid_rows: u64 = valid.iter().map(|b| b.num_rows() as u64).sum();
    let empty_today: Vec<String> = if valid_rows == 0 {
        Vec::new()
    } else {
        typed_schema
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
    };
    let empty_in_baseline: Vec<String> = baseline
        .as_ref()
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
        .resolve(&columns, &table.key)
        .into_iter()
        .filter(|c| !empty_today.contains(c) && !empty_in_baseline.contains(c))
        .collect();
    // Tolerance columns are compared outside the hash (a hash cannot say "close enough").
    let hashed: Vec<String> = compared
        .iter()
        .filter(|c| !table.tolerance.iter().any(|(t, _)| t == *c))
        .cloned()
        .collect();
    tracing::debug!(
        "{name}: validated ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let mut incoming = Vec::with_capacity(valid.len());
    let mut incoming_schema: SchemaRef = {
        let mut fields: Vec<FieldRef> = typed_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            ROW_HASH_COLUMN,
            DataType::UInt64,
            false,
        )));
        Arc::new(Schema::new(fields))
    };
    progress.bar(
        "hashing rows",
        valid.iter().map(|b| b.num_rows() as u64).sum(),
        Counting::Rows,
    );
    for hashed_batch in crate::parallel::map(&valid, |batch| {
        let hashed = with_row_hash(name, batch, &hashed, &incoming_schema);
        progress.advance(batch.num_rows() as u64);
        hashed
    }) {
        incoming.push(hashed_batch?);
    }
    incoming_schema = incoming
        .first()
        .map(|b| b.schema())
        .unwrap_or(incoming_schema);
    register_batches(&ctx, "incoming", incoming_schema.clone(), incoming.clone())?;
    // Repeated keys are named by their rows in the source, also when rejected rows are gone.
    let valid_locator = if rejected.is_empty() {
        rows.clone()
    } else {
        let total: u64 = raw.iter().map(|b| b.num_rows() as u64).sum();
        rows.through(
            (0..total)
                .filter(|i| !rejected.contains(i))
                .map(|i| rows.source_row(i))
                .collect(),
        )
    };
    if let Some(batches) = deduplicate(&ctx, table, &incoming, &origin, &valid_locator).await? {
        incoming = batches;
        ctx.deregister_table("incoming")
            .map_err(engine_err(name, "registering tables"))?;
        register_batches(&ctx, "incoming", incoming_schema.clone(), incoming.clone())?;
    }
    tracing::info!(
        "{name}: loaded, typed and hashed {valid_rows} rows, rejected {} ({:.2} s)",
        rejected_rows.len(),
        started.elapsed().as_secs_f64()
    );

    let column_types: HashMap<String, DataType> = incoming_schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    for (c, _) in &table.tolerance {
        if !column_types[c].is_numeric() {
            return Err(Error::Usage {
                message: format!(
                    "table {name}: `tolerance` names \"{c}\", which is {}, not a number. Tolerances apply to numeric columns.",
                    source::types::type_name(&column_types[c])
                ),
            });
        }
    }
    let hash_spec = HashSpec {
        version: HASH_VERSION,
        columns: hashed
            .iter()
            .map(|c| ColumnSchema {
                name: c.clone(),
                data_type: column_types[c].to_string(),
                empty: false,
            })
            .collect(),
        normalize: table.normalize.clone(),
    };
    let baseline_columns: Vec<String> = match &baseline {
        Some(b) => {
            register_baseline(&ctx, store, table, b, &column_types).await?;
            b.schema.iter().map(|c| c.name.clone()).collect()
        }
        None => {
            register_batches(&ctx, "baseline", incoming_schema.clone(), Vec::new())?;
            columns.clone()
        }
    };
    if let Some(b) = &baseline {
        schema_notes(b, &columns, &empty_today, &mut notes);
    }
    // What this run's rows say about the partitions and the watermark, before baseline rows
    // are carried in.
    let partitions = partition_rows(&ctx, table).await?;
    let watermark = match &table.mode {
        TableMode::Incremental { watermark } => highest_watermark(&ctx, name, watermark)
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
    if baseline.is_some() && !held_keys.is_empty() {
        register_held_keys(&ctx, table, &held_keys, &incoming_schema)?;
        let matches = diff::key_equal(&table.key, "h", "b");
        let condition = format!("EXISTS (SELECT 1 FROM held_keys h WHERE {matches})");
        let carried = carry_baseline_rows(
            &ctx,
            table,
            &condition,
            &incoming_schema,
            &baseline_columns,
            &hashed,
        )
        .await?;
        held = add_rows(&ctx, name, &mut incoming, &incoming_schema, carried)?;
    }
    // Baseline rows this run does not speak for are kept as they are: every row an increment
    // does not hold, and the rows of partitions a partitioned run does not hold.
    let out_of_scope = match &table.mode {
        TableMode::Incremental { .. } => Some("TRUE".to_string()),
        _ if !table.partition_by.is_empty() => {
            let same = table
                .partition_by
                .iter()
                .map(|c| {
                    let c = diff::ident(c);
                    format!("(p.{c} IS NOT DISTINCT FROM b.{c})")
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            Some(format!(
                "NOT EXISTS (SELECT 1 FROM present_partitions p WHERE {same})"
            ))
        }
        _ => None,
    };
    let mut kept = 0u64;
    if let (Some(condition), Some(_)) = (&out_of_scope, &baseline) {
        let carried = carry_baseline_rows(
            &ctx,
            table,
            condition,
            &incoming_schema,
            &baseline_columns,
            &hashed,
        )
        .await?;
        kept = add_rows(&ctx, name, &mut incoming, &incoming_schema, carried)?;
        if kept > 0 {
            notes.push(match &table.mode {
                TableMode::Incremental { .. } => {
                    format!("{kept} baseline rows not in this increment kept as they were")
                }
                _ => format!(
                    "{kept} baseline rows of partitions this run does not hold kept as they were"
                ),
            });
        }
    }
    let rows_in: u64 = incoming.iter().map(|b| b.num_rows() as u64).sum();
    let shared = |list: &[String]| -> Vec<String> {
        list.iter()
            .filter(|c| baseline_columns.contains(c))
            .cloned()
            .collect()
    };
    let shared_compared = shared(&compared);
    let shared_hashed = shared(&hashed);
    let tolerance: Vec<_> = table
        .tolerance
        .iter()
        .filter(|(c, _)| shared_compared.contains(c))
        .cloned()
        .collect();
    let carried: Vec<String> = tolerance.iter().map(|(c, _)| c.clone()).collect();
    let stored_hashes_apply = baseline.as_ref().is_none_or(|b| b.hash == hash_spec);
    let include_unchanged = table
        .outputs
        .iter()
        .any(|o| o.include.contains(&ChangeKind::Unchanged));
    let settings = DiffSettings {
        key: table.key.clone(),
        compared: shared_compared,
        columns: columns.clone(),
        baseline_columns,
        include_unchanged,
        tolerance,
    };
    // The new snapshot is final here: encode it on the side while the comparison runs, so
    // that neither leaves a core idle.
    let snapshot_encoding =
        (!options.dry_run).then(|| SideEncoding::start(incoming_schema.clone(), incoming.clone()));
    progress.phase("comparing with the baseline");
    let hash_views = HashViews {
        shared_hashed: &shared_hashed,
        carried: &carried,
        column_types: &column_types,
        stored_hashes_apply,
    };
    let by_position = match &baseline {
        // TIDEMARK_FULL_JOIN: always join the full rows, to compare the two ways (see
        // docs/performance.md).
        Some(record)
            if stored_hashes_apply
                && settings.tolerance.is_empty()
                && !include_unchanged
                && std::env::var_os("TIDEMARK_FULL_JOIN").is_none() =>
        {
            classify_by_position(
                &ctx,
                store,
                table,
                record,
                &incoming,
                &incoming_schema,
                &settings,
                &hash_views,
                rows_in,
            )
            .await?
        }
        _ => None,
    };
    let delta = match by_position {
        Some(delta) => delta,
        None => {
            hash_views.register(&ctx, table).await?;
            diff::classify(&ctx, &settings, rows_in).await?
        }
    };
    tracing::info!(
        "{name}: classified against the baseline ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    conclude(
        Concluding {
            plan,
            table,
            store,
            options,
            started,
            started_at,
            run_id,
            progress: &progress,
            baseline: baseline.as_ref(),
            version,
            held,
            kept,
            rejected: rejected_rows.len() as u64,
            partitions,
            notes,
            source_files,
            columns,
            column_types,
            empty_today,
            hash_spec,
            watermark,
            snapshot: match snapshot_encoding {
                Some(encoding) => NewSnapshot::Encoding(encoding),
                None => NewSnapshot::Batches(incoming_schema, incoming),
            },
        },
        delta,
        partial,
    )
    .await
}

/// What a table's run hands to [`conclude`] once its rows are classified.
struct Concluding<'a> {
    plan: &'a Plan,
    table: &'a TablePlan,
    store: &'a Store,
    options: &'a RunOptions,
    started: Instant,
    started_at: DateTime<Utc>,
    run_id: &'a str,
    progress: &'a Progress,
    baseline: Option<&'a CommitRecord>,
    version: u64,
    /// Baseline rows carried in for rejected rows' keys.
    held: u64,
    /// Baseline rows carried in from outside the run's scope.
    kept: u64,
    /// Rows rejected.
    rejected: u64,
    partitions: Vec<PartitionRows>,
    notes: Vec<String>,
    source_files: Vec<SourceFile>,
    columns: Vec<String>,
    column_types: HashMap<String, DataType>,
    empty_today: Vec<String>,
    hash_spec: HashSpec,
    watermark: Option<store::Watermark>,
    snapshot: NewSnapshot,
}

/// The new snapshot, on its way to the store.
enum NewSnapshot {
    /// Being encoded on the side.
    Encoding(SideEncoding),
    /// In memory, to encode.
    Batches(SchemaRef, Vec<RecordBatch>),
    /// Already written to a file, as it streamed in.
    Spooled(store::Spool),
}

/// The end of a table's run, once its rows are classified: guard, shaped outputs (or the dry
/// run's preview), the snapshot and change rows stored, the commit, the delta files.
async fn conclude(
    concluding: Concluding<'_>,
    delta: Delta,
    partial: &mut Partial,
) -> Result<TableRun> {
    let Concluding {
        plan,
        table,
        store,
        options,
        started,
        started_at,
        run_id,
        progress,
        baseline,
        version,
        held,
        kept,
        rejected,
        partitions,
        notes,
        source_files,
        columns,
        column_types,
        empty_today,
        hash_spec,
        watermark,
        snapshot,
    } = concluding;
    let name = table.name.as_str();
    // What the run reports: rows read, and held rows are rejected rather than unchanged; rows
    // kept from outside the run's scope are not counted.
    let reported = Counts {
        rows_in: delta.counts.rows_in - held - kept + rejected,
        unchanged: delta.counts.unchanged - held - kept,
        ..delta.counts
    };
    let partitions = count_partitions(table, &delta, &partitions);
    if !options.force {
        let baseline_rows = baseline.as_ref().map_or(0, |b| b.counts.rows_in);
        check_guard(table, &delta.counts, baseline_rows, reported)?;
    }
    // Every output is shaped before the commit, so a bad output setting fails the run while
    // nothing is committed yet; only the file writes come after the commit.
    let mut shaped = Vec::with_capacity(table.outputs.len());
    for output in &table.outputs {
        shaped.push(
            shape_batches(
                table,
                &delta,
                &output.include,
                output.columns.as_deref(),
                &column_types,
            )
            .await?,
        );
    }
    if options.dry_run {
        return Ok(TableRun {
            table: name.to_string(),
            status: TableStatus::DryRun,
            version: Some(version),
            counts: reported,
            rejected,
            rejects_file: None,
            notes,
            duration_ms: 0,
            delta_files: Vec::new(),
            sources: source_files.iter().map(|f| f.path.clone()).collect(),
            error: None,
            skipped_because: None,
            partitions,
            pending: None,
            preview: Some(match shaped.into_iter().next() {
                Some(first) => first,
                None => shape_batches(table, &delta, &DEFAULT_INCLUDE, None, &column_types).await?,
            }),
        });
    }

    progress.phase("writing the snapshot and committing");
    let outputs: Vec<(String, (SchemaRef, Vec<RecordBatch>))> = table
        .outputs
        .iter()
        .map(|o| o.path.clone())
        .zip(shaped)
        .collect();
    // The delta files are written on another core while the version's files are stored,
    // under temporary names beside their places; only once the commit succeeded are they
    // renamed into place (step 3). An atomic pipeline writes them once every table committed.
    let (outputs, preparing) = match options.atomic_run {
        Some(_) => (outputs, None),
        None => {
            let table = name.to_string();
            let preparing =
                tokio::task::spawn_blocking(move || prepare_outputs(&table, version, &outputs));
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
        &store::snapshot_name(version, run_id),
        snapshot,
        progress,
    )
    .await?;
    tracing::debug!("{name}: stored the snapshot");
    progress.phase("committing");
    let changes_bytes = changes_encoding.finish().await?;
    let changes = store
        .put_file(name, &store::changes_name(version, run_id), changes_bytes)
        .await?;
    // Step 2: the commit record, created only if absent.
    let record = CommitRecord {
        format: store::RECORD_FORMAT,
        table: name.to_string(),
        version,
        kind: CommitKind::Run,
        committed_at: Utc::now(),
        started_at,
        run_id: run_id.to_string(),
        pipeline: plan.name.clone(),
        pipeline_hash: plan.file_hash.clone(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        snapshot,
        changes,
        counts: delta.counts,
        source_files: source_files.clone(),
        key: table.key.clone(),
        schema: columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.clone(),
                data_type: column_types[c].to_string(),
                empty: empty_today.contains(c),
            })
            .collect(),
        hash: hash_spec,
        duration_ms: started.elapsed().as_millis() as u64,
        watermark,
        previous_version: baseline.as_ref().map(|b| b.version),
        atomic: None,
    };
    let mut run = TableRun {
        table: name.to_string(),
        status: TableStatus::Committed,
        version: Some(version),
        counts: reported,
        rejected,
        rejects_file: partial.rejects_file.clone(),
        notes,
        duration_ms: 0,
        delta_files: Vec::new(),
        sources: source_files.iter().map(|f| f.path.clone()).collect(),
        error: None,
        skipped_because: None,
        preview: None,
        partitions,
        pending: None,
    };
    if let Some(id) = &options.atomic_run {
        // An atomic pipeline commits every table together, once all have run; the tables that
        // depend on this one read this version meanwhile.
        let mut record = record;
        record.atomic = Some(id.clone());
        store.stage(record.clone());
        run.pending = Some(Box::new(PendingCommit {
            record,
            outputs,
            started_at,
            run_id: run_id.to_string(),
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
        started.elapsed().as_secs_f64()
    );
    // Step 3: outputs, only after the commit succeeded.
    run.delta_files = publish_outputs(prepared).await?;
    Ok(run)
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

/// What the `incoming_hashes` and `baseline_hashes` views are made of.
struct HashViews<'a> {
    shared_hashed: &'a [String],
    carried: &'a [String],
    column_types: &'a HashMap<String, DataType>,
    stored_hashes_apply: bool,
}

impl HashViews<'_> {
    async fn register(&self, ctx: &SessionContext, table: &TablePlan) -> Result<()> {
        register_hash_views(
            ctx,
            table,
            self.shared_hashed,
            self.carried,
            self.column_types,
            self.stored_hashes_apply,
        )
        .await
    }
}

/// Classify without joining full rows: match both sides' keys by row position (see
/// [`diff::matching`]), take only the rows the delta needs (NEW and CHANGED from the snapshot,
/// CHANGED and DELETED from the baseline's file), and run the usual classification and delta
/// queries over those. `None`, with the full tables registered as before, when the matching
/// cannot decide (a key digest repeats) or the queries pair the taken rows otherwise than the
/// matching did: the caller then joins the full tables.
#[allow(clippy::too_many_arguments)]
async fn classify_by_position(
    ctx: &SessionContext,
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    incoming: &[RecordBatch],
    incoming_schema: &SchemaRef,
    settings: &DiffSettings,
    hash_views: &HashViews<'_>,
    rows_in: u64,
) -> Result<Option<Delta>> {
    let name = table.name.as_str();
    let key_types_agree = table.key.iter().all(|k| {
        let stored = record.schema.iter().find(|c| &c.name == k);
        let today = hash_views.column_types.get(k);
        match (stored, today) {
            (Some(s), Some(t)) => {
                s.data_type == t.to_string() && diff::matching::key_types_supported(&[t])
            }
            _ => false,
        }
    });
    if !key_types_agree || incoming.is_empty() {
        return Ok(None);
    }
    let path = store.file_url(name, &record.snapshot.path);
    let file = store.local_file(name, &record.snapshot.path).await?;
    let old_rows = diff::matching::ParquetRows::open(file, &path)?;
    let Some(matched) =
        diff::matching::match_positions(incoming, &table.key, ROW_HASH_COLUMN, &old_rows)?
    else {
        tracing::debug!("{name}: a key digest repeats; joining the full rows instead");
        return Ok(None);
    };
    tracing::debug!("{name}: matched keys by position: {matched}");
    let (new_positions, old_positions) = (matched.snapshot_rows(), matched.baseline_rows());
    let taken_new = diff::matching::take_rows(incoming, &new_positions)?;
    let taken_old = old_rows.take(&old_positions)?;
    drop(old_rows);
    tracing::debug!(
        "{name}: took {} snapshot rows and read {} baseline rows",
        new_positions.len(),
        old_positions.len()
    );
    classify_taken(
        ctx,
        table,
        (incoming_schema, taken_new),
        taken_old,
        &matched,
        settings,
        hash_views,
        rows_in,
    )
    .await
}

/// Classify the rows taken by position (snapshot rows as `incoming`, baseline rows as read
/// from its file) with the usual queries. `None`, with the tables registered before put
/// back, when the queries pair them otherwise than `matched` did.
#[allow(clippy::too_many_arguments)]
async fn classify_taken(
    ctx: &SessionContext,
    table: &TablePlan,
    (incoming_schema, taken_new): (&SchemaRef, Vec<RecordBatch>),
    taken_old: Vec<RecordBatch>,
    matched: &diff::matching::Matched,
    settings: &DiffSettings,
    hash_views: &HashViews<'_>,
    rows_in: u64,
) -> Result<Option<Delta>> {
    let name = table.name.as_str();
    // The taken baseline rows stand in for the `baseline` view: same columns, same types (the
    // view's casts, and the query engine's string type), so that the delta is the same.
    let view = ctx
        .table("baseline")
        .await
        .map_err(engine_err(name, "reading the baseline"))?;
    let view_schema: SchemaRef = Arc::new(view.schema().as_arrow().clone());
    let taken_old = taken_old
        .iter()
        .map(|batch| conform(batch, &view_schema))
        .collect::<Result<Vec<_>>>()?;
    let fail = engine_err(name, "registering tables");
    // The full tables, set aside to be put back if the queries disagree with the matching.
    let full = ["incoming", "baseline"]
        .into_iter()
        .map(|t| ctx.deregister_table(t).map(|provider| (t, provider)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(&fail)?;
    let taken = (taken_new.clone(), taken_old.clone());
    register_batches(ctx, "incoming", incoming_schema.clone(), taken_new)?;
    register_batches(ctx, "baseline", view_schema, taken_old)?;
    hash_views.register(ctx, table).await?;
    // TIDEMARK_TEST_DISTRUST_MATCHING: take the way back below, which only a digest collision
    // would otherwise take, so that the tests see it work.
    let distrust = std::env::var_os("TIDEMARK_TEST_DISTRUST_MATCHING").is_some();
    if !distrust
        && let Some(delta) =
            diff::paired::delta_by_position(ctx, settings, (&taken.0, &taken.1), matched, rows_in)
                .await?
    {
        return Ok(Some(delta));
    }
    let delta = diff::classify(ctx, settings, rows_in).await?;
    let counts = delta.counts;
    if (counts.new, counts.changed, counts.deleted)
        == (
            matched.new.len() as u64,
            matched.changed.len() as u64,
            matched.deleted.len() as u64,
        )
        && !distrust
    {
        return Ok(Some(delta));
    }
    tracing::debug!("{name}: the keys matched by position pair otherwise; joining the full rows");
    for t in ["incoming", "baseline", "incoming_hashes", "baseline_hashes"] {
        ctx.deregister_table(t).map_err(&fail)?;
    }
    for (t, provider) in full {
        if let Some(provider) = provider {
            ctx.register_table(t, provider).map_err(&fail)?;
        }
    }
    Ok(None)
}

/// `batch`'s columns named by `schema`, cast to its types.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let fail =
        |e: datafusion::arrow::error::ArrowError| Error::engine("reading the baseline", e.into());
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::engine(
                    "reading the baseline",
                    datafusion::error::DataFusionError::Internal(format!(
                        "the baseline file lacks column {}",
                        field.name()
                    )),
                )
            })?;
            // Not `safe`: a value the type cannot hold fails, as the view's SQL cast does.
            datafusion::arrow::compute::kernels::cast::cast_with_options(
                column,
                field.data_type(),
                &datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(fail)
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(fail)
}

/// A Parquet file (a snapshot, change rows) being encoded on a blocking thread while the run
/// goes on. Dropped unfinished (the run failed first), it tells the encoder to stop, so the
/// process does not wait for it.
struct SideEncoding {
    task: Option<tokio::task::JoinHandle<Result<object_store::PutPayload>>>,
    cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl SideEncoding {
    fn start(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cancelled.clone();
        let task = tokio::task::spawn_blocking(move || {
            sink::encode_parquet_unless(&schema, &batches, &flag)
        });
        SideEncoding {
            task: Some(task),
            cancelled,
        }
    }

    async fn finish(mut self) -> Result<object_store::PutPayload> {
        let task = self.task.take().expect("finished once");
        // Never cancelled while awaited: an error here is the encoder's panic, a bug.
        task.await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

impl Drop for SideEncoding {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancelled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Write a committed version's delta files; returns where they went.
async fn write_outputs(
    table: &str,
    version: u64,
    outputs: Vec<(String, (SchemaRef, Vec<RecordBatch>))>,
    progress: &Progress,
) -> Result<Vec<String>> {
    let rows: u64 = outputs
        .iter()
        .flat_map(|(_, (_, batches))| batches)
        .map(|b| b.num_rows() as u64)
        .sum();
    progress.bar("writing the delta", rows, Counting::Rows);
    let prepared = prepare_outputs(table, version, &outputs)?;
    progress.advance(rows);
    publish_outputs(prepared).await
}

/// Every output's file written, not yet in its place (see [`sink::prepare_location`]).
fn prepare_outputs(
    table: &str,
    version: u64,
    outputs: &[(String, (SchemaRef, Vec<RecordBatch>))],
) -> Result<Vec<sink::PreparedOutput>> {
    let now = Utc::now();
    outputs
        .iter()
        .map(|(template, (schema, batches))| {
            let path = sink::output_path(template, table, version, now);
            sink::prepare_location(&path, schema, batches)
        })
        .collect()
}

/// Put prepared outputs in their places; returns where they went.
async fn publish_outputs(prepared: Vec<sink::PreparedOutput>) -> Result<Vec<String>> {
    let mut written = Vec::with_capacity(prepared.len());
    for output in prepared {
        written.push(output.publish().await?);
    }
    Ok(written)
}

/// A table version an atomic pipeline run prepared: written, not yet visible.
#[derive(Debug)]
pub struct PendingCommit {
    /// Its commit record (with `atomic` set).
    pub record: CommitRecord,
    /// The outputs to write once committed: path template, and the shaped delta.
    pub outputs: Vec<(String, (SchemaRef, Vec<RecordBatch>))>,
    /// When the table's run started.
    pub started_at: DateTime<Utc>,
    /// The table run's id.
    pub run_id: String,
}

/// A table's new snapshot, loaded and transformed, not yet typed or hashed.
pub struct LoadedSnapshot {
    /// The snapshot (the transform's result, or the source).
    pub frame: DataFrame,
    /// Its column names.
    pub columns: Vec<String>,
    /// The source's column names.
    pub source_columns: Vec<String>,
    /// The source files read.
    pub files: Vec<SourceFile>,
    /// Where rows come from, for messages.
    pub origin: String,
    /// Maps row indexes of the snapshot to rows a person counts (after a transform, of the
    /// source rows when `frame` ends with [`SOURCE_ROW`]).
    pub rows: source::RowLocator,
    /// Whether `frame`'s last column is [`SOURCE_ROW`], the source row of each result row.
    pub traced: bool,
    /// The source's rows as read (shared with the registered `source` table, not copied).
    pub source_batches: Vec<RecordBatch>,
    /// Without a transform: cells that did not fit their type, by snapshot row (null there).
    pub cell_errors: Vec<source::CellError>,
    /// With a transform: source rows whose cells did not fit, held out before it.
    pub early_rejects: Vec<RejectedRow>,
    /// Their keys, as the transform gives them, so that they keep their baseline rows.
    pub early_held_keys: Vec<RecordBatch>,
}

/// Load a table's source files, local or on S3 (downloaded to a temporary folder first).
async fn load_source(
    table: &str,
    pattern: &str,
    selection: source::FileSelection,
    options: &source::SourceOptions,
    allow_empty: bool,
    progress: &dyn source::LoadProgress,
) -> Result<source::LoadedSource> {
    if !crate::cloud::is_url(pattern) {
        return source::load(table, pattern, selection, options, allow_empty, progress);
    }
    let dir = tempfile::Builder::new()
        .prefix("tidemark-source-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let files = source::remote::fetch(table, pattern, selection, dir.path()).await?;
    source::load_files(&files, options, allow_empty, progress)
}

/// Load a table's source, register it as `source` (and its dependencies by name), apply the
/// transform, and check that the columns the pipeline names exist.
pub async fn load_snapshot(
    ctx: &SessionContext,
    table: &TablePlan,
    store: &Store,
    source_override: Option<&PathBuf>,
    progress: &dyn source::LoadProgress,
) -> Result<LoadedSnapshot> {
    let name = table.name.as_str();
    let source_path = match source_override {
        Some(p) if crate::cloud::is_url(&p.to_string_lossy()) => p.display().to_string(),
        Some(p) => std::path::absolute(p)
            .map_err(|e| Error::io(p, e))?
            .display()
            .to_string(),
        None => table.source_path.clone(),
    };
    // A file given with --source is read by its own extension (today's export may be a CSV
    // where the pipeline usually reads a workbook); the other source settings still apply.
    let mut options = table.source.clone();
    if source_override.is_some()
        && let Some(format) = source::SourceFormat::from_extension(&source_path)
    {
        options.format = format;
    }
    // An increment with no rows is a quiet day, not a truncated export: nothing is deleted.
    let allow_empty = matches!(table.mode, TableMode::Incremental { .. });
    let loaded = load_source(
        name,
        &source_path,
        table.files,
        &options,
        allow_empty,
        progress,
    )
    .await?;
    let source_columns: Vec<String> = column_names(&loaded.schema);
    let source_origin = loaded.origin();
    let files = loaded.files.clone();
    for dep in &table.depends_on {
        let record = store.latest(dep).await?.ok_or_else(|| Error::Usage {
            message: format!(
                "table {name} depends on {dep}, which has no baseline yet; run {dep} first."
            ),
        })?;
        register_snapshot(ctx, store, dep, &record, dep).await?;
    }
    let Some(sql) = &table.transform else {
        register_batches(ctx, "source", loaded.schema.clone(), loaded.batches.clone())?;
        let frame = ctx
            .table("source")
            .await
            .map_err(engine_err(name, "reading the source"))?;
        let columns = source_columns.clone();
        check_columns(
            table,
            &source_columns,
            &source_origin,
            &columns,
            &source_origin,
        )?;
        return Ok(LoadedSnapshot {
            frame,
            columns,
            source_columns,
            files,
            origin: source_origin,
            rows: loaded.rows,
            traced: false,
            source_batches: loaded.batches.clone(),
            cell_errors: loaded.cell_errors,
            early_rejects: Vec::new(),
            early_held_keys: Vec::new(),
        });
    };
    // Rows whose cells did not fit are held out before the transform, which could not say
    // which of its result rows they became.
    let bad: HashSet<u64> = loaded.cell_errors.iter().map(|e| e.row as u64).collect();
    let early_rejects = if bad.is_empty() {
        Vec::new()
    } else {
        let rejections: Vec<Rejection> = loaded
            .cell_errors
            .iter()
            .map(|e| Rejection {
                index: e.row as u64,
                rule: "type".into(),
                message: e.message.clone(),
                cell: Some((e.column.clone(), e.value.clone())),
            })
            .collect();
        validate::locate(&rejections, &loaded.rows, &loaded.batches, false)
    };
    let early_held_keys = if bad.is_empty() {
        Vec::new()
    } else {
        let rejected = validate::only_rows(&loaded.batches, &bad)?;
        transformed_keys(table, store, loaded.schema.clone(), rejected).await
    };
    let (numbered_schema, numbered) = with_source_rows(&loaded.schema, &loaded.batches, &bad)?;
    register_batches(ctx, "source", numbered_schema, numbered)?;
    let frame = ctx.sql(sql).await.map_err(|e| Error::Transform {
        table: name.to_string(),
        message: e.to_string(),
    })?;
    let (frame, traced) = trace_source_rows(frame);
    let mut columns: Vec<String> = column_names(frame.schema().as_arrow());
    if traced {
        columns.pop();
    }
    let result = "the transform's result".to_string();
    check_columns(table, &source_columns, &source_origin, &columns, &result)?;
    let (origin, rows) = if traced {
        (source_origin.clone(), loaded.rows.clone())
    } else {
        (
            result.clone(),
            source::RowLocator::single(result, source::FileRows::From(1)),
        )
    };
    Ok(LoadedSnapshot {
        frame,
        columns,
        source_columns,
        files,
        origin,
        rows,
        traced,
        source_batches: loaded.batches,
        cell_errors: Vec::new(),
        early_rejects,
        early_held_keys,
    })
}

/// The hidden column that carries each source row's 0-based index through a transform, so
/// that rows of its result are named by their row in the source file.
pub const SOURCE_ROW: &str = "__tidemark_source_row";

/// The source's rows without those in `held_out`, each with its 0-based index as
/// [`SOURCE_ROW`].
fn with_source_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    held_out: &HashSet<u64>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let (numbered_schema, numbered) = engine::with_ordinals(schema, batches, SOURCE_ROW, 0)?;
    let numbered = validate::without_rows(&numbered, held_out)?;
    Ok((numbered_schema, numbered))
}

/// Carry [`SOURCE_ROW`] to the transform's result when each result row comes from one source
/// row: a SELECT over the source (with WHERE, ORDER BY, joins to dependencies). Otherwise (an
/// aggregate, a UNION) the result is left as it is, and rows are numbered in the result.
fn trace_source_rows(frame: DataFrame) -> (DataFrame, bool) {
    use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, Projection, Sort};
    let schema = frame.schema().clone();
    let fields = schema.fields();
    if fields.iter().any(|f| f.name() == SOURCE_ROW) {
        // `SELECT *` kept it; move it last.
        let mut exprs: Vec<Expr> = fields
            .iter()
            .filter(|f| f.name() != SOURCE_ROW)
            .map(|f| ident(f.name()))
            .collect();
        exprs.push(ident(SOURCE_ROW));
        return match frame.clone().select(exprs) {
            Ok(f) => (f, true),
            Err(_) => (frame, false),
        };
    }
    let (state, plan) = frame.clone().into_parts();
    let add = |p: &Projection| -> Option<LogicalPlan> {
        let mut exprs = p.expr.clone();
        exprs.push(ident(SOURCE_ROW));
        LogicalPlanBuilder::from(p.input.as_ref().clone())
            .project(exprs)
            .and_then(|b| b.build())
            .inspect_err(|e| tracing::debug!("rows of the transform's result are not traced: {e}"))
            .ok()
    };
    let traced = match &plan {
        LogicalPlan::Projection(p) => add(p),
        LogicalPlan::Sort(Sort { expr, input, fetch }) => match input.as_ref() {
            LogicalPlan::Projection(p) => add(p).and_then(|projected| {
                LogicalPlanBuilder::from(projected)
                    .sort_with_limit(expr.clone(), *fetch)
                    .and_then(|b| b.build())
                    .ok()
            }),
            _ => None,
        },
        other => {
            tracing::debug!(
                "rows of the transform's result are not traced: its plan is {}",
                other.display()
            );
            None
        }
    };
    match traced {
        Some(plan) => (DataFrame::new(state, plan), true),
        None => (frame, false),
    }
}

/// The keys the transform gives rows rejected before it, so that they keep their baseline rows.
/// A transform that cannot run on those rows alone (it aggregates, or needs the others) gives
/// none: the rows are still rejected, and the message in the log says their keys are not held.
async fn transformed_keys(
    table: &TablePlan,
    store: &Store,
    schema: SchemaRef,
    rejected: Vec<RecordBatch>,
) -> Vec<RecordBatch> {
    let attempt = async {
        let ctx = engine::session();
        register_batches(&ctx, "source", schema, rejected)?;
        for dep in &table.depends_on {
            if let Some(record) = store.latest(dep).await? {
                register_snapshot(&ctx, store, dep, &record, dep).await?;
            }
        }
        let sql = table.transform.as_deref().unwrap_or("SELECT * FROM source");
        let keys: Vec<Expr> = table.key.iter().map(ident).collect();
        let frame = ctx
            .sql(sql)
            .await
            .and_then(|f| f.select(keys))
            .map_err(engine_err(&table.name, "finding rejected rows' keys"))?;
        frame
            .collect()
            .await
            .map_err(engine_err(&table.name, "finding rejected rows' keys"))
    };
    match attempt.await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(
                "{}: the keys of rows rejected before the transform are unknown ({e}); their baseline rows are not held",
                table.name
            );
            Vec::new()
        }
    }
}

/// Diff two files without a store (`tidemark diff`): `old` plays the baseline, the table's
/// source the new snapshot. Returns the shaped delta and the counts.
pub async fn diff_files(
    old: &std::path::Path,
    old_options: &source::SourceOptions,
    table: &TablePlan,
    include: &[ChangeKind],
) -> Result<(SchemaRef, Vec<RecordBatch>, Counts)> {
    let name = table.name.as_str();
    let ctx = engine::session();
    // An ad-hoc diff has no rejects file: a cell that does not fit is an error.
    let old_loaded = source::load(
        name,
        &old.display().to_string(),
        source::FileSelection::Newest,
        old_options,
        false,
        &source::Unobserved,
    )?
    .strict()?;
    let loaded = load_source(
        name,
        &table.source_path,
        table.files,
        &table.source,
        false,
        &source::Unobserved,
    )
    .await?
    .strict()?;
    let origin = loaded.origin();
    let columns: Vec<String> = column_names(&loaded.schema);
    check_columns(table, &columns, &origin, &columns, &origin)?;
    let old_columns: Vec<String> = column_names(&old_loaded.schema);
    for k in &table.key {
        if !old_columns.contains(k) {
            return Err(Error::MissingColumn {
                table: name.to_string(),
                column: k.clone(),
                setting: "key".into(),
                origin: old_loaded.origin(),
                available: old_columns,
            });
        }
    }
    deduplicate(
        &ctx,
        table,
        &old_loaded.batches,
        &old_loaded.origin(),
        &old_loaded.rows,
    )
    .await?;
    let types: HashMap<String, DataType> = loaded
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let rows = loaded.rows.clone();
    check_null_keys(table, &loaded.batches, &origin, &rows)?;
    register_batches(
        &ctx,
        "incoming",
        loaded.schema.clone(),
        loaded.batches.clone(),
    )?;
    // With `duplicates: error` (the ad-hoc diff's setting) this only ever reports a repeat.
    deduplicate(&ctx, table, &loaded.batches, &origin, &rows).await?;
    let rows_in = loaded.num_rows() as u64;
    // The old file's shared columns are read as the new file's types, so that a column inferred
    // differently on the two days compares by value.
    let mut casts = Vec::new();
    for f in old_loaded.schema.fields() {
        match types.get(f.name()) {
            Some(t) if t != f.data_type() => {
                casts.push(cast(ident(f.name()), t.clone()).alias(f.name()))
            }
            _ => casts.push(ident(f.name())),
        }
    }
    let old_frame = ctx
        .read_batches(old_loaded.batches.clone())
        .and_then(|f| f.select(casts))
        .map_err(engine_err(name, "reading the old file"))?;
    let old_batches = old_frame.collect().await.map_err(|e| Error::SourceData {
        path: old.to_path_buf(),
        row: None,
        column: None,
        message: format!("its values do not fit the new file's column types: {e}"),
    })?;
    let old_schema = if let Some(b) = old_batches.first() {
        b.schema()
    } else {
        old_loaded.schema.clone()
    };
    register_batches(&ctx, "baseline", old_schema, old_batches)?;
    let compared: Vec<String> = table
        .compare
        .resolve(&columns, &table.key)
        .into_iter()
        .filter(|c| old_columns.contains(c))
        .collect();
    register_hash_views(&ctx, table, &compared, &[], &types, false).await?;
    let settings = DiffSettings {
        key: table.key.clone(),
        compared,
        columns,
        baseline_columns: old_columns,
        include_unchanged: include.contains(&ChangeKind::Unchanged),
        tolerance: Vec::new(),
    };
    let delta = diff::classify(&ctx, &settings, rows_in).await?;
    let frame = shape_output(table, &delta, include, None, &types).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(engine_err(name, "shaping the delta"))?;
    Ok((schema, batches, delta.counts))
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
                let may_widen = !key.contains(&name);
                match source::types::pin_column(&name, batch.column(j), to, may_widen)
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
            .map_err(|e| Error::engine("typing the snapshot", e.into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((schema, batches))
}

/// `batch` with its row hash over `hashed` appended, as `schema` (its columns then `_row_hash`).
fn with_row_hash(
    table: &str,
    batch: &RecordBatch,
    hashed: &[String],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let inputs: Vec<ArrayRef> = hashed
        .iter()
        .map(|c| {
            batch
                .column_by_name(c)
                .cloned()
                .expect("compared columns exist")
        })
        .collect();
    let hashes = row_hash::hash_rows(&inputs, batch.num_rows())
        .map_err(engine_err(table, "hashing rows"))?;
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(hashes));
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::engine("hashing rows", e.into()))
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
                .map_err(|e| Error::engine("holding keys", e.into()))
        })
        .collect::<Result<_>>()?;
    let key_schema = Arc::new(Schema::new(key_fields));
    let mut keys = Vec::with_capacity(held_keys.len());
    for batch in held_keys {
        let mut columns = Vec::with_capacity(table.key.len());
        for field in key_schema.fields() {
            let values = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::engine(
                    "holding keys",
                    datafusion::error::DataFusionError::Plan(format!(
                        "no key column {}",
                        field.name()
                    )),
                )
            })?;
            columns.push(
                datafusion::arrow::compute::kernels::cast::cast(values, field.data_type())
                    .map_err(|e| Error::engine("holding keys", e.into()))?,
            );
        }
        keys.push(
            RecordBatch::try_new(key_schema.clone(), columns)
                .map_err(|e| Error::engine("holding keys", e.into()))?,
        );
    }
    ctx.deregister_table("held_keys")
        .map_err(engine_err(name, "holding keys"))?;
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
        .map_err(engine_err(name, "registering tables"))?;
    register_batches(ctx, "incoming", schema.clone(), incoming.clone())?;
    Ok(count)
}

/// The baseline rows (alias `b`) meeting `condition` whose key today's rows do not hold, as
/// rows of the new snapshot: the baseline rows of rejected keys, so that a rejected row is never
/// DELETED, and the rows outside the run's scope (other partitions, rows an increment lacks).
async fn carry_baseline_rows(
    ctx: &SessionContext,
    table: &TablePlan,
    condition: &str,
    incoming_schema: &SchemaRef,
    baseline_columns: &[String],
    hashed: &[String],
) -> Result<Vec<RecordBatch>> {
    let name = table.name.as_str();
    let matches = |other: &str| diff::key_equal(&table.key, other, "b");
    let projection = incoming_schema
        .fields()
        .iter()
        .filter(|f| f.name() != ROW_HASH_COLUMN)
        .map(|f| {
            let source = if baseline_columns.contains(f.name()) {
                format!("b.{}", diff::ident(f.name()))
            } else {
                "NULL".to_string()
            };
            format!(
                "CAST({source} AS {}) AS {}",
                sql_type(f.data_type()),
                diff::ident(f.name())
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
                .map_err(|e| Error::engine("holding rows", e.into()))?;
            let b = RecordBatch::try_new(row_schema.clone(), columns)
                .map_err(|e| Error::engine("holding rows", e.into()))?;
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
        .map_err(|e| Error::engine("comparing watermarks", e.into()))?;
    let data_type = schema.field(index).data_type();
    let unreadable = |e: String| Error::Usage {
        message: format!(
            "table {name}: the stored watermark {} = {} cannot be read as {} ({e}); the column's type changed? `tidemark reset --table {name}` starts over.",
            stored.column,
            stored.value,
            source::types::type_name(data_type)
        ),
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
            .map_err(|e| Error::engine("comparing watermarks", e.into()))?;
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(values.is_null(i) || (above.is_valid(i) && above.value(i))))
            .collect();
        ignored += (batch.num_rows() - keep.true_count()) as u64;
        kept.push(
            datafusion::arrow::compute::filter_record_batch(&batch, &keep)
                .map_err(|e| Error::engine("comparing watermarks", e.into()))?,
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
        diff::ident(column)
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
    let columns = diff::ident_list(&table.partition_by);
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
            diff::ident_list(&table.partition_by)
        ))
        .await
        .map_err(engine_err(name, "listing partitions"))?;
    let present_schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let present = frame
        .collect()
        .await
        .map_err(engine_err(name, "listing partitions"))?;
    ctx.deregister_table("all_rows_read")
        .map_err(engine_err(name, "listing partitions"))?;
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
            available: column_names(schema),
        });
    };
    let data_type = field.data_type();
    if data_type.is_numeric() || data_type.is_temporal() {
        return Ok(());
    }
    Err(Error::Usage {
        message: format!(
            "table {}: the watermark column {watermark} is read as {}, which does not sort by time; declare its type under source.columns (timestamp, date or int64), e.g. columns: {{{watermark}: timestamp}}.",
            table.name,
            source::types::type_name(data_type)
        ),
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

/// What one partition's run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionCounts {
    /// `column = value` per partition column.
    pub partition: Vec<(String, String)>,
    /// Its counts (rows: today's rows in it).
    pub counts: Counts,
}

/// Counts per partition today's rows hold: new, changed and deleted from the delta.
fn count_partitions(
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
                _ => {}
            }
        }
    }
    by_partition
        .into_iter()
        .map(|(values, mut counts)| {
            counts.unchanged = counts.rows_in.saturating_sub(counts.new + counts.changed);
            PartitionCounts {
                partition: table.partition_by.iter().cloned().zip(values).collect(),
                counts,
            }
        })
        .collect()
}

/// Register the baseline snapshot as `baseline`, prepared the way today's rows are: with
/// today's `normalize` clean-ups when it was written without them, and its shared columns read
/// as today's types when they differ (a declared type change, an integer column widened), so
/// that the comparison and the delta see one type per column.
pub(crate) async fn register_baseline(
    ctx: &SessionContext,
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    types: &HashMap<String, DataType>,
) -> Result<()> {
    let name = table.name.as_str();
    register_snapshot(ctx, store, name, record, "baseline_stored").await?;
    let mut prepared = "baseline_stored";
    if record.hash.normalize != table.normalize && !table.normalize.is_empty() {
        let keys = diff::ident_list(&table.key);
        // Written without today's clean-ups: apply them, so that adding one changes no row.
        let stored = ctx
            .table("baseline_stored")
            .await
            .map_err(engine_err(name, "reading the baseline"))?;
        let schema: SchemaRef = Arc::new(stored.schema().as_arrow().clone());
        let batches = stored
            .collect()
            .await
            .map_err(engine_err(name, "reading the baseline"))?
            .iter()
            .map(|b| normalize::apply(name, b, &table.normalize))
            .collect::<Result<Vec<_>>>()?;
        register_batches(ctx, "baseline_normalised", schema, batches)?;
        prepared = "baseline_normalised";
        // Clean-ups that make two baseline keys one would pair one new row with two old ones.
        let merged = engine::sql_batches(
            ctx,
            &format!(
                "SELECT {keys} FROM baseline_normalised GROUP BY {keys} HAVING count(*) > 1 LIMIT 1"
            ),
            name,
            "normalising the baseline",
        )
        .await?;
        if let Some(batch) = merged.iter().find(|b| b.num_rows() > 0) {
            let key = table
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    format!(
                        "{k}={}",
                        array_value_to_string(batch.column(i), 0).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Usage {
                message: format!(
                    "table {name}: `normalize` makes several rows of baseline v{} one key ({key}), so they cannot be compared. Start the table afresh with `tidemark reset --table {name}` (the next run sees every row as NEW), or leave the key columns out of `normalize`.",
                    record.version
                ),
            });
        }
    }
    let mut columns: Vec<String> = record
        .schema
        .iter()
        .map(|c| match types.get(&c.name) {
            Some(t) if c.data_type != t.to_string() => {
                format!("CAST({0} AS {1}) AS {0}", diff::ident(&c.name), sql_type(t))
            }
            _ => diff::ident(&c.name),
        })
        .collect();
    columns.push(ROW_HASH_COLUMN.to_string());
    let view = ctx
        .sql(&format!("SELECT {} FROM {prepared}", columns.join(", ")))
        .await
        .map_err(engine_err(name, "reading the baseline"))?;
    ctx.register_table("baseline", view.into_view())
        .map_err(engine_err(name, "reading the baseline"))?;
    Ok(())
}

/// Lines for the summary about columns added, removed, emptied or refilled since the baseline.
fn schema_notes(
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

/// The names of a schema's columns, in order.
fn column_names(schema: &datafusion::arrow::datatypes::Schema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// Register record batches as a table.
pub fn register_batches(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let partitions = if batches.is_empty() {
        vec![Vec::new()]
    } else {
        vec![batches]
    };
    let table = MemTable::try_new(schema, partitions)
        .map_err(|e| Error::engine(format!("registering {name}"), e))?;
    // Names are registered exactly as written: SQL then needs quotes for mixed-case names.
    ctx.register_table(TableReference::bare(name), Arc::new(table))
        .map_err(|e| Error::engine(format!("registering {name}"), e))?;
    Ok(())
}

/// Register a stored snapshot (with `_row_hash`) under `alias`.
pub async fn register_snapshot(
    ctx: &SessionContext,
    store: &Store,
    table: &str,
    record: &CommitRecord,
    alias: &str,
) -> Result<()> {
    store.attach(ctx);
    let path_text = store.file_url(table, &record.snapshot.path);
    ctx.register_parquet(
        TableReference::bare(alias),
        &path_text,
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| Error::Store {
        location: path_text.clone(),
        message: format!(
            "cannot read the snapshot of {table} v{}: {e}. Run `tidemark verify`.",
            record.version
        ),
    })
}

/// Every column the pipeline names must exist: in the source (`source.columns`) or in the
/// snapshot (key, compare/ignore, on_delete.set, output.columns).
fn check_columns(
    table: &TablePlan,
    source_columns: &[String],
    source_origin: &str,
    columns: &[String],
    origin: &str,
) -> Result<()> {
    let missing = |setting: &str, column: &String| Error::MissingColumn {
        table: table.name.clone(),
        column: column.clone(),
        setting: setting.to_string(),
        origin: origin.to_string(),
        available: columns.to_vec(),
    };
    if columns.iter().any(|c| c == ROW_HASH_COLUMN) {
        return Err(Error::Usage {
            message: format!(
                "table {}: the column name {ROW_HASH_COLUMN} is reserved for tidemark's row hash; rename it in `transform`.",
                table.name
            ),
        });
    }
    for k in &table.key {
        if !columns.contains(k) {
            return Err(missing("key", k));
        }
    }
    let (setting, named) = table.compare.named();
    for c in named {
        if !columns.contains(c) {
            return Err(missing(setting, c));
        }
    }
    for (c, _) in &table.delete_set {
        if !columns.contains(c) {
            return Err(missing("on_delete.set", c));
        }
    }
    for (c, _) in &table.tolerance {
        if !columns.contains(c) {
            return Err(missing("tolerance", c));
        }
    }
    for n in &table.normalize {
        if !columns.contains(&n.column) {
            return Err(missing("normalize", &n.column));
        }
    }
    for c in &table.validate.not_null {
        if !columns.contains(c) {
            return Err(missing("validate.not_null", c));
        }
    }
    for c in &table.partition_by {
        if !columns.contains(c) {
            return Err(missing("partition_by", c));
        }
    }
    if let TableMode::Incremental { watermark } = &table.mode
        && !columns.contains(watermark)
    {
        return Err(missing("watermark", watermark));
    }
    for r in &table.references {
        if !columns.contains(&r.column) {
            return Err(missing("references", &r.column));
        }
    }
    let cc = &table.change_columns;
    for output in &table.outputs {
        for c in output.columns.iter().flatten() {
            if !columns.contains(c) && *c != cc.type_column && *c != cc.reason_column {
                let mut available = columns.to_vec();
                available.extend([cc.type_column.clone(), cc.reason_column.clone()]);
                return Err(Error::MissingColumn {
                    table: table.name.clone(),
                    column: c.clone(),
                    setting: "output.columns".into(),
                    origin: "the delta".into(),
                    available,
                });
            }
        }
    }
    for (c, _) in &table.source.columns {
        if !source_columns.contains(c) {
            return Err(Error::MissingColumn {
                table: table.name.clone(),
                column: c.clone(),
                setting: "source.columns".into(),
                origin: source_origin.to_string(),
                available: source_columns.to_vec(),
            });
        }
    }
    Ok(())
}

fn check_null_keys(
    table: &TablePlan,
    batches: &[RecordBatch],
    origin: &str,
    rows: &source::RowLocator,
) -> Result<()> {
    let mut offset = 0u64;
    for batch in batches {
        for k in &table.key {
            let values = batch.column_by_name(k).expect("key columns were checked");
            if values.null_count() > 0 {
                let index = (0..values.len()).find(|&i| values.is_null(i)).unwrap_or(0) as u64;
                return Err(Error::NullKey {
                    table: table.name.clone(),
                    column: k.clone(),
                    origin: origin.to_string(),
                    row: rows.row(offset + index),
                });
            }
        }
        offset += batch.num_rows() as u64;
    }
    Ok(())
}

/// Repeated keys: an error naming the first, or the kept rows for keep_first / keep_last.
/// `rows` are the snapshot's batches in file order; each row gets its ordinal so that "first"
/// and "last" mean file order whatever the engine's partitioning.
async fn deduplicate(
    ctx: &SessionContext,
    table: &TablePlan,
    rows: &[RecordBatch],
    origin: &str,
    locator: &source::RowLocator,
) -> Result<Option<Vec<RecordBatch>>> {
    let name = table.name.as_str();
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if validate::keys_surely_unique(rows, &table.key)? {
        return Ok(None);
    }
    let (schema, numbered) = engine::with_ordinals(&first.schema(), rows, "__tidemark_row", 1)?;
    ctx.deregister_table("incoming_numbered")
        .map_err(engine_err(name, "checking keys"))?;
    register_batches(ctx, "incoming_numbered", schema, numbered)?;
    let keys = diff::ident_list(&table.key);
    let numbered = "SELECT * FROM incoming_numbered";
    let sql = format!(
        "SELECT {keys}, count(*) AS n, min(__tidemark_row) AS first_row FROM ({numbered}) GROUP BY {keys} HAVING count(*) > 1 ORDER BY first_row LIMIT 1"
    );
    let found = engine::sql_batches(ctx, &sql, name, "checking keys").await?;
    let Some(batch) = found.into_iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    match table.duplicates {
        Duplicates::Error => {
            let key_text = table
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let v = ScalarValue::try_from_array(batch.column(i), 0)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let count = ScalarValue::try_from_array(batch.column(table.key.len()), 0).ok();
            let first = ScalarValue::try_from_array(batch.column(table.key.len() + 1), 0).ok();
            let as_u64 = |s: Option<ScalarValue>| match s {
                Some(ScalarValue::Int64(Some(v))) => v as u64,
                Some(ScalarValue::UInt64(Some(v))) => v,
                _ => 0,
            };
            let first = as_u64(first);
            // The second occurrence, found on this error path only.
            let sql = format!(
                "SELECT __tidemark_row FROM (SELECT __tidemark_row, min(__tidemark_row) OVER (PARTITION BY {keys}) AS first_row FROM ({numbered})) WHERE first_row = {first} ORDER BY __tidemark_row LIMIT 2"
            );
            let rows_of_key = engine::sql_batches(ctx, &sql, name, "checking keys").await?;
            let second = rows_of_key
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |i| ScalarValue::try_from_array(b.column(0), i).ok())
                })
                .map(as_u64)
                .nth(1)
                .unwrap_or(first);
            Err(Error::DuplicateKey {
                table: name.to_string(),
                key: key_text,
                count: as_u64(count),
                origin: origin.to_string(),
                first_row: locator.row(first.saturating_sub(1)),
                second_row: locator.row(second.saturating_sub(1)),
            })
        }
        keep => {
            let order = if keep == Duplicates::KeepFirst {
                "ASC"
            } else {
                "DESC"
            };
            let sql = format!(
                "SELECT * EXCLUDE (__tidemark_row, __tidemark_rank) FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY __tidemark_row {order}) AS __tidemark_rank FROM ({numbered})) WHERE __tidemark_rank = 1 ORDER BY __tidemark_row"
            );
            Ok(Some(
                engine::sql_batches(ctx, &sql, name, "dropping repeated keys").await?,
            ))
        }
    }
}

/// `incoming_hashes` and `baseline_hashes`: the stored hashes when they cover the same columns
/// the same way, else both re-hashed over the compared columns they share; plus the `carried`
/// columns that are compared outside the hash (tolerances).
pub(crate) async fn register_hash_views(
    ctx: &SessionContext,
    table: &TablePlan,
    shared_compared: &[String],
    carried: &[String],
    types: &HashMap<String, DataType>,
    stored_hashes_apply: bool,
) -> Result<()> {
    let keys = diff::ident_list(&table.key);
    let (incoming_hash, baseline_hash) = if stored_hashes_apply {
        (ROW_HASH_COLUMN.to_string(), ROW_HASH_COLUMN.to_string())
    } else {
        let args = |cast_to_incoming: bool| {
            shared_compared
                .iter()
                .map(|c| {
                    if cast_to_incoming {
                        format!("CAST({} AS {})", diff::ident(c), sql_type(&types[c]))
                    } else {
                        diff::ident(c)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        (
            format!("{}({})", crate::diff::row_hash::ROW_HASH_UDF, args(false)),
            format!("{}({})", crate::diff::row_hash::ROW_HASH_UDF, args(true)),
        )
    };
    for (view, source, hash) in [
        ("incoming_hashes", "incoming", incoming_hash),
        ("baseline_hashes", "baseline", baseline_hash),
    ] {
        let extra: String = carried
            .iter()
            .map(|c| format!(", {}", diff::ident(c)))
            .collect();
        let sql = format!("SELECT {keys}, {hash} AS {ROW_HASH_COLUMN}{extra} FROM {source}");
        let frame = ctx
            .sql(&sql)
            .await
            .map_err(engine_err(&table.name, "hashing rows"))?;
        ctx.register_table(view, frame.into_view())
            .map_err(engine_err(&table.name, "hashing rows"))?;
    }
    Ok(())
}

/// The SQL name of an Arrow type, for casts in generated SQL.
fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

/// The change rows as stored: every kind but UNCHANGED, canonical labels, configured names.
pub(crate) async fn stored_changes(
    table: &TablePlan,
    delta: &Delta,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let frame = delta_frame(delta).map_err(engine_err(&table.name, "storing change rows"))?;
    let frame = frame
        .filter(ident(CHANGE_TYPE_COLUMN).not_eq(lit(ChangeKind::Unchanged.canonical())))
        .map_err(engine_err(&table.name, "storing change rows"))?;
    let cc = &table.change_columns;
    let mut exprs: Vec<Expr> = delta
        .schema
        .fields()
        .iter()
        .filter(|f| f.name() != CHANGE_TYPE_COLUMN && f.name() != CHANGE_REASON_COLUMN)
        .map(|f| ident(f.name()))
        .collect();
    exprs.push(ident(CHANGE_TYPE_COLUMN).alias(&cc.type_column));
    exprs.push(ident(CHANGE_REASON_COLUMN).alias(&cc.reason_column));
    let frame = frame
        .select(exprs)
        .map_err(engine_err(&table.name, "storing change rows"))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(engine_err(&table.name, "storing change rows"))?;
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

/// What an output includes when it does not say.
pub const DEFAULT_INCLUDE: [ChangeKind; 3] =
    [ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted];

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
        .map_err(engine_err(&table.name, "shaping the delta"))?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(plan_schema);
    Ok((schema, batches))
}

/// Refuse the run when it would delete or change more than the guard allows, or when the new
/// snapshot holds fewer rows than it requires. Limits in percent are of the baseline's rows.
fn check_guard(
    table: &TablePlan,
    counts: &Counts,
    baseline_rows: u64,
    reported: Counts,
) -> Result<()> {
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
        counts: reported,
    };
    for (count, limit, verb, key) in [
        (counts.deleted, guard.max_deleted, "deleted", "max_deleted"),
        (counts.changed, guard.max_changed, "changed", "max_changed"),
    ] {
        if let Some(limit) = limit
            && count as f64 > limit.rows(baseline_rows)
        {
            return Err(refuse(format!(
                "{} of {} rows ({:.1}%) would be {verb}; guard {key} is {limit}",
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
    let fail = engine_err(&table.name, "shaping the delta");
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
            None => ident(name),
        };
        exprs.push(expr);
    }
    let cc = &table.change_columns;
    let mut label = when(
        ident(CHANGE_TYPE_COLUMN).eq(lit(ChangeKind::New.canonical())),
        lit(cc.label(ChangeKind::New)),
    );
    for kind in [ChangeKind::Changed, ChangeKind::Deleted] {
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
