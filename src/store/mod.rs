//! The store: each table's baseline as a sequence of versions 1, 2, 3, ...
//!
//! Layout under the store root (plain files that DuckDB, pandas or Spark read without tidemark):
//!
//! ```text
//! <table>/snapshots/v00000002-<run id>.parquet   full snapshot of version 2, with _row_hash
//! <table>/changes/v00000002-<run id>.parquet     the change rows of the run that made it
//! <table>/_commits/00000002.json                 the commit record: makes version 2 visible
//! <table>/_deliveries/<destination>/00000002.json a destination's cursor: it has v2 whole
//! _runs/<started at>-<table>-<run id>.json       one record per table run, failed ones too
//! ```
//!
//! Commit protocol, and what a crash at each step leaves behind:
//! 1. The data files are written under names that contain this run's random id, so no other
//!    run can choose them. A crash here leaves unreferenced files; readers never see them.
//! 2. The commit record `_commits/<version>.json` is created with put-if-absent
//!    (`PutMode::Create`). It lists the files with sizes and checksums. This single create is
//!    the moment the version becomes visible. If another run created it first, this run gets
//!    `AlreadyExists`, commits nothing and exits 4 (conflict).
//! 3. After the commit, every destination of the table (delta files among them) is brought up
//!    to the new version from its cursor ([`crate::deliver`]), and the run record is written.
//!    A delta file is written before the commit, under a temporary name beside its place: a
//!    crash leaves such a `.<name>.<id>.tmp` file (which `vacuum` removes), never a delta of
//!    an uncommitted version under its name; the next run or `tidemark deliver` delivers a
//!    committed version whose delta did not reach its place.
//!
//! A version is therefore either fully visible (record present, files written before it) or
//! absent; the previous version stays intact and readable at every step. A record also names
//! the version its run read as the baseline (`previous_version`): if another version became
//! visible in between, the commit is a conflict even when its own number is free.
//!
//! `atomic: true` pipelines add one step: each table's record is preceded by a marker
//! `<table>/_pending/<version>`, and a marked version is visible only once the pipeline record
//! `_atomic/<id>.json` (created if absent) says `committed`. A crash before that record leaves
//! invisible versions; the next commit of the table creates their pipeline record as `aborted`
//! first, so they never appear later, and takes the next number.
//!
//! The store is a local folder (files and folders are fsynced after each write, because
//! object_store does not) or a prefix in an S3 bucket, where put-if-absent is the conditional
//! write `If-None-Match: *`. Some S3-compatible services ignore that header and overwrite: before
//! its first write a process creates a probe object twice, and refuses the store unless the
//! second create is refused (or the user passed `--unsafe-single-writer`).

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub mod tables;
pub mod vacuum;
pub mod verify;

use crate::error::{Error, Result};

mod atomic;
mod records;
mod spool;

pub use records::*;
use spool::Checksum;
pub use spool::{LocalFile, SPOOL_FOLDER, Spool, SpoolWriter};

/// A store of baselines, in a local folder or under an `s3://bucket/prefix`.
#[derive(Debug, Clone)]
pub struct Store {
    location: String,
    /// Every byte goes through here, keys relative to the store's root.
    objects: Option<Arc<dyn ObjectStore>>,
    place: Place,
    /// `--unsafe-single-writer`: commit on a store without put-if-absent.
    single_writer: bool,
    /// Set once the store has shown that it honours put-if-absent (a local folder needs no
    /// check: it creates files exclusively).
    put_if_absent_checked: Arc<OnceLock<()>>,
    /// An atomic pipeline's prepared versions, not visible to others yet: the tables that
    /// depend on them read them as their latest.
    staged: Arc<std::sync::Mutex<std::collections::HashMap<String, CommitRecord>>>,
}

/// Where the store's files are, for the query engine and for durability.
#[derive(Debug, Clone)]
enum Place {
    /// A local folder; `durable`: files and folders are fsynced; `links`: a spooled file is
    /// linked into place (the store's own folder; a store given other objects, as tests that
    /// inject faults do, writes every byte through them).
    Local {
        root: PathBuf,
        durable: bool,
        links: bool,
    },
    /// A prefix in a bucket.
    Remote(crate::cloud::Remote),
}

fn store_error(location: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Store {
        location: location.into(),
        message: message.to_string(),
    }
}

