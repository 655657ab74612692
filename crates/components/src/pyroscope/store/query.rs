//! The read side of `pyroscope.store` ([`Reader`]): series and their labels, profile types,
//! the merge of a set of series over a time range into one [`Tree`], and totals per time step.
//!
//! A merge reads the samples blobs of the range (an index on `(series, time_ms)` finds them),
//! adds each into a dense array per chunk indexed by chunk-local stack ID, and only then walks
//! the chunk dictionaries to turn the stacks that have a value into tree nodes: the cost is one
//! pass over the stored samples plus one step per distinct stack. Decoded chunk dictionaries
//! and frame names are cached between queries (both only ever grow while they exist).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::codec::{decode_nodes, decode_samples};
use super::db::{open_connection, StoreError, DB_FILE};
use super::selector::{matches_any, Selector};
use super::tree::Tree;

/// Longest time range a query may cover.
pub const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// Most points one timeline series may have (range / step).
pub const MAX_POINTS: i64 = 11_000;
/// Most stored samples (stack, value pairs) one merge may read: about two 24-hour series of
/// 5,000 distinct stacks per 15-second interval.
pub const MAX_MERGE_SAMPLES: i64 = 60_000_000;
/// Chunk dictionaries kept decoded between queries.
const CACHED_CHUNKS: usize = 64;

/// A profile type, `name:sample_type:sample_unit:period_type:period_unit` (for example
/// `process_cpu:cpu:nanoseconds:cpu:nanoseconds`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileType {
    pub id: String,
    pub name: String,
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
}

impl ProfileType {
    /// Parses an ID of five `:`-separated parts.
    pub fn parse(id: &str) -> Result<ProfileType, StoreError> {
        let parts: Vec<&str> = id.split(':').collect();
        if parts.len() != 5 || parts[0].is_empty() {
            return Err(StoreError::Query(format!(
                "invalid profile type {id:?}: want name:sample_type:sample_unit:period_type:period_unit"
            )));
        }
        Ok(ProfileType {
            id: id.to_string(),
            name: parts[0].into(),
            sample_type: parts[1].into(),
            sample_unit: parts[2].into(),
            period_type: parts[3].into(),
            period_unit: parts[4].into(),
        })
    }
}

/// One stored series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub id: i64,
    pub profile_type: ProfileType,
    /// The labels as stored (with `__name__`).
    pub labels: BTreeMap<String, String>,
    /// Times of its oldest and newest profile (ms since the epoch).
    pub first_ms: i64,
    pub last_ms: i64,
    /// The sampling period of its latest profile (0 when unknown).
    pub period: i64,
}

impl SeriesInfo {
    /// The labels queries see: the stored ones plus Pyroscope's `__profile_type__`,
    /// `__type__`, `__unit__`, `__period_type__` and `__period_unit__`.
    pub fn view(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        let t = &self.profile_type;
        l.insert("__profile_type__".into(), t.id.clone());
        l.insert("__name__".into(), t.name.clone());
        l.insert("__type__".into(), t.sample_type.clone());
        l.insert("__unit__".into(), t.sample_unit.clone());
        l.insert("__period_type__".into(), t.period_type.clone());
        l.insert("__period_unit__".into(), t.period_unit.clone());
        l
    }

    fn overlaps(&self, range: Option<TimeRange>) -> bool {
        range.is_none_or(|r| self.first_ms < r.end_ms && self.last_ms >= r.start_ms)
    }
}

