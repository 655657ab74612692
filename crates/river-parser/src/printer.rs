//! The canonical River formatter (`rill fmt`), compatible with the reference printer of
//! grafana/river: tab indentation, `=` and trailing comments aligned in runs of consecutive lines,
//! comments kept in place, at most one blank line between statements, and arrays, objects and
//! calls laid out on one or several lines following the line breaks of the source.
//!
//! The walker here turns the syntax tree into tokens and symbolic whitespace for the
//! [`engine`], which places comments; the [`tabwriter`] stage then aligns cells and trims lines.

mod engine;
mod tabwriter;

use crate::ast::{Attribute, Block, Expr, ExprKind, File, LitKind, ObjectField, Stmt};
use crate::diag::Diagnostics;
use crate::quote::go_quote;
use engine::{Engine, Kind, Ws};

/// Formats a parsed file. `src` must be the text `file` was parsed from (spans and comments
/// refer to it). The result ends with a newline unless it is empty.
pub fn format_file(file: &File, src: &str) -> String {
    let mut w = Walker {
        e: Engine::new(src, &file.comments),
        src,
    };
    w.stmts(&file.body);
    let raw = w.e.finish();
    let mut out = tabwriter::align_and_trim(&raw);
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Parses `src` and formats it; parse errors are returned as diagnostics.
pub fn format_source(src: &str) -> Result<String, Diagnostics> {
    let file = crate::parse_file(src)?;
    Ok(format_file(&file, src))
}

struct Walker<'a> {
    e: Engine<'a>,
    src: &'a str,
}

/// Source byte offset where an expression starts.
fn expr_start(e: &Expr) -> usize {
    match &e.kind {
        ExprKind::Literal(_) | ExprKind::Ident(_) => e.span.start,
        ExprKind::Array { lbrack, .. } => lbrack.start,
        ExprKind::Object { lcurly, .. } => lcurly.start,
        ExprKind::Access { value, .. }
        | ExprKind::Index { value, .. }
        | ExprKind::Call { func: value, .. } => expr_start(value),
        ExprKind::Unary { op_span, .. } => op_span.start,
        ExprKind::Binary { left, .. } => expr_start(left),
        ExprKind::Paren { lparen, .. } => lparen.start,
    }
}

/// Source byte offset of the last character of an expression.
fn expr_end(e: &Expr) -> usize {
    match &e.kind {
        ExprKind::Literal(_) => e.span.end.saturating_sub(1).max(e.span.start),
        ExprKind::Ident(i) | ExprKind::Access { name: i, .. } => {
            i.span.end.saturating_sub(1).max(i.span.start)
        }
        ExprKind::Array { rbrack, .. } | ExprKind::Index { rbrack, .. } => rbrack.start,
        ExprKind::Object { rcurly, .. } => rcurly.start,
        ExprKind::Call { rparen, .. } | ExprKind::Paren { rparen, .. } => rparen.start,
        ExprKind::Unary { value, .. } => expr_end(value),
        ExprKind::Binary { right, .. } => expr_end(right),
    }
}

fn stmt_start(s: &Stmt) -> usize {
    match s {
        Stmt::Attribute(a) => a.name.span.start,
        Stmt::Block(b) => b.name.first().map_or(b.span.start, |n| n.span.start),
    }
}

fn stmt_end(s: &Stmt) -> usize {
    match s {
        Stmt::Attribute(a) => expr_end(&a.value),
        Stmt::Block(b) => b.rcurly.start,
    }
}

