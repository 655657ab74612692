// SPDX-License-Identifier: GPL-2.0
//
// CPython frames inside the table walk: included by walk.h, not a standalone header.
//
// User space describes each CPython process in `python_procs` (where its eval loop is, where its
// thread states are, and the struct offsets of its version). When the native walk meets a pc in
// `_PyEval_EvalFrameDefault` (or its `.cold` part), the Python frames that eval call runs are
// recorded in place of that native frame, then the native walk resumes from it, so native and
// Python frames interleave as they nest:
// - 3.12+: one eval call runs every frame above its shim frame (owner FRAME_OWNED_BY_CSTACK);
// - 3.11: every frame down to and including the one with `is_entry` set;
// - 3.10 and older: exactly one frame (each Python call is a C call of the eval loop).
// The sampled thread's state is found by comparing each thread state's `thread_id`
// (pthread_self(), the thread pointer on x86-64 with glibc and musl) with the task's fs base.
//
// A Python frame takes two words of the stack: PY_TAG_CODE | code object address, then
// PY_TAG_INSTR | instruction (f_lasti, or the byte offset of the instruction pointer from the
// code object). Both have bit 63 set, which no user address has. A frame that cannot be read
// is recorded as code address 0 with the reason as its instruction (PY_ERR_*), and the walk
// records no more Python frames (the native walk goes on).

#ifndef RILL_PYTHON_H
#define RILL_PYTHON_H

#define PY_TAG_CODE 0x8000000000000000ULL
#define PY_TAG_INSTR 0xc000000000000000ULL
#define PY_TAG_MASK 0xc000000000000000ULL

#define PY_ENTRY_ONE 0 // <= 3.10: one Python frame per eval call
#define PY_ENTRY_FLAG 1 // 3.11: the eval call's first frame has is_entry (frame_owner) != 0
#define PY_ENTRY_OWNER 2 // 3.12+: a shim frame whose owner (frame_owner) is owner_cstack

#define PY_INSTR_INT 0 // frame_instr is an int (f_lasti), recorded as is
#define PY_INSTR_PTR 1 // frame_instr is a pointer into the code object: its offset is recorded

#define PY_MAX_THREADS 64 // thread states compared with the sampled thread
#define PY_TSTATE_READ 256 // a power of two: bytes of a thread state read at most

// The reason of an unreadable Python frame (code address 0).
#define PY_ERR_NO_THREAD 1 // no thread state has the sampled thread's id
#define PY_ERR_READ 2 // reading the interpreter, a thread state or a frame failed
#define PY_ERR_TRUNCATED 3 // the stack is full

struct python_proc {
	__u64 eval_start; // _PyEval_EvalFrameDefault, absolute addresses in the process
	__u64 eval_end;
	__u64 cold_start; // its .cold part, or 0, 0
	__u64 cold_end;
	__u64 interp_head; // address of the PyInterpreterState * of the main interpreter
	__u16 interp_threads; // PyInterpreterState: the first PyThreadState *
	__u16 tstate_next; // PyThreadState: next
	__u16 tstate_thread_id; // PyThreadState: thread_id (pthread_self())
	__u16 tstate_frame; // PyThreadState: frame (<= 3.10), cframe (3.11, 3.12), current_frame
	__u16 cframe_frame; // _PyCFrame: current_frame (3.11, 3.12; unused otherwise)
	__u16 frame_back; // frame: f_back / previous
	__u16 frame_code; // frame: f_code / f_executable
	__u16 frame_instr; // frame: f_lasti / prev_instr / instr_ptr
	__u16 frame_owner; // frame: is_entry (3.11) / owner (3.12+), one byte
	__u8 entry_kind; // PY_ENTRY_*
	__u8 owner_cstack; // owner value of a shim frame (PY_ENTRY_OWNER)
	__u8 instr_kind; // PY_INSTR_*
	__u8 cframe; // 1: tstate_frame points at a _PyCFrame (3.11, 3.12)
	__u16 frame_read; // bytes of a frame to read (every frame_* offset + its size), <= 128
	__u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct python_proc);
} python_procs SEC(".maps");

#define PY_FRAME_READ 128 // the largest frame_read
#define PY_MAX_CALL_FRAMES 256 // Python frames recorded for one eval call

// 3.11+ keeps a thread's frames one after another in its data stack, a caller below its
// callee, so one read that ends just above a frame usually holds several of its callers too;
// a read per frame costs about 100 ns on a slow VM (as in the native walk's stack window,
// walk.h). The window never reaches below the page of the frame it is read for: the data
// stack's first chunk may start at a mapping's first page. Older versions' frames are heap
// objects, read one by one.
#define PY_WINDOW_BYTES 2048 // a power of two, at most a page

