#!/usr/bin/env bash
# Cost of rill's off-CPU profiles under a context-switch storm.
#
# The storm is scripts/bench/pingpong.c: two threads of one process pass a byte back and forth
# through two pipes, ROUNDS times (default 500000; every round wakes each thread once, and on a
# busy machine switches contexts twice). It runs RUNS times (default 5, at least 3) in each
# setup, with the profiler told the storm's pid (the storm is profiled, the rest of the host
# is not):
#   none       no profiler
#   rill-1.0   `rill profile --off-cpu --off-cpu-threshold 1.0 --pid PID` (every switch-out of
#              the storm recorded with its stacks)
#   rill-0.01  the same at 0.01
#   rill-cpu   `rill profile --pid PID` without --off-cpu (the CPU sampler and rill's user space
#              alone: what the off-CPU program adds is rill-0.01 against this)
#   hook       an empty program on the same hook (scripts/bench/empty_switch.bpf.c, attached
#              by scripts/bench/attach.c with libbpf): the floor any sched_switch program pays
#   offcputime libbpf-tools' offcputime -p PID (bcc's tool on CO-RE; the Python
#              offcputime-bpfcc needs kernel headers)
# and prints the median storm time of each and its ratio to `none` (the slowdown). The setups
# are interleaved run by run so that a change in the machine's load hits all of them. Then, in
# runs of their own (the statistics cost two clock reads per program run, so they are off
# while the storm is timed), the in-kernel cost of rill's sched_switch program
# (kernel.bpf_stats_enabled: run time / runs over a storm; the program runs on every context
# switch of the host, profiled or not).
#
# RILL_BASE=/path/to/another/rill adds a setup base-0.01 (that binary at 0.01) for an A/B.
# PLACEMENTS (default "spread pinned") chooses where the storm's threads run (see measure).
#
# Needs root, gcc, clang and libbpf-dev, taskset, bpftool, python3, /usr/sbin/offcputime and a
# release build of rill (built here if missing; RILL=/path/to/rill to use another binary, CARGO_TARGET_DIR is honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-500000}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RILL=${RILL:-$TARGET_DIR/release/rill}
OFFCPUTIME=${OFFCPUTIME:-/usr/sbin/offcputime}
WORK=$(mktemp -d /tmp/rill-bench-offcpu.XXXXXX)
PROFILER=

STORM=
PIN=
PROFILER_PIN=
stop_profiler() {
    if [ -n "$PROFILER" ]; then
        kill -INT "$PROFILER" 2>/dev/null || true
        wait "$PROFILER" 2>/dev/null || true
        PROFILER=
    fi
}
cleanup() {
    stop_profiler
    [ -n "$STORM" ] && kill "$STORM" 2>/dev/null || true
    sysctl -q kernel.bpf_stats_enabled=0 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-offcpu: needs root" >&2; exit 1; }
[ "$RUNS" -ge 3 ] || { echo "bench-offcpu: RUNS must be at least 3" >&2; exit 1; }
for t in gcc clang taskset bpftool python3 "$OFFCPUTIME"; do
    command -v "$t" >/dev/null || { echo "bench-offcpu: $t is required" >&2; exit 1; }
done
if [ ! -x "$RILL" ]; then
    (cd "$ROOT" && cargo build --release -p rill)
fi

gcc -O2 -pthread -o "$WORK/pingpong" "$ROOT/scripts/bench/pingpong.c"
gcc -O2 -o "$WORK/attach" "$ROOT/scripts/bench/attach.c" -lbpf
clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$ROOT/scripts/bench/empty_switch.bpf.c" \
    -o "$WORK/empty_switch.bpf.o"

# Starts the storm and waits for its "ready": STORM is its pid, fd 3 its standard input, fd 4
# its standard output. Both are FIFOs read and written by bash's builtins, so that waiting for
# the storm starts no process: a polling loop of `wc`/`sed` would start a hundred processes a
# second, which the profilers (rill discovers and decides every new process) would then pay for
# inside the timed storm.
start_storm() {
    rm -f "$WORK/in" "$WORK/out"
    mkfifo "$WORK/in" "$WORK/out"
    $PIN "$WORK/pingpong" "$ROUNDS" <"$WORK/in" >"$WORK/out" &
    STORM=$!
    exec 3>"$WORK/in" 4<"$WORK/out"
    local line
    if ! read -r -t 10 line <&4 || [ "$line" != ready ]; then
        echo "bench-offcpu: the storm did not start" >&2
        exit 1
    fi
}

# Runs the storm: prints its seconds.
run_storm() {
    local t
    echo go >&3
    if ! read -r -t 120 t <&4; then
        echo "bench-offcpu: the storm did not finish" >&2
        exit 1
    fi
    echo "$t"
}

end_storm() {
    exec 3>&- 4<&-
    wait "$STORM" 2>/dev/null || true
}

# Waits until a BPF program with this name is loaded.
wait_program() {
    for _ in $(seq 200); do
        bpftool prog show name "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-offcpu: program $1 never appeared" >&2
    exit 1
}

# "run_time_ns run_cnt" of the loaded program with this name.
prog_stats() {
    bpftool -j prog show name "$1" 2>/dev/null |
        python3 -c 'import json,sys
d=json.load(sys.stdin)
d=d[0] if isinstance(d,list) else d
print(d.get("run_time_ns",0), d.get("run_cnt",0))'
}

start_profiler() {
    case "$1" in
    none) ;;
    rill-cpu)
        $PROFILER_PIN "$RILL" profile --pid "$STORM" --duration 10m --format folded \
            --output "$WORK/out.folded" 2>"$WORK/rill.log" &
        PROFILER=$!
        wait_program profile_cpu_unwind
        sleep 1
        ;;
    rill-* | base-*)
        local bin=$RILL
        [ "${1%%-*}" = base ] && bin=$RILL_BASE
        $PROFILER_PIN "$bin" profile --off-cpu --off-cpu-threshold "${1#*-}" --pid "$STORM" --duration 10m \
            --format folded --output "$WORK/out.folded" 2>"$WORK/rill.log" &
        PROFILER=$!
        wait_program offcpu_switch_unwind
        sleep 1 # the storm's maps and tables
        ;;
    hook)
        $PROFILER_PIN "$WORK/attach" "$WORK/empty_switch.bpf.o" >"$WORK/attach.out" 2>&1 &
        PROFILER=$!
        wait_program empty_switch
        ;;
    offcputime)
        $PROFILER_PIN "$OFFCPUTIME" -p "$STORM" >"$WORK/offcputime.out" 2>&1 &
        PROFILER=$!
        wait_program sched_switch
        sleep 1
        ;;
    esac
}

