//! Kernel symbols from `/proc/kallsyms`.
//!
//! Only text symbols (`t`, `T`, `w`, `W`) are kept, including those of modules and of BPF
//! programs (`[bpf]`), but not the `__pfx_`/`__cfi_` padding symbols. The table is re-read
//! when `/proc/modules` changes or when a new address cannot be resolved (a BPF program or
//! module loaded since), at most once per `min_refresh_interval`; `/proc/modules` itself is
//! compared at most that often too.
//!
//! With a [`KernelResolver`] set (the probe's `ksym_resolve`), addresses are named by the kernel
//! one batch at a time instead ([`ResolvedKernel`]) and `/proc/kallsyms` is read only if the
//! resolver fails.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::ksym::{KernelResolver, ResolvedKernel};
use super::table::{SymbolTable, SymbolTableBuilder};

/// Unresolved addresses remembered between loads.
const MAX_UNRESOLVED: usize = 4096;

/// Sizeless last symbols (end of module text, BPF programs) cover at most this many bytes.
const MAX_LAST_SYMBOL_SPAN: u64 = 1 << 20;

/// Parses kallsyms content. Returns the table and whether every address was zero (which
/// happens without `CAP_SYSLOG` under `kptr_restrict`).
pub fn parse_kallsyms(content: &str) -> (SymbolTable, bool) {
    parse_kallsyms_from(content.as_bytes()).unwrap_or_default()
}

/// Like [`parse_kallsyms`], reading line by line (the text of `/proc/kallsyms` is several
/// megabytes; only the kept symbols are held).
pub fn parse_kallsyms_from(mut input: impl BufRead) -> std::io::Result<(SymbolTable, bool)> {
    let mut b = SymbolTableBuilder::default();
    let mut all_zero = true;
    let mut any = false;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let mut it = text.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        // Padding before each function (kernels built with call-depth tracking or CFI):
        // about half of all text symbols and never executed, so not worth their memory.
        if name.starts_with("__pfx_") || name.starts_with("__cfi_") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        any = true;
        if addr != 0 {
            all_zero = false;
            b.push(addr, 0, name);
        }
    }
    Ok((b.build(), any && all_zero))
}

/// Stable digest of `/proc/modules` (names, sizes and addresses; not the use counts).
pub fn modules_digest(content: &str) -> u64 {
    let mut h = DefaultHasher::new();
    for line in content.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        f.first().hash(&mut h);
        f.get(1).hash(&mut h);
        f.last().hash(&mut h);
    }
    h.finish()
}

/// Kernel symbol table with refresh.
#[derive(Debug)]
pub struct KernelSymbols {
    kallsyms_path: PathBuf,
    modules_path: PathBuf,
    min_refresh_interval: Duration,
    table: SymbolTable,
    restricted: bool,
    modules_digest: Option<u64>,
    last_load: Option<Instant>,
    /// Last time `/proc/modules` was compared (rate limited like reloads).
    last_check: Option<Instant>,
    /// Addresses that did not resolve since the last load: they do not trigger reloads again.
    unresolved: HashSet<u64>,
    loads: u64,
    /// Names from the kernel itself, when a resolver is set and has not failed.
    resolved: Option<ResolvedKernel>,
}

impl KernelSymbols {
    /// Reads lazily from the given files (normally `/proc/kallsyms`, `/proc/modules`).
    pub fn new(
        kallsyms_path: PathBuf,
        modules_path: PathBuf,
        min_refresh_interval: Duration,
    ) -> Self {
        Self {
            kallsyms_path,
            modules_path,
            min_refresh_interval,
            table: SymbolTable::default(),
            restricted: false,
            modules_digest: None,
            last_load: None,
            last_check: None,
            unresolved: HashSet::new(),
            loads: 0,
            resolved: None,
        }
    }

