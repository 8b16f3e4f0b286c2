//! A vendor's CSV export is untrusted: loading any bytes must give rows or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::source::SourceFormat;

fuzz_target!(|data: &[u8]| {
    let _ = tidemark_fuzz::load_bytes(SourceFormat::Csv, "data.csv", data);
});
