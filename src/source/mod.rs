//! Sources: one file per format, each turning files into Arrow record batches with the declared
//! column types applied and the others inferred. Resolving a table's `path` (globs, `files:
//! newest | all`) and concatenating several files happens here, once for every format.

pub mod csv;
pub mod excel;
pub mod json;
pub mod parquet;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// The file formats tidemark reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// Delimited text.
    Csv,
    /// .xlsx, .xlsm, .xls, .ods (calamine).
    Excel,
    /// Apache Parquet.
    Parquet,
    /// JSON lines (one object per line).
    Json,
}

impl SourceFormat {
    /// The format a file name implies, if any.
    pub fn from_extension(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let ext = lower.rsplit('.').next().unwrap_or("");
        match ext {
            "csv" | "tsv" | "txt" => Some(SourceFormat::Csv),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(SourceFormat::Excel),
            "parquet" | "pq" => Some(SourceFormat::Parquet),
            "json" | "jsonl" | "ndjson" => Some(SourceFormat::Json),
            _ => None,
        }
    }

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Csv => "csv",
            SourceFormat::Excel => "excel",
            SourceFormat::Parquet => "parquet",
            SourceFormat::Json => "json",
        }
    }
}

/// A sheet of a workbook, by name or by 0-based index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SheetRef {
    /// The sheet's name.
    Name(String),
    /// 0-based position.
    Index(usize),
}

/// When a glob matches several files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileSelection {
    /// The last file by name (dated file names sort by date).
    #[default]
    Newest,
    /// Every file, concatenated in name order.
    All,
}

/// How to read one table's source files.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The format of every matched file.
    pub format: SourceFormat,
    /// Excel: which sheet; default the first.
    pub sheet: Option<SheetRef>,
    /// Excel/CSV: 1-based row holding the column names.
    pub header_row: usize,
    /// CSV: the field delimiter.
    pub delimiter: u8,
    /// CSV/Excel: cell texts read as null.
    pub null_values: Vec<String>,
    /// Declared column types, in declaration order; other columns are inferred.
    pub columns: Vec<(String, DataType)>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            format: SourceFormat::Csv,
            sheet: None,
            header_row: 1,
            delimiter: b',',
            null_values: vec![String::new()],
            columns: Vec::new(),
        }
    }
}

impl SourceOptions {
    /// The declared type of a column, if any.
    pub fn declared_type(&self, column: &str) -> Option<&DataType> {
        self.columns
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, t)| t)
    }
}

/// A source file as read, for the commit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    /// The path as given or resolved.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Maps a snapshot's 0-based row index to the row a person counts, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowLocator {
    /// Rows counted from this number (sheet rows below the header, JSON lines, Parquet
    /// records, a transform's result).
    From(u64),
    /// Lines of one CSV file whose header is on line `header_row` (records may span lines).
    CsvLines {
        /// The file.
        path: PathBuf,
        /// 1-based header line.
        header_row: usize,
    },
}

impl RowLocator {
    /// The row a person counts for data row `index`.
    pub fn row(&self, index: u64) -> u64 {
        match self {
            RowLocator::From(first) => first + index,
            RowLocator::CsvLines { path, header_row } => {
                csv::record_line(path, *header_row, index).unwrap_or(*header_row as u64 + 1 + index)
            }
        }
    }
}

/// One table's snapshot as loaded, before any transform.
#[derive(Debug, Clone)]
pub struct LoadedSource {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// The files read, in order.
    pub files: Vec<SourceFile>,
}

impl LoadedSource {
    /// Number of rows loaded.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// How row indexes map to rows a person counts in the source.
    pub fn locator(&self, options: &SourceOptions) -> RowLocator {
        match (options.format, self.files.as_slice()) {
            (SourceFormat::Csv, [one]) => RowLocator::CsvLines {
                path: PathBuf::from(&one.path),
                header_row: options.header_row,
            },
            (SourceFormat::Csv | SourceFormat::Excel, _) => {
                RowLocator::From(options.header_row as u64 + 1)
            }
            _ => RowLocator::From(1),
        }
    }

    /// A human name for where the rows came from, for error messages.
    pub fn origin(&self) -> String {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            many => format!("{} files", many.len()),
        }
    }
}

/// Expand `pattern` (a path or a glob) and pick the files per `selection`.
pub fn resolve_files(table: &str, pattern: &str, selection: FileSelection) -> Result<Vec<PathBuf>> {
    let has_glob = pattern.contains(['*', '?', '[']);
    let mut files: Vec<PathBuf> = if has_glob {
        let entries = glob::glob(pattern).map_err(|e| Error::Usage {
            message: format!("table {table}: source path {pattern} is not a valid glob: {e}"),
        })?;
        entries
            .filter_map(|e| e.ok())
            .filter(|p| p.is_file())
            .collect()
    } else {
        let p = PathBuf::from(pattern);
        if p.is_file() { vec![p] } else { Vec::new() }
    };
    if files.is_empty() {
        return Err(Error::SourceMissing {
            table: table.to_string(),
            pattern: pattern.to_string(),
        });
    }
    files.sort();
    if selection == FileSelection::Newest {
        let newest = files.pop().expect("non-empty");
        files = vec![newest];
    }
    Ok(files)
}

/// Read one file in the given format.
pub fn read_file(path: &Path, options: &SourceOptions) -> Result<RecordBatch> {
    let batch = match options.format {
        SourceFormat::Csv => csv::read_csv(path, options)?,
        SourceFormat::Excel => excel::read_excel(path, options)?,
        SourceFormat::Parquet => parquet::read_parquet(path)?,
        SourceFormat::Json => json::read_json(path, options)?,
    };
    Ok(batch)
}

/// Load every file of a table's source into Arrow.
pub fn load(
    table: &str,
    pattern: &str,
    selection: FileSelection,
    options: &SourceOptions,
) -> Result<LoadedSource> {
    let paths = resolve_files(table, pattern, selection)?;
    let mut batches = Vec::with_capacity(paths.len());
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if size == 0 {
            return Err(Error::SourceEmpty { path: path.clone() });
        }
        batches.push(read_file(path, options)?);
        files.push(SourceFile {
            path: path.display().to_string(),
            size,
        });
    }
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Err(Error::SourceData {
            path: paths[paths.len() - 1].clone(),
            row: None,
            column: None,
            message: "the file has a header but no data rows. A truncated export? tidemark refuses to treat it as an empty snapshot, which would delete every row; nothing was committed.".into(),
        });
    }
    let schema = unify_schemas(&paths, &batches)?;
    let batches = batches
        .into_iter()
        .zip(&paths)
        .map(|(b, p)| types::conform(&b, &schema, p))
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadedSource {
        schema,
        batches,
        files,
    })
}

/// With `files: all`, every file must have the same columns; types widen to the first file's.
fn unify_schemas(paths: &[PathBuf], batches: &[RecordBatch]) -> Result<SchemaRef> {
    let first = batches[0].schema();
    for (batch, path) in batches.iter().zip(paths).skip(1) {
        let names: Vec<&String> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name())
            .collect();
        let expected: Vec<&String> = first.fields().iter().map(|f| f.name()).collect();
        if names != expected {
            return Err(Error::SourceData {
                path: path.clone(),
                row: None,
                column: None,
                message: format!(
                    "its columns differ from {}'s ({} vs {}); with `files: all` every file must have the same header",
                    paths[0].display(),
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    expected
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok(Arc::new(Schema::new(first.fields().clone())))
}
