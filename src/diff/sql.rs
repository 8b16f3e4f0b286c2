//! The SQL join strategy: the classification as `sql/classify.sql` states it, a full outer join
//! of the new snapshot and the baseline on the key and a CASE on the row hashes, then each
//! classified row's values fetched from both sides for the one delta builder
//! ([`super::delta`]). `sql/delta.sql` states the delta the builder makes; [`delta_by_query`]
//! runs it, as the oracle the builder is tested against.
//!
//! Callers register four tables on the session before calling [`classify`]:
//! `incoming` and `baseline` (all columns) and `incoming_hashes` and `baseline_hashes` (key
//! columns and `_row_hash`, computed over the same compared columns on both sides; see
//! [`register_hash_views`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::delta::{Pair, Pairs};
use super::row_hash::{ROW_HASH_COLUMN, ROW_HASH_UDF};
use super::{
    CHANGE_TYPE_COLUMN, Counts, Delta, DiffSettings, ident, ident_list, key_equal, literal,
    qualified,
};
use crate::engine;
use crate::error::Result;
use crate::spec::{ChangeKind, Tolerance};

const CLASSIFY_SQL: &str = include_str!("../../sql/classify.sql");
const DELTA_SQL: &str = include_str!("../../sql/delta.sql");
const RENAMES_SQL: &str = include_str!("../../sql/renames.sql");

/// SQL that is true when column `c` moved by more than its tolerance between the two sides
/// (or became null, or stopped being null). The small slack absorbs floating-point noise, so
/// a change of exactly the tolerance counts as none.
fn beyond_tolerance(column: &str, tolerance: Tolerance, old_side: &str, new_side: &str) -> String {
    let old = format!("CAST({} AS DOUBLE)", qualified(old_side, column));
    let new = format!("CAST({} AS DOUBLE)", qualified(new_side, column));
    let allowed = match tolerance {
        Tolerance::Absolute(t) => format!("{t:?}"),
        Tolerance::Relative(r) => format!("{r:?} * abs({old})"),
    };
    format!(
        "(({old} IS NULL) <> ({new} IS NULL) OR abs({new} - {old}) > {allowed} * (1 + 1e-9) + 1e-12)"
    )
}

/// Fill the classification query's placeholders.
pub fn classify_sql(settings: &DiffSettings) -> String {
    let key_columns = settings
        .key
        .iter()
        .map(|k| {
            format!(
                "coalesce({}, {}) AS {}",
                qualified("incoming", k),
                qualified("baseline", k),
                ident(k)
            )
        })
        .collect::<Vec<_>>()
        .join(",\n    ");
    let mut content_differs = vec!["baseline._row_hash <> incoming._row_hash".to_string()];
    content_differs.extend(
        settings
            .tolerance
            .iter()
            .map(|(c, t)| beyond_tolerance(c, *t, "baseline", "incoming")),
    );
    let content_differs = content_differs.join("\n            OR ");
    let row_filter = if settings.include_unchanged {
        "TRUE".to_string()
    } else {
        format!("baseline._row_hash IS NULL OR incoming._row_hash IS NULL OR {content_differs}")
    };
    CLASSIFY_SQL
        .replace("{key_columns}", &key_columns)
        .replace(
            "{key_join}",
            &key_equal(&settings.key, "baseline", "incoming"),
        )
        .replace("{content_differs}", &content_differs)
        .replace("{row_filter}", &row_filter)
}

/// SQL writing a value as a reason shows it: null as `null`, and the text `null` as `"null"`,
/// so that the two are told apart.
fn shown(value: &str) -> String {
    format!(
        "CASE WHEN {value} IS NULL THEN 'null' WHEN CAST({value} AS VARCHAR) = 'null' THEN '\"null\"' ELSE CAST({value} AS VARCHAR) END"
    )
}

