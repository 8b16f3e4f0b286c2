//! PostgreSQL destinations (issue 19) against a real server ([`crate::pg_server`]): a table
//! converges to the latest snapshot over random runs, type for type; a kill -9 at any moment of
//! a delivery neither loses nor repeats a version; six tables with foreign keys are applied
//! without a violation; a table that does not fit is named before anything is written; the
//! URL's secret appears nowhere.

use std::time::Instant;

use crate::pg_server::{database, query};
use crate::workdir::{Lcg, Workdir, assert_code, stderr, stdout};

pub(crate) const ITEMS: &str = r#"tables:
  items:
    source:
      path: items.csv
      columns: {id: int64, qty: int32, price: "decimal(12,2)", ratio: float64, active: boolean, day: date, at: timestamp}
    transform: |
      SELECT *, arrow_cast("at", 'Timestamp(Microsecond, Some("UTC"))') AS at_utc,
             named_struct('n', name, 'w', qty) AS dims
      FROM source
    key: id
    renames: true
    deliver:
      - name: shopdb
        postgres: {url: "${TM_PG_URL}", table: public.items, create: true}
"#;

/// One row of the items table: its CSV fields and the text PostgreSQL shows for each column.
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) qty: Option<i32>,
    pub(crate) price: Option<i64>,
    pub(crate) ratio: Option<i64>,
    pub(crate) active: Option<bool>,
    pub(crate) day: Option<u32>,
    pub(crate) second: Option<u32>,
}

impl Item {
    pub(crate) fn random(id: u64, rng: &mut Lcg) -> Item {
        let maybe = |rng: &mut Lcg| !rng.chance(12);
        Item {
            id,
            name: maybe(rng).then(|| {
                rng.pick(&["bolt", "nut, hex", "washer \"M4\"", ""])
                    .to_string()
            }),
            qty: maybe(rng).then(|| rng.below(50) as i32 - 5),
            price: maybe(rng).then(|| rng.below(100_000) as i64 - 500),
            ratio: maybe(rng).then(|| rng.below(40) as i64 - 8),
            active: maybe(rng).then(|| rng.chance(50)),
            day: maybe(rng).then(|| rng.below(28) as u32 + 1),
            second: maybe(rng).then(|| rng.below(86_400) as u32),
        }
    }

    fn csv(&self) -> String {
        let text = |v: &Option<String>| match v {
            Some(s) if s.contains([',', '"']) => format!("\"{}\"", s.replace('"', "\"\"")),
            Some(s) => s.clone(),
            None => String::new(),
        };
        let or_empty = |v: Option<String>| v.unwrap_or_default();
        [
            self.id.to_string(),
            text(&self.name),
            or_empty(self.qty.map(|q| q.to_string())),
            or_empty(self.price.map(cents)),
            or_empty(self.ratio.map(|r| format!("{}", r as f64 / 4.0))),
            or_empty(self.active.map(|a| a.to_string())),
            or_empty(self.day.map(|d| format!("2024-02-{d:02}"))),
            or_empty(self.second.map(clock)),
        ]
        .join(",")
    }

    /// The row as PostgreSQL shows it (an empty name is read as null, as CSV's empty field).
    fn shown(&self) -> Vec<Option<String>> {
        let name = self.name.clone().filter(|n| !n.is_empty());
        let dims = format!(
            "{{\"n\":{},\"w\":{}}}",
            name.as_ref()
                .map_or("null".into(), |n| serde_json::to_string(n).unwrap()),
            self.qty.map_or("null".into(), |q| q.to_string())
        );
        vec![
            Some(self.id.to_string()),
            name,
            self.qty.map(|q| q.to_string()),
            self.price.map(cents),
            self.ratio.map(|r| format!("{}", r as f64 / 4.0)),
            self.active.map(|a| if a { "t" } else { "f" }.to_string()),
            self.day.map(|d| format!("2024-02-{d:02}")),
            self.second.map(clock),
            self.second.map(|s| format!("{}+00", clock(s))),
            Some(dims),
        ]
    }
}

