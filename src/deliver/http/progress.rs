//! What an HTTP destination knows beyond its cursor, kept in the store as it is learnt: which
//! rows of the version being delivered the server confirmed (so a resumed delivery sends only
//! the others), the response fields `remember:` keeps per key, and the dead letters.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value as Json};

use super::dead_letters::{DeadLetter, DeadLetters};
use super::journal::Journal;
use super::request::Row;
use super::send::Sent;
use crate::error::{Error, Result};
use crate::spec::{ChangeKind, HttpPlan, OnFailure};
use crate::store::Store;

/// The entry of [`Progress::begin_first`]; a key as text never holds a `/`.
const BEGUN: &str = "begun/";

/// What removing a damaged file of each journal costs, for the message that names it.
const FORGETS_IDS: &str = "restore it from a copy of the store if there is one; removing it forgets the remote ids it kept, and later changes of those rows then wait in the dead letters (their URL needs an id no answer gave)";
const SENDS_AGAIN: &str =
    "remove it: the rows it confirmed are sent again (with the same Idempotency-Key)";

/// How often what was learnt is saved during a delivery (and always at its end).
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A row to send, with the `Idempotency-Key` it is always sent with.
pub struct Pending {
    pub row: Row,
    pub idempotency_key: String,
}

/// A destination's progress: see the module's words.
pub struct Progress {
    remembered: Journal,
    confirmed: Journal,
    pub dead: DeadLetters,
    /// Rows that went to the dead letters in this delivery.
    pub dead_now: usize,
    saved_at: Instant,
}

impl Progress {
    /// Read the progress of the destination whose records are in `<table>/<folder>`.
    pub async fn open(store: &Store, table: &str, folder: &str) -> Result<Progress> {
        Ok(Progress {
            remembered: Journal::open(store, table, format!("{folder}/remembered"), FORGETS_IDS)
                .await?,
            confirmed: Journal::open(store, table, format!("{folder}/confirmed"), SENDS_AGAIN)
                .await?,
            dead: DeadLetters::open(store, table, folder).await?,
            dead_now: 0,
            saved_at: Instant::now(),
        })
    }

    /// The keys (as text) of the rows of `version` the server confirmed; what was confirmed of
    /// another version (one delivered whole since) is forgotten.
    pub async fn confirmed_of(&mut self, store: &Store, version: u64) -> Result<HashSet<String>> {
        let prefix = format!("{version}/");
        let keys: HashSet<String> = (self.confirmed.keys())
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        if keys.len() < self.confirmed.len() {
            self.confirmed.remove(store).await?;
            for key in &keys {
                self.confirmed
                    .set(format!("{prefix}{key}"), Json::Bool(true));
            }
        }
        Ok(keys)
    }

    /// Save, before any row of it is sent, that the first delivery sends `version`'s snapshot:
    /// its rows carry that version's keys, so a delivery resumed after a newer commit must
    /// finish this snapshot rather than begin another.
    pub async fn begin_first(&mut self, store: &Store, version: u64) -> Result<()> {
        self.confirmed
            .set(format!("{version}/{BEGUN}"), Json::Bool(true));
        self.save(store).await
    }

    /// The version whose rows were being confirmed when a delivery stopped, if any.
    pub fn version_in_progress(&self) -> Option<u64> {
        (self.confirmed.keys())
            .filter_map(|k| k.split_once('/')?.0.parse().ok())
            .min()
    }

    /// `version` was delivered whole: forget which of its rows were confirmed.
    pub async fn version_done(&mut self, store: &Store) -> Result<()> {
        self.save(store).await?;
        self.confirmed.remove(store).await?;
        self.remembered.compact(store).await
    }

    /// What `remember:` kept for `row`'s key (a RENAMED row's previous key), each name given
    /// (a null where nothing is known yet).
    pub fn remote(&self, plan: &HttpPlan, row: &Row) -> Map<String, Json> {
        let key = row.previous_key_text().unwrap_or_else(|| row.key_text());
        let kept = self.remembered.get(&key).and_then(Json::as_object);
        (plan.remember.iter())
            .map(|(name, _)| {
                let value = kept.and_then(|k| k.get(name)).cloned();
                (name.clone(), value.unwrap_or(Json::Null))
            })
            .collect()
    }

