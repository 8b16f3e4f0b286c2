//! Issue 3: invalid rows are rejected to a rejects file with the row a person looks up, held
//! out of the comparison, and their keys keep their baseline rows (never DELETED).

use crate::inventory_data::{VendorRow, day1, day2};
use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stdout, summary};

/// The summary line and the lines below it, times removed.
fn query(w: &Workdir, pipeline: &str, sql: &str) -> String {
    let o = w.run(&["query", pipeline, sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

/// `rejected rows: PATH` from the run's output, read back.
pub(crate) fn rejects(w: &Workdir, o: &std::process::Output) -> String {
    let out = stdout(o);
    let path = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("rejected rows: "))
        .unwrap_or_else(|| panic!("no rejects file in\n{out}"));
    std::fs::read_to_string(w.root().join(path)).unwrap()
}

fn items_with_baseline() -> Workdir {
    let w = Workdir::new();
    w.write("items.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\nC,3\n");
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    w
}

#[test]
fn a_value_that_does_not_fit_the_pinned_type_rejects_its_row_and_keeps_its_baseline_row() {
    let w = items_with_baseline();
    w.write("items.csv", "sku,qty\nA,12 pcs\nB,5\n\"C\nC\",3\n,4\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 0);
    let lines = summary(&o);
    assert_eq!(
        lines[0],
        "items: v2 committed — 4 rows: 1 new, 1 changed, 0 deleted, 0 unchanged, 2 rejected"
    );
    // The row without a key may be any baseline row: none is deleted (the old C stays).
    assert!(
        stdout(&o).contains("1 baseline rows not deleted: 1 rejected rows have no key"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        rejects(&w, &o),
        "_source_file,_row_number,_rule,_message,sku,qty\n\
         items.csv,2,type,\"column \"\"qty\"\": value \"\"12 pcs\"\" is not a valid int64; the baseline pins the column as int64\",A,12 pcs\n\
         items.csv,6,key,\"key column \"\"sku\"\" is empty; every row needs a key\",,4\n"
            .replace("items.csv", &w.path("items.csv").display().to_string())
    );
    // A kept its baseline row; C (a new key spanning two lines) is NEW and the old C kept.
    assert_eq!(
        query(&w, "items.yaml", "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,5\nC,3\n\"C\nC\",3\n"
    );
    assert_eq!(
        query(
            &w,
            "items.yaml",
            "SELECT version, rows_in, new, changed, deleted, unchanged, rejected FROM runs ORDER BY version"
        ),
        "version,rows_in,new,changed,deleted,unchanged,rejected\n1,3,3,0,0,0,0\n2,4,1,1,0,0,2\n"
    );
    // The next day A is fixed: compared with the baseline row it kept.
    w.write("items.csv", "sku,qty\nA,1\nB,5\n\"C\nC\",3\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_eq!(
        summary(&o)[0],
        "items: v3 committed — 3 rows: 0 new, 0 changed, 1 deleted, 3 unchanged, 0 rejected"
    );
}

#[test]
fn rules_not_null_max_invalid_and_on_invalid() {
    let w = Workdir::new();
    let pipeline = |extra: &str| {
        format!(
            "tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n    validate:\n      not_null: [qty]\n      rules:\n        - {{name: qty_not_negative, check: 'qty >= 0'}}\n        - {{name: known_unit, check: \"unit IN ('pc', 'box')\"}}\n      rejects: out/rejects-{{table}}-v{{version}}.csv\n{extra}"
        )
    };
    w.write("items.yaml", pipeline(""));
    w.write(
        "items.csv",
        "sku,qty,unit\nA,1,pc\nB,-2,pc\nC,,box\nD,4,crate\nE,5,\n",
    );
    let o = w.run(&["run", "items.yaml", "--report", "report.json"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "items: v1 committed — 5 rows: 2 new, 0 changed, 0 deleted, 0 unchanged, 3 rejected"
    );
    assert_eq!(
        w.read("out/rejects-items-v1.csv"),
        "_source_file,_row_number,_rule,_message,sku,qty,unit\n\
         items.csv,3,qty_not_negative,fails rule `qty_not_negative`: qty >= 0,B,-2,pc\n\
         items.csv,4,not_null,\"column \"\"qty\"\" is empty; `validate.not_null` requires a value\",C,,box\n\
         items.csv,5,known_unit,\"fails rule `known_unit`: unit IN ('pc', 'box')\",D,4,crate\n"
            .replace("items.csv", &w.path("items.csv").display().to_string())
    );
    let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
    assert_eq!(report["tables"][0]["rejected"], 3);
    assert_eq!(
        report["tables"][0]["rejects_file"],
        w.path("out/rejects-items-v1.csv").display().to_string()
    );

    // max_invalid: 3 of 5 rows is over 50%: refused, nothing committed, recorded.
    w.write("items.yaml", pipeline("      max_invalid: 50%\n"));
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains("items: refused — 3 of 5 rows (60.0%) are invalid; validate.max_invalid is 50%; the first is"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("rejects-items-v2.csv"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        query(
            &w,
            "items.yaml",
            "SELECT version, status, rejected FROM runs ORDER BY started_at"
        ),
        "version,status,rejected\n1,committed,3\n,refused,3\n"
    );
    // on_invalid: fail refuses at the first invalid row.
    w.write("items.yaml", pipeline("      on_invalid: fail\n"));
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 3);
    assert!(
        stdout(&o).contains("3 of 5 rows are invalid and `validate.on_invalid` is fail"),
        "{}",
        stdout(&o)
    );
    // A rule that is not valid SQL is a pipeline error naming the rule.
    w.write("items.yaml", pipeline("").replace("qty >= 0", "qty >=== 0"));
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("validate rule `qty_not_negative` cannot be evaluated"),
        "{}",
        stdout(&o)
    );
}

/// The acceptance run: 2,000 rows where 20 quantities are text and 3 new rows have no
/// barcode. They are rejected with their sheet rows; the 20 keys keep their baseline rows; the
/// rest diffs exactly.
#[test]
fn two_thousand_rows_with_bad_quantities_and_null_keys() {
    let w = Workdir::new();
    let pipeline = crate::inventory::pipeline();
    w.write("inventory.yaml", &pipeline);
    let first = day1(2000);
    std::fs::create_dir_all(w.path("incoming")).unwrap();
    crate::inventory_data::write_workbook(
        &w.path("incoming/vendor-2024-01-15.xlsx"),
        "2024-01-15",
        &first,
    );
    assert_code(&w.run(&["run", "inventory.yaml"]), 0);

    let (mut second, expected) = day2(&first);
    // 20 rows that day 2 leaves alone get a quantity typed as text.
    let untouched: Vec<usize> = (0..second.len())
        .filter(|&i| !expected.iter().any(|e| e.0 == second[i].upc))
        .step_by(97)
        .take(20)
        .collect();
    assert_eq!(untouched.len(), 20);
    let bad_qty: Vec<(usize, String)> = untouched
        .iter()
        .map(|&i| (i, second[i].upc.clone()))
        .collect();
    // 3 new rows without a barcode.
    for j in 0..3 {
        second.push(VendorRow {
            upc: String::new(),
            upc_is_number: false,
            name: format!("Unlabelled rug {j}"),
            status: "A",
            qty: 7,
            price: 10.0,
        });
    }
    crate::inventory_data::write_workbook_with_text_quantities(
        &w.path("incoming/vendor-2024-01-16.xlsx"),
        "2024-01-16",
        &second,
        &untouched,
    );
    let o = w.run(&["run", "inventory.yaml"]);
    assert_code(&o, 0);
    let new = expected.iter().filter(|e| e.3 == "new").count();
    let changed = expected.iter().filter(|e| e.3 == "updated").count();
    let deleted = expected.iter().filter(|e| e.3 == "deleted").count();
    let read = second.len();
    // The rows without a barcode may stand for any baseline row: none is deleted.
    assert_eq!(
        summary(&o)[0],
        format!(
            "inventory: v2 committed — {read} rows: {new} new, {changed} changed, 0 deleted, {} unchanged, 23 rejected",
            read - 23 - new - changed
        )
    );
    assert!(
        stdout(&o).contains(&format!(
            "{deleted} baseline rows not deleted: 3 rejected rows have no key"
        )),
        "{}",
        stdout(&o)
    );
    let expected: Vec<_> = expected.into_iter().filter(|e| e.3 != "deleted").collect();
    // The rejects file: the 20 quantities with their sheet rows (header on row 3), then the
    // 3 rows without a barcode.
    let text = rejects(&w, &o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "_source_file,_row_number,_rule,_message,UPC,Item Name,Status,Qty,Price"
    );
    assert_eq!(lines.len(), 1 + 23);
    let file = w
        .path("incoming/vendor-2024-01-16.xlsx")
        .display()
        .to_string();
    for (line, (i, upc)) in lines[1..21].iter().zip(&bad_qty) {
        assert!(
            line.starts_with(&format!(
                "{file},{},type,\"column \"\"Qty\"\": value \"\"{} pcs\"\" is not a valid int64. Fix the cell, or declare the column with another type under `source.columns`.\",{upc},",
                i + 4,
                second[*i].qty
            )),
            "{line}"
        );
    }
    for (k, line) in lines[21..].iter().enumerate() {
        let row = 4 + second.len() - 3 + k;
        assert!(
            line.starts_with(&format!(
                "{file},{row},key,\"key column \"\"Variant Barcode\"\" is empty; every row needs a key\",,Unlabelled rug {k},A,7,10"
            )),
            "{line}"
        );
    }
    // Everything else diffs exactly; no rejected key is DELETED.
    let delta = w.read("out/latest/inventory-delta.csv");
    assert_eq!(delta, crate::inventory::expected_csv(&expected));
    for (_, upc) in &bad_qty {
        assert!(!delta.contains(upc.as_str()), "{upc} is in the delta");
    }
    // Their baseline rows are kept.
    let kept = query(
        &w,
        "inventory.yaml",
        &format!(
            "SELECT count(*) AS n FROM inventory WHERE \"Variant Barcode\" IN ({})",
            bad_qty
                .iter()
                .map(|(_, u)| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    assert_eq!(kept, "n\n20\n");
}

/// Excel error cells and a barcode Excel turned into a date reject their rows, with the sheet
/// row as Excel shows it (blank rows included).
#[test]
fn excel_error_cells_and_dates_in_text_columns_are_rejected() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    let w = Workdir::new();
    w.write(
        "stock.yaml",
        "tables:\n  stock:\n    source:\n      path: stock.xlsx\n      columns: {upc: string}\n    key: upc\n",
    );
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.write_string(0, 0, "upc").unwrap();
    sheet.write_string(0, 1, "qty").unwrap();
    sheet.write_string(1, 0, "0001").unwrap();
    sheet.write_number(1, 1, 5).unwrap();
    // Row 3 is blank; row 4 holds an error cell, row 5 a date where a barcode belongs.
    sheet.write_string(3, 0, "0002").unwrap();
    sheet
        .write_formula(3, 1, Formula::new("=1/0").set_result("#DIV/0!"))
        .unwrap();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    sheet
        .write_datetime_with_format(4, 0, ExcelDateTime::from_ymd(2024, 1, 15).unwrap(), &date)
        .unwrap();
    sheet.write_number(4, 1, 7).unwrap();
    workbook.save(w.path("stock.xlsx")).unwrap();
    let o = w.run(&["run", "stock.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "stock: v1 committed — 3 rows: 1 new, 0 changed, 0 deleted, 0 unchanged, 2 rejected"
    );
    let file = w.path("stock.xlsx").display().to_string();
    assert_eq!(
        rejects(&w, &o),
        format!(
            "_source_file,_row_number,_rule,_message,upc,qty\n\
             {file},4,type,\"column \"\"qty\"\": cell holds the Excel error #DIV/0!; fix the sheet (or the formula that produces it) and export it again\",0002,#DIV/0!\n\
             {file},5,type,\"column \"\"upc\"\": cell holds the date 2024-01-15 but the column is declared string (was a code turned into a date by Excel?). Format the cells as text in the sheet and export it again.\",2024-01-15,7\n"
        )
    );
}

#[test]
fn check_plans_the_rules() {
    let w = Workdir::new();
    w.write("items.csv", "sku,Qty\nA,1\n");
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    validate:\n      rules: [{name: positive, check: 'Qty > 0'}]\n",
    );
    let o = w.run(&["check", "items.yaml"]);
    assert_code(&o, 2);
    assert!(
        stdout(&o).contains("items: error: validate rule `positive` cannot be evaluated"),
        "{}",
        stdout(&o)
    );
    w.write(
        "items.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    validate:\n      rules: [{name: positive, check: '\"Qty\" > 0'}]\n",
    );
    assert_code(&w.run(&["check", "items.yaml"]), 0);
}

/// Review findings: JSON values that do not fit a declared type reject their line (never cut
/// 4.5 to 4); `2.0` is the integer 2; a key column never widens to float; a key that `trim`
/// empties is an empty key.
#[test]
fn json_misfits_integral_decimals_keys_and_trimmed_keys() {
    let w = Workdir::new();
    w.write(
        "j.yaml",
        "tables:\n  j:\n    source: {path: d.json, columns: {qty: int64}}\n    key: id\n",
    );
    w.write(
        "d.json",
        "{\"id\": \"a\", \"qty\": 1}\n\n{\"id\": \"b\", \"qty\": 4.5}\n{\"id\": \"c\", \"qty\": \"abc\"}\n{\"id\": \"d\", \"qty\": \"2.0\"}\n",
    );
    let o = w.run(&["run", "j.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "j: v1 committed — 4 rows: 2 new, 0 changed, 0 deleted, 0 unchanged, 2 rejected"
    );
    let file = w.path("d.json").display().to_string();
    assert_eq!(
        rejects(&w, &o),
        format!(
            "_source_file,_row_number,_rule,_message,id,qty\n\
             {file},3,type,\"column \"\"qty\"\": value \"\"4.5\"\" is not a valid int64\",b,4.5\n\
             {file},4,type,\"column \"\"qty\"\": value \"\"abc\"\" is not a valid int64\",c,abc\n"
        )
    );
    assert_eq!(
        query(&w, "j.yaml", "SELECT id, qty FROM j ORDER BY id"),
        "id,qty\na,1\nd,2\n"
    );

    let w = items_with_baseline();
    w.write("items.csv", "sku,qty\nA,1\nB,2\nC,3\n");
    w.write(
        "k.yaml",
        "tables:\n  k:\n    source: {path: k.csv}\n    key: id\n    normalize: {name: {trim: true}}\n",
    );
    w.write("k.csv", "id,name\n1,a\n2,b\n");
    assert_code(&w.run(&["run", "k.yaml"]), 0);
    w.write("k.csv", "id,name\n1,a\n2.5,b\n");
    let o = w.run(&["run", "k.yaml"]);
    assert_eq!(
        summary(&o)[0],
        "k: v2 committed — 2 rows: 0 new, 0 changed, 0 deleted, 1 unchanged, 1 rejected"
    );
    assert!(
        rejects(&w, &o).contains("value 2.5 would become 2 as int64"),
        "{}",
        rejects(&w, &o)
    );
    w.write(
        "t.yaml",
        "tables:\n  t:\n    source: {path: t.csv, null_values: []}\n    key: sku\n    normalize: {sku: {trim: true}}\n",
    );
    w.write("t.csv", "sku,qty\nA,1\n\"   \",2\n");
    let o = w.run(&["run", "t.yaml"]);
    assert_eq!(
        summary(&o)[0],
        "t: v1 committed — 2 rows: 1 new, 0 changed, 0 deleted, 0 unchanged, 1 rejected"
    );
}

/// A key with a rejected row keeps its baseline row whole: its other rows are held out too,
/// whether the key repeats in the file or an aggregating transform sums its rows.
#[test]
fn a_key_with_a_rejected_row_is_held_whole() {
    let w = items_with_baseline();
    w.write("items.csv", "sku,qty\nA,11\nA,bad\nB,2\nC,3\n");
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "items: v2 committed — 4 rows: 0 new, 0 changed, 0 deleted, 2 unchanged, 2 rejected"
    );
    assert!(
        rejects(&w, &o).contains(",2,held,its key also has a rejected row"),
        "{}",
        rejects(&w, &o)
    );
    assert_eq!(
        query(&w, "items.yaml", "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,2\nC,3\n"
    );

    let w = Workdir::new();
    w.write(
        "t.yaml",
        "tables:\n  totals:\n    source: {path: s.csv, columns: {qty: int64}}\n    transform: SELECT sku, sum(qty) AS total FROM source GROUP BY sku\n    key: sku\n",
    );
    w.write("s.csv", "line,sku,qty\n1,A,5\n2,A,3\n3,B,1\n");
    assert_code(&w.run(&["run", "t.yaml"]), 0);
    w.write("s.csv", "line,sku,qty\n1,A,5\n2,A,3 pcs\n3,B,2\n");
    let o = w.run(&["run", "t.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o)[0],
        "totals: v2 committed — 3 rows: 0 new, 1 changed, 0 deleted, 0 unchanged, 2 rejected"
    );
    assert_eq!(
        query(&w, "t.yaml", "SELECT sku, total FROM totals ORDER BY sku"),
        "sku,total\nA,8\nB,2\n"
    );
}
