//! What the fuzz targets share: an input written to a file of its own, loaded as a source.

use std::sync::OnceLock;

use tidemark::source::{
    FileSelection, LoadedSource, SourceFormat, SourceOptions, Unobserved, load,
};

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// Write `data` to `file_name` in a temporary folder of this process; its path.
pub fn as_file(file_name: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let path = dir.path().join(file_name);
    std::fs::write(&path, data).expect("write input");
    path
}

/// Load `data` as a source of `format`, from a file named `file_name`.
pub fn load_bytes(
    format: SourceFormat,
    file_name: &str,
    data: &[u8],
) -> tidemark::Result<LoadedSource> {
    let path = as_file(file_name, data);
    let options = SourceOptions {
        format,
        ..Default::default()
    };
    load(
        "t",
        path.to_str().unwrap(),
        FileSelection::Newest,
        &options,
        false,
        &Unobserved,
    )
}

/// A panic inside a third-party decoder is caught by tidemark (`error::guard_parser`) and
/// reported as a damaged file; only a panic elsewhere is a finding. Call from `init:`.
pub fn report_only_unguarded_panics() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tidemark::error::parsing_untrusted() {
            fuzzer_hook(info);
        }
    }));
}
