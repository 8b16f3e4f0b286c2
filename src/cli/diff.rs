//! `tidemark diff OLD NEW --key K`: an ad-hoc diff of two files, without a store.

use std::path::PathBuf;

use super::OutputFormat;
use crate::error::{Error, Result, exit_code};
use crate::run::diff_files;
use crate::source::{SourceFormat, SourceOptions};
use crate::spec::{ChangeColumns, ChangeKind, CompareColumns, Duplicates, TablePlan};

/// Arguments of `diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old file (the baseline).
    pub old: PathBuf,
    /// The new file (the snapshot).
    pub new: PathBuf,
    /// Key column(s), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub key: Vec<String>,
    /// Only these columns make a row CHANGED (comma separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "ignore")]
    pub compare: Vec<String>,
    /// Every non-key column but these make a row CHANGED (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Write the delta here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format; default from --output's extension, else csv.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

fn options_for(path: &std::path::Path) -> Result<SourceOptions> {
    let format =
        SourceFormat::from_extension(&path.to_string_lossy()).ok_or_else(|| Error::Usage {
            message: format!(
                "{}: cannot tell the format from the extension; use .csv, .xlsx, .parquet or .json",
                path.display()
            ),
        })?;
    Ok(SourceOptions {
        format,
        ..SourceOptions::default()
    })
}

pub(super) async fn execute(args: DiffArgs) -> Result<u8> {
    let compare = if !args.compare.is_empty() {
        CompareColumns::Only(args.compare.clone())
    } else if !args.ignore.is_empty() {
        CompareColumns::AllBut(args.ignore.clone())
    } else {
        CompareColumns::All
    };
    let table = TablePlan {
        name: "diff".into(),
        source_path: args.new.display().to_string(),
        files: Default::default(),
        source: options_for(&args.new)?,
        transform: None,
        key: args.key.clone(),
        compare,
        duplicates: Duplicates::Error,
        depends_on: Vec::new(),
        emit_deleted: true,
        delete_set: Vec::new(),
        outputs: Vec::new(),
        change_columns: ChangeColumns::default(),
    };
    let old_options = options_for(&args.old)?;
    let include = [ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted];
    let (schema, batches, counts) = diff_files(&args.old, &old_options, &table, &include).await?;
    let format = args.format.unwrap_or_else(|| {
        match args
            .output
            .as_ref()
            .and_then(|p| SourceFormat::from_extension(&p.to_string_lossy()))
        {
            Some(SourceFormat::Parquet) => OutputFormat::Parquet,
            Some(SourceFormat::Json) => OutputFormat::Json,
            _ => OutputFormat::Csv,
        }
    });
    super::query::emit(&schema, &batches, format, args.output.as_deref())?;
    tracing::info!(
        "{} rows: {} new, {} changed, {} deleted, {} unchanged",
        counts.rows_in,
        counts.new,
        counts.changed,
        counts.deleted,
        counts.unchanged
    );
    Ok(exit_code::OK)
}