impl Walker<'_> {
    fn different_lines(&self, a: usize, b: usize) -> bool {
        self.e.line(a) != self.e.line(b)
    }

    fn stmts(&mut self, stmts: &[Stmt]) {
        for (i, s) in stmts.iter().enumerate() {
            if i > 0 {
                // A block is always preceded by a blank line; otherwise a blank line of the
                // source is kept.
                let prev_end = stmt_end(&stmts[i - 1]);
                if matches!(s, Stmt::Block(_))
                    || self.e.line(stmt_start(s)) > self.e.line(prev_end) + 1
                {
                    self.e.ws(Ws::Formfeed);
                }
            }
            let mark = match s {
                Stmt::Attribute(a) => self.attribute(a),
                Stmt::Block(b) => self.block(b),
            };
            // A statement printed on several lines ends the alignment run. (The reference
            // printer asks whether it spans several lines of the source; asking about the
            // output gives the same answer on formatted input and keeps formatting idempotent
            // when a line break disappears, as in `[\n]` becoming `[]`.)
            if self.e.lines_written() > mark {
                self.e.ws(Ws::Formfeed);
            } else {
                self.e.ws(Ws::Newline);
            }
        }
    }

    /// Writes an attribute; returns the number of lines written before its value.
    fn attribute(&mut self, a: &Attribute) -> usize {
        self.e.set_pos(a.name.span.start);
        self.e.token(&a.name.name, Kind::Ident);
        let mark = self.e.lines_written();
        self.e.ws(Ws::VTab);
        self.e.token("=", Kind::Punct);
        self.e.ws(Ws::Blank);
        self.expr(&a.value);
        mark
    }

    /// The text of a quoted string at `span` in the source, if it is one.
    fn quoted_source(&self, start: usize, end: usize) -> Option<&str> {
        let text = self.src.get(start..end)?;
        (text.len() >= 2 && text.starts_with('"') && text.ends_with('"')).then_some(text)
    }

    /// Writes a block; returns the number of lines written before its label.
    fn block(&mut self, b: &Block) -> usize {
        let start = b.name.first().map_or(b.span.start, |n| n.span.start);
        // Comments inside the header (in a dotted name, or around the label) are written before
        // the block: a line comment there would otherwise end the header before its `{`.
        self.e.set_pos_pulling_comments(start, b.lcurly.start);
        self.e.token(&b.full_name(), Kind::Ident);
        let mark = self.e.lines_written();
        if let Some(label) = &b.label {
            let label_span = b.label_span.unwrap_or(b.span);
            let text = self
                .quoted_source(label_span.start, label_span.end)
                .map_or_else(|| go_quote(label), str::to_string);
            self.e.ws(Ws::Blank);
            self.e.set_pos(label_span.start);
            self.e.token(&text, Kind::Literal);
        }
        self.e.ws(Ws::Blank);
        self.e.set_pos(b.lcurly.start);
        self.e.token("{", Kind::Punct);
        self.e.ws(Ws::Indent);
        if b.body.is_empty() {
            self.e.ws(Ws::Blank);
        } else {
            self.e.ws(Ws::Formfeed);
            self.stmts(&b.body);
        }
        self.e.ws(Ws::Unindent);
        self.e.set_pos(b.rcurly.start);
        self.e.token("}", Kind::Punct);
        mark
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Literal(lit) => {
                self.e.set_pos(e.span.start);
                let kind = if matches!(lit.kind, LitKind::Number(_)) {
                    Kind::Number
                } else {
                    Kind::Literal
                };
                self.e.token(&lit.raw, kind);
            }
            ExprKind::Ident(i) => {
                self.e.set_pos(i.span.start);
                self.e.token(&i.name, Kind::Ident);
            }
            ExprKind::Array {
                elements,
                lbrack,
                rbrack,
            } => self.array(elements, lbrack.start, rbrack.start),
            ExprKind::Object {
                fields,
                lcurly,
                rcurly,
            } => self.object(fields, lcurly.start, rcurly.start),
            ExprKind::Access { value, name } => {
                self.expr(value);
                self.e.token(".", Kind::Punct);
                self.e.token(&name.name, Kind::Ident);
            }
            ExprKind::Index {
                value,
                index,
                lbrack,
                rbrack,
            } => {
                self.expr(value);
                self.e.set_pos(lbrack.start);
                self.e.token("[", Kind::Punct);
                self.expr(index);
                self.e.set_pos(rbrack.start);
                self.e.token("]", Kind::Punct);
            }
            ExprKind::Call {
                func,
                args,
                lparen,
                rparen,
            } => self.call(func, args, lparen.start, rparen.start),
            ExprKind::Unary { op, op_span, value } => {
                self.e.set_pos(op_span.start);
                self.e.token(op.as_str(), Kind::Punct);
                self.expr(value);
            }
            ExprKind::Binary {
                op,
                op_span,
                left,
                right,
            } => {
                self.expr(left);
                self.e.ws(Ws::Blank);
                self.e.set_pos(op_span.start);
                self.e.token(op.as_str(), Kind::Punct);
                self.e.ws(Ws::Blank);
                self.expr(right);
            }
            ExprKind::Paren {
                inner,
                lparen,
                rparen,
            } => {
                // Unlike the reference printer, parentheses keep their source positions so a
                // comment after `)` is not mistaken for one on a later line.
                self.e.set_pos(lparen.start);
                self.e.token("(", Kind::Punct);
                self.expr(inner);
                self.e.set_pos(rparen.start);
                self.e.token(")", Kind::Punct);
            }
        }
    }

    fn array(&mut self, elements: &[Expr], lbrack: usize, rbrack: usize) {
        self.e.set_pos(lbrack);
        self.e.token("[", Kind::Punct);
        let mut prev = lbrack;
        for (i, el) in elements.iter().enumerate() {
            let own_line = self.different_lines(prev, expr_start(el));
            if own_line {
                // Indent before the line break so comments before the element are indented too.
                self.e.ws(Ws::Indent);
                self.e.ws(Ws::Formfeed);
            } else if i > 0 {
                self.e.ws(Ws::Blank);
            }
            prev = expr_end(el);
            self.expr(el);
            if i + 1 < elements.len() {
                self.e.token(",", Kind::Punct);
            }
            if own_line {
                self.e.ws(Ws::Unindent);
            }
        }
        if !elements.is_empty() && self.different_lines(prev, rbrack) {
            // A closing bracket on its own line gets a trailing comma.
            self.e.token(",", Kind::Punct);
            self.e.ws(Ws::Indent);
            self.e.ws(Ws::Formfeed);
            self.e.ws(Ws::Unindent);
        }
        self.e.set_pos(rbrack);
        self.e.token("]", Kind::Punct);
    }

    fn object(&mut self, fields: &[ObjectField], lcurly: usize, rcurly: usize) {
        self.e.set_pos(lcurly);
        self.e.token("{", Kind::Punct);
        self.e.ws(Ws::Indent);
        let mut prev = lcurly;
        let mut prev_one_line = false;
        for (i, f) in fields.iter().enumerate() {
            let start = f.name_span.start;
            if self.different_lines(prev, start) {
                // Keep aligning `=` while the previous field's value fit on one line (of the
                // output, for the same reason as statements).
                self.e.ws(if i > 0 && prev_one_line {
                    Ws::Newline
                } else {
                    Ws::Formfeed
                });
            } else if i > 0 {
                self.e.ws(Ws::Blank);
            }
            prev = f.name_span.end.saturating_sub(1).max(start);
            self.e.set_pos(start);
            if f.quoted {
                let text = self
                    .quoted_source(f.name_span.start, f.name_span.end)
                    .map_or_else(|| go_quote(&f.name), str::to_string);
                self.e.token(&text, Kind::Literal);
            } else {
                self.e.token(&f.name, Kind::Ident);
            }
            self.e.ws(Ws::VTab);
            self.e.token("=", Kind::Punct);
            let mark = self.e.lines_written();
            self.e.ws(Ws::Blank);
            self.expr(&f.value);
            prev_one_line = self.e.lines_written() == mark;
            if i + 1 < fields.len() {
                self.e.token(",", Kind::Punct);
            }
        }
        if !fields.is_empty() && self.different_lines(prev, rcurly) {
            self.e.token(",", Kind::Punct);
            self.e.ws(Ws::Formfeed);
        }
        self.e.ws(Ws::Unindent);
        self.e.set_pos(rcurly);
        self.e.token("}", Kind::Punct);
    }

    fn call(&mut self, func: &Expr, args: &[Expr], lparen: usize, rparen: usize) {
        self.expr(func);
        self.e.set_pos(lparen);
        self.e.token("(", Kind::Punct);
        let mut prev = lparen;
        for (i, arg) in args.iter().enumerate() {
            let own_line = self.different_lines(prev, expr_start(arg));
            if own_line {
                self.e.ws(Ws::Formfeed);
                self.e.ws(Ws::Indent);
            }
            self.expr(arg);
            prev = expr_end(arg);
            if i + 1 < args.len() {
                self.e.token(",", Kind::Punct);
                self.e.ws(Ws::Blank);
            }
            if own_line {
                self.e.ws(Ws::Unindent);
            }
        }
        if !args.is_empty() && self.different_lines(prev, rparen) {
            self.e.token(",", Kind::Punct);
            self.e.ws(Ws::Formfeed);
        }
        self.e.set_pos(rparen);
        self.e.token(")", Kind::Punct);
    }
}

