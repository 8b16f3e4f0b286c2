//! The one error type of the library. Every variant carries the context a user needs (table,
//! file, row, column, version) as fields, renders a message that says what to do, and maps to
//! exactly one exit code of SPEC section 1.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes of the command line (SPEC 1).
pub mod exit_code {
    /// Success, also when nothing changed.
    pub const OK: u8 = 0;
    /// A run failed: I/O, engine or source error.
    pub const FAILED: u8 = 1;
    /// Invalid pipeline file or arguments.
    pub const INVALID: u8 = 2;
    /// Refused: a guard or validation limit tripped; nothing was committed.
    pub const REFUSED: u8 = 3;
    /// Conflict: another run committed that table's next version first.
    pub const CONFLICT: u8 = 4;
    /// Committed, not delivered: a destination did not receive a committed version; the next
    /// run or `tidemark deliver` resumes it.
    pub const UNDELIVERED: u8 = 5;
}

/// Everything that can go wrong, each with the context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file is not valid YAML or does not match the pipeline schema.
    #[error("{path}:{line}:{column}: {message}")]
    PipelineSyntax {
        /// The pipeline file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong and what to do.
        message: String,
    },

    /// The pipeline file parsed but its content is inconsistent; every problem is listed.
    #[error("{path}: the pipeline file is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    PipelineInvalid {
        /// The pipeline file.
        path: PathBuf,
        /// One line per problem, each naming its line where known.
        problems: Vec<String>,
    },

    /// A command-line argument is wrong.
    #[error("{message}")]
    Usage {
        /// What is wrong and what to do.
        message: String,
    },

    /// `--table` or `--source` names a table the pipeline does not have.
    #[error("the pipeline has no table `{table}`; its tables are: {}.", known.join(", "))]
    UnknownTable {
        /// The name given.
        table: String,
        /// The pipeline's tables.
        known: Vec<String>,
    },

    /// A selected table depends on one that has no baseline and is not selected.
    #[error(
        "table {table} depends on {dependency}, which has no baseline yet and is not selected; add --table {dependency}."
    )]
    DependencyNotSelected {
        /// Table name.
        table: String,
        /// The table it depends on.
        dependency: String,
    },

    /// A table depends on one that has no baseline yet.
    #[error(
        "table {table} depends on {dependency}, which has no baseline yet; run {dependency} first."
    )]
    DependencyWithoutBaseline {
        /// Table name.
        table: String,
        /// The table it depends on.
        dependency: String,
    },

    /// `tolerance` names a column that is not a number.
    #[error(
        "table {table}: `tolerance` names \"{column}\", which is {found}, not a number. Tolerances apply to numeric columns."
    )]
    ToleranceNotNumeric {
        /// Table name.
        table: String,
        /// The column.
        column: String,
        /// Its type, in words.
        found: String,
    },

    /// The watermark column's type does not sort by time.
    #[error(
        "table {table}: the watermark column {column} is read as {found}, which does not sort by time; declare its type under source.columns (timestamp, date or int64), e.g. columns: {{{column}: timestamp}}."
    )]
    WatermarkNotOrdered {
        /// Table name.
        table: String,
        /// The watermark column.
        column: String,
        /// Its type, in words.
        found: String,
    },

    /// The stored watermark cannot be read as today's type of its column.
    #[error(
        "table {}: the stored watermark {} = {} cannot be read as {} ({}); the column's type changed? `tidemark reset --table {}` starts over.",
        .0.table, .0.column, .0.value, .0.found, .0.reason, .0.table
    )]
    WatermarkUnreadable(Box<WatermarkProblem>),

    /// `normalize` makes several baseline rows one key.
    #[error(
        "table {table}: `normalize` makes several rows of baseline v{version} one key ({key}), so they cannot be compared. Start the table afresh with `tidemark reset --table {table}` (the next run sees every row as NEW), or leave the key columns out of `normalize`."
    )]
    NormalizeMergesKeys {
        /// Table name.
        table: String,
        /// The baseline version.
        version: u64,
        /// The key, rendered as column=value pairs.
        key: String,
    },

    /// The rows hold a column whose name tidemark uses itself.
    #[error(
        "table {table}: the column name {column} is reserved for tidemark's row hash; rename it in `transform`."
    )]
    ReservedColumn {
        /// Table name.
        table: String,
        /// The column.
        column: String,
    },

    /// The rows hold a column named as the delta's change type or reason column.
    #[error(
        "table {table}: {origin} has a column \"{column}\", the name the delta gives its change type or reason; rename it in `transform`, or give the delta's columns other names with `change_columns: {{type: ..., reason: ...}}`."
    )]
    ChangeColumnTaken {
        /// Table name.
        table: String,
        /// Where the column is (a file or "the transform's result").
        origin: String,
        /// The column.
        column: String,
    },

    /// With `renames`, the rows hold a column named as the delta's column of an old key.
    #[error(
        "table {table}: {origin} has a column \"{column}\", the name the delta gives a renamed row's old key with `renames: true`; rename it in `transform`, or give those columns another prefix with `change_columns: {{previous: ...}}`."
    )]
    PreviousKeyColumnTaken {
        /// Table name.
        table: String,
        /// Where the column is (a file or "the transform's result").
        origin: String,
        /// The column.
        column: String,
    },

    /// A table's source file (or glob) matches nothing.
    #[error(
        "table {table}: source {pattern} matches no file. Check `source.path` in the pipeline file, or pass today's file with --source {table}=PATH."
    )]
    SourceMissing {
        /// Table name.
        table: String,
        /// The path or glob as resolved.
        pattern: String,
    },

    /// A source file exists but holds no data rows (not even a header for CSV).
    #[error(
        "{path}: the file is empty (no header and no rows). A truncated download? tidemark refuses to treat it as an empty snapshot; nothing was committed."
    )]
    SourceEmpty {
        /// The source file.
        path: PathBuf,
    },

    /// A source file cannot be read as the format it claims to be.
    #[error("{path}{}: {message}", location_suffix(*row, column.as_deref()))]
    SourceData {
        /// The source file.
        path: PathBuf,
        /// 1-based row (line for CSV, sheet row for Excel) when known.
        row: Option<u64>,
        /// Column name when known.
        column: Option<String>,
        /// What is wrong and what to do.
        message: String,
    },

    /// A column the pipeline names is not in the data.
    #[error("table {table}: column \"{column}\" named in `{setting}` is not in {origin}. Columns present: {}. Check the spelling (names are case-sensitive), the header row (`header_row`), or the transform.", available.join(", "))]
    MissingColumn {
        /// Table name.
        table: String,
        /// The missing column.
        column: String,
        /// The pipeline setting that names it (key, compare, ...).
        setting: String,
        /// Where it was looked for (a file or "the transform's result").
        origin: String,
        /// The columns that exist.
        available: Vec<String>,
    },

    /// Two rows of the new snapshot share a key.
    #[error(
        "table {table}: key {key} appears {count} times in {snapshot} ({origin} rows {first_row} and {second_row}). Fix the source, or set `duplicates: keep_first` or `keep_last`. Nothing was committed."
    )]
    DuplicateKey {
        /// Table name.
        table: String,
        /// Which side repeats it: the new snapshot, or the old file of an ad-hoc diff.
        snapshot: &'static str,
        /// The key, rendered as column=value pairs.
        key: String,
        /// How often it occurs.
        count: u64,
        /// Source file, or "the transform's result".
        origin: String,
        /// Row of its first occurrence, as a person counts.
        first_row: u64,
        /// Row of its second occurrence.
        second_row: u64,
    },

    /// A key column holds a null.
    #[error(
        "table {table}: key column \"{column}\" is empty at {origin} row {row}. Every row needs a key; fix the source or filter such rows in `transform`. Nothing was committed."
    )]
    NullKey {
        /// Table name.
        table: String,
        /// The key column.
        column: String,
        /// Source file, or "the transform's result".
        origin: String,
        /// 1-based data row.
        row: u64,
    },

    /// The table's SQL transform failed.
    #[error("table {table}: the transform failed: {message}")]
    Transform {
        /// Table name.
        table: String,
        /// The engine's message.
        message: String,
    },

    /// The query engine failed.
    #[error("{context}: {}{}", engine_words(source), memory_hint(source, *memory_limit))]
    Engine {
        /// What tidemark was doing.
        context: String,
        /// The engine's error.
        #[source]
        source: datafusion::error::DataFusionError,
        /// The memory limit the engine ran under (`--memory-limit`), if any.
        memory_limit: Option<u64>,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The store could not be read or written.
    #[error("store {location}: {message}")]
    Store {
        /// The store object or prefix.
        location: String,
        /// What failed and what to do.
        message: String,
    },

    /// A guard tripped: the run would delete or change too much, or holds too few rows.
    #[error("{message}")]
    Refused {
        /// Table name.
        table: String,
        /// Which limit tripped, with the numbers, and what to do.
        message: String,
    },

    /// Another run committed this table's next version first.
    #[error(
        "table {table}: another run committed version {version} first; nothing of this run was committed. Run again to diff against the new baseline."
    )]
    Conflict {
        /// Table name.
        table: String,
        /// The version both runs tried to create.
        version: u64,
    },

    /// A table of an `atomic: true` pipeline ran well but was not committed, because the
    /// pipeline as a whole was not.
    #[error("not committed: {reason}")]
    NotCommitted {
        /// Why the pipeline commit did not happen.
        reason: String,
    },

    /// A committed version did not reach a destination: its cursor stays where it was.
    #[error("{} is committed but not delivered to {destination}: {reason}. Once that is fixed, `tidemark deliver` (or the next run) delivers it.", version.map_or_else(|| format!("table {table}"), |v| format!("{table} v{v}")))]
    Undelivered {
        /// The table.
        table: String,
        /// The destination's name.
        destination: String,
        /// The first version it lacks, when known.
        version: Option<u64>,
        /// Why.
        reason: String,
    },

    /// A destination (a database) refused or failed what was sent to it.
    #[error("{message}")]
    Destination {
        /// What went wrong, with the table or column (never a secret).
        message: String,
    },

    /// A bug of tidemark's: a table's run stopped where it never should (a panic).
    #[error(
        "table {table}: internal error ({detail}); nothing of this run was committed. Please report it, with the command and the `-vv` log."
    )]
    Internal {
        /// Table name.
        table: String,
        /// What stopped it.
        detail: String,
    },

    /// One or more tables of a pipeline run failed; each has been reported already.
    #[error("{failed} of {total} tables failed")]
    TablesFailed {
        /// Number of failed tables.
        failed: usize,
        /// Number of tables in the run.
        total: usize,
        /// The highest exit code among the failures.
        code: u8,
    },
}

