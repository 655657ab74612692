//! Tests of the unwind-map state: ranges, load bias, shared tables, eviction, failed writes.
use super::*;
use crate::symbolize::procmaps::parse_maps_line;
use crate::unwind::abi::{UNW_CFA_RSP, UNW_END};

#[test]
fn ranges_allocate_first_fit_and_merge_after_the_grace_period() {
    let mut a = RangeAlloc::new(100);
    assert_eq!(a.alloc(30), Some(0));
    assert_eq!(a.alloc(30), Some(30));
    assert_eq!(a.alloc(50), None);
    assert_eq!(a.alloc(0), Some(0));
    let t0 = Instant::now();
    a.retire(0, 30, t0);
    a.reclaim(t0);
    assert_eq!(a.free_len(), 40, "retired ranges wait for the grace period");
    assert_eq!(a.alloc(31), Some(60));
    a.retire(30, 30, t0);
    a.reclaim(t0 + FREE_GRACE);
    assert_eq!(a.free_len(), 69);
    // 0..60 merged into one range again.
    assert_eq!(a.alloc(60), Some(0));
    assert_eq!(a.alloc(10), None);
    assert_eq!(a.alloc(9), Some(91));
}

fn entry(line: &str) -> MapEntry {
    parse_maps_line(line).unwrap()
}

#[test]
fn load_bias_when_the_text_page_also_holds_the_previous_segment() {
    // A Rust release binary as linked by rustc: the text segment's file offset and vaddr
    // differ by 0x1000 and its first page starts inside the read-only segment.
    let segments = [
        (0x0, 0x0, 0x1704c),
        (0x17050, 0x18050, 0x3fda0),
        (0x56df0, 0x58df0, 0x2a60),
    ];
    let text = entry("55d000018000-55d000058000 r-xp 00017000 08:01 7 /usr/bin/x");
    assert_eq!(load_bias(&text, &segments), Some(0x55d0_0000_0000));
    let head = entry("55d000000000-55d000018000 r--p 00000000 08:01 7 /usr/bin/x");
    assert_eq!(load_bias(&head, &segments), Some(0x55d0_0000_0000));
}

#[test]
fn load_bias_of_pie_and_fixed_binaries() {
    // PIE: the text segment at offset 0x1000, vaddr 0x1000, mapped at 0x5555_5555_5000.
    let segments = [
        (0, 0, 0x800),
        (0x1000, 0x1000, 0x3000),
        (0x4000, 0x5000, 0x100),
    ];
    let text = entry("555555555000-555555558000 r-xp 00001000 08:01 7 /bin/p");
    assert_eq!(load_bias(&text, &segments), Some(0x5555_5555_4000));
    // Non-PIE: vaddr 0x401000 at offset 0x1000, mapped where it was linked.
    let fixed = [(0x1000, 0x401000, 0x2000)];
    let text = entry("00401000-00403000 r-xp 00001000 08:01 7 /bin/f");
    assert_eq!(load_bias(&text, &fixed), Some(0));
    // Offset outside every segment.
    let stray = entry("00401000-00403000 r-xp 00009000 08:01 7 /bin/f");
    assert_eq!(load_bias(&stray, &fixed), None);
}

#[test]
fn load_segments_of_this_test_binary() {
    let segments = read_load_segments(std::path::Path::new("/proc/self/exe")).unwrap();
    let whole = load_segments(&std::fs::read("/proc/self/exe").unwrap()).unwrap();
    assert_eq!(segments, whole);
    assert!(segments.len() >= 2);
    assert!(load_segments(b"not an ELF file").is_err());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let text = crate::symbolize::procmaps::parse_maps(&maps)
        .into_iter()
        .find(|e| e.is_exec() && std::path::Path::new(&e.path) == me)
        .unwrap();
    let bias = load_bias(&text, &segments).unwrap();
    // This function's address minus the bias lies in an executable segment's vaddrs.
    let pc = load_segments_of_this_test_binary as fn() as usize as u64 - bias;
    assert!(segments
        .iter()
        .any(|&(_, vaddr, size)| vaddr <= pc && pc < vaddr + size));
}

