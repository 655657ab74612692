//! Process names for the `comm` argument: `/proc/PID/comm`, read once per process (when it
//! starts being profiled, or at its first collected sample) and forgotten when the process
//! exits or calls exec (a new program has a new name).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ebpf_probe::symbolize::Frame;

use super::args::CommMode;

/// Name of the sample label carrying the process name (`comm = "label"` or `"both"`).
pub const COMM_LABEL: &str = "comm";
/// Name of the sample label carrying the process ID (`pid_label = true`).
pub const PID_LABEL: &str = "pid";

/// Bytes read from `PID/comm` at most (the kernel keeps 16; a little room for odd kernels).
const MAX_COMM: usize = 64;

/// pid → process name; `None` when it could not be read (the process was already gone).
#[derive(Debug)]
pub(super) struct CommCache {
    proc_root: PathBuf,
    names: HashMap<u32, Option<Arc<str>>>,
}

impl CommCache {
    pub(super) fn new(proc_root: PathBuf) -> Self {
        CommCache {
            proc_root,
            names: HashMap::new(),
        }
    }

    /// The name of `pid`, read now if it is not known yet.
    pub(super) fn get(&mut self, pid: u32) -> Option<Arc<str>> {
        if let Some(known) = self.names.get(&pid) {
            return known.clone();
        }
        let name = read_comm(&self.proc_root, pid);
        self.names.insert(pid, name.clone());
        name
    }

    /// Reads the name of `pid` while it runs (it may exit before the next collect).
    pub(super) fn preload(&mut self, pid: u32) {
        let _ = self.get(pid);
    }

    pub(super) fn forget(&mut self, pid: u32) {
        self.names.remove(&pid);
    }
}

/// `PID/comm` without its newline; `None` when it cannot be read or is empty.
pub(super) fn read_comm(proc_root: &std::path::Path, pid: u32) -> Option<Arc<str>> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("comm")).ok()?;
    let raw = &raw[..raw.len().min(MAX_COMM)];
    let name = String::from_utf8_lossy(raw);
    let name = name.trim_end_matches('\n');
    (!name.is_empty()).then(|| Arc::from(name))
}

/// Applies `comm` and `pid_label` to one sample of `pid`: pushes the root frame named after
/// the process (`stackframe`, `both`) onto `frames` (leaf first) and returns the sample labels.
/// A process whose name cannot be read gets neither the frame nor the `comm` label.
pub(super) fn decorate(
    comms: &mut CommCache,
    mode: CommMode,
    pid_label: bool,
    pid: u32,
    frames: &mut Vec<Frame>,
) -> Vec<(&'static str, String)> {
    let mut labels = Vec::new();
    if mode != CommMode::None {
        if let Some(name) = comms.get(pid) {
            if mode.stackframe() {
                frames.push(Frame {
                    address: 0,
                    name: Some(name.to_string()),
                    mapping: None,
                    source: None,
                });
            }
            if mode.label() {
                labels.push((COMM_LABEL, name.to_string()));
            }
        }
    }
    if pid_label {
        labels.push((PID_LABEL, pid.to_string()));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_once_and_forgets() {
        let dir = std::env::temp_dir().join(format!("rill-comm-{}", std::process::id()));
        let pid_dir = dir.join("7");
        std::fs::create_dir_all(&pid_dir).unwrap();
        std::fs::write(pid_dir.join("comm"), "worker\n").unwrap();
        let mut cache = CommCache::new(dir.clone());
        assert_eq!(cache.get(7).as_deref(), Some("worker"));
        // Cached: a rename is seen only after forget (exec, exit).
        std::fs::write(pid_dir.join("comm"), "renamed\n").unwrap();
        assert_eq!(cache.get(7).as_deref(), Some("worker"));
        cache.forget(7);
        assert_eq!(cache.get(7).as_deref(), Some("renamed"));
        assert_eq!(cache.get(8), None, "no such process");
        std::fs::write(pid_dir.join("comm"), "\n").unwrap();
        assert_eq!(read_comm(&dir, 7), None, "empty name");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
