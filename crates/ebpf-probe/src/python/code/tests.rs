//! Code objects and strings laid out by hand in a [`SliceMemory`] with the 3.12 and 3.9 offsets.

use super::*;
use crate::python::memory::SliceMemory;
use crate::python::offsets::table_offsets;

const CODE_TYPE: u64 = 0x7000;

/// A compact str object: ASCII when every char is < 0x80, else latin-1/UCS-2/UCS-4.
fn str_object(off: &PyOffsets, s: &str) -> Vec<u8> {
    let chars: Vec<u32> = s.chars().map(u32::from).collect();
    let max = chars.iter().copied().max().unwrap_or(0);
    let (kind, ascii) = match max {
        0..=0x7f => (1u32, true),
        0x80..=0xff => (1, false),
        0x100..=0xffff => (2, false),
        _ => (4, false),
    };
    let data_at = if ascii {
        off.unicode_ascii_size
    } else {
        off.unicode_compact_size
    } as usize;
    let mut obj = vec![0u8; data_at];
    obj[off.unicode_length as usize..][..8].copy_from_slice(&(chars.len() as u64).to_le_bytes());
    let state = (kind << 2) | (1 << 5) | (u32::from(ascii) << 6);
    obj[off.unicode_state as usize..][..4].copy_from_slice(&state.to_le_bytes());
    for c in chars {
        match kind {
            1 => obj.push(c as u8),
            2 => obj.extend((c as u16).to_le_bytes()),
            _ => obj.extend(c.to_le_bytes()),
        }
    }
    obj
}

fn bytes_object(off: &PyOffsets, b: &[u8]) -> Vec<u8> {
    let mut obj = vec![0u8; off.bytes_data as usize];
    obj[off.bytes_size as usize..][..8].copy_from_slice(&(b.len() as u64).to_le_bytes());
    obj.extend_from_slice(b);
    obj
}

struct Fake {
    mem: SliceMemory,
    off: PyOffsets,
}

const CODE: u64 = 0x10_000;
const NAME: u64 = 0x20_000;
const QUAL: u64 = 0x21_000;
const FILE: u64 = 0x22_000;
const TABLE: u64 = 0x23_000;

fn code_head(off: &PyOffsets, firstlineno: i32) -> Vec<u8> {
    let mut head = vec![0u8; off.code_header_len()];
    head[8..16].copy_from_slice(&CODE_TYPE.to_le_bytes());
    let mut put32 = |o: u32, v: i32| head[o as usize..][..4].copy_from_slice(&v.to_le_bytes());
    put32(off.code_argcount, 2);
    put32(off.code_kwonlyargcount, 1);
    put32(off.code_flags, 0x3);
    put32(off.code_firstlineno, firstlineno);
    for (o, v) in [
        (off.code_name, NAME),
        (off.code_qualname, QUAL),
        (off.code_filename, FILE),
        (off.code_linetable, TABLE),
    ] {
        if o != ABSENT {
            head[o as usize..][..8].copy_from_slice(&v.to_le_bytes());
        }
    }
    head
}

fn fake(minor: u32, file: &str) -> Fake {
    let off = table_offsets(minor).unwrap();
    let mut mem = SliceMemory::new();
    mem.add(CODE, code_head(&off, 10))
        .add(NAME, str_object(&off, "step"))
        .add(QUAL, str_object(&off, "Walker.step"))
        .add(FILE, str_object(&off, file))
        // 3.11+: RESUME on line 10, then two units on 11 (one-line form, +1).
        .add(TABLE, bytes_object(&off, &[0x80, 0x00, 0xd9, 0x04, 0x09]));
    Fake { mem, off }
}

#[test]
fn reads_a_312_code_object_with_qualname_and_lines() {
    let f = fake(12, "/srv/app/walker.py");
    let code = read_code(&f.mem, &f.off, Some(CODE_TYPE), CODE).unwrap();
    assert_eq!(code.name, "step");
    assert_eq!(code.qualname, "Walker.step");
    assert_eq!(code.filename, "/srv/app/walker.py");
    assert_eq!(code.firstlineno, 10);
    assert_eq!(code.line(f.off.linetable_format, 0).unwrap(), Some(10));
    assert_eq!(code.line(f.off.linetable_format, 2).unwrap(), Some(11));
    assert_eq!(code.line(f.off.linetable_format, 4).unwrap(), Some(11));
    assert_eq!(code.line(f.off.linetable_format, 6).unwrap(), None);
}

#[test]
fn before_311_the_qualname_is_the_name() {
    let f = fake(9, "w.py");
    let code = read_code(&f.mem, &f.off, Some(CODE_TYPE), CODE).unwrap();
    assert_eq!(code.qualname, "step");
}

#[test]
fn decodes_latin1_ucs2_ucs4_names() {
    for (minor, s) in [(12, "café.py"), (11, "путь.py"), (9, "𝔭𝔶.py"), (12, "")] {
        let f = fake(minor, s);
        assert_eq!(read_code(&f.mem, &f.off, None, CODE).unwrap().filename, s);
    }
}

