//! Symbols of one ELF file: `.symtab` and `.dynsym`, separate debug files found by build ID
//! or `.gnu_debuglink`, MiniDebugInfo (`.gnu_debugdata`) and Go's `.gopclntab`, plus the
//! `PT_LOAD` segments that turn a file offset into a link-time address (which is how PIE and
//! non-PIE objects are handled alike: runtime address → file offset through the mapping,
//! file offset → virtual address through the segment that holds it).
//!
//! All paths are resolved inside a root directory (normally `/proc/PID/root`), following
//! symlinks by hand so that an absolute link in a container never escapes to the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use object::{
    Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, ReadRef, SymbolKind,
};

use super::gopclntab;
use super::table::{SymbolTable, SymbolTableBuilder};

/// Errors loading an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// File not readable.
    #[error("{path}: {source}")]
    Io {
        /// Path as resolved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not an ELF file we understand.
    #[error("{path}: {source}")]
    Parse {
        /// Path as resolved.
        path: PathBuf,
        /// Cause.
        source: object::Error,
    },
}

/// Where the function names came from (several may apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolSource {
    /// The file's own `.symtab`.
    Symtab,
    /// The file's `.dynsym`.
    Dynsym,
    /// A separate debug file found by build ID.
    BuildIdDebugFile(PathBuf),
    /// A separate debug file found through `.gnu_debuglink`.
    DebugLink(PathBuf),
    /// The xz-compressed `.gnu_debugdata` symbol table.
    MiniDebugInfo,
    /// Go's function table.
    GoPclntab,
}

/// A `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
}

/// The symbols of one ELF object.
#[derive(Debug)]
pub struct ElfSymbols {
    /// Unique per loaded object in this process (a key for name caches).
    pub id: u64,
    /// GNU build ID.
    pub build_id: Option<Vec<u8>>,
    /// Function symbols at link-time addresses, names mangled.
    pub table: SymbolTable,
    /// `PT_LOAD` segments.
    pub loads: Vec<LoadSegment>,
    /// `ET_DYN` (PIE or shared library) rather than `ET_EXEC`.
    pub is_dyn: bool,
    /// Where the names came from.
    pub sources: Vec<SymbolSource>,
}

impl ElfSymbols {
    /// Link-time virtual address of a file offset.
    pub fn file_offset_to_vaddr(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|s| s.offset <= off && off - s.offset < s.filesz)
            .map(|s| off - s.offset + s.vaddr)
    }

    /// The (mangled) function name at a file offset.
    pub fn lookup_file_offset(&self, off: u64) -> Option<std::borrow::Cow<'_, str>> {
        self.table.lookup(self.file_offset_to_vaddr(off)?)
    }

    /// Index in [`Self::table`] of the function at a file offset (names are read with
    /// [`SymbolTable::name`]; the index identifies the function for caches).
    pub fn lookup_index_file_offset(&self, off: u64) -> Option<usize> {
        self.table.lookup_index(self.file_offset_to_vaddr(off)?)
    }

    /// Build ID as lowercase hex.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(hex)
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Resolves `path` inside `root` like `openat2(RESOLVE_IN_ROOT)`: `..` stops at the root and
/// absolute symlink targets restart at the root.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = path.components().filter_map(component_name).collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        let md = std::fs::symlink_metadata(&candidate)?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return Err(std::io::Error::other("too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                resolved.clear();
            }
            for (i, c) in target.components().filter_map(component_name).enumerate() {
                queue.insert(i, c);
            }
        } else {
            resolved.push(name);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

fn component_name(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    }
}

