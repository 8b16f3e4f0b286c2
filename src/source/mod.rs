//! Sources: one file per format, each turning files into Arrow record batches with the declared
//! column types applied and the others inferred. Resolving a table's `path` (globs, `files:
//! newest | all`) and concatenating several files happens here, once for every format.

pub mod csv;
pub mod excel;
pub mod json;
pub mod parquet;
pub mod remote;
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

/// Where loading says how far it has come (a progress bar): the size of all the files first,
/// then the bytes as they are read.
pub trait LoadProgress: Sync {
    /// The files to read hold this many bytes.
    fn total_bytes(&self, bytes: u64);
    /// This many more bytes have been read.
    fn bytes_read(&self, bytes: u64);
}

/// Loading that reports to no one.
pub struct Unobserved;

impl LoadProgress for Unobserved {
    fn total_bytes(&self, _: u64) {}
    fn bytes_read(&self, _: u64) {}
}

/// A source file as read, for the commit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    /// The path as given or resolved.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A cell whose value does not fit its column. It rejects its row, not the file: the row goes to
/// the rejects file and its key keeps its baseline row.
#[derive(Debug, Clone, PartialEq)]
pub struct CellError {
    /// 0-based data row: within the file while reading, within the snapshot once loaded.
    pub row: usize,
    /// The column.
    pub column: String,
    /// The cell as read.
    pub value: String,
    /// Why it does not fit, naming the value and the type.
    pub message: String,
}

/// How a file's 0-based data rows map to the rows a person counts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRows {
    /// Consecutive rows from this number (JSON lines, Parquet records, a transform's result).
    From(u64),
    /// Lines of a CSV file whose header is on line `header_row` (records may span lines).
    CsvLines {
        /// The file.
        path: PathBuf,
        /// 1-based header line.
        header_row: usize,
    },
    /// Each row's number (sheet rows, where blank rows are skipped).
    Listed(Arc<Vec<u64>>),
}

impl FileRows {
    /// The row a person counts for data row `index`.
    pub fn row(&self, index: u64) -> u64 {
        self.rows(&[index])[0]
    }

    /// The rows for several data rows (in any order); a CSV file is scanned once for all.
    pub fn rows(&self, indexes: &[u64]) -> Vec<u64> {
        match self {
            FileRows::From(first) => indexes.iter().map(|i| first + i).collect(),
            FileRows::Listed(rows) => indexes
                .iter()
                .map(|&i| rows.get(i as usize).copied().unwrap_or(0))
                .collect(),
            FileRows::CsvLines { path, header_row } => {
                let lines = csv::record_lines(path, *header_row, indexes);
                indexes
                    .iter()
                    .zip(lines)
                    .map(|(i, line)| line.unwrap_or(*header_row as u64 + 1 + i))
                    .collect()
            }
        }
    }
}

/// One file as read: its rows, how they map to the rows a person counts, and the cells that
/// did not fit their column.
#[derive(Debug, Clone)]
pub struct FileRead {
    /// The rows, in one or more batches of one schema; a cell that did not fit is null here.
    pub batches: Vec<RecordBatch>,
    /// Row numbering.
    pub rows: FileRows,
    /// Cells that did not fit, by 0-based data row.
    pub cell_errors: Vec<CellError>,
}

impl FileRead {
    /// The rows, or the first cell that did not fit as the file's error: for commands that
    /// have no rejects file (`tidemark diff`).
    pub fn strict(self, path: &Path) -> Result<Vec<RecordBatch>> {
        match self.cell_errors.into_iter().min_by_key(|e| e.row) {
            None => Ok(self.batches),
            Some(e) => Err(Error::SourceData {
                path: path.to_path_buf(),
                row: Some(self.rows.row(e.row as u64)),
                column: Some(e.column),
                message: e.message,
            }),
        }
    }
}

/// Maps a snapshot's 0-based row index to its file and the row a person counts there, for
/// messages and the rejects file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLocator {
    /// By first row index, ascending.
    segments: Vec<Segment>,
    /// Snapshot row -> source row, when a transform sits between them.
    through: Option<Arc<Vec<u64>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    start: u64,
    file: String,
    rows: FileRows,
}

impl RowLocator {
    /// Rows of one file (or of a transform's result, named by `label`).
    pub fn single(label: impl Into<String>, rows: FileRows) -> Self {
        RowLocator {
            segments: vec![Segment {
                start: 0,
                file: label.into(),
                rows,
            }],
            through: None,
        }
    }

    /// Rows of a transform's result whose row `i` came from source row `source_rows[i]`.
    pub fn through(&self, source_rows: Vec<u64>) -> Self {
        RowLocator {
            segments: self.segments.clone(),
            through: Some(Arc::new(source_rows)),
        }
    }

