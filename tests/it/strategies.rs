//! Every comparison strategy gives the same answer, on random tables: each case is a pipeline
//! and two days of a CSV file drawn from a seed (keys of several types and composite keys;
//! integer, decimal, float, boolean, date, timestamp and text columns with nulls, empty
//! strings, quotes and commas; repeated keys under each `duplicates` policy; rejected rows;
//! tolerances; renamed keys (`renames`); partitions; incremental windows; columns added,
//! removed or emptied; `compare` and `ignore`), run once per strategy
//! (`RunOptions::strategy`), each in its own folder. The outcomes (status, counts, notes,
//! error), the delta files (CSV text, Parquet values), the stored snapshot and change rows must
//! be identical, and the faster strategies must have decided a good share of the cases
//! themselves.

use std::collections::BTreeMap;
use std::path::Path;

use tidemark::diff::strategy::Strategy;
use tidemark::pipeline::{RunOptions, TableRun, run_pipeline};

use crate::workdir::{Lcg, read_parquet};

/// How many random cases the test runs (each: day 1 and day 2, once per strategy).
const CASES: u64 = 500;

/// The kinds of value column a case may hold.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Decimal,
    Float,
    Bool,
    Date,
    Timestamp,
    Text,
}

const KINDS: [Kind; 7] = [
    Kind::Int,
    Kind::Decimal,
    Kind::Float,
    Kind::Bool,
    Kind::Date,
    Kind::Timestamp,
    Kind::Text,
];

/// A value of `kind` as a CSV field (already quoted where it must be); "" is null.
fn value(kind: Kind, r: &mut Lcg) -> String {
    if r.chance(8) {
        return String::new();
    }
    match kind {
        Kind::Int => (r.below(200) as i64 - 50).to_string(),
        Kind::Decimal => format!("{}.{:02}", r.below(100), r.below(100)),
        Kind::Float => r
            .pick(&["1.5", "2.25", "-3.0", "0.1", "100", "7.125"])
            .to_string(),
        Kind::Bool => r.pick(&["true", "false"]).to_string(),
        Kind::Date => format!("2024-0{}-{:02}", 1 + r.below(9), 1 + r.below(28)),
        Kind::Timestamp => format!(
            "2024-01-{:02}T{:02}:{:02}:00",
            1 + r.below(28),
            r.below(24),
            r.below(60)
        ),
        Kind::Text => r
            .pick(&[
                "plain",
                "\"comma, inside\"",
                "\"quote \"\"q\"\"\"",
                "Zoë",
                " padded ",
                "null",
                "0012",
                "12",
                "x",
            ])
            .to_string(),
    }
}

/// A case: the pipeline file and the two days of its CSV source.
struct Case {
    pipeline: String,
    day1: String,
    day2: String,
}

/// The key of row `n`: an integer, a code with leading zeros, or a region and an integer.
fn key_fields(style: u64, n: u64) -> Vec<String> {
    match style {
        0 => vec![n.to_string()],
        1 => vec![format!("{:05}", n * 7)],
        _ => vec![
            ["north", "south", "east"][(n % 3) as usize].to_string(),
            (n / 3).to_string(),
        ],
    }
}

