//! HTTP destinations (reverse ETL): each changed row of a version becomes one request, its URL,
//! body and headers rendered from the destination's templates ([`request`]), sent with retries
//! at the destination's pace ([`send`]), up to `concurrency` at once.
//!
//! The cursor is in the store, as for files ([`super::cursor`]): it advances once every row of
//! a version has an outcome. Delivery is at least once, each row always with the same
//! `Idempotency-Key` (`<run id>-<key>-<version>`, the run that committed the version), so a
//! server that honours it applies each change once. What is learnt on the way (the rows the
//! server confirmed, the response fields `remember:` keeps) is saved in the store as it goes
//! ([`progress`]), so a resumed delivery sends only what was not confirmed. A row the server
//! refuses for good (a 4xx other than 408, 409 and 429, or a 5xx after the retries) goes to the
//! dead-letter file ([`dead_letters`]) and delivery goes on (`on_failure: stop` halts at that
//! version instead); a server that does not answer, or still answers 429, stops delivery at
//! the version. A destination that has nothing yet receives the latest snapshot whole, as NEW
//! rows.

mod dead_letters;
mod journal;
mod progress;
mod request;
mod send;

use std::collections::{HashSet, VecDeque};

use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Map, Value as Json};

use dead_letters::DeadLetters;
use progress::{Pending, Progress};
pub use request::check_template;
use request::{Row, Sources, Templates};
use send::Pace;

use super::lease::Lease;
use super::{Delivery, cursor, stored};
use crate::diff::{CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Delta, previous_key_column};
use crate::error::{Error, Result};
use crate::spec::{ChangeKind, DestinationKind, HttpPlan, TablePlan};
use crate::store::{CommitRecord, Store};

/// The names of `table`'s HTTP destinations, whose cursors the store keeps.
pub fn destinations(table: &TablePlan) -> impl Iterator<Item = (&str, &HttpPlan)> {
    (table.destinations.iter()).filter_map(|d| match &d.kind {
        DestinationKind::Http(plan) => Some((d.name.as_str(), plan.as_ref())),
        _ => None,
    })
}

/// Check that every HTTP destination of `tables` can be used as written: each `${VAR}` of its
/// templates is set.
pub fn check_settings(tables: &[&TablePlan]) -> Result<()> {
    for table in tables {
        for (name, plan) in destinations(table) {
            Templates::new(plan, &Sources::of(plan), name)?;
        }
    }
    Ok(())
}

/// How many rows of `table`'s HTTP destination `name` are in its dead-letter file, and where
/// that file is.
pub async fn dead_letters(store: &Store, table: &str, name: &str) -> Result<(usize, String)> {
    let folder = cursor::folder(name);
    let letters = DeadLetters::open(store, table, &folder).await?;
    Ok((
        letters.len(),
        store.file_url(table, &DeadLetters::relative(&folder)),
    ))
}

/// Bring every HTTP destination of `tables` (`only`: that one) up to its table's latest
/// version, first sending the dead letters again when `retry_failed`. Returns, per table,
/// what each destination received.
pub async fn deliver(
    store: &Store,
    tables: &[&TablePlan],
    only: Option<&str>,
    retry_failed: bool,
) -> Vec<(String, Delivery)> {
    let mut out = Vec::new();
    for table in tables {
        for (name, plan) in destinations(table) {
            if only.is_some_and(|d| d != name) {
                continue;
            }
            let mut delivery = Delivery::new(name, "http");
            let done = deliver_one(store, table, name, plan, retry_failed, &mut delivery).await;
            delivery.error = match done {
                Err((version, e)) => Some(super::not_delivered(table, name, version, &e)),
                Ok(0) => None,
                Ok(refused) => Some(refused_now(store, &table.name, name, refused).await),
            };
            out.push((table.name.clone(), delivery));
        }
    }
    out
}

/// The parts of a destination that every request uses.
struct Link<'a> {
    plan: &'a HttpPlan,
    client: reqwest::Client,
    pace: Pace,
    templates: Templates<'a>,
}

/// Bring one HTTP destination up to date: how many rows went to the dead letters on the way;
/// on failure, the version it stopped at.
async fn deliver_one(
    store: &Store,
    table: &TablePlan,
    name: &str,
    plan: &HttpPlan,
    retry_failed: bool,
    delivery: &mut Delivery,
) -> std::result::Result<usize, (Option<u64>, Error)> {
    let sources = Sources::of(plan);
    let link = Link {
        plan,
        client: reqwest::Client::builder()
            .timeout(plan.timeout)
            .build()
            .map_err(|e| (None, destination_error(e.to_string())))?,
        pace: Pace::new(plan.rate_limit),
        templates: Templates::new(plan, &sources, name).map_err(|e| (None, e))?,
    };
    let folder = cursor::folder(name);
    let what = format!("{}: destination {name}", table.name);
    let lease = (Lease::take(store, &table.name, &folder, &what).await).map_err(|e| (None, e))?;
    let outcome = deliver_held(store, table, name, &link, retry_failed, delivery).await;
    let released = lease.release().await;
    let dead_now = outcome?;
    released.map_err(|e| (None, e))?;
    Ok(dead_now)
}

