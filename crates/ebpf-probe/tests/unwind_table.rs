//! The tables of this machine's system libraries checked at tens of thousands of addresses
//! against two oracles that share no code with `unwind::table`: `readelf
//! --debug-dump=frames-interp` (binutils' own CFI interpreter), and gimli's
//! `unwind_info_for_address` (a fresh evaluation per address, not the sequential row walk the
//! builder uses), with the expressions classified here by their bytes.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test]: a failed unwrap fails the test"
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use ebpf_probe::unwind::abi::*;
use ebpf_probe::unwind::table::{build_from_file, UnwindTable, MIN_GAP};
use gimli::{CfaRule, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection, X86_64};
use object::{Object, ObjectSection};

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// One FDE as readelf interprets it: its range, whether its CIE is a signal frame, and rows of
/// (loc, column name → value).
struct ReadelfFde {
    start: u64,
    end: u64,
    signal: bool,
    rows: Rows,
}

/// (loc, column name → value) per row.
type Rows = Vec<(u64, HashMap<String, String>)>;

fn readelf_fdes(path: &str) -> Vec<ReadelfFde> {
    let out = Command::new("readelf")
        .args(["--debug-dump=frames-interp", path])
        .output()
        .expect("readelf");
    // readelf exits 1 on some libraries (ld.so, libm) with complete output and no message.
    assert!(!out.stdout.is_empty(), "readelf printed nothing for {path}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut cie_signal: HashMap<String, bool> = HashMap::new();
    let mut cie_rows: HashMap<String, Rows> = HashMap::new();
    let mut fdes = Vec::new();
    let mut current: Option<(Option<String>, ReadelfFde)> = None; // (CIE it is, or FDE's cie)
    let mut columns: Vec<String> = Vec::new();
    let flush = |cur: Option<(Option<String>, ReadelfFde)>,
                 cie_rows: &mut HashMap<String, Vec<_>>,
                 fdes: &mut Vec<ReadelfFde>| {
        if let Some((is_cie, fde)) = cur {
            match is_cie {
                Some(off) => {
                    cie_rows.insert(off, fde.rows);
                }
                None => fdes.push(fde),
            }
        }
    };
    let mut fde_cie: Vec<String> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 4 && words[3] == "CIE" {
            flush(current.take(), &mut cie_rows, &mut fdes);
            let aug = words.get(4).copied().unwrap_or("");
            cie_signal.insert(words[0].to_string(), aug.contains('S'));
            current = Some((
                Some(words[0].to_string()),
                ReadelfFde {
                    start: 0,
                    end: 0,
                    signal: false,
                    rows: Vec::new(),
                },
            ));
        } else if words.len() >= 6 && words[3] == "FDE" {
            flush(current.take(), &mut cie_rows, &mut fdes);
            let cie = words[4].trim_start_matches("cie=").to_string();
            let (a, b) = words[5].trim_start_matches("pc=").split_once("..").unwrap();
            let start = u64::from_str_radix(a, 16).unwrap();
            let end = u64::from_str_radix(b, 16).unwrap();
            let signal = cie_signal.get(&cie).copied().unwrap_or(false);
            fde_cie.push(cie);
            current = Some((
                None,
                ReadelfFde {
                    start,
                    end,
                    signal,
                    rows: Vec::new(),
                },
            ));
        } else if words.first() == Some(&"LOC") {
            columns = words[1..].iter().map(|s| s.to_string()).collect();
        } else if let (Some(first), Some((_, fde))) = (words.first(), current.as_mut()) {
            let Ok(loc) = u64::from_str_radix(first, 16) else {
                continue;
            };
            if first.len() != 16 {
                continue;
            }
            // "r3 (rbx)" is one value.
            let mut values: Vec<String> = Vec::new();
            for w in &words[1..] {
                if w.starts_with('(') {
                    if let Some(last) = values.last_mut() {
                        last.push_str(w);
                        continue;
                    }
                }
                values.push(w.to_string());
            }
            let row = columns.iter().cloned().zip(values).collect();
            fde.rows.push((loc, row));
        }
    }
    flush(current.take(), &mut cie_rows, &mut fdes);
    // An FDE without instructions of its own keeps its CIE's initial rules.
    for (fde, cie) in fdes.iter_mut().zip(&fde_cie) {
        if fde.rows.is_empty() {
            if let Some(rows) = cie_rows.get(cie) {
                fde.rows = rows.iter().map(|(_, r)| (fde.start, r.clone())).collect();
            }
        }
    }
    fdes
}

