//! Property tests of the formatter on random River sources (random statements, expressions,
//! layouts and comments): formatting is a fixed point (`fmt(fmt(x)) == fmt(x)`), the formatted
//! text parses to the same syntax tree as the input (spans erased) and keeps every comment.

use proptest::prelude::*;
use river_parser::ast::{Attribute, Block, Expr, ExprKind, File, Ident, ObjectField, Stmt};
use river_parser::{format_source, parse_file, Span};

// ---------------------------------------------------------------------------------------------
// Span-erasing comparison.

fn erase_ident(i: &Ident) -> Ident {
    Ident {
        name: i.name.clone(),
        span: Span::default(),
    }
}

fn erase_expr(e: &Expr) -> Expr {
    let z = Span::default();
    let kind = match &e.kind {
        ExprKind::Literal(l) => ExprKind::Literal(l.clone()),
        ExprKind::Array { elements, .. } => ExprKind::Array {
            elements: elements.iter().map(erase_expr).collect(),
            lbrack: z,
            rbrack: z,
        },
        ExprKind::Object { fields, .. } => ExprKind::Object {
            fields: fields
                .iter()
                .map(|f| ObjectField {
                    name: f.name.clone(),
                    quoted: f.quoted,
                    name_span: z,
                    value: erase_expr(&f.value),
                })
                .collect(),
            lcurly: z,
            rcurly: z,
        },
        ExprKind::Ident(i) => ExprKind::Ident(erase_ident(i)),
        ExprKind::Access { value, name } => ExprKind::Access {
            value: Box::new(erase_expr(value)),
            name: erase_ident(name),
        },
        ExprKind::Index { value, index, .. } => ExprKind::Index {
            value: Box::new(erase_expr(value)),
            index: Box::new(erase_expr(index)),
            lbrack: z,
            rbrack: z,
        },
        ExprKind::Call { func, args, .. } => ExprKind::Call {
            func: Box::new(erase_expr(func)),
            args: args.iter().map(erase_expr).collect(),
            lparen: z,
            rparen: z,
        },
        ExprKind::Unary { op, value, .. } => ExprKind::Unary {
            op: *op,
            op_span: z,
            value: Box::new(erase_expr(value)),
        },
        ExprKind::Binary {
            op, left, right, ..
        } => ExprKind::Binary {
            op: *op,
            op_span: z,
            left: Box::new(erase_expr(left)),
            right: Box::new(erase_expr(right)),
        },
        ExprKind::Paren { inner, .. } => ExprKind::Paren {
            inner: Box::new(erase_expr(inner)),
            lparen: z,
            rparen: z,
        },
    };
    Expr { kind, span: z }
}

fn erase_stmt(s: &Stmt) -> Stmt {
    let z = Span::default();
    match s {
        Stmt::Attribute(a) => Stmt::Attribute(Attribute {
            name: erase_ident(&a.name),
            value: erase_expr(&a.value),
            span: z,
        }),
        Stmt::Block(b) => Stmt::Block(Block {
            name: b.name.iter().map(erase_ident).collect(),
            label: b.label.clone(),
            label_span: b.label_span.map(|_| z),
            body: b.body.iter().map(erase_stmt).collect(),
            lcurly: z,
            rcurly: z,
            span: z,
        }),
    }
}

/// The file without spans: statements, and comment texts in order.
fn erase(f: &File) -> (Vec<Stmt>, Vec<String>) {
    (
        f.body.iter().map(erase_stmt).collect(),
        f.comments.iter().map(|c| c.text.clone()).collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Random sources.

fn ident() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "foo",
        "bar_baz",
        "x1",
        "targets",
        "a_rather_long_identifier",
        "_u",
    ])
    .prop_map(str::to_string)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1_000_000).prop_map(|n| n.to_string()),
        prop::sample::select(vec!["1.5", "0.25", "3e2", "12.0e-1", ".5"]).prop_map(str::to_string),
        prop::sample::select(vec![
            r#""hello""#,
            r#""""#,
            r#""tab\tnew\nline""#,
            r#""q\"uote\\""#,
            r#""caf\u00e9 \x41 \101""#,
            r#""é ü 日本""#,
            "`raw \\ string`",
            "`multi\nline`",
            "`tab\there`",
            "`space  \nbefore newline`",
            "`\n\tindented\n`",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_string),
    ]
}

