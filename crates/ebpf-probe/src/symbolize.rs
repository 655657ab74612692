//! `symbolize` (in progress): frame types shared with `pprof`.

use std::sync::Arc;

/// One executable mapping a user frame belongs to, as pprof wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    /// First address of the mapping in the process.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// File offset the mapping starts at.
    pub offset: u64,
    /// Path of the mapped file as the process sees it (`[vdso]` for the vdso).
    pub file: String,
    /// GNU build ID in lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Instruction pointer (absolute address in the process or kernel).
    pub address: u64,
    /// Function name (demangled per the `demangle` option), if known.
    pub name: Option<String>,
    /// The mapping holding `address` (user frames only).
    pub mapping: Option<Arc<MappingInfo>>,
}

impl Frame {
    /// The name to show: the function name, else `module+0xoffset` (file offset), else
    /// `[unknown]`.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.mapping {
            Some(m) => {
                let base = m.file.rsplit('/').next().unwrap_or(&m.file);
                let off = self.address.wrapping_sub(m.start).wrapping_add(m.offset);
                format!("{base}+0x{off:x}")
            }
            None => "[unknown]".to_string(),
        }
    }
}
