//! `tidemark run`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, Result};
use crate::run::{PipelineRun, RunOptions, TableRun, TableStatus, run_pipeline};
use crate::source::SourceFormat;
use crate::{sink, spec};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Compute and print the summary and the delta; commit and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Use PATH as table T's source for this run (repeatable).
    #[arg(long = "source", value_name = "T=PATH")]
    pub sources: Vec<String>,
    /// Commit even when a guard trips.
    #[arg(long)]
    pub force: bool,
    /// Also write the machine-readable run report (JSON).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
}

pub(super) async fn execute(args: RunArgs, global: &super::GlobalArgs) -> Result<u8> {
    let plan = spec::load(&args.pipeline, global.store.as_deref())?;
    let mut source_overrides = HashMap::new();
    for s in &args.sources {
        let (table, path) = s.split_once('=').ok_or_else(|| Error::Usage {
            message: format!(
                "--source {s}: expected T=PATH, for example --source inventory=incoming/today.xlsx"
            ),
        })?;
        source_overrides.insert(table.to_string(), PathBuf::from(path));
    }
    let options = RunOptions {
        tables: args.tables.clone(),
        dry_run: args.dry_run,
        source_overrides,
        progress: !global.quiet,
        force: args.force,
        unsafe_single_writer: global.unsafe_single_writer,
    };
    let outcome = run_pipeline(&plan, &options, |t| {
        println!("{}", summary_line(t));
        if let Some(path) = &t.rejects_file {
            println!("  rejected rows: {path}");
        }
        for note in &t.notes {
            println!("  note: {note}");
        }
        if let Some(e) = &t.error {
            tracing::debug!("{}: {e:?}", t.table);
        }
        if let Some((schema, batches)) = &t.preview
            && let Err(e) = sink::write_to(
                std::io::BufWriter::new(std::io::stdout()),
                SourceFormat::Csv,
                schema,
                batches,
            )
        {
            tracing::error!("could not print the delta: {e}");
        }
    })
    .await?;
    if let Some(report) = &args.report {
        write_report(report, &outcome)?;
    }
    Ok(outcome.exit_code())
}

/// The one-line summary of SPEC 6.
pub fn summary_line(t: &TableRun) -> String {
    let c = &t.counts;
    let seconds = t.duration_ms as f64 / 1000.0;
    let counts = format!(
        "{} rows: {} new, {} changed, {} deleted, {} unchanged, {} rejected ({seconds:.1} s)",
        c.rows_in, c.new, c.changed, c.deleted, c.unchanged, t.rejected
    );
    match t.status {
        TableStatus::Committed => format!(
            "{}: v{} committed — {counts}",
            t.table,
            t.version.unwrap_or(0)
        ),
        TableStatus::DryRun => format!(
            "{}: dry run, would commit v{} — {counts}",
            t.table,
            t.version.unwrap_or(0)
        ),
        TableStatus::Skipped => format!(
            "{}: skipped: {}",
            t.table,
            t.skipped_because.as_deref().unwrap_or("")
        ),
        TableStatus::Refused => format!(
            "{}: refused — {}",
            t.table,
            t.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
        ),
        TableStatus::Failed | TableStatus::Conflict => format!(
            "{}: failed: {}",
            t.table,
            t.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
        ),
    }
}

fn write_report(path: &std::path::Path, run: &PipelineRun) -> Result<()> {
    let ok = |t: &&TableRun| t.error.is_none() && t.status != TableStatus::Skipped;
    let status = if run.tables.iter().all(|t| ok(&t)) {
        "success"
    } else if run
        .tables
        .iter()
        .all(|t| ok(&t) || t.status == TableStatus::Refused)
    {
        "refused"
    } else {
        "failed"
    };
    let tables: Vec<_> = run
        .tables
        .iter()
        .map(|t| {
            json!({
                "table": t.table,
                "status": t.status,
                "version": t.version,
                "rows_in": t.counts.rows_in,
                "new": t.counts.new,
                "changed": t.counts.changed,
                "deleted": t.counts.deleted,
                "unchanged": t.counts.unchanged,
                "rejected": t.rejected,
                "duration_ms": t.duration_ms,
                "delta_files": t.delta_files,
                "rejects_file": t.rejects_file,
                "notes": t.notes,
                "error": t.error.as_ref().map(|e| e.to_string()).or_else(|| t.skipped_because.clone()),
            })
        })
        .collect();
    let report = json!({
        "pipeline": run.pipeline,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "status": status,
        "tables": tables,
    });
    let text = serde_json::to_string_pretty(&report).expect("JSON values serialize");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}
