#!/usr/bin/env bash
# HTTP destination benchmark: rows per second that tidemark delivers to a local API (the board of
# the tests, examples/board.rs: POST /items answering an id, PATCH and DELETE /items/{id},
# Idempotency-Key honoured), at a few concurrencies:
#
#   day 1    the first delivery: every row of a ROWS-row table POSTed
#   day 2    5% of the rows changed (PATCH), 1% new (POST), 1% deleted (DELETE)
#
#   benches/http.sh [ROWS]            default: 100000
#
# Environment:
#   CONCURRENCY="1 4 16"   the concurrencies to measure
#   BENCH_DIR=/tmp/...     generated data (never committed; reused)
#
# Needs python3 and GNU time. Release build. The server runs in the same machine and shares its
# cores: the figures are what one client and one server on loopback reach, an upper bound on
# what a remote API allows (most allow far less and say so with a rate limit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rows=${1:-100000}
bench=${BENCH_DIR:-/tmp/tidemark-bench-http}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin tidemark --example board
bin=$CARGO_TARGET_DIR/release/tidemark
data=$bench/$rows
mkdir -p "$data"
if [ ! -f "$data/day2.csv" ]; then
  python3 - "$rows" "$data" <<'PY'
import random, sys
rows, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
def row(i, qty):
    return f"SKU-{i:09d},item {i % 9973} of the catalogue,{qty}\n"
with open(f"{out}/day1.csv", "w") as d1, open(f"{out}/day2.csv", "w") as d2:
    d1.write("sku,name,qty\n"); d2.write("sku,name,qty\n")
    for i in range(rows):
        d1.write(row(i, i % 500))
        r = rng.random()
        if r < 0.01:
            continue
        d2.write(row(i, i % 500 + 1 if r < 0.06 else i % 500))
    for i in range(rows, rows + rows // 100):
        d2.write(row(i, 7))
PY
fi
export TM_BOARD_TOKEN=bench-token
results=$(mktemp)
for concurrency in ${CONCURRENCY:-1 4 16}; do
  work=$bench/work-$concurrency
  rm -rf "$work" && mkdir -p "$work"
  "$CARGO_TARGET_DIR/release/examples/board" > "$work/address" &
  board=$!
  while [ ! -s "$work/address" ]; do sleep 0.1; done
  url=$(cat "$work/address")
  cat > "$work/bench.yaml" <<YAML
tables:
  items:
    source: {path: day.csv}
    key: sku
    deliver:
      - name: board
        http:
          url: {new: "$url/items", changed: "$url/items/{{ remote.id }}", deleted: "$url/items/{{ remote.id }}"}
          method: {new: POST, changed: PATCH, deleted: DELETE}
          headers: {Authorization: "Bearer \${TM_BOARD_TOKEN}"}
          remember: {id: /data/id}
          concurrency: $concurrency
YAML
  cp "$data/day1.csv" "$work/day.csv"
  (cd "$work" && "$bin" -q run bench.yaml --no-deliver >/dev/null)
  (cd "$work" && /usr/bin/time -f "$concurrency day1 %e %M" -a -o "$results" "$bin" -q deliver bench.yaml >/dev/null)
  cp "$data/day2.csv" "$work/day.csv"
  (cd "$work" && "$bin" -q run bench.yaml --no-deliver >/dev/null)
  (cd "$work" && /usr/bin/time -f "$concurrency day2 %e %M" -a -o "$results" "$bin" -q deliver bench.yaml >/dev/null)
  kill "$board"
done
day2=$(python3 - "$data" <<'PY'
import sys, csv
d = sys.argv[1]
a = {r[0]: r for r in csv.reader(open(f"{d}/day1.csv"))}
b = {r[0]: r for r in csv.reader(open(f"{d}/day2.csv"))}
print(sum(1 for k in b if k not in a or a[k] != b[k]) + sum(1 for k in a if k not in b))
PY
)
python3 - "$results" "$rows" "$day2" <<'PY'
import sys
results, rows, day2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"{rows} rows; day 2: {day2} changed rows")
print(f"{'concurrency':>11} {'day':>5} {'rows':>8} {'wall s':>8} {'rows/s':>8} {'peak MB':>8}")
for line in open(results):
    c, day, wall, rss = line.split()
    n = rows if day == "day1" else day2
    print(f"{c:>11} {day:>5} {n:8} {float(wall):8.2f} {n / float(wall):8.0f} {int(rss) / 1024:8.0f}")
PY
