//! Retention and size limits of `pyroscope.store`, enforced by the writer between batches:
//! profiles older than `retention` go first, then the oldest ones until the pages in use fit
//! in 95% of `max_size`; chunks no profile refers to any more are dropped with their stack
//! blocks, frames no remaining chunk uses are dropped, series without profiles are dropped,
//! and the freed pages are handed back to the file system (`incremental_vacuum`, then a WAL
//! checkpoint that truncates the log), so the files shrink and not only stop growing.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rusqlite::params;

use super::codec::decode_nodes;
use super::db::{unix_ms, StoreError, Writer};

/// Profiles deleted per statement (keeps each write transaction short).
const DELETE_BATCH: i64 = 2000;
/// Share of `max_size` the pages in use are brought down to once the limit is passed.
const SIZE_TARGET_PERCENT: u64 = 95;

/// The limits to enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Profiles older than this are deleted.
    pub retention: Duration,
    /// Bytes the database file may use.
    pub max_size: u64,
}

/// What one [`Writer::enforce`] pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnforceStats {
    /// Profile rows deleted for being older than the retention.
    pub expired: u64,
    /// Profile rows deleted to fit `max_size`.
    pub evicted: u64,
    pub chunks_dropped: u64,
    pub frames_dropped: u64,
    pub series_dropped: u64,
    /// Bytes in use (pages holding data) after the pass.
    pub used_bytes: u64,
    /// Size of the database file after the pass.
    pub file_bytes: u64,
}

impl Writer {
    /// Bytes of pages holding data (the file size less its free pages).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Size of the database file plus its write-ahead log on disk.
    pub fn file_bytes(&self) -> u64 {
        let len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.file().as_os_str().to_owned();
        wal.push("-wal");
        len(self.file()) + len(std::path::Path::new(&wal))
    }

    /// Deletes what the limits exclude and gives freed space back (see the module docs).
    pub fn enforce(
        &mut self,
        limits: &Limits,
        now: SystemTime,
    ) -> Result<EnforceStats, StoreError> {
        let mut stats = EnforceStats::default();
        let retention_ms = i64::try_from(limits.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = unix_ms(now).saturating_sub(retention_ms);
        loop {
            let n = self.conn.execute(
                "DELETE FROM profiles WHERE id IN
                 (SELECT id FROM profiles WHERE time_ms < ?1 LIMIT ?2)",
                params![cutoff, DELETE_BATCH],
            )?;
            stats.expired += n as u64;
            if (n as i64) < DELETE_BATCH {
                break;
            }
        }
        let target = limits.max_size / 100 * SIZE_TARGET_PERCENT;
        if self.used_bytes()? > limits.max_size {
            while self.used_bytes()? > target {
                let n = self.conn.execute(
                    "DELETE FROM profiles WHERE id IN
                     (SELECT id FROM profiles ORDER BY time_ms LIMIT ?1)",
                    [DELETE_BATCH / 4],
                )?;
                stats.evicted += n as u64;
                if n == 0 {
                    break;
                }
                // Dictionaries of fully evicted chunks count too.
                self.drop_unused(&mut stats)?;
            }
        }
        if stats.expired + stats.evicted > 0 {
            self.drop_unused(&mut stats)?;
            self.conn.execute_batch(
                "UPDATE series SET first_ms =
                     (SELECT min(time_ms) FROM profiles WHERE profiles.series = series.id)
                 WHERE EXISTS (SELECT 1 FROM profiles WHERE profiles.series = series.id);",
            )?;
            let gone = self.conn.execute(
                "DELETE FROM series WHERE NOT EXISTS
                 (SELECT 1 FROM profiles WHERE profiles.series = series.id)",
                [],
            )?;
            stats.series_dropped = gone as u64;
            if gone > 0 {
                self.reload_series()?;
            }
        }
        self.vacuum()?;
        stats.used_bytes = self.used_bytes()?;
        stats.file_bytes = self.file_bytes();
        Ok(stats)
    }

    /// Gives free pages back to the file system and truncates the WAL.
    pub fn vacuum(&mut self) -> Result<(), StoreError> {
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        if free > 0 {
            // Each step of the statement frees pages: run it to the end.
            let mut st = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = st.query([])?;
            while rows.next()?.is_some() {}
        }
        // Busy (a long read) is not an error: the next pass checkpoints.
        let _busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(())
    }

    /// Drops chunks (but the current one) that no profile uses, with their stack blocks, and
    /// then the frames no remaining chunk uses.
    fn drop_unused(&mut self, stats: &mut EnforceStats) -> Result<(), StoreError> {
        let current = self.current_chunk();
        let unused: Vec<i64> = {
            let mut st = self.conn.prepare(
                "SELECT id FROM chunks WHERE id != ?1 AND NOT EXISTS
                 (SELECT 1 FROM profiles WHERE profiles.chunk = chunks.id)",
            )?;
            let rows = st.query_map([current], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if unused.is_empty() {
            return Ok(());
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let r = (|| -> Result<(), StoreError> {
            for id in &unused {
                self.conn
                    .execute("DELETE FROM stack_blocks WHERE chunk = ?1", [id])?;
                self.conn
                    .execute("DELETE FROM chunks WHERE id = ?1", [id])?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => self.conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        stats.chunks_dropped += unused.len() as u64;
        // Frames still used by some chunk (the current one's nodes are all stored: this runs
        // between batches).
        let mut used: HashSet<u32> = HashSet::new();
        {
            let mut st = self
                .conn
                .prepare("SELECT first_id, data FROM stack_blocks")?;
            let mut rows = st.query([])?;
            let mut nodes = Vec::new();
            while let Some(row) = rows.next()? {
                nodes.clear();
                let first: u32 = row.get(0)?;
                let data: Vec<u8> = row.get(1)?;
                decode_nodes(first, &data, &mut nodes)?;
                used.extend(nodes.iter().map(|n| n.1));
            }
        }
        let all: Vec<u32> = {
            let mut st = self.conn.prepare("SELECT id FROM frames")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let gone: HashSet<u32> = all.into_iter().filter(|id| !used.contains(id)).collect();
        if !gone.is_empty() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = (|| -> Result<(), StoreError> {
                let mut st = self.conn.prepare("DELETE FROM frames WHERE id = ?1")?;
                for id in &gone {
                    st.execute([id])?;
                }
                Ok(())
            })();
            match r {
                Ok(()) => self.conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            stats.frames_dropped += gone.len() as u64;
            self.forget_frames(&gone);
        }
        Ok(())
    }
}
