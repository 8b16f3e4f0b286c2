//! Holes a hostile test found (issue: "Nothing lost, nothing let in"), each closed with a test
//! named after what it protects: the run that must fail before its commit, SQL that must only
//! read, the way out of a damaged store, and refusals that must come before anything runs.

use crate::validation::rejects;
use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stderr, stdout};

const WITH_OUTPUT: &str = "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    output: [{path: out/delta.csv}]\n";

/// The number of versions the store holds for `items`, and the latest snapshot's rows.
fn versions_and_rows(w: &Workdir) -> String {
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT (SELECT count(DISTINCT _version) FROM items_history) AS versions, \
         (SELECT count(*) FROM items) AS rows_now",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    stdout(&o)
}

fn committed_once(w: &Workdir) {
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\nB,3\nC,4\n");
}

#[test]
fn an_output_that_is_a_folder_fails_the_run_before_the_commit() {
    let w = Workdir::new();
    w.write("p.yaml", WITH_OUTPUT);
    committed_once(&w);
    std::fs::remove_file(w.path("out/delta.csv")).unwrap();
    std::fs::create_dir_all(w.path("out/delta.csv")).unwrap();
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("out/delta.csv: is a folder, not a file: name the file to write"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions_and_rows(&w), "versions,rows_now\n1,2\n");
    // Once the folder is gone, the same run commits v2 and its delta reaches the consumer.
    std::fs::remove_dir(w.path("out/delta.csv")).unwrap();
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        w.read("out/delta.csv"),
        "sku,qty,change_type,change_reason\nB,3,CHANGED,qty changed from 2 to 3\nC,4,NEW,new row\n"
    );
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_before_the_commit() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    committed_once(&w);
    std::fs::create_dir_all(w.path("report.json")).unwrap();
    let o = w.run(&["run", "p.yaml", "--report", "report.json"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("report.json: is a folder, not a file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions_and_rows(&w), "versions,rows_now\n1,2\n");
}

#[test]
fn query_only_reads_and_cannot_overwrite_a_snapshot() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    committed_once(&w);
    let snapshot = std::fs::read_dir(w.path(".tidemark/items/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let copy = format!(
        "COPY (SELECT 1 AS x) TO '{}' STORED AS PARQUET",
        snapshot.display()
    );
    for (sql, word) in [
        (copy.as_str(), "COPY"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("INSERT INTO items VALUES ('Z', 9)", "INSERT"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
    ] {
        let o = w.run(&["query", "p.yaml", sql]);
        assert_code(&o, 2);
        assert!(
            stderr(&o).contains(&format!("{word} is not allowed: tidemark's SQL only reads")),
            "{sql}: {}",
            stderr(&o)
        );
    }
    let verify = w.run(&["verify", "p.yaml"]);
    assert_code(&verify, 0);
    assert_eq!(versions_and_rows(&w), "versions,rows_now\n1,2\n");
}

#[test]
fn a_transform_only_reads_even_in_a_dry_run() {
    let w = Workdir::new();
    let target = w.path("written.parquet");
    w.write(
        "p.yaml",
        format!(
            "tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n    transform: \"COPY (SELECT * FROM source) TO '{}' STORED AS PARQUET\"\n",
            target.display()
        ),
    );
    w.write("items.csv", "sku,qty\nA,1\n");
    for args in [
        &["check", "p.yaml"][..],
        &["run", "p.yaml", "--dry-run"],
        &["run", "p.yaml"],
    ] {
        let o = w.run(args);
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert_ne!(o.status.code(), Some(0), "{args:?}: {text}");
        assert!(
            text.contains("table items: the transform failed: COPY is not allowed"),
            "{args:?}: {text}"
        );
        assert!(!target.exists(), "{args:?} wrote the transform's file");
    }
}

#[test]
fn a_damaged_latest_commit_record_is_rolled_back_above() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    committed_once(&w);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write(".tidemark/items/_commits/00000002.json", "{garbage");
    let run = w.run(&["run", "p.yaml"]);
    assert_code(&run, 1);
    assert!(
        stdout(&run).contains("the commit record of items v2 is damaged"),
        "{}",
        stdout(&run)
    );
    let verify = w.run(&["verify", "p.yaml"]);
    assert_code(&verify, 1);
    assert!(stdout(&verify).contains("items v2: DAMAGED"));
    assert!(stderr(&verify).contains("`tidemark rollback --table T --to V`"));
    // The way out the advice names: a rollback commits v3 above the damaged record.
    let rollback = w.run(&["rollback", "p.yaml", "--table", "items", "--to", "1"]);
    assert_code(&rollback, 0);
    assert!(
        stdout(&rollback).contains("items: v3 committed (rollback to v1)"),
        "{}",
        stdout(&rollback)
    );
    let run = w.run(&["run", "p.yaml"]);
    assert_code(&run, 0);
    assert!(
        stdout(&run).contains("v4 committed — 3 rows: 1 new, 1 changed, 0 deleted, 1 unchanged"),
        "{}",
        stdout(&run)
    );
    let history = w.run(&["history", "p.yaml"]);
    assert_code(&history, 0);
    assert!(stderr(&history).contains("the commit record of items v2 is damaged"));
    assert!(stdout(&history).contains("| items | 3 "));
    let query = w.run(&[
        "query",
        "p.yaml",
        "SELECT count(*) AS n FROM items",
        "--format",
        "csv",
    ]);
    assert_code(&query, 0);
    assert_eq!(stdout(&query), "n\n3\n");
    // The damaged version goes with vacuum, after which the store verifies.
    assert_code(
        &w.run(&["vacuum", "p.yaml", "--keep", "2", "--grace", "0m"]),
        0,
    );
    assert_code(&w.run(&["verify", "p.yaml"]), 0);
}

#[test]
fn a_query_of_other_tables_answers_beside_a_damaged_record() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    committed_once(&w);
    w.write(".tidemark/items/_commits/00000001.json", "");
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT count(*) AS n FROM runs",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "n\n1\n");
    let o = w.run(&["query", "p.yaml", "SELECT * FROM items"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("the commit record of items v1 is damaged"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_commits_folder_replaced_by_a_file_is_damage_not_an_empty_store() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    committed_once(&w);
    std::fs::remove_dir_all(w.path(".tidemark/items/_commits")).unwrap();
    w.write(".tidemark/items/_commits", "x");
    for args in [
        &["verify", "p.yaml"][..],
        &["run", "p.yaml"],
        &["history", "p.yaml"],
    ] {
        let o = w.run(args);
        assert_code(&o, 1);
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            text.contains(
                "items/_commits: is a file, not the folder of the commit records of items"
            ),
            "{args:?}: {text}"
        );
        assert!(!text.contains("no versions"), "{args:?}: {text}");
    }
}

#[test]
fn an_empty_source_path_or_key_is_invalid() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\n");
    let o = w.run(&["run", "p.yaml", "--source", "items="]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--source items=: the path is empty"));
    w.write(
        "q.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: ''\n",
    );
    let o = w.run(&["check", "q.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("line 4: table items: `key` names an empty column name"),
        "{}",
        stderr(&o)
    );
    w.write("old.csv", "sku,qty\nA,1\n");
    let o = w.run(&["diff", "old.csv", "items.csv", "--key", ""]);
    assert_code(&o, 2);
}

#[test]
fn store_table_names_are_refused_by_check() {
    let w = Workdir::new();
    w.write("items.csv", "sku,qty\nA,1\n");
    w.write(
        "p.yaml",
        "tables:\n  runs:\n    source: {path: items.csv}\n    key: sku\n  x:\n    source: {path: items.csv}\n    key: sku\n  x_changes:\n    source: {path: items.csv}\n    key: sku\n",
    );
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    let text = stderr(&o);
    assert!(
        text.contains(
            "line 3: table name `runs` is taken: the store's table of runs is queried as `runs`"
        ),
        "{text}"
    );
    assert!(
        text.contains("line 9: table name `x_changes` is taken: the store queries table x's changes as `x_changes`"),
        "{text}"
    );
}

#[test]
fn an_output_over_a_source_or_inside_the_store_is_refused_before_anything_runs() {
    let w = Workdir::new();
    w.write("items.csv", "sku,qty\nA,1\n");
    for (output, expect) in [
        ("items.csv", "would overwrite the source of table items"),
        (".tidemark/items/delta.csv", "is inside the store"),
    ] {
        w.write(
            "p.yaml",
            format!(
                "tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n    output: [{{path: {output}}}]\n"
            ),
        );
        let o = w.run(&["run", "p.yaml"]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains(expect), "{output}: {}", stderr(&o));
        assert!(!w.path(".tidemark/items").exists(), "{output}: a run began");
    }
    // A glob source that would read the delta back, and a --source naming the output.
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: 'in/*.csv'}\n    key: sku\n    output: [{path: 'in/delta-{date}.csv'}]\n",
    );
    assert_code(&w.run(&["check", "p.yaml"]), 2);
    w.write("p.yaml", WITH_OUTPUT);
    let o = w.run(&["run", "p.yaml", "--source", "items=out/delta.csv"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("would overwrite the source of table items (out/delta.csv)"));
}

#[test]
fn an_integer_beyond_int64_rejects_its_row_instead_of_widening_the_column() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\nB,99999999999999999999\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("1 rejected"), "{text}");
    assert!(!text.contains("widened"), "{text}");
    assert!(
        rejects(&w, &o).contains(
            "column \"\"qty\"\": value 99999999999999999999 is beyond the range of int64"
        ),
        "{}",
        rejects(&w, &o)
    );
    let q = w.run(&[
        "query",
        "p.yaml",
        "SELECT sku, qty, arrow_typeof(qty) AS t FROM items ORDER BY sku",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&q), "sku,qty,t\nA,1,Int64\nB,2,Int64\n");
}

#[test]
fn a_leading_zero_in_an_integer_key_rejects_its_row_and_deletes_nothing() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: code\n",
    );
    w.write("items.csv", "code,qty\n7,1\n8,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "code,qty\n007,1\n8,2\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("0 deleted"), "{text}");
    assert!(text.contains("1 rejected"), "{text}");
    assert!(
        rejects(&w, &o).contains("value \"\"007\"\" has a leading zero: read as an integer key it would be the key 7, another code; declare the key column a string"),
        "{}",
        rejects(&w, &o)
    );
    let q = w.run(&[
        "query",
        "p.yaml",
        "SELECT code, qty FROM items ORDER BY code",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&q), "code,qty\n7,1\n8,2\n");
}

