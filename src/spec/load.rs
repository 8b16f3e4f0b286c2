//! The pipeline file read: parsed as plain serde types (`raw`), then validated in one pass into
//! a [`Plan`], every problem reported at once with its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::plan::*;
use super::raw::{Files, Mode, RawLimit, RawPipeline, RawTable, RawValidate, SheetValue};
use crate::error::{Error, Result};
use crate::source::{FileSelection, SheetRef, SourceFormat, SourceOptions, types};

fn parse_tolerance(raw: &RawLimit) -> Option<Tolerance> {
    let t = match raw {
        RawLimit::Count(n) => Tolerance::Absolute(*n as f64),
        RawLimit::Number(x) => Tolerance::Absolute(*x),
        RawLimit::Text(t) => match t.trim().strip_suffix('%') {
            Some(p) => Tolerance::Relative(p.trim().parse::<f64>().ok()? / 100.0),
            None => Tolerance::Absolute(t.trim().parse().ok()?),
        },
    };
    let value = match t {
        Tolerance::Absolute(v) | Tolerance::Relative(v) => v,
    };
    (value.is_finite() && value >= 0.0).then_some(t)
}

/// A guard limit, or what is wrong with it.
fn parse_limit(raw: &RawLimit) -> Result<Limit, String> {
    const FORM: &str = "must be a row count (100) or a percentage of the baseline (\"20%\")";
    match raw {
        RawLimit::Count(n) => Ok(Limit::Count(*n)),
        RawLimit::Number(_) => Err(FORM.into()),
        RawLimit::Text(t) => {
            let t = t.trim();
            match t.strip_suffix('%') {
                Some(p) => match p.trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Ok(Limit::Percent(p)),
                    // "120%" is a percentage, just not one of the baseline.
                    Ok(_) => Err(format!(
                        "is {t}; a percentage of the baseline must be between 0% and 100%"
                    )),
                    Err(_) => Err(FORM.into()),
                },
                None => t.parse::<u64>().map(Limit::Count).map_err(|_| FORM.into()),
            }
        }
    }
}

/// Read and validate a pipeline file. `store_override` is `--store`.
pub fn load(path: &Path, store_override: Option<&str>) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Usage {
        message: format!(
            "cannot read pipeline file {}: {e}. Check the path of the pipeline file.",
            path.display()
        ),
    })?;
    // The YAML parser calls an empty file "unexpected end of input"; say what the file lacks.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(Error::PipelineSyntax {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "the pipeline file is empty: declare `tables:` with at least one table (its `source` and `key`).".into(),
        });
    }
    let raw: RawPipeline =
        serde_saphyr::from_str(&text).map_err(|e| syntax_error(path, &text, &e))?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
    let file_hash = format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
    let plan = validate(path, &dir, raw, store_override, file_hash)?;
    // The pipeline's memory limit applies to the engine unless --memory-limit set one first.
    if let Some(bytes) = plan.memory_limit {
        crate::engine::set_memory_limit(bytes);
    }
    Ok(plan)
}

/// The limit of the YAML reader a file went past, if that is the error (with or without its
/// snippet of the file).
fn budget_breach(e: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    match e.without_snippet() {
        serde_saphyr::Error::Budget { breach, .. } => Some(breach),
        _ => None,
    }
}

