//! Kernel symbols named by the kernel itself, address by address.
//!
//! A [`KernelResolver`] asks the kernel what `%pS` prints for an address (the probe runs a small
//! BPF program for it, `ksym_resolve`). [`ResolvedKernel`] keeps the functions found (start, end
//! and name, from the `name+0xoff/0xsize` text), so that later addresses in the same function are
//! named without asking again. Functions of modules and BPF programs can go away and their
//! addresses be reused: they, and addresses the kernel could not name, are forgotten every
//! refresh interval. Reading `/proc/kallsyms` instead makes the kernel format every symbol it
//! has (120,000 lines, about 45 ms of a whole-host start) to name the few hundred a profile shows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Asks the kernel for the names of kernel addresses.
pub trait KernelResolver: Send + std::fmt::Debug {
    /// What `%pS` prints for each address, in order (see [`parse_ps`]).
    fn resolve(&mut self, addrs: &[u64]) -> std::io::Result<Vec<String>>;
}

/// One function, as `%pS` describes the address inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsSymbol<'a> {
    /// The function's name.
    pub name: &'a str,
    /// The address's offset in the function.
    pub offset: u64,
    /// The function's size (0 when the kernel does not know it).
    pub size: u64,
    /// The module, for an address in a module.
    pub module: Option<&'a str>,
}

/// Parses the text `%pS` prints: `name+0xoff/0xsize`, then ` [module]` (and, with build IDs, the
/// ID after the module name) for an address in a module. `None` for an address the kernel could
/// not name (`0x...`) and for any text not of that form.
pub fn parse_ps(text: &str) -> Option<PsSymbol<'_>> {
    let (symbol, module) = match text.split_once(" [") {
        Some((symbol, rest)) => {
            let module = rest.strip_suffix(']')?;
            let module = module.split_ascii_whitespace().next()?;
            (symbol, Some(module))
        }
        None => (text, None),
    };
    let (name, place) = symbol.rsplit_once('+')?;
    let (offset, size) = place.split_once('/')?;
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let (offset, size) = (hex(offset)?, hex(size)?);
    if name.is_empty() || name.contains(char::is_whitespace) || (size != 0 && offset >= size) {
        return None;
    }
    Some(PsSymbol {
        name,
        offset,
        size,
        module,
    })
}

/// A function found through the resolver.
#[derive(Debug, Clone)]
struct Function {
    /// One past its last byte.
    end: u64,
    name: Arc<str>,
    /// In a module or a BPF program: forgotten at every refresh (the address may be reused).
    dynamic: bool,
}

/// Remembered addresses the kernel could not name, at most.
const MAX_UNRESOLVED: usize = 4096;

/// Functions remembered, at most (the whole cache is dropped beyond it).
const MAX_FUNCTIONS: usize = 65536;

/// A function without a size covers this address only.
const SIZELESS_SPAN: u64 = 1;

/// The kernel's functions found so far through a [`KernelResolver`].
#[derive(Debug)]
pub struct ResolvedKernel {
    resolver: Box<dyn KernelResolver>,
    /// By start address.
    functions: BTreeMap<u64, Function>,
    unresolved: HashSet<u64>,
    refresh_interval: Duration,
    last_refresh: Instant,
    /// Addresses sent to the kernel (read by the tests).
    asked: u64,
}

impl ResolvedKernel {
    /// An empty cache in front of `resolver`; dynamic entries live `refresh_interval`.
    pub fn new(resolver: Box<dyn KernelResolver>, refresh_interval: Duration) -> Self {
        Self {
            resolver,
            functions: BTreeMap::new(),
            unresolved: HashSet::new(),
            refresh_interval,
            last_refresh: Instant::now(),
            asked: 0,
        }
    }

    fn cached(&self, addr: u64) -> Option<&Function> {
        let (_, f) = self.functions.range(..=addr).next_back()?;
        (addr < f.end).then_some(f)
    }

