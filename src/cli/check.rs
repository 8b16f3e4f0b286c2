//! `tidemark check`: validate the pipeline file and every source, writing nothing.

use std::path::PathBuf;

use crate::error::{Error, Result, exit_code};
use crate::pipeline::load::load_snapshot;
use crate::spec;
use crate::store::Store;

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
}

pub(super) async fn execute(args: CheckArgs, store: Option<&str>) -> Result<u8> {
    let plan = spec::load(&args.pipeline, store)?;
    let store = Store::open(&plan.store, false)?;
    let mut worst = exit_code::OK;
    for table in &plan.tables {
        let ctx = crate::engine::session();
        match load_snapshot(&ctx, table, &store, None, &crate::source::Unobserved).await {
            Ok(loaded) => {
                // Rules are planned (not run) against the snapshot's columns, so a typo in a
                // check is found here rather than by the scheduled run.
                let planned = ctx.register_table(
                    datafusion::common::TableReference::bare(table.name.as_str()),
                    loaded.frame.clone().into_view(),
                );
                let mut rule_error = planned.err().map(|e| e.to_string());
                for rule in &table.validate.rules {
                    if rule_error.is_some() {
                        break;
                    }
                    let sql = format!(
                        "SELECT 1 FROM {} WHERE ({})",
                        crate::diff::ident(&table.name),
                        rule.check
                    );
                    if let Err(e) = ctx.sql(&sql).await {
                        let schema = std::sync::Arc::new(loaded.frame.schema().as_arrow().clone());
                        rule_error = Some(format!(
                            "validate rule `{}` cannot be evaluated: {}",
                            rule.name,
                            crate::validate::rule_problem(&e, &schema)
                        ));
                    }
                }
                if let Some(message) = rule_error {
                    println!("{}: error: {message}", table.name);
                    worst = worst.max(exit_code::INVALID);
                    continue;
                }
                let files: Vec<&str> = loaded.facts.files.iter().map(|f| f.path.as_str()).collect();
                println!(
                    "{}: ok — {} ({} columns, key {})",
                    table.name,
                    files.join(", "),
                    loaded.facts.columns.len(),
                    table.key.join(", ")
                );
            }
            Err(Error::Usage { message }) if message.contains("has no baseline yet") => {
                println!("{}: ok — source not checked: {message}", table.name);
            }
            Err(e) => {
                println!("{}: error: {e}", table.name);
                worst = worst.max(e.exit_code());
            }
        }
        // Every `${VAR}` a destination reads must be set where the runs happen (nothing is
        // connected to).
        if let Err(e) = crate::deliver::check_settings(&[table]) {
            println!("{}: error: {e}", table.name);
            worst = worst.max(e.exit_code());
        }
    }
    Ok(worst)
}
