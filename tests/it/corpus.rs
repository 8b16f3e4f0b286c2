//! A corpus of bad inputs, written by the tests into a folder of their own: malformed CSV, damaged
//! or misnamed workbooks, Parquet and JSON lines, invalid pipeline files and repeated keys.
//!
//! Each case names its files, the command, the exit code of SPEC section 1 and the fragments its
//! message must hold (the file, the line, row or column, and what to do). Every case runs in a
//! store that already holds a committed table of its own, which must still answer with its rows
//! afterwards. One test runs every case and reports every failing one at once; another asserts
//! that no case panics. Inputs that must be
//! read correctly (a UTF-8 BOM, CRLF line endings, an empty header cell) are small tests of their
//! own that assert the values read.
//!
//! Cases already in `bad_input.rs` and `review_findings.rs` (unknown key, dependency cycle,
//! missing key column, missing source, empty file, duplicate key, header-only file) are not
//! repeated here; `BAD_INPUT_CASES` lists them so the corpus counts them.
//!
//! Not here on purpose: null keys, values that do not fit a declared or pinned type, and Excel
//! error cells, which are becoming row rejections.

use std::process::Output;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use rust_xlsxwriter::{Format, Workbook};

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stderr, stdout};

/// The bad-input cases of `bad_input.rs` and `review_findings.rs`, counted toward the corpus.
pub const BAD_INPUT_CASES: &[&str] = &[
    "unknown_key_names_line_and_suggests",
    "dependency_cycle_is_named",
    "key_column_that_does_not_exist",
    "missing_source_file",
    "empty_source_file",
    "duplicate_key_names_the_key_and_row",
    "a_header_only_file_is_refused_not_read_as_deleting_everything",
];

/// One bad input: files to write, the command, the exit code and the message fragments.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &'static [&'static str],
    code: i32,
    expect: &'static [&'static str],
}

fn case(
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: &'static [&'static str],
    code: i32,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        files,
        args,
        code,
        expect,
    }
}

/// A file to write, from text or bytes.
fn file(name: &'static str, contents: impl AsRef<[u8]>) -> (&'static str, Vec<u8>) {
    (name, contents.as_ref().to_vec())
}

/// `ITEMS_PIPELINE` as `p.yaml` (one CSV table `items` keyed by `sku`) and `items.csv`.
fn items_csv(csv: impl AsRef<[u8]>) -> Vec<(&'static str, Vec<u8>)> {
    vec![file("p.yaml", ITEMS_PIPELINE), file("items.csv", csv)]
}

/// A pipeline `p.yaml` and `items.csv` with two good rows, for the pipeline-file cases.
fn pipeline(yaml: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        file("p.yaml", yaml),
        file("items.csv", "sku,qty\nA,1\nB,2\n"),
    ]
}

/// A table `items` read from `source` (a flow mapping's content) and keyed by `sku`.
fn items_from(source: &str, name: &'static str, contents: Vec<u8>) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        file(
            "p.yaml",
            format!("tables:\n  items:\n    source: {{{source}}}\n    key: sku\n"),
        ),
        (name, contents),
    ]
}

/// A workbook with a sheet "Inventory": header `sku, qty` and two rows.
fn inventory_xlsx() -> Vec<u8> {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventory").unwrap();
    ws.write(0, 0, "sku").unwrap();
    ws.write(0, 1, "qty").unwrap();
    for (i, (sku, qty)) in [("A", 1), ("B", 2)].into_iter().enumerate() {
        ws.write(i as u32 + 1, 0, sku).unwrap();
        ws.write(i as u32 + 1, 1, qty).unwrap();
    }
    wb.save_to_buffer().unwrap()
}

/// A workbook whose first row is a title merged across the columns, above the header.
fn merged_title_xlsx() -> Vec<u8> {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.merge_range(0, 0, 0, 1, "Inventory report", &Format::new())
        .unwrap();
    ws.write(1, 0, "sku").unwrap();
    ws.write(1, 1, "qty").unwrap();
    ws.write(2, 0, "A").unwrap();
    ws.write(2, 1, 1).unwrap();
    wb.save_to_buffer().unwrap()
}

