//! River lexer.
//!
//! The source is first split into raw lexemes, then turned into [`Token`]s the way the reference
//! scanner (grafana/river `scanner`) does: keywords are looked up, strings are checked for valid
//! escape sequences, and a `TERMINATOR` is inserted Go-style at a newline (or end of input, or a
//! comment that runs to the end of the line) following an identifier, literal, `)`, `]` or `}`.
//! Lexical errors never stop the scan; they are collected with the exact position and message of
//! the reference scanner. Tokens borrow their text from the source.
//!
//! Two scanners produce the raw lexemes. The pest grammar `river.pest` is the grammar of record
//! and the test oracle ([`tokenize_with_pest`]); production uses a hand-written byte scanner
//! ([`tokenize`]) because pest measured ~4-5 MB/s against ~30+ MB/s for the byte scanner on the
//! 6 MB `parse_eval` benchmark config. A differential test (`tests/lexer_diff.rs`) asserts that
//! both give identical tokens and errors on random inputs and every peer/golden input.

use crate::diag::Diagnostic;
use crate::span::Span;
use pest::Parser as _;
use std::borrow::Cow;

mod grammar {
    #![allow(missing_docs)]
    use pest_derive::Parser;

    /// The pest token grammar.
    #[derive(Parser)]
    #[grammar = "river.pest"]
    pub(super) struct RawLexer;
}

use grammar::{RawLexer, Rule};

/// The kind of a token. [`TokenKind::name`] is the name the reference prints in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Illegal,
    Eof,
    Comment,
    Ident,
    Number,
    Float,
    String,
    Bool,
    Null,
    Or,
    And,
    Not,
    Assign,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    LCurly,
    RCurly,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    Colon,
    Question,
    Terminator,
}

impl TokenKind {
    /// The token's name as the reference prints it: `IDENT`, `NUMBER`, ..., operators as
    /// themselves.
    pub fn name(self) -> &'static str {
        use TokenKind::*;
        match self {
            Illegal => "ILLEGAL",
            Eof => "EOF",
            Comment => "COMMENT",
            Ident => "IDENT",
            Number => "NUMBER",
            Float => "FLOAT",
            String => "STRING",
            Bool => "BOOL",
            Null => "NULL",
            Or => "||",
            And => "&&",
            Not => "!",
            Assign => "=",
            Eq => "==",
            Neq => "!=",
            Lt => "<",
            Lte => "<=",
            Gt => ">",
            Gte => ">=",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
            LCurly => "{",
            RCurly => "}",
            LParen => "(",
            RParen => ")",
            LBrack => "[",
            RBrack => "]",
            Comma => ",",
            Dot => ".",
            Colon => ":",
            Question => "?",
            Terminator => "TERMINATOR",
        }
    }

    fn operator(text: &str) -> TokenKind {
        use TokenKind::*;
        match text {
            "||" | "|" => Or,
            "&&" | "&" => And,
            "!" => Not,
            "=" => Assign,
            "==" => Eq,
            "!=" => Neq,
            "<" => Lt,
            "<=" => Lte,
            ">" => Gt,
            ">=" => Gte,
            "+" => Add,
            "-" => Sub,
            "*" => Mul,
            "/" => Div,
            "%" => Mod,
            "^" => Pow,
            "{" => LCurly,
            "}" => RCurly,
            "(" => LParen,
            ")" => RParen,
            "[" => LBrack,
            "]" => RBrack,
            "," => Comma,
            "." => Dot,
            ":" => Colon,
            "?" => Question,
            _ => Illegal,
        }
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One token. `text` is the token as written, borrowed from the source (for comments without
/// carriage returns, which is the only case that owns its text; for a `TERMINATOR` `"\n"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub span: Span,
    pub text: Cow<'a, str>,
}

/// The result of [`tokenize`]: every token (comments included, ending with `EOF`) and the
/// lexical errors in source order.
#[derive(Debug, Clone, Default)]
pub struct Lexed<'a> {
    pub tokens: Vec<Token<'a>>,
    pub errors: Vec<Diagnostic>,
}

const BOM: char = '\u{FEFF}';

/// The kind of a raw lexeme, one per lexeme rule of `river.pest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    Newline,
    LineComment,
    BlockComment,
    DqString,
    SqString,
    RawString,
    Number,
    Ident,
    Operator,
    Illegal,
}

