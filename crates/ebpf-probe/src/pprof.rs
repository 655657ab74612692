//! pprof profiles for the eBPF CPU profiler.
//!
//! The prost messages below are written by hand from the public `profile.proto` field numbers.
//! [`ProfileBuilder`] turns symbolized stacks of one target over one collect interval into a
//! profile with sample/period type `cpu`/`nanoseconds`, period `1e9 / sample_rate`, values
//! `count × period`, real mappings (start, limit, offset, file, build ID), locations with
//! addresses and functions with names; [`encode_gzip`]/[`decode`] convert to and from the wire
//! format, and [`folded`] renders `a;b;c count` lines (root first). [`ProfileBuilder::off_cpu`]
//! builds the off-CPU profile instead: sample type `offcpu`/`nanoseconds`, period 1, no period
//! type, values in nanoseconds (as Alloy's `pyroscope.ebpf` writes it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

use prost::Message;

use crate::symbolize::{Frame, MappingInfo};

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// `ValueType`: indexes into the string table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`: location IDs leaf first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// `Mapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// `Line`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Errors decoding a profile.
#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    /// gzip stream broken.
    #[error("pprof: gzip: {0}")]
    Gzip(#[from] std::io::Error),
    /// protobuf broken.
    #[error("pprof: protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An index or ID points nowhere.
    #[error("pprof: {0}")]
    Invalid(String),
}

#[derive(Hash, PartialEq, Eq)]
struct LocationKey {
    mapping_id: u64,
    address: u64,
    function_id: u64,
    line: i64,
}

#[derive(Hash, PartialEq, Eq)]
struct MappingKey {
    start: u64,
    limit: u64,
    offset: u64,
    file: String,
}

/// A stack (location IDs) with its sample labels (key and value string indexes).
type LabeledStack = (Vec<u64>, Vec<(i64, i64)>);

/// Builds one CPU profile (one target, one collect interval).
#[derive(Debug)]
pub struct ProfileBuilder {
    profile: Profile,
    strings: HashMap<String, i64>,
    /// (name, file) → function id; native functions have no file.
    functions: HashMap<(String, String), u64>,
    mappings: HashMap<MappingKey, u64>,
    locations: HashMap<LocationKey, u64>,
    samples: HashMap<Vec<u64>, usize>,
    /// Samples with labels, by stack and (key, value) string indexes.
    labeled: HashMap<LabeledStack, usize>,
    name_unknown: bool,
}

impl std::fmt::Debug for LocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}@{}", self.address, self.mapping_id)
    }
}

impl std::fmt::Debug for MappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{:x}", self.file, self.start)
    }
}

/// The sample type of off-CPU profiles (their unit is `nanoseconds`).
pub const OFF_CPU_SAMPLE_TYPE: &str = "offcpu";

