//! Classification by matching row positions, without a join over full rows.
//!
//! The SQL classification (`sql/classify.sql`) joins the two sides' keys and hashes, and the
//! delta query then joins the classified keys with *every* row of the new snapshot and of the
//! baseline to fetch their values: at 10M rows that second join reads and hashes the whole
//! baseline, all columns, to keep 6% of it. Here each side's keys are reduced to entries of
//! (key digest, row hash, row position), sorted on every core and walked together. What comes
//! out are positions: the few rows a delta needs are then taken from the snapshot in memory and
//! read from the baseline's Parquet file by row selection, and the delta is built from them
//! alone ([`super::delta`]).
//!
//! Keys are matched by a 96-bit digest (xxh3-128 of the key's row encoding, which is exact per
//! type). A repeated digest on one side (two keys, or one key twice) is never guessed at:
//! [`match_positions`] says so and the caller falls back to the SQL join. The caller also
//! checks that each CHANGED pair names one key on both sides
//! ([`super::delta::Pairs::changed_keys_agree`]): a NEW key and a DELETED key that shared a
//! digest would be paired as one CHANGED key, and the check tells. What no check sees is two different keys sharing a digest *and* a
//! row hash, which would pass for one unchanged key: with 10M keys a side, about one run in
//! 10^14 (the row hash alone already decides CHANGED by 64 bits).

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use datafusion::parquet::file::metadata::PageIndexPolicy;
use std::ops::Range;
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed};

use crate::engine;
use crate::error::{Error, Result};

/// Bits of the digest that choose an entry's part; parts are sorted and matched one per core.
const PART_BITS: u32 = 6;
const PARTS: usize = 1 << PART_BITS;

/// One row of one side: where it is, its key's digest and its row hash.
#[derive(Debug, Clone, Copy)]
struct Entry {
    digest_high: u64,
    row_hash: u64,
    digest_low: u32,
    position: u32,
}

impl Entry {
    fn digest(&self) -> (u64, u32) {
        (self.digest_high, self.digest_low)
    }
}

/// A side's entries, split into [`PARTS`] by the digest's top bits.
type Parts = Vec<Vec<Entry>>;

/// Where the snapshot's and the baseline's rows differ, by 0-based row position.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Snapshot rows whose key the baseline lacks, ascending.
    pub new: Vec<u32>,
    /// (snapshot row, baseline row) of one key whose row hashes differ, ascending.
    pub changed: Vec<(u32, u32)>,
    /// Baseline rows whose key the snapshot lacks, ascending.
    pub deleted: Vec<u32>,
    /// Keys on both sides with equal row hashes.
    pub unchanged: u64,
}

impl Matched {
    /// The snapshot rows a delta needs (NEW and CHANGED), ascending.
    pub fn snapshot_rows(&self) -> Vec<u32> {
        ascending(self.new.iter().copied(), &self.changed, |&(new, _)| new)
    }

    /// The baseline rows a delta needs (CHANGED and DELETED), ascending.
    pub fn baseline_rows(&self) -> Vec<u32> {
        ascending(self.deleted.iter().copied(), &self.changed, |&(_, old)| old)
    }
}

/// The rows of one side only and that side's rows of the CHANGED pairs, ascending.
fn ascending(
    one_side: impl Iterator<Item = u32>,
    changed: &[(u32, u32)],
    side: impl Fn(&(u32, u32)) -> u32,
) -> Vec<u32> {
    let mut rows: Vec<u32> = one_side.chain(changed.iter().map(side)).collect();
    rows.sort_unstable();
    rows
}

impl std::fmt::Display for Matched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new, {} changed, {} deleted",
            self.new.len(),
            self.changed.len(),
            self.deleted.len()
        )
    }
}

/// Whether keys of these types can be matched here: types whose row encoding is equal exactly
/// when the SQL join calls the values equal (floats are not: `-0.0 = 0.0`).
pub fn key_types_supported(types: &[&DataType]) -> bool {
    types.iter().all(|t| {
        matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal128(_, _)
        )
    })
}