#[test]
fn wrong_type_legacy_strings_and_bad_sizes_are_errors() {
    let f = fake(12, "a.py");
    assert!(matches!(
        read_code(&f.mem, &f.off, Some(CODE_TYPE + 8), CODE),
        Err(PyFrameError::NotCode { .. })
    ));
    assert_eq!(
        read_code(&f.mem, &f.off, None, 0).unwrap_err().reason(),
        "corrupt"
    );
    assert_eq!(
        read_code(&f.mem, &f.off, None, 0x99_000)
            .unwrap_err()
            .reason(),
        "unreadable"
    );
    // A non-compact (legacy) str.
    let mut legacy = str_object(&f.off, "x");
    legacy[f.off.unicode_state as usize] &= !(1 << 5);
    let mut m = f.mem.clone();
    m.add(FILE, legacy);
    assert!(matches!(
        read_code(&m, &f.off, None, CODE),
        Err(PyFrameError::StringKind(_))
    ));
    // A length beyond the limit.
    let mut long = str_object(&f.off, "x");
    long[f.off.unicode_length as usize..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut m = f.mem.clone();
    m.add(NAME, long);
    assert_eq!(
        read_code(&m, &f.off, None, CODE).unwrap_err(),
        PyFrameError::Corrupt("str too long")
    );
}

#[test]
fn cache_hits_and_rereads_after_address_reuse() {
    let mut f = fake(12, "a.py");
    let mut cache = CodeCache::new(8);
    let a = cache
        .symbolize(&f.mem, &f.off, Some(CODE_TYPE), 1, CODE, 2)
        .unwrap();
    assert_eq!((a.qualname.as_str(), a.line), ("Walker.step", Some(11)));
    let b = cache
        .symbolize(&f.mem, &f.off, Some(CODE_TYPE), 1, CODE, 0)
        .unwrap();
    assert_eq!(b.line, Some(10));
    assert_eq!((cache.reads, cache.hits, cache.replaced), (1, 1, 0));
    // Another pid at the same address is a different entry.
    cache
        .symbolize(&f.mem, &f.off, Some(CODE_TYPE), 2, CODE, 0)
        .unwrap();
    assert_eq!(cache.reads, 2);
    // A new code object at the same address (other first line, other name object).
    f.mem.add(CODE, code_head(&f.off, 40));
    f.mem.add(QUAL, str_object(&f.off, "Other.run"));
    let c = cache
        .symbolize(&f.mem, &f.off, Some(CODE_TYPE), 1, CODE, 0)
        .unwrap();
    assert_eq!(
        (c.qualname.as_str(), c.firstlineno, c.line),
        ("Other.run", 40, Some(40))
    );
    assert_eq!(cache.replaced, 1);
    // The kernel's id of the new head hits without a read; a stale id reads again.
    let id = read_header(&f.mem, &f.off, None, CODE).unwrap().kernel_id();
    let reads = cache.reads;
    let empty = SliceMemory::new();
    assert!(cache.get_with_id(&empty, &f.off, None, 1, CODE, id).is_ok());
    assert!(cache
        .get_with_id(&empty, &f.off, None, 1, CODE, id ^ 1)
        .is_err());
    assert_eq!(cache.reads, reads);
    cache.forget_pid(1);
    assert!(cache
        .get_with_id(&empty, &f.off, None, 1, CODE, id)
        .is_err());
}

#[test]
fn header_parse_needs_every_byte() {
    let off = table_offsets(13).unwrap();
    let head = code_head(&off, 1);
    assert!(CodeHeader::parse(&head, &off).is_some());
    assert!(CodeHeader::parse(&head[..head.len() - 1], &off).is_none());
}

/// Arbitrary bytes as a code object whose pointers (when `aim` says so) point back into the
/// same bytes: any version's reader returns an error or bounded strings, never panics.
fn read_arbitrary(bytes: &[u8], aim: &[u16]) {
    const BASE: u64 = 0x40_000;
    for minor in 6..=13 {
        let off = table_offsets(minor).unwrap();
        let mut region = bytes.to_vec();
        let ptrs = [
            off.code_filename,
            off.code_name,
            off.code_qualname,
            off.code_linetable,
        ];
        for (&o, &a) in ptrs.iter().zip(aim) {
            if o != ABSENT && (o as usize + 8) <= region.len() && !region.is_empty() {
                let target = BASE + u64::from(a) % region.len() as u64;
                region[o as usize..][..8].copy_from_slice(&target.to_le_bytes());
            }
        }
        let mut mem = SliceMemory::new();
        mem.add(BASE, region);
        if let Ok(code) = read_code(&mem, &off, None, BASE) {
            assert!(code.name.chars().count() as u64 <= MAX_STRING_CHARS);
            assert!(code.linetable.len() <= bytes.len());
            let _ = code.line(
                off.linetable_format,
                i64::from(aim.first().copied().unwrap_or(0)),
            );
        }
        let mut cache = CodeCache::new(2);
        let _ = cache.symbolize(&mem, &off, Some(CODE_TYPE), 1, BASE, 0);
        let _ = read_str(&mem, &off, BASE + 1);
    }
}

proptest::proptest! {
    #[test]
    fn code_reader_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
                                aim in proptest::collection::vec(proptest::num::u16::ANY, 4)) {
        read_arbitrary(&bytes, &aim);
    }
}
