// SPDX-License-Identifier: GPL-2.0
//
// The in-kernel table walk of rill's sampler: included by profile.bpf.c after the maps and
// helpers it uses (counters, the ring buffer, sample_key, add_count), not a standalone header.
// Built into profile.bpf.o by scripts/build-bpf.sh.

#ifndef RILL_WALK_H
#define RILL_WALK_H

// --- Table walk (.eh_frame unwinding) -----------------------------------------------------------
//
// A process with an entry in `unwind_procs` has its user stack walked here with the unwind tables
// of its executable mappings instead of the kernel's frame-pointer walk. User space owns the
// layout: `unwind_procs` gives each process a range of `unwind_mappings` (sorted by start, not
// overlapping); a mapping names a table in `unwind_tables`, which is a range of `unwind_rows`
// shared by every mapping of the same file: first the table's page index (one `unwind_page` per
// 4 KiB page of the file's addresses, the same size as a row), then its rows (sorted by pc, see
// unwind.h). The page index narrows the binary search to the rows that can hold a pc of that
// page: a sample finds its memory cold, and every step of a search over the whole table would be
// a cache (and often a TLB) miss. User space writes a new range before it publishes it, so a walk
// never sees a half-written one.
//
// One bpf_loop iteration per frame: record the pc, find its mapping, find its row, compute the
// caller's registers. The frames go to a per-CPU scratch value and then to `ustacks0/1`, keyed by
// a 64-bit hash; an entry already there under the same hash is compared frame by frame, and a
// different stack (or a full map) is sent whole through the ring buffer instead.

#define MAX_USER_FRAMES 512 // a power of two (the index is masked for the verifier)
#define MAX_PROC_MAPPINGS 1024 // mappings per process (user space keeps fewer)
#define MAPPING_SEARCH_STEPS 11 // ceil(log2(MAX_PROC_MAPPINGS + 1))
#define MAX_TABLE_ROWS (1 << 24) // rows per table (user space keeps fewer)
// Rows a page's search compares: the last row at or below the page's first address and the rows
// inside it, at most 257 for rows at distinct pcs (user space merges equal ones).
#define MAX_PAGE_ROWS 511
#define ROW_SEARCH_STEPS 9 // ceil(log2(MAX_PAGE_ROWS + 1))
#define UNWIND_PAGE_SHIFT 8 // the page index has one entry per 256 bytes of file addresses
#define TABLE_FRAME_POINTER 0xffffffff // unwind_mapping.table: no table, follow frame pointers
#define CFA_BLOCK_WORDS 8 // cfa_step reads ret and a saved rbp this close to the CFA at once
#define REREAD_INTERVAL_NS 1000000000ULL // at most one EVENT_REREAD_MAPS per process a second

// How a table walk ended (user_stack.reason).
#define UNWIND_COMPLETE 1 // reached the bottom: an END row, a zero return address or rbp
#define UNWIND_TRUNCATED 2 // MAX_USER_FRAMES frames and more to go
#define UNWIND_NO_MAPPING 3 // a pc outside every known mapping of the process
#define UNWIND_NO_INFO 4 // a pc without unwind information (NO_INFO row, outside the table)
#define UNWIND_UNSUPPORTED 5 // an UNSUPPORTED row or a rule that needs an unknown rbp
#define UNWIND_READ_FAILED 6 // reading the user stack failed
#define UNWIND_BAD_FRAME 7 // the computed caller is impossible (stack not growing, bad pc)

// user_stack.flags
#define UNWIND_FLAG_FP_USED 1 // at least one frame came from a frame-pointer step

// x86-64 signal frame: at __restore_rt, rsp points at the `struct ucontext` of the rt_sigframe
// (its `pretcode` was popped by the handler's return). ucontext: uc_flags (8), uc_link (8),
// uc_stack (stack_t: 8 + 4 + pad 4 + 8 = 24), then struct sigcontext at 40, whose u64 fields
// are r8..r15, rdi, rsi, rbp (index 10), rbx, rdx, rax, rcx, rsp (15), rip (16).
#define UC_MCONTEXT 40
#define UC_RBP (UC_MCONTEXT + 10 * 8)
#define UC_RSP (UC_MCONTEXT + 15 * 8)
#define UC_RIP (UC_MCONTEXT + 16 * 8)