/// Key columns as the digest reads them: every string encoding as `Utf8`, so that a CSV
/// snapshot and a Parquet baseline encode one value alike.
fn digestible(columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| match c.data_type() {
            DataType::LargeUtf8 | DataType::Utf8View => {
                cast(c, &DataType::Utf8).map_err(|e| engine::error("matching keys", e.into()))
            }
            _ => Ok(c.clone()),
        })
        .collect()
}

fn converter(columns: &[ArrayRef]) -> Result<RowConverter> {
    RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| engine::error("matching keys", e.into()))
}

/// Call `found(row, digest)` for each row of `batch`, its key's digest read from the `key`
/// columns.
fn each_digest(
    batch: &RecordBatch,
    key: &[usize],
    mut found: impl FnMut(usize, u128),
) -> Result<()> {
    let columns = digestible(
        &key.iter()
            .map(|&i| batch.column(i).clone())
            .collect::<Vec<_>>(),
    )?;
    match columns.as_slice() {
        // The common key, one text column: its bytes are its encoding (null, which a key
        // never is, apart).
        [text] if text.data_type() == &DataType::Utf8 => {
            let null = xxh3_128_with_seed(b"", 0x6e75_6c6c);
            for (i, value) in text.as_string::<i32>().iter().enumerate() {
                found(i, value.map_or(null, |v| xxh3_128(v.as_bytes())));
            }
        }
        _ => {
            let rows = converter(&columns)?
                .convert_columns(&columns)
                .map_err(|e| engine::error("matching keys", e.into()))?;
            for (i, row) in rows.iter().enumerate() {
                found(i, xxh3_128(row.as_ref()));
            }
        }
    }
    Ok(())
}

/// The row hash column of a batch.
fn row_hashes(batch: &RecordBatch, hash: usize) -> Result<&datafusion::arrow::array::UInt64Array> {
    batch
        .column(hash)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| internal("the row hash column is not UInt64"))
}

/// An entry's parts of a 128-bit digest: the high 64 bits and 32 of the low.
fn split_digest(digest: u128) -> (u64, u32) {
    ((digest >> 64) as u64, digest as u32)
}

/// Entries of one batch whose first row is at `first`, split into parts.
fn batch_entries(batch: &RecordBatch, key: &[usize], hash: usize, first: u64) -> Result<Parts> {
    let hashes = row_hashes(batch, hash)?;
    let mut parts: Parts = vec![Vec::new(); PARTS];
    each_digest(batch, key, |i, digest| {
        let (digest_high, digest_low) = split_digest(digest);
        let entry = Entry {
            digest_high,
            digest_low,
            row_hash: hashes.value(i),
            position: (first + i as u64) as u32,
        };
        parts[(entry.digest_high >> (64 - PART_BITS)) as usize].push(entry);
    })?;
    Ok(parts)
}

/// A side's entries gathered into one list per part as the batches are done, each list sized
/// up front (digests spread evenly), so that a side's entries take their size in memory once,
/// not once per batch and again gathered.
struct Gathered {
    parts: Parts,
}

impl Gathered {
    fn new(rows: u64) -> Self {
        let each = (rows as usize / PARTS) + (rows as usize / PARTS / 16) + 64;
        Gathered {
            parts: (0..PARTS).map(|_| Vec::with_capacity(each)).collect(),
        }
    }

    fn add(&mut self, piece: Parts) {
        for (part, entries) in self.parts.iter_mut().zip(piece) {
            part.extend_from_slice(&entries);
        }
    }

    /// The lists, each sorted by digest on its own core.
    fn sorted(self) -> Parts {
        crate::parallel::map_into(self.parts, |mut part| {
            part.sort_unstable_by_key(Entry::digest);
            part
        })
    }
}

/// The entries of batches held in memory; positions count rows across the batches.
fn memory_entries(batches: &[RecordBatch], key: &[usize], hash: usize) -> Result<Parts> {
    let mut items = Vec::with_capacity(batches.len());
    let mut first = 0u64;
    for batch in batches {
        items.push((batch, first));
        first += batch.num_rows() as u64;
    }
    let mut gathered = Gathered::new(first);
    // A few batches per core at a time: their entries are gathered before the next are made.
    for window in items.chunks(2 * crate::parallel::cores()) {
        for piece in crate::parallel::map(window, |(batch, first)| {
            batch_entries(batch, key, hash, *first)
        }) {
            gathered.add(piece?);
        }
    }
    Ok(gathered.sorted())
}

