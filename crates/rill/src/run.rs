//! `rill run PATH`: runs a River configuration (a file, or every `*.alloy` and `*.river` file of
//! a directory, as one configuration) with the Flow runtime, wired to the HTTP server,
//! SIGHUP, the optional config-file watch and shutdown signals. The first load happens after the
//! server is up (so `/-/ready` answers 503 meanwhile); if it fails the diagnostics are printed and
//! the process exits non-zero.

use flow_runtime::logging::LoggingConfig;
use flow_runtime::{
    CancellationToken, LoadError, Registry, ReloadFailure, Runtime, RuntimeOptions,
};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The River configuration file to run, or a directory: every `*.alloy` and `*.river` file
    /// in it (not in subdirectories), loaded as one configuration.
    pub file: std::path::PathBuf,
    /// Address the HTTP server (UI, API, metrics, reload) listens on.
    #[arg(long = "server.http.listen-addr", default_value = "127.0.0.1:12345")]
    pub listen_addr: std::net::SocketAddr,
    /// Base directory for component data; each component gets `<path>/<component ID>`.
    #[arg(long = "storage.path", default_value = "data-alloy/")]
    pub storage_path: std::path::PathBuf,
    /// Alloy's minimum stability level (`generally-available`, `public-preview`,
    /// `experimental`); checked and logged, with no effect: every rill feature is generally
    /// available.
    #[arg(long = "stability.level", value_enum, default_value_t)]
    pub stability_level: crate::alloy_flags::StabilityLevel,
    /// The configuration format; rill reads only Alloy's.
    #[arg(long = "config.format", default_value = "alloy", value_parser = ["alloy"])]
    pub config_format: String,
    /// Where the UI is served; rill serves it at `/` only.
    #[arg(long = "server.http.ui-path-prefix", default_value = "/", value_parser = ["/"])]
    pub ui_path_prefix: String,
    /// Accepted for Alloy compatibility: rill never reports usage data.
    #[arg(long = "disable-reporting")]
    pub disable_reporting: bool,
    /// Reload the configuration when it changes (polled: the file, the directory's files and
    /// every file `import.file` read).
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
    /// Also register the runtime's test components (test.pulse, test.passthrough, test.sum, ...);
    /// used by the end-to-end tests. Only test builds have them (flow-runtime's `testing`
    /// feature); other builds refuse the flag.
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
    let mut registry = components::registry();
    if args.test_components {
        let Some(test) = flow_runtime::registry::test_components() else {
            anyhow::bail!(
                "--feature.test-components: this build has no test components \
                 (they come with flow-runtime's `testing` feature, on in test builds only)"
            );
        };
        registry.extend(test);
    }
    let rt = tokio::runtime::Runtime::new()?;
    let code = rt.block_on(serve(args, registry));
    // Dropping the runtime would wait for every blocking task, including those of components
    // abandoned at shutdown (a collect stuck in symbolization): give them a second at most.
    rt.shutdown_timeout(RUNTIME_DROP_TIMEOUT);
    code
}

/// What `--config.watch` compares: the config (file or directory listing) and every file the
/// last load read, imported files included.
async fn snapshot(rt: &Runtime, path: &std::path::Path) -> Option<Vec<u8>> {
    let files = rt.source_files().await;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || flow_runtime::source::snapshot(&path, &files))
        .await
        .ok()
        .flatten()
}

/// How long the tokio runtime waits for blocking tasks once the agent has returned.
const RUNTIME_DROP_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until SIGINT/SIGTERM, then stops the components within `--shutdown.timeout` (plus a short
/// grace); components that did not stop by then are named in a warning and abandoned. Returns a
/// failure exit code when the first load fails.
async fn serve(args: RunArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    let watch_every = args.watch.then_some(args.watch_interval);
    let rt = Runtime::new(
        registry,
        RuntimeOptions {
            storage_path: args.storage_path.clone(),
            file_name: args.file.display().to_string(),
            config_path: Some(args.file.clone()),
        },
    );
    rt.set_logging_hook(flow_runtime::logging::init(&LoggingConfig::default()));
    tracing::info!(
        storage_path = %args.storage_path.display(),
        stability_level = args.stability_level.as_str(),
        "run configuration"
    );
    let cancel = CancellationToken::new();
    let (addr, server) = flow_runtime::http::serve(rt.clone(), args.listen_addr, cancel.clone())
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", args.listen_addr))?;
    tracing::info!(addr = %addr, "HTTP server listening");

    if let Err(e) = rt.reload().await {
        match &e {
            ReloadFailure::Read(msg) => eprintln!("error: {}", msg.trim_end()),
            ReloadFailure::Load(LoadError::Rejected { rendered, .. })
            | ReloadFailure::Load(LoadError::Evaluation { rendered, .. }) => {
                eprintln!("error: could not perform the initial load successfully\n\n{rendered}")
            }
        }
        cancel.cancel();
        rt.shutdown_within(args.shutdown_timeout).await;
        let _ = server.await;
        return Ok(ExitCode::FAILURE);
    }

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_seen = snapshot(&rt, &args.file).await;
    let mut watch = tokio::time::interval(watch_every.unwrap_or(Duration::from_secs(3600)));
    watch.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                if let Err(e) = rt.reload().await {
                    tracing::error!("reload failed:\n{e}");
                }
                last_seen = snapshot(&rt, &args.file).await;
            }
            _ = watch.tick(), if watch_every.is_some() => {
                let now = snapshot(&rt, &args.file).await;
                if now.is_some() && now != last_seen {
                    last_seen = now;
                    tracing::info!("config file changed: reloading");
                    if let Err(e) = rt.reload().await {
                        tracing::error!("reload failed:\n{e}");
                    }
                }
            }
        }
    }
    tracing::info!("shutting down");
    cancel.cancel();
    let abandoned = rt.shutdown_within(args.shutdown_timeout).await;
    let _ = server.await;
    if abandoned.is_empty() {
        tracing::info!("stopped");
    } else {
        tracing::warn!(
            components = %abandoned.join(", "),
            "exiting without waiting for components that did not stop"
        );
    }
    Ok(ExitCode::SUCCESS)
}
