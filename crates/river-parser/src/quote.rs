//! Go's string quoting, in one place: [`go_quote`] is `strconv.Quote` (used by the printer for
//! labels and keys, by parser diagnostics and by `format("%q")`), and [`is_print`] is the
//! `strconv.IsPrint` it decides with. The printability table comes from Go itself (see
//! `quote/table.rs`), so the output matches Go's byte for byte.

mod table;

use std::fmt::Write as _;

/// Whether Go's `strconv.IsPrint` accepts `c`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space. Other spaces, format and control characters, private use, noncharacters
/// and unassigned code points (as of the table's Unicode version) are not printable.
pub fn is_print(c: char) -> bool {
    let v = u32::from(c);
    if v < 0x80 {
        return (0x20..0x7F).contains(&v);
    }
    // The last range starting at or before `v` is the only one that can hold it.
    let after = table::NOT_PRINT.partition_point(|&(first, _)| first <= v);
    match after.checked_sub(1).map(|i| table::NOT_PRINT[i]) {
        Some((_, last)) => v > last,
        None => true,
    }
}

/// Quotes `s` exactly like Go's `strconv.Quote`: double quotes around it; `\a \b \f \n \r \t \v`,
/// `\\` and `\"` for those characters; `\xNN` for the other ASCII controls and DEL; `\uNNNN` or
/// `\UNNNNNNNN` (lower-case hex) for every other character [`is_print`] rejects; printable
/// characters, ASCII or not, as they are.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            // Writing into a `String` cannot fail.
            c if c < ' ' || c == '\u{7F}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{go_quote, is_print, table};
    use crate::lexer::unquote;
    use proptest::prelude::*;

    /// `(input, strconv.Quote(input))`, printed by Go 1.19 (the table's Go) over these inputs.
    const GO_QUOTED: &[(&str, &str)] = &[
        ("", "\"\""),
        ("abc", "\"abc\""),
        ("a\"b\\c", "\"a\\\"b\\\\c\""),
        (
            "\u{7}\u{8}\u{c}\u{a}\u{d}\u{9}\u{b}",
            "\"\\a\\b\\f\\n\\r\\t\\v\"",
        ),
        (
            "\u{0}\u{1}\u{1b}\u{1f}\u{7f}",
            "\"\\x00\\x01\\x1b\\x1f\\x7f\"",
        ),
        ("\u{80}\u{85}\u{9f}", "\"\\u0080\\u0085\\u009f\""),
        ("\u{a0}", "\"\\u00a0\""),
        ("\u{ad}", "\"\\u00ad\""),
        ("\u{e9}\u{4e16}\u{1f600}", "\"\u{e9}\u{4e16}\u{1f600}\""),
        ("\u{2028}\u{2029}", "\"\\u2028\\u2029\""),
        ("\u{feff}", "\"\\ufeff\""),
        ("\u{e000}\u{f8ff}", "\"\\ue000\\uf8ff\""),
        ("\u{f0000}", "\"\\U000f0000\""),
        ("\u{10fffd}", "\"\\U0010fffd\""),
        ("\u{10ffff}", "\"\\U0010ffff\""),
        ("\u{200b}\u{200d}", "\"\\u200b\\u200d\""),
        ("\u{378}", "\"\\u0378\""),
        ("\u{e0001}", "\"\\U000e0001\""),
        ("\u{3000}\u{1680}", "\"\\u3000\\u1680\""),
        ("e\u{301}", "\"e\u{301}\""),
        ("\u{1d400}", "\"\u{1d400}\""),
        ("\u{fffd}", "\"\u{fffd}\""),
        ("\u{fffe}\u{ffff}", "\"\\ufffe\\uffff\""),
        ("\u{61c}\u{600}", "\"\\u061c\\u0600\""),
        ("x\u{202e}y", "\"x\\u202ey\""),
        ("\u{10000}", "\"\u{10000}\""),
        ("\u{1fffe}", "\"\\U0001fffe\""),
        ("'single' `back`", "\"'single' `back`\""),
        ("tab\u{9}here", "\"tab\\there\""),
        ("\u{2060}\u{2066}", "\"\\u2060\\u2066\""),
        ("\u{e9}\u{ff}\u{100}", "\"\u{e9}\u{ff}\u{100}\""),
        ("\u{1f9ff}\u{1fa70}", "\"\u{1f9ff}\u{1fa70}\""),
        ("\u{e3f}\u{20ac}", "\"\u{e3f}\u{20ac}\""),
        ("\u{591}", "\"\u{591}\""),
        ("\u{3164}", "\"\u{3164}\""),
        ("\u{115f}", "\"\u{115f}\""),
        ("\u{e0100}", "\"\u{e0100}\""),
        ("\u{180e}", "\"\\u180e\""),
        ("\u{fff9}", "\"\\ufff9\""),
        ("\u{20000}", "\"\u{20000}\""),
        ("\u{2fa1d}", "\"\u{2fa1d}\""),
        ("\u{30000}", "\"\u{30000}\""),
        ("\u{8bd}", "\"\u{8bd}\""),
        ("\u{890}", "\"\\u0890\""),
        ("\u{1faf0}", "\"\\U0001faf0\""),
        (
            "~ !#$%&()*+,-./09:;<=>?@AZ[]^_`az{|}",
            "\"~ !#$%&()*+,-./09:;<=>?@AZ[]^_`az{|}\"",
        ),
    ];

    #[test]
    fn quotes_like_go_strconv_quote() {
        for &(input, want) in GO_QUOTED {
            assert_eq!(go_quote(input), want, "go_quote({input:?})");
        }
    }

    #[test]
    fn ascii_printability() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            assert_eq!(is_print(c), (' '..='~').contains(&c), "{b:#04x}");
        }
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        assert!(table::NOT_PRINT.iter().all(|&(a, b)| a >= 0x80 && a <= b));
        assert!(table::NOT_PRINT.windows(2).all(|w| w[0].1 + 1 < w[1].0));
    }

    #[test]
    fn range_edges() {
        // Both ends of a range are unprintable, the neighbours outside it printable.
        assert!(!is_print('\u{80}') && !is_print('\u{A0}') && is_print('\u{A1}'));
        assert!(is_print('\u{AC}') && !is_print('\u{AD}') && is_print('\u{AE}'));
        assert!(!is_print('\u{10FFFF}') && !is_print('\u{E01F0}') && is_print('\u{E01EF}'));
    }

    proptest! {
        #[test]
        fn unquote_inverts_go_quote(s in any::<String>()) {
            prop_assert_eq!(unquote(&go_quote(&s)), s);
        }

        #[test]
        fn quoted_text_is_ascii_or_printable(s in any::<String>()) {
            let q = go_quote(&s);
            prop_assert!(q.chars().all(|c| c == ' ' || is_print(c)));
        }
    }
}
