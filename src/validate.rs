//! Validation of a new snapshot's rows: values that do not fit their type, null keys,
//! `validate.not_null` and `validate.rules`. An invalid row is rejected: it goes to the run's
//! rejects file with the file and row a person would look up, the rule and the message, then its
//! values as read; it is held out of the comparison and its key keeps its baseline row.
//! `on_invalid: fail` and `max_invalid` refuse the run instead (exit 3).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;

use crate::diff::row_hash::ROW_HASH_COLUMN;
use crate::engine;
use crate::error::{Error, Result};
use crate::source::RowLocator;
use crate::spec::{OnInvalid, TableMode, TablePlan};

/// Whether no key repeats, judged by a 64-bit hash of each row's key (the row hash over the
/// key columns): false when two keys hash alike, which is a repeated key or, very rarely, a
/// collision, so the caller then checks exactly. Equal keys always hash alike. Hashing and
/// sorting 10M keys takes a fraction of the time a SQL `GROUP BY` over them does.
pub fn keys_surely_unique(batches: &[RecordBatch], key: &[String]) -> Result<bool> {
    // A missing key column is the exact check's to report.
    let has_keys = |batch: &RecordBatch| key.iter().all(|k| batch.column_by_name(k).is_some());
    if !batches.iter().all(has_keys) {
        return Ok(false);
    }
    let hashes = crate::parallel::map(batches, |batch| {
        let columns: Vec<ArrayRef> = key
            .iter()
            .filter_map(|k| batch.column_by_name(k).cloned())
            .collect();
        crate::diff::row_hash::hash_rows(&columns, batch.num_rows())
    });
    // Split by the top bits, then sort each part on its own core: equal hashes share a part.
    const PART_BITS: u32 = 4;
    let mut parts: Vec<Vec<u64>> = vec![Vec::new(); 1 << PART_BITS];
    for batch_hashes in hashes {
        let batch_hashes = batch_hashes.map_err(|e| engine::error("checking keys", e))?;
        for &h in batch_hashes.values() {
            parts[(h >> (64 - PART_BITS)) as usize].push(h);
        }
    }
    let unique = crate::parallel::map_into(parts, |mut part| {
        part.sort_unstable();
        part.windows(2).all(|pair| pair[0] != pair[1])
    });
    Ok(unique.into_iter().all(|u| u))
}

/// Why one row of the snapshot is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 0-based row of the snapshot.
    pub index: u64,
    /// `type`, `key`, `not_null`, or the name of a rule.
    pub rule: String,
    /// What is wrong, naming the column and value.
    pub message: String,
    /// The offending cell as read, when the snapshot holds null in its place.
    pub cell: Option<(String, String)>,
}

/// A rejected row located in its file, with its values as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// The source file (or the transform's result).
    pub file: String,
    /// The row a person counts there.
    pub row: u64,
    /// Rules the row failed, joined by `, `.
    pub rules: String,
    /// Their messages, joined by `; `.
    pub messages: String,
    /// Values by column name, as read.
    pub values: BTreeMap<String, Option<String>>,
}

/// Rows of `batches` (0-based across them) as rendered text, by column.
pub(crate) fn render_rows(
    batches: &[RecordBatch],
    indexes: &[u64],
) -> Vec<BTreeMap<String, Option<String>>> {
    let mut out = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let mut offset = 0u64;
        let mut values = BTreeMap::new();
        for batch in batches {
            let n = batch.num_rows() as u64;
            if index < offset + n {
                let i = (index - offset) as usize;
                for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
                    let value = (!column.is_null(i))
                        .then(|| array_value_to_string(column, i).unwrap_or_default());
                    values.insert(field.name().clone(), value);
                }
                break;
            }
            offset += n;
        }
        out.push(values);
    }
    out
}

