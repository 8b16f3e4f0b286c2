//! Tests of the Excel reader.
use super::*;
use crate::source::SourceFormat;
use datafusion::arrow::array::{AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{Decimal128Type, TimestampMicrosecondType as TsType};
use rust_xlsxwriter::{ExcelDateTime as XlDate, Format, Formula, Workbook, Worksheet};

type Fill = dyn Fn(&mut Worksheet) -> std::result::Result<(), rust_xlsxwriter::XlsxError>;

fn options() -> SourceOptions {
    SourceOptions {
        format: SourceFormat::Excel,
        ..SourceOptions::default()
    }
}

fn declared(columns: &[(&str, DataType)]) -> SourceOptions {
    SourceOptions {
        columns: columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
        ..options()
    }
}

/// A workbook with one sheet per `(name, fill)`, saved in `dir`.
fn workbook(dir: &tempfile::TempDir, sheets: &[(&str, &Fill)]) -> std::path::PathBuf {
    let mut wb = Workbook::new();
    for (name, fill) in sheets {
        let ws = wb.add_worksheet();
        ws.set_name(*name).unwrap();
        fill(ws).unwrap();
    }
    let path = dir.path().join("book.xlsx");
    wb.save(&path).unwrap();
    path
}

fn one_sheet(fill: &Fill) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = workbook(&dir, &[("Sheet1", fill)]);
    (dir, path)
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(column).unwrap();
    assert_eq!(array.data_type(), &DataType::Utf8, "column {column}");
    array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let array = batch.column_by_name(column).unwrap();
    assert_eq!(array.data_type(), &DataType::Int64, "column {column}");
    array.as_primitive::<Int64Type>().iter().collect()
}

fn floats(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let array = batch.column_by_name(column).unwrap();
    assert_eq!(array.data_type(), &DataType::Float64, "column {column}");
    array.as_primitive::<Float64Type>().iter().collect()
}

fn timestamps(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(column).unwrap();
    assert_eq!(
        array.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
        "column {column}"
    );
    array
        .as_primitive::<TsType>()
        .iter()
        .map(|v| {
            v.map(|m| {
                let mut s = String::new();
                write_timestamp(&mut s, m).unwrap();
                s
            })
        })
        .collect()
}

fn date_format() -> Format {
    Format::new().set_num_format("yyyy-mm-dd")
}

fn datetime_format() -> Format {
    Format::new().set_num_format("yyyy-mm-dd hh:mm:ss")
}

fn source_data(err: Error) -> (Option<u64>, Option<String>, String) {
    match err {
        Error::SourceData {
            row,
            column,
            message,
            ..
        } => (row, column, message),
        other => panic!("expected SourceData, got {other:?}"),
    }
}