    /// Names addresses through `resolver` from now on (`None`: through `/proc/kallsyms`).
    pub fn set_resolver(&mut self, resolver: Option<Box<dyn KernelResolver>>) {
        self.resolved = resolver.map(|r| ResolvedKernel::new(r, self.min_refresh_interval));
    }

    /// Whether addresses are named by a resolver (it was set and has not failed).
    pub fn uses_resolver(&self) -> bool {
        self.resolved.is_some()
    }

    /// The kernel functions at `addrs`, in order: through the resolver when there is one (in
    /// one batch), else as [`Self::lookup`] does. A failing resolver is dropped for good, with a
    /// warning, and `/proc/kallsyms` names these addresses and the next.
    pub fn lookup_many(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        if let Some(resolved) = self.resolved.as_mut() {
            match resolved.lookup_many(addrs) {
                Ok(names) => {
                    return names
                        .into_iter()
                        .map(|n| n.map(|n| n.to_string()))
                        .collect()
                }
                Err(err) => {
                    tracing::warn!(%err, "the kernel cannot name kernel addresses for rill; reading /proc/kallsyms instead");
                    self.resolved = None;
                }
            }
        }
        addrs
            .iter()
            .map(|&a| self.lookup(a).map(Cow::into_owned))
            .collect()
    }

    fn load(&mut self) {
        self.last_load = Some(Instant::now());
        self.last_check = self.last_load;
        self.unresolved.clear();
        self.loads += 1;
        self.modules_digest = std::fs::read_to_string(&self.modules_path)
            .ok()
            .map(|c| modules_digest(&c));
        let parsed = std::fs::File::open(&self.kallsyms_path)
            .and_then(|f| parse_kallsyms_from(std::io::BufReader::with_capacity(64 << 10, f)));
        match parsed {
            Ok((table, restricted)) => {
                if restricted {
                    tracing::warn!(path = %self.kallsyms_path.display(), "kernel symbol addresses are hidden (kptr_restrict); kernel frames stay unnamed");
                }
                self.table = table;
                self.restricted = restricted;
            }
            Err(err) => {
                tracing::warn!(path = %self.kallsyms_path.display(), %err, "cannot read kernel symbols");
            }
        }
    }

    fn may_reload(&self) -> bool {
        self.last_load
            .is_none_or(|t| t.elapsed() >= self.min_refresh_interval)
    }

    /// Loads on first use; reloads when `/proc/modules` changed (both the comparison and the
    /// reload at most once per `min_refresh_interval`).
    pub fn prepare(&mut self) {
        if self.last_load.is_none() {
            self.load();
            return;
        }
        let check_due = self
            .last_check
            .is_none_or(|t| t.elapsed() >= self.min_refresh_interval);
        if check_due && self.may_reload() {
            self.last_check = Some(Instant::now());
            let digest = std::fs::read_to_string(&self.modules_path)
                .ok()
                .map(|c| modules_digest(&c));
            if digest != self.modules_digest {
                self.load();
            }
        }
    }

