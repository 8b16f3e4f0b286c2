//! Issue 5: `partition_by` (a run deletes only inside the partitions it holds), `mode:
//! incremental` (upserts above a stored watermark, never deletes) and `mode: full`.

use std::collections::BTreeMap;

use crate::workdir::{Workdir, assert_code, stderr, stdout, summary};

fn query(w: &Workdir, sql: &str) -> String {
    let o = w.run(&["query", "p.yaml", sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

/// Orders of several customers, whose names the export spells in several ways: the transform
/// maps them to one partition each.
const PARTITIONED: &str = "tables:
  orders:
    source: {path: orders.csv}
    transform: |
      SELECT CASE WHEN upper(customer) LIKE 'GREYSON%' THEN 'GREYSON'
                  ELSE upper(trim(customer)) END AS customer,
             order_id, qty
      FROM source
    key: order_id
    partition_by: [customer]
    output: [{path: delta.csv}]
";

#[test]
fn a_file_with_one_customers_rows_deletes_only_inside_that_customer() {
    let w = Workdir::new();
    w.write("p.yaml", PARTITIONED);
    w.write(
        "orders.csv",
        "customer,order_id,qty\n\
         Greyson Clothiers,1,5\nGREYSON CLOTHIERS INC,2,3\nGreyson,3,1\n\
         Acme,10,1\nacme ,11,2\n",
    );
    let day1 = w.run(&["run", "p.yaml"]);
    assert_code(&day1, 0);
    assert_eq!(
        summary(&day1),
        [
            "orders: v1 committed — 5 rows: 5 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected",
            "  partition customer=ACME: 2 rows: 2 new, 0 changed, 0 deleted, 0 unchanged",
            "  partition customer=GREYSON: 3 rows: 3 new, 0 changed, 0 deleted, 0 unchanged",
        ]
    );

    // Greyson's own export: order 1 changed, order 2 gone, order 4 new; nothing of Acme.
    w.write(
        "orders.csv",
        "customer,order_id,qty\nGreyson Clothiers,1,6\nGREYSON,3,1\ngreyson clothiers,4,9\n",
    );
    let day2 = w.run(&["run", "p.yaml", "--report", "report.json"]);
    assert_code(&day2, 0);
    assert_eq!(
        summary(&day2),
        [
            "orders: v2 committed — 3 rows: 1 new, 1 changed, 1 deleted, 1 unchanged, 0 rejected",
            "  partition customer=GREYSON: 3 rows: 1 new, 1 changed, 1 deleted, 1 unchanged",
            "  note: 2 baseline rows of partitions this run does not hold kept as they were",
        ]
    );
    assert_eq!(
        w.read("delta.csv"),
        "customer,order_id,qty,change_type,change_reason\n\
         GREYSON,1,6,CHANGED,qty changed from 5 to 6\n\
         GREYSON,2,3,DELETED,row removed\n\
         GREYSON,4,9,NEW,new row\n"
    );
    assert_eq!(
        query(
            &w,
            "SELECT customer, order_id, qty FROM orders ORDER BY order_id"
        ),
        "customer,order_id,qty\nGREYSON,1,6\nGREYSON,3,1\nGREYSON,4,9\nACME,10,1\nACME,11,2\n"
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(
        report["tables"][0]["partitions"],
        serde_json::json!([{
            "partition": {"customer": "GREYSON"},
            "rows_in": 3, "new": 1, "changed": 1, "deleted": 1, "unchanged": 1
        }])
    );

    // Acme's export next: Greyson's rows stay as they are.
    w.write("orders.csv", "customer,order_id,qty\nAcme,10,1\n");
    let day3 = w.run(&["run", "p.yaml"]);
    assert_code(&day3, 0);
    assert_eq!(
        summary(&day3)[..2],
        [
            "orders: v3 committed — 1 rows: 0 new, 0 changed, 1 deleted, 1 unchanged, 0 rejected",
            "  partition customer=ACME: 1 rows: 0 new, 0 changed, 1 deleted, 1 unchanged",
        ]
    );
    assert_eq!(
        query(&w, "SELECT order_id FROM orders ORDER BY order_id"),
        "order_id\n1\n3\n4\n10\n"
    );
}

/// A source table over time: `(sku, qty, updated_at)` rows, each sku changed at some hours.
fn state_at(hour: u32) -> BTreeMap<String, (u32, u32)> {
    let mut state = BTreeMap::new();
    for h in 1..=hour {
        for sku in 0..40u32 {
            if (sku * 7 + h) % 11 == 0 || h == 1 {
                state.insert(format!("S{sku:02}"), (sku * 100 + h, h));
            }
        }
        // A new product every third hour.
        if h % 3 == 0 {
            state.insert(format!("N{h:02}"), (h, h));
        }
    }
    state
}

/// The rows an export at `hour` of "everything changed since `since`" holds.
fn export(hour: u32, since: u32) -> String {
    let mut text = String::from("sku,qty,updated_at\n");
    for (sku, (qty, changed)) in state_at(hour) {
        if changed >= since {
            text.push_str(&format!("{sku},{qty},2024-03-01T{changed:02}:00:00\n"));
        }
    }
    text
}

const INCREMENTAL: &str = "tables:
  items:
    source: {path: items.csv, columns: {updated_at: timestamp}}
    key: sku
    mode: incremental
    watermark: updated_at
";

#[test]
fn three_overlapping_increments_give_the_full_snapshot() {
    let inc = Workdir::new();
    inc.write("p.yaml", INCREMENTAL);
    // Windows overlap: each export reaches back before the previous one ended.
    let mut lines = Vec::new();
    for (hour, since) in [(10, 1), (18, 8), (23, 15)] {
        inc.write("items.csv", export(hour, since));
        let o = inc.run(&["run", "p.yaml"]);
        assert_code(&o, 0);
        lines.push(summary(&o));
    }
    // The second run: rows up to hour 10 were taken by the first; the first's other rows stay.
    let taken: Vec<String> = state_at(10).into_keys().collect();
    let second: Vec<(String, u32)> = state_at(18)
        .into_iter()
        .filter(|(_, (_, changed))| *changed >= 8)
        .map(|(sku, (_, changed))| (sku, changed))
        .collect();
    let ignored = second.iter().filter(|(_, changed)| *changed < 10).count();
    let kept = taken
        .iter()
        .filter(|sku| !second.iter().any(|(s, c)| s == *sku && *c >= 10))
        .count();
    assert!(ignored > 0 && kept > 0 && kept < taken.len());
    assert_eq!(
        lines[1][1..],
        [
            format!(
                "  note: {ignored} rows below the watermark (updated_at = 2024-03-01T10:00:00) ignored"
            ),
            format!("  note: {kept} baseline rows not in this increment kept as they were"),
        ],
        "{lines:?}"
    );
    assert!(
        lines.iter().flatten().all(|l| !l.contains(" 1 deleted")
            && (l.starts_with("  ") || l.contains(" 0 deleted"))),
        "{lines:?}"
    );

    let full = Workdir::new();
    full.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv, columns: {updated_at: timestamp}}\n    key: sku\n",
    );
    full.write("items.csv", export(23, 0));
    assert_code(&full.run(&["run", "p.yaml"]), 0);

    let all = "SELECT sku, qty, updated_at FROM items ORDER BY sku";
    let expected = query(&full, all);
    assert_eq!(expected.lines().count(), 1 + 40 + 7);
    assert_eq!(query(&inc, all), expected);

    let history = inc.run(&["history", "p.yaml"]);
    assert_code(&history, 0);
    assert!(
        stdout(&history).contains("updated_at = 2024-03-01T23:00:00"),
        "{}",
        stdout(&history)
    );
}

#[test]
fn an_increment_never_deletes_ignores_older_rows_and_retakes_the_last_instant() {
    let w = Workdir::new();
    w.write("p.yaml", INCREMENTAL);
    w.write(
        "items.csv",
        "sku,qty,updated_at\nA,1,2024-03-01T10:00:00\nB,2,2024-03-01T11:00:00\n",
    );
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    // A below the watermark: taken before, ignored. B and D at the watermark itself: changed
    // in the same second as the last run's newest row, so taken (D would otherwise be lost).
    w.write(
        "items.csv",
        "sku,qty,updated_at\nA,9,2024-03-01T09:00:00\nB,7,2024-03-01T11:00:00\n\
         D,4,2024-03-01T11:00:00\nC,3,2024-03-02T09:00:00\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        [
            "items: v2 committed — 3 rows: 2 new, 1 changed, 0 deleted, 0 unchanged, 0 rejected",
            "  note: 1 rows below the watermark (updated_at = 2024-03-01T11:00:00) ignored",
            "  note: 1 baseline rows not in this increment kept as they were",
        ]
    );
    assert_eq!(
        query(&w, "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,7\nC,3\nD,4\n"
    );

    // A quiet day: an export with a header and no rows commits an empty increment.
    w.write("items.csv", "sku,qty,updated_at\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "items: v3 committed — 0 rows: 0 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected"
    );
    assert_eq!(query(&w, "SELECT count(*) AS n FROM items"), "n\n4\n");
}

#[test]
fn a_watermark_must_sort_by_time_and_a_date_retakes_its_last_day() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  ev:\n    source: {path: d.csv}\n    key: id\n    mode: incremental\n    watermark: ts\n",
    );
    w.write("d.csv", "id,v,ts\n1,a,1/9/2024 10:00\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("the watermark column ts is read as string, which does not sort by time; declare its type under source.columns"),
        "{}",
        stdout(&o)
    );

    w.write(
        "p.yaml",
        "tables:\n  ev:\n    source: {path: d.csv, columns: {day: date}}\n    key: id\n    mode: incremental\n    watermark: day\n",
    );
    w.write("d.csv", "id,v,day\n1,a,2024-01-09\n2,b,2024-01-10\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("d.csv", "id,v,day\n3,c,2024-01-10\n4,d,2024-01-11\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        query(&w, "SELECT id FROM ev ORDER BY id"),
        "id\n1\n2\n3\n4\n"
    );
}