    /// `pending` (a row of `version`) if it is to be sent; `None` when its key has a dead
    /// letter, which takes it in instead (see [`DeadLetters::absorb`]), and it counts as done.
    pub fn unless_held(&mut self, pending: Pending, version: u64) -> Option<Pending> {
        let key = pending.row.key_text();
        match self.dead.absorb(pending.row, pending.idempotency_key) {
            Some((row, idempotency_key)) => Some(Pending {
                row,
                idempotency_key,
            }),
            None => {
                self.confirmed
                    .set(format!("{version}/{key}"), Json::Bool(true));
                None
            }
        }
    }

    /// Take in how sending `pending` ended; an error when delivery must stop.
    pub fn outcome(
        &mut self,
        plan: &HttpPlan,
        pending: Pending,
        sent: Sent,
        version: Option<u64>,
    ) -> Result<()> {
        let key = pending.row.key_text();
        match sent {
            Sent::Accepted(body) => {
                self.remember(plan, &pending.row, &body);
                self.dead.clear(&key);
            }
            Sent::Refused {
                status,
                response,
                why,
            } if plan.on_failure == OnFailure::DeadLetter => {
                tracing::warn!(
                    "{}: the row {} went to the dead letters: {why}",
                    pending.row.table,
                    pending.row.key_shown()
                );
                self.dead.put(DeadLetter {
                    row: pending.row,
                    idempotency_key: pending.idempotency_key,
                    status,
                    response,
                    error: why,
                    failed_at: Utc::now(),
                });
                self.dead_now += 1;
            }
            Sent::Refused { why, .. } | Sent::Unreachable(why) => {
                return Err(refused(&pending.row, why));
            }
        }
        if let Some(version) = version {
            self.confirmed
                .set(format!("{version}/{key}"), Json::Bool(true));
        }
        Ok(())
    }

    /// Keep what `plan.remember` names of the response `body` for `row`'s key.
    fn remember(&mut self, plan: &HttpPlan, row: &Row, body: &str) {
        if plan.remember.is_empty() {
            return;
        }
        let key = row.key_text();
        if row.kind == ChangeKind::Deleted {
            self.remembered.clear(&key);
            return;
        }
        let earlier = match row.previous_key_text() {
            Some(previous) => {
                let kept = self.remembered.get(&previous).cloned();
                self.remembered.clear(&previous);
                kept
            }
            None => self.remembered.get(&key).cloned(),
        };
        let mut kept = match earlier {
            Some(Json::Object(map)) => map,
            _ => Map::new(),
        };
        if let Ok(response) = serde_json::from_str::<Json>(body) {
            for (name, pointer) in &plan.remember {
                match response.pointer(pointer) {
                    Some(Json::Null) | None => {}
                    Some(value) => {
                        kept.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        if !kept.is_empty() {
            self.remembered.set(key, Json::Object(kept));
        }
    }

    /// Save what was learnt, if the last save is a while ago.
    pub async fn save_now_and_then(&mut self, store: &Store) -> Result<()> {
        match self.saved_at.elapsed() >= SAVE_EVERY {
            true => self.save(store).await,
            false => Ok(()),
        }
    }

    /// Save what was learnt: the ids and dead letters before the confirmations, so a crash in
    /// between sends a row again rather than losing what its answer said.
    pub async fn save(&mut self, store: &Store) -> Result<()> {
        self.remembered.save(store).await?;
        self.dead.save(store).await?;
        self.confirmed.save(store).await?;
        self.saved_at = Instant::now();
        Ok(())
    }
}

/// The error that stops a delivery at `row`.
pub fn refused(row: &Row, why: String) -> Error {
    Error::Destination {
        message: format!(
            "the {} row {} was not accepted: {why}",
            row.kind.canonical(),
            row.key_shown()
        ),
    }
}
