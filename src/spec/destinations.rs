//! Where a table's changes go: `output:` files and `deliver:` destinations (databases), each
//! with a name unique within the table (its cursor is kept under it).

use std::path::Path;

use serde_saphyr::Spanned;

use super::plan::{
    ChangeKind, DatabasePlan, Deletes, DestinationKind, DestinationPlan, OutputPlan,
};
use super::raw::{ChangeKindName, RawDeletes, RawDestination, RawOutput};

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
    _dir: &Path,
    table: &str,
    raw: Option<Vec<Spanned<RawDestination>>>,
    problems: &mut Vec<String>,
) -> Vec<DestinationPlan> {
    let mut destinations: Vec<DestinationPlan> = Vec::new();
    for d in raw.into_iter().flatten() {
        let line = d.referenced.line();
        let at = format!("line {line}: table {table}: deliver");
        let d = d.value;
        let Some(pg) = d.postgres else {
            problems.push(format!(
                "{at}: name where the changes go: `postgres: {{url: ..., table: ...}}`."
            ));
            continue;
        };
        let name = d.name.unwrap_or_else(|| "postgres".to_string());
        if destinations.iter().any(|known| known.name == name) {
            problems.push(format!(
                "{at}: two destinations are named {name:?}; give each its own `name:` (its progress is kept under it)."
            ));
        }
        if let Some(problem) = super::secrets::problem(&pg.url) {
            problems.push(format!("{at}: url: {problem}"));
        }
        let deletes = match pg.deletes.unwrap_or(RawDeletes::Delete) {
            RawDeletes::Delete => Deletes::Delete,
            RawDeletes::Ignore => Deletes::Ignore,
            RawDeletes::Soft => match &pg.soft_delete_column {
                Some(column) => Deletes::Soft(column.clone()),
                None => {
                    problems.push(format!(
                        "{at}: `deletes: soft` sets a column to the commit time: name it with `soft_delete_column: deleted_at`."
                    ));
                    continue;
                }
            },
        };
        if pg.soft_delete_column.is_some() && !matches!(deletes, Deletes::Soft(_)) {
            problems.push(format!(
                "{at}: `soft_delete_column` is used only with `deletes: soft`."
            ));
        }
        destinations.push(DestinationPlan {
            name,
            kind: DestinationKind::Postgres(DatabasePlan {
                url: pg.url,
                table: pg.table.unwrap_or_else(|| table.to_string()),
                create: pg.create.unwrap_or(false),
                deletes,
            }),
        });
    }
    destinations
}