// A frame's bytes, one per CPU (the BPF stack is too small next to the walk's): the window
// [win_start, win_start + PY_WINDOW_BYTES) when win_valid, then room for one frame read alone.
struct py_buf {
	__u64 win_start;
	__u8 win_valid;
	__u8 win_failed; // a window read failed in this walk: frames are read alone
	__u16 _pad;
	__u32 _pad2;
	__u8 bytes[PY_WINDOW_BYTES + PY_FRAME_READ];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct py_buf);
} py_scratch SEC(".maps");

// What the sampler last found in python_procs for a process, per CPU, and the address of its
// main interpreter once read: like proc_cache (walk.h), a slot (tgid % PROC_CACHE_SLOTS) is
// used only while config_gen holds the generation it was filled at, and user space raises the
// generation after every change of python_procs. The hash lookup (done twice a sample before:
// at the walk's start and at the first eval frame) and the read of the interpreter pointer
// were a fifth of a Python sample's cost. The main interpreter of a process never moves once
// created (3.11+ embed it in _PyRuntime; older versions allocate it once at start-up); exec
// and exit raise the generation.
struct py_cache_entry {
	__u64 gen;
	__u32 tgid; // 0: empty
	__u32 has_proc; // python_procs had an entry
	__u64 interp; // the main interpreter, 0 until read
	struct python_proc proc;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROC_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct py_cache_entry);
} py_cache SEC(".maps");

// The slot of the walked process when it holds this walk's generation, else NULL.
static __always_inline struct py_cache_entry *py_cached(struct walk_state *w)
{
	__u32 index = w->tgid & (PROC_CACHE_SLOTS - 1);
	struct py_cache_entry *slot;

	if (!w->cached)
		return NULL;
	slot = bpf_map_lookup_elem(&py_cache, &index);
	if (!slot || slot->tgid != w->tgid || slot->gen != w->gen)
		return NULL;
	return slot;
}

// What the callbacks of python_frames share (pointers live here, not in walk_state).
struct py_ctx {
	struct walk_state *w;
	struct user_stack *stack;
	struct python_proc *py;
	struct py_buf *buf;
};

static __always_inline int py_in_eval(struct walk_state *w, __u64 ip)
{
	return (ip >= w->py_eval_start && ip < w->py_eval_end) ||
	       (ip >= w->py_cold_start && ip < w->py_cold_end);
}

static __always_inline int py_read_ptr(__u64 *out, __u64 addr)
{
	if (addr < 4096 || addr >= USER_ADDR_LIMIT)
		return -1;
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr) ? -1 : 0;
}

// Records one word of the stack; 1 when the stack is full.
static __always_inline int push_word(struct py_ctx *c, __u64 word)
{
	struct walk_state *w = c->w;
	__u32 n = w->n;

	// Keep clang from deriving the index from an earlier one: the verifier needs the mask.
	asm volatile("" : "+r"(n));
	if (n >= MAX_USER_FRAMES)
		return 1;
	c->stack->frames[n & (MAX_USER_FRAMES - 1)] = word;
	w->n = n + 1;
	w->hash = (w->hash ^ word) * 0x100000001b3ULL;
	w->hash ^= w->hash >> 29;
	return 0;
}

// Records a Python frame (two words); 1 when the stack is full.
static __always_inline int push_python(struct py_ctx *c, __u64 code, __u64 instr)
{
	if (c->w->n + 2 > MAX_USER_FRAMES)
		return 1;
	push_word(c, PY_TAG_CODE | (code & ~PY_TAG_MASK));
	push_word(c, PY_TAG_INSTR | (instr & 0xffffffffULL));
	return 0;
}

// Gives up on Python frames for this walk: the reason is recorded as a frame in place of the
// eval frame, and the native walk goes on.
static __always_inline void py_fail(struct py_ctx *c, __u32 reason, __u32 counter)
{
	push_python(c, 0, reason);
	count(counter);
	c->w->py_failed = 1;
}

