// SPDX-License-Identifier: GPL-2.0
//
// Off-CPU profiles (`off_cpu_threshold`): included at the end of profile.bpf.c, after the maps,
// helpers and the table walk it reuses (pid_config, control, report_unknown, find_leaf_caller,
// walk_user_regs, store_user_stack); not a standalone header.
//
// `offcpu_switch[_unwind]` (tp_btf/sched_switch) runs on every context switch, in the context
// of the task leaving the CPU (prev):
// - prev leaves: with the probability in `offcpu_config` (a draw of offcpu_random), and
//   only for threads of profiled processes (pid_config state PID_PROFILE, the CPU sampler's
//   filter; unknown processes are reported the same way), its stacks are taken now (its user
//   registers from bpf_task_pt_regs, the user stack through the same table walk with Python
//   frames as the CPU samples, or the kernel's frame-pointer walk with the leaf-caller
//   recovery; the kernel stack of the switch) and stored in the off-CPU stack stores, and a
//   record {when, the task's start time, tgid, the stacks' key} is kept by thread id;
// - next arrives: if its slot in `offcpu_pending` says a record may exist (most switches stop
//   there), and it has a record and it is this very task (same tgid and start time: a
//   thread id reused by a new thread is not the old thread's sleep), the nanoseconds since go
//   to that key in the active half of `offcpu_counts0/1`.
// The whole off-CPU period belongs to the interval in which the thread runs again. The stack
// stores (`offcpu_stacks`, `offcpu_ustacks`) are not double buffered: a thread can sleep
// through any number of intervals, so user space reads them by key and removes an entry only
// once no record and no count has used it for two collects. Every loss is counted in
// `offcpu_counters`.

#ifndef RILL_OFFCPU_H
#define RILL_OFFCPU_H

#define PF_EXITING 0x00000004

// Per-CPU counters of the off-CPU program (indices into `offcpu_counters`).
#define OC_RECORDED 0 // switch-outs recorded (drawn, profiled, stacks stored)
#define OC_COUNTED 1 // switch-ins whose off-CPU time was added to a counts map
#define OC_START_FULL 2 // switch-outs lost: offcpu_sleeping was full
#define OC_OVERWRITTEN 3 // a record replaced one that never saw its switch-in (lost)
#define OC_STACK_LOST 4 // switch-outs lost: their stack collided in or did not fit the stores
#define OC_STALE 5 // records of an exited thread whose id a new thread has (dropped)
#define OC_NOT_PROFILED 6 // the process stopped being profiled while the thread slept (dropped)
#define OC_COUNTS_FULL 7 // switch-ins lost: the offcpu counts map was full
#define OC_LOST_NS 8 // nanoseconds of the switch-ins lost (OC_COUNTS_FULL)
#define OC_DROPPED_NS 9 // nanoseconds of OC_STALE and OC_NOT_PROFILED records
#define OC_USER_STACK_ERROR 10 // frame-pointer user stacks that failed (recorded without one)
#define OC_KERNEL_STACK_ERROR 11 // kernel stacks that failed (recorded without one)
#define OC_NUM_COUNTERS 16

// Kernel frames of the tracepoint itself at the top of the kernel stack (the program and
// bpf_trace_run4), skipped so that the stack starts at __schedule.
#define OFFCPU_SKIP_FRAMES 2

// Slots of `offcpu_pending` (a power of two): a thread's slot is its id modulo this.
#define OFFCPU_PENDING_SLOTS 16384

struct offcpu_config {
	// A switch-out is recorded when offcpu_random() < threshold: probability
	// threshold / 2^32 (2^32: every one; 0: none).
	__u64 threshold;
};

// A thread that left the CPU and was drawn (read by user space as six u64).
struct offcpu_record {
	__u64 ts; // bpf_ktime_get_ns() at the switch-out
	__u64 start_time; // task_struct.start_time of the thread
	__u32 tgid;
	__u32 _pad;
	struct sample_key key; // its stacks in offcpu_stacks / offcpu_ustacks
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

// Sleeping threads that were drawn: thread id -> record.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct offcpu_record);
} offcpu_sleeping SEC(".maps");

