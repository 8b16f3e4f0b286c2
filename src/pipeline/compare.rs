//! Compare: today's rows matched with the baseline's and the delta built, by the one strategy
//! [`diff::strategy::choose`] picks for the run (the streamed one is taken before loading; see
//! [`super::streamed`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::SessionContext;
use std::collections::HashMap;

use super::TableJob;
use super::conclude::{Concluding, NewSnapshot};
use super::prepare::Hashed;
use super::scope::Scoped;
use crate::diff::delta::{Pair, Pairs};
use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::diff::strategy::{self, Situation, Strategy};
use crate::diff::{self, Counts, Delta, DiffSettings};
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
        renames: table.renames,
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
                job.store,
                table,
                record,
                &incoming,
                &incoming_schema,
                &settings,
                rows_in,
                job.options.fall_back_to_join,
            )
            .await?
        }
        (Strategy::Matching, None) => Some(everything_new(
            &incoming,
            &incoming_schema,
            &settings,
            rows_in,
        )?),
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
/// CHANGED and DELETED from the baseline's file), and build the delta from them. `None` when
/// the matching cannot decide (a key digest repeats, or two keys share one): the caller then
/// joins the full tables.
#[allow(clippy::too_many_arguments)]
async fn classify_by_position(
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    incoming: &[RecordBatch],
    incoming_schema: &SchemaRef,
    settings: &DiffSettings,
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
    let pairs = Pairs::of_matched(
        &matched,
        incoming_schema.clone(),
        (taken_new, taken_old),
        rows_in,
    )?;
    delta_of_matched(name, settings, &pairs, fall_back_to_join)
}

/// The delta of a table's first run: every row NEW.
fn everything_new(
    incoming: &[RecordBatch],
    incoming_schema: &SchemaRef,
    settings: &DiffSettings,
    rows_in: u64,
) -> Result<Delta> {
    let rows = (0..rows_in as usize)
        .map(|i| Pair {
            kind: ChangeKind::New,
            new: Some(i),
            old: None,
        })
        .collect();
    let counts = Counts {
        rows_in,
        new: rows_in,
        ..Counts::default()
    };
    let pairs = Pairs::new(
        incoming_schema.clone(),
        (incoming.to_vec(), Vec::new()),
        rows,
        counts,
    )?;
    diff::delta::build(settings, &pairs)
}

/// The delta of rows matched by position, or `None` when a CHANGED pair names two keys (two
/// keys share a digest) or the options ask to distrust the matching: the caller then joins
/// the full rows.
pub(super) fn delta_of_matched(
    name: &str,
    settings: &DiffSettings,
    pairs: &Pairs,
    distrust: bool,
) -> Result<Option<Delta>> {
    if distrust || !pairs.changed_keys_agree(settings)? {
        tracing::debug!(
            "{name}: the keys matched by position pair otherwise; joining the full rows"
        );
        return Ok(None);
    }
    let delta = diff::delta::build(settings, pairs)?;
    tracing::debug!("{name}: built the delta of the rows matched by position");
    Ok(Some(delta))
}
