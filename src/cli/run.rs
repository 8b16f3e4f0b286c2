//! `tidemark run`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, Result, exit_code};
use crate::pipeline::{PipelineRun, RunOptions, TableRun, TableStatus, run_pipeline};
use crate::source::SourceFormat;
use crate::{sink, spec};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file, or several, or a folder of them (its *.yaml and *.yml files, in name
    /// order); each file's tables run in dependency order, one file after the other.
    #[arg(required = true, value_name = "PIPELINE")]
    pub pipelines: Vec<PathBuf>,
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
    /// Run at most N independent tables at once (default: the number of cores).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Once a table fails, start no other table (they are reported as skipped), and no other
    /// pipeline file.
    #[arg(long)]
    pub fail_fast: bool,
    /// Commit only: deliver nothing now; destinations receive the new versions at the next
    /// run or `tidemark deliver`.
    #[arg(long)]
    pub no_deliver: bool,
    /// For tests: end the process right after the first commit, as a kill -9 would.
    #[arg(long, hide = true)]
    pub abort_after_commit: bool,
    /// Also write the machine-readable run report (JSON).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// For tests: the fastest comparison strategy to take (streamed, matching or join).
    #[arg(long, hide = true, value_name = "STRATEGY")]
    pub strategy: Option<crate::diff::strategy::Strategy>,
    /// For tests: read a streamed CSV file in pieces of this many bytes.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub piece_bytes: Option<usize>,
    /// For tests: after matching by position, join the full rows as a digest collision would.
    #[arg(long, hide = true)]
    pub fall_back_to_join: bool,
}

pub(super) async fn execute(args: RunArgs, global: &super::GlobalArgs) -> Result<u8> {
    let files = pipeline_files(&args.pipelines)?;
    // One pipeline file named as such: its report. A folder or several files: a list of them.
    let single = args.pipelines.len() == 1 && !args.pipelines[0].is_dir();
    if !single && (!args.tables.is_empty() || !args.sources.is_empty()) {
        return Err(Error::Usage {
            message: "--table and --source name one pipeline's tables: give a single pipeline file with them.".into(),
        });
    }
    if let Some(report) = &args.report {
        sink::check_writable(report, "report.json")?;
    }
    let mut codes = Vec::new();
    let mut reports = Vec::new();
    for file in &files {
        if !single {
            println!("{}:", file.display());
        }
        match run_file(file, &args, global).await {
            Ok(outcome) => {
                codes.push(outcome.exit_code());
                let mut report = report_json(&outcome);
                report["file"] = json!(file.display().to_string());
                reports.push(report);
            }
            Err(e) => {
                codes.push(e.exit_code());
                // The report says so too: a monitor must not read yesterday's success.
                reports.push(json!({
                    "file": file.display().to_string(),
                    "pipeline": null,
                    "status": "failed",
                    "error": e.to_string(),
                    "tables": [],
                }));
                if single {
                    if let Some(report) = &args.report {
                        write_report(report, &reports[0])?;
                    }
                    return Err(e);
                }
                eprintln!("error: {}: {e}", file.display());
            }
        }
        if args.fail_fast && codes.last().is_some_and(|c| *c != exit_code::OK) {
            break;
        }
    }
    let code = if codes.contains(&exit_code::FAILED) {
        exit_code::FAILED
    } else {
        codes.into_iter().max().unwrap_or(exit_code::OK)
    };
    if let Some(report) = &args.report {
        if single {
            write_report(report, &reports[0])?;
        } else {
            let status = if code == exit_code::OK {
                "success"
            } else if code == exit_code::UNDELIVERED {
                "undelivered"
            } else if reports.iter().all(|r| r["status"] != "failed") {
                "refused"
            } else {
                "failed"
            };
            write_report(report, &json!({"status": status, "pipelines": reports}))?;
        }
    }
    Ok(code)
}

