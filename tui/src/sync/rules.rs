//! What the sync leaves alone: `.gitignore` at every level, `.cloudcodeignore`
//! beside them (its lines win over the `.gitignore` of the same directory),
//! `.git/info/exclude`, and defaults no one wants synced (`.git/`, editor
//! swap, backup and probe files, the sync's own temporary files). Matching
//! is the `ignore` crate's gitignore matcher, one per directory, asked from
//! the nearest directory up as git does; a path inside an ignored directory
//! is ignored whatever a deeper file says.
//!
//! Hidden files (`.env`, `.github/`) are synced unless a rule says
//! otherwise. Rules are applied to both sides' trees and to the agreed
//! state alike, so a path that becomes ignored simply leaves the sync: it is
//! never taken for a deletion, and the other side's copy stays.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cloudcode_proto::path::WorkspacePath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::beneath;
use super::model::ancestors;

/// The per-directory ignore files, in increasing precedence.
pub const IGNORE_FILES: [&str; 2] = [".gitignore", ".cloudcodeignore"];
/// Prefix of the sync's own temporary files in the folder.
pub const TEMP_PREFIX: &str = ".cloudcode-sync-";

/// Never synced, whatever the rules say.
const DEFAULTS: &[&str] = &[
    ".git",
    // vim: swap files, the `4913` probe it writes to test a directory, and
    // `~` backups (also emacs, nano, gedit).
    "*.swp",
    "*.swo",
    "*.swx",
    "4913",
    "*~",
    // emacs lock and autosave files.
    ".#*",
    r"\#*#",
    // JetBrains' safe-write files.
    "*___jb_old___",
    "*___jb_tmp___",
    // The sync's own temporary files.
    ".cloudcode-sync-*",
];

pub struct Rules {
    root: PathBuf,
    defaults: Gitignore,
    exclude: Gitignore,
    /// The matcher of each directory that has an ignore file.
    dirs: HashMap<WorkspacePath, Gitignore>,
    /// Problems found in ignore files, to tell the user once.
    pub warnings: Vec<String>,
}

impl Rules {
    pub fn new(root: &Path) -> Self {
        let mut defaults = GitignoreBuilder::new(root);
        for line in DEFAULTS {
            // Our own patterns are valid.
            let _ = defaults.add_line(None, line);
        }
        let mut rules = Self {
            root: root.to_path_buf(),
            defaults: defaults.build().unwrap_or_else(|_| Gitignore::empty()),
            exclude: Gitignore::empty(),
            dirs: HashMap::new(),
            warnings: Vec::new(),
        };
        rules.reload_exclude();
        rules
    }

    /// Re-reads `.git/info/exclude`.
    pub fn reload_exclude(&mut self) {
        let mut builder = GitignoreBuilder::new(&self.root);
        let exclude = WorkspacePath::parse(".git/info/exclude").ok();
        self.exclude = match exclude.and_then(|path| self.add_file(&mut builder, &path)) {
            Some(()) => builder.build().unwrap_or_else(|_| Gitignore::empty()),
            None => Gitignore::empty(),
        };
    }

    /// (Re-)reads the ignore files of one directory of the folder; a
    /// directory without any has no matcher.
    pub fn load_dir(&mut self, dir: &WorkspacePath) {
        let abs = self.root.join(dir.as_relative_fs_path());
        let mut builder = GitignoreBuilder::new(&abs);
        let mut any = false;
        for name in IGNORE_FILES {
            if let Ok(file) = dir.join(name) {
                any |= self.add_file(&mut builder, &file).is_some();
            }
        }
        if any {
            match builder.build() {
                Ok(matcher) => {
                    self.dirs.insert(dir.clone(), matcher);
                }
                Err(e) => self.warnings.push(format!("{}: {e}", abs.display())),
            }
        } else {
            self.dirs.remove(dir);
        }
    }