/// A raw lexeme `src[start..end]`, what both scanners produce and [`build`] turns into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    kind: RawKind,
    start: usize,
    end: usize,
    /// Strings and block comments: the closing delimiter is present.
    closed: bool,
    /// Numbers: has a fraction or an exponent (or starts with `.`).
    float: bool,
    /// Numbers: has an exponent without digits.
    bad_exp: bool,
}

impl Raw {
    fn new(kind: RawKind, start: usize, end: usize) -> Raw {
        Raw {
            kind,
            start,
            end,
            closed: false,
            float: false,
            bad_exp: false,
        }
    }
}

/// Splits `src` into tokens, inserting terminators. Never fails: errors are returned alongside.
///
/// Uses the hand-written byte scanner [`Scanner`]; [`tokenize_with_pest`] gives the same result
/// through the pest grammar.
pub fn tokenize(src: &str) -> Lexed<'_> {
    build(src, Scanner { src, pos: 0 })
}

/// [`tokenize`] driven by the pest grammar `river.pest`, the grammar of record. Slow; kept as the
/// executable specification the hand-written scanner is tested against.
pub fn tokenize_with_pest(src: &str) -> Lexed<'_> {
    match RawLexer::parse(Rule::stream, src) {
        Ok(pairs) => {
            let raws: Vec<Raw> = pairs
                .filter(|p| p.as_rule() != Rule::EOI)
                .map(raw_of_pair)
                .collect();
            build(src, raws.into_iter())
        }
        Err(e) => {
            // The grammar accepts any input; this is only reachable through a grammar bug.
            let mut out = build(src, std::iter::empty());
            out.errors
                .insert(0, err(0, 0, format!("internal lexer error: {e}")));
            out
        }
    }
}

fn raw_of_pair(p: pest::iterators::Pair<'_, Rule>) -> Raw {
    let span = p.as_span();
    let kind = match p.as_rule() {
        Rule::newline => RawKind::Newline,
        Rule::line_comment => RawKind::LineComment,
        Rule::block_comment => RawKind::BlockComment,
        Rule::dq_string => RawKind::DqString,
        Rule::sq_string => RawKind::SqString,
        Rule::raw_string => RawKind::RawString,
        Rule::number => RawKind::Number,
        Rule::ident => RawKind::Ident,
        Rule::operator => RawKind::Operator,
        _ => RawKind::Illegal,
    };
    let mut raw = Raw::new(kind, span.start(), span.end());
    if kind == RawKind::Number {
        raw.float = p.as_str().starts_with('.');
    }
    for part in p.into_inner() {
        match part.as_rule() {
            Rule::close_comment | Rule::close_quote => raw.closed = true,
            Rule::fraction => raw.float = true,
            Rule::exponent => {
                raw.float = true;
                raw.bad_exp = !part.as_str().bytes().any(|b| b.is_ascii_digit());
            }
            _ => {}
        }
    }
    raw
}

