//! A map from text keys to JSON values kept in the store as a log of small files, so that what
//! a long delivery learns (which rows the server confirmed, the ids it answered) is saved as it
//! goes, without rewriting everything it knows each time.
//!
//! Each file `j<number>.json` holds `{"base": bool, "entries": {key: value or null}}`: what
//! changed since the file before it (null: the key was cleared). A `base` file holds every
//! entry and stands for all the files before it, which [`Journal::compact`] then removes; a
//! crash between the two leaves files that the base already overrides.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::store::Store;

/// Files of changes beyond which [`Journal::compact`] writes a base.
const FILES_BEFORE_A_BASE: usize = 16;

#[derive(Serialize, Deserialize)]
struct JournalFile {
    base: bool,
    entries: BTreeMap<String, Json>,
}

/// A map kept in `<table>/<folder>` of the store.
pub struct Journal {
    table: String,
    folder: String,
    entries: HashMap<String, Json>,
    unsaved: BTreeMap<String, Json>,
    files: Vec<u64>,
}

fn file_name(number: u64) -> String {
    format!("j{number:010}.json")
}

impl Journal {
    /// Read the journal in `<table>/<folder>` (none there: an empty one).
    /// `if_damaged` says what to do about a damaged file, and what removing it costs.
    pub async fn open(
        store: &Store,
        table: &str,
        folder: String,
        if_damaged: &str,
    ) -> Result<Journal> {
        let mut files: Vec<u64> = (store.file_names(table, &folder).await?.iter())
            .filter_map(|name| name.strip_prefix('j')?.strip_suffix(".json")?.parse().ok())
            .collect();
        files.sort_unstable();
        let mut journal = Journal {
            table: table.to_string(),
            folder,
            entries: HashMap::new(),
            unsaved: BTreeMap::new(),
            files: Vec::new(),
        };
        for number in files {
            let relative = journal.relative(number);
            let bytes = store.read_file(table, &relative).await?;
            let file: JournalFile = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
                location: store.file_url(table, &relative),
                message: format!("this delivery state file is damaged ({e}); {if_damaged}"),
            })?;
            if file.base {
                journal.entries.clear();
            }
            journal.fold(file.entries);
            journal.files.push(number);
        }
        Ok(journal)
    }

    /// The path of file `number` within the table's folder.
    fn relative(&self, number: u64) -> String {
        format!("{}/{}", self.folder, file_name(number))
    }

    fn fold(&mut self, entries: BTreeMap<String, Json>) {
        for (key, value) in entries {
            match value {
                Json::Null => self.entries.remove(&key),
                value => self.entries.insert(key, value),
            };
        }
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// Set `key` (saved by the next [`Journal::save`]).
    pub fn set(&mut self, key: String, value: Json) {
        self.entries.insert(key.clone(), value.clone());
        self.unsaved.insert(key, value);
    }

    /// Clear `key`, if it is there.
    pub fn clear(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.unsaved.insert(key.to_string(), Json::Null);
        }
    }

    /// Write what changed since the last save as the next file.
    pub async fn save(&mut self, store: &Store) -> Result<()> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.unsaved);
        self.write(store, false, entries).await
    }

    async fn write(
        &mut self,
        store: &Store,
        base: bool,
        entries: BTreeMap<String, Json>,
    ) -> Result<()> {
        let number = self.files.last().map_or(1, |n| n + 1);
        let relative = self.relative(number);
        let bytes =
            serde_json::to_vec(&JournalFile { base, entries }).map_err(|e| Error::Store {
                location: store.file_url(&self.table, &relative),
                message: e.to_string(),
            })?;
        // Created only if absent: a second delivery writing this destination's state at the
        // same time (see [`crate::deliver::lease`]) stops here rather than overwrite it.
        if !store.create_record(&self.table, &relative, bytes).await? {
            return Err(Error::Destination {
                message: format!(
                    "another delivery wrote {} while this one ran, so this one stopped",
                    store.file_url(&self.table, &relative)
                ),
            });
        }
        self.files.push(number);
        Ok(())
    }

    /// Save, and once there are many files, write every entry as a base and remove the rest.
    pub async fn compact(&mut self, store: &Store) -> Result<()> {
        self.save(store).await?;
        if self.files.len() <= FILES_BEFORE_A_BASE {
            return Ok(());
        }
        let older = std::mem::take(&mut self.files);
        let all: BTreeMap<String, Json> = (self.entries.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.files = older.last().copied().into_iter().collect();
        self.write(store, true, all).await?;
        self.files.remove(0);
        for number in older {
            let relative = self.relative(number);
            store.remove_record(&self.table, &relative).await?;
        }
        Ok(())
    }

    /// Remove every entry and file.
    pub async fn remove(&mut self, store: &Store) -> Result<()> {
        for number in std::mem::take(&mut self.files) {
            let relative = self.relative(number);
            store.remove_record(&self.table, &relative).await?;
        }
        self.entries.clear();
        self.unsaved.clear();
        Ok(())
    }
}
