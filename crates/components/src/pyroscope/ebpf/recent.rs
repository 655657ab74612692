//! The recent profiles of `pyroscope.ebpf`, kept in memory for the UI: per target, the gzipped
//! pprof of each of the last [`INTERVALS`] collect intervals, at most [`MAX_BYTES`] of them in
//! all (the oldest profiles of any target go first; a target without profiles is dropped).
//! With the default 15 s interval that is the last 2.5 minutes. Served by the component's
//! `profile` resource (`/api/v0/web/components/{id}/profile`): the target list, one target's
//! last or aggregated profile as a call tree with a top-functions table (JSON), or as
//! `.pb.gz`. A target's CPU and off-CPU profiles are kept apart (their labels differ in
//! `__name__`, `process_cpu` or `offcpu`); the JSON says which (`sampleType`, `unit`), so the UI
//! shows off-CPU values as time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ebpf_probe::pprof::{decode, encode_gzip, Profile, ProfileBuilder};
use ebpf_probe::symbolize::{Frame, MappingInfo, SourcePos};
use flow_runtime::{Resource, ResourceError};
use serde_json::{json, Value as Json};

/// Intervals kept per target.
pub const INTERVALS: usize = 10;
/// Bytes of gzipped profiles kept in all, over every target.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Children of one node shown in the call tree (the rest are merged into `[other]`), so that
/// a whole-host profile stays a reasonable page.
const MAX_NODES: usize = 20_000;

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    time: SystemTime,
    raw: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
struct Ring {
    labels: BTreeMap<String, String>,
    entries: VecDeque<Entry>,
}

/// The bounded store.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    targets: BTreeMap<String, Ring>,
    bytes: usize,
    seq: u64,
}

