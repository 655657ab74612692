//! Fuzzes parse + format: parsing must not panic, and for every input that parses the formatted
//! text must parse again to the same syntax tree (spans aside), keep the comments, and be a fixed
//! point of the formatter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use river_parser::{format_file, parse_file};

/// Debug rendering of the statements with every `Span { .. }` removed.
fn without_spans(f: &river_parser::ast::File) -> String {
    let debug = format!("{:?}", f.body);
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(i) = rest.find("Span {") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let close = tail.find('}').map_or(tail.len(), |j| j + 1);
        rest = &tail[close..];
    }
    out.push_str(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = parse_file(src) else {
        return;
    };
    let once = format_file(&file, src);
    let again = match parse_file(&once) {
        Ok(f) => f,
        Err(d) => {
            panic!("formatted output does not parse: {d}\n--- input\n{src}\n--- output\n{once}")
        }
    };
    assert_eq!(
        without_spans(&file),
        without_spans(&again),
        "tree changed\n--- input\n{src}\n--- output\n{once}"
    );
    let texts = |f: &river_parser::ast::File| {
        f.comments
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&file), texts(&again), "comments changed");
    let twice = format_file(&again, &once);
    assert_eq!(once, twice, "not idempotent\n--- input\n{src}");
});