/// The YAML reader's limits (which keep a hostile file from taking the machine's memory) in words:
/// a pipeline file is a few kilobytes, so reaching one means the file is not a pipeline file.
fn budget_words(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach;
    let what = match breach {
        BudgetBreach::Nodes { nodes } => {
            format!("it holds more than {} values", nodes.saturating_sub(1))
        }
        BudgetBreach::Events { events } => {
            format!("it holds more than {} YAML items", events.saturating_sub(1))
        }
        BudgetBreach::ScalarBytes { total_scalar_bytes } => {
            format!("its values add up to more than {total_scalar_bytes} bytes")
        }
        BudgetBreach::InputBytes { input_bytes } => {
            format!("it is larger than {input_bytes} bytes")
        }
        BudgetBreach::Depth { depth } => format!("it nests {depth} levels deep"),
        BudgetBreach::Documents { documents } => format!("it holds {documents} YAML documents"),
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::MergeKeys { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => {
            "its anchors and aliases (`&name`, `*name`, `<<`) expand too far".to_string()
        }
        _ => "it is too large or too deeply nested".to_string(),
    };
    format!(
        "this is not a pipeline file tidemark will read: {what}. A pipeline file names tables, their sources and keys; check that the path names the right file."
    )
}

/// A YAML or schema error, with its line and column, and for an unknown key the closest valid one.
fn syntax_error(path: &Path, source: &str, e: &serde_saphyr::Error) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let text = match (budget_breach(e), e) {
        (Some(breach), _) => budget_words(breach),
        (None, serde_saphyr::Error::Message { msg, .. }) => msg.clone(),
        (None, other) => {
            // The rendered message may carry a snippet and a location prefix; keep the gist.
            let first = other
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .to_string();
            let prefix =
                regex::Regex::new(r"^(error: )?line \d+ column \d+: ").expect("valid regex");
            prefix.replace(&first, "").into_owned()
        }
    };
    let unknown = regex::Regex::new(r"unknown field `([^`]+)`, expected (?:one of )?(.+)$")
        .expect("valid regex");
    let message = match unknown.captures(&text) {
        Some(caps) => {
            let field = &caps[1];
            let expected: Vec<String> = caps[2]
                .split(", ")
                .map(|k| k.trim_matches('`').to_string())
                .collect();
            let closest = expected
                .iter()
                .map(|k| (strsim::levenshtein(field, k), k))
                .min()
                .filter(|(d, k)| *d <= 3.max(k.len() / 2));
            let valid = expected.join(", ");
            match closest {
                Some((_, k)) => {
                    format!("unknown key `{field}`: did you mean `{k}`? Valid keys here: {valid}.")
                }
                None => format!("unknown key `{field}`. Valid keys here: {valid}."),
            }
        }
        None => {
            // Serde's wording names Rust types; say what the file should hold instead.
            let untagged =
                regex::Regex::new(r"data did not match any variant of untagged enum (\w+)")
                    .expect("valid regex");
            let text = untagged.replace(&text, |caps: &regex::Captures<'_>| match &caps[1] {
                "OneOrMany" => "expected a column name or a list of column names".to_string(),
                "SheetValue" => "expected a sheet name or a 0-based sheet index".to_string(),
                "YamlScalar" => "expected a number, text, true/false or null".to_string(),
                _ => "unexpected value here".to_string(),
            });
            // "invalid u32" is how a negative or fractional count reads in serde's words.
            let number =
                regex::Regex::new(r"invalid [ui](8|16|32|64|size)\b").expect("valid regex");
            let text = number.replace_all(&text, "expected a whole number, 0 or more");
            let option_hint = regex::Regex::new(r"; use Option<[^>]*>").expect("valid regex");
            let text = option_hint
                .replace(&text, "")
                .replace("missing field", "missing required key")
                .replace(
                    "cannot deserialize null into",
                    "an empty value where the file needs a",
                );
            plain_yaml_message(&text, key_before(source, line, column))
        }
    };
    Error::PipelineSyntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// The parser's wording for a few common mistakes, rewritten to say what to do (and without
/// the names of the parser's options). `key` is the mapping key the error points after, if any.
fn plain_yaml_message(text: &str, key: Option<String>) -> String {
    let duplicate =
        regex::Regex::new(r"^duplicate mapping key: (.*?)(?:, set DuplicateKeyPolicy.*)?$")
            .expect("valid regex");
    if let Some(caps) = duplicate.captures(text) {
        return format!(
            "`{}` appears twice in the same mapping (a table name, or a key of one table, written twice). Rename or remove one.",
            &caps[1]
        );
    }
    if text.starts_with("missing required key") {
        return format!("{text} in this mapping; add it.");
    }
    if text.starts_with("tabs disallowed") {
        return format!("{text}: YAML does not allow tabs for indentation; indent with spaces.");
    }
    let expected = regex::Regex::new(r"^expected (mapping|sequence) start$").expect("valid regex");
    if let Some(caps) = expected.captures(text) {
        let shape = if &caps[1] == "mapping" {
            "a mapping (indented `name: value` lines below it)"
        } else {
            "a list (`[a, b]`, or `- a` lines below it)"
        };
        return match key {
            Some(key) => format!("expected {shape} as the value of `{key}`."),
            None => format!("expected {shape} here."),
        };
    }
    text.to_string()
}

