//! `discovery.relabel`: rewrites target label sets with Prometheus relabeling rules.
//!
//! The core is plain Rust: [`RuleArgs`] (the decoded `rule` block) is validated and compiled into
//! a [`Rule`] by [`Rule::new`], and [`process`] applies rules top-down to one label set, returning
//! `None` when a rule drops the target. Semantics follow Prometheus' `model/relabel` package:
//! regexes are anchored as `^(?s:REGEX)$`, missing source labels read as `""`, and `replace`
//! expands `$1`, `${1}`, `$name`, `${name}` like Go's `Regexp.Expand`.

use std::fmt;
use std::str::FromStr;

use flow_runtime::util::lock;
use md5::{Digest, Md5};
use serde::Deserialize;

pub use super::target::{targets_value, Labels};

/// Default `separator`.
pub const DEFAULT_SEPARATOR: &str = ";";
/// Default `regex`.
pub const DEFAULT_REGEX: &str = "(.*)";
/// Default `replacement`.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// A relabeling action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    /// The name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = RelabelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            other => return Err(RelabelError::UnknownAction(other.to_owned())),
        })
    }
}

/// Why a `rule` block is invalid. The texts match Prometheus/Alloy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelabelError {
    #[error("relabel action cannot be empty")]
    EmptyAction,
    #[error("unrecognized action type {0:?}")]
    UnknownAction(String),
    #[error("invalid regex {regex:?}: {error}")]
    InvalidRegex { regex: String, error: String },
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    ZeroModulus,
    #[error("relabel configuration for {0} action requires 'target_label' value")]
    MissingTargetLabel(Action),
    #[error("{label:?} is invalid 'target_label' for {action} action")]
    InvalidTargetLabel { label: String, action: Action },
    #[error("'replacement' can not be set for {0} action")]
    ReplacementNotAllowed(Action),
    #[error("{replacement:?} is invalid 'replacement' for {action} action")]
    InvalidReplacement { replacement: String, action: Action },
    #[error("{0} action requires only 'regex', and no other fields")]
    OnlyRegex(Action),
    #[error("{0} action requires only 'source_labels' and 'target_label', and no other fields")]
    OnlySourceAndTarget(Action),
}

impl RelabelError {
    /// The attribute of the `rule` block at fault (`None`: the combination of several).
    pub fn attribute(&self) -> Option<&'static str> {
        match self {
            RelabelError::EmptyAction | RelabelError::UnknownAction(_) => Some("action"),
            RelabelError::InvalidRegex { .. } => Some("regex"),
            RelabelError::ZeroModulus => Some("modulus"),
            RelabelError::MissingTargetLabel(_) | RelabelError::InvalidTargetLabel { .. } => {
                Some("target_label")
            }
            RelabelError::ReplacementNotAllowed(_) | RelabelError::InvalidReplacement { .. } => {
                Some("replacement")
            }
            RelabelError::OnlyRegex(_) | RelabelError::OnlySourceAndTarget(_) => None,
        }
    }
}

/// The `rule` block as written (after defaults). `discovery.relabel`'s `Validate` impl checks
/// it with [`Rule::new`], so that the runtime reports an invalid rule at its attribute.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleArgs {
    /// `None` when the attribute is absent (labeldrop/labelkeep reject it even when empty).
    pub source_labels: Option<Vec<String>>,
    pub separator: String,
    pub regex: String,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: String,
}

impl Default for RuleArgs {
    fn default() -> Self {
        RuleArgs {
            source_labels: None,
            separator: DEFAULT_SEPARATOR.to_owned(),
            regex: DEFAULT_REGEX.to_owned(),
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.to_owned(),
            action: "replace".to_owned(),
        }
    }
}

/// An anchored regex that remembers the source it was written as.
#[derive(Clone, Debug)]
pub struct AnchoredRegex {
    source: String,
    re: regex::Regex,
}

impl AnchoredRegex {
    /// Compiles `^(?s:SOURCE)$`.
    pub fn new(source: &str) -> Result<Self, RelabelError> {
        let re = regex::Regex::new(&format!("^(?s:{source})$")).map_err(|e| {
            RelabelError::InvalidRegex {
                regex: source.to_owned(),
                error: regex_error_text(&e),
            }
        })?;
        Ok(AnchoredRegex {
            source: source.to_owned(),
            re,
        })
    }

    /// The regex as written, without the anchors.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

/// The last line of the regex crate's message is the cause; the preceding lines draw the
/// anchored pattern, which would confuse users.
fn regex_error_text(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start_matches("error: ").to_owned())
            .unwrap_or_else(|| s.clone()),
        other => other.to_string(),
    }
}