#[test]
fn title_rows_header_on_row_3_and_inferred_types() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Loloi inventory")?;
        ws.write_string(1, 0, "Generated 2024-01-15")?;
        ws.write_string(2, 0, "SKU")?;
        ws.write_string(2, 1, "Qty")?;
        ws.write_string(2, 2, "Price")?;
        ws.write_string(2, 3, "Active")?;
        ws.write_string(2, 4, "Updated")?;
        ws.write_number(2, 5, 2024)?;
        ws.write_string(3, 0, "A-1")?;
        ws.write_number(3, 1, 5)?;
        ws.write_number(3, 2, 12.5)?;
        ws.write_boolean(3, 3, true)?;
        ws.write_datetime_with_format(3, 4, XlDate::from_ymd(2024, 1, 15)?, &date_format())?;
        ws.write_number(3, 5, 1)?;
        // Row 5 is left empty and must be skipped.
        ws.write_string(5, 0, "A-2")?;
        ws.write_number(5, 1, -12)?;
        ws.write_number(5, 2, 3)?;
        ws.write_boolean(5, 3, false)?;
        ws.write_datetime_with_format(
            5,
            4,
            XlDate::from_ymd(2024, 2, 29)?.and_hms(10, 30, 0)?,
            &datetime_format(),
        )?;
        ws.write_string(6, 0, "A-3")?;
        ws.write_number(6, 1, 0)?;
        ws.write_number(6, 2, 0.1)?;
        Ok(())
    });
    let batch = read_excel(
        &path,
        &SourceOptions {
            header_row: 3,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(
        names(&batch),
        ["SKU", "Qty", "Price", "Active", "Updated", "2024"]
    );
    assert_eq!(batch.num_rows(), 3);
    assert!(batch.schema().fields().iter().all(|f| f.is_nullable()));
    assert_eq!(
        strings(&batch, "SKU"),
        [Some("A-1".into()), Some("A-2".into()), Some("A-3".into())]
    );
    assert_eq!(ints(&batch, "Qty"), [Some(5), Some(-12), Some(0)]);
    assert_eq!(floats(&batch, "Price"), [Some(12.5), Some(3.0), Some(0.1)]);
    let active = batch.column_by_name("Active").unwrap().as_boolean();
    assert_eq!(
        active.iter().collect::<Vec<_>>(),
        [Some(true), Some(false), None]
    );
    assert_eq!(
        timestamps(&batch, "Updated"),
        [
            Some("2024-01-15".into()),
            Some("2024-02-29T10:30:00".into()),
            None
        ]
    );
    assert_eq!(ints(&batch, "2024"), [Some(1), None, None]);
}

fn barcode_sheet(ws: &mut Worksheet) -> std::result::Result<(), rust_xlsxwriter::XlsxError> {
    ws.write_string(0, 0, "UPC")?;
    ws.write_string(0, 1, "Qty")?;
    ws.write_string(0, 2, "Misc")?;
    ws.write_string(1, 0, "0123456789012")?;
    ws.write_number(1, 1, 30)?;
    ws.write_boolean(1, 2, true)?;
    ws.write_number(2, 0, 7000000200000.0)?;
    ws.write_number(2, 1, 25)?;
    ws.write_datetime_with_format(2, 2, XlDate::from_ymd(2024, 1, 15)?, &date_format())?;
    ws.write_number(3, 0, 1e15)?;
    ws.write_number(3, 1, 7)?;
    ws.write_datetime_with_format(
        3,
        2,
        XlDate::from_ymd(2024, 1, 15)?.and_hms(10, 30, 0)?,
        &datetime_format(),
    )?;
    ws.write_number(4, 0, 12.5)?;
    ws.write_number(4, 2, 0.1 + 0.2)?;
    Ok(())
}

#[test]
fn mixed_barcodes_inferred_as_exact_strings() {
    let (_dir, path) = one_sheet(&barcode_sheet);
    let batch = read_excel(&path, &options()).unwrap();
    let expected_upc = [
        Some("0123456789012".to_string()),
        Some("7000000200000".into()),
        Some("1000000000000000".into()),
        Some("12.5".into()),
    ];
    assert_eq!(strings(&batch, "UPC"), expected_upc);
    assert_eq!(ints(&batch, "Qty"), [Some(30), Some(25), Some(7), None]);
    assert_eq!(
        strings(&batch, "Misc"),
        [
            Some("TRUE".into()),
            Some("2024-01-15".into()),
            Some("2024-01-15T10:30:00".into()),
            Some("0.30000000000000004".into())
        ]
    );
}

#[test]
fn declared_string_keeps_text_and_renders_numbers_as_excel_shows_them() {
    let (_dir, path) = one_sheet(&barcode_sheet);
    let opts = declared(&[("UPC", DataType::Utf8), ("Qty", DataType::Utf8)]);
    let batch = read_excel(&path, &opts).unwrap();
    assert_eq!(
        strings(&batch, "UPC"),
        [
            Some("0123456789012".to_string()),
            Some("7000000200000".into()),
            Some("1000000000000000".into()),
            Some("12.5".into())
        ]
    );
    assert_eq!(
        strings(&batch, "Qty"),
        [
            Some("30".to_string()),
            Some("25".into()),
            Some("7".into()),
            None
        ]
    );
}

#[test]
fn declared_types_convert_cells_and_text() {
    let (_dir, path) = one_sheet(&|ws| {
        for (c, name) in ["Qty", "Small", "Price", "Amount", "Flag", "Day", "At"]
            .iter()
            .enumerate()
        {
            ws.write_string(0, c as u16, *name)?;
        }
        ws.write_number(1, 0, 42)?;
        ws.write_string(2, 0, " 43 ")?;
        ws.write_number(1, 1, 7)?;
        ws.write_string(2, 1, "8")?;
        ws.write_number(1, 2, 3)?;
        ws.write_string(2, 2, "4.25")?;
        ws.write_number(1, 3, 12.5)?;
        ws.write_string(2, 3, "0.07")?;
        ws.write_boolean(1, 4, true)?;
        ws.write_string(2, 4, "no")?;
        ws.write_datetime_with_format(
            1,
            5,
            XlDate::from_ymd(2024, 1, 15)?.and_hms(23, 0, 0)?,
            &datetime_format(),
        )?;
        ws.write_string(2, 5, "2024-03-01")?;
        ws.write_datetime_with_format(1, 6, XlDate::from_ymd(2024, 1, 15)?, &date_format())?;
        ws.write_string(2, 6, "2024-01-15 10:30:00")?;
        Ok(())
    });
    let opts = declared(&[
        ("Qty", DataType::Int64),
        ("Small", DataType::Int32),
        ("Price", DataType::Float64),
        ("Amount", DataType::Decimal128(12, 2)),
        ("Flag", DataType::Boolean),
        ("Day", DataType::Date32),
        ("At", DataType::Timestamp(TimeUnit::Microsecond, None)),
    ]);
    let batch = read_excel(&path, &opts).unwrap();
    assert_eq!(ints(&batch, "Qty"), [Some(42), Some(43)]);
    let small = batch
        .column_by_name("Small")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(small.iter().collect::<Vec<_>>(), [Some(7), Some(8)]);
    assert_eq!(floats(&batch, "Price"), [Some(3.0), Some(4.25)]);
    let amount = batch.column_by_name("Amount").unwrap();
    assert_eq!(amount.data_type(), &DataType::Decimal128(12, 2));
    let amount: &Decimal128Array = amount.as_primitive::<Decimal128Type>();
    assert_eq!(amount.iter().collect::<Vec<_>>(), [Some(1250), Some(7)]);
    let flag = batch.column_by_name("Flag").unwrap().as_boolean();
    assert_eq!(flag.iter().collect::<Vec<_>>(), [Some(true), Some(false)]);
    let day = batch
        .column_by_name("Day")
        .unwrap()
        .as_primitive::<Date32Type>();
    // 2024-01-15 and 2024-03-01 as days since 1970-01-01.
    assert_eq!(day.iter().collect::<Vec<_>>(), [Some(19737), Some(19783)]);
    assert_eq!(
        timestamps(&batch, "At"),
        [
            Some("2024-01-15".into()),
            Some("2024-01-15T10:30:00".into())
        ]
    );
}

#[test]
fn declared_int_rejects_fraction_with_sheet_row() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Title")?;
        ws.write_string(1, 0, "Qty")?;
        ws.write_number(2, 0, 1)?;
        // Row 4 is empty; the bad value sits on sheet row 5.
        ws.write_number(4, 0, 12.5)?;
        Ok(())
    });
    let opts = SourceOptions {
        header_row: 2,
        ..declared(&[("Qty", DataType::Int64)])
    };
    let (row, column, message) = source_data(read_excel(&path, &opts).unwrap_err());
    assert_eq!(row, Some(5));
    assert_eq!(column.as_deref(), Some("Qty"));
    assert!(
        message.contains("\"12.5\" is not a valid int64"),
        "{message}"
    );
}