/// The mapping key written before `column` on `line` (both 1-based) of `source`, if the error
/// points at a key's value (`tables: 5` -> `tables`).
fn key_before(source: &str, line: u64, column: u64) -> Option<String> {
    let text = source.lines().nth((line as usize).checked_sub(1)?)?;
    let before = text.get(..(column as usize).checked_sub(1)?)?;
    let key = before.trim_end().strip_suffix(':')?;
    let key = key
        .trim()
        .trim_start_matches("- ")
        .trim_matches(['"', '\'']);
    (!key.is_empty()).then(|| key.to_string())
}

fn at<T>(s: &Spanned<T>) -> String {
    format!("line {}", s.referenced.line())
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn resolve_path(dir: &Path, p: &str) -> String {
    if p.contains("://") || Path::new(p).is_absolute() {
        p.to_string()
    } else {
        normalise(&dir.join(p)).display().to_string()
    }
}

/// `a/pipelines/../data` -> `a/data`, without touching the file system (the path may be a glob
/// or not exist yet), so messages and commit records show the path a person would write.
fn normalise(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn validate(
    path: &Path,
    dir: &Path,
    raw: RawPipeline,
    store_override: Option<&str>,
    file_hash: String,
) -> Result<Plan> {
    let mut problems = Vec::new();
    let name = raw.name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into())
    });
    let store = match store_override.or(raw.store.as_deref()) {
        Some(s) => {
            let s = s.strip_prefix("file://").unwrap_or(s);
            resolve_path(dir, s)
        }
        None => dir.join(".tidemark").display().to_string(),
    };
    let atomic = raw.atomic.unwrap_or(false);
    let memory_limit = match &raw.memory_limit {
        Some(m) => match crate::engine::parse_size(&m.value) {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                problems.push(format!("{}: memory_limit: {why}", at(m)));
                None
            }
        },
        None => None,
    };
    if raw.tables.is_empty() {
        problems.push("`tables` is empty: declare at least one table.".to_string());
    }
    let names: Vec<String> = raw.tables.keys().cloned().collect();
    let lines: Vec<(String, u64)> = raw
        .tables
        .iter()
        .map(|(name, t)| (name.clone(), t.referenced.line()))
        .collect();
    super::collisions::reserved_names(&lines, &mut problems);
    let mut tables = Vec::new();
    for (table_name, spanned) in raw.tables {
        let line = spanned.referenced.line();
        if !valid_identifier(&table_name) {
            problems.push(format!(
                "line {line}: table name `{table_name}` must match [A-Za-z_][A-Za-z0-9_]* (it becomes an SQL table name)."
            ));
        }
        if let Some(t) = table_plan(dir, &table_name, spanned.value, &names, &mut problems) {
            tables.push((t, line));
        }
    }
    // A table with problems of its own is missing from `tables`; ordering would then report
    // its dependents as a cycle, so order only a clean set.
    let ordered = if problems.is_empty() {
        dependency_order(tables, &mut problems)
    } else {
        Vec::new()
    };
    if !problems.is_empty() {
        return Err(Error::PipelineInvalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    let plan = Plan {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        name,
        store,
        tables: ordered,
        file_hash,
        atomic,
        memory_limit,
    };
    let collisions = super::collisions::output_collisions(&plan, &Default::default());
    if !collisions.is_empty() {
        return Err(Error::PipelineInvalid {
            path: path.to_path_buf(),
            problems: collisions,
        });
    }
    Ok(plan)
}

/// `mode`, `watermark` and `partition_by`, which must agree.
fn table_mode(name: &str, raw: &RawTable, problems: &mut Vec<String>) -> (TableMode, Vec<String>) {
    let partition_by = raw
        .partition_by
        .as_ref()
        .map(|p| p.value.clone().into_vec())
        .unwrap_or_default();
    let mode = match (raw.mode.as_ref().map(|m| m.value), &raw.watermark) {
        (Some(Mode::Incremental), Some(w)) => TableMode::Incremental {
            watermark: w.value.clone(),
        },
        (Some(Mode::Incremental), None) => {
            problems.push(format!(
                "{}: table {name}: `mode: incremental` needs `watermark:`, the column that grows with every change (e.g. updated_at); rows at or below the last run's highest value are ignored.",
                at(raw.mode.as_ref().expect("matched"))
            ));
            TableMode::Snapshot
        }
        (other, Some(w)) => {
            problems.push(format!(
                "{}: table {name}: `watermark` applies to `mode: incremental` only{}.",
                at(w),
                if other.is_none() { "; add it" } else { "" }
            ));
            TableMode::Snapshot
        }
        (Some(Mode::Full), None) => TableMode::Full,
        (Some(Mode::Snapshot) | None, None) => TableMode::Snapshot,
    };
    if let Some(p) = &raw.partition_by {
        match &mode {
            TableMode::Snapshot => {}
            TableMode::Full => problems.push(format!(
                "{}: table {name}: `partition_by` limits deletes to the partitions a run holds, but `mode: full` replaces the whole table; use `mode: snapshot` (the default) with partitions.",
                at(p)
            )),
            TableMode::Incremental { .. } => problems.push(format!(
                "{}: table {name}: `partition_by` limits deletes, and `mode: incremental` never deletes; remove one of them.",
                at(p)
            )),
        }
    }

    (mode, partition_by)
}

/// `guard:` limits.
fn guard(name: &str, raw: &RawTable, problems: &mut Vec<String>) -> Guard {
    let mut guard = Guard::default();
    if let Some(g) = &raw.guard {
        for (key, value, slot) in [
            ("max_deleted", &g.value.max_deleted, &mut guard.max_deleted),
            ("max_changed", &g.value.max_changed, &mut guard.max_changed),
            ("min_rows", &g.value.min_rows, &mut guard.min_rows),
        ] {
            if let Some(v) = value {
                match parse_limit(v) {
                    Ok(limit) => *slot = Some(limit),
                    Err(why) => {
                        problems.push(format!("{}: table {name}: guard `{key}` {why}.", at(g)))
                    }
                }
            }
        }
    }
    guard
}

/// `tolerance:` per column.
fn tolerances(name: &str, raw: &RawTable, problems: &mut Vec<String>) -> Vec<(String, Tolerance)> {
    let mut tolerance = Vec::new();
    if let Some(t) = &raw.tolerance {
        for (column, value) in &t.value {
            match parse_tolerance(value) {
                Some(tol) => tolerance.push((column.clone(), tol)),
                None => problems.push(format!(
                    "{}: table {name}: tolerance of \"{column}\" must be an absolute amount (0.005) or a percentage (\"1%\").",
                    at(t)
                )),
            }
        }
    }
    tolerance
}

/// `normalize:` clean-ups per column.
fn normalizations(
    name: &str,
    raw: Option<Spanned<indexmap::IndexMap<String, super::raw::RawNormalize>>>,
    problems: &mut Vec<String>,
) -> Vec<Normalize> {
    raw
        .map(|n| {
            let line = n.referenced.line();
            n.value
                .into_iter()
                .filter_map(|(column, r)| {
                    if r.trim.is_none() && r.case.is_none() && r.round.is_none() {
                        problems.push(format!("line {line}: table {name}: `normalize` of \"{column}\" sets nothing; use trim: true, case: lower|upper or round: N."));
                    }
                    if r.round.is_some_and(|n| n > 18) {
                        problems.push(format!("line {line}: table {name}: `normalize` of \"{column}\": round must be 0 to 18 decimal places."));
                        return None;
                    }
                    Some(Normalize {
                        column,
                        trim: r.trim.unwrap_or(false),
                        case: r.case,
                        round: r.round,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `source:` read settings: format, delimiter, declared column types, header row.
fn source_options(
    name: &str,
    src: &super::raw::RawSource,
    problems: &mut Vec<String>,
) -> SourceOptions {
    let format = match &src.format {
        Some(f) => {
            match f.value.to_ascii_lowercase().as_str() {
                "csv" => Some(SourceFormat::Csv),
                "excel" | "xlsx" | "xls" | "ods" => Some(SourceFormat::Excel),
                "parquet" => Some(SourceFormat::Parquet),
                "json" | "jsonl" | "ndjson" => Some(SourceFormat::Json),
                other => {
                    problems.push(format!("{}: table {name}: unknown format `{other}`; use csv, excel, parquet or json.", at(f)));
                    None
                }
            }
        }
        None => {
            let f = SourceFormat::from_extension(&src.path.value);
            if f.is_none() {
                problems.push(format!(
                    "{}: table {name}: cannot tell the format of `{}` from its extension; set `format:` (csv, excel, parquet or json).",
                    at(&src.path),
                    src.path.value
                ));
            }
            f
        }
    };
    let delimiter = match &src.delimiter {
        None => b',',
        Some(d) => {
            let text = if d.value == "\\t" {
                "\t"
            } else {
                d.value.as_str()
            };
            if text.len() == 1 {
                text.as_bytes()[0]
            } else {
                problems.push(format!(
                    "{}: table {name}: `delimiter` must be one ASCII character, got {:?}.",
                    at(d),
                    d.value
                ));
                b','
            }
        }
    };
    let mut columns = Vec::new();
    for (col, type_name) in src.columns.iter().flatten() {
        match types::parse_type(&type_name.value) {
            Some(t) => columns.push((col.clone(), t)),
            None => problems.push(format!(
                "{}: table {name}: column \"{col}\" has unknown type `{}`; use one of {}.",
                at(type_name),
                type_name.value,
                types::TYPE_NAMES
            )),
        }
    }
    // Spanned, so that the problem names its line like every other one.
    let header_row = src.header_row.as_ref().map_or(1, |h| h.value);
    if let Some(h) = src.header_row.as_ref().filter(|h| h.value == 0) {
        problems.push(format!(
            "{}: table {name}: `header_row` is 1-based; use 1 for the first row.",
            at(h)
        ));
    }
    SourceOptions {
        format: format.unwrap_or(SourceFormat::Csv),
        sheet: src.sheet.as_ref().map(|s| match s {
            SheetValue::Index(i) => SheetRef::Index(*i),
            SheetValue::Name(n) => SheetRef::Name(n.clone()),
        }),
        header_row: header_row.max(1),
        delimiter,
        null_values: src
            .null_values
            .clone()
            .unwrap_or_else(|| vec![String::new()]),
        columns,
    }
}

/// `compare:` or `ignore:` (not both, and never a key column).
fn compare_columns(
    name: &str,
    compare: Option<Spanned<Vec<String>>>,
    ignore: Option<Spanned<Vec<String>>>,
    key: &[String],
    problems: &mut Vec<String>,
) -> CompareColumns {
    match (compare, ignore) {
        (Some(c), Some(i)) => {
            problems.push(format!(
                "{} and {}: table {name}: set `compare` or `ignore`, not both.",
                at(&c),
                at(&i)
            ));
            CompareColumns::All
        }
        (Some(c), None) => {
            if let Some(k) = c.value.iter().find(|c| key.contains(c)) {
                problems.push(format!("{}: table {name}: `compare` lists the key column \"{k}\"; key columns identify rows and are never compared.", at(&c)));
            }
            CompareColumns::Only(c.value)
        }
        (None, Some(i)) => CompareColumns::AllBut(i.value),
        (None, None) => CompareColumns::All,
    }
}

/// `depends_on:` and `references:` (a referenced parent runs first, so it is a dependency).
fn dependencies(
    name: &str,
    raw_depends_on: Option<&Spanned<Vec<String>>>,
    raw_references: Option<&Spanned<indexmap::IndexMap<String, String>>>,
    all_tables: &[String],
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<Reference>) {
    let depends_on = raw_depends_on.map(|d| {
        for dep in &d.value {
            if !all_tables.contains(dep) {
                problems.push(format!(
                    "{}: table {name}: `depends_on` names unknown table `{dep}`.",
                    at(d)
                ));
            } else if dep == name {
                problems.push(format!("{}: table {name} depends on itself.", at(d)));
            }
        }
        d.value.clone()
    });
    let mut depends_on = depends_on.unwrap_or_default();
    let mut references = Vec::new();
    if let Some(r) = raw_references {
        for (column, target) in &r.value {
            let Some((parent, parent_column)) = target
                .split_once('.')
                .filter(|(p, c)| !p.is_empty() && !c.is_empty())
            else {
                problems.push(format!(
                    "{}: table {name}: `references` maps {column} to `{target}`; write the parent as TABLE.COLUMN, e.g. {{{column}: categories.id}}.",
                    at(r)
                ));
                continue;
            };
            if !all_tables.iter().any(|t| t == parent) {
                problems.push(format!(
                    "{}: table {name}: `references` names unknown table `{parent}` (in `{target}`).",
                    at(r)
                ));
                continue;
            }
            if parent == name {
                problems.push(format!(
                    "{}: table {name} references itself; a table's rows are checked against another table's snapshot.",
                    at(r)
                ));
                continue;
            }
            // The parent's new snapshot must exist first: it runs before this table.
            if !depends_on.iter().any(|d| d == parent) {
                depends_on.push(parent.to_string());
            }
            references.push(Reference {
                column: column.clone(),
                parent: parent.to_string(),
                parent_column: parent_column.to_string(),
            });
        }
    }
    (depends_on, references)
}

/// `change_columns:` names and labels.
fn change_columns(
    name: &str,
    raw: Option<super::raw::RawChangeColumns>,
    problems: &mut Vec<String>,
) -> ChangeColumns {
    match raw {
        None => ChangeColumns::default(),
        Some(c) => {
            let mut cc = ChangeColumns::default();
            if let Some(t) = c.type_column {
                cc.type_column = t;
            }
            if let Some(r) = c.reason {
                cc.reason_column = r;
            }
            if let Some(p) = c.previous {
                cc.previous_prefix = p;
            }
            if let Some(l) = c.labels {
                for (kind, label) in [
                    (ChangeKind::New, l.new),
                    (ChangeKind::Changed, l.changed),
                    (ChangeKind::Deleted, l.deleted),
                    (ChangeKind::Renamed, l.renamed),
                    (ChangeKind::Unchanged, l.unchanged),
                ] {
                    if let Some(label) = label {
                        cc.labels.insert(kind, label);
                    }
                }
            }
            if cc.type_column == cc.reason_column {
                problems.push(format!("table {name}: `change_columns` gives the type and reason columns the same name."));
            }
            cc
        }
    }
}

/// `renames:`: pairs DELETED and NEW rows, so a run must be able to delete.
fn renames(
    name: &str,
    raw: Option<Spanned<bool>>,
    mode: &TableMode,
    problems: &mut Vec<String>,
) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    if raw.value && matches!(mode, TableMode::Incremental { .. }) {
        problems.push(format!(
            "{}: table {name}: `renames` pairs a DELETED row with a NEW one, and `mode: incremental` deletes nothing; remove `renames`, or read whole snapshots.",
            at(&raw)
        ));
    }
    raw.value
}

fn table_plan(
    dir: &Path,
    name: &str,
    raw: RawTable,
    all_tables: &[String],
    problems: &mut Vec<String>,
) -> Option<TablePlan> {
    let before = problems.len();
    let (mode, partition_by) = table_mode(name, &raw, problems);
    let guard = guard(name, &raw, problems);
    let tolerance = tolerances(name, &raw, problems);
    let validation = raw
        .validate
        .map(|v| validation(dir, name, v, problems))
        .unwrap_or_default();
    let normalize = normalizations(name, raw.normalize, problems);
    let src = raw.source;
    let source = source_options(name, &src, problems);
    let key_line = raw.key.referenced.line();
    let key = raw.key.value.into_vec();
    match KeyProblem::of(&key) {
        None => {}
        Some(KeyProblem::NoColumn) => problems.push(format!(
            "line {key_line}: table {name}: `key` names no column."
        )),
        Some(KeyProblem::EmptyName) => problems.push(format!(
            "line {key_line}: table {name}: `key` names an empty column name; name the columns that identify a row."
        )),
        Some(KeyProblem::Repeated(k)) => problems.push(format!(
            "line {key_line}: table {name}: `key` names \"{k}\" twice; name each key column once."
        )),
    }
    let compare = compare_columns(name, raw.compare, raw.ignore, &key, problems);
    let (depends_on, references) = dependencies(
        name,
        raw.depends_on.as_ref(),
        raw.references.as_ref(),
        all_tables,
        problems,
    );
    let change_columns = change_columns(name, raw.change_columns, problems);
    let (emit_deleted, delete_set) = match raw.on_delete {
        None => (true, Vec::new()),
        Some(d) => (
            d.emit.unwrap_or(true),
            d.set.map(|m| m.into_iter().collect()).unwrap_or_default(),
        ),
    };
    let outputs = super::destinations::outputs(dir, name, raw.output, problems);
    let destinations =
        super::destinations::destinations(dir, &outputs, name, raw.deliver, problems);
    let renames = renames(name, raw.renames, &mode, problems);
    if problems.len() > before {
        return None;
    }
    Some(TablePlan {
        name: name.to_string(),
        source_path: resolve_path(dir, &src.path.value),
        files: match src.files {
            Some(Files::All) => FileSelection::All,
            _ => FileSelection::Newest,
        },
        source,
        transform: raw.transform,
        key,
        compare,
        duplicates: raw.duplicates.unwrap_or_default(),
        depends_on,
        references,
        mode,
        partition_by,
        emit_deleted,
        delete_set,
        outputs,
        destinations,
        change_columns,
        renames,
        guard,
        tolerance,
        validate: validation,
        normalize,
    })
}

fn validation(
    dir: &Path,
    table: &str,
    raw: Spanned<RawValidate>,
    problems: &mut Vec<String>,
) -> Validation {
    let line = raw.referenced.line();
    let raw = raw.value;
    let max_invalid = raw.max_invalid.as_ref().and_then(|m| {
        let limit = parse_limit(m).ok();
        if limit.is_none() {
            problems.push(format!("line {line}: table {table}: `validate.max_invalid` must be a row count (10) or a percentage of the rows read (\"5%\")."));
        }
        limit
    });
    let mut rules: Vec<Rule> = Vec::new();
    for r in raw.rules.into_iter().flatten() {
        if r.name.trim().is_empty() || r.check.trim().is_empty() {
            problems.push(format!(
                "line {line}: table {table}: every `validate.rules` entry needs a `name` and a `check` (an SQL condition)."
            ));
        } else if rules.iter().any(|e| e.name == r.name) {
            problems.push(format!(
                "line {line}: table {table}: two `validate.rules` are named `{}`; names must be unique.",
                r.name
            ));
        } else {
            rules.push(Rule {
                name: r.name,
                check: r.check,
            });
        }
    }
    let rejects_path = raw.rejects.map(|p| {
        check_output_path(
            &p,
            &format!("line {line}: table {table}: `validate.rejects`"),
            problems,
        );
        resolve_path(dir, &p)
    });
    Validation {
        not_null: raw.not_null.unwrap_or_default(),
        rules,
        on_invalid: raw.on_invalid.unwrap_or_default(),
        max_invalid,
        rejects_path,
    }
}

/// An output or rejects path must say its format by extension and use known placeholders.
pub(super) fn check_output_path(path: &str, what: &str, problems: &mut Vec<String>) {
    if SourceFormat::from_extension(path).is_none_or(|f| f == SourceFormat::Excel) {
        problems.push(format!(
            "{what} `{path}` must end in .csv, .parquet or .json (JSON lines)."
        ));
    }
    let placeholder = regex::Regex::new(r"\{[^}]*\}").expect("valid regex");
    let unknown: Vec<String> = placeholder
        .find_iter(path)
        .map(|m| m.as_str().to_string())
        .filter(|p| !crate::sink::PLACEHOLDERS.contains(&p.as_str()))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "{what} `{path}` has unknown placeholder(s) {}; use {}.",
            unknown.join(", "),
            crate::sink::PLACEHOLDERS.join(", ")
        ));
    }
}

/// Topological order (Kahn), stable in file order; a cycle is reported with its tables.
fn dependency_order(tables: Vec<(TablePlan, u64)>, problems: &mut Vec<String>) -> Vec<TablePlan> {
    let mut remaining = tables;
    let mut done: HashSet<String> = HashSet::new();
    let mut ordered = Vec::new();
    loop {
        let ready = remaining
            .iter()
            .position(|(t, _)| t.depends_on.iter().all(|d| done.contains(d)));
        match ready {
            Some(i) => {
                let (t, _) = remaining.remove(i);
                done.insert(t.name.clone());
                ordered.push(t);
            }
            None => break,
        }
    }
    if !remaining.is_empty() {
        let cycle: Vec<String> = remaining
            .iter()
            .map(|(t, line)| format!("{} (line {line})", t.name))
            .collect();
        problems.push(format!(
            "`depends_on` forms a cycle among: {}. Remove one of the dependencies.",
            cycle.join(", ")
        ));
    }
    ordered
}
