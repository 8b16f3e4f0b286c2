//! Classifying by matched row positions gives exactly what joining the full rows gives: the
//! same summary, the same delta files (CSV text, Parquet types and values) and the same stored
//! change rows, over a composite key of several types, shuffled rows, nulls and text that
//! needs quoting.

use crate::workdir::{Lcg, Workdir, assert_code, read_parquet, stderr, stdout, without_time};

pub const PIPELINE: &str = "tables:
  lines:
    source:
      path: lines.csv
      columns:
        id: int64
        day: date
        price: decimal(10,2)
        active: boolean
    key: [region, id, day]
    output:
      - path: out/lines-{version}.csv
      - path: out/lines-{version}.parquet
";

fn row(region: usize, id: u64, day: u64, version: u64) -> String {
    let note = match (id + version) % 7 {
        0 => String::new(),
        1 => "\"comma, and \"\"quote\"\"\"".to_string(),
        2 => "Zoë".to_string(),
        _ => format!("note {}", id % 13),
    };
    format!(
        "{},{id},2026-01-{:02},{}.{:02},{},{note}\n",
        ["north", "south", "éast", "west, far"][region].replace("west, far", "\"west, far\""),
        day,
        (id * 7 + version) % 1000,
        (id + version) % 100,
        if (id + version).is_multiple_of(3) {
            "true"
        } else {
            "false"
        },
    )
}

/// Day 1, and day 2 with about 5% changed, 2% deleted, 2% new, in another order.
pub fn days() -> (String, String) {
    let header = "region,id,day,price,active,note\n";
    let mut random = Lcg(7);
    let mut day1 = Vec::new();
    let mut day2 = Vec::new();
    for n in 0..4000u64 {
        let (region, id, day) = ((n % 4) as usize, n / 4, 1 + n % 28);
        day1.push(row(region, id, day, 0));
        match random.next() % 100 {
            0..=4 => day2.push(row(region, id, day, 1 + random.next() % 5)),
            5 | 6 => {}
            7 | 8 => {
                day2.push(row(region, id, day, 0));
                day2.push(row(region, id + 100_000, day, 0));
            }
            _ => day2.push(row(region, id, day, 0)),
        }
    }
    for i in (1..day2.len()).rev() {
        let j = (random.next() % (i as u64 + 1)) as usize;
        day2.swap(i, j);
    }
    (
        format!("{header}{}", day1.concat()),
        format!("{header}{}", day2.concat()),
    )
}

#[test]
fn matching_positions_equals_joining_full_rows() {
    let (day1, day2) = days();
    let by_position = Workdir::new();
    let by_join = Workdir::new().with_run_args(&["--strategy", "join"]);
    // Matched, then joined after all (as when two keys shared a digest).
    let by_both = Workdir::new().with_run_args(&["--fall-back-to-join"]);
    let mut summaries = Vec::new();
    let mut logs = Vec::new();
    for w in [&by_position, &by_join, &by_both] {
        w.write("lines.yaml", PIPELINE);
        w.write("lines.csv", &day1);
        assert_code(&w.run(&["run", "lines.yaml"]), 0);
        w.write("lines.csv", &day2);
        let o = w.run(&["-vv", "run", "lines.yaml"]);
        assert_code(&o, 0);
        summaries.push(without_time(stdout(&o).trim()));
        logs.push(stderr(&o));
    }
    assert!(logs[0].contains("matched keys by position"), "{}", logs[0]);
    assert!(
        logs[0].contains("built the delta of the rows matched by position"),
        "{}",
        logs[0]
    );
    assert!(!logs[2].contains("built the delta"), "{}", logs[2]);
    assert!(!logs[0].contains("joining the full rows"), "{}", logs[0]);
    assert!(!logs[1].contains("matched keys by position"), "{}", logs[1]);
    assert!(
        logs[2].contains("pair otherwise; joining the full rows"),
        "{}",
        logs[2]
    );
    assert_eq!(summaries[0], summaries[1]);
    assert_eq!(summaries[0], summaries[2]);
    assert!(summaries[0].contains(" changed, "), "{}", summaries[0]);
    let csv = by_position.read("out/lines-2.csv");
    assert_eq!(csv, by_join.read("out/lines-2.csv"));
    assert_eq!(csv, by_both.read("out/lines-2.csv"));
    assert!(csv.lines().count() > 300, "{csv}");
    assert_eq!(
        read_parquet(&by_position.path("out/lines-2.parquet")),
        read_parquet(&by_join.path("out/lines-2.parquet"))
    );
    let changes = |w: &Workdir| {
        let o = w.run(&[
            "query",
            "lines.yaml",
            "--format",
            "csv",
            "SELECT * FROM lines_changes ORDER BY _version, region, id, day",
        ]);
        assert_code(&o, 0);
        stdout(&o)
    };
    let stored = changes(&by_position);
    assert_eq!(stored, changes(&by_join));
    assert_eq!(stored, changes(&by_both));
    assert!(stored.lines().count() > 300, "{stored}");
}
