//! Issue 19, the HTTP destination against a board API in the test binary (`http_server.rs`)
//! that fails on purpose: 429 with `Retry-After`, 500, answers later than the client waits and
//! connections dropped after the change was applied. Every change arrives, each is applied
//! once by its `Idempotency-Key`, the rows the server refuses for good are exactly the dead
//! letters and `deliver --retry-failed` sends them once it accepts; a kill -9 at any moment of
//! a delivery neither loses nor repeats a change; the bearer token is in nothing tidemark wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::http_server::{BoardServer, Fault};
use crate::workdir::{Lcg, Workdir, assert_code, stderr, stdout};

const TOKEN: &str = "tm-board-token-6f1d93";

/// A pipeline feeding `items.csv` (sku, name, qty) to the board at `url`.
fn pipeline(url: &str) -> String {
    format!(
        r#"tables:
  items:
    source: {{path: items.csv}}
    key: sku
    deliver:
      - name: board
        http:
          url:
            new: "{url}/items"
            changed: "{url}/items/{{{{ remote.id }}}}"
            deleted: "{url}/items/{{{{ remote.id }}}}"
          method: {{new: POST, changed: PATCH, deleted: DELETE}}
          headers: {{Authorization: "Bearer ${{TM_BOARD_TOKEN}}"}}
          body: '{{"sku": {{{{ row.sku | tojson }}}}, "name": {{{{ row.name | tojson }}}}, "qty": {{{{ row.qty | tojson }}}}, "v": {{{{ version }}}}}}'
          remember: {{id: /data/id}}
          retries: 5
          backoff: 50ms
          timeout: 1s
          concurrency: 4
"#
    )
}

fn workdir(server: &BoardServer) -> Workdir {
    let w = Workdir::new().with_env(&[("TM_BOARD_TOKEN".into(), TOKEN.into())]);
    w.write("p.yaml", pipeline(&server.url()));
    w
}

/// One item of the feed.
#[derive(Clone, Debug, PartialEq)]
struct Item {
    sku: String,
    name: String,
    qty: Option<i64>,
}

fn write_items(w: &Workdir, items: &[Item]) {
    let mut csv = String::from("sku,name,qty\n");
    for item in items {
        let qty = item.qty.map(|q| q.to_string()).unwrap_or_default();
        csv.push_str(&format!("{},{},{qty}\n", item.sku, item.name));
    }
    w.write("items.csv", csv);
}

/// The items as the board should hold them, by SKU (without the version they came with).
fn expected(items: &[Item]) -> BTreeMap<String, Json> {
    (items.iter())
        .map(|i| {
            let item = json!({"sku": i.sku, "name": i.name, "qty": i.qty});
            (i.sku.clone(), item)
        })
        .collect()
}

/// The board's items by SKU, without the version they came with.
fn on_board(server: &BoardServer) -> BTreeMap<String, Json> {
    let mut items = server.items_by_sku();
    for item in items.values_mut() {
        item.as_object_mut().unwrap().remove("v");
    }
    items
}

fn item(n: usize, qty: Option<i64>) -> Item {
    Item {
        sku: format!("s{n:03}"),
        name: format!("Item {n}"),
        qty,
    }
}

/// Every file under `root`, recursively.
fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => folders.push(path),
                false => out.push(path),
            }
        }
    }
    out
}

/// The lines of the destination's dead-letter file (none: no file).
fn dead_letters(w: &Workdir) -> Vec<Json> {
    let file = files_under(w.root())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "dead_letters.jsonl"));
    let Some(file) = file else {
        return Vec::new();
    };
    (std::fs::read_to_string(file).unwrap().lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn assert_no_token(w: &Workdir, outputs: &[&Output]) {
    for path in files_under(w.root()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|b| b == TOKEN.as_bytes()),
            "the token is in {}",
            path.display()
        );
    }
    for output in outputs {
        assert!(!stdout(output).contains(TOKEN) && !stderr(output).contains(TOKEN));
    }
}

