// SPDX-License-Identifier: GPL-2.0
//
// Off-CPU profiles (`off_cpu_threshold`): included at the end of profile.bpf.c, after the maps,
// helpers and the table walk it reuses (pid_config, report_unknown, find_leaf_caller, the
// stacks/ustacks halves, walk_user_regs, store_user_stack); not a standalone header.
//
// `offcpu_switch` (tp_btf/sched_switch) runs when a thread leaves a CPU. With the probability
// set in `offcpu_config` (a draw of bpf_get_prandom_u32) and only for threads of profiled
// processes (pid_config state PID_PROFILE, the CPU sampler's filter; unknown processes are
// reported the same way), it remembers when, by thread id, with the task's start time.
//
// `offcpu_resume` (kprobe on finish_task_switch, which runs in the context of the task that was
// just switched in) finds that record, and if it belongs to this very task (same start time: a
// thread id reused by a new thread is not another thread's sleep), takes the task's stacks and
// adds the nanoseconds it was off CPU to (pid, user stack, kernel stack) in the active half of
// `offcpu_counts0/1`. The stacks are taken when the thread runs again rather than when it left:
// it has not executed a single user instruction in between, so its user registers
// (bpf_task_pt_regs) and user stack are the ones it left with, and this way the stacks land in
// the same half as the value, so an interval flip while the thread sleeps cannot separate them.
// The whole off-CPU period therefore belongs to the interval in which the thread wakes.
//
// User stacks come from the same table walk (walk_user_regs, with Python frames) or the
// kernel's frame-pointer walk (with the leaf-caller recovery) as the CPU samples, and go to the
// same stacks/ustacks maps. A stack that collides, or does not fit, is sent whole through the
// ring buffer (EVENT_OFFCPU_SAMPLE) with its value. Every loss is counted in `offcpu_counters`.

#ifndef RILL_OFFCPU_H
#define RILL_OFFCPU_H

#define PF_EXITING 0x00000004

#define EVENT_OFFCPU_SAMPLE 7 // an off-CPU value with its whole stacks (collision or full store)

// Per-CPU counters of the off-CPU programs (indices into `offcpu_counters`).
#define OC_RECORDED 0 // switch-outs recorded (drawn and profiled)
#define OC_COUNTED 1 // switch-ins whose off-CPU time was added to a counts map
#define OC_RECOVERED 2 // switch-ins sent whole through the ring buffer instead
#define OC_START_FULL 3 // switch-outs lost: offcpu_sleeping was full
#define OC_OVERWRITTEN 4 // a record replaced one that never saw its switch-in (lost)
#define OC_STALE 5 // records of an exited thread whose id a new thread reuses (dropped)
#define OC_NOT_PROFILED 6 // the process stopped being profiled while the thread slept (dropped)
#define OC_COUNTS_FULL 7 // lost: the offcpu counts map was full
#define OC_SEND_LOST 8 // lost: a collision or full ustacks map, and the ring buffer was full
#define OC_LOST_NS 9 // nanoseconds of the switch-ins lost (OC_COUNTS_FULL, OC_SEND_LOST)
#define OC_DROPPED_NS 10 // nanoseconds of OC_STALE and OC_NOT_PROFILED records
#define OC_USER_STACK_ERROR 11 // frame-pointer user stacks that failed (counted without one)
#define OC_KERNEL_STACK_ERROR 12 // kernel stacks that failed (counted without one)
#define OC_NUM_COUNTERS 16

struct offcpu_config {
	// A switch-out is recorded when bpf_get_prandom_u32() < threshold: probability
	// threshold / 2^32 (2^32: every one; 0: none).
	__u64 threshold;
};

struct offcpu_start {
	__u64 ts; // bpf_ktime_get_ns() at the switch-out
	__u64 start_time; // task_struct.start_time of the thread
	__u32 tgid;
	__u32 _pad;
};

struct offcpu_sample {
	__u32 kind;
	__u32 pid;
	__u32 user_len;
	__u32 kernel_len;
	__u8 reason; // how the table walk ended (UNWIND_*), 0 for the frame-pointer walk
	__u8 flags;
	__u16 _pad;
	__u32 _pad2;
	__u64 value; // off-CPU nanoseconds
	__u64 leaf_caller; // frame-pointer walk: as in struct sample_key
	__u64 user[MAX_USER_FRAMES];
	__u64 kernel[MAX_STACK_DEPTH];
};

// The view of task_struct this file reads (a CO-RE flavour of the one in profile.bpf.c).
struct task_struct___offcpu {
	unsigned int flags;
	int pid;
	int tgid;
	__u64 start_time;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct offcpu_config);
} offcpu_config SEC(".maps");

// Sleeping threads that were drawn: thread id -> when it left.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct offcpu_start);
} offcpu_sleeping SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sample_key);
	__type(value, __u64);
} offcpu_counts0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sample_key);
	__type(value, __u64);
} offcpu_counts1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OC_NUM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} offcpu_counters SEC(".maps");

static __always_inline void offcpu_count(__u32 index, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(&offcpu_counters, &index);

	if (value)
		*value += n; // per-CPU slot, no other writer
}

