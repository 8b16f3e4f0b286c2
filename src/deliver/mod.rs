//! Deliver: every committed version's change rows handed on to the table's destinations, in
//! version order, each destination from its own cursor (the outbox, [`cursor`]).
//!
//! A version is committed whether or not its delivery succeeds. After a commit (by a run, a
//! rollback or a reset), each destination behind the latest version is brought up to it,
//! version by version; one that fails keeps its cursor where it was and the command exits 5
//! ("committed, not delivered"); the next run or `tidemark deliver` resumes from the cursor.
//! The version a run just committed is handed on from memory ([`Fresh`]); an older one is read
//! back from the store ([`stored`]), to the same rows.
//!
//! Destinations: delta files ([`files`]), each with its cursor in the store; databases
//! ([`database`]: PostgreSQL, SQLite), whose cursor is in the database, applied in the same
//! transaction as the rows.

pub mod cursor;
pub mod database;
pub mod files;
pub mod http;
mod lease;
pub mod postgres;
pub mod sqlite;
pub mod stored;

use crate::error::{Error, Result};
use crate::spec::{ChangeKind, OutputPlan, TablePlan};
use crate::store::Store;

/// What bringing one destination up to date did.
#[derive(Debug)]
pub struct Delivery {
    /// The destination's name.
    pub destination: String,
    /// Its kind: `files`, `postgres`, `sqlite` or `http`.
    pub kind: &'static str,
    /// The versions it received now, ascending.
    pub versions: Vec<u64>,
    /// The files written.
    pub files: Vec<String>,
    /// Its cursor afterwards: the last version it has whole (`None`: it has not joined).
    pub cursor: Option<u64>,
    /// It joined now, at `cursor`: it receives the versions after it.
    pub joined: bool,
    /// Why it stopped short of the latest version.
    pub error: Option<Error>,
    /// Rows in its dead-letter file (an HTTP destination's), after this delivery.
    pub failed_rows: usize,
}

impl Delivery {
    fn new(destination: &str, kind: &'static str) -> Delivery {
        Delivery {
            destination: destination.to_string(),
            kind,
            versions: Vec::new(),
            files: Vec::new(),
            cursor: None,
            joined: false,
            error: None,
            failed_rows: 0,
        }
    }
}

/// The version a run just committed, its delta files written beside their places (one entry
/// per output, in order; `None` for one not prepared).
pub struct Fresh {
    /// The version.
    pub version: u64,
    /// Each output's file, waiting to be put in its place.
    pub prepared: Vec<Option<files::Prepared>>,
}

/// The names of `table`'s file destinations (`output:`), whose cursors the store keeps.
pub fn file_destinations(table: &TablePlan) -> impl Iterator<Item = &str> {
    table.outputs.iter().map(|o| o.name.as_str())
}

/// The names of all of `table`'s destinations: its outputs, then its databases.
pub fn destinations(table: &TablePlan) -> impl Iterator<Item = &str> {
    file_destinations(table).chain(table.destinations.iter().map(|d| d.name.as_str()))
}

/// The names of `table`'s destinations whose cursors the store keeps: its outputs, then its
/// HTTP APIs.
pub fn store_cursors(table: &TablePlan) -> impl Iterator<Item = &str> {
    file_destinations(table).chain(http::destinations(table).map(|(name, _)| name))
}

/// Bring every database and HTTP destination of `tables` (`only`: that one) up to date, the
/// databases first (`retry_failed`: HTTP destinations send their dead letters again first). Returns, per table, what each destination received.
pub async fn deliver_remote(
    plan: &crate::spec::Plan,
    store: &Store,
    tables: &[&TablePlan],
    only: Option<&str>,
    retry_failed: bool,
) -> Vec<(String, Delivery)> {
    let mut out = database::deliver(plan, store, tables, only).await;
    out.extend(http::deliver(store, tables, only, retry_failed).await);
    out
}

/// Make every destination of `table` without a cursor join at `version` (see [`cursor`]).
pub async fn join_missing(store: &Store, table: &TablePlan, version: u64) -> Result<()> {
    cursor::join_missing(store, &table.name, file_destinations(table), version).await?;
    Ok(())
}

