//! HTTP destinations (reverse ETL): each changed row of a version becomes one request, its URL,
//! body and headers rendered from the destination's templates ([`request`]).
//!
//! The cursor is in the store, as for files ([`super::cursor`]): it advances once every row of
//! a version was accepted. Delivery is at least once: a resumed delivery sends the version's
//! rows again, each with the same `Idempotency-Key` (`<run id>-<key>-<version>`, the run that
//! committed the version), so a server that honours it applies each change once. A row the
//! server refuses for good (a 4xx other than 429, or still failing after the retries) stops
//! the destination at that version: the command exits 5 and the next run or `tidemark
//! deliver` sends the version again. A destination that has nothing yet receives the latest
//! snapshot whole, as NEW rows.

mod request;

use datafusion::arrow::array::RecordBatch;
use serde_json::{Map, Value as Json};

pub use request::check_template;
use request::{Pace, Row, Sent, Sources, Templates};

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

/// Bring every HTTP destination of `tables` (`only`: that one) up to its table's latest
/// version. Returns, per table, what each destination received.
pub async fn deliver(
    store: &Store,
    tables: &[&TablePlan],
    only: Option<&str>,
) -> Vec<(String, Delivery)> {
    let mut out = Vec::new();
    for table in tables {
        for (name, plan) in destinations(table) {
            if only.is_some_and(|d| d != name) {
                continue;
            }
            let mut delivery = Delivery::new(name, "http");
            if let Err((version, e)) = deliver_one(store, table, name, plan, &mut delivery).await {
                delivery.error = Some(super::not_delivered(table, name, version, &e));
            }
            out.push((table.name.clone(), delivery));
        }
    }
    out
}

/// Bring one HTTP destination up to date; on failure, the version it stopped at.
async fn deliver_one(
    store: &Store,
    table: &TablePlan,
    name: &str,
    plan: &HttpPlan,
    delivery: &mut Delivery,
) -> std::result::Result<(), (Option<u64>, Error)> {
    let sources = Sources::of(plan);
    let templates = Templates::new(plan, &sources, name).map_err(|e| (None, e))?;
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .build()
        .map_err(|e| (None, destination_error(e.to_string())))?;
    let mut pace = Pace::new(plan.rate_limit);
    let versions = store.versions(&table.name).await.map_err(|e| (None, e))?;
    let position = (cursor::position(store, &table.name, name).await).map_err(|e| (None, e))?;
    delivery.cursor = position;
    let pending: Vec<u64> = match position {
        Some(at) => versions.iter().copied().filter(|v| *v > at).collect(),
        None => versions.last().copied().into_iter().collect(),
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
                        "it has v{at}, but the versions after it up to v{read} were removed (vacuum) before it received them; to send it the latest snapshot whole, remove its folder under {}/_deliveries/ in the store",
                        table.name
                    ))));
                }
                stored::delta_of(store, &record, false).await
            }
            None => stored::snapshot_as_new(store, &record).await,
        }
        .map_err(failed)?;
        let rows = rows_of(table, &record, &delta).map_err(failed)?;
        for row in &rows {
            let key = format!("{}-{}-{version}", record.run_id, row.key_text());
            let Some(request) = templates.request(plan, row, key) else {
                continue;
            };
            let refused = |why: String| {
                failed(destination_error(format!(
                    "the {} row {} was not accepted: {why}",
                    row.kind.canonical(),
                    row.key_text()
                )))
            };
            let request = request.map_err(refused)?;
            if let Sent::Failed(why) =
                request::send(&client, plan, &mut pace, &request, &templates).await
            {
                return Err(refused(why));
            }
        }
        cursor::advance(store, &table.name, name, version, Vec::new(), false)
            .await
            .map_err(failed)?;
        tracing::info!("{}: delivered v{version} to {name}", table.name);
        delivery.versions.push(version);
        delivery.cursor = Some(version);
    }
    Ok(())
}

fn destination_error(message: String) -> Error {
    Error::Destination { message }
}

/// The rows of `delta` with their values as JSON (as a `.json` delta file writes them).
fn rows_of(table: &TablePlan, record: &CommitRecord, delta: &Delta) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for batch in &delta.batches {
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
