//! Issue 4, crashes: an object store that fails the k-th write of a run, for every k. Whatever
//! fails, the store holds either the old version or the new one whole, verifies, and the next
//! run succeeds. A lost response on the commit (written, but the answer never came) is resolved
//! by reading the record back.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::workdir::ITEMS_PIPELINE;

/// Fails the `fail_at`-th put (1-based): before writing, or after writing when `lose_response`.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn ObjectStore>,
    puts: AtomicUsize,
    fail_at: usize,
    lose_response: bool,
    /// Writes "create only if absent" over an existing file, as some S3-compatible services do.
    ignores_create: bool,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: "injected fault: connection reset".into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.ignores_create {
            opts.mode = object_store::PutMode::Overwrite;
        }
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.fail_at {
            return self.inner.put_opts(location, payload, opts).await;
        }
        if self.lose_response {
            self.inner.put_opts(location, payload, opts).await?;
        }
        Err(injected())
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The plan's local store seen through a [`Faulty`] object store.
fn faulty_store(
    plan: &tidemark::spec::Plan,
    fail_at: usize,
    lose_response: bool,
    ignores_create: bool,
) -> tidemark::store::Store {
    let root = std::path::PathBuf::from(&plan.store);
    let faulty = Faulty {
        inner: Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap()),
        puts: AtomicUsize::new(0),
        fail_at,
        lose_response,
        ignores_create,
    };
    tidemark::store::Store::with_objects(&plan.store, root, Arc::new(faulty))
}

async fn query(store: &tidemark::store::Store, sql: &str) -> String {
    let ctx = tidemark::query::session(store).await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

const DAY1: &str = "sku,qty\nA,1\nB,2\nC,3\n";
const DAY2: &str = "sku,qty\nA,1\nB,5\nD,4\n";

async fn case(fail_at: usize, lose_response: bool) -> (bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("items.yaml");
    std::fs::write(&pipeline, ITEMS_PIPELINE).unwrap();
    let plan = tidemark::spec::load(&pipeline, None).unwrap();
    let options = tidemark::pipeline::RunOptions::default();
    std::fs::write(dir.path().join("items.csv"), DAY1).unwrap();
    tidemark::pipeline::run_pipeline(&plan, &options, |_| {})
        .await
        .unwrap();
    let healthy = tidemark::store::Store::open(&plan.store, false).unwrap();
    let day1 = query(&healthy, "SELECT sku, qty FROM items ORDER BY sku").await;

    let store = faulty_store(&plan, fail_at, lose_response, false);
    std::fs::write(dir.path().join("items.csv"), DAY2).unwrap();
    let run = tidemark::pipeline::run_pipeline_in(&plan, &store, &options, |_| {})
        .await
        .unwrap();
    let failed = run.tables[0].error.is_some();

    // Either the old version, or the new one whole; every version verifies.
    let versions = healthy.versions("items").await.unwrap();
    let now = query(&healthy, "SELECT sku, qty FROM items ORDER BY sku").await;
    let committed = versions == [1, 2];
    if committed {
        assert!(
            now.contains("| D   | 4   |") && !now.contains("| C "),
            "k={fail_at}: {now}"
        );
    } else {
        assert_eq!(versions, [1], "k={fail_at}");
        assert_eq!(now, day1, "k={fail_at}");
    }
    for check in healthy.verify(&[]).await.unwrap() {
        assert!(check.problems.is_empty(), "k={fail_at}: {check:?}");
    }
    // The next run works without clean-up and ends with day 2's rows.
    std::fs::write(dir.path().join("items.csv"), DAY2).unwrap();
    let next = tidemark::pipeline::run_pipeline(&plan, &options, |_| {})
        .await
        .unwrap();
    assert!(
        next.tables[0].error.is_none(),
        "k={fail_at}: {:?}",
        next.tables[0].error
    );
    let after = query(&healthy, "SELECT sku, qty FROM items ORDER BY sku").await;
    assert!(after.contains("| D   | 4   |"), "k={fail_at}: {after}");
    (failed, committed)
}

#[test]
fn a_failed_write_at_any_step_leaves_a_whole_version() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A day-2 run writes: the snapshot, the change rows, the commit record, the run record.
        let outcomes: Vec<(bool, bool)> =
            futures::future::join_all((1..=5).map(|k| case(k, false))).await;
        assert_eq!(
            outcomes,
            [
                (true, false), // snapshot fails: nothing committed
                (true, false), // change rows fail: nothing committed
                (true, false), // commit record fails: nothing committed
                (false, true), // run record fails after the commit: committed, a warning
                (false, true), // no fifth write
            ]
        );
        // The commit record was written but its answer lost: read back, the run committed.
        assert_eq!(case(3, true).await, (false, true));
    });
}

