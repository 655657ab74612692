//! `unwind::cache` with real files: one table per build ID shared by every copy, a file without
//! a build ID rebuilt when its contents (identity: dev, inode, size, mtime) change, LRU by bytes.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test]: a failed unwrap fails the test"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ebpf_probe::unwind::cache::{FileIdentity, FileStat, UnwindCache};
use ebpf_probe::unwind::cfi::DebugSearch;

const LIB: &str = "/lib/x86_64-linux-gnu/libz.so.1";

fn no_build_id_copy(src: &Path, dst: &Path) {
    let out = Command::new("objcopy")
        .arg("--remove-section=.note.gnu.build-id")
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn copies_with_one_build_id_share_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.so"), dir.path().join("b.so"));
    std::fs::copy(LIB, &a).unwrap();
    std::fs::copy(LIB, &b).unwrap();
    let mut cache = UnwindCache::with_search(64 << 20, DebugSearch::none());
    let ta = cache.get_or_build(&a).unwrap();
    let tb = cache.get_or_build(&b).unwrap();
    assert!(Arc::ptr_eq(&ta, &tb));
    let again = cache.get_or_build(&a).unwrap();
    assert!(Arc::ptr_eq(&ta, &again));
    let s = cache.stats();
    assert_eq!((s.builds, s.hits, s.tables), (1, 2, 1));
    assert_eq!(s.bytes, ta.size_bytes());
    assert!(ta.rows.len() > 100);
}

#[test]
fn a_changed_file_without_build_id_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.so");
    no_build_id_copy(Path::new(LIB), &path);
    let mut cache = UnwindCache::with_search(64 << 20, DebugSearch::none());
    let first = cache.get_or_build(&path).unwrap();
    assert!(cache.contains(&FileIdentity::Stat(FileStat::of(&path).unwrap())));
    assert!(Arc::ptr_eq(&first, &cache.get_or_build(&path).unwrap()));
    // Replace it with another library (new inode, size, mtime).
    let other = dir.path().join("other.so");
    no_build_id_copy(Path::new("/lib/x86_64-linux-gnu/libm.so.6"), &other);
    std::fs::rename(&other, &path).unwrap();
    let second = cache.get_or_build(&path).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_ne!(first.rows, second.rows);
    assert_eq!(cache.stats().builds, 2);
}

#[test]
fn the_byte_limit_evicts_the_least_recently_used_file() {
    let dir = tempfile::tempdir().unwrap();
    let z = dir.path().join("z.so");
    let m = dir.path().join("m.so");
    std::fs::copy(LIB, &z).unwrap();
    std::fs::copy("/lib/x86_64-linux-gnu/libm.so.6", &m).unwrap();
    let mut probe = UnwindCache::with_search(usize::MAX, DebugSearch::none());
    let (zb, mb) = (
        probe.get_or_build(&z).unwrap().size_bytes(),
        probe.get_or_build(&m).unwrap().size_bytes(),
    );
    // Room for the bigger one alone.
    let mut cache = UnwindCache::with_search(zb.max(mb), DebugSearch::none());
    let tz = cache.get_or_build(&z).unwrap();
    cache.get_or_build(&m).unwrap();
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(cache.stats().tables, 1);
    // z was evicted: built again; the Arc a process held stays usable.
    let tz2 = cache.get_or_build(&z).unwrap();
    assert!(!Arc::ptr_eq(&tz, &tz2));
    assert_eq!(tz.rows, tz2.rows);
    assert_eq!(cache.stats().builds, 3);
}
