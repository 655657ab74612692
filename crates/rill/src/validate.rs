//! `rill validate PATH`: checks a configuration without running it, like `alloy validate`.
//! `PATH` is a file, or a directory whose `*.alloy` and `*.river` files (not those of its
//! subdirectories) form one configuration. Every diagnostic goes to stderr as
//! `FILE:LINE:COL: message` with the source line, and the exit code is 1; a valid configuration
//! prints nothing and exits with 0. What is checked: [`flow_runtime::validate`].

use crate::alloy_flags::StabilityLevel;
use anyhow::Context as _;
use flow_runtime::source::{module_path_of, render, Source};
use flow_runtime::validate::validate_sources;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The configuration file, or a directory of `*.alloy` / `*.river` files.
    pub path: PathBuf,
    /// Alloy's minimum stability level (`generally-available`, `public-preview`,
    /// `experimental`); checked, with no effect: every rill feature is generally available.
    #[arg(long = "stability.level", value_enum, default_value_t)]
    pub stability_level: StabilityLevel,
    /// The configuration format; rill reads only Alloy's.
    #[arg(long = "config.format", default_value = "alloy", value_parser = ["alloy"])]
    pub config_format: String,
}

/// The configuration files of directory `dir`: its `*.alloy` and `*.river` files, sorted by name
/// (subdirectories are not searched).
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .is_some_and(|e| e == "alloy" || e == "river");
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    tracing::debug!(
        stability_level = args.stability_level.as_str(),
        config_format = %args.config_format,
        "validating"
    );
    let paths = if args.path.is_dir() {
        let files = config_files(&args.path)
            .with_context(|| format!("reading directory {}", args.path.display()))?;
        if files.is_empty() {
            anyhow::bail!(
                "{}: no *.alloy or *.river files in this directory",
                args.path.display()
            );
        }
        files
    } else {
        vec![args.path.clone()]
    };
    let mut sources = Vec::with_capacity(paths.len());
    for path in &paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        sources.push(Source {
            name: path.display().to_string(),
            text,
            path: Some(path.clone()),
        });
    }
    // Every file is parsed on its own (an unclosed block does not swallow the next file), then
    // the configuration is checked as `rill run` loads it: imports read, `module_path` set, the
    // components of modules checked in their module.
    let registry = components::registry();
    let module_path = Some(module_path_of(&args.path));
    let Err(diags) = validate_sources(&mut sources, &registry, module_path) else {
        return Ok(ExitCode::SUCCESS);
    };
    let rendered = render(&diags, &sources);
    eprint!("{rendered}");
    if !rendered.ends_with('\n') {
        eprintln!();
    }
    eprintln!("error: validation failed");
    Ok(ExitCode::FAILURE)
}
