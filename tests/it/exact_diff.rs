//! `tidemark diff OLD NEW` reads a column the two files type differently in a common type that
//! loses nothing (issue "One comparison core", point 4): text against text as written, numbers
//! of two kinds in a number type that holds both; never a cast error, never a change lost by
//! rounding.

use std::process::Output;

use crate::workdir::{Workdir, assert_code, stderr, stdout};

/// `tidemark diff old.csv new.csv ARGS...` of these two files, in a folder of its own.
fn diff_run(old: &str, new: &str, args: &[&str]) -> Output {
    let w = Workdir::new();
    w.write("old.csv", old);
    w.write("new.csv", new);
    w.run(&[&["diff", "old.csv", "new.csv"], args].concat())
}

fn diff(old: &str, new: &str, key: &str) -> (i32, String) {
    let o = diff_run(old, new, &["--key", key]);
    (o.status.code().unwrap_or(-1), stdout(&o))
}

#[test]
fn r17_a_float_that_became_an_integer_is_changed() {
    let (code, out) = diff("id,amount\n1,10.5\n2,3\n", "id,amount\n1,10\n2,3\n", "id");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,amount,change_type,change_reason\n1,10.0,CHANGED,amount changed from 10.5 to 10.0\n"
    );
}

#[test]
fn r17_a_code_that_lost_its_leading_zeros_is_changed() {
    let (code, out) = diff("id,upc\n1,0012345\n", "id,upc\n1,12345\n", "id");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,upc,change_type,change_reason\n1,12345,CHANGED,upc changed from 0012345 to 12345\n"
    );
    // As the key, it is another row.
    let (code, out) = diff("id,upc\n1,0012345\n", "id,upc\n1,12345\n", "upc");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,upc,change_type,change_reason\n1,0012345,DELETED,row removed\n1,12345,NEW,new row\n"
    );
}

#[test]
fn r17_text_that_became_a_number_is_changed_not_an_error() {
    let (code, out) = diff("id,v\n1,abc\n2,7\n", "id,v\n1,5\n2,7\n", "id");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "id,v,change_type,change_reason\n1,5,CHANGED,v changed from abc to 5\n"
    );
}

#[test]
fn r17_a_timestamp_or_decimal_column_that_became_text_changes_only_rows_whose_text_differs() {
    let old = "id,at,price\n1,2024-01-01T10:00:00,1.50\n2,2024-01-02T10:00:00,2.00\n";
    let new = "id,at,price\n1,2024-01-01T10:00:00,1.50\n2,soon,n/a\n";
    let (code, out) = diff(old, new, "id");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "id,at,price,change_type,change_reason\n2,soon,n/a,CHANGED,at changed from 2024-01-02T10:00:00 to soon; price changed from 2.00 to n/a\n"
    );
}

#[test]
fn r17_a_date_that_became_an_integer_shows_the_date() {
    let (code, out) = diff("id,d\n1,2024-01-01\n", "id,d\n1,20240101\n", "id");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,d,change_type,change_reason\n1,20240101,CHANGED,d changed from 2024-01-01 to 20240101\n"
    );
}

#[test]
fn r17_files_of_the_same_types_diff_as_before() {
    let o = diff_run(
        "id,qty,at\n1,5,2024-01-01\n2,6,2024-01-02\n",
        "id,qty,at\n1,5,2024-01-01\n2,7,2024-01-02\n3,1,2024-01-03\n",
        &["--key", "id"],
    );
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "id,qty,at,change_type,change_reason\n2,7,2024-01-02T00:00:00,CHANGED,qty changed from 6 to 7\n3,1,2024-01-03T00:00:00,NEW,new row\n"
    );
}

#[test]
fn r17_a_key_named_twice_or_left_empty_is_a_usage_error() {
    let w = Workdir::new();
    w.write("a.csv", "id,v\n1,a\n");
    let o = w.run(&["diff", "a.csv", "a.csv", "--key", "id,id"]);
    assert_code(&o, 2);
    assert_eq!(
        stderr(&o),
        "error: --key \"id,id\": the key names \"id\" twice; name each key column once\n"
    );
    let o = w.run(&["diff", "a.csv", "a.csv", "--key", ""]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("a key column name is empty"),
        "{}",
        stderr(&o)
    );
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: a.csv}\n    key: [id, id]\n",
    );
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("line 4: table t: `key` names \"id\" twice"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn r17_with_nothing_left_to_compare_rows_compare_by_key() {
    let (code, out) = diff("id,v\n1,a\n2,b\n", "id,v\n2,c\n3,d\n", "id");
    assert_eq!(code, 0);
    assert!(out.contains("CHANGED"), "{out}");
    let o = diff_run(
        "id,v\n1,a\n2,b\n",
        "id,v\n2,c\n3,d\n",
        &["--key", "id", "--compare", "id"],
    );
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "id,v,change_type,change_reason\n1,a,DELETED,row removed\n3,d,NEW,new row\n"
    );
    // Every column a key.
    let (code, out) = diff("id\n1\n2\n", "id\n2\n3\n", "id");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,change_type,change_reason\n1,DELETED,row removed\n3,NEW,new row\n"
    );
}