#[test]
fn file_tables_open_the_mapped_file() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let text = crate::symbolize::procmaps::parse_maps(&maps)
        .into_iter()
        .find(|e| e.is_exec() && std::path::Path::new(&e.path) == me)
        .unwrap();
    let mut opened = Vec::new();
    let mut tables = FileTables::new(|path: &std::path::Path| {
        opened.push(path.to_path_buf());
        Ok(Some(vec![UnwindRow::default()]))
    });
    let table = tables.table(std::process::id(), &text).unwrap().unwrap();
    assert_eq!(table.rows.len(), 1);
    assert!(load_bias(&text, &table.segments).is_some());
    drop(tables);
    let path = opened[0].to_string_lossy().into_owned();
    assert!(
        path.contains("/map_files/") || path.ends_with(&text.path),
        "{path}"
    );
    let mut none = FileTables::new(|_: &std::path::Path| Ok(None));
    assert_eq!(none.table(std::process::id(), &text).unwrap(), None);
}

#[test]
fn the_vdso_is_unwound_with_its_own_eh_frame() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let Some(vdso) = crate::symbolize::procmaps::parse_maps(&maps)
        .into_iter()
        .find(|e| e.path == VDSO)
    else {
        panic!("this process has no [vdso] mapping");
    };
    // The file closure is never asked for the vDSO: it has no file.
    let mut tables = FileTables::new(|p: &std::path::Path| -> Result<_, String> {
        panic!("asked to open {p:?} for the vdso")
    });
    let table = tables
        .table(std::process::id(), &vdso)
        .unwrap()
        .expect("the x86-64 vDSO has .eh_frame");
    assert!(table.rows.len() > 4, "{} rows", table.rows.len());
    assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
    // A vDSO function's entry: the return address is at rsp, CFA = rsp + 8.
    let bias = load_bias(&vdso, &table.segments).expect("bias");
    assert_eq!(bias, vdso.start, "the vDSO is linked at 0");
    assert!(table
        .rows
        .iter()
        .any(|r| r.kind == crate::unwind::abi::UNW_CFA_RSP && r.cfa_offset == 8));
    // The state shares it like a file's table instead of using frame pointers.
    let mut state = UnwindState::new(100_000, 100, 10);
    let mut fake = FakeMaps::default();
    state
        .update_process(
            std::process::id(),
            std::slice::from_ref(&vdso),
            &mut tables,
            &mut fake,
        )
        .unwrap();
    let m = fake.mappings_of(std::process::id());
    assert_eq!(m.len(), 1);
    assert_ne!(m[0].table, TABLE_FRAME_POINTER);
    assert_eq!(fake.rows_of(m[0].table).len(), table.rows.len());
}

#[derive(Default)]
struct FakeMaps {
    rows: HashMap<u32, UnwindRow>,
    pages: HashMap<u32, UnwindPage>,
    tables: HashMap<u32, UnwindTable>,
    mappings: HashMap<u32, UnwindMapping>,
    procs: HashMap<u32, UnwindProc>,
    fail_rows: bool,
}

impl UnwindMaps for FakeMaps {
    type Error = String;
    fn write_rows(&mut self, first: u32, rows: &[UnwindRow]) -> Result<(), String> {
        if self.fail_rows {
            return Err("E2BIG".into());
        }
        for (i, row) in rows.iter().enumerate() {
            self.pages.remove(&(first + i as u32));
            self.rows.insert(first + i as u32, *row);
        }
        Ok(())
    }
    fn write_pages(&mut self, first: u32, pages: &[UnwindPage]) -> Result<(), String> {
        for (i, page) in pages.iter().enumerate() {
            self.rows.remove(&(first + i as u32));
            self.pages.insert(first + i as u32, *page);
        }
        Ok(())
    }
    fn set_table(&mut self, id: u32, table: UnwindTable) -> Result<(), String> {
        self.tables.insert(id, table);
        Ok(())
    }
    fn write_mappings(&mut self, first: u32, mappings: &[UnwindMapping]) -> Result<(), String> {
        for (i, m) in mappings.iter().enumerate() {
            self.mappings.insert(first + i as u32, *m);
        }
        Ok(())
    }
    fn set_proc(&mut self, pid: u32, proc: UnwindProc) -> Result<(), String> {
        self.procs.insert(pid, proc);
        Ok(())
    }
    fn remove_proc(&mut self, pid: u32) -> Result<(), String> {
        self.procs.remove(&pid);
        Ok(())
    }
}

