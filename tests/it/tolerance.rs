//! `tolerance`: a numeric change of at most the tolerance is no change; the reason shows the
//! actual values of a change beyond it.

use crate::workdir::{Workdir, assert_code, stdout, without_time};

#[test]
fn absolute_and_relative_tolerances() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  prices:\n    source: {path: p.csv, columns: {price: \"decimal(10,3)\"}}\n    key: sku\n    tolerance: {price: 0.005, weight: \"1%\"}\n    output: [{path: out/delta.csv}]\n",
    );
    w.write("p.csv", "sku,price,weight,name\nA,10.000,100.0,a\nB,20.000,200.0,b\nC,30.000,300.0,c\nD,40.000,,d\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    // A: within both tolerances; B: price beyond; C: weight beyond 1%; D: weight appears.
    w.write("p.csv", "sku,price,weight,name\nA,10.005,101.0,a\nB,20.006,200.0,b\nC,30.000,303.5,c\nD,40.000,1.0,d\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "prices: v2 committed — 4 rows: 0 new, 3 changed, 0 deleted, 1 unchanged, 0 rejected"
    );
    assert_eq!(
        w.read("out/delta.csv"),
        "sku,price,weight,name,change_type,change_reason\n\
         B,20.006,200.0,b,CHANGED,price changed from 20.000 to 20.006\n\
         C,30.000,303.5,c,CHANGED,weight changed from 300.0 to 303.5\n\
         D,40.000,1.0,d,CHANGED,weight changed from null to 1.0\n"
    );
    // A non-tolerance column still counts exactly.
    w.write("p.csv", "sku,price,weight,name\nA,10.005,101.0,a2\nB,20.006,200.0,b\nC,30.000,303.5,c\nD,40.000,1.0,d\n");
    let o = w.run(&["run", "p.yaml"]);
    assert!(
        stdout(&o).contains("0 new, 1 changed, 0 deleted, 3 unchanged"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        w.read("out/delta.csv"),
        "sku,price,weight,name,change_type,change_reason\nA,10.005,101.0,a2,CHANGED,name changed from a to a2\n"
    );
}

#[test]
fn tolerance_on_a_text_column_is_an_error() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  t:\n    source: {path: t.csv}\n    key: id\n    tolerance: {name: 0.1}\n",
    );
    w.write("t.csv", "id,name\n1,a\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("`tolerance` names \"name\", which is string, not a number"),
        "{}",
        stdout(&o)
    );
}

/// The acceptance case: `tolerance: {Price: 0.01}`; 9.99 -> 10.00 is unchanged, 9.99 -> 10.49
/// is CHANGED with both values in the reason.
#[test]
fn a_price_tolerance_of_one_cent() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  prices:\n    source: {path: p.csv}\n    key: SKU\n    tolerance: {Price: 0.01}\n    output: [{path: out/delta.csv}]\n",
    );
    w.write("p.csv", "SKU,Price\nA,9.99\nB,9.99\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("p.csv", "SKU,Price\nA,10.00\nB,10.49\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "prices: v2 committed — 2 rows: 0 new, 1 changed, 0 deleted, 1 unchanged, 0 rejected"
    );
    assert_eq!(
        w.read("out/delta.csv"),
        "SKU,Price,change_type,change_reason\nB,10.49,CHANGED,Price changed from 9.99 to 10.49\n"
    );
}