struct unwind_proc {
	__u32 first; // index of the first mapping in unwind_mappings
	__u32 count; // number of mappings
	__u64 reread_ns; // written by the kernel: when it last asked for a re-read
};

struct unwind_mapping {
	__u64 start; // first address
	__u64 end; // one past the last address
	__u64 bias; // file vaddr = pc - bias
	__u32 table; // index in unwind_tables, or TABLE_FRAME_POINTER
	__u32 _pad;
};

struct unwind_table {
	__u32 first; // index in unwind_rows of the page index; the rows follow it
	__u32 count; // number of rows
	__u32 page_base; // file address >> UNWIND_PAGE_SHIFT of the first page in the index
	__u32 pages; // entries in the page index
	__u32 generation; // never the same for two writes of an entry, never 0 (row_cache tags)
	__u32 _pad;
};

// For the pcs of one page: the rows from `first` (relative to the table's first row) to
// `first + count` are the only ones the search must compare with the pc. Every row before them
// starts at or below the page's first address, every row after them above its last.
struct unwind_page {
	__u32 first;
	__u32 count;
};

struct user_stack {
	__u32 len;
	__u8 reason;
	__u8 flags;
	__u16 _pad;
	__u32 tgid; // the process walked (its hash is part of the key)
	__u32 _pad2;
	// In ustacksN: the samples of this stack that asked for no kernel stack, counted here
	// rather than in countsN (one hash lookup a sample fewer). 0 elsewhere.
	__u64 samples;
	__u64 frames[MAX_USER_FRAMES];
};

struct unwound_sample {
	__u32 kind;
	__u32 pid;
	__u32 user_len;
	__u32 kernel_len;
	__u8 reason;
	__u8 flags;
	__u16 _pad;
	__u32 _pad2;
	__u64 user[MAX_USER_FRAMES];
	__u64 kernel[MAX_STACK_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_MMAPABLE); // user space writes it through mmap
	__type(key, __u32);
	__type(value, struct unwind_mapping);
} unwind_mappings SEC(".maps");

// config_gen[0]: a generation of `pid_config` and `unwind_procs`, raised (atomically) after
// every change to either: by user space through a shared mapping of the map, and by the exit
// and exec programs. It never repeats a value.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} config_gen SEC(".maps");

static __always_inline void raise_config_gen(void)
{
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&config_gen, &zero);

	if (gen)
		__sync_fetch_and_add(gen, 1);
}

// What the sampler last found in `pid_config` and `unwind_procs` for a process, per CPU: a
// slot (tgid % PROC_CACHE_SLOTS) holds a profiled process's configuration and its range of
// mappings as they were at generation `gen`. A busy process is sampled again and again on the
// same CPU, and one slot is one cache line where the two hash lookups were about a tenth of a
// sample's cost (alternating samples with and without it on the VM of session 10). A slot is
// used only while config_gen still holds its generation: a change to either map after the slot
// was filled raises it. (A sample that read the generation before a change and the maps after
// it tags what it found with the old generation, which the change has already replaced.)
#define PROC_CACHE_SLOTS 16 // a power of two
struct proc_cache_entry {
	__u64 gen;
	__u32 tgid; // 0: empty (the idle task is never cached)
	struct pid_config cfg;
	__u32 first; // unwind_proc.first and .count
	__u32 count;
	__u32 has_proc; // unwind_procs had an entry (else the frame-pointer walk)
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROC_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct proc_cache_entry);
} proc_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct unwind_table);
} unwind_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4194304);
	__uint(map_flags, BPF_F_MMAPABLE); // user space writes it through mmap
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct user_stack);
} ustacks0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct user_stack);
} ustacks1 SEC(".maps");

// Rows found recently: a small direct-mapped cache per CPU, keyed by the table's generation
// and the file address. A hot loop samples the same few return addresses again and again, and
// one slot of this cache is one memory access where the page index and the row search are
// several, each cold (the walk of a busy python3 sample took a fifth less with it). A table's
// generation changes whenever user space writes its entry, so a slot never outlives its
// table's contents: a table id or a range of rows used again belongs to another generation.
#define ROW_CACHE_SLOTS 1024 // a power of two
struct row_cache_entry {
	__u64 tag; // (table generation << 32) | file address; generation 0 is never written
	struct unwind_row row;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ROW_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct row_cache_entry);
} row_cache SEC(".maps");