#[cfg(test)]
mod tests {
    use super::{format_source, go_quote};

    #[test]
    fn crlf_input_gives_lf_output() {
        let out = format_source("a = 1\r\nbb = 2 // c\r\n\r\nblock {\r\n}\r\n").unwrap();
        assert_eq!(out, "a  = 1\nbb = 2 // c\n\nblock { }\n");
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(format_source("").unwrap(), "");
        assert_eq!(format_source("\n\n").unwrap(), "");
        assert_eq!(
            format_source("// only\n\n\n/* c */\n").unwrap(),
            "// only\n\n/* c */\n"
        );
    }

    #[test]
    fn form_feed_inside_a_comment_is_not_a_line_break() {
        // Found by fuzz/parse_format: the next comment was joined onto this one.
        let src = "a = 1 // x\x0cy\n// next\nb = 2\n";
        assert_eq!(format_source(src).unwrap(), src);
    }

    #[test]
    fn line_comment_never_swallows_the_next_token() {
        let out = format_source("x = f(1, // c\n)\n").unwrap();
        assert_eq!(out, "x = f(1, // c\n)\n");
        let out = format_source("x = f(// c\n1)\n").unwrap();
        assert_eq!(out, "x = f( // c\n\t1)\n");
    }

    /// Formats `src` (which must parse) and checks the output parses, is a fixed point and keeps
    /// every comment; returns the output.
    fn stable(src: &str) -> String {
        let before = crate::parse_file(src).unwrap_or_else(|d| panic!("input {src:?}: {d:?}"));
        let out = format_source(src).unwrap();
        let after = crate::parse_file(&out)
            .unwrap_or_else(|d| panic!("output of {src:?} does not parse:\n{out}\n{d:?}"));
        let again = format_source(&out).unwrap();
        assert_eq!(again, out, "not idempotent for {src:?}");
        let texts = |f: &crate::ast::File| {
            f.comments
                .iter()
                .map(|c| c.text.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(&before),
            texts(&after),
            "comments changed for {src:?}"
        );
        assert_eq!(before.body.len(), after.body.len());
        out
    }

    #[test]
    fn comment_inside_block_header_goes_before_the_block() {
        // Found by fuzz/river_eval: the line comment ended up between `a.b` and `{`.
        assert_eq!(stable("a.\n\n// c\nb {\n}\n"), "// c\na.b { }\n");
        assert_eq!(stable("a.// c\nb {\n}\n"), "// c\na.b { }\n");
        assert_eq!(stable("a /* c */ .b {\n}\n"), "/* c */ a.b { }\n");
        assert_eq!(stable("a /* c */ \"l\" {\n}\n"), "/* c */ a \"l\" { }\n");
        assert_eq!(stable("a \"l\" /* c */ {\n}\n"), "/* c */ a \"l\" { }\n");
        assert_eq!(
            stable("x = 1\na.\n// c\nb.\n// d\nc \"l\" { y = 2 }\n"),
            "x = 1\n// c\n\n// d\na.b.c \"l\" {\n\ty = 2\n}\n"
        );
        assert_eq!(
            stable("outer {\n\ta.\n\t// c\n\tb {\n\t}\n}\n"),
            "outer {\n\t// c\n\ta.b { }\n}\n"
        );
        stable("p { a /* c */ { } }\n");
        // Found by roundtrip_prop: the block comment was joined onto the line comment.
        assert_eq!(stable("a. // c\na /* d */ {}"), "// c\n/* d */ a.a { }\n");
        stable("a.\n/* x\ny */ b \"l\" {\n}\n");
    }

    #[test]
    fn comment_in_attribute_name_gap_stays_parseable() {
        stable("a /* c */ = 1\n");
        stable("a = /* c */ 1\n");
        stable("blk {\n\ta /* c */ = 1\n\tbb = 2 // t\n}\n");
        stable("o = { k /* c */ = 1 }\n");
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("abc"), "\"abc\"");
        assert_eq!(go_quote("a\"b\\c\n\t"), "\"a\\\"b\\\\c\\n\\t\"");
        assert_eq!(go_quote("\u{1}é\u{a0}"), "\"\\x01é\\u00a0\"");
    }
}
