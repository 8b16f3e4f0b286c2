//! A table's run with its snapshot streamed through, never held in memory whole.
//!
//! The usual run (the stages of [`super`]) loads the whole snapshot, then types, validates,
//! hashes, compares and encodes it: at 10M rows that is 1.4 GB of Arrow arrays held from
//! loading to the commit. Here, for the common daily job (one local CSV file against a
//! baseline whose types, columns and hash definition it keeps):
//!
//! 1. The baseline's key digests and row hashes are read into an index
//!    ([`matching::BaselineIndex`], 24 bytes a row).
//! 2. Each piece of the file, as soon as it is parsed (on every core while the next pieces
//!    are read), is typed, hashed, looked up in the index (NEW, CHANGED or unchanged; each
//!    baseline row found is marked) and encoded as a row group of the new snapshot's file.
//!    Only its NEW and CHANGED rows stay in memory.
//! 3. The baseline rows never found are DELETED; they and the CHANGED rows' old values are
//!    read from the baseline's file by position.
//! 4. The rest of the run is the usual one ([`super::conclude`]) over those rows: the same
//!    classification queries, the same delta, the same commit, the snapshot's file linked
//!    into the store.
//!
//! Whatever this path cannot decide alone as the usual run would, it leaves to it, before
//! anything is committed: a value the baseline's type does not fit or a batch whose values
//! suggest another type, a rejected row, a column empty today, a repeated key, more rows than
//! positions can name, a file that needs the careful CSV reader. The usual run then reads the
//! file again and gives the same result it always did (the tests compare both).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::compare::delta_of_matched;
use super::conclude::{Concluding, NewSnapshot};
use super::prepare::with_row_hash;
use super::{Facts, Partial, RunOptions, TableJob, TableRun};
use crate::diff::DiffSettings;
use crate::diff::delta::Pairs;
use crate::diff::matching::{self, BaselineIndex, PieceMatch, PieceMatches};
use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::diff::strategy::{self, Situation, Strategy};
use crate::error::Result;
use crate::normalize;
use crate::sink::{self, EncodedGroup};
use crate::source::{self, LoadProgress, RowLocator, SourceFile, SourceFormat};
use crate::spec::{TableMode, TablePlan};
use crate::store::{CommitRecord, HashSpec};
use crate::validate;

/// The file a streamed run reads, and what its rows must look like.
pub(super) struct StreamSource {
    pub path: PathBuf,
    pub expected: Expected,
}

/// How a streamed run ended.
pub(super) enum Streamed {
    /// It ran to its end (committed, or failed as the usual run would have).
    Done(Box<TableRun>),
    /// The data needs the usual run (nothing stored, nothing committed), for this reason.
    Declined(&'static str),
}

/// One piece of the snapshot, done: its row group encoded, its entries, and which columns
/// hold a value in it.
struct Piece {
    group: EncodedGroup,
    found: PieceMatch,
    /// Its NEW and CHANGED rows.
    taken: Vec<datafusion::arrow::array::RecordBatch>,
    has_values: Vec<bool>,
}

/// What the snapshot must look like for the streamed run to type it alone: the baseline's
/// columns, in its order, with its types, and the hash it stored.
pub(super) struct Expected {
    columns: Vec<String>,
    types: Vec<DataType>,
    hashed: Vec<String>,
    hash_spec: HashSpec,
    schema: SchemaRef,
}

/// Before loading: the source to stream, when the strategy chosen is the streamed one.
pub(super) fn source_to_stream(
    job: &TableJob<'_>,
    baseline: Option<&CommitRecord>,
) -> Result<Option<StreamSource>> {
    let table = job.table;
    let Some(baseline) = baseline else {
        return Ok(None);
    };
    // The file is looked for (a folder listed, a glob matched) only for a run that could stream.
    let source = match row_by_row(table) && !job.options.dry_run {
        true => local_csv_source(table, job.options)?,
        false => None,
    };
    let expected = expected_snapshot(table, baseline);
    if expected.is_none() {
        tracing::debug!(
            "{}: the baseline's columns, types or hash differ from today's settings; loading the snapshot whole",
            job.name()
        );
    }
    let keys_matchable = expected
        .as_ref()
        .is_some_and(|e| e.keys_matchable(&table.key));
    let situation = Situation {
        fastest_allowed: job.options.strategy,
        has_baseline: true,
        streamable: source.is_some(),
        stored_hashes_apply: expected.is_some(),
        keys_matchable,
        tolerance: !table.tolerance.is_empty(),
        unchanged_wanted: super::compare::wants_unchanged(table),
    };
    let strategy = strategy::choose(&situation);
    tracing::debug!(
        "{}: the {strategy} strategy chosen before loading",
        job.name()
    );
    if strategy != Strategy::Streamed {
        return Ok(None);
    }
    Ok(source
        .zip(expected)
        .map(|(path, expected)| StreamSource { path, expected }))
}

/// Run the table with its snapshot streamed. [`Streamed::Declined`] (nothing stored, nothing
/// committed) sends it to the usual run.
pub(super) async fn run(
    job: &TableJob<'_>,
    baseline: Option<&CommitRecord>,
    source: &StreamSource,
    partial: &mut Partial,
) -> Result<Streamed> {
    let (table, store, progress, name) = (job.table, job.store, job.progress, job.name());
    let source_path = &source.path;
    let Some(baseline) = baseline else {
        return Ok(Streamed::Declined("no baseline"));
    };
    partial.sources = vec![source_path.display().to_string()];
    let size = std::fs::metadata(source_path).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        return Ok(Streamed::Declined("an empty file"));
    }
    progress.phase("reading the baseline's keys");
    store
        .check_before_reading(baseline, &baseline.snapshot, "snapshot")
        .await?;
    let old_rows = matching::ParquetRows::open(
        store.local_file(name, &baseline.snapshot.path).await?,
        &store.file_url(name, &baseline.snapshot.path),
    )?;
    let Some(index) = BaselineIndex::read(&old_rows, &table.key, ROW_HASH_COLUMN)? else {
        return Ok(Streamed::Declined("the baseline repeats a key digest"));
    };
    job.log_step("read the baseline's keys");
    let pieces = match stream_pieces(job, source, &index, &old_rows, size)? {
        Ok(pieces) => pieces,
        Err(why) => return Ok(Streamed::Declined(why)),
    };
    conclude_streamed(job, baseline, source, pieces, (index, old_rows), partial).await
}