/// A workbook whose header has a group name merged over two columns (B1:C1), the names a
/// person reads on the row below.
fn merged_header_xlsx() -> Vec<u8> {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.write(0, 0, "sku").unwrap();
    ws.merge_range(0, 1, 0, 2, "Stock", &Format::new()).unwrap();
    ws.write(1, 0, "A").unwrap();
    ws.write(1, 1, 1).unwrap();
    ws.write(1, 2, 2).unwrap();
    wb.save_to_buffer().unwrap()
}

/// An encrypted (password-protected) .xlsx as Excel saves it: not a ZIP but an OLE2 compound
/// file holding the streams `EncryptionInfo` and `EncryptedPackage`. rust_xlsxwriter cannot
/// encrypt, so this builds the container by hand: a header, one FAT sector and one directory
/// sector; the streams are empty, which is all a reader needs to tell what the file is.
fn encrypted_xlsx() -> Vec<u8> {
    const FREE: u32 = 0xFFFF_FFFF;
    const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
    const FAT_SECTOR: u32 = 0xFFFF_FFFD;
    let mut header = vec![0u8; 512];
    header[..8].copy_from_slice(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]);
    let put16 =
        |buf: &mut Vec<u8>, at: usize, v: u16| buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |buf: &mut Vec<u8>, at: usize, v: u32| buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut header, 24, 0x003E); // minor version
    put16(&mut header, 26, 0x0003); // major version 3: 512-byte sectors
    put16(&mut header, 28, 0xFFFE); // little-endian
    put16(&mut header, 30, 9); // sector size 2^9
    put16(&mut header, 32, 6); // mini sector size 2^6
    put32(&mut header, 44, 1); // one FAT sector
    put32(&mut header, 48, 1); // the directory starts at sector 1
    put32(&mut header, 56, 4096); // mini stream cutoff
    put32(&mut header, 60, END_OF_CHAIN); // no mini FAT
    put32(&mut header, 68, END_OF_CHAIN); // no DIFAT sectors
    put32(&mut header, 76, 0); // the FAT is sector 0
    for i in 1..109 {
        put32(&mut header, 76 + 4 * i, FREE);
    }
    let mut fat = vec![0xFFu8; 512];
    put32(&mut fat, 0, FAT_SECTOR);
    put32(&mut fat, 4, END_OF_CHAIN);
    let mut dir = vec![0u8; 512];
    // (name, type: 5 root / 2 stream, left, right, child)
    let entries = [
        ("Root Entry", 5u8, FREE, FREE, 1u32),
        ("EncryptionInfo", 2, FREE, 2, FREE),
        ("EncryptedPackage", 2, FREE, FREE, FREE),
    ];
    for (i, (name, kind, left, right, child)) in entries.into_iter().enumerate() {
        let at = i * 128;
        let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        dir[at..at + utf16.len()].copy_from_slice(&utf16);
        put16(&mut dir, at + 64, (utf16.len() + 2) as u16);
        dir[at + 66] = kind;
        dir[at + 67] = 1; // black
        put32(&mut dir, at + 68, left);
        put32(&mut dir, at + 72, right);
        put32(&mut dir, at + 76, child);
        put32(&mut dir, at + 116, END_OF_CHAIN);
        put32(&mut dir, at + 120, 0);
    }
    for i in entries.len()..4 {
        for at in [68, 72, 76] {
            put32(&mut dir, i * 128 + at, FREE);
        }
    }
    [header, fat, dir].concat()
}

