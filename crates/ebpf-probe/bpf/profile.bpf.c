// SPDX-License-Identifier: GPL-2.0
//
// rill's whole-host CPU sampler (kernel side of `pyroscope.ebpf`).
//
// `profile_cpu` runs on every `cpu-clock` sample of every online CPU. It looks up the sampled
// process (tgid) in `pid_config`, reports unknown processes to user space once through the
// `events` ring buffer, and counts (pid, user stack id, kernel stack id) in one of two
// double-buffered halves (`counts0`/`stacks0`, `counts1`/`stacks1`) selected by `control[0]`.
// User space flips the half before it reads, so it never reads maps that are being written.
// Stacks that collide in the stack-trace map are not lost: they are copied whole into the ring
// buffer instead. `on_process_exit` forgets exited processes and reports them;
// `on_process_exec` reports known processes that replaced their program (caches keyed by pid
// are stale then).
//
// Build with `scripts/build-bpf.sh` (the built object is committed); see docs/ebpf.md.

#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

// Minimal CO-RE views of kernel structures; field offsets are relocated against the running
// kernel's BTF at load time, so no kernel-specific header is needed to build.
typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

#define PF_KTHREAD 0x00200000

#define MAX_STACK_DEPTH 127

// pid_config.state
#define PID_PENDING 0 // seen by the kernel, reported, no decision from user space yet
#define PID_PROFILE 1 // count samples
#define PID_IGNORE 2 // known, not profiled

// Event kinds in the ring buffer.
#define EVENT_UNKNOWN_PID 1
#define EVENT_PID_EXIT 2
#define EVENT_RAW_SAMPLE 3
#define EVENT_PID_EXEC 4

// Per-CPU counters (indices into `counters`); keep in sync with probe.rs.
#define C_SAMPLES 0 // samples counted in a counts map
#define C_IDLE 1 // samples of the idle task (pid 0)
#define C_KTHREAD 2 // samples of kernel threads, skipped
#define C_PENDING 3 // samples of processes awaiting a decision, not counted
#define C_IGNORED 4 // samples of processes not profiled
#define C_USER_STACK_EMPTY 5 // no user stack (-EFAULT), counted with an empty user stack
#define C_KERNEL_STACK_EMPTY 6 // no kernel stack (sample in user mode), counted without one
#define C_USER_STACK_ERROR 7 // other bpf_get_stackid errors, counted with an empty stack
#define C_KERNEL_STACK_ERROR 8
#define C_COLLISIONS 9 // stack-map collisions recovered through the ring buffer
#define C_COLLISIONS_LOST 10 // collisions whose sample could not be sent (ring buffer full)
#define C_COUNTS_FULL 11 // samples lost because the counts map was full
#define C_EVENTS_LOST 12 // unknown-pid / exit events lost (ring buffer full)
#define C_PID_MAP_FULL 13 // unknown pids that could not be marked pending (pid map full)
#define C_NUM_COUNTERS 16

struct pid_config {
	__u8 state;
	__u8 user;
	__u8 kernel;
	__u8 _pad;
};

struct sample_key {
	__u32 pid;
	__s32 user_stack;
	__s32 kernel_stack;
};

struct pid_event {
	__u32 kind;
	__u32 pid;
};

struct raw_sample {
	__u32 kind;
	__u32 pid;
	__u32 user_len; // number of frames in `user`
	__u32 kernel_len; // number of frames in `kernel`
	__u64 user[MAX_STACK_DEPTH];
	__u64 kernel[MAX_STACK_DEPTH];
};

typedef __u64 stack_trace_t[MAX_STACK_DEPTH];

// Sizes below are defaults; user space may override them at load time.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct pid_config);
} pid_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct sample_key);
	__type(value, __u64);
} counts0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, struct sample_key);
	__type(value, __u64);
} counts1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, stack_trace_t);
} stacks0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, stack_trace_t);
} stacks1 SEC(".maps");

// control[0]: the half (0 or 1) the program writes to.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_NUM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} events SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1; // per-CPU slot, no other writer
}

static __always_inline void report_unknown(__u32 tgid)
{
	struct pid_config pending = { .state = PID_PENDING };
	struct pid_event *event;
	long err;

	// Only the CPU that inserts the pending entry reports the pid.
	err = bpf_map_update_elem(&pid_config, &tgid, &pending, BPF_NOEXIST);
	if (err) {
		if (err != -EEXIST)
			count(C_PID_MAP_FULL);
		return;
	}
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		// Forget the pending mark so that the next sample retries the report.
		bpf_map_delete_elem(&pid_config, &tgid);
		count(C_EVENTS_LOST);
		return;
	}
	event->kind = EVENT_UNKNOWN_PID;
	event->pid = tgid;
	bpf_ringbuf_submit(event, 0);
}

// Sends one sample with whole stacks through the ring buffer (used on stack-map collisions).
static __always_inline void send_raw_sample(struct bpf_perf_event_data *ctx, __u32 tgid,
					    struct pid_config *cfg)
{
	struct raw_sample *raw;
	long n;