fn case(seed: u64) -> Case {
    let r = &mut Lcg(seed.wrapping_mul(2654435761).wrapping_add(17));
    let key_style = r.below(3);
    let key_names: Vec<&str> = match key_style {
        0 => vec!["id"],
        1 => vec!["code"],
        _ => vec!["region", "id"],
    };
    let mut kinds: Vec<Kind> = (0..1 + r.below(5)).map(|_| *r.pick(&KINDS)).collect();
    if !kinds.contains(&Kind::Timestamp) && r.chance(30) {
        kinds.push(Kind::Timestamp);
    }
    let names: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, _)| format!("c{i}"))
        .collect();
    let incremental = kinds.contains(&Kind::Timestamp) && r.chance(15);
    let partitioned = key_style == 2 && !incremental && r.chance(40);
    let mut yaml = String::from("tables:\n  t:\n    source:\n      path: t.csv\n");
    let mut declared = Vec::new();
    if key_style == 1 {
        declared.push("code: string".to_string());
    }
    for (name, kind) in names.iter().zip(&kinds) {
        match kind {
            Kind::Decimal => declared.push(format!("{name}: \"decimal(10,2)\"")),
            Kind::Timestamp if incremental || r.chance(50) => {
                declared.push(format!("{name}: timestamp"))
            }
            Kind::Text if r.chance(30) => declared.push(format!("{name}: string")),
            _ => {}
        }
    }
    if !declared.is_empty() {
        yaml.push_str(&format!("      columns: {{{}}}\n", declared.join(", ")));
    }
    yaml.push_str(&format!("    key: [{}]\n", key_names.join(", ")));
    let duplicates = *r.pick(&["error", "keep_first", "keep_last"]);
    yaml.push_str(&format!("    duplicates: {duplicates}\n"));
    let renames = !incremental && r.chance(35);
    if renames {
        yaml.push_str("    renames: true\n");
    }
    let text_column = kinds.iter().position(|k| *k == Kind::Text);
    let float_column = kinds.iter().position(|k| *k == Kind::Float);
    match r.below(4) {
        0 if names.len() > 1 => yaml.push_str(&format!("    ignore: [{}]\n", names[0])),
        1 => yaml.push_str(&format!("    compare: [{}]\n", names[names.len() - 1])),
        _ => {}
    }
    if let Some(f) = float_column.filter(|_| r.chance(25)) {
        yaml.push_str(&format!("    tolerance: {{{}: 0.5}}\n", names[f]));
    }
    if let Some(t) = text_column.filter(|_| r.chance(20)) {
        yaml.push_str(&format!(
            "    normalize: {{{}: {{trim: true}}}}\n",
            names[t]
        ));
    }
    if r.chance(25) {
        yaml.push_str(&format!("    validate: {{not_null: [{}]}}\n", names[0]));
    }
    if incremental {
        let ts = kinds.iter().position(|k| *k == Kind::Timestamp).unwrap();
        yaml.push_str(&format!(
            "    mode: incremental\n    watermark: {}\n",
            names[ts]
        ));
    } else if partitioned {
        yaml.push_str("    partition_by: [region]\n");
    }
    let include = if r.chance(15) {
        "        include: [new, changed, deleted, unchanged]\n"
    } else {
        ""
    };
    yaml.push_str(&format!(
        "    output:\n      - path: out/t-{{version}}.csv\n{include}      - path: out/t-{{version}}.parquet\n"
    ));

    // Day 1, then day 2: some rows changed, deleted or added, repeated keys, a bad value, a
    // column added, dropped or emptied, the rows shuffled.
    let rows = 5 + r.below(60);
    let header = |extra: bool, dropped: Option<usize>| {
        let mut h: Vec<String> = key_names.iter().map(|k| k.to_string()).collect();
        h.extend(
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != dropped)
                .map(|(_, n)| n.clone()),
        );
        if extra {
            h.push("added".into());
        }
        h.join(",") + "\n"
    };
    let values: Vec<Vec<String>> = (0..rows)
        .map(|_| kinds.iter().map(|k| value(*k, r)).collect())
        .collect();
    let line = |n: u64, vals: &[String], extra: Option<&str>, dropped: Option<usize>| {
        let mut f = key_fields(key_style, n);
        f.extend(
            vals.iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != dropped)
                .map(|(_, v)| v.clone()),
        );
        if let Some(e) = extra {
            f.push(e.to_string());
        }
        f.join(",") + "\n"
    };
    let mut day1 = header(false, None);
    let repeat_in_day1 = duplicates != "error" && r.chance(20);
    for n in 0..rows {
        day1.push_str(&line(n, &values[n as usize], None, None));
        if repeat_in_day1 && n % 9 == 4 {
            day1.push_str(&line(
                n,
                &values[(n as usize + 1) % values.len()],
                None,
                None,
            ));
        }
    }
    let added_column = r.chance(10);
    let dropped = (names.len() > 1 && r.chance(10)).then_some(names.len() - 1);
    let emptied = r.chance(8).then(|| r.below(names.len() as u64) as usize);
    let dropped_region = partitioned && r.chance(50);
    let repeat_in_day2 = r.chance(40);
    let mut lines2 = Vec::new();
    for n in 0..rows {
        if dropped_region && n % 3 == 2 {
            continue;
        }
        let mut vals = values[n as usize].clone();
        let mut key = n;
        match r.below(100) {
            0..=9 => continue,
            10..=24 => {
                let j = r.below(kinds.len() as u64) as usize;
                vals[j] = value(kinds[j], r);
            }
            25 if r.chance(50) => {
                let j = r.below(kinds.len() as u64) as usize;
                vals[j] = "not-a-value".into();
            }
            // A row whose key changed (a renamed row, with `renames`).
            26..=37 if renames => key = n + 1000,
            _ if incremental && r.chance(50) => continue,
            _ => {}
        }
        if let Some(e) = emptied {
            vals[e] = String::new();
        }
        let extra = added_column.then(|| *r.pick(&["a", "b", ""]));
        lines2.push(line(key, &vals, extra, dropped));
        if duplicates != "error" && repeat_in_day2 && r.chance(6) {
            let mut again = vals.clone();
            let j = r.below(kinds.len() as u64) as usize;
            again[j] = value(kinds[j], r);
            lines2.push(line(n, &again, extra, dropped));
        }
    }
    for n in rows..rows + r.below(8) {
        let mut vals: Vec<String> = kinds.iter().map(|k| value(*k, r)).collect();
        if let Some(e) = emptied {
            vals[e] = String::new();
        }
        let extra = added_column.then_some("new");
        lines2.push(line(n, &vals, extra, dropped));
    }
    for i in (1..lines2.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        lines2.swap(i, j);
    }
    let day2 = header(added_column, dropped) + &lines2.concat();
    Case {
        pipeline: yaml,
        day1,
        day2,
    }
}

