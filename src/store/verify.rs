//! `verify`: every live version's files against the sizes and checksums in its commit record.

use super::{CommitRecord, Store, StoredFile};
use crate::error::Result;

/// The verdict on one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCheck {
    /// Table name.
    pub table: String,
    /// Version number.
    pub version: u64,
    /// One line per damaged or missing file; empty when the version is intact.
    pub problems: Vec<String>,
}

impl Store {
    /// Check every version of `tables` (all tables of the store when empty).
    pub async fn verify(&self, tables: &[String]) -> Result<Vec<VersionCheck>> {
        let tables = if tables.is_empty() {
            self.tables().await?
        } else {
            tables.to_vec()
        };
        let mut checks = Vec::new();
        for table in tables {
            for version in self.versions(&table).await? {
                let problems = match self.commit_record(&table, version).await {
                    Ok(record) => self.check_files(&record).await,
                    Err(e) => vec![e.to_string()],
                };
                checks.push(VersionCheck {
                    table: table.clone(),
                    version,
                    problems,
                });
            }
        }
        Ok(checks)
    }

    /// Problems with a version's files; empty when intact.
    pub(crate) async fn check_files(&self, record: &CommitRecord) -> Vec<String> {
        let mut problems = Vec::new();
        for (role, file) in [
            ("snapshot", &record.snapshot),
            ("change rows", &record.changes),
        ] {
            if let Some(problem) = self.check_file(&record.table, file).await {
                problems.push(format!("{role} {}: {problem}", file.path));
            }
        }
        problems
    }

    async fn check_file(&self, table: &str, file: &StoredFile) -> Option<String> {
        let bytes = match self.read_file(table, &file.path).await {
            Ok(b) => b,
            Err(e) => return Some(format!("cannot be read ({e})")),
        };
        if bytes.len() as u64 != file.size {
            return Some(format!(
                "has {} bytes, the commit record says {}",
                bytes.len(),
                file.size
            ));
        }
        let checksum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        (checksum != file.xxh3_128).then(|| {
            format!(
                "checksum {checksum} differs from the recorded {}",
                file.xxh3_128
            )
        })
    }
}