	raw = bpf_ringbuf_reserve(&events, sizeof(*raw), 0);
	if (!raw) {
		count(C_COLLISIONS_LOST);
		return;
	}
	raw->kind = EVENT_RAW_SAMPLE;
	raw->pid = tgid;
	raw->user_len = 0;
	raw->kernel_len = 0;
	if (cfg->user) {
		n = bpf_get_stack(ctx, raw->user, sizeof(raw->user), BPF_F_USER_STACK);
		if (n > 0)
			raw->user_len = n / sizeof(__u64);
	}
	if (cfg->kernel) {
		n = bpf_get_stack(ctx, raw->kernel, sizeof(raw->kernel), 0);
		if (n > 0)
			raw->kernel_len = n / sizeof(__u64);
	}
	bpf_ringbuf_submit(raw, 0);
	count(C_COLLISIONS);
}

static __always_inline void add_count(void *counts, struct sample_key *key)
{
	__u64 one = 1;
	__u64 *value;
	long err;

	value = bpf_map_lookup_elem(counts, key);
	if (value) {
		__sync_fetch_and_add(value, 1);
		count(C_SAMPLES);
		return;
	}
	err = bpf_map_update_elem(counts, key, &one, BPF_NOEXIST);
	if (err == -EEXIST) {
		// Another CPU inserted the key in between.
		value = bpf_map_lookup_elem(counts, key);
		if (value) {
			__sync_fetch_and_add(value, 1);
			err = 0;
		}
	}
	if (err)
		count(C_COUNTS_FULL);
	else
		count(C_SAMPLES);
}

// Records one sample into the given half. Written once per half (with constant map pointers)
// so that the verifier sees a single map per helper call.
#define RECORD_SAMPLE(STACKS, COUNTS)                                                  \
	do {                                                                           \
		struct sample_key key = { .pid = tgid, .user_stack = -1, .kernel_stack = -1 }; \
		int collided = 0;                                                      \
		long id;                                                               \
		if (cfg->user) {                                                       \
			/* no BPF_F_REUSE_STACKID: never overwrite a stack already counted */ \
			id = bpf_get_stackid(ctx, &STACKS, BPF_F_USER_STACK);          \
			if (id >= 0)                                                   \
				key.user_stack = id;                                   \
			else if (id == -EEXIST)                                        \
				collided = 1;                                          \
			else if (id == -EFAULT)                                        \
				count(C_USER_STACK_EMPTY);                             \
			else                                                           \
				count(C_USER_STACK_ERROR);                             \
		}                                                                      \
		if (cfg->kernel) {                                                     \
			id = bpf_get_stackid(ctx, &STACKS, 0);                         \
			if (id >= 0)                                                   \
				key.kernel_stack = id;                                 \
			else if (id == -EEXIST)                                        \
				collided = 1;                                          \
			else if (id == -EFAULT)                                        \
				count(C_KERNEL_STACK_EMPTY);                           \
			else                                                           \
				count(C_KERNEL_STACK_ERROR);                           \
		}                                                                      \
		if (collided)                                                          \
			send_raw_sample(ctx, tgid, cfg);                               \
		else                                                                   \
			add_count(&COUNTS, &key);                                      \
	} while (0)

SEC("perf_event")
int profile_cpu(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task;
	struct pid_config *cfg;
	__u32 zero = 0;
	__u32 *half;

	if (tgid == 0) {
		count(C_IDLE);
		return 0;
	}
	task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD) {
		count(C_KTHREAD);
		return 0;
	}

	cfg = bpf_map_lookup_elem(&pid_config, &tgid);
	if (!cfg) {
		report_unknown(tgid);
		count(C_PENDING);
		return 0;
	}
	if (cfg->state == PID_PENDING) {
		count(C_PENDING);
		return 0;
	}
	if (cfg->state != PID_PROFILE) {
		count(C_IGNORED);
		return 0;
	}

	half = bpf_map_lookup_elem(&control, &zero);
	if (half && (*half & 1))
		RECORD_SAMPLE(stacks1, counts1);
	else
		RECORD_SAMPLE(stacks0, counts0);
	return 0;
}

// A raw tracepoint attaches by name, without tracefs (often not mounted in containers).
SEC("raw_tracepoint/sched_process_exit")
int on_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pid_event *event;

	// Threads exit one by one; the process is gone when the last one leaves.
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	// Only processes the maps know about are reported (this also drops duplicate reports
	// when several threads see `live == 0`).
	if (bpf_map_delete_elem(&pid_config, &tgid) != 0)
		return 0;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count(C_EVENTS_LOST);
		return 0;
	}
	event->kind = EVENT_PID_EXIT;
	event->pid = tgid;
	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("raw_tracepoint/sched_process_exec")
int on_process_exec(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct pid_event *event;

	// Only processes the maps know about; their configuration stays (same pid, same cgroup).
	if (!bpf_map_lookup_elem(&pid_config, &tgid))
		return 0;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count(C_EVENTS_LOST);
		return 0;
	}
	event->kind = EVENT_PID_EXEC;
	event->pid = tgid;
	bpf_ringbuf_submit(event, 0);
	return 0;
}
