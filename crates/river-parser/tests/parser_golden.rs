//! Golden tests of the River parser: every `tests/golden/parser/*.river` is parsed and the result
//! compared with the `.out` file next to it: a compact S-expression dump of the tree (with byte
//! spans and comments) on success, the rendered diagnostics on error. Files named `tokens_*.river`
//! dump the token stream instead. `UPDATE_GOLDEN=1` rewrites the expectations.

use river_parser::ast::{Expr, ExprKind, File, LitKind, Stmt};
use river_parser::lexer::tokenize;
use river_parser::{parse_expr, parse_file, Span};
use std::fmt::Write as _;
use std::path::PathBuf;

fn sp(s: Span) -> String {
    format!("@{}..{}", s.start, s.end)
}

fn dump_expr(e: &Expr) -> String {
    let s = sp(e.span);
    match &e.kind {
        ExprKind::Literal(l) => {
            let v = match &l.kind {
                LitKind::Null => "null".to_string(),
                LitKind::Bool(b) => format!("bool {b}"),
                LitKind::Number(n) => format!("number {n}"),
                LitKind::Float(f) => format!("float {f:?}"),
                LitKind::String(v) => format!("string {v:?}"),
            };
            format!("({v} raw={:?} {s})", l.raw)
        }
        ExprKind::Ident(i) => format!("(ident {} {s})", i.name),
        ExprKind::Array { elements, .. } => {
            let els: Vec<String> = elements.iter().map(dump_expr).collect();
            format!("(array {s} [{}])", els.join(" "))
        }
        ExprKind::Object { fields, .. } => {
            let fs: Vec<String> = fields
                .iter()
                .map(|f| {
                    let q = if f.quoted { "quoted " } else { "" };
                    format!(
                        "({q}{:?} {} = {})",
                        f.name,
                        sp(f.name_span),
                        dump_expr(&f.value)
                    )
                })
                .collect();
            format!("(object {s} {{{}}})", fs.join(" "))
        }
        ExprKind::Access { value, name } => {
            format!(
                "(. {s} {} {} {})",
                dump_expr(value),
                name.name,
                sp(name.span)
            )
        }
        ExprKind::Index { value, index, .. } => {
            format!("(index {s} {} {})", dump_expr(value), dump_expr(index))
        }
        ExprKind::Call { func, args, .. } => {
            let a: Vec<String> = args.iter().map(dump_expr).collect();
            format!("(call {s} {} [{}])", dump_expr(func), a.join(" "))
        }
        ExprKind::Unary { op, value, .. } => format!("({} {s} {})", op.as_str(), dump_expr(value)),
        ExprKind::Binary {
            op, left, right, ..
        } => format!(
            "({} {s} {} {})",
            op.as_str(),
            dump_expr(left),
            dump_expr(right)
        ),
        ExprKind::Paren { inner, .. } => format!("(paren {s} {})", dump_expr(inner)),
    }
}

fn dump_body(out: &mut String, body: &[Stmt], indent: usize) {
    let pad = "  ".repeat(indent);
    for stmt in body {
        match stmt {
            Stmt::Attribute(a) => {
                let _ = writeln!(
                    out,
                    "{pad}attr {} {} = {}",
                    a.name.name,
                    sp(a.span),
                    dump_expr(&a.value)
                );
            }
            Stmt::Block(b) => {
                let label = match (&b.label, b.label_span) {
                    (Some(l), Some(s)) => format!(" label={l:?} {}", sp(s)),
                    _ => String::new(),
                };
                let _ = writeln!(out, "{pad}block {}{label} {} {{", b.full_name(), sp(b.span));
                dump_body(out, &b.body, indent + 1);
                let _ = writeln!(out, "{pad}}}");
            }
        }
    }
}

fn dump_file(f: &File) -> String {
    let mut out = String::new();
    dump_body(&mut out, &f.body, 0);
    for c in &f.comments {
        let _ = writeln!(out, "comment {} {:?}", sp(c.span), c.text);
    }
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/parser"))
}

fn render(name: &str, src: &str) -> String {
    if name.starts_with("tokens_") {
        let lexed = tokenize(src);
        let mut out = String::new();
        for t in &lexed.tokens {
            let _ = writeln!(out, "{} {} {:?}", t.kind, sp(t.span), t.text);
        }
        for e in &lexed.errors {
            let _ = writeln!(out, "error {} {}", sp(e.span), e.message);
        }
        return out;
    }
    match parse_file(src) {
        Ok(f) => dump_file(&f),
        Err(d) => format!("ERRORS\n{}", d.render(name, src)),
    }
}