/// Group rejections by row, locate each row in its file and attach its values as read, in
/// snapshot order. `as_read` holds the rows as read: the snapshot before types were pinned, or
/// (`source_rows`) the source rows the locator maps snapshot rows to.
pub fn locate(
    rejections: &[Rejection],
    locator: &RowLocator,
    as_read: &[RecordBatch],
    source_rows: bool,
) -> Vec<RejectedRow> {
    let mut by_row: BTreeMap<u64, Vec<&Rejection>> = BTreeMap::new();
    for r in rejections {
        by_row.entry(r.index).or_default().push(r);
    }
    let indexes: Vec<u64> = by_row.keys().copied().collect();
    let places = locator.locate(&indexes);
    let read_indexes: Vec<u64> = if source_rows {
        indexes.iter().map(|&i| locator.source_row(i)).collect()
    } else {
        indexes.clone()
    };
    let values = render_rows(as_read, &read_indexes);
    by_row
        .into_values()
        .zip(places)
        .zip(values)
        .map(|((found, (file, row)), mut values)| {
            for r in &found {
                if let Some((column, cell)) = &r.cell {
                    values.insert(column.clone(), Some(cell.clone()));
                }
            }
            let mut rules: Vec<&str> = Vec::new();
            for r in &found {
                if !rules.contains(&r.rule.as_str()) {
                    rules.push(&r.rule);
                }
            }
            RejectedRow {
                file,
                row,
                rules: rules.join(", "),
                messages: found
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                values,
            }
        })
        .collect()
}

/// Null keys and `not_null` columns, for rows not already rejected.
pub fn check_nulls(
    table: &TablePlan,
    batches: &[RecordBatch],
    already: &std::collections::HashSet<u64>,
) -> Vec<Rejection> {
    let mut found = Vec::new();
    let checks = table
        .key
        .iter()
        .map(|k| (k, "key"))
        .chain(table.validate.not_null.iter().map(|c| (c, "not_null")));
    for (column, rule) in checks {
        let message = if rule == "key" {
            format!("key column \"{column}\" is empty; every row needs a key")
        } else {
            format!("column \"{column}\" is empty; `validate.not_null` requires a value")
        };
        let mut offset = 0u64;
        for batch in batches {
            if let Some(values) = batch.column_by_name(column) {
                for i in empty_rows(values, rule == "key") {
                    let index = offset + i as u64;
                    if !already.contains(&index) {
                        found.push(Rejection {
                            index,
                            rule: rule.to_string(),
                            message: message.clone(),
                            cell: None,
                        });
                    }
                }
            }
            offset += batch.num_rows() as u64;
        }
    }
    found
}

/// Rows of `values` that are null, or (`empty_text`: a key, where a blank cell kept by
/// `null_values` or spaces `trim` removed identify nothing either) empty text.
fn empty_rows(values: &ArrayRef, empty_text: bool) -> Vec<usize> {
    let text = empty_text
        .then(|| values.as_any().downcast_ref::<StringArray>())
        .flatten();
    // The offsets say whether any text is empty without reading the strings.
    let any_empty_text = text.is_some_and(|t| t.value_offsets().windows(2).any(|w| w[0] == w[1]));
    if values.null_count() == 0 && !any_empty_text {
        return Vec::new();
    }
    (0..values.len())
        .filter(|&i| values.is_null(i) || text.is_some_and(|t| t.value(i).is_empty()))
        .collect()
}

/// The row ordinals a query selected first (`SELECT __tidemark_ordinal, ...`).
fn ordinals(batch: &RecordBatch) -> &datafusion::arrow::array::UInt64Array {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        .expect("the ordinal column is UInt64")
}

/// Column name of the row ordinal while rules are evaluated.
const ORDINAL: &str = "__tidemark_ordinal";

