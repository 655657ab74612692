#!/usr/bin/env bash
# In-kernel cost per sample of rill's perf_event program (issue 14), beside perf's own cost.
#
# For RUNS runs (5): Debian's /usr/bin/python3 runs a busy loop, `rill profile --pid PID
# --duration DURATIONs` (97 Hz) samples it, and with kernel.bpf_stats_enabled=1 the script
# polls `bpftool prog show` for run_time_ns / run_cnt of rill's perf_event program
# (profile_cpu) until rill exits. Prints per run and as the median of the runs:
#   ns/run     run_time_ns / run_cnt: every invocation, including the samples of other
#              processes that the program rejects after its pid lookup;
#   ns/sample  run_time_ns / the samples rill reports for the python process: the whole
#              in-kernel cost charged to the samples actually walked (an upper bound).
# Then the peer, on the same workload and duration: CPU seconds (user+sys, GNU time) of
# `perf record -F 97 -a -g` and of `perf record -F 97 -a --call-graph dwarf`, and rill's own
# CPU seconds in its runs. perf's DWARF unwinding happens in user space (perf report/script),
# so only the recording cost is comparable; perf is not a BPF program.
#
# Needs root, bpftool, perf, /usr/bin/python3, GNU time and a release build of rill (built
# here if missing; RILL=/path/to/rill to use another binary, CARGO_TARGET_DIR is honoured).
# RUNS and DURATION (10) are environment variables.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RILL=${RILL:-$TARGET_DIR/release/rill}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/rill-bench-unwind.XXXXXX)
PIDS=()
OLD_STATS=

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$OLD_STATS" ] && sysctl -q -w kernel.bpf_stats_enabled="$OLD_STATS" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-unwind: needs root" >&2; exit 1; }
for t in bpftool perf "$PY" /usr/bin/time sysctl; do
    command -v "$t" >/dev/null || { echo "bench-unwind: $t is required" >&2; exit 1; }
done
if [ ! -x "$RILL" ]; then
    (cd "$ROOT" && cargo build --release -p rill)
fi

OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q -w kernel.bpf_stats_enabled=1

# A busy loop for $1 seconds; prints its pid.
busy() {
    "$PY" -c "
import os, time
print(os.getpid(), flush=True)
end = time.monotonic() + $1
x = 1
while time.monotonic() < end:
    for i in range(10000):
        x = (x * 31 + i) % 1000003
" >"$WORK/busy.pid" &
    PIDS+=($!)
    BUSY=$!
    for _ in $(seq 50); do [ -s "$WORK/busy.pid" ] && break; sleep 0.1; done
}

# run_time_ns run_cnt of the perf_event programs pid $1 holds (the prog_id of its BPF file
# descriptors, from /proc/PID/fdinfo; this bpftool does not list owners). Empty when none.
prog_stats() {
    local ids
    ids=$(grep -hs '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u | tr '\n' ' ')
    [ -n "$ids" ] || return 0
    bpftool prog show -j 2>/dev/null | "$PY" -c '
import json, sys
ids = {int(i) for i in sys.argv[1].split()}
t = c = 0
found = False
for p in json.load(sys.stdin):
    if p.get("type") == "perf_event" and p.get("id") in ids:
        found = True
        t += p.get("run_time_ns", 0)
        c += p.get("run_cnt", 0)
if found:
    print(t, c)
' "$ids"
}

echo "== load average before: $(cut -d" " -f1-3 /proc/loadavg); $(nproc) CPUs"
echo "== rill profile --pid (python3 busy loop), 97 Hz, ${DURATION}s, ${RUNS} runs"
printf '%-5s %12s %10s %10s %10s %10s %8s\n' run run_time_ns run_cnt samples ns/run ns/sample cpu_s
: >"$WORK/results"
for run in $(seq "$RUNS"); do
    busy $((DURATION + 4))
    /usr/bin/time -f "%U %S" -o "$WORK/rill.time" \
        "$RILL" profile --pid "$BUSY" --duration "${DURATION}s" --output "$WORK/p.pb.gz" \
        >"$WORK/rill.log" 2>&1 &
    TIME_PID=$!
    RILL_PID=
    LAST=
    while kill -0 "$TIME_PID" 2>/dev/null; do
        [ -n "$RILL_PID" ] || RILL_PID=$(pgrep -P "$TIME_PID" || true)
        if [ -n "$RILL_PID" ]; then
            S=$(prog_stats "$RILL_PID" || true)
            [ -n "$S" ] && LAST=$S
        fi
        sleep 0.2
    done
    wait "$TIME_PID" || { echo "rill profile failed:"; cat "$WORK/rill.log"; exit 1; }
    kill "$BUSY" 2>/dev/null || true
    wait "$BUSY" 2>/dev/null || true
    [ -n "$LAST" ] || { echo "no perf_event program of rill seen in bpftool prog show"; exit 1; }
    read -r RT RC <<<"$LAST"
    SAMPLES=$(awk '/ samples in /{print $1; exit}' "$WORK/rill.log")
    read -r CU CS < <(tail -1 "$WORK/rill.time")
    "$PY" - "$run" "$RT" "$RC" "${SAMPLES:-0}" "$CU" "$CS" <<'EOF' | tee -a "$WORK/results"
import sys
run, rt, rc, samples = (int(x) for x in sys.argv[1:5])
cpu = float(sys.argv[5]) + float(sys.argv[6])
per_run = rt / rc if rc else float("nan")
per_sample = rt / samples if samples else float("nan")
print(f"{run:<5} {rt:>12} {rc:>10} {samples:>10} {per_run:>10.0f} {per_sample:>10.0f} {cpu:>8.2f}")
EOF
done
"$PY" - "$WORK/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
col = lambda i: statistics.median(float(r[i]) for r in rows)
print(f"median: ns/run {col(4):.0f}, ns/sample {col(5):.0f}, rill CPU {col(6):.2f} s "
      f"({len(rows)} runs)")
EOF

# The peer: perf's own CPU for the same workload and duration.
perf_cpu() {
    busy $((DURATION + 2))
    /usr/bin/time -f "%U %S" -o "$WORK/perf.time" \
        perf record -F 97 -a "$@" -o "$WORK/perf.data" -- sleep "$DURATION" >"$WORK/perf.log" 2>&1
    kill "$BUSY" 2>/dev/null || true
    wait "$BUSY" 2>/dev/null || true
    read -r PU PS < <(tail -1 "$WORK/perf.time")
    SIZE=$(stat -c %s "$WORK/perf.data")
    rm -f "$WORK/perf.data"
    "$PY" -c "print(f'{float($PU) + float($PS):.2f} s CPU, {$SIZE / 1e6:.1f} MB written')"
}
echo "== perf record -F 97 -a -g, ${DURATION}s, same workload: $(perf_cpu -g)"
echo "== perf record -F 97 -a --call-graph dwarf, ${DURATION}s, same workload: $(perf_cpu --call-graph dwarf)"
