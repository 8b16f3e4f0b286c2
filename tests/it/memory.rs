//! Issue 6, memory: `--memory-limit` and `memory_limit:` bound the engine's memory (joins and
//! sorts spill to disk beyond it) and change no result.

use crate::workdir::{ITEMS_PIPELINE, Workdir, assert_code, stderr, stdout, without_time};

fn items(n: usize, bump: usize) -> String {
    let mut text = String::from("sku,qty,name\n");
    for i in 0..n {
        let qty = if i % 10 == 0 { i + bump } else { i };
        text.push_str(&format!("S{i:06},{qty},item number {i}\n"));
    }
    text
}

#[test]
fn a_run_under_a_memory_limit_gives_the_same_result() {
    let free = Workdir::new();
    let limited = Workdir::new();
    for w in [&free, &limited] {
        w.write("p.yaml", ITEMS_PIPELINE);
        w.write("items.csv", items(50_000, 0));
    }
    limited.write("p.yaml", format!("memory_limit: 64MB\n{ITEMS_PIPELINE}"));
    assert_code(&free.run(&["run", "p.yaml"]), 0);
    assert_code(&limited.run(&["run", "p.yaml"]), 0);
    for w in [&free, &limited] {
        w.write("items.csv", items(50_000, 1));
    }
    let a = free.run(&["run", "p.yaml"]);
    let b = limited.run(&["run", "p.yaml", "--memory-limit", "80MB"]);
    assert_code(&a, 0);
    assert_code(&b, 0);
    assert_eq!(
        without_time(stdout(&b).trim()),
        "items: v2 committed — 50000 rows: 0 new, 5000 changed, 0 deleted, 45000 unchanged, 0 rejected"
    );
    assert_eq!(
        without_time(stdout(&a).trim()),
        without_time(stdout(&b).trim())
    );
    let sql = "SELECT sku, qty FROM items_changes WHERE _version = 2 ORDER BY sku";
    let q = |w: &Workdir| stdout(&w.run(&["query", "p.yaml", sql, "--format", "csv"]));
    assert_eq!(q(&free), q(&limited));
}

#[test]
fn a_memory_limit_that_is_no_size_is_refused() {
    let w = Workdir::new();
    w.write("p.yaml", format!("memory_limit: lots\n{ITEMS_PIPELINE}"));
    w.write("items.csv", "sku,qty\nA,1\n");
    let o = w.run(&["check", "p.yaml"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("memory_limit: `lots` is not a size; write e.g. 2GB or 512MB"),
        "{}",
        stderr(&o)
    );
    let o = w.run(&["run", "p.yaml", "--memory-limit", "2 parsecs"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("unknown unit"), "{}", stderr(&o));
}