#[test]
fn declared_decimal_reports_sheet_row_through_text_parsing() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Price")?;
        ws.write_number(1, 0, 1.5)?;
        ws.write_string(4, 0, "n/a")?;
        Ok(())
    });
    let (row, column, message) = source_data(
        read_excel(&path, &declared(&[("Price", DataType::Decimal128(12, 2))])).unwrap_err(),
    );
    assert_eq!(row, Some(5));
    assert_eq!(column.as_deref(), Some("Price"));
    assert!(message.contains("n/a"), "{message}");
}

#[test]
fn large_integers_and_mixed_numbers() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Big")?;
        ws.write_string(0, 1, "Mixed")?;
        ws.write_number(1, 0, 1e16)?;
        ws.write_number(2, 0, 3)?;
        ws.write_number(1, 1, 3)?;
        ws.write_number(2, 1, 2.5)?;
        Ok(())
    });
    let batch = read_excel(&path, &options()).unwrap();
    assert_eq!(floats(&batch, "Big"), [Some(1e16), Some(3.0)]);
    assert_eq!(floats(&batch, "Mixed"), [Some(3.0), Some(2.5)]);
}

fn two_sheets(dir: &tempfile::TempDir) -> std::path::PathBuf {
    workbook(
        dir,
        &[
            ("Notes", &|ws: &mut Worksheet| {
                ws.write_string(0, 0, "Note")?;
                ws.write_string(1, 0, "hello")?;
                Ok(())
            }),
            ("Inventory", &|ws: &mut Worksheet| {
                ws.write_string(0, 0, "SKU")?;
                ws.write_string(1, 0, "A-1")?;
                Ok(())
            }),
        ],
    )
}

