//! Sinks: delta files in CSV, Parquet or JSON lines, chosen by extension, written to a temporary
//! name and renamed into place so a consumer never reads half a file; and the Parquet encoding
//! the store uses for snapshots and change rows.

pub mod background;
pub mod shape;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::WriterBuilder;
use datafusion::arrow::json::writer::LineDelimited;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::PutPayload;

use crate::engine;
use crate::error::{Error, Result};
use crate::source::SourceFormat;

/// Fill an output path template: `{table}`, `{version}`, `{timestamp}` (UTC, file-name safe,
/// `2024-01-15T10-00-00Z`) and `{date}` (`2024-01-15`).
pub fn render_path(template: &str, table: &str, version: u64, now: DateTime<Utc>) -> String {
    template
        .replace("{table}", table)
        .replace("{version}", &version.to_string())
        .replace("{timestamp}", &now.format("%Y-%m-%dT%H-%M-%SZ").to_string())
        .replace("{date}", &now.format("%Y-%m-%d").to_string())
}

/// The placeholders output path templates understand.
pub const PLACEHOLDERS: [&str; 4] = ["{table}", "{version}", "{timestamp}", "{date}"];

/// Encode batches as one Parquet file (LZ4, row groups of 1M rows), in chunks ready to store.
pub fn encode_parquet(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<PutPayload> {
    encode_parquet_unless(schema, batches, &AtomicBool::new(false))
}

/// [`encode_parquet`], given up (with an error) soon after `cancelled` is set: a run that
/// failed while its snapshot was being encoded on the side does not wait for the encoding.
pub fn encode_parquet_unless(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    cancelled: &AtomicBool,
) -> Result<PutPayload> {
    let props = snapshot_properties(schema.fields().len());
    if schema.fields().iter().any(|f| f.data_type().is_nested()) {
        // A nested column has several leaves: the plain writer lays them out.
        let mut out = Chunks::default();
        write_parquet(&mut out, schema, batches, Some(props))?;
        return Ok(out.finish());
    }
    encode_parquet_in_parallel(schema, batches, props, cancelled)
}

/// The widest table whose columns are written with dictionaries (see [`snapshot_properties`]).
const MAX_DICTIONARY_COLUMNS: usize = 1000;

/// How snapshots and change rows are written: LZ4 (`LZ4_RAW`, which DuckDB, pyarrow, Polars
/// and DataFusion read), row groups of at most [`ROW_GROUP_ROWS`]. zstd level 1 made the files about
/// two thirds the size, but compressing with it was an eighth of a 10M-row run's CPU and the
/// run took a tenth longer; LZ4 also decompresses faster when the next run reads old rows.
/// A table of more than [`MAX_DICTIONARY_COLUMNS`] columns is written without dictionaries:
/// each column's dictionary encoder holds about 140 KB however few its rows (10,000 columns of
/// 20 rows took 1.6 GB with them, 250 MB without).
fn snapshot_properties(columns: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_dictionary_enabled(columns <= MAX_DICTIONARY_COLUMNS)
        .set_compression(Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Row hashes are random: a dictionary or compression only spends time on them.
        .set_column_dictionary_enabled(ROW_HASH.into(), false)
        .set_column_compression(ROW_HASH.into(), Compression::UNCOMPRESSED)
        .build()
}

/// The columns of a Parquet file (a baseline) whose values were written without a dictionary:
/// one it gave up on (more distinct values than a dictionary page holds: keys, barcodes,
/// descriptions), or none was tried. Writing the next version of such a column with a
/// dictionary again would hash every value into one only to give up, and the dictionary page
/// it leaves costs more than it saves: at 10M rows, leaving out the dictionaries of the three
/// such columns of the benchmark saved a twentieth of the run's CPU and made the file 5%
/// smaller. Decided by the row groups holding most of the rows, from what the file's page
/// statistics tell: a column without them keeps its dictionary.
pub fn columns_without_dictionary(
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
) -> Vec<String> {
    use datafusion::parquet::basic::Encoding;
    let schema = metadata.file_metadata().schema_descr();
    (0..schema.num_columns())
        .filter(|&c| {
            // The encodings of the chunk's data pages.
            let plain_pages = |pages: &datafusion::parquet::basic::EncodingMask| {
                pages
                    .encodings()
                    .any(|e| !matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
            };
            // Most rows, not every group: a small last group may fit its dictionary.
            let rows_in_plain: i64 = metadata
                .row_groups()
                .iter()
                .filter(|group| {
                    group
                        .column(c)
                        .page_encoding_stats_mask()
                        .is_some_and(plain_pages)
                })
                .map(|group| group.num_rows())
                .sum();
            rows_in_plain > metadata.file_metadata().num_rows() / 2
        })
        .map(|c| schema.column(c).path().string())
        .collect()
}

/// A Parquet file written a row group at a time as a snapshot streams in: any thread encodes
/// a group ([`GroupEncoder::encode`]), the file's owner appends the groups in order
/// ([`StreamedParquetFile::append`]). The file is the one [`encode_parquet`] writes (Arrow
/// schema included), with a row group per piece.
///
/// `plain` names columns written without a dictionary (see [`columns_without_dictionary`]).
pub fn streamed_parquet<W: Write + Send>(
    file: W,
    schema: &SchemaRef,
    plain: &[String],
) -> Result<(GroupEncoder, StreamedParquetFile<W>)> {
    use datafusion::parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory;
    use datafusion::parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
    use datafusion::parquet::file::writer::SerializedFileWriter;
    if schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Err(engine::error(
            "writing Parquet",
            datafusion::error::DataFusionError::NotImplemented(
                "a nested column in a streamed snapshot".into(),
            ),
        ));
    }
    let mut props = plain
        .iter()
        .fold(
            snapshot_properties(schema.fields().len()).into_builder(),
            |props, column| props.set_column_dictionary_enabled(column.as_str().into(), false),
        )
        .build();
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .map_err(parquet_error)?;
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let writer = SerializedFileWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        parquet_schema.root_schema_ptr(),
        Arc::new(props),
    )
    .map_err(parquet_error)?;
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    Ok((
        GroupEncoder {
            factory,
            schema: schema.clone(),
        },
        StreamedParquetFile { writer },
    ))
}

fn parquet_error(e: datafusion::parquet::errors::ParquetError) -> Error {
    engine::error("writing Parquet", e.into())
}

/// Encodes row groups of a [`streamed_parquet`] file; shared by the threads that do.
pub struct GroupEncoder {
    factory: datafusion::parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory,
    schema: SchemaRef,
}

/// A row group encoded, its column chunks in order, waiting to be appended.
pub struct EncodedGroup(Vec<datafusion::parquet::arrow::arrow_writer::ArrowColumnChunk>);

impl GroupEncoder {
    /// Encode `batches` (of the file's schema) as a row group, column by column on this
    /// thread.
    pub fn encode(&self, batches: &[RecordBatch]) -> Result<EncodedGroup> {
        use datafusion::parquet::arrow::arrow_writer::compute_leaves;
        // The group's ordinal serves only encryption, which snapshots do not use.
        let writers = self
            .factory
            .create_column_writers(0)
            .map_err(parquet_error)?;
        let chunks = writers
            .into_iter()
            .enumerate()
            .map(|(i, mut column_writer)| {
                let field = self.schema.field(i);
                for batch in batches {
                    for leaf in compute_leaves(field, batch.column(i))? {
                        column_writer.write(&leaf)?;
                    }
                }
                column_writer.close()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(parquet_error)?;
        Ok(EncodedGroup(chunks))
    }
}

/// The file of a [`streamed_parquet`], taking row groups in order.
pub struct StreamedParquetFile<W: Write + Send> {
    writer: datafusion::parquet::file::writer::SerializedFileWriter<std::io::BufWriter<W>>,
}

impl<W: Write + Send> StreamedParquetFile<W> {
    /// Append the next row group.
    pub fn append(&mut self, group: EncodedGroup) -> Result<()> {
        let mut row_group = self.writer.next_row_group().map_err(parquet_error)?;
        for chunk in group.0 {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(parquet_error)?;
        }
        row_group.close().map_err(parquet_error)?;
        Ok(())
    }

    /// Write the footer and flush the file.
    pub fn finish(self) -> Result<W> {
        let out = self.writer.into_inner().map_err(parquet_error)?;
        out.into_inner()
            .map_err(|e| engine::error("writing Parquet", std::io::Error::from(e).into()))
    }
}

/// Bytes written as a list of chunks, each allocated at its final size: a file of hundreds of
/// MB grows without being copied, and without the unused space a doubling buffer keeps (up to
/// half of it). Chunks start small, so that small files stay small.
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    current: Vec<u8>,
    written: usize,
}

impl Chunks {
    const LARGEST: usize = 8 << 20;

    fn finish(mut self) -> PutPayload {
        if !self.current.is_empty() {
            self.done.push(Bytes::from(self.current));
        }
        self.done.into_iter().collect()
    }
}

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.len() == self.current.capacity() {
                let size = self.written.clamp(64 << 10, Self::LARGEST);
                let full = std::mem::replace(&mut self.current, Vec::with_capacity(size));
                if !full.is_empty() {
                    self.done.push(Bytes::from(full));
                }
            }
            let take = rest.len().min(self.current.capacity() - self.current.len());
            self.current.extend_from_slice(&rest[..take]);
            self.written += take;
            rest = &rest[take..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The row hash column of snapshots (`diff::row_hash::ROW_HASH_COLUMN`).
const ROW_HASH: &str = crate::diff::row_hash::ROW_HASH_COLUMN;

/// Rows per row group of a snapshot.
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Encode with one thread per core, each encoding whole columns of a row group (the encoding
/// and compression of a column chunk is independent of the others): the snapshot write of a
/// run takes a fraction of the single-threaded time. The file is the one `ArrowWriter` writes,
/// Arrow schema included.
fn encode_parquet_in_parallel(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    mut props: WriterProperties,
    cancelled: &AtomicBool,
) -> Result<PutPayload> {
    use datafusion::parquet::arrow::arrow_writer::{
        ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves,
    };
    use datafusion::parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
    use datafusion::parquet::file::writer::SerializedFileWriter;
    let fail =
        |e: datafusion::parquet::errors::ParquetError| engine::error("writing Parquet", e.into());
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .map_err(fail)?;
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let props = Arc::new(props);
    let mut out = Chunks::default();
    let mut writer =
        SerializedFileWriter::new(&mut out, parquet_schema.root_schema_ptr(), props.clone())
            .map_err(fail)?;
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    // Row groups: slices of the batches of at most ROW_GROUP_ROWS rows.
    let mut groups: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut in_group = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if in_group == ROW_GROUP_ROWS {
                groups.push(Vec::new());
                in_group = 0;
            }
            let take = (batch.num_rows() - offset).min(ROW_GROUP_ROWS - in_group);
            groups
                .last_mut()
                .expect("one group")
                .push(batch.slice(offset, take));
            offset += take;
            in_group += take;
        }
    }
    for (index, group) in groups.iter().enumerate() {
        let writers = factory.create_column_writers(index).map_err(fail)?;
        // Leaf column i of the schema is column i here: snapshots hold no nested types. Each
        // thread takes the next column not yet encoded, so a long text column does not leave
        // the other cores idle.
        let mut chunks: Vec<(usize, ArrowColumnChunk)> = crate::parallel::map_into(
            writers.into_iter().enumerate().collect(),
            |(i, mut column_writer)| {
                if cancelled.load(Ordering::Relaxed) {
                    return Err(datafusion::parquet::errors::ParquetError::General(
                        "cancelled: the run failed".into(),
                    ));
                }
                let field = schema.field(i);
                for batch in group {
                    for leaf in compute_leaves(field, batch.column(i))? {
                        column_writer.write(&leaf)?;
                    }
                }
                Ok((i, column_writer.close()?))
            },
        )
        .into_iter()
        .collect::<std::result::Result<_, datafusion::parquet::errors::ParquetError>>()
        .map_err(fail)?;
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = writer.next_row_group().map_err(fail)?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut row_group).map_err(fail)?;
        }
        row_group.close().map_err(fail)?;
    }
    writer.close().map_err(fail)?;
    Ok(out.finish())
}

