//! A snapshot streamed through the run (typed, hashed and written a piece at a time, rows
//! read back by position) gives exactly what loading it whole gives; and what the streamed
//! run cannot decide alone (a rejected row, a column empty today, a repeated key, a new
//! column, a type the values no longer fit) goes the usual way, with the usual outcome.

use crate::matching::{PIPELINE, days};
use crate::workdir::{Workdir, assert_code, read_parquet, stderr, stdout, summary, without_time};

/// The default (streamed) and the usual run (`--strategy matching`), each with tiny pieces so
/// that a file is many row groups.
fn both_ways() -> [Workdir; 2] {
    let small = ["--piece-bytes", "4096"];
    [
        Workdir::new().with_run_args(&small),
        Workdir::new().with_run_args(&[&small[..], &["--strategy", "matching"]].concat()),
    ]
}

fn query(w: &Workdir, pipeline: &str, sql: &str) -> String {
    let o = w.run(&["query", pipeline, "--format", "csv", sql]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn streaming_the_snapshot_equals_loading_it_whole() {
    let (day1, day2) = days();
    let ways = both_ways();
    let mut summaries = Vec::new();
    let mut logs = Vec::new();
    for w in &ways {
        w.write("lines.yaml", PIPELINE);
        w.write("lines.csv", &day1);
        assert_code(&w.run(&["run", "lines.yaml"]), 0);
        w.write("lines.csv", &day2);
        let o = w.run(&["-vv", "run", "lines.yaml"]);
        assert_code(&o, 0);
        summaries.push(summary(&o).join("\n"));
        logs.push(stderr(&o));
    }
    let rows = day2.lines().count() - 1;
    assert!(
        logs[0].contains(&format!("loaded, typed, hashed and wrote {rows} rows")),
        "{}",
        logs[0]
    );
    assert!(!logs[0].contains("not streamed"), "{}", logs[0]);
    assert!(!logs[1].contains("wrote"), "{}", logs[1]);
    assert_eq!(summaries[0], summaries[1]);
    assert!(summaries[0].contains(" changed, "), "{}", summaries[0]);
    let [streamed, whole] = &ways;
    let csv = streamed.read("out/lines-2.csv");
    assert_eq!(csv, whole.read("out/lines-2.csv"));
    assert!(csv.lines().count() > 300, "{csv}");
    assert_eq!(
        read_parquet(&streamed.path("out/lines-2.parquet")),
        read_parquet(&whole.path("out/lines-2.parquet"))
    );
    for sql in [
        "SELECT * FROM lines_changes ORDER BY _version, region, id, day",
        // The stored snapshot, row hashes included, in the file's order.
        "SELECT * FROM lines",
        "SELECT version, status, rows_in, new, changed, deleted, unchanged, rejected FROM runs ORDER BY version",
    ] {
        let stored = query(streamed, "lines.yaml", sql);
        assert_eq!(stored, query(whole, "lines.yaml", sql), "{sql}");
        assert!(stored.lines().count() > 2, "{sql}: {stored}");
    }
    // Many row groups, and a file the store verifies.
    let o = streamed.run(&["verify", "lines.yaml"]);
    assert_code(&o, 0);
    // A third day over the streamed baseline, both ways again.
    let day3 = day2.replace(",note 3\n", ",note three\n");
    for w in &ways {
        w.write("lines.csv", &day3);
        assert_code(&w.run(&["run", "lines.yaml"]), 0);
    }
    assert_eq!(
        streamed.read("out/lines-3.csv"),
        whole.read("out/lines-3.csv")
    );
    assert!(streamed.read("out/lines-3.csv").contains("note three"));
}

const ITEMS: &str = "tables:
  items:
    source:
      path: items.csv
    key: [sku]
    output:
      - path: out/items-{version}.csv
";

const DAY1: &str =
    "sku,name,qty,price\nA,apple,1,0.50\nB,bread,2,2.25\nC,cheese,3,7.00\nD,dates,4,3.10\n";

/// A day 2 of [`DAY1`]: one changed, one new, two deleted.
const DAY2: &str = "sku,name,qty,price\nA,apple,1,0.50\nB,bread,5,2.25\nE,eggs,5,1.00\n";

/// The items pipeline with [`DAY1`] committed as v1.
fn commit_day_one(w: &Workdir) {
    w.write("items.yaml", ITEMS);
    w.write("items.csv", DAY1);
    assert_code(&w.run(&["run", "items.yaml"]), 0);
}

#[test]
fn what_streaming_cannot_decide_goes_the_usual_way() {
    let cases = [
        // A value the baseline's type does not fit: the row is rejected.
        (
            "rejected row",
            "sku,name,qty,price\nA,apple,1,0.50\nB,bread,many,2.25\nC,cheese,3,7.00\nE,eggs,5,1.00\n",
        ),
        // A column empty today is compared as if absent.
        (
            "empty column",
            "sku,name,qty,price\nA,apple,,0.50\nB,bread,,2.30\nC,cheese,,7.00\n",
        ),
        // A key twice: the usual run's error.
        (
            "repeated key",
            "sku,name,qty,price\nA,apple,1,0.50\nA,apple,2,0.50\nC,cheese,3,7.00\n",
        ),
        // A new column.
        (
            "new column",
            "sku,name,qty,price,colour\nA,apple,1,0.50,red\nB,bread,2,2.25,brown\nC,cheese,4,7.00,yellow\n",
        ),
        // Integers that now have decimals: widened, as the usual run does.
        (
            "widened",
            "sku,name,qty,price\nA,apple,1.5,0.50\nB,bread,2,2.25\nC,cheese,3,7.00\n",
        ),
        // A null key: rejected.
        (
            "null key",
            "sku,name,qty,price\n,apple,1,0.50\nB,bread,2,2.25\nC,cheese,3,7.00\n",
        ),
        // A text column whose values all look like numbers today: the file's own inference
        // reads numbers, written back as text in their canonical form ("2.0").
        (
            "text of numbers",
            "sku,name,qty,price\nA,1.50,1,0.50\nB,2.00,2,2.25\nC,3,3,7.00\n",
        ),
    ];
    for (case, day2) in cases {
        let ways = both_ways();
        let mut outcomes = Vec::new();
        for w in &ways {
            commit_day_one(w);
            w.write("items.csv", day2);
            let o = w.run(&["-vv", "run", "items.yaml"]);
            let delta = std::fs::read_to_string(w.path("out/items-2.csv")).unwrap_or_default();
            // Names that differ between two runs: the folder, the run id, the seconds.
            let root = w.root().display().to_string();
            let report: Vec<String> = stdout(&o)
                .replace(&root, "ROOT")
                .lines()
                .map(|line| match line.find("/rejects/") {
                    Some(at) => line[..at].to_string(),
                    None => without_time(line),
                })
                .collect();
            outcomes.push((
                o.status.code(),
                report,
                delta,
                query(w, "items.yaml", "SELECT * FROM items ORDER BY sku"),
            ));
            if w.root() == ways[0].root() {
                let log = stderr(&o);
                assert!(log.contains("loading the snapshot whole"), "{case}: {log}");
                // The spooled file is gone, stored or not.
                let spool = w.path(".tidemark/items/spool");
                let spools: Vec<_> = std::fs::read_dir(&spool)
                    .map(|d| d.filter_map(|e| e.ok()).collect())
                    .unwrap_or_default();
                assert!(spools.is_empty(), "{case}: {spools:?}");
            }
        }
        assert_eq!(outcomes[0], outcomes[1], "{case}");
    }
}

/// Settings the streamed run must check as the usual run does: a column the pipeline names
/// that the file lacks is an error, not ignored; a dry run writes nothing to the store.
#[test]
fn named_columns_and_dry_runs_are_as_the_usual_run_has_them() {
    let mut outcomes = Vec::new();
    for w in &both_ways() {
        commit_day_one(w);
        w.write("items.csv", DAY2);
        let o = w.run(&["run", "items.yaml", "--dry-run"]);
        assert_code(&o, 0);
        assert!(!w.path(".tidemark/items/spool").exists());
        let preview = summary(&o).join("\n");
        w.write(
            "items.yaml",
            format!("{ITEMS}    validate:\n      not_null: [emial]\n"),
        );
        let o = w.run(&["run", "items.yaml"]);
        let error = summary(&o)
            .join("\n")
            .replace(&w.root().display().to_string(), "ROOT");
        assert!(error.contains("emial"), "{error}");
        outcomes.push((preview, o.status.code(), error));
        let o = w.run(&["query", "items.yaml", "SELECT count(*) FROM items_history"]);
        outcomes.push((stdout(&o), o.status.code(), String::new()));
    }
    assert_eq!(outcomes[0], outcomes[2]);
    assert_eq!(outcomes[1], outcomes[3]);
    assert!(
        outcomes[0].0.contains("1 new, 1 changed, 2 deleted"),
        "{:?}",
        outcomes[0]
    );
}

/// A delta file that cannot be written (its folder is a file) fails the run before the commit,
/// both ways: no version, no delta, no temporary file left; once the folder can be made, the
/// same day runs and writes its delta.
#[test]
fn a_delta_that_cannot_be_written_commits_nothing() {
    let mut outcomes = Vec::new();
    for w in &both_ways() {
        commit_day_one(w);
        std::fs::remove_dir_all(w.path("out")).unwrap();
        w.write("out", "a file where the delta's folder goes");
        w.write("items.csv", DAY2);
        let o = w.run(&["run", "items.yaml"]);
        // Refused before anything runs (the output's folder is a file).
        assert_code(&o, 2);
        let error = stderr(&o).replace(&w.root().display().to_string(), "ROOT");
        assert!(
            error.contains("ROOT/out is a file, not a folder: the file cannot be written there"),
            "{error}"
        );
        let versions = query(
            w,
            "items.yaml",
            "SELECT max(_version) AS v FROM items_history",
        );
        assert_eq!(versions, "v\n1\n");
        assert_eq!(w.read("out"), "a file where the delta's folder goes");
        std::fs::remove_file(w.path("out")).unwrap();
        let o = w.run(&["run", "items.yaml"]);
        assert_code(&o, 0);
        let written: Vec<_> = std::fs::read_dir(w.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(written, ["items-2.csv"]);
        outcomes.push((error, summary(&o), w.read("out/items-2.csv")));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(
        outcomes[0]
            .2
            .contains("B,bread,5,2.25,CHANGED,qty changed from 2 to 5"),
        "{}",
        outcomes[0].2
    );
}

/// A delta of many batches comes out in key order, every time and both ways: shaping it for
/// an output or for the store must not gather its batches back in whatever order they finish.
#[test]
fn a_large_delta_is_written_in_key_order() {
    let day = |version: u64| {
        let mut text = String::from("sku,name,qty,price\n");
        for i in 0..30_000u64 {
            // Every third row changes; rows 0..1000 go, rows 30000.. come.
            let i = if version == 2 && i < 1000 {
                i + 30_000
            } else {
                i
            };
            let qty = if version == 2 && i % 3 == 0 { i + 1 } else { i };
            text.push_str(&format!("K{i:06},item {i},{qty},{}.25\n", i % 50));
        }
        text
    };
    let mut deltas = Vec::new();
    for w in &both_ways() {
        w.write("items.yaml", ITEMS);
        w.write("items.csv", day(1));
        assert_code(&w.run(&["run", "items.yaml"]), 0);
        w.write("items.csv", day(2));
        assert_code(&w.run(&["run", "items.yaml"]), 0);
        let delta = w.read("out/items-2.csv");
        let keys: Vec<&str> = delta.lines().skip(1).map(|l| &l[..7]).collect();
        assert_eq!(keys.len(), 1000 + 9_666 + 1000, "{}", &delta[..200]);
        assert!(keys.is_sorted(), "keys out of order");
        let stored = query(
            w,
            "items.yaml",
            "SELECT sku FROM items_changes WHERE _version = 2",
        );
        let stored: Vec<&str> = stored.lines().skip(1).collect();
        assert_eq!(stored, keys);
        deltas.push(delta);
    }
    assert_eq!(deltas[0], deltas[1]);
}
