//! PostgreSQL as a [`Database`]: each table's rows copied in binary into a temporary staging
//! table, then one `DELETE … USING`, one `UPDATE … FROM` for renamed keys and one
//! `INSERT … ON CONFLICT` per table, and the cursor row in `tidemark_deliveries`, all in the
//! round's transaction. Rounds of one destination are serialised by an advisory lock.

mod cells;
mod schema;

use std::collections::HashMap;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use futures::pin_mut;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;

use super::database::{
    Database, KIND, Staged, deleted_at, matching, rename_sql, stage_name, staged_columns,
    upsert_sql,
};
use super::database::{quoted, quoted_list};
use crate::diff::previous_key_column;
use crate::error::{Error, Result};
use crate::spec::secrets::Secret;
use crate::spec::{ChangeKind, Deletes};
use cells::{Cell, Values};
use schema::{TargetColumn, table_name};

/// A connection to a PostgreSQL database, in a round or between rounds.
pub struct Postgres {
    client: Client,
}

/// The TLS connector: rustls with ring, trusting the system's root certificates.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for certificate in found.certs {
        // A certificate the system lists but rustls cannot read is one fewer root, no error.
        let _ = roots.add(certificate);
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Destination {
            message: format!("setting up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn failed(doing: &str, e: tokio_postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(detail) = db.detail() {
                m.push_str(&format!(" ({detail})"));
            }
            m
        }
        None => {
            // The cause says what failed (a refused connection, a certificate not trusted).
            let mut m = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                m.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            m
        }
    };
    Error::Destination {
        message: format!("{doing}: {message}"),
    }
}

