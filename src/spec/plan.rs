//! The validated pipeline: the types every other module reads (resolved paths, parsed types,
//! tables in dependency order), made from the file by [`super::load`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::raw::{Case, Duplicates, OnInvalid, YamlScalar};
use crate::source::{FileSelection, SourceOptions};

/// The kind of a row after classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ChangeKind {
    /// Key only in the new snapshot.
    New,
    /// Key in both, content differs.
    Changed,
    /// Key only in the baseline.
    Deleted,
    /// With `renames`, a DELETED and a NEW row of the same compared content: one row whose
    /// key changed.
    Renamed,
    /// Key in both, same content.
    Unchanged,
}

/// What an output includes when it does not say (RENAMED rows exist only with `renames`).
pub const DEFAULT_INCLUDE: [ChangeKind; 4] = [
    ChangeKind::New,
    ChangeKind::Changed,
    ChangeKind::Deleted,
    ChangeKind::Renamed,
];

impl ChangeKind {
    /// The label stored in the baseline's change rows and used by the classification SQL.
    pub fn canonical(self) -> &'static str {
        match self {
            ChangeKind::New => "NEW",
            ChangeKind::Changed => "CHANGED",
            ChangeKind::Deleted => "DELETED",
            ChangeKind::Renamed => "RENAMED",
            ChangeKind::Unchanged => "UNCHANGED",
        }
    }
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its folder: relative paths resolve against it.
    pub dir: PathBuf,
    /// `name`, or the file's stem.
    pub name: String,
    /// Where the baselines live: a local folder (absolute) or a URL.
    pub store: String,
    /// Tables in dependency order.
    pub tables: Vec<TablePlan>,
    /// xxh3 of the file's bytes, recorded in every commit.
    pub file_hash: String,
    /// `atomic: true`: every table's new version becomes visible together, or none does.
    pub atomic: bool,
    /// `memory_limit:` in bytes: the engine spills beyond it (`--memory-limit` overrides).
    pub memory_limit: Option<u64>,
}

impl Plan {
    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&TablePlan> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// One table's validated settings.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Table name.
    pub name: String,
    /// Path or glob of the source files, absolute (or a URL).
    pub source_path: String,
    /// `files:`.
    pub files: FileSelection,
    /// How to read the files.
    pub source: SourceOptions,
    /// Optional SQL over `source`.
    pub transform: Option<String>,
    /// Key columns.
    pub key: Vec<String>,
    /// Which non-key columns make a row CHANGED.
    pub compare: CompareColumns,
    /// What to do with a repeated key.
    pub duplicates: Duplicates,
    /// Tables that run before this one: those its transform reads and those it references.
    pub depends_on: Vec<String>,
    /// Foreign keys checked against the parent's new snapshot (`references:`).
    pub references: Vec<Reference>,
    /// How a run's rows relate to the baseline.
    pub mode: TableMode,
    /// `partition_by`: a run can delete rows only in the partitions it holds.
    pub partition_by: Vec<String>,
    /// Whether DELETED rows go to the delta.
    pub emit_deleted: bool,
    /// Values DELETED rows carry in the delta.
    pub delete_set: Vec<(String, YamlScalar)>,
    /// Delta files to write.
    pub outputs: Vec<OutputPlan>,
    /// `deliver:` destinations (databases).
    pub destinations: Vec<DestinationPlan>,
    /// Names of the bookkeeping columns and labels.
    pub change_columns: ChangeColumns,
    /// `renames`: a DELETED and a NEW row of the same compared content are one RENAMED row.
    pub renames: bool,
    /// Limits that refuse a run (exit 3) unless `--force`.
    pub guard: Guard,
    /// Numeric columns whose small changes are no change, in table order of declaration.
    pub tolerance: Vec<(String, Tolerance)>,
    /// Row checks; failing rows are rejected.
    pub validate: Validation,
    /// Per-column clean-ups applied before hashing and comparing, in declaration order.
    pub normalize: Vec<Normalize>,
}

/// `mode:` (with its watermark).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TableMode {
    /// The source is the whole table (within the partitions it holds): a key it lacks is
    /// DELETED.
    #[default]
    Snapshot,
    /// The source is the whole table, rebuilt every day (an export); partitions do not apply.
    Full,
    /// The source holds the rows changed since the last run (or more): rows at or below the
    /// stored watermark are ignored, nothing is DELETED, the baseline is upserted.
    Incremental {
        /// The column that grows with every change.
        watermark: String,
    },
}

/// One `references:` entry: every non-null value of `column` must be a value of
/// `parent_column` in table `parent`'s new snapshot; a row whose value is not is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The column of this table.
    pub column: String,
    /// The parent table.
    pub parent: String,
    /// The parent's column (usually its key).
    pub parent_column: String,
}