/// Evaluate `validate.rules` with DataFusion; a row fails a rule when its check is false (a
/// NULL result passes, as an SQL CHECK constraint does: `not_null` is for missing values).
pub async fn check_rules(
    table: &TablePlan,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    already: &std::collections::HashSet<u64>,
) -> Result<Vec<Rejection>> {
    if table.validate.rules.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::engine::session();
    let (numbered_schema, numbered) = crate::engine::with_ordinals(schema, batches, ORDINAL, 0)?;
    crate::engine::register_batches(&ctx, &table.name, numbered_schema, numbered)?;
    let mut found = Vec::new();
    for rule in &table.validate.rules {
        let bad_rule = |e: datafusion::error::DataFusionError| Error::Usage {
            message: format!(
                "table {}: validate rule `{}` cannot be evaluated: {}",
                table.name,
                rule.name,
                rule_problem(&e, schema)
            ),
        };
        let sql = format!(
            "SELECT {ORDINAL} FROM {} WHERE ({}) IS FALSE ORDER BY {ORDINAL}",
            crate::diff::ident(&table.name),
            rule.check
        );
        let frame = ctx.sql(&sql).await.map_err(bad_rule)?;
        let failing = frame.collect().await.map_err(bad_rule)?;
        for batch in failing {
            let ordinals = ordinals(&batch);
            for index in ordinals.values().iter().copied() {
                if !already.contains(&index) {
                    found.push(Rejection {
                        index,
                        rule: rule.name.clone(),
                        message: format!("fails rule `{}`: {}", rule.name, rule.check.trim()),
                        cell: None,
                    });
                }
            }
        }
    }
    Ok(found)
}

/// Check `references:`: a row whose value is not among the parent's values in the parent's
/// latest snapshot (this run's, when the parent ran first) is rejected with rule `references`.
/// A null value passes, as an SQL foreign key does.
pub async fn check_references(
    table: &TablePlan,
    store: &crate::store::Store,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    already: &std::collections::HashSet<u64>,
) -> Result<Vec<Rejection>> {
    if table.references.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = crate::engine::session();
    let (numbered_schema, numbered) = crate::engine::with_ordinals(schema, batches, ORDINAL, 0)?;
    crate::engine::register_batches(&ctx, "__tidemark_child", numbered_schema, numbered)?;
    let mut found = Vec::new();
    for reference in &table.references {
        // The column exists: `check_columns` made sure of it.
        let parent = &reference.parent;
        let record = store.latest(parent).await?.ok_or_else(|| Error::Usage {
            message: format!(
                "table {}: `references` checks against {parent}, which has no baseline yet; run {parent} first.",
                table.name
            ),
        })?;
        let parent_columns: Vec<&str> = record.schema.iter().map(|c| c.name.as_str()).collect();
        if !parent_columns.contains(&reference.parent_column.as_str()) {
            return Err(Error::Usage {
                message: format!(
                    "table {}: `references` names {parent}.{}, but {parent} has no such column; its columns are {}.",
                    table.name,
                    reference.parent_column,
                    parent_columns.join(", ")
                ),
            });
        }
        // Values of different types never match as the user means: `1` is not the code `001`.
        let text = |t: &str| matches!(t, "Utf8" | "LargeUtf8" | "Utf8View");
        let child_type = schema
            .field_with_name(&reference.column)
            .map(|f| f.data_type().to_string())
            .unwrap_or_default();
        let parent_type = record
            .schema
            .iter()
            .find(|c| c.name == reference.parent_column)
            .map(|c| c.data_type.clone())
            .unwrap_or_default();
        if child_type != parent_type && !(text(&child_type) && text(&parent_type)) {
            return Err(Error::Usage {
                message: format!(
                    "table {}: `references` compares {} ({}) with {parent}.{} ({}); a foreign key and the key it names must have one type. Declare both under source.columns (e.g. string for codes with leading zeros).",
                    table.name,
                    reference.column,
                    crate::source::types::type_name(
                        &child_type
                            .parse()
                            .unwrap_or(datafusion::arrow::datatypes::DataType::Null)
                    ),
                    reference.parent_column,
                    crate::source::types::type_name(
                        &parent_type
                            .parse()
                            .unwrap_or(datafusion::arrow::datatypes::DataType::Null)
                    ),
                ),
            });
        }
        crate::store::tables::register_snapshot(&ctx, store, parent, &record, "__tidemark_parent")
            .await?;
        let column = crate::diff::ident(&reference.column);
        let sql = format!(
            "SELECT c.{ORDINAL}, CAST(c.{column} AS VARCHAR) FROM __tidemark_child c \
             WHERE c.{column} IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM __tidemark_parent p WHERE p.{} = c.{column}) ORDER BY 1",
            crate::diff::ident(&reference.parent_column)
        );
        let failed = |e: datafusion::error::DataFusionError| Error::Usage {
            message: format!(
                "table {}: `references` {} → {parent}.{} cannot be checked: {e}. Are both columns of comparable types?",
                table.name, reference.column, reference.parent_column
            ),
        };
        let orphans = ctx
            .sql(&sql)
            .await
            .map_err(failed)?
            .collect()
            .await
            .map_err(failed)?;
        ctx.deregister_table("__tidemark_parent")
            .map_err(|e| engine::error("checking references", e))?;
        for batch in orphans {
            let ordinals = ordinals(&batch);
            for (i, index) in ordinals.values().iter().copied().enumerate() {
                if already.contains(&index) {
                    continue;
                }
                let value = array_value_to_string(batch.column(1), i).unwrap_or_default();
                found.push(Rejection {
                    index,
                    rule: "references".into(),
                    message: format!(
                        "{} {value} has no row in {parent} (no {parent}.{} = {value})",
                        reference.column, reference.parent_column
                    ),
                    cell: None,
                });
            }
        }
    }
    Ok(found)
}