/// Fill the delta query's placeholders.
pub fn delta_sql(settings: &DiffSettings) -> String {
    let values = settings
        .columns
        .iter()
        .map(|c| {
            if settings.key.contains(c) {
                format!("{} AS {}", qualified("classified", c), ident(c))
            } else if settings.baseline_columns.contains(c) {
                format!(
                    "CASE WHEN classified._change_type = 'DELETED' THEN {} ELSE {} END AS {}",
                    qualified("baseline", c),
                    qualified("incoming", c),
                    ident(c)
                )
            } else {
                format!("{} AS {}", qualified("incoming", c), ident(c))
            }
        })
        .collect::<Vec<_>>()
        .join(",\n    ");
    let changes: Vec<String> = settings
        .compared
        .iter()
        .map(|c| {
            let (old, new) = (qualified("baseline", c), qualified("incoming", c));
            let differs = match settings.tolerance.iter().find(|(t, _)| t == c) {
                Some((_, t)) => beyond_tolerance(c, *t, "baseline", "incoming"),
                None => format!("{old} IS DISTINCT FROM {new}"),
            };
            format!(
                "CASE WHEN {differs} THEN {} || {} || ' to ' || {} END",
                literal(&format!("{c} changed from ")),
                shown(&old),
                shown(&new)
            )
        })
        .collect();
    let column_changes = if changes.is_empty() {
        "''".to_string()
    } else {
        format!(
            "concat_ws('; ',\n            {})",
            changes.join(",\n            ")
        )
    };
    let key_order = settings
        .key
        .iter()
        .map(|k| qualified("classified", k))
        .collect::<Vec<_>>()
        .join(", ");
    DELTA_SQL
        .replace("{values}", &values)
        .replace("{column_changes}", &column_changes)
        .replace(
            "{incoming_join}",
            &key_equal(&settings.key, "classified", "incoming"),
        )
        .replace(
            "{baseline_join}",
            &key_equal(&settings.key, "classified", "baseline"),
        )
        .replace("{key_order}", &key_order)
}

/// Fill the renames query's placeholders: `delta` (the delta query) with its DELETED and NEW
/// rows of the same content paired.
pub fn renames_sql(settings: &DiffSettings, delta: &str) -> String {
    let list = |names: &[String], each: &dyn Fn(&str) -> String, by: &str| -> String {
        names.iter().map(|c| each(c)).collect::<Vec<_>>().join(by)
    };
    let previous = |k: &str| ident(&super::previous_key_column(k));
    let key_changes = list(
        &settings.key,
        &|k| {
            let (old, new) = (qualified("removed", k), qualified("added", k));
            format!(
                "CASE WHEN {old} IS DISTINCT FROM {new} THEN {} || {} || ' to ' || {} END",
                literal(&format!("key {k} changed from ")),
                shown(&old),
                shown(&new)
            )
        },
        ", ",
    );
    let came_in = |k: &str| format!("renamed.{} = added.{}", ident(k), ident(k));
    let went_in = |k: &str| {
        format!(
            "{} = removed.{}",
            qualified("renamed", &super::previous_key_column(k)),
            ident(k)
        )
    };
    RENAMES_SQL
        .replace("{delta}", delta)
        .replace("{content}", &ident_list(&settings.compared))
        .replace(
            "{same_content}",
            &list(
                &settings.compared,
                &|c| {
                    // In parentheses: the parser reads all that follows FROM as its operand.
                    format!(
                        "({} IS NOT DISTINCT FROM {})",
                        qualified("removed", c),
                        qualified("added", c)
                    )
                },
                " AND ",
            ),
        )
        .replace("{columns}", &ident_list(&settings.columns))
        .replace(
            "{added_columns}",
            &list(&settings.columns, &|c| qualified("added", c), ", "),
        )
        .replace(
            "{previous_keys}",
            &list(
                &settings.key,
                &|k| format!("{} AS {}", qualified("removed", k), previous(k)),
                ", ",
            ),
        )
        .replace(
            "{no_previous_keys}",
            &list(
                &settings.key,
                // A null of the key's type.
                &|k| format!("CASE WHEN FALSE THEN {} END AS {}", ident(k), previous(k)),
                ", ",
            ),
        )
        .replace("{key_changes}", &format!("concat_ws('; ', {key_changes})"))
        .replace("{came_in}", &list(&settings.key, &came_in, " AND "))
        .replace("{went_in}", &list(&settings.key, &went_in, " AND "))
        .replace("{key_order}", &ident_list(&settings.key))
}

/// Classify every key by `sql/classify.sql` and hold the result as the table `classified`;
/// returns the counts. `rows_in` is the number of rows of `incoming`.
async fn register_classified(
    ctx: &SessionContext,
    settings: &DiffSettings,
    rows_in: u64,
) -> Result<Counts> {
    let classified = ctx
        .sql(&classify_sql(settings))
        .await
        .map_err(|e| engine::error("planning the classification", e))?;
    let schema: SchemaRef = Arc::new(classified.schema().as_arrow().clone());
    let batches = classified
        .collect()
        .await
        .map_err(|e| engine::error("classifying rows", e))?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);

    let by_kind = count_kinds(
        &batches,
        &[ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted],
    )?;
    let count = |k: ChangeKind| by_kind.get(&k).copied().unwrap_or(0);
    let counts = Counts {
        rows_in,
        new: count(ChangeKind::New),
        changed: count(ChangeKind::Changed),
        deleted: count(ChangeKind::Deleted),
        renamed: 0,
        unchanged: rows_in - count(ChangeKind::New) - count(ChangeKind::Changed),
    };
    tracing::debug!(
        "classified the keys: {} new, {} changed, {} deleted",
        counts.new,
        counts.changed,
        counts.deleted
    );
    let table = MemTable::try_new(schema, vec![batches])
        .map_err(|e| engine::error("holding the classified keys", e))?;
    ctx.deregister_table("classified")
        .map_err(|e| engine::error("registering tables", e))?;
    ctx.register_table("classified", Arc::new(table))
        .map_err(|e| engine::error("registering tables", e))?;
    Ok(counts)
}

