//! The reference printer's test data (grafana/river `printer/testdata`): every `X.in` must format
//! to `X.expect` (compared like the reference test: trailing whitespace of the expected file is
//! not significant, and our output ends with exactly one newline), an `X.in` with an `X.error`
//! must fail with that message, formatting is idempotent, and the repository's examples format.

use river_parser::format_source;
use std::path::{Path, PathBuf};

fn peer_dir() -> PathBuf {
    let root = std::env::var("RILL_PEER_TESTS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/peer-tests").to_string()
    });
    let dir = Path::new(&root).join("river/printer/testdata");
    assert!(
        dir.is_dir(),
        "peer test data missing at {} (set RILL_PEER_TESTS)",
        dir.display()
    );
    dir
}

fn inputs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(peer_dir())
        .expect("read peer dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    v.sort();
    v
}

fn expected_text(expect: &str) -> String {
    let trimmed = expect.trim_end();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    }
}

#[test]
#[ignore = "needs the peer suites of ../shared/peer-tests (or RILL_PEER_TESTS); run by scripts/test.sh"]
fn peer_printer_testdata() {
    let inputs = inputs();
    assert!(
        inputs.len() >= 10,
        "expected the full printer suite, found {}",
        inputs.len()
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for input in &inputs {
        let src = std::fs::read_to_string(input).expect("read .in");
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let error_file = input.with_extension("error");
        if error_file.exists() {
            let want = std::fs::read_to_string(&error_file).expect("read .error");
            let want = want.trim();
            match format_source(&src) {
                Ok(out) => failures.push(format!(
                    "{name}: expected error {want:?}, got output:\n{out}"
                )),
                Err(d) => {
                    let all = d.render(&name, &src);
                    if !all.contains(want) {
                        failures.push(format!("{name}: error {want:?} not in:\n{all}"));
                    }
                }
            }
            checked += 1;
            continue;
        }
        let expect = std::fs::read_to_string(input.with_extension("expect")).expect("read .expect");
        let want = expected_text(&expect);
        match format_source(&src) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{name}: output differs\n--- want\n{}\n--- got\n{}",
                want.replace('\t', "→"),
                got.replace('\t', "→")
            )),
            Err(d) => failures.push(format!(
                "{name}: unexpected error\n{}",
                d.render(&name, &src)
            )),
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
#[ignore = "needs the peer suites of ../shared/peer-tests (or RILL_PEER_TESTS); run by scripts/test.sh"]
fn formatting_expected_output_is_idempotent() {
    let mut failures = Vec::new();
    for input in inputs() {
        let expect_file = input.with_extension("expect");
        if !expect_file.exists() {
            continue;
        }
        let want = expected_text(&std::fs::read_to_string(&expect_file).unwrap());
        match format_source(&want) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}: not a fixed point\n--- want\n{want}\n--- got\n{got}",
                expect_file.display()
            )),
            Err(d) => failures.push(format!("{}: {d}", expect_file.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn repository_examples_format_and_are_stable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/river");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/river") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "river") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let once = format_source(&src)
            .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render("example", &src)));
        let twice = format_source(&once).expect("formatted example parses");
        assert_eq!(once, twice, "{} is not stable", path.display());
        n += 1;
    }
    assert!(n >= 2, "expected the example files, found {n}");
}
