//! Compare: today's rows matched with the baseline's and the delta built, by the one strategy
//! [`diff::strategy::choose`] picks for the run (the streamed one is taken before loading; see
//! [`super::streamed`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::SessionContext;

use super::TableJob;
use super::conclude::{Concluding, NewSnapshot};
use super::prepare::Hashed;
use super::scope::Scoped;
use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::diff::strategy::{self, Situation, Strategy};
use crate::diff::{self, Delta, DiffSettings};
use crate::engine::{self, register_batches};
use crate::error::Result;
use crate::sink::background::SideEncoding;
use crate::spec::{ChangeKind, TablePlan};
use crate::store::{CommitRecord, Store};

/// Whether an output asks for UNCHANGED rows.
pub(super) fn wants_unchanged(table: &TablePlan) -> bool {
    table
        .outputs
        .iter()
        .any(|o| o.include.contains(&ChangeKind::Unchanged))
}

/// Whether today's key columns have the baseline's types, of kinds the matching digests.
fn keys_matchable(
    table: &TablePlan,
    record: &CommitRecord,
    types: &HashMap<String, DataType>,
) -> bool {
    table.key.iter().all(|k| {
        let stored = record.schema.iter().find(|c| &c.name == k);
        match (stored, types.get(k)) {
            (Some(s), Some(t)) => {
                s.data_type == t.to_string() && diff::matching::key_types_supported(&[t])
            }
            _ => false,
        }
    })
}

/// Classify today's rows (registered as `incoming`) against the baseline (`baseline`) by the
/// strategy chosen for them, while the new snapshot is encoded on the side.
pub(super) async fn compare(
    job: &TableJob<'_>,
    ctx: &SessionContext,
    scoped: Scoped,
    baseline: Option<&CommitRecord>,
) -> Result<Concluding> {
    let (table, name) = (job.table, job.name());
    let Scoped {
        hashed,
        held,
        kept,
        partitions,
        watermark,
        baseline_columns,
    } = scoped;
    let Hashed {
        facts,
        schema: incoming_schema,
        rows: incoming,
        column_types,
        compared,
        hashed,
        hash_spec,
        empty_today,
        ..
    } = hashed;
    let rows_in: u64 = incoming.iter().map(|b| b.num_rows() as u64).sum();
    let shared = |list: &[String]| -> Vec<String> {
        list.iter()
            .filter(|c| baseline_columns.contains(c))
            .cloned()
            .collect()
    };
    let shared_compared = shared(&compared);
    let shared_hashed = shared(&hashed);
    let tolerance: Vec<_> = table
        .tolerance
        .iter()
        .filter(|(c, _)| shared_compared.contains(c))
        .cloned()
        .collect();
    let carried: Vec<String> = tolerance.iter().map(|(c, _)| c.clone()).collect();
    let stored_hashes_apply = baseline.is_none_or(|b| b.hash == hash_spec);
    let include_unchanged = wants_unchanged(table);
    let settings = DiffSettings {
        key: table.key.clone(),
        compared: shared_compared,
        columns: facts.columns.clone(),
        baseline_columns,
        include_unchanged,
        tolerance,
    };
    // The new snapshot is final here: encode it on the side while the comparison runs, so
    // that neither leaves a core idle.
    let snapshot = if job.options.dry_run {
        NewSnapshot::Batches(incoming_schema.clone(), incoming.clone())
    } else {
        NewSnapshot::Encoding(SideEncoding::start(
            incoming_schema.clone(),
            incoming.clone(),
        ))
    };
    job.progress.phase("comparing with the baseline");
    let hash_views = HashViews {
        shared_hashed: &shared_hashed,
        carried: &carried,
        column_types: &column_types,
        stored_hashes_apply,
    };
    let situation = Situation {
        fastest_allowed: job.options.strategy,
        has_baseline: baseline.is_some(),
        streamable: false,
        stored_hashes_apply,
        keys_matchable: baseline.is_some_and(|b| keys_matchable(table, b, &column_types)),
        tolerance: !settings.tolerance.is_empty(),
        unchanged_wanted: include_unchanged,
    };
    let strategy = strategy::choose(&situation);
    tracing::debug!("{name}: the {strategy} strategy chosen for the loaded rows");
    let by_position = match (strategy, baseline) {
        (Strategy::Matching, Some(record)) => {
            classify_by_position(
                ctx,
                job.store,
                table,
                record,
                &incoming,
                &incoming_schema,
                &settings,
                &hash_views,
                rows_in,
                job.options.fall_back_to_join,
            )
            .await?
        }
        _ => None,
    };
    let (delta, strategy) = match by_position {
        Some(delta) => (delta, Strategy::Matching),
        None => {
            hash_views.register(ctx, table).await?;
            let delta = diff::sql::classify(ctx, &settings, rows_in).await?;
            (delta, Strategy::Join)
        }
    };
    tracing::info!(
        "{name}: classified against the baseline ({:.2} s)",
        job.started.elapsed().as_secs_f64()
    );
    drop(incoming);
    Ok(Concluding {
        facts,
        delta,
        held,
        kept,
        partitions,
        column_types,
        empty_today,
        hash_spec,
        watermark,
        snapshot,
        strategy,
    })
}

/// What the `incoming_hashes` and `baseline_hashes` views are made of.
pub(super) struct HashViews<'a> {
    pub shared_hashed: &'a [String],
    pub carried: &'a [String],
    pub column_types: &'a HashMap<String, DataType>,
    pub stored_hashes_apply: bool,
}

