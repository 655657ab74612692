//! Runs the reference River parser test data (grafana/river `parser/testdata`, kept in the shared
//! peer-tests directory) against `parse_file`.
//!
//! `valid/*.river` must parse without error. In every other file each `/* ERROR "regex" */`
//! comment expects an error at the start of the token before the comment (`/* ERROR HERE ... */`:
//! just after that token) whose message matches the regex; any other error is a failure. All
//! mismatches of all files are reported together.

use regex::Regex;
use river_parser::lexer::{tokenize, TokenKind};
use river_parser::{parse_file, LineIndex};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn peer_dir() -> PathBuf {
    let base = std::env::var_os("RILL_PEER_TESTS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/peer-tests"
            ))
        },
        PathBuf::from,
    );
    let dir = base.join("river/parser/testdata");
    assert!(
        dir.is_dir(),
        "peer test data not found at {} (set RILL_PEER_TESTS to the peer-tests directory)",
        dir.display()
    );
    dir
}

fn river_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "river"))
        .collect();
    files.sort();
    files
}

/// Expected errors of `src`: byte offset -> message regex.
fn expected_errors(src: &str) -> BTreeMap<usize, String> {
    let rx = Regex::new(r#"^/\* *ERROR *(HERE)? *"([^"]*)" *\*/$"#).expect("valid regex");
    let mut out = BTreeMap::new();
    let (mut prev, mut here) = (0usize, 0usize);
    for tok in tokenize(src).tokens {
        match tok.kind {
            TokenKind::Eof => break,
            TokenKind::Comment => {
                if let Some(c) = rx.captures(&tok.text) {
                    let pos = if c.get(1).is_some() { here } else { prev };
                    out.insert(pos, c[2].to_string());
                }
            }
            TokenKind::Terminator => {}
            _ => {
                prev = tok.span.start;
                here = tok.span.end;
            }
        }
    }
    out
}

/// Compiles a Go regexp. Go treats a `{` that does not start a repetition (`{n}`, `{n,}`,
/// `{n,m}`) as a literal; the `regex` crate rejects it, so such braces are escaped first.
fn go_regex(pattern: &str) -> Regex {
    let rep = Regex::new(r"^\{[0-9]+(,[0-9]*)?\}").expect("valid regex");
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            let n = rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + n]);
            rest = &rest[1 + n..];
            continue;
        }
        if let Some(m) = rep.find(rest) {
            out.push_str(m.as_str());
            rest = &rest[m.end()..];
            continue;
        }
        if c == '{' || c == '}' {
            out.push('\\');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Regex::new(&out).unwrap_or_else(|e| panic!("invalid ERROR regex {pattern:?}: {e}"))
}

#[test]
fn go_regex_escapes_literal_braces() {
    assert!(go_regex("expected {, got STRING").is_match("expected {, got STRING"));
    assert!(go_regex("a{2}").is_match("aa"));
    assert!(go_regex(r"got \)").is_match("got )"));
}

#[test]
#[ignore = "needs the peer suites of ../shared/peer-tests (or RILL_PEER_TESTS); run by scripts/test.sh"]
fn valid_files_parse_without_errors() {
    let dir = peer_dir().join("valid");
    let files = river_files(&dir);
    assert!(
        !files.is_empty(),
        "no valid/*.river files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).expect("readable test file");
        if let Err(diags) = parse_file(&src) {
            failures.push(diags.render(&path.display().to_string(), &src));
        }
    }
    assert!(
        failures.is_empty(),
        "valid files failed to parse:\n{}",
        failures.join("\n")
    );
}

#[test]
#[ignore = "needs the peer suites of ../shared/peer-tests (or RILL_PEER_TESTS); run by scripts/test.sh"]
fn error_files_report_expected_errors() {
    let dir = peer_dir();
    let files = river_files(&dir);
    assert!(!files.is_empty(), "no *.river files in {}", dir.display());
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in &files {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).expect("readable test file");
        let idx = LineIndex::new(&src);
        let at = |off: usize| {
            let lc = idx.line_col(&src, off);
            format!("{name}:{}:{}", lc.line, lc.col)
        };
        let mut expected = expected_errors(&src);
        assert!(!expected.is_empty(), "{name}: no ERROR comments");
        let found = match parse_file(&src) {
            Ok(_) => Vec::new(),
            Err(d) => d.0,
        };
        for d in found {
            match expected.remove(&d.span.start) {
                Some(pattern) => {
                    checked += 1;
                    let rx = go_regex(&pattern);
                    if !rx.is_match(&d.message) {
                        failures.push(format!(
                            "{}: {:?} does not match {pattern:?}",
                            at(d.span.start),
                            d.message
                        ));
                    }
                }
                None => failures.push(format!(
                    "{}: unexpected error: {}",
                    at(d.span.start),
                    d.message
                )),
            }
        }
        for (pos, pattern) in expected {
            failures.push(format!("{}: error not reported: {pattern}", at(pos)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 0);
}
