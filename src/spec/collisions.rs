//! Names and paths that would collide: a table named like the store's own tables (`runs`,
//! `T_changes`, `T_history`), and a delta output that would overwrite a source (the next run
//! would read its own delta), land inside the store, or be written by two outputs at once.
//! Each is refused before anything runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::plan::Plan;

/// The query tables every store has besides the pipeline's own (SPEC section 6).
const STORE_TABLES: [&str; 1] = ["runs"];

/// The suffixes of the tables a store adds for each pipeline table.
const TABLE_SUFFIXES: [&str; 2] = ["_changes", "_history"];

/// Table names that `query` could not tell apart from the store's own tables: `runs`, or `x`
/// beside `x_changes` or `x_history`. `tables` holds each name with its line.
pub(super) fn reserved_names(tables: &[(String, u64)], problems: &mut Vec<String>) {
    for (name, line) in tables {
        if STORE_TABLES.contains(&name.as_str()) {
            problems.push(format!(
                "line {line}: table name `{name}` is taken: the store's table of runs is queried as `{name}`; rename the table."
            ));
        }
        for suffix in TABLE_SUFFIXES {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if tables.iter().any(|(other, _)| other == base) {
                problems.push(format!(
                    "line {line}: table name `{name}` is taken: the store queries table {base}'s {} as `{name}`; rename the table.",
                    &suffix[1..]
                ));
            }
        }
    }
}

/// Every output of `plan` that would overwrite a table's source (its `path`, or the file
/// `--source` names in `overrides`), land inside the store, or share its file with another
/// output; one message each. Templates are compared as the first run would fill them.
pub fn output_collisions(plan: &Plan, overrides: &HashMap<String, PathBuf>) -> Vec<String> {
    let now = Utc::now();
    let sources: Vec<(&str, String)> = plan
        .tables
        .iter()
        .map(|t| match overrides.get(&t.name) {
            Some(path) => (t.name.as_str(), path.display().to_string()),
            None => (t.name.as_str(), t.source_path.clone()),
        })
        .collect();
    let mut problems = Vec::new();
    let mut written: HashMap<String, &str> = HashMap::new();
    for table in &plan.tables {
        for output in &table.outputs {
            let path = filled(&output.path, &table.name, now);
            let what = format!("table {}: output `{}`", table.name, output.path);
            for (source_table, source) in &sources {
                if reads(source, &path) {
                    problems.push(format!(
                        "{what} would overwrite the source of table {source_table} ({source}): the next run would read its own delta; write the delta elsewhere."
                    ));
                }
            }
            if inside(&path, &plan.store) {
                problems.push(format!(
                    "{what} is inside the store {}: the store holds only tidemark's own files; write the delta elsewhere.",
                    plan.store
                ));
            }
            if let Some(other) = written.insert(path.clone(), &table.name) {
                problems.push(format!(
                    "{what}: table {other} writes the same file; give each output its own path (e.g. with {{table}})."
                ));
            }
        }
    }
    problems
}

/// An output template as a run at `now` fills it (version 1 stands for any version).
fn filled(template: &str, table: &str, now: DateTime<Utc>) -> String {
    crate::sink::render_path(template, table, 1, now)
}

/// Whether a source `pattern` (a path or a glob) would read the file at `path`.
fn reads(pattern: &str, path: &str) -> bool {
    if pattern == path {
        return true;
    }
    if !pattern.contains(['*', '?', '[']) {
        return same_file(Path::new(pattern), Path::new(path));
    }
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(path))
}

/// Two paths naming one file: the same absolute path, or the same existing file through a
/// link or `..`.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => matches!((std::path::absolute(a), std::path::absolute(b)), (Ok(a), Ok(b)) if a == b),
    }
}

/// Whether `path` lies inside the store at `store` (a folder or a URL prefix).
fn inside(path: &str, store: &str) -> bool {
    if crate::cloud::is_url(store) {
        let prefix = format!("{}/", store.trim_end_matches('/'));
        return path.starts_with(&prefix);
    }
    Path::new(path).starts_with(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_reads_an_output_it_matches() {
        assert!(reads("/in/*.csv", "/in/delta.csv"));
        assert!(!reads("/in/*.csv", "/out/delta.csv"));
        assert!(reads("/in/items.csv", "/in/items.csv"));
        assert!(!reads("/in/items.csv", "/in/items-delta.csv"));
    }

    #[test]
    fn a_path_under_the_store_is_inside_it() {
        assert!(inside("/w/.tidemark/items/x.csv", "/w/.tidemark"));
        assert!(!inside("/w/.tidemark2/x.csv", "/w/.tidemark"));
        assert!(inside("s3://b/store/x.csv", "s3://b/store"));
        assert!(!inside("s3://b/store2/x.csv", "s3://b/store"));
    }

    #[test]
    fn store_table_names_are_reserved() {
        let mut problems = Vec::new();
        let tables = |names: &[&str]| -> Vec<(String, u64)> {
            names.iter().map(|n| (n.to_string(), 2)).collect()
        };
        reserved_names(
            &tables(&["runs", "x", "x_changes", "y_history"]),
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`runs` is taken"));
        assert!(problems[1].contains("table x's changes as `x_changes`"));
    }
}
