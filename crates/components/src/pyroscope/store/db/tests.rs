use super::*;
use crate::pyroscope::store::query::{Reader, TimeRange};
use crate::pyroscope::store::retention::Limits;
use crate::pyroscope::store::synth::{cpu_profile, Rng, StackPool};

const T0: i64 = 1_700_000_000_000; // ms

fn labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("service_name".to_string(), service.to_string()),
        ("__name__".to_string(), "process_cpu".to_string()),
    ])
}

fn raw(bytes: Vec<u8>) -> RawProfile {
    RawProfile {
        raw: bytes,
        id: String::new(),
    }
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// 100 Hz: a sample is 10 ms of CPU.
const PERIOD: i64 = 10_000_000;

fn push(w: &mut Writer, service: &str, time_ms: i64, stacks: &[(&[&str], u64)]) {
    let p = cpu_profile(stacks, 100, time_ms * 1_000_000);
    let stats = w
        .write(&[(labels(service), vec![raw(p)])], at(time_ms))
        .unwrap();
    assert_eq!(stats.profiles, 1);
}

fn folded(t: &crate::pyroscope::store::tree::Tree) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (i, n) in t.nodes.iter().enumerate().skip(1) {
        if n.self_value == 0 {
            continue;
        }
        let mut names = Vec::new();
        let mut j = i;
        while j != 0 {
            names.push(t.names[t.nodes[j].name as usize].to_string());
            j = t.nodes[j].parent as usize;
        }
        names.reverse();
        out.push((names.join(";"), n.self_value));
    }
    out.sort();
    out
}

#[test]
fn profiles_merge_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = Writer::open(dir.path()).unwrap();
        push(
            &mut w,
            "api",
            T0,
            &[(&["main", "a", "b"], 3), (&["main", "c"], 1)],
        );
        push(
            &mut w,
            "api",
            T0 + 15_000,
            &[(&["main", "a", "b"], 2), (&["main", "a"], 5)],
        );
        push(&mut w, "db", T0, &[(&["postgres", "x"], 7)]);
    }
    // Reopened: everything is there, and new writes extend the same series.
    let mut w = Writer::open(dir.path()).unwrap();
    push(&mut w, "api", T0 + 30_000, &[(&["main", "c"], 4)]);
    let mut r = Reader::open(dir.path()).unwrap();
    let range = TimeRange::new(T0, T0 + 60_000).unwrap();
    let sel =
        crate::pyroscope::store::selector::Selector::parse(r#"{service_name="api"}"#).unwrap();
    let api = r.select(Some(CPU), &[sel], Some(range)).unwrap();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].first_ms, T0);
    assert_eq!(api[0].last_ms, T0 + 30_000);
    assert_eq!(api[0].period, PERIOD);
    let tree = r.merge(&api, range).unwrap();
    assert_eq!(
        folded(&tree),
        vec![
            ("main;a".to_string(), 5 * PERIOD),
            ("main;a;b".to_string(), 5 * PERIOD),
            ("main;c".to_string(), 5 * PERIOD),
        ]
    );
    assert_eq!(tree.total(), 15 * PERIOD);
    // The range is half-open and selects by profile time.
    let first = r
        .merge(&api, TimeRange::new(T0, T0 + 15_000).unwrap())
        .unwrap();
    assert_eq!(first.total(), 4 * PERIOD);
    let totals = r.totals(&api, range).unwrap();
    assert_eq!(
        totals,
        vec![
            (T0, 4 * PERIOD),
            (T0 + 15_000, 7 * PERIOD),
            (T0 + 30_000, 4 * PERIOD)
        ]
    );
    assert_eq!(
        r.label_values("service_name", &[], None).unwrap(),
        vec!["api", "db"]
    );
    let names = r.label_names(&[], None).unwrap();
    for want in [
        "service_name",
        "__name__",
        "__profile_type__",
        "__type__",
        "__unit__",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let types = r.profile_types(None).unwrap();
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].id, CPU);
    // Outside every series' time: nothing.
    assert!(r
        .profile_types(TimeRange::optional(1000, 4000).unwrap())
        .unwrap()
        .is_empty());
}

