//! The store: each table's baseline as a sequence of versions 1, 2, 3, ...
//!
//! Layout under the store root (plain files that DuckDB, pandas or Spark read without tidemark):
//!
//! ```text
//! <table>/snapshots/v00000002-<run id>.parquet   full snapshot of version 2, with _row_hash
//! <table>/changes/v00000002-<run id>.parquet     the change rows of the run that made it
//! <table>/_commits/00000002.json                 the commit record: makes version 2 visible
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
//! 3. Outputs (delta files) are renamed into place and the run record is written after the
//!    commit. The delta files are written before it, under temporary names beside their
//!    places: a crash leaves such a `.<name>.<id>.tmp` file in the output folder, never a
//!    delta of an uncommitted version under its name.
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
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

pub mod vacuum;
pub mod verify;

use crate::diff::Counts;
use crate::error::{Error, Result};
use crate::source::SourceFile;

/// Version of the commit record format.
pub const RECORD_FORMAT: u32 = 1;

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitKind {
    /// A pipeline run.
    Run,
    /// A rollback to an earlier version.
    Rollback,
    /// An empty version: the next run sees every row as NEW.
    Reset,
}

/// A data file of a version, with what `verify` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Path relative to the table's folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// xxh3-128 of the bytes, hex.
    pub xxh3_128: String,
}

/// A column of the snapshot's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Arrow type, as Arrow displays it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Every row of the version is null in this column (it is then not compared next run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
}

/// Which columns the stored `_row_hash` covers, and by which algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSpec {
    /// `diff::row_hash::HASH_VERSION`.
    pub version: u32,
    /// Compared columns, in hash order, with their types.
    pub columns: Vec<ColumnSchema>,
    /// Clean-ups applied to the rows before hashing (`normalize:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalize: Vec<crate::spec::Normalize>,
}

/// The commit record of one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRecord {
    /// `RECORD_FORMAT`.
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Version number, from 1.
    pub version: u64,
    /// How it came to be.
    pub kind: CommitKind,
    /// When the record was written (UTC).
    pub committed_at: DateTime<Utc>,
    /// When the run started (UTC).
    pub started_at: DateTime<Utc>,
    /// The run's random id (also in the data file names).
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// xxh3 of the pipeline file.
    pub pipeline_hash: String,
    /// tidemark's version.
    pub tidemark_version: String,
    /// The full snapshot.
    pub snapshot: StoredFile,
    /// The change rows of this version.
    pub changes: StoredFile,
    /// Row counts by change type.
    pub counts: Counts,
    /// Source files read.
    pub source_files: Vec<SourceFile>,
    /// Key columns.
    pub key: Vec<String>,
    /// Snapshot schema, without `_row_hash`.
    pub schema: Vec<ColumnSchema>,
    /// What `_row_hash` covers.
    pub hash: HashSpec,
    /// Run duration up to the commit.
    pub duration_ms: u64,
    /// `mode: incremental`: the highest watermark value committed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// The version this one was computed against (its change rows are relative to it); no
    /// other version may have become visible in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    /// Set by an `atomic: true` pipeline: the id of its pipeline commit, which must say
    /// `committed` for this version to be visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomic: Option<String>,
}

/// The pipeline-level record of an `atomic: true` run, `_atomic/<id>.json`: creating it as
/// `committed` makes all its table versions visible at once; as `aborted`, none of them ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicRecord {
    /// The run's id (also in the table records' `atomic`).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// `committed` or `aborted`.
    pub state: AtomicState,
    /// The table versions it covers.
    pub tables: Vec<TableVersion>,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// The outcome of an atomic pipeline commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomicState {
    /// Its versions are visible.
    Committed,
    /// Its versions never will be (the run failed, or a later run gave up waiting for it).
    Aborted,
}

/// One table's version in an atomic commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableVersion {
    /// Table name.
    pub table: String,
    /// Its version.
    pub version: u64,
}

/// The highest value of an incremental table's watermark column the store holds: the next run
/// ignores rows at or below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The column.
    pub column: String,
    /// Its highest value, as text (cast back to the column's type when compared).
    pub value: String,
}

