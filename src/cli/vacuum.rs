//! `tidemark vacuum`: remove old versions and the files no kept version needs.

use std::path::PathBuf;

use std::collections::HashMap;

use crate::deliver::{self, cursor, files};
use crate::error::{Error, Result, exit_code};
use crate::spec;
use crate::store::Store;
use crate::store::vacuum::parse_grace;

/// Arguments of `vacuum`.
#[derive(Debug, clap::Args)]
pub struct VacuumArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Keep the newest N versions of each table (at least 1: the latest is never removed).
    #[arg(long, value_name = "N")]
    pub keep: usize,
    /// List what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Keep unreferenced files younger than this (they may belong to a run in progress).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub grace: String,
}

pub(super) async fn execute(args: VacuumArgs, store: Option<&str>) -> Result<u8> {
    if args.keep == 0 {
        return Err(Error::Usage {
            message: "--keep 0 would remove the latest version; keep at least 1.".into(),
        });
    }
    let grace = parse_grace(&args.grace)?;
    let plan = spec::load(&args.pipeline, store)?;
    let store = Store::open_existing(&plan.store)?;
    let now = chrono::Utc::now();
    let chosen: Vec<&spec::TablePlan> = (plan.tables.iter())
        .filter(|t| args.tables.is_empty() || args.tables.contains(&t.name))
        .collect();
    // The oldest version a destination of each table has not received.
    let mut undelivered = HashMap::new();
    for table in &chosen {
        for name in deliver::store_cursors(table) {
            if let Some(at) = cursor::position(&store, &table.name, name).await? {
                let lacked = undelivered.entry(table.name.clone()).or_insert(u64::MAX);
                *lacked = (*lacked).min(at + 1);
            }
        }
    }
    // A database keeps its own cursors; one that cannot be read keeps every version.
    for position in crate::deliver::database::positions(&plan, &chosen).await {
        let (table, name) = (position.table, position.destination);
        let lacked = match position.at {
            Ok(Some(at)) => at + 1,
            // It has nothing yet: it receives the latest snapshot whole.
            Ok(None) => continue,
            Err(e) => {
                println!("{table}: keeps every version: destination {name} cannot be read ({e})");
                0
            }
        };
        let entry = undelivered.entry(table).or_insert(u64::MAX);
        *entry = (*entry).min(lacked);
    }
    let plans = store
        .vacuum(
            &args.tables,
            args.keep,
            &undelivered,
            grace,
            now,
            args.dry_run,
        )
        .await?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    // Only a destination's latest cursor record says where it is.
    for table in &chosen {
        for name in deliver::store_cursors(table) {
            let old = cursor::prune(&store, &table.name, name, args.dry_run).await?;
            if old > 0 {
                println!(
                    "{}: {verb} {old} old delivery records of {name}",
                    table.name
                );
            }
        }
    }
    // Delta files that runs which died left on their way beside their places.
    let before = std::time::SystemTime::from(now - grace);
    for table in &chosen {
        for output in &table.outputs {
            for leftover in files::leftovers(output, before) {
                if !args.dry_run {
                    std::fs::remove_file(&leftover).map_err(|e| Error::io(&leftover, e))?;
                }
                println!(
                    "{}: {verb} {}, left by a run that died",
                    table.name,
                    leftover.display()
                );
            }
        }
    }
    for p in &plans {
        let bytes: u64 = p.files.iter().map(|(_, size)| size).sum();
        let versions = match (p.dropped.first(), p.dropped.last()) {
            (Some(a), Some(b)) if a == b => format!("v{a}"),
            (Some(a), Some(b)) => format!("v{a}–v{b}"),
            _ => "no versions".into(),
        };
        let kept = match (p.kept.first(), p.kept.last()) {
            (Some(a), Some(b)) if a == b => format!("v{a}"),
            (Some(a), Some(b)) => format!("v{a}–v{b}"),
            _ => "nothing".into(),
        };
        println!(
            "{}: keeps {kept}; {verb} {versions} and {} files ({bytes} bytes){}",
            p.table,
            p.files.len(),
            if p.too_young > 0 {
                format!(
                    "; {} unreferenced files are younger than --grace {} and stay",
                    p.too_young, args.grace
                )
            } else {
                String::new()
            }
        );
        if args.dry_run {
            for (path, size) in &p.files {
                println!("  {}/{path} ({size} bytes)", p.table);
            }
        }
    }
    Ok(exit_code::OK)
}
