//! `vacuum`: remove the versions beyond the newest N, and every data file no kept version
//! references that is older than a grace period.
//!
//! Order, so that a crash at any point leaves a readable store: first the commit records of the
//! dropped versions (oldest first), which makes them invisible; then the files. A crash in
//! between leaves unreferenced files, which the next vacuum removes. The grace period protects
//! the files of a run in progress, written before its commit record exists; the latest version is
//! always kept, and so is every version a destination has not received yet (its change rows
//! are what the destination will be sent).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{Store, commit_path, store_error};
use crate::error::{Error, Result};

/// What vacuum removes (or would remove) from one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumPlan {
    /// Table name.
    pub table: String,
    /// Versions kept, ascending.
    pub kept: Vec<u64>,
    /// Versions whose commit records go.
    pub dropped: Vec<u64>,
    /// Data files that go, relative to the table's folder, with their sizes.
    pub files: Vec<(String, u64)>,
    /// Unreferenced files kept because they are younger than the grace period.
    pub too_young: usize,
}

impl Store {
    /// Plan (and unless `dry_run`, carry out) a vacuum of `tables` (every table when empty),
    /// keeping the newest `keep` versions (at least 1), the versions from `undelivered[table]`
    /// on (the oldest a destination lacks), and files modified after `now - grace`.
    pub async fn vacuum(
        &self,
        tables: &[String],
        keep: usize,
        undelivered: &std::collections::HashMap<String, u64>,
        grace: chrono::Duration,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Vec<VacuumPlan>> {
        let tables = if tables.is_empty() {
            self.tables().await?
        } else {
            tables.to_vec()
        };
        let keep = keep.max(1);
        let cutoff = now - grace;
        let mut plans = Vec::with_capacity(tables.len());
        for table in tables {
            let versions = self.versions(&table).await?;
            let lacked = undelivered.get(&table).copied().unwrap_or(u64::MAX);
            let split = (versions.len().saturating_sub(keep))
                .min(versions.iter().take_while(|v| **v < lacked).count());
            let (dropped, kept) = versions.split_at(split);
            // Every kept version's record must be readable: never delete while unsure what a
            // kept version needs.
            let mut referenced = HashSet::new();
            for &v in kept {
                let record = self.commit_record(&table, v).await.map_err(|e| {
                    store_error(
                        self.location(),
                        format!("vacuum stopped, nothing removed: {e}"),
                    )
                })?;
                referenced.insert(record.snapshot.path);
                referenced.insert(record.changes.path);
            }
            // Rejects files of runs before the oldest kept version go with it (custom rejects
            // paths outside the store are the user's).
            let oldest_kept = kept.first().copied().unwrap_or(0);
            // A spooled snapshot is never referenced: one older than the grace period was
            // left by a run that was killed.
            let removable = |folder: &str, relative: &str| match folder {
                "rejects" => rejects_version(relative).is_some_and(|v| v < oldest_kept),
                super::SPOOL_FOLDER => true,
                _ => !referenced.contains(relative),
            };
            let mut files = Vec::new();
            let mut too_young = 0;
            for folder in ["snapshots", "changes", "rejects", super::SPOOL_FOLDER] {
                let prefix = Path::from(format!("{table}/{folder}"));
                let metas: Vec<_> = self
                    .objects()?
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .map_err(|e| store_error(format!("{}/{prefix}", self.location()), e))?;
                for meta in metas {
                    let relative = meta
                        .location
                        .as_ref()
                        .strip_prefix(&format!("{table}/"))
                        .unwrap_or(meta.location.as_ref())
                        .to_string();
                    if !removable(folder, &relative) {
                        continue;
                    }
                    if meta.last_modified > cutoff {
                        too_young += 1;
                    } else {
                        files.push((relative, meta.size));
                    }
                }
            }
            files.sort();
            let plan = VacuumPlan {
                table: table.clone(),
                kept: kept.to_vec(),
                dropped: dropped.to_vec(),
                files,
                too_young,
            };
            if !dry_run {
                self.carry_out(&plan).await?;
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    async fn carry_out(&self, plan: &VacuumPlan) -> Result<()> {
        let objects = self.objects()?;
        for &v in &plan.dropped {
            let path = commit_path(&plan.table, v);
            match objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(format!("{}/{path}", self.location()), e)),
            }
        }
        for (relative, _) in &plan.files {
            let path = Path::from(format!("{}/{relative}", plan.table));
            match objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(format!("{}/{path}", self.location()), e)),
            }
        }
        Ok(())
    }
}

/// The version in a rejects file's name (`super::rejects_name`).
fn rejects_version(relative: &str) -> Option<u64> {
    relative.strip_prefix("rejects/v")?.get(..8)?.parse().ok()
}

/// Parse a grace period: a number and a unit, `s`, `m`, `h` or `d` (`30m`, `1h`, `7d`, `0s`).
pub fn parse_grace(text: &str) -> Result<chrono::Duration> {
    let text = text.trim();
    let bad = || Error::Usage {
        message: format!(
            "--grace {text}: expected a number and a unit, such as 30m, 1h, 7d or 0s."
        ),
    };
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    };
    duration.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods() {
        assert_eq!(parse_grace("90m").unwrap(), chrono::Duration::minutes(90));
        assert_eq!(parse_grace("0s").unwrap(), chrono::Duration::zero());
        assert_eq!(parse_grace("7d").unwrap(), chrono::Duration::days(7));
        assert!(parse_grace("1 week").is_err());
        assert!(parse_grace("h").is_err());
    }
}
