#!/usr/bin/env bash
# Runs every rill test on a fresh machine: installs missing prerequisites, checks the committed
# BPF object against its source, then runs the whole workspace's tests (root, eBPF and Docker tests
# included: they fail, never skip, when a prerequisite is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ -f scripts/check-bpf.sh ]; then
  bash scripts/check-bpf.sh
fi
cargo test --workspace --no-fail-fast -- --test-threads="${RILL_TEST_THREADS:-4}"
