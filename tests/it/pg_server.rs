//! A real PostgreSQL server for the tests: Debian's `postgresql` package (installed with
//! apt-get when it is missing), a cluster made by `initdb` in a temporary folder, started on a
//! free loopback port by the first test that needs it and stopped once the test process ends.
//! Nothing is skipped: without the server the tests fail, saying why.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    port: u16,
    /// The shell that runs the server and stops it with this process.
    _watchdog: std::sync::Mutex<std::process::Child>,
    _data: tempfile::TempDir,
}

/// The server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The folder of PostgreSQL's server programs, installing the package when it is missing.
fn programs() -> PathBuf {
    let find = || {
        let mut found: Vec<PathBuf> = glob::glob("/usr/lib/postgresql/*/bin/initdb")
            .unwrap()
            .filter_map(|p| p.ok())
            .collect();
        found.sort();
        found.pop().and_then(|p| p.parent().map(Path::to_path_buf))
    };
    if let Some(dir) = find() {
        return dir;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !installed.is_ok_and(|s| s.success()) {
        // The package lists may be stale on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let again = Command::new("apt-get")
            .args(["install", "-y", "-q", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            again.is_ok_and(|s| s.success()),
            "PostgreSQL's server is not installed and `apt-get install postgresql` failed"
        );
    }
    find().expect("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when this process is root (the server refuses to
/// run as root).
fn as_server_user(program: &Path, args: &[&str]) -> Command {
    match is_root() {
        true => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        }
        false => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn start() -> Server {
    let bin = programs();
    let data = tempfile::tempdir().unwrap();
    let cluster = data.path().join("cluster");
    std::fs::create_dir(&cluster).unwrap();
    if is_root() {
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(data.path())
            .status()
            .unwrap();
        assert!(owned.success(), "chown of the cluster folder failed");
    }
    let cluster_arg = cluster.display().to_string();
    let init = as_server_user(
        &bin.join("initdb"),
        &[
            "-D",
            &cluster_arg,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
    )
    .stdout(Stdio::null())
    .output()
    .unwrap();
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = data.path().join("server.log");
    let server = as_server_user(
        &bin.join("postgres"),
        &[
            "-D",
            &cluster_arg,
            "-p",
            &port.to_string(),
            "-k",
            &cluster_arg,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
    );
    let program: Vec<String> = std::iter::once(server.get_program())
        .chain(server.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    // The shell stops the server once this test process is gone (the harness runs no
    // destructors of statics).
    let watchdog = format!(
        "{} >'{}' 2>&1 & server=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $server",
        program.join(" "),
        log.display(),
        std::process::id()
    );
    let watchdog = Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && query_at(
                &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
                "SELECT 1",
            )
            .is_ok()
    };
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start within 60 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Server {
        port,
        _watchdog: std::sync::Mutex::new(watchdog),
        _data: data,
    }
}

/// A new, empty database; returns its URL.
pub fn database() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    );
    let admin = format!("postgresql://postgres@127.0.0.1:{}/postgres", server.port);
    query_at(&admin, &format!("CREATE DATABASE {name}")).unwrap();
    format!("postgresql://postgres@127.0.0.1:{}/{name}", server.port)
}

/// Run `sql` (statements separated by `;`) and return the rows they give, each value
/// as PostgreSQL's text (`None`: null). Time zones are shown in UTC.
pub fn query_at(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let shown = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        client
            .simple_query("SET TIME ZONE 'UTC'")
            .await
            .map_err(shown)?;
        let messages = client.simple_query(sql).await.map_err(shown)?;
        let mut rows = Vec::new();
        for message in messages {
            match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                _ => {}
            }
        }
        Ok(rows)
    })
}

/// [`query_at`], failing the test on an error.
pub fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    query_at(url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}
