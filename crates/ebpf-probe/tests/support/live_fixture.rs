//! Live fixtures of the symbolization tests (`symbolize.rs`, `symbolize_process.rs`): build C
//! programs from `tests/fixtures` with gcc, run them until they print their functions' runtime
//! addresses, and check what the symbolizer names at those addresses.
#![allow(
    dead_code,
    reason = "each test file that includes this module uses a part of it"
)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use ebpf_probe::symbolize::{Frame, Symbolizer, SymbolizerConfig, SymbolizerMetrics};

use crate::ready::spawn_first_line;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sh(script: &str, dir: &Path) {
    run(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
}

pub fn gcc(dir: &Path, out: &str, args: &[&str]) -> PathBuf {
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-fno-omit-frame-pointer", "-o", out])
        .args(args)
        .current_dir(dir);
    run(&mut cmd);
    dir.join(out)
}

/// A running fixture and the addresses it printed.
pub struct Live {
    pub child: Child,
    pub addrs: HashMap<String, u64>,
}

impl Live {
    pub fn start(bin: &Path) -> Self {
        let (child, line) = spawn_first_line(bin);
        let addrs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_string(),
                    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap(),
                )
            })
            .collect::<HashMap<_, _>>();
        assert!(
            !addrs.is_empty(),
            "fixture printed nothing useful: {line:?}"
        );
        Live { child, addrs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self, name: &str) -> u64 {
        self.addrs[name]
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

pub fn symbolizer(config: SymbolizerConfig) -> (Symbolizer, SymbolizerMetrics) {
    let metrics = SymbolizerMetrics::default();
    (Symbolizer::new(config, metrics.clone()), metrics)
}

pub fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::display_name).collect()
}

/// Symbolizes (leaf, +1 byte inside, return-address-style +4) of each named function and
/// checks the names.
pub fn expect_names(sym: &mut Symbolizer, live: &Live, expected: &[(&str, &str)]) -> Vec<Frame> {
    let mut all = Vec::new();
    for (printed, want) in expected {
        let a = live.addr(printed);
        // first = sampled ip; the others are return addresses (looked up at -1)
        let frames = sym.symbolize_user(live.pid(), &[a, a + 1, a + 4]);
        assert_eq!(
            names(&frames),
            vec![want.to_string(); 3],
            "{printed} at {a:#x}"
        );
        for f in &frames {
            assert!(f.mapping.is_some(), "mapping missing for {printed}");
        }
        all.extend(frames);
    }
    if live.addrs.contains_key("ret_middle") {
        // the stack as the kernel would report it: sampled ip, then return addresses
        let stack = [
            live.addr("hot_leaf") + 2,
            live.addr("ret_middle"),
            live.addr("ret_outer"),
            live.addr("ret_main"),
        ];
        let frames = sym.symbolize_user(live.pid(), &stack);
        assert_eq!(
            names(&frames),
            ["hot_leaf", "middle", "outer", "main"],
            "stack {stack:x?}"
        );
    }
    all
}

pub const C_CHAIN: &[(&str, &str)] = &[
    ("hot_leaf", "hot_leaf"),
    ("middle", "middle"),
    ("outer", "outer"),
    ("main", "main"),
    ("local_helper", "local_helper"),
];
