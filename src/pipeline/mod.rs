//! One table's run as a sequence of stages, and the run of a pipeline's tables.
//!
//! A table's run, stage by stage, each in its own file:
//!
//! 1. [`schedule`]: the pipeline's tables in dependency order, at most `--jobs` at once.
//! 2. [`load`]: the source read into Arrow, the transform applied, the named columns checked.
//! 3. [`prepare`]: rows typed as the baseline pins them, normalised, validated (rejected rows
//!    go to the rejects file), hashed over the compared columns.
//! 4. [`scope`]: which baseline rows the run speaks for: rows below the watermark left out,
//!    the baseline rows of rejected keys, of partitions the run does not hold, or that an
//!    increment lacks, carried into the new snapshot as they were.
//! 5. [`compare`]: one strategy, chosen by [`diff::strategy::choose`], matches the rows and
//!    builds the delta.
//! 6. [`conclude`]: the guard, the outputs shaped, the snapshot and change rows stored, the
//!    commit, the delta files.
//! 7. [`report`]: the outcome, recorded in the store's `runs`.
//!
//! [`streamed`] does stages 2 to 5 piece by piece for the common daily job (one CSV file
//! against a baseline whose shape it keeps), never holding the file whole; [`progress`] draws
//! each table's line on the terminal.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::diff::{Counts, strategy::Strategy};
use crate::engine;
use crate::error::{Error, Result};
use crate::source::{RowLocator, SourceFile};
use crate::spec::{Plan, TablePlan};
use crate::store::Store;

pub mod compare;
pub mod conclude;
pub mod load;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod scope;
pub mod streamed;

pub use progress::above_progress;
pub use report::{PartitionCounts, PipelineRun, TableRun, TableStatus};