/// Whether a profile is an off-CPU profile (its first sample type is [`OFF_CPU_SAMPLE_TYPE`]).
pub fn is_off_cpu(profile: &Profile) -> bool {
    profile
        .sample_type
        .first()
        .is_some_and(|t| profile.str(t.r#type) == OFF_CPU_SAMPLE_TYPE)
}

impl ProfileBuilder {
    /// An off-CPU profile starting at `time_nanos` (Unix ns) lasting `duration_nanos`: the
    /// `count` of [`ProfileBuilder::add_stack`] is nanoseconds off CPU (period 1).
    pub fn off_cpu(time_nanos: i64, duration_nanos: i64) -> Self {
        let mut b = Self::empty(time_nanos, duration_nanos);
        let offcpu = b.string(OFF_CPU_SAMPLE_TYPE);
        let ns = b.string("nanoseconds");
        b.profile.sample_type.push(ValueType {
            r#type: offcpu,
            unit: ns,
        });
        b.profile.period = 1;
        b
    }

    /// A builder of the same kind as `profile` (CPU at its rate, or off-CPU), for merging.
    pub fn like(profile: &Profile, time_nanos: i64, duration_nanos: i64) -> Self {
        if is_off_cpu(profile) {
            return Self::off_cpu(time_nanos, duration_nanos);
        }
        let rate = (1_000_000_000 / profile.period.max(1)).clamp(1, i64::from(u32::MAX)) as u32;
        Self::new(rate, time_nanos, duration_nanos)
    }

    /// A profile sampled at `sample_rate` Hz starting at `time_nanos` (Unix ns) lasting
    /// `duration_nanos`.
    pub fn new(sample_rate: u32, time_nanos: i64, duration_nanos: i64) -> Self {
        let mut b = Self::empty(time_nanos, duration_nanos);
        let cpu = b.string("cpu");
        let ns = b.string("nanoseconds");
        b.profile.sample_type.push(ValueType {
            r#type: cpu,
            unit: ns,
        });
        b.profile.period_type = Some(ValueType {
            r#type: cpu,
            unit: ns,
        });
        b.profile.period = 1_000_000_000 / i64::from(sample_rate.max(1));
        b
    }

    fn empty(time_nanos: i64, duration_nanos: i64) -> Self {
        let mut b = Self {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            samples: HashMap::new(),
            labeled: HashMap::new(),
            name_unknown: true,
        };
        b.string(""); // index 0 must be ""
        b.profile.time_nanos = time_nanos;
        b.profile.duration_nanos = duration_nanos;
        b
    }

    /// Whether frames without a function name get a function named `module+0xoffset` /
    /// `[unknown]` (default true). With false they keep only address + mapping, for
    /// server-side symbolization.
    pub fn name_unknown_frames(mut self, yes: bool) -> Self {
        self.name_unknown = yes;
        self
    }

    /// The period in nanoseconds.
    pub fn period(&self) -> i64 {
        self.profile.period
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let n = self.string(name);
        let filename = if file.is_empty() {
            0
        } else {
            self.string(file)
        };
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: n,
            system_name: n,
            filename,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    fn mapping(&mut self, m: &Arc<MappingInfo>, named: bool) -> u64 {
        let key = MappingKey {
            start: m.start,
            limit: m.limit,
            offset: m.offset,
            file: m.file.clone(),
        };
        if let Some(&id) = self.mappings.get(&key) {
            if named {
                self.profile.mapping[id as usize - 1].has_functions = true;
            }
            return id;
        }
        let filename = self.string(&m.file);
        let build_id = match &m.build_id {
            Some(b) => self.string(b),
            None => 0,
        };
        let id = self.profile.mapping.len() as u64 + 1;
        self.profile.mapping.push(Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename,
            build_id,
            has_functions: named,
            ..Default::default()
        });
        self.mappings.insert(key, id);
        id
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        let mapping_id = match &frame.mapping {
            Some(m) => self.mapping(m, frame.name.is_some()),
            None => 0,
        };
        let file = frame.source.as_ref().map_or("", |s| s.file.as_str());
        let line_number = frame.source.as_ref().map_or(0, |s| s.line);
        let function_id = match (&frame.name, self.name_unknown) {
            (Some(name), _) => self.function(name, file),
            (None, true) => self.function(&frame.display_name(), ""),
            (None, false) => 0,
        };
        let key = LocationKey {
            mapping_id,
            address: frame.address,
            function_id,
            line: line_number,
        };
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.profile.location.len() as u64 + 1;
        let line = if function_id == 0 {
            Vec::new()
        } else {
            vec![Line {
                function_id,
                line: line_number,
            }]
        };
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: frame.address,
            line,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Adds `count` samples of a stack given leaf first (kernel frames, then user frames).
    /// A stack with no frame at all (both stacks lost) is kept as one `[unknown]` frame, so
    /// that its samples still count in every consumer.
    pub fn add_stack(&mut self, frames: &[Frame], count: u64) {
        if count == 0 {
            return;
        }
        let ids = self.stack_ids(frames);
        let value = (count as i64).saturating_mul(self.profile.period);
        match self.samples.get(&ids) {
            Some(&i) => self.profile.sample[i].value[0] += value,
            None => {
                self.samples.insert(ids.clone(), self.profile.sample.len());
                self.profile.sample.push(Sample {
                    location_id: ids,
                    value: vec![value],
                    label: Vec::new(),
                });
            }
        }
    }

    /// [`Self::add_stack`] with pprof sample labels (string values, for example `comm` or
    /// `pid`): samples of one stack with different labels stay apart.
    pub fn add_stack_labeled(&mut self, frames: &[Frame], count: u64, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return self.add_stack(frames, count);
        }
        if count == 0 {
            return;
        }
        let ids = self.stack_ids(frames);
        let pairs: Vec<(i64, i64)> = labels
            .iter()
            .map(|(k, v)| (self.string(k), self.string(v)))
            .collect();
        let value = (count as i64).saturating_mul(self.profile.period);
        let key = (ids, pairs);
        match self.labeled.get(&key) {
            Some(&i) => self.profile.sample[i].value[0] += value,
            None => {
                let label = key
                    .1
                    .iter()
                    .map(|&(key, str)| Label {
                        key,
                        str,
                        num: 0,
                        num_unit: 0,
                    })
                    .collect();
                self.profile.sample.push(Sample {
                    location_id: key.0.clone(),
                    value: vec![value],
                    label,
                });
                self.labeled.insert(key, self.profile.sample.len() - 1);
            }
        }
    }

    /// Location IDs of a stack (leaf first); no frame at all is one `[unknown]` frame.
    fn stack_ids(&mut self, frames: &[Frame]) -> Vec<u64> {
        if frames.is_empty() {
            let unknown = Frame {
                address: 0,
                name: Some("[unknown]".to_string()),
                mapping: None,
                source: None,
            };
            vec![self.location(&unknown)]
        } else {
            frames.iter().map(|f| self.location(f)).collect()
        }
    }

    /// Number of distinct stacks so far.
    pub fn sample_count(&self) -> usize {
        self.profile.sample.len()
    }

    /// The finished profile.
    pub fn build(self) -> Profile {
        self.profile
    }
}

/// Serialises and gzips a profile (what `/ingest` and `pyroscope.write` expect).
pub fn encode_gzip(profile: &Profile) -> Vec<u8> {
    let raw = profile.encode_to_vec();
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 2),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(&raw);
    enc.finish().unwrap_or_default()
}

/// Decodes a profile, gunzipping first when the data starts with the gzip magic. Checks
/// that every ID and string index resolves.
pub fn decode(data: &[u8]) -> Result<Profile, PprofError> {
    let profile = if data.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut raw)?;
        Profile::decode(raw.as_slice())?
    } else {
        Profile::decode(data)?
    };
    validate(&profile)?;
    Ok(profile)
}

