//! Where everything lives in storage: the one definition of the layout
//! that the control plane, the runners, the storage gateway and the S3
//! mirror share (one bucket or one directory for an installation):
//!
//! - `code/<project>/`: the project's files, what its runner keeps equal to
//!   `/workspace`, with the manifest [`MANIFEST_NAME`] beside them;
//! - `home/<project>/`: its terminals' home directory (`~/.bashrc`,
//!   `~/.bash_history`), kept the same way but apart from the project's
//!   files, and without the caches of [`HOME_UNSAVED`];
//! - `base/<language>/`: a language's template files;
//! - `projects/<project>.json`: the project's record, written last when a
//!   project is made, so a project exists only once all its files do.
//!
//! A prefix ends at a component boundary (see [`KeyPrefix`]): project
//! `alpha` never reaches `alphabet`'s objects.

use std::path::{Path, PathBuf};

use super::{KeyPrefix, ObjectKey, StorageError};
use crate::project::ProjectId;
use crate::rest::Language;

/// The object, under a synced prefix (`code/<project>/`, `home/<project>/`),
/// that keeps what file contents alone do not: which files are executable,
/// the symbolic links and the empty directories. Its name starts with `\`,
/// which no workspace path may contain, so it can never collide with a
/// file, and works alike in every backend (local storage, S3, the gateway).
pub const MANIFEST_NAME: &str = "\\cloudcode-manifest.json";

/// What of a home directory storage does not keep: caches every tool
/// rebuilds on its own (pip's and most XDG tools' `~/.cache`, npm's
/// `~/.npm`, cargo's downloaded registry and git checkouts). They can reach
/// gigabytes, and uploading them would make every `pip install` a
/// storage-sized backlog and every start a long restore, for nothing a user
/// would miss. Home-relative, `/`-separated.
pub const HOME_UNSAVED: &[&str] = &[".cache", ".npm", ".cargo/registry", ".cargo/git"];

/// `code/<project>/`: the project's files.
pub fn code(project: &ProjectId) -> KeyPrefix {
    // A project id is a DNS label: always one valid key component.
    KeyPrefix(format!("code/{project}/"))
}

/// `home/<project>/`: the home directory of the project's terminals.
pub fn home(project: &ProjectId) -> KeyPrefix {
    KeyPrefix(format!("home/{project}/"))
}

/// Every prefix that holds something of the project's own: what deleting
/// the project removes, and all its runner's gateway token may reach.
pub fn project_prefixes(project: &ProjectId) -> [KeyPrefix; 2] {
    [code(project), home(project)]
}

/// `base/<language>/`: a language's template files.
pub fn template(language: Language) -> KeyPrefix {
    KeyPrefix(format!("base/{}/", language.name()))
}

/// `projects/`: every project's record.
pub fn records() -> KeyPrefix {
    KeyPrefix("projects/".to_owned())
}

/// `projects/<project>.json`: the project's record.
pub fn record(project: &ProjectId) -> ObjectKey {
    ObjectKey(format!("projects/{project}.json"))
}

/// The manifest object under a synced `prefix`; fails only for a prefix
/// too long to hold it.
pub fn manifest(prefix: &KeyPrefix) -> Result<ObjectKey, StorageError> {
    ObjectKey::parse(&format!("{}{MANIFEST_NAME}", prefix.as_str()))
}

/// Where local storage rooted at `root` keeps the objects under `prefix`:
/// a local store maps each key to the same relative path.
pub fn local_dir(root: &Path, prefix: &KeyPrefix) -> PathBuf {
    root.join(prefix.as_str().trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire layout: storage written by one version is read by the next,
    /// so these strings never change by accident.
    #[test]
    fn the_layout_is_pinned() {
        let alpha = ProjectId::parse("alpha").unwrap();
        assert_eq!(code(&alpha).as_str(), "code/alpha/");
        assert_eq!(home(&alpha).as_str(), "home/alpha/");
        assert_eq!(template(Language::Python).as_str(), "base/python/");
        assert_eq!(template(Language::NodeJs).as_str(), "base/node-js/");
        assert_eq!(records().as_str(), "projects/");
        assert_eq!(record(&alpha).as_str(), "projects/alpha.json");
        assert_eq!(
            manifest(&code(&alpha)).unwrap().as_str(),
            "code/alpha/\\cloudcode-manifest.json"
        );
        assert_eq!(
            manifest(&home(&alpha)).unwrap().as_str(),
            "home/alpha/\\cloudcode-manifest.json"
        );
        assert_eq!(
            local_dir(Path::new("/data"), &home(&alpha)),
            Path::new("/data/home/alpha")
        );
        assert_eq!(project_prefixes(&alpha), [code(&alpha), home(&alpha)]);
    }

    /// Built without parsing: check that what is built is what parsing
    /// would accept, for the longest and oddest ids.
    #[test]
    fn every_layout_key_is_a_valid_key() {
        for raw in ["abc", "my-project-1", &"z".repeat(63), "0-0"] {
            let id = ProjectId::parse(raw).unwrap();
            for prefix in project_prefixes(&id).iter().chain([&records()]) {
                assert_eq!(&KeyPrefix::parse(prefix.as_str()).unwrap(), prefix);
                assert!(manifest(prefix).is_ok());
            }
            assert_eq!(ObjectKey::parse(record(&id).as_str()).unwrap(), record(&id));
        }
        for language in Language::ALL {
            let prefix = template(language);
            assert_eq!(KeyPrefix::parse(prefix.as_str()).unwrap(), prefix);
        }
    }

    /// `alpha`'s prefixes reach none of `alphabet`'s objects.
    #[test]
    fn prefixes_end_at_a_component_boundary() {
        let alpha = ProjectId::parse("alpha").unwrap();
        let alphabet = ProjectId::parse("alphabet").unwrap();
        for (mine, theirs) in project_prefixes(&alpha).iter().zip(project_prefixes(&alphabet)) {
            assert!(!theirs.as_str().starts_with(mine.as_str()));
        }
    }
}