/// A half-open time range `[start_ms, end_ms)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    /// A range for a query: `start < end` and at most [`MAX_RANGE`] long.
    pub fn new(start_ms: i64, end_ms: i64) -> Result<TimeRange, StoreError> {
        if start_ms >= end_ms {
            return Err(StoreError::Query(format!(
                "start ({start_ms}) must be before end ({end_ms}) (milliseconds since the epoch)"
            )));
        }
        let max = MAX_RANGE.as_millis() as i64;
        if end_ms - start_ms > max {
            return Err(StoreError::Query(format!(
                "the time range is {} hours long; at most {} hours can be queried at once",
                (end_ms - start_ms) / 3_600_000,
                max / 3_600_000
            )));
        }
        Ok(TimeRange { start_ms, end_ms })
    }

    /// For the label and type calls: `0, 0` means all time; otherwise as [`TimeRange::new`]
    /// without the length limit (listing labels costs the same for any range).
    pub fn optional(start_ms: i64, end_ms: i64) -> Result<Option<TimeRange>, StoreError> {
        if start_ms == 0 && end_ms == 0 {
            return Ok(None);
        }
        if start_ms >= end_ms {
            return Err(StoreError::Query(format!(
                "start ({start_ms}) must be before end ({end_ms}) (milliseconds since the epoch)"
            )));
        }
        Ok(Some(TimeRange { start_ms, end_ms }))
    }
}

/// How a timeline combines the profiles falling into one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    #[default]
    Sum,
    Average,
}

/// One timeline: the labels it is grouped by and its `(step start ms, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// Store-wide figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub series: u64,
    pub profiles: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

/// A read connection with its caches.
pub struct Reader {
    conn: Connection,
    frames: HashMap<u32, Arc<str>>,
    max_frame: u32,
    chunks: HashMap<i64, Vec<(u32, u32)>>,
}

impl Reader {
    /// Opens the database `dir/profiles.db` (it must exist: the writer creates it).
    pub fn open(dir: &Path) -> Result<Reader, StoreError> {
        let file = dir.join(DB_FILE);
        if !file.exists() {
            return Err(StoreError::Query(format!(
                "{} does not exist",
                file.display()
            )));
        }
        let conn = open_connection(&file)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA mmap_size = 268435456;")?;
        Ok(Reader {
            conn,
            frames: HashMap::new(),
            max_frame: 0,
            chunks: HashMap::new(),
        })
    }

