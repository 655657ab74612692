#!/usr/bin/env bash
# Runs every rill test on a fresh machine: installs missing prerequisites, checks that each one
# works, checks the committed BPF object against its source, then runs the whole workspace's
# tests with every tier included (`--include-ignored`: root and eBPF, Docker, Go, Chromium, perf,
# bpftrace, offcputime, kubectl and the soak). A missing prerequisite fails the run, it never skips a tier.
#
# Plain `cargo test --workspace` (no root, no Docker, no peers) runs only the tests that need
# none of these: every other test is `#[ignore = "needs ..."]`, naming its need. Run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: must run as root (the eBPF, perf and cgroup tests load programs and read /proc of other users)" >&2
  exit 1
fi

bash scripts/setup.sh

# Every prerequisite of the opt-in tiers must work, not only be installed.
missing=()
check() {
  local what=$1
  shift
  if ! "$@" >/dev/null 2>&1; then
    missing+=("$what (\`$*\` failed)")
  fi
}
check "Docker engine" docker info
check "Go toolchain" go version
check "Chromium" timeout 60 chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank
check "perf" perf --version
check "bpftrace" bpftrace --version
check "bpftool" bpftool version
check "bcc tools (bpfcc-tools)" test -x /usr/sbin/offcputime-bpfcc
check "libbpf-tools offcputime (the off-CPU tests compare with it)" /usr/sbin/offcputime --help
check "kubectl" kubectl version --client
check "Debian's python3" test -x /usr/bin/python3
# The Python tests run pyenv's interpreters 3.6-3.13 (this machine image has them).
pyenv_bin=$(command -v pyenv || echo "${HOME:-/root}/.pyenv/bin/pyenv")
for minor in 6 7 8 9 10 11 12 13; do
  check "pyenv CPython 3.$minor (pyenv install 3.$minor)" "$pyenv_bin" prefix "3.$minor"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: prerequisites missing or not working:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "test.sh: run scripts/setup.sh as root on Debian, or install them by hand" >&2
  exit 1
fi

if [ -f scripts/check-bpf.sh ]; then
  bash scripts/check-bpf.sh
fi

# Criterion benches are not test targets here: in test mode they reject libtest's
# `--test-threads`, so plain `cargo test` (lib, bins, tests, doctests) is used, not
# `--all-targets`; clippy --all-targets in .ci/run compiles the benches.
cargo test --workspace --no-fail-fast -- --include-ignored --test-threads="${RILL_TEST_THREADS:-4}"
