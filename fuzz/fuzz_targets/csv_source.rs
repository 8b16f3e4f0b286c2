//! A vendor's CSV export is untrusted: loading any bytes must give rows or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidemark::source::{FileSelection, SourceOptions, load};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let path = dir.path().join("data.csv");
    std::fs::write(&path, data).expect("write input");
    let _ = load(
        "t",
        path.to_str().unwrap(),
        FileSelection::Newest,
        &SourceOptions::default(),
        false,
        &tidemark::source::Unobserved,
    );
});
