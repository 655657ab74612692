//! Diagnostics: an error with a span, rendered as `FILE:LINE:COL: message`, the source line and a
//! caret under the span, and an optional hint.

use crate::span::{LineIndex, Span};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `FILE:LINE:COL: message` only.
    pub fn headline(&self, file: &str, src: &str) -> String {
        let idx = LineIndex::new(src);
        let lc = idx.line_col(src, self.span.start);
        format!("{file}:{}:{}: {}", lc.line, lc.col, self.message)
    }

    /// Full rendering: headline, source line, caret line, hint.
    pub fn render(&self, file: &str, src: &str) -> String {
        render_with(&LineIndex::new(src), self, file, src)
    }
}

fn render_with(idx: &LineIndex, d: &Diagnostic, file: &str, src: &str) -> String {
    let lc = idx.line_col(src, d.span.start);
    let mut out = format!("{file}:{}:{}: {}\n", lc.line, lc.col, d.message);
    let line0 = lc.line - 1;
    let text = idx.line_text(src, line0);
    let gutter = format!("{}", lc.line);
    let pad = " ".repeat(gutter.len());
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{gutter} | {}", text.replace('\t', "    "));
    // Caret under the span, limited to this line; tabs before the span are widened like above.
    let before: String = text
        .chars()
        .take(lc.col - 1)
        .map(|c| {
            if c == '\t' {
                "    ".to_string()
            } else {
                " ".to_string()
            }
        })
        .collect();
    let line_end = idx.line_start(line0) + text.len();
    let end = d.span.end.min(line_end).max(d.span.start);
    let width = src
        .get(d.span.start..end)
        .map_or(1, |s| s.chars().count())
        .max(1);
    let _ = writeln!(out, "{pad} | {before}{}", "^".repeat(width));
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "{pad} = hint: {h}");
    }
    out
}

/// A list of diagnostics of one file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Renders every diagnostic, separated by blank lines.
    pub fn render(&self, file: &str, src: &str) -> String {
        let idx = LineIndex::new(src);
        self.0
            .iter()
            .map(|d| render_with(&idx, d, file, src))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let msgs: Vec<&str> = self.0.iter().map(|d| d.message.as_str()).collect();
        f.write_str(&msgs.join("; "))
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headline_line_and_caret() {
        let src = "a = 1\nb = 1 + \"x\"\n";
        let d = Diagnostic::new(Span::new(14, 17), "should be number, got string")
            .with_hint("convert with a function");
        let out = d.render("cfg.river", src);
        assert_eq!(
            out,
            "cfg.river:2:9: should be number, got string\n  |\n2 | b = 1 + \"x\"\n  |         ^^^\n  = hint: convert with a function\n"
        );
    }
}
