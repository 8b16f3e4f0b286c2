//! A vendor's workbook is untrusted: loading any bytes as Excel must give rows or an error,
//! never a panic (calamine parses zip/XML/CFB; tidemark converts cells to Arrow).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::source::SourceFormat;

fuzz_target!(
    init: tidemark_fuzz::report_only_unguarded_panics(),
    |data: &[u8]| {
        let _ = tidemark_fuzz::load_bytes(SourceFormat::Excel, "data.xlsx", data);
    }
);
