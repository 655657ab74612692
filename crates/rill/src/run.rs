//! `rill run FILE` (in progress).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The River configuration file to run.
    pub file: std::path::PathBuf,
}

pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rill run is not implemented yet")
}