pub(crate) fn cents(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

pub(crate) fn clock(s: u32) -> String {
    format!(
        "2024-03-01 {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

pub(crate) fn write_items(w: &Workdir, items: &[Item]) {
    let mut csv = String::from("id,name,qty,price,ratio,active,day,at\n");
    for item in items {
        csv.push_str(&item.csv());
        csv.push('\n');
    }
    w.write("items.csv", csv);
}

/// The next day: rows changed, removed, added, and now and then one moved to a new key with
/// its values (a rename).
pub(crate) fn next_day(items: Vec<Item>, rng: &mut Lcg, next_id: &mut u64) -> Vec<Item> {
    let mut out = Vec::new();
    for item in items {
        match rng.below(100) {
            0..=9 => {}
            10..=24 => out.push(Item::random(item.id, rng)),
            25..=27 => {
                *next_id += 1;
                out.push(Item {
                    id: *next_id,
                    ..item
                });
            }
            _ => out.push(item),
        }
    }
    for _ in 0..rng.below(6) {
        *next_id += 1;
        out.push(Item::random(*next_id, rng));
    }
    out.sort_by_key(|i| i.id);
    out
}

const ITEM_COLUMNS: &str = "id, name, qty, price, ratio, active, day, at, at_utc, dims";

fn table_rows(url: &str) -> Vec<Vec<Option<String>>> {
    query(
        url,
        &format!("SELECT {ITEM_COLUMNS} FROM items ORDER BY id"),
    )
}

#[test]
fn a_table_converges_to_the_latest_snapshot_over_random_runs() {
    let url = database();
    let w = Workdir::new().with_env(&[("TM_PG_URL".into(), url.clone())]);
    w.write("p.yaml", ITEMS);
    let mut rng = Lcg(19);
    let mut next_id = 40;
    let mut items: Vec<Item> = (1..=40).map(|id| Item::random(id, &mut rng)).collect();
    let mut renamed = 0;
    for day in 0..32 {
        if day > 0 {
            items = next_day(items, &mut rng, &mut next_id);
        }
        write_items(&w, &items);
        let run = w.run(&["run", "p.yaml", "--force"]);
        assert_code(&run, 0);
        renamed += stdout(&run)
            .split(" renamed")
            .next()
            .and_then(|s| s.rsplit(", ").next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let expected: Vec<Vec<Option<String>>> = items.iter().map(Item::shown).collect();
        assert_eq!(table_rows(&url), expected, "day {day}");
        let cursor = query(&url, "SELECT version FROM tidemark_deliveries");
        assert_eq!(cursor, [[Some((day + 1).to_string())]], "day {day}");
    }
    assert!(renamed > 0, "no rename was generated");
    // Type for type: the table was created from the snapshot's schema.
    let types = query(
        &url,
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns
         WHERE table_name = 'items' ORDER BY ordinal_position",
    );
    let shown: Vec<String> = types
        .iter()
        .map(|r| {
            let mut t = format!("{} {}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap());
            if t.ends_with("numeric") {
                t.push_str(&format!(
                    "({},{})",
                    r[2].as_deref().unwrap(),
                    r[3].as_deref().unwrap()
                ));
            }
            t
        })
        .collect();
    assert_eq!(
        shown,
        [
            "id bigint",
            "name text",
            "qty integer",
            "price numeric(12,2)",
            "ratio double precision",
            "active boolean",
            "day date",
            "at timestamp without time zone",
            "at_utc timestamp with time zone",
            "dims text",
        ]
    );
    let key = query(
        &url,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = 'items'::regclass AND i.indisprimary",
    );
    assert_eq!(key, [[Some("id".to_string())]]);
    // Room on each page for a changed row's new version.
    let options = query(
        &url,
        "SELECT reloptions::text FROM pg_class WHERE oid = 'items'::regclass",
    );
    assert_eq!(options, [[Some("{fillfactor=90}".to_string())]]);
}

#[test]
fn a_kill_at_any_moment_of_a_delivery_neither_loses_nor_repeats_a_version() {
    let url = database();
    let w = Workdir::new().with_env(&[("TM_PG_URL".into(), url.clone())]);
    w.write("p.yaml", ITEMS);
    let mut rng = Lcg(7);
    let mut next_id = 30_000;
    let mut items: Vec<Item> = (1..=30_000).map(|id| Item::random(id, &mut rng)).collect();
    write_items(&w, &items);
    // The first delivery, timed: the moments of the kills are spread over it.
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
        // A plain run (nothing new) brings the table to the latest snapshot.
        let run = w.run(&["run", "p.yaml"]);
        assert_code(&run, 0);
        let expected: Vec<Vec<Option<String>>> = items.iter().map(Item::shown).collect();
        assert!(
            table_rows(&url) == expected,
            "kill {kill}: the table is not the latest snapshot"
        );
    }
    assert!(interrupted > 0, "no delivery was interrupted");
}

#[test]
fn a_table_that_does_not_fit_is_named_before_anything_is_written() {
    let url = database();
    query(
        &url,
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty integer, price numeric(12,1))",
    );
    query(&url, "INSERT INTO items (id, name) VALUES (99, 'kept')");
    let w = Workdir::new().with_env(&[("TM_PG_URL".into(), url.clone())]);
    w.write("p.yaml", ITEMS.replace(", create: true", ""));
    let mut rng = Lcg(3);
    let items: Vec<Item> = (1..=5).map(|id| Item::random(id, &mut rng)).collect();
    write_items(&w, &items);
    let run = w.run(&["run", "p.yaml"]);
    assert_code(&run, 5);
    let out = stdout(&run);
    assert!(
        out.starts_with("items: v1 committed — 5 rows: 5 new"),
        "{out}"
    );
    assert!(
        out.contains("items: not delivered: items v1 is committed but not delivered to shopdb: table public.items: column price is numeric(12,1) but holds decimal(12,2) values; change its type to numeric(12, 2); nothing was written."),
        "{out}"
    );
    assert_eq!(
        query(&url, "SELECT id, name FROM items"),
        [[Some("99".into()), Some("kept".into())]]
    );
    let status = w.run(&["status", "p.yaml"]);
    assert!(
        stdout(&status).contains("  shopdb: has received nothing yet"),
        "{}",
        stdout(&status)
    );
    // Fixed, the delivery catches up: the rows arrive, the row it did not send stays.
    query(
        &url,
        "ALTER TABLE items ALTER COLUMN price TYPE numeric(12,2), ADD COLUMN ratio float8, ADD COLUMN active boolean,
         ADD COLUMN day date, ADD COLUMN at timestamp, ADD COLUMN at_utc timestamptz, ADD COLUMN dims jsonb",
    );
    let deliver = w.run(&["deliver", "p.yaml"]);
    assert_code(&deliver, 0);
    assert_eq!(stdout(&deliver), "items: shopdb: delivered v1\n");
    let rows = query(&url, "SELECT count(*) FROM items");
    assert_eq!(rows, [[Some("6".into())]]);
}

#[test]
fn the_url_secret_is_never_written_nor_printed() {
    let url = database();
    let secret = "pw-0d1e5f7a9c";
    let with_secret = url.replace("postgres@", &format!("postgres:{secret}@"));
    let w = Workdir::new().with_env(&[("TM_PG_URL".into(), with_secret.clone())]);
    w.write("p.yaml", ITEMS);
    let mut rng = Lcg(5);
    let items: Vec<Item> = (1..=5).map(|id| Item::random(id, &mut rng)).collect();
    write_items(&w, &items);
    let mut seen = String::new();
    let mut record = |o: &std::process::Output| {
        seen.push_str(&stdout(o));
        seen.push_str(&stderr(o));
    };
    let run = w.run(&["-vv", "run", "p.yaml", "--report", "report.json"]);
    assert_code(&run, 0);
    record(&run);
    record(&w.run(&["-vv", "status", "p.yaml", "--format", "json"]));
    // A database that does not exist: the error is shown, the password is not.
    let broken = w.with_env(&[("TM_PG_URL".into(), with_secret.replace("/t", "/missing_t"))]);
    write_items(&broken, &items[..3]);
    let failed = broken.run(&["-vv", "run", "p.yaml"]);
    assert_code(&failed, 5);
    assert!(
        stdout(&failed).contains("connecting to PostgreSQL"),
        "{}",
        stdout(&failed)
    );
    record(&failed);
    assert!(!seen.contains(secret), "the secret was printed:\n{seen}");
    for entry in walk(broken.root()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{} holds the secret",
            entry.display()
        );
    }
    // A variable that is not set is named, before anything runs.
    let unset = Workdir::new();
    unset.write("p.yaml", ITEMS);
    write_items(&unset, &items);
    let refused = unset.run(&["run", "p.yaml"]);
    assert_code(&refused, 2);
    assert!(
        stderr(&refused).contains("TM_PG_URL, which is not set"),
        "{}",
        stderr(&refused)
    );
    assert!(!unset.path(".tidemark").exists());
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Six tables, each child pointing at its parents with a foreign key PostgreSQL enforces.
const SHOP: &str = r#"tables:
  regions:
    source: {path: regions.csv}
    key: region_id
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
  customers:
    source: {path: customers.csv}
    key: customer_id
    depends_on: [regions]
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
  categories:
    source: {path: categories.csv}
    key: category_id
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
  products:
    source: {path: products.csv}
    key: product_id
    depends_on: [categories]
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
  orders:
    source: {path: orders.csv}
    key: order_id
    depends_on: [customers]
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
  lines:
    source: {path: lines.csv}
    key: [order_id, product_id]
    depends_on: [orders, products]
    deliver: [{name: shopdb, postgres: {url: "${TM_PG_URL}"}}]
"#;

const SHOP_SCHEMA: &str = "
CREATE TABLE regions (region_id bigint PRIMARY KEY, name text);
CREATE TABLE customers (customer_id bigint PRIMARY KEY, region_id bigint NOT NULL REFERENCES regions, name text);
CREATE TABLE categories (category_id bigint PRIMARY KEY, name text);
CREATE TABLE products (product_id bigint PRIMARY KEY, category_id bigint NOT NULL REFERENCES categories, name text);
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, total bigint);
CREATE TABLE lines (order_id bigint NOT NULL REFERENCES orders, product_id bigint NOT NULL REFERENCES products,
                    qty bigint, PRIMARY KEY (order_id, product_id));
";

/// A shop whose every row points at parents that exist: parents come and go (their children
/// with them, or moved to another parent), values change.
#[derive(Default)]
struct Shop {
    regions: Vec<u64>,
    customers: Vec<(u64, u64)>,
    categories: Vec<u64>,
    products: Vec<(u64, u64)>,
    orders: Vec<(u64, u64, u64)>,
    lines: Vec<(u64, u64, u64)>,
    next: u64,
}

impl Shop {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn evolve(&mut self, rng: &mut Lcg) {
        // Parents removed; their children removed too, or moved to a parent that stays.
        self.regions.retain(|_| !rng.chance(10));
        self.categories.retain(|_| !rng.chance(10));
        for _ in 0..2 {
            let r = self.id();
            self.regions.push(r);
            let c = self.id();
            self.categories.push(c);
        }
        let (regions, categories) = (self.regions.clone(), self.categories.clone());
        self.customers.retain_mut(|(_, region)| {
            if regions.contains(region) {
                return !rng.chance(5);
            }
            match rng.chance(50) {
                true => {
                    *region = *rng.pick(&regions);
                    true
                }
                false => false,
            }
        });
        self.products.retain_mut(|(_, category)| {
            if categories.contains(category) {
                return !rng.chance(5);
            }
            *category = *rng.pick(&categories);
            rng.chance(50)
        });
        for _ in 0..4 {
            let (c, p) = (self.id(), self.id());
            self.customers.push((c, *rng.pick(&regions)));
            self.products.push((p, *rng.pick(&categories)));
        }
        let customers: Vec<u64> = self.customers.iter().map(|c| c.0).collect();
        let products: Vec<u64> = self.products.iter().map(|p| p.0).collect();
        self.orders.retain_mut(|(_, customer, total)| {
            if rng.chance(10) {
                *total = rng.below(1000);
            }
            if !customers.contains(customer) {
                *customer = *rng.pick(&customers);
            }
            !rng.chance(5)
        });
        for _ in 0..5 {
            let o = self.id();
            self.orders
                .push((o, *rng.pick(&customers), rng.below(1000)));
        }
        let orders: Vec<u64> = self.orders.iter().map(|o| o.0).collect();
        self.lines
            .retain(|(o, p, _)| orders.contains(o) && products.contains(p) && !rng.chance(5));
        for _ in 0..8 {
            let line = (*rng.pick(&orders), *rng.pick(&products), rng.below(9) + 1);
            if !self.lines.iter().any(|l| l.0 == line.0 && l.1 == line.1) {
                self.lines.push(line);
            }
        }
    }

    fn write(&self, w: &Workdir) {
        let csv = |header: &str, rows: Vec<String>| format!("{header}\n{}\n", rows.join("\n"));
        w.write(
            "regions.csv",
            csv(
                "region_id,name",
                self.regions
                    .iter()
                    .map(|r| format!("{r},region {r}"))
                    .collect(),
            ),
        );
        w.write(
            "categories.csv",
            csv(
                "category_id,name",
                self.categories
                    .iter()
                    .map(|c| format!("{c},category {c}"))
                    .collect(),
            ),
        );
        w.write(
            "customers.csv",
            csv(
                "customer_id,region_id,name",
                self.customers
                    .iter()
                    .map(|(c, r)| format!("{c},{r},customer {c}"))
                    .collect(),
            ),
        );
        w.write(
            "products.csv",
            csv(
                "product_id,category_id,name",
                self.products
                    .iter()
                    .map(|(p, c)| format!("{p},{c},product {p}"))
                    .collect(),
            ),
        );
        w.write(
            "orders.csv",
            csv(
                "order_id,customer_id,total",
                self.orders
                    .iter()
                    .map(|(o, c, t)| format!("{o},{c},{t}"))
                    .collect(),
            ),
        );
        w.write(
            "lines.csv",
            csv(
                "order_id,product_id,qty",
                self.lines
                    .iter()
                    .map(|(o, p, q)| format!("{o},{p},{q}"))
                    .collect(),
            ),
        );
    }

    fn expected(&self) -> Vec<Vec<Vec<Option<String>>>> {
        let text = |values: Vec<String>| values.into_iter().map(Some).collect::<Vec<_>>();
        let mut tables = vec![
            self.regions
                .iter()
                .map(|r| text(vec![r.to_string(), format!("region {r}")]))
                .collect::<Vec<_>>(),
            self.customers
                .iter()
                .map(|(c, r)| text(vec![c.to_string(), r.to_string(), format!("customer {c}")]))
                .collect(),
            self.categories
                .iter()
                .map(|c| text(vec![c.to_string(), format!("category {c}")]))
                .collect(),
            self.products
                .iter()
                .map(|(p, c)| text(vec![p.to_string(), c.to_string(), format!("product {p}")]))
                .collect(),
            self.orders
                .iter()
                .map(|(o, c, t)| text(vec![o.to_string(), c.to_string(), t.to_string()]))
                .collect(),
            self.lines
                .iter()
                .map(|(o, p, q)| text(vec![o.to_string(), p.to_string(), q.to_string()]))
                .collect(),
        ];
        for table in &mut tables {
            table.sort_by_key(|row| {
                (
                    row[0].as_ref().unwrap().parse::<u64>().unwrap(),
                    row[1].as_ref().unwrap().parse::<u64>().unwrap_or(0),
                )
            });
        }
        tables
    }
}

#[test]
fn six_tables_with_foreign_keys_are_applied_without_a_violation() {
    let url = database();
    query(&url, SHOP_SCHEMA);
    let w = Workdir::new().with_env(&[("TM_PG_URL".into(), url.clone())]);
    w.write("shop.yaml", SHOP);
    let mut rng = Lcg(11);
    let mut shop = Shop::default();
    for day in 0..12 {
        shop.evolve(&mut rng);
        shop.write(&w);
        let run = w.run(&["run", "shop.yaml", "--force"]);
        assert_code(&run, 0);
        let got: Vec<Vec<Vec<Option<String>>>> = [
            "SELECT region_id, name FROM regions ORDER BY 1",
            "SELECT customer_id, region_id, name FROM customers ORDER BY 1",
            "SELECT category_id, name FROM categories ORDER BY 1",
            "SELECT product_id, category_id, name FROM products ORDER BY 1",
            "SELECT order_id, customer_id, total FROM orders ORDER BY 1",
            "SELECT order_id, product_id, qty FROM lines ORDER BY 1, 2",
        ]
        .iter()
        .map(|sql| query(&url, sql))
        .collect();
        assert!(
            got == shop.expected(),
            "day {day}: the tables are not the latest snapshots"
        );
    }
    let cursors = query(
        &url,
        "SELECT \"table\", version FROM tidemark_deliveries ORDER BY 1",
    );
    assert_eq!(cursors.len(), 6);
    assert!(
        cursors.iter().all(|r| r[1].as_deref() == Some("12")),
        "{cursors:?}"
    );
}

/// The example `pipelines/store-sync-postgres.yaml` on the sample exports: day 1 creates and
/// fills the six tables, day 2 brings them to day 2's snapshots (the counts `query` gives).
#[test]
fn the_store_sync_example_feeds_postgresql() {
    const ROOT: &str = env!("CARGO_MANIFEST_DIR");
    let url = database();
    let w = Workdir::new().with_env(&[("SHOP_DATABASE_URL".into(), url.clone())]);
    let example = std::fs::read_to_string(format!("{ROOT}/pipelines/store-sync-postgres.yaml"));
    w.write("pipelines/store-sync-postgres.yaml", example.unwrap());
    let tables = [
        "locations",
        "categories",
        "items",
        "variations",
        "inventory",
        "orders",
    ];
    for day in ["2024-03-01", "2024-03-02"] {
        for entry in std::fs::read_dir(format!("{ROOT}/data/store-sync/{day}")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            w.write(
                &format!("data/store-sync/{day}/{name}"),
                std::fs::read(&path).unwrap(),
            );
        }
        let run = w.run(&["run", "pipelines/store-sync-postgres.yaml"]);
        assert_code(&run, 0);
        for table in tables {
            let counted = w.run(&[
                "query",
                "pipelines/store-sync-postgres.yaml",
                &format!("SELECT count(*) AS n FROM {table}"),
                "--format",
                "csv",
            ]);
            let expected = stdout(&counted)
                .trim()
                .trim_start_matches("n\n")
                .to_string();
            let got = query(&url, &format!("SELECT count(*) FROM {table}"));
            assert_eq!(got, [[Some(expected)]], "{day}: {table}");
        }
    }
    let prices = query(
        &url,
        "SELECT price FROM variations ORDER BY variation_id LIMIT 1",
    );
    // V-1001 went from 299.00 to 279.00 on day 2.
    assert_eq!(prices, [[Some("279.00".to_string())]]);
}
