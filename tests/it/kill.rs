//! Issue 4, crashes at the process level: `kill -9` a 1M-row run at 50 moments spread over its
//! duration. Every time, `verify` passes (whatever was committed is whole) and the next run
//! commits without clean-up.

use std::process::Stdio;
use std::time::Instant;

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stdout};

const ROWS: usize = 1_000_000;
const KILLS: u64 = 50;

fn day(w: &Workdir, n: u64) {
    let mut csv = String::with_capacity(ROWS * 24);
    csv.push_str("sku,qty\n");
    for i in 0..ROWS as u64 {
        // Each day changes a different 1% of the quantities.
        let qty = if i % 100 == n % 100 {
            i % 89 + n
        } else {
            i % 89
        };
        csv.push_str(&format!("S{i},{qty}\n"));
    }
    w.write("items.csv", csv);
}

#[test]
fn kill_9_at_any_moment_leaves_a_store_that_verifies_and_runs() {
    let w = Workdir::new();
    w.write("items.yaml", ITEMS_PIPELINE);
    day(&w, 0);
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    day(&w, 1);
    let started = Instant::now();
    assert_code(&w.run(&["run", "items.yaml"]), 0);
    let full = started.elapsed();

    // Deterministic moments (xorshift), spread over the length of a whole run.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut committed_while_killing = 0;
    for k in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = full.mul_f64((seed % 1000) as f64 / 1000.0);
        day(&w, 2 + k);
        let mut child = w
            .command()
            .args(["run", "items.yaml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(0) {
            committed_while_killing += 1;
        }
        let o = w.run(&["verify", "items.yaml"]);
        assert_code(&o, 0);
        assert!(
            !stdout(&o).contains("DAMAGED"),
            "kill {k} at {at:?}: {}",
            stdout(&o)
        );
    }
    // The next run commits, and versions are contiguous.
    day(&w, 1000);
    let o = w.run(&["run", "items.yaml"]);
    assert_code(&o, 0);
    let history = w.run(&[
        "query",
        "items.yaml",
        "SELECT count(DISTINCT _version) AS n, max(_version) AS m FROM items_history",
        "--format",
        "csv",
    ]);
    let line = stdout(&history).lines().nth(1).unwrap().to_string();
    let (n, m) = line.split_once(',').unwrap();
    assert_eq!(n, m, "versions are contiguous");
    assert!(m.parse::<u64>().unwrap() >= 3 + committed_while_killing);
}
