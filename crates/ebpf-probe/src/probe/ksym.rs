//! The kernel names kernel addresses: [`BpfKsymResolver`] runs the probe's `ksym_resolve`
//! program (bpf/ksym.h) with `BPF_PROG_TEST_RUN` on up to [`KSYM_BATCH`] addresses at a time and
//! reads what its `%pS` printed through a mapping of `ksym_names`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use aya::maps::Map;
use aya::programs::RawTracePoint;
use aya::Ebpf;

use super::sys::{self, MappedArray};
use crate::symbolize::ksym::KernelResolver;

/// The program (bpf/ksym.h).
const PROG_KSYM: &str = "ksym_resolve";
/// The map it writes the names into.
const MAP_KSYM_NAMES: &str = "ksym_names";

/// Addresses per program run (bpf/ksym.h).
pub(crate) const KSYM_BATCH: usize = 11;
/// Bytes of one entry of `ksym_names` (bpf/ksym.h).
pub(crate) const KSYM_TEXT_LEN: usize = 512;

/// Loads `ksym_resolve` (not attached) and returns descriptors of it and of `ksym_names`, from
/// which [`BpfKsymResolver`]s are made. An error says why the kernel cannot name addresses for
/// rill (bpf_snprintf needs Linux 5.13).
pub(crate) fn load(ebpf: &mut Ebpf) -> Result<(OwnedFd, OwnedFd), String> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(PROG_KSYM)
        .ok_or_else(|| format!("{PROG_KSYM} missing from the BPF object"))?
        .try_into()
        .map_err(|e| format!("{PROG_KSYM}: {e}"))?;
    program
        .load()
        .map_err(|e| format!("loading {PROG_KSYM}: {e}"))?;
    let program = program
        .fd()
        .map_err(|e| format!("{PROG_KSYM}: {e}"))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("duplicating the {PROG_KSYM} fd: {e}"))?;
    let names = match ebpf.map(MAP_KSYM_NAMES) {
        Some(Map::Array(data)) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicating the {MAP_KSYM_NAMES} fd: {e}"))?,
        _ => return Err(format!("{MAP_KSYM_NAMES} missing from the BPF object")),
    };
    Ok((program, names))
}

/// Runs `ksym_resolve`; owns its own descriptors, so it outlives the probe that made it.
#[derive(Debug)]
pub struct BpfKsymResolver {
    program: OwnedFd,
    names: MappedArray,
    text: Vec<u8>,
}

impl BpfKsymResolver {
    /// From descriptors of the loaded `ksym_resolve` and of `ksym_names` (duplicated here).
    pub(crate) fn new(program: &OwnedFd, names: &OwnedFd) -> io::Result<Self> {
        Ok(Self {
            program: program.try_clone()?,
            names: MappedArray::new(names.try_clone()?, KSYM_BATCH * KSYM_TEXT_LEN)?,
            text: vec![0; KSYM_BATCH * KSYM_TEXT_LEN],
        })
    }
}

impl KernelResolver for BpfKsymResolver {
    fn resolve(&mut self, addrs: &[u64]) -> io::Result<Vec<String>> {
        let mut out = Vec::with_capacity(addrs.len());
        for chunk in addrs.chunks(KSYM_BATCH) {
            let mut args = [0u64; 12];
            args[0] = chunk.len() as u64;
            args[1..=chunk.len()].copy_from_slice(chunk);
            let written = sys::test_run_raw_tp(self.program.as_fd(), &args)?;
            if written as usize != chunk.len() {
                return Err(io::Error::other(format!(
                    "ksym_resolve named {written} of {} addresses",
                    chunk.len()
                )));
            }
            let bytes = &mut self.text[..chunk.len() * KSYM_TEXT_LEN];
            self.names.copy_out(0, bytes)?;
            for entry in bytes.chunks(KSYM_TEXT_LEN) {
                let end = entry.iter().position(|&b| b == 0).unwrap_or(entry.len());
                out.push(String::from_utf8_lossy(&entry[..end]).into_owned());
            }
        }
        Ok(out)
    }
}
