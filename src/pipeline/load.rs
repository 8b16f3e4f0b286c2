//! Load: a table's source read into Arrow (local files or a bucket's), registered as
//! `source` with the latest snapshots of the tables it depends on, the transform applied, and
//! every column the pipeline names checked.

use std::collections::HashSet;
use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, SessionContext, ident};

use super::Facts;
use crate::engine::{self, register_batches};
use crate::error::{Error, Result};
use crate::source;
use crate::spec::{TableMode, TablePlan};
use crate::store::Store;
use crate::store::tables::register_snapshot;
use crate::validate::{self, RejectedRow, Rejection};

/// A table's new snapshot, loaded and transformed, not yet typed or hashed.
pub struct LoadedSnapshot {
    /// The snapshot (the transform's result, or the source).
    pub frame: DataFrame,
    /// Its columns, files, origin and rows (after a transform, of the source rows when
    /// `frame` ends with [`SOURCE_ROW`], which `facts.traced` says).
    pub(crate) facts: Facts,
    /// The source's rows as read (shared with the registered `source` table, not copied).
    pub source_batches: Vec<RecordBatch>,
    /// Without a transform: cells that did not fit their type, by snapshot row (null there).
    pub cell_errors: Vec<source::CellError>,
    /// With a transform: source rows whose cells did not fit, held out before it.
    pub early_rejects: Vec<RejectedRow>,
    /// Their keys, as the transform gives them, so that they keep their baseline rows.
    pub early_held_keys: Vec<RecordBatch>,
}

/// Load a table's source, register it as `source` (and its dependencies by name), apply the
/// transform, and check that the columns the pipeline names exist.
pub async fn load_snapshot(
    ctx: &SessionContext,
    table: &TablePlan,
    store: &Store,
    source_override: Option<&PathBuf>,
    progress: &dyn source::LoadProgress,
) -> Result<LoadedSnapshot> {
    let name = table.name.as_str();
    let source_path = match source_override {
        Some(p) if crate::cloud::is_url(&p.to_string_lossy()) => p.display().to_string(),
        Some(p) => std::path::absolute(p)
            .map_err(|e| Error::io(p, e))?
            .display()
            .to_string(),
        None => table.source_path.clone(),
    };
    // A file given with --source is read by its own extension (today's export may be a CSV
    // where the pipeline usually reads a workbook); the other source settings still apply.
    let mut options = table.source.clone();
    if source_override.is_some()
        && let Some(format) = source::SourceFormat::from_extension(&source_path)
    {
        options.format = format;
    }
    // An increment with no rows is a quiet day, not a truncated export: nothing is deleted.
    let allow_empty = matches!(table.mode, TableMode::Incremental { .. });
    let loaded = source::remote::load_anywhere(
        name,
        &source_path,
        table.files,
        &options,
        allow_empty,
        progress,
    )
    .await?;
    let source_columns: Vec<String> = source::column_names(&loaded.schema);
    let source_origin = loaded.origin();
    let files = loaded.files.clone();
    for dep in &table.depends_on {
        let record = store
            .latest(dep)
            .await?
            .ok_or_else(|| Error::DependencyWithoutBaseline {
                table: name.to_string(),
                dependency: dep.clone(),
            })?;
        register_snapshot(ctx, store, dep, &record, dep).await?;
    }
    let Some(sql) = &table.transform else {
        register_batches(ctx, "source", loaded.schema.clone(), loaded.batches.clone())?;
        let frame = ctx
            .table("source")
            .await
            .map_err(engine::context(name, "reading the source"))?;
        let columns = source_columns.clone();
        validate::check_columns(
            table,
            &source_columns,
            &source_origin,
            &columns,
            &source_origin,
        )?;
        return Ok(LoadedSnapshot {
            frame,
            facts: Facts::new(
                columns,
                source_columns,
                files,
                source_origin,
                loaded.rows,
                false,
            ),
            source_batches: loaded.batches.clone(),
            cell_errors: loaded.cell_errors,
            early_rejects: Vec::new(),
            early_held_keys: Vec::new(),
        });
    };
    // Rows whose cells did not fit are held out before the transform, which could not say
    // which of its result rows they became.
    let bad: HashSet<u64> = loaded.cell_errors.iter().map(|e| e.row as u64).collect();
    let early_rejects = if bad.is_empty() {
        Vec::new()
    } else {
        let rejections: Vec<Rejection> = loaded
            .cell_errors
            .iter()
            .map(|e| Rejection {
                index: e.row as u64,
                rule: "type".into(),
                message: e.message.clone(),
                cell: Some((e.column.clone(), e.value.clone())),
            })
            .collect();
        validate::locate(&rejections, &loaded.rows, &loaded.batches, false)
    };
    let early_held_keys = if bad.is_empty() {
        Vec::new()
    } else {
        let rejected = validate::only_rows(&loaded.batches, &bad)?;
        transformed_keys(table, store, loaded.schema.clone(), rejected).await
    };
    let (numbered_schema, numbered) = with_source_rows(&loaded.schema, &loaded.batches, &bad)?;
    register_batches(ctx, "source", numbered_schema, numbered)?;
    let frame = engine::read_only_sql(ctx, sql)
        .await
        .map_err(|e| Error::Transform {
            table: name.to_string(),
            message: crate::error::engine_words(&e),
        })?;
    let (frame, traced) = trace_source_rows(frame);
    let mut columns: Vec<String> = source::column_names(frame.schema().as_arrow());
    if traced {
        columns.pop();
    }
    let result = "the transform's result".to_string();
    validate::check_columns(table, &source_columns, &source_origin, &columns, &result)?;
    let (origin, rows) = if traced {
        (source_origin.clone(), loaded.rows.clone())
    } else {
        (
            result.clone(),
            source::RowLocator::single(result, source::FileRows::From(1)),
        )
    };
    Ok(LoadedSnapshot {
        frame,
        facts: Facts::new(columns, source_columns, files, origin, rows, traced),
        source_batches: loaded.batches,
        cell_errors: Vec::new(),
        early_rejects,
        early_held_keys,
    })
}

