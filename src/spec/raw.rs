//! The pipeline file as written: plain serde types with `deny_unknown_fields`. Nothing here is
//! checked beyond its shape; `super::validate` turns it into a `Plan`.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: Option<String>,
    pub store: Option<String>,
    pub atomic: Option<bool>,
    pub memory_limit: Option<Spanned<String>>,
    pub tables: IndexMap<String, Spanned<RawTable>>,
}

/// One table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub source: RawSource,
    pub transform: Option<String>,
    pub key: Spanned<OneOrMany>,
    pub compare: Option<Spanned<Vec<String>>>,
    pub ignore: Option<Spanned<Vec<String>>>,
    pub tolerance: Option<Spanned<IndexMap<String, RawLimit>>>,
    pub duplicates: Option<Duplicates>,
    pub mode: Option<Spanned<Mode>>,
    pub watermark: Option<Spanned<String>>,
    pub partition_by: Option<Spanned<OneOrMany>>,
    pub depends_on: Option<Spanned<Vec<String>>>,
    pub references: Option<Spanned<IndexMap<String, String>>>,
    pub validate: Option<Spanned<RawValidate>>,
    pub normalize: Option<Spanned<IndexMap<String, RawNormalize>>>,
    pub guard: Option<Spanned<RawGuard>>,
    pub on_delete: Option<RawOnDelete>,
    pub output: Option<Vec<Spanned<RawOutput>>>,
    pub deliver: Option<Vec<Spanned<RawDestination>>>,
    pub change_columns: Option<RawChangeColumns>,
    pub renames: Option<Spanned<bool>>,
}

/// `source:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub path: Spanned<String>,
    pub format: Option<Spanned<String>>,
    pub sheet: Option<SheetValue>,
    pub header_row: Option<Spanned<usize>>,
    pub delimiter: Option<Spanned<String>>,
    pub null_values: Option<Vec<String>>,
    pub files: Option<Files>,
    pub columns: Option<IndexMap<String, Spanned<String>>>,
}

/// A sheet by name or 0-based index.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SheetValue {
    Index(usize),
    Name(String),
}

/// One column name or a list (composite key).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `files:`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Files {
    Newest,
    All,
}

/// `duplicates:`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Duplicates {
    /// A repeated key fails the run.
    #[default]
    Error,
    /// Keep the first row of each key (file order).
    KeepFirst,
    /// Keep the last row of each key (file order).
    KeepLast,
}

/// `mode:`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Snapshot,
    Full,
    Incremental,
}

/// `on_delete:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDelete {
    pub emit: Option<bool>,
    pub set: Option<IndexMap<String, YamlScalar>>,
}

/// A scalar value written in the pipeline file.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum YamlScalar {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text.
    Text(String),
    /// `null` or `~`.
    Null(()),
}

/// One entry of `output:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub name: Option<String>,
    pub path: String,
    pub include: Option<Vec<ChangeKindName>>,
    pub columns: Option<Vec<String>>,
}

/// One entry of `deliver:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub name: Option<String>,
    pub postgres: Option<RawDatabase>,
    pub sqlite: Option<RawDatabase>,
    pub http: Option<RawHttp>,
}

/// An HTTP destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub url: Option<RawPerChange>,
    pub method: Option<RawPerChange>,
    pub headers: Option<indexmap::IndexMap<String, String>>,
    pub body: Option<RawPerChange>,
    pub rate_limit: Option<String>,
    pub retries: Option<u32>,
    pub timeout: Option<String>,
    pub backoff: Option<String>,
    pub remember: Option<indexmap::IndexMap<String, String>>,
    pub on_failure: Option<String>,
    pub concurrency: Option<usize>,
}

/// A setting given once for every change type, or per change type.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPerChange {
    One(String),
    Each(RawEachChange),
}

/// A setting per change type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEachChange {
    pub new: Option<String>,
    pub changed: Option<String>,
    pub deleted: Option<String>,
    pub renamed: Option<String>,
}

/// A database destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub url: Option<String>,
    pub path: Option<String>,
    pub table: Option<String>,
    pub create: Option<bool>,
    pub deletes: Option<RawDeletes>,
    pub soft_delete_column: Option<String>,
}

/// `deletes:`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum RawDeletes {
    Delete,
    Soft,
    Ignore,
}

/// A change type as written in `include:`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKindName {
    New,
    Changed,
    Deleted,
    Renamed,
    Unchanged,
}

/// `change_columns:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChangeColumns {
    #[serde(rename = "type")]
    pub type_column: Option<String>,
    pub reason: Option<String>,
    pub previous: Option<String>,
    pub labels: Option<RawLabels>,
}

/// `change_columns.labels:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLabels {
    pub new: Option<String>,
    pub changed: Option<String>,
    pub deleted: Option<String>,
    pub renamed: Option<String>,
    pub unchanged: Option<String>,
}

/// `guard:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub max_deleted: Option<RawLimit>,
    pub max_changed: Option<RawLimit>,
    pub min_rows: Option<RawLimit>,
}

/// A count (`100`), a number (`0.005`) or a percentage (`"20%"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawLimit {
    Count(u64),
    Number(f64),
    Text(String),
}

/// `validate:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidate {
    pub not_null: Option<Vec<String>>,
    pub rules: Option<Vec<RawRule>>,
    pub on_invalid: Option<OnInvalid>,
    pub max_invalid: Option<RawLimit>,
    pub rejects: Option<String>,
}

/// One entry of `validate.rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub check: String,
}

/// `validate.on_invalid:`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Invalid rows go to the rejects file; the run goes on without them.
    #[default]
    Reject,
    /// Any invalid row refuses the run (exit 3).
    Fail,
}

/// One column's entry of `normalize:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNormalize {
    pub trim: Option<bool>,
    pub case: Option<Case>,
    pub round: Option<u32>,
}

/// `case:` of a `normalize:` entry.
#[derive(Debug, Deserialize, serde::Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    /// Lower case.
    Lower,
    /// Upper case.
    Upper,
}
