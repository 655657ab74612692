//! A discovered target (a label set) and its River form: what every `discovery.*` component
//! exports as `targets`/`output` and what `discovery.relabel` rewrites.

use std::collections::BTreeMap;

/// A target: a set of labels.
pub type Labels = BTreeMap<String, String>;

/// Converts label sets to the River value `list(map(string))`.
pub fn targets_value(targets: &[Labels]) -> river_parser::Value {
    use river_parser::Value;
    Value::Array(
        targets
            .iter()
            .map(|t| {
                Value::Object(
                    t.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect(),
    )
}