#[test]
fn every_change_arrives_once_despite_faults_and_refused_rows_wait_in_dead_letters() {
    let server = BoardServer::start(TOKEN);
    {
        let mut board = server.board();
        board.refused_skus.insert("s007".into());
        let faults = [
            (2, Fault::TooMany),
            (5, Fault::Failing),
            (9, Fault::LateAnswer),
            (14, Fault::Dropped),
            (20, Fault::Failing),
        ];
        board.faults.extend(faults);
    }
    let w = workdir(&server);
    let mut items: Vec<Item> = (1..=40)
        .map(|n| item(n, (n % 9 != 0).then_some(n as i64)))
        .collect();
    write_items(&w, &items);

    let day1 = w.run(&["run", "p.yaml"]);
    assert_code(&day1, 5);
    assert!(
        stdout(&day1).contains("items: not delivered: board: 1 row was refused by the server and waits in the dead-letter file"),
        "{}{}",
        stdout(&day1),
        stderr(&day1)
    );
    let letters = dead_letters(&w);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["change"], "NEW");
    assert_eq!(letters[0]["row"]["sku"], "s007");
    assert_eq!(letters[0]["status"], 422);
    assert_eq!(
        letters[0]["response"],
        r#"{"error":"this item is not accepted"}"#
    );
    let mut without_refused = items.clone();
    without_refused.retain(|i| i.sku != "s007");
    assert_eq!(on_board(&server), expected(&without_refused));
    let status = w.run(&["status", "p.yaml"]);
    assert_code(&status, 0);
    assert!(
        stdout(&status).contains("board: has v1, up to date, 1 failed row\n"),
        "{}",
        stdout(&status)
    );

    // Day 2: two changed, one deleted, one new, and a change of the refused row, which stays
    // in its dead letter (the board never had it) rather than being sent as a change.
    items[2].qty = Some(300);
    items[9].name = "Item ten".into();
    items[6].qty = Some(77);
    items.remove(4);
    items.push(item(41, Some(41)));
    write_items(&w, &items);
    let day2 = w.run(&["run", "p.yaml"]);
    assert_code(&day2, 0);
    let letters = dead_letters(&w);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (&letters[0]["change"], &letters[0]["row"]["qty"]),
        (&json!("NEW"), &json!(77))
    );

    server.board().refused_skus.clear();
    let retried = w.run(&["deliver", "p.yaml", "--retry-failed"]);
    assert_code(&retried, 0);
    assert_eq!(on_board(&server), expected(&items));
    assert!(dead_letters(&w).is_empty());
    let status = w.run(&["status", "p.yaml"]);
    assert!(stdout(&status).contains("board: has v2, up to date, 0 failed rows"));

    let board = server.board();
    let methods: Vec<&str> = board.applied.iter().map(|a| a.method.as_str()).collect();
    let count = |m: &str| methods.iter().filter(|x| **x == m).count();
    assert_eq!(
        (count("POST"), count("PATCH"), count("DELETE")),
        (39 + 1 + 1, 2, 1)
    );
    let keys: BTreeSet<&str> = board
        .applied
        .iter()
        .map(|a| a.idempotency_key.as_str())
        .collect();
    assert_eq!(
        keys.len(),
        board.applied.len(),
        "a change was applied twice"
    );
    let answered_again = (board.received.iter())
        .filter(|r| {
            board
                .applied
                .iter()
                .any(|a| a.idempotency_key == r.idempotency_key)
        })
        .count()
        - board.applied.len();
    assert!(answered_again >= 2, "the lost answers were not sent again");
    assert!(
        board.faults.is_empty(),
        "faults not met: {:?}",
        board.faults
    );
    drop(board);
    assert_no_token(&w, &[&day1, &day2, &retried, &status]);
}

/// The changes from `before` to `after`, as the board applies them: (method, sku, version).
fn changes(before: &[Item], after: &[Item], version: u64) -> Vec<(String, String, u64)> {
    let old: BTreeMap<&str, &Item> = before.iter().map(|i| (i.sku.as_str(), i)).collect();
    let new: BTreeMap<&str, &Item> = after.iter().map(|i| (i.sku.as_str(), i)).collect();
    let mut out = Vec::new();
    for (sku, item) in &new {
        match old.get(sku) {
            None => out.push(("POST".into(), sku.to_string(), version)),
            Some(was) if was != item => out.push(("PATCH".into(), sku.to_string(), version)),
            Some(_) => {}
        }
    }
    for sku in old.keys().filter(|s| !new.contains_key(*s)) {
        out.push(("DELETE".into(), sku.to_string(), version));
    }
    out
}

fn next_day(items: &[Item], rng: &mut Lcg, next: &mut usize) -> Vec<Item> {
    let mut out = Vec::new();
    for item in items {
        match rng.below(100) {
            0..=9 => {}
            10..=39 => out.push(Item {
                qty: (!rng.chance(10)).then(|| rng.below(1000) as i64),
                ..item.clone()
            }),
            _ => out.push(item.clone()),
        }
    }
    for _ in 0..rng.below(30) {
        *next += 1;
        out.push(item(*next, Some(1)));
    }
    out
}

