//! Differential test of the two River lexers: the hand-written byte scanner used in production
//! (`lexer::tokenize`) must give exactly the tokens (kind, span, text) and lexical errors (span,
//! message) of the pest grammar of record (`lexer::tokenize_with_pest`), on every peer and golden
//! input and on random River-like and arbitrary inputs.

use proptest::prelude::*;
use river_parser::lexer::{tokenize, tokenize_with_pest};
use std::path::{Path, PathBuf};

fn assert_same(src: &str, what: &str) {
    let fast = tokenize(src);
    let spec = tokenize_with_pest(src);
    assert_eq!(
        fast.tokens, spec.tokens,
        "tokens differ for {what}: {src:?}"
    );
    assert_eq!(
        fast.errors, spec.errors,
        "errors differ for {what}: {src:?}"
    );
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
#[ignore = "needs the peer suites of ../shared/peer-tests (or RILL_PEER_TESTS); run by scripts/test.sh"]
fn same_on_peer_and_golden_inputs() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let peer = std::env::var_os("RILL_PEER_TESTS").map_or_else(
        || manifest.join("../../../shared/peer-tests"),
        PathBuf::from,
    );
    let mut files = Vec::new();
    files_under(&peer.join("river"), &mut files);
    let peer_count = files.len();
    files_under(&manifest.join("tests/golden"), &mut files);
    assert!(
        peer_count >= 10,
        "peer test data not found under {} (set RILL_PEER_TESTS)",
        peer.display()
    );
    assert!(files.len() > peer_count + 50, "golden inputs not found");
    let mut checked = 0;
    for f in &files {
        let Ok(src) = std::fs::read_to_string(f) else {
            continue; // not UTF-8: not a River source
        };
        assert_same(&src, &f.display().to_string());
        // Truncations exercise unterminated strings, comments and escapes.
        for cut in (0..src.len())
            .step_by(7)
            .filter(|&i| src.is_char_boundary(i))
        {
            assert_same(&src[..cut], &format!("{} cut at {cut}", f.display()));
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} inputs checked");
}

#[test]
fn same_on_hand_picked_edge_cases() {
    for src in [
        "",
        "\u{FEFF}a = 1",
        "a\u{FEFF}b",
        "x = 1e",
        "1.5E+",
        "1.e5 .5e-3 0. 12ab a.0 1else",
        "\"a\\\"b\" '\\'' `raw\r\n`",
        "\"\\",
        "\"\\\n",
        "\"\\ü\"",
        "\"\\x4g\\400\\uDFFF\\U00110000\\u12",
        "/* a *\r/ */ // x\r\n/**/ /*/",
        "a /* c\n */ b // d\r",
        "a | b & c || d && e != f == g <= h >= i ! j",
        "größe x١ foo६४ ŝ … \u{7} # $ @ ~ ; \\ \0",
        "a۰۱۸ = bar９８７６",
        "\u{2028}\u{00AA}\u{0660}x",
    ] {
        assert_same(src, "edge case");
    }
}

/// Fragments that make random inputs look like River, including every lexical corner.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "a", "foo_1", "_", "true", "null", "ö", "x١", "६", "…", "\u{FEFF}", "\0", "0", "12",
            ".", ".5", "1.", "e", "E", "+", "-", "\"", "'", "`", "\\", "\\n", "\\x", "\\u00e9",
            "\\U", "\\7", "/", "//", "/*", "*/", "*", "\n", "\r", "\r\n", " ", "\t", "=", "==",
            "!", "!=", "<", ">=", "|", "||", "&", "&&", "{", "}", "(", ")", "[", "]", ",", ":",
            "?", "%", "^", "#", "$",
        ])
        .prop_map(str::to_string),
        any::<char>().prop_map(|c| c.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn same_on_river_like_inputs(parts in prop::collection::vec(fragment(), 0..40)) {
        assert_same(&parts.concat(), "random fragments");
    }

    #[test]
    fn same_on_arbitrary_strings(src in any::<String>()) {
        assert_same(&src, "arbitrary string");
    }
}
