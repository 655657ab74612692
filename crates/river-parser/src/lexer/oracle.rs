//! The pest grammar `river.pest`, the grammar of record of River's lexemes, and
//! [`tokenize_with_pest`], which drives it. It is not used to parse: it is the executable
//! specification the production scanner is tested against (`tests/lexer_diff.rs` compares both
//! on every peer and golden input and on random inputs). It stays public, not `#[cfg(test)]`,
//! because that differential test is an integration test outside the crate.

use super::err;
use super::scanner::{build, Raw, RawKind};
use super::tokens::Lexed;
use pest::Parser as _;

mod grammar {
    use pest_derive::Parser;

    /// The pest token grammar.
    #[derive(Parser)]
    #[grammar = "river.pest"]
    pub(super) struct RawLexer;
}

use grammar::{RawLexer, Rule};

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
