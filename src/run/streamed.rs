//! A table's run with its snapshot streamed through, never held in memory whole.
//!
//! The usual run (see [`super::execute`]) loads the whole snapshot, then types, validates,
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

use super::{
    Concluding, HashViews, NewSnapshot, Partial, Progress, RunOptions, TableRun, classify_taken,
    conclude, register_baseline, with_row_hash,
};
use crate::diff::DiffSettings;
use crate::diff::matching::{self, BaselineIndex, PieceMatch, PieceMatches};
use crate::diff::row_hash::{HASH_VERSION, ROW_HASH_COLUMN};
use crate::engine;
use crate::error::Result;
use crate::normalize;
use crate::sink::{self, EncodedGroup};
use crate::source::{self, LoadProgress, SourceFile, SourceFormat};
use crate::spec::Plan;
use crate::spec::{ChangeKind, TableMode, TablePlan};
use crate::store::{ColumnSchema, CommitRecord, HashSpec};
use crate::validate;

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
struct Expected {
    columns: Vec<String>,
    types: Vec<DataType>,
    hashed: Vec<String>,
    hash_spec: HashSpec,
    schema: SchemaRef,
}

/// Run `table` with its snapshot streamed, if this run is one the streamed path decides as the
/// usual run would; `Ok(None)` (nothing stored, nothing committed) sends it to the usual run.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    plan: &Plan,
    table: &TablePlan,
    store: &crate::store::Store,
    options: &RunOptions,
    started: std::time::Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    run_id: &str,
    progress: &Progress,
    partial: &mut Partial,
) -> Result<Option<TableRun>> {
    let name = table.name.as_str();
    let Some(source_path) = eligible_source(table, options)? else {
        return Ok(None);
    };
    partial.sources = vec![source_path.display().to_string()];
    let Some(baseline) = store.latest(name).await? else {
        return Ok(None);
    };
    let Some(expected) = expected_snapshot(table, &baseline) else {
        tracing::debug!(
            "{name}: the baseline's columns, types or hash differ from today's settings; loading the snapshot whole"
        );
        return Ok(None);
    };
    let key_types: Vec<&DataType> = table
        .key
        .iter()
        .map(|k| &expected.types[expected.columns.iter().position(|c| c == k).unwrap_or(0)])
        .collect();
    if !table.key.iter().all(|k| expected.columns.contains(k))
        || !matching::key_types_supported(&key_types)
    {
        return Ok(None);
    }
    let size = std::fs::metadata(&source_path)
        .map(|m| m.len())
        .unwrap_or(0);
    if size == 0 {
        return Ok(None);
    }
    progress.phase("reading the baseline's keys");
    let old_rows = matching::ParquetRows::open(
        store.local_file(name, &baseline.snapshot.path).await?,
        &store.file_url(name, &baseline.snapshot.path),
    )?;
    let Some(index) = BaselineIndex::read(&old_rows, &table.key, ROW_HASH_COLUMN)? else {
        tracing::debug!("{name}: the baseline repeats a key digest; loading the snapshot whole");
        return Ok(None);
    };
    tracing::debug!(
        "{name}: read the baseline's keys ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    progress.phase("loading the source");
    progress.total_bytes(size);
    let mut spool = store.spool(name, run_id)?;
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
            && super::check_columns(table, names, &origin, names, &origin).is_ok())
    };
    // TIDEMARK_TEST_PIECE_BYTES: small pieces, so that the tests see many row groups.
    let piece_bytes = std::env::var("TIDEMARK_TEST_PIECE_BYTES")
        .ok()
        .and_then(|b| b.parse().ok());
    let streamed = source::csv::stream_csv_pieces(
        &source_path,
        &table.source,
        piece_bytes,
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
        tracing::debug!("{name}: not streamed: {why}; loading the snapshot whole");
        return Ok(None);
    }
    spool.written(writer.finish()?);
    tracing::info!(
        "{name}: loaded, typed, hashed and wrote {rows} rows ({:.2} s)",
        started.elapsed().as_secs_f64()
    );

    progress.phase("comparing with the baseline");
    let Some(matched) = index.finish(matches) else {
        tracing::debug!("{name}: a key digest repeats; loading the snapshot whole");
        return Ok(None);
    };
    tracing::debug!(
        "{name}: matched keys by position: {matched} ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let old_positions = matched.baseline_rows();
    let taken_old = old_rows.take(&old_positions)?;
    drop(old_rows);
    tracing::debug!(
        "{name}: kept {} snapshot rows, read {} baseline rows ({:.2} s)",
        taken_new.iter().map(|b| b.num_rows()).sum::<usize>(),
        old_positions.len(),
        started.elapsed().as_secs_f64()
    );

    let column_types: HashMap<String, DataType> = expected
        .columns
        .iter()
        .cloned()
        .zip(expected.types.iter().cloned())
        .collect();
    let ctx = engine::session();
    register_baseline(&ctx, store, table, &baseline, &column_types).await?;
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
    };
    let hash_views = HashViews {
        shared_hashed: &expected.hashed,
        carried: &[],
        column_types: &column_types,
        stored_hashes_apply: true,
    };
    let Some(delta) = classify_taken(
        &ctx,
        table,
        (&expected.schema, taken_new),
        taken_old,
        &matched,
        &settings,
        &hash_views,
        rows,
    )
    .await?
    else {
        return Ok(None);
    };
    tracing::info!(
        "{name}: classified against the baseline ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let source = source_path.display().to_string();
    let version = store.next_version(name).await?;
    let mut notes = Vec::new();
    super::schema_notes(&baseline, &expected.columns, &[], &mut notes);
    let run = conclude(
        Concluding {
            plan,
            table,
            store,
            options,
            started,
            started_at,
            run_id,
            progress,
            baseline: Some(&baseline),
            version,
            held: 0,
            kept: 0,
            rejected: 0,
            partitions: Vec::new(),
            notes,
            source_files: vec![SourceFile { path: source, size }],
            columns: expected.columns,
            column_types,
            empty_today: Vec::new(),
            hash_spec: expected.hash_spec,
            watermark: None,
            snapshot: NewSnapshot::Spooled(spool),
        },
        delta,
        partial,
    )
    .await?;
    Ok(Some(run))
}