/// The key of a target: its labels as `{a="b", c="d"}` (sorted).
pub fn target_key(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl Recent {
    /// Stores one interval's gzipped profile of the target with these labels.
    pub fn push(&mut self, labels: &BTreeMap<String, String>, raw: Vec<u8>) {
        self.seq += 1;
        let ring = self.targets.entry(target_key(labels)).or_default();
        ring.labels = labels.clone();
        self.bytes += raw.len();
        ring.entries.push_back(Entry {
            seq: self.seq,
            time: SystemTime::now(),
            raw: Arc::new(raw),
        });
        if ring.entries.len() > INTERVALS {
            if let Some(old) = ring.entries.pop_front() {
                self.bytes -= old.raw.len();
            }
        }
        while self.bytes > MAX_BYTES {
            // Drop the oldest entry of all.
            let Some(key) = self
                .targets
                .iter()
                .filter_map(|(k, r)| r.entries.front().map(|e| (e.seq, k)))
                .min()
                .map(|(_, k)| k.clone())
            else {
                break;
            };
            if let Some(ring) = self.targets.get_mut(&key) {
                if let Some(old) = ring.entries.pop_front() {
                    self.bytes -= old.raw.len();
                }
                if ring.entries.is_empty() {
                    self.targets.remove(&key);
                }
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Targets with profiles.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// No profile yet.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Answers the `profile` resource. Query: none (the target list), or `target` (a key from
    /// the list, or `0`.. as an index), `range` (`last`, default, or `all` for the aggregate
    /// of the kept intervals) and `format` (`json`, default, or `pprof`).
    pub fn resource(&self, query: &BTreeMap<String, String>) -> Result<Resource, ResourceError> {
        let Some(target) = query.get("target") else {
            return Ok(Resource::json(&self.list()));
        };
        let ring = self
            .targets
            .get(target)
            .or_else(|| {
                target
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.targets.values().nth(i))
            })
            .ok_or_else(|| ResourceError::NotFound(format!("no profile for target {target}")))?;
        let all = match query.get("range").map(String::as_str) {
            None | Some("last") => false,
            Some("all") => true,
            Some(r) => {
                return Err(ResourceError::BadRequest(format!(
                    "range must be last or all, got {r:?}"
                )))
            }
        };
        let entries: Vec<&Entry> = if all {
            ring.entries.iter().collect()
        } else {
            ring.entries.back().into_iter().collect()
        };
        let bad = |e: ebpf_probe::pprof::PprofError| ResourceError::NotFound(e.to_string());
        let profile = if entries.len() == 1 {
            decode(&entries[0].raw).map_err(bad)?
        } else {
            let profiles = entries
                .iter()
                .map(|e| decode(&e.raw))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            merge(&profiles)
        };
        match query.get("format").map(String::as_str) {
            None | Some("json") => Ok(Resource::json(&profile_json(&profile, ring, entries.len()))),
            Some("pprof") => {
                let raw = if entries.len() == 1 {
                    entries[0].raw.as_ref().clone()
                } else {
                    encode_gzip(&profile)
                };
                let service = ring
                    .labels
                    .get("service_name")
                    .map_or("profile", String::as_str);
                Ok(Resource {
                    content_type: "application/octet-stream".into(),
                    body: raw,
                    filename: Some(format!(
                        "{service}-{}.pb.gz",
                        if all { "recent" } else { "last" }
                    )),
                })
            }
            Some(f) => Err(ResourceError::BadRequest(format!(
                "format must be json or pprof, got {f:?}"
            ))),
        }
    }

    fn list(&self) -> Json {
        let targets: Vec<Json> = self
            .targets
            .iter()
            .map(|(key, ring)| {
                json!({
                    "key": key,
                    "labels": ring.labels,
                    "intervals": ring.entries.len(),
                    "lastTime": ring.entries.back().map(|e| secs(e.time)),
                    "bytes": ring.entries.iter().map(|e| e.raw.len()).sum::<usize>(),
                })
            })
            .collect();
        json!({
            "targets": targets,
            "intervalsKept": INTERVALS,
            "maxBytes": MAX_BYTES,
            "bytes": self.bytes,
        })
    }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Merges profiles of one target (same sample rate) into one, keeping mappings and addresses.
pub fn merge(profiles: &[Profile]) -> Profile {
    let Some(first) = profiles.first() else {
        return ProfileBuilder::new(1, 0, 0).build();
    };
    let start = profiles.iter().map(|p| p.time_nanos).min().unwrap_or(0);
    let end = profiles
        .iter()
        .map(|p| p.time_nanos + p.duration_nanos)
        .max()
        .unwrap_or(0);
    let mut b = ProfileBuilder::like(first, start, end - start);
    for p in profiles {
        let mappings: Vec<Arc<MappingInfo>> = p
            .mapping
            .iter()
            .map(|m| {
                Arc::new(MappingInfo {
                    start: m.memory_start,
                    limit: m.memory_limit,
                    offset: m.file_offset,
                    file: p.str(m.filename).to_string(),
                    build_id: (m.build_id != 0).then(|| p.str(m.build_id).to_string()),
                })
            })
            .collect();
        let frames: Vec<Frame> = p
            .location
            .iter()
            .map(|l| Frame {
                address: l.address,
                name: l.line.first().and_then(|ln| {
                    let f = p.function.get(ln.function_id.checked_sub(1)? as usize)?;
                    Some(p.str(f.name).to_string())
                }),
                mapping: l
                    .mapping_id
                    .checked_sub(1)
                    .and_then(|i| mappings.get(i as usize).cloned()),
                source: l.line.first().and_then(|ln| {
                    let f = p.function.get(ln.function_id.checked_sub(1)? as usize)?;
                    (f.filename != 0).then(|| SourcePos {
                        file: p.str(f.filename).to_string(),
                        line: ln.line,
                    })
                }),
            })
            .collect();
        let pp = p.period.max(1);
        for s in &p.sample {
            let stack: Vec<Frame> = s
                .location_id
                .iter()
                .filter_map(|&id| frames.get(id.checked_sub(1)? as usize).cloned())
                .collect();
            let count = (s.value.first().copied().unwrap_or(0) / pp).max(0) as u64;
            b.add_stack(&stack, count);
        }
    }
    b.build()
}

/// Per-function self and total sample counts, largest self first; and the sample total.
pub fn top_functions(profile: &Profile) -> (u64, Vec<(String, u64, u64)>) {
    let period = profile.period.max(1);
    let mut self_: HashMap<String, u64> = HashMap::new();
    let mut total: HashMap<String, u64> = HashMap::new();
    let mut all = 0u64;
    for s in &profile.sample {
        let n = (s.value.first().copied().unwrap_or(0) / period).max(0) as u64;
        all += n;
        let names = profile.stack_names(s);
        if let Some(leaf) = names.last() {
            *self_.entry(leaf.clone()).or_default() += n;
        }
        let unique: HashSet<&String> = names.iter().collect();
        for name in unique {
            *total.entry(name.clone()).or_default() += n;
        }
    }
    let mut rows: Vec<(String, u64, u64)> = total
        .into_iter()
        .map(|(name, t)| {
            let s = self_.get(&name).copied().unwrap_or(0);
            (name, s, t)
        })
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    (all, rows)
}

#[derive(Default)]
struct Node {
    total: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
    }

    /// `{"n": name, "v": samples, "c": [children, largest first]}`; stops adding children
    /// once `budget` nodes were written.
    fn to_json(&self, name: &str, budget: &mut usize) -> Json {
        let mut kids: Vec<(&String, &Node)> = self.children.iter().collect();
        kids.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
        let mut c = Vec::new();
        let mut other = 0u64;
        for (n, k) in kids {
            if *budget == 0 {
                other += k.total;
                continue;
            }
            *budget -= 1;
            c.push(k.to_json(n, budget));
        }
        if other > 0 {
            c.push(json!({"n": "[other]", "v": other, "c": []}));
        }
        json!({"n": name, "v": self.total, "c": c})
    }
}

/// The call tree (root `all`) and top functions of a profile.
pub fn profile_json_tree(profile: &Profile) -> (Json, Json, u64) {
    let period = profile.period.max(1);
    let mut root = Node::default();
    for s in &profile.sample {
        let n = (s.value.first().copied().unwrap_or(0) / period).max(0) as u64;
        root.total += n;
        let mut node = &mut root;
        for name in profile.stack_names(s) {
            node = node.children.entry(name).or_default();
            node.total += n;
        }
    }
    let mut budget = MAX_NODES.min(root.count());
    let tree = root.to_json("all", &mut budget);
    let (all, rows) = top_functions(profile);
    let top: Vec<Json> = rows
        .iter()
        .take(50)
        .map(|(n, s, t)| json!({"name": n, "self": s, "total": t}))
        .collect();
    (tree, Json::Array(top), all)
}

fn profile_json(profile: &Profile, ring: &Ring, intervals: usize) -> Json {
    let (tree, top, all) = profile_json_tree(profile);
    let (sample_type, unit) = profile
        .sample_type
        .first()
        .map_or(("", ""), |t| (profile.str(t.r#type), profile.str(t.unit)));
    json!({
        "labels": ring.labels,
        "sampleType": sample_type,
        "unit": unit,
        "intervals": intervals,
        "samples": all,
        "periodNanos": profile.period,
        "timeNanos": profile.time_nanos,
        "durationNanos": profile.duration_nanos,
        "tree": tree,
        "top": top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, addr: u64) -> Frame {
        Frame {
            address: addr,
            name: Some(name.into()),
            mapping: Some(Arc::new(MappingInfo {
                start: 0x1000,
                limit: 0x9000,
                offset: 0,
                file: "/bin/app".into(),
                build_id: Some("abcd".into()),
            })),
            source: None,
        }
    }

    fn profile(hot: u64, cold: u64) -> Vec<u8> {
        let mut b = ProfileBuilder::new(100, 1, 2);
        // Leaf first.
        let main = frame("main", 0x1100);
        b.add_stack(&[frame("hot_leaf", 0x1300), main.clone()], hot);
        b.add_stack(&[frame("cold_leaf", 0x1400), main], cold);
        encode_gzip(&b.build())
    }

    fn labels(s: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("service_name".to_string(), s.to_string())])
    }

    fn q(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn json_of(r: Resource) -> Json {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn keeps_the_last_intervals_and_aggregates_them() {
        let mut r = Recent::default();
        for i in 0..(INTERVALS as u64 + 5) {
            r.push(&labels("a"), profile(3 + i, 1));
        }
        let key = target_key(&labels("a"));
        assert_eq!(key, "{service_name=\"a\"}");
        let list = json_of(r.resource(&q(&[])).unwrap());
        assert_eq!(list["targets"][0]["key"], key);
        assert_eq!(list["targets"][0]["intervals"], INTERVALS);

        let last = json_of(r.resource(&q(&[("target", key.as_str())])).unwrap());
        let hot_last = 3 + INTERVALS as u64 + 4;
        assert_eq!(last["samples"], hot_last + 1);
        assert_eq!(last["tree"]["n"], "all");
        assert_eq!(last["tree"]["c"][0]["n"], "main");
        assert_eq!(last["tree"]["c"][0]["c"][0]["n"], "hot_leaf");
        assert_eq!(last["tree"]["c"][0]["c"][0]["v"], hot_last);
        assert_eq!(last["top"][0]["name"], "hot_leaf");
        assert_eq!(last["top"][0]["self"], hot_last);
        let main = last["top"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "main")
            .unwrap();
        assert_eq!(main["self"], 0);
        assert_eq!(main["total"], hot_last + 1);

        // The aggregate: the kept intervals only (5..15 → hot 8..=17).
        let agg = json_of(
            r.resource(&q(&[("target", "0"), ("range", "all")]))
                .unwrap(),
        );
        let hot: u64 = (5..15).map(|i| 3 + i).sum();
        assert_eq!(agg["intervals"], INTERVALS);
        assert_eq!(agg["samples"], hot + INTERVALS as u64);
        assert_eq!(agg["top"][0]["self"], hot);

        // pprof: the aggregate decodes, keeps mappings, and has the same totals.
        let pb = r
            .resource(&q(&[
                ("target", key.as_str()),
                ("range", "all"),
                ("format", "pprof"),
            ]))
            .unwrap();
        assert_eq!(pb.filename.as_deref(), Some("a-recent.pb.gz"));
        let p = decode(&pb.body).unwrap();
        assert_eq!(p.mapping.len(), 1);
        assert_eq!(p.str(p.mapping[0].build_id), "abcd");
        let (all, rows) = top_functions(&p);
        assert_eq!(all, hot + INTERVALS as u64);
        assert_eq!(rows[0].0, "hot_leaf");
        let last_pb = r
            .resource(&q(&[("target", key.as_str()), ("format", "pprof")]))
            .unwrap();
        assert_eq!(
            top_functions(&decode(&last_pb.body).unwrap()).0,
            hot_last + 1
        );
    }

    #[test]
    fn off_cpu_profiles_merge_as_off_cpu_time() {
        let mut r = Recent::default();
        let mut off = labels("a");
        off.insert("__name__".into(), "offcpu".into());
        for ns in [1_500_000_000u64, 500_000_000] {
            let mut b = ProfileBuilder::off_cpu(1, 2);
            b.add_stack(&[frame("nanosleep", 0x1500), frame("main", 0x1100)], ns);
            r.push(&off, encode_gzip(&b.build()));
        }
        r.push(&labels("a"), profile(3, 1));
        let list = json_of(r.resource(&q(&[])).unwrap());
        assert_eq!(
            list["targets"].as_array().unwrap().len(),
            2,
            "CPU and off-CPU apart"
        );
        let key = target_key(&off);
        let last = json_of(r.resource(&q(&[("target", key.as_str())])).unwrap());
        assert_eq!(last["sampleType"], "offcpu");
        assert_eq!(last["unit"], "nanoseconds");
        assert_eq!(last["samples"], 500_000_000u64);
        let all = json_of(
            r.resource(&q(&[("target", key.as_str()), ("range", "all")]))
                .unwrap(),
        );
        assert_eq!(all["sampleType"], "offcpu", "the aggregate stays off-CPU");
        assert_eq!(all["samples"], 2_000_000_000u64);
        assert_eq!(all["tree"]["c"][0]["c"][0]["n"], "nanosleep");
        let cpu = json_of(
            r.resource(&q(&[("target", target_key(&labels("a")).as_str())]))
                .unwrap(),
        );
        assert_eq!(cpu["sampleType"], "cpu");
        assert_eq!(cpu["samples"], 4);
    }

    #[test]
    fn bounded_in_bytes_and_errors() {
        let mut r = Recent::default();
        let big = vec![0u8; MAX_BYTES / 3];
        for t in ["a", "b", "c", "d"] {
            r.push(&labels(t), big.clone());
        }
        assert!(r.bytes() <= MAX_BYTES);
        assert_eq!(r.len(), 3, "the oldest target was dropped");
        assert!(r
            .resource(&q(&[("target", target_key(&labels("a")).as_str())]))
            .is_err());
        assert!(matches!(
            r.resource(&q(&[("target", "nope")])),
            Err(ResourceError::NotFound(_))
        ));
        let mut r = Recent::default();
        r.push(&labels("a"), profile(1, 1));
        assert!(matches!(
            r.resource(&q(&[("target", "0"), ("format", "svg")])),
            Err(ResourceError::BadRequest(_))
        ));
        assert!(matches!(
            r.resource(&q(&[("target", "0"), ("range", "week")])),
            Err(ResourceError::BadRequest(_))
        ));
    }
}