impl FakeMaps {
    /// The mappings the kernel would search for `pid`.
    fn mappings_of(&self, pid: u32) -> Vec<UnwindMapping> {
        let proc = self.procs[&pid];
        (proc.first..proc.first + proc.count)
            .map(|i| self.mappings[&i])
            .collect()
    }
    /// The rows of a table, after checking that its page index finds, for pcs across
    /// the table, the row a whole search finds.
    fn rows_of(&self, table: u32) -> Vec<UnwindRow> {
        let t = self.tables[&table];
        let rows: Vec<UnwindRow> = (t.first + t.pages..t.first + t.pages + t.count)
            .map(|i| self.rows[&i])
            .collect();
        let pages: Vec<UnwindPage> = (t.first..t.first + t.pages)
            .map(|i| self.pages[&i])
            .collect();
        if let (Some(lo), Some(hi)) = (rows.first(), rows.last()) {
            for pc in lo.pc.saturating_sub(64)..hi.pc + 64 {
                assert_eq!(
                    super::super::unwind_abi::find_row_indexed(&rows, t.page_base, &pages, pc),
                    rows.iter().rposition(|r| r.pc <= pc),
                    "pc {pc:#x}"
                );
            }
        }
        rows
    }
}

/// Tables for files named `/lib/*` with `n` rows (n from the path's length), none for
/// others; counts builds.
#[derive(Default)]
struct FakeSource {
    built: Vec<String>,
}

impl TableProvider for FakeSource {
    fn table(&mut self, _pid: u32, entry: &MapEntry) -> Result<Option<FileTable>, String> {
        self.built.push(entry.path.clone());
        if entry.path.starts_with("/broken") {
            return Err("bad CFI".into());
        }
        if !entry.path.starts_with("/lib/") {
            return Ok(None);
        }
        let n = entry.path.len() as u32;
        let rows: Vec<UnwindRow> = (0..n)
            .map(|i| UnwindRow {
                pc: 0x1000 + 16 * i,
                kind: if i + 1 == n { UNW_END } else { UNW_CFA_RSP },
                rbp_offset: 0,
                cfa_offset: 8,
            })
            .collect();
        Ok(Some(FileTable {
            rows: rows.into(),
            segments: vec![(0, 0, 0x1000), (0x1000, 0x1000, 0x10000)],
        }))
    }
}

const MAPS_A: [&str; 6] = [
    "7f0000001000-7f0000011000 r-xp 00001000 08:01 11 /lib/libc.so",
    "7f0000000000-7f0000001000 r--p 00000000 08:01 11 /lib/libc.so",
    "7e0000001000-7e0000011000 r-xp 00001000 08:01 12 /lib/libm.so.6",
    "7d0000000000-7d0000001000 r-xp 00000000 00:00 0 ",
    "7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]",
    "5500000001000-5500000002000 r-xp 00001000 08:01 13 /usr/bin/nocfi",
];