    /// The source row (0-based) of snapshot row `index`: itself unless a transform sits between.
    pub fn source_row(&self, index: u64) -> u64 {
        match &self.through {
            Some(map) => map.get(index as usize).copied().unwrap_or(index),
            None => index,
        }
    }

    fn push(&mut self, start: u64, file: String, rows: FileRows) {
        self.segments.push(Segment { start, file, rows });
    }

    fn segment(&self, index: u64) -> &Segment {
        let i = self.segments.partition_point(|s| s.start <= index);
        &self.segments[i.saturating_sub(1)]
    }

    /// The row a person counts for snapshot row `index`.
    pub fn row(&self, index: u64) -> u64 {
        let index = self.source_row(index);
        let s = self.segment(index);
        s.rows.row(index - s.start)
    }

    /// File and row for several snapshot rows, in the order given; each CSV file is scanned
    /// once.
    pub fn locate(&self, indexes: &[u64]) -> Vec<(String, u64)> {
        let indexes: Vec<u64> = indexes.iter().map(|&i| self.source_row(i)).collect();
        let mut out = vec![(String::new(), 0u64); indexes.len()];
        for (k, segment) in self.segments.iter().enumerate() {
            let end = self.segments.get(k + 1).map_or(u64::MAX, |s| s.start);
            let mine: Vec<usize> = (0..indexes.len())
                .filter(|&j| indexes[j] >= segment.start && indexes[j] < end)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let local: Vec<u64> = mine.iter().map(|&j| indexes[j] - segment.start).collect();
            for (&j, row) in mine.iter().zip(segment.rows.rows(&local)) {
                out[j] = (segment.file.clone(), row);
            }
        }
        out
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
    /// Where each row comes from.
    pub rows: RowLocator,
    /// Cells that did not fit their column, by 0-based row of the whole snapshot.
    pub cell_errors: Vec<CellError>,
}

impl LoadedSource {
    /// Number of rows loaded.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// A human name for where the rows came from, for error messages.
    pub fn origin(&self) -> String {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            many => format!("{} files", many.len()),
        }
    }

    /// The rows, or the first cell that did not fit as an error (see [`FileRead::strict`]).
    pub fn strict(self) -> Result<Self> {
        if let Some(e) = self.cell_errors.iter().min_by_key(|e| e.row) {
            let (file, row) = self.rows.locate(&[e.row as u64]).remove(0);
            return Err(Error::SourceData {
                path: PathBuf::from(file),
                row: Some(row),
                column: Some(e.column.clone()),
                message: e.message.clone(),
            });
        }
        Ok(self)
    }
}