    /// Names `addrs` (the same order). Addresses not cached are sent to the kernel in one call.
    /// An error of the resolver is returned: the caller falls back to `/proc/kallsyms`.
    pub fn lookup_many(&mut self, addrs: &[u64]) -> std::io::Result<Vec<Option<Arc<str>>>> {
        if self.last_refresh.elapsed() >= self.refresh_interval {
            self.functions.retain(|_, f| !f.dynamic);
            self.unresolved.clear();
            self.last_refresh = Instant::now();
        }
        let mut names: Vec<Option<Arc<str>>> = addrs
            .iter()
            .map(|&a| self.cached(a).map(|f| Arc::clone(&f.name)))
            .collect();
        let mut missing: Vec<u64> = addrs
            .iter()
            .zip(&names)
            .filter(|&(a, name)| name.is_none() && !self.unresolved.contains(a))
            .map(|(&a, _)| a)
            .collect();
        if missing.is_empty() {
            return Ok(names);
        }
        missing.sort_unstable();
        missing.dedup();
        let texts = self.resolver.resolve(&missing)?;
        self.asked += missing.len() as u64;
        if self.functions.len() + missing.len() > MAX_FUNCTIONS {
            self.functions.clear();
        }
        if self.unresolved.len() + missing.len() > MAX_UNRESOLVED {
            self.unresolved.clear();
        }
        for (&addr, text) in missing.iter().zip(&texts) {
            self.insert(addr, text);
        }
        for (&a, name) in addrs.iter().zip(names.iter_mut()) {
            if name.is_none() {
                *name = self.cached(a).map(|f| Arc::clone(&f.name));
            }
        }
        Ok(names)
    }

    fn insert(&mut self, addr: u64, text: &str) {
        let Some(sym) = parse_ps(text) else {
            self.unresolved.insert(addr);
            return;
        };
        let Some(start) = addr.checked_sub(sym.offset) else {
            self.unresolved.insert(addr);
            return;
        };
        let end = if sym.size == 0 {
            addr.saturating_add(SIZELESS_SPAN)
        } else {
            start.saturating_add(sym.size)
        };
        let dynamic = sym.module.is_some() || sym.name.starts_with("bpf_");
        let name = match self.functions.get(&start) {
            Some(f) if &*f.name == sym.name => Arc::clone(&f.name),
            _ => Arc::from(sym.name),
        };
        self.functions
            .insert(start, Function { end, name, dynamic });
    }

    /// Functions cached.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether no function is cached.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Addresses sent to the kernel since start.
    pub fn asked(&self) -> u64 {
        self.asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ps_prints() {
        assert_eq!(
            parse_ps("do_syscall_64+0x5f/0x120"),
            Some(PsSymbol {
                name: "do_syscall_64",
                offset: 0x5f,
                size: 0x120,
                module: None
            })
        );
        assert_eq!(
            parse_ps("nft_do_chain+0x9c/0x4e0 [nf_tables]"),
            Some(PsSymbol {
                name: "nft_do_chain",
                offset: 0x9c,
                size: 0x4e0,
                module: Some("nf_tables")
            })
        );
        // With CONFIG_STACKTRACE_BUILD_ID the module's build ID follows its name.
        assert_eq!(
            parse_ps("f+0x0/0x10 [ext4 0123abcd]").map(|s| s.module),
            Some(Some("ext4"))
        );
        // BPF programs (no module) and names with dots.
        assert_eq!(
            parse_ps("bpf_prog_6deef7357e7b4530_profile_cpu+0x2a/0x5b8").map(|s| s.name),
            Some("bpf_prog_6deef7357e7b4530_profile_cpu")
        );
        assert_eq!(
            parse_ps("memcpy_orig.cold+0x1/0x9").map(|s| s.name),
            Some("memcpy_orig.cold")
        );
    }

    #[test]
    fn refuses_what_is_not_a_symbol() {
        for text in [
            "",
            "0xffffffffc0001004",
            "f",
            "f+0x10",
            "+0x0/0x10",
            "f+0x10/0x10",
            "f+10/0x20",
            "f+0x1/0x2 [mod",
            "f+0x1/0x2 []",
            "two words+0x1/0x2",
            "f+0xzz/0x10",
        ] {
            assert_eq!(parse_ps(text), None, "{text:?}");
        }
    }

    /// Names addresses from a fixed list of functions, as the kernel would, and counts calls.
    #[derive(Debug)]
    struct Fake {
        functions: Vec<(u64, u64, &'static str, Option<&'static str>)>,
        calls: Arc<std::sync::Mutex<Vec<Vec<u64>>>>,
        fail: bool,
    }

    impl KernelResolver for Fake {
        fn resolve(&mut self, addrs: &[u64]) -> std::io::Result<Vec<String>> {
            if self.fail {
                return Err(std::io::Error::other("no BPF"));
            }
            self.calls.lock().unwrap().push(addrs.to_vec());
            Ok(addrs
                .iter()
                .map(|&a| {
                    match self
                        .functions
                        .iter()
                        .find(|&&(s, size, _, _)| a >= s && a < s + size)
                    {
                        Some(&(s, size, name, Some(m))) => {
                            format!("{name}+{:#x}/{size:#x} [{m}]", a - s)
                        }
                        Some(&(s, size, name, None)) => format!("{name}+{:#x}/{size:#x}", a - s),
                        None => format!("{a:#x}"),
                    }
                })
                .collect())
        }
    }

    fn fake(refresh: Duration) -> (ResolvedKernel, Arc<std::sync::Mutex<Vec<Vec<u64>>>>) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let resolver = Fake {
            functions: vec![
                (0xffff_ffff_8100_0000, 0x100, "do_syscall_64", None),
                (0xffff_ffff_8100_0100, 0x80, "ksys_read", None),
                (
                    0xffff_ffff_c000_0000,
                    0x40,
                    "nft_do_chain",
                    Some("nf_tables"),
                ),
                (0xffff_ffff_c100_0000, 0x40, "bpf_prog_1234_x", None),
            ],
            calls: Arc::clone(&calls),
            fail: false,
        };
        (ResolvedKernel::new(Box::new(resolver), refresh), calls)
    }