/// What the table must say for a readelf row; `None` = an expression (checked by gimli below).
fn expected_from_readelf(
    row: &HashMap<String, String>,
    signal: bool,
) -> Option<(u8, Option<i8>, i16)> {
    if signal {
        return Some((UNW_SIGNAL, Some(0), 0));
    }
    let ra = row.get("ra").map(String::as_str).unwrap_or("u");
    if ra == "u" {
        return Some((UNW_END, Some(0), 0));
    }
    let cfa = row.get("CFA").map(String::as_str).unwrap_or("");
    if cfa == "exp" {
        return None;
    }
    if ra != "c-8" {
        return Some((UNW_UNSUPPORTED, Some(0), 0));
    }
    let (kind, off) = if let Some(off) = cfa.strip_prefix("rsp+") {
        (UNW_CFA_RSP, off)
    } else if let Some(off) = cfa.strip_prefix("rbp+") {
        (UNW_CFA_RBP, off)
    } else {
        return Some((UNW_UNSUPPORTED, Some(0), 0));
    };
    let Ok(off) = off.parse::<i16>() else {
        return Some((UNW_UNSUPPORTED, Some(0), 0));
    };
    let rbp = match row.get("rbp").map(String::as_str) {
        None | Some("u") | Some("s") => 0,
        Some(v) => match v.strip_prefix('c').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if n % 8 == 0 && n != 0 && (-127..=127).contains(&(n / 8)) => (n / 8) as i8,
            _ => UNW_RBP_UNDEFINED,
        },
    };
    Some((kind, Some(rbp), off))
}

fn check_against_readelf(path: &str, stride: u64) -> (usize, usize) {
    let table = build_from_file(Path::new(path)).unwrap();
    let mut fdes = readelf_fdes(path);
    fdes.sort_by_key(|f| f.start);
    let (mut checked, mut gaps) = (0, 0);
    let mut covered_to = 0;
    let mut failures = Vec::new();
    for fde in &fdes {
        if fde.start < covered_to || fde.start == fde.end {
            continue;
        }
        if covered_to != 0 && fde.start >= covered_to + MIN_GAP {
            let kind = table.lookup(covered_to).unwrap().kind;
            assert_eq!(kind, UNW_NO_INFO, "{path} gap {covered_to:#x}");
            gaps += 1;
        } else if covered_to != 0 && fde.start > covered_to {
            // Padding: the previous function's last rule goes on.
            let (before, at) = (table.lookup(covered_to - 1), table.lookup(covered_to));
            assert_eq!(at, before, "{path} padding {covered_to:#x}");
        }
        covered_to = fde.end;
        let mut pc = fde.start;
        while pc < fde.end {
            let row = fde
                .rows
                .iter()
                .rev()
                .find(|(loc, _)| *loc <= pc)
                .map(|(_, r)| r);
            let got = table.lookup(pc).copied().unwrap();
            if let Some(want) = row.and_then(|r| expected_from_readelf(r, fde.signal)) {
                let ok = got.kind == want.0
                    && (got.kind > UNW_CFA_DEREF_RBP
                        || (Some(got.rbp_offset) == want.1 && got.cfa_offset == want.2));
                if !ok && failures.len() < 10 {
                    failures.push(format!("{pc:#x}: got {got:?}, readelf {row:?}"));
                }
            } else {
                // An expression: one of the expression kinds, or unsupported.
                assert!(
                    matches!(
                        got.kind,
                        UNW_CFA_PLT
                            | UNW_CFA_DEREF_RSP
                            | UNW_CFA_DEREF_RBP
                            | UNW_UNSUPPORTED
                            | UNW_SIGNAL
                    ),
                    "{pc:#x}: {got:?}"
                );
            }
            checked += 1;
            pc += stride;
        }
    }
    assert!(failures.is_empty(), "{path}: {failures:#?}");
    assert_eq!(
        table.lookup(covered_to).unwrap().kind,
        UNW_NO_INFO,
        "after the last FDE"
    );
    (checked, gaps)
}

#[test]
fn libc_matches_readelf_every_7th_byte() {
    let (checked, gaps) = check_against_readelf(LIBC, 7);
    assert!(checked > 50_000, "{checked}");
    assert!(gaps > 10, "{gaps}");
}

#[test]
fn other_system_libraries_match_readelf() {
    let libs = [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libstdc++.so.6",
    ];
    let mut total = 0;
    for lib in libs.iter().filter(|l| Path::new(l).exists()) {
        total += check_against_readelf(lib, 13).0;
    }
    assert!(total > 20_000, "{total}");
}

