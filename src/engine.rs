//! The query engine session every command uses: DataFusion with the row hash UDF registered and
//! the settings tidemark relies on.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::diff::row_hash::row_hash_udf;
use crate::error::{Error, Result};

/// The memory the engine's joins, sorts and aggregations may hold (`--memory-limit`,
/// `memory_limit:`); beyond it they spill to disk. Unset: no limit.
static MEMORY_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Limit the engine's memory for the rest of the process (the first limit set wins).
pub fn set_memory_limit(bytes: u64) {
    let _ = MEMORY_LIMIT.set(bytes);
}

/// The memory limit in force, if any.
pub fn memory_limit() -> Option<u64> {
    MEMORY_LIMIT.get().copied()
}

/// Parse a size as people write it: `2GB`, `512MB`, `1.5GiB`, `800M`, or a number of bytes.
/// Decimal and binary units are both read as binary (GB = GiB), as memory is counted.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 2GB or 512MB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use KB, MB or GB"
            ));
        }
    };
    let bytes = number * factor as f64;
    if bytes < (64 << 20) as f64 {
        return Err(format!(
            "`{text}` is too small a memory limit; give at least 64MB"
        ));
    }
    Ok(bytes as u64)
}

/// A fresh session.
pub fn session() -> SessionContext {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    session_of(cores)
}

/// A fresh session whose plans keep their input's row order: one partition, so that nothing
/// is spread over the cores and gathered back in whatever order it finishes. For work done
/// row by row on rows already in order (a delta, shaped for an output).
pub fn in_order_session() -> SessionContext {
    session_of(1)
}

fn session_of(partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(partitions);
    // Strings read back from snapshots keep the type they were written with (Utf8), so pinned
    // types and hashes match what the sources produce.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit() {
        // Under a limit, joins and sorts spill to disk: the sort-merge join can, the hash join
        // cannot (DataFusion 55). The pool names its largest consumers when it says no.
        config.options_mut().optimizer.prefer_hash_join = false;
        runtime = runtime
            .with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(limit as usize),
                std::num::NonZeroUsize::new(5).expect("5 is not zero"),
            )))
            .with_temp_file_path(std::env::temp_dir());
    }
    let runtime = runtime.build_arc().expect("the runtime builds");
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_udf(row_hash_udf());
    ctx
}

/// `batches` with a UInt64 column `name` appended holding each row's ordinal, counted from
/// `first` across the batches: how rows keep their place in the file through filters, joins and
/// repartitioning.
pub fn with_ordinals(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    name: &str,
    first: u64,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(name, DataType::UInt64, false)));
    let numbered_schema = Arc::new(Schema::new(fields));
    let mut numbered = Vec::with_capacity(batches.len());
    let mut offset = first;
    for batch in batches {
        let n = batch.num_rows() as u64;
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(offset..offset + n)));
        numbered.push(
            RecordBatch::try_new(numbered_schema.clone(), columns)
                .map_err(|e| error("numbering rows", e.into()))?,
        );
        offset += n;
    }
    Ok((numbered_schema, numbered))
}

/// Plan and run `sql`, collecting its rows; errors name the table and what was being done.
pub async fn sql_batches(
    ctx: &SessionContext,
    sql: &str,
    table: &str,
    doing: &str,
) -> Result<Vec<RecordBatch>> {
    let context = || format!("table {table}: {doing}");
    read_only_sql(ctx, sql)
        .await
        .map_err(|e| error(context(), e))?
        .collect()
        .await
        .map_err(|e| error(context(), e))
}

/// Plan SQL a user wrote (a query, a transform, a validation rule) so that it can only read:
/// a statement that would write a file (`COPY … TO`), change a table (`INSERT`, `CREATE`,
/// `DROP`) or the session (`SET`) is refused before anything runs, as DataFusion's
/// [`SQLOptions`] define them. A baseline changes only through `run`, `rollback` and `reset`.
pub async fn read_only_sql(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::error::Result<datafusion::prelude::DataFrame> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    let reading = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    if reading.verify_plan(&plan).is_err() {
        let statement = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_uppercase();
        return Err(DataFusionError::External(
            format!(
                "{statement} is not allowed: tidemark's SQL only reads (SELECT, WITH, VALUES, \
                 EXPLAIN); a baseline changes only through run, rollback and reset"
            )
            .into(),
        ));
    }
    ctx.execute_logical_plan(plan).await
}

/// An engine error, saying what tidemark was doing (`context`) and, when the engine ran out of
/// memory, what to do about it.
pub fn error(context: impl Into<String>, source: datafusion::error::DataFusionError) -> Error {
    Error::Engine {
        context: context.into(),
        source,
        memory_limit: memory_limit(),
    }
}

/// An engine error of table `table`, saying what tidemark was `doing`.
pub fn context(table: &str, doing: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error {
    let context = format!("table {table}: {doing}");
    move |e| error(context.clone(), e)
}

/// Register record batches as a table.
pub fn register_batches(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let partitions = if batches.is_empty() {
        vec![Vec::new()]
    } else {
        vec![batches]
    };
    let table = MemTable::try_new(schema, partitions)
        .map_err(|e| error(format!("registering {name}"), e))?;
    // Names are registered exactly as written: SQL then needs quotes for mixed-case names.
    ctx.register_table(TableReference::bare(name), Arc::new(table))
        .map_err(|e| error(format!("registering {name}"), e))?;
    Ok(())
}

/// Each column's place in `schema`, by name: a schema finds a name by a linear search, which a
/// lookup of every column makes quadratic in a wide table (10,000 columns).
pub fn column_places(
    schema: &datafusion::arrow::datatypes::Schema,
) -> std::collections::HashMap<&str, usize> {
    (schema.fields().iter().enumerate())
        .map(|(i, f)| (f.name().as_str(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert_eq!(parse_size("512 MB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert!(
            parse_size("2 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("1MB").unwrap_err().contains("too small"));
    }

    #[test]
    fn running_out_of_memory_says_what_to_do() {
        let e = error(
            "joining",
            datafusion::error::DataFusionError::ResourcesExhausted("Failed to allocate".into()),
        );
        assert!(
            e.to_string()
                .contains("Set --memory-limit (e.g. 2GB) so that joins and sorts spill to disk"),
            "{e}"
        );
    }
}