// The rows of the last walk on this CPU, by frame index: a busy thread is sampled in the same
// callers again and again, and its frames find their rows here in a few adjacent cache lines,
// where row_cache spreads them over one line each (a tenth of a sample's cost on this VM,
// measured by alternating samples with and without it). Tagged like row_cache; a frame whose
// tag differs goes on to row_cache and leaves its row here for the next walk.
#define ROW_MEMO_FRAMES 32 // a power of two; deeper frames use row_cache alone
struct row_memo {
	struct row_cache_entry frames[ROW_MEMO_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct row_memo);
} row_memo SEC(".maps");

// A copy of the user stack around the frames being walked, one per CPU. Every
// bpf_probe_read_user has a fixed cost well above that of the bytes it copies (about 100 ns here
// for 8 bytes, 37 ns on a faster machine: SMAP toggling, the fault-handling setup), and a walk
// made one or two of them per frame. One read of STACK_WINDOW_WORDS words usually covers several
// frames, whose reads are then loads from this copy; a read the window cannot make (the stack
// ends within it) falls back to the end of the page, then to the exact read.
#define STACK_WINDOW_WORDS 128 // a power of two: 1 KiB
struct stack_window {
	__u64 words[STACK_WINDOW_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_window);
} stack_window SEC(".maps");

// The stack being walked, one per CPU (too large for the BPF stack).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct user_stack);
} walk_scratch SEC(".maps");

// No pointers: python_frames (python.h) is a global function that gets it by pointer, and the
// verifier forgets what a global function's memory arguments held.
struct walk_state {
	__u32 proc_first; // the process's range of unwind_mappings
	__u32 proc_count;
	// The mapping of the previous frame, by value (most callers are in the same file, and this
	// saves its search; end == 0: none yet).
	__u64 map_start;
	__u64 map_end;
	__u64 map_bias;
	__u32 map_table;
	// The mapping's table (unwind_tables[map_table]), by value.
	__u32 table_first;
	__u32 table_count;
	__u32 table_page_base;
	__u32 table_pages;
	__u32 table_generation;
	// Python (python.h): the eval loop's ranges (py_eval_end == 0: not a CPython process), the
	// thread pointer of the sampled task, and where the Python frames are.
	__u64 py_eval_start;
	__u64 py_eval_end;
	__u64 py_cold_start;
	__u64 py_cold_end;
	__u64 fsbase;
	__u64 py_cursor;
	__u32 tgid;
	__u32 py_pushed;
	__u8 py_failed;
	__u8 py_found;
	__u8 py_full;
	__u8 cached; // 1: gen is config_gen as the sample read it before the maps (py_cache tags)
	__u32 _cache_pad;
	__u64 gen;
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u64 hash;
	// stack_window holds the user memory [win_start, win_start + 8 * win_words).
	__u64 win_start;
	__u32 win_words;
	__u32 _win_pad;
	__u32 n;
	__u8 reason;
	__u8 exact; // ip is an interrupted pc (the leaf, or restored from a signal frame), not a return address
	__u8 bp_known;
	__u8 flags;
};

// `value`, with every bit unknown to the verifier (xor twice with an unknown seed). Without it a
// clamped bound is a constant and the verifier walks every path of a binary search (2^steps).
static __always_inline __u64 opaque(__u64 value, __u64 seed)
{
	asm volatile("%[v] ^= %[s]\n\t%[v] ^= %[s]" : [v] "+r"(value) : [s] "r"(seed));
	return value;
}

