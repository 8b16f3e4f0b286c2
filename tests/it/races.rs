//! Runs of the same table at once: each version is committed by exactly one of them, the others
//! exit 4 having committed nothing, and versions stay contiguous.

use std::process::{Command, Stdio};

use crate::workdir::{ITEMS_PIPELINE, Workdir, stdout};

#[test]
fn concurrent_runs_commit_each_version_once() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    let mut csv = String::from("sku,qty\n");
    for i in 0..20_000 {
        csv.push_str(&format!("S{i},{i}\n"));
    }
    w.write("items.csv", csv);
    let bin = assert_cmd::cargo::cargo_bin("tidemark");
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(&bin)
                .current_dir(w.root())
                .args(["run", "p.yaml"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let committed = outputs
        .iter()
        .filter(|o| o.status.code() == Some(0))
        .count();
    for o in &outputs {
        let code = o.status.code();
        assert!(
            code == Some(0) || code == Some(4),
            "{code:?}: {}",
            stdout(o)
        );
        if code == Some(4) {
            assert!(
                stdout(o).contains("another run committed version"),
                "{}",
                stdout(o)
            );
        }
    }
    assert!(committed >= 1);
    let o = w.run(&["history", "p.yaml"]);
    let versions: Vec<u64> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("| items"))
        .map(|l| l.split('|').nth(2).unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=committed as u64).collect::<Vec<_>>(),
        "one version per successful run"
    );
}
