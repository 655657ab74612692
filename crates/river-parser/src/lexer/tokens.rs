//! River tokens: the token kinds and their names as the reference prints them, tokens borrowing
//! their text from the source, and the decoding of string literals (escape sequences,
//! [`unquote`]) with the checks the reference scanner makes on them.

use super::err;
use super::scanner::ident_end;
use crate::diag::Diagnostic;
use crate::quote::is_print;
use crate::span::Span;
use std::borrow::Cow;

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

    pub(super) fn operator(text: &str) -> TokenKind {
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

/// Formats a character like Go's `%#U`: `U+0024 '$'` (without the quoted form if unprintable).
pub fn go_rune(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Validates (reporting into `errors`) and decodes the escape sequences of the string body
/// `src[start..end]`. Octal and `\x` escapes produce raw bytes, `\u`/`\U` code points; a byte
/// sequence that is not UTF-8 is decoded lossily.
pub(super) fn decode_escapes(
    src: &str,
    start: usize,
    end: usize,
    errors: &mut Vec<Diagnostic>,
) -> String {
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