// The mapping of `ip` among the process's mappings, or NULL.
static __always_inline struct unwind_mapping *find_mapping(__u32 first, __u32 count, __u64 ip)
{
	__u32 lo = 0, hi, idx;
	struct unwind_mapping *m;

	if (count > MAX_PROC_MAPPINGS)
		count = MAX_PROC_MAPPINGS;
	hi = opaque(count, ip);
	// lo = number of mappings that start at or below ip
	for (int i = 0; i < MAPPING_SEARCH_STEPS; i++) {
		__u32 mid;

		if (lo >= hi)
			break;
		mid = lo + (hi - lo) / 2;
		idx = first + mid;
		m = bpf_map_lookup_elem(&unwind_mappings, &idx);
		if (!m)
			return NULL;
		if (m->start <= ip)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	idx = first + lo - 1;
	m = bpf_map_lookup_elem(&unwind_mappings, &idx);
	if (!m || ip >= m->end)
		return NULL;
	return m;
}

// The row whose range holds `pc` (the last row with row.pc <= pc), or NULL.
static __always_inline struct unwind_row *find_row(struct walk_state *w, __u32 pc)
{
	__u32 pages = w->table_pages, page = pc >> UNWIND_PAGE_SHIFT, count = w->table_count;
	__u32 first = w->table_first + pages, lo, hi, idx;
	struct unwind_page *entry;
	struct unwind_row *row;

	if (count > MAX_TABLE_ROWS)
		count = MAX_TABLE_ROWS;
	if (page < w->table_page_base)
		return NULL; // below the first row
	page -= w->table_page_base;
	if (page >= pages) {
		lo = count; // above the last row's page: the last row holds it
		hi = count;
	} else {
		idx = w->table_first + page;
		entry = (struct unwind_page *)bpf_map_lookup_elem(&unwind_rows, &idx);
		if (!entry)
			return NULL;
		lo = entry->first;
		hi = entry->first + entry->count;
		if (hi > count || lo > hi || entry->count > MAX_PAGE_ROWS)
			return NULL;
	}
	// lo = number of rows that start at or below pc, once lo == hi.
	hi = opaque(hi, pc);
	for (int i = 0; i < ROW_SEARCH_STEPS; i++) {
		__u32 mid;

		if (lo >= hi)
			break;
		mid = lo + (hi - lo) / 2;
		idx = first + mid;
		row = bpf_map_lookup_elem(&unwind_rows, &idx);
		if (!row)
			return NULL;
		if (row->pc <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	idx = first + lo - 1;
	return bpf_map_lookup_elem(&unwind_rows, &idx);
}

static __always_inline void request_reread(__u32 tgid)
{
	__u64 now = bpf_ktime_get_ns();
	struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
	struct pid_event *event;

	if (!proc)
		return;
	if (proc->reread_ns && now - proc->reread_ns < REREAD_INTERVAL_NS)
		return;
	proc->reread_ns = now; // racy between CPUs at worst: two requests
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count(C_EVENTS_LOST);
		proc->reread_ns = 0;
		return;
	}
	event->kind = EVENT_REREAD_MAPS;
	event->pid = tgid;
	bpf_ringbuf_submit(event, 0);
	count(C_REREAD_REQUESTS);
}

// CPython frames (python_procs, py_cache, python_frames, python_start).
#include "python.h"

// Reads `words` (a constant, at most 8) u64 of the user stack at `addr` into `dst`, from the
// per-CPU stack window, which is first moved to `addr` when it does not hold them. Returns 0, or
// nonzero when the memory cannot be read.
static __always_inline int read_stack(struct walk_state *w, __u64 *dst, __u32 words, __u64 addr)
{
	struct stack_window *win;
	__u32 zero = 0, first;
	__u64 rest;

	if (addr & 7 || addr >= USER_ADDR_LIMIT)
		return bpf_probe_read_user(dst, words * 8, (void *)addr);
	win = bpf_map_lookup_elem(&stack_window, &zero);
	if (!win)
		return bpf_probe_read_user(dst, words * 8, (void *)addr);
	if (addr < w->win_start || addr - w->win_start + words * 8 > (__u64)w->win_words * 8) {
		w->win_words = 0;
		if (!bpf_probe_read_user(win->words, sizeof(win->words), (void *)addr)) {
			w->win_words = STACK_WINDOW_WORDS;
		} else {
			// The stack may end within the window: its page is mapped to the end.
			count(C_STACK_WINDOW_SHORT);
			rest = (4096 - (addr & 4095)) / 8;
			if (rest < words)
				return bpf_probe_read_user(dst, words * 8, (void *)addr);
			if (rest > STACK_WINDOW_WORDS)
				rest = STACK_WINDOW_WORDS;
			if (bpf_probe_read_user(win->words, rest * 8, (void *)addr))
				return -1;
			w->win_words = rest;
		}
		w->win_start = addr;
	}
	first = (addr - w->win_start) / 8;
	for (__u32 i = 0; i < words; i++)
		dst[i] = win->words[(first + i) & (STACK_WINDOW_WORDS - 1)];
	return 0;
}

// The frame-pointer step: the caller's frame is at rbp (saved rbp, then the return address).
static __always_inline int fp_step(struct walk_state *w)
{
	__u64 frame[2];

	w->flags |= UNWIND_FLAG_FP_USED;
	if (!w->bp_known)
		return UNWIND_UNSUPPORTED;
	if (w->bp == 0)
		return UNWIND_COMPLETE;
	if (w->bp < w->sp || w->bp & 7)
		return UNWIND_BAD_FRAME;
	if (read_stack(w, frame, 2, w->bp))
		return UNWIND_READ_FAILED;
	w->sp = w->bp + 16;
	w->bp = frame[0];
	w->ip = frame[1];
	w->exact = 0;
	return 0;
}

// Registers of the interrupted code, from the ucontext at rsp.
static __always_inline int signal_step(struct walk_state *w)
{
	__u64 regs[UC_RIP / 8 + 1 - UC_RBP / 8];

	if (bpf_probe_read_user(regs, sizeof(regs), (void *)(w->sp + UC_RBP)))
		return UNWIND_READ_FAILED;
	w->bp = regs[0];
	w->sp = regs[(UC_RSP - UC_RBP) / 8];
	w->ip = regs[(UC_RIP - UC_RBP) / 8];
	w->bp_known = 1;
	w->exact = 1;
	return 0;
}

// One CFA rule: the caller's rsp is the CFA, its pc at CFA - 8, its rbp per rbp_offset.
static __always_inline int cfa_step(struct walk_state *w, struct unwind_row *row)
{
	__u64 cfa, ret;

	switch (row->kind) {
	case UNW_CFA_RSP:
		cfa = w->sp + row->cfa_offset;
		break;
	case UNW_CFA_RBP:
		if (!w->bp_known)
			return UNWIND_UNSUPPORTED;
		cfa = w->bp + row->cfa_offset;
		break;
	case UNW_CFA_PLT:
		cfa = w->sp + row->cfa_offset + ((w->ip & 15) >= (__u64)(__u8)row->rbp_offset ? 8 : 0);
		break;
	case UNW_CFA_DEREF_RSP:
		if (read_stack(w, &cfa, 1, w->sp + row->cfa_offset))
			return UNWIND_READ_FAILED;
		break;
	case UNW_CFA_DEREF_RBP:
		if (!w->bp_known)
			return UNWIND_UNSUPPORTED;
		if (read_stack(w, &cfa, 1, w->bp + row->cfa_offset))
			return UNWIND_READ_FAILED;
		break;
	default:
		return UNWIND_UNSUPPORTED;
	}
	if (cfa <= w->sp || cfa >= USER_ADDR_LIMIT)
		return UNWIND_BAD_FRAME;
	// The caller's rbp saved just below the return address (pushed with the callee-saved
	// registers): one read of the 64 bytes below the CFA gets both. It may fail where the
	// separate reads would not (a page below the frame not mapped): then they are made.
	if (row->kind != UNW_CFA_PLT && row->rbp_offset >= -CFA_BLOCK_WORDS && row->rbp_offset <= -2) {
		__u64 block[CFA_BLOCK_WORDS];

		if (!read_stack(w, block, CFA_BLOCK_WORDS, cfa - sizeof(block))) {
			w->bp = block[(CFA_BLOCK_WORDS + row->rbp_offset) & (CFA_BLOCK_WORDS - 1)];
			w->bp_known = 1;
			w->sp = cfa;
			w->ip = block[CFA_BLOCK_WORDS - 1];
			w->exact = 0;
			return 0;
		}
	}
	if (read_stack(w, &ret, 1, cfa - 8))
		return UNWIND_READ_FAILED;
	if (row->kind != UNW_CFA_PLT && row->rbp_offset != 0) {
		if (row->rbp_offset == UNW_RBP_UNDEFINED) {
			w->bp_known = 0;
		} else {
			__u64 bp;

			if (read_stack(w, &bp, 1, cfa + (__s64)row->rbp_offset * 8))
				return UNWIND_READ_FAILED;
			w->bp = bp;
			w->bp_known = 1;
		}
	}
	w->sp = cfa;
	w->ip = ret;
	w->exact = 0;
	return 0;
}

// The step from the frame at w->ip to its caller: finds the mapping (cached in w) and its row,
// then follows the row's rule. Returns 0, or the UNWIND_* reason the walk ends with.
// A global function: the verifier checks it once, not once per state of the loop that calls
// it (as a static function it was most of the program's verification, 0.27 s at every load).
__attribute__((noinline)) int unwind_step(struct walk_state *w)
{
	struct unwind_mapping *mapping;
	struct unwind_table *table;
	struct unwind_row *row;
	__u32 table_id;
	__u64 vaddr;

	if (!w)
		return UNWIND_BAD_FRAME;
	if (w->ip < w->map_start || w->ip >= w->map_end) {
		mapping = find_mapping(w->proc_first, w->proc_count, w->ip);
		if (!mapping)
			return UNWIND_NO_MAPPING;
		w->map_start = mapping->start;
		w->map_end = mapping->end;
		w->map_bias = mapping->bias;
		table_id = mapping->table;
		w->map_table = table_id;
		if (table_id != TABLE_FRAME_POINTER) {
			table = bpf_map_lookup_elem(&unwind_tables, &table_id);
			if (!table)
				return UNWIND_NO_INFO;
			w->table_first = table->first;
			w->table_count = table->count;
			w->table_page_base = table->page_base;
			w->table_pages = table->pages;
			w->table_generation = table->generation;
		}
	}
	if (w->map_table == TABLE_FRAME_POINTER)
		return fp_step(w);
	// Above the leaf the pc is a return address: the call is the instruction before it.
	vaddr = w->ip - w->map_bias - (w->exact ? 0 : 1);
	if (vaddr >> 32)
		return UNWIND_NO_INFO;
	{
		__u64 tag = ((__u64)w->table_generation << 32) | (__u32)vaddr;
		__u32 slot = (__u32)((tag * 0x9E3779B97F4A7C15ULL) >> 54) & (ROW_CACHE_SLOTS - 1);
		// The frame being stepped from (the last one recorded).
		__u32 frame = w->n - 1, index = frame & (ROW_MEMO_FRAMES - 1), zero = 0;
		struct row_cache_entry *entry, *memo = NULL;
		struct row_memo *memos;

		// Keep the mask: clang would drop it after the bound check below, which the
		// verifier does not apply to the index.
		asm volatile("" : "+r"(index));
		if (frame < ROW_MEMO_FRAMES) {
			memos = bpf_map_lookup_elem(&row_memo, &zero);
			if (memos)
				memo = &memos->frames[index];
		}
		if (memo && memo->tag == tag) {
			row = &memo->row;
		} else {
			entry = bpf_map_lookup_elem(&row_cache, &slot);
			if (entry && entry->tag == tag) {
				row = &entry->row;
			} else {
				row = find_row(w, (__u32)vaddr);
				if (!row)
					return UNWIND_NO_INFO;
				if (entry) {
					entry->tag = tag;
					entry->row = *row;
				}
			}
			if (memo) {
				memo->tag = tag;
				memo->row = *row;
			}
		}
	}
	switch (row->kind) {
	case UNW_END:
		return UNWIND_COMPLETE;
	case UNW_SIGNAL:
		return signal_step(w);
	case UNW_FRAME_POINTER:
		return fp_step(w);
	case UNW_NO_INFO:
		return UNWIND_NO_INFO;
	case UNW_UNSUPPORTED:
		return UNWIND_UNSUPPORTED;
	default:
		return cfa_step(w, row);
	}
}

// One frame: record w->ip, then step to its caller. Returns 1 when the walk is over.
static long unwind_frame(__u64 index, void *data)
{
	struct walk_state *w = data;
	struct user_stack *stack;
	__u32 n = w->n, zero = 0;
	int end;

	stack = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!stack)
		return 1;
	if (w->ip == 0) {
		w->reason = UNWIND_COMPLETE;
		return 1;
	}
	if (w->ip >= USER_ADDR_LIMIT || w->ip < 4096) {
		w->reason = UNWIND_BAD_FRAME;
		return 1;
	}
	// In the eval loop, its Python frames take the native frame's place.
	if (w->py_eval_end && !w->py_failed && py_in_eval(w, w->ip) && python_frames(w)) {
		if (w->py_full) {
			w->reason = UNWIND_TRUNCATED;
			return 1;
		}
	} else {
		if (n >= MAX_USER_FRAMES) {
			w->reason = UNWIND_TRUNCATED;
			return 1;
		}
		stack->frames[n & (MAX_USER_FRAMES - 1)] = w->ip;
		w->n = n + 1;
		w->hash = (w->hash ^ w->ip) * 0x100000001b3ULL;
		w->hash ^= w->hash >> 29;
	}
	end = unwind_step(w);
	if (end) {
		w->reason = end;
		return 1;
	}
	return 0;
}

// Sends a walked sample whole through the ring buffer. Returns 0 if it was sent.
static __always_inline int send_unwound_sample(struct bpf_perf_event_data *ctx, __u32 tgid,
					       struct pid_config *cfg, struct user_stack *stack)
{
	struct unwound_sample *raw;
	__u32 len = stack->len;
	long n;

	raw = bpf_ringbuf_reserve(&events, sizeof(*raw), 0);
	if (!raw)
		return -1;
	raw->kind = EVENT_UNWOUND_SAMPLE;
	raw->pid = tgid;
	raw->reason = stack->reason;
	raw->flags = stack->flags;
	raw->_pad = 0;
	raw->_pad2 = 0;
	raw->kernel_len = 0;
	if (len > MAX_USER_FRAMES)
		len = MAX_USER_FRAMES;
	raw->user_len = len;
	bpf_probe_read_kernel(raw->user, sizeof(raw->user), stack->frames);
	if (cfg->kernel) {
		n = bpf_get_stack(ctx, raw->kernel, sizeof(raw->kernel), 0);
		if (n > 0)
			raw->kernel_len = n / sizeof(__u64);
	}
	bpf_ringbuf_submit(raw, 0);
	return 0;
}

// What same_frames compares (pointers on the caller's stack, as bpf_loop callbacks want them).
struct stack_pair {
	struct user_stack *a;
	struct user_stack *b;
	__u32 len;
	int differ;
};

#define SAME_STACK_BLOCK 8 // frames compared per bpf_loop step (a call per frame cost more)

// bpf_loop callback: whether frames [8i, 8i + 8) of both stacks (those below len) are the same
// (1 ends the loop).
static long same_frames(__u64 i, void *data)
{
	struct stack_pair *p = data;

	for (__u32 j = 0; j < SAME_STACK_BLOCK; j++) {
		__u32 k = i * SAME_STACK_BLOCK + j;

		if (k >= p->len)
			return 1;
		if (p->a->frames[k & (MAX_USER_FRAMES - 1)] != p->b->frames[k & (MAX_USER_FRAMES - 1)]) {
			p->differ = 1;
			return 1;
		}
	}
	return 0;
}

// Whether two walked stacks are the same. A global function with its loop in bpf_loop: the
// verifier checks it once (an unrolled loop of 512 steps, in both halves of the sampler, was
// a third of the program's verification).
__attribute__((noinline)) int same_stack(struct user_stack *a, struct user_stack *b)
{
	struct stack_pair pair = { .a = a, .b = b };
	__u32 len;

	if (!a || !b)
		return 0;
	len = a->len;
	if (len != b->len || a->reason != b->reason || a->flags != b->flags || a->tgid != b->tgid)
		return 0;
	if (len > MAX_USER_FRAMES)
		return 0;
	pair.len = len;
	bpf_loop((len + SAME_STACK_BLOCK - 1) / SAME_STACK_BLOCK, same_frames, &pair, 0);
	return !pair.differ;
}

// Walks the user stack of the current task from its user registers (ip, sp, bp) into the
// per-CPU scratch; NULL if it cannot start. Shared by the sampler and the off-CPU program.
static __always_inline struct user_stack *walk_user_regs(__u32 proc_first, __u32 proc_count,
							 __u32 tgid, __u64 gen, int cached,
							 __u64 ip, __u64 sp, __u64 bp,
							 __u64 *hash)
{
	struct walk_state w = { .exact = 1, .bp_known = 1, .ip = ip, .sp = sp, .bp = bp };
	struct user_stack *stack;
	__u32 zero = 0;

	stack = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!stack)
		return NULL;
	w.proc_first = proc_first;
	w.proc_count = proc_count;
	w.tgid = tgid;
	w.gen = gen;
	w.cached = cached;
	python_start(&w);
	w.hash = 0xcbf29ce484222325ULL;
	w.reason = UNWIND_TRUNCATED; // if the loop runs out
	bpf_loop(MAX_USER_FRAMES + 1, unwind_frame, &w, 0);
	if (w.reason == UNWIND_NO_MAPPING)
		request_reread(tgid);
	stack->len = w.n;
	stack->reason = w.reason;
	stack->flags = w.flags;
	stack->_pad = 0;
	stack->tgid = tgid;
	stack->_pad2 = 0;
	stack->samples = 0;
	count(C_UNWIND_BASE + w.reason - 1);
	if (w.flags & UNWIND_FLAG_FP_USED)
		count(C_UNWIND_FP_USED);
	// The process is part of the key: its entry counts its samples.
	w.hash ^= ((__u64)tgid << 32) | ((__u64)w.n << 16) | ((__u64)w.flags << 8) | w.reason;
	w.hash ^= w.hash >> 33;
	w.hash *= 0xff51afd7ed558ccdULL;
	w.hash ^= w.hash >> 33;
	*hash = w.hash;
	return stack;
}

