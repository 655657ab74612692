//! River lexer.
//!
//! A pest grammar (`river.pest`) splits the source into raw lexemes; this module turns them into
//! [`Token`]s the way the reference scanner (grafana/river `scanner`) does: keywords are looked
//! up, strings are checked for valid escape sequences, and a `TERMINATOR` is inserted Go-style at
//! a newline (or end of input, or a comment that runs to the end of the line) following an
//! identifier, literal, `)`, `]` or `}`. Lexical errors never stop the scan; they are collected
//! with the exact position and message of the reference scanner.

use crate::diag::Diagnostic;
use crate::span::Span;
use pest::Parser as _;

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

/// One token. `text` is the token as written (for comments without carriage returns, for a
/// `TERMINATOR` `"\n"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    pub text: String,
}

/// The result of [`tokenize`]: every token (comments included, ending with `EOF`) and the
/// lexical errors in source order.
#[derive(Debug, Clone, Default)]
pub struct Lexed {
    pub tokens: Vec<Token>,
    pub errors: Vec<Diagnostic>,
}

const BOM: char = '\u{FEFF}';

/// Splits `src` into tokens, inserting terminators. Never fails: errors are returned alongside.
pub fn tokenize(src: &str) -> Lexed {
    let mut out = Lexed::default();
    // Characters that are illegal wherever they appear (even inside strings and comments).
    for (i, c) in src.char_indices() {
        if c == '\0' {
            out.errors.push(err(i, 1, "illegal character NUL"));
        } else if c == BOM && i > 0 {
            out.errors
                .push(err(i, c.len_utf8(), "illegal byte order mark"));
        }
    }

    let items: Vec<pest::iterators::Pair<'_, Rule>> = match RawLexer::parse(Rule::stream, src) {
        Ok(pairs) => pairs.filter(|p| p.as_rule() != Rule::EOI).collect(),
        Err(e) => {
            // The grammar accepts any input; this is only reachable through a grammar bug.
            out.errors
                .push(err(0, 0, format!("internal lexer error: {e}")));
            Vec::new()
        }
    };

    let mut insert_term = false;
    for (i, item) in items.iter().enumerate() {
        let span = Span::new(item.as_span().start(), item.as_span().end());
        let text = item.as_str();
        let mut push = |kind: TokenKind, span: Span, text: &str| {
            out.tokens.push(Token {
                kind,
                span,
                text: text.to_string(),
            })
        };
        match item.as_rule() {
            Rule::newline => {
                if insert_term {
                    push(TokenKind::Terminator, span, "\n");
                    insert_term = false;
                }
            }
            Rule::line_comment | Rule::block_comment => {
                if insert_term && comment_ends_line(&items[i..]) {
                    push(
                        TokenKind::Terminator,
                        Span::new(span.start, span.start),
                        "\n",
                    );
                }
                let closed = item.as_rule() == Rule::line_comment
                    || item
                        .clone()
                        .into_inner()
                        .any(|p| p.as_rule() == Rule::close_comment);
                if !closed {
                    out.errors
                        .push(err(span.start, 2, "block comment not terminated"));
                }
                let text = strip_cr(
                    text.trim_end_matches('\r'),
                    item.as_rule() == Rule::block_comment,
                );
                out.tokens.push(Token {
                    kind: TokenKind::Comment,
                    span: Span::new(
                        span.start,
                        span.start + text_len_without_trailing_cr(item.as_str()),
                    ),
                    text,
                });
                insert_term = false;
            }
            Rule::dq_string | Rule::sq_string | Rule::raw_string => {
                let closed = item.clone().into_inner().next().is_some();
                let kind = if item.as_rule() == Rule::sq_string {
                    out.errors.push(err(
                        span.start,
                        span.end - span.start,
                        "illegal single-quoted string; use double quotes",
                    ));
                    TokenKind::Illegal
                } else {
                    TokenKind::String
                };
                if item.as_rule() != Rule::raw_string {
                    let body_end = if closed { span.end - 1 } else { span.end };
                    decode_escapes(src, span.start + 1, body_end, &mut out.errors);
                }
                if !closed {
                    out.errors.push(err(
                        span.start,
                        span.end - span.start,
                        "string literal not terminated",
                    ));
                }
                push(kind, span, text);
                insert_term = true;
            }
            Rule::number => {
                let mut kind = if text.starts_with('.') {
                    TokenKind::Float
                } else {
                    TokenKind::Number
                };
                for part in item.clone().into_inner() {
                    kind = TokenKind::Float;
                    if part.as_rule() == Rule::exponent
                        && !part.as_str().bytes().any(|b| b.is_ascii_digit())
                    {
                        out.errors.push(err(
                            span.start,
                            span.end - span.start,
                            "exponent has no digits",
                        ));
                    }
                }
                push(kind, span, text);
                insert_term = true;
            }
            Rule::ident => {
                let kind = match text {
                    "true" | "false" => TokenKind::Bool,
                    "null" => TokenKind::Null,
                    _ => TokenKind::Ident,
                };
                push(kind, span, text);
                insert_term = true;
            }
            Rule::operator => {
                let kind = TokenKind::operator(text);
                if text == "|" {
                    out.errors.push(err(span.end, 1, "missing second | in ||"));
                } else if text == "&" {
                    out.errors.push(err(span.end, 1, "missing second & in &&"));
                }
                push(kind, span, text);
                insert_term = matches!(
                    kind,
                    TokenKind::RCurly | TokenKind::RParen | TokenKind::RBrack
                );
            }
            _ => {
                // Rule::illegal: one character that starts no token.
                let c = text.chars().next().unwrap_or('\0');
                if c == BOM && span.start == 0 {
                    continue; // A byte order mark is allowed as the very first character.
                }
                if c != BOM && c != '\0' {
                    out.errors.push(err(
                        span.start,
                        span.end - span.start,
                        format!("illegal character {}", go_rune(c)),
                    ));
                }
                push(TokenKind::Illegal, span, text);
                // The terminator state is left as it was.
            }
        }
    }
    if insert_term {
        out.tokens.push(Token {
            kind: TokenKind::Terminator,
            span: Span::new(src.len(), src.len()),
            text: "\n".to_string(),
        });
    }
    out.tokens.push(Token {
        kind: TokenKind::Eof,
        span: Span::new(src.len(), src.len()),
        text: String::new(),
    });
    // Keep every error span inside the source and on character boundaries.
    for e in &mut out.errors {
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
    out.errors.sort_by_key(|d| d.span.start);
    out
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

fn text_len_without_trailing_cr(s: &str) -> usize {
    s.trim_end_matches('\r').len()
}

fn err(start: usize, len: usize, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new(Span::new(start, start + len), msg)
}

/// Whether the comment at `items[0]` (and the comments following it on the same line) runs to
/// the end of its line, so a pending terminator goes before it.
fn comment_ends_line(items: &[pest::iterators::Pair<'_, Rule>]) -> bool {
    let mut j = 0;
    loop {
        let item = &items[j];
        match item.as_rule() {
            Rule::line_comment => return true,
            Rule::block_comment => {
                let closed = item
                    .clone()
                    .into_inner()
                    .any(|p| p.as_rule() == Rule::close_comment);
                if !closed || item.as_str().contains('\n') {
                    return true;
                }
            }
            _ => return false,
        }
        j += 1;
        match items.get(j).map(|p| p.as_rule()) {
            None | Some(Rule::newline) => return true,
            Some(Rule::line_comment | Rule::block_comment) => {}
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
        return inner.replace('\r', "");
    }
    let start = usize::from(raw.starts_with('"'));
    let end = if is_closed_dq(raw) {
        raw.len() - 1
    } else {
        raw.len()
    };
    let mut ignored = Vec::new();
    decode_escapes(raw, start, end.max(start), &mut ignored)
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
    match RawLexer::parse(Rule::ident, s) {
        Ok(mut pairs) => pairs.next().is_some_and(|p| p.as_str().len() == s.len()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(TokenKind, String)> {
        tokenize(src)
            .tokens
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    fn one(src: &str) -> (TokenKind, String, Vec<String>) {
        let lexed = tokenize(src);
        let t = &lexed.tokens[0];
        let errors = lexed.errors.iter().map(|e| e.message.clone()).collect();
        (t.kind, t.text.clone(), errors)
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
                (t.kind, t.text.as_str()),
                (TokenKind::Comment, want),
                "{src:?}"
            );
        }
        let t = &tokenize("// c\r\n").tokens[0];
        assert_eq!(
            (t.kind, t.text.as_str(), t.span),
            (TokenKind::Comment, "// c", Span::new(0, 4))
        );
    }
}