/// The hidden column that carries each source row's 0-based index through a transform, so
/// that rows of its result are named by their row in the source file.
pub const SOURCE_ROW: &str = "__tidemark_source_row";

/// The source's rows without those in `held_out`, each with its 0-based index as
/// [`SOURCE_ROW`].
fn with_source_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    held_out: &HashSet<u64>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let (numbered_schema, numbered) = engine::with_ordinals(schema, batches, SOURCE_ROW, 0)?;
    let numbered = validate::without_rows(&numbered, held_out)?;
    Ok((numbered_schema, numbered))
}

/// Carry [`SOURCE_ROW`] to the transform's result when each result row comes from one source
/// row: a SELECT over the source (with WHERE, ORDER BY, joins to dependencies). Otherwise (an
/// aggregate, a UNION) the result is left as it is, and rows are numbered in the result.
fn trace_source_rows(frame: DataFrame) -> (DataFrame, bool) {
    use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, Projection, Sort};
    let schema = frame.schema().clone();
    let fields = schema.fields();
    if fields.iter().any(|f| f.name() == SOURCE_ROW) {
        // `SELECT *` kept it; move it last.
        let mut exprs: Vec<Expr> = fields
            .iter()
            .filter(|f| f.name() != SOURCE_ROW)
            .map(|f| ident(f.name()))
            .collect();
        exprs.push(ident(SOURCE_ROW));
        return match frame.clone().select(exprs) {
            Ok(f) => (f, true),
            Err(_) => (frame, false),
        };
    }
    let (state, plan) = frame.clone().into_parts();
    let add = |p: &Projection| -> Option<LogicalPlan> {
        let mut exprs = p.expr.clone();
        exprs.push(ident(SOURCE_ROW));
        LogicalPlanBuilder::from(p.input.as_ref().clone())
            .project(exprs)
            .and_then(|b| b.build())
            .inspect_err(|e| tracing::debug!("rows of the transform's result are not traced: {e}"))
            .ok()
    };
    let traced = match &plan {
        LogicalPlan::Projection(p) => add(p),
        LogicalPlan::Sort(Sort { expr, input, fetch }) => match input.as_ref() {
            LogicalPlan::Projection(p) => add(p).and_then(|projected| {
                LogicalPlanBuilder::from(projected)
                    .sort_with_limit(expr.clone(), *fetch)
                    .and_then(|b| b.build())
                    .ok()
            }),
            _ => None,
        },
        other => {
            tracing::debug!(
                "rows of the transform's result are not traced: its plan is {}",
                other.display()
            );
            None
        }
    };
    match traced {
        Some(plan) => (DataFrame::new(state, plan), true),
        None => (frame, false),
    }
}

/// The keys the transform gives rows rejected before it, so that they keep their baseline rows.
/// A transform that cannot run on those rows alone (it aggregates, or needs the others) gives
/// none: the rows are still rejected, and the message in the log says their keys are not held.
async fn transformed_keys(
    table: &TablePlan,
    store: &Store,
    schema: SchemaRef,
    rejected: Vec<RecordBatch>,
) -> Vec<RecordBatch> {
    let attempt = async {
        let ctx = engine::session();
        register_batches(&ctx, "source", schema, rejected)?;
        for dep in &table.depends_on {
            if let Some(record) = store.latest(dep).await? {
                register_snapshot(&ctx, store, dep, &record, dep).await?;
            }
        }
        let sql = table.transform.as_deref().unwrap_or("SELECT * FROM source");
        let keys: Vec<Expr> = table.key.iter().map(ident).collect();
        let frame = engine::read_only_sql(&ctx, sql)
            .await
            .and_then(|f| f.select(keys))
            .map_err(engine::context(&table.name, "finding rejected rows' keys"))?;
        frame
            .collect()
            .await
            .map_err(engine::context(&table.name, "finding rejected rows' keys"))
    };
    match attempt.await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(
                "{}: the keys of rows rejected before the transform are unknown ({e}); their baseline rows are not held",
                table.name
            );
            Vec::new()
        }
    }
}
