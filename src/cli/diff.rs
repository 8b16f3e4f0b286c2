//! `tidemark diff OLD NEW --key K`: an ad-hoc diff of two files, without a store; and
//! `tidemark diff PIPELINE.yaml --table T --from V [--to W]`: the changes between two stored
//! versions of a table.

use std::path::PathBuf;

use super::OutputFormat;
use crate::diff::files::diff as diff_files;
use crate::error::{Error, Result, exit_code};
use crate::source::{SheetRef, SourceFormat, SourceOptions};
use crate::spec::{ChangeColumns, CompareColumns, Duplicates, TablePlan};

/// Arguments of `diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old file (the baseline); with --from, the pipeline file.
    pub old: PathBuf,
    /// The new file (the snapshot).
    #[arg(required_unless_present = "from")]
    pub new: Option<PathBuf>,
    /// Key column(s), comma separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "from")]
    pub key: Vec<String>,
    /// Diff stored versions: from this version of --table...
    #[arg(long, value_name = "V", conflicts_with_all = ["new", "key"])]
    pub from: Option<u64>,
    /// ...to this one (default: the latest).
    #[arg(long, value_name = "W", requires = "from")]
    pub to: Option<u64>,
    /// The table whose versions --from/--to name (needed when the pipeline has several).
    #[arg(long, value_name = "T", requires = "from")]
    pub table: Option<String>,
    /// Only these columns make a row CHANGED (comma separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "ignore")]
    pub compare: Vec<String>,
    /// Every non-key column but these make a row CHANGED (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Report a removed row and an added row with the same compared values as one RENAMED
    /// row (its key changed), with the old key in previous_<key> columns.
    #[arg(long)]
    pub renames: bool,
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

pub(super) async fn execute(args: DiffArgs, store: Option<&str>) -> Result<u8> {
    if let Some(from) = args.from {
        return versions(&args, from, store).await;
    }
    let new = args.new.clone().expect("clap requires NEW without --from");
    for (role, path) in [("OLD", &args.old), ("NEW", &new)] {
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
    if let Some(problem) = crate::spec::KeyProblem::of(&args.key) {
        let problem = match problem {
            crate::spec::KeyProblem::Repeated(k) => {
                format!("the key names \"{k}\" twice; name each key column once")
            }
            _ => "a key column name is empty; name the columns that identify a row, e.g. --key id or --key customer,po".to_string(),
        };
        return Err(Error::Usage {
            message: format!("--key \"{}\": {problem}", args.key.join(",")),
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
        source_path: new.display().to_string(),
        files: Default::default(),
        source: options_for(&new, &args)?,
        transform: None,
        key: args.key.clone(),
        compare,
        duplicates: Duplicates::Error,
        depends_on: Vec::new(),
        references: Vec::new(),
        mode: crate::spec::TableMode::Snapshot,
        partition_by: Vec::new(),
        emit_deleted: true,
        delete_set: Vec::new(),
        outputs: Vec::new(),
        destinations: Vec::new(),
        change_columns: ChangeColumns::default(),
        renames: args.renames,
        guard: Default::default(),
        tolerance: Vec::new(),
        validate: Default::default(),
        normalize: Vec::new(),
    };
    let old_options = options_for(&args.old, &args)?;
    let include = crate::spec::DEFAULT_INCLUDE;
    let (schema, batches, counts) = diff_files(&args.old, &old_options, &table, &include).await?;
    let format = OutputFormat::choose(args.format, args.output.as_deref(), OutputFormat::Csv);
    super::query::emit(&schema, &batches, format, args.output.as_deref())?;
    tracing::info!("{} rows: {}", counts.rows_in, counts.listed());
    Ok(exit_code::OK)
}

/// `diff PIPELINE.yaml --table T --from V [--to W]`.
async fn versions(args: &DiffArgs, from: u64, store: Option<&str>) -> Result<u8> {
    let plan = crate::spec::load(&args.old, store)?;
    let table = match (&args.table, plan.tables.as_slice()) {
        (Some(name), _) => plan.table(name).ok_or_else(|| Error::Usage {
            message: format!("the pipeline has no table `{name}`."),
        })?,
        (None, [one]) => one,
        (None, _) => {
            return Err(Error::Usage {
                message: "the pipeline has several tables; name one with --table.".into(),
            });
        }
    };
    let store = crate::store::Store::open_existing(&plan.store)?;
    let name = table.name.as_str();
    let versions = store.versions(name).await?;
    let to = args.to.or(versions.last().copied()).unwrap_or(0);
    for v in [from, to] {
        if !versions.contains(&v) {
            return Err(Error::Usage {
                message: format!(
                    "table {name} has no version {v}; `tidemark history` lists its versions."
                ),
            });
        }
    }
    let from_record = store.commit_record(name, from).await?;
    let to_record = store.commit_record(name, to).await?;
    let delta = crate::restore::diff_versions(&store, table, &from_record, &to_record).await?;
    let types = to_record
        .schema
        .iter()
        .filter_map(|c| c.data_type.parse().ok().map(|t| (c.name.clone(), t)))
        .collect();
    let include = crate::spec::DEFAULT_INCLUDE;
    let (schema, batches) =
        crate::sink::shape::shape_batches(table, &delta, &include, None, &types).await?;
    let format = OutputFormat::choose(args.format, args.output.as_deref(), OutputFormat::Csv);
    super::query::emit(&schema, &batches, format, args.output.as_deref())?;
    let c = delta.counts;
    tracing::info!("{name} v{from} → v{to}: {}", c.listed());
    Ok(exit_code::OK)
}
