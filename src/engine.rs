//! The query engine session every command uses: DataFusion with the row hash UDF registered and
//! the settings tidemark relies on.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::diff::row_hash::row_hash_udf;
use crate::error::{Error, Result};

/// A fresh session.
pub fn session() -> SessionContext {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut config = SessionConfig::new().with_target_partitions(cores);
    // Strings read back from snapshots keep the type they were written with (Utf8), so pinned
    // types and hashes match what the sources produce.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let runtime = RuntimeEnvBuilder::new()
        .build_arc()
        .expect("the default runtime builds");
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
                .map_err(|e| Error::engine("numbering rows", e.into()))?,
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
    ctx.sql(sql)
        .await
        .map_err(|e| Error::engine(context(), e))?
        .collect()
        .await
        .map_err(|e| Error::engine(context(), e))
}
