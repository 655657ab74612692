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
//!
//! Layout: `tokens` (token kinds, string literals and their escapes), `scanner` (the byte
//! scanner and the token stream shared by both scanners) and `oracle` (the pest grammar driven as the test oracle).

mod oracle;
mod scanner;
mod tokens;

pub use oracle::tokenize_with_pest;
pub(crate) use scanner::{stream, Scanner, TokenStream};
pub use tokens::{go_rune, is_valid_identifier, unquote, Lexed, Token, TokenKind};

use crate::diag::Diagnostic;
use crate::span::Span;
use scanner::build;

/// Splits `src` into tokens, inserting terminators. Never fails: errors are returned alongside.
///
/// Uses the hand-written byte scanner [`Scanner`]; [`tokenize_with_pest`] gives the same result
/// through the pest grammar.
pub fn tokenize(src: &str) -> Lexed<'_> {
    build(src, Scanner::new(src))
}

/// A lexical error of `len` bytes at `start`.
fn err(start: usize, len: usize, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new(Span::new(start, start + len), msg)
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
