//! Issue 5: many related tables in one pipeline, the example `pipelines/store-sync.yaml` on
//! the sample exports in `data/store-sync/`: dependency order, references, isolation of a
//! failing table, `--fail-fast`, and running a folder of pipeline files.

use crate::workdir::{Workdir, assert_code, stdout, summary};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TABLES: [&str; 6] = [
    "locations",
    "categories",
    "items",
    "variations",
    "inventory",
    "orders",
];

/// A folder laid out like the repository (pipelines/, data/store-sync/) holding the example
/// and the exports of the given days.
fn example(days: &[&str]) -> Workdir {
    let w = Workdir::new();
    w.write(
        "pipelines/store-sync.yaml",
        std::fs::read_to_string(format!("{ROOT}/pipelines/store-sync.yaml")).unwrap(),
    );
    for day in days {
        add_day(&w, day);
    }
    w
}

fn add_day(w: &Workdir, day: &str) {
    for entry in std::fs::read_dir(format!("{ROOT}/data/store-sync/{day}")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        w.write(
            &format!("data/store-sync/{day}/{name}"),
            std::fs::read(&path).unwrap(),
        );
    }
}

fn query(w: &Workdir, sql: &str) -> String {
    let o = w.run(&["query", "pipelines/store-sync.yaml", sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn day_two_gives_each_tables_delta_and_rejects_the_orphaned_variations() {
    let w = example(&["2024-03-01"]);
    let day1 = w.run(&["run", "pipelines/store-sync.yaml"]);
    assert_code(&day1, 0);
    assert_eq!(
        summary(&day1),
        [
            "locations: v1 committed — 3 rows: 3 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "categories: v1 committed — 4 rows: 4 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "items: v1 committed — 6 rows: 6 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "variations: v1 committed — 9 rows: 9 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "inventory: v1 committed — 12 rows: 12 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "orders: v1 committed — 4 rows: 4 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
        ]
    );

    add_day(&w, "2024-03-02");
    let day2 = w.run(&["run", "pipelines/store-sync.yaml"]);
    assert_code(&day2, 0);
    let lines = summary(&day2);
    assert_eq!(lines.len(), 7, "{lines:?}");
    let rejects = lines[4]
        .strip_prefix("  rejected rows: ")
        .unwrap()
        .to_string();
    assert_eq!(
        [&lines[..4], &lines[5..]].concat(),
        [
            "locations: v2 committed — 3 rows: 0 new, 1 changed, 0 deleted, 2 unchanged, 0 rejected",
            "categories: v2 committed — 5 rows: 1 new, 1 changed, 0 deleted, 3 unchanged, 0 rejected",
            "items: v2 committed — 6 rows: 1 new, 1 changed, 1 deleted, 4 unchanged, 0 rejected",
            "variations: v2 committed — 10 rows: 1 new, 2 changed, 0 deleted, 5 unchanged, 2 rejected",
            "inventory: v2 committed — 12 rows: 1 new, 2 changed, 1 deleted, 9 unchanged, 0 rejected",
            "orders: v2 committed — 5 rows: 1 new, 1 changed, 0 deleted, 3 unchanged, 0 rejected",
        ]
    );
    let day2_file = w
        .path("data/store-sync/2024-03-02/variations.csv")
        .display()
        .to_string();
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap(),
        format!(
            "_source_file,_row_number,_rule,_message,variation_id,item_id,sku,size,price\n\
             {day2_file},8,references,item_id I-105 has no row in items (no items.item_id = I-105),V-1007,I-105,JR-5X8,5x8,199.00\n\
             {day2_file},9,references,item_id I-105 has no row in items (no items.item_id = I-105),V-1008,I-105,JR-8X10,8x10,349.00\n"
        )
    );

    let delta = |table: &str| w.read(&format!("out/store-sync/{table}-v2.csv"));
    assert_eq!(
        delta("locations"),
        "location_id,name,city,change_type,change_reason\n\
         L2,Harbor Point,Seattle,CHANGED,name changed from Harbor to Harbor Point\n"
    );
    assert_eq!(
        delta("categories"),
        "category_id,name,parent_id,change_type,change_reason\n\
         C11,Rug Runners,C10,CHANGED,name changed from Runners to Rug Runners\n\
         C14,Blankets,C12,NEW,new row\n"
    );
    assert_eq!(
        delta("items"),
        "item_id,name,category_id,brand,change_type,change_reason\n\
         I-101,Heritage Wool Rug,C10,Loloi,CHANGED,name changed from Heritage Rug to Heritage Wool Rug\n\
         I-105,Jute Rug,C10,Loloi,DELETED,row removed\n\
         I-107,Cotton Blanket,C14,Faribault,NEW,new row\n"
    );
    // The orphans are neither loaded nor deleted: V-1007 and V-1008 keep their day-1 rows.
    assert_eq!(
        delta("variations"),
        "variation_id,item_id,sku,size,price,change_type,change_reason\n\
         V-1001,I-101,HR-5X8,5x8,279.00,CHANGED,price changed from 299.00 to 279.00\n\
         V-1006,I-104,WT-50,50x60,129.00,CHANGED,price changed from 119.00 to 129.00\n\
         V-1010,I-107,CB-50,50x70,89.00,NEW,new row\n"
    );
    assert_eq!(
        query(
            &w,
            "SELECT variation_id FROM variations WHERE item_id = 'I-105' ORDER BY 1"
        ),
        "variation_id\nV-1007\nV-1008\n"
    );
    // The inventory transform read the variations' new snapshot (the sku of V-1010).
    assert_eq!(
        delta("inventory"),
        "variation_id,location_id,sku,qty,change_type,change_reason\n\
         V-1001,L1,HR-5X8,3,CHANGED,qty changed from 4 to 3\n\
         V-1003,L2,CR-2X8,7,DELETED,row removed\n\
         V-1004,L1,LP-18,10,CHANGED,qty changed from 12 to 10\n\
         V-1010,L3,CB-50,6,NEW,new row\n"
    );
    assert_eq!(
        delta("orders"),
        "order_id,location_id,ordered_at,status,total,change_type,change_reason\n\
         5003,L1,2024-02-29T16:05:00Z,paid,49.0,CHANGED,status changed from pending to paid\n\
         5005,L2,2024-03-01T09:30:00Z,paid,89.0,NEW,new row\n"
    );

    // `runs`: one row per table per run; the last sync of each table in one query.
    assert_eq!(
        query(
            &w,
            "SELECT \"table\", count(*) AS runs, max(version) AS version, sum(rejected) AS rejected \
             FROM runs GROUP BY \"table\" ORDER BY 1"
        ),
        "table,runs,version,rejected\n\
         categories,2,2,0\ninventory,2,2,0\nitems,2,2,0\nlocations,2,2,0\norders,2,2,0\nvariations,2,2,2\n"
    );
    // The README's sync-state query.
    let state = query(
        &w,
        "SELECT \"table\", max(finished_at) AS last_sync, \
         last_value(status ORDER BY finished_at) AS status, \
         last_value(duration_ms ORDER BY finished_at) AS ms, \
         last_value(rows_in ORDER BY finished_at) AS rows \
         FROM runs GROUP BY \"table\" ORDER BY 1",
    );
    let rows: Vec<(String, String, String)> = state
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].to_string(), f[4].to_string())
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("categories", "committed", "5"),
            ("inventory", "committed", "12"),
            ("items", "committed", "6"),
            ("locations", "committed", "3"),
            ("orders", "committed", "5"),
            ("variations", "committed", "10"),
        ]
        .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
    );
}