use progress::Progress;
use report::{failed_run, record_run};

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
    /// The fastest comparison strategy the run may take (see [`diff::strategy`]); `None`: any.
    /// Tests set it to run every strategy on the same input.
    pub strategy: Option<Strategy>,
    /// The size of the pieces a streamed CSV file is read in; `None`: sized by the file.
    /// Tests make them small, so that a small file is read in many pieces.
    pub piece_bytes: Option<usize>,
    /// After matching by position, join the full rows all the same, as a digest collision
    /// makes a run do. Tests set it to see that way back work.
    #[doc(hidden)]
    pub fall_back_to_join: bool,
    /// `--no-deliver`: commit only; destinations receive the version at the next delivery.
    pub no_deliver: bool,
    /// End the process right after the commit record is created, as a kill -9 would. Tests
    /// set it to see that a committed version is delivered by the next run.
    #[doc(hidden)]
    pub abort_after_commit: bool,
    /// Set by the scheduler for an `atomic: true` pipeline: the id of its pipeline commit.
    #[doc(hidden)]
    pub atomic_run: Option<String>,
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
            return Err(Error::UnknownTable {
                table: name.clone(),
                known: plan.tables.iter().map(|t| t.name.clone()).collect(),
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
                return Err(Error::DependencyNotSelected {
                    table: t.name.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    let started_at = Utc::now();
    let mut tables = schedule::schedule(plan, &selected, store, options, &mut on_table).await;
    if !options.dry_run && !options.no_deliver {
        // Databases take the pipeline's tables together, parents before children.
        for (name, delivery) in
            crate::deliver::deliver_remote(plan, store, &selected, None, false).await
        {
            if let Some(run) = tables.iter_mut().find(|t| t.table == name) {
                run.deliveries.push(delivery);
            }
        }
    }
    Ok(PipelineRun {
        pipeline: plan.name.clone(),
        started_at,
        finished_at: Utc::now(),
        tables,
    })
}

/// One table's run: what every stage reads.
pub(crate) struct TableJob<'a> {
    pub plan: &'a Plan,
    pub table: &'a TablePlan,
    pub store: &'a Store,
    pub options: &'a RunOptions,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    pub run_id: &'a str,
    pub progress: &'a Progress,
}

impl TableJob<'_> {
    fn name(&self) -> &str {
        &self.table.name
    }

    /// Log (at -vv) that a step ended, with the time since the table's run started.
    fn log_step(&self, step: &str) {
        tracing::debug!(
            "{}: {step} ({:.2} s)",
            self.name(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What a run has learned about today's snapshot that the later stages and the commit
/// record need, handed from stage to stage.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// The snapshot's columns (the transform's result, or the source's).
    pub columns: Vec<String>,
    /// The source's columns.
    pub source_columns: Vec<String>,
    /// The source files read.
    pub files: Vec<SourceFile>,
    /// Where rows come from, for messages.
    pub origin: String,
    /// Maps row indexes of the snapshot to rows a person counts.
    pub rows: RowLocator,
    /// Whether each row of the snapshot is traced to its source row through the transform.
    pub traced: bool,
    /// Schema changes and other things the user should know, one line each.
    pub notes: Vec<String>,
    /// The version this run would commit.
    pub version: u64,
    /// Rows rejected.
    pub rejected: u64,
}

impl Facts {
    fn new(
        columns: Vec<String>,
        source_columns: Vec<String>,
        files: Vec<SourceFile>,
        origin: String,
        rows: RowLocator,
        traced: bool,
    ) -> Self {
        Facts {
            columns,
            source_columns,
            files,
            origin,
            rows,
            traced,
            notes: Vec::new(),
            version: 0,
            rejected: 0,
        }
    }
}

/// What a run learned before it failed, for the run record and report.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    sources: Vec<String>,
    rejected: u64,
    rejects_file: Option<String>,
    /// The counts known so far (a refused run's, for its record).
    counts: Counts,
}

/// Run one table and record the run in the store (unless dry).
pub async fn run_table(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    options: &RunOptions,
) -> TableRun {
    let started = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let progress = Progress::new(options.progress, &table.name);
    let job = TableJob {
        plan,
        table,
        store,
        options,
        started,
        started_at: Utc::now(),
        run_id: &run_id,
        progress: &progress,
    };
    let mut partial = Partial::default();
    let result = execute(&job, &mut partial).await;
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
                Error::Refused { .. } => partial.counts,
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
        record_run(plan, table, store, &outcome, job.started_at, &run_id).await;
    }
    outcome
}

/// A table's run, stage after stage.
async fn execute(job: &TableJob<'_>, partial: &mut Partial) -> Result<TableRun> {
    let name = job.name();
    let baseline = job.store.latest(name).await?;
    let baseline = baseline.as_ref();
    if let Some(source) = streamed::source_to_stream(job, baseline)? {
        match streamed::run(job, baseline, &source, partial).await? {
            streamed::Streamed::Done(run) => return Ok(*run),
            streamed::Streamed::Declined(why) => {
                tracing::debug!("{name}: not streamed: {why}; loading the snapshot whole");
            }
        }
    }
    let ctx = engine::session();
    job.progress.phase("loading the source");
    let loaded = load::load_snapshot(
        &ctx,
        job.table,
        job.store,
        job.options.source_overrides.get(name),
        job.progress,
    )
    .await?;
    partial.sources = loaded.facts.files.iter().map(|f| f.path.clone()).collect();
    job.log_step("read the source");
    let typed = prepare::type_rows(job, loaded, baseline).await?;
    let validated = prepare::validate_rows(job, typed, partial).await?;
    let in_scope = scope::rows_in_scope(job, &ctx, validated, baseline).await?;
    let hashed = prepare::hash_rows(job, &ctx, in_scope.rows, baseline).await?;
    let scoped =
        scope::carry_baseline_rows(job, &ctx, hashed, baseline, in_scope.stored_watermark).await?;
    let compared = compare::compare(job, &ctx, scoped, baseline).await?;
    conclude::conclude(job, compared, baseline, partial).await
}
