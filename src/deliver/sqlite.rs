//! SQLite as a [`Database`] (the embedded one): a round is one `BEGIN IMMEDIATE` transaction
//! (which also keeps two deliveries to the same file apart); each table's rows are inserted
//! into a temporary staging table by one prepared statement, then one `DELETE`, one
//! `UPDATE … FROM` for renamed keys and one `INSERT … ON CONFLICT` per table, and the cursor row
//! in `tidemark_deliveries`.
//!
//! SQLite's columns hold what they are given: integers and booleans go in as INTEGER, floats as
//! REAL, binary as BLOB, and decimals, dates and timestamps as their ISO text (a NUMERIC column
//! would turn `12.30` into the float 12.3, so decimals are kept out of one).

use std::collections::HashMap;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use rusqlite::types::Value;

use super::database::{
    Database, KIND, Staged, deleted_at, matching, quoted, quoted_list, rename_sql, stage_name,
    staged_columns, upsert_sql,
};
use crate::diff::previous_key_column;
use crate::error::{Error, Result};
use crate::spec::{ChangeKind, Deletes};

/// An open SQLite file.
pub struct Sqlite {
    connection: rusqlite::Connection,
    path: String,
}

/// The SQLite column type a column of `data_type` is created with; `None`: none holds it.
fn type_for(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        t if t.is_integer() => "INTEGER",
        DataType::Boolean => "INTEGER",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "REAL",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "TEXT",
        DataType::Decimal128(_, _) | DataType::Date32 | DataType::Date64 => "TEXT",
        DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_) => "TEXT",
        _ => return None,
    })
}

