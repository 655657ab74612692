//! `rill run`: wires a [`Runtime`] to the HTTP server, SIGHUP, the optional config-file watch and
//! shutdown signals. The first load happens after the server is up (so `/-/ready` answers 503
//! meanwhile); if it fails the diagnostics are printed and the process exits non-zero.

use crate::logging::LoggingConfig;
use crate::registry::Registry;
use crate::runtime::{LoadError, ReloadFailure, Runtime, RuntimeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of `rill run`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub config_file: PathBuf,
    pub listen_addr: SocketAddr,
    pub storage_path: PathBuf,
    /// Poll the config file and reload when its content changes.
    pub watch: Option<Duration>,
    /// Install the global `tracing` subscriber (the binary does; tests do not).
    pub init_logging: bool,
    /// How long components get to stop after SIGTERM/SIGINT (see [`Runtime::shutdown_within`]).
    pub shutdown_timeout: Duration,
}

/// Runs until SIGINT/SIGTERM, then stops the components within `shutdown_timeout` (plus a short
/// grace); components that did not stop by then are named in a warning and abandoned. Returns a
/// failure exit code when the first load fails.
pub async fn run(cfg: AgentConfig, registry: Registry) -> anyhow::Result<ExitCode> {
    let file_name = cfg.config_file.display().to_string();
    let rt = Runtime::new(
        registry,
        RuntimeOptions {
            storage_path: cfg.storage_path.clone(),
            file_name,
            config_path: Some(cfg.config_file.clone()),
        },
    );
    if cfg.init_logging {
        rt.set_logging_hook(crate::logging::init(&LoggingConfig::default()));
    }
    let cancel = CancellationToken::new();
    let (addr, server) = crate::http::serve(rt.clone(), cfg.listen_addr, cancel.clone())
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", cfg.listen_addr))?;
    tracing::info!(addr = %addr, "HTTP server listening");

    match rt.reload().await {
        Ok(()) => {}
        Err(e) => {
            match &e {
                ReloadFailure::Read(msg) => eprintln!("error: {}", msg.trim_end()),
                ReloadFailure::Load(LoadError::Rejected { rendered, .. })
                | ReloadFailure::Load(LoadError::Evaluation { rendered, .. }) => {
                    eprintln!(
                        "error: could not perform the initial load successfully\n\n{rendered}"
                    )
                }
            }
            cancel.cancel();
            rt.shutdown_within(cfg.shutdown_timeout).await;
            let _ = server.await;
            return Ok(ExitCode::FAILURE);
        }
    }

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_seen = tokio::fs::read(&cfg.config_file).await.ok();
    let mut watch = tokio::time::interval(cfg.watch.unwrap_or(Duration::from_secs(3600)));
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
                last_seen = tokio::fs::read(&cfg.config_file).await.ok();
            }
            _ = watch.tick(), if cfg.watch.is_some() => {
                let now = tokio::fs::read(&cfg.config_file).await.ok();
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
    let abandoned = rt.shutdown_within(cfg.shutdown_timeout).await;
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
