//! The classification SQL (`sql/classify.sql`, `sql/delta.sql`) pinned by sqllogictest files
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
//! both tables have); `tolerance` a column's allowed move; `unchanged` keeps UNCHANGED rows.
//! Both tables are hashed over the compared columns (as a run whose stored hashes no longer
//! apply), classified and shaped by the queries, and the delta's rows come back in key order,
//! each value as text (`NULL` for null, `(empty)` for the empty string).

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
    DBOutput::Rows {
        types: vec![DefaultColumnType::Any; columns],
        rows,
    }
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
        };
        let rows_in = self
            .ctx
            .table("incoming")
            .await
            .map_err(failure)?
            .count()
            .await
            .map_err(failure)? as u64;
        let delta = tidemark::diff::sql::classify(&self.ctx, &settings, rows_in)
            .await
            .map_err(failure)?;
        Ok(rows_of(&delta.batches))
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
