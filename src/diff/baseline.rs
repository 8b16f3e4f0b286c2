//! The baseline as the comparison sees it: the stored snapshot registered as `baseline`,
//! prepared the way today's rows are (today's `normalize` clean-ups, today's column types).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;

use super::row_hash::ROW_HASH_COLUMN;
use super::sql::sql_type;
use super::{ident, ident_list};
use crate::engine::{self, register_batches};
use crate::error::{Error, Result};
use crate::normalize;
use crate::spec::TablePlan;
use crate::store::tables::register_snapshot;
use crate::store::{CommitRecord, Store};

/// Register the baseline snapshot as `baseline`, prepared the way today's rows are: with
/// today's `normalize` clean-ups when it was written without them, and its shared columns read
/// as today's types when they differ (a declared type change, an integer column widened), so
/// that the comparison and the delta see one type per column.
pub async fn register(
    ctx: &SessionContext,
    store: &Store,
    table: &TablePlan,
    record: &CommitRecord,
    types: &HashMap<String, DataType>,
) -> Result<()> {
    let name = table.name.as_str();
    register_snapshot(ctx, store, name, record, "baseline_stored").await?;
    let mut prepared = "baseline_stored";
    if record.hash.normalize != table.normalize && !table.normalize.is_empty() {
        let keys = ident_list(&table.key);
        // Written without today's clean-ups: apply them, so that adding one changes no row.
        let stored = ctx
            .table("baseline_stored")
            .await
            .map_err(engine::context(name, "reading the baseline"))?;
        let schema: SchemaRef = Arc::new(stored.schema().as_arrow().clone());
        let batches = stored
            .collect()
            .await
            .map_err(engine::context(name, "reading the baseline"))?
            .iter()
            .map(|b| normalize::apply(name, b, &table.normalize))
            .collect::<Result<Vec<_>>>()?;
        register_batches(ctx, "baseline_normalised", schema, batches)?;
        prepared = "baseline_normalised";
        // Clean-ups that make two baseline keys one would pair one new row with two old ones.
        let merged = engine::sql_batches(
            ctx,
            &format!(
                "SELECT {keys} FROM baseline_normalised GROUP BY {keys} HAVING count(*) > 1 LIMIT 1"
            ),
            name,
            "normalising the baseline",
        )
        .await?;
        if let Some(batch) = merged.iter().find(|b| b.num_rows() > 0) {
            let key = table
                .key
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    format!(
                        "{k}={}",
                        array_value_to_string(batch.column(i), 0).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::NormalizeMergesKeys {
                table: name.to_string(),
                version: record.version,
                key,
            });
        }
    }
    let mut columns: Vec<String> = record
        .schema
        .iter()
        .map(|c| match types.get(&c.name) {
            Some(t) if c.data_type != t.to_string() => {
                format!("CAST({0} AS {1}) AS {0}", ident(&c.name), sql_type(t))
            }
            _ => ident(&c.name),
        })
        .collect();
    columns.push(ROW_HASH_COLUMN.to_string());
    let view = ctx
        .sql(&format!("SELECT {} FROM {prepared}", columns.join(", ")))
        .await
        .map_err(engine::context(name, "reading the baseline"))?;
    ctx.register_table("baseline", view.into_view())
        .map_err(engine::context(name, "reading the baseline"))?;
    Ok(())
}
