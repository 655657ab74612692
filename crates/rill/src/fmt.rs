//! `rill fmt`: canonical formatting of River files, like `alloy fmt`. Prints the formatted files
//! to stdout; with `--write`/`-w` rewrites each file in place when it changed; with `--test`/`-t`
//! only checks, naming every file that is not formatted and exiting with 1. No file, or `-`, reads
//! standard input (not with `--write`). Invalid input prints every diagnostic as
//! `FILE:LINE:COL: message` with the source line and exits with 1.

use anyhow::Context as _;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    /// The files to format; none or `-` reads standard input.
    pub files: Vec<String>,
    /// Write the result back to each file instead of printing it.
    #[arg(long, short, conflicts_with = "test")]
    pub write: bool,
    /// Only check: exit with 1, naming the files whose formatting would change.
    #[arg(long, short)]
    pub test: bool,
}

pub fn fmt(args: FmtArgs) -> anyhow::Result<ExitCode> {
    let files = if args.files.is_empty() {
        vec!["-".to_string()]
    } else {
        args.files.clone()
    };
    if args.write && files.iter().any(|f| f == "-") {
        anyhow::bail!("--write cannot be used with standard input");
    }
    let mut failed = false;
    for file in &files {
        failed |= !fmt_one(file, &args)?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Formats one file; false when it does not parse or (with `--test`) is not formatted.
fn fmt_one(file: &str, args: &FmtArgs) -> anyhow::Result<bool> {
    let (name, src) = if file == "-" {
        let mut src = String::new();
        std::io::stdin()
            .read_to_string(&mut src)
            .context("reading standard input")?;
        ("<stdin>".to_string(), src)
    } else {
        if std::path::Path::new(file).is_dir() {
            anyhow::bail!("{file}: cannot format a directory");
        }
        let src = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        (file.to_string(), src)
    };

    let formatted = match river_parser::format_source(&src) {
        Ok(f) => f,
        Err(diags) => {
            let mut err = std::io::stderr().lock();
            write!(err, "{}", diags.render(&name, &src))?;
            err.flush()?;
            return Ok(false);
        }
    };

    if args.test {
        if formatted != src {
            eprintln!("file {name} is not formatted correctly");
            return Ok(false);
        }
    } else if args.write {
        if formatted != src {
            std::fs::write(file, &formatted).with_context(|| format!("writing {file}"))?;
            tracing::debug!(file = %file, "rewrote formatted file");
        }
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(formatted.as_bytes())?;
        out.flush()?;
    }
    Ok(true)
}