/// The hand-written scanner: splits `src` into raw lexemes exactly like the `stream` rule of
/// `river.pest` (same alternatives in the same order), but a byte at a time. Cloning it gives
/// cheap lookahead.
#[derive(Clone)]
pub(crate) struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl Iterator for Scanner<'_> {
    type Item = Raw;

    fn next(&mut self) -> Option<Raw> {
        let src = self.src;
        let b = src.as_bytes();
        let len = b.len();
        let digits = |mut i: usize| {
            while i < len && b[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let mut i = self.pos;
        while i < len && matches!(b[i], b' ' | b'\t' | b'\r') {
            i += 1;
        }
        if i >= len {
            self.pos = i;
            return None;
        }
        let start = i;
        let c = b[i];
        let next = b.get(i + 1).copied();
        let raw = match c {
            b'\n' => Raw::new(RawKind::Newline, start, start + 1),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                Raw::new(RawKind::Ident, start, ident_end(src, start + 1))
            }
            b'0'..=b'9' => {
                let mut raw = Raw::new(RawKind::Number, start, digits(start + 1));
                if b.get(raw.end) == Some(&b'.') {
                    raw.float = true;
                    raw.end = digits(raw.end + 1);
                }
                exponent(b, &mut raw, digits);
                raw
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let mut raw = Raw::new(RawKind::Number, start, digits(start + 1));
                raw.float = true;
                exponent(b, &mut raw, digits);
                raw
            }
            b'"' => quoted(b, start, b'"', RawKind::DqString),
            b'/' if next == Some(b'/') => {
                let end = find_byte(b, start + 2, b'\n').unwrap_or(len);
                Raw::new(RawKind::LineComment, start, end)
            }
            b'/' if next == Some(b'*') => {
                let mut raw = Raw::new(RawKind::BlockComment, start, len);
                let mut j = start + 2;
                while let Some(k) = find_byte(b, j, b'*') {
                    if b.get(k + 1) == Some(&b'/') {
                        raw.end = k + 2;
                        raw.closed = true;
                        break;
                    }
                    j = k + 1;
                }
                raw
            }
            b'|' | b'&' | b'!' | b'=' | b'<' | b'>' => {
                let two = matches!(
                    (c, next),
                    (b'|', Some(b'|'))
                        | (b'&', Some(b'&'))
                        | (b'!' | b'=' | b'<' | b'>', Some(b'='))
                );
                Raw::new(RawKind::Operator, start, start + 1 + usize::from(two))
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'{' | b'}' | b'(' | b')' | b'[' | b']'
            | b',' | b'.' | b':' | b'?' => Raw::new(RawKind::Operator, start, start + 1),
            b'`' => match find_byte(b, start + 1, b'`') {
                Some(k) => Raw {
                    closed: true,
                    ..Raw::new(RawKind::RawString, start, k + 1)
                },
                None => Raw::new(RawKind::RawString, start, len),
            },
            b'\'' => quoted(b, start, b'\'', RawKind::SqString),
            0x80.. => {
                let ch = src[start..].chars().next().unwrap_or('\0');
                if pest::unicode::LETTER(ch) {
                    Raw::new(RawKind::Ident, start, ident_end(src, start + ch.len_utf8()))
                } else {
                    Raw::new(RawKind::Illegal, start, start + ch.len_utf8())
                }
            }
            _ => Raw::new(RawKind::Illegal, start, start + 1),
        };
        self.pos = raw.end;
        Some(raw)
    }
}

/// The end of an identifier whose first character ends at `i`.
fn ident_end(src: &str, mut i: usize) -> usize {
    let b = src.as_bytes();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            i += 1;
        } else if c >= 0x80 {
            let ch = src[i..].chars().next().unwrap_or('\0');
            if pest::unicode::LETTER(ch) || pest::unicode::DECIMAL_NUMBER(ch) {
                i += ch.len_utf8();
            } else {
                break;
            }
        } else {
            break;
        }
    }
    i
}

/// Extends the number `raw` with an optional exponent.
fn exponent(b: &[u8], raw: &mut Raw, digits: impl Fn(usize) -> usize) {
    if matches!(b.get(raw.end), Some(b'e' | b'E')) {
        raw.float = true;
        let mut j = raw.end + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let end = digits(j);
        raw.bad_exp = end == j;
        raw.end = end;
    }
}

/// A string in `quote`s where a backslash takes the next character (unless it is a newline); it
/// ends at the closing quote, before a newline or at the end of the input.
fn quoted(b: &[u8], start: usize, quote: u8, kind: RawKind) -> Raw {
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 1;
            if i < b.len() && b[i] != b'\n' {
                // A multi-byte character's continuation bytes are skipped by the loop.
                i += 1;
            }
        } else if c == quote {
            return Raw {
                closed: true,
                ..Raw::new(kind, start, i + 1)
            };
        } else if c == b'\n' {
            break;
        } else {
            i += 1;
        }
    }
    Raw::new(kind, start, i)
}

fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == needle)
        .map(|k| from + k)
}

/// Turns raw lexemes into tokens: keywords, terminators, escape checks and lexical errors.
fn build<'a>(src: &'a str, raws: impl Iterator<Item = Raw> + Clone) -> Lexed<'a> {
    let mut stream = TokenStream::new(src, raws);
    let mut tokens = Vec::with_capacity(src.len() / 5 + 2);
    tokens.extend(&mut stream);
    Lexed {
        tokens,
        errors: stream.finish(),
    }
}

/// The tokens of `src` from the hand-written scanner, produced on demand (the parser pulls them
/// one at a time instead of holding a vector of every token). Errors are read with
/// [`TokenStream::finish`] once the stream is exhausted.
pub(crate) fn stream(src: &str) -> TokenStream<'_, Scanner<'_>> {
    TokenStream::new(src, Scanner { src, pos: 0 })
}

/// Turns raw lexemes into tokens one at a time: keywords, terminators, escape checks and lexical
/// errors. Ends with an `EOF` token.
pub(crate) struct TokenStream<'a, I> {
    src: &'a str,
    raws: I,
    insert_term: bool,
    /// A token to return next (a comment after the terminator inserted before it, or `EOF`).
    pending: Option<Token<'a>>,
    done: bool,
    errors: Vec<Diagnostic>,
}

