#!/usr/bin/env bash
# Cost of Python frames on a Python-heavy host: four busy CPython interpreters (Debian's
# python3, each 30 Python frames deep), profiled whole-host by `rill profile` for DURATION
# seconds with `--python false` and `--python true`, alternating, ROUNDS times. Prints rill's
# user+system CPU seconds and peak RSS (GNU time) and the in-kernel time per sample of the
# sampling program (kernel.bpf_stats_enabled; charged to the interrupted tasks, not to rill),
# then the medians and the python/native ratios.
#
# Needs root, /usr/bin/python3, bpftool and a release build of rill (built here if missing;
# RILL=/path/to/rill to use another binary, CARGO_TARGET_DIR is honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RILL=${RILL:-$TARGET_DIR/release/rill}
WORK=$(mktemp -d /tmp/rill-bench-python.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    sysctl -q kernel.bpf_stats_enabled="${STATS_WAS:-0}" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-python: needs root" >&2; exit 1; }
for t in /usr/bin/python3 bpftool /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench-python: $t is required" >&2; exit 1; }
done
if [ ! -x "$RILL" ]; then
    (cd "$ROOT" && cargo build --release -p rill)
fi

STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1

cat >"$WORK/deep.py" <<'EOF'
def f(n):
    if n == 0:
        while True: pass
    f(n - 1)
f(29)
EOF
for _ in 1 2 3 4; do
    /usr/bin/python3 "$WORK/deep.py" &
    PIDS+=($!)
done
sleep 1

# One run: prints "cpu_seconds peak_rss_kb ns_per_sample".
run() {
    local python=$1
    /usr/bin/time -f "%U %S %M" -o "$WORK/time" \
        "$RILL" profile --duration "${DURATION}s" --python "$python" --format folded \
        -o "$WORK/out.folded" 2>"$WORK/err" &
    local rill=$!
    # The program's counters while it is loaded, read just before the end.
    sleep $((DURATION - 1))
    local stats
    stats=$(bpftool prog show name profile_cpu_unwind 2>/dev/null | grep -o 'run_time_ns [0-9]* run_cnt [0-9]*' || true)
    wait "$rill"
    local ns=0
    if [ -n "$stats" ]; then
        ns=$(echo "$stats" | awk '{ if ($4 > 0) printf "%.0f", $2 / $4; else print 0 }')
    fi
    awk -v ns="$ns" '{ printf "%.2f %d %s\n", $1 + $2, $3, ns }' "$WORK/time"
}

declare -a NATIVE PYTHON
for r in $(seq "$ROUNDS"); do
    n=$(run false)
    p=$(run true)
    echo "round $r: native (cpu s, rss kB, ns/sample) $n; python $p"
    NATIVE+=("$n")
    PYTHON+=("$p")
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
col() { local i=$1; shift; printf '%s\n' "$@" | awk -v i="$i" '{ print $i }'; }
nc=$(col 1 "${NATIVE[@]}" | median); pc=$(col 1 "${PYTHON[@]}" | median)
nr=$(col 2 "${NATIVE[@]}" | median); pr=$(col 2 "${PYTHON[@]}" | median)
nn=$(col 3 "${NATIVE[@]}" | median); pn=$(col 3 "${PYTHON[@]}" | median)
echo "median rill CPU: native ${nc}s, python ${pc}s ($(awk -v a="$pc" -v b="$nc" 'BEGIN { printf "%.2f", a / b }')x)"
echo "median peak RSS: native ${nr} kB, python ${pr} kB"
echo "median in-kernel ns per sample: native ${nn}, python ${pn} ($(awk -v a="$pn" -v b="$nn" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')x)"
echo "python frames in the last profile: $(grep -c ';f;f' "$WORK/out.folded" || true) stacks with f;f"
