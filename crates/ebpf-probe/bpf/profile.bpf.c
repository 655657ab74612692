// SPDX-License-Identifier: GPL-2.0
//
// rill's whole-host CPU sampler (kernel side of `pyroscope.ebpf`).
//
// `profile_cpu` runs on every `cpu-clock` sample of every online CPU. It skips the idle task
// and kernel threads, looks up the sampled process (tgid) in `pid_config`, reports unknown
// processes to user space once through the `events` ring buffer, and counts (pid, user stack
// id, kernel stack id, caller of a frameless user leaf) in one of two double-buffered halves (`counts0`/`stacks0`, `counts1`/`stacks1`) selected by `control[0]`.
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
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "unwind.h"

char LICENSE[] SEC("license") = "GPL";

// Minimal CO-RE views of kernel structures; field offsets are relocated against the running
// kernel's BTF at load time, so no kernel-specific header is needed to build.
typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
} __attribute__((preserve_access_index));

struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	struct signal_struct *signal;
	struct thread_struct thread;
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
#define EVENT_REREAD_MAPS 5 // a pc outside every known mapping of the pid: re-read its maps
#define EVENT_UNWOUND_SAMPLE 6 // a table-walked sample sent whole (collision or full store)

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
// How table walks ended (C_UNWIND_BASE + reason - 1, see UNWIND_* below), one per walked sample.
#define C_UNWIND_BASE 14
#define C_UNWIND_FP_USED 21 // walks that took at least one frame-pointer step
#define C_USTACK_COLLISIONS 22 // walked stacks sent whole: hash collision in the ustacks map
#define C_USTACK_FULL 23 // walked stacks sent whole: the ustacks map was full
#define C_REREAD_REQUESTS 24 // EVENT_REREAD_MAPS sent
#define C_PY_FRAMES 25 // Python frames recorded by the table walk
#define C_PY_NO_THREAD 26 // walks in a CPython eval loop whose thread state was not found
#define C_PY_READ_FAILED 27 // walks whose Python frames stopped at an unreadable frame
#define C_STACK_WINDOW_SHORT 28 // stack windows cut at the end of a page (the stack ends in it)
#define C_NUM_COUNTERS 32

struct pid_config {
	__u8 state;
	__u8 user;
	__u8 kernel;
	__u8 _pad;
};

// sample_key.user_store
#define STORE_STACK_MAP 0 // user_stack is an id in stacksN (the kernel's frame-pointer walk)
#define STORE_USTACKS 1 // leaf_caller is a key of ustacksN (the table walk)

struct sample_key {
	__u32 pid;
	__s32 user_stack;
	__s32 kernel_stack;
	__u32 user_store;
	// STORE_STACK_MAP: return address of the user leaf function's caller when the
	// frame-pointer walk skips it (see find_leaf_caller), 0 otherwise.
	// STORE_USTACKS: the key of the user stack in ustacksN.
	__u64 leaf_caller;
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
	__u64 leaf_caller; // as in struct sample_key
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
					    struct pid_config *cfg, __u64 leaf_caller)
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
	raw->leaf_caller = leaf_caller;
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

// --- Callers of frameless user leaf functions -------------------------------------------------
//
// The kernel walks user stacks with frame pointers. A leaf function without a frame (gcc gives
// none to leaf functions that use no stack, even with -fno-omit-frame-pointer; hand-written
// libc routines such as memcpy or syscall wrappers have none) leaves %rbp pointing at its
// caller's frame, so the walk goes from the leaf straight to the caller's caller. The same
// happens in a prologue before `mov %rsp,%rbp` and in an epilogue after `pop %rbp`.
//
// find_leaf_caller looks at the top words of the user stack for the leaf's return address and
// accepts a word only if the instruction before it is a call whose target is the function the
// sample is in: `call rel32` (directly or through a PLT stub `[endbr64] [bnd] jmp *GOT(%rip)`)
// or `call *GOT(%rip)`, with the target at most MAX_FUNCTION_SIZE below the sampled ip. It stops
// at the return address the frame-pointer walk itself finds ([%rbp + 8]): then nothing is
// skipped. The address found is counted as part of the key and spliced in by user space.

#define LEAF_SCAN_WORDS 8
#define MAX_FUNCTION_SIZE (256 * 1024)
#define USER_ADDR_LIMIT 0x0000800000000000ULL

// The u64 stored at `insn_end + disp32` (a RIP-relative GOT slot).
static __always_inline __u64 rip_slot(__u64 insn_end, const __u8 *disp)
{
	__s32 d = (__s32)((__u32)disp[0] | (__u32)disp[1] << 8 | (__u32)disp[2] << 16 |
			  (__u32)disp[3] << 24);
	__u64 target = 0;

	if (bpf_probe_read_user(&target, sizeof(target), (void *)(insn_end + (__s64)d)))
		return 0;
	return target;
}