/// The pipeline files the arguments name: files as given, folders by their *.yaml and *.yml
/// files in name order.
fn pipeline_files(arguments: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for argument in arguments {
        if !argument.is_dir() {
            files.push(argument.clone());
            continue;
        }
        let entries = std::fs::read_dir(argument).map_err(|e| Error::io(argument, e))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        if found.is_empty() {
            return Err(Error::Usage {
                message: format!(
                    "{}: the folder holds no pipeline file (*.yaml or *.yml).",
                    argument.display()
                ),
            });
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Run one pipeline file, printing each table's summary as it is known.
async fn run_file(
    file: &std::path::Path,
    args: &RunArgs,
    global: &super::GlobalArgs,
) -> Result<PipelineRun> {
    let plan = spec::load(file, global.store.as_deref())?;
    let mut source_overrides = HashMap::new();
    for s in &args.sources {
        let (table, path) = s.split_once('=').ok_or_else(|| Error::Usage {
            message: format!(
                "--source {s}: expected T=PATH, for example --source inventory=incoming/today.xlsx"
            ),
        })?;
        if path.is_empty() {
            return Err(Error::Usage {
                message: format!(
                    "--source {s}: the path is empty; give the file to read, for example --source {table}=incoming/today.csv"
                ),
            });
        }
        source_overrides.insert(table.to_string(), PathBuf::from(path));
    }
    let collisions = spec::output_collisions(&plan, &source_overrides);
    if !collisions.is_empty() {
        return Err(Error::Usage {
            message: collisions.join("\n"),
        });
    }
    if !args.dry_run && !args.no_deliver {
        let tables: Vec<&spec::TablePlan> = plan.tables.iter().collect();
        crate::deliver::check_settings(&tables)?;
    }
    if !args.dry_run {
        // A delta that could not be put in its place must fail the run before its commit.
        let now = chrono::Utc::now();
        for table in &plan.tables {
            for output in &table.outputs {
                let (path, _) = crate::deliver::files::places(&output.path, &table.name, 1, now);
                sink::check_writable(&path, "delta.csv")?;
            }
        }
    }
    let options = RunOptions {
        tables: args.tables.clone(),
        dry_run: args.dry_run,
        source_overrides,
        progress: !global.quiet,
        force: args.force,
        unsafe_single_writer: global.unsafe_single_writer,
        jobs: args.jobs,
        fail_fast: args.fail_fast,
        strategy: args.strategy,
        piece_bytes: args.piece_bytes,
        fall_back_to_join: args.fall_back_to_join,
        no_deliver: args.no_deliver,
        abort_after_commit: args.abort_after_commit,
        atomic_run: None,
    };
    let run = run_pipeline(&plan, &options, |t| {
        crate::pipeline::above_progress(|| {
            println!("{}", summary_line(t));
            for p in &t.partitions {
                let c = &p.counts;
                println!(
                    "  partition {}: {} rows: {}",
                    partition_name(&p.partition),
                    c.rows_in,
                    c.listed()
                );
            }
            if let Some(path) = &t.rejects_file {
                println!("  rejected rows: {path}");
            }
            for note in &t.notes {
                println!("  note: {note}");
            }
            for line in delivery_lines(t, |kind| kind == "files") {
                println!("  {line}");
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
    })
    .await?;
    // Databases receive the pipeline's tables together, once all have run.
    for t in &run.tables {
        for line in delivery_lines(t, |kind| kind != "files") {
            println!("{}: {line}", t.table);
        }
    }
    Ok(run)
}

/// What the summary says of a table's deliveries beyond "committed": a destination left
/// behind, and versions an earlier run had committed but not delivered.
fn delivery_lines(t: &TableRun, kinds: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    for d in t.deliveries.iter().filter(|d| kinds(d.kind)) {
        let earlier: Vec<String> = (d.versions.iter())
            .filter(|v| Some(**v) != t.version)
            .map(|v| format!("v{v}"))
            .collect();
        if !earlier.is_empty() {
            lines.push(format!(
                "delivered to {} what earlier runs committed: {}",
                d.destination,
                earlier.join(", ")
            ));
        }
        if let Some(e) = &d.error {
            lines.push(format!("not delivered: {e}"));
        }
    }
    lines
}

/// One destination's delivery as the report shows it.
pub(super) fn delivery_json(d: &crate::deliver::Delivery) -> serde_json::Value {
    json!({
        "destination": d.destination,
        "delivered": d.versions,
        "files": d.files,
        "cursor": d.cursor,
        "error": d.error.as_ref().map(|e| e.to_string()),
    })
}

/// `customer=GREYSON, region=EU`.
fn partition_name(values: &[(String, String)]) -> String {
    values
        .iter()
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one-line summary of SPEC 6.
pub fn summary_line(t: &TableRun) -> String {
    let c = &t.counts;
    let seconds = t.duration_ms as f64 / 1000.0;
    let counts = format!(
        "{} rows: {}, {} rejected ({seconds:.1} s)",
        c.rows_in,
        c.listed(),
        t.rejected
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

/// One partition's counts as the report shows them (`renamed` when it holds renamed rows).
fn partition_json(p: &crate::pipeline::PartitionCounts) -> serde_json::Value {
    let mut shown = json!({
        "partition": p.partition.iter().map(|(c, v)| (c.clone(), serde_json::Value::from(v.clone()))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "rows_in": p.counts.rows_in,
        "new": p.counts.new,
        "changed": p.counts.changed,
        "deleted": p.counts.deleted,
        "unchanged": p.counts.unchanged,
    });
    if p.counts.renamed > 0 {
        shown["renamed"] = p.counts.renamed.into();
    }
    shown
}

/// One pipeline run as the report shows it.
fn report_json(run: &PipelineRun) -> serde_json::Value {
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
    let undelivered = (run.tables.iter())
        .flat_map(|t| &t.deliveries)
        .any(|d| d.error.is_some());
    let status = match status {
        "success" if undelivered => "undelivered",
        other => other,
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
                "renamed": t.counts.renamed,
                "unchanged": t.counts.unchanged,
                "rejected": t.rejected,
                "duration_ms": t.duration_ms,
                "strategy": t.strategy.map(|s| s.name()),
                "delta_files": t.delta_files,
                "rejects_file": t.rejects_file,
                "notes": t.notes,
                "partitions": t.partitions.iter().map(partition_json).collect::<Vec<_>>(),
                "error": t.error.as_ref().map(|e| e.to_string()).or_else(|| t.skipped_because.clone()),
                "deliveries": t.deliveries.iter().map(delivery_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "pipeline": run.pipeline,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "status": status,
        "tables": tables,
    })
}

/// Write the report whole under a temporary name, then rename it into place: a monitor never
/// reads half a report.
fn write_report(path: &std::path::Path, report: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("JSON values serialize");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut file, (text + "\n").as_bytes())
        .map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
