#!/usr/bin/env bash
# Churn/soak run of `rill run` (root, eBPF, Docker).
#
# rill profiles at 97 Hz (discovery.docker -> pyroscope.ebpf -> pyroscope.write -> a local sink)
# while this script spawns thousands of short-lived processes and dozens of short-lived
# FROM-scratch containers, and reloads rill (SIGHUP) every RELOAD_EVERY seconds, alternating a
# config with pyroscope.ebpf and one without it. Every SAMPLE_EVERY seconds it records rill's
# RSS, open file descriptors and the host's BPF program and map counts (bpftool) to
# $OUT/samples.csv.
#
# Checks at the end (exit 1 on failure):
#  * rill is still running and answered every reload with 200;
#  * with pyroscope.ebpf removed, rill holds no BPF program or map (its fds on
#    anon_inode:bpf-prog/bpf-map), and with it re-added, as many as at the first load;
#  * open fds return to within FD_TOLERANCE of the baseline (taken after the warm-up);
#  * RSS at the end is at most baseline * RSS_FACTOR + RSS_SLACK_KIB;
#  * the sink received pushes, and the writer counted no dropped profiles.
#
# Env: DURATION (s, default 150), RELOAD_EVERY (4), SAMPLE_EVERY (5), RILL (binary, default
# $CARGO_TARGET_DIR/debug/rill), OUT (default a temp dir, kept), FD_TOLERANCE (8),
# RSS_FACTOR (1.5), RSS_SLACK_KIB (20480).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-150}
RELOAD_EVERY=${RELOAD_EVERY:-4}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
FD_TOLERANCE=${FD_TOLERANCE:-8}
RSS_FACTOR=${RSS_FACTOR:-1.5}
RSS_SLACK_KIB=${RSS_SLACK_KIB:-20480}
RILL=${RILL:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rill}
OUT=${OUT:-$(mktemp -d /tmp/rill-soak.XXXXXX)}
IMAGE=rill-soak-busy:latest
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

# The container workload: a static program that burns CPU for ~1 s and exits.
cat >"$OUT/busy.c" <<'C'
#include <time.h>
int main(void) {
    volatile unsigned long x = 0;
    time_t end = time(0) + 1;
    while (time(0) < end) x++;
    return 0;
}
C
mkdir -p "$OUT/img"
gcc -static -O1 -o "$OUT/img/busy" "$OUT/busy.c"
printf 'FROM scratch\nCOPY busy /busy\nENTRYPOINT ["/busy"]\n' >"$OUT/img/Dockerfile"
docker build -q -t "$IMAGE" "$OUT/img" >/dev/null

# A push sink that answers 200 and counts requests.
cat >"$OUT/sink.py" <<'PY'
import http.server, sys
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global n
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n += 1
        open(sys.argv[2], "w").write(str(n))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SINK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo 0 >"$OUT/pushes"
python3 "$OUT/sink.py" "$SINK_PORT" "$OUT/pushes" &
PIDS+=($!)

WRITE="pyroscope.write \"sink\" {
  endpoint {
    url = \"http://127.0.0.1:$SINK_PORT\"
  }
}
"
DOCKER="discovery.docker \"containers\" {
  host             = \"unix:///var/run/docker.sock\"
  refresh_interval = \"5s\"
}
"
# Containers are discovered and profiled; every other process still goes through the probe's
# unknown-pid/exec/exit path (decided, cached, forgotten) but is not symbolized, which keeps a
# debug build affordable. TARGETS_ONLY=false profiles the whole host instead.
EBPF="pyroscope.ebpf \"cpu\" {
  targets          = discovery.docker.containers.targets
  targets_only     = ${TARGETS_ONLY:-true}
  sample_rate      = 97
  collect_interval = \"3s\"
  forward_to       = [pyroscope.write.sink.receiver]
}
"
printf 'logging {\n  level = "warn"\n}\n\n%s\n%s\n%s' "$WRITE" "$DOCKER" "$EBPF" >"$OUT/with-ebpf.river"
printf 'logging {\n  level = "warn"\n}\n\n%s\n%s' "$WRITE" "$DOCKER" >"$OUT/without-ebpf.river"

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
log "host-wide before rill: $(host_bpf prog) BPF programs, $(host_bpf map) maps"
PROGS0=0
MAPS0=0

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

# Warm-up with the profiler loaded: the baseline.
reload with-ebpf
sleep 8
PROGS1=$(bpf_progs)
MAPS1=$(bpf_maps)
RSS0=$(rss)
FD0=$(fds)
log "before rill: progs=$PROGS0 maps=$MAPS0; with ebpf: progs=$PROGS1 maps=$MAPS1 rss=${RSS0}KiB fds=$FD0"
[ "$PROGS1" -gt "$PROGS0" ] || fail "pyroscope.ebpf loaded no BPF program"

