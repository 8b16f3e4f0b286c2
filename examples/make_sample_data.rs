//! Writes the sample vendor workbooks in data/ (300 rows, two days). The files are committed;
//! run this only to regenerate them: `cargo run --example make_sample_data`.

#[path = "../tests/it/inventory_data.rs"]
mod inventory_data;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(&dir).expect("data/ can be created");
    let day1 = inventory_data::day1(300);
    let (day2, _) = inventory_data::day2(&day1);
    inventory_data::write_workbook(
        &dir.join("vendor-inventory-2024-01-15.xlsx"),
        "2024-01-15",
        &day1,
    );
    inventory_data::write_workbook(
        &dir.join("vendor-inventory-2024-01-16.xlsx"),
        "2024-01-16",
        &day2,
    );
    println!("wrote {}", dir.display());
}