impl Store {
    /// Open the store at `location`: a local folder or `s3://bucket/prefix`. With `create`, a
    /// local folder is made when missing; without, a missing folder is an empty store (nothing
    /// is written by reading).
    pub fn open(location: &str, create: bool) -> Result<Store> {
        if crate::cloud::is_url(location) {
            let remote = crate::cloud::open(location)?;
            let objects: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(
                Arc::clone(&remote.bucket),
                remote.key.clone(),
            ));
            return Ok(Store::new(location, Some(objects), Place::Remote(remote)));
        }
        let root = PathBuf::from(location);
        if create {
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        }
        let objects: Option<Arc<dyn ObjectStore>> = if root.is_dir() {
            Some(Arc::new(
                LocalFileSystem::new_with_prefix(&root).map_err(|e| store_error(location, e))?,
            ))
        } else {
            None
        };
        Ok(Store::new(
            location,
            objects,
            Place::Local {
                root,
                durable: true,
                links: true,
            },
        ))
    }

    fn new(location: &str, objects: Option<Arc<dyn ObjectStore>>, place: Place) -> Store {
        let put_if_absent_checked = Arc::new(OnceLock::new());
        if matches!(place, Place::Local { .. }) {
            let _ = put_if_absent_checked.set(());
        }
        Store {
            location: location.to_string(),
            objects,
            place,
            single_writer: false,
            put_if_absent_checked,
            staged: Arc::default(),
        }
    }

    /// Check put-if-absent before the first write as on a bucket, for tests that give the
    /// store an object store that ignores it.
    #[doc(hidden)]
    pub fn checking_put_if_absent(self) -> Store {
        Store {
            put_if_absent_checked: Arc::new(OnceLock::new()),
            ..self
        }
    }

    /// A store over any object store, for tests that inject faults; `root` is where the query
    /// engine reads the files (the same files the object store writes).
    #[doc(hidden)]
    pub fn with_objects(location: &str, root: PathBuf, objects: Arc<dyn ObjectStore>) -> Store {
        Store::new(
            location,
            Some(objects),
            Place::Local {
                root,
                durable: false,
                links: false,
            },
        )
    }

    /// `--unsafe-single-writer`: commit even when the store cannot create a file only if it is
    /// absent. Two runs at once could then both commit the same version; the user promises
    /// that only one ever runs.
    pub fn single_writer(mut self, unsafe_single_writer: bool) -> Store {
        self.single_writer = unsafe_single_writer;
        self
    }

    /// Open a store that must exist already (commands that only read it).
    pub fn open_existing(location: &str) -> Result<Store> {
        let store = Store::open(location, false)?;
        if store.objects.is_none() {
            return Err(store_error(
                location,
                "no store here yet. Run `tidemark run` first, or check the pipeline's `store` and --store.",
            ));
        }
        Ok(store)
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn objects(&self) -> Result<&Arc<dyn ObjectStore>> {
        self.objects
            .as_ref()
            .ok_or_else(|| store_error(&self.location, "the store folder does not exist"))
    }

    /// Where the query engine reads a table's file: a local path or an `s3://` URL (call
    /// [`Store::attach`] on the session first).
    pub fn file_url(&self, table: &str, relative: &str) -> String {
        match &self.place {
            Place::Local { root, .. } => root.join(table).join(relative).display().to_string(),
            Place::Remote(remote) => {
                let key = Path::from(format!("{table}/{relative}"));
                let full: Path = remote.key.parts().chain(key.parts()).collect();
                remote.url_of(&full)
            }
        }
    }

    /// Let a query session read this store's files by their [`Store::file_url`].
    pub fn attach(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Place::Remote(remote) = &self.place {
            ctx.register_object_store(&remote.bucket_url, Arc::clone(&remote.bucket));
        }
    }

    /// Write a file the commit does not reference (a rejects file), replacing any file of
    /// that name; returns where it is, for messages.
    pub async fn put_plain(&self, table: &str, relative: &str, bytes: Bytes) -> Result<String> {
        let path = Path::from(format!("{table}/{relative}"));
        self.objects()?
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| store_error(self.file_url(table, relative), e))?;
        self.sync(&path)?;
        Ok(self.file_url(table, relative))
    }

    /// Tables that have at least one version.
    pub async fn tables(&self) -> Result<Vec<String>> {
        let Some(objects) = &self.objects else {
            return Ok(Vec::new());
        };
        let listing = objects
            .list_with_delimiter(None)
            .await
            .map_err(|e| store_error(&self.location, e))?;
        let mut tables = Vec::new();
        for prefix in listing.common_prefixes {
            let name = prefix.filename().unwrap_or_default().to_string();
            if !name.starts_with('_') && !self.versions(&name).await?.is_empty() {
                tables.push(name);
            }
        }
        tables.sort();
        Ok(tables)
    }

    /// The visible versions of a table, ascending: every commit record, except those of atomic
    /// pipeline runs whose pipeline commit is absent (in progress or dead) or aborted. Such
    /// records are marked by a `_pending/<version>` file written before them, so a table that
    /// no atomic pipeline wrote costs two listings and no reads.
    pub async fn versions(&self, table: &str) -> Result<Vec<u64>> {
        let recorded = self.recorded_versions(table).await?;
        let pending = self.numbered(table, "_pending", "").await?;
        let mut visible = Vec::with_capacity(recorded.len());
        for version in recorded {
            if !pending.contains(&version)
                || self.atomic_state_of(table, version).await? == Some(AtomicState::Committed)
            {
                visible.push(version);
            }
        }
        Ok(visible)
    }

    /// The number the table's next version takes: above every commit record, visible or not.
    pub async fn next_version(&self, table: &str) -> Result<u64> {
        Ok(self
            .recorded_versions(table)
            .await?
            .last()
            .map_or(1, |v| v + 1))
    }

    /// Every version number with a commit record, visible or not, ascending.
    async fn recorded_versions(&self, table: &str) -> Result<Vec<u64>> {
        self.numbered(table, "_commits", ".json").await
    }

    /// The version numbers of the files `<table>/<folder>/<number><suffix>`, ascending.
    async fn numbered(&self, table: &str, folder: &str, suffix: &str) -> Result<Vec<u64>> {
        let Some(objects) = &self.objects else {
            return Ok(Vec::new());
        };
        let prefix = Path::from(format!("{table}/{folder}"));
        let metas: Vec<_> = objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_error(format!("{}/{table}/{folder}", self.location), e))?;
        // A file where the folder should be (`_commits` replaced by a file) is damage, never
        // a table without versions.
        let file_in_its_place = match metas.is_empty() && folder == "_commits" {
            true => objects.head(&prefix).await.is_ok(),
            false => metas.iter().any(|m| m.location == prefix),
        };
        if file_in_its_place {
            return Err(store_error(
                format!("{}/{table}/{folder}", self.location),
                format!(
                    "is a file, not the folder of the {} of {table}; the store is damaged: restore {folder} from a copy of the store",
                    folder_role(folder)
                ),
            ));
        }
        let mut versions: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(suffix)?.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The numbers of the records `<table>/<folder>/<number>.json`, ascending (the cursors of
    /// `crate::deliver::cursor` are kept so).
    pub(crate) async fn numbered_records(&self, table: &str, folder: &str) -> Result<Vec<u64>> {
        self.numbered(table, folder, ".json").await
    }

    /// The names of the files right in `<table>/<folder>`, ascending (none: no such folder).
    pub(crate) async fn file_names(&self, table: &str, folder: &str) -> Result<Vec<String>> {
        let Some(objects) = &self.objects else {
            return Ok(Vec::new());
        };
        let prefix = Path::from(format!("{table}/{folder}"));
        let listing = match objects.list_with_delimiter(Some(&prefix)).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => {
                return Err(store_error(
                    format!("{}/{table}/{folder}", self.location),
                    e,
                ));
            }
        };
        let mut names: Vec<String> = (listing.objects.iter())
            .filter_map(|m| Some(m.location.filename()?.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Create the record `<table>/<relative>` if absent: true when this call created it, false
    /// when it was there already (written by another process, or by this one before a crash).
    pub(crate) async fn create_record(
        &self,
        table: &str,
        relative: &str,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        let path = Path::from(format!("{table}/{relative}"));
        let objects = self.ensure_put_if_absent().await?;
        match self.create(objects, &path, PutPayload::from(bytes)).await {
            Ok(()) => {
                self.sync(&path)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(self.file_url(table, relative), e)),
        }
    }

    /// Remove the record `<table>/<relative>` (one that is gone already is no error).
    pub(crate) async fn remove_record(&self, table: &str, relative: &str) -> Result<()> {
        let path = Path::from(format!("{table}/{relative}"));
        match self.objects()?.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(self.file_url(table, relative), e)),
        }
    }

    /// A version's commit record.
    pub async fn commit_record(&self, table: &str, version: u64) -> Result<CommitRecord> {
        let relative = commit_name(version);
        let bytes = self.read_file(table, &relative).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            store_error(
                format!("{}/{table}/{relative}", self.location),
                format!("the commit record of {table} v{version} is damaged ({e}); run `tidemark verify`"),
            )
        })
    }

    /// The latest version's commit record, if any (an atomic run's own prepared version first).
    pub async fn latest(&self, table: &str) -> Result<Option<CommitRecord>> {
        let staged = self
            .staged
            .lock()
            .expect("the staged records are not poisoned")
            .get(table)
            .cloned();
        if staged.is_some() {
            return Ok(staged);
        }
        match self.versions(table).await?.last() {
            Some(&v) => Ok(Some(self.commit_record(table, v).await?)),
            None => Ok(None),
        }
    }

    /// Write a data file of a version (step 1 of the protocol).
    pub async fn put_file(
        &self,
        table: &str,
        relative: &str,
        payload: PutPayload,
    ) -> Result<StoredFile> {
        let path = Path::from(format!("{table}/{relative}"));
        let mut checksum = Checksum::default();
        for chunk in payload.iter() {
            checksum.update(chunk);
        }
        let (size, checksum) = checksum.finish();
        let objects = self.ensure_put_if_absent().await?;
        self.create(objects, &path, payload)
            .await
            .map_err(|e| store_error(self.file_url(table, relative), e))?;
        self.sync(&path)?;
        Ok(StoredFile {
            path: relative.to_string(),
            size,
            xxh3_128: checksum,
        })
    }

    /// Make a version visible (step 2): create its commit record if absent. When the outcome
    /// of the create is unknown (the store failed to answer), the record is read back: it is
    /// this run's (committed), another run's (conflict), or absent (not committed).
    pub async fn commit(&self, record: &CommitRecord) -> Result<()> {
        self.settle_pending(&record.table, record.version).await?;
        // A version that became visible after this run read its baseline makes the run stale:
        // its change rows would skip that version.
        let base = record.previous_version.unwrap_or(0);
        if let Some(&newer) = self
            .versions(&record.table)
            .await?
            .iter()
            .find(|v| **v > base && **v < record.version)
        {
            return Err(Error::Conflict {
                table: record.table.clone(),
                version: newer,
            });
        }
        let path = commit_path(&record.table, record.version);
        let json = serde_json::to_vec_pretty(record).map_err(|e| store_error(&self.location, e))?;
        let objects = self.ensure_put_if_absent().await?;
        let put = self.create(objects, &path, PutPayload::from(json)).await;
        let conflict = || Error::Conflict {
            table: record.table.clone(),
            version: record.version,
        };
        match put {
            Ok(_) => {
                self.sync(&path)?;
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => Err(conflict()),
            Err(e) => {
                tracing::warn!(
                    "{}: the commit of v{} got no clear answer ({e}); reading the record back",
                    record.table,
                    record.version
                );
                let location = format!("{}/{path}", self.location);
                match self.objects()?.get(&path).await {
                    Ok(found) => {
                        let bytes = found.bytes().await.map_err(|e| store_error(&location, e))?;
                        match serde_json::from_slice::<CommitRecord>(&bytes) {
                            Ok(found) if found.run_id == record.run_id => Ok(()),
                            Ok(_) => Err(conflict()),
                            Err(read) => Err(store_error(
                                location,
                                format!(
                                    "the commit's outcome is unknown: {e}; the record reads back damaged ({read}). Run `tidemark verify`."
                                ),
                            )),
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => Err(store_error(
                        location,
                        format!("the commit failed ({e}); nothing was committed"),
                    )),
                    Err(read) => Err(store_error(
                        location,
                        format!(
                            "the commit's outcome is unknown ({e}), and reading it back failed too ({read}). Run `tidemark history` to see whether v{} exists; no file was deleted.",
                            record.version
                        ),
                    )),
                }
            }
        }
    }

    /// Create the object at `path` only if it is absent. With `--unsafe-single-writer` on a
    /// store that cannot do that, an absent object is checked first and then written.
    async fn create(
        &self,
        objects: &Arc<dyn ObjectStore>,
        path: &Path,
        payload: PutPayload,
    ) -> object_store::Result<()> {
        let created = objects
            .put_opts(path, payload.clone(), PutOptions::from(PutMode::Create))
            .await;
        match created {
            Err(object_store::Error::NotImplemented { .. }) if self.single_writer => {
                match objects.head(path).await {
                    Ok(_) => Err(object_store::Error::AlreadyExists {
                        path: path.to_string(),
                        source: "a file of this name exists".into(),
                    }),
                    Err(object_store::Error::NotFound { .. }) => {
                        objects.put(path, payload).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                }
            }
            other => other.map(|_| ()),
        }
    }

    /// Before the first write of a process to a bucket: it is asked to create one probe object
    /// twice, and the second create must be refused, or two runs at once could both commit the
    /// same version. Refused unless `--unsafe-single-writer`.
    async fn ensure_put_if_absent(&self) -> Result<&Arc<dyn ObjectStore>> {
        let objects = self.objects()?;
        if self.single_writer || self.put_if_absent_checked.get().is_some() {
            return Ok(objects);
        }
        let probe = Path::from(format!(
            "_tidemark/put-if-absent-probe-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let create = || {
            objects.put_opts(
                &probe,
                PutPayload::from_static(b"probe"),
                PutOptions::from(PutMode::Create),
            )
        };
        let unsupported = |why: &str| Error::Usage {
            message: format!(
                "store {}: it cannot create a file only if it is absent ({why}), so two runs at once could both commit the same version. Use a store with conditional writes (AWS S3, MinIO, Cloudflare R2, Ceph...), or pass --unsafe-single-writer if only one run ever writes to it.",
                self.location
            ),
        };
        let failed = |e: object_store::Error| store_error(&self.location, e);
        let outcome = match create().await {
            Ok(_) => match create().await {
                Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Ok(_) => Err(unsupported("it accepted a second create of the same file")),
                Err(object_store::Error::NotImplemented { .. }) => {
                    Err(unsupported("conditional writes are not implemented"))
                }
                Err(e) => Err(failed(e)),
            },
            Err(object_store::Error::NotImplemented { .. }) => Err(unsupported(
                "conditional writes are disabled or not implemented",
            )),
            Err(e) => Err(failed(e)),
        };
        let _ = objects.delete(&probe).await;
        outcome?;
        let _ = self.put_if_absent_checked.set(());
        Ok(objects)
    }

    /// On local disk, flush a written file and its folder to the device, so that a version is
    /// durable before the next step of the protocol (object_store does not fsync).
    fn sync(&self, path: &Path) -> Result<()> {
        let Place::Local {
            root,
            durable: true,
            ..
        } = &self.place
        else {
            return Ok(());
        };
        let file = root.join(path.as_ref());
        let sync = |p: &FsPath| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&file).map_err(|e| Error::io(&file, e))?;
        if let Some(dir) = file.parent() {
            sync(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(())
    }

    /// Read a data file of a table.
    pub async fn read_file(&self, table: &str, relative: &str) -> Result<Bytes> {
        let path = Path::from(format!("{table}/{relative}"));
        let location = format!("{}/{path}", self.location);
        self.objects()?
            .get(&path)
            .await
            .map_err(|e| store_error(&location, e))?
            .bytes()
            .await
            .map_err(|e| store_error(&location, e))
    }

    /// A file's bytes, or `None` when there is no such file.
    pub async fn read_file_if_present(&self, table: &str, relative: &str) -> Result<Option<Bytes>> {
        let path = Path::from(format!("{table}/{relative}"));
        let location = format!("{}/{path}", self.location);
        match self.objects()?.get(&path).await {
            Ok(found) => Ok(Some(
                found.bytes().await.map_err(|e| store_error(&location, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(location, e)),
        }
    }

    /// Record a table run (committed, failed or refused).
    pub async fn write_run(&self, run: &RunRecord, run_id: &str) -> Result<()> {
        let name = format!(
            "_runs/{}-{}-{run_id}.json",
            run.started_at.format("%Y%m%dT%H%M%S%.6fZ"),
            run.table
        );
        let json = serde_json::to_vec_pretty(run).map_err(|e| store_error(&self.location, e))?;
        self.objects()?
            .put(&Path::from(name.as_str()), PutPayload::from(json))
            .await
            .map_err(|e| store_error(format!("{}/{name}", self.location), e))?;
        Ok(())
    }

    /// Every recorded run, oldest first.
    pub async fn runs(&self) -> Result<Vec<RunRecord>> {
        let Some(objects) = &self.objects else {
            return Ok(Vec::new());
        };
        let metas: Vec<_> = objects
            .list(Some(&Path::from("_runs")))
            .try_collect()
            .await
            .map_err(|e| store_error(&self.location, e))?;
        let mut runs = Vec::with_capacity(metas.len());
        for meta in metas {
            let bytes = objects
                .get(&meta.location)
                .await
                .map_err(|e| store_error(&self.location, e))?
                .bytes()
                .await
                .map_err(|e| store_error(&self.location, e))?;
            // A run record is informational; a damaged one is skipped with a warning.
            match serde_json::from_slice::<RunRecord>(&bytes) {
                Ok(run) => runs.push(run),
                Err(e) => tracing::warn!("skipping damaged run record {}: {e}", meta.location),
            }
        }
        runs.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.table.cmp(&b.table))
        });
        Ok(runs)
    }
}

/// A version's commit record, relative to its table's folder.
fn commit_name(version: u64) -> String {
    format!("_commits/{version:08}.json")
}

fn commit_path(table: &str, version: u64) -> Path {
    Path::from(format!("{table}/{}", commit_name(version)))
}

/// What a store folder of numbered files holds, for messages.
fn folder_role(folder: &str) -> &'static str {
    match folder {
        "_commits" => "commit records",
        "_pending" => "pending atomic commits",
        _ => "numbered files",
    }
}

/// File name of the rejects file of a run that made (or would have made) a version.
pub fn rejects_name(version: u64, run_id: &str) -> String {
    format!("rejects/v{version:08}-{run_id}.csv")
}

/// File name of a version's snapshot.
pub fn snapshot_name(version: u64, run_id: &str) -> String {
    format!("snapshots/v{version:08}-{run_id}.parquet")
}

/// File name of a version's change rows.
pub fn changes_name(version: u64, run_id: &str) -> String {
    format!("changes/v{version:08}-{run_id}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::Counts;
    use chrono::Utc;

    fn record(table: &str, version: u64) -> CommitRecord {
        let file = StoredFile {
            path: "snapshots/x.parquet".into(),
            size: 0,
            xxh3_128: String::new(),
        };
        CommitRecord {
            format: RECORD_FORMAT,
            table: table.into(),
            version,
            kind: CommitKind::Run,
            committed_at: Utc::now(),
            started_at: Utc::now(),
            run_id: "r".into(),
            pipeline: "p".into(),
            pipeline_hash: String::new(),
            tidemark_version: String::new(),
            snapshot: file.clone(),
            changes: file,
            counts: Counts::default(),
            source_files: Vec::new(),
            key: vec!["id".into()],
            schema: Vec::new(),
            hash: HashSpec {
                version: 1,
                columns: Vec::new(),
                normalize: Vec::new(),
            },
            duration_ms: 0,
            watermark: None,
            previous_version: version.checked_sub(1).filter(|v| *v > 0),
            atomic: None,
        }
    }

    #[tokio::test]
    async fn a_version_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().display().to_string(), true).unwrap();
        store.commit(&record("items", 1)).await.unwrap();
        let second = store.commit(&record("items", 1)).await.unwrap_err();
        assert!(
            matches!(second, Error::Conflict { version: 1, .. }),
            "{second}"
        );
        assert_eq!(second.exit_code(), 4);
        assert_eq!(store.versions("items").await.unwrap(), vec![1]);
        store.commit(&record("items", 2)).await.unwrap();
        assert_eq!(store.latest("items").await.unwrap().unwrap().version, 2);
        assert_eq!(store.tables().await.unwrap(), vec!["items".to_string()]);

        // A run that read v1 as its baseline cannot commit v3 over v2: its changes skip v2.
        let mut stale = record("items", 3);
        stale.previous_version = Some(1);
        let refused = store.commit(&stale).await.unwrap_err();
        assert!(
            matches!(refused, Error::Conflict { version: 2, .. }),
            "{refused}"
        );
        assert_eq!(store.versions("items").await.unwrap(), vec![1, 2]);
    }

    #[tokio::test]
    async fn reading_a_missing_store_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("absent").display().to_string();
        let store = Store::open(&location, false).unwrap();
        assert!(store.versions("items").await.unwrap().is_empty());
        assert!(store.runs().await.unwrap().is_empty());
        assert!(!dir.path().join("absent").exists());
    }
}
