//! `tidemark diff OLD NEW --key K`: an ad-hoc diff of two files, without a store.

use std::path::PathBuf;

use super::OutputFormat;
use crate::error::{Error, Result, exit_code};
use crate::run::diff_files;
use crate::source::{SheetRef, SourceFormat, SourceOptions};
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
    /// Excel: the sheet to read in both files (name or 0-based index); default the first.
    #[arg(long)]
    pub sheet: Option<String>,
    /// Excel/CSV: 1-based row holding the column names in both files.
    #[arg(long, default_value_t = 1)]
    pub header_row: usize,
    /// CSV: the field delimiter of both files.
    #[arg(long, default_value = ",")]
    pub delimiter: char,
}

fn options_for(path: &std::path::Path, args: &DiffArgs) -> Result<SourceOptions> {
    let format =
        SourceFormat::from_extension(&path.to_string_lossy()).ok_or_else(|| Error::Usage {
            message: format!(
                "{}: cannot tell the format from the extension; use .csv, .xlsx, .parquet or .json",
                path.display()
            ),
        })?;
    if args.header_row == 0 || !args.delimiter.is_ascii() {
        return Err(Error::Usage {
            message: "--header-row is 1-based and --delimiter must be one ASCII character".into(),
        });
    }
    Ok(SourceOptions {
        format,
        sheet: args.sheet.as_ref().map(|s| match s.parse::<usize>() {
            Ok(i) => SheetRef::Index(i),
            Err(_) => SheetRef::Name(s.clone()),
        }),
        header_row: args.header_row,
        delimiter: args.delimiter as u8,
        ..SourceOptions::default()
    })
}

pub(super) async fn execute(args: DiffArgs) -> Result<u8> {
    for (role, path) in [("OLD", &args.old), ("NEW", &args.new)] {
        if !path.is_file() {
            return Err(Error::Usage {
                message: format!("{role} file {} does not exist.", path.display()),
            });
        }
    }
    if let Some(out) = &args.output
        && args.format.is_none()
        && !matches!(
            SourceFormat::from_extension(&out.to_string_lossy()),
            Some(SourceFormat::Csv | SourceFormat::Json | SourceFormat::Parquet)
        )
    {
        return Err(Error::Usage {
            message: format!(
                "--output {}: the delta is written as .csv, .json (JSON lines) or .parquet; pick one of those extensions or pass --format.",
                out.display()
            ),
        });
    }
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
        source: options_for(&args.new, &args)?,
        transform: None,
        key: args.key.clone(),
        compare,
        duplicates: Duplicates::Error,
        depends_on: Vec::new(),
        emit_deleted: true,
        delete_set: Vec::new(),
        outputs: Vec::new(),
        change_columns: ChangeColumns::default(),
        guard: Default::default(),
        tolerance: Vec::new(),
        validate: Default::default(),
        normalize: Vec::new(),
    };
    let old_options = options_for(&args.old, &args)?;
    let include = [ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted];
    let (schema, batches, counts) = diff_files(&args.old, &old_options, &table, &include).await?;
    let format = OutputFormat::choose(args.format, args.output.as_deref(), OutputFormat::Csv);
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