#[test]
fn processes_share_tables_and_fall_back_to_frame_pointers() {
    let mut state = UnwindState::new(1000, 100, 10);
    let mut maps = FakeMaps::default();
    let mut source = FakeSource::default();
    let a: Vec<MapEntry> = MAPS_A.iter().map(|l| entry(l)).collect();
    state.update_process(1, &a, &mut source, &mut maps).unwrap();

    let m = maps.mappings_of(1);
    // Executable mappings only, sorted by start.
    let starts: Vec<u64> = m.iter().map(|m| m.start).collect();
    let sorted = [
        0x7d00_0000_0000,
        0x7e00_0000_1000,
        0x7f00_0000_1000,
        0x7ffd_0000_0000,
    ];
    assert_eq!(starts[..4], sorted);
    assert_eq!(starts[4], 0x5_5000_0000_1000);
    let by_start = |s: u64| m.iter().find(|m| m.start == s).copied().unwrap();
    let libc = by_start(0x7f0000001000);
    assert_eq!(libc.bias, 0x7f0000000000);
    assert_eq!(maps.rows_of(libc.table).len(), "/lib/libc.so".len());
    assert_eq!(
        by_start(0x7d0000000000).table,
        TABLE_FRAME_POINTER,
        "anonymous"
    );
    assert_eq!(by_start(0x7ffd00000000).table, TABLE_FRAME_POINTER, "vdso");
    assert_eq!(
        by_start(0x5500000001000).table,
        TABLE_FRAME_POINTER,
        "no CFI"
    );

    // A second process mapping libc elsewhere shares the table.
    let b = [
        entry("7a0000001000-7a0000011000 r-xp 00001000 08:01 11 /lib/libc.so"),
        entry("7b0000001000-7b0000002000 r-xp 00001000 08:09 99 /broken/x"),
    ];
    state.update_process(2, &b, &mut source, &mut maps).unwrap();
    let mb = maps.mappings_of(2);
    assert_eq!(mb[0].table, libc.table);
    assert_eq!(mb[0].bias, 0x7a0000000000);
    assert_eq!(mb[1].table, TABLE_FRAME_POINTER);
    assert_eq!(
        source.built.iter().filter(|p| *p == "/lib/libc.so").count(),
        1
    );
    let stats = state.stats();
    assert_eq!(
        (stats.processes, stats.tables, stats.table_errors),
        (2, 2, 1)
    );
    assert_eq!(
        (stats.mappings_with_table, stats.mappings_frame_pointer),
        (3, 4)
    );
    // The rows of both tables and one page-index entry each (all rows are in one page).
    assert_eq!(
        stats.rows_used,
        ("/lib/libc.so".len() + "/lib/libm.so.6".len() + 2) as u64
    );

    // Re-reading replaces the range; removing forgets the process, the tables stay cached.
    let old = maps.procs[&1];
    state
        .update_process(1, &a[..1], &mut source, &mut maps)
        .unwrap();
    assert_ne!(
        maps.procs[&1].first, old.first,
        "new range published, old one retired"
    );
    assert_eq!(maps.mappings_of(1).len(), 1);
    state.remove_process(1, &mut maps).unwrap();
    state.remove_process(2, &mut maps).unwrap();
    assert!(maps.procs.is_empty());
    assert_eq!(state.stats().tables, 2);
    assert_eq!(
        source.built.iter().filter(|p| *p == "/lib/libc.so").count(),
        1
    );
}

#[test]
fn unused_tables_are_evicted_when_rows_run_out() {
    // Room for tables of 12 and 14 rows, not for a third of 12.
    let mut state = UnwindState::new(30, 100, 10);
    let mut maps = FakeMaps::default();
    let mut source = FakeSource::default();
    let libc = entry("7f0000001000-7f0000011000 r-xp 00001000 08:01 11 /lib/libc.so");
    let libm = entry("7e0000001000-7e0000011000 r-xp 00001000 08:01 12 /lib/libm.so.6");
    let libz = entry("7c0000001000-7c0000011000 r-xp 00001000 08:01 14 /lib/libz.so");
    state
        .update_process(1, std::slice::from_ref(&libc), &mut source, &mut maps)
        .unwrap();
    let maps_table_of_libc = maps.mappings_of(1)[0].table;
    state
        .update_process(2, &[libm], &mut source, &mut maps)
        .unwrap();
    // No room and every table in use: frame pointers, counted.
    state
        .update_process(3, std::slice::from_ref(&libz), &mut source, &mut maps)
        .unwrap();
    assert_eq!(maps.mappings_of(3)[0].table, TABLE_FRAME_POINTER);
    assert_eq!(state.stats().tables_no_room, 1);
    // Until a table is released, another process mapping libz does not build it again.
    state
        .update_process(4, std::slice::from_ref(&libz), &mut source, &mut maps)
        .unwrap();
    let libz_builds = |s: &FakeSource| s.built.iter().filter(|p| *p == "/lib/libz.so").count();
    assert_eq!(libz_builds(&source), 1);
    state.remove_process(4, &mut maps).unwrap();
    // Once libc is unused for the grace period it is evicted for libz.
    state.remove_process(1, &mut maps).unwrap();
    std::thread::sleep(FREE_GRACE);
    let libc_table = maps.tables[&maps_table_of_libc];
    state
        .update_process(3, &[libz], &mut source, &mut maps)
        .unwrap();
    let z = maps.mappings_of(3)[0];
    assert_ne!(z.table, TABLE_FRAME_POINTER);
    assert_eq!(maps.rows_of(z.table).len(), "/lib/libz.so".len());
    assert_eq!(state.stats().tables, 2);
    // libz took libc's rows: its entry has a generation of its own, so the kernel's row cache
    // (keyed by generation and address) cannot give libz a row of libc.
    let z_table = maps.tables[&z.table];
    assert_eq!(z_table.first, libc_table.first, "libz reuses libc's rows");
    assert_ne!(z_table.generation, libc_table.generation);
    let generations: std::collections::HashSet<u32> =
        maps.tables.values().map(|t| t.generation).collect();
    assert_eq!(generations.len(), maps.tables.len());
    assert!(!generations.contains(&0));
}

