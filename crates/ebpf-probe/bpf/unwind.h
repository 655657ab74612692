// SPDX-License-Identifier: GPL-2.0
//
// The compact unwind table shared by user space (which builds it from an ELF file's call frame
// information) and the BPF program (which walks user stacks with it). x86-64 only.
//
// A table is the rows of one executable file, sorted by `pc`; a row's rule holds from its `pc`
// up to the next row's `pc`. `pc` is the file's own virtual address (ELF p_vaddr space, before
// the load bias of a mapping), so one table serves every process that maps the file.
// The return address is always at CFA - 8 (x86-64 SysV); CFI that puts it elsewhere is
// UNW_UNSUPPORTED. The Rust mirror is `ebpf_probe::unwind::abi`; a test reads this file and
// checks that every constant and the row size agree.

#ifndef RILL_UNWIND_H
#define RILL_UNWIND_H

// unwind_row.kind
#define UNW_CFA_RSP 1 // CFA = rsp + cfa_offset
#define UNW_CFA_RBP 2 // CFA = rbp + cfa_offset
// The two GCC/binutils PLT stub expressions: CFA = rsp + cfa_offset + ((rip & 15) >= T ? 8 : 0),
// with the threshold T in `rbp_offset` (11 or 10); rbp is unchanged in a PLT stub.
#define UNW_CFA_PLT 3
#define UNW_CFA_DEREF_RSP 4 // CFA = *(u64 *)(rsp + cfa_offset)
#define UNW_CFA_DEREF_RBP 5 // CFA = *(u64 *)(rbp + cfa_offset) (stack realignment, DRAP)
#define UNW_END 6 // return address undefined: the bottom of the stack (_start, clone, thread start)
#define UNW_SIGNAL 7 // signal trampoline (__restore_rt): registers come back from the ucontext at rsp
#define UNW_FRAME_POINTER 8 // no CFI for this range: follow the frame pointer (rbp chain)
#define UNW_UNSUPPORTED 9 // a rule rill cannot follow (the walk stops and counts it)
#define UNW_NO_INFO 10 // a gap between FDEs: no unwind information for this pc

// unwind_row.rbp_offset for CFA kinds: 0 = rbp unchanged, UNW_RBP_UNDEFINED = the caller's rbp is
// not recoverable (a later rbp-based rule fails), else the caller's rbp is at CFA + 8 * rbp_offset.
#define UNW_RBP_UNDEFINED (-128)

#define UNW_ROW_SIZE 8

struct unwind_row {
	__u32 pc;
	__u8 kind;
	__s8 rbp_offset;
	__s16 cfa_offset;
};

#endif