    /// The kernel function at `addr`. An address that cannot be resolved and was not seen
    /// unresolved since the last load triggers one (rate limited) reload, for BPF programs
    /// and modules that appeared since.
    pub fn lookup(&mut self, addr: u64) -> Option<Cow<'_, str>> {
        let i = self.lookup_index(addr)?;
        self.table.name(i)
    }

    /// Index in [`Self::table`] of the kernel function at `addr` (see [`Self::lookup`]).
    pub fn lookup_index(&mut self, addr: u64) -> Option<usize> {
        self.prepare();
        let resolved = |t: &SymbolTable| {
            t.lookup_bounded(addr, MAX_LAST_SYMBOL_SPAN)?;
            t.lookup_index(addr)
        };
        if let Some(i) = resolved(&self.table) {
            return Some(i);
        }
        if self.unresolved.len() < MAX_UNRESOLVED
            && self.unresolved.insert(addr)
            && self.may_reload()
        {
            self.load();
            let found = resolved(&self.table);
            if found.is_none() {
                // Still unknown after a fresh load: it will not trigger the next one.
                self.unresolved.insert(addr);
            }
            return found;
        }
        None
    }

    /// Symbols loaded (functions named so far, with a resolver).
    pub fn len(&self) -> usize {
        match &self.resolved {
            Some(r) => r.len(),
            None => self.table.len(),
        }
    }

    /// Whether no symbol is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times the table was (re)loaded.
    pub fn loads(&self) -> u64 {
        self.loads
    }

    /// Addresses are hidden by `kptr_restrict`.
    pub fn restricted(&self) -> bool {
        self.restricted
    }

    /// The underlying table.
    pub fn table(&self) -> &SymbolTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_data_padding_and_zero() {
        let (t, restricted) = parse_kallsyms(
            "ffffffff81000000 T _stext\nffffffff810000f0 t __pfx_f\nffffffff81000100 T f\n\
             ffffffff82000000 D data\nffffffffc0000000 t m\t[mod]\nbad\n",
        );
        assert!(!restricted);
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(0xffffffff810000f8).as_deref(), Some("_stext"));
        assert_eq!(t.lookup(0xffffffff81000104).as_deref(), Some("f"));
        assert_eq!(t.lookup(0xffffffffc0000001).as_deref(), Some("m"));
        let (t, restricted) = parse_kallsyms("0000000000000000 T _stext\n0000000000000000 t f\n");
        assert!(restricted && t.is_empty());
        assert_ne!(
            modules_digest("a 1 0 - Live 0x1\n"),
            modules_digest("b 1 0 - Live 0x1\n")
        );
        assert_eq!(
            modules_digest("a 1 0 - Live 0x1\n"),
            modules_digest("a 1 2 x,y Live 0x1\n")
        );
    }

    /// Answers like `%pS` for one function, or fails every call.
    #[derive(Debug)]
    struct OneFunction {
        fail: bool,
    }

    impl KernelResolver for OneFunction {
        fn resolve(&mut self, addrs: &[u64]) -> std::io::Result<Vec<String>> {
            if self.fail {
                return Err(std::io::Error::other("BPF_PROG_TEST_RUN: EPERM"));
            }
            Ok(addrs
                .iter()
                .map(|&a| match a.checked_sub(0xffff_ffff_8100_0100) {
                    Some(off) if off < 0x40 => format!("from_bpf+{off:#x}/0x40"),
                    _ => format!("{a:#x}"),
                })
                .collect())
        }
    }

    fn symbols_from(dir: &std::path::Path) -> KernelSymbols {
        let kallsyms = dir.join("kallsyms");
        std::fs::write(
            &kallsyms,
            "ffffffff81000000 T _stext\nffffffff81000100 T from_file\nffffffff81000200 T next\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules"), "").unwrap();
        KernelSymbols::new(kallsyms, dir.join("modules"), Duration::from_secs(60))
    }

    #[test]
    fn a_resolver_replaces_the_file_until_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = symbols_from(dir.path());
        k.set_resolver(Some(Box::new(OneFunction { fail: false })));
        let names = k.lookup_many(&[0xffff_ffff_8100_0104, 0xffff_ffff_8100_0204]);
        assert_eq!(names, [Some("from_bpf".to_string()), None]);
        assert_eq!(
            k.loads(),
            0,
            "the file is not read while the resolver works"
        );
        assert!(k.uses_resolver());
        assert_eq!(k.len(), 1);

        let mut k = symbols_from(dir.path());
        k.set_resolver(Some(Box::new(OneFunction { fail: true })));
        let names = k.lookup_many(&[0xffff_ffff_8100_0104, 0xffff_ffff_8100_0204]);
        assert_eq!(
            names,
            [Some("from_file".to_string()), Some("next".to_string())]
        );
        assert!(!k.uses_resolver(), "a failed resolver is dropped for good");
        assert_eq!(k.loads(), 1);
        assert_eq!(k.len(), 3);
    }
}
