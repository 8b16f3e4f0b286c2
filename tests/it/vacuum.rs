//! Issue 4: `vacuum --keep N` removes older versions and unreferenced files past a grace period;
//! every kept version stays readable and verifies.

use proptest::prelude::*;

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stdout};

fn files_under(w: &Workdir, folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(w.path(folder))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn vacuum_keeps_the_newest_versions_and_young_files() {
    let w = Workdir::new();
    w.write("items.yaml", ITEMS_PIPELINE);
    for day in 1..=4 {
        w.write("items.csv", format!("sku,qty\nA,{day}\nB,2\n"));
        assert_code(&w.run(&["run", "items.yaml"]), 0);
    }
    // A crashed run's snapshot: written, never committed; one killed while it streamed its
    // snapshot; and rejects files of v1 and v4.
    w.write(
        ".tidemark/items/snapshots/v00000005-crashed.parquet",
        "partial",
    );
    w.write(".tidemark/items/spool/killed.parquet", "partial");
    w.write(
        ".tidemark/items/rejects/v00000001-run.csv",
        "_source_file\n",
    );
    w.write(
        ".tidemark/items/rejects/v00000004-run.csv",
        "_source_file\n",
    );

    let o = w.run(&["vacuum", "items.yaml", "--keep", "2", "--dry-run"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("items: keeps v3–v4; would remove v1–v2 and 0 files (0 bytes); 7 unreferenced files are younger than --grace 1h and stay\n"),
        "{out}"
    );
    assert_eq!(files_under(&w, ".tidemark/items/_commits").len(), 4);

    let o = w.run(&["vacuum", "items.yaml", "--keep", "2", "--grace", "0s"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with("items: keeps v3–v4; removed v1–v2 and 7 files ("),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        files_under(&w, ".tidemark/items/_commits"),
        ["00000003.json", "00000004.json"]
    );
    assert_eq!(files_under(&w, ".tidemark/items/snapshots").len(), 2);
    assert_eq!(files_under(&w, ".tidemark/items/changes").len(), 2);
    assert!(files_under(&w, ".tidemark/items/spool").is_empty());
    assert_eq!(
        files_under(&w, ".tidemark/items/rejects"),
        ["v00000004-run.csv"]
    );
    assert_code(&w.run(&["verify", "items.yaml"]), 0);
    let o = w.run(&[
        "query",
        "items.yaml",
        "SELECT _version, count(*) AS n FROM items_history GROUP BY _version ORDER BY _version",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&o), "_version,n\n3,2\n4,2\n");
    // Runs go on from the latest version.
    w.write("items.csv", "sku,qty\nA,9\nB,2\n");
    let o = w.run(&["run", "items.yaml"]);
    assert!(stdout(&o).starts_with("items: v5 committed — 2 rows: 0 new, 1 changed"));
    let o = w.run(&["vacuum", "items.yaml", "--keep", "0"]);
    assert_code(&o, 2);
}

#[derive(Debug, Clone)]
enum Op {
    Run(u8),
    Rollback(u8),
    Vacuum(usize),
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4).prop_map(Op::Run),
        1 => (0u8..8).prop_map(Op::Rollback),
        2 => (1usize..4).prop_map(Op::Vacuum),
        1 => (1i64..3).prop_map(Op::Tick),
    ]
}

/// Every kept version verifies and its snapshot reads, whatever the sequence of runs,
/// rollbacks, vacuums and clock ticks.
fn check_sequence(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("items.yaml");
        std::fs::write(&pipeline, ITEMS_PIPELINE).unwrap();
        let plan = tidemark::spec::load(&pipeline, None).unwrap();
        let table = plan.table("items").unwrap().clone();
        let options = tidemark::pipeline::RunOptions::default();
        let mut clock = chrono::Utc::now();
        let grace = chrono::Duration::hours(1);
        for op in ops {
            let store = tidemark::store::Store::open(&plan.store, true).unwrap();
            match op {
                Op::Run(day) => {
                    let rows: String = (0..5)
                        .map(|i| format!("K{i},{}\n", (i as u8 + day) % 3))
                        .collect();
                    std::fs::write(dir.path().join("items.csv"), format!("sku,qty\n{rows}"))
                        .unwrap();
                    let run = tidemark::pipeline::run_pipeline(&plan, &options, |_| {})
                        .await
                        .unwrap();
                    assert!(run.tables[0].error.is_none(), "{:?}", run.tables[0].error);
                }
                Op::Rollback(pick) => {
                    let versions = store.versions("items").await.unwrap();
                    // Rolling back to the latest version is refused; any other is fair.
                    if let Some(&to) = versions.get(*pick as usize % versions.len().max(1))
                        && Some(&to) != versions.last()
                    {
                        tidemark::restore::rollback(&plan, &table, &store, to)
                            .await
                            .unwrap();
                    }
                }
                Op::Vacuum(keep) => {
                    let before = store.versions("items").await.unwrap();
                    store
                        .vacuum(&[], *keep, &Default::default(), grace, clock, false)
                        .await
                        .unwrap();
                    let after = store.versions("items").await.unwrap();
                    let expected = &before[before.len().saturating_sub(*keep)..];
                    assert_eq!(after, expected, "vacuum keeps the newest {keep}");
                }
                Op::Tick(hours) => clock += chrono::Duration::hours(*hours),
            }
            let checks = store.verify(&[]).await.unwrap();
            for c in &checks {
                assert!(c.problems.is_empty(), "after {op:?}: {c:?}");
            }
            if !checks.is_empty() {
                let ctx = tidemark::query::session(&store).await.unwrap();
                let n = ctx
                    .sql("SELECT count(*) FROM items_history")
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(n.len(), 1, "after {op:?}");
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn every_kept_version_stays_readable_and_verifies(ops in prop::collection::vec(op(), 1..10)) {
        check_sequence(&ops);
    }
}