#[test]
fn a_store_that_ignores_create_only_if_absent_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("items.yaml");
        std::fs::write(&pipeline, ITEMS_PIPELINE).unwrap();
        std::fs::write(dir.path().join("items.csv"), DAY1).unwrap();
        let plan = tidemark::spec::load(&pipeline, None).unwrap();
        let root = std::path::PathBuf::from(&plan.store);
        std::fs::create_dir_all(&root).unwrap();
        let careless = || faulty_store(&plan, 0, false, true).checking_put_if_absent();
        let options = tidemark::pipeline::RunOptions::default();
        let refused = tidemark::pipeline::run_pipeline_in(&plan, &careless(), &options, |_| {})
            .await
            .unwrap();
        let error = refused.tables[0]
            .error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("it accepted a second create of the same file")
                && error.contains("--unsafe-single-writer"),
            "{error}"
        );
        assert!(!root.join("items").exists(), "nothing written");

        let store = careless().single_writer(true);
        let run = tidemark::pipeline::run_pipeline_in(&plan, &store, &options, |_| {})
            .await
            .unwrap();
        assert!(run.tables[0].error.is_none(), "{:?}", run.tables[0].error);
        assert_eq!(store.versions("items").await.unwrap(), [1]);
    });
}

const ATOMIC_PIPELINE: &str = "atomic: true
tables:
  items:
    source: {path: items.csv}
    key: sku
  prices:
    source: {path: prices.csv}
    key: sku
";

/// An atomic two-table run of day 2 whose `fail_at`-th write fails: afterwards both tables show
/// day 2 or both show day 1, and the next run commits both.
async fn atomic_case(fail_at: usize, lose_response: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(&pipeline, ATOMIC_PIPELINE).unwrap();
    let plan = tidemark::spec::load(&pipeline, None).unwrap();
    let options = tidemark::pipeline::RunOptions {
        jobs: 1,
        ..Default::default()
    };
    let write_day = |day: &str| {
        std::fs::write(dir.path().join("items.csv"), day).unwrap();
        std::fs::write(dir.path().join("prices.csv"), day).unwrap();
    };
    write_day(DAY1);
    let first = tidemark::pipeline::run_pipeline(&plan, &options, |_| {})
        .await
        .unwrap();
    assert!(first.tables.iter().all(|t| t.error.is_none()));
    let healthy = tidemark::store::Store::open(&plan.store, false).unwrap();

    let store = faulty_store(&plan, fail_at, lose_response, false);
    write_day(DAY2);
    let run = tidemark::pipeline::run_pipeline_in(&plan, &store, &options, |_| {})
        .await
        .unwrap();
    let all_ok = run.tables.iter().all(|t| t.error.is_none());
    let none_ok = run.tables.iter().all(|t| t.error.is_some());
    assert!(all_ok || none_ok, "k={fail_at}: {:?}", run.tables);

    // Both tables at day 2, or both at day 1: what readers see agrees with what was reported.
    let items = query(&healthy, "SELECT sku, qty FROM items ORDER BY sku").await;
    let prices = query(&healthy, "SELECT sku, qty FROM prices ORDER BY sku").await;
    assert_eq!(items, prices, "k={fail_at}");
    let at_day2 = items.contains("| D   | 4   |");
    assert_eq!(at_day2, all_ok, "k={fail_at}: {items}");
    let visible = healthy.versions("items").await.unwrap().len();
    assert_eq!(
        visible,
        healthy.versions("prices").await.unwrap().len(),
        "k={fail_at}"
    );
    for check in healthy.verify(&[]).await.unwrap() {
        assert!(check.problems.is_empty(), "k={fail_at}: {check:?}");
    }

    // The next run commits both, on top of whatever the failed run left.
    write_day("sku,qty\nA,1\nE,5\n");
    let next = tidemark::pipeline::run_pipeline(&plan, &options, |_| {})
        .await
        .unwrap();
    assert!(
        next.tables.iter().all(|t| t.error.is_none()),
        "k={fail_at}: {:?}",
        next.tables
    );
    for table in ["items", "prices"] {
        let rows = query(&healthy, &format!("SELECT sku FROM {table} ORDER BY sku")).await;
        assert!(
            rows.contains("| E   |") && !rows.contains("| B "),
            "k={fail_at}: {rows}"
        );
        assert_eq!(healthy.versions(table).await.unwrap().len(), visible + 1);
    }
    all_ok
}

#[test]
fn an_atomic_pipeline_commits_every_table_or_none_whichever_write_fails() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Day 2 writes: two data files per table, then per table a pending marker and its
        // commit record, then the pipeline record, then two run records.
        let outcomes: Vec<bool> =
            futures::future::join_all((1..=12).map(|k| atomic_case(k, false))).await;
        assert_eq!(
            outcomes,
            [
                false, false, false, false, // data files: nothing committed
                false, false, false, false, // markers and table records: nothing visible
                false, // the pipeline record: nothing visible
                true, true, // run records, after the commit
                true, // no twelfth write
            ]
        );
        // The pipeline record was written but its answer lost: read back, committed.
        assert!(atomic_case(9, true).await);
    });
}