/// A Parquet file to read rows of: its metadata (with the page index, so that a row selection
/// skips whole pages) and where each row group starts.
pub struct ParquetRows {
    /// Opened once per reading thread: a cloned handle would share one file position.
    file: crate::store::LocalFile,
    path: String,
    metadata: ArrowReaderMetadata,
    group_starts: Vec<u64>,
}

impl ParquetRows {
    /// Open `file` (named `path` in messages).
    pub fn open(file: crate::store::LocalFile, path: &str) -> Result<Self> {
        let opened = std::fs::File::open(&file.path).map_err(|e| Error::io(&file.path, e))?;
        let metadata = ArrowReaderMetadata::load(
            &opened,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(|e| parquet_error(path, e))?;
        let mut group_starts = Vec::new();
        let mut start = 0u64;
        for group in metadata.metadata().row_groups() {
            group_starts.push(start);
            start += group.num_rows() as u64;
        }
        group_starts.push(start);
        Ok(ParquetRows {
            file,
            path: path.to_string(),
            metadata,
            group_starts,
        })
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        *self
            .group_starts
            .last()
            .expect("one start per group, and the end")
    }

    /// Index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.metadata.schema().index_of(name).ok()
    }

    /// The entries of every row, by the names of the `key` columns and the row hash column
    /// `hash` (see `entries`).
    fn key_entries(&self, key: &[String], hash: &str) -> Result<Parts> {
        let missing = |name: &str| internal(format!("the baseline lacks column {name}"));
        let key = key
            .iter()
            .map(|k| self.column(k).ok_or_else(|| missing(k)))
            .collect::<Result<Vec<_>>>()?;
        let hash = self.column(hash).ok_or_else(|| missing(hash))?;
        self.entries(&key, hash)
    }

    /// The file's Parquet metadata.
    pub fn parquet_metadata(&self) -> &datafusion::parquet::file::metadata::ParquetMetaData {
        self.metadata.metadata()
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        self.metadata.schema().clone()
    }

    /// Read row group `group`'s `columns` (all when `None`), only the rows of `selection`
    /// (positions within the group) when given.
    fn read_group(
        &self,
        group: usize,
        columns: Option<&[usize]>,
        selection: Option<RowSelection>,
    ) -> Result<Vec<RecordBatch>> {
        let file =
            std::fs::File::open(&self.file.path).map_err(|e| Error::io(&self.file.path, e))?;
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                .with_row_groups(vec![group]);
        let width = columns.map_or_else(
            || {
                self.metadata
                    .metadata()
                    .file_metadata()
                    .schema_descr()
                    .num_columns()
            },
            <[usize]>::len,
        );
        builder = builder.with_batch_size(crate::source::batch_rows(width));
        if let Some(columns) = columns {
            let mask = ProjectionMask::roots(
                self.metadata.metadata().file_metadata().schema_descr(),
                columns.iter().copied(),
            );
            builder = builder.with_projection(mask);
        }
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        builder
            .build()
            .map_err(|e| parquet_error(&self.path, e))?
            .map(|batch| batch.map_err(|e| parquet_error(&self.path, e.into())))
            .collect()
    }

    /// The rows at `positions` (ascending, 0-based in the file), all columns, in that order;
    /// row groups are read on every core.
    pub fn take(&self, positions: &[u32]) -> Result<Vec<RecordBatch>> {
        let groups: Vec<(usize, Range<usize>)> = (0..self.group_starts.len() - 1)
            .filter_map(|g| {
                let (start, end) = (self.group_starts[g], self.group_starts[g + 1]);
                let from = positions.partition_point(|&p| (p as u64) < start);
                let to = positions.partition_point(|&p| (p as u64) < end);
                (from < to).then_some((g, from..to))
            })
            .collect();
        // Fewer row groups than cores (a small file is one group): each group's rows are split
        // into runs read on their own, and the page index lets each skip the others' pages.
        let splits = (2 * crate::parallel::cores()).div_ceil(groups.len().max(1));
        let groups: Vec<(usize, Range<usize>)> = groups
            .into_iter()
            .flat_map(|(group, range)| {
                runs(range.len(), splits)
                    .map(move |run| (group, range.start + run.start..range.start + run.end))
            })
            .collect();
        let read = crate::parallel::map(&groups, |(group, range)| {
            let start = self.group_starts[*group];
            let rows = (self.group_starts[group + 1] - start) as usize;
            let selection = RowSelection::from_consecutive_ranges(
                consecutive_ranges(&positions[range.clone()], start),
                rows,
            );
            self.read_group(*group, None, Some(selection))
        });
        let mut batches = Vec::new();
        for group in read {
            batches.extend(group?);
        }
        Ok(batches)
    }

