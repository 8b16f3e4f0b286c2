//! A vendor's inventory workbook for two days, generated deterministically, with the delta a
//! person expects between them. Used by the integration tests and by
//! `cargo run --example make_sample_data` (which writes the committed files in data/).
#![allow(dead_code)]

use std::path::Path;

use rust_xlsxwriter::Workbook;

/// One row of the vendor's sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorRow {
    /// Barcode as a person reads it in Excel.
    pub upc: String,
    /// Written as a numeric cell (true) or a text cell (false).
    pub upc_is_number: bool,
    pub name: String,
    /// "A" active, "D" discontinued.
    pub status: &'static str,
    pub qty: i64,
    pub price: f64,
}

/// An expected delta row: barcode, quantity, discontinued flag, change type, reason.
pub type ExpectedRow = (String, i64, &'static str, &'static str, String);

fn discontinued(status: &str) -> &'static str {
    if status == "D" { "Yes" } else { "No" }
}

/// Day 1: `n` rows. Every third barcode is a numeric cell (13 digits); the others are text
/// cells with leading zeros.
pub fn day1(n: usize) -> Vec<VendorRow> {
    (0..n).map(row).collect()
}

fn row(i: usize) -> VendorRow {
    let upc_is_number = i.is_multiple_of(3);
    let upc = if upc_is_number {
        format!("{}", 7_000_000_200_000u64 + i as u64)
    } else {
        format!("{:013}", 12_345_678 + i * 1009)
    };
    VendorRow {
        upc,
        upc_is_number,
        name: format!("Rug {i} — Hand-tufted, 5'x8\" \"Ivory\""),
        status: if i % 17 == 5 { "D" } else { "A" },
        qty: ((i * 37 + 25) % 90 + 5) as i64,
        price: 99.5 + (i % 40) as f64,
    }
}

/// Day 2 from day 1: 5% quantity changes, 1% discontinued flips, 1% removed, 1% new rows,
/// 2% title-only edits (not compared, so not in the delta). Returns the rows and the expected
/// delta, ordered by barcode.
pub fn day2(day1: &[VendorRow]) -> (Vec<VendorRow>, Vec<ExpectedRow>) {
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for (i, r) in day1.iter().enumerate() {
        let mut r = r.clone();
        if i % 100 == 13 {
            expected.push((
                r.upc.clone(),
                0,
                "Yes",
                "deleted",
                "row removed".to_string(),
            ));
            continue;
        }
        if i.is_multiple_of(20) {
            let new_qty = if r.qty > 5 { r.qty - 5 } else { r.qty + 5 };
            expected.push((
                r.upc.clone(),
                new_qty,
                discontinued(r.status),
                "updated",
                format!(
                    "Variant Inventory Qty changed from {} to {}",
                    r.qty, new_qty
                ),
            ));
            r.qty = new_qty;
        } else if i % 100 == 7 {
            let old = discontinued(r.status);
            r.status = if r.status == "D" { "A" } else { "D" };
            let new = discontinued(r.status);
            expected.push((
                r.upc.clone(),
                r.qty,
                new,
                "updated",
                format!("Variant Metafield: custom.internal_discontinued [single_line_text_field] changed from {old} to {new}"),
            ));
        } else if i % 50 == 3 {
            r.name = format!("{} (new title)", r.name);
        }
        rows.push(r);
    }
    let n = day1.len();
    for j in 0..n.div_ceil(100) {
        let mut r = row(n + j);
        r.upc = format!("{:013}", 990_000_000 + j);
        r.upc_is_number = false;
        expected.push((
            r.upc.clone(),
            r.qty,
            discontinued(r.status),
            "new",
            "new row".to_string(),
        ));
        rows.push(r);
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    (rows, expected)
}

/// Write the vendor's workbook: two title rows, the header on row 3, sheet "Inventory", and a
/// second sheet "Notes".
pub fn write_workbook(path: &Path, date: &str, rows: &[VendorRow]) {
    write_workbook_with_text_quantities(path, date, rows, &[]);
}

/// [`write_workbook`], with the quantities of the rows at `text_rows` typed as text ("12 pcs").
pub fn write_workbook_with_text_quantities(
    path: &Path,
    date: &str,
    rows: &[VendorRow],
    text_rows: &[usize],
) {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("Inventory").unwrap();
    sheet
        .write_string(0, 0, "Loloi Rugs — Inventory Report")
        .unwrap();
    sheet
        .write_string(1, 0, format!("Generated {date}"))
        .unwrap();
    for (c, h) in ["UPC", "Item Name", "Status", "Qty", "Price"]
        .iter()
        .enumerate()
    {
        sheet.write_string(2, c as u16, *h).unwrap();
    }
    for (i, r) in rows.iter().enumerate() {
        let row = 3 + i as u32;
        if r.upc_is_number {
            sheet
                .write_number(row, 0, r.upc.parse::<f64>().unwrap())
                .unwrap();
        } else {
            sheet.write_string(row, 0, &r.upc).unwrap();
        }
        sheet.write_string(row, 1, &r.name).unwrap();
        sheet.write_string(row, 2, r.status).unwrap();
        if text_rows.contains(&i) {
            sheet
                .write_string(row, 3, format!("{} pcs", r.qty))
                .unwrap();
        } else {
            sheet.write_number(row, 3, r.qty as f64).unwrap();
        }
        sheet.write_number(row, 4, r.price).unwrap();
    }
    let notes = workbook.add_worksheet();
    notes.set_name("Notes").unwrap();
    notes
        .write_string(0, 0, "Quantities are on hand at the warehouse.")
        .unwrap();
    workbook.save(path).unwrap();
}
