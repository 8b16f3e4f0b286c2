//! Database destinations: a pipeline's tables applied to one database in rounds.
//!
//! A round is one transaction. It takes the destination's lock, reads every table's cursor
//! from the target itself (`tidemark_deliveries`), and takes for each table the next version it
//! lacks (a table that has none yet gets its latest snapshot, whole, as NEW rows). It stages
//! those rows, moves renamed keys and upserts (parents first: the dependency order), then
//! deletes (children first), advances the cursors, and commits. So a crash at
//! any moment applies a version wholly or not at all, never twice, and a foreign key between
//! the tables is never violated. Rounds go on until every table is at its latest version.
//!
//! The database itself is one file away ([`Database`]): [`super::postgres`],
//! [`super::sqlite`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Delivery, stored};
use datafusion::arrow::datatypes::DataType;

use crate::diff::{CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Delta, previous_key_column};
use crate::error::{Error, Result};
use crate::spec::secrets::{self, Secret};
use crate::spec::{ChangeKind, DatabasePlan, Deletes, DestinationKind, Plan, TablePlan};
use crate::store::{CommitRecord, Store};

/// A table's rows of one round, and where they go.
pub struct Staged<'a> {
    /// The pipeline's table.
    pub table: &'a TablePlan,
    /// Its destination settings.
    pub target: &'a DatabasePlan,
    /// The rows: the version's delta (value columns, a renamed row's old key columns, the
    /// change type and reason).
    pub delta: Delta,
    /// The version they bring the table to.
    pub record: CommitRecord,
}

impl Staged<'_> {
    /// The delta's value columns (the snapshot's), with their types: not the change type and
    /// reason, nor a renamed row's old key columns.
    pub fn value_columns(&self) -> Vec<(String, DataType)> {
        (self.delta.schema.fields().iter())
            .filter(|f| {
                let name = f.name().as_str();
                name != CHANGE_TYPE_COLUMN
                    && name != CHANGE_REASON_COLUMN
                    && !self
                        .table
                        .key
                        .iter()
                        .any(|k| previous_key_column(k) == name)
            })
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    }
}

/// The column of a staging table that holds each row's change type.
pub const KIND: &str = "_tidemark_kind";

/// The arrays of `names` in a batch of staged rows: the staging table's columns, the change
/// type under [`KIND`].
pub fn staged_columns(
    batch: &datafusion::arrow::array::RecordBatch,
    names: &[String],
) -> Result<Vec<datafusion::arrow::array::ArrayRef>> {
    let schema = batch.schema();
    (names.iter())
        .map(|name| {
            let lookup = match name == KIND {
                true => CHANGE_TYPE_COLUMN,
                false => name.as_str(),
            };
            let at = schema.index_of(lookup).map_err(|e| Error::Destination {
                message: format!("the rows lack column {lookup}: {e}"),
            })?;
            Ok(batch.column(at).clone())
        })
        .collect()
}

/// The round's staging table `index`.
pub fn stage_name(index: usize) -> String {
    quoted(&format!("_tidemark_stage_{index}"))
}

