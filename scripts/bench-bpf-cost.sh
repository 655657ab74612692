#!/usr/bin/env bash
# In-kernel cost per sample of rill's perf_event program against BPF profilers measured in the
# same run, on one busy interpreter (Debian's python3 by default; PYBIN=... for another).
#
# Cost is what `kernel.bpf_stats_enabled` charges: run_time_ns / run_cnt of each profiler's
# perf_event programs between two snapshots taken while it runs. The program also runs for
# every other sample of the host (the idle task, other processes), which return early; their
# cost is measured in a first phase with a filter that matches only a sleeping process, and subtracted:
#
#   per workload sample = (run_time_B - (runs_B - n) * other_A) / n
#
# where n is the workload's expected samples in the window (its CPU time × the rate, from
# /proc/PID/stat). The peer is bpftrace (`@[ustack, kstack] = count()`: user and kernel stacks
# by the kernel's frame-pointer walk, bpf_get_stackid, what bcc's `profile` does too; bcc's
# Python tools need kernel headers, which this kernel does not ship, so bcc itself cannot run
# here). rill runs twice: the table walk with Python frames off and on. Each phase runs
# ROUNDS times, the profilers taking turns within a round; the medians are printed with
# rill/peer ratios.
#
# RILL_BASE=/path/to/another/rill adds that build (python off; RILL_BASE_PYTHON=true: on) to the
# same run, to compare two versions of the program.
#
# FLOOR=1 (the default) adds the floor of any profiler here: bpftrace programs that only count
# the sample, and that also read the user stack once and 32 times.
#
# Needs root, bpftool, bpftrace and a build of rill (RILL=...).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RILL=${RILL:-$TARGET_DIR/release/rill}
PYBIN=${PYBIN:-/usr/bin/python3}
RATE=${RATE:-997}
WINDOW=${WINDOW:-6}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/rill-bench-cost.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    sysctl -q kernel.bpf_stats_enabled="${OLD_STATS:-0}" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-bpf-cost: needs root" >&2; exit 1; }
for t in bpftool bpftrace "$PYBIN" python3; do
    command -v "$t" >/dev/null || { echo "bench-bpf-cost: $t is required" >&2; exit 1; }
done
if [ ! -x "$RILL" ]; then
    (cd "$ROOT" && cargo build --release -p rill)
fi
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1

"$PYBIN" -c 'while True: pass' &
PY=$!
PIDS+=("$PY")
sleep 0.5
# The first phase's filter: a process that exists but never runs.
sleep 100000 &
BOGUS=$!
PIDS+=("$BOGUS")

# Sum of run_time_ns and run_cnt of the perf_event programs whose name starts with $1.
stats() {
    bpftool prog show -j | python3 -c '
import json, sys
t = n = 0
for p in json.load(sys.stdin):
    if p.get("type") == "perf_event" and p.get("name", "").startswith(sys.argv[1]):
        t += p.get("run_time_ns", 0); n += p.get("run_cnt", 0)
print(t, n)' "$1"
}
# CPU ticks of the workload.
ticks() { awk '{print $14 + $15}' "/proc/$PY/stat"; }

# measure PROGPREFIX FN ARGS...: starts FN ARGS (a function that execs the profiler), waits for its program, snapshots over WINDOW s.
# Prints "runtime runs workload_samples".
measure() {
    local prefix=$1
    shift
    ("$@") >"$WORK/out" 2>&1 &
    local p=$!
    local i
    for i in $(seq 1 100); do
        [ "$(stats "$prefix")" != "0 0" ] && break
        sleep 0.1
    done
    sleep 1
    read -r t0 n0 < <(stats "$prefix")
    local k0
    k0=$(ticks)
    sleep "$WINDOW"
    read -r t1 n1 < <(stats "$prefix")
    local k1
    k1=$(ticks)
    # bpftrace has been seen to miss a SIGTERM that came while another program was loading:
    # give it 5 s, then kill it.
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    local hz
    hz=$(getconf CLK_TCK)
    echo "$((t1 - t0)) $((n1 - n0)) $(python3 -c "print(round(($k1 - $k0) / $hz * $RATE))")"
}