#[test]
fn sheet_by_default_name_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sheets(&dir);
    let first = read_excel(&path, &options()).unwrap();
    assert_eq!(names(&first), ["Note"]);
    for sheet in [
        SheetRef::Name("Inventory".into()),
        SheetRef::Name("inventory".into()),
        SheetRef::Index(1),
    ] {
        let batch = read_excel(
            &path,
            &SourceOptions {
                sheet: Some(sheet.clone()),
                ..options()
            },
        )
        .unwrap();
        assert_eq!(names(&batch), ["SKU"], "{sheet:?}");
        assert_eq!(strings(&batch, "SKU"), [Some("A-1".to_string())]);
    }
}

#[test]
fn missing_sheet_lists_the_sheets() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_sheets(&dir);
    for sheet in [SheetRef::Name("Stock".into()), SheetRef::Index(2)] {
        let opts = SourceOptions {
            sheet: Some(sheet),
            ..options()
        };
        let (_, _, message) = source_data(read_excel(&path, &opts).unwrap_err());
        assert!(message.contains("\"Notes\", \"Inventory\""), "{message}");
        assert!(message.contains("`sheet`"), "{message}");
    }
}

#[test]
fn empty_header_cell_becomes_column_n() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 1, "SKU")?;
        ws.write_string(0, 3, "Qty")?;
        ws.write_string(1, 1, "A-1")?;
        ws.write_string(1, 2, "x")?;
        ws.write_number(1, 3, 4)?;
        Ok(())
    });
    let batch = read_excel(&path, &options()).unwrap();
    assert_eq!(names(&batch), ["SKU", "column_3", "Qty"]);
    assert_eq!(strings(&batch, "column_3"), [Some("x".to_string())]);
    assert_eq!(ints(&batch, "Qty"), [Some(4)]);
}

/// A value beside the header's columns has no column to go to: an error naming the cell,
/// never a silent drop.
#[test]
fn a_value_outside_the_header_columns_is_an_error() {
    for col in [0u16, 4] {
        let (_dir, path) = one_sheet(&move |ws| {
            ws.write_string(0, 1, "SKU")?;
            ws.write_string(0, 3, "Qty")?;
            ws.write_string(1, 1, "A-1")?;
            ws.write_number(1, 3, 4)?;
            ws.write_string(1, col, "stray")?;
            Ok(())
        });
        let (row, _, message) = source_data(read_excel(&path, &options()).unwrap_err());
        assert_eq!(row, Some(2));
        assert!(message.contains("has no name in row 1"), "{message}");
    }
}

#[test]
fn duplicate_header_names_both_columns() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "SKU")?;
        ws.write_string(0, 1, "Qty")?;
        ws.write_string(0, 2, "SKU")?;
        Ok(())
    });
    let (row, column, message) = source_data(read_excel(&path, &options()).unwrap_err());
    assert_eq!(row, Some(1));
    assert_eq!(column.as_deref(), Some("SKU"));
    assert!(message.contains("columns A and C"), "{message}");
}

#[test]
fn null_values_and_empty_cells_are_null() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Qty")?;
        ws.write_string(0, 1, "Note")?;
        ws.write_string(0, 2, "Empty")?;
        ws.write_number(1, 0, 1)?;
        ws.write_string(1, 1, "ok")?;
        ws.write_string(2, 0, "N/A")?;
        ws.write_string(2, 1, "")?;
        ws.write_number(3, 0, 3)?;
        Ok(())
    });
    let opts = SourceOptions {
        null_values: vec![String::new(), "N/A".into()],
        ..options()
    };
    let batch = read_excel(&path, &opts).unwrap();
    assert_eq!(ints(&batch, "Qty"), [Some(1), None, Some(3)]);
    assert_eq!(
        strings(&batch, "Note"),
        [Some("ok".to_string()), None, None]
    );
    assert_eq!(strings(&batch, "Empty"), [None, None, None]);
}

#[test]
fn error_cell_names_row_column_and_error() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "SKU")?;
        ws.write_string(0, 1, "Ratio")?;
        ws.write_string(1, 0, "A-1")?;
        ws.write_number(1, 1, 0.5)?;
        ws.write_string(2, 0, "A-2")?;
        ws.write_formula(2, 1, Formula::new("=1/0").set_result("#DIV/0!"))?;
        Ok(())
    });
    let (row, column, message) = source_data(read_excel(&path, &options()).unwrap_err());
    assert_eq!(row, Some(3));
    assert_eq!(column.as_deref(), Some("Ratio"));
    assert!(message.contains("Excel error #DIV/0!"), "{message}");
    // Declared columns reject error cells just the same.
    let opts = declared(&[("Ratio", DataType::Utf8)]);
    let (row, _, message) = source_data(read_excel(&path, &opts).unwrap_err());
    assert_eq!(row, Some(3));
    assert!(message.contains("#DIV/0!"), "{message}");
}