/// A declared column type's affinity, by SQLite's rules (section 3.1 of its datatype page).
fn affinity(declared: &str) -> &'static str {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        "INTEGER"
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        "TEXT"
    } else if d.contains("BLOB") || d.is_empty() {
        "BLOB"
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// Whether a column declared `declared` keeps every value of `data_type` as it is sent.
fn fits(data_type: &DataType, declared: &str) -> bool {
    let wanted = type_for(data_type);
    match (affinity(declared), wanted) {
        // No affinity: a value is stored as it is given.
        ("BLOB", Some(_)) => true,
        ("INTEGER" | "NUMERIC", Some("INTEGER")) => true,
        ("REAL" | "NUMERIC", Some("REAL")) => true,
        (affinity, Some(wanted)) => affinity == wanted,
        (_, None) => false,
    }
}

fn failed(doing: &str, path: &str, e: rusqlite::Error) -> Error {
    Error::Destination {
        message: format!("{path}: {doing}: {e}"),
    }
}

impl Sqlite {
    /// Open (or create) the file at `path`.
    pub fn open(path: &str) -> Result<Sqlite> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let connection = rusqlite::Connection::open(path)
            .map_err(|e| failed("opening the database", path, e))?;
        // Another process's round holds the file's write lock for as long as it takes; the
        // foreign keys a schema declares are enforced (SQLite leaves that to each connection).
        connection
            .busy_timeout(Duration::from_secs(600))
            .and_then(|()| connection.execute_batch("PRAGMA foreign_keys = ON"))
            .map_err(|e| failed("opening the database", path, e))?;
        Ok(Sqlite {
            connection,
            path: path.to_string(),
        })
    }

    fn execute(&self, doing: &str, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<usize> {
        tracing::trace!("{sql}");
        self.connection
            .execute(sql, params)
            .map_err(|e| failed(doing, &self.path, e))
    }

    fn read_cursors(&self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>> {
        let doing = "reading tidemark_deliveries";
        let mut statement = self
            .connection
            .prepare("SELECT \"table\", version FROM tidemark_deliveries WHERE pipeline = ?1 AND destination = ?2")
            .map_err(|e| failed(doing, &self.path, e))?;
        let rows = statement
            .query_map([pipeline, destination], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| failed(doing, &self.path, e))?;
        rows.map(|r| {
            r.map(|(t, v)| (t, v.max(0) as u64))
                .map_err(|e| failed(doing, &self.path, e))
        })
        .collect()
    }

    /// The target table's columns and declared types; `None` when it does not exist.
    fn columns(&self, table: &str) -> Result<Option<Vec<(String, String)>>> {
        let doing = "reading the table's columns";
        let mut statement = self
            .connection
            .prepare(&format!("PRAGMA table_info({})", quoted(table)))
            .map_err(|e| failed(doing, &self.path, e))?;
        let columns: Vec<(String, String)> = statement
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(|e| failed(doing, &self.path, e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| failed(doing, &self.path, e))?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// Whether the table has a primary key or unique index on exactly `key`.
    fn has_unique_key(&self, table: &str, key: &[String]) -> Result<bool> {
        let doing = "reading the table's keys";
        let mut wanted = key.to_vec();
        wanted.sort();
        // The primary key (an INTEGER PRIMARY KEY is the rowid and has no index of its own).
        let mut info = self
            .connection
            .prepare(&format!("PRAGMA table_info({})", quoted(table)))
            .map_err(|e| failed(doing, &self.path, e))?;
        let mut primary: Vec<String> = info
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))
            .map_err(|e| failed(doing, &self.path, e))?
            .filter_map(|r| r.ok().filter(|(_, pk)| *pk > 0).map(|(n, _)| n))
            .collect();
        primary.sort();
        if primary == wanted {
            return Ok(true);
        }
        let mut indexes = self
            .connection
            .prepare(&format!("PRAGMA index_list({})", quoted(table)))
            .map_err(|e| failed(doing, &self.path, e))?;
        let unique: Vec<String> = indexes
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, bool>(2)?)))
            .map_err(|e| failed(doing, &self.path, e))?
            .filter_map(|r| r.ok().filter(|(_, u)| *u).map(|(n, _)| n))
            .collect();
        for index in unique {
            let mut info = self
                .connection
                .prepare(&format!("PRAGMA index_info({})", quoted(&index)))
                .map_err(|e| failed(doing, &self.path, e))?;
            let mut columns: Vec<String> = info
                .query_map([], |r| r.get::<_, String>(2))
                .map_err(|e| failed(doing, &self.path, e))?
                .filter_map(|r| r.ok())
                .collect();
            columns.sort();
            if columns == wanted {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Row `row` of `array` as the value SQLite stores.
fn value(array: &dyn Array, formatter: &ArrayFormatter<'_>, row: usize) -> Value {
    // A column of no values (type Null) has no null buffer: every row is null.
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Int8 => Value::Integer(array.as_primitive::<Int8Type>().value(row) as i64),
        DataType::Int16 => Value::Integer(array.as_primitive::<Int16Type>().value(row) as i64),
        DataType::Int32 => Value::Integer(array.as_primitive::<Int32Type>().value(row) as i64),
        DataType::Int64 => Value::Integer(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::Integer(array.as_primitive::<UInt8Type>().value(row) as i64),
        DataType::UInt16 => Value::Integer(array.as_primitive::<UInt16Type>().value(row) as i64),
        DataType::UInt32 => Value::Integer(array.as_primitive::<UInt32Type>().value(row) as i64),
        DataType::Float32 => Value::Real(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => Value::Real(array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::Integer(array.as_boolean().value(row) as i64),
        DataType::Binary => Value::Blob(array.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Value::Blob(array.as_binary::<i64>().value(row).to_vec()),
        _ => Value::Text(formatter.value(row).to_string()),
    }
}

#[async_trait::async_trait]
impl Database for Sqlite {
    async fn begin(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>> {
        self.connection
            .execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS tidemark_deliveries (
                    pipeline TEXT NOT NULL, \"table\" TEXT NOT NULL, destination TEXT NOT NULL,
                    version INTEGER NOT NULL, run_id TEXT NOT NULL, delivered_at TEXT NOT NULL,
                    PRIMARY KEY (pipeline, \"table\", destination))",
            )
            .map_err(|e| failed("starting a transaction", &self.path, e))?;
        self.read_cursors(pipeline, destination)
    }

    async fn fit(&mut self, staged: &Staged<'_>) -> Result<()> {
        let target = &staged.target.table;
        let wanted = staged.value_columns();
        let unfit = |message: String| Error::Destination {
            message: format!(
                "{}: table {target}: {message}; nothing was written",
                self.path
            ),
        };
        let Some(columns) = self.columns(target)? else {
            if !staged.target.create {
                return Err(unfit(format!(
                    "it does not exist; create it, or set `create: true` to create it from the snapshot's columns (key {})",
                    staged.table.key.join(", ")
                )));
            }
            let mut defs = Vec::with_capacity(wanted.len() + 2);
            for (name, data_type) in &wanted {
                let sql_type = type_for(data_type).ok_or_else(|| {
                    unfit(format!(
                        "column {name} holds {} values, which SQLite has no column type for",
                        crate::source::types::type_name(data_type)
                    ))
                })?;
                defs.push(format!("{} {sql_type}", quoted(name)));
            }
            if let Deletes::Soft(column) = &staged.target.deletes {
                defs.push(format!("{} TEXT", quoted(column)));
            }
            defs.push(format!("PRIMARY KEY ({})", quoted_list(&staged.table.key)));
            let sql = format!("CREATE TABLE {} ({})", quoted(target), defs.join(", "));
            self.execute(&format!("creating table {target}"), &sql, &[])?;
            return Ok(());
        };
        for (name, data_type) in &wanted {
            match columns.iter().find(|(c, _)| c == name) {
                Some((_, declared)) if fits(data_type, declared) => {}
                Some((_, declared)) => {
                    return Err(unfit(format!(
                        "column {name} is {declared} but holds {} values; declare it {}",
                        crate::source::types::type_name(data_type),
                        type_for(data_type).unwrap_or("with a type that keeps them")
                    )));
                }
                None if staged.target.create => {
                    let sql_type = type_for(data_type).unwrap_or("BLOB");
                    let sql = format!(
                        "ALTER TABLE {} ADD COLUMN {} {sql_type}",
                        quoted(target),
                        quoted(name)
                    );
                    self.execute(&format!("adding column {name} to {target}"), &sql, &[])?;
                }
                None => {
                    return Err(unfit(format!(
                        "it has no column {name}; add it, or set `create: true` to add new columns"
                    )));
                }
            }
        }
        if let Deletes::Soft(column) = &staged.target.deletes
            && !columns.iter().any(|(c, _)| c == column)
        {
            return Err(unfit(format!(
                "`deletes: soft` sets column {column} to the commit time: it must exist"
            )));
        }
        if !self.has_unique_key(target, &staged.table.key)? {
            return Err(unfit(format!(
                "it has no primary key or unique index on the key ({}); rows are upserted on it",
                staged.table.key.join(", ")
            )));
        }
        Ok(())
    }

    async fn stage(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let columns = staged.value_columns();
        let mut names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        names.push(KIND.to_string());
        let renames = (staged.delta.schema.fields().iter()).any(|f| {
            staged
                .table
                .key
                .iter()
                .any(|k| previous_key_column(k) == *f.name())
        });
        if renames {
            names.extend(staged.table.key.iter().map(|k| previous_key_column(k)));
        }
        let stage = stage_name(index);
        let sql = format!("CREATE TEMP TABLE {stage} ({})", quoted_list(&names));
        self.execute("creating the staging table", &sql, &[])?;
        let placeholders = (1..=names.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let doing = format!("staging rows for {}", staged.target.table);
        let mut insert = self
            .connection
            .prepare(&format!(
                "INSERT INTO {stage} ({}) VALUES ({placeholders})",
                quoted_list(&names)
            ))
            .map_err(|e| failed(&doing, &self.path, e))?;
        let options = FormatOptions::default();
        for batch in &staged.delta.batches {
            let arrays = staged_columns(batch, &names)?;
            let formatters = (arrays.iter())
                .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Destination {
                    message: format!("{doing}: {e}"),
                })?;
            for row in 0..batch.num_rows() {
                let values: Vec<Value> = (arrays.iter().zip(&formatters))
                    .map(|(a, f)| value(a.as_ref(), f, row))
                    .collect();
                insert
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| failed(&doing, &self.path, e))?;
            }
        }
        Ok(())
    }

    async fn delete(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let target = quoted(&staged.target.table);
        let exists = format!(
            "EXISTS (SELECT 1 FROM {} AS s WHERE s.{} = '{}' AND {})",
            stage_name(index),
            quoted(KIND),
            ChangeKind::Deleted.canonical(),
            matching(&staged.table.key, quoted)
        );
        let doing = format!("deleting rows of {}", staged.target.table);
        match &staged.target.deletes {
            Deletes::Ignore => {}
            Deletes::Delete => {
                self.execute(
                    &doing,
                    &format!("DELETE FROM {target} AS t WHERE {exists}"),
                    &[],
                )?;
            }
            Deletes::Soft(column) => {
                let c = quoted(column);
                let sql =
                    format!("UPDATE {target} AS t SET {c} = ?1 WHERE {exists} AND t.{c} IS NULL");
                let at = deleted_at(&staged.record).to_rfc3339();
                self.execute(&doing, &sql, &[&at])?;
            }
        }
        Ok(())
    }

    async fn rename(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        if staged.record.counts.renamed == 0 {
            return Ok(());
        }
        let sql = rename_sql(staged, index, &quoted(&staged.target.table));
        self.execute(
            &format!("moving renamed keys of {}", staged.target.table),
            &sql,
            &[],
        )?;
        Ok(())
    }

    async fn upsert(&mut self, index: usize, staged: &Staged<'_>) -> Result<()> {
        let sql = upsert_sql(staged, index, &quoted(&staged.target.table));
        self.execute(
            &format!("upserting rows of {}", staged.target.table),
            &sql,
            &[],
        )?;
        Ok(())
    }

    async fn advance(
        &mut self,
        pipeline: &str,
        destination: &str,
        staged: &Staged<'_>,
    ) -> Result<()> {
        let version = staged.record.version as i64;
        let now = chrono::Utc::now().to_rfc3339();
        self.execute(
            "advancing the cursor in tidemark_deliveries",
            "INSERT INTO tidemark_deliveries (pipeline, \"table\", destination, version, run_id, delivered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (pipeline, \"table\", destination)
             DO UPDATE SET version = excluded.version, run_id = excluded.run_id, delivered_at = excluded.delivered_at",
            &[&pipeline, &staged.table.name, &destination, &version, &staged.record.run_id, &now],
        )?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        // The staging tables go with the round.
        let drops: Vec<String> = {
            let mut statement = self
                .connection
                .prepare("SELECT name FROM temp.sqlite_master WHERE type = 'table' AND name LIKE '\\_tidemark\\_stage\\_%' ESCAPE '\\'")
                .map_err(|e| failed("committing", &self.path, e))?;
            statement
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| failed("committing", &self.path, e))?
                .filter_map(|r| r.ok())
                .collect()
        };
        for table in drops {
            self.execute(
                "committing",
                &format!("DROP TABLE temp.{}", quoted(&table)),
                &[],
            )?;
        }
        self.connection
            .execute_batch("COMMIT")
            .map_err(|e| failed("committing", &self.path, e))
    }

    async fn cursors(&mut self, pipeline: &str, destination: &str) -> Result<HashMap<String, u64>> {
        let exists: bool = self
            .connection
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'tidemark_deliveries'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| failed("reading tidemark_deliveries", &self.path, e))?;
        match exists {
            true => self.read_cursors(pipeline, destination),
            false => Ok(HashMap::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_fits_by_its_affinity() {
        assert!(fits(&DataType::Int64, "INTEGER"));
        assert!(fits(&DataType::Int64, "bigint"));
        assert!(fits(&DataType::Int64, ""));
        assert!(!fits(&DataType::Int64, "TEXT"));
        assert!(fits(&DataType::Float64, "DOUBLE PRECISION"));
        assert!(!fits(&DataType::Decimal128(12, 2), "NUMERIC(12,2)"));
        assert!(fits(&DataType::Decimal128(12, 2), "TEXT"));
        assert!(fits(&DataType::Utf8, "varchar(40)"));
        assert!(!fits(&DataType::Utf8, "INTEGER"));
    }
}