rill_cmd() { # PID PYTHON [BINARY]
    exec "${3:-$RILL}" profile --pid "$1" --duration "$((WINDOW + 30))s" --sample-rate "$RATE" \
        --python "$2" --format folded -o /dev/null
}
bt_cmd() {
    exec bpftrace -e "profile:hz:$RATE /pid == $1/ { @[ustack, kstack] = count(); }"
}
# The floor (FLOOR=1, the default): a bpftrace program that only counts the sample, and one
# that also makes N 8-byte reads of the user stack 32 bytes apart (inside the interpreter's
# frames): what any profiler pays on this machine before it walks, and per read of user memory.
bt_reads_cmd() { # PID N
    local sum="" i
    for i in $(seq 0 $(($2 - 1))); do sum="$sum + *(uint64 *)uptr(reg(\"sp\") + $((i * 32)))"; done
    if [ "$2" = 0 ]; then
        exec bpftrace -e "profile:hz:$RATE /pid == $1/ { @n = count(); }"
    fi
    exec bpftrace -e "profile:hz:$RATE /pid == $1/ { @n = count(); @v = ${sum:3}; }"
}

declare -A RESULT
# One round of one profiler: its other-sample cost, then its cost per workload sample.
run_round() { # ROUND LABEL PREFIX CMDFN [ARGS]
    local round=$1 label=$2 prefix=$3 fn=$4
    shift 4
    local other per
    read -r ta na _ < <(measure "$prefix" "$fn" "$BOGUS" "$@")
    read -r tb nb ns < <(measure "$prefix" "$fn" "$PY" "$@")
    read -r other per < <(python3 -c "
ta, na, tb, nb, ns = $ta, $na, $tb, $nb, $ns
o = ta / max(na, 1)
print(round(o), round((tb - (nb - ns) * o) / max(ns, 1)))")
    echo "  $label round $round: other samples $other ns, workload samples $per ns ($ns samples)"
    RESULT[$label]="${RESULT[$label]:-} $per"
}

echo "bench-bpf-cost: $PYBIN busy loop, $RATE Hz, ${WINDOW}s windows, $ROUNDS rounds"
LABELS=("rill (tables, python off)" "rill (tables, python on)")
if [ -n "${RILL_BASE:-}" ]; then
    BASE_LABEL="rill base (python $([ "${RILL_BASE_PYTHON:-false}" = true ] && echo on || echo off))"
    LABELS+=("$BASE_LABEL")
fi
# The profilers take turns within each round (the machine's speed drifts over minutes: a
# profiler measured in rounds of its own would carry that drift as a difference).
for round in $(seq 1 "$ROUNDS"); do
    run_round "$round" "rill (tables, python off)" profile_cpu rill_cmd false
    run_round "$round" "rill (tables, python on)" profile_cpu rill_cmd true
    if [ -n "${RILL_BASE:-}" ]; then
        run_round "$round" "$BASE_LABEL" profile_cpu rill_cmd "${RILL_BASE_PYTHON:-false}" "$RILL_BASE"
    fi
    run_round "$round" "bpftrace (fp)" "$RATE" bt_cmd
    if [ "${FLOOR:-1}" = 1 ]; then
        run_round "$round" "floor: count only" "$RATE" bt_reads_cmd 0
        run_round "$round" "floor: 1 user read" "$RATE" bt_reads_cmd 1
        run_round "$round" "floor: 32 user reads" "$RATE" bt_reads_cmd 32
    fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median in-kernel ns per workload sample:"
LABELS+=("bpftrace (fp)")
if [ "${FLOOR:-1}" = 1 ]; then
    LABELS+=("floor: count only" "floor: 1 user read" "floor: 32 user reads")
fi
for k in "${LABELS[@]}"; do
    printf '  %-28s %6s\n' "$k" "$(echo "${RESULT[$k]}" | median)"
done
r=$(echo "${RESULT["rill (tables, python off)"]}" | median)
t=$(echo "${RESULT["bpftrace (fp)"]}" | median)
p=$(echo "${RESULT["rill (tables, python on)"]}" | median)
python3 -c "print('ratios: rill (python off)/bpftrace %.2f, rill (python on)/bpftrace %.2f' % ($r / $t, $p / $t))"
if [ "${FLOOR:-1}" = 1 ]; then
    c=$(echo "${RESULT["floor: count only"]}" | median)
    r32=$(echo "${RESULT["floor: 32 user reads"]}" | median)
    python3 -c "print('floor: %d ns a sample before any read, %.0f ns per 8-byte user read' % ($c, ($r32 - $c) / 32))"
fi
if [ -n "${RILL_BASE:-}" ]; then
    mine=$([ "${RILL_BASE_PYTHON:-false}" = true ] && echo "rill (tables, python on)" || echo "rill (tables, python off)")
    b=$(echo "${RESULT[$BASE_LABEL]}" | median)
    m=$(echo "${RESULT[$mine]}" | median)
    python3 -c "print('this build/base (same Python setting): %.2f' % ($m / $b))"
fi
