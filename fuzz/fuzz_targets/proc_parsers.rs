//! Fuzzes the `/proc/PID/maps` and `/proc/PID/cgroup` parsers on arbitrary text: no panics,
//! every parsed mapping is well-formed (start <= end, contains() agrees with the range), and
//! a container ID found in a cgroup file is non-empty and taken from the file.
#![no_main]

use ebpf_probe::cgroup::{
    container_id_from_cgroup, container_id_from_path, normalize_container_id,
};
use ebpf_probe::symbolize::procmaps::{parse_maps, parse_maps_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = parse_maps(&text);
    for e in &entries {
        let _ = (e.is_exec(), e.is_file());
        if e.start < e.end {
            assert!(e.contains(e.start), "{e:?} does not contain its start");
            assert!(!e.contains(e.end), "{e:?} contains its end");
        }
    }
    for line in text.lines() {
        let _ = parse_maps_line(line);
    }
    if let Some(id) = container_id_from_cgroup(&text) {
        assert!(!id.is_empty());
        assert!(text.contains(id.as_str()), "id {id:?} not in input");
    }
    for line in text.lines() {
        if let Some(id) = container_id_from_path(line) {
            assert!(line.contains(id));
        }
        if let Some(n) = normalize_container_id(line) {
            assert!(!n.is_empty());
            assert_eq!(n, n.to_ascii_lowercase(), "normalized ID is not lowercase");
        }
    }
});
