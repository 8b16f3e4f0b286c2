//! The diff core: the row hash UDF and the classification of every key as NEW, CHANGED,
//! DELETED or UNCHANGED, with a reason, by the SQL in `sql/`.
//!
//! Callers register four tables on the session before calling [`classify`]:
//! `incoming` and `baseline` (all columns) and `incoming_hashes` and `baseline_hashes` (key
//! columns and `_row_hash`, computed over the same compared columns on both sides).

pub mod matching;
pub mod paired;
pub mod row_hash;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::spec::{ChangeKind, Tolerance};

const CLASSIFY_SQL: &str = include_str!("../../sql/classify.sql");
const DELTA_SQL: &str = include_str!("../../sql/delta.sql");

/// Name of the change type column in the delta as computed (renamed on output).
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";
/// Name of the change reason column in the delta as computed (renamed on output).
pub const CHANGE_REASON_COLUMN: &str = "_change_reason";

/// What to compare and what to return.
#[derive(Debug, Clone)]
pub struct DiffSettings {
    /// Key columns.
    pub key: Vec<String>,
    /// Compared columns present on both sides, in table order (for reasons).
    pub compared: Vec<String>,
    /// Columns of the delta, in order (the new snapshot's columns).
    pub columns: Vec<String>,
    /// Columns of `columns` that the baseline has (DELETED rows carry null for the others).
    pub baseline_columns: Vec<String>,
    /// Whether UNCHANGED rows are returned too.
    pub include_unchanged: bool,
    /// Compared columns outside the row hash, compared with a tolerance instead; both hash
    /// views carry them.
    pub tolerance: Vec<(String, Tolerance)>,
}

/// Row counts by change kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Rows in the new snapshot.
    pub rows_in: u64,
    /// NEW rows.
    pub new: u64,
    /// CHANGED rows.
    pub changed: u64,
    /// DELETED rows.
    pub deleted: u64,
    /// UNCHANGED rows.
    pub unchanged: u64,
}

impl Counts {
    /// The count of one kind.
    pub fn of(&self, kind: ChangeKind) -> u64 {
        match kind {
            ChangeKind::New => self.new,
            ChangeKind::Changed => self.changed,
            ChangeKind::Deleted => self.deleted,
            ChangeKind::Unchanged => self.unchanged,
        }
    }
}

/// The result of a diff.
#[derive(Debug, Clone)]
pub struct Delta {
    /// Schema of the delta: the columns, then `_change_type` and `_change_reason`.
    pub schema: SchemaRef,
    /// The rows, ordered by key.
    pub batches: Vec<RecordBatch>,
    /// Counts by kind.
    pub counts: Counts,
}

/// Quote an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quoted SQL identifiers, comma separated (a key's columns in GROUP BY, PARTITION BY...).
pub fn ident_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quote an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn qualified(table: &str, column: &str) -> String {
    format!("{table}.{}", ident(column))
}

/// SQL that is true when `left` and `right` hold the same key.
pub fn key_equal(key: &[String], left: &str, right: &str) -> String {
    key.iter()
        .map(|k| format!("{} = {}", qualified(left, k), qualified(right, k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

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
                "CASE WHEN {differs} THEN {} || coalesce(CAST({old} AS VARCHAR), 'null') || ' to ' || coalesce(CAST({new} AS VARCHAR), 'null') END",
                literal(&format!("{c} changed from "))
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

/// Classify and build the delta. `rows_in` is the number of rows of `incoming`.
pub async fn classify(
    ctx: &SessionContext,
    settings: &DiffSettings,
    rows_in: u64,
) -> Result<Delta> {
    let classified = ctx
        .sql(&classify_sql(settings))
        .await
        .map_err(|e| Error::engine("planning the classification", e))?;
    let schema: SchemaRef = Arc::new(classified.schema().as_arrow().clone());
    let batches = classified
        .collect()
        .await
        .map_err(|e| Error::engine("classifying rows", e))?;
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);

    let mut by_kind: BTreeMap<ChangeKind, u64> = BTreeMap::new();
    for batch in &batches {
        let kinds = batch
            .column_by_name(CHANGE_TYPE_COLUMN)
            .expect("the classification query returns _change_type");
        for kind in [ChangeKind::New, ChangeKind::Changed, ChangeKind::Deleted] {
            let label = StringArray::new_scalar(kind.canonical());
            let matches =
                eq(kinds, &label).map_err(|e| Error::engine("counting changes", e.into()))?;
            *by_kind.entry(kind).or_default() += matches.true_count() as u64;
        }
    }
    let count = |k: ChangeKind| by_kind.get(&k).copied().unwrap_or(0);
    let counts = Counts {
        rows_in,
        new: count(ChangeKind::New),
        changed: count(ChangeKind::Changed),
        deleted: count(ChangeKind::Deleted),
        unchanged: rows_in - count(ChangeKind::New) - count(ChangeKind::Changed),
    };

    tracing::debug!(
        "classified the keys: {} new, {} changed, {} deleted",
        counts.new,
        counts.changed,
        counts.deleted
    );
    let table = MemTable::try_new(schema, vec![batches])
        .map_err(|e| Error::engine("holding the classified keys", e))?;
    ctx.deregister_table("classified")
        .map_err(|e| Error::engine("registering tables", e))?;
    ctx.register_table("classified", Arc::new(table))
        .map_err(|e| Error::engine("registering tables", e))?;
    let delta = ctx
        .sql(&delta_sql(settings))
        .await
        .map_err(|e| Error::engine("planning the delta", e))?;
    let schema: SchemaRef = Arc::new(delta.schema().as_arrow().clone());
    let batches = delta
        .collect()
        .await
        .map_err(|e| Error::engine("building the delta", e))?;
    // The batches' own schema is the exact one (nullability can differ from the plan's).
    let schema = batches.first().map(|b| b.schema()).unwrap_or(schema);
    Ok(Delta {
        schema,
        batches,
        counts,
    })
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