// The function a PLT stub jumps to, or 0 if `stub` is not one.
static __always_inline __u64 plt_target(__u64 stub)
{
	__u8 code[11];

	if (bpf_probe_read_user(code, sizeof(code), (void *)stub))
		return 0;
	if (code[0] == 0xff && code[1] == 0x25)
		return rip_slot(stub + 6, &code[2]);
	if (code[0] == 0xf2 && code[1] == 0xff && code[2] == 0x25)
		return rip_slot(stub + 7, &code[3]);
	if (code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && code[3] == 0xfa) {
		if (code[4] == 0xff && code[5] == 0x25)
			return rip_slot(stub + 10, &code[6]);
		if (code[4] == 0xf2 && code[5] == 0xff && code[6] == 0x25)
			return rip_slot(stub + 11, &code[7]);
	}
	return 0;
}

static __always_inline int starts_function_of(__u64 target, __u64 ip)
{
	return target && target <= ip && ip - target < MAX_FUNCTION_SIZE;
}

// Whether `ret` is the return address of a call to the function containing `ip`.
static __always_inline int returns_from_call_to(__u64 ret, __u64 ip)
{
	__u8 code[8];

	if (ret < 8 || ret >= USER_ADDR_LIMIT)
		return 0;
	if (bpf_probe_read_user(code, sizeof(code), (void *)(ret - 8)))
		return 0;
	if (code[3] == 0xe8) { // call rel32
		__u64 target = ret + (__s64)(__s32)((__u32)code[4] | (__u32)code[5] << 8 |
						    (__u32)code[6] << 16 | (__u32)code[7] << 24);
		if (starts_function_of(target, ip))
			return 1;
		return starts_function_of(plt_target(target), ip);
	}
	if (code[2] == 0xff && code[3] == 0x15) // call *disp32(%rip)
		return starts_function_of(rip_slot(ret, &code[4]), ip);
	return 0;
}

// A global function: the verifier checks its unrolled scan once, not at each call.
__attribute__((noinline)) __u64 find_leaf_caller(__u64 ip, __u64 sp, __u64 bp)
{
	__u64 fp_ret = 0;
	__u64 word;

	if (ip >= USER_ADDR_LIMIT || sp >= USER_ADDR_LIMIT)
		return 0;
	bpf_probe_read_user(&fp_ret, sizeof(fp_ret), (void *)(bp + 8));
#pragma unroll
	for (int i = 0; i < LEAF_SCAN_WORDS; i++) {
		if (bpf_probe_read_user(&word, sizeof(word), (void *)(sp + i * 8)))
			return 0;
		if (fp_ret && word == fp_ret)
			return 0;
		if (returns_from_call_to(word, ip))
			return word;
	}
	return 0;
}

// The user registers the current task entered the kernel with (bpf_task_pt_regs). Three reads
// of 8 bytes rather than a copy of the 168-byte pt_regs: the verifier allows 512 bytes of stack
// for a whole call chain, bpf_loop callbacks included, and the off-CPU program's walk came to
// 528 with the copy (rejected by the 6.18.44 kernel here; the 6.18 kernels of earlier runs
// took it). Returns 0 when read.
struct user_regs {
	__u64 ip;
	__u64 sp;
	__u64 bp;
};

static __always_inline int saved_user_regs(struct user_regs *r)
{
	struct pt_regs *saved = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	if (!saved || bpf_probe_read_kernel(&r->ip, sizeof(r->ip), &saved->rip) ||
	    bpf_probe_read_kernel(&r->sp, sizeof(r->sp), &saved->rsp) ||
	    bpf_probe_read_kernel(&r->bp, sizeof(r->bp), &saved->rbp))
		return -1;
	return 0;
}

// The user registers of the sampled task: the interrupted ones for a sample in user mode, the
// ones saved at kernel entry otherwise.
static __always_inline __u64 leaf_caller_of(struct bpf_perf_event_data *ctx)
{
	struct user_regs regs;

	if ((ctx->regs.cs & 3) == 3)
		return find_leaf_caller(ctx->regs.rip, ctx->regs.rsp, ctx->regs.rbp);
	if (saved_user_regs(&regs))
		return 0;
	return find_leaf_caller(regs.ip, regs.sp, regs.bp);
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
		struct sample_key key = { .pid = tgid, .user_stack = -1, .kernel_stack = -1,  \
					  .leaf_caller = leaf_caller };                        \
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
		if (cfg->kernel && !in_user) {                                         \
			id = bpf_get_stackid(ctx, &STACKS, 0);                         \
			if (id >= 0)                                                   \
				key.kernel_stack = id;                                 \
			else if (id == -EEXIST)                                        \
				collided = 1;                                          \
			else if (id == -EFAULT)                                        \
				count(C_KERNEL_STACK_EMPTY);                           \
			else                                                           \
				count(C_KERNEL_STACK_ERROR);                           \
		} else if (cfg->kernel) {                                              \
			count(C_KERNEL_STACK_EMPTY);                                   \
		}                                                                      \
		if (collided)                                                          \
			send_raw_sample(ctx, tgid, cfg, leaf_caller);                  \
		else                                                                   \
			add_count(&COUNTS, &key);                                      \
	} while (0)

