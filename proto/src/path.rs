//! Paths inside a project's workspace, as clients name them.
//!
//! A [`WorkspacePath`] is relative to the workspace root, uses `/` as its only
//! separator and can be joined onto the root without ever leaving it: `..`,
//! `.`, empty components, absolute paths, NUL and other control characters
//! and Unicode that disguises what a name looks like (bidirectional
//! overrides, zero-width characters) are refused when the path is parsed, so
//! no code past the parser has to think about them. Symlinks are the file
//! system's business and are handled where files are opened.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Names starting with this are the runner's and storage's temporary files;
/// clients may neither create nor see them.
pub const RESERVED_PREFIX: &str = ".cloudcode-tmp-";

thread_local! {
    /// The refusal behind this thread's last failed [`WorkspacePath`]
    /// deserialisation: serde's errors carry only text, and a server tells
    /// a refused path from other bad input by type ([`refusal_behind`]).
    static REFUSED: std::cell::Cell<Option<PathError>> = const { std::cell::Cell::new(None) };
}

/// Runs `deserialise` and, when it fails because a path was refused, gives
/// that refusal with its error.
pub fn refusal_behind<T, E>(deserialise: impl FnOnce() -> Result<T, E>) -> Result<T, (E, Option<PathError>)> {
    REFUSED.with(|r| r.take());
    deserialise().map_err(|e| (e, REFUSED.with(|r| r.take())))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute paths are not accepted; name paths relative to the workspace root")]
    Absolute,
    #[error("`..` is not accepted in a path")]
    ParentComponent,
    #[error("`.` and empty components (`a//b`, a trailing `/`) are not accepted in a path")]
    EmptyOrDotComponent,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path contains the control character U+{0:04X}")]
    ControlChar(u32),
    #[error("the path contains U+{0:04X}, which disguises how the name reads")]
    DeceptiveChar(u32),
    #[error("`\\` is not a path separator here and is not accepted in names")]
    Backslash,
    #[error("a name cannot contain `/`")]
    SlashInName,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("a path component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("names starting with `{RESERVED_PREFIX}` are reserved")]
    Reserved,
}

/// A validated path relative to the workspace root. The empty path is the
/// root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Ok(Self::root());
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        if raw.starts_with('/') {
            return Err(PathError::Absolute);
        }
        for component in raw.split('/') {
            check_component(component)?;
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component, or `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// The containing directory, or `None` for the root.
    pub fn parent(&self) -> Option<WorkspacePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => Self(self.0[..i].to_owned()),
            None => Self::root(),
        })
    }

    /// Appends one validated component: a name, never a path.
    pub fn join(&self, name: &str) -> Result<WorkspacePath, PathError> {
        if name.contains('/') {
            return Err(PathError::SlashInName);
        }
        check_component(name)?;
        if self.is_root() {
            Ok(Self(name.to_owned()))
        } else {
            let joined = format!("{}/{}", self.0, name);
            if joined.len() > MAX_PATH_BYTES {
                return Err(PathError::TooLong);
            }
            Ok(Self(joined))
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &WorkspacePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The path as a relative `std::path::Path` (`.` for the root), for APIs
    /// that open it beneath a directory handle.
    pub fn as_relative_fs_path(&self) -> &std::path::Path {
        if self.is_root() {
            std::path::Path::new(".")
        } else {
            std::path::Path::new(&self.0)
        }
    }
}

fn check_component(component: &str) -> Result<(), PathError> {
    if component.is_empty() || component == "." {
        return Err(PathError::EmptyOrDotComponent);
    }
    if component == ".." {
        return Err(PathError::ParentComponent);
    }
    if component.len() > MAX_COMPONENT_BYTES {
        return Err(PathError::ComponentTooLong);
    }
    if component.starts_with(RESERVED_PREFIX) {
        return Err(PathError::Reserved);
    }
    for c in component.chars() {
        check_char(c)?;
    }
    Ok(())
}

fn check_char(c: char) -> Result<(), PathError> {
    let code = c as u32;
    match c {
        '\0' => Err(PathError::Nul),
        '\\' => Err(PathError::Backslash),
        _ if c.is_control() => Err(PathError::ControlChar(code)),
        _ if is_deceptive(c) => Err(PathError::DeceptiveChar(code)),
        _ => Ok(()),
    }
}

/// Characters that make a name display as another, by Unicode property
/// rather than by a list that goes stale: every format character
/// (General_Category Cf: the bidirectional marks, embeddings, overrides and
/// isolates, the Arabic letter mark, zero-width space, joiners and
/// non-joiners, the word joiner, invisible operators, the BOM, soft hyphen,
/// interlinear annotations) and the line and paragraph separators (Zl, Zp).
fn is_deceptive(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // No ASCII character is in these categories, and nearly every path is
    // ASCII: the table lookup was a few percent of a runner taking 10,000
    // uploads.
    !c.is_ascii()
        && matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("(workspace root)")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for WorkspacePath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WorkspacePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        WorkspacePath::parse(&raw).map_err(|e| {
            REFUSED.with(|r| r.set(Some(e.clone())));
            serde::de::Error::custom(format!("invalid path: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "",
            "a",
            "src/main.py",
            "dir with spaces/ünïcødé.txt",
            "emoji-😀/x",
            ".env",
            "a..b",
        ] {
            assert_eq!(WorkspacePath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escapes_and_odd_names() {
        let cases = [
            ("/etc/passwd", PathError::Absolute),
            ("..", PathError::ParentComponent),
            ("a/../../etc", PathError::ParentComponent),
            ("a//b", PathError::EmptyOrDotComponent),
            ("a/", PathError::EmptyOrDotComponent),
            ("./a", PathError::EmptyOrDotComponent),
            ("a\0b", PathError::Nul),
            ("a\nb", PathError::ControlChar(0x0a)),
            ("a\u{202E}txt.exe", PathError::DeceptiveChar(0x202E)),
            ("a\u{200B}b", PathError::DeceptiveChar(0x200B)),
            ("..\\..\\x", PathError::Backslash),
            (".cloudcode-tmp-123", PathError::Reserved),
        ];
        for (raw, expected) in cases {
            assert_eq!(WorkspacePath::parse(raw), Err(expected), "{raw:?}");
        }
        assert_eq!(WorkspacePath::parse(&"a".repeat(256)), Err(PathError::ComponentTooLong));
        assert_eq!(WorkspacePath::parse(&"a/".repeat(2100)), Err(PathError::TooLong));
    }

    /// One character of each class the protocol says is refused, among
    /// them the two a hand-written list missed (U+200D, U+061C); and what
    /// must stay accepted (letters of every script, combining marks, emoji
    /// without joiners).
    #[test]
    fn no_ascii_character_is_deceptive() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        for c in (0u8..128).map(char::from) {
            assert!(
                !matches!(
                    c.general_category(),
                    GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
                ),
                "{c:?}: the ASCII shortcut in is_deceptive would let it through"
            );
        }
    }

    #[test]
    fn refuses_every_class_of_deceptive_character() {
        for (class, c) in [
            ("bidi override", '\u{202E}'),
            ("bidi embedding", '\u{202A}'),
            ("bidi isolate", '\u{2066}'),
            ("left-to-right mark", '\u{200E}'),
            ("arabic letter mark", '\u{061C}'),
            ("zero-width space", '\u{200B}'),
            ("zero-width non-joiner", '\u{200C}'),
            ("zero-width joiner", '\u{200D}'),
            ("word joiner", '\u{2060}'),
            ("invisible times", '\u{2062}'),
            ("byte order mark", '\u{FEFF}'),
            ("soft hyphen", '\u{00AD}'),
            ("interlinear annotation", '\u{FFF9}'),
            ("line separator", '\u{2028}'),
            ("paragraph separator", '\u{2029}'),
            ("mongolian vowel separator", '\u{180E}'),
        ] {
            let name = format!("a{c}b.txt");
            assert_eq!(
                WorkspacePath::parse(&name),
                Err(PathError::DeceptiveChar(c as u32)),
                "{class} (U+{:04X})",
                c as u32
            );
        }
        for fine in [
            "naïve.py",
            "résumé.md",
            "日本語.txt",
            "Ελληνικά",
            "עברית.txt",
            "e\u{301}.txt",
            "🚀.md",
        ] {
            assert!(WorkspacePath::parse(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn parent_join_and_prefix() {
        let p = WorkspacePath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), Some("c"));
        assert_eq!(WorkspacePath::parse("a").unwrap().parent(), Some(WorkspacePath::root()));
        assert_eq!(WorkspacePath::root().join("x").unwrap().as_str(), "x");
        assert!(WorkspacePath::root().join("..").is_err());
        assert!(
            WorkspacePath::root().join("../escape").is_err(),
            "a name is one component"
        );
        assert!(WorkspacePath::root().join("a/b").is_err());
        assert!(p.starts_with(&WorkspacePath::parse("a/b").unwrap()));
        assert!(
            !WorkspacePath::parse("a/bc")
                .unwrap()
                .starts_with(&WorkspacePath::parse("a/b").unwrap())
        );
    }

    #[test]
    fn deserialization_validates() {
        let err = serde_json::from_str::<WorkspacePath>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains(".."));
    }
}