#[test]
fn two_partition_columns_and_a_partition_whose_rows_are_all_rejected() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  o:\n    source: {path: in.csv}\n    key: order_id\n    partition_by: [customer, region]\n    \
         validate: {rules: [{name: q, check: 'qty >= 0'}]}\n",
    );
    w.write(
        "in.csv",
        "order_id,customer,region,qty\n1,B,N,5\n2,B,S,3\n3,C,N,1\n4,B,N,2\n",
    );
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    // Partition (B, N) only, its one row rejected: the file still speaks for (B, N), so order
    // 4 is DELETED and order 1 keeps its baseline row; (B, S) and (C, N) stay as they are.
    w.write("in.csv", "order_id,customer,region,qty\n1,B,N,-1\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let lines = summary(&o);
    assert_eq!(
        lines[0],
        "o: v2 committed — 1 rows: 0 new, 0 changed, 1 deleted, 0 unchanged, 1 rejected"
    );
    assert_eq!(
        lines[1],
        "  partition customer=B, region=N: 0 rows: 0 new, 0 changed, 1 deleted, 0 unchanged"
    );
    assert_eq!(
        query(&w, "SELECT order_id, qty FROM o ORDER BY order_id"),
        "order_id,qty\n1,5\n2,3\n3,1\n"
    );
}