/// What a run is judged by.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: String,
    counts: String,
    notes: Vec<String>,
    error: Option<String>,
    files: BTreeMap<String, String>,
    store: Vec<String>,
}

fn outcome_of(run: &TableRun, dir: &Path) -> Outcome {
    let error = run
        .error
        .as_ref()
        .map(|e| e.to_string().replace(&dir.display().to_string(), "<dir>"));
    Outcome {
        status: format!("{:?}", run.status),
        counts: format!("{:?} rejected {}", run.counts, run.rejected),
        notes: run.notes.clone(),
        error,
        files: output_files(dir),
        store: Vec::new(),
    }
}

/// The delta files, CSV as text and Parquet as its values.
fn output_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let shown = if name.ends_with(".parquet") {
            let batch = read_parquet(&path);
            format!(
                "{:?}\n{}",
                batch.schema(),
                datafusion::arrow::util::pretty::pretty_format_batches(&[batch]).unwrap()
            )
        } else {
            std::fs::read_to_string(&path).unwrap()
        };
        files.insert(name, shown);
    }
    files
}

/// The stored snapshots and change rows of every version, in key order.
async fn stored(dir: &Path, key: &str) -> Vec<String> {
    let plan = tidemark::spec::load(&dir.join("t.yaml"), None).unwrap();
    let store = tidemark::store::Store::open(&plan.store, false).unwrap();
    let ctx = tidemark::query::session(&store).await.unwrap();
    let mut shown = Vec::new();
    for sql in [
        format!("SELECT * FROM t_history ORDER BY _version, {key}"),
        format!("SELECT * FROM t_changes ORDER BY _version, {key}"),
    ] {
        let batches = match ctx.sql(&sql).await {
            Ok(frame) => frame.collect().await.unwrap(),
            Err(e) => {
                shown.push(format!("{sql}: {e}"));
                continue;
            }
        };
        shown.push(
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string(),
        );
    }
    shown
}