/// A small Parquet file with columns `sku` and `qty`.
fn items_parquet() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sku", DataType::Utf8, false),
        Field::new("qty", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["A", "B", "C"])),
            Arc::new(Int64Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// The first half of `bytes`, as a download cut short leaves it.
fn truncated(bytes: Vec<u8>) -> Vec<u8> {
    bytes[..bytes.len() / 2].to_vec()
}

/// Binary data that is no workbook, Parquet or text: a PNG signature and header followed by
/// a fixed pseudo-random sequence, as an image saved under the wrong name.
fn binary_noise() -> Vec<u8> {
    let mut x: u32 = 0x2545_F491;
    let noise = (0..400).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 24) as u8
    });
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
        .iter()
        .copied()
        .chain(noise)
        .collect()
}

fn cases() -> Vec<Case> {
    let run: &'static [&'static str] = &["run", "p.yaml"];
    let check: &'static [&'static str] = &["check", "p.yaml"];
    vec![
        // --- malformed CSV -------------------------------------------------------------------
        case(
            "csv_unbalanced_quote",
            items_csv("sku,qty\nA,1\nB,\"2\nC,3\n"),
            run,
            1,
            &["items.csv, row 3: malformed CSV", "never closed", "\"\""],
        ),
        case(
            "csv_too_many_fields_on_the_first_data_line",
            items_csv("sku,qty\nA,1,9\nB,2\n"),
            run,
            1,
            &[
                "items.csv, row 2: malformed CSV",
                "3 fields",
                "header has 2",
                "`delimiter`",
            ],
        ),
        case(
            "csv_too_few_fields_after_a_field_that_spans_lines",
            items_csv("sku,qty\n\"A\na\",1\nB,2\nC\n"),
            run,
            1,
            &["items.csv, row 5: malformed CSV", "1 field", "header has 2"],
        ),
        case(
            "csv_too_many_fields_below_a_title_line",
            vec![
                file(
                    "p.yaml",
                    "tables:\n  items:\n    source: {path: items.csv, header_row: 2}\n    key: sku\n",
                ),
                file("items.csv", "Stock report\nsku,qty\nA,1\nB,2,3\n"),
            ],
            run,
            1,
            &["items.csv, row 4: malformed CSV", "3 fields", "header has 2"],
        ),
        case(
            "csv_wrong_delimiter",
            items_csv("sku;qty\nA;1\nB;2\n"),
            run,
            1,
            &[
                "column \"sku\" named in `key` is not in",
                "items.csv. Columns present: sku;qty.",
                "delimiter: \";\"",
            ],
        ),
        case(
            "csv_latin1_bytes",
            items_csv(b"sku,name\nA,caf\xe9\nB,tea\n"),
            run,
            1,
            &["items.csv, row 2, column \"name\": the file is not valid UTF-8", "Re-export it as UTF-8"],
        ),
        case(
            "csv_duplicate_column_name",
            items_csv("sku,qty,qty\nA,1,2\n"),
            run,
            1,
            &[
                "items.csv, row 1, column \"qty\"",
                "names column \"qty\" twice (columns 2 and 3)",
                "Rename one",
            ],
        ),
        case(
            "csv_that_is_really_a_workbook",
            items_csv(inventory_xlsx()),
            run,
            1,
            &["items.csv", "Excel workbook", "`format: excel`"],
        ),
        case(
            "csv_that_is_binary",
            items_csv(binary_noise()),
            run,
            1,
            &["items.csv", "binary", "not a CSV"],
        ),
        case(
            "csv_header_row_beyond_the_file",
            vec![
                file(
                    "p.yaml",
                    "tables:\n  items:\n    source: {path: items.csv, header_row: 9}\n    key: sku\n",
                ),
                file("items.csv", "sku,qty\nA,1\n"),
            ],
            run,
            1,
            &["items.csv", "`header_row: 9` is beyond the end of the file"],
        ),
        case(
            "csv_latin1_bytes_found_by_check",
            items_csv(b"sku,name\nA,tea\nB,\x93quoted\x94\n"),
            check,
            1,
            &["items: error:", "items.csv, row 3, column \"name\": the file is not valid UTF-8"],
        ),
        case(
            "diff_new_file_with_an_unclosed_quote",
            vec![
                file("old.csv", "sku,qty\nA,1\n"),
                file("new.csv", "sku,qty\nA,1\nB,\"2\n"),
            ],
            &["diff", "old.csv", "new.csv", "--key", "sku"],
            1,
            &["new.csv, row 3: malformed CSV", "never closed"],
        ),
        // --- Excel ----------------------------------------------------------------------------
        case(
            "excel_missing_sheet_by_name",
            items_from("path: items.xlsx, sheet: Stock", "items.xlsx", inventory_xlsx()),
            run,
            1,
            &[
                "items.xlsx: the workbook has no sheet named \"Stock\"",
                "sheets are: \"Inventory\"",
                "Check `sheet`",
            ],
        ),
        case(
            "excel_missing_sheet_by_index",
            items_from("path: items.xlsx, sheet: 3", "items.xlsx", inventory_xlsx()),
            run,
            1,
            &[
                "items.xlsx: sheet index 3 is out of range",
                "1 sheet(s), numbered from 0",
                "Check `sheet`",
            ],
        ),
        case(
            "excel_random_bytes",
            items_from("path: items.xlsx", "items.xlsx", binary_noise()),
            run,
            1,
            &["items.xlsx: the file is not a readable Excel workbook", "Check the file"],
        ),
        case(
            "excel_truncated_zip",
            items_from("path: items.xlsx", "items.xlsx", truncated(inventory_xlsx())),
            run,
            1,
            &[
                "items.xlsx: the file is not a readable Excel workbook",
                "completely downloaded",
            ],
        ),
        case(
            "excel_text_file_renamed",
            items_from("path: items.xlsx", "items.xlsx", b"sku,qty\nA,1\n".to_vec()),
            run,
            1,
            &[
                "items.xlsx: the file is not a readable Excel workbook",
                "it holds text (a CSV or HTML file saved under an Excel name?)",
            ],
        ),
        case(
            "excel_password_protected",
            items_from("path: items.xlsx", "items.xlsx", encrypted_xlsx()),
            run,
            1,
            &["items.xlsx", "password", "save it without"],
        ),
        case(
            "excel_header_row_beyond_the_data",
            items_from("path: items.xlsx, header_row: 10", "items.xlsx", inventory_xlsx()),
            run,
            1,
            &[
                "items.xlsx: `header_row: 10` is beyond the data",
                "sheet \"Inventory\" has only 3 rows",
                "Check `header_row`",
            ],
        ),
        case(
            "excel_merged_title_above_the_header",
            items_from("path: items.xlsx", "items.xlsx", merged_title_xlsx()),
            run,
            1,
            &[
                "items.xlsx, row 2, column \"B2\": cell B2 holds a value but column B has no name in row 1, the header row",
                "If row 1 is a title, set `header_row`",
            ],
        ),
        // --- Parquet --------------------------------------------------------------------------
        case(
            "parquet_truncated",
            items_from("path: items.parquet", "items.parquet", truncated(items_parquet())),
            run,
            1,
            &["items.parquet: not a readable Parquet file", "truncated"],
        ),
        case(
            "parquet_that_is_text",
            items_from("path: items.parquet", "items.parquet", b"sku,qty\nA,1\n".to_vec()),
            run,
            1,
            &["items.parquet", "not a Parquet file", "holds text"],
        ),
        // --- JSON lines -----------------------------------------------------------------------
        case(
            "json_broken_line",
            items_from(
                "path: items.jsonl",
                "items.jsonl",
                b"{\"sku\": \"A\", \"qty\": 1}\n{\"sku\": \"B\", \"qty\": 2\n{\"sku\": \"C\", \"qty\": 3}\n"
                    .to_vec(),
            ),
            run,
            1,
            &["items.jsonl, row 2: not valid JSON", "one JSON object"],
        ),
        case(
            "json_single_quotes",
            items_from(
                "path: items.jsonl",
                "items.jsonl",
                b"{\"sku\": \"A\"}\n{\"sku\": 'B'}\n".to_vec(),
            ),
            run,
            1,
            &["items.jsonl, row 2: not valid JSON: expected value (column 9)"],
        ),
        case(
            "json_line_that_is_an_array",
            items_from(
                "path: items.jsonl",
                "items.jsonl",
                b"{\"sku\": \"A\", \"qty\": 1}\n\n[\"B\", 2]\n".to_vec(),
            ),
            run,
            1,
            &["items.jsonl, row 3: the line holds a JSON array, not an object", "one JSON object"],
        ),
        case(
            "json_file_that_is_one_array",
            items_from(
                "path: items.json",
                "items.json",
                b"[{\"sku\": \"A\", \"qty\": 1},\n {\"sku\": \"B\", \"qty\": 2}]\n".to_vec(),
            ),
            run,
            1,
            &["items.json, row 1", "JSON array", "JSON lines", "jq -c '.[]'"],
        ),
        case(
            "json_not_utf8",
            items_from(
                "path: items.jsonl",
                "items.jsonl",
                b"{\"sku\": \"A\", \"name\": \"tea\"}\n{\"sku\": \"B\", \"name\": \"caf\xe9\"}\n"
                    .to_vec(),
            ),
            run,
            1,
            &["items.jsonl, row 2: not valid UTF-8", "Re-export it as UTF-8"],
        ),
        // --- pipeline files -------------------------------------------------------------------
        case(
            "pipeline_key_is_a_mapping",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: {a: 1}\n"),
            check,
            2,
            &["p.yaml:4:10: expected a column name or a list of column names"],
        ),
        case(
            "pipeline_tables_is_a_number",
            pipeline("tables: 5\n"),
            check,
            2,
            &["p.yaml:1:9:", "expected a mapping", "`tables`"],
        ),
        case(
            "pipeline_missing_key",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n"),
            check,
            2,
            &["p.yaml:3:5: missing required key `key` in this mapping; add it."],
        ),
        case(
            "pipeline_missing_source",
            pipeline("tables:\n  items:\n    key: sku\n"),
            check,
            2,
            &["p.yaml:3:5: missing required key `source` in this mapping; add it."],
        ),
        case(
            "pipeline_duplicate_table_name",
            pipeline(
                "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n  items:\n    source: {path: items.csv}\n    key: qty\n",
            ),
            check,
            2,
            &["p.yaml:5:3: `items` appears twice", "Rename or remove one"],
        ),
        case(
            "pipeline_empty_file",
            pipeline(""),
            check,
            2,
            &["p.yaml", "the pipeline file is empty", "`tables:`"],
        ),
        case(
            "pipeline_only_comments",
            pipeline("# inventory sync\n\n# tables: to do\n"),
            run,
            2,
            &["p.yaml", "the pipeline file is empty", "`tables:`"],
        ),
        case(
            "pipeline_tab_indentation",
            pipeline("tables:\n\titems:\n\t\tsource: {path: items.csv}\n\t\tkey: sku\n"),
            check,
            2,
            &["p.yaml:2:2: tabs", "indent with spaces"],
        ),
        case(
            "pipeline_invalid_table_name",
            pipeline("tables:\n  my-items:\n    source: {path: items.csv}\n    key: sku\n"),
            check,
            2,
            &["line 3: table name `my-items` must match [A-Za-z_][A-Za-z0-9_]*"],
        ),
        case(
            "pipeline_compare_and_ignore",
            pipeline(
                "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    compare: [qty]\n    ignore: [qty]\n",
            ),
            run,
            2,
            &["line 5 and line 6: table items: set `compare` or `ignore`, not both."],
        ),
        case(
            "pipeline_unknown_column_type",
            pipeline(
                "tables:\n  items:\n    source:\n      path: items.csv\n      columns: {qty: number}\n    key: sku\n",
            ),
            check,
            2,
            &["line 5: table items: column \"qty\" has unknown type `number`; use one of string, int64"],
        ),
        case(
            "pipeline_guard_percentage_above_100",
            pipeline(
                "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    guard: {max_deleted: 120%}\n",
            ),
            check,
            2,
            &["line 5: table items: guard `max_deleted` is 120%", "between 0% and 100%"],
        ),
        case(
            "pipeline_guard_not_a_number",
            pipeline(
                "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    guard:\n      max_deleted: abc\n",
            ),
            check,
            2,
            &["line 6: table items: guard `max_deleted` must be a row count (100) or a percentage of the baseline (\"20%\")"],
        ),
        case(
            "pipeline_header_row_zero",
            pipeline("tables:\n  items:\n    source:\n      path: items.csv\n      header_row: 0\n    key: sku\n"),
            check,
            2,
            &["line 5: table items: `header_row` is 1-based"],
        ),
        case(
            "pipeline_key_names_no_column",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: []\n"),
            check,
            2,
            &["line 4: table items: `key` names no column."],
        ),
        case(
            "pipeline_unknown_format",
            pipeline("tables:\n  items:\n    source: {path: items.csv, format: xml}\n    key: sku\n"),
            check,
            2,
            &["line 3: table items: unknown format `xml`; use csv, excel, parquet or json."],
        ),
        case(
            "pipeline_deliver_names_no_database",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - name: shopdb\n"),
            check,
            2,
            &["line 6: table items: deliver: name one place the changes go: `postgres: {url: ..., table: ...}`, `sqlite: {path: shop.db}` or `http: {url: ..., method: ...}` (give each its own entry)."],
        ),
        case(
            "pipeline_deliver_soft_deletes_without_a_column",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - postgres: {url: \"${DB}\", deletes: soft}\n"),
            check,
            2,
            &["line 6: table items: deliver: `deletes: soft` sets a column to the commit time: name it with `soft_delete_column: deleted_at`."],
        ),
        case(
            "pipeline_deliver_url_variable_unclosed",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - postgres: {url: \"postgres://${DB\"}\n"),
            check,
            2,
            &["line 6: table items: deliver: url: a `${` has no closing `}`: write `${VARIABLE}`."],
        ),
        case(
            "pipeline_deliver_name_taken_by_an_output",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    output: [{name: shopdb, path: out.csv}]\n    deliver:\n      - name: shopdb\n        postgres: {url: \"${DB}\"}\n"),
            check,
            2,
            &["line 7: table items: deliver: two destinations are named \"shopdb\""],
        ),
        case(
            "pipeline_deliver_variable_not_set",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - postgres: {url: \"${TIDEMARK_CORPUS_UNSET}\"}\n"),
            check,
            2,
            &["items: error: destination postgres: url reads the environment variable TIDEMARK_CORPUS_UNSET, which is not set; set it where tidemark runs (its value is never printed or stored)."],
        ),
        case(
            "pipeline_deliver_unknown_key_suggests",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - postgres: {url: \"${DB}\", tabel: x}\n"),
            check,
            2,
            &["tabel", "table"],
        ),
        case(
            "pipeline_file_does_not_exist",
            pipeline(""),
            &["run", "nosuch.yaml"],
            2,
            &["cannot read pipeline file nosuch.yaml"],
        ),
        case(
            "argument_source_without_table",
            pipeline(ITEMS_PIPELINE),
            &["run", "p.yaml", "--source", "items.csv"],
            2,
            &["--source items.csv: expected T=PATH"],
        ),
        // --- keys -----------------------------------------------------------------------------
        case(
            "duplicate_key_names_both_lines",
            vec![
                file(
                    "p.yaml",
                    "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    duplicates: error\n",
                ),
                file("items.csv", "sku,qty\n\"A\na\",1\nA,2\nB,3\nA,4\n"),
            ],
            run,
            1,
            &[
                "key sku=A appears 2 times in the new snapshot",
                "items.csv rows 4 and 6",
                "`duplicates: keep_first`",
            ],
        ),
        case(
            "duplicate_composite_key",
            vec![
                file(
                    "p.yaml",
                    "tables:\n  items:\n    source: {path: items.csv}\n    key: [customer, po]\n",
                ),
                file("items.csv", "customer,po,qty\nX,1,1\nX,2,1\nY,1,1\nX,1,5\n"),
            ],
            run,
            1,
            &["key customer=X, po=1 appears 2 times", "items.csv rows 2 and 5"],
        ),
        case(
            "duplicate_key_in_json_lines",
            items_from(
                "path: items.jsonl",
                "items.jsonl",
                b"{\"sku\": \"B\"}\n\n{\"sku\": \"A\"}\n{\"sku\": \"A\"}\n".to_vec(),
            ),
            run,
            1,
            // Lines of the file, the blank one counted.
            &["key sku=A appears 2 times", "items.jsonl rows 3 and 4"],
        ),
        // --- names and paths that would collide -----------------------------------------------
        case(
            "table_named_like_the_store_runs",
            pipeline("tables:\n  runs:\n    source: {path: items.csv}\n    key: sku\n"),
            check,
            2,
            &["line 3: table name `runs` is taken"],
        ),
        case(
            "table_named_like_another_tables_history",
            pipeline("tables:\n  x:\n    source: {path: items.csv}\n    key: sku\n  x_history:\n    source: {path: items.csv}\n    key: sku\n"),
            check,
            2,
            &["table name `x_history` is taken: the store queries table x's history"],
        ),
        case(
            "output_over_its_own_source",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    output: [{path: items.csv}]\n"),
            run,
            2,
            &["output `", "items.csv` would overwrite the source of table items"],
        ),
        case(
            "output_inside_the_store",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    output: [{path: .tidemark/d.csv}]\n"),
            run,
            2,
            &["is inside the store"],
        ),
        case(
            "output_that_is_a_folder",
            {
                let mut files = pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    output: [{path: out/d.csv}]\n");
                files.push(file("out/d.csv/keep", ""));
                files
            },
            run,
            2,
            &["out/d.csv: is a folder, not a file"],
        ),
        case(
            "source_flag_with_an_empty_path",
            items_csv("sku,qty\nA,1\n"),
            &["run", "p.yaml", "--source", "items="],
            2,
            &["--source items=: the path is empty"],
        ),
        // --- SQL that would write ----------------------------------------------------------------
        case(
            "query_that_copies_over_a_file",
            items_csv("sku,qty\nA,1\n"),
            &["query", "p.yaml", "COPY (SELECT 1) TO 'x.parquet'"],
            2,
            &["COPY is not allowed: tidemark's SQL only reads"],
        ),
        case(
            "transform_that_creates_a_table",
            pipeline("tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    transform: CREATE TABLE t AS SELECT * FROM source\n"),
            check,
            1,
            &["table items: the transform failed: CREATE is not allowed"],
        ),
    ]
}