fn write_parquet(
    w: impl Write + Send,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: Option<WriterProperties>,
) -> Result<()> {
    let fail =
        |e: datafusion::parquet::errors::ParquetError| engine::error("writing Parquet", e.into());
    let mut writer = ArrowWriter::try_new(w, schema.clone(), props).map_err(fail)?;
    for batch in batches {
        writer.write(batch).map_err(fail)?;
    }
    writer.close().map_err(fail)?;
    Ok(())
}

/// Write batches to `w` in `format` (the header is written even when there are no rows).
pub fn write_to(
    w: impl Write + Send,
    format: SourceFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let fail =
        |e: datafusion::arrow::error::ArrowError| engine::error("writing the delta", e.into());
    match format {
        SourceFormat::Csv => {
            let mut w = w;
            CsvWriterBuilder::new()
                .with_header(true)
                .build(&mut w)
                .write(&RecordBatch::new_empty(schema.clone()))
                .map_err(fail)?;
            write_formatted(w, batches, |batch, out| {
                CsvWriterBuilder::new()
                    .with_header(false)
                    .build(out)
                    .write(batch)
            })?;
        }
        SourceFormat::Json => {
            // Explicit nulls: a consumer must see that a field is empty, not that it is missing.
            write_formatted(w, batches, |batch, out| {
                let mut writer = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(out);
                writer.write(batch)?;
                writer.finish()
            })?;
        }
        SourceFormat::Parquet => write_parquet(w, schema, batches, None)?,
        SourceFormat::Excel => {
            return Err(Error::Usage {
                message:
                    "deltas are written as .csv, .parquet or .json; Excel output is not supported"
                        .into(),
            });
        }
    }
    Ok(())
}