impl Postgres {
    /// Connect with the destination's URL (`postgresql://user@host:port/db`). TLS follows the
    /// URL's `sslmode` (`prefer` by default: TLS when the server offers it, `require` to insist,
    /// `disable`), with the server's certificate checked against the system's roots.
    pub async fn connect(url: &Secret) -> Result<Postgres> {
        let (client, connection) = tokio_postgres::connect(url.expose(), tls()?)
            .await
            .map_err(|e| failed("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("the PostgreSQL connection ended: {e}");
            }
        });
        Ok(Postgres { client })
    }

    /// Each table's cursor for `destination` of `pipeline`, read outside a round.
    async fn cursors_outside(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<HashMap<String, u64>> {
        let exists: Option<String> = self
            .client
            .query_one("SELECT to_regclass('tidemark_deliveries')::text", &[])
            .await
            .map_err(|e| failed("reading tidemark_deliveries", e))?
            .get(0);
        if exists.is_none() {
            return Ok(HashMap::new());
        }
        self.read_cursors(pipeline, destination).await
    }

    async fn read_cursors(
        &self,
        pipeline: &str,
        destination: &str,
    ) -> Result<HashMap<String, u64>> {
        let rows = self
            .client
            .query(
                "SELECT \"table\", version FROM tidemark_deliveries WHERE pipeline = $1 AND destination = $2",
                &[&pipeline, &destination],
            )
            .await
            .map_err(|e| failed("reading tidemark_deliveries", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    async fn execute(&self, doing: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        tracing::trace!("{sql}");
        self.client
            .execute(sql, params)
            .await
            .map_err(|e| failed(doing, e))
    }

    /// The target table's columns; `None` when it does not exist.
    async fn columns(&self, table: &str) -> Result<Option<Vec<TargetColumn>>> {
        let (_, schema, name) = table_name(table);
        let rows = self
            .client
            .query(
                "SELECT column_name::text, udt_name::text, numeric_precision, numeric_scale
                 FROM information_schema.columns
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2
                 ORDER BY ordinal_position",
                &[&schema, &name],
            )
            .await
            .map_err(|e| failed(&format!("reading the columns of {table}"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| TargetColumn {
                    name: r.get(0),
                    udt_name: r.get(1),
                    precision: r.get(2),
                    scale: r.get(3),
                })
                .collect(),
        ))
    }

    /// Whether the table has a primary key or unique index on exactly `key`.
    async fn has_unique_key(&self, table: &str, key: &[String]) -> Result<bool> {
        let (quoted_table, _, _) = table_name(table);
        let rows = self
            .client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY a.attname)
                 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid
                   AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
                 GROUP BY i.indexrelid",
                &[&quoted_table],
            )
            .await
            .map_err(|e| failed(&format!("reading the keys of {table}"), e))?;
        let mut wanted = key.to_vec();
        wanted.sort();
        Ok(rows.iter().any(|r| r.get::<_, Vec<String>>(0) == wanted))
    }
}

#[async_trait::async_trait]
impl Database for Postgres {
    async fn begin(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(|e| failed("starting a transaction", e))?;
        let lock = format!("tidemark/{pipeline}/{destination}");
        self.execute(
            "waiting for another delivery to this destination",
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&lock],
        )
        .await?;
        self.client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS tidemark_deliveries (
                    pipeline text NOT NULL, \"table\" text NOT NULL, destination text NOT NULL,
                    version bigint NOT NULL, run_id text NOT NULL, delivered_at timestamptz NOT NULL,
                    PRIMARY KEY (pipeline, \"table\", destination))",
            )
            .await
            .map_err(|e| failed("creating tidemark_deliveries", e))?;
        self.read_cursors(pipeline, destination).await
    }

    async fn fit(&mut self, staged: &Staged<'_>) -> Result<()> {
        let target = &staged.target.table;
        let wanted = staged.value_columns();
        let unfit = |message: String| Error::Destination {
            message: format!("table {target}: {message}; nothing was written"),
        };
        let Some(columns) = self.columns(target).await? else {
            if !staged.target.create {
                return Err(unfit(format!(
                    "it does not exist; create it, or set `create: true` to create it from the snapshot's columns (key {})",
                    staged.table.key.join(", ")
                )));
            }
            return self.create(staged, &wanted).await;
        };
        for (name, data_type) in &wanted {
            match columns.iter().find(|c| &c.name == name) {
                Some(column) if schema::fits(data_type, column) => {}
                Some(column) => {
                    return Err(unfit(format!(
                        "column {name} is {} but holds {} values; change its type to {}",
                        schema::shown(column),
                        crate::source::types::type_name(data_type),
                        schema::type_for(data_type).unwrap_or_else(|| "one that holds them".into())
                    )));
                }
                None if staged.target.create => self.add_column(target, name, data_type).await?,
                None => {
                    return Err(unfit(format!(
                        "it has no column {name}; add it ({}), or set `create: true` to add new columns",
                        schema::type_for(data_type).unwrap_or_default()
                    )));
                }
            }
        }
        if let Deletes::Soft(column) = &staged.target.deletes
            && !columns
                .iter()
                .any(|c| &c.name == column && c.udt_name == "timestamptz")
        {
            return Err(unfit(format!(
                "`deletes: soft` sets column {column} to the commit time: it must exist as timestamptz"
            )));
        }
        if !self.has_unique_key(target, &staged.table.key).await? {
            return Err(unfit(format!(
                "it has no primary key or unique index on the key ({}); rows are upserted on it",
                staged.table.key.join(", ")
            )));
        }
        Ok(())
    }

    async fn stage(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let (target, _, _) = table_name(&staged.target.table);
        let columns = staged.value_columns();
        let renames = (staged.delta.schema.fields().iter()).any(|f| {
            staged
                .table
                .key
                .iter()
                .any(|k| previous_key_column(k) == *f.name())
        });
        let mut select: Vec<String> = columns.iter().map(|(c, _)| quoted(c)).collect();
        select.push(format!("NULL::text AS {}", quoted(KIND)));
        if renames {
            select.extend(
                (staged.table.key.iter())
                    .map(|k| format!("{} AS {}", quoted(k), quoted(&previous_key_column(k)))),
            );
        }
        let stage = stage_name(index);
        self.client
            .batch_execute(&format!(
                "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {} FROM {target} WITH NO DATA",
                select.join(", ")
            ))
            .await
            .map_err(|e| failed("creating the staging table", e))?;
        let mut names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        names.push(KIND.to_string());
        if renames {
            names.extend(staged.table.key.iter().map(|k| previous_key_column(k)));
        }
        let list = quoted_list(&names);
        let types: Vec<tokio_postgres::types::Type> = self
            .client
            .prepare(&format!("SELECT {list} FROM {stage}"))
            .await
            .map_err(|e| failed("preparing the copy", e))?
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let sink = self
            .client
            .copy_in(&format!("COPY {stage} ({list}) FROM STDIN (FORMAT binary)"))
            .await
            .map_err(|e| failed("starting the copy", e))?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for batch in &staged.delta.batches {
            let values = batch_values(batch, &names)?;
            for row in 0..batch.num_rows() {
                let cells: Vec<Cell<'_>> = values.iter().map(|v| Cell { values: v, row }).collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await.map_err(|e| {
                    failed(&format!("copying rows into {}", staged.target.table), e)
                })?;
            }
        }
        writer
            .finish()
            .await
            .map_err(|e| failed(&format!("copying rows into {}", staged.target.table), e))?;
        Ok(())
    }

    async fn delete(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let (target, _, _) = table_name(&staged.target.table);
        let stage = stage_name(index);
        let on = matching(&staged.table.key, quoted);
        let deleted = ChangeKind::Deleted.canonical();
        let doing = format!("deleting rows of {}", staged.target.table);
        match &staged.target.deletes {
            Deletes::Ignore => {}
            Deletes::Delete => {
                let sql = format!(
                    "DELETE FROM {target} AS t USING {stage} AS s WHERE s.{} = '{deleted}' AND {on}",
                    quoted(KIND)
                );
                self.execute(&doing, &sql, &[]).await?;
            }
            Deletes::Soft(column) => {
                let sql = format!(
                    "UPDATE {target} AS t SET {c} = ($1::text)::timestamptz FROM {stage} AS s
                     WHERE s.{} = '{deleted}' AND {on} AND t.{c} IS NULL",
                    quoted(KIND),
                    c = quoted(column)
                );
                let at = deleted_at(&staged.record).to_rfc3339();
                self.execute(&doing, &sql, &[&at]).await?;
            }
        }
        Ok(())
    }

    async fn rename(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        if staged.record.counts.renamed == 0 {
            return Ok(());
        }
        let (target, _, _) = table_name(&staged.target.table);
        let doing = format!("moving renamed keys of {}", staged.target.table);
        self.execute(&doing, &rename_sql(staged, index, &target), &[])
            .await?;
        Ok(())
    }

    async fn upsert(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let (target, _, _) = table_name(&staged.target.table);
        let doing = format!("upserting rows of {}", staged.target.table);
        self.execute(&doing, &upsert_sql(staged, index, &target), &[])
            .await?;
        Ok(())
    }

    async fn advance(
        &mut self,
        pipeline: &str,
        destination: &str,
        staged: &Staged<'_>,
    ) -> Result<()> {
        let version = staged.record.version as i64;
        self.execute(
            "advancing the cursor in tidemark_deliveries",
            "INSERT INTO tidemark_deliveries (pipeline, \"table\", destination, version, run_id, delivered_at)
             VALUES ($1, $2, $3, $4, $5, now())
             ON CONFLICT (pipeline, \"table\", destination)
             DO UPDATE SET version = EXCLUDED.version, run_id = EXCLUDED.run_id, delivered_at = EXCLUDED.delivered_at",
            &[&pipeline, &staged.table.name, &destination, &version, &staged.record.run_id],
        )
        .await?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| failed("committing", e))
    }

    async fn cursors(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>> {
        self.cursors_outside(pipeline, destination).await
    }
}