    /// Entries of every row: `key` and `hash` name columns of the file.
    fn entries(&self, key: &[usize], hash: usize) -> Result<Parts> {
        let mut columns: Vec<usize> = key.to_vec();
        columns.push(hash);
        // The projection returns the columns in file order: find each again in the result.
        let mut in_file = columns.clone();
        in_file.sort_unstable();
        in_file.dedup();
        let at = |c: usize| in_file.iter().position(|&f| f == c).expect("projected");
        let (key_at, hash_at): (Vec<usize>, usize) =
            (key.iter().map(|&k| at(k)).collect(), at(hash));
        // Fewer row groups than cores (a file of a million rows is one group): each group is
        // read as that many runs of rows, each skipping the others' pages, so that every core
        // reads.
        let cores = crate::parallel::cores();
        let splits = cores.div_ceil(self.group_starts.len() - 1).max(1);
        let runs: Vec<(usize, Range<usize>)> = (0..self.group_starts.len() - 1)
            .flat_map(|group| {
                let rows = (self.group_starts[group + 1] - self.group_starts[group]) as usize;
                runs(rows, splits).map(move |run| (group, run))
            })
            .collect();
        let mut gathered = Gathered::new(self.rows());
        // A run per core at a time: its entries are gathered before the next are made.
        for window in runs.chunks(cores) {
            let pieces = crate::parallel::map(window, |(group, run)| -> Result<Vec<Parts>> {
                let group_rows =
                    (self.group_starts[group + 1] - self.group_starts[*group]) as usize;
                let selection = (run.len() < group_rows).then(|| {
                    RowSelection::from_consecutive_ranges(std::iter::once(run.clone()), group_rows)
                });
                let mut first = self.group_starts[*group] + run.start as u64;
                let mut pieces = Vec::new();
                for batch in self.read_group(*group, Some(&in_file), selection)? {
                    pieces.push(batch_entries(&batch, &key_at, hash_at, first)?);
                    first += batch.num_rows() as u64;
                }
                Ok(pieces)
            });
            for group in pieces {
                for piece in group? {
                    gathered.add(piece);
                }
            }
        }
        Ok(gathered.sorted())
    }
}

fn internal(message: impl Into<String>) -> Error {
    engine::error(
        "matching keys",
        datafusion::error::DataFusionError::Internal(message.into()),
    )
}

fn parquet_error(path: &str, e: datafusion::parquet::errors::ParquetError) -> Error {
    Error::Store {
        location: path.to_string(),
        message: format!("cannot read the baseline snapshot: {e}. Run `tidemark verify`."),
    }
}

/// `0..len` cut into `splits` runs (fewer when `len` is small), in order.
fn runs(len: usize, splits: usize) -> impl Iterator<Item = Range<usize>> {
    let step = len.div_ceil(splits.max(1)).max(1);
    (0..len)
        .step_by(step)
        .map(move |from| from..(from + step).min(len))
}

/// Ascending positions as ranges relative to `start`.
fn consecutive_ranges(positions: &[u32], start: u64) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *positions.get(i)?;
        let mut last = first;
        i += 1;
        while positions.get(i) == Some(&(last + 1)) {
            last += 1;
            i += 1;
        }
        let offset = |p: u32| (p as u64 - start) as usize;
        Some(offset(first)..offset(last) + 1)
    })
}

/// What one part's walk found.
#[derive(Default)]
struct PartMatch {
    new: Vec<u32>,
    changed: Vec<(u32, u32)>,
    deleted: Vec<u32>,
    unchanged: u64,
    repeated: bool,
}

