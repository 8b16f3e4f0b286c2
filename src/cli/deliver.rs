//! `tidemark deliver`: hand what is committed but not yet delivered to the destinations,
//! without running anything.

use std::path::PathBuf;

use crate::deliver::{self, Delivery};
use crate::error::{Error, Result, exit_code};
use crate::spec::{self, TablePlan};
use crate::store::Store;

/// Arguments of `deliver`.
#[derive(Debug, clap::Args)]
pub struct DeliverArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Only the destination of this name (an output's `name:`, else its path as written).
    #[arg(long, value_name = "D")]
    pub destination: Option<String>,
    /// Send the rows in HTTP destinations' dead-letter files again first.
    #[arg(long)]
    pub retry_failed: bool,
}

pub(super) async fn execute(args: DeliverArgs, global: &super::GlobalArgs) -> Result<u8> {
    let plan = spec::load(&args.pipeline, global.store.as_deref())?;
    for name in &args.tables {
        if plan.table(name).is_none() {
            return Err(Error::UnknownTable {
                table: name.clone(),
                known: plan.tables.iter().map(|t| t.name.clone()).collect(),
            });
        }
    }
    let chosen: Vec<&TablePlan> = (plan.tables.iter())
        .filter(|t| args.tables.is_empty() || args.tables.contains(&t.name))
        .collect();
    if let Some(wanted) = &args.destination {
        check_destination(&chosen, wanted)?;
    }
    let store = Store::open_existing(&plan.store)?.single_writer(global.unsafe_single_writer);
    let mut code = exit_code::OK;
    let mut any = false;
    // In dependency order, as the runs commit them.
    for table in &chosen {
        if table.outputs.is_empty() {
            continue;
        }
        any = true;
        if store.versions(&table.name).await?.is_empty() {
            println!("{}: nothing committed yet", table.name);
            continue;
        }
        let only = args.destination.as_deref();
        for d in deliver::bring_up_to_date(&store, table, None, only).await {
            println!("{}: {}: {}", table.name, d.destination, outcome(&d));
            if d.error.is_some() {
                code = exit_code::UNDELIVERED;
            }
        }
    }
    if chosen.iter().any(|t| !t.destinations.is_empty()) {
        any = true;
        crate::deliver::check_settings(&chosen)?;
        let only = args.destination.as_deref();
        for (table, d) in
            crate::deliver::deliver_remote(&plan, &store, &chosen, only, args.retry_failed).await
        {
            println!("{table}: {}: {}", d.destination, outcome(&d));
            if d.error.is_some() {
                code = exit_code::UNDELIVERED;
            }
        }
    }
    if !any {
        println!(
            "the pipeline has no destinations: a table's `output:` or `deliver:` names where its changes go"
        );
    }
    Ok(code)
}

/// Refuse a `--destination` that none of `tables` has, naming those they have.
fn check_destination(tables: &[&TablePlan], wanted: &str) -> Result<()> {
    let known: Vec<&str> = tables
        .iter()
        .flat_map(|t| deliver::destinations(t))
        .collect();
    if known.contains(&wanted) {
        return Ok(());
    }
    let listed = match known.is_empty() {
        true => "none".to_string(),
        false => known.join(", "),
    };
    Err(Error::Usage {
        message: format!(
            "--destination {wanted}: no table here has a destination of that name; the destinations are: {listed}"
        ),
    })
}

/// What one destination's delivery did, in words.
fn outcome(d: &Delivery) -> String {
    if let Some(e) = &d.error {
        return format!("not delivered: {e}");
    }
    match d.failed_rows {
        0 => delivered(d),
        1 => format!(
            "{}; 1 row waits in its dead-letter file (`tidemark deliver --retry-failed` sends it again)",
            delivered(d)
        ),
        n => format!(
            "{}; {n} rows wait in its dead-letter file (`tidemark deliver --retry-failed` sends them again)",
            delivered(d)
        ),
    }
}

/// What a delivery that did not fail received, in words.
fn delivered(d: &Delivery) -> String {
    let at = d.cursor.unwrap_or(0);
    if d.joined {
        return format!("joins at v{at}: it receives the versions committed after it");
    }
    match (d.versions.first(), d.versions.last()) {
        (Some(first), Some(last)) if first == last && d.files.is_empty() => {
            format!("delivered v{first}")
        }
        (Some(first), Some(last)) if first == last => {
            format!("delivered v{first} ({})", d.files.join(", "))
        }
        (Some(first), Some(last)) => format!(
            "delivered v{first} to v{last} ({} versions)",
            d.versions.len()
        ),
        _ => format!("up to date (v{at})"),
    }
}
