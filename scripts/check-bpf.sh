#!/usr/bin/env bash
# CI check: rebuilds the BPF object into a temporary file and fails if it differs from the
# committed crates/ebpf-probe/bpf/profile.bpf.o (someone edited profile.bpf.c without
# running scripts/build-bpf.sh, or used a different clang/libbpf).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

committed=crates/ebpf-probe/bpf/profile.bpf.o
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

scripts/build-bpf.sh "$tmp/profile.bpf.o" >/dev/null
if ! cmp -s "$tmp/profile.bpf.o" "$committed"; then
    echo "check-bpf: $committed is out of date or was built differently." >&2
    echo "check-bpf: rebuilt object differs ($(cmp "$tmp/profile.bpf.o" "$committed" 2>&1 | head -n1))." >&2
    echo "check-bpf: run scripts/build-bpf.sh with Debian clang 14 + libbpf-dev and commit the result." >&2
    exit 1
fi
echo "check-bpf: $committed matches its source"