async fn run_day(dir: &Path, strategy: Strategy) -> TableRun {
    let plan = tidemark::spec::load(&dir.join("t.yaml"), None).unwrap();
    let options = RunOptions {
        strategy: Some(strategy),
        piece_bytes: Some(256),
        ..RunOptions::default()
    };
    let mut run = run_pipeline(&plan, &options, |_| {}).await.unwrap();
    run.tables.remove(0)
}

/// Run one case once per strategy; returns which strategy decided each day 2, and how many
/// rows it found renamed.
async fn check(seed: u64) -> (Vec<Option<Strategy>>, u64) {
    let case = case(seed);
    let key = if case.pipeline.contains("key: [region, id]") {
        "region, id"
    } else if case.pipeline.contains("key: [code]") {
        "code"
    } else {
        "id"
    };
    let mut outcomes = Vec::new();
    let mut decided = Vec::new();
    let mut dirs = Vec::new();
    let mut renamed = 0;
    for strategy in Strategy::ALL {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.yaml"), &case.pipeline).unwrap();
        std::fs::write(dir.path().join("t.csv"), &case.day1).unwrap();
        let first = run_day(dir.path(), strategy).await;
        std::fs::write(dir.path().join("t.csv"), &case.day2).unwrap();
        let second = run_day(dir.path(), strategy).await;
        decided.push(second.strategy);
        renamed = second.counts.renamed;
        let mut outcome = (
            outcome_of(&first, dir.path()),
            outcome_of(&second, dir.path()),
        );
        outcome.1.store = stored(dir.path(), key).await;
        outcomes.push(outcome);
        dirs.push(dir);
    }
    for (strategy, outcome) in Strategy::ALL.iter().zip(&outcomes).skip(1) {
        assert_eq!(
            outcome,
            &outcomes[0],
            "seed {seed}: {strategy} differs from {}\n--- pipeline\n{}--- day 1\n{}--- day 2\n{}",
            Strategy::ALL[0],
            case.pipeline,
            case.day1,
            case.day2
        );
    }
    (decided, renamed)
}

#[test]
fn every_strategy_gives_the_same_answer_on_random_tables() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut took: BTreeMap<String, u64> = BTreeMap::new();
    let mut renamed = 0;
    runtime.block_on(async {
        for seed in 0..CASES {
            let (decided_by, renamed_rows) = check(seed).await;
            renamed += renamed_rows;
            for (asked, decided) in Strategy::ALL.iter().zip(decided_by) {
                let decided = decided.map_or("none".to_string(), |d| d.to_string());
                *took.entry(format!("{asked}->{decided}")).or_default() += 1;
            }
        }
    });
    eprintln!("strategies that decided day 2, by strategy asked: {took:?}");
    // The faster strategies decided a good share of the cases themselves.
    let count = |k: &str| took.get(k).copied().unwrap_or(0);
    assert!(count("streamed->streamed") * 100 >= 15 * CASES, "{took:?}");
    assert!(count("matching->matching") * 100 >= 30 * CASES, "{took:?}");
    assert_eq!(count("join->join") + count("join->none"), CASES, "{took:?}");
    // Renames were part of the cases.
    assert!(
        renamed >= CASES / 4,
        "{renamed} renamed rows in {CASES} cases"
    );
}

#[test]
fn the_report_names_the_strategy_that_classified_the_rows() {
    let w = crate::workdir::Workdir::new();
    w.write("items.yaml", crate::workdir::ITEMS_PIPELINE);
    let strategy_of = |day: &str| {
        w.write("items.csv", day);
        let o = w.run(&["run", "items.yaml", "--report", "report.json"]);
        crate::workdir::assert_code(&o, 0);
        let report: serde_json::Value = serde_json::from_str(&w.read("report.json")).unwrap();
        report["tables"][0]["strategy"].clone()
    };
    // A first run has nothing to match: every row is NEW without a join.
    assert_eq!(strategy_of("sku,qty\nA,1\nB,2\n"), "matching");
    assert_eq!(strategy_of("sku,qty\nA,1\nB,3\n"), "streamed");
    // A rejected cell: the streamed run hands the run to the matching one.
    assert_eq!(strategy_of("sku,qty\nA,x\nB,3\n"), "matching");
}