/// Why a rule's check cannot be evaluated, in the pipeline's terms: the engine's first sentence
/// without its internal advice, and the columns the check may use.
pub fn rule_problem(e: &datafusion::error::DataFusionError, schema: &SchemaRef) -> String {
    let text = crate::error::engine_words(e);
    let first = text
        .split(". Valid fields are")
        .next()
        .unwrap_or(&text)
        .split("\n")
        .next()
        .unwrap_or(&text)
        .trim_end_matches('.')
        .to_string();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .filter(|c| !c.contains("__tidemark"))
        .collect();
    format!(
        "{first}. `check` must be an SQL condition that is true for a valid row, over the columns {} (quote mixed-case names, e.g. '\"Qty\" >= 0').",
        columns.join(", ")
    )
}

/// Rows of `batches` (0-based across them, not in `skip`) whose key is one of `held`'s rows.
/// Keys are compared as text, so that keys a transform computed compare with the snapshot's.
pub fn rows_with_keys(
    batches: &[RecordBatch],
    key: &[String],
    held: &[RecordBatch],
    skip: &std::collections::HashSet<u64>,
) -> Vec<u64> {
    // The key columns of a batch, looked up once per batch rather than once per row.
    let key_columns = |b: &RecordBatch| -> Option<Vec<ArrayRef>> {
        key.iter().map(|k| b.column_by_name(k).cloned()).collect()
    };
    let render = |columns: &[ArrayRef], i: usize| -> Option<String> {
        columns
            .iter()
            .map(|c| {
                (!c.is_null(i))
                    .then(|| array_value_to_string(c, i).ok())
                    .flatten()
            })
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("\u{1f}"))
    };
    let mut wanted = std::collections::HashSet::new();
    for batch in held {
        if let Some(columns) = key_columns(batch) {
            wanted.extend((0..batch.num_rows()).filter_map(|i| render(&columns, i)));
        }
    }
    let mut found = Vec::new();
    if wanted.is_empty() {
        return found;
    }
    let mut offset = 0u64;
    for batch in batches {
        if let Some(columns) = key_columns(batch) {
            for i in 0..batch.num_rows() {
                let index = offset + i as u64;
                if !skip.contains(&index)
                    && render(&columns, i).is_some_and(|k| wanted.contains(&k))
                {
                    found.push(index);
                }
            }
        }
        offset += batch.num_rows() as u64;
    }
    found
}

/// Keep the rows of `batches` whose 0-based index is not in `rejected`.
pub fn without_rows(
    batches: &[RecordBatch],
    rejected: &std::collections::HashSet<u64>,
) -> Result<Vec<RecordBatch>> {
    if rejected.is_empty() {
        return Ok(batches.to_vec());
    }
    let mut out = Vec::with_capacity(batches.len());
    let mut offset = 0u64;
    for batch in batches {
        let n = batch.num_rows() as u64;
        let keep: BooleanArray = (offset..offset + n)
            .map(|i| Some(!rejected.contains(&i)))
            .collect();
        out.push(
            filter_record_batch(batch, &keep)
                .map_err(|e| engine::error("holding out rejected rows", e.into()))?,
        );
        offset += n;
    }
    Ok(out)
}

