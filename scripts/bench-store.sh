#!/usr/bin/env bash
# Benchmarks of pyroscope.store (docs/benchmarks.md quotes them). Needs root (eBPF) for parts
# 3 and 4. Prints:
#  1. synthetic whole-host series, 24 h of 15 s intervals (5,760) with ~3,500 distinct stacks
#     each: store CPU per appended profile, database size, 24-hour merge time;
#  2. real profiles of this machine captured with `rill profile` (15 s at 97 Hz each, N of
#     them), replayed as one series for an hour of intervals: database size per hour and day
#     (an hour holds one stack dictionary, so 24 x one hour is a day), then for 24 hours: the
#     24-hour merge time on this machine's real shape;
#  3. `rill run` with pyroscope.ebpf -> pyroscope.store for DURATION seconds: CPU of the store's
#     writer thread against the ebpf component's own thread (collect, symbolize, encode).
# Usage: scripts/bench-store.sh [captures (8)] [run seconds (180)]
set -euo pipefail
cd "$(dirname "$0")/.."
CAPTURES=${1:-8}
DURATION=${2:-180}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
work=$(mktemp -d /tmp/rill-bench-store.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

nice cargo build --release -p rill >&2
bench=$(nice cargo bench -p components --bench store --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "store" and m.get("executable"):
        print(m["executable"])')
rill="$CARGO_TARGET_DIR/release/rill"

echo "== 1. synthetic whole-host series, 24 h"
STORE_BENCH=synth "$bench" --bench

echo "== 2. real profiles of this machine ($CAPTURES x 15 s at 97 Hz, rill profile)"
mkdir -p "$work/pprof"
for i in $(seq -w 1 "$CAPTURES"); do
  "$rill" profile --duration 15s --sample-rate 97 -o "$work/pprof/$i.pb.gz" >/dev/null 2>&1
done
STORE_BENCH=replay STORE_BENCH_PPROF_DIR="$work/pprof" STORE_BENCH_HOURS=1 "$bench" --bench
STORE_BENCH=replay STORE_BENCH_PPROF_DIR="$work/pprof" STORE_BENCH_HOURS=24 "$bench" --bench

echo "== 3. rill run: pyroscope.ebpf -> pyroscope.store for ${DURATION}s"
cat >"$work/config.river" <<EOF
pyroscope.store "bench" {
  path = "$work/store"
}

pyroscope.ebpf "bench" {
  forward_to       = [pyroscope.store.bench.receiver]
  targets_only     = false
  default_target   = {"service_name" = "host"}
  collect_interval = "15s"
  sample_rate      = 97
}
EOF
"$rill" run "$work/config.river" --server.http.listen-addr=127.0.0.1:0 \
  --storage.path="$work/data" 2>"$work/rill.log" &
pid=$!
sleep "$DURATION"
# Thread CPU (ns) from schedstat, by thread name.
python3 - "$pid" <<'EOF'
import os, sys
pid = sys.argv[1]
by = {}
total = 0
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        ns = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    except OSError:
        continue
    by[name] = by.get(name, 0) + ns
    total += ns
ebpf = by.get("pyroscope.ebpf", 0)
store = by.get("pyroscope.store", 0)
print(f"  rill CPU {total/1e9:.2f} s: pyroscope.ebpf thread {ebpf/1e9:.2f} s, pyroscope.store thread {store/1e9:.3f} s")
if ebpf:
    print(f"  store / ebpf thread CPU: {100*store/ebpf:.1f}%   store / all other rill CPU: {100*store/max(total-store,1):.1f}%")
EOF
du -b "$work/store/profiles.db" | awk '{printf "  database after the run: %.2f MiB\n", $1/1048576}'
