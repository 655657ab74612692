//! `rill fmt`: canonical formatting of River files (in progress).

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    /// The file to format, or `-` for standard input.
    pub file: String,
    /// Write the result back to the file instead of printing it.
    #[arg(long, short)]
    pub write: bool,
}

pub fn fmt(_args: FmtArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rill fmt is not implemented yet")
}
