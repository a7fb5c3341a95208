//! `CLOUDCODE_NAME=value` settings files (`server.env`, `tui.env`): one
//! reader for every binary, so a file that one of them accepts the other
//! reads the same way.
//!
//! A line is `NAME=value`, with spaces around either trimmed and one pair of
//! double quotes around the value removed; blank lines and lines starting
//! with `#` are skipped. Names must start with `CLOUDCODE_`: such a file can
//! never set `PATH`, `LD_PRELOAD` or anything else of the process.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected CLOUDCODE_NAME=value")]
    NotAssignment { path: PathBuf, line: usize },
    #[error("{path}:{line}: {name} is not a cloudcode setting (names start with CLOUDCODE_)")]
    NotASetting { path: PathBuf, line: usize, name: String },
}

/// Parses the text of a settings file read from `path` (named in errors).
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut settings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(|| EnvFileError::NotAssignment {
            path: path.to_owned(),
            line: index + 1,
        })?;
        let name = name.trim();
        if !name.starts_with("CLOUDCODE_") {
            return Err(EnvFileError::NotASetting {
                path: path.to_owned(),
                line: index + 1,
                name: name.chars().take(80).collect(),
            });
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        settings.push((name.to_owned(), value.to_owned()));
    }
    Ok(settings)
}

/// Reads and parses a settings file; a missing file is `None`.
pub fn read(path: &Path) -> Result<Option<Vec<(String, String)>>, EnvFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EnvFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_lines_comments_and_quotes() {
        let path = Path::new("x.env");
        let text = "# comment\nCLOUDCODE_A = one two\n\nCLOUDCODE_B=\"64\"\nCLOUDCODE_C=\n";
        assert_eq!(
            parse(text, path).unwrap(),
            vec![
                ("CLOUDCODE_A".to_owned(), "one two".to_owned()),
                ("CLOUDCODE_B".to_owned(), "64".to_owned()),
                ("CLOUDCODE_C".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn refusals_name_the_line() {
        let path = Path::new("tui.env");
        let err = parse("CLOUDCODE_A=1\ngarbage\n", path).unwrap_err();
        assert!(matches!(err, EnvFileError::NotAssignment { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("tui.env:2"), "{err}");
        let err = parse("PATH=/evil\n", path).unwrap_err();
        assert!(
            matches!(&err, EnvFileError::NotASetting { name, .. } if name == "PATH"),
            "{err}"
        );
        assert!(read(Path::new("/nonexistent/cloudcode.env")).unwrap().is_none());
    }
}
