//! SQL over the store: for each table T, `T` (latest snapshot), `T_history` (every version's
//! snapshot with `_version`), `T_changes` (every version's change rows with `_version`), and
//! `runs` (one row per table per run, failed ones included).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::logical_expr::lit;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};

use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::engine;
use crate::error::{Error, Result};
use crate::store::{CommitRecord, Store, StoredFile};

/// Name of the version column in `T_history` and `T_changes`.
pub const VERSION_COLUMN: &str = "_version";

/// A session with every table of the store registered.
pub async fn session(store: &Store) -> Result<SessionContext> {
    let ctx = engine::session();
    for table in store.tables().await? {
        register_table(&ctx, store, &table).await?;
    }
    register_runs(&ctx, store).await?;
    Ok(ctx)
}

async fn read_stored(
    ctx: &SessionContext,
    store: &Store,
    table: &str,
    record: &CommitRecord,
    file: &StoredFile,
) -> Result<DataFrame> {
    store.attach(ctx);
    let path = store.file_url(table, &file.path);
    let frame = ctx
        .read_parquet(&path, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::Store {
            location: path.clone(),
            message: format!(
                "cannot read {table} v{}: {e}. Run `tidemark verify`.",
                record.version
            ),
        })?;
    let has_hash = frame
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == ROW_HASH_COLUMN);
    if has_hash {
        frame
            .drop_columns(&[ROW_HASH_COLUMN])
            .map_err(|e| engine::error("reading the store", e))
    } else {
        Ok(frame)
    }
}

async fn register_table(ctx: &SessionContext, store: &Store, table: &str) -> Result<()> {
    let versions = store.versions(table).await?;
    let Some(&last) = versions.last() else {
        return Ok(());
    };
    // The latest snapshot on its own, so that one damaged old version does not take `T` down;
    // a table whose files cannot be read fails loudly when a query uses it, never answers empty.
    let record = match store.commit_record(table, last).await {
        Ok(record) => record,
        Err(e) => {
            // A damaged record: the table and its history fail any query that uses them (with
            // the advice), and the store's other tables still answer.
            let message = format!(
                "{e}; `tidemark rollback --table {table} --to V` to an intact version commits above it"
            );
            let empty = Arc::new(Schema::empty());
            for name in [
                table.to_string(),
                format!("{table}_history"),
                format!("{table}_changes"),
            ] {
                register_or_fail(ctx, name, Err((empty.clone(), message.clone())))?;
            }
            return Ok(());
        }
    };
    // The columns a failing table shows, so that queries plan and then fail with the reason.
    let mut fields: Vec<Field> = record
        .schema
        .iter()
        .map(|c| {
            let t = c.data_type.parse().unwrap_or(DataType::Utf8);
            Field::new(&c.name, t, true)
        })
        .collect();
    let latest_schema = Arc::new(Schema::new(fields.clone()));
    fields.push(Field::new(VERSION_COLUMN, DataType::Int64, false));
    let history_schema = Arc::new(Schema::new(fields));
    // The latest snapshot is checked against its record before it answers; older versions
    // (the history) are read as stored: `verify` checks them all.
    let latest = match store
        .check_before_reading(&record, &record.snapshot, "snapshot")
        .await
    {
        Ok(()) => read_stored(ctx, store, table, &record, &record.snapshot).await,
        Err(e) => Err(e),
    };
    register_or_fail(
        ctx,
        table.to_string(),
        latest.map_err(|e| (latest_schema, e.to_string())),
    )?;
    let mut history: Option<DataFrame> = None;
    let mut changes: Option<DataFrame> = None;
    let all = async {
        for &version in &versions {
            let record = if version == last {
                record.clone()
            } else {
                store.commit_record(table, version).await?
            };
            let snapshot = read_stored(ctx, store, table, &record, &record.snapshot).await?;
            let change_rows = read_stored(ctx, store, table, &record, &record.changes).await?;
            let with_version = |f: DataFrame| f.with_column(VERSION_COLUMN, lit(version as i64));
            let fail = |e| engine::error(format!("registering {table}"), e);
            let snapshot_v = with_version(snapshot).map_err(fail)?;
            let change_v = with_version(change_rows).map_err(fail)?;
            history = Some(match history.take() {
                None => snapshot_v,
                Some(h) => h.union_by_name(snapshot_v).map_err(fail)?,
            });
            changes = Some(match changes.take() {
                None => change_v,
                Some(c) => c.union_by_name(change_v).map_err(fail)?,
            });
        }
        Ok::<(), Error>(())
    }
    .await;
    match all {
        Ok(()) => {
            for (name, frame) in [
                (format!("{table}_history"), history),
                (format!("{table}_changes"), changes),
            ] {
                if let Some(frame) = frame {
                    register_or_fail(ctx, name, Ok(frame))?;
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            for name in [format!("{table}_history"), format!("{table}_changes")] {
                register_or_fail(ctx, name, Err((history_schema.clone(), message.clone())))?;
            }
        }
    }
    Ok(())
}

/// Register `frame` as `name`, or, when it could not be read, a table that fails every query
/// that uses it with that error.
fn register_or_fail(
    ctx: &SessionContext,
    name: String,
    frame: std::result::Result<DataFrame, (SchemaRef, String)>,
) -> Result<()> {
    let provider: Arc<dyn TableProvider> = match frame {
        Ok(frame) => frame.into_view(),
        Err((schema, message)) => Arc::new(Unreadable { schema, message }),
    };
    ctx.register_table(TableReference::bare(name.as_str()), provider)
        .map_err(|e| engine::error(format!("registering {name}"), e))?;
    Ok(())
}

/// A stored table whose files cannot be read: planning a query over it fails with why.
#[derive(Debug)]
struct Unreadable {
    schema: SchemaRef,
    message: String,
}

#[async_trait::async_trait]
impl TableProvider for Unreadable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[datafusion::prelude::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        Err(datafusion::error::DataFusionError::Execution(
            self.message.clone(),
        ))
    }
}

/// The schema of the `runs` table.
pub fn runs_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::Int64, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("finished_at", ts, false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("new", DataType::Int64, false),
        Field::new("changed", DataType::Int64, false),
        Field::new("deleted", DataType::Int64, false),
        Field::new("renamed", DataType::Int64, false),
        Field::new("unchanged", DataType::Int64, false),
        Field::new("rejected", DataType::Int64, false),
        Field::new("source", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// Turn serde rows into one record batch of `schema`.
pub fn rows_to_batch<S: serde::Serialize>(schema: SchemaRef, rows: &[S]) -> Result<RecordBatch> {
    let fail =
        |e: datafusion::arrow::error::ArrowError| engine::error("building a table", e.into());
    let mut decoder = ReaderBuilder::new(schema.clone())
        .build_decoder()
        .map_err(fail)?;
    decoder.serialize(rows).map_err(fail)?;
    Ok(decoder
        .flush()
        .map_err(fail)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

async fn register_runs(ctx: &SessionContext, store: &Store) -> Result<()> {
    let runs = store.runs().await?;
    let batch = rows_to_batch(runs_schema(), &runs)?;
    crate::engine::register_batches(ctx, "runs", batch.schema(), vec![batch])
}