/// Keep only the rows of `batches` whose 0-based index is in `wanted`.
pub fn only_rows(
    batches: &[RecordBatch],
    wanted: &std::collections::HashSet<u64>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for batch in batches {
        let n = batch.num_rows() as u64;
        let keep: BooleanArray = (offset..offset + n)
            .map(|i| Some(wanted.contains(&i)))
            .collect();
        if keep.true_count() > 0 {
            out.push(
                filter_record_batch(batch, &keep)
                    .map_err(|e| engine::error("selecting rejected rows", e.into()))?,
            );
        }
        offset += n;
    }
    Ok(out)
}

/// The rejects file as a batch: `_source_file`, `_row_number`, `_rule`, `_message`, then the
/// values as read under `columns` (the source's columns, then any others of the snapshot).
pub fn rejects_batch(rows: &[RejectedRow], columns: &[String]) -> Result<(SchemaRef, RecordBatch)> {
    let mut fields = vec![
        Field::new("_source_file", DataType::Utf8, false),
        Field::new("_row_number", DataType::UInt64, false),
        Field::new("_rule", DataType::Utf8, false),
        Field::new("_message", DataType::Utf8, false),
    ];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(fields));
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.file))),
        Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(
            rows.iter().map(|r| r.row),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.rules))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.messages),
        )),
    ];
    for c in columns {
        arrays.push(Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.values.get(c).cloned().flatten()),
        )));
    }
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| engine::error("building the rejects file", e.into()))?;
    Ok((schema, batch))
}

/// Refuse the run when `on_invalid: fail` meets an invalid row, or when more rows are invalid
/// than `max_invalid` allows (a count, or a percentage of the rows read).
pub fn check_limits(
    table: &TablePlan,
    rows: &[RejectedRow],
    rows_read: u64,
    rejects_file: Option<&str>,
) -> Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let see = match rejects_file {
        Some(path) => format!(" Every invalid row is listed in {path}."),
        None => String::new(),
    };
    let refuse = |what: String| Error::Refused {
        table: table.name.clone(),
        message: format!("{what}.{see} Fix the source file; nothing was committed."),
    };
    let share = |n: usize| {
        if rows_read == 0 {
            0.0
        } else {
            n as f64 * 100.0 / rows_read as f64
        }
    };
    let first_text = format!(
        "the first is {}, row {}: {}",
        first.file, first.row, first.messages
    );
    if table.validate.on_invalid == OnInvalid::Fail {
        return Err(refuse(format!(
            "{} of {} rows are invalid and `validate.on_invalid` is fail; {first_text}",
            rows.len(),
            rows_read
        )));
    }
    let max_invalid = crate::spec::limit_or_default(
        table.validate.max_invalid,
        crate::spec::DEFAULT_MAX_INVALID,
        rows_read,
    );
    if let Some((limit, default)) = max_invalid
        && rows.len() as f64 > limit.rows(rows_read)
    {
        let source = match default {
            true => {
                " (the default; set `validate: {max_invalid: …}` in the pipeline to allow more)"
            }
            false => "",
        };
        return Err(refuse(format!(
            "{} of {} rows ({:.1}%) are invalid; validate.max_invalid is {limit}{source}; {first_text}",
            rows.len(),
            rows_read,
            share(rows.len())
        )));
    }
    Ok(())
}

