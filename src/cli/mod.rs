//! The command line: clap definitions here, one file per verb.

mod check;
mod deliver;
mod diff;
mod history;
mod query;
mod rollback;
mod run;
mod status;
mod vacuum;
mod verify;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;

/// tidemark: turn "load everything and rebuild" feeds into incremental ones.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, long_about = None)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Use this store instead of the pipeline's `store` (a folder or s3://bucket/prefix).
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// Commit to a store that cannot create a file only if it is absent (some S3-compatible
    /// services): safe only if no two runs ever write to the store at once.
    #[arg(long, global = true)]
    pub unsafe_single_writer: bool,
    /// Memory the engine's joins and sorts may hold before spilling to disk, e.g. 2GB
    /// (overrides the pipeline's `memory_limit`).
    #[arg(long, global = true, value_name = "SIZE", value_parser = crate::engine::parse_size)]
    pub memory_limit: Option<u64>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every table of a pipeline, commit new baseline versions, write deltas.
    Run(run::RunArgs),
    /// Validate a pipeline file and that every source exists with the declared columns.
    Check(check::CheckArgs),
    /// Diff two files by key without a store, or two stored versions of a table (--from/--to).
    Diff(diff::DiffArgs),
    /// Run SQL over the store.
    Query(query::QueryArgs),
    /// List the versions of the pipeline's tables.
    History(history::HistoryArgs),
    /// Commit a new version whose snapshot equals version V; nothing is deleted.
    Rollback(rollback::RollbackArgs),
    /// Commit an empty version: the next run sees every row as NEW.
    Reset(rollback::ResetArgs),
    /// Check every stored version's files against the sizes and checksums in its commit record.
    Verify(verify::VerifyArgs),
    /// Remove versions beyond the newest N and the files no kept version needs.
    Vacuum(vacuum::VacuumArgs),
    /// Deliver what is committed but not yet delivered, without running anything.
    Deliver(deliver::DeliverArgs),
    /// Per table: the latest version, its last run, and what each destination has received.
    Status(status::StatusArgs),
}

/// Run the parsed command; returns the exit code.
pub async fn execute(cli: Cli) -> Result<u8> {
    if let Some(bytes) = cli.global.memory_limit {
        crate::engine::set_memory_limit(bytes);
    }
    let store = cli.global.store.as_deref();
    match cli.command {
        Command::Run(args) => run::execute(args, &cli.global).await,
        Command::Check(args) => check::execute(args, store).await,
        Command::Diff(args) => diff::execute(args, store).await,
        Command::Query(args) => query::execute(args, store).await,
        Command::History(args) => history::execute(args, store).await,
        Command::Verify(args) => verify::execute(args, store).await,
        Command::Vacuum(args) => vacuum::execute(args, store).await,
        Command::Rollback(args) => rollback::rollback(args, &cli.global).await,
        Command::Reset(args) => rollback::reset(args, &cli.global).await,
        Command::Deliver(args) => deliver::execute(args, &cli.global).await,
        Command::Status(args) => status::execute(args, store).await,
    }
}

/// Output formats of `query` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A text table for people.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines.
    Json,
    /// Parquet (needs --output).
    Parquet,
}

impl OutputFormat {
    /// `--format` if given, else the one `--output`'s extension names, else `fallback`.
    fn choose(
        given: Option<OutputFormat>,
        output: Option<&std::path::Path>,
        fallback: OutputFormat,
    ) -> OutputFormat {
        use crate::source::SourceFormat;
        given.unwrap_or_else(|| {
            match output.and_then(|p| SourceFormat::from_extension(&p.to_string_lossy())) {
                Some(SourceFormat::Parquet) => OutputFormat::Parquet,
                Some(SourceFormat::Json) => OutputFormat::Json,
                Some(SourceFormat::Csv) => OutputFormat::Csv,
                _ => fallback,
            }
        })
    }
}