/// The join strategy: classify every key by the full outer join, then fetch the values of
/// each classified row from both sides, for [`super::delta::build`].
pub async fn pairs(ctx: &SessionContext, settings: &DiffSettings, rows_in: u64) -> Result<Pairs> {
    let counts = register_classified(ctx, settings, rows_in).await?;
    let fail = |what: &'static str| move |e| engine::error(what, e);
    let incoming = ctx
        .table("incoming")
        .await
        .map_err(fail("reading the snapshot"))?;
    let new_schema: SchemaRef = Arc::new(incoming.schema().as_arrow().clone());
    let old_columns: Vec<&String> = (settings.columns.iter())
        .filter(|c| settings.baseline_columns.contains(c))
        .collect();
    let mut selected = vec![qualified("classified", CHANGE_TYPE_COLUMN)];
    for (i, c) in settings.columns.iter().enumerate() {
        selected.push(format!("{} AS _new_{i}", qualified("incoming", c)));
    }
    for (i, c) in old_columns.iter().enumerate() {
        selected.push(format!("{} AS _old_{i}", qualified("baseline", c)));
    }
    let sql = format!(
        "SELECT {}\nFROM classified\nLEFT JOIN incoming ON {}\nLEFT JOIN baseline ON {}",
        selected.join(", "),
        key_equal(&settings.key, "classified", "incoming"),
        key_equal(&settings.key, "classified", "baseline"),
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(fail("planning the delta"))?
        .collect()
        .await
        .map_err(fail("fetching the changed rows"))?;
    let side = |names: &[&String], batch: &RecordBatch, from: usize| -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = (from..from + names.len())
            .map(|i| batch.column(i).clone())
            .collect();
        let fields: Vec<Field> = (names.iter())
            .zip(&columns)
            .map(|(name, column)| Field::new(name.as_str(), column.data_type().clone(), true))
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
            .map_err(|e| engine::error("fetching the changed rows", e.into()))
    };
    let new_names: Vec<&String> = settings.columns.iter().collect();
    let (mut new_rows, mut old_rows, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for batch in &batches {
        let kinds = cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| engine::error("fetching the changed rows", e.into()))?;
        let kinds = kinds.as_string::<i32>();
        for i in 0..batch.num_rows() {
            let at = rows.len();
            let kind = [ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted]
                .into_iter()
                .find(|k| k.canonical() == kinds.value(i))
                .unwrap_or(ChangeKind::Unchanged);
            rows.push(Pair {
                kind,
                new: (kind != ChangeKind::Deleted).then_some(at),
                old: (kind != ChangeKind::New).then_some(at),
            });
        }
        new_rows.push(side(&new_names, batch, 1)?);
        old_rows.push(side(&old_columns, batch, 1 + new_names.len())?);
    }
    Pairs::new(new_schema, (new_rows, old_rows), rows, counts)
}

/// Classify and build the delta by the join strategy. `rows_in` is the number of rows of
/// `incoming`.
pub async fn classify(
    ctx: &SessionContext,
    settings: &DiffSettings,
    rows_in: u64,
) -> Result<Delta> {
    let pairs = pairs(ctx, settings, rows_in).await?;
    super::delta::build(settings, &pairs)
}

/// The delta as `sql/delta.sql` states it: the oracle [`super::delta::build`] is tested
/// against (the same tables registered as for [`classify`]).
pub async fn delta_by_query(
    ctx: &SessionContext,
    settings: &DiffSettings,
    rows_in: u64,
) -> Result<Delta> {
    let mut counts = register_classified(ctx, settings, rows_in).await?;
    let renames = settings.renames && !settings.compared.is_empty();
    let query = match renames {
        true => renames_sql(settings, &delta_sql(settings)),
        false => delta_sql(settings),
    };
    let delta = ctx
        .sql(&query)
        .await
        .map_err(|e| engine::error("planning the delta", e))?;
    let schema: SchemaRef = Arc::new(delta.schema().as_arrow().clone());
    let batches = delta
        .collect()
        .await
        .map_err(|e| engine::error("building the delta", e))?;
    // The batches' own schema is the exact one (nullability can differ from the plan's).
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
    if renames {
        let renamed = count_kinds(&batches, &[ChangeKind::Renamed])?;
        counts.renamed = renamed.get(&ChangeKind::Renamed).copied().unwrap_or(0);
        counts.new -= counts.renamed;
        counts.deleted -= counts.renamed;
    }
    Ok(Delta {
        schema,
        batches,
        counts,
    })
}

