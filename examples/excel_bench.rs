//! Excel at scale, for the benchmark harness (`benches/e2e.sh` with `EXCEL=ROWS`):
//!
//!   excel_bench write PATH ROWS   a vendor-style .xlsx of ROWS rows (shared strings, numbers)
//!   excel_bench cells PATH        calamine alone: stream every cell of the first sheet
//!
//! The second is the floor a workbook source is measured against: tidemark's load of the same
//! file should take at most 1.3 times as long.

use calamine::{Reader, Xlsx, open_workbook};
use rust_xlsxwriter::Workbook;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write", path, rows] => write(path, rows.parse().expect("ROWS is a number")),
        ["cells", path] => cells(path),
        _ => {
            eprintln!("usage: excel_bench write PATH ROWS | excel_bench cells PATH");
            std::process::exit(2);
        }
    }
}

fn write(path: &str, rows: u32) {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("Inventory").expect("a valid sheet name");
    let header = [
        "UPC",
        "Item Name",
        "Category",
        "Brand",
        "Status",
        "Qty",
        "Price",
    ];
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(0, c as u16, *h).expect("a header cell");
    }
    let categories = ["Rugs", "Runners", "Pillows", "Throws", "Blankets"];
    let brands = ["Loloi", "Rifle", "Faribault", "Jaipur", "Surya", "nuLOOM"];
    for i in 0..rows {
        let r = i + 1;
        // Barcodes with leading zeros are text, as vendors export them.
        sheet
            .write_string(r, 0, format!("{:013}", 7_000_000_000u64 + u64::from(i) * 7))
            .expect("a cell");
        sheet
            .write_string(r, 1, format!("Item {i} handwoven {}", i % 97))
            .expect("a cell");
        sheet
            .write_string(r, 2, categories[i as usize % categories.len()])
            .expect("a cell");
        sheet
            .write_string(r, 3, brands[i as usize % brands.len()])
            .expect("a cell");
        sheet
            .write_string(r, 4, if i % 50 == 0 { "D" } else { "A" })
            .expect("a cell");
        sheet
            .write_number(r, 5, f64::from(i % 200))
            .expect("a cell");
        sheet
            .write_number(r, 6, f64::from(i % 100_000) / 100.0 + 9.99)
            .expect("a cell");
    }
    workbook.save(path).expect("the workbook is written");
}

fn cells(path: &str) {
    let mut workbook: Xlsx<_> = open_workbook(path).expect("a readable workbook");
    let sheet = workbook.sheet_names()[0].clone();
    let mut reader = workbook
        .worksheet_cells_reader(&sheet)
        .expect("a readable sheet");
    let mut count = 0u64;
    let mut text_bytes = 0usize;
    while let Some(cell) = reader.next_cell().expect("readable cells") {
        count += 1;
        if let calamine::DataRef::SharedString(s) = cell.get_value() {
            text_bytes += s.len();
        }
    }
    println!("{count} cells, {text_bytes} bytes of text");
}