static __always_inline void offcpu_lost(__u32 why, __u64 ns)
{
	offcpu_count(why, 1);
	offcpu_count(OC_LOST_NS, ns);
}

SEC("tp_btf/sched_switch")
int offcpu_switch(__u64 *ctx)
{
	// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
	struct task_struct___offcpu *prev = (struct task_struct___offcpu *)ctx[1];
	struct offcpu_start start = {};
	struct offcpu_config *config;
	struct pid_config *cfg;
	__u32 zero = 0, tid, tgid;
	long err;

	config = bpf_map_lookup_elem(&offcpu_config, &zero);
	if (!config || (__u64)bpf_get_prandom_u32() >= config->threshold)
		return 0;
	tgid = prev->tgid;
	tid = prev->pid;
	// The idle task, kernel threads, and exiting threads (their last switch has no return).
	if (tgid == 0 || (prev->flags & (PF_KTHREAD | PF_EXITING)))
		return 0;
	cfg = bpf_map_lookup_elem(&pid_config, &tgid);
	if (!cfg) {
		report_unknown(tgid);
		return 0;
	}
	if (cfg->state != PID_PROFILE)
		return 0;
	start.ts = bpf_ktime_get_ns();
	start.start_time = prev->start_time;
	start.tgid = tgid;
	err = bpf_map_update_elem(&offcpu_sleeping, &tid, &start, BPF_NOEXIST);
	if (err == -EEXIST) {
		// Its switch-in was never seen (the program attached in between): that one is lost.
		offcpu_count(OC_OVERWRITTEN, 1);
		err = bpf_map_update_elem(&offcpu_sleeping, &tid, &start, BPF_ANY);
	}
	if (err)
		offcpu_count(OC_START_FULL, 1);
	else
		offcpu_count(OC_RECORDED, 1);
	return 0;
}

// Adds `ns` to `key` in the given offcpu counts map.
static __always_inline void offcpu_add(void *counts, struct sample_key *key, __u64 ns)
{
	__u64 *value;
	long err;

	value = bpf_map_lookup_elem(counts, key);
	if (value) {
		__sync_fetch_and_add(value, ns);
		offcpu_count(OC_COUNTED, 1);
		return;
	}
	err = bpf_map_update_elem(counts, key, &ns, BPF_NOEXIST);
	if (err == -EEXIST) {
		value = bpf_map_lookup_elem(counts, key);
		if (value) {
			__sync_fetch_and_add(value, ns);
			err = 0;
		}
	}
	if (err)
		offcpu_lost(OC_COUNTS_FULL, ns);
	else
		offcpu_count(OC_COUNTED, 1);
}

// Sends an off-CPU value with whole stacks through the ring buffer: the table-walked user stack
// in `stack` (NULL: the frame-pointer walk's, read now) and the kernel stack.
static __always_inline void offcpu_send(struct pt_regs *ctx, __u32 tgid, struct pid_config *cfg,
					struct user_stack *stack, __u64 leaf_caller, __u64 ns)
{
	struct offcpu_sample *raw;
	__u32 len;
	long n;

	raw = bpf_ringbuf_reserve(&events, sizeof(*raw), 0);
	if (!raw) {
		offcpu_lost(OC_SEND_LOST, ns);
		return;
	}
	raw->kind = EVENT_OFFCPU_SAMPLE;
	raw->pid = tgid;
	raw->user_len = 0;
	raw->kernel_len = 0;
	raw->reason = 0;
	raw->flags = 0;
	raw->_pad = 0;
	raw->_pad2 = 0;
	raw->value = ns;
	raw->leaf_caller = leaf_caller;
	if (stack) {
		len = stack->len;
		if (len > MAX_USER_FRAMES)
			len = MAX_USER_FRAMES;
		raw->user_len = len;
		raw->reason = stack->reason;
		raw->flags = stack->flags;
		bpf_probe_read_kernel(raw->user, sizeof(raw->user), stack->frames);
	} else if (cfg->user) {
		n = bpf_get_stack(ctx, raw->user, MAX_STACK_DEPTH * sizeof(__u64), BPF_F_USER_STACK);
		if (n > 0)
			raw->user_len = n / sizeof(__u64);
	}
	if (cfg->kernel) {
		n = bpf_get_stack(ctx, raw->kernel, sizeof(raw->kernel), 0);
		if (n > 0)
			raw->kernel_len = n / sizeof(__u64);
	}
	bpf_ringbuf_submit(raw, 0);
	offcpu_count(OC_RECOVERED, 1);
}

// The kernel stack id of the switched-in task (always in the kernel here), or -1; sets
// *collided on a stack-map collision.
#define OFFCPU_KERNEL_STACK(STACKS)                                                    \
	do {                                                                           \
		if (cfg->kernel) {                                                     \
			id = bpf_get_stackid(ctx, &STACKS, 0);                         \
			if (id >= 0)                                                   \
				key.kernel_stack = id;                                 \
			else if (id == -EEXIST)                                        \
				collided = 1;                                          \
			else                                                           \
				offcpu_count(OC_KERNEL_STACK_ERROR, 1);                \
		}                                                                      \
	} while (0)