/// What [`Error::WatermarkUnreadable`] says (boxed: the error stays small).
#[derive(Debug)]
pub struct WatermarkProblem {
    /// Table name.
    pub table: String,
    /// The watermark column.
    pub column: String,
    /// The stored value.
    pub value: String,
    /// Today's type of the column, in words.
    pub found: String,
    /// Why it cannot be read.
    pub reason: String,
}

fn location_suffix(row: Option<u64>, column: Option<&str>) -> String {
    match (row, column) {
        (Some(r), Some(c)) => format!(", row {r}, column \"{c}\""),
        (Some(r), None) => format!(", row {r}"),
        (None, Some(c)) => format!(", column \"{c}\""),
        (None, None) => String::new(),
    }
}

impl Error {
    /// The exit code of SPEC section 1 for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::PipelineSyntax { .. }
            | Error::PipelineInvalid { .. }
            | Error::Usage { .. }
            | Error::UnknownTable { .. }
            | Error::DependencyNotSelected { .. }
            | Error::DependencyWithoutBaseline { .. }
            | Error::ToleranceNotNumeric { .. }
            | Error::WatermarkNotOrdered { .. }
            | Error::WatermarkUnreadable(_)
            | Error::NormalizeMergesKeys { .. }
            | Error::ReservedColumn { .. }
            | Error::ChangeColumnTaken { .. }
            | Error::PreviousKeyColumnTaken { .. } => exit_code::INVALID,
            Error::Conflict { .. } => exit_code::CONFLICT,
            Error::Undelivered { .. } | Error::Destination { .. } => exit_code::UNDELIVERED,
            Error::Refused { .. } => exit_code::REFUSED,
            Error::TablesFailed { code, .. } => *code,
            _ => exit_code::FAILED,
        }
    }

    /// The same error, naming `shown` where it named `local` (a downloaded copy of a remote
    /// file is read locally, but messages name the file the user gave).
    pub fn relocated(self, local: &std::path::Path, shown: &std::path::Path) -> Self {
        let rename = |path: PathBuf| {
            if path == local {
                shown.to_path_buf()
            } else {
                path
            }
        };
        let rename_text =
            |message: String| message.replace(&*local.to_string_lossy(), &shown.to_string_lossy());
        match self {
            Error::SourceEmpty { path } => Error::SourceEmpty { path: rename(path) },
            Error::SourceData {
                path,
                row,
                column,
                message,
            } => Error::SourceData {
                path: rename(path),
                row,
                column,
                message: rename_text(message),
            },
            Error::Io { path, source } => Error::Io {
                path: rename(path),
                source,
            },
            other => other,
        }
    }

    /// Wrap an I/O error with its file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The engine's message in words: without the engine's prefixes (`Error during planning:`),
