//! Sources other than the inventory workbook: CSV options, JSON lines, Parquet, globs with
//! `files: all`, `--source`, and transforms that read a dependency.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::workdir::{Workdir, assert_code, stdout, summary};

#[test]
fn csv_options_header_row_delimiter_null_values_and_declared_types() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  stock:\n    source:\n      path: stock.txt\n      format: csv\n      header_row: 2\n      delimiter: \";\"\n      null_values: [\"\", \"N/A\"]\n      columns: {zip: string, price: \"decimal(8,2)\"}\n    key: zip\n    output:\n      - path: out/stock.csv\n",
    );
    w.write(
        "stock.txt",
        "Exported by ERP; do not edit\nzip;price;qty\n01234;1.50;N/A\n98765;2;7\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        w.read("out/stock.csv"),
        "zip,price,qty,change_type,change_reason\n01234,1.50,,NEW,new row\n98765,2.00,7,NEW,new row\n"
    );
    w.write(
        "stock.txt",
        "Exported by ERP; do not edit\nzip;price;qty\n01234;1.5;3\n98765;2.00;7\n",
    );
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    // 1.5 and 1.50 are the same decimal; only qty changed, from null.
    assert_eq!(
        w.read("out/stock.csv"),
        "zip,price,qty,change_type,change_reason\n01234,1.50,3,CHANGED,qty changed from null to 3\n"
    );
}

#[test]
fn json_lines_source() {
    let w = Workdir::new();
    w.write("p.yaml", "tables:\n  users:\n    source: {path: users.jsonl}\n    key: id\n    output: [{path: out/users.json}]\n");
    w.write("users.jsonl", "{\"id\": 1, \"name\": \"Ann\", \"active\": true}\n{\"id\": 2, \"name\": \"Bob\", \"active\": false}\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("users.jsonl", "{\"id\": 1, \"name\": \"Ann\", \"active\": false}\n{\"id\": 3, \"name\": \"Cy\", \"active\": true}\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        ["users: v2 committed — 2 rows: 1 new, 1 changed, 1 deleted, 0 unchanged, 0 rejected"]
    );
    assert_eq!(
        w.read("out/users.json"),
        "{\"id\":1,\"name\":\"Ann\",\"active\":false,\"change_type\":\"CHANGED\",\"change_reason\":\"active changed from true to false\"}\n\
         {\"id\":2,\"name\":\"Bob\",\"active\":false,\"change_type\":\"DELETED\",\"change_reason\":\"row removed\"}\n\
         {\"id\":3,\"name\":\"Cy\",\"active\":true,\"change_type\":\"NEW\",\"change_reason\":\"new row\"}\n"
    );
}

fn write_parquet(path: &std::path::Path, ids: Vec<i64>, names: Vec<&str>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_source_globs_with_all_files_and_source_override() {
    let w = Workdir::new();
    w.write("p.yaml", "tables:\n  parts:\n    source: {path: \"in/parts-*.parquet\", files: all}\n    key: id\n    output: [{path: out/parts.csv}]\n");
    std::fs::create_dir_all(w.path("in")).unwrap();
    write_parquet(
        &w.path("in/parts-1.parquet"),
        vec![1, 2],
        vec!["bolt", "nut"],
    );
    write_parquet(&w.path("in/parts-2.parquet"), vec![3], vec!["washer"]);
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        summary(&o),
        ["parts: v1 committed — 3 rows: 3 new, 0 changed, 0 deleted, 0 unchanged, 0 rejected"]
    );

    write_parquet(
        &w.path("today.parquet"),
        vec![1, 2, 3],
        vec!["bolt", "nut", "spring washer"],
    );
    let o = w.run(&["run", "p.yaml", "--source", "parts=today.parquet"]);
    assert_code(&o, 0);
    assert_eq!(
        w.read("out/parts.csv"),
        "id,name,change_type,change_reason\n3,spring washer,CHANGED,name changed from washer to spring washer\n"
    );
}

#[test]
fn transform_reads_a_dependency_and_tables_run_in_order() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    depends_on: [categories]\n    transform: |\n      SELECT s.sku, c.name AS category FROM source s JOIN categories c ON s.cat = c.id\n    output: [{path: out/items.csv}]\n  categories:\n    source: {path: categories.csv}\n    key: id\n",
    );
    w.write("categories.csv", "id,name\n1,Rugs\n2,Lamps\n");
    w.write("items.csv", "sku,cat\nA,1\nB,2\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    let lines = summary(&o);
    assert!(
        lines[0].starts_with("categories: v1 committed")
            && lines[1].starts_with("items: v1 committed"),
        "{lines:?}"
    );
    assert_eq!(
        w.read("out/items.csv"),
        "sku,category,change_type,change_reason\nA,Rugs,NEW,new row\nB,Lamps,NEW,new row\n"
    );

    w.write("categories.csv", "id,name\n1,Rugs\n2,Lighting\n");
    let o = w.run(&["run", "p.yaml", "--table", "categories", "--table", "items"]);
    assert_code(&o, 0);
    assert_eq!(
        w.read("out/items.csv"),
        "sku,category,change_type,change_reason\nB,Lighting,CHANGED,category changed from Lamps to Lighting\n"
    );

    // A failed parent skips its dependents.
    std::fs::remove_file(w.path("categories.csv")).unwrap();
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    let lines = summary(&o);
    assert!(lines[0].starts_with("categories: failed:"), "{lines:?}");
    assert_eq!(lines[1], "items: skipped: categories failed");
}

