//! `verify` names the damaged version loudly; intact stores verify clean.

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stderr, stdout};

#[test]
fn a_truncated_snapshot_is_named_by_version() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\nB,3\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let o = w.run(&["verify", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "items v1: ok\nitems v2: ok\n");

    let snapshots = w.path(".tidemark/items/snapshots");
    let mut files: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    let o = w.run(&["verify", "p.yaml"]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(
        out.starts_with("items v1: DAMAGED — snapshot snapshots/v00000001-"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "has {} bytes, the commit record says {}",
            bytes.len() / 2,
            bytes.len()
        )),
        "{out}"
    );
    assert!(out.ends_with("items v2: ok\n"), "{out}");
    assert!(
        stderr(&o).contains("1 of 2 versions are damaged"),
        "{}",
        stderr(&o)
    );
    // Reading the damaged version fails loudly rather than returning nothing.
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT count(*) FROM items_history WHERE _version = 1",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
}