/// A validated, compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: AnchoredRegex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
    /// `regex` is the default `(.*)`: lets `replace` skip the regex for empty values.
    default_regex: bool,
    target_has_var: bool,
    replacement_has_var: bool,
}

impl Rule {
    /// Validates the arguments like Alloy's `relabel.Config.Validate` and compiles the regex.
    pub fn new(args: &RuleArgs) -> Result<Rule, RelabelError> {
        if args.action.is_empty() {
            return Err(RelabelError::EmptyAction);
        }
        let action: Action = args.action.parse()?;
        let regex = AnchoredRegex::new(&args.regex)?;
        validate(args, action)?;
        Ok(Rule {
            source_labels: args.source_labels.clone().unwrap_or_default(),
            separator: args.separator.clone(),
            default_regex: args.regex == DEFAULT_REGEX,
            target_has_var: args.target_label.contains('$'),
            replacement_has_var: args.replacement.contains('$'),
            regex,
            modulus: args.modulus,
            target_label: args.target_label.clone(),
            replacement: args.replacement.clone(),
            action,
        })
    }

    /// The rule as arguments again (for the `rules` export and the UI).
    pub fn to_args(&self) -> RuleArgs {
        RuleArgs {
            source_labels: Some(self.source_labels.clone()),
            separator: self.separator.clone(),
            regex: self.regex.as_str().to_owned(),
            modulus: self.modulus,
            target_label: self.target_label.clone(),
            replacement: self.replacement.clone(),
            action: self.action.as_str().to_owned(),
        }
    }
}

/// Compiles every rule; the error carries the index of the first bad rule.
pub fn compile_rules(args: &[RuleArgs]) -> Result<Vec<Rule>, (usize, RelabelError)> {
    args.iter()
        .enumerate()
        .map(|(i, a)| Rule::new(a).map_err(|e| (i, e)))
        .collect()
}