// Walks the user stack of the sampled task (the interrupted registers for a sample in user
// mode, the ones saved at kernel entry otherwise); NULL if it cannot start.
static __always_inline struct user_stack *walk_user_stack(struct bpf_perf_event_data *ctx,
							  __u32 proc_first, __u32 proc_count,
							  __u32 tgid, __u64 gen, int cached,
							  __u64 *hash)
{
	struct user_regs regs;

	// Read every context field up front: clang must not derive pointers into the context.
	__u64 cs = ctx->regs.cs, ip = ctx->regs.rip, sp = ctx->regs.rsp, bp = ctx->regs.rbp;

	if ((cs & 3) != 3) {
		if (saved_user_regs(&regs))
			return NULL;
		ip = regs.ip;
		sp = regs.sp;
		bp = regs.bp;
	}
	return walk_user_regs(proc_first, proc_count, tgid, gen, cached, ip, sp, bp, hash);
}

// Stores a walked stack in the given ustacks map: 0 if it is there under `hash` (and, with
// `count_it`, the sample counted in its entry), else the counter index of why not (the caller
// sends the sample whole instead).
static __always_inline __u32 store_user_stack(void *ustacks, __u64 hash, struct user_stack *stack,
					      int count_it)
{
	struct user_stack *stored;
	long err;

	stored = bpf_map_lookup_elem(ustacks, &hash);
	if (!stored) {
		stack->samples = count_it ? 1 : 0;
		err = bpf_map_update_elem(ustacks, &hash, stack, BPF_NOEXIST);
		if (!err)
			return 0;
		if (err != -EEXIST)
			return C_USTACK_FULL;
		stored = bpf_map_lookup_elem(ustacks, &hash);
		if (!stored)
			return C_USTACK_FULL;
	}
	if (!same_stack(stored, stack))
		return C_USTACK_COLLISIONS;
	if (count_it)
		__sync_fetch_and_add(&stored->samples, 1);
	return 0;
}

// Records one table-walked sample (`stack`, not NULL, under `hash`) into the given half (see
// RECORD_SAMPLE). A sample that asks for no kernel stack is counted in its ustacks entry; one
// with a kernel stack in countsN, under (pid, kernel stack, hash).
#define RECORD_UNWOUND(STACKS, COUNTS, USTACKS)                                        \
	do {                                                                           \
		struct sample_key key = { .pid = tgid, .user_stack = -1, .kernel_stack = -1,  \
					  .user_store = STORE_USTACKS, .leaf_caller = hash };    \
		int user_only = !(cfg->kernel && !in_user);                            \
		__u32 why = store_user_stack(&USTACKS, hash, stack, user_only);        \
		int collided = 0;                                                      \
		long id;                                                               \
		if (!user_only) {                                                      \
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
		if (why || collided) {                                                 \
			if (send_unwound_sample(ctx, tgid, cfg, stack))                \
				count(C_COLLISIONS_LOST);                              \
			else                                                           \
				count(why ? why : C_COLLISIONS);                       \
		} else if (user_only) {                                                \
			count(C_SAMPLES);                                              \
		} else {                                                               \
			add_count(&COUNTS, &key);                                      \
		}                                                                      \
	} while (0)

#endif