#[test]
fn r17_a_null_or_repeated_key_in_the_old_file_is_named_there() {
    let (code, _) = diff("id,v\n,a\n", "id,v\n1,a\n", "id");
    assert_eq!(code, 1);
    let o = diff_run("id,v\n1,a\n,b\n", "id,v\n1,a\n", &["--key", "id"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("key column \"id\" is empty at old.csv row 3"),
        "{}",
        stderr(&o)
    );
    let o = diff_run("id,v\n1,a\n1,b\n", "id,v\n1,a\n", &["--key", "id"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("appears 2 times in the old file (old.csv rows 2 and 3)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn r17_two_deltas_diff_into_a_delta_with_its_own_change_columns() {
    let o = diff_run(
        "id,v,change_type,change_reason\n1,a,NEW,new row\n",
        "id,v,change_type,change_reason\n1,b,CHANGED,v changed from a to b\n",
        &["--key", "id", "--compare", "v"],
    );
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "id,v,change_type,change_reason,diff_change_type,diff_change_reason\n1,b,CHANGED,v changed from a to b,CHANGED,v changed from a to b\n"
    );
}

#[test]
fn r17_the_text_null_and_a_null_value_are_told_apart_in_reasons() {
    let (code, out) = diff("id,v\n1,null\n2,\n", "id,v\n1,\n2,null\n", "id");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id,v,change_type,change_reason\n1,,CHANGED,\"v changed from \"\"null\"\" to null\"\n2,null,CHANGED,\"v changed from null to \"\"null\"\"\"\n"
    );
}

const NESTED_PIPELINE: &str = "tables:
  items:
    source: {path: items.json}
    key: id
    output:
      - path: out/items-{version}.csv
";

#[test]
fn r17_nested_json_values_compare_by_their_canonical_json() {
    let w = Workdir::new();
    w.write("p.yaml", NESTED_PIPELINE);
    w.write(
        "items.json",
        "{\"id\":1,\"tags\":[\"a\",\"b\"],\"dims\":{\"w\":1,\"h\":2}}\n{\"id\":2,\"tags\":[\"c\"],\"dims\":{\"w\":3,\"h\":4}}\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    // Day 2 writes the fields in another order; only item 2's values changed.
    w.write(
        "items.json",
        "{\"id\":1,\"dims\":{\"h\":2,\"w\":1},\"tags\":[\"a\",\"b\"]}\n{\"id\":2,\"dims\":{\"h\":5,\"w\":3},\"tags\":[\"c\",\"d\"]}\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged"),
        "{}",
        stdout(&o)
    );
    let delta = w.read("out/items-2.csv");
    assert!(
        delta.contains(
            r#"dims changed from {""h"":4,""w"":3} to {""h"":5,""w"":3}; tags changed from [""c""] to [""c"",""d""]"#
        ),
        "{delta}"
    );
    // The ad-hoc diff reads them alike.
    w.write("old.json", "{\"id\":2,\"tags\":[\"c\"]}\n");
    w.write("new.json", "{\"id\":2,\"tags\":[\"c\",\"d\"]}\n");
    let o = w.run(&["diff", "old.json", "new.json", "--key", "id"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "id,tags,change_type,change_reason\n2,\"[\"\"c\"\",\"\"d\"\"]\",CHANGED,\"tags changed from [\"\"c\"\"] to [\"\"c\"\",\"\"d\"\"]\"\n"
    );
}

/// A Parquet file of binary, fixed-size binary, 8-bit, unsigned 64-bit and float32 columns.
fn odd_types_parquet(path: &std::path::Path, small: i8, bytes: &[u8]) {
    use datafusion::arrow::array::{
        BinaryArray, FixedSizeBinaryArray, Float32Array, Int8Array, Int64Array, RecordBatch,
        UInt64Array,
    };
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
        (
            "b",
            Arc::new(BinaryArray::from(vec![bytes, &[1u8][..]])) as _,
        ),
        (
            "fb",
            Arc::new(
                FixedSizeBinaryArray::try_from_iter(vec![vec![0u8, 1], vec![2, 3]].into_iter())
                    .unwrap(),
            ) as _,
        ),
        ("small", Arc::new(Int8Array::from(vec![small, 5])) as _),
        ("big", Arc::new(UInt64Array::from(vec![u64::MAX, 7])) as _),
        ("f", Arc::new(Float32Array::from(vec![0.5f32, 1.25])) as _),
    ])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn r17_binary_small_unsigned_and_float32_values_are_hashed_compared_and_shown() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.parquet}\n    key: id\n    output:\n      - path: out/items-{version}.csv\n",
    );
    odd_types_parquet(&w.path("items.parquet"), -3, &[0, 255]);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("0 changed"), "{}", stdout(&o));
    odd_types_parquet(&w.path("items.parquet"), 4, &[0, 254]);
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("1 changed"), "{}", stdout(&o));
    assert_eq!(
        w.read("out/items-3.csv"),
        "id,b,fb,small,big,f,change_type,change_reason\n1,00fe,0001,4,18446744073709551615,0.5,CHANGED,b changed from 00ff to 00fe; small changed from -3 to 4\n"
    );
}
