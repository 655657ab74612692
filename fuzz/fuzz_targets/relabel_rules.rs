//! Fuzzes `discovery.relabel` rules on random label sets: arbitrary rules (actions, regexes,
//! templates, separators, moduli) are validated like at config load; every rule that compiles
//! is applied to arbitrary label sets. Must never panic, must be deterministic, and a kept
//! target never gains a label with an empty value through a rule.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

// relabel.rs takes its label-set type from its sibling module `target`.
#[path = "../../crates/components/src/discovery/target.rs"]
#[allow(dead_code, unused_imports)]
mod target;

#[path = "../../crates/components/src/discovery/relabel.rs"]
#[allow(dead_code, unused_imports)]
mod relabel;

use relabel::{compile_rules, process, Rule, RuleArgs};

const ACTIONS: [&str; 12] = [
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
    "bogus",
];
const REGEXES: [&str; 8] = [
    "(.*)",
    "(.+)",
    "a(b*)c",
    "__meta_(.+)",
    "",
    "(?i)X(.)",
    "([a-z]+)-([0-9]+)",
    ".*",
];
const TEMPLATES: [&str; 8] = ["$1", "${1}", "$2", "${1}_$2", "$0", "$name", "__tmp_$1", ""];

#[derive(Arbitrary, Debug)]
struct InRule {
    source: Option<Vec<u8>>,
    separator: Option<String>,
    regex: Result<u8, String>,
    modulus: u8,
    target: Result<u8, String>,
    replacement: Result<u8, String>,
    action: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<InRule>,
    label_sets: Vec<Vec<(u8, String)>>,
    extra_names: Vec<String>,
}

const NAMES: [&str; 8] = [
    "__address__",
    "job",
    "a",
    "b",
    "__meta_x",
    "instance",
    "X1",
    "app-7",
];

fn name(i: u8, extra: &[String]) -> String {
    let i = usize::from(i);
    if i < NAMES.len() || extra.is_empty() {
        NAMES[i % NAMES.len()].to_string()
    } else {
        extra[i % extra.len()].clone()
    }
}

fn pick(r: &Result<u8, String>, table: &[&str]) -> String {
    match r {
        Ok(i) => table[usize::from(*i) % table.len()].to_string(),
        Err(s) => s.clone(),
    }
}

fuzz_target!(|input: Input| {
    let args: Vec<RuleArgs> = input
        .rules
        .iter()
        .take(16)
        .map(|r| RuleArgs {
            source_labels: r
                .source
                .as_ref()
                .map(|v| v.iter().map(|&i| name(i, &input.extra_names)).collect()),
            separator: r.separator.clone().unwrap_or_else(|| ";".into()),
            regex: pick(&r.regex, &REGEXES),
            modulus: u64::from(r.modulus),
            target_label: pick(
                &r.target,
                &NAMES
                    .iter()
                    .chain(TEMPLATES.iter())
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            replacement: pick(&r.replacement, &TEMPLATES),
            action: ACTIONS[usize::from(r.action) % ACTIONS.len()].to_string(),
        })
        .collect();
    // Validate each rule on its own too, so that later rules are exercised when one is bad.
    let rules: Vec<Rule> = args.iter().filter_map(|a| Rule::new(a).ok()).collect();
    let _ = compile_rules(&args);
    for set in &input.label_sets {
        let labels: BTreeMap<String, String> = set
            .iter()
            .map(|(n, v)| (name(*n, &input.extra_names), v.clone()))
            .collect();
        let once = process(labels.clone(), &rules);
        let twice = process(labels.clone(), &rules);
        assert_eq!(once, twice, "relabeling is not deterministic");
        if let Some(out) = once {
            for (k, v) in &out {
                if v.is_empty() {
                    assert_eq!(
                        labels.get(k).map(String::as_str),
                        Some(""),
                        "rule created empty label {k:?}"
                    );
                }
            }
        }
    }
});