/// Rows per record batch for a table of `columns` columns: 64Ki rows for usual widths, fewer for
/// wide tables, since readers allocate a batch's cells up front (arrow-csv's offsets alone take
/// rows × columns × 8 bytes: 5 GB at 64Ki rows of 10,000 columns).
pub fn batch_rows(columns: usize) -> usize {
    const CELLS_PER_BATCH: usize = 1 << 20;
    (CELLS_PER_BATCH / columns.max(1)).clamp(256, 64 * 1024)
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
        if p.is_file() || is_stream(&p) {
            vec![p]
        } else {
            Vec::new()
        }
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

/// Read one file in the given format; cells that do not fit their column are reported, not
/// fatal.
pub fn read_file(
    path: &Path,
    options: &SourceOptions,
    progress: &dyn LoadProgress,
) -> Result<FileRead> {
    let read = match options.format {
        // CSV says how far it has come as it reads; the other formats once read.
        SourceFormat::Csv => return csv::read_csv_rows(path, options, progress),
        SourceFormat::Excel => excel::read_excel_rows(path, options)?,
        // The decoders of both assert on some malformed input: a damaged file, not a crash.
        SourceFormat::Parquet => FileRead {
            batches: crate::error::guard_parser(path, "Parquet", || parquet::read_parquet(path))?,
            rows: FileRows::From(1),
            cell_errors: Vec::new(),
        },
        SourceFormat::Json => {
            crate::error::guard_parser(path, "JSON", || json::read_json_rows(path, options))?
        }
    };
    progress.bytes_read(std::fs::metadata(path).map_or(0, |m| m.len()));
    Ok(read)
}

/// A file to read: where its bytes are on this machine, and the name messages give it (an
/// `s3://` object is read from a downloaded copy but named by its URL).
#[derive(Debug, Clone)]
pub struct FileToRead {
    /// The local copy.
    pub local: PathBuf,
    /// Its name for people.
    pub shown: PathBuf,
}

impl FileToRead {
    /// A local file, named by its path.
    pub fn local(path: PathBuf) -> Self {
        FileToRead {
            shown: path.clone(),
            local: path,
        }
    }
}

/// The names of a schema's columns, in order.
pub fn column_names(schema: &datafusion::arrow::datatypes::Schema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// Load every file of a table's local source into Arrow (`allow_empty`: see [`load_files`]).
pub fn load(
    table: &str,
    pattern: &str,
    selection: FileSelection,
    options: &SourceOptions,
    allow_empty: bool,
    progress: &dyn LoadProgress,
) -> Result<LoadedSource> {
    if crate::cloud::is_url(pattern) {
        return Err(Error::Usage {
            message: format!(
                "table {table}: {pattern} is read by `tidemark run`; here only local files are supported"
            ),
        });
    }
    let mut spool = None;
    let files: Vec<FileToRead> = resolve_files(table, pattern, selection)?
        .into_iter()
        .map(|path| {
            if is_stream(&path) {
                spool_stream(path, &mut spool)
            } else {
                Ok(FileToRead::local(path))
            }
        })
        .collect::<Result<_>>()?;
    load_files(&files, options, allow_empty, progress)
}

/// Whether `path` is a pipe or a device (`/dev/stdin`, a FIFO a producer writes into): read once,
/// front to back, with no size known before.
pub fn is_stream(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| {
        let kind = m.file_type();
        kind.is_fifo() || kind.is_char_device() || kind.is_socket()
    })
}

/// Copy a stream into a temporary file (in `spool`, made on first use) so that every reader can
/// read it as a file: in pieces on several threads, or twice. The copy keeps the stream's name
/// in messages, and its extension, which tells the Excel reader the workbook's kind.
fn spool_stream(path: PathBuf, spool: &mut Option<tempfile::TempDir>) -> Result<FileToRead> {
    if spool.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-stream-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        *spool = Some(dir);
    }
    let dir = spool.as_ref().expect("made above").path();
    let name = path.extension().map_or_else(
        || "stream".to_string(),
        |ext| format!("stream.{}", ext.to_string_lossy()),
    );
    let local = dir.join(name);
    let mut from = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut to = std::fs::File::create(&local).map_err(|e| Error::io(&local, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| Error::io(&path, e))?;
    Ok(FileToRead { local, shown: path })
}

/// Load these files into Arrow, one table. A header with no data rows is an error (a truncated
/// export would otherwise delete every row) unless `allow_empty` (an increment may be empty).
pub fn load_files(
    to_read: &[FileToRead],
    options: &SourceOptions,
    allow_empty: bool,
    progress: &dyn LoadProgress,
) -> Result<LoadedSource> {
    let paths: Vec<PathBuf> = to_read.iter().map(|f| f.shown.clone()).collect();
    let mut batches = Vec::with_capacity(paths.len());
    let mut files = Vec::with_capacity(paths.len());
    let mut rows = RowLocator {
        segments: Vec::new(),
        through: None,
    };
    let mut cell_errors = Vec::new();
    let mut offset = 0usize;
    let sizes = to_read
        .iter()
        .map(|file| {
            std::fs::metadata(&file.local)
                .map(|m| m.len())
                .map_err(|e| Error::io(&file.shown, e))
        })
        .collect::<Result<Vec<u64>>>()?;
    progress.total_bytes(sizes.iter().sum());
    for (file, &size) in to_read.iter().zip(&sizes) {
        let path = &file.shown;
        if size == 0 {
            return Err(Error::SourceEmpty { path: path.clone() });
        }
        let read = read_file(&file.local, options, progress)
            .map_err(|e| e.relocated(&file.local, path))?;
        rows.push(offset as u64, path.display().to_string(), read.rows);
        cell_errors.extend(read.cell_errors.into_iter().map(|mut e| {
            e.row += offset;
            e
        }));
        offset += read.batches.iter().map(|b| b.num_rows()).sum::<usize>();
        batches.push(read.batches);
        files.push(SourceFile {
            path: path.display().to_string(),
            size,
        });
    }
    if !allow_empty && batches.iter().flatten().all(|b| b.num_rows() == 0) {
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
        .flat_map(|(file, p)| file.into_iter().map(move |b| (b, p)))
        .map(|(b, p)| types::conform(&b, &schema, p))
        .collect::<Result<Vec<_>>>()?;
    Ok(LoadedSource {
        schema,
        batches,
        files,
        rows,
        cell_errors,
    })
}

/// With `files: all`, every file must have the same columns; types widen to the first file's.
fn unify_schemas(paths: &[PathBuf], files: &[Vec<RecordBatch>]) -> Result<SchemaRef> {
    let first = files[0][0].schema();
    for (batches, path) in files.iter().zip(paths).skip(1) {
        let names: Vec<&String> = batches[0]
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