    fn names(found: &[Option<Arc<str>>]) -> Vec<Option<&str>> {
        found.iter().map(|n| n.as_deref()).collect()
    }

    #[test]
    fn one_call_per_batch_and_none_for_known_functions() {
        let (mut k, calls) = fake(Duration::from_secs(3600));
        let got = k
            .lookup_many(&[
                0xffff_ffff_8100_0010,
                0xffff_ffff_8100_0120,
                0xffff_ffff_8100_0010,
                0xffff_ffff_9000_0000,
            ])
            .unwrap();
        assert_eq!(
            names(&got),
            [
                Some("do_syscall_64"),
                Some("ksys_read"),
                Some("do_syscall_64"),
                None
            ]
        );
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert_eq!(
            calls.lock().unwrap()[0].len(),
            3,
            "duplicates are asked once"
        );
        // Other addresses of the same functions, and the unknown one again: no call.
        let got = k
            .lookup_many(&[
                0xffff_ffff_8100_00ff,
                0xffff_ffff_8100_0100,
                0xffff_ffff_9000_0000,
            ])
            .unwrap();
        assert_eq!(
            names(&got),
            [Some("do_syscall_64"), Some("ksys_read"), None]
        );
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert_eq!(k.len(), 2);
        assert_eq!(k.asked(), 3);
        // One past the end of a function is not in it.
        let got = k.lookup_many(&[0xffff_ffff_8100_0180]).unwrap();
        assert_eq!(names(&got), [None]);
        assert_eq!(calls.lock().unwrap().len(), 2);
    }

    #[test]
    fn modules_and_bpf_programs_are_asked_again_after_a_refresh() {
        let (mut k, calls) = fake(Duration::from_millis(30));
        let addrs = [
            0xffff_ffff_8100_0010,
            0xffff_ffff_c000_0004,
            0xffff_ffff_c100_0008,
            0xffff_ffff_9000_0000,
        ];
        let got = k.lookup_many(&addrs).unwrap();
        assert_eq!(
            names(&got),
            [
                Some("do_syscall_64"),
                Some("nft_do_chain"),
                Some("bpf_prog_1234_x"),
                None
            ]
        );
        k.lookup_many(&addrs).unwrap();
        assert_eq!(calls.lock().unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(40));
        k.lookup_many(&addrs).unwrap();
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        // The core kernel's function stays; the module's, the program's and the unknown go.
        assert_eq!(
            calls[1],
            [
                0xffff_ffff_9000_0000,
                0xffff_ffff_c000_0004,
                0xffff_ffff_c100_0008
            ]
        );
    }

    #[test]
    fn a_failing_resolver_is_an_error() {
        let resolver = Fake {
            functions: Vec::new(),
            calls: Arc::default(),
            fail: true,
        };
        let mut k = ResolvedKernel::new(Box::new(resolver), Duration::from_secs(1));
        assert!(k.lookup_many(&[0xffff_ffff_8100_0000]).is_err());
        // Nothing to ask: no call, no error.
        assert_eq!(k.lookup_many(&[]).unwrap(), Vec::<Option<Arc<str>>>::new());
    }
}