    /// Adds an ignore file's lines to `builder`, read through the folder's
    /// directories, never through a link (`GitignoreBuilder::add` opens a
    /// plain path); `None` when there is no such file.
    fn add_file(&mut self, builder: &mut GitignoreBuilder, path: &WorkspacePath) -> Option<()> {
        let abs = self.root.join(path.as_relative_fs_path());
        let bytes = match beneath::read(&self.root, path) {
            Ok(bytes) => bytes,
            Err(e) if beneath::is_gone(&e) || e.raw_os_error() == Some(libc::EISDIR) => {
                // Git itself would follow a linked `.git`: what the file
                // excludes is synced, and the user is told.
                if link_on_the_way(&self.root, path) {
                    self.warnings.push(format!(
                        "{}: not read, it is a link or under one (the sync never follows links); what it ignores is synced",
                        abs.display()
                    ));
                }
                return None;
            }
            Err(e) => {
                self.warnings.push(format!("{}: {e}", abs.display()));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        // As git reads one: a byte-order mark before the first line is not
        // part of it.
        for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            if let Err(e) = builder.add_line(Some(abs.clone()), line) {
                self.warnings.push(format!("{}:{}: {e}", abs.display(), n + 1));
            }
        }
        Some(())
    }

    /// Forgets the matchers of a directory and everything below it (it is
    /// gone, or about to be read again).
    pub fn forget_below(&mut self, dir: &WorkspacePath) {
        self.dirs.retain(|d, _| !d.starts_with(dir));
    }

    /// Whether `path` is left out of the sync, itself or through a
    /// directory above it.
    pub fn is_ignored(&self, path: &WorkspacePath, is_dir: bool) -> bool {
        if path.is_root() {
            return false;
        }
        if self.ignored_here(path, is_dir) {
            return true;
        }
        ancestors(path).any(|a| self.ignored_here(&a, true))
    }

    /// [`Rules::is_ignored`] for many paths at once, as long as the rules
    /// do not change: each verdict is found once, so a directory's is not
    /// found again for each path below it, nor a path's again for each of
    /// the three trees a reconcile filters (of 10,000 paths, four levels
    /// deep, asked afresh that was a fifth of a first sync's CPU).
    pub fn verdicts(&self) -> Verdicts<'_> {
        Verdicts {
            rules: self,
            known: RefCell::default(),
        }
    }

    /// Whether the rules name `path` itself (its parents not considered).
    pub fn ignored_here(&self, path: &WorkspacePath, is_dir: bool) -> bool {
        let rel = Path::new(path.as_str());
        if self.defaults.matched(rel, is_dir).is_ignore() {
            return true;
        }
        // The nearest directory's rules first: a deeper file overrides.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if let Some(matcher) = self.dirs.get(&d) {
                let below = path
                    .as_str()
                    .strip_prefix(d.as_str())
                    .map(|s| s.trim_start_matches('/'))
                    .unwrap_or(path.as_str());
                let m = matcher.matched(Path::new(below), is_dir);
                if m.is_ignore() {
                    return true;
                }
                if m.is_whitelist() {
                    return false;
                }
            }
            dir = d.parent();
        }
        self.exclude.matched(rel, is_dir).is_ignore()
    }

    /// Whether a change to `path` changes the rules.
    pub fn is_rule_file(path: &WorkspacePath) -> bool {
        path.file_name().is_some_and(|n| IGNORE_FILES.contains(&n)) || path.as_str() == ".git/info/exclude"
    }
}

/// See [`Rules::verdicts`].
pub struct Verdicts<'a> {
    rules: &'a Rules,
    known: RefCell<HashMap<(WorkspacePath, bool), bool>>,
}

impl Verdicts<'_> {
    pub fn is_ignored(&self, path: &WorkspacePath, is_dir: bool) -> bool {
        if path.is_root() {
            return false;
        }
        let key = (path.clone(), is_dir);
        if let Some(&known) = self.known.borrow().get(&key) {
            return known;
        }
        let verdict = self.rules.ignored_here(path, is_dir) || path.parent().is_some_and(|p| self.is_ignored(&p, true));
        self.known.borrow_mut().insert(key, verdict);
        verdict
    }
}