#[test]
fn a_row_without_a_key_deletes_no_baseline_row_unless_forced() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\nC,3\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    // A's key cell is empty: the row is rejected, and A may be that row.
    w.write("items.csv", "sku,qty\n,1\nB,5\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("2 rows: 0 new, 1 changed, 0 deleted, 0 unchanged, 1 rejected"),
        "{text}"
    );
    assert!(
        text.contains("2 baseline rows not deleted: 1 rejected rows have no key"),
        "{text}"
    );
    let rows = |w: &Workdir| {
        stdout(&w.run(&[
            "query",
            "p.yaml",
            "SELECT sku, qty FROM items ORDER BY sku",
            "--format",
            "csv",
        ]))
    };
    assert_eq!(rows(&w), "sku,qty\nA,1\nB,5\nC,3\n");
    let o = w.run(&["run", "p.yaml", "--force"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("2 deleted"), "{}", stdout(&o));
    assert_eq!(rows(&w), "sku,qty\nB,5\n");
}

/// The snapshot file a commit record names, as a path in the workdir.
fn snapshot_of(w: &Workdir, version: u64) -> std::path::PathBuf {
    let record = w.read(&format!(".tidemark/items/_commits/{version:08}.json"));
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    w.path(&format!(
        ".tidemark/items/{}",
        record["snapshot"]["path"].as_str().unwrap()
    ))
}