#[test]
fn golden_parser_outputs() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "river"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden inputs in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let src = std::fs::read_to_string(input).expect("readable input");
        let got = render(name, &src);
        let out_path = input.with_extension("out");
        if update {
            std::fs::write(&out_path, &got).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&out_path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{name}: output differs\n--- want\n{want}\n--- got\n{got}"
            )),
            Err(_) => failures.push(format!("{name}: missing {}", out_path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn examples_parse() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/river"));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/river exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "river") {
            let src = std::fs::read_to_string(&path).expect("readable example");
            let file = parse_file(&src)
                .unwrap_or_else(|d| panic!("{}", d.render(&path.display().to_string(), &src)));
            assert!(!file.body.is_empty(), "{}: empty body", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected at least 2 examples, found {n}");
}

#[test]
fn parse_expr_cases() {
    let e = parse_expr("1 + 2 * 3").expect("parses");
    assert_eq!(dump_expr(&e), "(+ @0..9 (number 1 raw=\"1\" @0..1) (* @4..9 (number 2 raw=\"2\" @4..5) (number 3 raw=\"3\" @8..9)))");
    let e = parse_expr("2 ^ 3 ^ 2\n").expect("parses");
    assert_eq!(dump_expr(&e), "(^ @0..9 (number 2 raw=\"2\" @0..1) (^ @4..9 (number 3 raw=\"3\" @4..5) (number 2 raw=\"2\" @8..9)))");
    let err = parse_expr("1 2").expect_err("trailing token");
    assert_eq!(err.0[0].message, "expected EOF, got NUMBER");
    let err = parse_expr("").expect_err("empty");
    assert_eq!(err.0[0].message, "expected expression, got EOF");
    let err = parse_expr("a.b \"x\" {}").expect_err("block");
    assert_eq!(err.0[0].message, "cannot use a block as an expression");
}

#[test]
fn deep_nesting_is_rejected_without_overflow() {
    // Run on a small stack, as a config loader thread might.
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let ok_depth = river_parser::parser::MAX_NESTING - 2;
            let src = format!("a = {}1{}\n", "[".repeat(ok_depth), "]".repeat(ok_depth));
            assert!(parse_file(&src).is_ok(), "depth {ok_depth} must parse");

            for src in [
                format!("a = {}1{}\n", "[".repeat(5_000), "]".repeat(5_000)),
                format!("a = {}1\n", "-".repeat(5_000)),
                format!("a = 2{}\n", " ^ 2".repeat(5_000)),
                format!("{}{}\n", "b {\n".repeat(5_000), "}\n".repeat(5_000)),
                format!("a = {}1{}\n", "(".repeat(5_000), ")".repeat(5_000)),
            ] {
                let err = parse_file(&src).expect_err("too deep");
                assert_eq!(err.0.len(), 1, "{err}");
                assert!(err.0[0].message.starts_with("nesting too deep"), "{err}");
            }
        })
        .expect("spawn");
    handle.join().expect("no stack overflow");
}

mod robustness {
    use proptest::prelude::*;
    use river_parser::lexer::tokenize;
    use river_parser::parse_file;

    /// Fragments that exercise every token kind and the error paths, including multi-byte text.
    const FRAGMENTS: &[&str] = &[
        "a",
        "b.c",
        " ",
        "\n",
        "\t",
        "=",
        "==",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ",",
        ".",
        "\"s\"",
        "\"\\x4",
        "\"\\u00e9\"",
        "`raw`",
        "`",
        "\"",
        "'",
        "1",
        "1.5",
        ".5",
        "1e",
        "//c\n",
        "/*x*/",
        "/*",
        "+",
        "-",
        "!",
        "^",
        "|",
        "&",
        "?",
        ":",
        "$",
        "é",
        "名",
        "\u{FEFF}",
        "\0",
        "\r\n",
        "true",
        "null",
        "\\",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn never_panics_and_spans_stay_in_bounds(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..40)) {
            let src: String = parts.iter().map(|&i| FRAGMENTS[i]).collect();
            let lexed = tokenize(&src);
            let mut last_end = 0;
            for t in &lexed.tokens {
                prop_assert!(t.span.start <= t.span.end && t.span.end <= src.len());
                prop_assert!(t.span.start >= last_end, "tokens overlap in {src:?}");
                last_end = t.span.end;
            }
            match parse_file(&src) {
                Ok(file) => {
                    for stmt in &file.body {
                        prop_assert!(stmt.span().end <= src.len());
                    }
                }
                Err(diags) => {
                    prop_assert!(!diags.is_empty());
                    for d in &diags.0 {
                        prop_assert!(d.span.start <= d.span.end && d.span.end <= src.len(), "{d:?} in {src:?}");
                        prop_assert!(src.is_char_boundary(d.span.start) && src.is_char_boundary(d.span.end));
                    }
                    // At most one error per line.
                    let idx = river_parser::LineIndex::new(&src);
                    let lines: Vec<usize> = diags.0.iter().map(|d| idx.line_of(d.span.start)).collect();
                    let mut dedup = lines.clone();
                    dedup.dedup();
                    prop_assert_eq!(lines, dedup);
                    let _ = diags.render("fuzz.river", &src);
                }
            }
        }
    }
}
