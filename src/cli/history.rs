//! `tidemark history`: the versions of each table.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::engine;
use crate::error::{Error, Result, exit_code};
use crate::store::{CommitKind, Store};
use crate::{query, spec};

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
}

#[derive(serde::Serialize)]
struct Row {
    table: String,
    version: u64,
    committed_at: String,
    kind: CommitKind,
    rows: u64,
    new: u64,
    changed: u64,
    deleted: u64,
    source: String,
    /// `mode: incremental`: `column = value` after the version.
    watermark: Option<String>,
}

pub(super) async fn execute(args: HistoryArgs, store: Option<&str>) -> Result<u8> {
    let plan = spec::load(&args.pipeline, store)?;
    if let Some(t) = &args.table
        && plan.table(t).is_none()
    {
        return Err(Error::Usage {
            message: format!("the pipeline has no table `{t}`"),
        });
    }
    let store = Store::open_existing(&plan.store)?;
    let mut rows = Vec::new();
    let mut damaged_latest = false;
    for table in &plan.tables {
        if args.table.as_ref().is_some_and(|t| t != &table.name) {
            continue;
        }
        let versions = store.versions(&table.name).await?;
        for &version in &versions {
            let r = match store.commit_record(&table.name, version).await {
                Ok(r) => r,
                Err(e) => {
                    // The other versions are shown: they are what a rollback can go to.
                    eprintln!("error: {e}");
                    damaged_latest |= Some(&version) == versions.last();
                    continue;
                }
            };
            rows.push(Row {
                table: r.table.clone(),
                version: r.version,
                committed_at: r.committed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                kind: r.kind,
                rows: r.counts.rows_in,
                new: r.counts.new,
                changed: r.counts.changed,
                deleted: r.counts.deleted,
                source: r
                    .source_files
                    .iter()
                    .map(|f| f.path.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                watermark: r
                    .watermark
                    .as_ref()
                    .map(|w| format!("{} = {}", w.column, w.value)),
            });
        }
    }
    let mut fields = vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("committed_at", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("new", DataType::UInt64, false),
        Field::new("changed", DataType::UInt64, false),
        Field::new("deleted", DataType::UInt64, false),
        Field::new("source", DataType::Utf8, false),
    ];
    // Only incremental tables have a watermark; the column appears when one does.
    if rows.iter().any(|r| r.watermark.is_some()) {
        fields.push(Field::new("watermark", DataType::Utf8, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = query::rows_to_batch(schema, &rows)?;
    let text = pretty_format_batches(&[batch])
        .map_err(|e| engine::error("formatting history", e.into()))?;
    println!("{text}");
    // A damaged record below an intact latest one (one a rollback went above) is shown, but
    // the table is in service.
    if damaged_latest {
        eprintln!(
            "error: the latest commit record is damaged. `tidemark rollback --table T --to V` to an intact version commits above it."
        );
        return Ok(exit_code::FAILED);
    }
    Ok(exit_code::OK)
}
