//! The project id: the one name every component gives a project (its
//! hostname, its storage prefixes, its tokens' subject), validated once at
//! the edge.

use std::fmt;

/// A project id: a DNS label (it becomes `<id>.<domain>`), 3 to 63 of
/// lowercase letters, digits and inner dashes. Being a DNS label, it is
/// also one safe component of a storage key or a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid project id {0:?}: use 3 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit"
)]
pub struct InvalidProjectId(pub String);

impl ProjectId {
    pub fn parse(raw: &str) -> Result<Self, InvalidProjectId> {
        let ok = (3..=63).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            // Never echo back more than a prefix of an absurd id.
            Err(InvalidProjectId(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ProjectId {
    type Err = InvalidProjectId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_dns_labels() {
        for ok in ["abc", "my-project-1", &"a".repeat(63)] {
            assert!(ProjectId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "victim #",
            "../x",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "émoji",
            &"a".repeat(64),
            &"x".repeat(300),
        ] {
            assert!(ProjectId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn it_serializes_as_its_string() {
        let id = ProjectId::parse("alpha").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""alpha""#);
    }
}