/// The kind, rbp rule and offset gimli gives at `pc`, with expressions classified by bytes.
fn gimli_expected(
    eh: &EhFrame<gimli::EndianSlice<'_, LittleEndian>>,
    bases: &gimli::BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    fde: &gimli::FrameDescriptionEntry<gimli::EndianSlice<'_, LittleEndian>>,
    pc: u64,
) -> (u8, i8, i16) {
    if fde.is_signal_trampoline() {
        return (UNW_SIGNAL, 0, 0);
    }
    let row = fde.unwind_info_for_address(eh, bases, ctx, pc).unwrap();
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Undefined) => return (UNW_END, 0, 0),
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return (UNW_UNSUPPORTED, 0, 0),
    }
    let rbp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(n)) if n % 8 == 0 && n != 0 && n.abs() <= 127 * 8 => {
            (n / 8) as i8
        }
        Some(_) => UNW_RBP_UNDEFINED,
    };
    let (kind, off, rbp) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
            (UNW_CFA_RSP, *offset, rbp)
        }
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
            (UNW_CFA_RBP, *offset, rbp)
        }
        CfaRule::RegisterAndOffset { .. } => return (UNW_UNSUPPORTED, 0, 0),
        CfaRule::Expression(e) => {
            let bytes = e.get(eh).unwrap().0.slice();
            match bytes {
                [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22] => {
                    (UNW_CFA_PLT, 8, 11)
                }
                [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22] => {
                    (UNW_CFA_PLT, 8, 10)
                }
                // breg7|breg6 with a one-byte SLEB offset, deref
                [0x77, n, 0x06] if *n < 0x80 => {
                    (UNW_CFA_DEREF_RSP, ((*n as i8) << 1 >> 1) as i64, rbp)
                }
                [0x76, n, 0x06] if *n < 0x80 => {
                    (UNW_CFA_DEREF_RBP, ((*n as i8) << 1 >> 1) as i64, rbp)
                }
                _ => return (UNW_UNSUPPORTED, 0, 0),
            }
        }
    };
    match i16::try_from(off) {
        Ok(off) => (kind, rbp, off),
        Err(_) => (UNW_UNSUPPORTED, 0, 0),
    }
}

fn check_against_gimli(path: &str, stride: u64) -> (usize, HashMap<u8, usize>) {
    let table: UnwindTable = build_from_file(Path::new(path)).unwrap();
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let section = file.section_by_name(".eh_frame").unwrap();
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    if let Some(hdr) = file.section_by_name(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(hdr.address());
    }
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    let eh = EhFrame::new(section.data().unwrap(), LittleEndian);
    let mut ctx = UnwindContext::new();
    let mut entries = eh.entries(&bases);
    let mut fdes = Vec::new();
    while let Some(entry) = entries.next().unwrap() {
        if let gimli::CieOrFde::Fde(partial) = entry {
            fdes.push(partial.parse(EhFrame::cie_from_offset).unwrap());
        }
    }
    fdes.sort_by_key(|f| f.initial_address());
    let (mut checked, mut kinds) = (0, HashMap::new());
    let mut covered_to = 0;
    for fde in &fdes {
        if fde.initial_address() < covered_to || fde.len() == 0 {
            continue;
        }
        covered_to = fde.end_address();
        let mut pc = fde.initial_address();
        while pc < fde.end_address() {
            let want = gimli_expected(&eh, &bases, &mut ctx, fde, pc);
            let got = table.lookup(pc).unwrap();
            let got_rule = (got.kind, got.rbp_offset, got.cfa_offset);
            let comparable = if want.0 > UNW_CFA_DEREF_RBP {
                (got_rule.0, 0, 0)
            } else {
                got_rule
            };
            assert_eq!(comparable, want, "{path} at {pc:#x}");
            *kinds.entry(got.kind).or_insert(0) += 1;
            checked += 1;
            pc += stride;
        }
    }
    (checked, kinds)
}

#[test]
fn libc_and_libpython_match_gimli_per_address() {
    let (checked, kinds) = check_against_gimli(LIBC, 7);
    assert!(checked > 50_000, "{checked}");
    for kind in [UNW_CFA_RSP, UNW_CFA_RBP, UNW_CFA_PLT, UNW_END, UNW_SIGNAL] {
        assert!(
            kinds.contains_key(&kind),
            "libc has no kind {kind}: {kinds:?}"
        );
    }
    let python = "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0";
    if Path::new(python).exists() {
        let (checked, _) = check_against_gimli(python, 11);
        assert!(checked > 50_000, "{checked}");
    }
}

#[test]
fn libc_restore_rt_is_a_signal_frame_including_the_byte_before() {
    let table = build_from_file(Path::new(LIBC)).unwrap();
    let data = std::fs::read(LIBC).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let text = file.section_by_name(".text").unwrap();
    let code = text.data().unwrap();
    let pattern = ebpf_probe::unwind::table::RT_SIGRETURN_BYTES;
    let at = code
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("__restore_rt");
    let restore_rt = text.address() + at as u64;
    // A handler returns to __restore_rt: the walk looks up its address minus one.
    assert_eq!(table.lookup(restore_rt - 1).unwrap().kind, UNW_SIGNAL);
    assert_eq!(table.lookup(restore_rt).unwrap().kind, UNW_SIGNAL);
    assert!(table.stats.signal_frames >= 1);
    let s = &table.stats;
    assert!(s.fdes > 3000 && s.cfi_rows > 20_000, "{s:?}");
    assert_eq!(s.fde_errors, 0);
}