echo "t,rss_kib,fds,bpf_progs,bpf_maps,procs_spawned,containers_started,reloads,pushes,host_bpf_progs,host_bpf_maps" >"$OUT/samples.csv"
START=$(date +%s)
NEXT_RELOAD=$((START + RELOAD_EVERY))
NEXT_SAMPLE=$START
NEXT_CONTAINER=$START
PROCS=0
CONTAINERS=0
RELOADS=0
STATE=with-ebpf
while :; do
    NOW=$(date +%s)
    [ $((NOW - START)) -ge "$DURATION" ] && break
    kill -0 "$RILL_PID" 2>/dev/null || { fail "rill died"; break; }
    # A burst of 50 short-lived processes (each exec'd, profiled if it gets a sample).
    for _ in $(seq 50); do /bin/true & done
    PROCS=$((PROCS + 50))
    if [ "$NOW" -ge "$NEXT_CONTAINER" ]; then
        docker run -d --rm --label rill-soak=1 "$IMAGE" >/dev/null 2>&1 && CONTAINERS=$((CONTAINERS + 1))
        NEXT_CONTAINER=$((NOW + 2))
    fi
    if [ "$NOW" -ge "$NEXT_RELOAD" ]; then
        if [ "$STATE" = with-ebpf ]; then STATE=without-ebpf; else STATE=with-ebpf; fi
        reload "$STATE"
        RELOADS=$((RELOADS + 1))
        NEXT_RELOAD=$((NOW + RELOAD_EVERY))
    fi
    if [ "$NOW" -ge "$NEXT_SAMPLE" ]; then
        echo "$((NOW - START)),$(rss),$(fds),$(bpf_progs),$(bpf_maps),$PROCS,$CONTAINERS,$RELOADS,$(cat "$OUT/pushes"),$(host_bpf prog),$(host_bpf map)" >>"$OUT/samples.csv"
        NEXT_SAMPLE=$((NOW + SAMPLE_EVERY))
    fi
    sleep 0.1
done
# Reap the short-lived children (not rill or the sink).
for j in $(jobs -p); do
    case " ${PIDS[*]} " in *" $j "*) ;; *) wait "$j" 2>/dev/null || true ;; esac
done
docker ps -q --filter "label=rill-soak=1" | xargs -r docker wait >/dev/null 2>&1 || true

# End state 1: profiler removed -> no BPF object of rill left.
reload without-ebpf
sleep 3
PROGS_OFF=$(bpf_progs)
MAPS_OFF=$(bpf_maps)
log "host-wide without ebpf: $(host_bpf prog) programs, $(host_bpf map) maps"
[ "$PROGS_OFF" -eq "$PROGS0" ] || fail "BPF programs without ebpf: $PROGS_OFF, before rill: $PROGS0"
[ "$MAPS_OFF" -eq "$MAPS0" ] || fail "BPF maps without ebpf: $MAPS_OFF, before rill: $MAPS0"
# End state 2: profiler back -> same objects, memory and fds back near the baseline.
reload with-ebpf
sleep 8
PROGS_ON=$(bpf_progs)
MAPS_ON=$(bpf_maps)
RSS1=$(rss)
FD1=$(fds)
echo "end,$RSS1,$FD1,$PROGS_ON,$MAPS_ON,$PROCS,$CONTAINERS,$RELOADS,$(cat "$OUT/pushes"),$(host_bpf prog),$(host_bpf map)" >>"$OUT/samples.csv"
[ "$PROGS_ON" -eq "$PROGS1" ] || fail "BPF programs with ebpf: $PROGS_ON, first load: $PROGS1"
[ "$MAPS_ON" -eq "$MAPS1" ] || fail "BPF maps with ebpf: $MAPS_ON, first load: $MAPS1"
[ "$FD1" -le $((FD0 + FD_TOLERANCE)) ] || fail "fds $FD1 > baseline $FD0 + $FD_TOLERANCE"
RSS_MAX=$(python3 -c "print(int($RSS0 * $RSS_FACTOR + $RSS_SLACK_KIB))")
[ "$RSS1" -le "$RSS_MAX" ] || fail "RSS ${RSS1}KiB > ${RSS_MAX}KiB (baseline ${RSS0}KiB)"
PUSHES=$(cat "$OUT/pushes")
[ "$PUSHES" -gt 0 ] || fail "the sink received no push"
DROPPED=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" \
    | awk '/^pyroscope_write_dropped_profiles_total/ {s += $2} END {print s + 0}')
[ "$DROPPED" = 0 ] || fail "pyroscope.write dropped $DROPPED profiles"
kill -0 "$RILL_PID" 2>/dev/null || fail "rill died"

log "ran ${DURATION}s: $PROCS processes, $CONTAINERS containers, $RELOADS reloads, $PUSHES pushes"
log "baseline rss=${RSS0}KiB fds=$FD0 progs=$PROGS1 maps=$MAPS1; end rss=${RSS1}KiB fds=$FD1 progs=$PROGS_ON maps=$MAPS_ON; without ebpf progs=$PROGS_OFF maps=$MAPS_OFF (before rill $PROGS0/$MAPS0)"
if grep -qi 'panic' "$OUT/rill.log"; then fail "panic in rill.log"; fi
[ "$FAIL" = 0 ] && log "OK" || log "FAILED (see $OUT)"
exit "$FAIL"
