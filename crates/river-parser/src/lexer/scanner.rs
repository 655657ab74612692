//! The production scanner: the hand-written byte scanner that splits a source into raw lexemes
//! exactly like the `stream` rule of `river.pest`, and the token stream that turns raw lexemes
//! (from this scanner or from the pest grammar) into tokens, inserting terminators and
//! collecting lexical errors.

use super::err;
use super::tokens::{decode_escapes, go_rune, Lexed, Token, TokenKind};
use crate::diag::Diagnostic;
use crate::span::Span;
use std::borrow::Cow;

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
    pub(super) kind: RawKind,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Strings and block comments: the closing delimiter is present.
    pub(super) closed: bool,
    /// Numbers: has a fraction or an exponent (or starts with `.`).
    pub(super) float: bool,
    /// Numbers: has an exponent without digits.
    pub(super) bad_exp: bool,
}

impl Raw {
    pub(super) fn new(kind: RawKind, start: usize, end: usize) -> Raw {
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

/// The hand-written scanner: splits `src` into raw lexemes exactly like the `stream` rule of
/// `river.pest` (same alternatives in the same order), but a byte at a time. Cloning it gives
/// cheap lookahead.
#[derive(Clone)]
pub(crate) struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `src`.
    pub(super) fn new(src: &'a str) -> Self {
        Scanner { src, pos: 0 }
    }
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
pub(super) fn ident_end(src: &str, mut i: usize) -> usize {
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
pub(super) fn build<'a>(src: &'a str, raws: impl Iterator<Item = Raw> + Clone) -> Lexed<'a> {
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
    TokenStream::new(src, Scanner::new(src))
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