/// A blank between two tokens (never a line break).
fn blank() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![" ", " ", " ", "", "  ", "\t", " /* c */ "])
}

/// Joins list items with commas; each separator may break the line (and carry a comment), and
/// the list may open and close on their own lines.
fn list(open: &'static str, close: &'static str, items: Vec<String>, layout: Vec<u8>) -> String {
    let bit = |i: usize| layout.get(i).copied().unwrap_or(0);
    let mut s = String::from(open);
    if !items.is_empty() && bit(0) % 3 == 0 {
        s.push_str(if bit(0) % 2 == 0 { "\n" } else { " // open\n" });
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
            s.push_str(match bit(i) % 8 {
                0 | 1 => "\n",
                2 => " // after item\n",
                3 => "\n// before item\n",
                4 => " /* c */ ",
                _ => " ",
            });
        }
        s.push_str(item);
    }
    let last = bit(items.len() + 1);
    if !items.is_empty() && last % 2 == 0 {
        s.push_str(if last % 4 == 0 {
            ",\n"
        } else {
            ", // trailing\n"
        });
    } else if items.is_empty() && last % 3 == 0 {
        s.push('\n');
    }
    s.push_str(close);
    s
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![literal(), ident()];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            // Postfix chains on an identifier.
            (ident(), ident()).prop_map(|(a, b)| format!("{a}.{b}")),
            (ident(), inner.clone()).prop_map(|(a, i)| format!("{a}[{i}]")),
            (
                ident(),
                prop::collection::vec(inner.clone(), 0..4),
                prop::collection::vec(any::<u8>(), 6)
            )
                .prop_map(|(f, args, l)| format!("{f}{}", list("(", ")", args, l))),
            (
                prop::collection::vec(inner.clone(), 0..5),
                prop::collection::vec(any::<u8>(), 7)
            )
                .prop_map(|(items, l)| list("[", "]", items, l)),
            (
                prop::collection::vec((ident(), any::<bool>(), inner.clone()), 0..4),
                prop::collection::vec(any::<u8>(), 6)
            )
                .prop_map(|(fields, l)| {
                    let items = fields
                        .into_iter()
                        .map(|(k, q, v)| {
                            if q {
                                format!("\"{k}-key\" = {v}")
                            } else {
                                format!("{k}={v}")
                            }
                        })
                        .collect();
                    list("{", "}", items, l)
                }),
            (prop::sample::select(vec!["-", "!"]), inner.clone())
                .prop_map(|(op, e)| format!("{op}{e}")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "+", "-", "*", "/", "%", "^", "==", "!=", "<", "<=", ">", ">=", "&&", "||"
                ]),
                blank(),
                prop::sample::select(vec![" ", "", "\n"]),
                inner.clone()
            )
                .prop_map(|(l, op, b, after, r)| format!("{l}{b}{op}{after}{r}")),
            inner.clone().prop_map(|e| format!("({e})")),
        ]
    })
}

/// Separators between statements.
fn stmt_sep() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "\n",
        "\n",
        "\n",
        "\n\n",
        "\n\n\n\n",
        " // trailing\n",
        "\n// own line\n",
        "\n\n// spaced\n\n",
        "\n/* multi\n   line */\n",
    ])
}

fn body(depth: u32) -> BoxedStrategy<String> {
    let attr = (ident(), blank(), expr()).prop_map(|(n, b, e)| format!("{n}{b}={b}{e}"));
    if depth == 0 {
        return prop::collection::vec((attr, stmt_sep()), 0..5)
            .prop_map(join_stmts)
            .boxed();
    }
    let block = (
        prop::collection::vec(ident(), 1..3),
        prop::option::of(ident()),
        prop::sample::select(vec!["{", "{ // header\n"]),
        body(depth - 1),
        prop::sample::select(vec!["", "\n", " "]),
        header_gaps(),
    )
        .prop_map(
            |(name, label, open, inner, empty, (dot, gap_label, gap_open))| {
                let label = label
                    .map(|l| format!("{gap_label}\"{l}\""))
                    .unwrap_or_default();
                let inner = if inner.is_empty() {
                    if open.ends_with('\n') {
                        String::new()
                    } else {
                        empty.to_string()
                    }
                } else if open.ends_with('\n') {
                    format!("{inner}\n")
                } else {
                    format!("\n{inner}\n")
                };
                format!("{}{label}{gap_open}{open}{inner}}}", name.join(dot))
            },
        );
    prop::collection::vec((prop_oneof![2 => attr, 1 => block], stmt_sep()), 0..5)
        .prop_map(join_stmts)
        .boxed()
}

