//! Files a run reads or writes beside the store's objects: a local copy of a stored file to
//! read by position, and the spool a streamed snapshot is written to before it is stored.

use std::path::{Path as FsPath, PathBuf};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Place, Store, StoredFile, store_error};
use crate::error::{Error, Result};

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
pub(super) struct Checksum {
    hasher: xxhash_rust::xxh3::Xxh3,
    size: u64,
}

impl Checksum {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Size, and the checksum in hex.
    pub(super) fn finish(&self) -> (u64, String) {
        (self.size, format!("{:032x}", self.hasher.digest128()))
    }
}

impl Store {
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
}