#[test]
fn a_baseline_that_fails_its_checksum_is_never_read_or_committed_on() {
    for damage in ["a flipped byte", "a swapped file"] {
        let w = Workdir::new();
        w.write("p.yaml", ITEMS_PIPELINE);
        committed_once(&w);
        assert_code(&w.run(&["run", "p.yaml"]), 0);
        let (v1, v2) = (snapshot_of(&w, 1), snapshot_of(&w, 2));
        if damage == "a flipped byte" {
            let mut bytes = std::fs::read(&v2).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(&v2, bytes).unwrap();
        } else {
            std::fs::copy(&v1, &v2).unwrap();
        }
        for args in [
            &["run", "p.yaml"][..],
            &["query", "p.yaml", "SELECT count(*) FROM items"],
            &["diff", "p.yaml", "--table", "items", "--from", "1"],
        ] {
            let o = w.run(args);
            assert_code(&o, 1);
            let text = format!("{}{}", stdout(&o), stderr(&o));
            assert!(
                text.contains("the snapshot of items v2 ")
                    && text.contains("the store is damaged")
                    && text.contains("`tidemark rollback --table items --to V`"),
                "{damage}, {args:?}: {text}"
            );
        }
        let runs = w.run(&[
            "query",
            "p.yaml",
            "SELECT count(*) AS n FROM runs WHERE status = 'committed'",
            "--format",
            "csv",
        ]);
        assert_eq!(stdout(&runs), "n\n2\n", "{damage}: nothing committed");
        assert_code(
            &w.run(&["rollback", "p.yaml", "--table", "items", "--to", "1"]),
            0,
        );
        let o = w.run(&["run", "p.yaml"]);
        assert_code(&o, 0);
        assert!(
            stdout(&o).contains("v4 committed — 3 rows: 1 new, 1 changed, 0 deleted, 1 unchanged"),
            "{damage}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn by_default_a_file_whose_keys_changed_form_is_refused() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    let rows = |key: &dyn Fn(u32) -> String| {
        let mut csv = "sku,qty\n".to_string();
        for i in 1..=200 {
            csv.push_str(&format!("{},{i}\n", key(i)));
        }
        csv
    };
    w.write("items.csv", rows(&|i| format!("{i:04}")));
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    // `0001` arrives as `1`: every row would be deleted and added again.
    w.write("items.csv", rows(&|i| i.to_string()));
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains("200 of 200 rows (100.0%) would be deleted; guard max_deleted is 50% (the default; set `guard: {max_deleted: …}` in the pipeline to allow more)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(versions_and_rows(&w), "versions,rows_now\n1,200\n");
    assert_code(&w.run(&["run", "p.yaml", "--force"]), 0);
}

#[test]
fn by_default_a_run_that_rejects_more_than_a_tenth_is_refused() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    let rows = |bad: u32| {
        let mut csv = "sku,qty\n".to_string();
        for i in 1..=200 {
            match i <= bad {
                true => csv.push_str(&format!("K{i},{i} pcs\n")),
                false => csv.push_str(&format!("K{i},{i}\n")),
            }
        }
        csv
    };
    w.write("items.csv", rows(0));
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", rows(30));
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains("30 of 200 rows (15.0%) are invalid; validate.max_invalid is 10% (the default; set `validate: {max_invalid: …}` in the pipeline to allow more)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(versions_and_rows(&w), "versions,rows_now\n1,200\n");
    // Up to a tenth is held out and the rest commits.
    w.write("items.csv", rows(20));
    assert_code(&w.run(&["run", "p.yaml"]), 0);
}
