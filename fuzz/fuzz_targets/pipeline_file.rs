//! Pipeline files are user input: any bytes must give a Plan or an error, never a panic
//! (SPEC section 1: "No panic, no backtrace ... for bad input").
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, data).expect("write input");
    let _ = tidemark::spec::load(&path, None);
});