/// One table run, committed or not, as the `runs` table shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Pipeline name.
    pub pipeline: String,
    /// Table name.
    pub table: String,
    /// Version committed (or that would have been).
    pub version: Option<u64>,
    /// committed, failed, refused, conflict, skipped.
    pub status: String,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End (UTC).
    pub finished_at: DateTime<Utc>,
    /// Duration.
    pub duration_ms: u64,
    /// Counts.
    pub rows_in: u64,
    /// NEW rows.
    pub new: u64,
    /// CHANGED rows.
    pub changed: u64,
    /// DELETED rows.
    pub deleted: u64,
    /// UNCHANGED rows.
    pub unchanged: u64,
    /// Rejected rows.
    pub rejected: u64,
    /// Source files, comma separated.
    pub source: Option<String>,
    /// Error message, when failed.
    pub error: Option<String>,
}

/// A store's file on local disk (see [`Store::local_file`]).
#[derive(Debug)]
pub struct LocalFile {
    /// Where it is.
    pub path: PathBuf,
    /// The temporary copy of a file from a bucket, removed when dropped.
    _copy: Option<tempfile::TempPath>,
}

impl LocalFile {
    /// A file that stays where it is.
    pub fn at(path: PathBuf) -> LocalFile {
        LocalFile { path, _copy: None }
    }
}

/// The folder of a table's spooled snapshots (see [`Store::spool`]).
pub const SPOOL_FOLDER: &str = "spool";

/// A file a snapshot is written into as it streams in (see [`Store::spool`]); removed when
/// dropped, stored or not.
pub struct Spool {
    file: Option<std::fs::File>,
    path: tempfile::TempPath,
    /// Once written: its size and checksum, taken as the bytes went by.
    written: Option<(u64, String)>,
    /// Whether it becomes a file of a store that syncs its files (linked there as it is).
    durable: bool,
    /// The file being synced to disk since it was written whole.
    syncing: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Spool {
    /// Where it is.
    pub fn path(&self) -> &FsPath {
        self.path.as_ref()
    }

    /// The open file, to write once, through a writer that checksums what it writes.
    pub fn take_writer(&mut self) -> Option<SpoolWriter> {
        self.file.take().map(|file| SpoolWriter {
            file,
            checksum: Checksum::default(),
        })
    }

    /// The file is whole: what its writer saw is what [`Store::put_spooled`] records. For a
    /// store that syncs its files, the file starts going to disk now, on its own thread, while
    /// the run compares and classifies (at 10M rows, 0.2 s of flushing the run no longer waits
    /// for when it stores the file).
    pub fn written(&mut self, writer: SpoolWriter) {
        self.written = Some(writer.checksum.finish());
        if self.durable {
            let file = writer.file;
            self.syncing = Some(std::thread::spawn(move || file.sync_data()));
        }
    }
}

/// The writer of a [`Spool`]: the file, and the checksum of every byte written to it, so that
/// storing the file needs no second read of it.
pub struct SpoolWriter {
    file: std::fs::File,
    checksum: Checksum,
}

impl std::io::Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.checksum.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The size and xxh3-128 of bytes seen in order, as a [`StoredFile`] records them.
#[derive(Default)]
struct Checksum {
    hasher: xxhash_rust::xxh3::Xxh3,
    size: u64,
}

impl Checksum {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Size, and the checksum in hex.
    fn finish(&self) -> (u64, String) {
        (self.size, format!("{:032x}", self.hasher.digest128()))
    }
}

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

    /// For a version written by an atomic run, the state of its pipeline commit (None: not yet
    /// written); for any other version, `Committed`.
    async fn atomic_state_of(&self, table: &str, version: u64) -> Result<Option<AtomicState>> {
        let record = self.commit_record(table, version).await?;
        match &record.atomic {
            None => Ok(Some(AtomicState::Committed)),
            Some(id) => Ok(self.atomic_record(id).await?.map(|a| a.state)),
        }
    }

    /// An atomic pipeline commit record, if written.
    pub async fn atomic_record(&self, id: &str) -> Result<Option<AtomicRecord>> {
        let path = Path::from(format!("_atomic/{id}.json"));
        let location = format!("{}/{path}", self.location);
        match self.objects()?.get(&path).await {
            Ok(found) => {
                let bytes = found.bytes().await.map_err(|e| store_error(&location, e))?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    store_error(
                        &location,
                        format!("the pipeline commit record is damaged ({e})"),
                    )
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(location, e)),
        }
    }

    /// The number the table's next version takes: above every commit record, visible or not.
    pub async fn next_version(&self, table: &str) -> Result<u64> {
        Ok(self
            .recorded_versions(table)
            .await?
            .last()
            .map_or(1, |v| v + 1))
    }

    /// Make a prepared version of an atomic run the latest for the tables of the same run
    /// that read it (their transforms and references), before it is committed.
    pub fn stage(&self, record: CommitRecord) {
        self.staged
            .lock()
            .expect("the staged records are not poisoned")
            .insert(record.table.clone(), record);
    }

