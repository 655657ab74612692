#!/usr/bin/env bash
# Churn/soak run of `rill run` (root, eBPF, Docker).
#
# rill profiles at 97 Hz (discovery.docker -> pyroscope.ebpf -> pyroscope.write -> local sinks)
# while this script starts CHURN_RATE short-lived processes per second and a short-lived
# FROM-scratch container every 2 s (each running one of BINARIES copies of a static program, so
# the ELF cache sees many files), and reloads rill every RELOAD_EVERY seconds, alternating a
# config with the profiler "cpu" and one without it. A second profiler, "steady", with small
# caches (pid_cache_size 8, elf_cache_size 16, container_id_cache_size 16), stays loaded across
# every reload, so that its caches live through the whole churn. Every SAMPLE_EVERY seconds the
# script records rill's RSS, open file descriptors, the BPF programs and maps it holds (and the
# host's, from bpftool) and the sizes of "steady"'s caches (pid and ELF symbol caches, container
# IDs, processes known; from the component's debug info in the JSON API) to $OUT/samples.csv.
#
# Checks at the end (exit 1 on failure):
#  * rill is still running and answered every reload with 200;
#  * with "cpu" removed, rill holds exactly the BPF programs and maps it held with "steady"
#    alone (its fds on anon_inode:bpf-prog/bpf-map); with "cpu" re-added, as many as at the
#    first load; with both removed, none;
#  * open fds return to within FD_TOLERANCE of the baseline (taken after the warm-up);
#  * RSS at the end is at most baseline * RSS_FACTOR + RSS_SLACK_KIB;
#  * "steady"'s caches never exceed their configured sizes, and the processes it knows stay
#    under KNOWN_MAX (exited processes are forgotten), in every sample;
#  * "cpu" pushed at least once per three of its windows (each window sees a container or two),
#    "steady" at least once per 12 s, and the writers counted no dropped profiles;
#  * no panic in rill's log.
#
# Env: DURATION (s, default 150), RELOAD_EVERY (4), SAMPLE_EVERY (5), RILL (binary, default
# $CARGO_TARGET_DIR/debug/rill), OUT (default a temp dir, kept), FD_TOLERANCE (8),
# RSS_FACTOR (1.5), RSS_SLACK_KIB (20480), KNOWN_MAX (2000), CHURN_RATE (300), BINARIES (24),
# TARGETS_ONLY (true; false profiles the whole host with "cpu").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-150}
RELOAD_EVERY=${RELOAD_EVERY:-4}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
FD_TOLERANCE=${FD_TOLERANCE:-8}
RSS_FACTOR=${RSS_FACTOR:-1.5}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-20480}
KNOWN_MAX=${KNOWN_MAX:-2000}
CHURN_RATE=${CHURN_RATE:-300}
BINARIES=${BINARIES:-24}
RILL=${RILL:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rill}
OUT=${OUT:-$(mktemp -d /tmp/rill-soak.XXXXXX)}
IMAGE=rill-soak-busy:latest
# Cache sizes of the steady profiler (checked against the samples).
STEADY_PID_CACHE=8
STEADY_ELF_CACHE=16
STEADY_CID_CACHE=16
PIDS=()
FAIL=0

log() { echo "soak: $*" >&2; }
fail() { log "FAIL: $*"; FAIL=1; }
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    docker ps -q --filter "label=rill-soak=1" | xargs -r docker rm -f >/dev/null 2>&1 || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap "exit 1" INT TERM

