// SPDX-License-Identifier: GPL-2.0
// scripts/bench-offcpu.sh's "hook" setup: a program that does nothing, on the same hook as
// rill's off-CPU program (tp_btf/sched_switch). What a storm loses to it is the floor of any
// sched_switch program on this kernel and machine (the tracepoint's call into BPF).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sched_switch")
int empty_switch(__u64 *ctx)
{
	return 0;
}
