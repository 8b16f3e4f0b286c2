//! The outcome of a table's run and of a pipeline's, as the summary, the report and the
//! store's `runs` show them.

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::diff::Counts;
use crate::diff::strategy::Strategy;
use crate::error::Error;
use crate::spec::{Plan, TablePlan};
use crate::store::{CommitRecord, RunRecord, Store};

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
    /// The comparison strategy that classified the rows (none when the run ended before).
    pub strategy: Option<Strategy>,
    /// What each destination received after the commit.
    pub deliveries: Vec<crate::deliver::Delivery>,
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
    /// The exit code: 0, or 1 when any table failed, else the code of the failure (4 conflict),
    /// else 5 when a committed version did not reach a destination.
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
        let undelivered = (self.tables.iter())
            .flat_map(|t| &t.deliveries)
            .any(|d| d.error.is_some());
        if codes.is_empty() && undelivered {
            crate::error::exit_code::UNDELIVERED
        } else if codes.is_empty() {
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

/// The outcome of a table run that ended with `error` before learning anything.
pub(crate) fn failed_run(table: &str, error: Error) -> TableRun {
    TableRun {
        error: Some(error),
        ..not_started(table)
    }
}

/// A table run that learned nothing (the base of failed and skipped outcomes).
pub(crate) fn not_started(table: &str) -> TableRun {
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
        strategy: None,
        deliveries: Vec::new(),
    }
}

/// Record a table run in the store's `runs`.
pub(crate) async fn record_run(
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
        renamed: outcome.counts.renamed,
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

/// What one partition's run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionCounts {
    /// `column = value` per partition column.
    pub partition: Vec<(String, String)>,
    /// Its counts (rows: today's rows in it).
    pub counts: Counts,
}

/// A table version an atomic pipeline run prepared: written, not yet visible.
#[derive(Debug)]
pub struct PendingCommit {
    /// Its commit record (with `atomic` set).
    pub record: CommitRecord,
    /// Each output's shaped delta, to deliver once committed.
    pub outputs: Vec<crate::deliver::files::Shaped>,
    /// When the table's run started.
    pub started_at: DateTime<Utc>,
    /// The table run's id.
    pub run_id: String,
}