/// An identifier quoted for SQL (both databases quote with `"`).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Identifiers quoted for SQL, comma separated.
pub fn quoted_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    (names.into_iter())
        .map(|n| quoted(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `t.k1 = s.k1 AND …` between the target `t` and the staging table `s` (`staged_side`
/// names the staging table's column for each key column).
pub fn matching(key: &[String], staged_side: impl Fn(&str) -> String) -> String {
    (key.iter())
        .map(|k| format!("t.{} = s.{}", quoted(k), staged_side(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The statement that moves the RENAMED rows of staging table `index` to their new keys in
/// `target` (quoted), in place: `UPDATE … FROM`, which both databases take.
pub fn rename_sql(staged: &Staged<'_>, index: usize, target: &str) -> String {
    let sets: Vec<String> = (staged.value_columns().iter())
        .map(|(c, _)| format!("{} = s.{}", quoted(c), quoted(c)))
        .collect();
    format!(
        "UPDATE {target} AS t SET {} FROM {} AS s WHERE s.{} = '{}' AND {}",
        sets.join(", "),
        stage_name(index),
        quoted(KIND),
        ChangeKind::Renamed.canonical(),
        matching(&staged.table.key, |k| quoted(&previous_key_column(k)))
    )
}

/// The statement that upserts the NEW, CHANGED and RENAMED rows of staging table `index` into
/// `target` (quoted) on the key; a soft-deleted row that comes back is no longer deleted.
pub fn upsert_sql(staged: &Staged<'_>, index: usize, target: &str) -> String {
    let columns = staged.value_columns();
    let list = quoted_list(columns.iter().map(|(c, _)| c));
    let mut sets: Vec<String> = (columns.iter())
        .filter(|(c, _)| !staged.table.key.contains(c))
        .map(|(c, _)| format!("{} = excluded.{}", quoted(c), quoted(c)))
        .collect();
    if let Deletes::Soft(column) = &staged.target.deletes {
        sets.push(format!("{} = NULL", quoted(column)));
    }
    let on_conflict = match sets.is_empty() {
        true => "DO NOTHING".to_string(),
        false => format!("DO UPDATE SET {}", sets.join(", ")),
    };
    let kinds = [ChangeKind::New, ChangeKind::Changed, ChangeKind::Renamed]
        .map(|k| format!("'{}'", k.canonical()))
        .join(", ");
    // `AND true`: SQLite would read ON CONFLICT after a bare FROM as a join's ON. In key
    // order, each row's index lookup and page follow the last one's (the index is in key order,
    // and so is the table, often): measured 20-30% faster than in the delta's order.
    let key = quoted_list(&staged.table.key);
    format!(
        "INSERT INTO {target} ({list}) SELECT {list} FROM {} WHERE {} IN ({kinds}) AND true
         ORDER BY {key} ON CONFLICT ({key}) {on_conflict}",
        stage_name(index),
        quoted(KIND),
    )
}

/// A database that receives a pipeline's changes, one transaction per round.
#[async_trait::async_trait]
pub trait Database: Send {
    /// Begin a round: open the transaction, hold the destination's lock, and return each
    /// table's cursor (the version it has whole).
    async fn begin(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>>;
    /// Make sure `staged`'s target table takes its rows: create it (or add columns) when the
    /// settings allow, else name the column that does not fit. Nothing is written otherwise.
    async fn fit(&mut self, staged: &Staged<'_>) -> Result<()>;
    /// Copy the rows into the round's staging table `index`.
    async fn stage(&mut self, index: usize, staged: &Staged<'_>) -> Result<()>;
    /// Apply the DELETED rows of staging table `index` (delete, soft-delete or leave them).
    async fn delete(&mut self, index: usize, staged: &Staged<'_>) -> Result<()>;
    /// Apply the RENAMED rows: the old key updated in place.
    async fn rename(&mut self, index: usize, staged: &Staged<'_>) -> Result<()>;
    /// Upsert the NEW, CHANGED and RENAMED rows on the key.
    async fn upsert(&mut self, index: usize, staged: &Staged<'_>) -> Result<()>;
    /// Set the table's cursor to the staged version.
    async fn advance(
        &mut self,
        pipeline: &str,
        destination: &str,
        staged: &Staged<'_>,
    ) -> Result<()>;
    /// Commit the round.
    async fn commit(&mut self) -> Result<()>;
    /// Each table's cursor for `destination` of `pipeline`, read outside a round.
    async fn cursors(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>>;
}

/// The kinds of database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Sqlite => "sqlite",
        }
    }

    /// Connect to (open) the database at `url`.
    async fn connect(self, url: &Secret) -> Result<Box<dyn Database>> {
        Ok(match self {
            Kind::Postgres => Box::new(super::postgres::Postgres::connect(url).await?),
            Kind::Sqlite => Box::new(super::sqlite::Sqlite::open(url.expose())?),
        })
    }
}

/// One database destination of a pipeline: its name, connection, and the tables it takes.
struct Group<'a> {
    name: &'a str,
    kind: Kind,
    url: &'a str,
    tables: Vec<(&'a TablePlan, &'a DatabasePlan)>,
}

/// The database destinations of `tables` (`only`: that one), each with its tables in the
/// pipeline's (dependency) order.
fn groups<'a>(tables: &[&'a TablePlan], only: Option<&str>) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for table in tables {
        for destination in &table.destinations {
            if only.is_some_and(|d| d != destination.name) {
                continue;
            }
            let (kind, target) = match &destination.kind {
                DestinationKind::Postgres(target) => (Kind::Postgres, target),
                DestinationKind::Sqlite(target) => (Kind::Sqlite, target),
                DestinationKind::Http(_) => continue,
            };
            let name = destination.name.as_str();
            let same = |g: &&mut Group<'a>| g.name == name && g.kind == kind && g.url == target.url;
            match groups.iter_mut().find(same) {
                Some(group) => group.tables.push((table, target)),
                None => groups.push(Group {
                    name,
                    kind,
                    url: &target.url,
                    tables: vec![(table, target)],
                }),
            }
        }
    }
    groups
}

/// Bring every database destination of `tables` up to their latest versions. Returns, per
/// table, what each destination received.
pub async fn deliver(
    plan: &Plan,
    store: &Store,
    tables: &[&TablePlan],
    only: Option<&str>,
) -> Vec<(String, Delivery)> {
    let mut out = Vec::new();
    for group in groups(tables, only) {
        let mut deliveries: Vec<Delivery> = (group.tables.iter())
            .map(|_| Delivery::new(group.name, group.kind.name()))
            .collect();
        let secret = secrets::expand(group.url, &format!("destination {}: url", group.name));
        let outcome = match secret {
            Ok(secret) => deliver_group(plan, store, &group, &secret, &mut deliveries)
                .await
                .map_err(|e| redacted(e, &secret)),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            for (delivery, (table, _)) in deliveries.iter_mut().zip(&group.tables) {
                let lacked = next_version(store, table, delivery.cursor).await;
                let version = lacked.ok().flatten().map(|r| r.version);
                delivery.error = Some(super::not_delivered(table, group.name, version, &e));
            }
        }
        for (delivery, (table, _)) in deliveries.into_iter().zip(&group.tables) {
            out.push((table.name.clone(), delivery));
        }
    }
    out
}

/// `e` with the secret's values taken out of its words.
fn redacted(e: Error, secret: &Secret) -> Error {
    Error::Destination {
        message: secret.redact(&e.to_string()),
    }
}

/// Rounds until every table of `group` is at its latest version.
async fn deliver_group(
    plan: &Plan,
    store: &Store,
    group: &Group<'_>,
    secret: &Secret,
    deliveries: &mut [Delivery],
) -> Result<()> {
    let mut database = group.kind.connect(secret).await?;
    loop {
        let cursors = database.begin(&plan.name, group.name).await?;
        let mut staged = Vec::new();
        for (index, (table, target)) in group.tables.iter().enumerate() {
            let cursor = cursors.get(&table.name).copied();
            deliveries[index].cursor = cursor;
            if let Some(next) = next_version(store, table, cursor).await? {
                let delta = match cursor {
                    Some(_) => stored::delta_of(store, &next, false).await?,
                    None => stored::snapshot_as_new(store, &next).await?,
                };
                staged.push((
                    index,
                    Staged {
                        table,
                        target,
                        delta,
                        record: next,
                    },
                ));
            }
        }
        if staged.is_empty() {
            database.commit().await?;
            return Ok(());
        }
        for (_, s) in &staged {
            database.fit(s).await?;
        }
        for (i, s) in &staged {
            database.stage(*i, s).await?;
        }
        // Parents first for upserts (a child's new parent exists before it), then children
        // first for deletes (a parent goes once nothing points at it any more; a child that
        // moved to another parent was moved by its upsert).
        for (i, s) in &staged {
            database.rename(*i, s).await?;
            database.upsert(*i, s).await?;
        }
        for (i, s) in staged.iter().rev() {
            database.delete(*i, s).await?;
            database.advance(&plan.name, group.name, s).await?;
        }
        database.commit().await?;
        for (i, s) in &staged {
            tracing::info!(
                "{}: delivered v{} to {}",
                s.table.name,
                s.record.version,
                group.name
            );
            deliveries[*i].versions.push(s.record.version);
            deliveries[*i].cursor = Some(s.record.version);
        }
    }
}

/// The version a table with `cursor` receives next: the first visible one above it, or with
/// no cursor the latest (its snapshot whole).
async fn next_version(
    store: &Store,
    table: &TablePlan,
    cursor: Option<u64>,
) -> Result<Option<CommitRecord>> {
    let versions = store.versions(&table.name).await?;
    let next = match cursor {
        Some(c) => versions.iter().find(|v| **v > c).copied(),
        None => versions.last().copied(),
    };
    let Some(next) = next else {
        return Ok(None);
    };
    let record = store.commit_record(&table.name, next).await?;
    if let (Some(c), Some(read)) = (cursor, record.previous_version)
        && read > c
    {
        return Err(Error::Destination {
            message: format!(
                "table {}: the destination has v{c}, but the versions after it up to v{read} were removed (vacuum) before it received them; delete its row in tidemark_deliveries and it receives the latest snapshot whole",
                table.name
            ),
        });
    }
    Ok(Some(record))
}

/// Where one table is in one database destination.
pub struct Position {
    /// The table.
    pub table: String,
    /// The destination's name.
    pub destination: String,
    /// `postgres` or `sqlite`.
    pub kind: &'static str,
    /// The version it has whole (`None`: nothing yet), or why that cannot be read.
    pub at: Result<Option<u64>>,
}

/// Where each database destination of `tables` is, per table.
pub async fn positions(plan: &Plan, tables: &[&TablePlan]) -> Vec<Position> {
    let mut out = Vec::new();
    for group in groups(tables, None) {
        let read = async {
            let secret = secrets::expand(group.url, &format!("destination {}: url", group.name))?;
            let found = async {
                let mut database = group.kind.connect(&secret).await?;
                database.cursors(&plan.name, group.name).await
            };
            found.await.map_err(|e| redacted(e, &secret))
        };
        match read.await {
            Ok(cursors) => {
                for (table, _) in &group.tables {
                    let at = cursors.get(&table.name).copied();
                    out.push(Position {
                        table: table.name.clone(),
                        destination: group.name.to_string(),
                        kind: group.kind.name(),
                        at: Ok(at),
                    });
                }
            }
            Err(e) => {
                for (table, _) in &group.tables {
                    let e = Error::Destination {
                        message: e.to_string(),
                    };
                    out.push(Position {
                        table: table.name.clone(),
                        destination: group.name.to_string(),
                        kind: group.kind.name(),
                        at: Err(e),
                    });
                }
            }
        }
    }
    out
}

/// Check that every database destination of `tables` can be connected to as written: each
/// `${VAR}` of its URL is set. Nothing is connected.
pub fn check_settings(tables: &[&TablePlan]) -> Result<()> {
    for group in groups(tables, None) {
        secrets::expand(group.url, &format!("destination {}: url", group.name))?;
    }
    Ok(())
}

/// The commit time a soft delete writes.
pub fn deleted_at(record: &CommitRecord) -> DateTime<Utc> {
    record.committed_at
}
