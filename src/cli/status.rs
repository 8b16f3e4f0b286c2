//! `tidemark status`: per table, the latest version, its last run, and how far each
//! destination has received the versions.

use std::path::PathBuf;

use serde_json::json;

use crate::deliver::{self, cursor};
use crate::error::{Result, exit_code};
use crate::spec;
use crate::store::{RunRecord, Store};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// `text` for people, `json` for monitors.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,
}

/// Formats of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

pub(super) async fn execute(args: StatusArgs, store: Option<&str>) -> Result<u8> {
    let plan = spec::load(&args.pipeline, store)?;
    let store = Store::open_existing(&plan.store)?;
    let runs = store.runs().await?;
    let all: Vec<&crate::spec::TablePlan> = plan.tables.iter().collect();
    let databases = crate::deliver::database::positions(&plan, &all).await;
    let mut tables = Vec::with_capacity(plan.tables.len());
    for table in &plan.tables {
        let latest = store.latest(&table.name).await?;
        let latest_version = latest.as_ref().map(|r| r.version);
        let last_run: Option<&RunRecord> =
            (runs.iter().rev()).find(|r| r.table == table.name && r.pipeline == plan.name);
        let mut destinations = Vec::new();
        for name in deliver::store_cursors(table) {
            let at = cursor::position(&store, &table.name, name).await?;
            let lag = match (at, latest_version) {
                (Some(at), Some(latest)) => Some(
                    store
                        .versions(&table.name)
                        .await?
                        .iter()
                        .filter(|v| **v > at && **v <= latest)
                        .count(),
                ),
                _ => None,
            };
            let files = table.outputs.iter().any(|o| o.name == name);
            let (failed_rows, dead_letter_file) = match files {
                true => (0, None),
                false => {
                    let (rows, file) =
                        crate::deliver::http::dead_letters(&store, &table.name, name).await?;
                    (rows, (rows > 0).then_some(file))
                }
            };
            destinations.push(json!({
                "destination": name,
                "kind": if files { "files" } else { "http" },
                "delivered_version": at,
                "lag": lag,
                "failed_rows": failed_rows,
                "dead_letter_file": dead_letter_file,
            }));
        }
        for position in databases.iter().filter(|p| p.table == table.name) {
            let name = &position.destination;
            let (at, error) = match &position.at {
                Ok(at) => (*at, None),
                Err(e) => (None, Some(e.to_string())),
            };
            let versions = store.versions(&table.name).await?;
            let lag = match (at, error.is_none()) {
                (Some(at), _) => Some(versions.iter().filter(|v| **v > at).count()),
                (None, true) if !versions.is_empty() => Some(versions.len()),
                _ => None,
            };
            destinations.push(json!({
                "destination": name,
                "kind": position.kind,
                "delivered_version": at,
                "lag": lag,
                "failed_rows": 0,
                "error": error,
            }));
        }
        tables.push(json!({
            "table": table.name,
            "latest_version": latest_version,
            "committed_at": latest.as_ref().map(|r| r.committed_at),
            "kind": latest.as_ref().map(|r| r.kind),
            "last_run": last_run.map(|r| json!({
                "status": r.status,
                "version": r.version,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "error": r.error,
            })),
            "destinations": destinations,
        }));
    }
    let status = json!({"pipeline": plan.name, "tables": tables});
    match args.format {
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("JSON values serialize")
        ),
        StatusFormat::Text => print_text(&status),
    }
    Ok(exit_code::OK)
}

/// The status as lines for people.
fn print_text(status: &serde_json::Value) {
    for t in status["tables"].as_array().into_iter().flatten() {
        let name = t["table"].as_str().unwrap_or_default();
        let head = match t["latest_version"].as_u64() {
            Some(v) => format!(
                "v{v} ({}, committed {})",
                t["kind"].as_str().unwrap_or_default(),
                t["committed_at"].as_str().unwrap_or_default()
            ),
            None => "nothing committed yet".to_string(),
        };
        let run = &t["last_run"];
        let last = match run["status"].as_str() {
            Some(s) => {
                let error = run["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                format!(
                    "; last run {} {s}{error}",
                    run["started_at"].as_str().unwrap_or_default()
                )
            }
            None => String::new(),
        };
        println!("{name}: {head}{last}");
        for d in t["destinations"].as_array().into_iter().flatten() {
            let destination = d["destination"].as_str().unwrap_or_default();
            if let Some(error) = d["error"].as_str() {
                println!("  {destination}: unknown: {error}");
                continue;
            }
            let line = match (d["delivered_version"].as_u64(), d["lag"].as_u64()) {
                (Some(at), Some(0)) => format!("has v{at}, up to date"),
                (Some(at), Some(1)) => format!("has v{at}, 1 version behind"),
                (Some(at), Some(lag)) => format!("has v{at}, {lag} versions behind"),
                (Some(at), None) => format!("has v{at}"),
                (None, _) => "has received nothing yet".to_string(),
            };
            let failed = match d["failed_rows"].as_u64().unwrap_or(0) {
                1 => "1 failed row".to_string(),
                n => format!("{n} failed rows"),
            };
            println!("  {destination}: {line}, {failed}");
            if let Some(file) = d["dead_letter_file"].as_str() {
                println!(
                    "    dead letters: {file} (`tidemark deliver --retry-failed` sends them again)"
                );
            }
        }
    }
}
