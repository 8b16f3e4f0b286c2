//! Regressions for the findings of issue 2's new-user review.

use crate::workdir::{Workdir, assert_code, stderr, stdout};

#[test]
fn a_bad_output_setting_fails_before_anything_is_committed() {
    let w = Workdir::new();
    w.write("p.yaml", "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    output: [{path: out/t.csv, columns: [id, nosuch]}]\n");
    w.write("t.csv", "id,name\n1,a\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("column \"nosuch\" named in `output.columns` is not in the delta. Columns present: id, name, change_type, change_reason."), "{}", stdout(&o));
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        !w.path(".tidemark/t/_commits").exists(),
        "nothing may be committed"
    );
}

#[test]
fn mixed_case_table_names_work_when_quoted() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  Categories:\n    source: {path: c.csv}\n    key: id\n  Items:\n    source: {path: i.csv}\n    key: sku\n    depends_on: [Categories]\n    transform: SELECT s.sku, c.name FROM source s JOIN \"Categories\" c ON s.cat = c.id\n",
    );
    w.write("c.csv", "id,name\n1,Rugs\n");
    w.write("i.csv", "sku,cat\nA,1\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT i.sku, i.name FROM \"Items\" i JOIN \"Categories_changes\" c ON c.name = i.name",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "sku,name\nA,Rugs\n");
}

#[test]
fn a_header_only_file_is_refused_not_read_as_deleting_everything() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n",
    );
    w.write("t.csv", "id,name\n1,a\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("t.csv", "id,name\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("t.csv: the file has a header but no data rows"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn source_override_is_read_by_its_own_extension() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: vendor.xlsx, columns: {code: string}}\n    key: code\n",
    );
    w.write("today.csv", "code,qty\n007,1\n");
    let o = w.run(&["run", "p.yaml", "--source", "t=today.csv"]);
    assert_code(&o, 0);
    let o = w.run(&["query", "p.yaml", "SELECT code FROM t", "--format", "csv"]);
    assert_eq!(stdout(&o), "code\n007\n");
}

#[test]
fn a_declared_column_missing_from_the_file_is_an_error() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv, columns: {nosuch: string}}\n    key: id\n",
    );
    w.write("t.csv", "id,name\n1,a\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("column \"nosuch\" named in `source.columns` is not in"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn unknown_placeholders_are_refused() {
    let w = Workdir::new();
    w.write("p.yaml", "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    output: [{path: \"out/x-{tabel}.csv\"}]\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains(
            "line 5: table t: output path `out/x-{tabel}.csv` has unknown placeholder(s) {tabel}"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn runs_within_one_second_keep_every_delta() {
    let w = Workdir::new();
    w.write("p.yaml", "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    output: [{path: \"out/d-{date}.csv\"}]\n");
    w.write("t.csv", "id,name\n1,a\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("t.csv", "id,name\n1,b\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let mut files: Vec<String> = std::fs::read_dir(w.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Same day: the second file gets -v2; across midnight the dates differ. Either way, two.
    assert_eq!(files.len(), 2, "{files:?}");
    let same_day = files[0][..12] == files[1][..12];
    assert!(
        !same_day || files.iter().any(|f| f.ends_with("-v2.csv")),
        "{files:?}"
    );
}

#[test]
fn diff_refuses_a_repeated_key_in_either_file() {
    let w = Workdir::new();
    w.write("old.csv", "id,v\n1,a\n1,b\n");
    w.write("new.csv", "id,v\n1,a\n");
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "id"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("key id=1 appears 2 times"),
        "{}",
        stderr(&o)
    );
    let o = w.run(&["diff", "old.csv", "missing.csv", "--key", "id"]);
    assert_code(&o, 2);
    assert_eq!(stderr(&o), "error: NEW file missing.csv does not exist.\n");
}

#[test]
fn diff_names_a_key_column_the_old_file_lacks() {
    let w = Workdir::new();
    w.write("old.csv", "sku,v\n1,a\n");
    w.write("new.csv", "id,v\n1,a\n");
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "id"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("column \"id\" named in `key` is not in old.csv"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("internal error"), "{}", stderr(&o));
}

#[test]
fn reading_commands_need_an_existing_store() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n",
    );
    let o = w.run(&["query", "p.yaml", "SELECT 1", "--store", "typo"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("no store here yet. Run `tidemark run` first"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_deltas_write_nulls_and_messages_name_no_rust_types() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    output: [{path: out/t.json}]\n",
    );
    w.write("t.csv", "id,note\n1,\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        w.read("out/t.json"),
        "{\"id\":1,\"note\":null,\"change_type\":\"NEW\",\"change_reason\":\"new row\"}\n"
    );

    w.write(
        "bad.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key:\n",
    );
    let o = w.run(&["check", "bad.yaml"]);
    assert_code(&o, 2);
    assert!(
        !stderr(&o).contains("enum") && !stderr(&o).contains("Option<"),
        "{}",
        stderr(&o)
    );
    let o = w.run(&["query", "p.yaml", "SELEC 1"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("query failed: SQL syntax error: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_whole_number_written_with_a_zero_fraction_fits_a_declared_integer_column() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv, columns: {qty: int64}}\n    key: id\n",
    );
    w.write("items.csv", "id,qty\na,1\nb,2.0\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let q = w.run(&[
        "query",
        "p.yaml",
        "SELECT id, qty FROM items ORDER BY id",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&q), "id,qty\na,1\nb,2\n", "{}", stderr(&q));
}