/// Rust wrappers (`ParserError("…")`) or backtraces.
pub fn engine_words(e: &datafusion::error::DataFusionError) -> String {
    // One sentence, without its full stop: the caller goes on after it.
    engine_sentence(e)
        .trim()
        .trim_end_matches('.')
        .replace('\n', " ")
}

fn engine_sentence(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError;
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        DataFusionError::SQL(parser, _) => match parser.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
                format!("SQL syntax error: {m}")
            }
            ParserError::RecursionLimitExceeded => {
                "SQL syntax error: the statement nests too deeply".to_string()
            }
        },
        DataFusionError::ArrowError(inner, _) => inner.to_string(),
        DataFusionError::SchemaError(inner, _) => schema_words(inner),
        DataFusionError::Context(context, inner) => format!("{context}: {}", engine_words(inner)),
        DataFusionError::Diagnostic(_, inner) => engine_words(inner),
        DataFusionError::Shared(inner) => engine_words(inner),
        DataFusionError::Collection(all) => all.first().map(engine_words).unwrap_or_default(),
        other => other.message().into_owned(),
    }
}

/// A column the SQL names that is not there, in words: the engine's own text quotes an internal
/// table name (`"?table?".change_type`) and lists every column, however many.
fn schema_words(e: &datafusion::common::SchemaError) -> String {
    use datafusion::common::SchemaError;
    let shown = |c: &datafusion::common::Column| match &c.relation {
        Some(table) if table.table() != "?table?" => format!("{table}.{}", c.name),
        _ => c.name.clone(),
    };
    match e {
        SchemaError::FieldNotFound {
            field,
            valid_fields,
        } => {
            let wanted = shown(field);
            let names: Vec<String> = valid_fields.iter().map(shown).collect();
            let closest = names
                .iter()
                .map(|n| {
                    (
                        strsim::levenshtein(&n.to_lowercase(), &wanted.to_lowercase()),
                        n,
                    )
                })
                .filter(|(d, n)| d * 2 <= n.len().max(wanted.len()))
                .min();
            let mut text = format!("there is no column named {wanted}");
            if let Some((_, name)) = closest {
                text.push_str(&format!(" (did you mean {name}?)"));
            }
            const LISTED: usize = 20;
            if !names.is_empty() {
                let more = names.len().saturating_sub(LISTED);
                text.push_str(&format!(
                    "; the columns are {}",
                    names[..names.len().min(LISTED)].join(", ")
                ));
                if more > 0 {
                    text.push_str(&format!(" and {more} more"));
                }
            }
            text
        }
        other => other.to_string().replace("\"?table?\".", ""),
    }
}

