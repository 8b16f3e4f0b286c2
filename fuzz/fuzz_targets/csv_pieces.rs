//! Reading a CSV file in pieces (cut between records, parsed on several threads, types guessed
//! per batch) must give exactly what reading it in one piece gives: the same rows, types and
//! cell errors, or the same error. The first input byte picks a piece size of 1 to 256 bytes, so
//! that small inputs are cut in many places.
#![no_main]

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::util::pretty::pretty_format_batches;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidemark::source::csv::{read_csv_in_one_piece, read_csv_rows_in_pieces};
use tidemark::source::{FileRead, SourceOptions, Unobserved};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fn shown(read: tidemark::Result<FileRead>) -> String {
    match read {
        Err(e) => format!("error: {e}"),
        Ok(read) => {
            let batch =
                concat_batches(&read.batches[0].schema(), &read.batches).expect("one schema");
            format!(
                "{:?}\n{}\n{:?}",
                batch.schema(),
                pretty_format_batches(&[batch]).expect("printable"),
                read.cell_errors
            )
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, text)) = data.split_first() else {
        return;
    };
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let path = dir.path().join("data.csv");
    std::fs::write(&path, text).expect("write input");
    let options = SourceOptions::default();
    let whole = shown(read_csv_in_one_piece(&path, &options));
    let pieces = shown(read_csv_rows_in_pieces(
        &path,
        &options,
        size as usize + 1,
        &Unobserved,
    ));
    assert_eq!(pieces, whole, "pieces of {} bytes", size as usize + 1);
});