/// Whether `path`, or a directory on the way to it, is a symbolic link
/// (looked at with `lstat` from the root down, so no link is followed).
fn link_on_the_way(root: &std::path::Path, path: &WorkspacePath) -> bool {
    let mut at = root.to_path_buf();
    for component in path.as_relative_fs_path().components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn gitignores_at_every_level_the_project_file_and_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::write(root.join(".cloudcodeignore"), "secret.txt\n!keep.log\n").unwrap();
        std::fs::write(root.join("sub/.gitignore"), "!important.log\nlocal-only\n").unwrap();
        std::fs::write(root.join(".git/info/exclude"), "scratch/\n").unwrap();
        let mut rules = Rules::new(root);
        rules.load_dir(&WorkspacePath::root());
        rules.load_dir(&p("sub"));

        // Asked many at once, the rules say the same, whatever was asked
        // before (a directory's verdict found while asking for a path below).
        let verdicts = rules.verdicts();
        for (path, is_dir) in [
            ("build/x.js", false),
            ("build", true),
            ("build", false),
            ("sub/deeper/x.log", false),
            ("sub/important.log", false),
            ("sub/deeper/keep.log", false),
            ("scratch/a/b.txt", false),
            (".git/config", false),
            ("src/main.rs", false),
            ("keep.log", false),
        ] {
            assert_eq!(
                verdicts.is_ignored(&p(path), is_dir),
                rules.is_ignored(&p(path), is_dir),
                "{path}"
            );
        }

        assert!(rules.is_ignored(&p("a.log"), false));
        assert!(!rules.is_ignored(&p("keep.log"), false), ".cloudcodeignore wins");
        assert!(rules.is_ignored(&p("secret.txt"), false));
        assert!(rules.is_ignored(&p("build"), true));
        assert!(rules.is_ignored(&p("build/x.js"), false));
        assert!(!rules.is_ignored(&p("build"), false), "build/ names directories only");
        assert!(rules.is_ignored(&p("sub/deeper/x.log"), false));
        assert!(
            !rules.is_ignored(&p("sub/important.log"), false),
            "a deeper file overrides"
        );
        assert!(rules.is_ignored(&p("sub/local-only"), false));
        assert!(!rules.is_ignored(&p("local-only"), false), "sub's rules stay in sub");
        assert!(rules.is_ignored(&p("scratch"), true));
        for name in [
            ".git",
            ".a.txt.swp",
            "a.txt~",
            "4913",
            ".#a.txt",
            "#a.txt#",
            ".cloudcode-sync-1",
        ] {
            assert!(rules.is_ignored(&p(name), name == ".git"), "{name}");
        }
        assert!(rules.is_ignored(&p(".git/config"), false));
        assert!(!rules.is_ignored(&p(".env"), false), "hidden files are synced");
        assert!(!rules.is_ignored(&p(".github/workflows/ci.yml"), false));

        std::fs::write(root.join("sub/.gitignore"), "").unwrap();
        rules.load_dir(&p("sub"));
        assert!(!rules.is_ignored(&p("sub/local-only"), false));
        assert!(Rules::is_rule_file(&p("sub/.gitignore")));
        assert!(Rules::is_rule_file(&p(".cloudcodeignore")));
    }

    #[test]
    fn an_ignore_file_beyond_a_link_is_not_read() {
        let folder = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::create_dir_all(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("sub/.gitignore"), "*.log\n").unwrap();
        std::fs::create_dir_all(outside.path().join(".git/info")).unwrap();
        std::fs::write(outside.path().join(".git/info/exclude"), "*.tmp\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join(".git"), root.join(".git")).unwrap();
        let mut rules = Rules::new(root);
        rules.load_dir(&p("d/sub"));
        assert!(!rules.is_ignored(&p("d/sub/a.log"), false));
        assert!(!rules.is_ignored(&p("a.tmp"), false));
        // Said, not passed over in silence: what they ignore is synced.
        for file in ["d/sub/.gitignore", ".git/info/exclude"] {
            assert!(
                rules.warnings.iter().any(|w| w.contains(file) && w.contains("link")),
                "no warning for {file}: {:?}",
                rules.warnings
            );
        }
    }
}
