//! Configuration sources: the files a load reads (the main file, every `*.alloy` and `*.river`
//! file of a main directory, the files `import.file` and the strings `import.string` bring in)
//! and diagnostics that name the file they belong to.
//!
//! A directory is read as Alloy reads one: its files (not its subdirectories) with the right
//! extension, in file-name order, form one module.

use river_parser::{Diagnostic, Diagnostics};
use std::path::{Path, PathBuf};

/// One source text of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The name diagnostics show (`config.alloy`, `modules/profiling.alloy`).
    pub name: String,
    pub text: String,
    /// The file it was read from, if it is a file (watched for changes by `rill run`).
    pub path: Option<PathBuf>,
}

impl Source {
    /// A source that was not read from a file (tests, `import.string`).
    pub fn text(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
            path: None,
        }
    }
}

/// A diagnostic and the index of the source (in the load's list of sources) it points into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiagnostic {
    pub file: usize,
    pub diagnostic: Diagnostic,
}

/// The file extensions a configuration directory contributes: Alloy's `.alloy` and rill's
/// historical `.river`.
pub const CONFIG_EXTENSIONS: &[&str] = &["alloy", "river"];

/// Whether `path` names a configuration file by its extension.
fn is_config_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e))
}

/// The configuration files of directory `dir`, sorted by file name (not recursive).
pub fn config_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_file() && is_config_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `path`: a file is one source named `display`; a directory gives one source per
/// configuration file in it, named `display/FILE`. An error is a message naming the path.
pub fn read_path(path: &Path, display: &str) -> Result<Vec<Source>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("reading {display}: {e}"))?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {display}: {e}"))?;
        return Ok(vec![Source {
            name: display.to_string(),
            text,
            path: Some(path.to_path_buf()),
        }]);
    }
    let files = config_files_in(path).map_err(|e| format!("reading {display}: {e}"))?;
    // An empty directory is an error, not an empty configuration: replacing a configuration
    // by an empty directory must not stop everything that runs.
    if files.is_empty() {
        return Err(format!(
            "reading {display}: the directory has no *.alloy or *.river file"
        ));
    }
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = Path::new(display).join(&file_name).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| format!("reading {name}: {e}"))?;
        out.push(Source {
            name,
            text,
            path: Some(file),
        });
    }
    Ok(out)
}

/// The directory `module_path` names for a module read from `path` (the directory itself, or
/// the file's directory).
pub fn module_path_of(path: &Path) -> String {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new(""))
    };
    let s = dir.display().to_string();
    if s.is_empty() {
        ".".to_string()
    } else {
        s
    }
}

/// What `rill run --config.watch` compares: the listing of a main directory (so an added or
/// removed file counts) or the main file's bytes, then the bytes of every file in `files`, in
/// order (an unreadable one counts as empty). None when `main` cannot be read.
pub fn snapshot(main: &Path, files: &[PathBuf]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if main.is_dir() {
        for f in config_files_in(main).ok()? {
            out.extend_from_slice(f.as_os_str().as_encoded_bytes());
            out.push(0);
        }
    } else {
        out.extend(std::fs::read(main).ok()?);
    }
    for f in files {
        out.push(0);
        out.extend_from_slice(f.as_os_str().as_encoded_bytes());
        out.push(0);
        out.extend(std::fs::read(f).unwrap_or_default());
    }
    Some(out)
}

/// Renders diagnostics of several sources, each as `NAME:LINE:COL: message`, source line, caret
/// and hint, separated by blank lines (one source renders like [`Diagnostics::render`]).
pub fn render(diags: &[FileDiagnostic], sources: &[Source]) -> String {
    diags
        .iter()
        .map(|d| match sources.get(d.file) {
            Some(s) => d.diagnostic.render(&s.name, &s.text),
            None => format!("{}\n", d.diagnostic.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The diagnostics without their files (the `diagnostics` field of a load error).
pub fn plain(diags: &[FileDiagnostic]) -> Diagnostics {
    Diagnostics(diags.iter().map(|d| d.diagnostic.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_parser::Span;

    #[test]
    fn directory_sources_are_sorted_and_filtered() {
        let dir = std::env::temp_dir().join(format!("rill-source-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.river"), "b").unwrap();
        std::fs::write(dir.join("a.alloy"), "a").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        std::fs::write(dir.join("sub/c.alloy"), "c").unwrap();
        let got = read_path(&dir, "cfg").unwrap();
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["cfg/a.alloy", "cfg/b.river"]);
        assert_eq!(got[0].text, "a");
        assert_eq!(module_path_of(&dir), dir.display().to_string());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn renders_each_diagnostic_in_its_own_file() {
        let sources = vec![
            Source::text("a.alloy", "x = 1\n"),
            Source::text("b.alloy", "yy\n"),
        ];
        let d = |file, start, end| FileDiagnostic {
            file,
            diagnostic: Diagnostic::new(Span::new(start, end), "bad"),
        };
        let out = render(&[d(1, 1, 2), d(0, 4, 5)], &sources);
        assert!(out.starts_with("b.alloy:1:2: bad\n"), "{out}");
        assert!(out.contains("\na.alloy:1:5: bad\n"), "{out}");
    }
}
