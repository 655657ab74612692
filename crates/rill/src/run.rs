//! `rill run FILE`: runs a River configuration with the Flow runtime (HTTP server, hot reload on
//! `/-/reload`, SIGHUP and optionally on file change).

use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The River configuration file to run.
    pub file: std::path::PathBuf,
    /// Address the HTTP server (UI, API, metrics, reload) listens on.
    #[arg(long = "server.http.listen-addr", default_value = "127.0.0.1:12345")]
    pub listen_addr: std::net::SocketAddr,
    /// Base directory for component data; each component gets `<path>/<component ID>`.
    #[arg(long = "storage.path", default_value = "data-alloy/")]
    pub storage_path: std::path::PathBuf,
    /// Reload the configuration when the file changes (polled).
    #[arg(long = "config.watch")]
    pub watch: bool,
    /// How often `--config.watch` checks the file.
    #[arg(long = "config.watch-interval", default_value = "1s", value_parser = parse_duration)]
    pub watch_interval: Duration,
    /// How long components get to stop (pyroscope.ebpf's last collection, pyroscope.write's
    /// queues) after SIGTERM or SIGINT; components still running then are abandoned (named in a
    /// warning) and rill exits, at most a few seconds later.
    #[arg(long = "shutdown.timeout", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Also register the runtime's test components (test.pulse, test.passthrough, test.sum);
    /// used by the end-to-end tests.
    #[arg(long = "feature.test-components", hide = true)]
    pub test_components: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?} (use ms, s or m)")),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let test_components = args.test_components;
    let cfg = flow_runtime::agent::AgentConfig {
        config_file: args.file,
        listen_addr: args.listen_addr,
        storage_path: args.storage_path,
        watch: args.watch.then_some(args.watch_interval),
        init_logging: true,
        shutdown_timeout: args.shutdown_timeout,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut registry = components::registry();
    if test_components {
        registry.extend(flow_runtime::testing::registry());
    }
    let code = rt.block_on(flow_runtime::agent::run(cfg, registry));
    // Dropping the runtime would wait for every blocking task, including those of components
    // abandoned at shutdown (a collect stuck in symbolization): give them a second at most.
    rt.shutdown_timeout(RUNTIME_DROP_TIMEOUT);
    code
}

/// How long the tokio runtime waits for blocking tasks once the agent has returned.
const RUNTIME_DROP_TIMEOUT: Duration = Duration::from_secs(1);
