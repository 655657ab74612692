//! `rill validate PATH`: checks a configuration without running it, like `alloy validate`.
//! `PATH` is a file, or a directory whose `*.alloy` and `*.river` files (not those of its
//! subdirectories) form one configuration. Every diagnostic goes to stderr as
//! `FILE:LINE:COL: message` with the source line, and the exit code is 1; a valid configuration
//! prints nothing and exits with 0. What is checked: [`flow_runtime::validate`].

use crate::alloy_flags::StabilityLevel;
use anyhow::Context as _;
use river_parser::{Diagnostics, Span};
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

/// One file of the configuration and where it starts in the combined source.
struct Source {
    name: String,
    text: String,
    offset: usize,
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
    let mut combined = String::new();
    for path in &paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        sources.push(Source {
            name: path.display().to_string(),
            offset: combined.len(),
            text: text.clone(),
        });
        combined.push_str(&text);
        if !combined.ends_with('\n') {
            combined.push('\n');
        }
    }

    // Syntax first, file by file (an unclosed block must not swallow the next file).
    let syntax: Vec<String> = sources
        .iter()
        .filter_map(|s| {
            river_parser::parse_file(&s.text)
                .err()
                .map(|d| d.render(&s.name, &s.text))
        })
        .collect();
    let mut rendered = syntax.join("\n");
    if rendered.is_empty() {
        let registry = components::registry();
        if let Err(d) = flow_runtime::validate::validate_source(&combined, &registry) {
            rendered = render_split(&d, &sources);
        }
    }
    if rendered.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprint!("{rendered}");
    if !rendered.ends_with('\n') {
        eprintln!();
    }
    eprintln!("error: validation failed");
    Ok(ExitCode::FAILURE)
}

/// Renders diagnostics of the combined source against the file each one points into.
fn render_split(diags: &Diagnostics, sources: &[Source]) -> String {
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let end = sources.get(i + 1).map_or(usize::MAX, |n| n.offset);
        let mine: Vec<_> = diags
            .0
            .iter()
            .filter(|d| d.span.start >= s.offset && d.span.start < end)
            .map(|d| {
                let mut d = d.clone();
                let start = d.span.start - s.offset;
                let stop = d
                    .span
                    .end
                    .saturating_sub(s.offset)
                    .clamp(start, s.text.len());
                d.span = Span::new(start, stop);
                d
            })
            .collect();
        if !mine.is_empty() {
            out.push(Diagnostics(mine).render(&s.name, &s.text));
        }
    }
    out.join("\n")
}
