//! The SQLite database of `pyroscope.store`: its schema and its write side ([`Writer`]).
//!
//! Tables: `series` (one per profile type and canonical label set), `frames` (function names,
//! global), `chunks` (a stack dictionary per hour), `stack_blocks` (a chunk's stack-tree nodes,
//! appended as compact blobs) and `profiles` (one row per series and interval: time, total,
//! sample count and the samples blob of [`super::codec`]). Every append batch is one
//! transaction: a profile row and the dictionary entries it refers to commit together, so a
//! crash loses at most the batch being written and never leaves a dangling reference.
//! Retention and size limits are enforced by [`Writer::enforce`] (see `retention.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ebpf_probe::pprof::{self, Profile};
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{encode_nodes, encode_samples, stack_key, CodecError, FastMap};
use crate::pyroscope::appendable::RawProfile;

/// The database file inside the component's directory.
pub const DB_FILE: &str = "profiles.db";
/// The schema this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;
/// How long one stack dictionary (chunk) is written to before a new one starts.
pub const CHUNK_SPAN: Duration = Duration::from_secs(3600);
/// Nodes one chunk may hold before a new one starts early (bounds the writer's memory).
const MAX_CHUNK_NODES: u32 = 1_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    profile_type TEXT NOT NULL,
    labels TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    period INTEGER NOT NULL DEFAULT 0,
    UNIQUE (profile_type, labels)
);
CREATE TABLE IF NOT EXISTS frames (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stack_blocks (
    chunk INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (chunk, first_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    total INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_by_series ON profiles (series, time_ms, total, samples);
CREATE INDEX IF NOT EXISTS profiles_by_time ON profiles (time_ms);
CREATE INDEX IF NOT EXISTS profiles_by_chunk ON profiles (chunk);
";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("database {path}: {cause}")]
    Open {
        path: String,
        cause: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database holds schema version {0}; this rill reads version {SCHEMA_VERSION}")]
    Schema(i64),
    #[error("database: {0}")]
    Codec(#[from] CodecError),
    /// A query the store refuses (answered with 400).
    #[error("{0}")]
    Query(String),
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens (creating when missing) the database at `file` with the settings of both sides:
/// WAL journal (readers never block the writer), `synchronous=FULL` (every commit is on disk
/// before the append batch is acknowledged, so neither `kill -9` nor a power cut loses a
/// committed interval), incremental auto-vacuum (freed pages can be given back to the file
/// system) and a bounded WAL file.
pub fn open_connection(file: &Path) -> Result<Connection, StoreError> {
    let path = file.display().to_string();
    let wrap = |cause| StoreError::Open {
        path: path.clone(),
        cause,
    };
    let conn = Connection::open(file).map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(wrap)?;
    // auto_vacuum only takes effect before the first table exists.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(wrap)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(wrap)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Query(format!(
            "database {path}: could not switch to WAL journal mode (got {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = 4194304;
         PRAGMA foreign_keys = OFF;",
    )
    .map_err(wrap)?;
    Ok(conn)
}

/// The write side: one connection, the dictionaries in memory and the current chunk.
pub struct Writer {
    pub(super) conn: Connection,
    file: PathBuf,
    frames: HashMap<Box<str>, u32>,
    next_frame: u32,
    series: HashMap<(String, String), i64>,
    chunk: Chunk,
}

/// The chunk being written: its stack tree (`(parent, frame)` → node) and the nodes not yet
/// stored.
struct Chunk {
    id: i64,
    started_ms: i64,
    nodes: FastMap<(u32, u32), u32>,
    /// Stack (hash of its frames, root first) → leaf node.
    leaves: FastMap<u128, u32>,
    next_id: u32,
    pending: Vec<(u32, u32)>,
    pending_first: u32,
}

/// One label set with its raw profiles, as appended.
pub type Batch = (BTreeMap<String, String>, Vec<RawProfile>);

/// What [`Writer::write`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteStats {
    /// Raw profiles decoded and stored.
    pub profiles: u64,
    /// Rows written (one per series and sample type).
    pub rows: u64,
    /// Raw profiles that did not decode (skipped), with the last error.
    pub bad_profiles: u64,
    pub last_bad: Option<String>,
    /// Bytes of samples blobs written.
    pub bytes: u64,
}

impl Writer {
    /// Opens or creates the database `dir/profiles.db` (creating `dir`), checks its schema
    /// version and starts a new chunk.
    pub fn open(dir: &Path) -> Result<Writer, StoreError> {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::Io {
            path: dir.display().to_string(),
            cause,
        })?;
        let file = dir.join(DB_FILE);
        let conn = open_connection(&file)?;
        let wrap = |cause| StoreError::Open {
            path: file.display().to_string(),
            cause,
        };
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(wrap)?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1), ('next_frame', 1)",
                    [SCHEMA_VERSION],
                )
                .map_err(wrap)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => return Err(StoreError::Schema(v)),
        }
        let mut w = Writer {
            conn,
            file,
            frames: HashMap::new(),
            next_frame: 1,
            series: HashMap::new(),
            chunk: Chunk {
                id: 0,
                started_ms: 0,
                nodes: FastMap::default(),
                leaves: FastMap::default(),
                next_id: 1,
                pending: Vec::new(),
                pending_first: 1,
            },
        };
        w.reload(unix_ms(SystemTime::now()))?;
        Ok(w)
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reloads the dictionaries from the database and starts a new chunk (at open, and after
    /// a failed transaction, whose in-memory additions were rolled back on disk).
    fn reload(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.next_frame = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_frame'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1);
        self.frames.clear();
        {
            let mut st = self.conn.prepare("SELECT id, name FROM frames")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (id, name) = row?;
                self.next_frame = self.next_frame.max(id + 1);
                self.frames.insert(name.into_boxed_str(), id);
            }
        }
        self.reload_series()?;
        self.new_chunk(now_ms)
    }

    pub(super) fn reload_series(&mut self) -> Result<(), StoreError> {
        self.series.clear();
        let mut st = self
            .conn
            .prepare("SELECT id, profile_type, labels FROM series")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (id, t, l) = row?;
            self.series.insert((t, l), id);
        }
        Ok(())
    }

    fn new_chunk(&mut self, now_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT INTO chunks (started_ms) VALUES (?1)", [now_ms])?;
        self.chunk = Chunk {
            id: self.conn.last_insert_rowid(),
            started_ms: now_ms,
            nodes: FastMap::default(),
            leaves: FastMap::default(),
            next_id: 1,
            pending: Vec::new(),
            pending_first: 1,
        };
        Ok(())
    }

    /// The chunk being written.
    pub fn current_chunk(&self) -> i64 {
        self.chunk.id
    }

    /// Stores a batch of appends in one transaction. Profiles that do not decode are skipped
    /// and counted; a database error rolls the whole batch back and is returned.
    pub fn write(&mut self, batch: &[Batch], now: SystemTime) -> Result<WriteStats, StoreError> {
        let now_ms = unix_ms(now);
        if now_ms - self.chunk.started_ms >= CHUNK_SPAN.as_millis() as i64
            || self.chunk.next_id >= MAX_CHUNK_NODES
        {
            self.new_chunk(now_ms)?;
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match self.write_in_tx(batch, now_ms) {
            Ok(stats) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(stats),
                Err(e) => {
                    self.rollback(now_ms);
                    Err(e.into())
                }
            },
            Err(e) => {
                self.rollback(now_ms);
                Err(e)
            }
        }
    }

    fn rollback(&mut self, now_ms: i64) {
        let _ = self.conn.execute_batch("ROLLBACK");
        if let Err(e) = self.reload(now_ms) {
            tracing::warn!(error = %e, "pyroscope.store: reloading after a failed write");
        }
    }

    fn write_in_tx(&mut self, batch: &[Batch], now_ms: i64) -> Result<WriteStats, StoreError> {
        let mut stats = WriteStats::default();
        for (labels, profiles) in batch {
            for raw in profiles {
                let profile = match pprof::decode(&raw.raw) {
                    Ok(p) => p,
                    Err(e) => {
                        stats.bad_profiles += 1;
                        stats.last_bad = Some(e.to_string());
                        continue;
                    }
                };
                self.write_profile(labels, &profile, now_ms, &mut stats)?;
                stats.profiles += 1;
            }
        }
        if !self.chunk.pending.is_empty() {
            let data = encode_nodes(self.chunk.pending_first, &self.chunk.pending);
            self.conn.execute(
                "INSERT INTO stack_blocks (chunk, first_id, data) VALUES (?1, ?2, ?3)",
                params![self.chunk.id, self.chunk.pending_first, data],
            )?;
            self.chunk.pending.clear();
            self.chunk.pending_first = self.chunk.next_id;
        }
        self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_frame'",
            [self.next_frame],
        )?;
        Ok(stats)
    }

    fn frame(&mut self, name: &str) -> Result<u32, StoreError> {
        if let Some(&id) = self.frames.get(name) {
            return Ok(id);
        }
        let id = self.next_frame;
        self.conn
            .prepare_cached("INSERT INTO frames (id, name) VALUES (?1, ?2)")?
            .execute(params![id, name])?;
        self.next_frame += 1;
        self.frames.insert(name.into(), id);
        Ok(id)
    }

    fn child(&mut self, parent: u32, frame: u32) -> u32 {
        let c = &mut self.chunk;
        *c.nodes.entry((parent, frame)).or_insert_with(|| {
            let id = c.next_id;
            c.next_id += 1;
            c.pending.push((parent, frame));
            id
        })
    }

    fn series_id(
        &mut self,
        profile_type: &str,
        labels: &BTreeMap<String, String>,
        time_ms: i64,
        period: i64,
    ) -> Result<i64, StoreError> {
        let text = serde_json::to_string(labels).map_err(|e| StoreError::Query(e.to_string()))?;
        let key = (profile_type.to_string(), text);
        if let Some(&id) = self.series.get(&key) {
            self.conn
                .prepare_cached(
                    "UPDATE series SET first_ms = min(first_ms, ?2), last_ms = max(last_ms, ?2),
                     period = ?3 WHERE id = ?1",
                )?
                .execute(params![id, time_ms, period])?;
            return Ok(id);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO series (profile_type, labels, first_ms, last_ms, period)
                 VALUES (?1, ?2, ?3, ?3, ?4)",
            )?
            .execute(params![key.0, key.1, time_ms, period])?;
        let id = self.conn.last_insert_rowid();
        self.series.insert(key, id);
        Ok(id)
    }

    fn write_profile(
        &mut self,
        labels: &BTreeMap<String, String>,
        p: &Profile,
        now_ms: i64,
        stats: &mut WriteStats,
    ) -> Result<(), StoreError> {
        let time_ms = if p.time_nanos > 0 {
            p.time_nanos / 1_000_000
        } else {
            now_ms
        };
        let duration_ms = p.duration_nanos.max(0) / 1_000_000;
        // Each location's frames, root first (a location's lines are innermost first).
        let mut loc_frames: Vec<Vec<u32>> = Vec::with_capacity(p.location.len());
        for loc in &p.location {
            let mut f = Vec::with_capacity(loc.line.len().max(1));
            if loc.line.is_empty() {
                f.push(self.frame(&format!("0x{:x}", loc.address))?);
            }
            for line in loc.line.iter().rev() {
                let name = line
                    .function_id
                    .checked_sub(1)
                    .and_then(|i| p.function.get(i as usize))
                    .map_or("[unknown]", |func| p.str(func.name));
                f.push(self.frame(name)?);
            }
            loc_frames.push(f);
        }
        // Each sample's frames, root first, in one buffer.
        let mut flat: Vec<u32> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(p.sample.len());
        for s in &p.sample {
            let start = flat.len();
            for &lid in s.location_id.iter().rev() {
                if let Some(frames) = lid.checked_sub(1).and_then(|i| loc_frames.get(i as usize)) {
                    flat.extend_from_slice(frames);
                }
            }
            spans.push((start, flat.len()));
        }
        // A stack seen before in this chunk is one lookup of its frames' hash; a new one walks
        // the dictionary from the root.
        let mut leaf = vec![0u32; p.sample.len()];
        for (i, &(a, b)) in spans.iter().enumerate() {
            let frames = &flat[a..b];
            let key = stack_key(frames);
            leaf[i] = match self.chunk.leaves.get(&key) {
                Some(&node) => node,
                None => {
                    let mut node = 0u32;
                    for &f in frames {
                        node = self.child(node, f);
                    }
                    self.chunk.leaves.insert(key, node);
                    node
                }
            };
        }
        // Each sample's leaf node and its string labels (as string-table indexes).
        let mut leaves = Vec::with_capacity(p.sample.len());
        for (s, &node) in p.sample.iter().zip(&leaf) {
            let mut key: Vec<(i64, i64)> = s
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| (l.key, l.str))
                .collect();
            key.sort_unstable();
            leaves.push((node, key));
        }
        let name = labels.get("__name__").map_or("unknown", String::as_str);
        let (period_type, period_unit) = p
            .period_type
            .as_ref()
            .map_or(("", ""), |t| (p.str(t.r#type), p.str(t.unit)));
        for (t, st) in p.sample_type.iter().enumerate() {
            let profile_type = format!(
                "{name}:{}:{}:{period_type}:{period_unit}",
                p.str(st.r#type),
                p.str(st.unit)
            );
            let mut groups: HashMap<&[(i64, i64)], HashMap<u32, i64>> = HashMap::new();
            for (s, (leaf, key)) in p.sample.iter().zip(&leaves) {
                let v = s.value.get(t).copied().unwrap_or(0);
                if v != 0 {
                    *groups
                        .entry(key.as_slice())
                        .or_default()
                        .entry(*leaf)
                        .or_default() += v;
                }
            }
            for (key, acc) in groups {
                let mut series_labels = labels.clone();
                for &(k, v) in key {
                    series_labels
                        .entry(p.str(k).to_string())
                        .or_insert_with(|| p.str(v).to_string());
                }
                let series = self.series_id(&profile_type, &series_labels, time_ms, p.period)?;
                let mut samples: Vec<(u32, i64)> = acc.into_iter().collect();
                let total: i64 = samples.iter().map(|s| s.1).sum();
                let data = encode_samples(&mut samples);
                stats.bytes += data.len() as u64;
                stats.rows += 1;
                self.conn
                    .prepare_cached(
                        "INSERT INTO profiles
                         (series, time_ms, duration_ms, chunk, total, samples, data)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        series,
                        time_ms,
                        duration_ms,
                        self.chunk.id,
                        total,
                        samples.len() as i64,
                        data
                    ])?;
            }
        }
        Ok(())
    }

    /// Forgets the given frames (deleted by the retention pass).
    pub(super) fn forget_frames(&mut self, gone: &std::collections::HashSet<u32>) {
        self.frames.retain(|_, id| !gone.contains(id));
    }
}

#[cfg(test)]
mod tests;
