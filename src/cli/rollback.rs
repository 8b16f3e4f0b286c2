//! `tidemark rollback` and `tidemark reset`.

use std::path::PathBuf;

use crate::error::{Error, Result, exit_code};
use crate::restore;
use crate::spec::{self, Plan, TablePlan};
use crate::store::{CommitRecord, Store};

/// Arguments of `rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The table to roll back.
    #[arg(long)]
    pub table: String,
    /// The version whose snapshot becomes the next version.
    #[arg(long, value_name = "V")]
    pub to: u64,
}

/// Arguments of `reset`.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The table to reset.
    #[arg(long)]
    pub table: String,
}

fn table_of<'a>(plan: &'a Plan, name: &str) -> Result<&'a TablePlan> {
    plan.table(name).ok_or_else(|| Error::Usage {
        message: format!("the pipeline has no table `{name}`"),
    })
}

fn print(record: &CommitRecord, what: &str) {
    let c = &record.counts;
    println!(
        "{}: v{} committed ({what}) — {} rows: {}",
        record.table,
        record.version,
        c.rows_in,
        c.listed()
    );
}

pub(super) async fn rollback(args: RollbackArgs, global: &super::GlobalArgs) -> Result<u8> {
    let plan = spec::load(&args.pipeline, global.store.as_deref())?;
    let table = table_of(&plan, &args.table)?;
    let store = Store::open_existing(&plan.store)?.single_writer(global.unsafe_single_writer);
    let record = restore::rollback(&plan, table, &store, args.to).await?;
    print(&record, &format!("rollback to v{}", args.to));
    Ok(deliver(&store, table).await)
}

pub(super) async fn reset(args: ResetArgs, global: &super::GlobalArgs) -> Result<u8> {
    let plan = spec::load(&args.pipeline, global.store.as_deref())?;
    let table = table_of(&plan, &args.table)?;
    let store = Store::open_existing(&plan.store)?.single_writer(global.unsafe_single_writer);
    let record = restore::reset(&plan, table, &store).await?;
    print(&record, "reset");
    Ok(deliver(&store, table).await)
}

/// Hand the new version on to the table's destinations; the exit code says whether all of
/// them received it.
async fn deliver(store: &Store, table: &TablePlan) -> u8 {
    let deliveries = crate::deliver::bring_up_to_date(store, table, None, None).await;
    let mut code = exit_code::OK;
    for d in &deliveries {
        if let Some(e) = &d.error {
            println!("  not delivered: {e}");
            code = exit_code::UNDELIVERED;
        }
    }
    code
}