    /// Every series.
    pub fn series(&mut self) -> Result<Vec<SeriesInfo>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, profile_type, labels, first_ms, last_ms, period FROM series ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, t, labels, first_ms, last_ms, period) = row?;
            let Ok(profile_type) = ProfileType::parse(&t) else {
                continue;
            };
            let labels = serde_json::from_str(&labels).unwrap_or_default();
            out.push(SeriesInfo {
                id,
                profile_type,
                labels,
                first_ms,
                last_ms,
                period,
            });
        }
        Ok(out)
    }

    /// The series of `profile_type` (any when `None`) passing any of `selectors` with data in
    /// `range`.
    pub fn select(
        &mut self,
        profile_type: Option<&str>,
        selectors: &[Selector],
        range: Option<TimeRange>,
    ) -> Result<Vec<SeriesInfo>, StoreError> {
        Ok(self
            .series()?
            .into_iter()
            .filter(|s| profile_type.is_none_or(|t| s.profile_type.id == t))
            .filter(|s| s.overlaps(range))
            .filter(|s| matches_any(selectors, &s.view()))
            .collect())
    }

    /// The profile types with data in `range`, sorted.
    pub fn profile_types(
        &mut self,
        range: Option<TimeRange>,
    ) -> Result<Vec<ProfileType>, StoreError> {
        let set: BTreeSet<ProfileType> = self
            .select(None, &[], range)?
            .into_iter()
            .map(|s| s.profile_type)
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Label names of the series passing `selectors` in `range`, sorted.
    pub fn label_names(
        &mut self,
        selectors: &[Selector],
        range: Option<TimeRange>,
    ) -> Result<Vec<String>, StoreError> {
        let set: BTreeSet<String> = self
            .select(None, selectors, range)?
            .iter()
            .flat_map(|s| s.view().into_keys())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Values of label `name` among the series passing `selectors` in `range`, sorted.
    pub fn label_values(
        &mut self,
        name: &str,
        selectors: &[Selector],
        range: Option<TimeRange>,
    ) -> Result<Vec<String>, StoreError> {
        let set: BTreeSet<String> = self
            .select(None, selectors, range)?
            .iter()
            .filter_map(|s| s.view().remove(name))
            .filter(|v| !v.is_empty())
            .collect();
        Ok(set.into_iter().collect())
    }

    /// Profiles and stored samples of `series` in `range`.
    pub fn count(
        &mut self,
        series: &[SeriesInfo],
        range: TimeRange,
    ) -> Result<(i64, i64), StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT count(*), coalesce(sum(samples), 0) FROM profiles
             WHERE series = ?1 AND time_ms >= ?2 AND time_ms < ?3",
        )?;
        let (mut n, mut samples) = (0i64, 0i64);
        for s in series {
            let (a, b): (i64, i64) = st
                .query_row(params![s.id, range.start_ms, range.end_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            n += a;
            samples += b;
        }
        Ok((n, samples))
    }

    /// Merges the profiles of `series` in `range` into one tree (totals computed). Refuses
    /// merges reading more than [`MAX_MERGE_SAMPLES`] stored samples.
    pub fn merge(&mut self, series: &[SeriesInfo], range: TimeRange) -> Result<Tree, StoreError> {
        let (_, samples) = self.count(series, range)?;
        if samples > MAX_MERGE_SAMPLES {
            return Err(StoreError::Query(format!(
                "the query would merge {samples} stored samples, more than the limit of \
                 {MAX_MERGE_SAMPLES}: narrow the time range or the label selector"
            )));
        }
        let mut acc: HashMap<i64, Vec<i64>> = HashMap::new();
        {
            let mut st = self.conn.prepare_cached(
                "SELECT chunk, data FROM profiles
                 WHERE series = ?1 AND time_ms >= ?2 AND time_ms < ?3",
            )?;
            for s in series {
                let mut rows = st.query(params![s.id, range.start_ms, range.end_ms])?;
                while let Some(row) = rows.next()? {
                    let chunk: i64 = row.get(0)?;
                    let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                    let vals = acc.entry(chunk).or_default();
                    decode_samples(blob, |id, v| {
                        let i = id as usize;
                        if i >= vals.len() {
                            vals.resize(i + 1, 0);
                        }
                        vals[i] += v;
                    })?;
                }
            }
        }
        self.refresh_frames()?;
        if self.chunks.len() > CACHED_CHUNKS {
            self.chunks.retain(|id, _| acc.contains_key(id));
        }
        let mut tree = Tree::new();
        let mut names: super::codec::FastMap<u32, u32> = super::codec::FastMap::default();
        let mut chunk_ids: Vec<i64> = acc.keys().copied().collect();
        chunk_ids.sort_unstable();
        for chunk in chunk_ids {
            let vals = &acc[&chunk];
            self.load_chunk(chunk)?;
            let dict = &self.chunks[&chunk];
            let mut map = vec![u32::MAX; dict.len()];
            map[0] = 0;
            let mut path = Vec::new();
            for (id, &v) in vals.iter().enumerate() {
                if v == 0 {
                    continue;
                }
                if id >= dict.len() {
                    return Err(StoreError::Query(format!(
                        "database: chunk {chunk} lacks stack {id}"
                    )));
                }
                let mut j = id;
                while map[j] == u32::MAX {
                    path.push(j);
                    j = dict[j].0 as usize;
                }
                let mut node = map[j];
                while let Some(k) = path.pop() {
                    let frame = dict[k].1;
                    let name = match names.get(&frame) {
                        Some(&n) => n,
                        None => {
                            let s = self
                                .frames
                                .get(&frame)
                                .cloned()
                                .unwrap_or_else(|| Arc::from("[unknown]"));
                            let n = tree.name(&s);
                            names.insert(frame, n);
                            n
                        }
                    };
                    node = tree.child(node, name);
                    map[k] = node;
                }
                tree.nodes[node as usize].self_value += v;
            }
        }
        tree.compute_totals();
        Ok(tree)
    }

    /// Reads the frames added since the last call.
    fn refresh_frames(&mut self) -> Result<(), StoreError> {
        if self.frames.len() > 4_000_000 {
            self.frames.clear();
            self.max_frame = 0;
        }
        let mut st = self
            .conn
            .prepare_cached("SELECT id, name FROM frames WHERE id > ?1")?;
        let rows = st.query_map([self.max_frame], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, name) = row?;
            self.max_frame = self.max_frame.max(id);
            self.frames.insert(id, Arc::from(name));
        }
        Ok(())
    }

    /// Decodes the stack blocks of `chunk` not cached yet.
    fn load_chunk(&mut self, chunk: i64) -> Result<(), StoreError> {
        let nodes = self.chunks.entry(chunk).or_insert_with(|| vec![(0, 0)]);
        let mut st = self.conn.prepare_cached(
            "SELECT first_id, data FROM stack_blocks
             WHERE chunk = ?1 AND first_id >= ?2 ORDER BY first_id",
        )?;
        let mut rows = st.query(params![chunk, nodes.len() as i64])?;
        while let Some(row) = rows.next()? {
            let first: u32 = row.get(0)?;
            if first as usize != nodes.len() {
                return Err(StoreError::Query(format!(
                    "database: chunk {chunk} has a gap before stack {first}"
                )));
            }
            let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            decode_nodes(first, blob, nodes)?;
        }
        Ok(())
    }

    /// Each profile's `(time ms, total)` of `series` in `range`, by time.
    pub fn totals(
        &mut self,
        series: &[SeriesInfo],
        range: TimeRange,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut st = self.conn.prepare_cached(
            "SELECT time_ms, total FROM profiles
             WHERE series = ?1 AND time_ms >= ?2 AND time_ms < ?3",
        )?;
        for s in series {
            let rows = st.query_map(params![s.id, range.start_ms, range.end_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Totals per `step_ms` of `series` in `range`, one timeline per distinct value set of
    /// `group_by` (one in all when empty); only steps holding profiles get a point, stamped
    /// with the step's start.
    pub fn timeline(
        &mut self,
        series: &[SeriesInfo],
        range: TimeRange,
        step_ms: i64,
        group_by: &[String],
        aggregation: Aggregation,
    ) -> Result<Vec<Timeline>, StoreError> {
        check_step(range, step_ms)?;
        let mut groups: BTreeMap<BTreeMap<String, String>, Vec<SeriesInfo>> = BTreeMap::new();
        for s in series {
            let view = s.view();
            let key: BTreeMap<String, String> = group_by
                .iter()
                .filter_map(|g| view.get(g).map(|v| (g.clone(), v.clone())))
                .collect();
            groups.entry(key).or_default().push(s.clone());
        }
        let mut out = Vec::new();
        for (labels, members) in groups {
            let mut buckets: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for (t, v) in self.totals(&members, range)? {
                let b = range.start_ms + (t - range.start_ms) / step_ms * step_ms;
                let e = buckets.entry(b).or_default();
                e.0 += v;
                e.1 += 1;
            }
            let points = buckets
                .into_iter()
                .map(|(t, (sum, n))| {
                    let v = match aggregation {
                        Aggregation::Sum => sum as f64,
                        Aggregation::Average => sum as f64 / n.max(1) as f64,
                    };
                    (t, v)
                })
                .collect();
            out.push(Timeline { labels, points });
        }
        Ok(out)
    }

    /// Store-wide figures.
    pub fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let series: i64 = self
            .conn
            .query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
        let (profiles, oldest, newest): (i64, Option<i64>, Option<i64>) = self.conn.query_row(
            "SELECT count(*), min(time_ms), max(time_ms) FROM profiles",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(StoreStats {
            series: series as u64,
            profiles: profiles as u64,
            oldest_ms: oldest,
            newest_ms: newest,
        })
    }
}

/// Checks a timeline step: positive and at most [`MAX_POINTS`] steps in `range`.
pub fn check_step(range: TimeRange, step_ms: i64) -> Result<(), StoreError> {
    if step_ms <= 0 {
        return Err(StoreError::Query(format!(
            "step must be positive, got {step_ms} ms"
        )));
    }
    let points = (range.end_ms - range.start_ms + step_ms - 1) / step_ms;
    if points > MAX_POINTS {
        return Err(StoreError::Query(format!(
            "the step gives {points} points; at most {MAX_POINTS} are allowed: use a larger step"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