[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
for t in gcc bpftool docker python3 curl; do
    command -v "$t" >/dev/null || { log "$t is required"; exit 1; }
done
[ -x "$RILL" ] || { log "no rill binary at $RILL (set RILL=)"; exit 1; }
mkdir -p "$OUT"
log "output in $OUT"

# The container workload: a static program that burns CPU for ~1 s and exits, in BINARIES
# copies (distinct files: distinct ELF cache entries).
cat >"$OUT/busy.c" <<'C'
#include <time.h>
int main(void) {
    volatile unsigned long x = 0;
    time_t end = time(0) + 1;
    while (time(0) < end) x++;
    return 0;
}
C
rm -rf "$OUT/img"
mkdir -p "$OUT/img"
gcc -static -O1 -o "$OUT/img/busy0" "$OUT/busy.c"
for i in $(seq 1 $((BINARIES - 1))); do cp "$OUT/img/busy0" "$OUT/img/busy$i"; done
printf 'FROM scratch\nCOPY busy* /\n' >"$OUT/img/Dockerfile"
docker build -q -t "$IMAGE" "$OUT/img" >/dev/null

# Push sinks that answer 200, count requests and log each one (time, bytes) to PUSHES.log.
cat >"$OUT/sink.py" <<'PY'
import http.server, sys, time
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global n
        size = len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        n += 1
        with open(sys.argv[2], "w") as f:
            f.write(str(n))
        with open(sys.argv[2] + ".log", "a") as f:
            f.write("%.3f %d\n" % (time.time(), size))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK_PORT=$(free_port)
STEADY_SINK_PORT=$(free_port)
HTTP_PORT=$(free_port)
echo 0 >"$OUT/pushes"
echo 0 >"$OUT/pushes-steady"
python3 "$OUT/sink.py" "$SINK_PORT" "$OUT/pushes" &
PIDS+=($!)
python3 "$OUT/sink.py" "$STEADY_SINK_PORT" "$OUT/pushes-steady" &
PIDS+=($!)

COMMON="logging {
  level = \"warn\"
}

pyroscope.write \"sink\" {
  endpoint {
    url = \"http://127.0.0.1:$SINK_PORT\"
  }
}

pyroscope.write \"steady\" {
  endpoint {
    url = \"http://127.0.0.1:$STEADY_SINK_PORT\"
  }
}

discovery.docker \"containers\" {
  host             = \"unix:///var/run/docker.sock\"
  refresh_interval = \"5s\"
}
"
# Containers are discovered and profiled; every other process still goes through the probe's
# unknown-pid/exec/exit path (decided, cached, forgotten) but is not symbolized, which keeps a
# debug build affordable. TARGETS_ONLY=false profiles the whole host with "cpu" instead.
STEADY="pyroscope.ebpf \"steady\" {
  targets                 = discovery.docker.containers.targets
  sample_rate             = 97
  collect_interval        = \"3s\"
  pid_cache_size          = $STEADY_PID_CACHE
  elf_cache_size          = $STEADY_ELF_CACHE
  container_id_cache_size = $STEADY_CID_CACHE
  forward_to              = [pyroscope.write.steady.receiver]
}
"
EBPF="pyroscope.ebpf \"cpu\" {
  targets          = discovery.docker.containers.targets
  targets_only     = ${TARGETS_ONLY:-true}
  sample_rate      = 97
  collect_interval = \"3s\"
  forward_to       = [pyroscope.write.sink.receiver]
}
"
printf '%s\n%s\n%s' "$COMMON" "$STEADY" "$EBPF" >"$OUT/with-ebpf.river"
printf '%s\n%s' "$COMMON" "$STEADY" >"$OUT/without-ebpf.river"
printf '%s' "$COMMON" >"$OUT/no-profiler.river"

# BPF objects held by rill: its file descriptors on BPF programs and maps (other processes on
# the host may load their own meanwhile). The host-wide bpftool counts go to samples.csv.
RILL_PID=0
bpf_count() {
    if [ "$RILL_PID" = 0 ]; then echo 0; return; fi
    ls -l "/proc/$RILL_PID/fd" 2>/dev/null | grep -c "anon_inode:bpf-$1" || true
}
host_bpf() { bpftool "$1" show 2>/dev/null | grep -c '^[0-9]' || true; }
bpf_progs() { bpf_count prog; }
bpf_maps() { bpf_count map; }
# A profiler's cache sizes from its debug info:
# "pid_cache,elf_cache,elf_build_ids,container_ids,processes_known" (empty fields when absent).
ebpf_caches() {
    curl -s "http://127.0.0.1:$HTTP_PORT/api/v0/web/components/pyroscope.ebpf.$1" | python3 -c '
import json, sys
try:
    info = {a["name"]: a["value"].get("value") for a in json.load(sys.stdin).get("debugInfo", [])}
except Exception:
    info = {}
keys = ["pid_cache_size", "elf_cache_size", "elf_cache_build_id_size", "container_id_cache_size", "processes_known"]
print(",".join("" if info.get(k) is None else str(info[k]) for k in keys))'
}
log "host-wide before rill: $(host_bpf prog) BPF programs, $(host_bpf map) maps"

