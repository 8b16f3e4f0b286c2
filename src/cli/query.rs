//! `tidemark query PIPELINE.yaml "SQL"`: SQL over the store.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use super::OutputFormat;
use crate::engine;
use crate::error::{Error, Result, engine_words, exit_code};
use crate::source::SourceFormat;
use crate::store::Store;
use crate::{query, sink, spec};

/// Arguments of `query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The SQL; without it, statements are read from the prompt (or stdin), one per `;`.
    pub sql: Option<String>,
    /// Output format; default from --output's extension, else a table.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Write the result here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub(super) async fn execute(args: QueryArgs, store: Option<&str>) -> Result<u8> {
    let plan = spec::load(&args.pipeline, store)?;
    let store = Store::open_existing(&plan.store)?;
    let ctx = query::session(&store).await?;
    let format = OutputFormat::choose(args.format, args.output.as_deref(), OutputFormat::Table);
    match &args.sql {
        Some(sql) => {
            let (schema, batches) = run_sql(&ctx, sql).await?;
            emit(&schema, &batches, format, args.output.as_deref())?;
        }
        None => {
            if prompt(&ctx, format).await? > 0 {
                return Ok(exit_code::INVALID);
            }
        }
    }
    Ok(exit_code::OK)
}

async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let frame = engine::read_only_sql(ctx, sql).await.map_err(|e| Error::Usage {
        message: format!(
            "query failed: {}. Tables: each pipeline table T, T_history, T_changes, and runs; quote mixed-case names with double quotes.",
            engine_words(&e)
        ),
    })?;
    let schema: SchemaRef = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(|e| engine::error("running the query", e))?;
    Ok((schema, batches))
}

/// Statements separated by `;` (outside quotes), read until end of input. Returns how many
/// statements failed. On a terminal, lines are edited with rustyline, with the history kept in
/// `~/.tidemark_history`; a statement may span lines.
async fn prompt(ctx: &SessionContext, format: OutputFormat) -> Result<usize> {
    let mut session = Statements::default();
    if std::io::stdin().is_terminal() {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| Error::io("the terminal", std::io::Error::other(e)))?;
        let history = std::env::var_os("HOME")
            .map(|home| std::path::PathBuf::from(home).join(".tidemark_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        eprintln!(
            "Tables: each pipeline table T, T_history, T_changes, and runs. End statements with `;`; Ctrl-D quits."
        );
        loop {
            let prompt = if session.pending.trim().is_empty() {
                "tidemark> "
            } else {
                "       -> "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    session.feed(ctx, format, &line).await?;
                }
                // Ctrl-C drops the statement being typed, as psql does.
                Err(rustyline::error::ReadlineError::Interrupted) => session.pending.clear(),
                Err(_) => break,
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| Error::io("stdin", e))?;
            session.feed(ctx, format, &line).await?;
        }
    }
    Ok(session.failed)
}

/// Lines typed so far, split into statements as they complete.
#[derive(Default)]
struct Statements {
    pending: String,
    failed: usize,
}

impl Statements {
    async fn feed(&mut self, ctx: &SessionContext, format: OutputFormat, line: &str) -> Result<()> {
        self.pending.push_str(line);
        self.pending.push('\n');
        let (statements, rest) = split_statements(&self.pending);
        self.pending = rest;
        for sql in statements {
            match run_sql(ctx, &sql).await {
                Ok((schema, batches)) => emit(&schema, &batches, format, None)?,
                Err(e) => {
                    self.failed += 1;
                    eprintln!("error: {e}");
                }
            }
        }
        let _ = std::io::stdout().flush();
        Ok(())
    }
}

/// Complete statements (without their `;`) and the unfinished rest.
fn split_statements(text: &str) -> (Vec<String>, String) {
    let mut statements = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                let sql = text[start..i].trim();
                if !sql.is_empty() {
                    statements.push(sql.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    (statements, text[start..].to_string())
}

/// Print or write a result in `format`.
pub fn emit(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    let as_source = match format {
        OutputFormat::Table => {
            let text = pretty_format_batches(batches)
                .map_err(|e| engine::error("formatting the result", e.into()))?;
            let text = if batches.is_empty() {
                header_only(schema)
            } else {
                text.to_string()
            };
            return match output {
                Some(path) => std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e)),
                None => {
                    println!("{text}");
                    Ok(())
                }
            };
        }
        OutputFormat::Csv => SourceFormat::Csv,
        OutputFormat::Json => SourceFormat::Json,
        OutputFormat::Parquet => SourceFormat::Parquet,
    };
    match output {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
            sink::write_to(std::io::BufWriter::new(file), as_source, schema, batches)
        }
        None if as_source == SourceFormat::Parquet => Err(Error::Usage {
            message: "--format parquet needs --output FILE.parquet".into(),
        }),
        None => sink::write_to(
            std::io::BufWriter::new(std::io::stdout()),
            as_source,
            schema,
            batches,
        ),
    }
}

fn header_only(schema: &SchemaRef) -> String {
    let empty = RecordBatch::new_empty(schema.clone());
    pretty_format_batches(&[empty])
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_split_on_semicolons_outside_quotes() {
        let (done, rest) = split_statements("SELECT ';' AS a; SELECT \"x;y\" FROM t;\nSELECT 2");
        assert_eq!(done, ["SELECT ';' AS a", "SELECT \"x;y\" FROM t"]);
        assert_eq!(rest, "\nSELECT 2");
    }
}
