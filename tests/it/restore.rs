//! `rollback` and `reset`: new versions made from old ones; nothing is deleted.

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stdout};

fn query(w: &Workdir, sql: &str) -> String {
    let o = w.run(&["query", "p.yaml", sql, "--format", "csv"]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn rollback_restores_an_earlier_snapshot_and_reset_empties_the_baseline() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    w.write("items.csv", "sku,qty\nA,1\nB,3\nC,1\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);

    let o = w.run(&["rollback", "p.yaml", "--table", "items", "--to", "1"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "items: v3 committed (rollback to v1) — 2 rows: 0 new, 1 changed, 1 deleted, 1 unchanged\n"
    );
    assert_eq!(
        query(&w, "SELECT sku, qty FROM items ORDER BY sku"),
        "sku,qty\nA,1\nB,2\n"
    );
    assert_eq!(
        query(
            &w,
            "SELECT sku, qty, change_type, change_reason FROM items_changes WHERE _version = 3 ORDER BY sku"
        ),
        "sku,qty,change_type,change_reason\nB,2,CHANGED,qty changed from 3 to 2\nC,1,DELETED,row removed\n"
    );
    let o = w.run(&["history", "p.yaml"]);
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.contains("| 3 ") && l.contains("| rollback |")),
        "{}",
        stdout(&o)
    );

    let o = w.run(&["reset", "p.yaml", "--table", "items"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "items: v4 committed (reset) — 0 rows: 0 new, 0 changed, 2 deleted, 0 unchanged\n"
    );
    assert_eq!(query(&w, "SELECT count(*) AS n FROM items"), "n\n0\n");
    let o = w.run(&["run", "p.yaml"]);
    assert!(
        stdout(&o).starts_with("items: v5 committed — 3 rows: 3 new, 0 changed, 0 deleted"),
        "{}",
        stdout(&o)
    );

    // Every version is still there and intact.
    let o = w.run(&["verify", "p.yaml"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 5);
    assert_eq!(
        query(
            &w,
            "SELECT _version, count(*) AS n FROM items_history GROUP BY 1 ORDER BY 1"
        ),
        "_version,n\n1,2\n2,3\n3,2\n5,3\n"
    );
}

#[test]
fn rollback_to_a_missing_version_is_an_error() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\n");
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let o = w.run(&["rollback", "p.yaml", "--table", "items", "--to", "7"]);
    assert_code(&o, 2);
    assert_eq!(
        crate::workdir::stderr(&o),
        "error: table items has no version 7; its versions are 1 to 1.\n"
    );
}

#[test]
fn diff_between_stored_versions() {
    let w = crate::workdir::Workdir::new();
    w.write("items.yaml", crate::workdir::ITEMS_PIPELINE);
    for csv in [
        "sku,qty\nA,1\nB,2\nC,3\n",
        "sku,qty\nA,1\nB,5\n",
        "sku,qty\nA,1\nB,6\nD,4\n",
    ] {
        w.write("items.csv", csv);
        crate::workdir::assert_code(&w.run(&["run", "items.yaml"]), 0);
    }
    let o = w.run(&[
        "diff",
        "items.yaml",
        "--table",
        "items",
        "--from",
        "1",
        "--to",
        "3",
    ]);
    crate::workdir::assert_code(&o, 0);
    assert_eq!(
        crate::workdir::stdout(&o),
        "sku,qty,change_type,change_reason\nB,6,CHANGED,qty changed from 2 to 6\nC,3,DELETED,row removed\nD,4,NEW,new row\n"
    );
    // --to defaults to the latest; the table to the only one.
    let o = w.run(&["diff", "items.yaml", "--from", "2"]);
    assert_eq!(
        crate::workdir::stdout(&o),
        "sku,qty,change_type,change_reason\nB,6,CHANGED,qty changed from 5 to 6\nD,4,NEW,new row\n"
    );
    let o = w.run(&["diff", "items.yaml", "--from", "9"]);
    crate::workdir::assert_code(&o, 2);
    assert!(
        crate::workdir::stderr(&o).contains("table items has no version 9"),
        "{}",
        crate::workdir::stderr(&o)
    );
}

/// `tidemark query` with no SQL on a terminal: a line editor with multi-line statements and a
/// history file. The terminal is a pseudo-terminal from `script` (util-linux); input is typed
/// after each prompt appears, as a person would.
#[test]
fn the_interactive_prompt_takes_multi_line_statements_and_keeps_history() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    let w = crate::workdir::Workdir::new();
    w.write("items.yaml", crate::workdir::ITEMS_PIPELINE);
    w.write("items.csv", "sku,qty\nA,1\nB,2\n");
    crate::workdir::assert_code(&w.run(&["run", "items.yaml"]), 0);
    let binary = assert_cmd::cargo::cargo_bin("tidemark");
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} query items.yaml --format csv", binary.display()),
            "/dev/null",
        ])
        .current_dir(w.root())
        .env("HOME", w.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the prompt in a pseudo-terminal");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut seen = String::new();
    let mut wait_for = |text: &str, from: usize| -> usize {
        while !seen[from..].contains(text) {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(chunk) => seen.push_str(&chunk),
                Err(_) => panic!("no {text:?} after 30 s; the terminal shows:\n{seen}"),
            }
        }
        seen.len()
    };
    let mut stdin = child.stdin.take().unwrap();
    let mut at = wait_for("tidemark> ", 0);
    stdin.write_all(b"SELECT sku,\r").unwrap();
    at = wait_for("-> ", at);
    stdin.write_all(b" qty FROM items ORDER BY sku;\r").unwrap();
    at = wait_for("tidemark> ", at);
    stdin.write_all(b"\x04").unwrap();
    drop(stdin);
    let _ = wait_for("", at);
    child.wait().unwrap();
    let shown = seen.replace("\r\n", "\n");
    assert!(shown.contains("sku,qty\nA,1\nB,2\n"), "{shown}");
    assert_eq!(
        w.read(".tidemark_history"),
        "#V2\nSELECT sku,\n qty FROM items ORDER BY sku;\n"
    );
}
