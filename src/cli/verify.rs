//! `tidemark verify`: check stored files against their checksums.

use std::path::PathBuf;

use crate::error::{Result, exit_code};
use crate::spec;
use crate::store::Store;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
}

pub(super) async fn execute(args: VerifyArgs, store: Option<&str>) -> Result<u8> {
    let plan = spec::load(&args.pipeline, store)?;
    let store = Store::open_existing(&plan.store)?;
    let checks = store.verify(&args.tables).await?;
    let damaged = checks.iter().filter(|c| !c.problems.is_empty()).count();
    for check in &checks {
        if check.problems.is_empty() {
            println!("{} v{}: ok", check.table, check.version);
        } else {
            for problem in &check.problems {
                println!("{} v{}: DAMAGED — {problem}", check.table, check.version);
            }
        }
    }
    if checks.is_empty() {
        println!("no versions to verify in {}", store.location());
    }
    if damaged > 0 {
        // A table whose latest version is damaged is out of service until a rollback; one whose
        // damage lies below an intact latest version (a rollback went above it) is not.
        let latest_damaged = checks.iter().enumerate().any(|(i, c)| {
            !c.problems.is_empty() && checks.get(i + 1).is_none_or(|next| next.table != c.table)
        });
        let advice = match latest_damaged {
            true => "`tidemark rollback --table T --to V` to an intact version restores service.",
            false => {
                "Every table's latest version is intact; a damaged version goes once `tidemark vacuum --keep N` no longer keeps it."
            }
        };
        eprintln!(
            "error: {damaged} of {} versions are damaged. {advice}",
            checks.len()
        );
        return Ok(exit_code::FAILED);
    }
    Ok(exit_code::OK)
}
