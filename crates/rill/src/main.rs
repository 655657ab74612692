//! The `rill` command line: `rill run FILE`, `rill validate PATH`, `rill fmt` and `rill profile`.
//! An `alloy run` / `alloy validate` flag rill does not implement is an error naming it.

mod alloy_flags;
mod fmt;
mod profile;
mod run;
mod validate;

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
    /// Check a configuration file or directory without running it.
    Validate(validate::ValidateArgs),
    /// Format River files canonically (none or `-` reads standard input).
    Fmt(fmt::FmtArgs),
    /// Profile the host, a process or a container once, without a configuration.
    Profile(profile::ProfileArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate(args) => validate::validate(args),
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

/// Reports a command-line error: an Alloy flag rill lacks by name, anything else as clap does.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            if let Some(flag) = alloy_flags::unsupported(arg) {
                eprintln!("error: rill does not support --{flag} (Alloy flag)");
                return ExitCode::from(2);
            }
        }
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