impl<'a, I: Iterator<Item = Raw> + Clone> TokenStream<'a, I> {
    fn new(src: &'a str, raws: I) -> Self {
        let mut errors = Vec::new();
        // Characters that are illegal wherever they appear (even inside strings and comments):
        // NUL and a byte order mark (EF BB BF) other than the first character.
        for (i, &c) in src.as_bytes().iter().enumerate() {
            if c == 0 {
                errors.push(err(i, 1, "illegal character NUL"));
            } else if c == 0xEF && i > 0 && src.as_bytes()[i..].starts_with(&[0xEF, 0xBB, 0xBF]) {
                errors.push(err(i, BOM.len_utf8(), "illegal byte order mark"));
            }
        }
        TokenStream {
            src,
            raws,
            insert_term: false,
            pending: None,
            done: false,
            errors,
        }
    }

    /// The lexical errors, sorted by position, with every span inside the source and on
    /// character boundaries. Call after the stream is exhausted.
    pub(crate) fn finish(mut self) -> Vec<Diagnostic> {
        let src = self.src;
        for e in &mut self.errors {
            let clamp = |mut i: usize| {
                i = i.min(src.len());
                while !src.is_char_boundary(i) {
                    i += 1;
                }
                i
            };
            e.span.start = clamp(e.span.start);
            e.span.end = clamp(e.span.end.max(e.span.start));
        }
        self.errors.sort_by_key(|d| d.span.start);
        self.errors
    }
}

impl<'a, I: Iterator<Item = Raw> + Clone> Iterator for TokenStream<'a, I> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(t) = self.pending.take() {
            return Some(t);
        }
        if self.done {
            return None;
        }
        let src = self.src;
        let tok = |kind: TokenKind, span: Span, text: &'a str| Token {
            kind,
            span,
            text: Cow::Borrowed(text),
        };
        loop {
            let Some(raw) = self.raws.next() else {
                self.done = true;
                let end = Span::new(src.len(), src.len());
                let eof = tok(TokenKind::Eof, end, "");
                if std::mem::take(&mut self.insert_term) {
                    self.pending = Some(eof);
                    return Some(tok(TokenKind::Terminator, end, "\n"));
                }
                return Some(eof);
            };
            let span = Span::new(raw.start, raw.end);
            let text = &src[raw.start..raw.end];
            let errors = &mut self.errors;
            match raw.kind {
                RawKind::Newline => {
                    if self.insert_term {
                        self.insert_term = false;
                        return Some(tok(TokenKind::Terminator, span, "\n"));
                    }
                }
                RawKind::LineComment | RawKind::BlockComment => {
                    let block = raw.kind == RawKind::BlockComment;
                    let term = self.insert_term && comment_ends_line(src, raw, self.raws.clone());
                    if block && !raw.closed {
                        errors.push(err(span.start, 2, "block comment not terminated"));
                    }
                    let trimmed = text.trim_end_matches('\r');
                    let text = if trimmed.contains('\r') {
                        Cow::Owned(strip_cr(trimmed, block))
                    } else {
                        Cow::Borrowed(trimmed)
                    };
                    let comment = Token {
                        kind: TokenKind::Comment,
                        span: Span::new(span.start, span.start + trimmed.len()),
                        text,
                    };
                    self.insert_term = false;
                    if term {
                        self.pending = Some(comment);
                        let at = Span::new(span.start, span.start);
                        return Some(tok(TokenKind::Terminator, at, "\n"));
                    }
                    return Some(comment);
                }
                RawKind::DqString | RawKind::SqString | RawKind::RawString => {
                    let closed = raw.closed;
                    let kind = if raw.kind == RawKind::SqString {
                        errors.push(err(
                            span.start,
                            span.end - span.start,
                            "illegal single-quoted string; use double quotes",
                        ));
                        TokenKind::Illegal
                    } else {
                        TokenKind::String
                    };
                    if raw.kind != RawKind::RawString {
                        let body_end = if closed { span.end - 1 } else { span.end };
                        // Only escapes can be invalid.
                        if src.as_bytes()[span.start + 1..body_end].contains(&b'\\') {
                            decode_escapes(src, span.start + 1, body_end, errors);
                        }
                    }
                    if !closed {
                        errors.push(err(
                            span.start,
                            span.end - span.start,
                            "string literal not terminated",
                        ));
                    }
                    self.insert_term = true;
                    return Some(tok(kind, span, text));
                }
                RawKind::Number => {
                    let kind = if raw.float {
                        TokenKind::Float
                    } else {
                        TokenKind::Number
                    };
                    if raw.bad_exp {
                        errors.push(err(
                            span.start,
                            span.end - span.start,
                            "exponent has no digits",
                        ));
                    }
                    self.insert_term = true;
                    return Some(tok(kind, span, text));
                }
                RawKind::Ident => {
                    let kind = match text {
                        "true" | "false" => TokenKind::Bool,
                        "null" => TokenKind::Null,
                        _ => TokenKind::Ident,
                    };
                    self.insert_term = true;
                    return Some(tok(kind, span, text));
                }
                RawKind::Operator => {
                    let kind = TokenKind::operator(text);
                    if text == "|" {
                        errors.push(err(span.end, 1, "missing second | in ||"));
                    } else if text == "&" {
                        errors.push(err(span.end, 1, "missing second & in &&"));
                    }
                    self.insert_term = matches!(
                        kind,
                        TokenKind::RCurly | TokenKind::RParen | TokenKind::RBrack
                    );
                    return Some(tok(kind, span, text));
                }
                RawKind::Illegal => {
                    // One character that starts no token.
                    let c = text.chars().next().unwrap_or('\0');
                    if c == BOM && span.start == 0 {
                        continue; // A byte order mark is allowed as the very first character.
                    }
                    if c != BOM && c != '\0' {
                        errors.push(err(
                            span.start,
                            span.end - span.start,
                            format!("illegal character {}", go_rune(c)),
                        ));
                    }
                    // The terminator state is left as it was.
                    return Some(tok(TokenKind::Illegal, span, text));
                }
            }
        }
    }
}