/// The local CSV file this table reads (named as the usual run names it), when its run is one
/// the streamed path can take: no transform, no rule that looks at other rows or tables, no
/// partitions or increments, no tolerance, no output of UNCHANGED rows, not a dry run (which
/// writes nothing to the store, not even a spooled file).
fn eligible_source(table: &TablePlan, options: &RunOptions) -> Result<Option<PathBuf>> {
    let eligible = !options.dry_run
        && table.transform.is_none()
        && table.depends_on.is_empty()
        && table.references.is_empty()
        && table.validate.rules.is_empty()
        && table.partition_by.is_empty()
        && matches!(table.mode, TableMode::Snapshot | TableMode::Full)
        && table.tolerance.is_empty()
        && !table
            .outputs
            .iter()
            .any(|o| o.include.contains(&ChangeKind::Unchanged))
        // TIDEMARK_IN_MEMORY, TIDEMARK_FULL_JOIN: the usual run, to compare the ways (see
        // docs/performance.md).
        && std::env::var_os("TIDEMARK_IN_MEMORY").is_none()
        && std::env::var_os("TIDEMARK_FULL_JOIN").is_none();
    if !eligible {
        return Ok(None);
    }
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
        (Some(file), true) => Some(file),
        _ => None,
    })
}

/// Today's snapshot as the baseline pins it, if today's settings keep what it stored: every
/// column's type (a declared type equal to it), and the hash's columns, types and clean-ups.
fn expected_snapshot(table: &TablePlan, baseline: &CommitRecord) -> Option<Expected> {
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
    let type_of =
        |c: &String| types[columns.iter().position(|n| n == c).expect("a column")].clone();
    let hash_spec = HashSpec {
        version: HASH_VERSION,
        columns: hashed
            .iter()
            .map(|c| ColumnSchema {
                name: c.clone(),
                data_type: type_of(c).to_string(),
                empty: false,
            })
            .collect(),
        normalize: table.normalize.clone(),
    };
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