// bpf_loop callback: compares the thread state at py_cursor with the sampled thread; 1 when
// the search is over (found, or failed). One read per thread state: the bytes up to the last
// of its next, thread_id and frame fields (user space keeps that span within PY_TSTATE_READ),
// into the start of the frame buffer, which holds no window yet.
static long py_find_thread(__u64 index, void *data)
{
	struct py_ctx *c = data;
	struct walk_state *w = c->w;
	struct python_proc *py = c->py;
	__u64 tstate = w->py_cursor;
	__u8 *bytes = c->buf->bytes;
	__u32 span = py->tstate_next;
	__u64 size;

	if (!tstate) {
		py_fail(c, PY_ERR_NO_THREAD, C_PY_NO_THREAD);
		return 1;
	}
	if (py->tstate_thread_id > span)
		span = py->tstate_thread_id;
	if (py->tstate_frame > span)
		span = py->tstate_frame;
	size = span + 8;
	// Hide what clang knows of size, so that it tests the register the call takes (else the
	// verifier sees no bound on it).
	asm volatile("" : "+r"(size));
	if (size > PY_TSTATE_READ || tstate < 4096 || tstate >= USER_ADDR_LIMIT ||
	    bpf_probe_read_user(bytes, size, (void *)tstate)) {
		py_fail(c, PY_ERR_READ, C_PY_READ_FAILED);
		return 1;
	}
	// The masks keep the verifier in the buffer; the offsets are below span, so they change
	// nothing.
	if (*(__u64 *)(bytes + (py->tstate_thread_id & (PY_TSTATE_READ - 8))) != w->fsbase) {
		w->py_cursor = *(__u64 *)(bytes + (py->tstate_next & (PY_TSTATE_READ - 8)));
		return 0;
	}
	w->py_cursor = *(__u64 *)(bytes + (py->tstate_frame & (PY_TSTATE_READ - 8)));
	w->py_found = 1;
	return 1;
}

// bpf_loop callback: records the Python frame at py_cursor for the eval call at w->ip; 1 when
// that call's frames are all recorded (or the walk cannot go on).
static long py_push_frame(__u64 index, void *data)
{
	struct py_ctx *c = data;
	struct walk_state *w = c->w;
	struct python_proc *py = c->py;
	struct py_buf *b = c->buf;
	__u64 code, back, instr, cur = w->py_cursor, start, off = PY_WINDOW_BYTES;
	__u32 at, size;
	__u8 *frame;
	__u8 owner;

	if (!cur)
		return 1; // no Python frame left (the eval call is starting or ending one)
	size = py->frame_read;
	if (size > PY_FRAME_READ)
		size = PY_FRAME_READ;
	if (size < 8 || cur >= USER_ADDR_LIMIT || cur < 4096) {
		py_fail(c, PY_ERR_READ, C_PY_READ_FAILED);
		return 1;
	}
	if (py->entry_kind != PY_ENTRY_ONE && !b->win_failed) {
		if (!b->win_valid || cur < b->win_start ||
		    cur - b->win_start > PY_WINDOW_BYTES - PY_FRAME_READ) {
			// Ends PY_FRAME_READ above the frame, starts no lower than the frame's page
			// (then it ends inside that page, the frame in it: a frame's offset in its page
			// is below PY_WINDOW_BYTES - PY_FRAME_READ whenever the clamp applies).
			start = cur + PY_FRAME_READ - PY_WINDOW_BYTES;
			if (start < (cur & ~4095ULL))
				start = cur & ~4095ULL;
			b->win_valid = !bpf_probe_read_user(b->bytes, PY_WINDOW_BYTES, (void *)start);
			b->win_failed = !b->win_valid;
			b->win_start = start;
		}
		if (b->win_valid && cur >= b->win_start &&
		    cur - b->win_start <= PY_WINDOW_BYTES - PY_FRAME_READ)
			off = cur - b->win_start;
	}
	if (off >= PY_WINDOW_BYTES) {
		// Not in a window: the frame alone, in the room after the window.
		off = PY_WINDOW_BYTES;
		if (bpf_probe_read_user(b->bytes + PY_WINDOW_BYTES, size, (void *)cur)) {
			py_fail(c, PY_ERR_READ, C_PY_READ_FAILED);
			return 1;
		}
	}
	frame = b->bytes + off;
	at = py->frame_back & (PY_FRAME_READ - 8);
	back = *(__u64 *)(frame + at);
	at = py->frame_code & (PY_FRAME_READ - 8);
	code = *(__u64 *)(frame + at);
	at = py->frame_owner & (PY_FRAME_READ - 1);
	owner = frame[at];
	if (py->instr_kind == PY_INSTR_PTR) {
		at = py->frame_instr & (PY_FRAME_READ - 8);
		instr = *(__u64 *)(frame + at);
		instr = instr >= code ? instr - code : 0;
	} else {
		at = py->frame_instr & (PY_FRAME_READ - 4);
		instr = *(__u32 *)(frame + at);
	}
	w->py_cursor = back;
	if (py->entry_kind == PY_ENTRY_OWNER && owner == py->owner_cstack)
		return 1; // the shim frame this eval call started with
	if (push_python(c, code, instr)) {
		w->py_failed = 1;
		w->py_full = 1;
		return 1;
	}
	count(C_PY_FRAMES);
	w->py_pushed++;
	if (py->entry_kind == PY_ENTRY_ONE || (py->entry_kind == PY_ENTRY_FLAG && owner))
		return 1;
	return 0;
}