/// `validate:`: which rows are invalid and what happens to them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    /// Columns that must hold a value.
    pub not_null: Vec<String>,
    /// Named SQL conditions every row must meet (a NULL result passes, as SQL CHECK does).
    pub rules: Vec<Rule>,
    /// Reject invalid rows, or refuse the run.
    pub on_invalid: OnInvalid,
    /// Most invalid rows a run may reject (count, or percent of the rows read) before it is
    /// refused.
    pub max_invalid: Option<Limit>,
    /// Path template of the rejects file (absolute); `None`: in the store, beside the table.
    pub rejects_path: Option<String>,
}

/// One `validate.rules` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, written to the rejects file's `_rule`.
    pub name: String,
    /// A SQL boolean expression over the snapshot's columns.
    pub check: String,
}

/// One column's clean-up (`normalize:`), applied to the new snapshot before keys are matched
/// and rows hashed, and to a baseline written without it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    /// The column.
    pub column: String,
    /// Strip leading and trailing white space (spaces, tabs, line breaks, no-break spaces).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trim: bool,
    /// Fold the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<Case>,
    /// Round numbers to this many decimal places.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

/// How far a numeric value may move and still count as unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// At most this much, either way.
    Absolute(f64),
    /// At most this fraction of the old value (`1%` is 0.01).
    Relative(f64),
}

/// A count, or a percentage of the baseline's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// An absolute number of rows.
    Count(u64),
    /// Percent of the baseline's rows.
    Percent(f64),
}

impl Limit {
    /// The limit in rows, for a baseline of `baseline_rows`.
    pub fn rows(self, baseline_rows: u64) -> f64 {
        match self {
            Limit::Count(n) => n as f64,
            Limit::Percent(p) => baseline_rows as f64 * p / 100.0,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The most rows a run may delete when the pipeline sets no `guard.max_deleted`: a file whose
/// keys changed form (`0001` arriving as `1`) would delete every row and add it again.
pub const DEFAULT_MAX_DELETED: Limit = Limit::Percent(50.0);

/// The most rows a run may reject when the pipeline sets no `validate.max_invalid`: a file in
/// another layout rejects most of its rows, and a baseline kept whole hides it.
pub const DEFAULT_MAX_INVALID: Limit = Limit::Percent(10.0);

/// The defaults apply from this many rows (of the baseline for `max_deleted`, read for
/// `max_invalid`): below it a few rows are a large share, and no catalogue is at stake.
pub const DEFAULTS_FROM_ROWS: u64 = 100;

/// A limit the pipeline set, or the default that stands in for it from [`DEFAULTS_FROM_ROWS`]
/// rows; with whether it is the default.
pub fn limit_or_default(set: Option<Limit>, default: Limit, rows: u64) -> Option<(Limit, bool)> {
    match set {
        Some(limit) => Some((limit, false)),
        None => (rows >= DEFAULTS_FROM_ROWS).then_some((default, true)),
    }
}

/// `guard:`: refuse a run that would delete or change too much, or that holds too few rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guard {
    /// Most rows a run may delete.
    pub max_deleted: Option<Limit>,
    /// Most rows a run may change.
    pub max_changed: Option<Limit>,
    /// Fewest rows the new snapshot may hold.
    pub min_rows: Option<Limit>,
}

/// `compare` / `ignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareColumns {
    /// Every non-key column.
    All,
    /// Only these.
    Only(Vec<String>),
    /// Every non-key column except these.
    AllBut(Vec<String>),
}

impl CompareColumns {
    /// The compared columns among `columns` (in table order), given the key.
    pub fn resolve(&self, columns: &[String], key: &[String]) -> Vec<String> {
        columns
            .iter()
            .filter(|c| !key.contains(c))
            .filter(|c| match self {
                CompareColumns::All => true,
                CompareColumns::Only(only) => only.contains(c),
                CompareColumns::AllBut(but) => !but.contains(c),
            })
            .cloned()
            .collect()
    }

    /// The columns this setting names, with the setting's name.
    pub fn named(&self) -> (&'static str, &[String]) {
        match self {
            CompareColumns::All => ("compare", &[]),
            CompareColumns::Only(c) => ("compare", c),
            CompareColumns::AllBut(c) => ("ignore", c),
        }
    }
}

/// One delta file.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    /// The destination's name (`name:`, else the path as the pipeline file writes it): its
    /// cursor is kept under it, and `deliver --destination` picks it.
    pub name: String,
    /// Path template, absolute, with `{table}`, `{version}`, `{timestamp}`, `{date}`.
    pub path: String,
    /// Which change kinds go in.
    pub include: Vec<ChangeKind>,
    /// Optional projection and order.
    pub columns: Option<Vec<String>>,
}

/// One `deliver:` destination.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationPlan {
    /// Its name, unique within the table (`name:`, else its kind).
    pub name: String,
    /// Where it is.
    pub kind: DestinationKind,
}

/// The kinds of destination.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    /// A PostgreSQL table.
    Postgres(DatabasePlan),
    /// A table in an SQLite file (`url` is the file's path).
    Sqlite(DatabasePlan),
    /// An HTTP API called per changed row.
    Http(Box<HttpPlan>),
}