// How many records of offcpu_sleeping have a thread id in each slot (id & (slots - 1)): a
// switch-in whose slot holds 0 has no record, without a hash lookup (about 65 ns a switch on
// this machine's storm, against 3 for this array). Other threads of the slot only cost a lookup.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OFFCPU_PENDING_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} offcpu_pending SEC(".maps");

// The per-CPU state of offcpu_random (0: not seeded yet).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} offcpu_rng SEC(".maps");

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

// Kernel stacks and frame-pointer user stacks of the records (not double buffered).
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, stack_trace_t);
} offcpu_stacks SEC(".maps");

// Table-walked user stacks of the records, by hash (not double buffered).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct user_stack);
} offcpu_ustacks SEC(".maps");

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

// The count of `tid`'s slot in offcpu_pending (NULL never happens: the index is masked).
static __always_inline __u32 *pending_slot(__u32 tid)
{
	__u32 slot = tid & (OFFCPU_PENDING_SLOTS - 1);

	return bpf_map_lookup_elem(&offcpu_pending, &slot);
}

// A uniform 32-bit draw for the switch-out's coin: xorshift64* (Marsaglia's xorshift with
// Vigna's multiplier, the high half of the product) on a per-CPU state seeded once from
// bpf_get_prandom_u32. The helper itself costs about 45 ns a call on this machine (bpf_stats,
// a storm of 1.8 million switches), more than the rest of an unrecorded switch; this costs a
// few instructions.
static __always_inline __u32 offcpu_random(void)
{
	__u32 zero = 0;
	__u64 *state = bpf_map_lookup_elem(&offcpu_rng, &zero), x;

	if (!state)
		return bpf_get_prandom_u32();
	x = *state;
	if (!x)
		x = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32() | 1;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x; // per-CPU slot, and the switch runs with interrupts off: no other writer
	return (x * 0x2545F4914F6CDD1DULL) >> 32;
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
	if (err) {
		offcpu_count(OC_COUNTS_FULL, 1);
		offcpu_count(OC_LOST_NS, ns);
	} else {
		offcpu_count(OC_COUNTED, 1);
	}
}

// `next` runs again: adds its time off CPU if it was recorded.
static __always_inline void offcpu_arrive(struct task_struct___offcpu *next)
{
	struct offcpu_record *found, record;
	struct pid_config *cfg;
	__u32 tid = next->pid, zero = 0;
	__u32 *half, *pending;
	__u64 now, ns;

	pending = pending_slot(tid);
	if (!pending || !*pending)
		return;
	found = bpf_map_lookup_elem(&offcpu_sleeping, &tid);
	if (!found)
		return; // another thread of the slot
	record = *found;
	// Only this thread's switch-in removes its record (user space only reads them).
	if (bpf_map_delete_elem(&offcpu_sleeping, &tid) == 0)
		__sync_fetch_and_add(pending, (__u32)-1);
	now = bpf_ktime_get_ns();
	ns = now > record.ts ? now - record.ts : 0;
	if (record.tgid != (__u32)next->tgid || record.start_time != next->start_time) {
		offcpu_count(OC_STALE, 1);
		offcpu_count(OC_DROPPED_NS, ns);
		return;
	}
	cfg = bpf_map_lookup_elem(&pid_config, &record.tgid);
	if (!cfg || cfg->state != PID_PROFILE) {
		offcpu_count(OC_NOT_PROFILED, 1);
		offcpu_count(OC_DROPPED_NS, ns);
		return;
	}
	half = bpf_map_lookup_elem(&control, &zero);
	if (half && (*half & 1))
		offcpu_add(&offcpu_counts1, &record.key, ns);
	else
		offcpu_add(&offcpu_counts0, &record.key, ns);
}

