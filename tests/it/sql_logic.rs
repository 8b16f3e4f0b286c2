//! The classification SQL (`sql/classify.sql`, `sql/delta.sql`, `sql/renames.sql`) pinned by sqllogictest files
//! (`tests/slt/*.slt`), as DataFusion pins its own SQL.
//!
//! A file creates the `incoming` and `baseline` tables with plain SQL, then asks for their delta
//! with one line of its own:
//!
//! ```text
//! query TTTT
//! DELTA key=sku compare=price,qty tolerance=price:0.5 unchanged
//! ```
//!
//! `key` names the key columns (`%20` for a space in a name); `compare` the compared columns (default: every non-key column
//! both tables have); `tolerance` a column's allowed move; `unchanged` keeps UNCHANGED rows;
//! `renames` pairs DELETED and NEW rows of the same content (`sql/renames.sql`).
//! Both tables are hashed over the compared columns (as a run whose stored hashes no longer
//! apply), classified and shaped by the queries, and the delta's rows come back in key order,
//! each value as text (`NULL` for null, `(empty)` for the empty string). Each directive is
//! answered twice, by the query and by the delta builder every strategy uses
//! (`diff::delta::build`), and the two must agree row for row.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use tidemark::diff::DiffSettings;
use tidemark::spec::Tolerance;

struct Engine {
    ctx: SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure(e.to_string())
}

fn rows_of(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let columns = batches.first().map_or(0, |b| b.num_columns());
    DBOutput::Rows {
        types: vec![DefaultColumnType::Any; columns],
        rows: text_of(batches),
    }
}

/// Every value as text: `NULL` for null, `(empty)` for the empty string.
fn text_of(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| match c.is_null(i) {
                        true => "NULL".to_string(),
                        false => match array_value_to_string(c, i).unwrap() {
                            text if text.is_empty() => "(empty)".to_string(),
                            text => text,
                        },
                    })
                    .collect(),
            );
        }
    }
    rows
}

impl Engine {
    async fn columns(&self, table: &str) -> Result<Vec<(String, DataType)>, Failure> {
        let frame = self.ctx.table(table).await.map_err(failure)?;
        Ok(frame
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect())
    }

    /// `DELTA key=... [compare=...] [tolerance=col:amount,...] [unchanged]`.
    async fn delta(&self, directive: &str) -> Result<DBOutput<DefaultColumnType>, Failure> {
        let mut words: HashMap<&str, &str> = HashMap::new();
        for word in directive.split_whitespace() {
            let (name, value) = word.split_once('=').unwrap_or((word, ""));
            words.insert(name, value);
        }
        let list = |name: &str| -> Vec<String> {
            words
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.split(',').map(|s| s.replace("%20", " ")).collect())
                .unwrap_or_default()
        };
        let key = list("key");
        let incoming = self.columns("incoming").await?;
        let baseline: Vec<String> = self
            .columns("baseline")
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let columns: Vec<String> = incoming.iter().map(|(n, _)| n.clone()).collect();
        let compared = match list("compare") {
            named if !named.is_empty() => named,
            _ => columns
                .iter()
                .filter(|c| !key.contains(c) && baseline.contains(c))
                .cloned()
                .collect(),
        };
        let tolerance: Vec<(String, Tolerance)> = list("tolerance")
            .iter()
            .map(|t| {
                let (column, amount) = t.split_once(':').expect("tolerance=column:amount");
                (
                    column.to_string(),
                    Tolerance::Absolute(amount.parse().unwrap()),
                )
            })
            .collect();
        let hashed: Vec<String> = compared
            .iter()
            .filter(|c| !tolerance.iter().any(|(t, _)| t == *c))
            .cloned()
            .collect();
        let carried: Vec<String> = tolerance.iter().map(|(c, _)| c.clone()).collect();
        let types: HashMap<String, DataType> = incoming.into_iter().collect();
        for view in ["incoming_hashes", "baseline_hashes"] {
            self.ctx.deregister_table(view).map_err(failure)?;
        }
        tidemark::diff::sql::register_hash_views(
            &self.ctx,
            ("slt", &key),
            &hashed,
            &carried,
            &types,
            false,
        )
        .await
        .map_err(failure)?;
        let settings = DiffSettings {
            key,
            compared,
            baseline_columns: columns
                .iter()
                .filter(|c| baseline.contains(c))
                .cloned()
                .collect(),
            columns,
            include_unchanged: words.contains_key("unchanged"),
            tolerance,
            renames: words.contains_key("renames"),
        };
        let rows_in = self
            .ctx
            .table("incoming")
            .await
            .map_err(failure)?
            .count()
            .await
            .map_err(failure)? as u64;
        // The query (`sql/delta.sql`) states the delta; the builder every strategy uses must
        // give the same rows.
        let by_query = tidemark::diff::sql::delta_by_query(&self.ctx, &settings, rows_in)
            .await
            .map_err(failure)?;
        let built = tidemark::diff::sql::classify(&self.ctx, &settings, rows_in)
            .await
            .map_err(failure)?;
        let (by_query_rows, built_rows) = (text_of(&by_query.batches), text_of(&built.batches));
        if by_query_rows != built_rows {
            return Err(Failure(format!(
                "the delta builder gives {built_rows:?}, the query {by_query_rows:?}"
            )));
        }
        Ok(rows_of(&built.batches))
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = Failure;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        if let Some(directive) = sql.trim().strip_prefix("DELTA") {
            return self.delta(directive).await;
        }
        let frame = self.ctx.sql(sql).await.map_err(failure)?;
        let batches = frame.collect().await.map_err(failure)?;
        let statement = sql.trim_start().to_ascii_uppercase();
        if statement.starts_with("CREATE") || statement.starts_with("DROP") {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(rows_of(&batches))
    }

