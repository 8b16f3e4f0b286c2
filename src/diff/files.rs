//! The ad-hoc diff of two files without a store (`tidemark diff OLD NEW`): the old file plays
//! the baseline, the new one today's snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::cast;
use datafusion::prelude::ident;

use super::keys::{check_null_keys, deduplicate};
use super::{Counts, DiffSettings, sql};
use crate::engine;
use crate::error::{Error, Result};
use crate::source;
use crate::spec::{ChangeKind, TablePlan};
use crate::validate;

/// Diff two files without a store (`tidemark diff`): `old` plays the baseline, the table's
/// source the new snapshot. Returns the shaped delta and the counts.
pub async fn diff(
    old: &std::path::Path,
    old_options: &source::SourceOptions,
    table: &TablePlan,
    include: &[ChangeKind],
) -> Result<(SchemaRef, Vec<RecordBatch>, Counts)> {
    let name = table.name.as_str();
    let ctx = engine::session();
    // An ad-hoc diff has no rejects file: a cell that does not fit is an error.
    let old_loaded = source::load(
        name,
        &old.display().to_string(),
        source::FileSelection::Newest,
        old_options,
        false,
        &source::Unobserved,
    )?
    .strict()?;
    let loaded = source::remote::load_anywhere(
        name,
        &table.source_path,
        table.files,
        &table.source,
        false,
        &source::Unobserved,
    )
    .await?
    .strict()?;
    let origin = loaded.origin();
    let columns: Vec<String> = source::column_names(&loaded.schema);
    validate::check_columns(table, &columns, &origin, &columns, &origin)?;
    let old_columns: Vec<String> = source::column_names(&old_loaded.schema);
    for k in &table.key {
        if !old_columns.contains(k) {
            return Err(Error::MissingColumn {
                table: name.to_string(),
                column: k.clone(),
                setting: "key".into(),
                origin: old_loaded.origin(),
                available: old_columns,
            });
        }
    }
    deduplicate(
        &ctx,
        table,
        &old_loaded.batches,
        &old_loaded.origin(),
        &old_loaded.rows,
    )
    .await?;
    let types: HashMap<String, DataType> = loaded
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let rows = loaded.rows.clone();
    check_null_keys(table, &loaded.batches, &origin, &rows)?;
    engine::register_batches(
        &ctx,
        "incoming",
        loaded.schema.clone(),
        loaded.batches.clone(),
    )?;
    // With `duplicates: error` (the ad-hoc diff's setting) this only ever reports a repeat.
    deduplicate(&ctx, table, &loaded.batches, &origin, &rows).await?;
    let rows_in = loaded.num_rows() as u64;
    // The old file's shared columns are read as the new file's types, so that a column inferred
    // differently on the two days compares by value.
    let mut casts = Vec::new();
    for f in old_loaded.schema.fields() {
        match types.get(f.name()) {
            Some(t) if t != f.data_type() => {
                casts.push(cast(ident(f.name()), t.clone()).alias(f.name()))
            }
            _ => casts.push(ident(f.name())),
        }
    }
    let old_frame = ctx
        .read_batches(old_loaded.batches.clone())
        .and_then(|f| f.select(casts))
        .map_err(engine::context(name, "reading the old file"))?;
    let old_batches = old_frame.collect().await.map_err(|e| Error::SourceData {
        path: old.to_path_buf(),
        row: None,
        column: None,
        message: format!("its values do not fit the new file's column types: {e}"),
    })?;
    let old_schema = if let Some(b) = old_batches.first() {
        b.schema()
    } else {
        old_loaded.schema.clone()
    };
    engine::register_batches(&ctx, "baseline", old_schema, old_batches)?;
    let compared: Vec<String> = table
        .compare
        .resolve(&columns, &table.key)
        .into_iter()
        .filter(|c| old_columns.contains(c))
        .collect();
    sql::register_hash_views(&ctx, (name, &table.key), &compared, &[], &types, false).await?;
    let settings = DiffSettings {
        key: table.key.clone(),
        compared,
        columns,
        baseline_columns: old_columns,
        include_unchanged: include.contains(&ChangeKind::Unchanged),
        tolerance: Vec::new(),
    };
    let delta = sql::classify(&ctx, &settings, rows_in).await?;
    let frame = crate::sink::shape::shape_output(table, &delta, include, None, &types).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(engine::context(name, "shaping the delta"))?;
    Ok((schema, batches, delta.counts))
}
