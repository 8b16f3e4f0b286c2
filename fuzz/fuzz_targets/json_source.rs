//! A vendor's JSON lines export is untrusted: loading any bytes must give rows or an error naming
//! the line, never a panic (arrow-json decodes; tidemark infers types and converts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::source::SourceFormat;

fuzz_target!(
    init: tidemark_fuzz::report_only_unguarded_panics(),
    |data: &[u8]| {
        // The guard turns a decoder's panic into "the file is damaged"; for JSON lines, which
        // serde_json checks line by line first, that would still be a bug worth knowing.
        if let Err(e) = tidemark_fuzz::load_bytes(SourceFormat::Json, "data.jsonl", data) {
            let text = e.to_string();
            assert!(!text.contains("reader failed on it"), "{text}");
        }
    }
);
