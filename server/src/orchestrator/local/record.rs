//! A running sandbox's record on disk: what the next server needs to adopt
//! it after this one stops, is upgraded or dies (its processes by pid and
//! start time, its cgroup, its network helper, the key its runner checks
//! tokens with). One JSON file per sandbox in its project's directory,
//! written to a temporary file and renamed, so a reader sees the old record
//! or the new one, never half of one. The record lives outside everything
//! the sandbox mounts: nothing inside can forge one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Isolation, command};
use crate::projects::ProjectId;

const FILE: &str = "sandbox.json";
/// Bumped when a record's meaning changes: an older server's records are
/// then cleaned up rather than misread.
const VERSION: u32 = 1;

/// A process named so that a later process given the same pid is never
/// taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pid {
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22, clock ticks after boot.
    pub start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub version: u32,
    #[serde(deserialize_with = "project_id")]
    pub project: ProjectId,
    /// bwrap (or the bare runner without isolation): the sandbox ends when
    /// it does.
    pub sandbox: Pid,
    /// Known once the runner runs.
    pub runner: Option<Pid>,
    /// The init of the sandbox's pid namespace (bubblewrap's reaper), known
    /// with the runner: it outlives bwrap and the runner as long as anything
    /// in the sandbox runs, so ending it ends the sandbox where there are no
    /// cgroups to sweep.
    #[serde(default)]
    pub init: Option<Pid>,
    /// slirp4netns, with outbound network.
    pub network: Option<Pid>,
    /// The sandbox's control-group directories (empty without cgroups).
    pub cgroup: Vec<PathBuf>,
    /// The public key the runner checks project tokens with: a server with
    /// another signing key cannot use this runner.
    pub token_public_key: String,
    /// How the sandbox is confined: a server that sandboxes never takes
    /// over a runner started without a sandbox. Absent from records written
    /// before it was recorded: see [`Record::isolation`].
    #[serde(default)]
    pub isolation: Option<Isolation>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum RecordError {
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("encoding the record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A project id read from a record is validated like one from the API.
fn project_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<ProjectId, D::Error> {
    let text = String::deserialize(deserializer)?;
    ProjectId::parse(&text).map_err(serde::de::Error::custom)
}

impl Record {
    pub fn new(
        project: ProjectId,
        sandbox: Pid,
        cgroup: Vec<PathBuf>,
        token_public_key: String,
        isolation: Isolation,
    ) -> Self {
        Self {
            version: VERSION,
            project,
            sandbox,
            runner: None,
            init: None,
            network: None,
            cgroup,
            token_public_key,
            isolation: Some(isolation),
        }
    }

    fn path(root: &Path, project: &ProjectId) -> PathBuf {
        command::project_dir(root, project).join(FILE)
    }

    /// Temporary file, fsync, rename: a crash leaves the old record or the
    /// new one.
    pub fn save(&self, root: &Path) -> Result<(), RecordError> {
        use std::io::Write;
        let path = Self::path(root, &self.project);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self)?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| RecordError::Write { path, source })
    }

    /// Every record under `root`. One that cannot be read, or names another
    /// project than its directory's, is logged and left out: its sandbox,
    /// if one still runs, is not adopted, and is ended with its cgroup when
    /// the project's next sandbox (in the same cgroup) stops.
    pub fn load_all(root: &Path) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        // Projects' directories only (the root also holds the server's
        // lock and its list of wanted projects).
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let Some(project) = entry.file_name().to_str().and_then(|n| ProjectId::parse(n).ok()) else {
                continue;
            };
            let path = Self::path(root, &project);
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!("reading {}: {e}", path.display());
                    continue;
                }
            };
            match serde_json::from_slice::<Record>(&text) {
                Ok(record) if record.project == project => records.push(record),
                Ok(record) => tracing::warn!(
                    "{} names project {}, not its directory's: ignored",
                    path.display(),
                    record.project
                ),
                Err(e) => tracing::warn!("{} is not a sandbox record ({e}): ignored", path.display()),
            }
        }
        records
    }

    pub fn remove(root: &Path, project: &ProjectId) {
        let path = Self::path(root, project);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", path.display());
        }
    }

    pub fn is_current(&self) -> bool {
        self.version == VERSION
    }

    /// How the sandbox is confined, as recorded or, in an older record, as
    /// its processes show: without a sandbox the runner is the sandbox's
    /// process itself. `None` while that is not known yet (no runner).
    pub fn isolation(&self) -> Option<Isolation> {
        self.isolation.or_else(|| {
            let runner = self.runner?;
            Some(match runner.pid == self.sandbox.pid {
                true => Isolation::Insecure,
                false => Isolation::Bubblewrap,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(project: &str) -> Record {
        let mut record = Record::new(
            ProjectId::parse(project).unwrap(),
            Pid { pid: 10, start: 99 },
            vec!["/sys/fs/cgroup/cloudcode/x".into()],
            "key".into(),
            Isolation::Bubblewrap,
        );
        record.runner = Some(Pid { pid: 12, start: 100 });
        record
    }

    /// A record written before isolation and the init were recorded is
    /// still read (an upgrade adopts what the previous release left), its
    /// isolation told by its processes.
    #[test]
    fn an_older_record_is_read_and_its_isolation_told_by_its_processes() {
        let text = r#"{"version":1,"project":"alpha","sandbox":{"pid":10,"start":99},
            "runner":{"pid":12,"start":100},"network":null,"cgroup":[],"token_public_key":"key"}"#;
        let record: Record = serde_json::from_str(text).unwrap();
        assert!(record.is_current());
        assert_eq!((record.isolation, record.init), (None, None));
        assert_eq!(record.isolation(), Some(Isolation::Bubblewrap));
        let bare = Record {
            runner: Some(record.sandbox),
            ..record.clone()
        };
        assert_eq!(bare.isolation(), Some(Isolation::Insecure));
        let starting = Record { runner: None, ..record };
        assert_eq!(starting.isolation(), None);
    }

    #[test]
    fn records_round_trip_replace_atomically_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["alpha", "beta"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
            record(p).save(root).unwrap();
        }
        let mut again = record("alpha");
        again.network = Some(Pid { pid: 13, start: 101 });
        again.save(root).unwrap();
        // Not a project's directory, a stray file, a broken record: ignored.
        std::fs::create_dir_all(root.join("Not_A_Project")).unwrap();
        std::fs::write(root.join("wanted.list"), "alpha\n").unwrap();
        std::fs::create_dir_all(root.join("gamma")).unwrap();
        std::fs::write(root.join("gamma").join(FILE), "{").unwrap();
        // A record copied into another project's directory is not that project's.
        std::fs::create_dir_all(root.join("delta")).unwrap();
        std::fs::copy(root.join("beta").join(FILE), root.join("delta").join(FILE)).unwrap();

        let mut loaded = Record::load_all(root);
        loaded.sort_by(|a, b| a.project.cmp(&b.project));
        assert_eq!(loaded, vec![again, record("beta")]);
        assert!(!root.join("alpha").join("sandbox.json.tmp").exists());

        Record::remove(root, &ProjectId::parse("alpha").unwrap());
        Record::remove(root, &ProjectId::parse("alpha").unwrap());
        assert_eq!(Record::load_all(root), vec![record("beta")]);
    }
}
