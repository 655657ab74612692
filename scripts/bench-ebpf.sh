#!/usr/bin/env bash
# Overhead of rill's pyroscope.ebpf against `perf record -F 97 -a -g`, in one run.
#
# The same 30 s workload runs twice: two busy processes plus 100 idle ones (the static
# program crates/components/tests/fixtures/ebpf/workload.c). First under `rill run` with a
# whole-host pyroscope.ebpf at 97 Hz (targets_only = false, so every process on the host is
# profiled, like perf -a) pushing to a local sink; then under perf. Prints user+system CPU
# seconds and peak RSS of each profiler (GNU time) and rill/perf ratios.
#
# Needs root, gcc, perf, python3 and a release build of rill (built here if missing;
# RILL=/path/to/rill to use another binary, CARGO_TARGET_DIR is honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-30}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RILL=${RILL:-$TARGET_DIR/release/rill}
WORK=$(mktemp -d /tmp/rill-bench-ebpf.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench-ebpf: needs root" >&2; exit 1; }
for t in gcc perf python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "bench-ebpf: $t is required" >&2; exit 1; }
done
if [ ! -x "$RILL" ]; then
    (cd "$ROOT" && cargo build --release -p rill)
fi

gcc -static -O1 -fno-omit-frame-pointer -o "$WORK/workload" \
    "$ROOT/crates/components/tests/fixtures/ebpf/workload.c"

# A push sink that accepts everything.
cat >"$WORK/sink.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF
python3 "$WORK/sink.py" >"$WORK/sink.port" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/sink.port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/sink.port")

cat >"$WORK/bench.river" <<EOF
pyroscope.write "sink" {
  endpoint {
    url = "http://127.0.0.1:$PORT"
  }
}

pyroscope.ebpf "bench" {
  forward_to     = [pyroscope.write.sink.receiver]
  targets_only   = false
  default_target = {"service_name" = "bench"}
  sample_rate    = 97
}
EOF

# Starts the workload; its processes end by themselves (busy) or are killed (idle).
workload() {
    IDLE=()
    for _ in $(seq 100); do "$WORK/workload" idle & IDLE+=($!); done
    "$WORK/workload" cpu "$DURATION" & B1=$!
    "$WORK/workload" cpu "$DURATION" & B2=$!
}
stop_idle() { kill "${IDLE[@]}" 2>/dev/null || true; wait "${IDLE[@]}" 2>/dev/null || true; }

echo "== load average before: $(cut -d" " -f1-3 /proc/loadavg); $(ls /proc | grep -c "^[0-9]") processes on the host"
echo "== rill (pyroscope.ebpf, 97 Hz, whole host) for ${DURATION}s"
/usr/bin/time -f "%U %S %M" -o "$WORK/rill.time" \
    "$RILL" run --server.http.listen-addr 127.0.0.1:0 --storage.path "$WORK/data" \
    "$WORK/bench.river" >"$WORK/rill.log" 2>&1 &
TIME_PID=$!
sleep 2
RILL_PID=$(pgrep -P "$TIME_PID" || true)
[ -n "$RILL_PID" ] || { echo "rill did not start:"; cat "$WORK/rill.log"; exit 1; }
workload
wait "$B1" "$B2"
stop_idle
kill -TERM "$RILL_PID"
wait "$TIME_PID" || true
grep -q "profiling started" "$WORK/rill.log" || {
    echo "rill did not start profiling:"; tail -20 "$WORK/rill.log"; exit 1; }

echo "== perf record -F 97 -a -g for ${DURATION}s"
workload
/usr/bin/time -f "%U %S %M" -o "$WORK/perf.time" \
    perf record -F 97 -a -g -o "$WORK/perf.data" -- sleep "$DURATION" >"$WORK/perf.log" 2>&1
wait "$B1" "$B2" || true
stop_idle

# GNU time may prefix "Command exited with non-zero status N": the numbers are the last line.
read -r RU RS RM < <(tail -1 "$WORK/rill.time")
read -r PU PS PM < <(tail -1 "$WORK/perf.time")
python3 - "$RU" "$RS" "$RM" "$PU" "$PS" "$PM" <<'EOF'
import sys
ru, rs, rm, pu, ps, pm = map(float, sys.argv[1:])
rc, pc = ru + rs, pu + ps
print(f"{'':8}{'CPU s (user+sys)':>18}{'peak RSS MB':>14}")
print(f"{'rill':8}{rc:>18.2f}{rm / 1024:>14.1f}")
print(f"{'perf':8}{pc:>18.2f}{pm / 1024:>14.1f}")
print(f"{'ratio':8}{(rc / pc if pc else float('inf')):>18.2f}{(rm / pm if pm else float('inf')):>14.2f}")
EOF
