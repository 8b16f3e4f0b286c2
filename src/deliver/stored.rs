//! A committed version's delta read back from the store, for a delivery that did not happen in
//! the run that committed it (the run died, its destination was down, or `run --no-deliver`):
//! the version's change rows under the delta's own column names, and, for a destination that
//! takes them, its UNCHANGED rows (the snapshot's rows whose key has no change row). The rows
//! are in key order with the reasons the run gave, so a destination receives what the run would
//! have handed it; `tests/it/deliveries.rs` holds the two ways to the same bytes.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, filter_record_batch, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::diff::{CHANGE_REASON_COLUMN, CHANGE_TYPE_COLUMN, Delta, previous_key_column};
use crate::engine;
use crate::error::{Error, Result};
use crate::spec::ChangeKind;
use crate::store::{CommitRecord, Store, StoredFile};

/// Version `record`'s delta, with its UNCHANGED rows when `with_unchanged`.
pub async fn delta_of(store: &Store, record: &CommitRecord, with_unchanged: bool) -> Result<Delta> {
    let (stored, changes) = read(store, record, &record.changes, "change rows").await?;
    let (schema, changes) = in_delta_names(record, &stored, changes)?;
    let mut batches = changes;
    if with_unchanged {
        let (_, snapshot) = read(store, record, &record.snapshot, "snapshot").await?;
        let unchanged = snapshot_rows(record, &schema, &batches, snapshot, ChangeKind::Unchanged)?;
        batches = in_key_order(record, &schema, batches.into_iter().chain(unchanged))?;
    }
    Ok(Delta {
        schema,
        batches,
        counts: record.counts,
    })
}

fn failure(record: &CommitRecord, e: impl Into<datafusion::error::DataFusionError>) -> Error {
    engine::error(
        format!(
            "table {}: reading v{} back for its delivery",
            record.table, record.version
        ),
        e.into(),
    )
}

/// Version `record`'s snapshot as a delta of NEW rows: what a destination that has nothing
/// yet receives.
pub async fn snapshot_as_new(store: &Store, record: &CommitRecord) -> Result<Delta> {
    let (_, snapshot) = read(store, record, &record.snapshot, "snapshot").await?;
    let schema = empty_delta_schema(record)?;
    let batches = snapshot_rows(record, &schema, &[], snapshot, ChangeKind::New)?;
    Ok(Delta {
        schema,
        batches,
        counts: record.counts,
    })
}

/// A file of the version, checked against its record: its schema and batches.
async fn read(
    store: &Store,
    record: &CommitRecord,
    file: &StoredFile,
    role: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    store.check_before_reading(record, file, role).await?;
    let bytes: Bytes = store.read_file(&record.table, &file.path).await?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| failure(record, e))?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .map_err(|e| failure(record, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failure(record, e))?;
    Ok((schema, batches))
}

/// The stored change rows under the delta's names. They are stored as the delta's columns
/// (the version's, in its record's order), a renamed row's old key columns when the table
/// pairs renames, then the change type and reason, under names the pipeline configured then;
/// so they are renamed by place.
fn in_delta_names(
    record: &CommitRecord,
    stored: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let values = record.schema.len();
    let previous = stored.fields().len().checked_sub(values + 2);
    let damaged = || Error::Store {
        location: format!("{}/{}", record.table, record.changes.path),
        message: format!(
            "the change rows of {} v{} do not have the columns of its record; run `tidemark verify`",
            record.table, record.version
        ),
    };
    let names_match = (record.schema.iter().zip(stored.fields()))
        .all(|(column, field)| &column.name == field.name());
    let previous = match previous {
        Some(p) if names_match && (p == 0 || p == record.key.len()) => p,
        _ => return Err(damaged()),
    };
    let mut names: Vec<String> = record.schema.iter().map(|c| c.name.clone()).collect();
    if previous > 0 {
        names.extend(record.key.iter().map(|k| previous_key_column(k)));
    }
    names.push(CHANGE_TYPE_COLUMN.into());
    names.push(CHANGE_REASON_COLUMN.into());
    let fields: Vec<Field> = (stored.fields().iter().zip(&names))
        .map(|(f, name)| f.as_ref().clone().with_name(name))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failure(record, e))?;
    Ok((schema, batches))
}

