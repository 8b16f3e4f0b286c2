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
    assert!(
        stderr(&o).contains("cannot read items v1") && stderr(&o).contains("tidemark verify"),
        "{}",
        stderr(&o)
    );
}

/// A deleted snapshot: `verify` names the version, reading it fails loudly, and a rollback to an
/// intact version restores service (queries and runs); vacuum can then drop the damaged one.
#[test]
fn a_deleted_snapshot_is_named_and_rollback_restores_service() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    for qty in [1, 2, 3] {
        w.write("items.csv", format!("sku,qty\nA,{qty}\nB,2\n"));
        assert_code(&w.run(&["run", "p.yaml"]), 0);
    }
    let snapshots = w.path(".tidemark/items/snapshots");
    let latest = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("v00000003-"))
        .unwrap();
    std::fs::remove_file(&latest).unwrap();

    let o = w.run(&["verify", "p.yaml"]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).contains("items v3: DAMAGED — snapshot snapshots/v00000003-"),
        "{}",
        stdout(&o)
    );
    let o = w.run(&["query", "p.yaml", "SELECT * FROM items"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("v3") || stdout(&o).contains("v3"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    let o = w.run(&["rollback", "p.yaml", "--table", "items", "--to", "2"]);
    assert_code(&o, 0);
    let o = w.run(&[
        "query",
        "p.yaml",
        "SELECT sku, qty FROM items ORDER BY sku",
        "--format",
        "csv",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "sku,qty\nA,2\nB,2\n");
    w.write("items.csv", "sku,qty\nA,5\nB,2\n");
    let o = w.run(&["run", "p.yaml"]);
    assert!(
        stdout(&o).starts_with("items: v5 committed — 2 rows: 0 new, 1 changed"),
        "{}",
        stdout(&o)
    );
    assert_code(
        &w.run(&["vacuum", "p.yaml", "--keep", "2", "--grace", "0s"]),
        0,
    );
    let o = w.run(&["verify", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "items v4: ok\nitems v5: ok\n");
}