/// An HTTP API that receives a table's changes, a request per changed row.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPlan {
    /// URL templates (minijinja over the row), per change type.
    pub url: PerChange,
    /// Methods per change type; a change type without one is not sent.
    pub method: PerChange,
    /// Body templates per change type; without one, the row as a JSON object (no body for
    /// DELETE).
    pub body: PerChange,
    /// Header names and value templates; `${VAR}` in them is read from the environment.
    pub headers: Vec<(String, String)>,
    /// The most requests per second (`None`: as fast as the server answers).
    pub rate_limit: Option<f64>,
    /// How often a request is tried again on 429, 5xx, a timeout or a lost connection.
    pub retries: u32,
    /// How long one request may take.
    pub timeout: std::time::Duration,
    /// The first wait before trying again (doubled each time), unless the server says
    /// `Retry-After`.
    pub backoff: std::time::Duration,
    /// Response fields kept per key (name, JSON pointer), given to later requests as `remote`.
    pub remember: Vec<(String, String)>,
    /// What a row the server refuses for good does to the delivery.
    pub on_failure: OnFailure,
    /// The most requests in flight at once (the rate limit still bounds how fast they start).
    pub concurrency: usize,
}

/// What a row the server refuses for good (or still fails after the retries) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// It goes to the destination's dead-letter file and delivery goes on.
    DeadLetter,
    /// Delivery stops at its version (exit 5); the next delivery sends what was not confirmed.
    Stop,
}

/// A setting per change type (a RENAMED row takes CHANGED's unless it has its own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerChange {
    /// For NEW rows.
    pub new: Option<String>,
    /// For CHANGED rows.
    pub changed: Option<String>,
    /// For DELETED rows.
    pub deleted: Option<String>,
    /// For RENAMED rows.
    pub renamed: Option<String>,
}

impl PerChange {
    /// The setting for `kind`.
    pub fn of(&self, kind: ChangeKind) -> Option<&str> {
        match kind {
            ChangeKind::New => self.new.as_deref(),
            ChangeKind::Changed => self.changed.as_deref(),
            ChangeKind::Deleted => self.deleted.as_deref(),
            ChangeKind::Renamed => self.renamed.as_deref().or(self.changed.as_deref()),
            ChangeKind::Unchanged => None,
        }
    }

    /// The settings that are given, with their change type's name.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("new", &self.new),
            ("changed", &self.changed),
            ("deleted", &self.deleted),
            ("renamed", &self.renamed),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
    }
}

/// A database table that receives a table's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasePlan {
    /// The connection URL as written: `${VAR}` is read from the environment at run time.
    pub url: String,
    /// The target table (`schema.table` or `table`).
    pub table: String,
    /// Create the table from the snapshot's schema when missing (and add new columns).
    pub create: bool,
    /// What a DELETED row does.
    pub deletes: Deletes,
}

/// `deletes:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletes {
    /// Delete the row.
    Delete,
    /// Set this column to the version's commit time.
    Soft(String),
    /// Leave the row.
    Ignore,
}

/// `change_columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeColumns {
    /// Name of the change type column.
    pub type_column: String,
    /// Name of the change reason column.
    pub reason_column: String,
    /// Labels for NEW, CHANGED, DELETED, RENAMED, UNCHANGED.
    pub labels: BTreeMap<ChangeKind, String>,
    /// With `renames`, the prefix of the columns that carry a RENAMED row's old key
    /// (`previous_sku` for the key `sku`).
    pub previous_prefix: String,
}

impl Default for ChangeColumns {
    fn default() -> Self {
        ChangeColumns {
            type_column: "change_type".into(),
            reason_column: "change_reason".into(),
            labels: [
                ChangeKind::New,
                ChangeKind::Changed,
                ChangeKind::Deleted,
                ChangeKind::Renamed,
                ChangeKind::Unchanged,
            ]
            .into_iter()
            .map(|k| (k, k.canonical().to_string()))
            .collect(),
            previous_prefix: "previous_".into(),
        }
    }
}

impl ChangeColumns {
    /// The configured label of a change kind.
    pub fn label(&self, kind: ChangeKind) -> &str {
        self.labels
            .get(&kind)
            .map(String::as_str)
            .unwrap_or(kind.canonical())
    }

    /// The name of the column that carries a RENAMED row's old value of key column `key`.
    pub fn previous(&self, key: &str) -> String {
        format!("{}{key}", self.previous_prefix)
    }
}

/// What is wrong with a key's list of columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// It names no column.
    NoColumn,
    /// A name is empty.
    EmptyName,
    /// A column is named twice.
    Repeated(String),
}

impl KeyProblem {
    /// The problem of `key`, if any (the pipeline file's `key:` and `diff --key` alike).
    pub fn of(key: &[String]) -> Option<KeyProblem> {
        if key.is_empty() {
            return Some(KeyProblem::NoColumn);
        }
        if key.iter().any(|k| k.trim().is_empty()) {
            return Some(KeyProblem::EmptyName);
        }
        key.iter()
            .enumerate()
            .find(|(i, k)| key[..*i].contains(k))
            .map(|(_, k)| KeyProblem::Repeated(k.clone()))
    }
}
