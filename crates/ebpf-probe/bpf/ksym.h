// SPDX-License-Identifier: GPL-2.0
//
// Kernel symbolization in the kernel: user space runs `ksym_resolve` with BPF_PROG_TEST_RUN
// (never attached) on up to KSYM_BATCH kernel addresses and reads back what `%pS` printed for
// each ("name+0xoff/0xsize", then " [module]" for a module, or "0x..." for an address the kernel
// cannot name). Reading /proc/kallsyms instead means the kernel formatting every one of its
// symbols (about 120,000 here) to name the few hundred functions a profile shows. Included by
// profile.bpf.c, not a standalone header.

#ifndef RILL_KSYM_H
#define RILL_KSYM_H

#define KSYM_BATCH 11 // addresses per run: args[1..=11] of the raw tracepoint context (12 u64)
#define KSYM_TEXT_LEN 512 // KSYM_NAME_LEN (512 since 6.1) covers the name; the rest is cut

struct ksym_text {
	char text[KSYM_TEXT_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KSYM_BATCH);
	__uint(map_flags, BPF_F_MMAPABLE); // user space reads the names through a mapping
	__type(key, __u32);
	__type(value, struct ksym_text);
} ksym_names SEC(".maps");

// args[0]: how many addresses follow (at most KSYM_BATCH); args[1 + i]: address i. Entry i of
// ksym_names gets its text, NUL-terminated. Returns how many entries were written.
SEC("raw_tracepoint/rill_ksym")
int ksym_resolve(struct bpf_raw_tracepoint_args *ctx)
{
	static const char fmt[] = "%pS";
	__u64 count = ctx->args[0];
	int written = 0;

#pragma unroll
	for (__u32 i = 0; i < KSYM_BATCH; i++) {
		struct ksym_text *out;
		__u64 addr;
		__u32 key = i;

		if (i >= count)
			break;
		addr = ctx->args[1 + i];
		out = bpf_map_lookup_elem(&ksym_names, &key);
		if (!out)
			break;
		if (bpf_snprintf(out->text, sizeof(out->text), fmt, &addr, sizeof(addr)) < 0)
			out->text[0] = 0;
		written++;
	}
	return written;
}

#endif
