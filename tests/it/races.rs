//! Runs of the same table at once (issue 4): 8 processes, 20 rounds. Each version is committed
//! by exactly one run, the others exit 4 having committed nothing, versions stay contiguous, and
//! each version's change rows are exactly the diff of its input against the previous snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use crate::workdir::{ITEMS_PIPELINE, Workdir, stdout};

const PROCESSES: usize = 8;
const ROUNDS: usize = 20;

/// Round `r`'s input: key -> quantity; some keys leave and new ones arrive each round.
fn input(r: usize) -> BTreeMap<String, i64> {
    let mut rows = BTreeMap::new();
    for i in 0..2000usize {
        if i % ROUNDS == r % ROUNDS {
            continue;
        }
        let qty = if i % 7 == r % 7 {
            (i * 31 + r) % 97
        } else {
            i % 97
        };
        rows.insert(format!("S{i}"), qty as i64);
    }
    for j in 0..=r {
        rows.insert(format!("N{j}"), j as i64);
    }
    rows
}

fn csv(rows: &BTreeMap<String, i64>) -> String {
    let mut text = String::from("sku,qty\n");
    for (k, v) in rows {
        text.push_str(&format!("{k},{v}\n"));
    }
    text
}

fn query_rows(w: &Workdir, sql: &str) -> Vec<Vec<String>> {
    let o = w.run(&["query", "p.yaml", sql, "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::workdir::stderr(&o));
    stdout(&o)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// (key, change type, quantity carried) going from `old` to `new`.
fn expected_changes(
    old: &BTreeMap<String, i64>,
    new: &BTreeMap<String, i64>,
) -> BTreeSet<(String, String, i64)> {
    let mut changes = BTreeSet::new();
    for (k, v) in new {
        match old.get(k) {
            None => changes.insert((k.clone(), "NEW".into(), *v)),
            Some(o) if o != v => changes.insert((k.clone(), "CHANGED".into(), *v)),
            Some(_) => false,
        };
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            changes.insert((k.clone(), "DELETED".into(), *v));
        }
    }
    changes
}

#[test]
fn concurrent_runs_commit_each_version_once() {
    let w = Workdir::new();
    w.write("p.yaml", ITEMS_PIPELINE);
    race(&w, ROUNDS);
}

/// `tidemark run p.yaml` `n` times at once in `w`: all started before any is waited for.
fn run_at_once(w: &Workdir, n: usize) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            w.command()
                .args(["run", "p.yaml"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// `rounds` rounds of 8 runs at once of `p.yaml` (the items pipeline, whose store may be given
/// by the folder's environment), then the checks.
pub fn race(w: &Workdir, rounds: usize) {
    let mut commits = 0;
    for r in 0..rounds {
        w.write("items.csv", csv(&input(r)));
        let outputs = run_at_once(w, PROCESSES);
        let mut committed = 0;
        for o in &outputs {
            match o.status.code() {
                Some(0) => committed += 1,
                Some(4) => assert!(
                    stdout(o).contains("another run committed version"),
                    "round {r}: {}",
                    stdout(o)
                ),
                other => panic!("round {r}: exit {other:?}: {}", stdout(o)),
            }
        }
        // A run that starts after the round's winner committed sees it as its baseline and
        // commits the next version (with no changes): more than one commit per round is fine,
        // more than one per version is not (checked below).
        assert!(committed >= 1, "round {r}: nobody committed");
        commits += committed;
    }
    let versions: Vec<u64> =
        query_rows(w, "SELECT DISTINCT _version FROM items_history ORDER BY 1")
            .iter()
            .map(|r| r[0].parse().unwrap())
            .collect();
    assert_eq!(
        versions,
        (1..=commits as u64).collect::<Vec<_>>(),
        "one version per commit"
    );

    // Each version's snapshot is one round's input, and its change rows are the diff from the
    // previous version's snapshot.
    let inputs: Vec<BTreeMap<String, i64>> = (0..rounds).map(input).collect();
    let snapshot = |v: u64| -> BTreeMap<String, i64> {
        query_rows(
            w,
            &format!("SELECT sku, qty FROM items_history WHERE _version = {v}"),
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
    };
    let mut previous = BTreeMap::new();
    for &v in &versions {
        let current = snapshot(v);
        assert!(inputs.contains(&current), "v{v} is no round's input");
        let changes: BTreeSet<(String, String, i64)> = query_rows(
            w,
            &format!("SELECT sku, change_type, qty FROM items_changes WHERE _version = {v}"),
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].parse().unwrap()))
        .collect();
        assert_eq!(
            changes,
            expected_changes(&previous, &current),
            "changes of v{v}"
        );
        previous = current;
    }
}

/// Two tables in an `atomic: true` pipeline, 6 runs at once, 4 rounds: every run commits both
/// tables or neither (exit 0 or 4), and the two tables always show the same input.
///
/// Six runs at once can all lose: a run that finds another's version pending settles it as
/// aborted, and may itself lose the next version (seen about once in six test runs). A round
/// where nobody committed is run again, as its user would; the tables must then still agree.
#[test]
fn concurrent_atomic_runs_commit_all_tables_or_none() {
    let w = Workdir::new();
    w.write(
        "p.yaml",
        "atomic: true\ntables:\n  items:\n    source: {path: items.csv}\n    key: sku\n  \
         stock:\n    source: {path: items.csv}\n    key: sku\n",
    );
    for r in 0..4 {
        w.write("items.csv", csv(&input(r)));
        let mut committed = 0;
        for _attempt in 0..5 {
            for o in run_at_once(&w, 6) {
                let text = stdout(&o);
                match o.status.code() {
                    Some(0) => {
                        committed += 1;
                        assert_eq!(text.matches(" committed — ").count(), 2, "{text}");
                    }
                    Some(4) => assert_eq!(text.matches(" committed — ").count(), 0, "{text}"),
                    other => panic!("round {r}: exit {other:?}: {text}"),
                }
            }
            if committed > 0 {
                break;
            }
        }
        assert!(committed >= 1, "round {r}: nobody committed in 5 attempts");
        let same = query_rows(
            &w,
            "SELECT count(*) FROM (SELECT sku, qty FROM items EXCEPT SELECT sku, qty FROM stock)",
        );
        assert_eq!(same, [["0"]], "round {r}");
        assert_eq!(
            query_rows(&w, "SELECT count(*) FROM items"),
            [[input(r).len().to_string()]],
            "round {r}"
        );
    }
}