/// What the streamed pieces left: the new snapshot's file, written; each row's match; the
/// NEW and CHANGED rows.
struct Pieces {
    spool: crate::store::Spool,
    matches: PieceMatches,
    taken_new: Vec<datafusion::arrow::array::RecordBatch>,
    rows: u64,
    size: u64,
}

/// Read the file in pieces (on every core), each typed, hashed, looked up in the index and
/// encoded as a row group of the new snapshot's file; `Err` with the reason when a piece (or
/// the whole) needs the usual run.
fn stream_pieces(
    job: &TableJob<'_>,
    source: &StreamSource,
    index: &BaselineIndex,
    old_rows: &matching::ParquetRows,
    size: u64,
) -> Result<std::result::Result<Pieces, &'static str>> {
    let (table, store, progress, name) = (job.table, job.store, job.progress, job.name());
    let (source_path, expected) = (&source.path, &source.expected);
    progress.phase("loading the source");
    progress.total_bytes(size);
    let mut spool = store.spool(name, job.run_id)?;
    let file = spool.take_writer().expect("a new spool has its file");
    let plain = sink::columns_without_dictionary(old_rows.parquet_metadata());
    let (encoder, mut writer) = sink::streamed_parquet(file, &expected.schema, &plain)?;
    let key_indexes: Vec<usize> = table
        .key
        .iter()
        .map(|k| expected.schema.index_of(k).expect("key columns exist"))
        .collect();
    let hash_index = expected.schema.fields().len() - 1;
    let nothing_rejected = std::collections::HashSet::new();
    let work = |parsed: source::csv::ParsedPiece| -> Result<Option<Piece>> {
        if !parsed.cell_errors.is_empty() {
            return Ok(None);
        }
        let mut hashed = Vec::with_capacity(parsed.batches.len());
        let mut has_values = vec![false; expected.columns.len()];
        for (batch, guesses) in parsed.batches.iter().zip(parsed.guesses) {
            let Some(typed) = source::types::type_batch_as(
                batch,
                guesses,
                &expected.types,
                &table.source.columns,
            )?
            else {
                return Ok(None);
            };
            let typed = normalize::apply(name, &typed, &table.normalize)?;
            if !validate::check_nulls(table, std::slice::from_ref(&typed), &nothing_rejected)
                .is_empty()
            {
                return Ok(None);
            }
            for (seen, column) in has_values.iter_mut().zip(typed.columns()) {
                *seen |= column.null_count() < column.len();
            }
            hashed.push(with_row_hash(
                name,
                &typed,
                &expected.hashed,
                &expected.schema,
            )?);
        }
        // A key found twice (here or in another piece) is a repeated key: the usual run
        // reports or resolves it.
        let Some(found) = index.look_up(&hashed, &key_indexes, hash_index)? else {
            return Ok(None);
        };
        let taken = matching::take_rows(&hashed, &found.rows_to_take())?;
        let group = encoder.encode(&hashed)?;
        Ok(Some(Piece {
            group,
            found,
            taken,
            has_values,
        }))
    };
    let mut matches = PieceMatches::default();
    let mut taken_new = Vec::new();
    let mut columns_with_values = vec![false; expected.columns.len()];
    let mut too_many_rows = false;
    let mut deliver = |piece: Piece| -> Result<()> {
        writer.append(piece.group)?;
        too_many_rows |= !matches.add(piece.found);
        taken_new.extend(piece.taken);
        for (seen, has) in columns_with_values.iter_mut().zip(piece.has_values) {
            *seen |= has;
        }
        Ok(())
    };
    // The header must be the baseline's, and every column the pipeline names must exist
    // (else the usual run names the missing one).
    let origin = source_path.display().to_string();
    let mut same_header = |names: &[String]| {
        Ok(names == expected.columns.as_slice()
            && validate::check_columns(table, names, &origin, names, &origin).is_ok())
    };
    let streamed = source::csv::stream_csv_pieces(
        source_path,
        &table.source,
        job.options.piece_bytes,
        progress,
        &mut same_header,
        &work,
        &mut deliver,
    )?;
    drop(encoder);
    let rows = matches.rows();
    let why_not = if streamed.is_none() {
        Some(
            "a piece of the file needs the usual load (a value that does not fit the baseline's type, a rejected row, another header, or a file the careful reader checks)",
        )
    } else if too_many_rows {
        Some("more rows than positions can name")
    } else if rows == 0 {
        Some("no data rows")
    } else if columns_with_values.iter().any(|has| !has) {
        Some("a column is empty today")
    } else {
        None
    };
    if let Some(why) = why_not {
        return Ok(Err(why));
    }
    spool.written(writer.finish()?);
    tracing::info!(
        "{name}: loaded, typed, hashed and wrote {rows} rows ({:.2} s)",
        job.started.elapsed().as_secs_f64()
    );
    Ok(Ok(Pieces {
        spool,
        matches,
        taken_new,
        rows,
        size,
    }))
}