fn validate(args: &RuleArgs, action: Action) -> Result<(), RelabelError> {
    use Action::*;
    if args.modulus == 0 && action == HashMod {
        return Err(RelabelError::ZeroModulus);
    }
    let needs_target = matches!(
        action,
        Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if needs_target && args.target_label.is_empty() {
        return Err(RelabelError::MissingTargetLabel(action));
    }
    let templated_target = matches!(
        action,
        Replace | Lowercase | Uppercase | KeepEqual | DropEqual
    );
    if templated_target && !is_relabel_target(&args.target_label) {
        return Err(RelabelError::InvalidTargetLabel {
            label: args.target_label.clone(),
            action,
        });
    }
    if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
        && args.replacement != DEFAULT_REPLACEMENT
    {
        return Err(RelabelError::ReplacementNotAllowed(action));
    }
    if action == LabelMap && !is_relabel_target(&args.replacement) {
        return Err(RelabelError::InvalidReplacement {
            replacement: args.replacement.clone(),
            action,
        });
    }
    if action == HashMod && !is_valid_label_name(&args.target_label) {
        return Err(RelabelError::InvalidTargetLabel {
            label: args.target_label.clone(),
            action,
        });
    }
    if matches!(action, LabelDrop | LabelKeep)
        && (args.source_labels.is_some()
            || !args.target_label.is_empty()
            || args.modulus != 0
            || args.separator != DEFAULT_SEPARATOR
            || args.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(RelabelError::OnlyRegex(action));
    }
    if matches!(action, KeepEqual | DropEqual)
        && (args.regex != DEFAULT_REGEX
            || args.modulus != 0
            || args.separator != DEFAULT_SEPARATOR
            || args.replacement != DEFAULT_REPLACEMENT)
    {
        return Err(RelabelError::OnlySourceAndTarget(action));
    }
    Ok(())
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Matches `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`: a label name that may contain
/// `$var`/`${var}` references. Equivalent to: a non-empty sequence where each item is an ASCII
/// word character or a reference, and the first item is not a digit.
fn is_relabel_target(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && word(b[j]) {
                    j += 1;
                }
                if j == start || j >= b.len() || b[j] != b'}' {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if word(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Applies `rules` top-down. Returns `None` when a rule drops the target.
pub fn process(mut labels: Labels, rules: &[Rule]) -> Option<Labels> {
    if process_in_place(&mut labels, rules) {
        Some(labels)
    } else {
        None
    }
}

/// Like [`process`] but mutates `labels`; returns whether the target is kept.
pub fn process_in_place(labels: &mut Labels, rules: &[Rule]) -> bool {
    let mut buf = String::new();
    rules.iter().all(|r| apply(r, labels, &mut buf))
}

fn set_or_delete(labels: &mut Labels, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else if let Some(v) = labels.get_mut(name) {
        *v = value;
    } else {
        labels.insert(name.to_owned(), value);
    }
}

fn apply(rule: &Rule, labels: &mut Labels, val: &mut String) -> bool {
    val.clear();
    for (i, name) in rule.source_labels.iter().enumerate() {
        if i > 0 {
            val.push_str(&rule.separator);
        }
        if let Some(v) = labels.get(name) {
            val.push_str(v);
        }
    }
    let val = val.as_str();
    match rule.action {
        Action::Drop => return !rule.regex.is_match(val),
        Action::Keep => return rule.regex.is_match(val),
        Action::DropEqual => {
            return labels.get(&rule.target_label).map_or("", String::as_str) != val;
        }
        Action::KeepEqual => {
            return labels.get(&rule.target_label).map_or("", String::as_str) == val;
        }
        Action::Replace => {
            if val.is_empty()
                && rule.default_regex
                && !rule.target_has_var
                && !rule.replacement_has_var
            {
                set_or_delete(labels, &rule.target_label, rule.replacement.clone());
                return true;
            }
            let Some(caps) = rule.regex.re.captures(val) else {
                return true;
            };
            let target = if rule.target_has_var {
                expand(&rule.regex.re, &caps, &rule.target_label)
            } else {
                rule.target_label.clone()
            };
            if !is_valid_label_name(&target) {
                return true;
            }
            let res = if rule.replacement_has_var {
                expand(&rule.regex.re, &caps, &rule.replacement)
            } else {
                rule.replacement.clone()
            };
            set_or_delete(labels, &target, res);
        }
        Action::Lowercase => {
            let v = val.to_lowercase();
            set_or_delete(labels, &rule.target_label, v);
        }
        Action::Uppercase => {
            let v = val.to_uppercase();
            set_or_delete(labels, &rule.target_label, v);
        }
        Action::HashMod => {
            let v = hashmod(val, rule.modulus).to_string();
            set_or_delete(labels, &rule.target_label, v);
        }
        Action::LabelMap => {
            // Collect first (the rule sees the labels as they were before it), then write.
            let mapped: Vec<(String, String)> = labels
                .iter()
                .filter(|(name, _)| rule.regex.is_match(name))
                .filter_map(|(name, value)| {
                    let caps = rule.regex.re.captures(name)?;
                    Some((
                        expand(&rule.regex.re, &caps, &rule.replacement),
                        value.clone(),
                    ))
                })
                .collect();
            for (name, value) in mapped {
                set_or_delete(labels, &name, value);
            }
        }
        Action::LabelDrop => labels.retain(|k, _| !rule.regex.is_match(k)),
        Action::LabelKeep => labels.retain(|k, _| rule.regex.is_match(k)),
    }
    true
}

/// `md5(value)`, last 8 bytes as a big-endian u64, modulo `modulus`.
pub fn hashmod(value: &str, modulus: u64) -> u64 {
    let digest = Md5::digest(value.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&digest[8..16]);
    u64::from_be_bytes(last) % modulus
}

/// Expands `template` like Go's `Regexp.Expand`: `$$` is a literal `$`; `$name` takes the
/// longest run of letters, digits and `_` as the name; `${name}` is braced; a name made only of
/// digits (no leading zero) is a group index; unknown groups expand to ""; a malformed `$` is
/// copied literally.
pub fn expand(re: &regex::Regex, caps: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        match extract_name(rest) {
            None => out.push('$'),
            Some((name, after)) => {
                rest = after;
                match group_index(name) {
                    Some(n) => {
                        if let Some(m) = caps.get(n) {
                            out.push_str(m.as_str());
                        }
                    }
                    None => {
                        if re.capture_names().any(|c| c == Some(name)) {
                            if let Some(m) = caps.name(name) {
                                out.push_str(m.as_str());
                            }
                        }
                    }
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses a reference name after `$`; returns the name and the rest of the template.
fn extract_name(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let after = body[end..].strip_prefix('}')?;
        Some((name, after))
    } else {
        Some((name, &body[end..]))
    }
}

/// A group index when `name` is all ASCII digits without a leading zero (Go caps at 1e8).
fn group_index(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if name.len() > 1 && name.starts_with('0') {
        return None;
    }
    if name.len() > 9 {
        return None;
    }
    name.parse().ok()
}

/// Relabels every target; dropped targets are left out.
pub fn relabel_targets(targets: &[Labels], rules: &[Rule]) -> Vec<Labels> {
    targets
        .iter()
        .filter_map(|t| process(t.clone(), rules))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The component

/// The arguments of `discovery.relabel`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    pub targets: Vec<Labels>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleArgs>,
}

/// The capsule type of the `rules` export (what `relabel_rules` arguments of other components
/// receive).
pub type Rules = Vec<Rule>;

/// Capsule type name of the `rules` export.
pub const RULES_TYPE_NAME: &str = "relabel.Rules";

struct RelabelState {
    args: Arguments,
    rules: std::sync::Arc<Rules>,
    output: Vec<Labels>,
}

/// The `discovery.relabel` component: exports `output` (the relabeled targets) and `rules`.
pub struct Relabel {
    opts: flow_runtime::Options,
    state: std::sync::Mutex<Option<RelabelState>>,
    publishes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Relabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relabel")
            .field("id", &self.opts.id)
            .finish_non_exhaustive()
    }
}

/// Compiles `rule` blocks, naming the failing block when there are several.
pub fn compile_for_component(args: &[RuleArgs]) -> anyhow::Result<Rules> {
    compile_rules(args).map_err(|(i, e)| {
        if args.len() > 1 {
            anyhow::anyhow!("rule[{i}]: {e}")
        } else {
            anyhow::anyhow!("{e}")
        }
    })
}

impl Relabel {
    /// Applies new arguments; publishes only when `output` or the rules changed.
    fn apply(&self, args: Arguments) -> anyhow::Result<()> {
        let mut guard = lock(&self.state);
        let (rules, rules_changed) = match guard.as_ref() {
            Some(s) if s.args.rules == args.rules => (s.rules.clone(), false),
            _ => (
                std::sync::Arc::new(compile_for_component(&args.rules)?),
                true,
            ),
        };
        let output = relabel_targets(&args.targets, &rules);
        let output_changed = guard.as_ref().is_none_or(|s| s.output != output);
        if output_changed || rules_changed {
            self.publishes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.opts.exports.publish_fields([
                ("output", targets_value(&output)),
                (
                    "rules",
                    river_parser::Value::Capsule(river_parser::Capsule::new(
                        RULES_TYPE_NAME,
                        rules.clone(),
                    )),
                ),
            ]);
        }
        *guard = Some(RelabelState {
            args,
            rules,
            output,
        });
        Ok(())
    }

    /// How many times exports were published (only when `output` or the rules change).
    pub fn publish_count(&self) -> u64 {
        self.publishes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current output (for tests and the UI).
    pub fn output(&self) -> Vec<Labels> {
        lock(&self.state)
            .as_ref()
            .map(|s| s.output.clone())
            .unwrap_or_default()
    }
}

impl flow_runtime::Component for Relabel {
    type Arguments = Arguments;

    fn build(opts: flow_runtime::Options, args: Arguments) -> anyhow::Result<Self> {
        let c = Relabel {
            opts,
            state: std::sync::Mutex::new(None),
            publishes: std::sync::atomic::AtomicU64::new(0),
        };
        c.apply(args)?;
        Ok(c)
    }

    async fn run(
        self: std::sync::Arc<Self>,
        cancel: flow_runtime::CancellationToken,
    ) -> anyhow::Result<()> {
        cancel.cancelled().await;
        Ok(())
    }

    fn update(&self, args: Arguments) -> anyhow::Result<()> {
        self.apply(args)
    }
}

/// Every `rule` block must compile: an invalid one is reported at its attribute (or at the block
/// when no single attribute is at fault, or the attribute is not written).
impl river_parser::Validate for Arguments {
    fn validate(&self) -> Result<(), river_parser::decode::Invalid> {
        validate_rule_blocks(&self.rules)
    }
}

/// Checks `rule` blocks as a `Validate` impl does: the first invalid one is reported at its
/// attribute, or at the block when no single attribute is at fault (shared by every component
/// with `rule` blocks).
pub fn validate_rule_blocks(rules: &[RuleArgs]) -> Result<(), river_parser::decode::Invalid> {
    use river_parser::decode::Invalid;
    for (i, args) in rules.iter().enumerate() {
        if let Err(e) = Rule::new(args) {
            let inv = match e.attribute() {
                Some(attr) => Invalid::attr(attr, e.to_string()),
                None => Invalid::body(e.to_string()),
            };
            return Err(inv.in_block("rule", i));
        }
    }
    Ok(())
}
