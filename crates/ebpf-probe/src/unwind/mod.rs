//! Native stack unwinding without frame pointers: call frame information (`.eh_frame`,
//! `.debug_frame`) turned into compact per-file tables (`abi` is the row the BPF program reads).

pub mod abi;