    async fn shutdown(&mut self) {}
}

#[test]
fn the_classification_sql_gives_what_the_slt_files_say() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    runtime.block_on(async {
        for file in &files {
            let mut runner = sqllogictest::Runner::new(|| async {
                Ok(Engine {
                    ctx: tidemark::engine::session(),
                })
            });
            if let Err(e) = runner.run_file_async(file).await {
                panic!("{}: {}", file.display(), e.display(false));
            }
        }
    });
}

/// One random pair of tables, as SQL: columns of every kind the query compares, nulls, the
/// text `null` and the empty string, a column the baseline lacks, a tolerance, UNCHANGED rows,
/// and with renames rows whose key changed and contents more than one row holds.
fn random_case(r: &mut crate::workdir::Lcg) -> (Vec<String>, String) {
    let kinds: [(&str, &str, &[&str]); 5] = [
        (
            "n",
            "BIGINT",
            &["NULL", "0", "1", "-3", "9223372036854775807"],
        ),
        (
            "x",
            "DOUBLE",
            &["NULL", "0.0", "0.5", "1.0", "1.25", "-2.5"],
        ),
        (
            "t",
            "VARCHAR",
            &["NULL", "''", "'null'", "'a'", "'A'", "'a b'"],
        ),
        ("b", "BOOLEAN", &["NULL", "true", "false"]),
        (
            "d",
            "DATE",
            &["NULL", "DATE '2024-01-01'", "DATE '2024-02-29'"],
        ),
    ];
    let baseline_lacks = r.chance(20).then(|| r.below(kinds.len() as u64) as usize);
    let renames = r.chance(40);
    // Each table's rows: (key, a value of every kind).
    let mut rows_of: [Vec<(u64, Vec<&str>)>; 2] = [Vec::new(), Vec::new()];
    for side in &mut rows_of {
        for key in 0..8 {
            if r.chance(60) {
                side.push((key, kinds.iter().map(|k| *r.pick(k.2)).collect()));
            }
        }
    }
    if renames {
        // Rows whose key changed, and rows whose content more than one row holds (they
        // must not pair).
        let removed: Vec<(u64, Vec<&str>)> = rows_of[0].clone();
        for (key, values) in removed {
            if r.chance(40) {
                rows_of[1].push((key + 10, values.clone()));
            }
            if r.chance(15) {
                let side = r.below(2) as usize;
                rows_of[side].push((key + 20, values));
            }
        }
    }
    let mut statements = Vec::new();
    for ((table, lacking), table_rows) in [("baseline", baseline_lacks), ("incoming", None)]
        .into_iter()
        .zip(&rows_of)
    {
        let columns: Vec<usize> = (0..kinds.len()).filter(|&i| Some(i) != lacking).collect();
        let declared: Vec<String> = std::iter::once("k BIGINT".to_string())
            .chain(
                columns
                    .iter()
                    .map(|&i| format!("{} {}", kinds[i].0, kinds[i].1)),
            )
            .collect();
        let rows: Vec<String> = (table_rows.iter())
            .map(|(key, values)| {
                let values: Vec<&str> = columns.iter().map(|&i| values[i]).collect();
                format!("({key}, {})", values.join(", "))
            })
            .collect();
        statements.push(format!("DROP TABLE IF EXISTS {table}"));
        statements.push(match rows.is_empty() {
            true => format!("CREATE TABLE {table} ({})", declared.join(", ")),
            false => format!(
                "CREATE TABLE {table} ({}) AS VALUES {}",
                declared.join(", "),
                rows.join(", ")
            ),
        });
    }
    let mut directive = "DELTA key=k".to_string();
    if r.chance(25) && baseline_lacks.is_none() {
        directive.push_str(" compare=t,x");
    }
    if r.chance(30) && baseline_lacks != Some(1) {
        directive.push_str(&format!(" tolerance=x:{}", r.pick(&["0.25", "0.5", "1"])));
    }
    if r.chance(30) {
        directive.push_str(" unchanged");
    }
    if renames {
        directive.push_str(" renames");
    }
    (statements, directive)
}

#[test]
fn the_delta_builder_agrees_with_the_delta_query_on_random_tables() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut r = crate::workdir::Lcg(17);
    let (mut rows, mut renamed) = (0, 0);
    runtime.block_on(async {
        for case in 0..400 {
            let (statements, directive) = random_case(&mut r);
            let engine = Engine {
                ctx: tidemark::engine::session(),
            };
            for sql in &statements {
                engine.ctx.sql(sql).await.unwrap().collect().await.unwrap();
            }
            // Engine::delta fails when the builder and the query disagree.
            match engine.delta(directive.trim_start_matches("DELTA")).await {
                Ok(DBOutput::Rows { rows: got, .. }) => {
                    rows += got.len();
                    renamed += got
                        .iter()
                        .filter(|r| r.contains(&"RENAMED".to_string()))
                        .count();
                }
                Ok(_) => unreachable!("a delta is rows"),
                Err(e) => panic!("case {case}: {directive}\n{}\n{e}", statements.join(";\n")),
            }
        }
    });
    // The cases were not all empty, and some rows were renamed.
    assert!(rows > 1000, "{rows} delta rows");
    assert!(renamed > 50, "{renamed} renamed rows");
}
