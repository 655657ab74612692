//! The `rill` command line: `rill run FILE`, `rill fmt` and `rill profile`.

mod fmt;
mod profile;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "rill",
    version,
    about = "A component runtime for continuous profiling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a River configuration file.
    Run(run::RunArgs),
    /// Format a River file canonically (`-` reads standard input).
    Fmt(fmt::FmtArgs),
    /// Profile the host, a process or a container once, without a configuration.
    Profile(profile::ProfileArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Fmt(args) => fmt::fmt(args),
        Command::Profile(args) => profile::profile(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