#[test]
fn a_kill_at_any_moment_of_an_http_delivery_neither_loses_nor_repeats_a_change() {
    let server = BoardServer::start(TOKEN);
    server.board().delay = Duration::from_millis(4);
    let w = workdir(&server);
    let mut rng = Lcg(19);
    let mut next = 200;
    let mut items: Vec<Item> = (1..=200).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let mut expected_changes = changes(&[], &items, 1);
    let mut whole = Duration::ZERO;
    let (mut interrupted, mut halfway) = (0, 0);
    for kill in 0..12 {
        let day = next_day(&items, &mut rng, &mut next);
        write_items(&w, &day);
        let committed = w.run(&["run", "p.yaml", "--no-deliver"]);
        assert_code(&committed, 0);
        let version = committed_version(&committed);
        expected_changes.extend(changes(&items, &day, version));
        let before = expected(&items);
        items = day;
        let mut child = w.spawn_quiet(&["deliver", "p.yaml"]);
        let started = Instant::now();
        if kill == 0 {
            assert!(child.wait().unwrap().success());
            whole = started.elapsed();
            continue;
        }
        std::thread::sleep(whole.mul_f64(rng.below(1000) as f64 / 1000.0));
        let _ = child.kill();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        let left = on_board(&server);
        if left != before && left != expected(&items) {
            halfway += 1;
        }
        assert_code(&w.run(&["run", "p.yaml"]), 0);
        assert_eq!(on_board(&server), expected(&items), "kill {kill}");
    }
    assert!(interrupted > 0, "no delivery was interrupted");
    assert!(
        halfway > 0,
        "no kill came in the middle of a version's requests"
    );
    let board = server.board();
    let mut applied: Vec<(String, String, u64)> = (board.applied.iter())
        .map(|a| {
            let body: Json = serde_json::from_str(&a.body).unwrap();
            let sku = body["sku"].as_str().unwrap_or("").to_string();
            let v = body["v"].as_u64().unwrap_or(0);
            (a.method.clone(), sku, v)
        })
        .collect();
    // A delete's body is null: its SKU and version come from the request that made it.
    for (change, a) in applied.iter_mut().zip(board.applied.iter()) {
        if change.0 == "DELETE" {
            let (sku, v) = deleted_sku_and_version(&a.idempotency_key);
            (change.1, change.2) = (sku, v);
        }
    }
    applied.sort();
    expected_changes.sort();
    assert_eq!(applied, expected_changes);
}

/// The version a run's summary line says it committed (`items: v3 committed — …`).
fn committed_version(run: &Output) -> u64 {
    let out = stdout(run);
    let at = out.find(": v").expect("a committed version") + 3;
    let digits: String = out[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// The SKU and version in an `Idempotency-Key` (`<run id>-<key>-<version>`).
fn deleted_sku_and_version(key: &str) -> (String, u64) {
    let (rest, version) = key.rsplit_once('-').unwrap();
    let (_, sku) = rest.rsplit_once('-').unwrap();
    (sku.to_string(), version.parse().unwrap())
}

#[test]
fn bad_http_settings_are_named_before_anything_runs() {
    let cases = [
        (
            "method: {new: GET}",
            "method new: \"GET\" is not one of POST, PUT, PATCH, DELETE.",
        ),
        (
            "rate_limit: fast",
            "rate_limit \"fast\": write requests per unit, such as 10/s, 600/min or 1000/h.",
        ),
        (
            "on_failure: ignore",
            "on_failure \"ignore\": write dead_letter",
        ),
        (
            "remember: {id: data.id}",
            "remember id: \"data.id\" is not a JSON pointer into the response; write it as /data/id",
        ),
        (
            "concurrency: 0",
            "concurrency 0: give the most requests in flight at once, 1 or more.",
        ),
        (
            "timeout: soon",
            "timeout \"soon\": write a number and a unit, such as 500ms, 30s or 2m.",
        ),
        (
            "body: '{{ row.sku '",
            "body new: the template does not read",
        ),
    ];
    for (setting, message) in cases {
        let w = Workdir::new();
        w.write("items.csv", "sku,name,qty\nA,a,1\n");
        w.write(
            "p.yaml",
            format!(
                "tables:\n  items:\n    source: {{path: items.csv}}\n    key: sku\n    deliver:\n      - http:\n          url: http://127.0.0.1:9/items\n          {setting}\n"
            ),
        );
        let out = w.run(&["check", "p.yaml"]);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains(message),
            "{setting}: {}",
            stderr(&out)
        );
        assert!(!w.path(".tidemark").exists(), "{setting}: something ran");
    }
}

#[test]
fn an_unset_variable_of_an_http_destination_stops_the_run_before_anything_runs() {
    let w = Workdir::new();
    w.write("items.csv", "sku,name,qty\nA,a,1\n");
    w.write(
        "p.yaml",
        "tables:\n  items:\n    source: {path: items.csv}\n    key: sku\n    deliver:\n      - name: board\n        http:\n          url: http://127.0.0.1:9/items\n          headers: {Authorization: \"Bearer ${TM_UNSET_BOARD_TOKEN}\"}\n",
    );
    for command in ["check", "run"] {
        let out = w.run(&[command, "p.yaml"]);
        assert_code(&out, 2);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains("destination board reads the environment variable TM_UNSET_BOARD_TOKEN, which is not set"),
            "{command}: {said}"
        );
    }
    assert!(!w.path(".tidemark").exists(), "something was committed");
}

