//! Where a table's changes go: `output:` files and `deliver:` destinations (databases), each
//! with a name unique within the table (its cursor is kept under it).

use std::path::Path;

use serde_saphyr::Spanned;

use super::plan::{
    ChangeKind, DatabasePlan, Deletes, DestinationKind, DestinationPlan, HttpPlan, OnFailure,
    OutputPlan, PerChange,
};
use super::raw::{
    ChangeKindName, RawDatabase, RawDeletes, RawDestination, RawHttp, RawOutput, RawPerChange,
};

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
        let given = [d.postgres.is_some(), d.sqlite.is_some(), d.http.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            problems.push(format!(
                "{at}: name one place the changes go: `postgres: {{url: ..., table: ...}}`, `sqlite: {{path: shop.db}}` or `http: {{url: ..., method: ...}}` (give each its own entry)."
            ));
            continue;
        }
        let kind_name = match (&d.postgres, &d.sqlite) {
            (Some(_), _) => "postgres",
            (_, Some(_)) => "sqlite",
            _ => "http",
        };
        let name = d.name.unwrap_or_else(|| kind_name.to_string());
        let taken = destinations.iter().any(|known| known.name == name)
            || outputs.iter().any(|o| o.name == name);
        if taken {
            problems.push(format!(
                "{at}: two destinations are named {name:?}; give each its own `name:` (its progress is kept under it)."
            ));
        }
        let kind = match (d.postgres, d.sqlite, d.http) {
            (Some(pg), _, _) => {
                database(dir, table, &at, "postgres", pg, problems).map(DestinationKind::Postgres)
            }
            (_, Some(lite), _) => {
                database(dir, table, &at, "sqlite", lite, problems).map(DestinationKind::Sqlite)
            }
            (_, _, Some(http)) => {
                self::http(&at, http, problems).map(|p| DestinationKind::Http(Box::new(p)))
            }
            _ => None,
        };
        let Some(kind) = kind else {
            continue;
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

/// An HTTP destination's settings: templates checked, rate and durations read.
fn http(at: &str, raw: RawHttp, problems: &mut Vec<String>) -> Option<HttpPlan> {
    let before = problems.len();
    let per_change = |raw: Option<RawPerChange>| match raw {
        None => PerChange::default(),
        Some(RawPerChange::One(v)) => PerChange {
            new: Some(v.clone()),
            changed: Some(v.clone()),
            deleted: Some(v),
            renamed: None,
        },
        Some(RawPerChange::Each(e)) => PerChange {
            new: e.new,
            changed: e.changed,
            deleted: e.deleted,
            renamed: e.renamed,
        },
    };
    let url = per_change(raw.url);
    let method = match raw.method {
        None => per_change(Some(RawPerChange::One("POST".into()))),
        given => per_change(given),
    };
    let body = per_change(raw.body);
    if url.given().next().is_none() {
        problems.push(format!(
            "{at}: http takes `url:`, a template over the row such as \"https://api.example.com/items/{{{{ key.sku }}}}\"."
        ));
    }
    for (kind, m) in method.given() {
        if !["POST", "PUT", "PATCH", "DELETE"].contains(&m) {
            problems.push(format!(
                "{at}: method {kind}: {m:?} is not one of POST, PUT, PATCH, DELETE."
            ));
        }
        if url.of(kind_of(kind)).is_none() {
            problems.push(format!("{at}: {kind} rows have a method but no `url:`."));
        }
    }
    let headers: Vec<(String, String)> = raw.headers.unwrap_or_default().into_iter().collect();
    template_problems(at, &url, &body, &headers, problems);
    let remember: Vec<(String, String)> = raw.remember.unwrap_or_default().into_iter().collect();
    for (name, pointer) in &remember {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            problems.push(format!(
                "{at}: remember {name}: {pointer:?} is not a JSON pointer into the response; write it as /data/id (each step after a `/`)."
            ));
        }
    }
    let on_failure = match raw.on_failure.as_deref() {
        None | Some("dead_letter") => OnFailure::DeadLetter,
        Some("stop") => OnFailure::Stop,
        Some(other) => {
            problems.push(format!(
                "{at}: on_failure {other:?}: write dead_letter (the row goes to the dead-letter file and delivery goes on) or stop."
            ));
            OnFailure::Stop
        }
    };
    if raw.concurrency == Some(0) {
        problems.push(format!(
            "{at}: concurrency 0: give the most requests in flight at once, 1 or more."
        ));
    }
    let rate_limit = raw.rate_limit.and_then(|text| match rate(&text) {
        Some(r) => Some(r),
        None => {
            problems.push(format!(
                "{at}: rate_limit {text:?}: write requests per unit, such as 10/s, 600/min or 1000/h."
            ));
            None
        }
    });
    let mut duration_of = |setting: &str, text: Option<String>, default: u64| match text {
        None => std::time::Duration::from_millis(default),
        Some(text) => duration(&text).unwrap_or_else(|| {
            problems.push(format!(
                "{at}: {setting} {text:?}: write a number and a unit, such as 500ms, 30s or 2m."
            ));
            std::time::Duration::ZERO
        }),
    };
    let timeout = duration_of("timeout", raw.timeout, 30_000);
    let backoff = duration_of("backoff", raw.backoff, 1_000);
    (problems.len() == before).then_some(HttpPlan {
        url,
        method,
        body,
        headers,
        rate_limit,
        retries: raw.retries.unwrap_or(5),
        timeout,
        backoff,
        remember,
        on_failure,
        concurrency: raw.concurrency.unwrap_or(4).max(1),
    })
}

/// The problems of an HTTP destination's templates and header names.
fn template_problems(
    at: &str,
    url: &PerChange,
    body: &PerChange,
    headers: &[(String, String)],
    problems: &mut Vec<String>,
) {
    let templates = (url.given().map(|(k, t)| (format!("url {k}"), t)))
        .chain(body.given().map(|(k, t)| (format!("body {k}"), t)))
        .chain(
            headers
                .iter()
                .map(|(h, t)| (format!("header {h}"), t.as_str())),
        );
    for (setting, text) in templates {
        if let Some(problem) = super::secrets::problem(text) {
            problems.push(format!("{at}: {setting}: {problem}"));
        } else if let Err(problem) = crate::deliver::http::check_template(text) {
            problems.push(format!("{at}: {setting}: {problem}"));
        }
    }
    for (name, _) in headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "{at}: header {name:?} is not a header name (letters, digits and `-`)."
            ));
        }
    }
}

fn kind_of(name: &str) -> ChangeKind {
    match name {
        "new" => ChangeKind::New,
        "changed" => ChangeKind::Changed,
        "deleted" => ChangeKind::Deleted,
        _ => ChangeKind::Renamed,
    }
}

/// Requests per second from `10/s`, `600/min`, `1000/h`.
fn rate(text: &str) -> Option<f64> {
    let (count, unit) = text.trim().split_once('/')?;
    let count: f64 = count.trim().parse().ok().filter(|c: &f64| *c > 0.0)?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "min" | "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    // Slower than one a day is no pace anyone means (and no wait a timer can hold).
    Some(count / seconds).filter(|r| *r >= 1.0 / 86_400.0)
}

/// A duration from `500ms`, `30s`, `2m`.
fn duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(millis))
}