// `prev` (the current task) leaves: draws, and records it with its stacks.
static __always_inline void offcpu_leave(__u64 *ctx, struct task_struct___offcpu *prev, int unwind)
{
	struct offcpu_record record = {};
	struct offcpu_config *config;
	struct unwind_proc *proc;
	struct user_stack *stack;
	struct pid_config *cfg;
	__u32 zero = 0, tid, tgid, why, *pending;
	struct user_regs regs;
	__u64 hash = 0;
	long id, err;

	config = bpf_map_lookup_elem(&offcpu_config, &zero);
	if (!config || (__u64)offcpu_random() >= config->threshold)
		return;
	tgid = prev->tgid;
	tid = prev->pid;
	// The idle task, kernel threads, and exiting threads (their last switch has no return).
	if (tgid == 0 || (prev->flags & (PF_KTHREAD | PF_EXITING)))
		return;
	cfg = bpf_map_lookup_elem(&pid_config, &tgid);
	if (!cfg) {
		report_unknown(tgid);
		return;
	}
	if (cfg->state != PID_PROFILE)
		return;
	record.key.pid = tgid;
	record.key.user_stack = -1;
	record.key.kernel_stack = -1;
	if (cfg->user) {
		// The registers the task entered the kernel with: it returns to them.
		if (saved_user_regs(&regs))
			__builtin_memset(&regs, 0, sizeof(regs));
		proc = unwind && regs.ip ? bpf_map_lookup_elem(&unwind_procs, &tgid) : NULL;
		stack = proc ? walk_user_regs(proc->first, proc->count, tgid, 0, 0, regs.ip,
					      regs.sp, regs.bp, &hash)
			     : NULL;
		if (stack) {
			why = store_user_stack(&offcpu_ustacks, hash, stack, 0);
			if (why) {
				offcpu_count(OC_STACK_LOST, 1);
				return;
			}
			record.key.user_store = STORE_USTACKS;
			record.key.leaf_caller = hash;
		} else {
			id = bpf_get_stackid(ctx, &offcpu_stacks, BPF_F_USER_STACK);
			if (id >= 0) {
				record.key.user_stack = id;
			} else if (id == -EEXIST) {
				offcpu_count(OC_STACK_LOST, 1);
				return;
			} else if (id != -EFAULT) {
				offcpu_count(OC_USER_STACK_ERROR, 1);
			}
			if (regs.ip)
				record.key.leaf_caller = find_leaf_caller(regs.ip, regs.sp, regs.bp);
		}
	}
	if (cfg->kernel) {
		id = bpf_get_stackid(ctx, &offcpu_stacks, OFFCPU_SKIP_FRAMES & BPF_F_SKIP_FIELD_MASK);
		if (id >= 0) {
			record.key.kernel_stack = id;
		} else if (id == -EEXIST) {
			offcpu_count(OC_STACK_LOST, 1);
			return;
		} else {
			offcpu_count(OC_KERNEL_STACK_ERROR, 1);
		}
	}
	record.ts = bpf_ktime_get_ns();
	record.start_time = prev->start_time;
	record.tgid = tgid;
	pending = pending_slot(tid);
	if (!pending)
		return;
	err = bpf_map_update_elem(&offcpu_sleeping, &tid, &record, BPF_NOEXIST);
	if (err == 0) {
		// Counted before the thread can run again: its switch-in follows this program.
		__sync_fetch_and_add(pending, 1);
	} else if (err == -EEXIST) {
		// Its switch-in was never seen: that one is lost (the slot already counts the record).
		offcpu_count(OC_OVERWRITTEN, 1);
		err = bpf_map_update_elem(&offcpu_sleeping, &tid, &record, BPF_ANY);
	}
	if (err)
		offcpu_count(OC_START_FULL, 1);
	else
		offcpu_count(OC_RECORDED, 1);
}

// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)
static __always_inline int offcpu_switch_task(__u64 *ctx, int unwind)
{
	struct task_struct___offcpu *prev = (struct task_struct___offcpu *)ctx[1];
	struct task_struct___offcpu *next = (struct task_struct___offcpu *)ctx[2];

	// Clock reads only where a record is taken or made (most switches do neither).
	offcpu_arrive(next);
	offcpu_leave(ctx, prev, unwind);
	return 0;
}

// The frame-pointer variant (every supported kernel) and the table walk's (bpf_loop, 5.17);
// user space attaches the one that matches the CPU program.
SEC("tp_btf/sched_switch")
int offcpu_switch(__u64 *ctx)
{
	return offcpu_switch_task(ctx, 0);
}

SEC("tp_btf/sched_switch")
int offcpu_switch_unwind(__u64 *ctx)
{
	return offcpu_switch_task(ctx, 1);
}

#endif