/// Every column the pipeline names must exist: in the source (`source.columns`) or in the
/// snapshot (key, compare/ignore, on_delete.set, output.columns).
pub fn check_columns(
    table: &TablePlan,
    source_columns: &[String],
    source_origin: &str,
    columns: &[String],
    origin: &str,
) -> Result<()> {
    let missing = |setting: &str, column: &String| Error::MissingColumn {
        table: table.name.clone(),
        column: column.clone(),
        setting: setting.to_string(),
        origin: origin.to_string(),
        available: columns.to_vec(),
    };
    if columns.iter().any(|c| c == ROW_HASH_COLUMN) {
        return Err(Error::ReservedColumn {
            table: table.name.clone(),
            column: ROW_HASH_COLUMN.to_string(),
        });
    }
    let cc = &table.change_columns;
    if let Some(c) = columns
        .iter()
        .find(|c| **c == cc.type_column || **c == cc.reason_column)
    {
        return Err(Error::ChangeColumnTaken {
            table: table.name.clone(),
            origin: origin.to_string(),
            column: c.clone(),
        });
    }
    for k in &table.key {
        if !columns.contains(k) {
            return Err(missing("key", k));
        }
    }
    let previous_taken = (table.key.iter())
        .flat_map(|k| [cc.previous(k), crate::diff::previous_key_column(k)])
        .find(|p| table.renames && columns.contains(p));
    if let Some(column) = previous_taken {
        return Err(Error::PreviousKeyColumnTaken {
            table: table.name.clone(),
            origin: origin.to_string(),
            column,
        });
    }
    let (setting, named) = table.compare.named();
    for c in named {
        if !columns.contains(c) {
            return Err(missing(setting, c));
        }
    }
    for (c, _) in &table.delete_set {
        if !columns.contains(c) {
            return Err(missing("on_delete.set", c));
        }
    }
    for (c, _) in &table.tolerance {
        if !columns.contains(c) {
            return Err(missing("tolerance", c));
        }
    }
    for n in &table.normalize {
        if !columns.contains(&n.column) {
            return Err(missing("normalize", &n.column));
        }
    }
    for c in &table.validate.not_null {
        if !columns.contains(c) {
            return Err(missing("validate.not_null", c));
        }
    }
    for c in &table.partition_by {
        if !columns.contains(c) {
            return Err(missing("partition_by", c));
        }
    }
    if let TableMode::Incremental { watermark } = &table.mode
        && !columns.contains(watermark)
    {
        return Err(missing("watermark", watermark));
    }
    for r in &table.references {
        if !columns.contains(&r.column) {
            return Err(missing("references", &r.column));
        }
    }
    for output in &table.outputs {
        for c in output.columns.iter().flatten() {
            if !columns.contains(c) && *c != cc.type_column && *c != cc.reason_column {
                let mut available = columns.to_vec();
                available.extend([cc.type_column.clone(), cc.reason_column.clone()]);
                return Err(Error::MissingColumn {
                    table: table.name.clone(),
                    column: c.clone(),
                    setting: "output.columns".into(),
                    origin: "the delta".into(),
                    available,
                });
            }
        }
    }
    for (c, _) in &table.source.columns {
        if !source_columns.contains(c) {
            return Err(Error::MissingColumn {
                table: table.name.clone(),
                column: c.clone(),
                setting: "source.columns".into(),
                origin: source_origin.to_string(),
                available: source_columns.to_vec(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(a: &[&str], b: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("a", Arc::new(StringArray::from(a.to_vec())) as ArrayRef),
            (
                "b",
                Arc::new(datafusion::arrow::array::Int64Array::from(b.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn a_key_repeated_in_another_batch_is_found() {
        let key = ["a".to_string(), "b".to_string()];
        let first = batch(&["x", "x", "y"], &[1, 2, 1]);
        assert!(keys_surely_unique(std::slice::from_ref(&first), &key).unwrap());
        let second = batch(&["z", "y"], &[1, 1]);
        assert!(!keys_surely_unique(&[first.clone(), second], &key).unwrap());
        // The same text split differently between the key columns is another key.
        let split = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(StringArray::from(vec!["a,b", "a"])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec!["c", "b,c"])) as ArrayRef,
            ),
        ])
        .unwrap();
        assert!(keys_surely_unique(&[split], &key).unwrap());
        assert!(!keys_surely_unique(&[first], &["a".to_string()]).unwrap());
    }
}
