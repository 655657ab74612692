//! Label selectors as Pyroscope (and PromQL) write them: `{service_name="api", env!="dev",
//! pod=~"api-.*", ns!~"kube-.*"}`, optionally after a metric name (`process_cpu{...}`, which
//! matches `__name__`). `{}` and the empty string match everything. Regular expressions are
//! anchored at both ends, as in Prometheus.

use std::collections::BTreeMap;

/// How one matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One `name op "value"` term.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<regex::Regex>,
}

impl Matcher {
    /// Builds a matcher; a bad regular expression is an error.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| SelectorError(format!("bad regular expression {value:?}: {e}")))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Whether `value` (empty for a missing label, as in Prometheus) passes.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (_, None) => false,
        }
    }
}

/// A parsed selector: every matcher must pass.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

/// Why a selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl Selector {
    /// Parses a selector (see the module documentation).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Parser::new(text).selector()
    }

    /// Parses several selectors (a request's `matchers`): a label set passes when any passes;
    /// none at all passes everything.
    pub fn parse_any(texts: &[String]) -> Result<Vec<Selector>, SelectorError> {
        texts.iter().map(|t| Selector::parse(t)).collect()
    }

    /// Whether a label set passes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
    }
}

/// Whether `labels` pass any of `selectors` (or there are none).
pub fn matches_any(selectors: &[Selector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn err(&self, what: &str) -> SelectorError {
        SelectorError(format!(
            "invalid label selector {:?}: {what} at offset {}",
            self.src, self.pos
        ))
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.src[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_name_start(c) => self.pos += 1,
            _ => return None,
        }
        while let Some(c) = self.peek() {
            if !is_name_char(c) {
                break;
            }
            self.pos += 1;
        }
        Some(self.src[start..self.pos].to_string())
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut sel = Selector::default();
        self.skip_ws();
        if self.pos == self.src.len() {
            return Ok(sel);
        }
        if let Some(metric) = self.name() {
            sel.matchers
                .push(Matcher::new("__name__", MatchOp::Equal, &metric)?);
            self.skip_ws();
            if self.pos == self.src.len() {
                return Ok(sel);
            }
        }
        if !self.eat("{") {
            return Err(self.err("expected '{'"));
        }
        loop {
            self.skip_ws();
            if self.eat("}") {
                break;
            }
            let name = self
                .name()
                .ok_or_else(|| self.err("expected a label name"))?;
            self.skip_ws();
            let op = if self.eat("=~") {
                MatchOp::Regex
            } else if self.eat("!~") {
                MatchOp::NotRegex
            } else if self.eat("!=") {
                MatchOp::NotEqual
            } else if self.eat("=") {
                MatchOp::Equal
            } else {
                return Err(self.err("expected one of =, !=, =~, !~"));
            };
            self.skip_ws();
            let value = self.string()?;
            sel.matchers.push(Matcher::new(&name, op, &value)?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(self.err("expected ',' or '}'"));
        }
        self.skip_ws();
        if self.pos != self.src.len() {
            return Err(self.err("unexpected text after '}'"));
        }
        Ok(sel)
    }

    /// A `"..."`, `'...'` (with Go escapes) or `` `...` `` (raw) string.
    fn string(&mut self) -> Result<String, SelectorError> {
        let quote = match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => return Err(self.err("expected a quoted value")),
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c != '\\' || quote == '`' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.pos += e.len_utf8();
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '\\' => '\\',
                '"' => '"',
                '\'' => '\'',
                _ => return Err(self.err("unknown escape")),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_the_four_operators() {
        let s = Selector::parse(
            r#"{service_name="api", env!="dev", pod=~"api-[0-9]+", ns!~'kube-.*'}"#,
        )
        .unwrap();
        assert_eq!(s.matchers.len(), 4);
        let ok = labels(&[
            ("service_name", "api"),
            ("pod", "api-12"),
            ("ns", "default"),
        ]);
        assert!(s.matches(&ok));
        let mut bad = ok.clone();
        bad.insert("env".into(), "dev".into());
        assert!(!s.matches(&bad));
        let mut bad = ok.clone();
        bad.insert("pod".into(), "xapi-12".into()); // anchored
        assert!(!s.matches(&bad));
        let mut bad = ok.clone();
        bad.insert("ns".into(), "kube-system".into());
        assert!(!s.matches(&bad));
    }

    #[test]
    fn empty_selectors_and_metric_names() {
        let all = labels(&[("a", "b")]);
        assert!(Selector::parse("").unwrap().matches(&all));
        assert!(Selector::parse(" {} ").unwrap().matches(&all));
        let s = Selector::parse(r#"process_cpu{a="b"}"#).unwrap();
        assert!(!s.matches(&all));
        let mut l = all.clone();
        l.insert("__name__".into(), "process_cpu".into());
        assert!(s.matches(&l));
        // A missing label equals "".
        assert!(Selector::parse(r#"{x=""}"#).unwrap().matches(&all));
        assert!(Selector::parse(r#"{a="b",}"#).unwrap().matches(&all));
    }

    #[test]
    fn errors_say_what_and_where() {
        for (text, want) in [
            ("{a=b}", "expected a quoted value"),
            (r#"{a="b""#, "expected ',' or '}'"),
            (r#"{a=="b"}"#, "expected a quoted value"),
            (r#"{a~"b"}"#, "expected one of"),
            (r#"{1a="b"}"#, "expected a label name"),
            (r#"{a="b"} x"#, "unexpected text"),
            (r#"{a=~"("}"#, "bad regular expression"),
            (r#"{a="\q"}"#, "unknown escape"),
        ] {
            let e = Selector::parse(text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }
}
