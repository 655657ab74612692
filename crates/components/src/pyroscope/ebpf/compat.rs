//! What rill does with the arguments of Alloy's profiler it has no engine for: the language
//! switches (those whose frames rill does not unwind are named once per load, and shown as
//! native frames), the arguments Alloy keeps only for compatibility (one deprecation warning
//! per load) and those of probe profiling and trace correlation (`load_probe`, `probe_links`,
//! `bpf_fs_root`, `obi_process_context_enabled`: one warning per load, no effect). All appear in
//! the component's debug information.

use std::collections::BTreeMap;

use river_parser::Value;
use tracing::{info, warn};

use super::Arguments;

/// What becomes of a language's frames in rill's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Support {
    /// Native code to rill: unwound like C, named from the binary (Go's `.gopclntab`).
    Native,
    /// An interpreter or JIT rill does not unwind: its frames are the runtime's own
    /// functions (and perf-map names where the runtime writes `/tmp/perf-PID.map`).
    NotUnwound,
}

/// The language switches of Alloy ≥ 1.11 other than `python_enabled`, with their state.
pub(super) fn languages(args: &Arguments) -> [(&'static str, bool, Support); 7] {
    [
        ("go", args.go_enabled, Support::Native),
        ("hotspot", args.hotspot_enabled, Support::NotUnwound),
        ("perl", args.perl_enabled, Support::NotUnwound),
        ("php", args.php_enabled, Support::NotUnwound),
        ("ruby", args.ruby_enabled, Support::NotUnwound),
        ("v8", args.v8_enabled, Support::NotUnwound),
        ("dotnet", args.dotnet_enabled, Support::NotUnwound),
    ]
}

/// The enabled languages rill shows as native frames.
pub(super) fn native_only(args: &Arguments) -> Vec<&'static str> {
    languages(args)
        .into_iter()
        .filter(|&(_, enabled, support)| enabled && support == Support::NotUnwound)
        .map(|(name, _, _)| name)
        .collect()
}

/// Logs, once per load of the arguments, the deprecated arguments they set and the enabled
/// languages rill does not unwind.
pub(super) fn log_load(args: &Arguments) {
    let deprecated = args.deprecated_set();
    if !deprecated.is_empty() {
        warn!(
            arguments = %deprecated.join(", "),
            "pyroscope.ebpf: deprecated arguments are ignored (Alloy keeps them only for compatibility)"
        );
    }
    let without_effect = args.without_effect();
    if !without_effect.is_empty() {
        warn!(
            arguments = %without_effect.join(", "),
            "pyroscope.ebpf: rill has no probe profiling and no trace correlation; these arguments have no effect"
        );
    }
    let native = native_only(args);
    if !native.is_empty() {
        info!(
            languages = %native.join(", "),
            "pyroscope.ebpf: rill does not unwind these languages; their frames are shown as native frames"
        );
    }
}

/// Debug information about these arguments: `languages` (name → what rill does),
/// `deprecated_arguments` and `arguments_without_effect` (those set).
pub(super) fn debug_fields(args: &Arguments) -> BTreeMap<String, Value> {
    let mut langs = BTreeMap::new();
    langs.insert(
        "python".to_string(),
        Value::String(
            if args.python_enabled {
                "Python frames with file and line (CPython 3.6-3.13)"
            } else {
                "disabled (the interpreter's native frames)"
            }
            .to_string(),
        ),
    );
    for (name, enabled, support) in languages(args) {
        let what = match (support, enabled) {
            (Support::Native, true) => "unwound as native code",
            (Support::Native, false) => "unwound as native code (go_enabled = false is ignored)",
            (Support::NotUnwound, true) => "shown as native frames",
            (Support::NotUnwound, false) => "disabled (shown as native frames, as in Alloy)",
        };
        langs.insert(name.to_string(), Value::String(what.to_string()));
    }
    let mut out = BTreeMap::new();
    out.insert("languages".into(), Value::Object(langs));
    out.insert(
        "deprecated_arguments".into(),
        Value::Array(
            args.deprecated_set()
                .into_iter()
                .map(|n| Value::String(n.to_string()))
                .collect(),
        ),
    );
    out.insert(
        "arguments_without_effect".into(),
        Value::Array(
            args.without_effect()
                .into_iter()
                .map(|n| Value::String(n.to_string()))
                .collect(),
        ),
    );
    out.insert("comm".into(), Value::String(args.comm.as_str().to_string()));
    out.insert("pid_label".into(), Value::Bool(args.pid_label));
    out.insert("kernel_frames".into(), Value::Bool(args.kernel_stacks()));
    out.insert("lazy_mode".into(), Value::Bool(args.lazy_mode));
    out
}
