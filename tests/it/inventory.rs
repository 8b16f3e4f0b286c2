//! The inventory feed of issue 2: 2,000 rows, a vendor workbook with title rows, day 2 with
//! quantity changes, discontinued flips, new and removed rows and title-only edits.

use crate::inventory_data::{ExpectedRow, day1, day2, write_workbook};
use crate::workdir::{Workdir, assert_code, stdout, without_time};

const METAFIELD: &str = "Variant Metafield: custom.internal_discontinued [single_line_text_field]";

pub(crate) fn pipeline() -> String {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/inventory.yaml"
    ))
    .unwrap();
    // The example with its paths pointed at the test's own folder.
    example
        .replace("store: ../.tidemark", "store: .tidemark")
        .replace("../data/vendor-inventory-*.xlsx", "incoming/vendor-*.xlsx")
        .replace(
            "../out/delta/inventory-delta-{timestamp}.csv",
            "out/delta/inventory-v{version}.csv",
        )
        .replace("../out/latest/", "out/latest/")
}

pub(crate) fn expected_csv(rows: &[ExpectedRow]) -> String {
    let mut text =
        format!("Variant Barcode,Variant Inventory Qty,{METAFIELD},changeType,changeReason\n");
    for (upc, qty, disc, kind, reason) in rows {
        text.push_str(&format!("{upc},{qty},{disc},{kind},{reason}\n"));
    }
    text
}

#[test]
fn day_two_delta_is_exact() {
    let w = Workdir::new();
    w.write("inventory.yaml", pipeline());
    let first = day1(2000);
    let (second, expected) = day2(&first);
    std::fs::create_dir_all(w.path("incoming")).unwrap();
    write_workbook(
        &w.path("incoming/vendor-2024-01-15.xlsx"),
        "2024-01-15",
        &first,
    );

    let o = w.run(&["run", "inventory.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "inventory: v1 committed — 2000 rows: 2000 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected"
    );

    write_workbook(
        &w.path("incoming/vendor-2024-01-16.xlsx"),
        "2024-01-16",
        &second,
    );
    let o = w.run(&["run", "inventory.yaml", "--report", "report.json"]);
    assert_code(&o, 0);
    let (new, changed, deleted) = (20, 100 + 20, 20);
    assert_eq!(expected.len(), new + changed + deleted);
    assert_eq!(
        without_time(stdout(&o).trim()),
        format!(
            "inventory: v2 committed — 2000 rows: {new} new, {changed} changed, {deleted} deleted, 1860 unchanged, 0 rejected"
        )
    );
    let delta = w.read("out/delta/inventory-v2.csv");
    assert_eq!(delta, expected_csv(&expected));
    assert_eq!(w.read("out/latest/inventory-delta.csv"), delta);
    assert!(delta.contains("Variant Inventory Qty changed from 30 to 25"));

    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    let t = &report["tables"][0];
    assert_eq!(report["status"], "success");
    assert_eq!(
        (
            t["new"].as_u64(),
            t["changed"].as_u64(),
            t["deleted"].as_u64()
        ),
        (Some(20), Some(120), Some(20))
    );
    assert_eq!(t["unchanged"].as_u64(), Some(1860));
    assert_eq!(t["version"].as_u64(), Some(2));

    // The same file again: nothing changed, a header-only delta.
    let o = w.run(&["run", "inventory.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "inventory: v3 committed — 2000 rows: 0 new, 0 changed, 0 deleted, 2000 unchanged, 0 rejected"
    );
    assert_eq!(w.read("out/delta/inventory-v3.csv"), expected_csv(&[]));

    let o = w.run(&["history", "inventory.yaml"]);
    assert_code(&o, 0);
    let history = stdout(&o);
    let versions: Vec<&str> = history
        .lines()
        .filter(|l| l.starts_with("| inventory"))
        .collect();
    assert_eq!(versions.len(), 3, "{history}");
    let cells: Vec<&str> = versions[1].split('|').map(str::trim).collect();
    assert_eq!(
        cells[1..9]
            .iter()
            .copied()
            .filter(|c| !c.contains("UTC"))
            .collect::<Vec<_>>(),
        ["inventory", "2", "run", "2000", "20", "120", "20"],
        "{history}"
    );
    assert!(
        cells[9].ends_with("incoming/vendor-2024-01-16.xlsx"),
        "{history}"
    );

    let o = w.run(&[
        "query",
        "inventory.yaml",
        "SELECT count(*) AS n FROM inventory",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "n\n2000\n");
    let o = w.run(&[
        "query",
        "inventory.yaml",
        "SELECT \"changeType\", count(*) AS n FROM inventory_changes WHERE _version = 2 GROUP BY 1 ORDER BY 1",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    // The store keeps canonical labels; the configured ones are for the consumer's delta.
    assert_eq!(
        stdout(&o),
        "changeType,n\nCHANGED,120\nDELETED,20\nNEW,20\n"
    );
}

#[test]
fn barcodes_read_as_a_person_reads_them_in_excel() {
    let w = Workdir::new();
    w.write("inventory.yaml", pipeline());
    let rows = day1(30);
    std::fs::create_dir_all(w.path("incoming")).unwrap();
    write_workbook(
        &w.path("incoming/vendor-2024-01-15.xlsx"),
        "2024-01-15",
        &rows,
    );
    let o = w.run(&["run", "inventory.yaml"]);
    assert_code(&o, 0);
    let delta = w.read("out/delta/inventory-v1.csv");
    let barcodes: Vec<&str> = delta
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut expected: Vec<String> = rows.iter().map(|r| r.upc.clone()).collect();
    expected.sort();
    assert_eq!(barcodes, expected);
    assert!(
        barcodes.contains(&"7000000200000"),
        "numeric cell without .0 or exponent"
    );
    assert!(
        barcodes.contains(&"0000012346687"),
        "text cell keeps its leading zeros"
    );
}

#[test]
fn dry_run_commits_and_writes_nothing() {
    let w = Workdir::new();
    w.write("inventory.yaml", pipeline());
    std::fs::create_dir_all(w.path("incoming")).unwrap();
    write_workbook(
        &w.path("incoming/vendor-2024-01-15.xlsx"),
        "2024-01-15",
        &day1(10),
    );
    let o = w.run(&["run", "inventory.yaml", "--dry-run"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with("inventory: dry run, would commit v1 — 10 rows: 10 new"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.ends_with(",new,new row")).count(),
        10,
        "{out}"
    );
    assert!(!w.path(".tidemark").exists());
    assert!(!w.path("out").exists());
}