/// Write `batches` to `w`, each formatted to text by `format` (rows only: a record never
/// depends on the records before it), a few batches per core at a time, in order.
fn write_formatted(
    mut w: impl Write,
    batches: &[RecordBatch],
    format: impl Fn(&RecordBatch, &mut Vec<u8>) -> std::result::Result<(), ArrowError> + Sync,
) -> Result<()> {
    for window in batches.chunks(2 * crate::parallel::cores()) {
        for text in crate::parallel::map(window, |batch| {
            let mut out = Vec::new();
            format(batch, &mut out).map(|()| out)
        }) {
            let text = text.map_err(|e| engine::error("writing the delta", e.into()))?;
            w.write_all(&text)
                .map_err(|e| engine::error("writing the delta", ArrowError::from(e).into()))?;
        }
    }
    Ok(())
}

/// Write a file by its extension to a local path or an `s3://` URL (one PUT, which S3 makes
/// visible whole); returns where it went.
pub async fn write_location(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<String> {
    prepare_location(path, schema, batches)?.publish().await
}

/// Refuse a local file that could not be written in its place, before anything runs: a
/// folder of that name, or a folder that cannot be created or written (tried with a temporary
/// file). A run must fail before its commit, not after it with its delta lost. URLs pass.
pub fn check_writable(path: &Path, example: &str) -> Result<()> {
    if crate::cloud::is_url(&path.display().to_string()) {
        return Ok(());
    }
    if path.is_dir() {
        return Err(Error::Usage {
            message: format!(
                "{}: is a folder, not a file: name the file to write (e.g. {}/{example}).",
                path.display(),
                path.display()
            ),
        });
    }
    // The nearest folder that exists: the run creates the rest, so it must be a folder that
    // can be written (nothing is created here).
    let mut dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    while !dir.exists()
        && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
    {
        dir = parent;
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Usage {
            message: format!(
                "{}: {} is a file, not a folder: the file cannot be written there.",
                path.display(),
                dir.display()
            ),
        });
    }
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| Error::io(dir, e))
}

