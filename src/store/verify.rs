//! `verify`: every live version's files against the sizes and checksums in its commit record.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::spool::Checksum;
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

    /// What is wrong with a stored file (size or xxh3-128 differ from its record, or it cannot
    /// be read), or None. Read as a stream: memory stays flat whatever the file's size.
    async fn check_file(&self, table: &str, file: &StoredFile) -> Option<String> {
        let read = match &self.place {
            // The store's own folder: read in large pieces on a thread of its own. The object
            // store's stream reads a local file in small chunks, four times slower at 600 MB.
            super::Place::Local {
                root, links: true, ..
            } => {
                let path = root.join(table).join(&file.path);
                tokio::task::spawn_blocking(move || checksum_of_file(&path))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
            }
            _ => self.checksum_of_object(table, &file.path).await,
        };
        let (size, digest) = match read {
            Ok(found) => found,
            Err(e) => return Some(format!("cannot be read ({e})")),
        };
        if size != file.size {
            return Some(format!(
                "has {size} bytes, the commit record says {}",
                file.size
            ));
        }
        (digest != file.xxh3_128).then(|| {
            format!(
                "checksum {digest} differs from the recorded {}",
                file.xxh3_128
            )
        })
    }

    /// The size and checksum of a stored object, read as a stream.
    async fn checksum_of_object(
        &self,
        table: &str,
        relative: &str,
    ) -> std::result::Result<(u64, String), Box<dyn std::error::Error + Send + Sync>> {
        let path = object_store::path::Path::from(format!("{table}/{relative}"));
        let mut checksum = Checksum::default();
        let mut chunks = self.objects()?.get(&path).await?.into_stream();
        while let Some(chunk) = chunks.try_next().await? {
            checksum.update(&chunk);
        }
        Ok(checksum.finish())
    }

    /// Refuse to read a version's file (`role`: "snapshot", "change rows") that does not match
    /// its commit record: a run must not commit on top of a swapped or damaged baseline, nor a
    /// query answer from one.
    pub async fn check_before_reading(
        &self,
        record: &CommitRecord,
        file: &StoredFile,
        role: &str,
    ) -> Result<()> {
        let Some(problem) = self.check_file(&record.table, file).await else {
            return Ok(());
        };
        Err(crate::error::Error::Store {
            location: format!("{}/{}/{}", self.location, record.table, file.path),
            message: format!(
                "the {role} of {} v{} {problem}: the store is damaged. `tidemark verify` lists the damaged versions; `tidemark rollback --table {} --to V` to an intact version restores service.",
                record.table, record.version, record.table
            ),
        })
    }
}

/// The size and checksum of a local file, read in pieces of 8 MiB.
fn checksum_of_file(
    path: &std::path::Path,
) -> std::result::Result<(u64, String), Box<dyn std::error::Error + Send + Sync>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut checksum = Checksum::default();
    let mut buffer = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(checksum.finish());
        }
        checksum.update(&buffer[..n]);
    }
}
