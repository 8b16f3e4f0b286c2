//! The outbox protocol, for destinations whose cursor the store keeps (delta files; a
//! database keeps its own, in the same transaction as the rows it applies).
//!
//! The committed change rows of every version are the log. A destination's cursor is the last
//! version it received whole: the highest of its records
//! `<table>/_deliveries/<destination>/<version>.json`, each created only if absent once that
//! version was delivered. So a cursor only moves forward, two processes delivering at once
//! never lose a version (the second finds the record there), and a crash between delivering a
//! version and recording it leaves the cursor behind: the version is delivered again, which a
//! file destination makes harmless by writing the same bytes to the same place.
//!
//! A destination that has no record yet joins at the version before the one about to be
//! committed (its first record says `joined`): it receives every version from then on, even
//! when the run that commits it dies before delivering. Given to `tidemark deliver` first, it
//! joins at the latest version and receives the next.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

/// One cursor record: `destination` has `version` whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CursorRecord {
    /// The destination's name, as the pipeline file gives it.
    pub destination: String,
    /// The version it has whole.
    pub version: u64,
    /// When it was recorded.
    pub delivered_at: DateTime<Utc>,
    /// What the version's delivery wrote (file paths).
    #[serde(default)]
    pub files: Vec<String>,
    /// The destination joined here: it received nothing of this version or before.
    #[serde(default)]
    pub joined: bool,
}

/// The folder of a destination's records, relative to its table's: its name, made safe for a
/// file name and kept distinct by a hash of the name.
pub(crate) fn folder(destination: &str) -> String {
    let readable: String = destination
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '_',
        })
        .take(60)
        .collect();
    let hash = xxhash_rust::xxh3::xxh3_64(destination.as_bytes());
    format!("_deliveries/{readable}-{hash:016x}")
}

/// The last version `destination` of `table` has whole; `None` before it joined.
pub async fn position(store: &Store, table: &str, destination: &str) -> Result<Option<u64>> {
    Ok(store
        .numbered_records(table, &folder(destination))
        .await?
        .last()
        .copied())
}

/// The record of `version` of `destination`, if there is one.
pub async fn record(
    store: &Store,
    table: &str,
    destination: &str,
    version: u64,
) -> Result<CursorRecord> {
    let relative = format!("{}/{version:08}.json", folder(destination));
    let bytes = store.read_file(table, &relative).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Store {
        location: store.file_url(table, &relative),
        message: format!(
            "the delivery record of {table} v{version} for {destination} is damaged ({e}); remove it and run `tidemark deliver` to deliver v{version} again"
        ),
    })
}

/// Record that `destination` has `version` whole (`joined`: it starts after it). A record that
/// is there already (another delivery of the same version won) is no error.
pub async fn advance(
    store: &Store,
    table: &str,
    destination: &str,
    version: u64,
    files: Vec<String>,
    joined: bool,
) -> Result<()> {
    let record = CursorRecord {
        destination: destination.to_string(),
        version,
        delivered_at: Utc::now(),
        files,
        joined,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Store {
        location: store.location().to_string(),
        message: e.to_string(),
    })?;
    let relative = format!("{}/{version:08}.json", folder(destination));
    store.create_record(table, &relative, json).await?;
    Ok(())
}

/// Remove the records of `destination` below its latest (only the latest says where it is);
/// returns how many there are to remove, and removes them unless `dry_run`.
pub async fn prune(store: &Store, table: &str, destination: &str, dry_run: bool) -> Result<usize> {
    let folder = folder(destination);
    let versions = store.numbered_records(table, &folder).await?;
    let Some((_, older)) = versions.split_last() else {
        return Ok(0);
    };
    if !dry_run {
        for version in older {
            store
                .remove_record(table, &format!("{folder}/{version:08}.json"))
                .await?;
        }
    }
    Ok(older.len())
}

/// Make every destination of `destinations` that has no cursor yet join at `version` (the
/// version before the one about to be committed, or the latest). Returns those that joined.
pub async fn join_missing<'a>(
    store: &Store,
    table: &str,
    destinations: impl IntoIterator<Item = &'a str>,
    version: u64,
) -> Result<Vec<&'a str>> {
    let mut joined = Vec::new();
    for destination in destinations {
        if position(store, table, destination).await?.is_none() {
            advance(store, table, destination, version, Vec::new(), true).await?;
            joined.push(destination);
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_file_names_kept_apart_by_the_whole_name() {
        let a = folder("out/delta/{table}-{timestamp}.csv");
        assert!(a.starts_with("_deliveries/out_delta__table_-_timestamp_.csv-"));
        assert_ne!(a, folder("out/delta/{table}-{timestamp}_csv"));
        assert_eq!(a, folder("out/delta/{table}-{timestamp}.csv"));
        assert!(!folder("a/b").contains("a/b"));
    }

    #[tokio::test]
    async fn a_cursor_moves_forward_and_a_repeated_version_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().display().to_string(), true).unwrap();
        assert_eq!(position(&store, "t", "d").await.unwrap(), None);
        let joined = join_missing(&store, "t", ["d"], 0).await.unwrap();
        assert_eq!(joined, vec!["d"]);
        assert_eq!(position(&store, "t", "d").await.unwrap(), Some(0));
        assert!(
            join_missing(&store, "t", ["d"], 5)
                .await
                .unwrap()
                .is_empty()
        );
        advance(&store, "t", "d", 1, vec!["x.csv".into()], false)
            .await
            .unwrap();
        advance(&store, "t", "d", 1, vec!["y.csv".into()], false)
            .await
            .unwrap();
        assert_eq!(position(&store, "t", "d").await.unwrap(), Some(1));
        let first = record(&store, "t", "d", 1).await.unwrap();
        assert_eq!(first.files, vec!["x.csv".to_string()]);
        assert!(record(&store, "t", "d", 0).await.unwrap().joined);
        assert_eq!(position(&store, "t", "other").await.unwrap(), None);
        assert_eq!(prune(&store, "t", "d", true).await.unwrap(), 1);
        assert_eq!(prune(&store, "t", "d", false).await.unwrap(), 1);
        assert_eq!(prune(&store, "t", "d", false).await.unwrap(), 0);
        assert_eq!(position(&store, "t", "d").await.unwrap(), Some(1));
    }
}