/// How many rows of `batches` (the classification, or a delta) are of each of `kinds`.
fn count_kinds(batches: &[RecordBatch], kinds: &[ChangeKind]) -> Result<BTreeMap<ChangeKind, u64>> {
    let mut by_kind: BTreeMap<ChangeKind, u64> = BTreeMap::new();
    for batch in batches {
        let Some(of_rows) = batch.column_by_name(CHANGE_TYPE_COLUMN) else {
            continue;
        };
        for &kind in kinds {
            let label = StringArray::new_scalar(kind.canonical());
            let matches =
                eq(of_rows, &label).map_err(|e| engine::error("counting changes", e.into()))?;
            *by_kind.entry(kind).or_default() += matches.true_count() as u64;
        }
    }
    Ok(by_kind)
}

/// `incoming_hashes` and `baseline_hashes`: the stored hashes when they cover the same columns
/// the same way, else both re-hashed over the compared columns they share; plus the `carried`
/// columns that are compared outside the hash (tolerances).
pub async fn register_hash_views(
    ctx: &SessionContext,
    (table, key): (&str, &[String]),
    shared_compared: &[String],
    carried: &[String],
    types: &HashMap<String, DataType>,
    stored_hashes_apply: bool,
) -> Result<()> {
    let keys = ident_list(key);
    let (incoming_hash, baseline_hash) = if stored_hashes_apply {
        (ROW_HASH_COLUMN.to_string(), ROW_HASH_COLUMN.to_string())
    } else {
        let args = |cast_to_incoming: bool| {
            shared_compared
                .iter()
                .map(|c| {
                    if cast_to_incoming {
                        format!("CAST({} AS {})", ident(c), sql_type(&types[c]))
                    } else {
                        ident(c)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match shared_compared.is_empty() {
            // Nothing to compare (every column is a key): rows compare by key alone.
            true => (
                "arrow_cast(0, 'UInt64')".to_string(),
                "arrow_cast(0, 'UInt64')".to_string(),
            ),
            false => (
                format!("{}({})", ROW_HASH_UDF, args(false)),
                format!("{}({})", ROW_HASH_UDF, args(true)),
            ),
        }
    };
    for (view, source, hash) in [
        ("incoming_hashes", "incoming", incoming_hash),
        ("baseline_hashes", "baseline", baseline_hash),
    ] {
        let extra: String = carried.iter().map(|c| format!(", {}", ident(c))).collect();
        let sql = format!("SELECT {keys}, {hash} AS {ROW_HASH_COLUMN}{extra} FROM {source}");
        let frame = ctx
            .sql(&sql)
            .await
            .map_err(crate::engine::context(table, "hashing rows"))?;
        ctx.register_table(view, frame.into_view())
            .map_err(crate::engine::context(table, "hashing rows"))?;
    }
    Ok(())
}

/// The SQL name of an Arrow type, for casts in generated SQL.
pub(crate) fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tolerance: Vec<(String, Tolerance)>) -> DiffSettings {
        DiffSettings {
            key: vec!["sku".into()],
            compared: vec!["price".into()],
            columns: vec!["sku".into(), "price".into()],
            baseline_columns: vec!["sku".into(), "price".into()],
            include_unchanged: false,
            tolerance,
            renames: false,
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for tolerance in [
            vec![],
            vec![("price".to_string(), Tolerance::Relative(0.01))],
        ] {
            let s = settings(tolerance);
            for sql in [classify_sql(&s), delta_sql(&s)] {
                let body: String = sql.lines().filter(|l| !l.starts_with("--")).collect();
                assert!(!body.contains('{'), "{sql}");
            }
        }
    }

    #[test]
    fn tolerance_columns_are_compared_outside_the_hash() {
        let sql = classify_sql(&settings(vec![(
            "price".into(),
            Tolerance::Absolute(0.005),
        )]));
        assert!(sql.contains("abs(CAST(incoming.\"price\" AS DOUBLE) - CAST(baseline.\"price\" AS DOUBLE)) > 0.005"), "{sql}");
    }
}