/// [`deliver_one`] once the destination's lease is held.
async fn deliver_held(
    store: &Store,
    table: &TablePlan,
    name: &str,
    link: &Link<'_>,
    retry_failed: bool,
    delivery: &mut Delivery,
) -> std::result::Result<usize, (Option<u64>, Error)> {
    let folder = cursor::folder(name);
    let mut progress =
        (Progress::open(store, &table.name, &folder).await).map_err(|e| (None, e))?;
    let outcome = deliver_versions(
        store,
        table,
        name,
        link,
        &mut progress,
        retry_failed,
        delivery,
    );
    let outcome = outcome.await;
    delivery.failed_rows = progress.dead.len();
    outcome?;
    Ok(progress.dead_now)
}

/// The error that says `refused` rows of this delivery went to the dead-letter file: the
/// versions were delivered, those rows were not (exit 5).
async fn refused_now(store: &Store, table: &str, name: &str, refused: usize) -> Error {
    let (rows, were, wait, them) = match refused {
        1 => ("1 row".to_string(), "was", "waits", "it"),
        n => (format!("{n} rows"), "were", "wait", "them"),
    };
    match dead_letters(store, table, name).await {
        Err(e) => e,
        Ok((_, file)) => destination_error(format!(
            "{name}: {rows} {were} refused by the server and {wait} in the dead-letter file {file} (with the status and the response); once the server takes {them}, `tidemark deliver --retry-failed` sends {them} again"
        )),
    }
}

async fn deliver_versions(
    store: &Store,
    table: &TablePlan,
    name: &str,
    link: &Link<'_>,
    progress: &mut Progress,
    retry_failed: bool,
    delivery: &mut Delivery,
) -> std::result::Result<(), (Option<u64>, Error)> {
    let versions = store.versions(&table.name).await.map_err(|e| (None, e))?;
    let position = (cursor::position(store, &table.name, name).await).map_err(|e| (None, e))?;
    delivery.cursor = position;
    if retry_failed {
        let letters = progress.dead.by_version();
        let mut rows = letters.into_iter().map(|letter| {
            Ok(Pending {
                row: letter.row,
                idempotency_key: letter.idempotency_key,
            })
        });
        send_all(store, link, progress, &mut rows, None)
            .await
            .map_err(|e| (None, e))?;
    }
    let pending: Vec<u64> = match position {
        Some(at) => versions.iter().copied().filter(|v| *v > at).collect(),
        // A first delivery cut off goes on with the snapshot it began (its rows were sent
        // with that version's keys), then the versions after it.
        None => match progress.version_in_progress() {
            Some(begun) if versions.contains(&begun) => {
                versions.iter().copied().filter(|v| *v >= begun).collect()
            }
            _ => versions.last().copied().into_iter().collect(),
        },
    };
    for version in pending {
        let failed = |e: Error| (Some(version), e);
        let record = store
            .commit_record(&table.name, version)
            .await
            .map_err(failed)?;
        let delta = match delivery.cursor {
            Some(at) => {
                if let Some(read) = record.previous_version.filter(|read| *read > at) {
                    return Err(failed(destination_error(format!(
                        "it has v{at}, but the versions after it up to v{read} were removed (vacuum) before it received them; to send it the latest snapshot whole, remove its folder under {}/_deliveries/ in the store (every row is then sent as NEW, and the remembered ids and dead letters kept there go with it: clear the API's items first)",
                        table.name
                    ))));
                }
                stored::delta_of(store, &record, false).await
            }
            None => stored::snapshot_as_new(store, &record).await,
        }
        .map_err(failed)?;
        if delivery.cursor.is_none() {
            progress.begin_first(store, version).await.map_err(failed)?;
        }
        let confirmed = progress
            .confirmed_of(store, version)
            .await
            .map_err(failed)?;
        let mut rows = VersionRows::new(table, &record, &delta, confirmed);
        send_all(store, link, progress, &mut rows, Some(version))
            .await
            .map_err(failed)?;
        cursor::advance(store, &table.name, name, version, Vec::new(), false)
            .await
            .map_err(failed)?;
        progress.version_done(store).await.map_err(failed)?;
        tracing::info!("{}: delivered v{version} to {name}", table.name);
        delivery.versions.push(version);
        delivery.cursor = Some(version);
    }
    Ok(())
}