#[test]
fn formula_results_are_read() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "Total")?;
        ws.write_formula(1, 0, Formula::new("=2+3").set_result("5"))?;
        Ok(())
    });
    let batch = read_excel(&path, &options()).unwrap();
    assert_eq!(ints(&batch, "Total"), [Some(5)]);
}

#[test]
fn not_a_workbook() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("renamed.xlsx", b"UPC,Qty\n0123,5\n".as_slice()),
        (
            "corrupt.xlsx",
            b"PK\x03\x04this is no zip archive at all".as_slice(),
        ),
        (
            "corrupt.xls",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1 truncated".as_slice(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (row, column, message) = source_data(read_excel(&path, &options()).unwrap_err());
        assert_eq!((row, column), (None, None));
        assert!(
            message.contains("not a readable Excel workbook"),
            "{name}: {message}"
        );
        assert!(message.contains("Check the file"), "{name}: {message}");
    }
    let empty = dir.path().join("empty.xlsx");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        read_excel(&empty, &options()),
        Err(Error::SourceEmpty { .. })
    ));
}

#[test]
fn header_row_beyond_the_data() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "SKU")?;
        ws.write_string(1, 0, "A-1")?;
        ws.write_string(2, 0, "A-2")?;
        Ok(())
    });
    let opts = SourceOptions {
        header_row: 10,
        ..options()
    };
    let (_, _, message) = source_data(read_excel(&path, &opts).unwrap_err());
    assert!(message.contains("has only 3 rows"), "{message}");
    assert!(message.contains("`header_row: 10`"), "{message}");
}

#[test]
fn header_without_rows_gives_an_empty_batch() {
    let (_dir, path) = one_sheet(&|ws| {
        ws.write_string(0, 0, "SKU")?;
        ws.write_string(0, 1, "Qty")?;
        Ok(())
    });
    let batch = read_excel(&path, &declared(&[("Qty", DataType::Int64)])).unwrap();
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema().field(0).data_type(), &DataType::Utf8);
    assert_eq!(batch.schema().field(1).data_type(), &DataType::Int64);
}

#[test]
fn empty_sheet_is_an_empty_source() {
    let (_dir, path) = one_sheet(&|_ws| Ok(()));
    assert!(matches!(
        read_excel(&path, &options()),
        Err(Error::SourceEmpty { .. })
    ));
}

/// The range reader (used for .xls, .ods, .xlsb) must give what streaming gives.
#[test]
fn range_reader_matches_streaming() {
    let cases: [(&Fill, SourceOptions); 2] = [
        (
            &barcode_sheet,
            declared(&[("Qty", DataType::Decimal128(10, 1))]),
        ),
        (
            &|ws: &mut Worksheet| {
                ws.write_string(0, 0, "Title")?;
                ws.write_string(2, 1, "SKU")?;
                ws.write_string(2, 3, "Qty")?;
                ws.write_string(3, 1, "A-1")?;
                ws.write_number(3, 3, 4)?;
                ws.write_string(5, 2, "")?;
                ws.write_string(5, 3, "N/A")?;
                ws.write_number(6, 1, 5)?;
                Ok(())
            },
            SourceOptions {
                header_row: 3,
                null_values: vec!["N/A".into()],
                ..options()
            },
        ),
    ];
    for (fill, opts) in cases {
        let (_dir, path) = one_sheet(fill);
        let streamed = read_excel(&path, &opts).unwrap();
        let mut wb: Xlsx<_> = open_workbook(&path).unwrap();
        let ranged = read_with_range(&path, &mut wb, &opts, false)
            .unwrap()
            .batches
            .remove(0);
        assert_eq!(streamed, ranged);
    }
}

#[test]
fn numbers_render_as_excel_shows_them() {
    let render = |v: f64| {
        let mut s = String::new();
        write_float(&mut s, v).unwrap();
        s
    };
    assert_eq!(render(7000000200000.0), "7000000200000");
    assert_eq!(render(1e15), "1000000000000000");
    assert_eq!(render(12.5), "12.5");
    assert_eq!(render(-0.0), "0");
    assert_eq!(render(1e-7), "0.0000001");
    assert_eq!(column_letters(0), "A");
    assert_eq!(column_letters(25), "Z");
    assert_eq!(column_letters(26), "AA");
    assert_eq!(column_letters(701), "ZZ");
    assert_eq!(column_letters(702), "AAA");
    assert_eq!(render_clock(0.4375, false), "10:30:00");
    assert_eq!(render_clock(1.5, true), "36:00:00");
}