/// The streamed pieces' rows classified against the baseline, and the run concluded.
async fn conclude_streamed(
    job: &TableJob<'_>,
    baseline: &CommitRecord,
    source: &StreamSource,
    streamed: Pieces,
    (index, old_rows): (BaselineIndex, matching::ParquetRows),
    partial: &mut Partial,
) -> Result<Streamed> {
    let (table, store, name) = (job.table, job.store, job.name());
    let (source_path, expected) = (&source.path, &source.expected);
    let Pieces {
        spool,
        matches,
        taken_new,
        rows,
        size,
    } = streamed;
    job.progress.phase("comparing with the baseline");
    let Some(matched) = index.finish(matches) else {
        return Ok(Streamed::Declined("a key digest repeats"));
    };
    tracing::debug!(
        "{name}: matched keys by position: {matched} ({:.2} s)",
        job.started.elapsed().as_secs_f64()
    );
    let old_positions = matched.baseline_rows();
    let taken_old = old_rows.take(&old_positions)?;
    drop(old_rows);
    tracing::debug!(
        "{name}: kept {} snapshot rows, read {} baseline rows ({:.2} s)",
        taken_new.iter().map(|b| b.num_rows()).sum::<usize>(),
        old_positions.len(),
        job.started.elapsed().as_secs_f64()
    );

    let column_types: HashMap<String, DataType> = expected
        .columns
        .iter()
        .cloned()
        .zip(expected.types.iter().cloned())
        .collect();
    let compared = table.compare.resolve(&expected.columns, &table.key);
    let compared: Vec<String> = compared
        .into_iter()
        .filter(|c| expected.hashed.contains(c))
        .collect();
    let settings = DiffSettings {
        key: table.key.clone(),
        compared,
        columns: expected.columns.clone(),
        baseline_columns: baseline.schema.iter().map(|c| c.name.clone()).collect(),
        include_unchanged: false,
        tolerance: Vec::new(),
        renames: table.renames,
    };
    let pairs = Pairs::of_matched(
        &matched,
        expected.schema.clone(),
        (taken_new, taken_old),
        rows,
    )?;
    let fall_back = job.options.fall_back_to_join;
    let Some(delta) = delta_of_matched(name, &settings, &pairs, fall_back)? else {
        return Ok(Streamed::Declined(
            "the keys matched by position pair otherwise",
        ));
    };
    tracing::info!(
        "{name}: classified against the baseline ({:.2} s)",
        job.started.elapsed().as_secs_f64()
    );
    let source = source_path.display().to_string();
    let mut facts = Facts::new(
        expected.columns.clone(),
        expected.columns.clone(),
        vec![SourceFile {
            path: source.clone(),
            size,
        }],
        source,
        RowLocator::single(source_path.display().to_string(), source::FileRows::From(2)),
        false,
    );
    facts.version = store.next_version(name).await?;
    super::prepare::schema_notes(baseline, &expected.columns, &[], &mut facts.notes);
    let concluding = Concluding {
        facts,
        delta,
        held: 0,
        kept: 0,
        partitions: Vec::new(),
        column_types,
        empty_today: Vec::new(),
        hash_spec: expected.hash_spec.clone(),
        watermark: None,
        snapshot: NewSnapshot::Spooled(spool),
        strategy: Strategy::Streamed,
    };
    let run = super::conclude::conclude(job, concluding, Some(baseline), partial).await?;
    Ok(Streamed::Done(Box::new(run)))
}

