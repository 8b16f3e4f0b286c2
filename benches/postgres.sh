#!/usr/bin/env bash
# PostgreSQL destination benchmark: bringing a ROWS-row table to day 2 (5% of the rows changed,
# 1% new, 1% deleted), interleaved in one run with the "clear everything and rebuild" it replaces
# (TRUNCATE + COPY of all of day 2's rows from CSV, in one transaction, by psql):
#
#   rebuild   psql: BEGIN; TRUNCATE; \copy day 2; COMMIT
#   deliver   tidemark deliver: day 2's committed delta applied (staged by binary COPY, upserted,
#             deleted, the cursor advanced: one transaction)
#   run       tidemark run: diff day 2 against the day-1 baseline, commit, and apply
#
#   benches/postgres.sh [ROWS]            default: 1000000
#
# Environment:
#   RUNS=3              repetitions; the table shows medians
#   BENCH_DIR=/tmp/...  generated data and the server's cluster (never committed; reused)
#
# Needs Debian's postgresql package (its initdb and postgres under /usr/lib/postgresql/*/bin;
# run as root, the server runs as the postgres user), psql, python3 and GNU time. Release build.
# Every repetition starts both sides from day 1 (untimed). The machine is shared and noisy:
# compare the ratios of one run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-1000000}
runs=${RUNS:-3}
bench=${BENCH_DIR:-/tmp/tidemark-bench-postgres}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/release/tidemark
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
mkdir -p "$bench"
data=$bench/$rows
mkdir -p "$data"

as_server() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Day 1 and day 2, deterministic.
if [ ! -f "$data/day2.csv" ]; then
  python3 - "$rows" "$data" <<'EOF'
import random, sys
rows, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
def row(i, qty):
    return f"{i},SKU-{i:09d},item {i % 9973} of the catalogue,{qty},{(i * 37) % 100000 / 100:.2f},2024-01-{1 + i % 28:02d}\n"
header = "id,sku,name,qty,price,updated\n"
with open(f"{out}/day1.csv", "w") as d1, open(f"{out}/day2.csv", "w") as d2:
    d1.write(header); d2.write(header)
    for i in range(rows):
        qty = i % 500
        d1.write(row(i, qty))
        r = rng.random()
        if r < 0.01:
            continue                      # deleted
        d2.write(row(i, qty + 1 if r < 0.06 else qty))   # 5% changed
    for i in range(rows, rows + rows // 100):
        d2.write(row(i, 7))               # 1% new
EOF
fi

# A cluster of its own on a free loopback port.
cluster=$bench/cluster
if [ ! -d "$cluster" ]; then
  mkdir -p "$cluster"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$cluster"
  as_server "$pg_bin/initdb" -D "$cluster" -A trust -U postgres -E UTF8 >/dev/null
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
touch "$bench/server.log"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$cluster" "$bench/server.log"
as_server "$pg_bin/pg_ctl" -D "$cluster" -o "-p $port -k $cluster -c listen_addresses=127.0.0.1" -l "$bench/server.log" -w start >/dev/null
trap 'as_server "$pg_bin/pg_ctl" -D "$cluster" -m fast stop >/dev/null' EXIT
psql_args=(-q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
psql_() { psql "${psql_args[@]}" "$@"; }
psql_ -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
export BENCH_PG_URL="postgresql://postgres@127.0.0.1:$port/bench"

work=$bench/work
rm -rf "$work" && mkdir -p "$work"
cat > "$work/bench.yaml" <<'EOF'
tables:
  items:
    source: {path: day.csv, columns: {price: "decimal(12,2)", updated: date}}
    key: id
    deliver:
      - name: shopdb
        postgres: {url: "${BENCH_PG_URL}", create: true}
EOF
# Day 1 delivered by tidemark (it creates the table); the rebuild's table gets the same rows.
cp "$data/day1.csv" "$work/day.csv"
(cd "$work" && "$bin" -q run bench.yaml >/dev/null)
cp -r "$work/.tidemark" "$work/store-day1"
psql_ -d bench -c "CREATE TABLE items_day1 AS TABLE items" \
  -c "CREATE TABLE rebuild (LIKE items INCLUDING ALL)"

# Back to day 1: tidemark's store and table (and, with `all`, the rebuilt table).
reset() {
  rm -rf "$work/.tidemark" && cp -r "$work/store-day1" "$work/.tidemark"
  psql_ -d bench -c "TRUNCATE items" -c "INSERT INTO items SELECT * FROM items_day1" \
    -c "UPDATE tidemark_deliveries SET version = 1"
  if [ "${1:-}" = all ]; then
    psql_ -d bench -c "TRUNCATE rebuild" -c "INSERT INTO rebuild SELECT * FROM items_day1"
  fi
  psql_ -d bench -c "VACUUM ANALYZE"
  cp "$data/day2.csv" "$work/day.csv"
}
timed() { local name=$1; shift; /usr/bin/time -f "$name %e %M" -a -o "$results" "$@" >/dev/null; }
results=$(mktemp)
cat > "$work/rebuild.sql" <<EOF
BEGIN;
TRUNCATE rebuild;
\copy rebuild FROM '$data/day2.csv' CSV HEADER
COMMIT;
EOF
for r in $(seq "$runs"); do
  reset all
  timed rebuild psql "${psql_args[@]}" -d bench -f "$work/rebuild.sql"
  (cd "$work" && "$bin" -q run bench.yaml --no-deliver >/dev/null)
  (cd "$work" && timed deliver "$bin" -q deliver bench.yaml)
  reset
  (cd "$work" && timed run "$bin" -q run bench.yaml)
done
# The table tidemark kept equals the rebuilt one.
diff_rows=$(psql_ -d bench -At -c "SELECT count(*) FROM ((TABLE items EXCEPT TABLE rebuild) UNION ALL (TABLE rebuild EXCEPT TABLE items)) d")
[ "$diff_rows" = 0 ] || { echo "the delivered table differs from the rebuilt one in $diff_rows rows" >&2; exit 1; }
changed=$(( $(wc -l < "$data/day2.csv") - 1 ))
python3 - "$results" "$rows" "$changed" <<'EOF'
import statistics, sys
results, rows, day2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = {}
for line in open(results):
    name, wall, rss = line.split()
    times.setdefault(name, []).append((float(wall), int(rss)))
med = {k: (statistics.median(w for w, _ in v), max(r for _, r in v)) for k, v in times.items()}
print(f"{rows} rows, day 2 {day2} rows; medians of {len(times['rebuild'])} runs")
print(f"{'':10} {'wall s':>8} {'peak MB':>8} {'× rebuild':>10}")
for name in ["rebuild", "deliver", "run"]:
    wall, rss = med[name]
    print(f"{name:10} {wall:8.2f} {rss / 1024:8.0f} {wall / med['rebuild'][0]:10.2f}")
EOF