#[test]
fn a_foreign_key_of_another_type_than_its_parent_key_is_refused() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  parent: {source: {path: parent.csv}, key: id}\n  \
         child: {source: {path: child.csv}, key: cid, references: {pid: parent.id}}\n",
    );
    w.write("parent.csv", "id,name\n001,a\n002,b\n");
    w.write("child.csv", "cid,pid\n10,1\n11,2\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("`references` compares pid (int64) with parent.id (string)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn mode_full_replaces_the_table_and_settings_that_contradict_are_refused() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    mode: full\n",
    );
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        ["items: v2 committed — 1 rows: 0 new, 0 changed, 1 deleted, 1 unchanged, 0 rejected"]
    );

    for (settings, message) in [
        (
            "    mode: incremental\n",
            "`mode: incremental` needs `watermark:`",
        ),
        (
            "    watermark: updated_at\n",
            "`watermark` applies to `mode: incremental` only",
        ),
        (
            "    mode: full\n    partition_by: customer\n",
            "`mode: full` replaces the whole table",
        ),
        (
            "    mode: incremental\n    watermark: qty\n    partition_by: customer\n",
            "`mode: incremental` never deletes",
        ),
    ] {
        w.write(
            "bad.yaml",
            format!("tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n{settings}"),
        );
        let o = w.run(&["check", "bad.yaml"]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains(message), "{settings}: {}", stderr(&o));
    }
}
