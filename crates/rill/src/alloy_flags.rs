//! Alloy's command-line flags as rill sees them: `--stability.level` (checked like Alloy, with no
//! effect: every rill feature is generally available) and the list of `alloy run` / `alloy
//! validate` flags rill does not support, which get a clear error instead of clap's "unexpected
//! argument".

/// Alloy's `--stability.level`: the minimum stability of the features a configuration may use.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StabilityLevel {
    #[default]
    GenerallyAvailable,
    PublicPreview,
    Experimental,
}

impl StabilityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            StabilityLevel::GenerallyAvailable => "generally-available",
            StabilityLevel::PublicPreview => "public-preview",
            StabilityLevel::Experimental => "experimental",
        }
    }
}

/// Flags of `alloy run` and `alloy validate` (from Alloy's CLI reference and `cmd_run.go`) that
/// rill does not implement. rill implements `--server.http.listen-addr`, `--storage.path`,
/// `--stability.level`, `--config.format alloy`, `--server.http.ui-path-prefix /` and
/// `--disable-reporting` (rill never reports usage).
pub const UNSUPPORTED: &[&str] = &[
    "server.http.memory-addr",
    "server.http.enable-pprof",
    "server.http.disable-support-bundle",
    "server.http.enable-graphql",
    "cluster.enabled",
    "cluster.node-name",
    "cluster.advertise-address",
    "cluster.advertise-interfaces",
    "cluster.join-addresses",
    "cluster.discover-peers",
    "cluster.rejoin-interval",
    "cluster.max-join-peers",
    "cluster.name",
    "cluster.enable-tls",
    "cluster.tls-ca-path",
    "cluster.tls-cert-path",
    "cluster.tls-key-path",
    "cluster.tls-server-name",
    "cluster.wait-for-size",
    "cluster.wait-timeout",
    "config.bypass-conversion-errors",
    "config.extra-args",
    "feature.community-components.enabled",
    "feature.component-shutdown-deadline",
];

/// The Alloy flag `arg` (`--cluster.enabled`, `--cluster.name=x`) names, if rill lacks it.
pub fn unsupported(arg: &str) -> Option<&'static str> {
    let name = arg.strip_prefix("--")?;
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    UNSUPPORTED.iter().copied().find(|f| *f == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_alloy_flags_with_and_without_values() {
        assert_eq!(unsupported("--cluster.enabled"), Some("cluster.enabled"));
        assert_eq!(unsupported("--cluster.name=prod"), Some("cluster.name"));
        assert_eq!(unsupported("--cluster.nam"), None);
        assert_eq!(unsupported("cluster.enabled"), None);
        assert_eq!(unsupported("--storage.path"), None);
    }
}