// At a native frame in the eval loop: records the Python frames of that eval call. Returns 1
// if anything was recorded in place of the native frame (which then takes only its native
// step), 0 to record it as a native frame.
// A global function: the verifier checks it once, not once per state of the native walk.
__attribute__((noinline)) int python_frames(struct walk_state *w)
{
	struct py_ctx ctx = {}, *c = &ctx;
	struct py_cache_entry *slot;
	__u32 tgid, before, zero = 0;
	struct python_proc *py;
	__u64 interp = 0, tstate, frame;

	if (!w)
		return 0;
	tgid = w->tgid;
	before = w->n;
	slot = py_cached(w);
	if (slot && slot->has_proc)
		py = &slot->proc;
	else
		py = bpf_map_lookup_elem(&python_procs, &tgid);
	ctx.stack = bpf_map_lookup_elem(&walk_scratch, &zero);
	ctx.buf = bpf_map_lookup_elem(&py_scratch, &zero);
	if (!py || !ctx.stack || !ctx.buf)
		return 0;
	ctx.w = w;
	ctx.py = py;
	if (!w->py_found) {
		// The first eval call of this walk: the window holds another sample's memory.
		ctx.buf->win_valid = 0;
		ctx.buf->win_failed = 0;
		if (slot)
			interp = slot->interp;
		if (!interp) {
			if (py_read_ptr(&interp, py->interp_head))
				interp = 0;
			else if (slot)
				slot->interp = interp;
		}
		if (!interp || py_read_ptr(&tstate, interp + py->interp_threads)) {
			py_fail(c, PY_ERR_READ, C_PY_READ_FAILED);
			return w->n != before;
		}
		w->py_cursor = tstate;
		bpf_loop(PY_MAX_THREADS, py_find_thread, c, 0);
		if (!w->py_found) {
			if (!w->py_failed)
				py_fail(c, PY_ERR_NO_THREAD, C_PY_NO_THREAD);
			return w->n != before;
		}
		// 3.11, 3.12: the thread state points at the innermost eval call's _PyCFrame. (Read
		// through the native walk's stack window, where that local lies, it cost more: the
		// window then started too low for the native steps that follow.)
		frame = w->py_cursor;
		if (py->cframe && frame) {
			if (py_read_ptr(&frame, frame + py->cframe_frame)) {
				py_fail(c, PY_ERR_READ, C_PY_READ_FAILED);
				return w->n != before;
			}
			w->py_cursor = frame;
		}
	}
	w->py_pushed = 0;
	bpf_loop(PY_MAX_CALL_FRAMES, py_push_frame, c, 0);
	return w->n != before;
}

// Cleared by user space at load time when Python frames are off (the probe is reloaded when
// `python_enabled` changes): then no sample looks its process up in python_procs.
const volatile __u8 python_enabled = 1;

// Copies what the walk needs of the process's python_proc, if it has one.
static __always_inline void python_start(struct walk_state *w)
{
	__u32 tgid = w->tgid, index = tgid & (PROC_CACHE_SLOTS - 1);
	struct py_cache_entry *slot = NULL;
	struct python_proc *py;

	if (!python_enabled)
		return;
	if (w->cached)
		slot = bpf_map_lookup_elem(&py_cache, &index);
	if (slot && slot->tgid == tgid && slot->gen == w->gen) {
		if (!slot->has_proc)
			return;
		py = &slot->proc;
	} else {
		py = bpf_map_lookup_elem(&python_procs, &tgid);
		if (slot) {
			slot->gen = w->gen;
			slot->tgid = tgid;
			slot->interp = 0;
			slot->has_proc = py != NULL;
			if (py)
				slot->proc = *py;
		}
		if (!py)
			return;
	}
	w->py_eval_start = py->eval_start;
	w->py_eval_end = py->eval_end;
	w->py_cold_start = py->cold_start;
	w->py_cold_end = py->cold_end;
	w->fsbase = bpf_get_current_task_btf()->thread.fsbase;
}

#endif