#[test]
fn a_table_whose_source_is_missing_fails_alone_and_skips_its_dependents() {
    let w = example(&["2024-03-01"]);
    std::fs::remove_file(w.path("data/store-sync/2024-03-01/items.jsonl")).unwrap();
    let o = w.run(&[
        "run",
        "pipelines/store-sync.yaml",
        "--report",
        "report.json",
    ]);
    assert_code(&o, 1);
    let lines = summary(&o);
    let pattern = w
        .path("data/store-sync/*/items.jsonl")
        .display()
        .to_string();
    assert_eq!(
        lines,
        [
            "locations: v1 committed — 3 rows: 3 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected".to_string(),
            "categories: v1 committed — 4 rows: 4 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected".to_string(),
            format!("items: failed: table items: source {pattern} matches no file. Check `source.path` in the pipeline file, or pass today's file with --source items=PATH."),
            "variations: skipped: items failed".to_string(),
            "inventory: skipped: variations was skipped".to_string(),
            "orders: v1 committed — 4 rows: 4 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected".to_string(),
        ]
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(report["status"], "failed");
    let statuses: Vec<(String, String)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = TABLES
        .iter()
        .zip([
            "committed",
            "committed",
            "failed",
            "skipped",
            "skipped",
            "committed",
        ])
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(
        query(
            &w,
            "SELECT \"table\", status, error FROM runs WHERE status <> 'committed' ORDER BY 1"
        ),
        format!(
            "table,status,error\n\
             inventory,skipped,variations was skipped\n\
             items,failed,\"table items: source {pattern} matches no file. Check `source.path` in the pipeline file, or pass today's file with --source items=PATH.\"\n\
             variations,skipped,items failed\n"
        )
    );
}

#[test]
fn fail_fast_starts_no_table_after_a_failure() {
    let w = example(&["2024-03-01"]);
    std::fs::remove_file(w.path("data/store-sync/2024-03-01/items.jsonl")).unwrap();
    let o = w.run(&[
        "run",
        "pipelines/store-sync.yaml",
        "--fail-fast",
        "--jobs",
        "1",
    ]);
    assert_code(&o, 1);
    let lines = summary(&o);
    assert!(lines[0].starts_with("locations: v1 committed"), "{lines:?}");
    assert!(
        lines[1].starts_with("categories: v1 committed"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("items: failed: "), "{lines:?}");
    assert_eq!(
        lines[3..],
        [
            "variations: skipped: items failed",
            "inventory: skipped: variations was skipped",
            "orders: skipped: --fail-fast: items failed",
        ]
    );
}

#[test]
fn the_same_tables_commit_the_same_versions_whatever_the_number_of_jobs() {
    let one = example(&["2024-03-01", "2024-03-02"]);
    let many = example(&["2024-03-01", "2024-03-02"]);
    let a = one.run(&["run", "pipelines/store-sync.yaml", "--jobs", "1"]);
    let b = many.run(&["run", "pipelines/store-sync.yaml", "--jobs", "6"]);
    assert_code(&a, 0);
    assert_code(&b, 0);
    // The same lines in the same (pipeline) order; rejects files differ by folder and run id.
    let comparable = |o: &std::process::Output| -> Vec<String> {
        summary(o)
            .into_iter()
            .map(|l| match l.strip_prefix("  rejected rows: ") {
                Some(_) => "  rejected rows: ...".to_string(),
                None => l,
            })
            .collect()
    };
    // A first run on day 2: the orphaned variations are rejected, and so is their stock.
    assert_eq!(comparable(&a).len(), 8, "{:?}", comparable(&a));
    assert_eq!(comparable(&a), comparable(&b));
    for table in TABLES {
        let sql = format!("SELECT * FROM {table} ORDER BY 1, 2");
        let expected = {
            let o = one.run(&[
                "query",
                "pipelines/store-sync.yaml",
                &sql,
                "--format",
                "csv",
            ]);
            stdout(&o)
        };
        assert_eq!(
            stdout(&many.run(&[
                "query",
                "pipelines/store-sync.yaml",
                &sql,
                "--format",
                "csv"
            ])),
            expected,
            "{table}"
        );
    }
}

#[test]
fn a_folder_of_pipeline_files_runs_each_file_in_name_order() {
    let w = Workdir::new();
    w.write("items.csv", "sku,qty\nA,1\n");
    w.write(
        "pipelines/b-items.yaml",
        "store: ../store\ntables:\n  items:\n    source: {path: ../items.csv}\n    key: sku\n",
    );
    w.write(
        "pipelines/a-prices.yaml",
        "store: ../store\ntables:\n  prices:\n    source: {path: ../prices.csv}\n    key: sku\n",
    );
    w.write("pipelines/notes.txt", "not a pipeline");
    let o = w.run(&["run", "pipelines", "--report", "report.json"]);
    assert_code(&o, 1);
    let lines = summary(&o);
    let prices = w.path("pipelines/../prices.csv");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "pipelines/a-prices.yaml:");
    assert!(
        lines[1].starts_with("prices: failed: table prices: source "),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("prices.csv matches no file"),
        "{lines:?} {prices:?}"
    );
    assert_eq!(lines[2], "pipelines/b-items.yaml:");
    assert_eq!(
        lines[3],
        "items: v1 committed — 1 rows: 1 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected"
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(report["status"], "failed");
    let pipelines: Vec<&str> = report["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(pipelines, ["failed", "success"]);

    // Both files given by name: the same.
    w.write("prices.csv", "sku,price\nA,2.50\n");
    let o = w.run(&["run", "pipelines/b-items.yaml", "pipelines/a-prices.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        [
            "pipelines/b-items.yaml:",
            "items: v2 committed — 1 rows: 0 new, 0 changed, 0 deleted, 1 unchanged, 0 rejected",
            "pipelines/a-prices.yaml:",
            "prices: v1 committed — 1 rows: 1 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
        ]
    );
    let refused = w.run(&["run", "pipelines", "--table", "items"]);
    assert_code(&refused, 2);
}

#[test]
fn with_atomic_true_a_missing_source_commits_nothing() {
    let w = example(&["2024-03-01"]);
    let pipeline = w.read("pipelines/store-sync.yaml");
    w.write(
        "pipelines/store-sync.yaml",
        pipeline.replace("name: store-sync\n", "name: store-sync\natomic: true\n"),
    );
    std::fs::rename(
        w.path("data/store-sync/2024-03-01/items.jsonl"),
        w.path("items.jsonl"),
    )
    .unwrap();
    let o = w.run(&["run", "pipelines/store-sync.yaml"]);
    assert_code(&o, 1);
    let lines = summary(&o);
    let not_committed = "failed: not committed: the pipeline is atomic and items, variations, inventory did not commit";
    assert_eq!(lines[0], format!("locations: {not_committed}"));
    assert_eq!(lines[1], format!("categories: {not_committed}"));
    assert!(
        lines[2].starts_with("items: failed: table items: source "),
        "{lines:?}"
    );
    assert_eq!(lines[3], "variations: skipped: items failed");
    assert_eq!(lines[4], "inventory: skipped: variations was skipped");
    assert_eq!(lines[5], format!("orders: {not_committed}"));
    for table in TABLES {
        let o = w.run(&["history", "pipelines/store-sync.yaml", "--table", table]);
        assert_code(&o, 0);
        assert!(
            !stdout(&o).contains(&format!("| {table}")),
            "{}",
            stdout(&o)
        );
    }
    assert!(!w.path("out/store-sync").exists(), "no delta written");

    // With the file back, every table commits v1 together.
    std::fs::rename(
        w.path("items.jsonl"),
        w.path("data/store-sync/2024-03-01/items.jsonl"),
    )
    .unwrap();
    let o = w.run(&["run", "pipelines/store-sync.yaml"]);
    assert_code(&o, 0);
    assert!(
        summary(&o).iter().all(|l| l.contains(": v1 committed — ")),
        "{:?}",
        summary(&o)
    );
    assert_eq!(
        query(
            &w,
            "SELECT count(DISTINCT \"table\") AS tables FROM runs WHERE status = 'committed'"
        ),
        "tables\n6\n"
    );
}

#[test]
fn monitoring_sees_every_outcome_and_fail_fast_stops_the_folder() {
    let w = Workdir::new();
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    // An invalid pipeline file still gets a report: yesterday's success must not stand.
    w.write("report.json", "{\"status\": \"success\"}");
    w.write(
        "bad.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n",
    );
    let o = w.run(&["run", "bad.yaml", "--report", "report.json"]);
    assert_code(&o, 2);
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(report["status"], "failed");
    assert!(
        report["error"].as_str().unwrap().contains("key"),
        "{report}"
    );

    // In an atomic pipeline a refused guard is the run's outcome: exit 3, nothing committed.
    w.write(
        "atomic.yaml",
        "atomic: true\ntables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    \
         guard: {max_deleted: 10%}\n  copy:\n    source: {path: items.csv}\n    key: sku\n",
    );
    assert_code(&w.run(&["run", "atomic.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\n");
    let o = w.run(&["run", "atomic.yaml"]);
    assert_code(&o, 3);
    let lines = summary(&o);
    assert!(
        lines[0].starts_with("items: refused — 1 of 2 rows (50.0%) would be deleted"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        "copy: failed: not committed: the pipeline is atomic and items did not commit"
    );

    // --fail-fast over a folder: the first file fails, the second does not start.
    w.write(
        "pl/a.yaml",
        "store: ../s\ntables:\n  prices:\n    source: {path: ../prices.csv}\n    key: sku\n",
    );
    w.write(
        "pl/b.yaml",
        "store: ../s\ntables:\n  items:\n    source: {path: ../items.csv}\n    key: sku\n",
    );
    let o = w.run(&["run", "pl", "--fail-fast"]);
    assert_code(&o, 1);
    let lines = summary(&o);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "pl/a.yaml:");

    // `check` names settings whose columns do not exist.
    for (settings, setting) in [
        ("    mode: incremental\n    watermark: nope\n", "watermark"),
        ("    partition_by: [nope]\n", "partition_by"),
    ] {
        w.write(
            "c.yaml",
            format!("tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n{settings}"),
        );
        let o = w.run(&["check", "c.yaml"]);
        assert_code(&o, 1);
        assert!(
            stdout(&o).contains(&format!("column \"nope\" named in `{setting}` is not in")),
            "{}",
            stdout(&o)
        );
    }
}