cp "$OUT/without-ebpf.river" "$OUT/config.river"
"$RILL" run "$OUT/config.river" --server.http.listen-addr="127.0.0.1:$HTTP_PORT" \
    --storage.path="$OUT/data" 2>"$OUT/rill.log" &
RILL_PID=$!
PIDS+=($RILL_PID)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/-/ready" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$HTTP_PORT/-/ready" >/dev/null || { log "rill not ready"; exit 1; }

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$RILL_PID/status"; }
fds() { ls "/proc/$RILL_PID/fd" | wc -l; }
reload() {
    cp "$OUT/$1.river" "$OUT/config.river"
    local code
    code=$(curl -s -o "$OUT/reload.out" -w '%{http_code}' -X POST "http://127.0.0.1:$HTTP_PORT/-/reload")
    [ "$code" = 200 ] || fail "reload to $1 answered $code: $(cat "$OUT/reload.out")"
}

# The steady profiler alone, then the warm-up with both: the baselines.
sleep 3
PROGS0=$(bpf_progs)
MAPS0=$(bpf_maps)
reload with-ebpf
sleep 8
PROGS1=$(bpf_progs)
MAPS1=$(bpf_maps)
RSS0=$(rss)
FD0=$(fds)
log "steady profiler alone: progs=$PROGS0 maps=$MAPS0; with cpu: progs=$PROGS1 maps=$MAPS1 rss=${RSS0}KiB fds=$FD0"
[ "$PROGS0" -gt 0 ] || fail "the steady profiler loaded no BPF program"
[ "$PROGS1" -gt "$PROGS0" ] || fail "pyroscope.ebpf.cpu loaded no BPF program"

echo "t,rss_kib,fds,bpf_progs,bpf_maps,procs_spawned,containers_started,reloads,pushes,pushes_steady,host_bpf_progs,host_bpf_maps,pid_cache,elf_cache,elf_build_ids,container_ids,processes_known" >"$OUT/samples.csv"
sample() {
    echo "$1,$(rss),$(fds),$(bpf_progs),$(bpf_maps),$PROCS,$CONTAINERS,$RELOADS,$(cat "$OUT/pushes"),$(cat "$OUT/pushes-steady"),$(host_bpf prog),$(host_bpf map),$(ebpf_caches steady)" >>"$OUT/samples.csv"
}
START=$(date +%s)
START_MS=$(($(date +%s%N) / 1000000))
NEXT_RELOAD=$((START + RELOAD_EVERY))
NEXT_SAMPLE=$START
NEXT_CONTAINER=$START
PROCS=0
CONTAINERS=0
RELOADS=0
STATE=with-ebpf
WINDOWS=1
while :; do
    NOW=$(date +%s)
    [ $((NOW - START)) -ge "$DURATION" ] && break
    kill -0 "$RILL_PID" 2>/dev/null || { fail "rill died"; break; }
    # Short-lived processes (each exec'd, profiled if it gets a sample), CHURN_RATE per second
    # whatever the machine's speed: bursts of up to 50 until the count due by now is reached.
    DUE=$(( ($(date +%s%N) / 1000000 - START_MS) * CHURN_RATE / 1000 ))
    BURST=$((DUE - PROCS))
    [ "$BURST" -gt 50 ] && BURST=50
    for _ in $(seq "$BURST"); do /bin/true & done
    [ "$BURST" -gt 0 ] && PROCS=$((PROCS + BURST))
    if [ "$NOW" -ge "$NEXT_CONTAINER" ]; then
        docker run -d --rm --label rill-soak=1 "$IMAGE" "/busy$((CONTAINERS % BINARIES))" \
            >/dev/null 2>&1 && CONTAINERS=$((CONTAINERS + 1))
        NEXT_CONTAINER=$((NOW + 2))
    fi
    if [ "$NOW" -ge "$NEXT_RELOAD" ]; then
        if [ "$STATE" = with-ebpf ]; then
            STATE=without-ebpf
        else
            STATE=with-ebpf
            WINDOWS=$((WINDOWS + 1))
        fi
        reload "$STATE"
        RELOADS=$((RELOADS + 1))
        NEXT_RELOAD=$((NOW + RELOAD_EVERY))
    fi
    if [ "$NOW" -ge "$NEXT_SAMPLE" ]; then
        sample $((NOW - START))
        NEXT_SAMPLE=$((NOW + SAMPLE_EVERY))
    fi
    sleep 0.1
