//! The file tree: directories listed lazily as they are expanded, kept true
//! by re-listing a directory whenever the runner reports a change in it.

use std::collections::{BTreeSet, HashMap};

use cloudcode_proto::message::{Entry, EntryKind, FsChange};
use cloudcode_proto::path::WorkspacePath;

/// One visible row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub path: WorkspacePath,
    pub name: String,
    pub depth: usize,
    pub kind: EntryKind,
    pub expanded: bool,
}

#[derive(Default)]
pub struct Tree {
    /// Listings of the directories loaded so far.
    listings: HashMap<WorkspacePath, Vec<Entry>>,
    expanded: BTreeSet<WorkspacePath>,
    pub selected: usize,
    pub top: usize,
    rows: Vec<Row>,
}

impl Tree {
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    /// The directories whose listings the tree shows: what to list again
    /// after a reconnect.
    pub fn loaded_dirs(&self) -> Vec<WorkspacePath> {
        let mut dirs = vec![WorkspacePath::root()];
        dirs.extend(self.expanded.iter().cloned());
        dirs
    }

    pub fn set_listing(&mut self, dir: WorkspacePath, mut entries: Vec<Entry>) {
        // Folders first, then by name, as every IDE does.
        entries.sort_by(|a, b| {
            (a.kind != EntryKind::Dir, a.name.to_lowercase()).cmp(&(b.kind != EntryKind::Dir, b.name.to_lowercase()))
        });
        let selected = self.selected_row().map(|r| r.path.clone());
        self.listings.insert(dir, entries);
        self.rebuild(selected);
    }

    /// A listing failed because the directory is gone.
    pub fn forget(&mut self, dir: &WorkspacePath) {
        let selected = self.selected_row().map(|r| r.path.clone());
        self.listings.remove(dir);
        self.expanded.remove(dir);
        self.rebuild(selected);
    }

    fn rebuild(&mut self, keep_selected: Option<WorkspacePath>) {
        let mut rows = Vec::new();
        self.push_rows(&WorkspacePath::root(), 0, &mut rows);
        self.rows = rows;
        if let Some(path) = keep_selected
            && let Some(index) = self.rows.iter().position(|r| r.path == path)
        {
            self.selected = index;
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
    }

    fn push_rows(&self, dir: &WorkspacePath, depth: usize, rows: &mut Vec<Row>) {
        let Some(entries) = self.listings.get(dir) else {
            return;
        };
        for entry in entries {
            let expanded = entry.kind == EntryKind::Dir && self.expanded.contains(&entry.path);
            rows.push(Row {
                path: entry.path.clone(),
                name: entry.name.clone(),
                depth,
                kind: entry.kind,
                expanded,
            });
            if expanded {
                self.push_rows(&entry.path, depth + 1, rows);
            }
        }
    }

    /// Expands or collapses a directory; returns a directory to list when it
    /// was not loaded yet.
    pub fn toggle(&mut self, dir: &WorkspacePath) -> Option<WorkspacePath> {
        let selected = self.selected_row().map(|r| r.path.clone());
        if !self.expanded.remove(dir) {
            self.expanded.insert(dir.clone());
            self.rebuild(selected);
            return Some(dir.clone());
        }
        self.rebuild(selected);
        None
    }

    pub fn collapse_selected(&mut self) {
        let Some(row) = self.selected_row().cloned() else {
            return;
        };
        if row.expanded {
            self.toggle(&row.path);
        } else if let Some(parent) = row.path.parent().filter(|p| !p.is_root()) {
            // On a child: go to its folder, as file managers do.
            if let Some(index) = self.rows.iter().position(|r| r.path == parent) {
                self.selected = index;
            }
        }
    }

    pub fn move_selection(&mut self, step: isize) {
        if self.rows.is_empty() {
            return;
        }
        self.selected = (self.selected as isize + step).clamp(0, self.rows.len() as isize - 1) as usize;
    }

    /// The directory new files go in: the selected folder, or the selected
    /// file's folder.
    pub fn target_dir(&self) -> WorkspacePath {
        match self.selected_row() {
            Some(row) if row.kind == EntryKind::Dir => row.path.clone(),
            Some(row) => row.path.parent().unwrap_or_default(),
            None => WorkspacePath::root(),
        }
    }

    /// The loaded directories `changes` touch: the ones to list again.
    pub fn dirs_to_refresh(&self, changes: &[FsChange]) -> BTreeSet<WorkspacePath> {
        changes
            .iter()
            .filter_map(|change| change.path.parent())
            .filter(|dir| self.listings.contains_key(dir))
            .collect()
    }

    /// Keeps the selection in the visible window of `height` rows.
    pub fn scroll_into_view(&mut self, height: usize) {
        if self.selected < self.top {
            self.top = self.selected;
        } else if height > 0 && self.selected >= self.top + height {
            self.top = self.selected + 1 - height;
        }
    }
}

#[cfg(test)]
mod tests {
    use cloudcode_proto::message::ChangeKind;

    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        let path = WorkspacePath::parse(path).unwrap();
        Entry {
            name: path.file_name().unwrap().to_string(),
            path,
            kind,
            size: 0,
            mtime_ms: 0,
            target: None,
            version: None,
        }
    }

    fn p(path: &str) -> WorkspacePath {
        WorkspacePath::parse(path).unwrap()
    }

    #[test]
    fn folders_first_expand_lazily_and_keep_the_selection() {
        let mut tree = Tree::default();
        tree.set_listing(
            WorkspacePath::root(),
            vec![
                entry("main.py", EntryKind::File),
                entry("src", EntryKind::Dir),
                entry("README.md", EntryKind::File),
            ],
        );
        let names: Vec<&str> = tree.rows().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["src", "main.py", "README.md"]);
        assert_eq!(tree.toggle(&p("src")), Some(p("src")), "expanding asks for a listing");
        tree.set_listing(p("src"), vec![entry("src/app.js", EntryKind::File)]);
        assert_eq!(tree.rows()[1].depth, 1);
        // src, src/app.js, main.py: select main.py.
        tree.move_selection(2);
        assert_eq!(tree.selected_row().unwrap().path, p("main.py"));
        tree.set_listing(
            WorkspacePath::root(),
            vec![
                entry("a.txt", EntryKind::File),
                entry("main.py", EntryKind::File),
                entry("src", EntryKind::Dir),
            ],
        );
        assert_eq!(
            tree.selected_row().unwrap().path,
            p("main.py"),
            "a new file above keeps the selection"
        );
        assert_eq!(tree.toggle(&p("src")), None, "collapsing lists nothing");
        assert_eq!(tree.rows().len(), 3);
    }

    #[test]
    fn changes_refresh_only_loaded_parents() {
        let mut tree = Tree::default();
        tree.set_listing(WorkspacePath::root(), vec![entry("src", EntryKind::Dir)]);
        let changes = vec![
            FsChange {
                path: p("new.txt"),
                kind: ChangeKind::Created,
            },
            FsChange {
                path: p("src/deep/x"),
                kind: ChangeKind::Created,
            },
        ];
        let dirs: Vec<_> = tree.dirs_to_refresh(&changes).into_iter().collect();
        assert_eq!(dirs, vec![WorkspacePath::root()]);
    }

    #[test]
    fn new_files_go_in_the_selected_folder() {
        let mut tree = Tree::default();
        tree.set_listing(
            WorkspacePath::root(),
            vec![entry("src", EntryKind::Dir), entry("a.txt", EntryKind::File)],
        );
        assert_eq!(tree.target_dir(), p("src"));
        tree.move_selection(1);
        assert_eq!(tree.target_dir(), WorkspacePath::root());
    }
}