/// Send `rows`, up to the destination's concurrency at once, taking in each outcome
/// (`version`: the rows are that version's, and their confirmations are kept). On an error
/// nothing more is started; the requests in flight are awaited and taken in first.
async fn send_all(
    store: &Store,
    link: &Link<'_>,
    progress: &mut Progress,
    rows: &mut dyn Iterator<Item = Result<Pending>>,
    version: Option<u64>,
) -> Result<()> {
    let mut in_flight = FuturesUnordered::new();
    let mut stop: Option<Error> = None;
    loop {
        while stop.is_none() && in_flight.len() < link.plan.concurrency {
            let Some(next) = rows.next() else {
                break;
            };
            let pending = match (next, version) {
                (Ok(pending), None) => pending,
                (Ok(pending), Some(version)) => match progress.unless_held(pending, version) {
                    Some(pending) => pending,
                    None => continue,
                },
                (Err(e), _) => {
                    stop = Some(e);
                    break;
                }
            };
            let remote = progress.remote(link.plan, &pending.row);
            let key = pending.idempotency_key.clone();
            let request = match link
                .templates
                .request(link.plan, &pending.row, key, &remote)
            {
                // Not sent (its change type has no method): a dead letter of it has nothing
                // left to send either.
                None => {
                    if version.is_none() {
                        progress.dead.clear(&pending.row.key_text());
                    }
                    continue;
                }
                // A row that cannot be made into a request is that row's failure.
                Some(Err(why)) => {
                    let response = String::new();
                    let sent = send::Sent::Refused {
                        status: 0,
                        response,
                        why,
                    };
                    if let Err(e) = progress.outcome(link.plan, pending, sent, version) {
                        stop = Some(e);
                    }
                    continue;
                }
                Some(Ok(request)) => request,
            };
            in_flight.push(async move {
                let sent = send::send(
                    &link.client,
                    link.plan,
                    &link.pace,
                    &request,
                    &link.templates,
                );
                (pending, sent.await)
            });
        }
        let Some((pending, sent)) = in_flight.next().await else {
            break;
        };
        if let Err(e) = progress.outcome(link.plan, pending, sent, version) {
            stop.get_or_insert(e);
        }
        progress.save_now_and_then(store).await?;
    }
    progress.save(store).await?;
    stop.map_or(Ok(()), Err)
}

/// The rows of a version's delta not yet confirmed, read a batch at a time.
struct VersionRows<'a> {
    table: &'a TablePlan,
    record: &'a CommitRecord,
    batches: std::slice::Iter<'a, RecordBatch>,
    ready: VecDeque<Row>,
    confirmed: HashSet<String>,
}

impl<'a> VersionRows<'a> {
    fn new(
        table: &'a TablePlan,
        record: &'a CommitRecord,
        delta: &'a Delta,
        confirmed: HashSet<String>,
    ) -> VersionRows<'a> {
        VersionRows {
            table,
            record,
            batches: delta.batches.iter(),
            ready: VecDeque::new(),
            confirmed,
        }
    }
}

impl Iterator for VersionRows<'_> {
    type Item = Result<Pending>;

    fn next(&mut self) -> Option<Result<Pending>> {
        loop {
            if let Some(row) = self.ready.pop_front() {
                let key = row.key_text();
                if self.confirmed.contains(&key) {
                    continue;
                }
                let version = self.record.version;
                let idempotency_key = format!("{}-{key}-{version}", self.record.run_id);
                return Some(Ok(Pending {
                    row,
                    idempotency_key,
                }));
            }
            let batch = self.batches.next()?;
            match rows_of(self.table, self.record, batch) {
                Ok(rows) => self.ready.extend(rows),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn destination_error(message: String) -> Error {
    Error::Destination { message }
}

/// The rows of `batch` with their values as JSON (as a `.json` delta file writes them).
fn rows_of(table: &TablePlan, record: &CommitRecord, batch: &RecordBatch) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for object in json_objects(batch)? {
        let kind = match object.get(CHANGE_TYPE_COLUMN).and_then(Json::as_str) {
            Some("NEW") => ChangeKind::New,
            Some("CHANGED") => ChangeKind::Changed,
            Some("DELETED") => ChangeKind::Deleted,
            Some("RENAMED") => ChangeKind::Renamed,
            _ => continue,
        };
        let pick = |names: &mut dyn Iterator<Item = (String, String)>| -> Map<String, Json> {
            names
                .map(|(from, to)| (to, object.get(&from).cloned().unwrap_or(Json::Null)))
                .collect()
        };
        let values = pick(
            &mut record
                .schema
                .iter()
                .map(|c| (c.name.clone(), c.name.clone())),
        );
        let key = pick(&mut table.key.iter().map(|k| (k.clone(), k.clone())));
        let previous_key = (kind == ChangeKind::Renamed).then(|| {
            pick(
                &mut table
                    .key
                    .iter()
                    .map(|k| (previous_key_column(k), k.clone())),
            )
        });
        rows.push(Row {
            kind,
            values,
            key,
            previous_key,
            reason: object
                .get(CHANGE_REASON_COLUMN)
                .cloned()
                .unwrap_or(Json::Null),
            table: table.name.clone(),
            version: record.version,
        });
    }
    Ok(rows)
}

/// Each row of `batch` as a JSON object, nulls written out.
fn json_objects(batch: &RecordBatch) -> Result<Vec<Map<String, Json>>> {
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| destination_error(format!("the rows could not be written as JSON: {e}")))?;
    drop(writer);
    (out.split(|b| *b == b'\n'))
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| destination_error(format!("the rows as JSON do not read: {e}")))
        })
        .collect()
}
