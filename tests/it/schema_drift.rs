//! Issue 3, schema drift (SPEC 3): a column added, removed, emptied, or an integer column that
//! now has decimals changes no row by itself and gets one line in the summary; normalisation
//! makes a trailing space or a case change no change.

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stdout, summary};

fn items(first: &str) -> Workdir {
    let w = Workdir::new();
    w.write("items.yaml", ITEMS_PIPELINE);
    w.write("items.csv", first);
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w
}

fn run(w: &Workdir, csv: &str) -> Vec<String> {
    w.write("items.csv", csv);
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 0);
    summary(&o)
}

#[test]
fn an_added_column_changes_no_row_and_is_compared_from_the_next_run() {
    let w = items("sku,qty\nA,1\nB,2\n");
    assert_eq!(
        run(&w, "sku,qty,color\nA,1,red\nB,2,blue\n"),
        [
            "items: v2 committed — 2 rows: 0 new, 0 changed, 0 deleted, 2 unchanged, 0 rejected",
            "  note: column \"color\" is new in the source: stored from this version, compared from the next run",
        ]
    );
    assert_eq!(
        run(&w, "sku,qty,color\nA,1,red\nB,2,green\n"),
        ["items: v3 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected"]
    );
    // And removed again.
    assert_eq!(
        run(&w, "sku,qty\nA,1\nB,2\n"),
        [
            "items: v4 committed — 2 rows: 0 new, 0 changed, 0 deleted, 2 unchanged, 0 rejected",
            "  note: column \"color\" is no longer in the source: rows are compared without it, and the new version does not have it",
        ]
    );
}

#[test]
fn an_emptied_column_changes_no_row_today_nor_when_it_comes_back() {
    let w = items("sku,qty,color\nA,1,red\nB,2,blue\n");
    assert_eq!(
        run(&w, "sku,qty,color\nA,1,\nB,3,\n"),
        [
            "items: v2 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected",
            "  note: column \"color\" is empty in every row: not compared in this run, so it changes no row (it is stored empty)",
        ]
    );
    assert_eq!(
        run(&w, "sku,qty,color\nA,1,red\nB,3,blue\n"),
        [
            "items: v3 committed — 2 rows: 0 new, 0 changed, 0 deleted, 2 unchanged, 0 rejected",
            "  note: column \"color\" has values again after an empty run: compared from the next run",
        ]
    );
    assert_eq!(
        run(&w, "sku,qty,color\nA,1,red\nB,3,black\n"),
        ["items: v4 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected"]
    );
}

#[test]
fn an_integer_column_with_decimals_widens_without_changing_rows() {
    let w = items("sku,qty\nA,1\nB,2\nC,3\n");
    assert_eq!(
        run(&w, "sku,qty\nA,1\nB,2.0\nC,3.5\n"),
        [
            "items: v3 committed — 3 rows: 0 new, 1 changed, 0 deleted, 2 unchanged, 0 rejected"
                .replace("v3", "v2"),
            "  note: column \"qty\" now has decimals (3.5 in row 4): widened from int64 to float64; values compare as numbers, so this alone changes no row".to_string(),
        ]
    );
    let o = w.run(&[
        "query",
        "items.yaml",
        "SELECT sku, qty, arrow_typeof(qty) AS t FROM items ORDER BY sku",
        "--format",
        "csv",
    ]);
    assert_eq!(
        stdout(&o),
        "sku,qty,t\nA,1.0,Float64\nB,2.0,Float64\nC,3.5,Float64\n"
    );
    // Integers again: they fit the widened column, nothing changes.
    assert_eq!(
        run(&w, "sku,qty\nA,1\nB,2\nC,3.5\n"),
        ["items: v3 committed — 3 rows: 0 new, 0 changed, 0 deleted, 3 unchanged, 0 rejected"]
    );
}

#[test]
fn a_type_change_that_loses_information_is_refused_unless_declared() {
    let w = items("sku,qty\nA,1\nB,2\n");
    w.write("items.csv", "sku,qty\nA,one\nB,two\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("row 2, column \"qty\": no value fits the column's type any more (column \"qty\": value \"one\" is not a valid int64; the baseline pins the column as int64): its type changed. Declare the new type under `source.columns`"),
        "{}",
        stdout(&o)
    );
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv, columns: {qty: string}}\n    key: sku\n",
    );
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        [
            "items: v2 committed — 2 rows: 0 new, 2 changed, 0 deleted, 0 unchanged, 0 rejected",
            "  note: column \"qty\" changes type from int64 to string, as declared in `source.columns`",
        ]
    );
}

#[test]
fn normalised_keys_and_values_ignore_spaces_and_case() {
    let w = Workdir::new();
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: customer\n",
    );
    run(&w, "customer,tier\nGREYSON,gold\nACME,silver\n");
    // Added to an existing baseline: the baseline is normalised too, so nothing changes.
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: customer\n    normalize:\n      customer: {trim: true, case: upper}\n      tier: {trim: true}\n",
    );
    assert_eq!(
        run(&w, "customer,tier\n\"GREYSON \",gold \nacme,silver\n"),
        ["items: v2 committed — 2 rows: 0 new, 0 changed, 0 deleted, 2 unchanged, 0 rejected"]
    );
    // The stored versions agree: v1 read with v2's clean-ups is v2.
    let o = w.run(&["diff", "items.yaml", "--from", "1", "--to", "2"]);
    assert_eq!(stdout(&o), "customer,tier,change_type,change_reason\n");
    assert_eq!(
        run(&w, "customer,tier\n greyson,Gold\nACME,silver\n"),
        ["items: v3 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected"]
    );
    // Normalising a number column as text is a pipeline error.
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: customer\n    normalize:\n      n: {case: lower}\n",
    );
    w.write("items.csv", "customer,n\nA,1\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("`normalize` of \"n\" asks for case, but the column is int64"),
        "{}",
        stdout(&o)
    );
}

/// A clean-up that makes two baseline keys one is refused with a way out, not paired twice.
#[test]
fn normalising_keys_that_merge_baseline_rows_is_refused() {
    let w = Workdir::new();
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: name\n",
    );
    run(&w, "name,v\n\"GREYSON \",1\ngreyson,1\n");
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: name\n    normalize: {name: {trim: true, case: lower}}\n",
    );
    w.write("items.csv", "name,v\ngreyson,2\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("`normalize` makes several rows of baseline v1 one key (name=greyson)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("tidemark reset --table items"),
        "{}",
        stdout(&o)
    );
}
