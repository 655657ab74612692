//! Fuzzes River parse + format + evaluate: any UTF-8 input that parses is formatted, the
//! formatted text must parse, and both trees are evaluated with the standard library in scope.
//! Evaluation may fail with diagnostics but must not panic, and the formatted file must
//! evaluate to the same result (success or failure) as the original.
#![no_main]

use libfuzzer_sys::fuzz_target;
use river_parser::{eval_body, format_file, parse_file, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = parse_file(src) else {
        return;
    };
    let scope = Scope::new();
    let first = eval_body(&file.body, &scope);
    let formatted = format_file(&file, src);
    let again = parse_file(&formatted).expect("formatted output parses");
    let second = eval_body(&again.body, &scope);
    assert_eq!(
        first.is_ok(),
        second.is_ok(),
        "formatting changed whether the file evaluates\n--- input\n{src}\n--- formatted\n{formatted}"
    );
    // Rendering diagnostics (source line + caret) must not panic on any span either.
    if let Err(d) = first {
        let _ = d.to_string();
    }
});