#[test]
fn check_validates_sources_and_writes_nothing() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    compare: [qty]\n",
    );
    w.write("items.csv", "sku,qty\nA,1\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("items: ok — "), "{}", stdout(&o));
    w.write("items.csv", "sku,quantity\nA,1\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("column \"qty\" named in `compare` is not in"),
        "{}",
        stdout(&o)
    );
    assert!(!w.path(".tidemark").exists());
}

/// .xls and .ods read like .xlsx: title rows skipped, barcodes exactly as a person reads them.
#[test]
fn legacy_and_open_document_workbooks() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for file in ["vendor.xls", "vendor.ods"] {
        let w = Workdir::new();
        std::fs::copy(format!("{fixtures}/{file}"), w.path(file)).unwrap();
        w.write(
            "p.yaml",
            format!("tables:\n  stock:\n    source: {{path: {file}, sheet: Inventory, header_row: 3, columns: {{UPC: string}}}}\n    key: UPC\n    output: [{{path: out/stock.csv}}]\n"),
        );
        let o = w.run(&["run", "p.yaml"]);
        assert_code(&o, 0);
        assert_eq!(
            w.read("out/stock.csv"),
            "UPC,Qty,Name,change_type,change_reason\n0000000000017,0,Stool,NEW,new row\n0123456789012,5,\"Rug, ivory\",NEW,new row\n7000000200000,12,\"Lamp \"\"big\"\"\",NEW,new row\n",
            "{file}"
        );
    }
}

#[test]
fn duplicates_keep_first_or_last_in_file_order() {
    for (setting, kept) in [("keep_first", "1"), ("keep_last", "3")] {
        let w = Workdir::new();
        w.write("p.yaml", format!("tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n    duplicates: {setting}\n    output: [{{path: out/items.csv}}]\n"));
        let mut csv = String::from("sku,qty\nA,1\n");
        for i in 0..2000 {
            csv.push_str(&format!("X{i},{i}\n"));
        }
        csv.push_str("A,2\nA,3\n");
        w.write("items.csv", csv);
        let o = w.run(&["run", "p.yaml"]);
        assert_code(&o, 0);
        assert!(
            stdout(&o).starts_with("items: v1 committed — 2001 rows"),
            "{}",
            stdout(&o)
        );
        let delta = w.read("out/items.csv");
        assert!(
            delta.contains(&format!("\nA,{kept},NEW,new row\n")),
            "{setting}: {}",
            &delta[..200]
        );
    }
}

/// Issue 4, round trip: time zones, decimals, null vs empty text and large strings survive the
/// source, the snapshot (Parquet) and a query unchanged, and a second run sees no change.
#[test]
fn values_survive_arrow_parquet_and_query_unchanged() {
    use datafusion::arrow::array::{
        ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    let big = "x".repeat(300_000) + "é";
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "at_utc",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "at_paris",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+01:00".into())),
            true,
        ),
        Field::new("price", DataType::Decimal128(12, 2), true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_705_312_800_123_456),
                None,
                Some(0),
                Some(-86_400_000_000),
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_705_312_800_000_001), None, None, Some(1)])
                .with_timezone("+01:00"),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(1999), Some(-1), None, Some(99_999_999_999)])
                .with_precision_and_scale(12, 2)
                .unwrap(),
        ),
        Arc::new(StringArray::from(vec![
            Some(""),
            None,
            Some(big.as_str()),
            Some("a,\"b\"\nc"),
        ])),
    ];
    let batch =
        datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.parquet}\n    key: id\n",
    );
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    w.write("items.parquet", &bytes);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT id, at_utc, at_paris, price, note FROM items ORDER BY id",
        "--output",
        "back.parquet",
    ]);
    assert_code(&o, 0);
    let file = std::fs::File::open(w.path("back.parquet")).unwrap();
    let back: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let back = datafusion::arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
    assert_eq!(back.schema().fields(), schema.fields());
    assert_eq!(back.columns(), batch.columns());
    let o = w.run(&["run", "p.yaml"]);
    assert!(
        stdout(&o).contains("4 rows: 0 new, 0 changed, 0 deleted, 4 unchanged"),
        "{}",
        stdout(&o)
    );
}