#[test]
fn sample_labels_split_series_and_sample_types_make_profile_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    // A two-type profile with per-sample labels, built by hand.
    let mut b = ebpf_probe::pprof::ProfileBuilder::new(100, T0 * 1_000_000, 0);
    let frame = |n: &str, a: u64| ebpf_probe::symbolize::Frame {
        address: a,
        name: Some(n.into()),
        mapping: None,
        source: None,
    };
    b.add_stack_labeled(&[frame("f", 1)], 2, &[("comm", "one")]);
    b.add_stack_labeled(&[frame("g", 2)], 3, &[("comm", "two")]);
    b.add_stack_labeled(&[frame("h", 3)], 1, &[("service_name", "ignored")]);
    let mut p = b.build();
    let alloc = p.string_table.len() as i64;
    p.string_table.push("alloc".into());
    p.string_table.push("count".into());
    p.sample_type.push(ebpf_probe::pprof::ValueType {
        r#type: alloc,
        unit: alloc + 1,
    });
    for s in &mut p.sample {
        let v = s.value[0] / PERIOD;
        s.value.push(v * 100);
    }
    let bytes = ebpf_probe::pprof::encode_gzip(&p);
    w.write(&[(labels("svc"), vec![raw(bytes)])], at(T0))
        .unwrap();
    let mut r = Reader::open(dir.path()).unwrap();
    let all = r.series().unwrap();
    // 3 label sets (comm=one, comm=two, none) x 2 types
    assert_eq!(all.len(), 6, "{all:#?}");
    assert!(all.iter().all(|s| s.labels["service_name"] == "svc"));
    let types: Vec<String> = r
        .profile_types(None)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        types,
        vec![
            "process_cpu:alloc:count:cpu:nanoseconds".to_string(),
            CPU.to_string()
        ]
    );
    let sel = crate::pyroscope::store::selector::Selector::parse(r#"{comm="two"}"#).unwrap();
    let two = r
        .select(
            Some("process_cpu:alloc:count:cpu:nanoseconds"),
            &[sel],
            None,
        )
        .unwrap();
    let range = TimeRange::new(T0, T0 + 1).unwrap();
    assert_eq!(r.merge(&two, range).unwrap().total(), 300);
}

#[test]
fn bad_profiles_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let good = cpu_profile(&[(&["a"], 1)], 100, T0 * 1_000_000);
    let stats = w
        .write(
            &[(labels("x"), vec![raw(b"not a profile".to_vec()), raw(good)])],
            at(T0),
        )
        .unwrap();
    assert_eq!(stats.profiles, 1);
    assert_eq!(stats.bad_profiles, 1);
    assert!(stats.last_bad.unwrap().contains("pprof"));
}

#[test]
fn merges_span_chunks_and_the_dictionary_is_shared_within_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let first_chunk = w.current_chunk();
    push(&mut w, "api", T0, &[(&["main", "a"], 1)]);
    push(&mut w, "api", T0 + 1000, &[(&["main", "a"], 1)]);
    assert_eq!(w.current_chunk(), first_chunk);
    // An hour later (writer clock) the next write starts a new chunk.
    let later = unix_ms(SystemTime::now()) + CHUNK_SPAN.as_millis() as i64;
    let p = cpu_profile(
        &[(&["main", "a"], 2), (&["main", "b"], 1)],
        100,
        (T0 + 2000) * 1_000_000,
    );
    w.write(&[(labels("api"), vec![raw(p)])], at(later))
        .unwrap();
    assert_ne!(w.current_chunk(), first_chunk);
    let mut r = Reader::open(dir.path()).unwrap();
    let all = r.series().unwrap();
    let tree = r
        .merge(&all, TimeRange::new(T0, T0 + 10_000).unwrap())
        .unwrap();
    assert_eq!(
        folded(&tree),
        vec![
            ("main;a".to_string(), 4 * PERIOD),
            ("main;b".to_string(), PERIOD)
        ]
    );
    // Both stacks of the first chunk share main: 2 nodes stored, not 4.
    let nodes: i64 = w
        .conn
        .query_row(
            "SELECT count(*) FROM stack_blocks WHERE chunk = ?1",
            [first_chunk],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(nodes, 1, "one block: the second write added no node");
}

