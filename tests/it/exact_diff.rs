//! `tidemark diff OLD NEW` reads a column the two files type differently in a common type that
//! loses nothing (issue "One comparison core", point 4): text against text as written, numbers
//! of two kinds as floats; never a cast error, never a change lost by rounding.

use crate::workdir::{Workdir, assert_code, stdout};

fn diff(old: &str, new: &str, key: &str) -> (i32, String) {
    let w = Workdir::new();
    w.write("old.csv", old);
    w.write("new.csv", new);
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", key]);
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
    let w = Workdir::new();
    w.write("old.csv", "id,qty,at\n1,5,2024-01-01\n2,6,2024-01-02\n");
    w.write(
        "new.csv",
        "id,qty,at\n1,5,2024-01-01\n2,7,2024-01-02\n3,1,2024-01-03\n",
    );
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "id"]);
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
        crate::workdir::stderr(&o),
        "error: --key \"id,id\": the key names \"id\" twice; name each key column once\n"
    );
    let o = w.run(&["diff", "a.csv", "a.csv", "--key", ""]);
    assert_code(&o, 2);
    assert!(
        crate::workdir::stderr(&o).contains("a key column name is empty"),
        "{}",
        crate::workdir::stderr(&o)
    );
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: a.csv}\n    key: [id, id]\n",
    );
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        crate::workdir::stderr(&o).contains("line 4: table t: `key` names \"id\" twice"),
        "{}",
        crate::workdir::stderr(&o)
    );
}

#[test]
fn r17_with_nothing_left_to_compare_rows_compare_by_key() {
    let (code, out) = diff("id,v\n1,a\n2,b\n", "id,v\n2,c\n3,d\n", "id");
    assert_eq!(code, 0);
    assert!(out.contains("CHANGED"), "{out}");
    let w = Workdir::new();
    w.write("old.csv", "id,v\n1,a\n2,b\n");
    w.write("new.csv", "id,v\n2,c\n3,d\n");
    let o = w.run(&[
        "diff",
        "old.csv",
        "new.csv",
        "--key",
        "id",
        "--compare",
        "id",
    ]);
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
    let w = Workdir::new();
    w.write("old.csv", "id,v\n1,a\n,b\n");
    w.write("new.csv", "id,v\n1,a\n");
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "id"]);
    assert_code(&o, 1);
    assert!(
        crate::workdir::stderr(&o).contains("key column \"id\" is empty at old.csv row 3"),
        "{}",
        crate::workdir::stderr(&o)
    );
    w.write("old.csv", "id,v\n1,a\n1,b\n");
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "id"]);
    assert_code(&o, 1);
    assert!(
        crate::workdir::stderr(&o)
            .contains("appears 2 times in the old file (old.csv rows 2 and 3)"),
        "{}",
        crate::workdir::stderr(&o)
    );
}

#[test]
fn r17_two_deltas_diff_into_a_delta_with_its_own_change_columns() {
    let w = Workdir::new();
    w.write(
        "old.csv",
        "id,v,change_type,change_reason\n1,a,NEW,new row\n",
    );
    w.write(
        "new.csv",
        "id,v,change_type,change_reason\n1,b,CHANGED,v changed from a to b\n",
    );
    let o = w.run(&[
        "diff",
        "old.csv",
        "new.csv",
        "--key",
        "id",
        "--compare",
        "v",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "id,v,change_type,change_reason,diff_change_type,diff_change_reason\n1,b,CHANGED,v changed from a to b,CHANGED,v changed from a to b\n"
    );
}
