//! Bad input: each case exits with its code and a message naming the file, row or column and
//! what to do; the previous baseline still answers queries afterwards.

use crate::workdir::{Workdir, assert_code, stderr, stdout};

const PIPELINE: &str = "tables:
  items:
    source:
      path: items.csv
    key: sku
";

fn with_baseline() -> Workdir {
    let w = Workdir::new();
    w.write("items.yaml", PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w
}

fn baseline_still_answers(w: &Workdir) {
    let o = w.run(&[
        "query",
        "items.yaml",
        "SELECT sku, qty FROM items ORDER BY sku",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "sku,qty\nA,1\nB,2\n");
}

#[test]
fn unknown_key_names_line_and_suggests() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source:\n      path: items.csv\n    key: sku\n    compre: [qty]\n",
    );
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("p.yaml:6:5: unknown key `compre`: did you mean `compare`?"),
        "{err}"
    );
}

#[test]
fn dependency_cycle_is_named() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  a:\n    source: {path: a.csv}\n    key: id\n    depends_on: [b]\n  b:\n    source: {path: b.csv}\n    key: id\n    depends_on: [a]\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("`depends_on` forms a cycle among: a (line 3), b (line 7)"),
        "{err}"
    );
}

#[test]
fn key_column_that_does_not_exist() {
    let w = with_baseline();
    w.write("items.csv", "SKU,qty\nA,1\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("items: failed: table items: column \"sku\" named in `key` is not in")
            && out.contains("Columns present: SKU, qty."),
        "{out}"
    );
    baseline_still_answers(&w);
}

#[test]
fn missing_source_file() {
    let w = with_baseline();
    std::fs::remove_file(w.path("items.csv")).unwrap();
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("matches no file. Check `source.path` in the pipeline file, or pass today's file with --source items=PATH."), "{}", stdout(&o));
    baseline_still_answers(&w);
    // The failed run is recorded next to the committed one.
    let o = w.run(&["query", "items.yaml", "SELECT version, status, rows_in, source IS NOT NULL AS has_source, error IS NOT NULL AS has_error FROM runs ORDER BY started_at", "--format", "csv"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "version,status,rows_in,has_source,has_error\n1,committed,2,true,false\n,failed,0,false,true\n"
    );
}

#[test]
fn empty_source_file() {
    let w = with_baseline();
    w.write("items.csv", "");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("items.csv: the file is empty"),
        "{}",
        stdout(&o)
    );
    baseline_still_answers(&w);
}

#[test]
fn duplicate_key_names_the_key_and_row() {
    let w = with_baseline();
    w.write("items.csv", "sku,qty\nA,1\nB,2\nA,3\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.contains("key sku=A appears 2 times in the new snapshot"),
        "{out}"
    );
    assert!(out.contains("items.csv rows 2 and 4)"), "{out}");
    assert!(out.contains("`duplicates: keep_first`"), "{out}");
    baseline_still_answers(&w);
}

/// Damaged workbooks on which the Excel reader itself panics (found by fuzzing) are damaged
/// files with exit 1, never an internal error.
#[test]
fn damaged_workbooks_that_crash_the_reader_are_reported_as_damaged() {
    for fixture in ["damaged-assert.xls", "damaged-cfb.xls"] {
        let o = run_on_fixture(fixture);
        assert_code(&o, 1);
        assert!(
            // Caught by the chain check, or by the guard around the reader.
            stdout(&o).contains("items.xls: the file is damaged: the Excel reader failed on it (")
                || stdout(&o).contains("its OLE container is damaged"),
            "{fixture}: {}",
            stdout(&o)
        );
        assert!(
            !stderr(&o).contains("internal error"),
            "{fixture}: {}",
            stderr(&o)
        );
    }
}

fn run_on_fixture(fixture: &str) -> std::process::Output {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.xls}\n    key: sku\n",
    );
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture),
    )
    .unwrap();
    w.write("items.xls", bytes);
    w.run(&["run", "p.yaml"])
}

/// Workbooks whose allocation-table chain loops (found by fuzzing) would make the Excel reader
/// allocate without end; they are damaged files, reported at once.
#[test]
fn workbooks_whose_allocation_chain_loops_are_damaged_files() {
    for fixture in [
        "looping-chain-1.xls",
        "looping-chain-2.xls",
        "looping-chain-3.xls",
    ] {
        let o = run_on_fixture(fixture);
        assert_code(&o, 1);
        assert!(
            stdout(&o).contains("items.xls: the file is not a readable Excel workbook: its OLE container is damaged: its allocation table has a chain that loops."),
            "{fixture}: {}",
            stdout(&o)
        );
    }
}