#[test]
fn retention_drops_old_profiles_chunks_frames_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let now = unix_ms(SystemTime::now());
    push(
        &mut w,
        "old",
        now - 7_200_000,
        &[(&["old_main", "old_leaf"], 1)],
    );
    // Later profiles go to a fresh chunk (a reopen starts one), so the old one can go.
    let mut w = {
        drop(w);
        Writer::open(dir.path()).unwrap()
    };
    push(&mut w, "new", now - 1000, &[(&["main", "leaf"], 1)]);
    push(&mut w, "new", now - 500, &[(&["main", "leaf2"], 1)]);
    let limits = Limits {
        retention: Duration::from_secs(3600),
        max_size: 1 << 30,
    };
    let st = w.enforce(&limits, SystemTime::now()).unwrap();
    assert_eq!(st.expired, 1);
    assert_eq!(st.series_dropped, 1);
    assert!(st.chunks_dropped >= 1, "{st:?}");
    assert!(st.frames_dropped >= 2, "{st:?}");
    let names: Vec<String> = {
        let mut s = w
            .conn
            .prepare("SELECT name FROM frames ORDER BY name")
            .unwrap();
        let rows = s.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(names, vec!["leaf", "leaf2", "main"]);
    let mut r = Reader::open(dir.path()).unwrap();
    assert_eq!(
        r.label_values("service_name", &[], None).unwrap(),
        vec!["new"]
    );
    let all = r.series().unwrap();
    let tree = r
        .merge(&all, TimeRange::new(now - 10_000, now).unwrap())
        .unwrap();
    assert_eq!(tree.total(), 2 * PERIOD);
    // Frames keep their IDs after the drop: a new frame gets a fresh one.
    push(&mut w, "new", now - 100, &[(&["main", "brand_new"], 1)]);
    let all = r.series().unwrap();
    let tree = r
        .merge(&all, TimeRange::new(now - 10_000, now).unwrap())
        .unwrap();
    assert_eq!(tree.total(), 3 * PERIOD);
    assert!(tree.names.iter().any(|n| &**n == "brand_new"));
}

#[test]
fn max_size_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path()).unwrap();
    let pool = StackPool::new(1, 1000, 5, 800);
    let mut rng = Rng::new(2);
    // A few distinct intervals (time 0: stamped when written), replayed 15 s apart.
    let profiles: Vec<Vec<u8>> = (0..6)
        .map(|_| pool.pprof(&pool.interval(&mut rng, 800), 97, 0, 15_000_000_000))
        .collect();
    let now = unix_ms(SystemTime::now());
    let mut t = now - 3_000_000;
    let mut i = 0;
    while w.used_bytes().unwrap() < 3 << 20 {
        let p = profiles[i % profiles.len()].clone();
        w.write(&[(labels("host"), vec![raw(p)])], at(t)).unwrap();
        t += 15_000;
        i += 1;
    }
    let before = w.file_bytes();
    let limits = Limits {
        retention: Duration::from_secs(24 * 3600),
        max_size: 3 << 19,
    };
    let st = w.enforce(&limits, SystemTime::now()).unwrap();
    assert!(st.evicted > 0, "{st:?}");
    assert!(st.used_bytes <= 3 << 19, "{st:?}");
    // The file itself shrank, not only its use.
    let len = std::fs::metadata(w.file()).unwrap().len();
    assert!(len <= 3 << 19, "file {len} bytes (was {before})");
    assert!(st.file_bytes < before, "{st:?} before {before}");
    // The newest profiles are the ones kept.
    let mut r = Reader::open(dir.path()).unwrap();
    let s = r.series().unwrap();
    let range = TimeRange::new(now - 3_100_000, now + 2 * 86_400_000).unwrap();
    let totals = r.totals(&s, range).unwrap();
    assert!(!totals.is_empty());
    assert_eq!(totals.last().unwrap().0, t - 15_000);
    let merged = r.merge(&s, range).unwrap();
    assert_eq!(merged.total(), totals.iter().map(|x| x.1).sum::<i64>());
}

#[test]
fn a_corrupt_file_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
    let e = match Writer::open(dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a corrupt file"),
    };
    assert!(e.contains("not a database"), "{e}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let w = Writer::open(dir.path()).unwrap();
        w.conn
            .execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
            .unwrap();
    }
    match Writer::open(dir.path()) {
        Err(StoreError::Schema(99)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened schema 99"),
    }
}