#[test]
fn a_renamed_key_patches_the_item_its_old_key_created() {
    let server = BoardServer::start(TOKEN);
    let w = workdir(&server);
    w.write(
        "p.yaml",
        pipeline(&server.url()).replace("    key: sku\n", "    key: sku\n    renames: true\n"),
    );
    let mut items: Vec<Item> = (1..=5).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let id_of_s003 = (server.board().items.iter())
        .find(|(_, item)| item["sku"] == "s003")
        .map(|(id, _)| id.clone())
        .unwrap();
    items[2].sku = "s103".into();
    write_items(&w, &items);
    let renamed = w.run(&["run", "p.yaml"]);
    assert_code(&renamed, 0);
    assert!(
        stdout(&renamed).contains("1 renamed"),
        "{}",
        stdout(&renamed)
    );
    assert_eq!(on_board(&server), expected(&items));
    let board = server.board();
    assert_eq!(board.items[&id_of_s003]["sku"], "s103");
    let last = board.received.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("PATCH", format!("/items/{id_of_s003}").as_str())
    );
    assert_eq!(board.applied.len(), 6);
}

#[test]
fn with_on_failure_stop_a_refused_row_holds_the_destination_at_its_version() {
    let server = BoardServer::start(TOKEN);
    server.board().refused_skus.insert("s002".into());
    let w = workdir(&server);
    w.write(
        "p.yaml",
        pipeline(&server.url()).replace(
            "concurrency: 4",
            "concurrency: 1\n          on_failure: stop",
        ),
    );
    let items: Vec<Item> = (1..=3).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    let stopped = w.run(&["run", "p.yaml"]);
    assert_code(&stopped, 5);
    assert!(
        stdout(&stopped).contains("the NEW row sku=s002 was not accepted: POST")
            && stdout(&stopped).contains("422"),
        "{}",
        stdout(&stopped)
    );
    assert!(dead_letters(&w).is_empty());
    let status = w.run(&["status", "p.yaml"]);
    assert!(
        stdout(&status).contains("board: has received nothing yet, 0 failed rows"),
        "{}{}",
        stdout(&status),
        stderr(&status)
    );
    server.board().refused_skus.clear();
    assert_code(&w.run(&["deliver", "p.yaml"]), 0);
    assert_eq!(on_board(&server), expected(&items));
    // s001 was taken before the refusal and is not applied again.
    assert_eq!(server.board().applied.len(), 3);
}

#[test]
fn a_row_whose_remote_id_was_never_given_waits_in_the_dead_letters() {
    let server = BoardServer::start(TOKEN);
    let w = workdir(&server);
    // The answers hold the id at /data/id: this pointer finds nothing.
    w.write(
        "p.yaml",
        pipeline(&server.url()).replace("remember: {id: /data/id}", "remember: {id: /id}"),
    );
    let mut items: Vec<Item> = (1..=3).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    items.remove(1);
    write_items(&w, &items);
    let day2 = w.run(&["run", "p.yaml"]);
    assert_code(&day2, 5);
    let letters = dead_letters(&w);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (&letters[0]["change"], &letters[0]["status"]),
        (&json!("DELETED"), &json!(0))
    );
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("its URL needs remote.id, which no answer of the server has given for this key yet (remember: id: /id)"),
        "{letters:?}"
    );
    assert_eq!(server.board().items.len(), 3, "the item was not deleted");
}

