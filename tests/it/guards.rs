//! Guards: a run that would delete or change too much, or that holds too few rows, is refused
//! (exit 3) with the numbers; nothing is committed or written; `--force` commits.

use crate::workdir::{Workdir, assert_code, stdout, without_time};

fn items(range: std::ops::Range<u32>, qty: u32) -> String {
    let mut csv = String::from("sku,qty\n");
    for i in range {
        csv.push_str(&format!("S{i:05},{qty}\n"));
    }
    csv
}

const PIPELINE: &str = "tables:
  inventory:
    source: {path: items.csv}
    key: sku
    guard: {max_deleted: 20%, max_changed: \"50%\", min_rows: 100}
    output: [{path: \"out/delta-{version}.csv\"}]
";

#[test]
fn deleting_half_the_catalogue_is_refused_until_forced() {
    let w = Workdir::new();
    w.write("p.yaml", PIPELINE);
    w.write("items.csv", items(0..2000, 1));
    assert_code(&w.run(&["run", "p.yaml"]), 0);

    w.write("items.csv", items(1034..2000, 1));
    let o = w.run(&["run", "p.yaml", "--report", "report.json"]);
    assert_code(&o, 3);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "inventory: refused — 1,034 of 2,000 rows (51.7%) would be deleted; guard max_deleted is 20%. Check the source file, or run again with --force."
    );
    assert!(
        !w.path("out/delta-2.csv").exists(),
        "no delta for a refused run"
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(report["tables"][0]["status"], "refused");
    assert_eq!(report["tables"][0]["deleted"], 1034);

    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT version, status, deleted FROM runs ORDER BY started_at",
        "--format",
        "csv",
    ]);
    assert_eq!(
        stdout(&o),
        "version,status,deleted\n1,committed,0\n,refused,1034\n"
    );
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT count(*) AS n FROM inventory",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&o), "n\n2000\n", "the baseline is untouched");

    let o = w.run(&["run", "p.yaml", "--force"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o)
            .starts_with("inventory: v2 committed — 966 rows: 0 new, 0 changed, 1034 deleted"),
        "{}",
        stdout(&o)
    );
    assert!(w.path("out/delta-2.csv").exists());
}

#[test]
fn too_many_changes_and_too_few_rows_are_refused() {
    let w = Workdir::new();
    w.write("p.yaml", PIPELINE);
    w.write("items.csv", items(0..50, 1));
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 3);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "inventory: refused — the new snapshot holds 50 rows (0.0% of the baseline's 0); guard min_rows is 100. Check the source file, or run again with --force."
    );
    w.write("items.csv", items(0..200, 1));
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", items(0..200, 2));
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains("200 of 200 rows (100.0%) would be changed; guard max_changed is 50%"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_malformed_limit_is_a_pipeline_error() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    guard: {max_deleted: lots}\n",
    );
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    assert!(crate::workdir::stderr(&o).contains("guard `max_deleted` must be a row count (100) or a percentage of the baseline (\"20%\")"), "{}", crate::workdir::stderr(&o));
}

/// The acceptance case: the vendor's day-2 workbook truncated to 40% of its rows, with
/// `guard: {max_deleted: 20%}`: refused (exit 3), no new version, no delta, the refusal in
/// `runs`; the same run with --force commits.
#[test]
fn a_truncated_workbook_is_refused_until_forced() {
    use crate::inventory_data::{day1, write_workbook};
    let w = Workdir::new();
    let pipeline = crate::inventory::pipeline().replace(
        "    key: \"Variant Barcode\"",
        "    key: \"Variant Barcode\"\n    guard: {max_deleted: 20%}",
    );
    w.write("inventory.yaml", pipeline);
    let rows = day1(2000);
    std::fs::create_dir_all(w.path("incoming")).unwrap();
    write_workbook(
        &w.path("incoming/vendor-2024-01-15.xlsx"),
        "2024-01-15",
        &rows,
    );
    assert_code(&w.run(&["run", "inventory.yaml"]), 0);
    write_workbook(
        &w.path("incoming/vendor-2024-01-16.xlsx"),
        "2024-01-16",
        &rows[..800],
    );
    let o = w.run(&["run", "inventory.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).starts_with("inventory: refused — 1,200 of 2,000 rows (60.0%) would be deleted; guard max_deleted is 20%. Check the source file, or run again with --force."),
        "{}",
        stdout(&o)
    );
    let history = w.run(&["history", "inventory.yaml"]);
    assert!(!stdout(&history).contains("| 2 "), "{}", stdout(&history));
    assert_eq!(std::fs::read_dir(w.path("out/delta")).unwrap().count(), 1);
    let runs = w.run(&[
        "query",
        "inventory.yaml",
        "SELECT version, status, deleted FROM runs ORDER BY started_at",
        "--format",
        "csv",
    ]);
    assert_eq!(
        stdout(&runs),
        "version,status,deleted\n1,committed,0\n,refused,1200\n"
    );
    let o = w.run(&["run", "inventory.yaml", "--force"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o)
            .starts_with("inventory: v2 committed — 800 rows: 0 new, 0 changed, 1200 deleted"),
        "{}",
        stdout(&o)
    );
}