/// Cheap identity of a file: its build ID, read without loading symbols.
pub fn read_build_id(path: &Path) -> Result<Option<Vec<u8>>, ElfError> {
    let file = File::open(path).map_err(|source| ElfError::Io {
        path: path.into(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|source| ElfError::Parse {
        path: path.into(),
        source,
    })?;
    Ok(obj.build_id().ok().flatten().map(<[u8]>::to_vec))
}

fn push_symbols<'d, I, S>(symbols: I, out: &mut SymbolTableBuilder) -> usize
where
    I: Iterator<Item = S>,
    S: ObjectSymbol<'d>,
{
    let mut n = 0;
    for sym in symbols {
        if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        if let Ok(name) = sym.name() {
            out.push(sym.address(), sym.size(), name);
            n += 1;
        }
    }
    n
}

/// Symbol table entries read per `pread` when streaming a symbol table section.
const SYMBOLS_PER_READ: usize = 2730;

/// Function symbols of the section `table` (`.symtab`/`.dynsym`) whose names stay in the
/// string section `strings` of `file`: the table is streamed in chunks and decoded in place
/// (`object` only decodes symbol tables held whole in memory, which for a large binary means
/// megabytes of strings read and kept for nothing), and only (address, size, name offset)
/// is kept. `None` when the sections are absent or unusable, so the caller can fall back.
fn push_symbols_lazy<'d, R: ReadRef<'d>>(
    obj: &object::File<'d, R>,
    file: &Arc<File>,
    table: &str,
    strings: &str,
    out: &mut SymbolTableBuilder,
) -> Option<usize> {
    let (sym_off, sym_size) = obj.section_by_name(table)?.file_range()?;
    let (str_off, str_size) = obj.section_by_name(strings)?.file_range()?;
    if str_off.checked_add(str_size)? > u64::from(u32::MAX) {
        return None;
    }
    let (ent, little) = (if obj.is_64() { 24 } else { 16 }, obj.is_little_endian());
    let source = out.add_file(Arc::clone(file))?;
    let count = usize::try_from(sym_size / ent as u64).ok()?;
    let mut buf = vec![0u8; ent * SYMBOLS_PER_READ.min(count.max(1))];
    let mut n = 0;
    let mut done = 0;
    while done < count {
        let take = (count - done).min(SYMBOLS_PER_READ);
        let chunk = &mut buf[..take * ent];
        file.read_exact_at(chunk, sym_off + (done * ent) as u64)
            .ok()?;
        for raw in chunk.chunks_exact(ent) {
            let sym = RawSymbol::decode(raw, obj.is_64(), little);
            let is_func = matches!(sym.kind, object::elf::STT_FUNC | object::elf::STT_GNU_IFUNC);
            if !is_func || sym.shndx == object::elf::SHN_UNDEF || sym.value == 0 {
                continue;
            }
            if sym.name == 0 || u64::from(sym.name) >= str_size {
                continue;
            }
            out.push_lazy(
                sym.value,
                sym.size,
                source,
                (str_off + u64::from(sym.name)) as u32,
            );
            n += 1;
        }
        done += take;
    }
    Some(n)
}

/// The fields of one `Elf32_Sym`/`Elf64_Sym` record that symbolization needs.
struct RawSymbol {
    name: u32,
    kind: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

impl RawSymbol {
    /// `raw` is one record (16 or 24 bytes, checked by the caller's chunking).
    fn decode(raw: &[u8], is_64: bool, little: bool) -> RawSymbol {
        let u16_at = |o: usize| {
            let b = [raw[o], raw[o + 1]];
            if little {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        };
        let u32_at = |o: usize| {
            let b: [u8; 4] = raw[o..o + 4].try_into().unwrap_or_default();
            if little {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let u64_at = |o: usize| {
            let b: [u8; 8] = raw[o..o + 8].try_into().unwrap_or_default();
            if little {
                u64::from_le_bytes(b)
            } else {
                u64::from_be_bytes(b)
            }
        };
        if is_64 {
            // st_name, st_info, st_other, st_shndx, st_value, st_size
            RawSymbol {
                name: u32_at(0),
                kind: raw[4] & 0xf,
                shndx: u16_at(6),
                value: u64_at(8),
                size: u64_at(16),
            }
        } else {
            // st_name, st_value, st_size, st_info, st_other, st_shndx
            RawSymbol {
                name: u32_at(0),
                kind: raw[12] & 0xf,
                shndx: u16_at(14),
                value: u64::from(u32_at(4)),
                size: u64::from(u32_at(8)),
            }
        }
    }
}

/// Facts gathered from the main object.
struct Primary {
    build_id: Option<Vec<u8>>,
    debuglink: Option<(Vec<u8>, u32)>,
    loads: Vec<LoadSegment>,
    is_dyn: bool,
    symtab: usize,
}

/// `file` is the object's file when it was parsed from one: its names are then left there
/// (read on lookup); otherwise (an in-memory image) they are copied.
fn read_primary<'d, R: ReadRef<'d>>(
    obj: &object::File<'d, R>,
    file: Option<&Arc<File>>,
    out: &mut SymbolTableBuilder,
    sources: &mut Vec<SymbolSource>,
) -> Primary {
    let symtab = function_symbols(obj, file, false, out);
    let dynsym = function_symbols(obj, file, true, out);
    if symtab > 0 {
        sources.push(SymbolSource::Symtab);
    }
    if dynsym > 0 {
        sources.push(SymbolSource::Dynsym);
    }
    let loads = obj
        .segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            LoadSegment {
                offset,
                vaddr: s.address(),
                filesz,
            }
        })
        .collect();
    Primary {
        build_id: obj.build_id().ok().flatten().map(<[u8]>::to_vec),
        debuglink: obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(n, crc)| (n.to_vec(), crc)),
        loads,
        is_dyn: obj.kind() == ObjectKind::Dynamic,
        symtab,
    }
}

/// Function symbols of `.symtab` (`.dynsym` when `dynamic`) into `out`: names left in `file`
/// when the object was parsed from one (and its sections allow it), copied otherwise.
fn function_symbols<'d, R: ReadRef<'d>>(
    obj: &object::File<'d, R>,
    file: Option<&Arc<File>>,
    dynamic: bool,
    out: &mut SymbolTableBuilder,
) -> usize {
    let (table, strings) = if dynamic {
        (".dynsym", ".dynstr")
    } else {
        (".symtab", ".strtab")
    };
    if let Some(n) = file.and_then(|f| push_symbols_lazy(obj, f, table, strings, out)) {
        return n;
    }
    if dynamic {
        push_symbols(obj.dynamic_symbols(), out)
    } else {
        push_symbols(obj.symbols(), out)
    }
}

fn crc32_of(path: &Path) -> Option<u32> {
    let mut f = File::open(path).ok()?;
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    Some(crc.sum())
}

/// Loads symbols of `path` (as the process sees it) inside `root`, looking for separate debug
/// files in `debug_dirs` (also inside `root`).
pub fn load_elf(root: &Path, path: &str, debug_dirs: &[PathBuf]) -> Result<ElfSymbols, ElfError> {
    let real = resolve_in_root(root, Path::new(path)).map_err(|source| ElfError::Io {
        path: path.into(),
        source,
    })?;
    load_elf_at(&real, root, path, debug_dirs)
}

/// Like [`load_elf`] but the object is read from `real` (for example
/// `/proc/PID/map_files/START-END` when the file was deleted); `root` and `path` still locate
/// the debug files.
pub fn load_elf_at(
    real: &Path,
    root: &Path,
    path: &str,
    debug_dirs: &[PathBuf],
) -> Result<ElfSymbols, ElfError> {
    let real = real.to_path_buf();
    let file = Arc::new(File::open(&real).map_err(|source| ElfError::Io {
        path: real.clone(),
        source,
    })?);
    let cache = ReadCache::new(&*file);
    let obj = object::File::parse(&cache).map_err(|source| ElfError::Parse {
        path: real.clone(),
        source,
    })?;
    let mut out = SymbolTableBuilder::default();
    let mut sources = Vec::new();
    let primary = read_primary(&obj, Some(&file), &mut out, &mut sources);
    let mut have_full = primary.symtab > 0;

    // Separate debug file by build ID.
    if !have_full {
        if let Some(id) = primary.build_id.as_deref().filter(|id| id.len() > 1) {
            let h = hex(id);
            for dir in debug_dirs {
                let candidate = dir
                    .join(".build-id")
                    .join(&h[..2])
                    .join(format!("{}.debug", &h[2..]));
                if let Some(found) = try_debug_file(root, &candidate, Some(id), None, &mut out) {
                    sources.push(SymbolSource::BuildIdDebugFile(found));
                    have_full = true;
                    break;
                }
            }
        }
    }
    // `.gnu_debuglink`: next to the binary, in `.debug/`, under each debug dir.
    if !have_full {
        if let Some((name, crc)) = &primary.debuglink {
            let name = String::from_utf8_lossy(name).into_owned();
            let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
            let mut candidates = vec![dir.join(&name), dir.join(".debug").join(&name)];
            for d in debug_dirs {
                candidates.push(d.join(dir.strip_prefix("/").unwrap_or(dir)).join(&name));
            }
            for candidate in candidates {
                if candidate == Path::new(path) {
                    continue;
                }
                if let Some(found) = try_debug_file(root, &candidate, None, Some(*crc), &mut out) {
                    sources.push(SymbolSource::DebugLink(found));
                    have_full = true;
                    break;
                }
            }
        }
    }
    // MiniDebugInfo.
    if !have_full {
        if let Some(section) = obj.section_by_name(".gnu_debugdata") {
            if let Ok(compressed) = section.data() {
                let mut raw = LimitedVec::default();
                match lzma_rs::xz_decompress(&mut &compressed[..], &mut raw) {
                    Ok(()) => {
                        let image = object::File::parse(raw.0.as_slice()).ok();
                        if image.is_some_and(|o| function_symbols(&o, None, false, &mut out) > 0) {
                            sources.push(SymbolSource::MiniDebugInfo);
                            have_full = true;
                        }
                    }
                    Err(err) => tracing::debug!(path, %err, "bad .gnu_debugdata"),
                }
            }
        }
    }
    // Go function table (stripped Go binaries keep it).
    if !have_full {
        let text = obj.section_by_name(".text").map_or(0, |s| s.address());
        match go_functions(&obj, &file, text) {
            Some(Ok(funcs)) => {
                out.append(funcs);
                sources.push(SymbolSource::GoPclntab);
            }
            Some(Err(err)) => tracing::debug!(path, %err, "unreadable Go pclntab"),
            None => {}
        }
    }
    Ok(ElfSymbols {
        id: next_id(),
        build_id: primary.build_id,
        table: out.build(),
        loads: primary.loads,
        is_dyn: primary.is_dyn,
        sources,
    })
}

/// Go's function table, read from the file piecewise (see
/// [`gopclntab::read_functions_from_file`]): from its own section (`.gopclntab`, or
/// `.data.rel.ro.gopclntab` in PIE builds) or, when an external linker merged it into
/// `.data.rel.ro` (cgo + PIE), found there by its header, scanning the section in chunks.
/// Only Go binaries (with `.note.go.buildid` or `.go.buildinfo`) are searched. `None` when
/// there is no table.
fn go_functions<'d, R: ReadRef<'d>>(
    obj: &object::File<'d, R>,
    file: &Arc<File>,
    text: u64,
) -> Option<Result<SymbolTableBuilder, gopclntab::PclntabError>> {
    const CHUNK: usize = 1 << 20;
    let read = |off: u64, len: u64| {
        let mut b = SymbolTableBuilder::default();
        let src = b
            .add_file(Arc::clone(file))
            .expect("first file of a builder");
        gopclntab::read_functions_from_file(file, off, len, text, src, &mut b).map(|_| b)
    };
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(section) = obj.section_by_name(name) {
            let (off, len) = section.file_range()?;
            return Some(read(off, len));
        }
    }
    let is_go = obj.section_by_name(".note.go.buildid").is_some()
        || obj.section_by_name(".go.buildinfo").is_some();
    if !is_go {
        return None;
    }
    for name in [".data.rel.ro", ".rodata"] {
        let Some((off, len)) = obj.section_by_name(name).and_then(|s| s.file_range()) else {
            continue;
        };
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(CHUNK as u64) as usize;
            if file.read_exact_at(&mut buf[..n], off + pos).is_err() {
                break;
            }
            // Chunks start 8-aligned; a header needs 16 bytes: the last ones are looked at
            // again at the start of the next chunk.
            let step = if n < CHUNK { n } else { n - 16 };
            for at in (0..step).step_by(8) {
                let candidate = &buf[at..n];
                if gopclntab::version(candidate).is_ok() && matches!(candidate[6], 1 | 2 | 4) {
                    let start = pos + at as u64;
                    if let Ok(b) = read(off + start, len - start) {
                        if !b.is_empty() {
                            return Some(Ok(b));
                        }
                    }
                }
            }
            pos += step as u64;
        }
    }
    None
}

/// MiniDebugInfo holds only a symbol table: refuse to inflate more than this.
const MAX_MINIDEBUGINFO: usize = 256 << 20;

/// A `Vec` writer that fails past [`MAX_MINIDEBUGINFO`] bytes (decompression bombs).
#[derive(Default)]
struct LimitedVec(Vec<u8>);

impl std::io::Write for LimitedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_MINIDEBUGINFO {
            return Err(std::io::Error::other(
                ".gnu_debugdata inflates past 256 MiB",
            ));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the symtab of a candidate debug file (inside `root`) when it exists and matches the
/// expected build ID or CRC. Returns its path as seen in the root.
fn try_debug_file(
    root: &Path,
    candidate: &Path,
    build_id: Option<&[u8]>,
    crc: Option<u32>,
    out: &mut SymbolTableBuilder,
) -> Option<PathBuf> {
    let real = resolve_in_root(root, candidate).ok()?;
    if !real.is_file() {
        return None;
    }
    if let Some(crc) = crc {
        if crc32_of(&real) != Some(crc) {
            tracing::debug!(path = %candidate.display(), "debuglink CRC mismatch");
            return None;
        }
    }
    let file = Arc::new(File::open(&real).ok()?);
    let cache = ReadCache::new(&*file);
    let obj = object::File::parse(&cache).ok()?;
    let mut tmp = SymbolTableBuilder::default();
    let n = function_symbols(&obj, Some(&file), false, &mut tmp);
    let id = obj.build_id().ok().flatten();
    if n == 0 || (build_id.is_some() && id != build_id) {
        return None;
    }
    out.append(tmp);
    Some(candidate.to_path_buf())
}

/// Symbols of an in-memory ELF image (the vdso).
pub fn load_elf_bytes(data: &[u8]) -> Result<ElfSymbols, object::Error> {
    let obj = object::File::parse(data)?;
    let mut out = SymbolTableBuilder::default();
    let mut sources = Vec::new();
    let primary = read_primary(&obj, None, &mut out, &mut sources);
    Ok(ElfSymbols {
        id: next_id(),
        build_id: primary.build_id,
        table: out.build(),
        loads: primary.loads,
        is_dyn: primary.is_dyn,
        sources,
    })
}