#[test]
fn a_first_delivery_cut_off_goes_on_with_its_snapshot_after_a_new_commit() {
    let server = BoardServer::start(TOKEN);
    server.board().delay = Duration::from_millis(5);
    let w = workdir(&server);
    let mut items: Vec<Item> = (1..=300).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml", "--no-deliver"]), 0);
    let mut child = w.spawn_quiet(&["deliver", "p.yaml"]);
    while server.board().applied.len() < 40 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let sent = server.board().applied.len();
    assert!(sent < 300, "the delivery was not cut off");
    items[0].qty = Some(1000);
    items.push(item(301, Some(1)));
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    assert_eq!(on_board(&server), expected(&items));
    // No item twice: v1's rows already taken are not created again under v2's keys.
    assert_eq!(server.board().items.len(), items.len());
}

#[test]
fn a_second_delivery_to_the_same_api_at_once_is_refused_and_sends_nothing() {
    let server = BoardServer::start(TOKEN);
    server.board().delay = Duration::from_millis(100);
    let w = workdir(&server);
    let items: Vec<Item> = (1..=30).map(|n| item(n, Some(n as i64))).collect();
    write_items(&w, &items);
    assert_code(&w.run(&["run", "p.yaml", "--no-deliver"]), 0);
    let mut first = w.spawn_quiet(&["deliver", "p.yaml"]);
    let started = Instant::now();
    while server.board().received.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no request");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = w.run(&["deliver", "p.yaml"]);
    assert_code(&second, 5);
    assert!(
        stdout(&second)
            .contains("not delivered to board: another delivery to it is under way (process "),
        "{}{}",
        stdout(&second),
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(on_board(&server), expected(&items));
    let keys: Vec<String> = (server.board().received.iter())
        .map(|r| r.idempotency_key.clone())
        .collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!((keys.len(), distinct.len()), (30, 30), "each row sent once");
    assert!(
        !files_under(w.root())
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "lease.json")),
        "the lease is given up"
    );
    assert_code(&w.run(&["deliver", "p.yaml"]), 0);
}

#[test]
fn a_damaged_state_file_is_named_with_what_removing_it_costs() {
    let server = BoardServer::start(TOKEN);
    let w = workdir(&server);
    write_items(&w, &[item(1, Some(1)), item(2, Some(2))]);
    assert_code(&w.run(&["run", "p.yaml"]), 0);
    let remembered = (files_under(w.root()).into_iter())
        .find(|p| p.parent().is_some_and(|d| d.ends_with("remembered")))
        .expect("a file of remembered ids");
    std::fs::write(&remembered, "{").unwrap();
    write_items(&w, &[item(1, Some(5)), item(2, Some(2))]);
    let run = w.run(&["run", "p.yaml"]);
    assert_code(&run, 5);
    let out = stdout(&run);
    assert!(
        out.contains(&format!("{}: this delivery state file is damaged", remembered.display()))
            && out.contains("restore it from a copy of the store if there is one; removing it forgets the remote ids it kept"),
        "{out}"
    );
}

#[test]
fn a_body_that_renders_as_no_json_sends_nothing_and_says_how_to_write_it() {
    let server = BoardServer::start(TOKEN);
    let w = workdir(&server);
    // As SPEC section 7 writes it: a null qty renders as nothing. `${{ … }}` is a dollar sign
    // before a template's value, not a variable.
    let body = r#"body: '{"sku": {{ row.sku | tojson }}, "name": "${{ row.name }}", "qty": {{ row.qty }}}'"#;
    let yaml = pipeline(&server.url());
    let start = yaml.find("body: ").unwrap();
    let end = start + yaml[start..].find('\n').unwrap();
    w.write(
        "p.yaml",
        format!("{}{body}{}", &yaml[..start], &yaml[end..]),
    );
    write_items(&w, &[item(1, Some(4)), item(2, None)]);
    assert_code(&w.run(&["check", "p.yaml"]), 0);
    assert_code(&w.run(&["run", "p.yaml"]), 5);
    let letters = dead_letters(&w);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["row"]["sku"], json!("s002"));
    assert_eq!(
        letters[0]["error"],
        json!(
            "body new: it is sent as JSON but is not JSON (line 1, column 43); write each value as `{{ row.x | tojson }}`, which quotes a text and writes a null, or give a Content-Type header of another kind"
        )
    );
    let items = server.items_by_sku();
    assert_eq!(items["s001"]["name"], json!("$Item 1"));
    assert_eq!(
        server.board().received.len(),
        1,
        "the bad body was not sent"
    );
}
