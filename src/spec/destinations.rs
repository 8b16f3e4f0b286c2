//! Where a table's changes go: `output:` files and `deliver:` destinations (databases), each
//! with a name unique within the table (its cursor is kept under it).

use std::path::Path;

use serde_saphyr::Spanned;

use super::plan::{
    ChangeKind, DatabasePlan, Deletes, DestinationKind, DestinationPlan, OutputPlan,
};
use super::raw::{ChangeKindName, RawDatabase, RawDeletes, RawDestination, RawOutput};

/// `output:` files.
pub(super) fn outputs(
    dir: &Path,
    name: &str,
    raw: Option<Vec<Spanned<RawOutput>>>,
    problems: &mut Vec<String>,
) -> Vec<OutputPlan> {
    let mut outputs = Vec::new();
    for o in raw.into_iter().flatten() {
        let line = o.referenced.line();
        let o = o.value;
        super::load::check_output_path(
            &o.path,
            &format!("line {line}: table {name}: output path"),
            problems,
        );
        let include = match o.include {
            None => super::plan::DEFAULT_INCLUDE.to_vec(),
            Some(list) => list
                .into_iter()
                .map(|k| match k {
                    ChangeKindName::New => ChangeKind::New,
                    ChangeKindName::Changed => ChangeKind::Changed,
                    ChangeKindName::Deleted => ChangeKind::Deleted,
                    ChangeKindName::Renamed => ChangeKind::Renamed,
                    ChangeKindName::Unchanged => ChangeKind::Unchanged,
                })
                .collect(),
        };
        let output_name = o.name.clone().unwrap_or_else(|| o.path.clone());
        if outputs
            .iter()
            .any(|known: &OutputPlan| known.name == output_name)
        {
            problems.push(format!(
                "line {line}: table {name}: two outputs are named {output_name:?}; give each its own `name:` (a delivery's progress is kept under it)."
            ));
        }
        outputs.push(OutputPlan {
            name: output_name,
            path: super::load::resolve_path(dir, &o.path),
            include,
            columns: o.columns,
        });
    }
    outputs
}

/// `deliver:` destinations.
pub(super) fn destinations(
    dir: &Path,
    outputs: &[OutputPlan],
    table: &str,
    raw: Option<Vec<Spanned<RawDestination>>>,
    problems: &mut Vec<String>,
) -> Vec<DestinationPlan> {
    let mut destinations: Vec<DestinationPlan> = Vec::new();
    for d in raw.into_iter().flatten() {
        let line = d.referenced.line();
        let at = format!("line {line}: table {table}: deliver");
        let d = d.value;
        let (kind, raw_db) = match (d.postgres, d.sqlite) {
            (Some(pg), None) => ("postgres", pg),
            (None, Some(lite)) => ("sqlite", lite),
            (None, None) => {
                problems.push(format!(
                    "{at}: name where the changes go: `postgres: {{url: ..., table: ...}}` or `sqlite: {{path: shop.db}}`."
                ));
                continue;
            }
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{at}: one destination is one database: give `postgres:` and `sqlite:` entries of their own."
                ));
                continue;
            }
        };
        let name = d.name.unwrap_or_else(|| kind.to_string());
        let taken = destinations.iter().any(|known| known.name == name)
            || outputs.iter().any(|o| o.name == name);
        if taken {
            problems.push(format!(
                "{at}: two destinations are named {name:?}; give each its own `name:` (its progress is kept under it)."
            ));
        }
        let Some(plan) = database(dir, table, &at, kind, raw_db, problems) else {
            continue;
        };
        let kind = match kind {
            "postgres" => DestinationKind::Postgres(plan),
            _ => DestinationKind::Sqlite(plan),
        };
        destinations.push(DestinationPlan { name, kind });
    }
    destinations
}

/// One database's settings: `url:` (PostgreSQL) or `path:` (SQLite, relative to the pipeline
/// file), the table, `create`, `deletes`.
fn database(
    dir: &Path,
    table: &str,
    at: &str,
    kind: &str,
    raw: RawDatabase,
    problems: &mut Vec<String>,
) -> Option<DatabasePlan> {
    let url = match (kind, raw.url, raw.path) {
        ("postgres", Some(url), None) => url,
        ("sqlite", None, Some(path)) => super::load::resolve_path(dir, &path),
        ("postgres", _, _) => {
            problems.push(format!(
                "{at}: postgres takes `url: ${{DATABASE_URL}}` (and no `path`)."
            ));
            return None;
        }
        _ => {
            problems.push(format!(
                "{at}: sqlite takes `path: shop.db` (and no `url`)."
            ));
            return None;
        }
    };
    if let Some(problem) = super::secrets::problem(&url) {
        problems.push(format!("{at}: url: {problem}"));
    }
    let deletes = match raw.deletes.unwrap_or(RawDeletes::Delete) {
        RawDeletes::Delete => Deletes::Delete,
        RawDeletes::Ignore => Deletes::Ignore,
        RawDeletes::Soft => match &raw.soft_delete_column {
            Some(column) => Deletes::Soft(column.clone()),
            None => {
                problems.push(format!(
                    "{at}: `deletes: soft` sets a column to the commit time: name it with `soft_delete_column: deleted_at`."
                ));
                return None;
            }
        },
    };
    if raw.soft_delete_column.is_some() && !matches!(deletes, Deletes::Soft(_)) {
        problems.push(format!(
            "{at}: `soft_delete_column` is used only with `deletes: soft`."
        ));
    }
    Some(DatabasePlan {
        url,
        table: raw.table.unwrap_or_else(|| table.to_string()),
        create: raw.create.unwrap_or(false),
        deletes,
    })
}
