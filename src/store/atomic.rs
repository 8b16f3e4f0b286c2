//! `atomic: true` pipelines: each table's version staged, and all of them made visible by one
//! pipeline record created if absent (see the protocol in [`super`]).

use chrono::Utc;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::{AtomicRecord, AtomicState, CommitRecord, Store, TableVersion, store_error};
use crate::error::{Error, Result};

impl Store {
    /// For a version written by an atomic run, the state of its pipeline commit (None: not yet
    /// written); for any other version, `Committed`.
    pub(super) async fn atomic_state_of(
        &self,
        table: &str,
        version: u64,
    ) -> Result<Option<AtomicState>> {
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
    pub(super) async fn settle_pending(&self, table: &str, version: u64) -> Result<()> {
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
}