/// A pipeline of its own (`beside.yaml`, table `kept`, two rows) in every case's store,
/// committed before the case runs: a bad input must leave what the store held answering.
const BESIDE_PIPELINE: &str =
    "store: .tidemark\ntables:\n  kept:\n    source: {path: kept.csv}\n    key: id\n";

fn commit_beside_baseline(w: &Workdir) {
    w.write("beside.yaml", BESIDE_PIPELINE);
    w.write("kept.csv", "id,v\n1,a\n2,b\n");
    assert_code(&w.run(&["run", "beside.yaml"]), 0);
}

/// What the baseline committed beside the case answers after it.
fn beside_baseline_rows(w: &Workdir) -> String {
    let o = w.run(&[
        "query",
        "beside.yaml",
        "SELECT count(*) AS n FROM kept",
        "--format",
        "csv",
    ]);
    format!("{}{}", stdout(&o), stderr(&o))
}

/// Every case run once (the two tests below share the outputs).
fn outcomes() -> &'static [(Case, Output, String)] {
    static OUTCOMES: OnceLock<Vec<(Case, Output, String)>> = OnceLock::new();
    OUTCOMES.get_or_init(|| {
        cases()
            .into_iter()
            .map(|c| {
                let w = Workdir::new();
                commit_beside_baseline(&w);
                for (name, contents) in &c.files {
                    w.write(name, contents);
                }
                let o = w.run(c.args);
                let after = beside_baseline_rows(&w);
                (c, o, after)
            })
            .collect()
    })
}

