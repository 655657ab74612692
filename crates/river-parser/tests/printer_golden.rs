//! Golden tests of the formatter for cases the reference suite does not cover: every
//! `tests/golden/printer/NAME.in` must format to `NAME.out`, and the output must be a fixed point
//! and parse to the same syntax tree as the input (compared without spans).
//! Run with `UPDATE_GOLDEN=1` to rewrite the `.out` files after reviewing a change.

use river_parser::{format_source, parse_file};
use std::path::Path;

#[test]
fn golden_printer_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/printer");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6, "golden inputs missing");
    let mut failures = Vec::new();
    for input in &inputs {
        let src = std::fs::read_to_string(input).unwrap();
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let got = match format_source(&src) {
            Ok(g) => g,
            Err(d) => {
                failures.push(format!("{name}:\n{}", d.render(&name, &src)));
                continue;
            }
        };
        let out_path = input.with_extension("out");
        if update {
            std::fs::write(&out_path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&out_path).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}: differs\n--- want\n{want}\n--- got\n{got}"));
            continue;
        }
        let again = format_source(&got).expect("formatted output parses");
        if again != got {
            failures.push(format!("{name}: not idempotent\n{again}"));
        }
        let before = parse_file(&src).unwrap();
        let after = parse_file(&got).unwrap();
        if strip(&format!("{:?}", before.body)) != strip(&format!("{:?}", after.body)) {
            failures.push(format!("{name}: syntax tree changed by formatting"));
        }
        let texts = |f: &river_parser::ast::File| {
            f.comments
                .iter()
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
        };
        if texts(&before) != texts(&after) {
            failures.push(format!("{name}: comments changed by formatting"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Removes every `Span { start: N, end: M }` (and raw literal text differences do not occur:
/// literals are printed as written) from a Debug rendering.
fn strip(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(i) = rest.find("Span {") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let close = tail.find('}').map_or(tail.len(), |j| j + 1);
        rest = &tail[close..];
    }
    out.push_str(rest);
    out
}