/// The delta's schema of a version without change rows, from its record's types.
fn empty_delta_schema(record: &CommitRecord) -> Result<SchemaRef> {
    let mut fields = Vec::with_capacity(record.schema.len() + 2);
    for column in &record.schema {
        let data_type: DataType = column
            .data_type
            .parse()
            .map_err(|e: datafusion::arrow::error::ArrowError| failure(record, e))?;
        fields.push(Field::new(&column.name, data_type, true));
    }
    fields.push(Field::new(CHANGE_TYPE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(CHANGE_REASON_COLUMN, DataType::Utf8, true));
    Ok(Arc::new(Schema::new(fields)))
}

/// The key columns' places in `schema`.
fn key_places(record: &CommitRecord, schema: &Schema) -> Result<Vec<usize>> {
    (record.key.iter())
        .map(|k| schema.index_of(k).map_err(|e| failure(record, e)))
        .collect()
}

/// The snapshot's rows whose key has no change row, as delta rows of `kind`.
fn snapshot_rows(
    record: &CommitRecord,
    schema: &SchemaRef,
    changes: &[RecordBatch],
    snapshot: Vec<RecordBatch>,
    kind: ChangeKind,
) -> Result<Vec<RecordBatch>> {
    let fail = |e| failure(record, e);
    let keys = key_places(record, schema)?;
    let sort_fields: Vec<SortField> = (keys.iter())
        .map(|&k| SortField::new(schema.field(k).data_type().clone()))
        .collect();
    let converter = RowConverter::new(sort_fields).map_err(fail)?;
    let key_columns = |batch: &RecordBatch, places: &[usize]| -> Result<Vec<ArrayRef>> {
        (places.iter().zip(&keys))
            .map(|(&at, &k)| cast(batch.column(at), schema.field(k).data_type()).map_err(fail))
            .collect()
    };
    let mut changed: HashSet<Box<[u8]>> = HashSet::new();
    for batch in changes {
        let rows = converter
            .convert_columns(&key_columns(batch, &keys)?)
            .map_err(fail)?;
        changed.extend(rows.iter().map(|r| r.as_ref().into()));
    }
    let mut out = Vec::with_capacity(snapshot.len());
    for batch in snapshot {
        let snapshot_schema = batch.schema();
        let places: Vec<usize> = (record.key.iter())
            .map(|k| snapshot_schema.index_of(k).map_err(fail))
            .collect::<Result<_>>()?;
        let rows = converter
            .convert_columns(&key_columns(&batch, &places)?)
            .map_err(fail)?;
        let keep: BooleanArray = rows
            .iter()
            .map(|r| Some(!changed.contains(r.as_ref())))
            .collect();
        let kept = filter_record_batch(&batch, &keep).map_err(fail)?;
        if kept.num_rows() == 0 {
            continue;
        }
        let n = kept.num_rows();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = match field.name().as_str() {
                CHANGE_TYPE_COLUMN => {
                    Arc::new(StringArray::from(vec![kind.canonical(); n])) as ArrayRef
                }
                CHANGE_REASON_COLUMN => new_null_array(&DataType::Utf8, n),
                name => match snapshot_schema.index_of(name) {
                    Ok(at) => cast(kept.column(at), field.data_type()).map_err(fail)?,
                    // A renamed row's old key: none for an UNCHANGED row.
                    Err(_) => new_null_array(field.data_type(), n),
                },
            };
            columns.push(column);
        }
        out.push(RecordBatch::try_new(schema.clone(), columns).map_err(fail)?);
    }
    Ok(out)
}

/// `batches` as one batch in key order, as the delta builder orders its rows.
fn in_key_order(
    record: &CommitRecord,
    schema: &SchemaRef,
    batches: impl Iterator<Item = RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let fail = |e| failure(record, e);
    let batches: Vec<RecordBatch> = batches.collect();
    let all = concat_batches(schema, &batches).map_err(fail)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let sort: Vec<SortColumn> = key_places(record, schema)?
        .into_iter()
        .map(|k| SortColumn {
            values: all.column(k).clone(),
            options: Some(SortOptions {
                descending: false,
                nulls_first: false,
            }),
        })
        .collect();
    let order = lexsort_to_indices(&sort, None).map_err(fail)?;
    let columns = (all.columns().iter())
        .map(|c| take(c.as_ref(), &order, None).map_err(fail))
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![
        RecordBatch::try_new(schema.clone(), columns).map_err(fail)?,
    ])
}