/// Removes carriage returns from a comment, like the reference: except a `\r` between `*` and
/// `/` inside a block comment, whose removal would create a premature `*/`.
fn strip_cr(text: &str, block: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for (j, ch) in text.char_indices() {
        if ch == '\r' {
            let keep =
                block && out.len() > 2 && out.ends_with('*') && text[j + 1..].starts_with('/');
            if !keep {
                continue;
            }
        }
        out.push(ch);
    }
    out
}

fn err(start: usize, len: usize, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new(Span::new(start, start + len), msg)
}

/// Whether the comment at `raws[0]` (and the comments following it on the same line) runs to
/// the end of its line, so a pending terminator goes before it.
fn comment_ends_line(src: &str, first: Raw, mut rest: impl Iterator<Item = Raw>) -> bool {
    let mut raw = first;
    loop {
        match raw.kind {
            RawKind::LineComment => return true,
            RawKind::BlockComment => {
                if !raw.closed || src[raw.start..raw.end].contains('\n') {
                    return true;
                }
            }
            _ => return false,
        }
        match rest.next() {
            None => return true,
            Some(r) if r.kind == RawKind::Newline => return true,
            Some(r) if matches!(r.kind, RawKind::LineComment | RawKind::BlockComment) => raw = r,
            Some(_) => return false,
        }
    }
}

