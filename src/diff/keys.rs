//! A snapshot's keys: none null, none repeated (or the repeats resolved as `duplicates` says),
//! each problem named by its row in the file.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use super::ident_list;
use crate::engine::{self, register_batches};
use crate::error::{Error, Result};
use crate::source;
use crate::spec::{Duplicates, TablePlan};
use crate::validate;

/// The first null key cell, as an error naming its row.
pub fn check_null_keys(
    table: &TablePlan,
    batches: &[RecordBatch],
    origin: &str,
    rows: &source::RowLocator,
) -> Result<()> {
    let mut offset = 0u64;
    for batch in batches {
        for k in &table.key {
            let values = batch.column_by_name(k).expect("key columns were checked");
            if values.null_count() > 0 {
                let index = (0..values.len()).find(|&i| values.is_null(i)).unwrap_or(0) as u64;
                return Err(Error::NullKey {
                    table: table.name.clone(),
                    column: k.clone(),
                    origin: origin.to_string(),
                    row: rows.row(offset + index),
                });
            }
        }
        offset += batch.num_rows() as u64;
    }
    Ok(())
}

/// Repeated keys: an error naming the first, or the kept rows for keep_first / keep_last.
/// `rows` are the snapshot's batches in file order; each row gets its ordinal so that "first"
/// and "last" mean file order whatever the engine's partitioning.
pub async fn deduplicate(
    ctx: &SessionContext,
    (table, snapshot): (&TablePlan, &'static str),
    rows: &[RecordBatch],
    origin: &str,
    locator: &source::RowLocator,
) -> Result<Option<Vec<RecordBatch>>> {
    let name = table.name.as_str();
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if validate::keys_surely_unique(rows, &table.key)? {
        return Ok(None);
    }
    let (schema, numbered) = engine::with_ordinals(&first.schema(), rows, "__tidemark_row", 1)?;
    ctx.deregister_table("incoming_numbered")
        .map_err(engine::context(name, "checking keys"))?;
    register_batches(ctx, "incoming_numbered", schema, numbered)?;
    let keys = ident_list(&table.key);
    let numbered = "SELECT * FROM incoming_numbered";
    let sql = format!(
        "SELECT {keys}, count(*) AS n, min(__tidemark_row) AS first_row FROM ({numbered}) GROUP BY {keys} HAVING count(*) > 1 ORDER BY first_row LIMIT 1"
    );
    let found = engine::sql_batches(ctx, &sql, name, "checking keys").await?;
    let Some(batch) = found.into_iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    match table.duplicates {
        Duplicates::Error => {
            let key_text = table
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let v = ScalarValue::try_from_array(batch.column(i), 0)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let count = ScalarValue::try_from_array(batch.column(table.key.len()), 0).ok();
            let first = ScalarValue::try_from_array(batch.column(table.key.len() + 1), 0).ok();
            let as_u64 = |s: Option<ScalarValue>| match s {
                Some(ScalarValue::Int64(Some(v))) => v as u64,
                Some(ScalarValue::UInt64(Some(v))) => v,
                _ => 0,
            };
            let first = as_u64(first);
            // The second occurrence, found on this error path only.
            let sql = format!(
                "SELECT __tidemark_row FROM (SELECT __tidemark_row, min(__tidemark_row) OVER (PARTITION BY {keys}) AS first_row FROM ({numbered})) WHERE first_row = {first} ORDER BY __tidemark_row LIMIT 2"
            );
            let rows_of_key = engine::sql_batches(ctx, &sql, name, "checking keys").await?;
            let second = rows_of_key
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |i| ScalarValue::try_from_array(b.column(0), i).ok())
                })
                .map(as_u64)
                .nth(1)
                .unwrap_or(first);
            Err(Error::DuplicateKey {
                table: name.to_string(),
                snapshot,
                key: key_text,
                count: as_u64(count),
                origin: origin.to_string(),
                first_row: locator.row(first.saturating_sub(1)),
                second_row: locator.row(second.saturating_sub(1)),
            })
        }
        keep => {
            let order = if keep == Duplicates::KeepFirst {
                "ASC"
            } else {
                "DESC"
            };
            let sql = format!(
                "SELECT * EXCLUDE (__tidemark_row, __tidemark_rank) FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY __tidemark_row {order}) AS __tidemark_rank FROM ({numbered})) WHERE __tidemark_rank = 1 ORDER BY __tidemark_row"
            );
            Ok(Some(
                engine::sql_batches(ctx, &sql, name, "dropping repeated keys").await?,
            ))
        }
    }
}