// Records `ns` for a table-walked stack (`stack` under `hash`) into the given half.
#define OFFCPU_RECORD_UNWOUND(STACKS, COUNTS, USTACKS)                                 \
	do {                                                                           \
		struct sample_key key = { .pid = tgid, .user_stack = -1, .kernel_stack = -1,  \
					  .user_store = STORE_USTACKS, .leaf_caller = hash };    \
		__u32 why = store_user_stack(&USTACKS, hash, stack);                   \
		int collided = 0;                                                      \
		long id;                                                               \
		OFFCPU_KERNEL_STACK(STACKS);                                           \
		if (why || collided)                                                   \
			offcpu_send(ctx, tgid, cfg, stack, 0, ns);                     \
		else                                                                   \
			offcpu_add(&COUNTS, &key, ns);                                 \
	} while (0)

// Records `ns` with the kernel's frame-pointer user stack into the given half.
#define OFFCPU_RECORD_FP(STACKS, COUNTS)                                               \
	do {                                                                           \
		struct sample_key key = { .pid = tgid, .user_stack = -1, .kernel_stack = -1,  \
					  .leaf_caller = leaf_caller };                        \
		int collided = 0;                                                      \
		long id;                                                               \
		if (cfg->user) {                                                       \
			id = bpf_get_stackid(ctx, &STACKS, BPF_F_USER_STACK);          \
			if (id >= 0)                                                   \
				key.user_stack = id;                                   \
			else if (id == -EEXIST)                                        \
				collided = 1;                                          \
			else if (id != -EFAULT)                                        \
				offcpu_count(OC_USER_STACK_ERROR, 1);                  \
		}                                                                      \
		OFFCPU_KERNEL_STACK(STACKS);                                           \
		if (collided)                                                          \
			offcpu_send(ctx, tgid, cfg, NULL, leaf_caller, ns);            \
		else                                                                   \
			offcpu_add(&COUNTS, &key, ns);                                 \
	} while (0)

// The task that was just switched in: if its switch-out was recorded, add the time since.
static __always_inline int offcpu_resume_task(struct pt_regs *ctx, int unwind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid(), now, ns, start_time, hash = 0, leaf_caller = 0;
	__u32 tid = (__u32)pid_tgid, tgid = pid_tgid >> 32, zero = 0;
	struct task_struct___offcpu *task;
	struct offcpu_start *start;
	struct unwind_proc *proc;
	struct user_stack *stack;
	struct pid_config *cfg;
	struct pt_regs regs;
	__u32 *half;
	long saved;

	start = bpf_map_lookup_elem(&offcpu_sleeping, &tid);
	if (!start)
		return 0;
	now = bpf_ktime_get_ns();
	ns = now > start->ts ? now - start->ts : 0;
	start_time = start->start_time;
	if (start->tgid != tgid)
		start_time = ~0ULL; // cannot be this task's
	bpf_map_delete_elem(&offcpu_sleeping, &tid);
	task = (struct task_struct___offcpu *)bpf_get_current_task_btf();
	if (task->start_time != start_time) {
		offcpu_count(OC_STALE, 1);
		offcpu_count(OC_DROPPED_NS, ns);
		return 0;
	}
	cfg = bpf_map_lookup_elem(&pid_config, &tgid);
	if (!cfg || cfg->state != PID_PROFILE) {
		offcpu_count(OC_NOT_PROFILED, 1);
		offcpu_count(OC_DROPPED_NS, ns);
		return 0;
	}
	// The registers the task entered the kernel with: it returns to them.
	saved = bpf_task_pt_regs(bpf_get_current_task_btf());
	if (!saved || bpf_probe_read_kernel(&regs, sizeof(regs), (void *)saved))
		__builtin_memset(&regs, 0, sizeof(regs));
	half = bpf_map_lookup_elem(&control, &zero);
	proc = unwind && cfg->user && regs.rip ? bpf_map_lookup_elem(&unwind_procs, &tgid) : NULL;
	stack = proc ? walk_user_regs(proc, tgid, regs.rip, regs.rsp, regs.rbp, &hash) : NULL;
	if (stack) {
		if (half && (*half & 1))
			OFFCPU_RECORD_UNWOUND(stacks1, offcpu_counts1, ustacks1);
		else
			OFFCPU_RECORD_UNWOUND(stacks0, offcpu_counts0, ustacks0);
		return 0;
	}
	if (cfg->user && regs.rip)
		leaf_caller = find_leaf_caller(regs.rip, regs.rsp, regs.rbp);
	if (half && (*half & 1))
		OFFCPU_RECORD_FP(stacks1, offcpu_counts1);
	else
		OFFCPU_RECORD_FP(stacks0, offcpu_counts0);
	return 0;
}

// Attached by user space to finish_task_switch (its symbol, often finish_task_switch.isra.0).
SEC("kprobe")
int offcpu_resume(struct pt_regs *ctx)
{
	return offcpu_resume_task(ctx, 0);
}

SEC("kprobe")
int offcpu_resume_unwind(struct pt_regs *ctx)
{
	return offcpu_resume_task(ctx, 1);
}

#endif
