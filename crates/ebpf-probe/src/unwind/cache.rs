//! Unwind tables shared by every process that maps the same file: keyed by the file's identity
//! (its build ID, else device + inode + size + mtime), held as `Arc<UnwindTable>`, bounded by
//! the bytes of their rows with an LRU over files. A file whose identity changes (rebuilt,
//! replaced) gets a new table; the old one ages out.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use lru::LruCache;
use object::Object;

use super::cfi::DebugSearch;
use super::table::{build_from_data_at, UnwindTable};
use super::UnwindError;

/// The `stat` fields that tell one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStat {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` in nanoseconds.
    pub mtime_ns: i128,
}

impl FileStat {
    /// `stat(path)` (following symlinks).
    pub fn of(path: &Path) -> Result<Self, UnwindError> {
        let meta = std::fs::metadata(path).map_err(|source| UnwindError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// What a table is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileIdentity {
    /// The ELF `NT_GNU_BUILD_ID`: equal in every copy of the file (containers, hard links).
    BuildId(Vec<u8>),
    /// No build ID: this version of this file.
    Stat(FileStat),
}

/// Counters of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Tables built.
    pub builds: u64,
    /// Tables evicted to stay within the limit.
    pub evictions: u64,
    /// Tables larger than the whole limit: returned, not kept.
    pub oversize: u64,
    /// Bytes of rows held now.
    pub bytes: usize,
    /// Tables held now.
    pub tables: usize,
}

/// The cache. Not internally locked: the owner wraps it in a mutex if threads share it.
#[derive(Debug)]
pub struct UnwindCache {
    limit_bytes: usize,
    tables: LruCache<FileIdentity, Arc<UnwindTable>>,
    by_stat: HashMap<FileStat, FileIdentity>,
    search: DebugSearch,
    stats: CacheStats,
}

impl UnwindCache {
    /// A cache holding at most `limit_bytes` of rows (`UNW_ROW_SIZE` each), with the default
    /// debug-file search.
    pub fn new(limit_bytes: usize) -> Self {
        Self::with_search(limit_bytes, DebugSearch::default())
    }

    /// [`UnwindCache::new`] with the debug-file search roots given.
    pub fn with_search(limit_bytes: usize, search: DebugSearch) -> Self {
        UnwindCache {
            limit_bytes,
            tables: LruCache::unbounded(),
            by_stat: HashMap::new(),
            search,
            stats: CacheStats::default(),
        }
    }

    /// The table of the file at `path` (for a process: `/proc/PID/root` + the mapped path, or
    /// `/proc/PID/map_files/...`): from the cache when this version of the file (or another file
    /// with its build ID) was seen, else built and kept.
    pub fn get_or_build(&mut self, path: &Path) -> Result<Arc<UnwindTable>, UnwindError> {
        let stat = FileStat::of(path)?;
        if let Some(id) = self.by_stat.get(&stat).cloned() {
            if let Some(table) = self.tables.get(&id) {
                self.stats.hits += 1;
                return Ok(Arc::clone(table));
            }
        }
        // Large files are read sparsely: the build ID note and the CFI, not the code.
        let data = super::sparse::read_for_unwind(path)?;
        let build_id = object::File::parse(&*data)
            .ok()
            .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec));
        let id = build_id.map_or(FileIdentity::Stat(stat), FileIdentity::BuildId);
        self.by_stat.insert(stat, id.clone());
        let search = self.search.clone();
        self.get_or_insert_with(id, || {
            let started = std::time::Instant::now();
            let table = build_from_data_at(&data, path, &search);
            if let Ok(t) = &table {
                tracing::debug!(path = %path.display(), rows = t.rows.len(), elapsed_us = started.elapsed().as_micros() as u64, "unwind table built");
            }
            table
        })
    }

    /// The table cached under `id`, or the one `build` makes (kept if it fits the limit).
    pub fn get_or_insert_with(
        &mut self,
        id: FileIdentity,
        build: impl FnOnce() -> Result<UnwindTable, UnwindError>,
    ) -> Result<Arc<UnwindTable>, UnwindError> {
        if let Some(table) = self.tables.get(&id) {
            self.stats.hits += 1;
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(build()?);
        self.stats.builds += 1;
        let size = table.size_bytes();
        if size > self.limit_bytes {
            self.stats.oversize += 1;
            return Ok(table);
        }
        while self.stats.bytes + size > self.limit_bytes {
            let Some((old_id, old)) = self.tables.pop_lru() else {
                break;
            };
            self.stats.bytes -= old.size_bytes();
            self.stats.evictions += 1;
            self.by_stat.retain(|_, v| *v != old_id);
        }
        self.stats.bytes += size;
        self.tables.put(id, Arc::clone(&table));
        self.stats.tables = self.tables.len();
        Ok(table)
    }

    /// Whether a table is held for `id` (does not touch the LRU order).
    pub fn contains(&self, id: &FileIdentity) -> bool {
        self.tables.contains(id)
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            tables: self.tables.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::abi::{UnwindRow, UNW_CFA_RSP};

    fn table_of(rows: usize) -> UnwindTable {
        UnwindTable {
            rows: (0..rows)
                .map(|i| UnwindRow {
                    pc: i as u32,
                    kind: UNW_CFA_RSP,
                    rbp_offset: 0,
                    cfa_offset: i as i16,
                })
                .collect(),
            ..UnwindTable::default()
        }
    }

    fn id(n: u8) -> FileIdentity {
        FileIdentity::BuildId(vec![n; 20])
    }

    #[test]
    fn lru_eviction_by_bytes() {
        // Room for 30 rows (240 bytes).
        let mut cache = UnwindCache::with_search(240, DebugSearch::none());
        let a = cache
            .get_or_insert_with(id(1), || Ok(table_of(10)))
            .unwrap();
        cache
            .get_or_insert_with(id(2), || Ok(table_of(10)))
            .unwrap();
        cache
            .get_or_insert_with(id(3), || Ok(table_of(10)))
            .unwrap();
        assert_eq!(cache.stats().bytes, 240);
        // Touch 1: 2 is now the least recently used.
        let again = cache
            .get_or_insert_with(id(1), || panic!("cached"))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        cache
            .get_or_insert_with(id(4), || Ok(table_of(15)))
            .unwrap();
        assert!(cache.contains(&id(1)));
        assert!(!cache.contains(&id(2)));
        assert!(!cache.contains(&id(3)));
        assert!(cache.contains(&id(4)));
        let s = cache.stats();
        assert_eq!(
            (s.bytes, s.evictions, s.tables, s.builds, s.hits),
            (200, 2, 2, 4, 1)
        );
        // Larger than the limit: built, handed out, not kept; nothing evicted for it.
        let big = cache
            .get_or_insert_with(id(5), || Ok(table_of(31)))
            .unwrap();
        assert_eq!(big.rows.len(), 31);
        assert!(!cache.contains(&id(5)));
        assert_eq!(cache.stats().oversize, 1);
        assert_eq!(cache.stats().tables, 2);
        // An evicted table that a process still holds stays valid.
        assert_eq!(a.rows.len(), 10);
    }

    #[test]
    fn build_errors_are_not_cached() {
        let mut cache = UnwindCache::with_search(1000, DebugSearch::none());
        let err = cache.get_or_insert_with(id(1), || Err(UnwindError::NotX86_64));
        assert!(err.is_err());
        assert!(!cache.contains(&id(1)));
        assert!(cache.get_or_insert_with(id(1), || Ok(table_of(1))).is_ok());
    }
}