fn validate(p: &Profile) -> Result<(), PprofError> {
    let strings = p.string_table.len() as i64;
    if p.string_table.first().map(String::as_str) != Some("") {
        return Err(PprofError::Invalid("string_table[0] must be \"\"".into()));
    }
    let bad_str = |i: i64| !(0..strings).contains(&i);
    for (i, f) in p.function.iter().enumerate() {
        if f.id != i as u64 + 1 || bad_str(f.name) {
            return Err(PprofError::Invalid(format!("function {} invalid", f.id)));
        }
    }
    for (i, m) in p.mapping.iter().enumerate() {
        if m.id != i as u64 + 1 || bad_str(m.filename) || bad_str(m.build_id) {
            return Err(PprofError::Invalid(format!("mapping {} invalid", m.id)));
        }
    }
    for (i, l) in p.location.iter().enumerate() {
        if l.id != i as u64 + 1 || l.mapping_id > p.mapping.len() as u64 {
            return Err(PprofError::Invalid(format!("location {} invalid", l.id)));
        }
        if l.line
            .iter()
            .any(|ln| ln.function_id == 0 || ln.function_id > p.function.len() as u64)
        {
            return Err(PprofError::Invalid(format!(
                "location {} has a bad function id",
                l.id
            )));
        }
    }
    for s in &p.sample {
        if s.location_id
            .iter()
            .any(|&id| id == 0 || id > p.location.len() as u64)
        {
            return Err(PprofError::Invalid("sample has a bad location id".into()));
        }
        if s.value.len() != p.sample_type.len() {
            return Err(PprofError::Invalid(
                "sample value count differs from sample types".into(),
            ));
        }
    }
    Ok(())
}

impl Profile {
    /// A string table entry ("" when out of range).
    pub fn str(&self, i: i64) -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.string_table.get(i))
            .map_or("", String::as_str)
    }

    /// Function names of a sample's stack, root first; a location without lines shows as
    /// `0x<address>`.
    pub fn stack_names(&self, sample: &Sample) -> Vec<String> {
        let mut names = Vec::with_capacity(sample.location_id.len());
        for &id in sample.location_id.iter().rev() {
            let Some(loc) = id
                .checked_sub(1)
                .and_then(|i| self.location.get(i as usize))
            else {
                names.push("[unknown]".into());
                continue;
            };
            if loc.line.is_empty() {
                names.push(format!("0x{:x}", loc.address));
            }
            // Lines are innermost first; the root-first order reverses them.
            for line in loc.line.iter().rev() {
                let name = line
                    .function_id
                    .checked_sub(1)
                    .and_then(|i| self.function.get(i as usize))
                    .map_or("[unknown]", |f| self.str(f.name));
                names.push(name.to_string());
            }
        }
        names
    }
}

/// Renders `root;...;leaf count` lines, merged and sorted; the count is the first value
/// divided by the period (the value itself when the period is 0).
pub fn folded(profile: &Profile) -> String {
    let mut merged: HashMap<String, i64> = HashMap::new();
    let period = if profile.period > 0 {
        profile.period
    } else {
        1
    };
    for s in &profile.sample {
        let key = profile.stack_names(s).join(";");
        *merged.entry(key).or_default() += s.value.first().copied().unwrap_or(0) / period;
    }
    let mut lines: Vec<_> = merged.into_iter().collect();
    lines.sort();
    let mut out = String::new();
    for (stack, v) in lines {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}