fn both_streams(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

#[test]
fn corpus_every_bad_input_has_its_code_and_message() {
    let all = outcomes();
    assert!(
        all.len() + BAD_INPUT_CASES.len() >= 60,
        "the corpus holds {} cases",
        all.len() + BAD_INPUT_CASES.len()
    );
    let mut failures = Vec::new();
    for (c, o, after) in all {
        if after != "n\n2\n" {
            failures.push(format!(
                "{}: the baseline beside it no longer answers with its 2 rows: {after}",
                c.name
            ));
        }
        let text = both_streams(o);
        let missing: Vec<&str> = c
            .expect
            .iter()
            .copied()
            .filter(|f| !text.contains(f))
            .collect();
        if o.status.code() != Some(c.code) || !missing.is_empty() {
            failures.push(format!(
                "{} ({}): exit {:?}, expected {}; missing {:?}\n{}",
                c.name,
                c.args.join(" "),
                o.status.code(),
                c.code,
                missing,
                text.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

#[test]
fn corpus_no_case_panics_or_shows_a_backtrace() {
    let mut failures = Vec::new();
    for (c, o, _) in outcomes() {
        let text = both_streams(o);
        for bad in ["internal error", "panicked", "RUST_BACKTRACE"] {
            if text.contains(bad) {
                failures.push(format!("{}: {bad}\n{}", c.name, text.trim_end()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Dump every case's output (`cargo test --test it corpus_dump -- --ignored --nocapture`).
#[test]
#[ignore = "prints the corpus for review"]
fn corpus_dump() {
    for (c, o, _) in outcomes() {
        println!(
            "== {} [{:?}]\n{}",
            c.name,
            o.status.code(),
            both_streams(o).trim_end()
        );
    }
}

fn query_csv(w: &Workdir, sql: &str) -> String {
    let o = w.run(&["query", "p.yaml", sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

/// A UTF-8 byte-order mark is not part of the first column's name.
#[test]
fn corpus_csv_with_a_byte_order_mark() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", b"\xEF\xBB\xBFsku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        query_csv(
            &w,
            "SELECT sku, qty, octet_length(sku) AS n FROM items ORDER BY sku"
        ),
        "sku,qty,n\nA,1,1\nB,2,1\n"
    );
}

/// CRLF line endings: no value (and no column name) keeps the `\r`.
#[test]
fn corpus_csv_with_crlf_line_endings() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,name\r\nA,tea\r\nB,\"two\r\nlines\"\r\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        query_csv(
            &w,
            "SELECT sku, name, octet_length(name) AS n FROM items ORDER BY sku"
        ),
        "sku,name,n\nA,tea,3\nB,\"two\r\nlines\",10\n"
    );
    // The same rows with LF endings are unchanged (quoted line breaks are kept as written).
    w.write("items.csv", "sku,name\nA,tea\nB,\"two\r\nlines\"\n");
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("0 new, 0 changed, 0 deleted, 2 unchanged"),
        "{}",
        stdout(&o)
    );
}

/// An empty header cell names its column `column_N` after its position, as in a workbook,
/// instead of an empty name no SQL can select.
#[test]
fn corpus_csv_with_an_empty_header_cell() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,,qty\nA,x,1\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(
        query_csv(&w, "SELECT * FROM items"),
        "sku,column_2,qty\nA,x,1\n"
    );
}

/// A group name merged over two header cells names only the first column: the value under the
/// second has no header, and is an error naming its cell rather than dropped silently.
#[test]
fn corpus_excel_with_a_merged_header_cell() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.xlsx}\n    key: sku\n",
    );
    w.write("items.xlsx", merged_header_xlsx());
    let o = w.run(&["run", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("items.xlsx, row 2, column \"C2\": cell C2 holds a value but column C has no name in row 1, the header row"),
        "{}",
        stdout(&o)
    );
}