/// Bring every destination of `table` (`only`: that one) up to the latest version, version by
/// version. A destination that has not joined joins at the latest version.
pub async fn bring_up_to_date(
    store: &Store,
    table: &TablePlan,
    mut fresh: Option<Fresh>,
    only: Option<&str>,
) -> Vec<Delivery> {
    let versions = match store.versions(&table.name).await {
        Ok(v) => v,
        Err(e) => {
            return (table.outputs.iter())
                .filter(|o| only.is_none_or(|d| d == o.name))
                .map(|o| Delivery {
                    error: Some(not_delivered(table, &o.name, None, &e)),
                    ..Delivery::new(&o.name, "files")
                })
                .collect();
        }
    };
    let mut deliveries = Vec::new();
    for (index, output) in table.outputs.iter().enumerate() {
        if only.is_some_and(|d| d != output.name) {
            continue;
        }
        let mut delivery = Delivery::new(&output.name, "files");
        let prepared = fresh.as_mut().and_then(|f| {
            let version = f.version;
            f.prepared.get_mut(index)?.take().map(|p| (version, p))
        });
        if let Err(e) =
            deliver_output(store, table, output, &versions, prepared, &mut delivery).await
        {
            let at = delivery
                .cursor
                .map(|c| versions.iter().find(|v| **v > c).copied());
            delivery.error = Some(not_delivered(table, &output.name, at.flatten(), &e));
        }
        deliveries.push(delivery);
    }
    deliveries
}

/// Check that every destination of `tables` can be used as written: each `${VAR}` it reads is
/// set, each template compiles. Nothing is connected to.
pub fn check_settings(tables: &[&TablePlan]) -> Result<()> {
    database::check_settings(tables)?;
    http::check_settings(tables)
}

/// The error of a destination left behind.
pub(crate) fn not_delivered(
    table: &TablePlan,
    destination: &str,
    version: Option<u64>,
    e: &Error,
) -> Error {
    Error::Undelivered {
        table: table.name.clone(),
        destination: destination.to_string(),
        version,
        reason: e.to_string(),
    }
}

/// Bring one output up to the latest of `versions` from its cursor.
async fn deliver_output(
    store: &Store,
    table: &TablePlan,
    output: &OutputPlan,
    versions: &[u64],
    mut prepared: Option<(u64, files::Prepared)>,
    delivery: &mut Delivery,
) -> Result<()> {
    let name = table.name.as_str();
    let Some(&latest) = versions.last() else {
        return Ok(());
    };
    let Some(position) = cursor::position(store, name, &output.name).await? else {
        cursor::advance(store, name, &output.name, latest, Vec::new(), true).await?;
        delivery.cursor = Some(latest);
        delivery.joined = true;
        return Ok(());
    };
    delivery.cursor = Some(position);
    let mut at = position;
    for &version in versions.iter().filter(|v| **v > position) {
        let record = store.commit_record(name, version).await?;
        if let Some(read) = record.previous_version.filter(|read| *read > at) {
            return Err(Error::Destination {
                message: format!(
                    "it has v{at}, but the versions after it up to v{read} were removed (vacuum) before it received them, and their deltas with them; to start it afresh with the versions after v{version}, remove its folder under {name}/_deliveries/ in the store"
                ),
            });
        }
        let file = match prepared.take_if(|(v, _)| *v == version) {
            Some((_, file)) => file,
            None => {
                let with_unchanged = output.include.contains(&ChangeKind::Unchanged);
                let delta = stored::delta_of(store, &record, with_unchanged).await?;
                let shaped = files::shape(table, output, &delta).await?;
                let (output, committed_at) = (output.clone(), record.committed_at);
                let table = name.to_string();
                tokio::task::spawn_blocking(move || {
                    files::prepare(&table, &output, version, committed_at, &shaped)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
            }
        };
        let path = file.publish().await?;
        cursor::advance(
            store,
            name,
            &output.name,
            version,
            vec![path.clone()],
            false,
        )
        .await?;
        tracing::info!("{name}: delivered v{version} to {}", output.name);
        delivery.files.push(path);
        delivery.versions.push(version);
        delivery.cursor = Some(version);
        at = version;
    }
    Ok(())
}