SETUPS=(none hook rill-cpu rill-1.0 rill-0.01 offcputime)
# RILL_BASE=/path/to/an/older/rill adds its 0.01 run beside the others (an A/B of a change).
[ -n "${RILL_BASE:-}" ] && SETUPS+=(base-0.01)
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# One placement of the storm: "spread" (the scheduler's choice: the threads on both CPUs, every
# round two cross-CPU wake-ups and switches to and from idle, as `perf bench sched pipe` runs by
# default) or "pinned" (both threads on CPU 0 with taskset: every round two switches between
# them and nothing else, the densest storm and the in-kernel program's worst case; the
# profiler's own threads on CPU 1, so that what slows the storm is the programs on its switches
# and samples, not the profiler's user space taking its CPU).
measure() {
    local placement=$1
    case "$placement" in
    spread) PIN= PROFILER_PIN= ;;
    pinned) PIN="taskset -c 0" PROFILER_PIN="taskset -c 1" ;;
    *) echo "bench-offcpu: unknown placement $placement" >&2; exit 1 ;;
    esac
    declare -A TIMES NS
    sysctl -q kernel.bpf_stats_enabled=0
    for run in $(seq "$RUNS"); do
        for setup in "${SETUPS[@]}"; do
            start_storm
            start_profiler "$setup"
            t=$(run_storm)
            stop_profiler
            end_storm
            TIMES[$setup]="${TIMES[$setup]:-} $t"
            echo "$placement run $run $setup: ${t}s" >&2
        done
    done
    sysctl -q kernel.bpf_stats_enabled=1
    for run in 1 2 3; do
        for setup in rill-1.0 rill-0.01; do
            start_storm
            start_profiler "$setup"
            read -r b_ns b_cnt <<<"$(prog_stats offcpu_switch_unwind)"
            run_storm >/dev/null
            read -r a_ns a_cnt <<<"$(prog_stats offcpu_switch_unwind)"
            stop_profiler
            end_storm
            if [ "$a_cnt" -gt "$b_cnt" ]; then
                NS[$setup]="${NS[$setup]:-} $(( (a_ns - b_ns) / (a_cnt - b_cnt) ))"
            fi
        done
    done
    sysctl -q kernel.bpf_stats_enabled=0
    local base m ns
    base=$(echo "${TIMES[none]}" | median)
    echo
    echo "pingpong $ROUNDS rounds, $placement, median of $RUNS runs (load average $(cut -d' ' -f1 /proc/loadavg))"
    printf '%-12s %10s %10s %16s\n' setup "time(s)" slowdown "ns/run (kernel)"
    for setup in "${SETUPS[@]}"; do
        m=$(echo "${TIMES[$setup]}" | median)
        ns=$( [ -n "${NS[$setup]:-}" ] && echo "${NS[$setup]}" | median || echo "-")
        printf '%-12s %10s %10s %16s\n' "$setup" "$m" "$(python3 -c "print(f'{$m/$base:.3f}')")" "$ns"
    done
}

for placement in ${PLACEMENTS:-spread pinned}; do
    measure "$placement"
done
