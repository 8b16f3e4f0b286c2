//! A folder of its own per test, and the binary run inside it.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// The smallest pipeline: one CSV table `items` keyed by `sku`.
pub const ITEMS_PIPELINE: &str = "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n";

pub struct Workdir {
    dir: tempfile::TempDir,
    /// Environment variables every run of the binary gets (an S3 endpoint, say).
    env: Vec<(String, String)>,
    /// Arguments every `run` command gets (a comparison strategy, say).
    run_args: Vec<String>,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("a temp dir"),
            env: Vec::new(),
            run_args: Vec::new(),
        }
    }

    /// Give every `tidemark run` in this folder these arguments too (after `run`).
    pub fn with_run_args(mut self, args: &[&str]) -> Self {
        self.run_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Give every run of the binary these environment variables.
    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// The binary, to run in this folder with this folder's environment.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("tidemark"));
        command
            .current_dir(self.root())
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Start tidemark with `args` in this folder, its output discarded (to be killed, say).
    pub fn spawn_quiet(&self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts")
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, contents).unwrap();
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative))
            .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
    }

    /// Run tidemark with `args` in this folder.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(verb) = args.iter().position(|a| !a.starts_with('-'))
            && args[verb] == "run"
        {
            args.splice(verb + 1..verb + 1, self.run_args.iter().cloned());
        }
        Command::from_std(self.command())
            .args(args)
            .output()
            .unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code, showing both streams when it differs.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The lines of a run's stdout, each summary line without its elapsed time.
pub fn summary(o: &Output) -> Vec<String> {
    stdout(o).lines().map(without_time).collect()
}

/// The summary line with the elapsed time removed.
pub fn without_time(line: &str) -> String {
    match line.rfind(" (") {
        Some(i) if line.ends_with(" s)") => line[..i].to_string(),
        _ => line.to_string(),
    }
}

/// A Parquet file's rows, as one batch.
pub fn read_parquet(path: &Path) -> datafusion::arrow::array::RecordBatch {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// A small deterministic generator (no test data is committed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
