//! Versions made from other versions: `rollback` (a new version whose snapshot is an earlier
//! version's) and `reset` (a new, empty version). Neither deletes anything: the new version
//! references existing snapshot files or adds new ones, and its change rows say what moved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::lit;

use crate::diff::baseline::register as register_baseline;
use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::diff::sql::register_hash_views;
use crate::diff::{self, CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Counts, DiffSettings};
use crate::engine;
use crate::error::{Error, Result};
use crate::sink;
use crate::sink::shape::stored_changes;
use crate::spec::{ChangeKind, Plan, TablePlan};
use crate::store::tables::register_snapshot;
use crate::store::{self, CommitKind, CommitRecord, Store};

async fn latest_of(store: &Store, table: &str) -> Result<CommitRecord> {
    store.latest(table).await?.ok_or_else(|| Error::Usage {
        message: format!(
            "table {table} has no versions yet; there is nothing to roll back or reset."
        ),
    })
}

fn new_record(
    plan: &Plan,
    from: &CommitRecord,
    version: u64,
    kind: CommitKind,
    run_id: &str,
) -> CommitRecord {
    CommitRecord {
        version,
        kind,
        committed_at: Utc::now(),
        started_at: Utc::now(),
        run_id: run_id.to_string(),
        pipeline: plan.name.clone(),
        pipeline_hash: plan.file_hash.clone(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        atomic: None,
        ..from.clone()
    }
}

/// Classify version `to`'s snapshot against version `from`'s: the changes a run would have
/// reported going from one to the other (compared on the columns `to` hashed that `from` has).
pub async fn diff_versions(
    store: &Store,
    table: &TablePlan,
    from: &CommitRecord,
    to: &CommitRecord,
) -> Result<diff::Delta> {
    let name = table.name.as_str();
    let ctx = engine::session();
    let types: HashMap<String, DataType> = to
        .schema
        .iter()
        .filter_map(|c| c.data_type.parse().ok().map(|t| (c.name.clone(), t)))
        .collect();
    // `from` is read as `to`'s rows were prepared: its clean-ups and types.
    let prepared = TablePlan {
        key: to.key.clone(),
        normalize: to.hash.normalize.clone(),
        ..table.clone()
    };
    register_baseline(&ctx, store, &prepared, from, &types).await?;
    register_snapshot(&ctx, store, name, to, "incoming").await?;
    let from_columns: Vec<String> = from.schema.iter().map(|c| c.name.clone()).collect();
    let columns: Vec<String> = to.schema.iter().map(|c| c.name.clone()).collect();
    let compared: Vec<String> = to
        .hash
        .columns
        .iter()
        .map(|c| c.name.clone())
        .filter(|c| from_columns.contains(c))
        .collect();
    register_hash_views(
        &ctx,
        (&prepared.name, &prepared.key),
        &compared,
        &[],
        &types,
        from.hash == to.hash,
    )
    .await?;
    let settings = DiffSettings {
        key: to.key.clone(),
        compared,
        columns,
        baseline_columns: from_columns,
        include_unchanged: false,
        tolerance: Vec::new(),
        renames: table.renames,
    };
    let delta = diff::sql::classify(&ctx, &settings, to.counts.rows_in).await?;
    Ok(delta)
}

/// Commit a new version whose snapshot equals version `to`'s; its change rows are the diff from
/// the current latest version to that snapshot.
pub async fn rollback(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    to: u64,
) -> Result<CommitRecord> {
    let started = Instant::now();
    let name = table.name.as_str();
    let versions = store.versions(name).await?;
    let Some(&newest) = versions.last() else {
        return Err(Error::Usage {
            message: format!("table {name} has no versions yet; there is nothing to roll back."),
        });
    };
    if !versions.contains(&to) {
        return Err(Error::Usage {
            message: format!("table {name} has no version {to}; its versions are 1 to {newest}."),
        });
    }
    if to == newest {
        return Err(Error::Usage {
            message: format!(
                "v{to} is already the latest version of {name}; nothing to roll back."
            ),
        });
    }
    let target = store.commit_record(name, to).await?;
    // The change rows say what the rollback changes for a reader, relative to the newest
    // intact version: the latest one is often damaged (its record or its files), the usual
    // reason to roll back, and the rollback commits above it all the same.
    let base = newest_intact(store, name, &versions).await?;
    if base.key != target.key {
        return Err(Error::Usage {
            message: format!(
                "v{to} of {name} has key {:?} but the latest version has {:?}; a rollback across a key change is not possible.",
                target.key, base.key
            ),
        });
    }
    let delta = diff_versions(store, table, &base, &target).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let version = store.next_version(name).await?;
    let (schema, batches) = stored_changes(table, &delta).await?;
    let changes = store
        .put_file(
            name,
            &store::changes_name(version, &run_id),
            sink::encode_parquet(&schema, &batches)?,
        )
        .await?;
    let mut record = new_record(plan, &target, version, CommitKind::Rollback, &run_id);
    record.previous_version = Some(newest);
    record.changes = changes;
    record.counts = delta.counts;
    record.duration_ms = started.elapsed().as_millis() as u64;
    crate::deliver::join_missing(store, table, version - 1).await?;
    store.commit(&record).await?;
    Ok(record)
}

/// The newest version of `versions` whose commit record reads and whose files match it; the
/// damaged ones above it are named in the log.
async fn newest_intact(store: &Store, name: &str, versions: &[u64]) -> Result<CommitRecord> {
    for &v in versions.iter().rev() {
        let problem = match store.commit_record(name, v).await {
            Ok(record) => match store.check_files(&record).await {
                problems if problems.is_empty() => return Ok(record),
                problems => problems.join("; "),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            "{name} v{v} is damaged ({problem}); the rollback's change rows are relative to an older version"
        );
    }
    Err(Error::Store {
        location: store.location().to_string(),
        message: format!("no version of {name} is intact; restore the store from a copy"),
    })
}

/// Commit an empty version: the next run sees every row as NEW. Its change rows are every row
/// of the latest version, DELETED.
pub async fn reset(plan: &Plan, table: &TablePlan, store: &Store) -> Result<CommitRecord> {
    let started = Instant::now();
    let name = table.name.as_str();
    let latest = latest_of(store, name).await?;
    let ctx = engine::session();
    register_snapshot(&ctx, store, name, &latest, "baseline").await?;
    let fail = |e| engine::error(format!("resetting {name}"), e);
    let frame = ctx.table("baseline").await.map_err(fail)?;
    let snapshot_schema = Arc::new(frame.schema().as_arrow().clone());
    let cc = &table.change_columns;
    let changes_frame = frame
        .drop_columns(&[ROW_HASH_COLUMN])
        .and_then(|f| f.with_column(CHANGE_TYPE_COLUMN, lit(ChangeKind::Deleted.canonical())))
        .and_then(|f| f.with_column(CHANGE_REASON_COLUMN, lit("row removed (reset)")))
        .map_err(fail)?;
    let renamed = changes_frame
        .with_column_renamed(CHANGE_TYPE_COLUMN, &cc.type_column)
        .and_then(|f| f.with_column_renamed(CHANGE_REASON_COLUMN, &cc.reason_column))
        .map_err(fail)?;
    let changes_schema = Arc::new(renamed.schema().as_arrow().clone());
    let change_rows = renamed.collect().await.map_err(fail)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let version = store.next_version(name).await?;
    let empty = sink::encode_parquet(
        &snapshot_schema,
        &[RecordBatch::new_empty(snapshot_schema.clone())],
    )?;
    let snapshot = store
        .put_file(name, &store::snapshot_name(version, &run_id), empty)
        .await?;
    let changes = store
        .put_file(
            name,
            &store::changes_name(version, &run_id),
            sink::encode_parquet(&changes_schema, &change_rows)?,
        )
        .await?;
    let mut record = new_record(plan, &latest, version, CommitKind::Reset, &run_id);
    record.previous_version = Some(latest.version);
    record.snapshot = snapshot;
    record.changes = changes;
    record.source_files = Vec::new();
    record.watermark = None;
    record.counts = Counts {
        deleted: latest.counts.rows_in,
        ..Counts::default()
    };
    record.duration_ms = started.elapsed().as_millis() as u64;
    crate::deliver::join_missing(store, table, version - 1).await?;
    store.commit(&record).await?;
    Ok(record)
}