impl HashViews<'_> {
    pub async fn register(&self, ctx: &SessionContext, table: &TablePlan) -> Result<()> {
        diff::sql::register_hash_views(
            ctx,
            (&table.name, &table.key),
            self.shared_hashed,
            self.carried,
            self.column_types,
            self.stored_hashes_apply,
        )
        .await
    }
}

/// Classify without joining full rows: match both sides' keys by row position (see
/// [`diff::matching`]), take only the rows the delta needs (NEW and CHANGED from the snapshot,
/// CHANGED and DELETED from the baseline's file), and run the usual classification and delta
/// queries over those. `None`, with the full tables registered as before, when the matching
/// cannot decide (a key digest repeats) or the queries pair the taken rows otherwise than the
/// matching did: the caller then joins the full tables.
#[allow(clippy::too_many_arguments)]
async fn classify_by_position(
    ctx: &SessionContext,
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    incoming: &[RecordBatch],
    incoming_schema: &SchemaRef,
    settings: &DiffSettings,
    hash_views: &HashViews<'_>,
    rows_in: u64,
    fall_back_to_join: bool,
) -> Result<Option<Delta>> {
    let name = table.name.as_str();
    if incoming.is_empty() {
        return Ok(None);
    }
    let path = store.file_url(name, &record.snapshot.path);
    let file = store.local_file(name, &record.snapshot.path).await?;
    let old_rows = diff::matching::ParquetRows::open(file, &path)?;
    let Some(matched) =
        diff::matching::match_positions(incoming, &table.key, ROW_HASH_COLUMN, &old_rows)?
    else {
        tracing::debug!("{name}: a key digest repeats; joining the full rows instead");
        return Ok(None);
    };
    tracing::debug!("{name}: matched keys by position: {matched}");
    let (new_positions, old_positions) = (matched.snapshot_rows(), matched.baseline_rows());
    let taken_new = diff::matching::take_rows(incoming, &new_positions)?;
    let taken_old = old_rows.take(&old_positions)?;
    drop(old_rows);
    tracing::debug!(
        "{name}: took {} snapshot rows and read {} baseline rows",
        new_positions.len(),
        old_positions.len()
    );
    classify_taken(
        ctx,
        table,
        (incoming_schema, taken_new),
        taken_old,
        &matched,
        settings,
        hash_views,
        rows_in,
        fall_back_to_join,
    )
    .await
}

/// Classify the rows taken by position (snapshot rows as `incoming`, baseline rows as read
/// from its file) with the usual queries. `None`, with the tables registered before put
/// back, when the queries pair them otherwise than `matched` did.
#[allow(clippy::too_many_arguments)]
pub(super) async fn classify_taken(
    ctx: &SessionContext,
    table: &TablePlan,
    (incoming_schema, taken_new): (&SchemaRef, Vec<RecordBatch>),
    taken_old: Vec<RecordBatch>,
    matched: &diff::matching::Matched,
    settings: &DiffSettings,
    hash_views: &HashViews<'_>,
    rows_in: u64,
    distrust: bool,
) -> Result<Option<Delta>> {
    let name = table.name.as_str();
    // The taken baseline rows stand in for the `baseline` view: same columns, same types (the
    // view's casts, and the query engine's string type), so that the delta is the same.
    let view = ctx
        .table("baseline")
        .await
        .map_err(engine::context(name, "reading the baseline"))?;
    let view_schema: SchemaRef = Arc::new(view.schema().as_arrow().clone());
    let taken_old = taken_old
        .iter()
        .map(|batch| conform(batch, &view_schema))
        .collect::<Result<Vec<_>>>()?;
    let fail = engine::context(name, "registering tables");
    // The full tables, set aside to be put back if the queries disagree with the matching.
    let full = ["incoming", "baseline"]
        .into_iter()
        .map(|t| ctx.deregister_table(t).map(|provider| (t, provider)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(&fail)?;
    let taken = (taken_new.clone(), taken_old.clone());
    register_batches(ctx, "incoming", incoming_schema.clone(), taken_new)?;
    register_batches(ctx, "baseline", view_schema, taken_old)?;
    hash_views.register(ctx, table).await?;
    if !distrust
        && let Some(delta) =
            diff::paired::delta_by_position(ctx, settings, (&taken.0, &taken.1), matched, rows_in)
                .await?
    {
        return Ok(Some(delta));
    }
    let delta = diff::sql::classify(ctx, settings, rows_in).await?;
    let counts = delta.counts;
    if (counts.new, counts.changed, counts.deleted)
        == (
            matched.new.len() as u64,
            matched.changed.len() as u64,
            matched.deleted.len() as u64,
        )
        && !distrust
    {
        return Ok(Some(delta));
    }
    tracing::debug!("{name}: the keys matched by position pair otherwise; joining the full rows");
    for t in ["incoming", "baseline", "incoming_hashes", "baseline_hashes"] {
        ctx.deregister_table(t).map_err(&fail)?;
    }
    for (t, provider) in full {
        if let Some(provider) = provider {
            ctx.register_table(t, provider).map_err(&fail)?;
        }
    }
    Ok(None)
}

/// `batch`'s columns named by `schema`, cast to its types.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let fail =
        |e: datafusion::arrow::error::ArrowError| engine::error("reading the baseline", e.into());
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                engine::error(
                    "reading the baseline",
                    datafusion::error::DataFusionError::Internal(format!(
                        "the baseline file lacks column {}",
                        field.name()
                    )),
                )
            })?;
            // Not `safe`: a value the type cannot hold fails, as the view's SQL cast does.
            datafusion::arrow::compute::kernels::cast::cast_with_options(
                column,
                field.data_type(),
                &datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(fail)
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(fail)
}