/// Formats a character like Go's `%#U`: `U+0024 '$'` (without the quoted form if unprintable).
pub fn go_rune(c: char) -> String {
    let printable = !c.is_control()
        && (c == ' ' || !c.is_whitespace())
        && !matches!(c, '\u{FEFF}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}');
    if printable {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Validates (reporting into `errors`) and decodes the escape sequences of the string body
/// `src[start..end]`. Octal and `\x` escapes produce raw bytes, `\u`/`\U` code points; a byte
/// sequence that is not UTF-8 is decoded lossily.
fn decode_escapes(src: &str, start: usize, end: usize, errors: &mut Vec<Diagnostic>) -> String {
    let body = &src[start..end];
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    // The character after the body (closing quote, newline or end of input) as the reference
    // scanner would see it when an escape runs into it.
    let after = src[end..].chars().next();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(&(j, e)) = chars.peek() else {
            let off = start + i + 1;
            let msg = match after {
                None => "escape sequence not terminated",
                Some(_) => "unknown escape sequence",
            };
            errors.push(err(off, 1, msg));
            continue;
        };
        let off = start + j;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0C),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0B),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            chars.next();
            out.push(b);
            continue;
        }
        let (digits, base, max): (u32, u32, u32) = match e {
            '0'..='7' => (3, 8, 255),
            'x' => (2, 16, 255),
            'u' => (4, 16, 0x10FFFF),
            'U' => (8, 16, 0x10FFFF),
            _ => {
                // Unknown escape: reported, the character itself is kept as text.
                errors.push(err(off, e.len_utf8(), "unknown escape sequence"));
                continue;
            }
        };
        if e.is_ascii_alphabetic() {
            chars.next();
        }
        let mut value: u32 = 0;
        let mut ok = true;
        for _ in 0..digits {
            let next = chars.peek().map(|&(_, d)| d);
            let d = next.and_then(|d| d.to_digit(base));
            match d {
                Some(d) => {
                    value = value * base + d;
                    chars.next();
                }
                None => {
                    let msg = match next.or(after) {
                        None => "escape sequence not terminated".to_string(),
                        Some(bad) => {
                            format!("illegal character {} in escape sequence", go_rune(bad))
                        }
                    };
                    let len = src[off..].chars().next().map_or(1, char::len_utf8);
                    errors.push(err(off, len, msg));
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let esc_len = digits as usize + usize::from(e.is_ascii_alphabetic());
        if value > max || (0xD800..0xE000).contains(&value) {
            errors.push(err(
                off,
                esc_len,
                "escape sequence is invalid Unicode code point",
            ));
            continue;
        }
        if max == 255 {
            out.push(value as u8);
        } else if let Some(ch) = char::from_u32(value) {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Decodes a STRING token's text (`"..."` with escapes, or `` `...` `` raw) into its value.
/// Escape errors were already reported by [`tokenize`]; here they are ignored.
pub fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('`') {
        let inner = inner.strip_suffix('`').unwrap_or(inner);
        // Like Go, carriage returns are dropped from raw strings.
        if !inner.contains('\r') {
            return inner.to_string();
        }
        return inner.replace('\r', "");
    }
    let start = usize::from(raw.starts_with('"'));
    let end = if is_closed_dq(raw) {
        raw.len() - 1
    } else {
        raw.len()
    };
    let end = end.max(start);
    if !raw.as_bytes()[start..end].contains(&b'\\') {
        return raw[start..end].to_string();
    }
    let mut ignored = Vec::new();
    decode_escapes(raw, start, end, &mut ignored)
}

/// Whether a double-quoted token text ends with its closing quote (not an escaped one).
fn is_closed_dq(raw: &str) -> bool {
    if raw.len() < 2 || !raw.ends_with('"') {
        return false;
    }
    // Count the backslashes before the final quote: an odd number escapes it.
    let body = &raw[1..raw.len() - 1];
    let trailing = body.bytes().rev().take_while(|&b| b == b'\\').count();
    trailing % 2 == 0
}

/// Whether `s` is a valid River identifier: exactly one IDENT token (not a keyword), like the
/// reference's `IsValidIdentifier`.
pub fn is_valid_identifier(s: &str) -> bool {
    if matches!(s, "true" | "false" | "null") {
        return false;
    }
    let Some(first) = s.chars().next() else {
        return false;
    };
    let starts = first.is_ascii_alphabetic()
        || first == '_'
        || (!first.is_ascii() && pest::unicode::LETTER(first));
    starts && ident_end(s, first.len_utf8()) == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokenKind, String)> {
        tokenize(src)
            .tokens
            .into_iter()
            .map(|t| (t.kind, t.text.into_owned()))
            .collect()
    }

    fn one(src: &str) -> (TokenKind, String, Vec<String>) {
        let lexed = tokenize(src);
        let t = &lexed.tokens[0];
        let errors = lexed.errors.iter().map(|e| e.message.clone()).collect();
        (t.kind, t.text.to_string(), errors)
    }

    fn errors_at(src: &str) -> Vec<(usize, String)> {
        tokenize(src)
            .errors
            .into_iter()
            .map(|e| (e.span.start, e.message))
            .collect()
    }

    #[test]
    fn numbers_and_floats() {
        for (src, kind) in [
            ("0", TokenKind::Number),
            ("123", TokenKind::Number),
            ("1.", TokenKind::Float),
            (".5", TokenKind::Float),
            ("1.5", TokenKind::Float),
            ("1e3", TokenKind::Float),
            ("1E3", TokenKind::Float),
            ("1.5e-3", TokenKind::Float),
            ("2e+10", TokenKind::Float),
        ] {
            let (k, text, errs) = one(src);
            assert_eq!((k, text.as_str()), (kind, src), "{src}");
            assert!(errs.is_empty(), "{src}: {errs:?}");
        }
        // A number directly followed by letters splits into two tokens.
        assert_eq!(kinds("12ab")[0], (TokenKind::Number, "12".to_string()));
        assert_eq!(kinds("12ab")[1], (TokenKind::Ident, "ab".to_string()));
        // `a.0` is an identifier followed by the float `.0`.
        assert_eq!(kinds("a.0")[1], (TokenKind::Float, ".0".to_string()));
    }

    #[test]
    fn exponent_without_digits() {
        assert_eq!(
            errors_at("x = 1e"),
            vec![(4, "exponent has no digits".to_string())]
        );
        assert_eq!(
            errors_at("1.5E+"),
            vec![(0, "exponent has no digits".to_string())]
        );
    }

    #[test]
    fn strings_and_escapes_decode() {
        let cases = [
            (r#""plain""#, "plain"),
            (r#""\a\b\f\n\r\t\v\\\"""#, "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\""),
            (r#""\101\102""#, "AB"),
            (r#""\x41\x7a""#, "Az"),
            (r#""\xc3\xa9""#, "é"),
            (r#""\u00e9""#, "é"),
            (r#""\U0001F600""#, "😀"),
            ("`raw \\n\nline`", "raw \\n\nline"),
            ("`a\r\nb`", "a\nb"),
            (r#""""#, ""),
        ];
        for (src, want) in cases {
            let (k, text, errs) = one(src);
            assert_eq!(k, TokenKind::String, "{src}");
            assert_eq!(text, src);
            assert!(errs.is_empty(), "{src}: {errs:?}");
            assert_eq!(unquote(&text), want, "{src}");
        }
    }

    #[test]
    fn bad_escapes_are_reported_at_their_position() {
        // The position is that of the character after the backslash.
        assert_eq!(
            errors_at(r#""ab\q""#),
            vec![(4, "unknown escape sequence".to_string())]
        );
        assert_eq!(
            errors_at(r#""\'""#),
            vec![(2, "unknown escape sequence".to_string())]
        );
        assert_eq!(
            errors_at(r#""\x4g""#),
            vec![(
                2,
                "illegal character U+0067 'g' in escape sequence".to_string()
            )]
        );
        assert_eq!(
            errors_at(r#""\12""#),
            vec![(
                2,
                "illegal character U+0022 '\"' in escape sequence".to_string()
            )]
        );
        assert_eq!(
            errors_at(r#""\400""#),
            vec![(
                2,
                "escape sequence is invalid Unicode code point".to_string()
            )]
        );
        assert_eq!(
            errors_at(r#""\uDFFF""#),
            vec![(
                2,
                "escape sequence is invalid Unicode code point".to_string()
            )]
        );
        assert_eq!(
            errors_at(r#""\U00110000""#),
            vec![(
                2,
                "escape sequence is invalid Unicode code point".to_string()
            )]
        );
        assert_eq!(
            errors_at("\"\\u12"),
            vec![
                (0, "string literal not terminated".to_string()),
                (2, "escape sequence not terminated".to_string()),
            ]
        );
        assert_eq!(
            errors_at("\"\\\nx"),
            vec![
                (0, "string literal not terminated".to_string()),
                (2, "unknown escape sequence".to_string()),
            ]
        );
        // An escaped quote does not end the string.
        let (k, text, errs) = one(r#""a\"b" x"#);
        assert_eq!((k, text.as_str()), (TokenKind::String, r#""a\"b""#));
        assert!(errs.is_empty());
    }

    #[test]
    fn unterminated_and_illegal() {
        assert_eq!(
            errors_at("a = \"abc\nb"),
            vec![(4, "string literal not terminated".to_string())]
        );
        assert_eq!(
            errors_at("a = `abc\nb"),
            vec![(4, "string literal not terminated".to_string())]
        );
        assert_eq!(
            errors_at("a /* x"),
            vec![(2, "block comment not terminated".to_string())]
        );
        assert_eq!(
            errors_at("'x'"),
            vec![(
                0,
                "illegal single-quoted string; use double quotes".to_string()
            )]
        );
        assert_eq!(
            errors_at("a # b"),
            vec![(2, "illegal character U+0023 '#'".to_string())]
        );
        assert_eq!(
            errors_at("a | b"),
            vec![(3, "missing second | in ||".to_string())]
        );
        assert_eq!(
            errors_at("a\0"),
            vec![(1, "illegal character NUL".to_string())]
        );
        assert_eq!(
            errors_at("a\u{FEFF}"),
            vec![(1, "illegal byte order mark".to_string())]
        );
        // A leading byte order mark is skipped.
        assert!(errors_at("\u{FEFF}a = 1").is_empty());
    }

    #[test]
    fn identifiers_and_keywords() {
        let toks = kinds("abc _x größe x١ true false null");
        let got: Vec<TokenKind> = toks.iter().map(|t| t.0).collect();
        use TokenKind::*;
        assert_eq!(
            got,
            vec![Ident, Ident, Ident, Ident, Bool, Bool, Null, Terminator, Eof]
        );
        assert!(is_valid_identifier("abc_1"));
        assert!(is_valid_identifier("größe"));
        assert!(!is_valid_identifier("1abc"));
        assert!(!is_valid_identifier("with space"));
        assert!(!is_valid_identifier("true"));
        assert!(!is_valid_identifier(""));
    }

    #[test]
    fn terminators_follow_the_reference_rules() {
        use TokenKind::*;
        let k =
            |src: &str| -> Vec<TokenKind> { tokenize(src).tokens.iter().map(|t| t.kind).collect() };
        // After an operator or an opening bracket a newline is just whitespace.
        assert_eq!(k("a +\nb"), vec![Ident, Add, Ident, Terminator, Eof]);
        assert_eq!(
            k("[\n1,\n]"),
            vec![LBrack, Number, Comma, RBrack, Terminator, Eof]
        );
        // After `)` `]` `}` and literals a newline terminates; blank lines do not repeat it.
        assert_eq!(
            k("f()\n\n\"s\"\n"),
            vec![Ident, LParen, RParen, Terminator, String, Terminator, Eof]
        );
        // A comment to the end of the line gets the terminator before it.
        assert_eq!(k("a // c\n"), vec![Ident, Terminator, Comment, Eof]);
        assert_eq!(k("a /* c */\n"), vec![Ident, Terminator, Comment, Eof]);
        assert_eq!(
            k("a /* c\n */ b"),
            vec![Ident, Terminator, Comment, Ident, Terminator, Eof]
        );
        // A comment followed by more tokens on the same line does not terminate.
        assert_eq!(
            k("a /* c */ b"),
            vec![Ident, Comment, Ident, Terminator, Eof]
        );
        // End of input terminates only after a terminating token.
        assert_eq!(k("a ="), vec![Ident, Assign, Eof]);
    }

    #[test]
    fn reference_scanner_cases() {
        use TokenKind::*;
        for (src, kind) in [
            ("a۰۱۸", Ident),
            ("foo६४", Ident),
            ("bar９８７６", Ident),
            ("ŝfoo", Ident),
            ("01234567", Number),
            ("123456789012345678890", Number),
            ("0.", Float),
            (".0", Float),
            ("2.71828e-1000", Float),
            ("1e+100", Float),
        ] {
            let (k, text, errs) = one(src);
            assert_eq!((k, text.as_str()), (kind, src));
            assert!(errs.is_empty(), "{src}: {errs:?}");
        }
        assert_eq!(
            kinds("..")[..2],
            [(Dot, ".".to_string()), (Dot, ".".to_string())]
        );
        assert_eq!(
            errors_at("\u{7}"),
            vec![(0, "illegal character U+0007".to_string())]
        );
        assert_eq!(
            errors_at("…"),
            vec![(0, "illegal character U+2026 '…'".to_string())]
        );
        assert_eq!(
            errors_at("\"abc\0def\""),
            vec![(4, "illegal character NUL".to_string())]
        );
        assert_eq!(
            errors_at("abc\0def"),
            vec![(3, "illegal character NUL".to_string())]
        );
        assert_eq!(
            errors_at("//\u{FEFF}"),
            vec![(2, "illegal byte order mark".to_string())]
        );
        assert_eq!(
            errors_at("10E"),
            vec![(0, "exponent has no digits".to_string())]
        );
    }

    #[test]
    fn comments_drop_carriage_returns() {
        for (src, want) in [
            ("/*\r*/", "/**/"),
            ("/**\r/*/", "/**\r/*/"),
            ("/**\r\r/*/", "/**\r/*/"),
            ("//\r\n", "//"),
            ("// a \n", "// a "),
        ] {
            let t = &tokenize(src).tokens[0];
            assert_eq!(
                (t.kind, t.text.as_ref()),
                (TokenKind::Comment, want),
                "{src:?}"
            );
        }
        let t = &tokenize("// c\r\n").tokens[0];
        assert_eq!(
            (t.kind, t.text.as_ref(), t.span),
            (TokenKind::Comment, "// c", Span::new(0, 4))
        );
    }
}
