#!/usr/bin/env bash
# Builds the pyroscope.ebpf BPF object (crates/ebpf-probe/bpf/profile.bpf.o) with Debian's
# clang 14 + libbpf-dev. Run from anywhere; the compiler runs from the repository root with
# relative paths and -fdebug-compilation-dir=. so the object is byte-identical across checkouts.
# Usage: scripts/build-bpf.sh [OUTPUT]   (OUTPUT defaults to the committed object's path)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

src=crates/ebpf-probe/bpf/profile.bpf.c
out="${1:-crates/ebpf-probe/bpf/profile.bpf.o}"
clang="${CLANG:-clang}"

if ! command -v "$clang" >/dev/null 2>&1; then
    echo "build-bpf: $clang not found (apt-get install clang libbpf-dev)" >&2
    exit 1
fi
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
    echo "build-bpf: /usr/include/bpf/bpf_helpers.h not found (apt-get install libbpf-dev)" >&2
    exit 1
fi

"$clang" -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -fdebug-compilation-dir=. \
    -c "$src" -o "$out"
echo "build-bpf: wrote $out ($("$clang" --version | head -n1))"