/// Walk one part of each side, both sorted by digest.
fn match_part(baseline: &[Entry], snapshot: &[Entry]) -> PartMatch {
    let mut out = PartMatch::default();
    let repeats = |side: &[Entry]| side.windows(2).any(|w| w[0].digest() == w[1].digest());
    if repeats(baseline) || repeats(snapshot) {
        out.repeated = true;
        return out;
    }
    let (mut b, mut s) = (0, 0);
    while b < baseline.len() && s < snapshot.len() {
        let (old, new) = (&baseline[b], &snapshot[s]);
        match old.digest().cmp(&new.digest()) {
            std::cmp::Ordering::Less => {
                out.deleted.push(old.position);
                b += 1;
            }
            std::cmp::Ordering::Greater => {
                out.new.push(new.position);
                s += 1;
            }
            std::cmp::Ordering::Equal => {
                if old.row_hash == new.row_hash {
                    out.unchanged += 1;
                } else {
                    out.changed.push((new.position, old.position));
                }
                b += 1;
                s += 1;
            }
        }
    }
    out.deleted.extend(baseline[b..].iter().map(|e| e.position));
    out.new.extend(snapshot[s..].iter().map(|e| e.position));
    out
}

/// Match the snapshot's rows (`snapshot`, each with `key` columns and the row hash column
/// `hash`) with the baseline's (read from `baseline`). `None` when a side repeats a key digest
/// or either side has more rows than positions can name: the SQL join decides then.
pub fn match_positions(
    snapshot: &[RecordBatch],
    key: &[String],
    hash: &str,
    baseline: &ParquetRows,
) -> Result<Option<Matched>> {
    let snapshot_rows: u64 = snapshot.iter().map(|b| b.num_rows() as u64).sum();
    if snapshot_rows > u32::MAX as u64 || baseline.rows() > u32::MAX as u64 {
        return Ok(None);
    }
    let Some(first) = snapshot.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    let index = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| internal(format!("the snapshot lacks column {name}")))
    };
    let snapshot_key = key.iter().map(|k| index(k)).collect::<Result<Vec<_>>>()?;
    let snapshot_hash = index(hash)?;
    let old = baseline.key_entries(key, hash)?;
    let new = memory_entries(snapshot, &snapshot_key, snapshot_hash)?;
    Ok(match_sides(old, new))
}

/// Walk both sides' sorted parts together, a part per core.
fn match_sides(old: Parts, new: Parts) -> Option<Matched> {
    let parts = crate::parallel::map_into(old.into_iter().zip(new).collect(), |(old, new)| {
        match_part(&old, &new)
    });
    if parts.iter().any(|p| p.repeated) {
        return None;
    }
    let mut matched = Matched::default();
    for part in parts {
        matched.new.extend(part.new);
        matched.changed.extend(part.changed);
        matched.deleted.extend(part.deleted);
        matched.unchanged += part.unchanged;
    }
    matched.new.sort_unstable();
    matched.changed.sort_unstable();
    matched.deleted.sort_unstable();
    Some(matched)
}

/// The baseline's entries as an index that a snapshot's rows are looked up in as they stream
/// past, a piece at a time on every core: the snapshot's own entries are never gathered.
/// Each baseline row found is marked; the rows never found are the DELETED ones.
pub struct BaselineIndex {
    /// The entries, sorted by digest, in [`PARTS`] lists by its top bits.
    parts: Parts,
    /// Each part's buckets: where entries with the next `bucket_bits` of the digest start in
    /// the part (`per_part + 1` offsets a part).
    starts: Vec<u32>,
    bucket_bits: u32,
    per_part: usize,
    /// A bit per baseline row: found in the snapshot.
    found: Vec<std::sync::atomic::AtomicU64>,
    rows: u64,
}

/// The rows of one piece of a snapshot looked up in a [`BaselineIndex`], by row of the piece.
#[derive(Debug, Default)]
pub struct PieceMatch {
    /// Rows whose key the baseline lacks, ascending, with their key digests.
    new: Vec<(u32, (u64, u32))>,
    /// (row, baseline row) of keys whose row hashes differ, ascending.
    changed: Vec<(u32, u32)>,
    unchanged: u64,
    rows: u64,
}