/// Whether the table's rows can be decided one piece at a time: no transform, no rule that
/// looks at other rows or tables, no partitions or increments.
pub(super) fn row_by_row(table: &TablePlan) -> bool {
    table.transform.is_none()
        && table.depends_on.is_empty()
        && table.references.is_empty()
        && table.validate.rules.is_empty()
        && table.partition_by.is_empty()
        && matches!(table.mode, TableMode::Snapshot | TableMode::Full)
}

/// The one local CSV file this table reads today (named as the usual run names it), if it
/// reads one.
pub(super) fn local_csv_source(table: &TablePlan, options: &RunOptions) -> Result<Option<PathBuf>> {
    // As `load_snapshot` resolves it: a file given with --source by its absolute path and its
    // own extension.
    let (pattern, format) = match options.source_overrides.get(&table.name) {
        Some(p) if crate::cloud::is_url(&p.to_string_lossy()) => return Ok(None),
        Some(p) => (
            std::path::absolute(p)
                .map_err(|e| crate::error::Error::io(p, e))?
                .display()
                .to_string(),
            SourceFormat::from_extension(&p.to_string_lossy()).unwrap_or(table.source.format),
        ),
        None => (table.source_path.clone(), table.source.format),
    };
    if format != SourceFormat::Csv || crate::cloud::is_url(&pattern) {
        return Ok(None);
    }
    let Ok(mut files) = source::resolve_files(&table.name, &pattern, table.files) else {
        // The usual run reports it.
        return Ok(None);
    };
    Ok(match (files.pop(), files.is_empty()) {
        // A pipe is read once, by the usual path, which copies it first.
        (Some(file), true) if !source::is_stream(&file) => Some(file),
        _ => None,
    })
}

/// Today's snapshot as the baseline pins it, if today's settings keep what it stored: every
/// column's type (a declared type equal to it), and the hash's columns, types and clean-ups.
pub(super) fn expected_snapshot(table: &TablePlan, baseline: &CommitRecord) -> Option<Expected> {
    let columns: Vec<String> = baseline.schema.iter().map(|c| c.name.clone()).collect();
    let mut types = Vec::with_capacity(columns.len());
    for column in &baseline.schema {
        let pinned: DataType = column.data_type.parse().ok()?;
        if table
            .source
            .declared_type(&column.name)
            .is_some_and(|declared| declared != &pinned)
        {
            return None;
        }
        types.push(pinned);
    }
    let empty_in_baseline: Vec<&String> = baseline
        .schema
        .iter()
        .filter(|c| c.empty)
        .map(|c| &c.name)
        .collect();
    let hashed: Vec<String> = table
        .compare
        .resolve(&columns, &table.key)
        .into_iter()
        .filter(|c| !empty_in_baseline.contains(&c))
        .collect();
    let type_of = |c: &str| &types[columns.iter().position(|n| n == c).expect("a column")];
    let hash_spec = HashSpec::today(&hashed, |c| type_of(c).to_string(), &table.normalize);
    if hash_spec != baseline.hash {
        return None;
    }
    let mut fields: Vec<FieldRef> = columns
        .iter()
        .zip(&types)
        .map(|(c, t)| Arc::new(Field::new(c, t.clone(), true)))
        .collect();
    fields.push(Arc::new(Field::new(
        ROW_HASH_COLUMN,
        DataType::UInt64,
        false,
    )));
    Some(Expected {
        schema: Arc::new(Schema::new(fields)),
        columns,
        types,
        hashed,
        hash_spec,
    })
}

impl Expected {
    /// Whether the key columns are of types the index can digest.
    pub(super) fn keys_matchable(&self, key: &[String]) -> bool {
        let types: Option<Vec<&DataType>> = key
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|c| c == k)
                    .map(|i| &self.types[i])
            })
            .collect();
        types.is_some_and(|t| matching::key_types_supported(&t))
    }
}