// The table walk (.eh_frame unwinding) and RECORD_UNWOUND.
#include "walk.h"

// One sample. `unwind` is a constant: profile_cpu (unwind = 0) is the frame-pointer program
// every supported kernel loads; profile_cpu_unwind adds the table walk for the processes in
// unwind_procs and needs bpf_loop (5.17). User space loads one of the two.
static __always_inline int sample(struct bpf_perf_event_data *ctx, int unwind)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 slot_index = tgid & (PROC_CACHE_SLOTS - 1), first = 0, mappings = 0;
	struct proc_cache_entry *slot = NULL;
	struct pid_config *cfg;
	struct unwind_proc *proc;
	struct user_stack *stack;
	__u64 leaf_caller, gen = 0;
	__u64 *gen_now = NULL;
	__u64 hash = 0;
	__u32 zero = 0;
	__u32 *half;
	int in_user, walk = 0;

	if (tgid == 0) {
		count(C_IDLE);
		return 0;
	}
	// A BTF pointer: a load, where BPF_CORE_READ is a helper call (bpf_probe_read_kernel).
	if (bpf_get_current_task_btf()->flags & PF_KTHREAD) {
		count(C_KTHREAD);
		return 0;
	}

	if (unwind) {
		// The generation is read before the maps (see proc_cache).
		gen_now = bpf_map_lookup_elem(&config_gen, &zero);
		slot = bpf_map_lookup_elem(&proc_cache, &slot_index);
		if (gen_now)
			gen = *gen_now;
		if (gen_now && slot && slot->tgid == tgid && slot->gen == gen) {
			cfg = &slot->cfg;
			walk = slot->has_proc;
			first = slot->first;
			mappings = slot->count;
			goto configured;
		}
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
	proc = unwind && cfg->user ? bpf_map_lookup_elem(&unwind_procs, &tgid) : NULL;
	if (proc) {
		walk = 1;
		first = proc->first;
		mappings = proc->count;
	}
	if (gen_now && slot) {
		slot->gen = gen;
		slot->tgid = tgid;
		slot->cfg = *cfg;
		slot->has_proc = walk;
		slot->first = first;
		slot->count = mappings;
	}

configured:
	// A sample in user mode has no kernel stack: not asking for one saves the callchain setup
	// of bpf_get_stackid (a few hundred ns of cold memory per sample).
	in_user = (ctx->regs.cs & 3) == 3;
	half = bpf_map_lookup_elem(&control, &zero);
	stack = walk ? walk_user_stack(ctx, first, mappings, tgid, gen, gen_now != NULL, &hash)
		     : NULL;
	if (stack) {
		if (half && (*half & 1))
			RECORD_UNWOUND(stacks1, counts1, ustacks1);
		else
			RECORD_UNWOUND(stacks0, counts0, ustacks0);
		return 0;
	}
	// No table walk for this process (or it could not start): the kernel's frame-pointer walk.
	leaf_caller = cfg->user ? leaf_caller_of(ctx) : 0;
	if (half && (*half & 1))
		RECORD_SAMPLE(stacks1, counts1);
	else
		RECORD_SAMPLE(stacks0, counts0);
	return 0;
}

SEC("perf_event")
int profile_cpu(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, 0);
}

SEC("perf_event")
int profile_cpu_unwind(struct bpf_perf_event_data *ctx)
{
	return sample(ctx, 1);
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
	// Its mappings too: a process reusing the pid must not be walked with them.
	bpf_map_delete_elem(&unwind_procs, &tgid);
	bpf_map_delete_elem(&python_procs, &tgid);
	raise_config_gen();
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
	// The old program's mappings are gone: frame pointers until user space publishes the new
	// ones (its re-read worker reads the maps of an exec'd process as the event arrives).
	bpf_map_delete_elem(&unwind_procs, &tgid);
	bpf_map_delete_elem(&python_procs, &tgid);
	raise_config_gen();
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

// Off-CPU profiles (offcpu_switch, offcpu_switch_unwind).
#include "offcpu.h"

// Kernel symbolization for user space (ksym_resolve, run with BPF_PROG_TEST_RUN).
#include "ksym.h"