impl PieceMatch {
    /// The piece's rows a delta needs (NEW and CHANGED), ascending.
    pub fn rows_to_take(&self) -> Vec<u32> {
        ascending(
            self.new.iter().map(|(row, _)| *row),
            &self.changed,
            |&(row, _)| row,
        )
    }
}

/// The pieces' matches gathered in the snapshot's order (see [`PieceMatches::add`]): one
/// [`PieceMatch`] whose rows count across the pieces.
#[derive(Debug, Default)]
pub struct PieceMatches(PieceMatch);

impl PieceMatches {
    /// Add the next piece's match, its rows counted after those added before. False (nothing
    /// added) once the rows are more than positions can name.
    pub fn add(&mut self, piece: PieceMatch) -> bool {
        let all = &mut self.0;
        if all.rows + piece.rows > u32::MAX as u64 {
            return false;
        }
        let offset = all.rows as u32;
        all.new.extend(
            piece
                .new
                .into_iter()
                .map(|(row, digest)| (row + offset, digest)),
        );
        all.changed.extend(
            piece
                .changed
                .into_iter()
                .map(|(row, old)| (row + offset, old)),
        );
        all.unchanged += piece.unchanged;
        all.rows += piece.rows;
        true
    }

    /// Snapshot rows added so far.
    pub fn rows(&self) -> u64 {
        self.0.rows
    }
}

impl BaselineIndex {
    /// Read `baseline`'s key and row hash columns into an index; None when it has more rows
    /// than positions can name or repeats a key digest.
    pub fn read(baseline: &ParquetRows, key: &[String], hash: &str) -> Result<Option<Self>> {
        if baseline.rows() > u32::MAX as u64 {
            return Ok(None);
        }
        let parts = baseline.key_entries(key, hash)?;
        if parts
            .iter()
            .any(|part| part.windows(2).any(|w| w[0].digest() == w[1].digest()))
        {
            return Ok(None);
        }
        let rows = baseline.rows();
        // About four entries a bucket; the buckets of a part follow the part's bits.
        let bucket_bits = (64 - (rows / 4).max(1).leading_zeros()).clamp(PART_BITS, 26);
        let per_part = 1usize << (bucket_bits - PART_BITS);
        let mut starts = Vec::with_capacity(PARTS * (per_part + 1));
        for part in &parts {
            // Sorted by digest, so each bucket's entries follow the one before.
            let mut at = 0usize;
            for sub in 0..per_part {
                starts.push(at as u32);
                while at < part.len()
                    && Self::sub_bucket(part[at].digest_high, bucket_bits, per_part) == sub
                {
                    at += 1;
                }
            }
            starts.push(part.len() as u32);
        }
        let found = (0..rows.div_ceil(64))
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        Ok(Some(BaselineIndex {
            parts,
            starts,
            bucket_bits,
            per_part,
            found,
            rows,
        }))
    }

    /// The bucket, within its part, of a digest's high bits.
    fn sub_bucket(digest_high: u64, bucket_bits: u32, per_part: usize) -> usize {
        (digest_high >> (64 - bucket_bits)) as usize & (per_part - 1)
    }

    /// Where the bucket of a digest starts in [`Self::starts`], and its part.
    fn slot(&self, (high, _): (u64, u32)) -> (usize, usize) {
        let part = (high >> (64 - PART_BITS)) as usize;
        let sub = Self::sub_bucket(high, self.bucket_bits, self.per_part);
        (part * (self.per_part + 1) + sub, part)
    }

    /// The baseline entry of a digest.
    fn find(&self, digest: (u64, u32)) -> Option<&Entry> {
        let (at, part) = self.slot(digest);
        let (from, to) = (self.starts[at] as usize, self.starts[at + 1] as usize);
        self.parts[part][from..to]
            .iter()
            .find(|e| e.digest() == digest)
    }

