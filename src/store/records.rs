//! The store's records: what a commit record, a run record and a pipeline (atomic) record
//! hold, as JSON files other tools can read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::diff::Counts;
use crate::source::SourceFile;

/// Version of the commit record format.
pub const RECORD_FORMAT: u32 = 1;

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitKind {
    /// A pipeline run.
    Run,
    /// A rollback to an earlier version.
    Rollback,
    /// An empty version: the next run sees every row as NEW.
    Reset,
}

/// A data file of a version, with what `verify` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Path relative to the table's folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// xxh3-128 of the bytes, hex.
    pub xxh3_128: String,
}

/// A column of the snapshot's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Arrow type, as Arrow displays it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Every row of the version is null in this column (it is then not compared next run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
}

/// Which columns the stored `_row_hash` covers, and by which algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSpec {
    /// `diff::row_hash::HASH_VERSION`.
    pub version: u32,
    /// Compared columns, in hash order, with their types.
    pub columns: Vec<ColumnSchema>,
    /// Clean-ups applied to the rows before hashing (`normalize:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalize: Vec<crate::spec::Normalize>,
}

impl HashSpec {
    /// Today's hash over `hashed` (in that order), each column of the type `type_of` gives,
    /// after the `normalize` clean-ups.
    pub fn today(
        hashed: &[String],
        type_of: impl Fn(&str) -> String,
        normalize: &[crate::spec::Normalize],
    ) -> Self {
        HashSpec {
            version: crate::diff::row_hash::HASH_VERSION,
            columns: hashed
                .iter()
                .map(|c| ColumnSchema {
                    name: c.clone(),
                    data_type: type_of(c),
                    empty: false,
                })
                .collect(),
            normalize: normalize.to_vec(),
        }
    }
}

/// The commit record of one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRecord {
    /// `RECORD_FORMAT`.
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Version number, from 1.
    pub version: u64,
    /// How it came to be.
    pub kind: CommitKind,
    /// When the record was written (UTC).
    pub committed_at: DateTime<Utc>,
    /// When the run started (UTC).
    pub started_at: DateTime<Utc>,
    /// The run's random id (also in the data file names).
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// xxh3 of the pipeline file.
    pub pipeline_hash: String,
    /// tidemark's version.
    pub tidemark_version: String,
    /// The full snapshot.
    pub snapshot: StoredFile,
    /// The change rows of this version.
    pub changes: StoredFile,
    /// Row counts by change type.
    pub counts: Counts,
    /// Source files read.
    pub source_files: Vec<SourceFile>,
    /// Key columns.
    pub key: Vec<String>,
    /// Snapshot schema, without `_row_hash`.
    pub schema: Vec<ColumnSchema>,
    /// What `_row_hash` covers.
    pub hash: HashSpec,
    /// Run duration up to the commit.
    pub duration_ms: u64,
    /// `mode: incremental`: the highest watermark value committed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// The version this one was computed against (its change rows are relative to it); no
    /// other version may have become visible in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    /// Set by an `atomic: true` pipeline: the id of its pipeline commit, which must say
    /// `committed` for this version to be visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomic: Option<String>,
}

/// The pipeline-level record of an `atomic: true` run, `_atomic/<id>.json`: creating it as
/// `committed` makes all its table versions visible at once; as `aborted`, none of them ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicRecord {
    /// The run's id (also in the table records' `atomic`).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// `committed` or `aborted`.
    pub state: AtomicState,
    /// The table versions it covers.
    pub tables: Vec<TableVersion>,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// The outcome of an atomic pipeline commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomicState {
    /// Its versions are visible.
    Committed,
    /// Its versions never will be (the run failed, or a later run gave up waiting for it).
    Aborted,
}

/// One table's version in an atomic commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableVersion {
    /// Table name.
    pub table: String,
    /// Its version.
    pub version: u64,
}

/// The highest value of an incremental table's watermark column the store holds: the next run
/// ignores rows at or below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The column.
    pub column: String,
    /// Its highest value, as text (cast back to the column's type when compared).
    pub value: String,
}

/// One table run, committed or not, as the `runs` table shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Pipeline name.
    pub pipeline: String,
    /// Table name.
    pub table: String,
    /// Version committed (or that would have been).
    pub version: Option<u64>,
    /// committed, failed, refused, conflict, skipped.
    pub status: String,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End (UTC).
    pub finished_at: DateTime<Utc>,
    /// Duration.
    pub duration_ms: u64,
    /// Counts.
    pub rows_in: u64,
    /// NEW rows.
    pub new: u64,
    /// CHANGED rows.
    pub changed: u64,
    /// DELETED rows.
    pub deleted: u64,
    /// RENAMED rows (absent from runs recorded before renames).
    #[serde(default)]
    pub renamed: u64,
    /// UNCHANGED rows.
    pub unchanged: u64,
    /// Rejected rows.
    pub rejected: u64,
    /// Source files, comma separated.
    pub source: Option<String>,
    /// Error message, when failed.
    pub error: Option<String>,
}
