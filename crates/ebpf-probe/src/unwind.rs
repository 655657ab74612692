//! Native stack unwinding without frame pointers: call frame information (`.eh_frame`,
//! `.debug_frame`) turned into compact per-file tables (`abi` is the row the BPF program reads).
//!
//! - [`cfi`] locates the CFI of an ELF file (and its separate debug file);
//! - [`table`] turns it into sorted [`abi::UnwindRow`]s with gimli ([`table::build_from_file`],
//!   [`table::build_from_bytes`]);
//! - [`cache`] shares one table per file identity across processes, LRU-bounded;
//! - [`eval`] is the reference semantics of one unwind step, which the BPF walk mirrors.

use std::path::PathBuf;

pub mod abi;
pub mod cache;
pub mod cfi;
mod convert;
pub mod eval;
pub(crate) mod sparse;
pub mod table;

pub use convert::UnsupportedCounts;

/// Why a table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    /// The file is not a well-formed ELF image.
    #[error("ELF: {0}")]
    Elf(String),
    /// Not an x86-64 ELF64 file.
    #[error("not an x86-64 ELF file")]
    NotX86_64,
    /// gimli rejected the structure of the CFI section.
    #[error("call frame information: {0}")]
    Cfi(#[from] gimli::Error),
    /// An address at or above 4 GiB: rows hold 32-bit pcs.
    #[error("address {0:#x} does not fit the table's 32-bit pc")]
    AddressTooLarge(u64),
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