    /// Read ahead the memory [`Self::find`] will read for `digest`: its bucket's start
    /// (`entries` false) or its bucket's first entry (whose start must be read by then).
    /// Lookups are random reads of an index far larger than the caches; a read a few rows
    /// ahead, whose value nobody waits for, overlaps their waits instead of paying each in
    /// turn.
    fn read_ahead(&self, digest: (u64, u32), entries: bool) {
        let (at, part) = self.slot(digest);
        if entries {
            let start = self.starts[at] as usize;
            std::hint::black_box(self.parts[part].get(start).map(|e| e.digest_high));
        } else {
            std::hint::black_box(self.starts[at]);
        }
    }

    /// Look up a piece's rows (`batches` in order, each with `key` columns and the row hash
    /// column `hash`), marking the baseline rows found. None when a key is found twice (in
    /// this piece or another): the snapshot repeats it.
    pub fn look_up(
        &self,
        batches: &[RecordBatch],
        key: &[usize],
        hash: usize,
    ) -> Result<Option<PieceMatch>> {
        use std::sync::atomic::Ordering;
        /// Rows ahead whose bucket start, and half as many whose entries, are read ahead.
        const AHEAD: usize = 16;
        let mut out = PieceMatch::default();
        let mut digests = Vec::new();
        let mut found = Vec::new();
        for batch in batches {
            let hashes = row_hashes(batch, hash)?;
            let first = out.rows as u32;
            digests.clear();
            each_digest(batch, key, |_, digest| digests.push(split_digest(digest)))?;
            found.clear();
            for (i, &digest) in digests.iter().enumerate() {
                if let Some(&ahead) = digests.get(i + AHEAD) {
                    self.read_ahead(ahead, false);
                }
                if let Some(&ahead) = digests.get(i + AHEAD / 2) {
                    self.read_ahead(ahead, true);
                }
                let row = first + i as u32;
                match self.find(digest) {
                    None => out.new.push((row, digest)),
                    Some(old) => {
                        found.push(old.position);
                        if old.row_hash == hashes.value(i) {
                            out.unchanged += 1;
                        } else {
                            out.changed.push((row, old.position));
                        }
                    }
                }
            }
            // Marked apart from the lookups: an atomic update is a barrier that would keep the
            // processor from overlapping the lookups' reads.
            let mut repeated = false;
            for &position in &found {
                let bit = 1u64 << (position % 64);
                let before = self.found[position as usize / 64].fetch_or(bit, Ordering::Relaxed);
                repeated |= before & bit != 0;
            }
            if repeated {
                return Ok(None);
            }
            out.rows += batch.num_rows() as u64;
        }
        Ok(Some(out))
    }

    /// What the snapshot's pieces matched: NEW, CHANGED, and the baseline rows never found as
    /// DELETED. None when two NEW rows share a key digest (the snapshot repeats a key).
    pub fn finish(self, PieceMatches(mut pieces): PieceMatches) -> Option<Matched> {
        pieces.new.sort_unstable_by_key(|(_, digest)| *digest);
        if pieces.new.windows(2).any(|w| w[0].1 == w[1].1) {
            return None;
        }
        let mut new: Vec<u32> = pieces.new.iter().map(|(row, _)| *row).collect();
        new.sort_unstable();
        let mut deleted = Vec::new();
        for (word_index, word) in self.found.iter().enumerate() {
            let mut missing = !word.load(std::sync::atomic::Ordering::Relaxed);
            while missing != 0 {
                let position = word_index as u64 * 64 + missing.trailing_zeros() as u64;
                if position >= self.rows {
                    break;
                }
                deleted.push(position as u32);
                missing &= missing - 1;
            }
        }
        Some(Matched {
            new,
            changed: pieces.changed,
            deleted,
            unchanged: pieces.unchanged,
        })
    }
}

/// The rows of in-memory `batches` at `positions` (ascending, 0-based across the batches).
pub fn take_rows(batches: &[RecordBatch], positions: &[u32]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut first = 0u64;
    let mut at = 0;
    for batch in batches {
        let end = first + batch.num_rows() as u64;
        let to = at + positions[at..].partition_point(|&p| (p as u64) < end);
        if to > at {
            let indexes: UInt32Array = positions[at..to]
                .iter()
                .map(|&p| (p as u64 - first) as u32)
                .collect();
            out.push(
                take_record_batch(batch, &indexes)
                    .map_err(|e| engine::error("taking rows", e.into()))?,
            );
        }
        at = to;
        first = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