#[test]
fn failed_writes_leave_the_previous_mappings() {
    let mut state = UnwindState::new(100, 100, 10);
    let mut maps = FakeMaps::default();
    let mut source = FakeSource::default();
    let anon = entry("7d0000000000-7d0000001000 r-xp 00000000 00:00 0 ");
    state
        .update_process(1, &[anon], &mut source, &mut maps)
        .unwrap();
    let before = maps.procs[&1];
    maps.fail_rows = true;
    let libc = entry("7f0000001000-7f0000011000 r-xp 00001000 08:01 11 /lib/libc.so");
    assert!(state
        .update_process(1, &[libc], &mut source, &mut maps)
        .is_err());
    assert_eq!(maps.procs[&1], before);
    assert_eq!(state.stats().tables, 0);
    let mut tiny = UnwindState::new(100, 1, 10);
    let two = [
        entry("7d0000000000-7d0000001000 r-xp 00000000 00:00 0 "),
        entry("7d0000002000-7d0000003000 r-xp 00000000 00:00 0 "),
    ];
    assert!(matches!(
        tiny.update_process(1, &two, &mut source, &mut FakeMaps::default()),
        Err(UnwindMapError::MappingsFull(2))
    ));
}

#[test]
fn load_segments_when_the_program_headers_are_far_from_the_head() {
    // As lld lays out librustc_driver: the program headers after the first 4 KiB. A copy of
    // this test binary's ELF header and program headers, those moved to 64 KiB.
    let exe = std::fs::read("/proc/self/exe").unwrap();
    let phoff = u64::from_le_bytes(exe[32..40].try_into().unwrap()) as usize;
    let entry = u16::from_le_bytes(exe[54..56].try_into().unwrap()) as usize;
    let count = u16::from_le_bytes(exe[56..58].try_into().unwrap()) as usize;
    let moved = 64 << 10;
    let mut image = exe[..64].to_vec();
    image[32..40].copy_from_slice(&(moved as u64).to_le_bytes());
    image.resize(moved, 0);
    image.extend_from_slice(&exe[phoff..phoff + entry * count]);
    let dir = std::env::temp_dir().join(format!("rill-phdrs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("far.so");
    std::fs::write(&path, &image).unwrap();
    let segments = read_load_segments(&path);
    let truncated = dir.join("truncated.so");
    std::fs::write(&truncated, &image[..moved + 10]).unwrap();
    let short = read_load_segments(&truncated);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(segments.unwrap(), load_segments(&exe).unwrap());
    // Program headers cut off by the end of the file: an error naming the file.
    assert!(short.unwrap_err().contains("truncated.so"));
}

#[test]
fn files_without_a_table_are_not_read_again_for_every_process() {
    // Every rustc of a build maps the same large library: a file that got no table (no CFI,
    // or its table failed to build) is not built again for the next process.
    let mut state = UnwindState::new(1000, 100, 10);
    let mut maps = FakeMaps::default();
    let mut source = FakeSource::default();
    let files = [
        entry("5500000001000-5500000002000 r-xp 00001000 08:01 13 /usr/bin/nocfi"),
        entry("7b0000001000-7b0000002000 r-xp 00001000 08:09 99 /broken/x"),
    ];
    for pid in 1..=5 {
        state
            .update_process(pid, &files, &mut source, &mut maps)
            .unwrap();
        assert!(maps
            .mappings_of(pid)
            .iter()
            .all(|m| m.table == TABLE_FRAME_POINTER));
    }
    source.built.sort();
    assert_eq!(source.built, ["/broken/x", "/usr/bin/nocfi"]);
    assert_eq!(state.stats().table_errors, 1);
    // The same path as another file (a new inode): built.
    let replaced = [entry(
        "5500000001000-5500000002000 r-xp 00001000 08:01 14 /usr/bin/nocfi",
    )];
    state
        .update_process(6, &replaced, &mut source, &mut maps)
        .unwrap();
    assert_eq!(source.built.len(), 3);
}
