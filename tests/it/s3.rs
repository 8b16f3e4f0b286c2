//! The store, sources and outputs on an S3-compatible server (issue 4): moto's server mode,
//! from PyPI, installed (once, under the cargo target folder) and started by these tests on
//! loopback. Nothing here is skipped: without python3 and pip the tests fail, saying so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stderr, stdout, without_time};

/// The moto release the tests pin (conditional writes are honoured since 5.0).
const MOTO: &str = "moto[s3]==5.2.5";
const BUCKET: &str = "tidemark-test";

struct Server {
    endpoint: String,
    /// The shell that runs the server and stops it with this process.
    _watchdog: std::sync::Mutex<std::process::Child>,
}

/// The server, started on first use and stopped when the test process ends.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Server {
    let packages = install();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = packages.with_file_name("moto-server.log");
    // The shell stops the server once this test process is gone (the harness runs no
    // destructors of statics).
    let watchdog = format!(
        "PYTHONPATH='{}' python3 -m moto.server -H 127.0.0.1 -p {port} >'{}' 2>&1 & server=$!; \
         while kill -0 {} 2>/dev/null; do sleep 1; done; kill $server",
        packages.display(),
        log.display(),
        std::process::id()
    );
    let watchdog = Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = format!("127.0.0.1:{port}");
    while TcpStream::connect(&address).is_err() {
        assert!(
            Instant::now() < deadline,
            "the S3 server did not start within 60 s; its log ({}):\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Create the bucket (moto does not check signatures).
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "creating the bucket: {answer}"
    );
    Server {
        endpoint: format!("http://{address}"),
        _watchdog: std::sync::Mutex::new(watchdog),
    }
}

/// moto and its server's web framework, installed with pip into a folder of the cargo target
/// directory (kept between runs), unless already there.
fn install() -> PathBuf {
    let packages = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-5.2.5");
    let importable = |dir: &PathBuf| {
        Command::new("python3")
            .args(["-c", "import moto.server, flask_cors"])
            .env("PYTHONPATH", dir)
            .output()
            .is_ok_and(|o| o.status.success() && dir.join("moto").is_dir())
    };
    if importable(&packages) {
        return packages;
    }
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-conflicts",
            "--upgrade",
            "--target",
        ])
        .arg(&packages)
        .args([MOTO, "flask<4", "flask-cors<7"])
        .output()
        .expect("the S3 tests need python3 with pip, to install moto from PyPI");
    assert!(
        output.status.success() && importable(&packages),
        "installing {MOTO} with pip failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    packages
}

/// What the binary needs to reach the server: dummy credentials, a region, the endpoint.
fn env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", server().endpoint.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A prefix of the bucket no other test uses.
fn prefix(test: &str) -> String {
    format!("s3://{BUCKET}/{test}-{}", uuid::Uuid::new_v4().simple())
}

/// The test's own client of the bucket, to put sources and read what tidemark wrote.
fn bucket() -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(&server().endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

fn key_of(url: &str) -> object_store::path::Path {
    object_store::path::Path::from(url.trim_start_matches(&format!("s3://{BUCKET}/")))
}

fn put(url: &str, contents: &str) {
    use object_store::ObjectStoreExt;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(bucket().put(&key_of(url), contents.to_string().into()))
        .unwrap();
}

fn get(url: &str) -> String {
    use object_store::ObjectStoreExt;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bytes = bucket()
            .get(&key_of(url))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .bytes()
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    })
}

/// Keys under a prefix, relative to it, sorted.
fn list(url: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let prefix = key_of(url);
    let mut keys: Vec<String> = runtime
        .block_on(
            bucket()
                .list(Some(&prefix))
                .map_ok(|m| m.location.as_ref()[prefix.as_ref().len() + 1..].to_string())
                .try_collect::<Vec<_>>(),
        )
        .unwrap();
    keys.sort();
    keys
}

