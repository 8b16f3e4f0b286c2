//! The dead-letter file of an HTTP destination: the rows the server refused for good, one JSON
//! object per line (the row, the status, the response body), in the store beside the
//! destination's cursor. `tidemark deliver --retry-failed` sends them again.
//!
//! While a key has a dead letter, its later changes are not sent but folded into the letter:
//! the server never took the earlier change, so the later one alone would address what it
//! does not have (a change of an item it never created). A NEW then CHANGED row waits as NEW
//! with the latest values; NEW then DELETED leaves nothing to send; a DELETED row followed by
//! NEW becomes CHANGED (the server still has the item).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::request::Row;
use crate::error::{Error, Result};
use crate::spec::ChangeKind;
use crate::store::Store;

const FILE_NAME: &str = "dead_letters.jsonl";

/// One row the server refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(flatten)]
    pub row: Row,
    /// The `Idempotency-Key` it was sent with, and is sent with again.
    pub idempotency_key: String,
    /// The server's last answer.
    pub status: u16,
    pub response: String,
    /// What failed, in words.
    pub error: String,
    pub failed_at: DateTime<Utc>,
}

/// The dead letters of one destination, by key.
pub struct DeadLetters {
    table: String,
    relative: String,
    letters: BTreeMap<String, DeadLetter>,
    changed: bool,
}

impl DeadLetters {
    /// The relative path of the dead-letter file of the destination whose records are in
    /// `<table>/<folder>`.
    pub fn relative(folder: &str) -> String {
        format!("{folder}/{FILE_NAME}")
    }

    /// Read the dead letters in `<table>/<folder>` (no file: none).
    pub async fn open(store: &Store, table: &str, folder: &str) -> Result<DeadLetters> {
        let relative = Self::relative(folder);
        let mut letters = BTreeMap::new();
        if store
            .file_names(table, folder)
            .await?
            .iter()
            .any(|n| n == FILE_NAME)
        {
            let bytes = store.read_file(table, &relative).await?;
            for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let letter: DeadLetter = serde_json::from_slice(line).map_err(|e| Error::Store {
                    location: store.file_url(table, &relative),
                    message: format!(
                        "line {} of the dead-letter file does not read ({e}); mend or remove that line",
                        number + 1
                    ),
                })?;
                letters.insert(letter.row.key_text(), letter);
            }
        }
        Ok(DeadLetters {
            table: table.to_string(),
            relative,
            letters,
            changed: false,
        })
    }

    pub fn len(&self) -> usize {
        self.letters.len()
    }

    /// The dead letters, oldest version first.
    pub fn by_version(&self) -> Vec<DeadLetter> {
        let mut letters: Vec<DeadLetter> = self.letters.values().cloned().collect();
        letters.sort_by_key(|l| l.row.version);
        letters
    }

    pub fn put(&mut self, letter: DeadLetter) {
        self.letters.insert(letter.row.key_text(), letter);
        self.changed = true;
    }

    /// Fold `row` into the dead letter of its key (a RENAMED row's previous key), if it has
    /// one (see the module's words); else give it back.
    pub fn absorb(&mut self, row: Row, idempotency_key: String) -> Option<(Row, String)> {
        let held = row.previous_key_text().unwrap_or_else(|| row.key_text());
        let Some(mut letter) = self.letters.remove(&held) else {
            return Some((row, idempotency_key));
        };
        // Already folded in (a delivery cut off before it saved the row's confirmation).
        if letter.row.version >= row.version {
            self.letters.insert(held, letter);
            return None;
        }
        self.changed = true;
        let earlier = letter.row;
        let folded = match (earlier.kind, row.kind) {
            (ChangeKind::New, ChangeKind::Deleted) => None,
            (ChangeKind::New, _) => Some(Row {
                kind: ChangeKind::New,
                previous_key: None,
                ..row
            }),
            (ChangeKind::Deleted, _) => Some(Row {
                kind: ChangeKind::Changed,
                previous_key: None,
                ..row
            }),
            (_, ChangeKind::Deleted) => Some(Row {
                key: earlier.previous_key.unwrap_or(earlier.key),
                previous_key: None,
                ..row
            }),
            _ => {
                let previous_key = earlier.previous_key.or(row.previous_key.clone());
                let kind = match previous_key {
                    Some(_) => ChangeKind::Renamed,
                    None => ChangeKind::Changed,
                };
                Some(Row {
                    kind,
                    previous_key,
                    ..row
                })
            }
        };
        if let Some(row) = folded {
            // A NEW the server may have taken after all keeps the key it was sent with.
            if row.kind != ChangeKind::New {
                letter.idempotency_key = idempotency_key;
            }
            letter.row = row;
            self.letters.insert(letter.row.key_text(), letter);
        }
        None
    }

    /// Clear the dead letter of `key`, if there is one.
    pub fn clear(&mut self, key: &str) {
        if self.letters.remove(key).is_some() {
            self.changed = true;
        }
    }

    /// Write the file again if it changed (remove it once empty).
    pub async fn save(&mut self, store: &Store) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        if self.letters.is_empty() {
            store.remove_record(&self.table, &self.relative).await?;
        } else {
            let mut bytes = Vec::new();
            for letter in self.letters.values() {
                serde_json::to_writer(&mut bytes, letter).map_err(|e| Error::Store {
                    location: store.file_url(&self.table, &self.relative),
                    message: e.to_string(),
                })?;
                bytes.push(b'\n');
            }
            store
                .put_plain(&self.table, &self.relative, bytes.into())
                .await?;
        }
        self.changed = false;
        Ok(())
    }
}
