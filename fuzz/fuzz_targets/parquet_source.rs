//! A Parquet file from elsewhere is untrusted: loading any bytes must give rows or an error naming
//! the file, never a panic (the parquet crate decodes footers, pages and encodings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::source::SourceFormat;

fuzz_target!(
    init: tidemark_fuzz::report_only_unguarded_panics(),
    |data: &[u8]| {
        let _ = tidemark_fuzz::load_bytes(SourceFormat::Parquet, "data.parquet", data);
    }
);
