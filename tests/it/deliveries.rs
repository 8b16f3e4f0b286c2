//! Delta files as destinations with a cursor (the outbox): a version committed by a run that
//! died before its delta reached its place is delivered by the next run; `run --no-deliver`
//! and `tidemark deliver` write what a delivering run writes; a destination that cannot be
//! written leaves the version committed and exits 5 until it can; `status` says how far each
//! destination is; `vacuum` keeps what a destination lacks and removes the temporary files of
//! dead runs.

use std::path::Path;

use crate::workdir::{Lcg, Workdir, assert_code, read_parquet, stdout, summary};

const PIPELINE: &str = "tables:
  items:
    source: {path: items.csv}
    key: sku
    output:
      - path: out/items-{version}.csv
      - name: latest
        path: out/latest.csv
";

/// The files under `dir`, sorted, names relative to it (temporary ones too).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

#[test]
fn a_version_committed_by_a_run_that_died_is_delivered_by_the_next_run() {
    let w = Workdir::new();
    w.write("items.yaml", PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\nB,3\n");
    // Dies right after the commit record is created: the delta files are still on their way.
    let died = w.run(&["run", "items.yaml", "--abort-after-commit"]);
    assert_ne!(died.status.code(), Some(0));
    let out = listing(&w.path("out"));
    assert_eq!(out.iter().filter(|n| is_temporary(n)).count(), 2, "{out:?}");
    assert!(!out.contains(&"items-2.csv".to_string()), "{out:?}");
    assert_eq!(
        w.read("out/latest.csv"),
        "sku,qty,change_type,change_reason\nA,1,NEW,new row\nB,2,NEW,new row\n"
    );

    let status = w.run(&["status", "items.yaml"]);
    assert_code(&status, 0);
    let text = stdout(&status);
    assert!(
        text.contains("  out/items-{version}.csv: has v1, 1 version behind, 0 failed rows"),
        "{text}"
    );
    assert!(
        text.contains("  latest: has v1, 1 version behind, 0 failed rows"),
        "{text}"
    );

    w.write("items.csv", "sku,qty\nA,4\nB,3\n");
    let next = w.run(&["run", "items.yaml"]);
    assert_code(&next, 0);
    assert_eq!(
        summary(&next),
        [
            "items: v3 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected",
            "  delivered to out/items-{version}.csv what earlier runs committed: v2",
            "  delivered to latest what earlier runs committed: v2",
        ]
    );
    assert_eq!(
        w.read("out/items-2.csv"),
        "sku,qty,change_type,change_reason\nB,3,CHANGED,qty changed from 2 to 3\n"
    );
    assert_eq!(
        w.read("out/items-3.csv"),
        "sku,qty,change_type,change_reason\nA,4,CHANGED,qty changed from 1 to 4\n"
    );
    assert_eq!(w.read("out/latest.csv"), w.read("out/items-3.csv"));

    // The dead run's temporary files go with vacuum, once older than the grace period.
    let kept = w.run(&["vacuum", "items.yaml", "--keep", "5"]);
    assert_code(&kept, 0);
    assert_eq!(
        listing(&w.path("out"))
            .iter()
            .filter(|n| is_temporary(n))
            .count(),
        2
    );
    let vacuum = w.run(&["vacuum", "items.yaml", "--keep", "5", "--grace", "0s"]);
    assert_code(&vacuum, 0);
    assert_eq!(
        stdout(&vacuum).matches(", left by a run that died").count(),
        2,
        "{}",
        stdout(&vacuum)
    );
    assert_eq!(
        listing(&w.path("out")),
        ["items-1.csv", "items-2.csv", "items-3.csv", "latest.csv"]
    );
}

#[test]
fn a_destination_that_cannot_be_written_is_caught_up_once_it_can() {
    let w = Workdir::new();
    w.write("items.yaml", PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\n");
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,2\n");
    let committed = w.run(&["run", "items.yaml", "--no-deliver"]);
    assert_code(&committed, 0);
    assert_eq!(listing(&w.path("out")), ["items-1.csv", "latest.csv"]);
    // The delta folder is replaced by a file: nothing can be delivered there.
    std::fs::remove_dir_all(w.path("out")).unwrap();
    w.write("out", "not a folder");
    let refused = w.run(&["deliver", "items.yaml"]);
    assert_code(&refused, 5);
    let text = stdout(&refused);
    assert!(
        text.contains(
            "items: latest: not delivered: items v2 is committed but not delivered to latest: "
        ) && text.contains("`tidemark deliver` (or the next run) delivers it"),
        "{text}"
    );
    let status = stdout(&w.run(&["status", "items.yaml", "--format", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let destinations = &status["tables"][0]["destinations"];
    assert_eq!(destinations[1]["destination"], "latest");
    assert_eq!(destinations[1]["delivered_version"], 1);
    assert_eq!(destinations[1]["lag"], 1);
    assert_eq!(status["tables"][0]["latest_version"], 2);

    std::fs::remove_file(w.path("out")).unwrap();
    let only = w.run(&["deliver", "items.yaml", "--destination", "latest"]);
    assert_code(&only, 0);
    assert!(
        stdout(&only).starts_with("items: latest: delivered v2 ("),
        "{}",
        stdout(&only)
    );
    assert_eq!(listing(&w.path("out")), ["latest.csv"]);
    let rest = w.run(&["deliver", "items.yaml"]);
    assert_code(&rest, 0);
    assert_eq!(
        summary(&rest)[1],
        "items: latest: up to date (v2)",
        "{}",
        stdout(&rest)
    );
    assert_eq!(
        w.read("out/items-2.csv"),
        "sku,qty,change_type,change_reason\nA,2,CHANGED,qty changed from 1 to 2\n"
    );
    let unknown = w.run(&["deliver", "items.yaml", "--destination", "nowhere"]);
    assert_code(&unknown, 2);
    assert!(
        stdout(&unknown).contains("the destinations are: out/items-{version}.csv, latest")
            || crate::workdir::stderr(&unknown)
                .contains("the destinations are: out/items-{version}.csv, latest"),
        "{}",
        crate::workdir::stderr(&unknown)
    );
}

#[test]
fn vacuum_keeps_the_versions_a_destination_has_not_received() {
    let w = Workdir::new();
    w.write("items.yaml", PIPELINE);
    for (day, qty) in [1, 2, 3, 4].iter().enumerate() {
        w.write("items.csv", format!("sku,qty\nA,{qty}\n"));
        let args: &[&str] = match day {
            0 => &["run", "items.yaml"],
            _ => &["run", "items.yaml", "--no-deliver"],
        };
        assert_code(&w.run(args), 0);
    }
    let vacuum = w.run(&["vacuum", "items.yaml", "--keep", "1", "--grace", "0s"]);
    assert_code(&vacuum, 0);
    assert!(
        stdout(&vacuum).contains("items: keeps v2–v4; removed v1 and 2 files"),
        "{}",
        stdout(&vacuum)
    );
    assert_code(&w.run(&["deliver", "items.yaml"]), 0);
    assert_eq!(
        listing(&w.path("out")),
        [
            "items-1.csv",
            "items-2.csv",
            "items-3.csv",
            "items-4.csv",
            "latest.csv"
        ]
    );
    assert_eq!(
        w.read("out/items-3.csv"),
        "sku,qty,change_type,change_reason\nA,3,CHANGED,qty changed from 2 to 3\n"
    );
}

/// A pipeline whose outputs take every shaping there is: kinds with UNCHANGED, a projection,
/// `on_delete.set`, renamed rows, configured labels and names, and every format.
const SHAPED: &str = "tables:
  items:
    source: {path: items.csv, columns: {qty: int64, price: float64}}
    key: sku
    renames: true
    on_delete:
      set: {qty: 0}
    change_columns:
      type: kind
      reason: why
      labels: {new: added, changed: updated, deleted: removed}
    output:
      - path: out/all-{version}.csv
        include: [new, changed, deleted, renamed, unchanged]
      - path: out/some-{version}.json
        include: [changed, deleted]
        columns: [sku, qty, kind]
      - path: out/rows-{version}.parquet
";

/// A random day: keys from a small range, some rows gone, values changed, nulls, a row
/// renamed now and then (same values, new key).
fn random_day(rng: &mut Lcg) -> String {
    let mut csv = String::from("sku,qty,price,name\n");
    for i in 0..rng.below(40) + 1 {
        if rng.chance(25) {
            continue;
        }
        let sku = match rng.chance(5) {
            true => format!("R{}", rng.below(1000)),
            false => format!("S{i:03}"),
        };
        let qty = match rng.chance(10) {
            true => String::new(),
            false => (rng.below(4) + i % 3).to_string(),
        };
        let price = match rng.chance(10) {
            true => String::new(),
            false => format!("{}.5", rng.below(3)),
        };
        let name = rng.pick(&["a", "b, with comma", "", "\"quoted\""]);
        let name = match name.contains([',', '"']) {
            true => format!("\"{}\"", name.replace('"', "\"\"")),
            false => name.to_string(),
        };
        csv.push_str(&format!("{sku},{qty},{price},{name}\n"));
    }
    csv
}

/// The files a workdir's outputs hold: text as it is, Parquet as its rows.
fn delivered(w: &Workdir) -> Vec<(String, String)> {
    listing(&w.path("out"))
        .into_iter()
        .map(|name| {
            let path = w.path(&format!("out/{name}"));
            let content = match name.ends_with(".parquet") {
                true => {
                    let batch = read_parquet(&path);
                    let shown = datafusion::arrow::util::pretty::pretty_format_batches(&[batch]);
                    shown.unwrap().to_string()
                }
                false => std::fs::read_to_string(&path).unwrap(),
            };
            (name, content)
        })
        .collect()
}

/// The two ways a version reaches its destinations, from the run's memory and read back from
/// the store, write the same files: one workdir delivers each day as it commits it, the other
/// commits with `--no-deliver` and delivers a few days at a time.
#[test]
fn delivering_later_from_the_store_writes_what_the_run_would_have() {
    // Every kind of row, seen in some seed's files: the comparison is not of empty files.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 1..=12u64 {
        let mut rng = Lcg(seed);
        let (now, later) = (Workdir::new(), Workdir::new());
        for w in [&now, &later] {
            w.write("items.yaml", SHAPED);
        }
        let days = 3 + rng.below(4);
        for day in 0..days {
            let csv = random_day(&mut rng);
            now.write("items.csv", &csv);
            later.write("items.csv", &csv);
            assert_code(&now.run(&["run", "items.yaml"]), 0);
            assert_code(&later.run(&["run", "items.yaml", "--no-deliver"]), 0);
            if rng.chance(40) || day + 1 == days {
                assert_code(&later.run(&["deliver", "items.yaml"]), 0);
            }
        }
        let (expected, got) = (delivered(&now), delivered(&later));
        assert_eq!(expected.len() as u64, 3 * days, "seed {seed}");
        assert_eq!(got, expected, "seed {seed}");
        for (_, content) in &expected {
            for label in ["added", "updated", "removed", "RENAMED", "UNCHANGED"] {
                if content.contains(&format!(",{label},")) {
                    seen.insert(label);
                }
            }
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
}

/// An output taken out of the pipeline while vacuum removed versions it had not received is
/// not handed the next version as if nothing was missing: its delivery stops, saying why.
#[test]
fn a_destination_whose_versions_were_vacuumed_away_is_stopped_not_skipped_ahead() {
    let w = Workdir::new();
    w.write("items.yaml", PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\n");
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w.write(
        "without.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n",
    );
    for qty in [2, 3] {
        w.write("items.csv", format!("sku,qty\nA,{qty}\n"));
        assert_code(&w.run(&["run", "without.yaml"]), 0);
    }
    let vacuum = w.run(&["vacuum", "without.yaml", "--keep", "1", "--grace", "0s"]);
    assert_code(&vacuum, 0);
    w.write("items.csv", "sku,qty\nA,4\n");
    let run = w.run(&["run", "items.yaml"]);
    assert_code(&run, 5);
    let text = stdout(&run);
    assert!(
        text.contains("not delivered: items v3 is committed but not delivered to latest: it has v1, but the versions after it up to v2 were removed (vacuum) before it received them"),
        "{text}"
    );
    assert_eq!(
        listing(&w.path("out")),
        ["items-1.csv", "latest.csv"],
        "nothing was skipped ahead"
    );
}
