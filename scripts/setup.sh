#!/usr/bin/env bash
# Installs and starts what rill's tests need on a fresh Debian machine (run as root):
# clang + libbpf for the BPF object, Docker engine, Go (go tool pprof), Chromium (UI tests),
# perf and bpftrace (peers), bcc's offcputime (bpfcc-tools, and libbpf-tools' CO-RE build of it,
# which runs where the Python one cannot compile: kernels without headers), kubectl (the Kubernetes fixture test and `kubectl kustomize` of
# deploy/kubernetes), static libc for FROM-scratch test images.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang || need+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
have dockerd || need+=(docker.io)
have go || need+=(golang-go)
have chromium || need+=(chromium)
have perf || need+=(linux-perf)
have bpftrace || need+=(bpftrace)
have bpftool || need+=(bpftool)
[ -x /usr/sbin/offcputime-bpfcc ] || need+=(bpfcc-tools)
[ -x /usr/sbin/offcputime ] || need+=(libbpf-tools)
# Debian's kubernetes-client ships /usr/bin/kubectl.
have kubectl || need+=(kubernetes-client)
have objcopy || need+=(binutils)
have xz || need+=(xz-utils)
have g++ || need+=(g++)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Docker engine: start it when it is not answering.
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  mkdir -p /tmp/rill-ci
  nohup dockerd >/tmp/rill-ci/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /tmp/rill-ci/dockerd.log" >&2; exit 1; }
fi
echo "setup: ok"