/// A delta file written but not yet in its place (see [`prepare_location`]).
pub struct PreparedOutput {
    location: String,
    waiting: Waiting,
}

enum Waiting {
    /// A local file under a temporary name beside its place, removed if never published.
    File(tempfile::TempPath, PathBuf),
    /// The bytes of a file for a bucket.
    Bytes(Vec<u8>),
}

/// Write a file by its extension to a local path or an `s3://` URL, all but the last step:
/// a local file is written (and synced) under a temporary name beside its place, a bucket's
/// file is encoded in memory. [`PreparedOutput::publish`] puts it in its place; dropped
/// unpublished, nothing of it remains.
pub fn prepare_location(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<PreparedOutput> {
    let location = path.display().to_string();
    let format = format_of(path)?;
    check_writable(path, "delta.csv")?;
    if crate::cloud::is_url(&location) {
        let mut bytes = Vec::new();
        write_to(&mut bytes, format, schema, batches)?;
        return Ok(PreparedOutput {
            location,
            waiting: Waiting::Bytes(bytes),
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    // Removed on any failure below, and whenever the output is dropped unpublished.
    let temp = tempfile::TempPath::try_from_path(&temp).map_err(|e| Error::io(&temp, e))?;
    let mut buffered = std::io::BufWriter::new(file);
    write_to(&mut buffered, format, schema, batches)?;
    buffered.flush().map_err(|e| Error::io(&temp, e))?;
    buffered
        .get_ref()
        .sync_all()
        .map_err(|e| Error::io(&temp, e))?;
    Ok(PreparedOutput {
        location,
        waiting: Waiting::File(temp, path.to_path_buf()),
    })
}

impl PreparedOutput {
    /// Put the file in its place: rename the local file (replacing a file of that name), or
    /// upload the bucket's in one PUT. Returns where it went.
    pub async fn publish(self) -> Result<String> {
        self.publish_unless_taken(None).await
    }

    /// [`publish`](Self::publish), except that a local file whose place holds a file of other
    /// bytes goes to `elsewhere` when given: a place holding these very bytes is this file,
    /// put there before (by a delivery that did not get to record it).
    pub async fn publish_unless_taken(self, elsewhere: Option<PathBuf>) -> Result<String> {
        match self.waiting {
            Waiting::File(temp, path) => {
                let path = match elsewhere {
                    Some(other) if path.exists() && !same_bytes(&temp, &path)? => other,
                    _ => path,
                };
                temp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
                Ok(path.display().to_string())
            }
            Waiting::Bytes(bytes) => {
                crate::cloud::put(&self.location, bytes.into()).await?;
                Ok(self.location)
            }
        }
    }
}

/// Whether two local files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| Error::io(p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let size =
        |f: &std::fs::File, p: &Path| f.metadata().map(|m| m.len()).map_err(|e| Error::io(p, e));
    if size(&fa, a)? != size(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).map_err(|e| Error::io(a, e))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| Error::io(b, e))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The format a file is written in, by its extension.
fn format_of(path: &Path) -> Result<SourceFormat> {
    SourceFormat::from_extension(&path.to_string_lossy()).ok_or_else(|| Error::Usage {
        message: format!(
            "{}: the output format follows the extension: use .csv, .parquet or .json",
            path.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column of unique texts outgrows its dictionary and is named; a column of few values
    /// is not; neither is a file without page statistics' say (an empty one).
    #[test]
    fn columns_whose_dictionary_gave_up_are_named() {
        use datafusion::arrow::array::{ArrayRef, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let rows = 200_000;
        let unique: StringArray = (0..rows).map(|i| Some(format!("SKU-{i:012}"))).collect();
        let few: StringArray = (0..rows).map(|i| Some(["a", "b", "c"][i % 3])).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("sku", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(unique) as ArrayRef, Arc::new(few) as ArrayRef],
        )
        .unwrap();
        let read = |batches: &[RecordBatch]| {
            let bytes: Bytes = encode_parquet(&schema, batches)
                .unwrap()
                .into_iter()
                .flatten()
                .collect();
            let reader = SerializedFileReader::new(bytes).unwrap();
            columns_without_dictionary(reader.metadata())
        };
        assert_eq!(read(std::slice::from_ref(&batch)), vec!["sku".to_string()]);
        assert!(read(&[batch.slice(0, 0)]).is_empty());
    }

    /// Snapshots are LZ4 (`LZ4_RAW`), their random row hashes stored as they are.
    #[test]
    fn snapshot_columns_are_lz4_but_the_row_hash() {
        use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let names: StringArray = (0..1000).map(|i| Some(format!("item {}", i % 7))).collect();
        let hashes = UInt64Array::from_iter_values(
            (0..1000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let batch = RecordBatch::try_from_iter([
            ("name", Arc::new(names) as ArrayRef),
            (ROW_HASH, Arc::new(hashes) as ArrayRef),
        ])
        .unwrap();
        let bytes: Bytes = encode_parquet(&batch.schema(), &[batch])
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let group = reader.metadata().row_group(0);
        assert_eq!(group.column(0).compression(), Compression::LZ4_RAW);
        assert_eq!(group.column(1).compression(), Compression::UNCOMPRESSED);
    }

    #[test]
    fn text_formatted_a_batch_per_core_is_the_text_of_one_writer() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
        let batches: Vec<RecordBatch> = (0..23i64)
            .map(|b| {
                let ids: Vec<i64> = (0..100).map(|i| b * 100 + i).collect();
                let notes: Vec<Option<String>> = ids
                    .iter()
                    .map(|i| (i % 5 != 0).then(|| format!("note \"{i}\", with comma")))
                    .collect();
                RecordBatch::try_from_iter([
                    ("id", std::sync::Arc::new(Int64Array::from(ids)) as ArrayRef),
                    (
                        "note",
                        std::sync::Arc::new(StringArray::from(notes)) as ArrayRef,
                    ),
                ])
                .unwrap()
            })
            .collect();
        let schema = batches[0].schema();
        let mut one_writer = Vec::new();
        let mut csv = CsvWriterBuilder::new()
            .with_header(true)
            .build(&mut one_writer);
        for batch in &batches {
            csv.write(batch).unwrap();
        }
        drop(csv);
        let mut parallel = Vec::new();
        write_to(&mut parallel, SourceFormat::Csv, &schema, &batches).unwrap();
        assert_eq!(
            String::from_utf8(parallel).unwrap(),
            String::from_utf8(one_writer).unwrap()
        );

        let mut one_writer = Vec::new();
        let mut json = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut one_writer);
        for batch in &batches {
            json.write(batch).unwrap();
        }
        json.finish().unwrap();
        drop(json);
        let mut parallel = Vec::new();
        write_to(&mut parallel, SourceFormat::Json, &schema, &batches).unwrap();
        assert_eq!(
            String::from_utf8(parallel).unwrap(),
            String::from_utf8(one_writer).unwrap()
        );
    }

    #[test]
    fn chunks_hold_every_byte_in_order_and_grow_to_their_largest_size() {
        let mut out = Chunks::default();
        let mut expected = Vec::new();
        let mut n = 0u32;
        while expected.len() < 20 << 20 {
            // Writes of odd sizes, some larger than a chunk.
            let size = if n.is_multiple_of(97) {
                9 << 20
            } else {
                1 + (n as usize * 7919) % 70_000
            };
            let piece: Vec<u8> = (0..size).map(|i| (i as u32 ^ n) as u8).collect();
            out.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
            n += 1;
        }
        let payload = out.finish();
        assert_eq!(payload.content_length(), expected.len());
        let chunks: Vec<&Bytes> = payload.iter().collect();
        assert!(chunks.iter().all(|c| c.len() <= Chunks::LARGEST));
        assert!(chunks.len() > 2);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, expected);
        assert_eq!(Chunks::default().finish().content_length(), 0);
    }
}
