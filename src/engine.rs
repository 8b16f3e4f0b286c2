//! The query engine session every command uses: DataFusion with the row hash UDF registered and
//! the settings tidemark relies on.

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::diff::row_hash::row_hash_udf;

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