done
# Reap the short-lived children (not rill or the sinks).
for j in $(jobs -p); do
    case " ${PIDS[*]} " in *" $j "*) ;; *) wait "$j" 2>/dev/null || true ;; esac
done
docker ps -q --filter "label=rill-soak=1" | xargs -r docker wait >/dev/null 2>&1 || true

# End state 1: "cpu" removed -> only the steady profiler's BPF objects left.
reload without-ebpf
sleep 3
PROGS_OFF=$(bpf_progs)
MAPS_OFF=$(bpf_maps)
[ "$PROGS_OFF" -eq "$PROGS0" ] || fail "BPF programs without cpu: $PROGS_OFF, steady alone: $PROGS0"
[ "$MAPS_OFF" -eq "$MAPS0" ] || fail "BPF maps without cpu: $MAPS_OFF, steady alone: $MAPS0"
# End state 2: "cpu" back -> same objects, memory and fds back near the baseline.
reload with-ebpf
sleep 8
PROGS_ON=$(bpf_progs)
MAPS_ON=$(bpf_maps)
RSS1=$(rss)
FD1=$(fds)
sample end
[ "$PROGS_ON" -eq "$PROGS1" ] || fail "BPF programs with cpu: $PROGS_ON, first load: $PROGS1"
[ "$MAPS_ON" -eq "$MAPS1" ] || fail "BPF maps with cpu: $MAPS_ON, first load: $MAPS1"
[ "$FD1" -le $((FD0 + FD_TOLERANCE)) ] || fail "fds $FD1 > baseline $FD0 + $FD_TOLERANCE"
RSS_MAX=$(python3 -c "print(int($RSS0 * $RSS_FACTOR + $RSS_SLACK_KIB))")
[ "$RSS1" -le "$RSS_MAX" ] || fail "RSS ${RSS1}KiB > ${RSS_MAX}KiB (baseline ${RSS0}KiB)"
PUSHES=$(cat "$OUT/pushes")
PUSHES_STEADY=$(cat "$OUT/pushes-steady")
[ $((PUSHES * 3)) -ge "$WINDOWS" ] && [ "$PUSHES" -gt 0 ] \
    || fail "cpu: $PUSHES pushes for $WINDOWS windows (fewer than one per three)"
[ $((PUSHES_STEADY * 12)) -ge "$DURATION" ] && [ "$PUSHES_STEADY" -gt 0 ] \
    || fail "steady: $PUSHES_STEADY pushes in ${DURATION}s (fewer than one per 12 s)"
