#!/usr/bin/env bash
# The 100M-row run of issue 6: a day-2 `tidemark run --memory-limit 4GB` of 100M rows (about
# 15 GB of CSV) against a committed 100M-row baseline; prints its time, peak RSS and phases.
#
# The rows are ten copies of the harness's 10M-row files (run `RUNS=1 benches/e2e.sh 10000000`
# first), each copy's keys prefixed by its number, so the counts are ten times the 10M ones.
# The baseline is built by ten runs of a growing file (10M, 20M, ... 100M rows, vacuumed to one
# version after each), so that no run holds more than 10M NEW rows. Needs about 30 GB of disk
# (one day of CSV, two snapshots of about 6 GB, the delta) and 8 GB of memory; took 15 min (session 9).
#
# Usage: benches/hundred_million.sh            (BENCH_DIR, CARGO_TARGET_DIR as for e2e.sh)
set -euo pipefail

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tidemark-target}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/tidemark
source=${BENCH_DIR:-/tmp/tidemark-bench}-10000000
work=${BENCH_DIR:-/tmp/tidemark-bench}-100000000
if [ ! -f "$source/baseline.csv" ] || [ ! -f "$source/new.csv" ]; then
  echo "no 10M-row files in $source: run 'RUNS=1 benches/e2e.sh 10000000' first" >&2
  exit 1
fi
rm -rf "$work"
mkdir -p "$work"
cd "$work"
cat > bench.yaml <<'YAML'
tables:
  inventory:
    source:
      path: day.csv
      columns: {upc: string, price: "decimal(12,2)", qty: int64}
    key: sku
    output:
      - path: out/delta.csv
YAML

# Copy number $2 of file $1: the header once, keys SKU-0... renamed SKU-$2...
copy() {
  if [ "$2" = 0 ]; then cat "$1"; else tail -n +2 "$1" | sed "s/^\"SKU-0/\"SKU-$2/"; fi
}

for c in 0 1 2 3 4 5 6 7 8 9; do
  copy "$source/baseline.csv" $c >> day.csv
  /usr/bin/time -f "baseline, step $c: %e s, peak RSS %M KB" \
    "$bin" -q run bench.yaml --store store --force > /dev/null
  "$bin" -q vacuum bench.yaml --store store --keep 1 --grace 0s > /dev/null
done
rm day.csv
for c in 0 1 2 3 4 5 6 7 8 9; do copy "$source/new.csv" $c >> day.csv; done

echo "day 2, 100M rows, --memory-limit 4GB:"
RUST_LOG=tidemark=debug /usr/bin/time -f "wall %e s, user %U s, sys %S s, peak RSS %M KB" \
  "$bin" -vv run bench.yaml --store store --memory-limit 4GB 2>&1 \
  | grep -E "inventory:|wall "
rm -rf "$work"
