//! SQLite destinations (issue 19, the embedded database): the same rounds as PostgreSQL's, in a
//! file. A table converges to the latest snapshot over random runs, value for value and with
//! the storage classes SQLite keeps; a kill -9 at any moment of a delivery neither loses nor
//! repeats a version.

use std::time::Instant;

use crate::postgres::{ITEMS, Item, cents, clock, next_day, write_items};
use crate::workdir::{Lcg, Workdir, assert_code};

fn pipeline() -> String {
    ITEMS.replace(
        r#"postgres: {url: "${TM_PG_URL}", table: public.items, create: true}"#,
        "sqlite: {path: shop.db, table: items, create: true}",
    )
}

/// The row as the SQLite file holds it: each value with its storage class.
fn stored(item: &Item) -> Vec<String> {
    let name = item.name.clone().filter(|n| !n.is_empty());
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    let dims = format!(
        "{{\"n\":{},\"w\":{}}}",
        name.as_ref()
            .map_or("null".into(), |n| serde_json::to_string(n).unwrap()),
        item.qty.map_or("null".into(), |q| q.to_string())
    );
    let time = |s: u32| clock(s).replace(' ', "T");
    vec![
        format!("integer {}", item.id),
        or_null(name.map(|n| format!("text {n}"))),
        or_null(item.qty.map(|q| format!("integer {q}"))),
        or_null(item.price.map(|p| format!("text {}", cents(p)))),
        or_null(item.ratio.map(|r| format!("real {}", r as f64 / 4.0))),
        or_null(item.active.map(|a| format!("integer {}", a as i64))),
        or_null(item.day.map(|d| format!("text 2024-02-{d:02}"))),
        or_null(item.second.map(|s| format!("text {}", time(s)))),
        or_null(item.second.map(|s| format!("text {}Z", time(s)))),
        format!("text {dims}"),
    ]
}

fn rows(w: &Workdir) -> Vec<Vec<String>> {
    let db = rusqlite::Connection::open(w.path("shop.db")).unwrap();
    let mut statement = db
        .prepare("SELECT id, name, qty, price, ratio, active, day, at, at_utc, dims FROM items ORDER BY id")
        .unwrap();
    statement
        .query_map([], |r| {
            Ok((0..10)
                .map(|i| match r.get::<_, rusqlite::types::Value>(i).unwrap() {
                    rusqlite::types::Value::Null => "null".to_string(),
                    rusqlite::types::Value::Integer(v) => format!("integer {v}"),
                    rusqlite::types::Value::Real(v) => format!("real {v}"),
                    rusqlite::types::Value::Text(v) => format!("text {v}"),
                    rusqlite::types::Value::Blob(v) => format!("blob {v:?}"),
                })
                .collect())
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn an_sqlite_table_converges_to_the_latest_snapshot_over_random_runs() {
    let w = Workdir::new();
    w.write("p.yaml", pipeline());
    let mut rng = Lcg(23);
    let mut next_id = 40;
    let mut items: Vec<Item> = (1..=40).map(|id| Item::random(id, &mut rng)).collect();
    for day in 0..30 {
        if day > 0 {
            items = next_day(items, &mut rng, &mut next_id);
        }
        write_items(&w, &items);
        assert_code(&w.run(&["run", "p.yaml", "--force"]), 0);
        let expected: Vec<Vec<String>> = items.iter().map(stored).collect();
        assert_eq!(rows(&w), expected, "day {day}");
    }
    let db = rusqlite::Connection::open(w.path("shop.db")).unwrap();
    let version: i64 = db
        .query_row("SELECT version FROM tidemark_deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 30);
}

#[test]
fn a_kill_at_any_moment_of_an_sqlite_delivery_neither_loses_nor_repeats_a_version() {
    let w = Workdir::new();
    w.write("p.yaml", pipeline());
    let mut rng = Lcg(29);
    let mut next_id = 6_000;
    let mut items: Vec<Item> = (1..=6_000).map(|id| Item::random(id, &mut rng)).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml", "--no-deliver"]), 0);
    let started = Instant::now();
    assert_code(&w.run(&["deliver", "p.yaml"]), 0);
    let whole = started.elapsed();
    let mut interrupted = 0;
    for kill in 0..20 {
        items = next_day(items, &mut rng, &mut next_id);
        write_items(&w, &items);
        assert_code(&w.run(&["run", "p.yaml", "--no-deliver", "--force"]), 0);
        let mut child = w.spawn_quiet(&["deliver", "p.yaml"]);
        std::thread::sleep(whole.mul_f64(rng.below(1000) as f64 / 1000.0));
        let _ = child.kill();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        assert_code(&w.run(&["run", "p.yaml"]), 0);
        let expected: Vec<Vec<String>> = items.iter().map(stored).collect();
        assert!(
            rows(&w) == expected,
            "kill {kill}: the table is not the latest snapshot"
        );
    }
    assert!(interrupted > 0, "no delivery was interrupted");
}
