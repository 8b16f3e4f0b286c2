//! Composite keys over text with commas, quotes, embedded newlines and non-ASCII: exact round
//! trip into CSV and Parquet deltas, and `tidemark diff` agrees with the pipeline.

use datafusion::arrow::array::AsArray;

use crate::workdir::{Workdir, assert_code, read_parquet, stdout, without_time};

const DAY1: &str = "customer,po,line,qty,note\n\
\"GREYSON, Inc.\",PO-1,1,10,\"said \"\"hi\"\"\"\n\
\"GREYSON, Inc.\",PO-1,2,5,plain\n\
Müller GmbH,\"PO\n7\",1,2,\"multi\nline\"\n\
Ørsted,PO-9,1,1,gone tomorrow\n";

const DAY2: &str = "customer,po,line,qty,note\n\
\"GREYSON, Inc.\",PO-1,1,12,\"said \"\"hi\"\"\"\n\
\"GREYSON, Inc.\",PO-1,2,5,plain\n\
Müller GmbH,\"PO\n7\",1,2,\"multi\nline, changed\"\n\
Zoë,PO-2,3,4,\"new, with comma\"\n";

const PIPELINE: &str = "tables:
  orders:
    source:
      path: orders.csv
    key: [customer, po, line]
    output:
      - path: out/orders-{version}.csv
      - path: out/orders-{version}.parquet
";

const EXPECTED_DELTA: &str = "customer,po,line,qty,note,change_type,change_reason\n\
\"GREYSON, Inc.\",PO-1,1,12,\"said \"\"hi\"\"\",CHANGED,qty changed from 10 to 12\n\
\"Müller GmbH\",\"PO\n7\",1,2,\"multi\nline, changed\",CHANGED,\"note changed from multi\nline to multi\nline, changed\"\n\
Zoë,PO-2,3,4,\"new, with comma\",NEW,new row\n\
Ørsted,PO-9,1,1,gone tomorrow,DELETED,row removed\n";

#[test]
fn composite_keys_round_trip_exactly() {
    let w = Workdir::new();
    w.write("orders.yaml", PIPELINE);
    w.write("orders.csv", DAY1);
    assert_code(&w.run(&["run", "orders.yaml"]), 0);
    w.write("orders.csv", DAY2);
    let o = w.run(&["run", "orders.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        without_time(stdout(&o).trim()),
        "orders: v2 committed — 4 rows: 1 new, 2 changed, 1 deleted, 1 unchanged, 0 rejected"
    );
    let csv = w.read("out/orders-2.csv");
    // Keys sort by code point: "Z" < "Ø".
    let normalised = csv.replace("Müller GmbH,", "\"Müller GmbH\",");
    assert_eq!(normalised, EXPECTED_DELTA, "got:\n{csv}");

    let batch = read_parquet(&w.path("out/orders-2.parquet"));
    let col = |name: &str| -> Vec<String> {
        let array = datafusion::arrow::compute::cast(
            batch.column_by_name(name).unwrap(),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        array
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or("<null>").to_string())
            .collect()
    };
    assert_eq!(
        col("customer"),
        ["GREYSON, Inc.", "Müller GmbH", "Zoë", "Ørsted"]
    );
    assert_eq!(col("po"), ["PO-1", "PO\n7", "PO-2", "PO-9"]);
    assert_eq!(
        col("note"),
        [
            "said \"hi\"",
            "multi\nline, changed",
            "new, with comma",
            "gone tomorrow"
        ]
    );
    assert_eq!(col("change_type"), ["CHANGED", "CHANGED", "NEW", "DELETED"]);
}

#[test]
fn ad_hoc_diff_matches_the_pipeline() {
    let w = Workdir::new();
    w.write("old.csv", DAY1);
    w.write("new.csv", DAY2);
    let o = w.run(&["diff", "old.csv", "new.csv", "--key", "customer,po,line"]);
    assert_code(&o, 0);
    let out = stdout(&o).replace("Müller GmbH,", "\"Müller GmbH\",");
    assert_eq!(out, EXPECTED_DELTA);

    let o = w.run(&[
        "diff",
        "old.csv",
        "new.csv",
        "--key",
        "customer,po,line",
        "--output",
        "delta.json",
    ]);
    assert_code(&o, 0);
    let lines: Vec<serde_json::Value> = w
        .read("delta.json")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["po"], "PO\n7");
    assert_eq!(lines[3]["change_type"], "DELETED");
}