fn query(w: &Workdir, sql: &str) -> String {
    let o = w.run(&["query", "p.yaml", sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn a_pipeline_runs_with_its_store_sources_and_outputs_on_s3() {
    let root = prefix("e2e");
    let w = Workdir::new().with_env(&env());
    w.write(
        "p.yaml",
        format!(
            "store: {root}/store\n\
             tables:\n  items:\n    source: {{path: '{root}/feeds/items-*.csv', columns: {{qty: int64}}}}\n    \
             key: sku\n    \
             output:\n      - path: '{root}/out/items-v{{version}}.csv'\n      - path: out/items.csv\n"
        ),
    );
    put(
        &format!("{root}/feeds/items-2026-11-01.csv"),
        "sku,qty\nA,1\nB,2\nC,3\n",
    );
    let day1 = w.run(&["run", "p.yaml"]);
    assert_code(&day1, 0);
    assert_eq!(
        without_time(stdout(&day1).lines().next().unwrap()),
        "items: v1 committed — 3 rows: 3 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected"
    );

    // Day 2 is the newest file matching the glob; one quantity is not a number.
    put(
        &format!("{root}/feeds/items-2026-11-02.csv"),
        "sku,qty\nA,1\nB,5\nD,4\nE,lots\n",
    );
    let day2 = w.run(&["run", "p.yaml"]);
    assert_code(&day2, 0);
    let out = stdout(&day2);
    let mut lines = out.lines();
    assert_eq!(
        without_time(lines.next().unwrap()),
        "items: v2 committed — 4 rows: 1 new, 1 changed, 1 deleted, 1 unchanged, 1 rejected"
    );
    let rejects_url = lines
        .next()
        .unwrap()
        .strip_prefix("  rejected rows: ")
        .unwrap()
        .to_string();
    assert!(
        rejects_url.starts_with(&format!("{root}/store/items/rejects/v00000002-")),
        "{rejects_url}"
    );
    assert_eq!(
        get(&rejects_url),
        format!(
            "_source_file,_row_number,_rule,_message,sku,qty\n\
             {root}/feeds/items-2026-11-02.csv,5,type,\"column \"\"qty\"\": value \"\"lots\"\" is not a valid int64\",E,lots\n"
        )
    );
    let delta = "sku,qty,change_type,change_reason\n\
                 B,5,CHANGED,qty changed from 2 to 5\n\
                 C,3,DELETED,row removed\n\
                 D,4,NEW,new row\n";
    assert_eq!(get(&format!("{root}/out/items-v2.csv")), delta);
    assert_eq!(w.read("out/items.csv"), delta);

    // The store holds plain files under the prefix, and every reading command works on it.
    let files = list(&format!("{root}/store/items"));
    assert_eq!(
        files
            .iter()
            .filter(|f| f.starts_with("_commits/"))
            .collect::<Vec<_>>(),
        ["_commits/00000001.json", "_commits/00000002.json"]
    );
    assert_eq!(
        query(&w, "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,5\nD,4\n"
    );
    assert_eq!(
        query(
            &w,
            "SELECT _version, sku, change_type FROM items_changes ORDER BY 1, 2"
        ),
        "_version,sku,change_type\n1,A,NEW\n1,B,NEW\n1,C,NEW\n2,B,CHANGED\n2,C,DELETED\n2,D,NEW\n"
    );
    assert_eq!(
        query(
            &w,
            "SELECT version, status, rejected FROM runs ORDER BY started_at"
        ),
        "version,status,rejected\n1,committed,0\n2,committed,1\n"
    );
    let history = w.run(&["history", "p.yaml"]);
    assert_code(&history, 0);
    let listed = stdout(&history);
    let versions: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("| items"))
        .map(|l| l.split('|').nth(2).unwrap_or_default().trim())
        .collect();
    assert_eq!(versions, ["1", "2"], "{listed}");
    assert!(
        listed.contains(&format!("{root}/feeds/items-2026-11-02.csv")),
        "{listed}"
    );
    let verify = w.run(&["verify", "p.yaml"]);
    assert_code(&verify, 0);

    // Rollback commits v3 equal to v1; vacuum keeps only it and verify still passes.
    assert_code(
        &w.run(&["rollback", "p.yaml", "--table", "items", "--to", "1"]),
        0,
    );
    assert_eq!(
        query(&w, "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,2\nC,3\n"
    );
    let vacuum = w.run(&["vacuum", "p.yaml", "--keep", "1", "--grace", "0s"]);
    assert_code(&vacuum, 0);
    let (deliveries, left): (Vec<String>, Vec<String>) = list(&format!("{root}/store/items"))
        .into_iter()
        .partition(|f| f.starts_with("_deliveries/"));
    // Each output's latest cursor record stays (it has v3), the older ones go.
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|f| f.ends_with("/00000003.json")),
        "{deliveries:?}"
    );
    // v3 shares v1's snapshot file; v1's and v2's records, v2's files and rejects are gone.
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(left[0], "_commits/00000003.json");
    assert!(left[1].starts_with("changes/v00000003-"), "{left:?}");
    assert!(left[2].starts_with("snapshots/v00000001-"), "{left:?}");
    assert_code(&w.run(&["verify", "p.yaml"]), 0);
    assert_eq!(
        query(&w, "SELECT count(*) AS n FROM items_history"),
        "n\n3\n"
    );
}

#[test]
fn a_missing_source_object_fails_naming_its_url() {
    let root = prefix("missing");
    let w = Workdir::new().with_env(&env());
    w.write(
        "p.yaml",
        format!(
            "store: {root}/store\ntables:\n  items:\n    source: {{path: '{root}/feeds/items.csv'}}\n    key: sku\n"
        ),
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains(&format!("source {root}/feeds/items.csv matches no file")),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(list(&format!("{root}/store/items")).is_empty());
}

#[test]
fn a_bad_row_in_an_s3_source_is_named_by_its_url() {
    let root = prefix("badrow");
    let w = Workdir::new().with_env(&env());
    w.write(
        "p.yaml",
        format!(
            "store: {root}/store\ntables:\n  items:\n    source: {{path: '{root}/items.csv'}}\n    key: sku\n"
        ),
    );
    put(&format!("{root}/items.csv"), "sku,qty\nA,1\nA,2\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains(&format!("{root}/items.csv")), "{text}");
    assert!(!text.contains("tidemark-source-"), "{text}");
}

#[test]
fn a_store_without_put_if_absent_is_refused_unless_single_writer() {
    let root = prefix("noconditional");
    let mut env = env();
    // object_store then sends no If-None-Match: the store cannot create only if absent.
    env.push(("AWS_CONDITIONAL_PUT".into(), "disabled".into()));
    let w = Workdir::new().with_env(&env);
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\n");
    let store = format!("{root}/store");
    let refused = w.run(&["run", "p.yaml", "--store", &store]);
    assert_code(&refused, 2);
    assert!(
        stdout(&refused).contains("cannot create a file only if it is absent")
            && stdout(&refused).contains("--unsafe-single-writer"),
        "{}\n{}",
        stdout(&refused),
        stderr(&refused)
    );
    assert!(
        list(&store)
            .iter()
            .all(|f| !f.contains("_commits") && !f.contains("snapshots")),
        "{:?}",
        list(&store)
    );

    let first = w.run(&["run", "p.yaml", "--store", &store, "--unsafe-single-writer"]);
    assert_code(&first, 0);
    w.write("items.csv", "sku,qty\nA,2\n");
    let second = w.run(&[
        "-vv",
        "run",
        "p.yaml",
        "--store",
        &store,
        "--unsafe-single-writer",
    ]);
    assert_code(&second, 0);
    assert_eq!(
        without_time(stdout(&second).lines().next().unwrap()),
        "items: v2 committed — 1 rows: 0 new, 1 changed, 0 deleted, 0 unchanged, 0 rejected"
    );
    // Day 2 was streamed: its snapshot spooled to a local file, then uploaded whole.
    assert!(
        stderr(&second).contains("loaded, typed, hashed and wrote 1 rows"),
        "{}",
        stderr(&second)
    );
    let o = w.run(&[
        "query",
        "p.yaml",
        "--store",
        &store,
        "--format",
        "csv",
        "SELECT sku, qty FROM items",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "sku,qty\nA,2\n");
}

#[test]
fn concurrent_runs_on_s3_commit_each_version_once() {
    let root = prefix("races");
    let w = Workdir::new().with_env(&env());
    w.write("p.yaml", format!("store: {root}/store\n{ITEMS_PIPELINE}"));
    crate::races::race(&w, 20);
}