/// What to do when the engine ran out of the memory it was given.
fn memory_hint(source: &datafusion::error::DataFusionError, memory_limit: Option<u64>) -> String {
    let text = source.to_string();
    if text.contains("Resources exhausted") || text.contains("ResourcesExhausted") {
        match memory_limit {
            Some(limit) => format!(
                ". The run needs more than --memory-limit {} MB for this step; give it more (e.g. --memory-limit {} MB) or free memory on the machine.",
                limit >> 20,
                (limit >> 20) * 2
            ),
            None => {
                ". Set --memory-limit (e.g. 2GB) so that joins and sorts spill to disk.".to_string()
            }
        }
    } else {
        String::new()
    }
}

thread_local! {
    /// Set while a third-party parser reads untrusted bytes: a panic there is a damaged file,
    /// not a bug of ours, so the panic hook stays quiet and the caller reports the file.
    static PARSING_UNTRUSTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside [`guard_parser`] (for the binary's panic hook).
pub fn parsing_untrusted() -> bool {
    PARSING_UNTRUSTED.with(|p| p.get())
}

/// Run a third-party parser over an untrusted file. A panic inside it (a reader that asserts on
/// malformed input) becomes an error naming the file, never a crash.
pub fn guard_parser<T>(
    path: &std::path::Path,
    what: &str,
    parse: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let was = PARSING_UNTRUSTED.with(|p| p.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
    PARSING_UNTRUSTED.with(|p| p.set(was));
    outcome.unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let detail = detail.lines().next().unwrap_or_default().to_string();
        Err(Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: format!(
                "the file is damaged: the {what} reader failed on it ({detail}). Check the file: save it again from its program, or download it again."
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_column_is_named_without_the_engine_s_table_name() {
        use datafusion::common::{Column, SchemaError};
        let e = datafusion::error::DataFusionError::SchemaError(
            Box::new(SchemaError::FieldNotFound {
                field: Box::new(Column::new(Some("?table?"), "change_typ")),
                valid_fields: vec![Column::from_name("sku"), Column::from_name("change_type")],
            }),
            Box::new(None),
        );
        assert_eq!(
            engine_words(&e),
            "there is no column named change_typ (did you mean change_type?); the columns are sku, change_type"
        );
    }

    #[test]
    fn a_panicking_table_is_an_internal_error_that_fails_the_run() {
        let e = Error::Internal {
            table: "items".into(),
            detail: "task 7 panicked".into(),
        };
        assert_eq!(e.exit_code(), exit_code::FAILED);
        let text = e.to_string();
        assert!(
            text.starts_with("table items: internal error (task 7 panicked)"),
            "{text}"
        );
        assert!(text.contains("Please report it"), "{text}");
    }
}
