//! `rill fmt`: canonical formatting of River files. Prints the formatted file to stdout, or with
//! `--write` rewrites the file in place when it changed; `-` reads standard input. Invalid input
//! prints every diagnostic as `FILE:LINE:COL: message` with the source line and exits with 1.

use anyhow::Context as _;
use std::io::{Read as _, Write as _};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FmtArgs {
    /// The file to format, or `-` for standard input.
    pub file: String,
    /// Write the result back to the file instead of printing it.
    #[arg(long, short)]
    pub write: bool,
}

pub fn fmt(args: FmtArgs) -> anyhow::Result<ExitCode> {
    let stdin = args.file == "-";
    if stdin && args.write {
        anyhow::bail!("--write cannot be used with standard input");
    }
    let (name, src) = if stdin {
        let mut src = String::new();
        std::io::stdin()
            .read_to_string(&mut src)
            .context("reading standard input")?;
        ("<stdin>".to_string(), src)
    } else {
        let src = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file))?;
        (args.file.clone(), src)
    };

    let formatted = match river_parser::format_source(&src) {
        Ok(f) => f,
        Err(diags) => {
            let mut err = std::io::stderr().lock();
            write!(err, "{}", diags.render(&name, &src))?;
            err.flush()?;
            return Ok(ExitCode::from(1));
        }
    };

    if args.write {
        if formatted != src {
            std::fs::write(&args.file, &formatted)
                .with_context(|| format!("writing {}", args.file))?;
            tracing::debug!(file = %args.file, "rewrote formatted file");
        }
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(formatted.as_bytes())?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
