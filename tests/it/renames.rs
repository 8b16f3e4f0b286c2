//! Key changes (`renames: true`, SPEC section 3): a DELETED and a NEW row with the same
//! compared values are one RENAMED row carrying the old and the new key, in the summary, the
//! report, the delta files and the stored change rows; a pairing that could go two ways is
//! not made.

use crate::workdir::{Workdir, assert_code, read_parquet, stderr, stdout, without_time};

const PIPELINE: &str = "tables:
  catalog:
    source:
      path: catalog.csv
    key: sku
    renames: true
    output:
      - path: out/catalog-{version}.csv
      - path: out/catalog-{version}.parquet
";

const DAY1: &str = "sku,title,qty\nA-1,Rug,30\nA-2,Mat,10\nA-3,Lamp,5\nA-4,Vase,2\n";
/// A-1 re-coded as B-1, A-2 changed, A-3 gone, A-4 as it was, C-1 new.
const DAY2: &str = "sku,title,qty\nB-1,Rug,30\nA-2,Mat,9\nA-4,Vase,2\nC-1,Tile,1\n";

fn query(w: &Workdir, pipeline: &str, sql: &str) -> String {
    let o = w.run(&["query", pipeline, sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn a_recoded_key_is_one_renamed_row_everywhere() {
    let w = Workdir::new();
    w.write("catalog.yaml", PIPELINE);
    w.write("catalog.csv", DAY1);
    assert_code(&w.run(&["run", "catalog.yaml"]), 0);
    w.write("catalog.csv", DAY2);
    let o = w.run(&["run", "catalog.yaml", "--report", "report.json"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "catalog: v2 committed — 4 rows: 1 new, 1 changed, 1 deleted, 1 renamed, 1 unchanged, 0 rejected"
    );
    assert_eq!(
        w.read("out/catalog-2.csv"),
        "sku,title,qty,previous_sku,change_type,change_reason\n\
         A-2,Mat,9,,CHANGED,qty changed from 10 to 9\n\
         A-3,Lamp,5,,DELETED,row removed\n\
         B-1,Rug,30,A-1,RENAMED,key sku changed from A-1 to B-1\n\
         C-1,Tile,1,,NEW,new row\n"
    );
    let parquet = read_parquet(&w.path("out/catalog-2.parquet"));
    let previous = parquet
        .column_by_name("previous_sku")
        .expect("previous_sku");
    assert_eq!(previous.null_count(), 3);
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    let table = &report["tables"][0];
    assert_eq!(
        (&table["new"], &table["deleted"], &table["renamed"]),
        (&1.into(), &1.into(), &1.into())
    );
    // The store keeps the renamed row with its old key; the runs table counts it.
    assert_eq!(
        query(
            &w,
            "catalog.yaml",
            "SELECT sku, previous_sku, change_type, change_reason FROM catalog_changes WHERE _version = 2 ORDER BY sku"
        ),
        "sku,previous_sku,change_type,change_reason\n\
         A-2,,CHANGED,qty changed from 10 to 9\n\
         A-3,,DELETED,row removed\n\
         B-1,A-1,RENAMED,key sku changed from A-1 to B-1\n\
         C-1,,NEW,new row\n"
    );
    assert_eq!(
        query(
            &w,
            "catalog.yaml",
            "SELECT version, new, deleted, renamed FROM runs ORDER BY version"
        ),
        "version,new,deleted,renamed\n1,4,0,0\n2,1,1,1\n"
    );
}

#[test]
fn without_renames_the_same_files_give_deleted_and_new_rows() {
    let w = Workdir::new();
    w.write("catalog.yaml", PIPELINE.replace("    renames: true\n", ""));
    w.write("catalog.csv", DAY1);
    assert_code(&w.run(&["run", "catalog.yaml"]), 0);
    w.write("catalog.csv", DAY2);
    let o = w.run(&["run", "catalog.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "catalog: v2 committed — 4 rows: 2 new, 1 changed, 2 deleted, 1 unchanged, 0 rejected"
    );
    assert_eq!(
        w.read("out/catalog-2.csv"),
        "sku,title,qty,change_type,change_reason\n\
         A-1,Rug,30,DELETED,row removed\n\
         A-2,Mat,9,CHANGED,qty changed from 10 to 9\n\
         A-3,Lamp,5,DELETED,row removed\n\
         B-1,Rug,30,NEW,new row\n\
         C-1,Tile,1,NEW,new row\n"
    );
}

#[test]
fn labels_the_previous_prefix_and_include_apply_to_renamed_rows() {
    let w = Workdir::new();
    let pipeline = "tables:
  catalog:
    source:
      path: catalog.csv
    key: sku
    renames: true
    change_columns: {previous: old_, labels: {renamed: MOVED}}
    output:
      - path: out/moved-{version}.csv
        include: [renamed]
      - path: out/no-moves-{version}.csv
        include: [new, deleted]
";
    w.write("catalog.yaml", pipeline);
    w.write("catalog.csv", DAY1);
    assert_code(&w.run(&["run", "catalog.yaml"]), 0);
    w.write("catalog.csv", DAY2);
    assert_code(&w.run(&["run", "catalog.yaml"]), 0);
    assert_eq!(
        w.read("out/moved-2.csv"),
        "sku,title,qty,old_sku,change_type,change_reason\n\
         B-1,Rug,30,A-1,MOVED,key sku changed from A-1 to B-1\n"
    );
    assert_eq!(
        w.read("out/no-moves-2.csv"),
        "sku,title,qty,old_sku,change_type,change_reason\n\
         A-3,Lamp,5,,DELETED,row removed\n\
         C-1,Tile,1,,NEW,new row\n"
    );
}

#[test]
fn rows_whose_content_more_than_one_row_holds_are_not_paired() {
    let w = Workdir::new();
    w.write("catalog.yaml", PIPELINE);
    // Two rugs go, one comes: which one was re-coded is not known.
    w.write(
        "catalog.csv",
        "sku,title,qty\nA-1,Rug,30\nA-2,Rug,30\nA-3,Lamp,5\n",
    );
    assert_code(&w.run(&["run", "catalog.yaml"]), 0);
    w.write("catalog.csv", "sku,title,qty\nB-1,Rug,30\nB-3,Lamp,5\n");
    let o = w.run(&["run", "catalog.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        w.read("out/catalog-2.csv"),
        "sku,title,qty,previous_sku,change_type,change_reason\n\
         A-1,Rug,30,,DELETED,row removed\n\
         A-2,Rug,30,,DELETED,row removed\n\
         B-1,Rug,30,,NEW,new row\n\
         B-3,Lamp,5,A-3,RENAMED,key sku changed from A-3 to B-3\n"
    );
}

#[test]
fn diff_renames_pairs_rows_of_a_composite_key() {
    let w = Workdir::new();
    w.write("old.csv", "store,sku,qty\n1,A,5\n1,B,6\n2,C,7\n2,D,8\n");
    w.write("new.csv", "store,sku,qty\n3,A,5\n1,E,6\n2,C,7\n2,F,9\n");
    let o = w.run(&[
        "diff",
        "old.csv",
        "new.csv",
        "--key",
        "store,sku",
        "--renames",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "store,sku,qty,previous_store,previous_sku,change_type,change_reason\n\
         1,E,6,1,B,RENAMED,key sku changed from B to E\n\
         2,D,8,,,DELETED,row removed\n\
         2,F,9,,,NEW,new row\n\
         3,A,5,1,A,RENAMED,key store changed from 1 to 3\n"
    );
    // Without --renames: no previous_ columns, and the same rows deleted and new.
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "store,sku"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o).lines().next(),
        Some("store,sku,qty,change_type,change_reason")
    );
    assert_eq!(stdout(&o).matches(",NEW,").count(), 3);
}

#[test]
fn a_column_named_as_the_old_key_column_is_refused() {
    let w = Workdir::new();
    w.write("catalog.yaml", PIPELINE);
    w.write("catalog.csv", "sku,title,previous_sku\nA-1,Rug,Z-9\n");
    let o = w.run(&["run", "catalog.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("catalog: failed: table catalog: ")
            && stdout(&o).contains("catalog.csv has a column \"previous_sku\", the name the delta gives a renamed row's old key with `renames: true`; rename it in `transform`, or give those columns another prefix with `change_columns: {previous: ...}`."),
        "{}",
        stdout(&o)
    );
    // `tidemark diff` picks a free name instead.
    w.write("old.csv", "sku,previous_sku\nA-1,x\n");
    w.write("new.csv", "sku,previous_sku\nB-1,x\n");
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "sku", "--renames"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "sku,previous_sku,diff_previous_sku,change_type,change_reason\n\
         B-1,x,A-1,RENAMED,key sku changed from A-1 to B-1\n"
    );
}

#[test]
fn renames_with_incremental_mode_is_refused_when_the_file_is_read() {
    let w = Workdir::new();
    w.write(
        "catalog.yaml",
        "tables:
  catalog:
    source: {path: catalog.csv}
    key: sku
    mode: incremental
    watermark: updated
    renames: true
",
    );
    w.write("catalog.csv", "sku,updated\nA,1\n");
    let o = w.run(&["run", "catalog.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("line 7: table catalog: `renames` pairs a DELETED row with a NEW one, and `mode: incremental` deletes nothing"),
        "{}",
        stderr(&o)
    );
}