    /// Before committing `version` of `table`: atomic runs' versions below it whose pipeline
    /// commit is absent are aborted (their pipeline record created as `aborted`), so they can
    /// never become visible under a newer version. If one was committed meanwhile, this run's
    /// baseline is stale: a conflict.
    async fn settle_pending(&self, table: &str, version: u64) -> Result<()> {
        let pending = self.numbered(table, "_pending", "").await?;
        for earlier in pending.into_iter().filter(|v| *v < version) {
            let record = match self.commit_record(table, earlier).await {
                Ok(r) => r,
                // A marker whose record was never written: nothing to settle.
                Err(_) if !self.recorded_versions(table).await?.contains(&earlier) => continue,
                Err(e) => return Err(e),
            };
            let Some(id) = &record.atomic else { continue };
            match self.atomic_record(id).await? {
                Some(_) => continue,
                None => {
                    let aborted = AtomicRecord {
                        id: id.clone(),
                        pipeline: record.pipeline.clone(),
                        state: AtomicState::Aborted,
                        tables: vec![TableVersion {
                            table: table.to_string(),
                            version: earlier,
                        }],
                        at: Utc::now(),
                    };
                    match self.create_atomic_record(&aborted).await? {
                        AtomicState::Aborted => {}
                        AtomicState::Committed => {
                            return Err(Error::Conflict {
                                table: table.to_string(),
                                version: earlier,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Create `_atomic/<id>.json` if absent; returns the state it holds afterwards (another
    /// run's, when it was there first).
    async fn create_atomic_record(&self, record: &AtomicRecord) -> Result<AtomicState> {
        let path = Path::from(format!("_atomic/{}.json", record.id));
        let json = serde_json::to_vec_pretty(record).map_err(|e| store_error(&self.location, e))?;
        let objects = self.ensure_put_if_absent().await?;
        match self.create(objects, &path, PutPayload::from(json)).await {
            Ok(()) => {
                self.sync(&path)?;
                Ok(record.state)
            }
            Err(put) => match self.atomic_record(&record.id).await? {
                // Written by another run first, or by this one with its answer lost.
                Some(found) => Ok(found.state),
                None => Err(store_error(format!("{}/{path}", self.location), put)),
            },
        }
    }

    /// Commit the prepared versions of an atomic pipeline run together: each table's record is
    /// created (put-if-absent, marked `_pending/<version>` first), then the pipeline record
    /// `_atomic/<id>.json` as `committed`, the single write that makes them all visible. If a
    /// table's version was taken by another run, or another run aborted this one first, the
    /// pipeline record says `aborted` and nothing becomes visible (exit 4).
    pub async fn commit_atomic(
        &self,
        id: &str,
        pipeline: &str,
        records: &[CommitRecord],
    ) -> Result<()> {
        let objects = self.ensure_put_if_absent().await?;
        let mut outcome = Ok(());
        for record in records {
            // `commit` settles earlier pending versions first; this run's marker is not earlier.
            let marker = Path::from(format!("{}/_pending/{}", record.table, record.version));
            objects
                .put(&marker, PutPayload::from_static(b""))
                .await
                .map_err(|e| store_error(format!("{}/{marker}", self.location), e))?;
            self.sync(&marker)?;
            if let Err(e) = self.commit(record).await {
                outcome = Err(e);
                break;
            }
        }
        let state = if outcome.is_ok() {
            AtomicState::Committed
        } else {
            AtomicState::Aborted
        };
        let pipeline_record = AtomicRecord {
            id: id.to_string(),
            pipeline: pipeline.to_string(),
            state,
            tables: records
                .iter()
                .map(|r| TableVersion {
                    table: r.table.clone(),
                    version: r.version,
                })
                .collect(),
            at: Utc::now(),
        };
        let written = self.create_atomic_record(&pipeline_record).await?;
        outcome?;
        match written {
            AtomicState::Committed => Ok(()),
            AtomicState::Aborted => Err(Error::Conflict {
                table: records.first().map(|r| r.table.clone()).unwrap_or_default(),
                version: records.first().map_or(0, |r| r.version),
            }),
        }
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
        let mut versions: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(suffix)?.parse().ok())
            .collect();
        versions.sort_unstable();
        Ok(versions)
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

    /// A data file of a table as a local file to read parts of: the store's own file when the
    /// store is a folder; from a bucket, a copy in a temporary file (removed when the returned
    /// value is dropped), so that reading a few rows of a large snapshot does not hold it in
    /// memory.
    pub async fn local_file(&self, table: &str, relative: &str) -> Result<LocalFile> {
        match &self.place {
            Place::Local { root, .. } => Ok(LocalFile::at(root.join(table).join(relative))),
            Place::Remote(_) => {
                let path = Path::from(format!("{table}/{relative}"));
                let location = format!("{}/{path}", self.location);
                let temp = std::env::temp_dir();
                let mut copy = tempfile::NamedTempFile::new().map_err(|e| Error::io(&temp, e))?;
                let mut chunks = self
                    .objects()?
                    .get(&path)
                    .await
                    .map_err(|e| store_error(&location, e))?
                    .into_stream();
                while let Some(chunk) = chunks
                    .try_next()
                    .await
                    .map_err(|e| store_error(&location, e))?
                {
                    std::io::Write::write_all(&mut copy, &chunk)
                        .map_err(|e| Error::io(copy.path(), e))?;
                }
                Ok(LocalFile {
                    path: copy.path().to_path_buf(),
                    _copy: Some(copy.into_temp_path()),
                })
            }
        }
    }

    /// A new file to write a table's next snapshot into as it streams in, before it is stored
    /// ([`Store::put_spooled`]): in the table's `spool` folder for a folder store, so that
    /// storing it is a link, not a copy (a file left there by a killed run is removed by
    /// `vacuum`); in the temporary folder for a bucket. Removed when dropped.
    pub fn spool(&self, table: &str, run_id: &str) -> Result<Spool> {
        let (dir, name) = match &self.place {
            Place::Local { root, .. } => (
                root.join(table).join(SPOOL_FOLDER),
                format!("{run_id}.parquet"),
            ),
            Place::Remote(_) => (
                std::env::temp_dir(),
                format!("tidemark-spool-{table}-{run_id}.parquet"),
            ),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(name);
        // Created as the store creates its files (the process's umask), not private as a
        // temporary file would be: a folder store links it into place as it is.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let path = tempfile::TempPath::try_from_path(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Spool {
            file: Some(file),
            path,
            written: None,
            durable: matches!(
                self.place,
                Place::Local {
                    durable: true,
                    links: true,
                    ..
                }
            ),
            syncing: None,
        })
    }

    /// Store a spooled file as a data file of a table (step 1 of the commit protocol, as
    /// [`Store::put_file`]): created only if absent, with the checksum its writer took.
    pub async fn put_spooled(
        &self,
        table: &str,
        relative: &str,
        mut spool: Spool,
    ) -> Result<StoredFile> {
        let spooled: &FsPath = spool.path.as_ref();
        let Some((size, checksum)) = spool.written.take() else {
            return Err(Error::io(
                spooled,
                std::io::Error::other("the spooled file was stored before it was whole"),
            ));
        };
        if let Some(syncing) = spool.syncing.take() {
            syncing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map_err(|e| Error::io(spooled, e))?;
        }
        let path = Path::from(format!("{table}/{relative}"));
        match &self.place {
            Place::Local {
                root, links: true, ..
            } => {
                let target = root.join(path.as_ref());
                if let Some(dir) = target.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                // A link is created only if the name is free, as the store creates files.
                match std::fs::hard_link(spooled, &target) {
                    Ok(()) => {}
                    // A file system without links: copy into a file created only if absent,
                    // removed again if the copy fails, so that no part of a file is left
                    // under a data file's name.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::Unsupported
                                | std::io::ErrorKind::CrossesDevices
                                | std::io::ErrorKind::PermissionDenied
                        ) =>
                    {
                        let mut out = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&target)
                            .map_err(|e| Error::io(&target, e))?;
                        let copied = std::fs::File::open(spooled)
                            .and_then(|mut from| std::io::copy(&mut from, &mut out));
                        if let Err(e) = copied {
                            drop(out);
                            let _ = std::fs::remove_file(&target);
                            return Err(Error::io(&target, e));
                        }
                    }
                    Err(e) => {
                        return Err(store_error(self.file_url(table, relative), e));
                    }
                }
            }
            Place::Local { .. } | Place::Remote(_) => {
                let bytes = std::fs::read(spooled).map_err(|e| Error::io(spooled, e))?;
                let objects = self.ensure_put_if_absent().await?;
                self.create(objects, &path, PutPayload::from(bytes))
                    .await
                    .map_err(|e| store_error(self.file_url(table, relative), e))?;
            }
        }
        drop(spool);
        self.sync(&path)?;
        Ok(StoredFile {
            path: relative.to_string(),
            size,
            xxh3_128: checksum,
        })
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
