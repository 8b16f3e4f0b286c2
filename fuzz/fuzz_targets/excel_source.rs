//! A vendor's workbook is untrusted: loading any bytes as Excel must give rows or an error,
//! never a panic (calamine parses zip/XML/CFB; tidemark converts cells to Arrow).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidemark::source::{FileSelection, SourceFormat, SourceOptions, load};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(
    init: {
        // A panic inside calamine is caught by tidemark (`error::guard_parser`) and reported as
        // a damaged file; only a panic elsewhere is a finding.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !tidemark::error::parsing_untrusted() {
                fuzzer_hook(info);
            }
        }));
    },
    |data: &[u8]| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
        let path = dir.path().join("data.xlsx");
        std::fs::write(&path, data).expect("write input");
        let options = SourceOptions { format: SourceFormat::Excel, ..Default::default() };
        let _ = load(
            "t",
            path.to_str().unwrap(),
            FileSelection::Newest,
            &options,
            false,
            &tidemark::source::Unobserved,
        );
    }
);
