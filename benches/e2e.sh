#!/usr/bin/env bash
# End-to-end benchmark harness: `tidemark run` of day 2 against a committed day-1 baseline (load,
# type, hash, join, classify, write the delta CSV and the Parquet snapshot, commit), interleaved in
# one run with the same job done by DuckDB and Polars (../shared/bench/diff_duckdb.py and
# diff_polars.py: full outer join on the key, hash of the compared columns, classification, delta
# CSV, new Parquet baseline with the hash), and with the floor: reading both inputs once.
#
#   benches/e2e.sh [ROWS...]              default: 1000000
#
# Environment:
#   RUNS=3                 repetitions; the table shows medians
#   FORMATS="csv parquet"  tidemark's input format (the peers read CSV + CSV)
#   PEERS="duckdb polars"  which peers to run
#   MEMORY_LIMIT=1GB       also run tidemark --memory-limit and DuckDB memory_limit at this size
#   EXCEL=1000000          also load an .xlsx of this many rows: tidemark (`check`: read, type,
#                          validate) against calamine alone streaming every cell
#   BENCH_DIR=/tmp/...     where generated data lives (never committed; reused when present)
#   QSV=path/to/qsv        also run `qsv diff` (bytes only: no types, no Parquet); found on PATH
#                          as qsv or qsvlite when unset (`cargo install qsv --features lite
#                          --bin qsvlite` builds it)
#
# Needs python3 (numpy, pyarrow, duckdb and polars are installed with pip when missing) and GNU
# time. Release build. The machine is shared and noisy: compare ratios measured in the same run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=$root/../shared/bench
runs=${RUNS:-3}
formats=${FORMATS:-csv parquet}
peer_tools=${PEERS:-duckdb polars}
qsv=${QSV:-$(command -v qsv || command -v qsvlite || true)}
memory_limit=${MEMORY_LIMIT:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
[ $# -eq 0 ] && set -- 1000000

python3 -c "import numpy, pyarrow, duckdb, polars" 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check numpy pyarrow duckdb polars
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$CARGO_TARGET_DIR/release/tidemark
results=$(mktemp)
echo "rows input tool wall rss_kb" > "$results"

# measure ROWS INPUT TOOL CMD...: one timed run, appended to the results.
measure() {
  local rows=$1 input=$2 tool=$3; shift 3
  local t; t=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$t" "$@" >/dev/null
  echo "$rows $input $tool $(cat "$t")" >> "$results"
  rm -f "$t"
}

for rows in "$@"; do
  work=${BENCH_DIR:-/tmp/tidemark-bench}-$rows
  mkdir -p "$work"
  [ -f "$work/new.parquet" ] ||
    python3 "$peers/gen_data.py" --rows "$rows" --out-dir "$work" --format both >/dev/null
  for format in $formats; do
    cat > "$work/bench-$format.yaml" <<YAML
tables:
  inventory:
    source:
      path: day-$format.$format
      columns: {upc: string, price: "decimal(12,2)", qty: int64}
    key: sku
    output:
      - path: out-$format/delta.csv
YAML
    ln -sf "baseline.$format" "$work/day-$format.$format"
  done
  for i in $(seq "$runs"); do
    echo "rows $rows, run $i of $runs" >&2
    for format in $formats; do
      for limit in "" $memory_limit; do
        store=$work/.tidemark-$format${limit:+-$limit}
        rm -rf "$store" "$work/out-$format"
        ln -sf "baseline.$format" "$work/day-$format.$format"
        "$bin" -q run "$work/bench-$format.yaml" --store "$store" >/dev/null
        ln -sf "new.$format" "$work/day-$format.$format"
        measure "$rows" "$format" "tidemark${limit:+ --memory-limit $limit}" \
          "$bin" -q run "$work/bench-$format.yaml" --store "$store" ${limit:+--memory-limit "$limit"}
        python3 "$peers/verify.py" "$work" delta "$work/out-$format/delta.csv" | grep -q '"keys_ok": true' ||
          { echo "tidemark's delta ($format) is wrong" >&2; exit 1; }
      done
    done
    for peer in $peer_tools; do
      measure "$rows" csv "$peer" python3 "$peers/diff_$peer.py" "$work/baseline.csv" "$work/new.csv" \
        "$work/$peer-delta.csv" "$work/$peer-next.parquet"
      python3 "$peers/verify.py" "$work" delta "$work/$peer-delta.csv" | grep -q '"keys_ok": true' ||
        { echo "$peer's delta is wrong" >&2; exit 1; }
    done
    if [ -n "$qsv" ]; then
      measure "$rows" csv "qsv diff (bytes only)" "$qsv" diff --key 0 \
        --output "$work/qsv-delta.csv" "$work/baseline.csv" "$work/new.csv"
      # One line per added or removed row, a CHANGED row's old and new line each.
      python3 -c "
import json, sys
e = json.load(open(sys.argv[1]))
lines = sum(1 for _ in open(sys.argv[2], encoding='utf-8')) - 1
sys.exit(lines != e['new'] + e['deleted'] + 2 * e['changed'])
" "$work/expected.json" "$work/qsv-delta.csv" || { echo "qsv's diff has the wrong number of lines" >&2; exit 1; }
    fi
    if [ -n "$memory_limit" ] && [[ " $peer_tools " == *" duckdb "* ]]; then
      measure "$rows" csv "duckdb memory_limit=$memory_limit" python3 "$peers/diff_duckdb.py" \
        "$work/baseline.csv" "$work/new.csv" "$work/duckdb-delta.csv" "$work/duckdb-next.parquet" \
        "--memory-limit=$memory_limit"
    fi
    # The floor: every byte of both inputs read once, and DuckDB parsing both CSVs fully.
    measure "$rows" csv "floor: cat" sh -c "cat '$work/baseline.csv' '$work/new.csv' > /dev/null"
    measure "$rows" csv "floor: DuckDB parses both" python3 -c "
import duckdb, sys
cols = {'sku':'VARCHAR','upc':'VARCHAR','name':'VARCHAR','category':'VARCHAR','brand':'VARCHAR','price':'DECIMAL(12,2)','qty':'BIGINT','discontinued':'VARCHAR','updated_at':'TIMESTAMP','description':'VARCHAR'}
for f in sys.argv[1:]:
    duckdb.sql(f\"SELECT count(*), max(length(sku||upc||name||category||brand||description)), max(price), max(qty), max(updated_at) FROM read_csv('{f}', header=true, columns={cols})\").fetchall()
" "$work/baseline.csv" "$work/new.csv"
  done
done

if [ -n "${EXCEL:-}" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --example excel_bench
  excel_bench=$CARGO_TARGET_DIR/release/examples/excel_bench
  work=${BENCH_DIR:-/tmp/tidemark-bench}-xlsx-$EXCEL
  mkdir -p "$work"
  [ -f "$work/inventory.xlsx" ] || "$excel_bench" write "$work/inventory.xlsx" "$EXCEL"
  cat > "$work/excel.yaml" <<YAML
tables:
  inventory:
    source:
      path: inventory.xlsx
      columns: {UPC: string, Qty: int64}
    key: UPC
YAML
  for i in $(seq "$runs"); do
    measure "$EXCEL" xlsx "calamine alone: every cell" "$excel_bench" cells "$work/inventory.xlsx"
    measure "$EXCEL" xlsx "tidemark: load (check)" "$bin" -q check "$work/excel.yaml"
  done
fi

# The table: medians per (rows, input, tool), with the ratio to tidemark's CSV run of that size.
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
groups = {}
for r in rows:
    n, fmt, tool, wall, rss = r[0], r[1], " ".join(r[2:-2]), float(r[-2]), int(r[-1])
    groups.setdefault((int(n), fmt, tool), []).append((wall, rss))
print(f"| rows | input | tool | wall (s) | peak RSS | ratio to tidemark (CSV) |")
print("|---|---|---|---|---|---|")
for (n, fmt, tool), v in groups.items():
    wall = statistics.median(w for w, _ in v)
    rss = statistics.median(r for _, r in v)
    base = groups.get((n, "csv", "tidemark"))
    ratio = f"{wall / statistics.median(w for w, _ in base):.2f}" if base else "–"
    size = f"{rss / 1024 / 1024:.2f} GB" if rss >= 1024 * 1024 else f"{rss / 1024:.0f} MB"
    print(f"| {n:,} | {fmt} | {tool} | {wall:.2f} | {size} | {ratio} |")
for (n, fmt, tool), v in groups.items():
    if tool.startswith("tidemark: load") and (n, fmt, "calamine alone: every cell") in groups:
        ours = statistics.median(w for w, _ in v)
        floor = statistics.median(w for w, _ in groups[(n, fmt, "calamine alone: every cell")])
        print(f"\n{n:,}-row .xlsx: tidemark's load takes {ours / floor:.2f}x calamine alone")
PY
rm -f "$results"