impl Postgres {
    /// Create the target table from the delta's columns, the key as its primary key.
    async fn create(&self, staged: &Staged<'_>, columns: &[(String, DataType)]) -> Result<()> {
        let (target, _, _) = table_name(&staged.target.table);
        let mut defs = Vec::with_capacity(columns.len() + 2);
        for (name, data_type) in columns {
            let Some(sql_type) = schema::type_for(data_type) else {
                return Err(Error::Destination {
                    message: format!(
                        "table {}: column {name} holds {} values, which PostgreSQL has no column type for",
                        staged.target.table,
                        crate::source::types::type_name(data_type)
                    ),
                });
            };
            let not_null = if staged.table.key.contains(name) {
                " NOT NULL"
            } else {
                ""
            };
            defs.push(format!("{} {sql_type}{not_null}", quoted(name)));
        }
        if let Deletes::Soft(column) = &staged.target.deletes {
            defs.push(format!("{} timestamptz", quoted(column)));
        }
        defs.push(format!("PRIMARY KEY ({})", quoted_list(&staged.table.key)));
        // A tenth of each page left free, so that a changed row's new version fits on its page
        // (a HOT update: no index entry to write). Measured on a 1M-row table's day 2 (50k
        // rows changed): the upsert ~20% faster, for ~10% more space.
        let sql = format!(
            "CREATE TABLE {target} ({}) WITH (fillfactor = 90)",
            defs.join(", ")
        );
        self.execute(
            &format!("creating table {}", staged.target.table),
            &sql,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Add a column the snapshot gained (`create: true`).
    async fn add_column(&self, table: &str, name: &str, data_type: &DataType) -> Result<()> {
        let (target, _, _) = table_name(table);
        let sql_type = schema::type_for(data_type).ok_or_else(|| Error::Destination {
            message: format!(
                "table {table}: column {name} holds {} values, which PostgreSQL has no column type for",
                crate::source::types::type_name(data_type)
            ),
        })?;
        let sql = format!(
            "ALTER TABLE {target} ADD COLUMN {} {sql_type}",
            quoted(name)
        );
        self.execute(&format!("adding column {name} to {table}"), &sql, &[])
            .await?;
        Ok(())
    }
}

/// The values of `names` in `batch` (see [`staged_columns`]), nested columns as JSON texts.
fn batch_values(batch: &RecordBatch, names: &[String]) -> Result<Vec<Values>> {
    (staged_columns(batch, names)?.into_iter())
        .map(|column| match schema::is_nested(column.data_type()) {
            true => json_texts(&column).map(Values::Json),
            false => Ok(Values::Arrow(column)),
        })
        .collect()
}

/// Each row of a nested column as JSON text.
fn json_texts(column: &std::sync::Arc<dyn Array>) -> Result<Vec<Option<String>>> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let field = Field::new("v", column.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![field])),
        vec![column.clone()],
    )
    .map_err(|e| Error::Destination {
        message: format!("rendering JSON: {e}"),
    })?;
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
    writer
        .write(&batch)
        .and_then(|()| writer.finish())
        .map_err(|e| Error::Destination {
            message: format!("rendering JSON: {e}"),
        })?;
    drop(writer);
    let text = String::from_utf8(out).map_err(|e| Error::Destination {
        message: e.to_string(),
    })?;
    Ok(text
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            row.get("v").filter(|v| !v.is_null()).map(|v| v.to_string())
        })
        .collect())
}
