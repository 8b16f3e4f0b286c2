//! The diff core: how two sets of rows are told apart. Each key is NEW, CHANGED, DELETED or
//! UNCHANGED (with `renames`, a DELETED and a NEW row of the same content are one RENAMED
//! row), with a reason.
//!
//! [`strategy`] chooses how the rows are matched (a streamed index over the baseline file,
//! in-memory matching by position in [`matching`], or the SQL join in [`sql`]); each yields
//! [`delta::Pairs`], and [`delta::build`] makes the one delta from them. `sql/classify.sql`
//! and `sql/delta.sql` state the semantics and are the oracle the others are tested against.

pub mod baseline;
pub mod comparable;
pub mod delta;
pub mod files;
pub mod keys;
pub mod matching;
pub mod renames;
pub mod row_hash;
pub mod side;
pub mod sql;
pub mod strategy;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::spec::{ChangeKind, Tolerance};

/// Name of the change type column in the delta as computed (renamed on output).
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";
/// Name of the change reason column in the delta as computed (renamed on output).
pub const CHANGE_REASON_COLUMN: &str = "_change_reason";
/// With renames, the prefix of the delta's columns that carry a RENAMED row's old key (as
/// computed: `_previous_sku` for the key `sku`; renamed on output).
pub const PREVIOUS_KEY_PREFIX: &str = "_previous_";

/// The delta's column (as computed) that carries a RENAMED row's old value of key column `key`.
pub fn previous_key_column(key: &str) -> String {
    format!("{PREVIOUS_KEY_PREFIX}{key}")
}

/// What to compare and what to return.
#[derive(Debug, Clone)]
pub struct DiffSettings {
    /// Key columns.
    pub key: Vec<String>,
    /// Compared columns present on both sides, in table order (for reasons).
    pub compared: Vec<String>,
    /// Columns of the delta, in order (the new snapshot's columns).
    pub columns: Vec<String>,
    /// Columns of `columns` that the baseline has (DELETED rows carry null for the others).
    pub baseline_columns: Vec<String>,
    /// Whether UNCHANGED rows are returned too.
    pub include_unchanged: bool,
    /// Compared columns outside the row hash, compared with a tolerance instead; both hash
    /// views carry them.
    pub tolerance: Vec<(String, Tolerance)>,
    /// Whether a DELETED and a NEW row of the same compared values are one RENAMED row.
    pub renames: bool,
}

/// Row counts by change kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Rows in the new snapshot.
    pub rows_in: u64,
    /// NEW rows.
    pub new: u64,
    /// CHANGED rows.
    pub changed: u64,
    /// DELETED rows.
    pub deleted: u64,
    /// RENAMED rows (each one key gone and one key come; counted in neither `new` nor
    /// `deleted`). Absent from the records of versions made before renames.
    #[serde(default)]
    pub renamed: u64,
    /// UNCHANGED rows.
    pub unchanged: u64,
}

impl Counts {
    /// The counts as a summary line writes them: `12 new, 28 changed, 5 deleted, 955
    /// unchanged`, with `, 2 renamed` after the deleted when there are renamed rows.
    pub fn listed(&self) -> String {
        let renamed = match self.renamed {
            0 => String::new(),
            n => format!(", {n} renamed"),
        };
        format!(
            "{} new, {} changed, {} deleted{renamed}, {} unchanged",
            self.new, self.changed, self.deleted, self.unchanged
        )
    }

    /// The count of one kind.
    pub fn of(&self, kind: ChangeKind) -> u64 {
        match kind {
            ChangeKind::New => self.new,
            ChangeKind::Changed => self.changed,
            ChangeKind::Deleted => self.deleted,
            ChangeKind::Renamed => self.renamed,
            ChangeKind::Unchanged => self.unchanged,
        }
    }
}

/// The result of a diff.
#[derive(Debug, Clone)]
pub struct Delta {
    /// Schema of the delta: the columns, then `_change_type` and `_change_reason`.
    pub schema: SchemaRef,
    /// The rows, ordered by key.
    pub batches: Vec<RecordBatch>,
    /// Counts by kind.
    pub counts: Counts,
}

/// Quote an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quoted SQL identifiers, comma separated (a key's columns in GROUP BY, PARTITION BY...).
pub fn ident_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quote an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub(crate) fn qualified(table: &str, column: &str) -> String {
    format!("{table}.{}", ident(column))
}

/// SQL that is true when `left` and `right` hold the same key.
pub fn key_equal(key: &[String], left: &str, right: &str) -> String {
    key.iter()
        .map(|k| format!("{} = {}", qualified(left, k), qualified(right, k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
