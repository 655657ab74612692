//! Fuzzes the pprof encoder and the Pyroscope push-request encoder through their decoders:
//! stacks built from arbitrary frames are encoded (gzip pprof), decoded, and must give back
//! the same profile and the same per-stack sample counts; the gzipped profile is wrapped in a
//! `PushRequest` with arbitrary labels that must decode to the same request. Arbitrary bytes
//! fed straight to both decoders must be rejected or accepted, never panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use ebpf_probe::pprof::{decode, encode_gzip, ProfileBuilder};
use ebpf_probe::symbolize::{Frame, MappingInfo, SourcePos};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/components/src/pyroscope/push_proto.rs"]
#[allow(dead_code)]
mod push_proto;

use push_proto::{LabelPair, PushRequest, RawProfileSeries, RawSample};

#[derive(Arbitrary, Debug)]
struct InFrame {
    address: u16,
    name: Option<String>,
    mapping: Option<u8>,
    /// An interpreted frame's line (its file is fixed).
    line: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    name_unknown: bool,
    sample_rate: u32,
    time: i64,
    duration: i64,
    stacks: Vec<(Vec<InFrame>, u16)>,
    labels: Vec<(String, String)>,
    id: String,
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    // Sample rates are validated to small values by pyroscope.ebpf; above 1e9 Hz the period
    // would round to 0 ns.
    // Decoders on raw bytes.
    let _ = decode(&input.raw);
    let _ = PushRequest::from_bytes(&input.raw);

    let mappings: Vec<Arc<MappingInfo>> = (0..3u64)
        .map(|i| {
            Arc::new(MappingInfo {
                start: i * 0x1000,
                limit: i * 0x1000 + 0x8000,
                offset: i * 0x10,
                file: format!("/bin/m{i}"),
                build_id: (i % 2 == 0).then(|| format!("ab{i}")),
            })
        })
        .collect();
    let mut builder = ProfileBuilder::new(input.sample_rate % 100_000, input.time, input.duration)
        .name_unknown_frames(input.name_unknown);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (frames, count) in &input.stacks {
        let frames: Vec<Frame> = frames
            .iter()
            .map(|f| Frame {
                address: u64::from(f.address),
                name: f.name.clone(),
                mapping: f.mapping.map(|m| mappings[usize::from(m) % 3].clone()),
                source: f.line.map(|l| SourcePos {
                    file: "/app/walker.py".into(),
                    line: i64::from(l),
                }),
            })
            .collect();
        builder.add_stack(&frames, u64::from(*count));
        if *count == 0 {
            continue;
        }
        let names: Vec<String> = if frames.is_empty() {
            vec!["[unknown]".to_string()]
        } else {
            frames
                .iter()
                .rev()
                .map(|f| match (&f.name, input.name_unknown) {
                    (Some(n), _) => n.clone(),
                    (None, true) => f.display_name(),
                    (None, false) => format!("0x{:x}", f.address),
                })
                .collect()
        };
        *expected.entry(names.join("\u{1}")).or_default() += i64::from(*count);
    }
    let period = builder.period();
    let profile = builder.build();
    let gz = encode_gzip(&profile);
    let back = decode(&gz).expect("encoded profile decodes");
    assert_eq!(back, profile, "profile changed through encode/decode");
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    for s in &back.sample {
        *got.entry(back.stack_names(s).join("\u{1}")).or_default() += s.value[0] / period;
    }
    assert_eq!(got, expected, "per-stack counts changed");

    let req = PushRequest {
        series: vec![RawProfileSeries {
            labels: input
                .labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: gz,
                id: input.id.clone(),
            }],
        }],
    };
    let decoded = PushRequest::from_bytes(&req.to_bytes()).expect("push request decodes");
    assert_eq!(decoded, req);
    let inner = decode(&decoded.series[0].samples[0].raw_profile).expect("inner pprof decodes");
    assert_eq!(inner, profile);
});