# The steady profiler's caches in every sample (fields 13-17).
read -r PID_MAX ELF_MAX BID_MAX CID_MAX KNOWN_PEAK CACHE_SAMPLES < <(awk -F, 'NR > 1 && $13 != "" {
    if ($13 > p) p = $13; if ($14 > e) e = $14; if ($15 > b) b = $15; if ($16 > c) c = $16; if ($17 > k) k = $17; n++
} END { printf "%d %d %d %d %d %d\n", p, e, b, c, k, n }' "$OUT/samples.csv")
log "steady cache peaks over $CACHE_SAMPLES samples: pid=$PID_MAX elf=$ELF_MAX build_ids=$BID_MAX container_ids=$CID_MAX processes_known=$KNOWN_PEAK"
[ "$CACHE_SAMPLES" -gt 0 ] || fail "no sample of the steady profiler's debug info"
[ "$PID_MAX" -le "$STEADY_PID_CACHE" ] || fail "pid cache reached $PID_MAX (pid_cache_size $STEADY_PID_CACHE)"
[ "$ELF_MAX" -le "$STEADY_ELF_CACHE" ] || fail "ELF cache reached $ELF_MAX (elf_cache_size $STEADY_ELF_CACHE)"
[ "$BID_MAX" -le "$STEADY_ELF_CACHE" ] || fail "ELF build-ID cache reached $BID_MAX (elf_cache_size $STEADY_ELF_CACHE)"
[ "$CID_MAX" -le "$STEADY_CID_CACHE" ] || fail "container ID cache reached $CID_MAX (container_id_cache_size $STEADY_CID_CACHE)"
[ "$KNOWN_PEAK" -le "$KNOWN_MAX" ] || fail "the steady profiler knew $KNOWN_PEAK processes at once (max $KNOWN_MAX)"
# A sink that is gone explains missing pushes (the writers retry with backoff, nothing dropped).
for port in "$SINK_PORT" "$STEADY_SINK_PORT"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [ "$code" = 501 ] || fail "the sink on port $port does not answer (HTTP $code): gone?"
done
# What the writers say (kept for a failed run): metrics and each endpoint's last error.
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$OUT/metrics.txt" || true
for w in sink steady; do
    curl -s "http://127.0.0.1:$HTTP_PORT/api/v0/web/components/pyroscope.write.$w" >"$OUT/write-$w.json" || true
done
if [ "$FAIL" != 0 ]; then
    grep '^pyroscope_write' "$OUT/metrics.txt" | grep -v ' 0$' | sed 's/^/soak: metric /' >&2 || true
    for w in sink steady; do
        log "pyroscope.write.$w: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([a for a in d.get("debugInfo", []) if a["name"] == "endpoints"])' "$OUT/write-$w.json" 2>&1 | cut -c1-600)"
    done
fi
DROPPED=$(awk '/^pyroscope_write_dropped_profiles_total/ {s += $2} END {print s + 0}' "$OUT/metrics.txt")
[ "$DROPPED" = 0 ] || fail "pyroscope.write dropped $DROPPED profiles"
# End state 3: no profiler at all -> no BPF object.
reload no-profiler
sleep 3
PROGS_NONE=$(bpf_progs)
MAPS_NONE=$(bpf_maps)
[ "$PROGS_NONE" -eq 0 ] && [ "$MAPS_NONE" -eq 0 ] \
    || fail "without any profiler rill still holds $PROGS_NONE BPF programs and $MAPS_NONE maps"
log "host-wide without any profiler: $(host_bpf prog) programs, $(host_bpf map) maps"
kill -0 "$RILL_PID" 2>/dev/null || fail "rill died"

log "ran ${DURATION}s: $PROCS processes, $CONTAINERS containers, $RELOADS reloads, $WINDOWS cpu windows, $PUSHES cpu pushes, $PUSHES_STEADY steady pushes"
RSS_PEAK=$(awk -F, 'NR > 1 && $2 > m { m = $2 } END { print m + 0 }' "$OUT/samples.csv")
FD_PEAK=$(awk -F, 'NR > 1 && $3 > m { m = $3 } END { print m + 0 }' "$OUT/samples.csv")
log "peaks over $(($(wc -l <"$OUT/samples.csv") - 1)) samples: rss=${RSS_PEAK}KiB fds=$FD_PEAK"
log "baseline rss=${RSS0}KiB fds=$FD0 progs=$PROGS1 maps=$MAPS1; end rss=${RSS1}KiB fds=$FD1 progs=$PROGS_ON maps=$MAPS_ON; without cpu progs=$PROGS_OFF maps=$MAPS_OFF (steady alone $PROGS0/$MAPS0); no profiler $PROGS_NONE/$MAPS_NONE"
if grep -qi 'panic' "$OUT/rill.log"; then fail "panic in rill.log"; fi
[ "$FAIL" = 0 ] && log "OK" || log "FAILED (see $OUT)"
exit "$FAIL"