/// Separators inside a block header: between the parts of a dotted name (possibly split by a
/// line break and a comment), before the label and before `{` (spaces or block comments: a line
/// break there would end the header).
fn header_gaps() -> impl Strategy<Value = (&'static str, &'static str, &'static str)> {
    (
        prop::sample::select(vec![
            ".",
            ".",
            ".\n",
            ". // in name\n",
            ".\n\n// in name\n",
            " /* in name */ .",
        ]),
        prop::sample::select(vec![" ", " ", " /* before label */ "]),
        prop::sample::select(vec![" ", " ", " /* before { */ "]),
    )
}

fn join_stmts(stmts: Vec<(String, &'static str)>) -> String {
    let mut s = String::new();
    for (i, (stmt, sep)) in stmts.iter().enumerate() {
        if i > 0 {
            s.push_str(stmts[i - 1].1);
        }
        s.push_str(stmt);
        let _ = sep;
    }
    s
}

fn source() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "// head\n", "/* head */\n\n"]),
        body(2),
        prop::sample::select(vec!["", "\n", "\n// tail\n", "\n\n\n"]),
    )
        .prop_map(|(head, body, tail)| format!("{head}{body}{tail}"))
}

fn check(src: &str) -> Result<(), TestCaseError> {
    let original = match parse_file(src) {
        Ok(f) => f,
        Err(d) => {
            return Err(TestCaseError::fail(format!(
                "generated source does not parse:\n{src}\n{}",
                d.render("gen.river", src)
            )))
        }
    };
    let once = format_source(src).map_err(|d| TestCaseError::fail(d.to_string()))?;
    let reparsed = parse_file(&once).map_err(|d| {
        TestCaseError::fail(format!(
            "formatted output does not parse:\n--- input\n{src}\n--- output\n{once}\n{}",
            d.render("fmt.river", &once)
        ))
    })?;
    prop_assert_eq!(
        erase(&original),
        erase(&reparsed),
        "tree changed:\n--- input\n{}\n--- output\n{}",
        src,
        once
    );
    let twice = format_source(&once).map_err(|d| TestCaseError::fail(d.to_string()))?;
    prop_assert_eq!(&twice, &once, "not idempotent; input:\n{}", src);
    Ok(())
}

proptest! {
    // `PROPTEST_CASES=N` runs more cases.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn format_is_idempotent_and_preserves_the_tree(src in source()) {
        check(&src)?;
    }
}

#[test]
fn erase_spans_ignores_layout_but_not_content() {
    let a = parse_file("a = [1, 2]\n").unwrap();
    let b = parse_file("a   =   [\n1,\n  2,\n]\n").unwrap();
    let c = parse_file("a = [1, 3]\n").unwrap();
    assert_ne!(a.body, b.body);
    assert_eq!(erase(&a), erase(&b));
    assert_ne!(erase(&a), erase(&c));
}

/// Inputs found by `fuzz/` (parse_format) that once crashed; each must be handled without a
/// panic (formatting either succeeds or reports diagnostics).
#[test]
fn fuzz_regressions_do_not_panic() {
    let cases = [
        // An unterminated block label ending in a multi-byte character (the parser sliced
        // inside that character).
        "a \"\u{742}",
        "block \"la ninline { number_field = 1\u{742}",
        "a.b \"é",
        // The same for an unterminated quoted object key.
        "x = {\"é",
        "x = {\"é\n",
    ];
    for src in cases {
        let result = std::panic::catch_unwind(|| format_source(src));
        assert!(result.is_ok(), "formatting panicked on {src:?}");
    }
}
