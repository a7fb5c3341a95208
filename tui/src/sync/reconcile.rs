//! The sync's decisions, and nothing else: from the local tree, the
//! sandbox's tree and the last tree both agreed on, what each side must
//! become. Pure (no I/O, no clock), so every case is a unit test.
//!
//! Three-way, as Unison and mutagen do it: a side that still equals the
//! agreed state did not change, so the other side's change wins; a path
//! both sides changed is a conflict. What is never done: compare clocks
//! across machines, or let a deletion beat a modification. In a conflict
//! neither content is lost: the losing side's node is kept beside the path
//! as a conflict copy (`a.conflict-remote-1f2e3d4c.txt`), and a directory
//! always beats a file or link, whose node becomes the copy.

use std::collections::{BTreeMap, BTreeSet};

use cloudcode_proto::path::WorkspacePath;

use super::model::{Node, Tree, ancestors, conflict_copy_path, depth};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Changes flow both ways; a path changed on both sides is a conflict
    /// and neither content is lost.
    #[default]
    TwoWaySafe,
    /// Local to sandbox, never deleting or overwriting what changed only in
    /// the sandbox.
    OneWaySafe,
    /// The sandbox becomes an exact copy of the folder.
    OneWayReplica,
}

impl Mode {
    /// Every mode, in the order offered.
    pub fn all() -> &'static [Mode] {
        <Mode as clap::ValueEnum>::value_variants()
    }

    /// The name the command line takes (`--mode`, `--sync-mode`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::TwoWaySafe => "two-way-safe",
            Mode::OneWaySafe => "one-way-safe",
            Mode::OneWayReplica => "one-way-replica",
        }
    }

    /// What it does, in a line a user choosing it reads.
    pub fn summary(self) -> &'static str {
        match self {
            Mode::TwoWaySafe => "both ways; changed on both sides: a conflict, nothing lost",
            Mode::OneWaySafe => "folder to sandbox; the sandbox's own changes stay",
            Mode::OneWayReplica => "folder to sandbox; the sandbox becomes a copy, extras deleted",
        }
    }

    pub fn one_way(self) -> bool {
        self != Mode::TwoWaySafe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

/// One step on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Remove what is at `path` (`was`); a directory only once its children
    /// are gone (they come first in [`Plan`]).
    Delete { path: WorkspacePath, was: Node },
    /// Make `path` hold `node`, replacing `was`. The content comes from the
    /// other side (a directory needs none).
    Put {
        path: WorkspacePath,
        node: Node,
        was: Option<Node>,
    },
    /// What is at `from` (a file, or a directory with all it holds) goes to
    /// `to`, which is free: a rename on the side, instead of a delete and
    /// a new copy of every byte.
    Move { from: WorkspacePath, to: WorkspacePath },
}

impl Change {
    pub fn path(&self) -> &WorkspacePath {
        match self {
            Change::Delete { path, .. } | Change::Put { path, .. } => path,
            Change::Move { to, .. } => to,
        }
    }
}

/// Content kept because it lost a conflict: made in the local folder (so a
/// two-way sync then carries it to the sandbox like any new file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictCopy {
    pub path: WorkspacePath,
    pub copy: WorkspacePath,
    /// Where the losing content is read from.
    pub from: Side,
    pub node: Node,
}

/// Something the user must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Both sides changed the path: `kept` won, the other is in `copy`
    /// (or, in one-way-safe mode, nothing was touched and `copy` is None).
    Conflict {
        path: WorkspacePath,
        kept: Side,
        copy: Option<WorkspacePath>,
    },
    /// One side deleted what the other modified: the modification was kept
    /// and brought back to the deleting side.
    DeleteLostToModify { path: WorkspacePath, deleted_on: Side },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In execution order: deletions deepest first, then puts parents first.
    pub local: Vec<Change>,
    pub remote: Vec<Change>,
    /// Made before any change (they read content a change may replace).
    pub copies: Vec<ConflictCopy>,
    pub notices: Vec<Notice>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty() && self.copies.is_empty()
    }

    pub fn changes(&self, side: Side) -> &[Change] {
        match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }

    /// Files and links this plan deletes on `side` (directories are not
    /// counted: what matters is content).
    pub fn deletions(&self, side: Side) -> usize {
        self.changes(side)
            .iter()
            .filter(|c| match c {
                Change::Delete { was, .. } => !was.is_dir(),
                // Replacing a file by a directory deletes its content too.
                Change::Put {
                    was: Some(was), node, ..
                } => !was.is_dir() && !was.same_kind(node),
                Change::Put { .. } | Change::Move { .. } => false,
            })
            .count()
    }

    pub fn conflicts(&self) -> usize {
        self.notices
            .iter()
            .filter(|n| matches!(n, Notice::Conflict { .. }))
            .count()
    }
}

/// What one path should become on each side.
#[derive(Debug, Clone)]
struct Target {
    local: Option<Node>,
    remote: Option<Node>,
}

pub fn reconcile(local: &Tree, remote: &Tree, base: &Tree, mode: Mode) -> Plan {
    let paths: BTreeSet<&WorkspacePath> = local.keys().chain(remote.keys()).chain(base.keys()).collect();
    let mut targets: BTreeMap<WorkspacePath, Target> = BTreeMap::new();
    let mut plan = Plan::default();
    for path in paths {
        let (l, r, b) = (local.get(path), remote.get(path), base.get(path));
        let target = match mode {
            Mode::TwoWaySafe => two_way(path, l, r, b, &mut plan),
            Mode::OneWaySafe => one_way_safe(path, l, r, b, &mut plan),
            Mode::OneWayReplica => Target {
                local: l.cloned(),
                remote: l.cloned(),
            },
        };
        targets.insert(path.clone(), target);
    }
    if mode != Mode::OneWayReplica {
        keep_ancestors(&mut targets, local, remote, mode, &mut plan);
    }
    plan.local = changes(local, &targets, |t| t.local.as_ref());
    plan.remote = with_moves(remote, changes(remote, &targets, |t| t.remote.as_ref()));
    plan
}

/// Turns a deletion and a creation of the same content into a move: a
/// directory whose whole subtree reappears elsewhere (its children created
/// there, nothing else), or a file whose node reappears at a free path.
/// A renamed directory of 10,000 files is then one rename on the side, not
/// 10,000 deletions (which would also trip the deletion threshold) and
/// 10,000 uploads.
fn with_moves(current: &Tree, changes: Vec<Change>) -> Vec<Change> {
    use std::collections::HashMap;
    let puts: BTreeMap<&WorkspacePath, &Node> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Put { path, node, was: None } => Some((path, node)),
            _ => None,
        })
        .collect();
    let deleted: BTreeSet<&WorkspacePath> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    // What lies below `top` in `tree`, relative to it.
    fn below<'a>(
        tree: impl Iterator<Item = (&'a WorkspacePath, &'a Node)>,
        top: &WorkspacePath,
    ) -> Vec<(String, Node)> {
        let prefix = format!("{}/", top.as_str());
        tree.filter_map(|(p, n)| p.as_str().strip_prefix(&prefix).map(|rel| (rel.to_owned(), n.clone())))
            .collect()
    }
    let subtree = |tree: &Tree, top: &WorkspacePath| {
        below(
            tree.range(top.clone()..)
                .take_while(|(p, _)| p.as_str() < format!("{}0", top.as_str()).as_str()),
            top,
        )
    };
    // Candidates: deleted directories by their content, deleted files by node.
    let mut dirs_by_content: HashMap<Vec<(String, Node)>, Vec<&WorkspacePath>> = HashMap::new();
    let mut files_by_node: HashMap<&Node, Vec<&WorkspacePath>> = HashMap::new();
    for path in &deleted {
        // Only what goes entirely: a directory whose children all go too.
        if above(path).any(|a| deleted.contains(&a)) {
            continue;
        }
        match current.get(*path) {
            Some(Node::Dir) => {
                let content = subtree(current, path);
                if content
                    .iter()
                    .all(|(rel, _)| WorkspacePath::parse(&format!("{path}/{rel}")).is_ok_and(|p| deleted.contains(&p)))
                    && !puts.contains_key(*path)
                {
                    dirs_by_content.entry(content).or_default().push(path);
                }
            }
            Some(node) if !puts.contains_key(*path) => files_by_node.entry(node).or_default().push(path),
            _ => {}
        }
    }
    let mut moves: Vec<(WorkspacePath, WorkspacePath)> = Vec::new();
    let mut moved_from: BTreeSet<WorkspacePath> = BTreeSet::new();
    let mut moved_to: BTreeSet<WorkspacePath> = BTreeSet::new();
    for (path, node) in &puts {
        if within(path, &moved_to) {
            continue;
        }
        let from = match node {
            Node::Dir => {
                let end = format!("{}0", path.as_str());
                let content: Vec<(String, Node)> = below(
                    puts.range::<&WorkspacePath, _>(*path..)
                        .take_while(|(p, _)| p.as_str() < end.as_str())
                        .map(|(p, n)| (*p, *n)),
                    path,
                );
                dirs_by_content.get_mut(&content).and_then(Vec::pop)
            }
            node => files_by_node.get_mut(node).and_then(Vec::pop),
        };
        let Some(from) = from else { continue };
        if path.starts_with(from) || from.starts_with(path) {
            continue;
        }
        moved_from.insert(from.clone());
        moved_to.insert((*path).clone());
        moves.push((from.clone(), (*path).clone()));
    }
    if moves.is_empty() {
        return changes;
    }
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    let mut moves = moves.into_iter().peekable();
    for change in changes {
        let covered = match &change {
            Change::Delete { path, .. } => within(path, &moved_from),
            Change::Put { path, .. } => within(path, &moved_to),
            Change::Move { .. } => false,
        };
        if !covered {
            out.push(change);
        }
    }
    // Last: every directory a move goes into exists by then.
    out.extend(moves.by_ref().map(|(from, to)| Change::Move { from, to }));
    out
}

fn two_way(path: &WorkspacePath, l: Option<&Node>, r: Option<&Node>, b: Option<&Node>, plan: &mut Plan) -> Target {
    let both = |n: Option<&Node>| Target {
        local: n.cloned(),
        remote: n.cloned(),
    };
    if l == r {
        return both(l);
    }
    if l == b {
        return both(r);
    }
    if r == b {
        return both(l);
    }
    // Both changed, differently.
    match (l, r) {
        (None, Some(_)) => {
            plan.notices.push(Notice::DeleteLostToModify {
                path: path.clone(),
                deleted_on: Side::Local,
            });
            both(r)
        }
        (Some(_), None) => {
            plan.notices.push(Notice::DeleteLostToModify {
                path: path.clone(),
                deleted_on: Side::Remote,
            });
            both(l)
        }
        (Some(ln), Some(rn)) => {
            // A directory beats a file or link; otherwise the local side
            // wins (the folder is where the user is working) and the
            // sandbox's content is kept beside it.
            let (kept, lost_side, lost) = if rn.is_dir() {
                (Side::Remote, Side::Local, ln)
            } else {
                (Side::Local, Side::Remote, rn)
            };
            let copy = conflict_copy_path(path, lost_side.name(), lost);
            if let Some(copy) = &copy {
                plan.copies.push(ConflictCopy {
                    path: path.clone(),
                    copy: copy.clone(),
                    from: lost_side,
                    node: lost.clone(),
                });
            }
            plan.notices.push(Notice::Conflict {
                path: path.clone(),
                kept,
                copy,
            });
            both(Some(if kept == Side::Local { ln } else { rn }))
        }
        (None, None) => both(None),
    }
}

fn one_way_safe(path: &WorkspacePath, l: Option<&Node>, r: Option<&Node>, b: Option<&Node>, plan: &mut Plan) -> Target {
    let local = l.cloned();
    if l == r {
        return Target {
            local,
            remote: l.cloned(),
        };
    }
    // The sandbox did not change, or lost something the folder still has:
    // nothing of the sandbox's own is overwritten or deleted.
    if r == b || r.is_none() {
        return Target {
            local,
            remote: l.cloned(),
        };
    }
    // The sandbox changed the path: leave it. Only a change on both sides is
    // worth telling.
    if l != b {
        plan.notices.push(match l {
            None => Notice::DeleteLostToModify {
                path: path.clone(),
                deleted_on: Side::Local,
            },
            Some(_) => Notice::Conflict {
                path: path.clone(),
                kept: Side::Remote,
                copy: None,
            },
        });
    }
    Target {
        local,
        remote: r.cloned(),
    }
}

/// The directories above `path`, nearest first, the root last: each a
/// lookup in a set of paths, where asking every member of the set whether
/// it is above `path` made a first sync of 100,000 files quadratic.
fn above(path: &WorkspacePath) -> impl Iterator<Item = WorkspacePath> {
    std::iter::successors(path.parent(), WorkspacePath::parent)
}

/// Whether `path` is in `tops` or below one of them.
fn within(path: &WorkspacePath, tops: &BTreeSet<WorkspacePath>) -> bool {
    tops.contains(path) || above(path).any(|a| tops.contains(&a))
}

/// A path that stays on a side needs its ancestors to be directories there.
/// A deletion of an ancestor gives way (a modification beats a deletion,
/// also of the directory around it); a file or link where the directory
/// must be loses as a conflict, kept as a copy.
fn keep_ancestors(
    targets: &mut BTreeMap<WorkspacePath, Target>,
    local: &Tree,
    remote: &Tree,
    mode: Mode,
    plan: &mut Plan,
) {
    if mode == Mode::OneWaySafe {
        // A file or link the sandbox changed and keeps where the folder has
        // a directory: nothing of the folder's goes below it (the conflict is
        // reported for the path itself).
        let paths: Vec<WorkspacePath> = targets.keys().cloned().collect();
        for path in paths {
            let blocked = ancestors(&path).any(|a| {
                let held = targets.get(&a).and_then(|t| t.remote.as_ref());
                held.is_some_and(|n| !n.is_dir()) && held == remote.get(&a)
            });
            if blocked && let Some(t) = targets.get_mut(&path) {
                t.remote = remote.get(&path).cloned();
            }
        }
    }
    // Deepest first, so a directory kept for a grandchild keeps its parent.
    let mut order: Vec<WorkspacePath> = targets.keys().cloned().collect();
    order.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    for path in order {
        let (needs_local, needs_remote) = match targets.get(&path) {
            Some(t) => (t.local.is_some(), t.remote.is_some()),
            None => continue,
        };
        for ancestor in ancestors(&path) {
            let t = targets.entry(ancestor.clone()).or_insert(Target {
                local: None,
                remote: None,
            });
            let fix_local = needs_local && !t.local.as_ref().is_some_and(Node::is_dir);
            let fix_remote = needs_remote && !t.remote.as_ref().is_some_and(Node::is_dir);
            if !fix_local && !fix_remote {
                continue;
            }
            // Whatever non-directory the ancestor held on a side is content
            // to keep.
            for (side, tree) in [(Side::Local, local), (Side::Remote, remote)] {
                let fixing = match side {
                    Side::Local => fix_local,
                    Side::Remote => fix_remote,
                };
                let Some(node) = tree.get(&ancestor).filter(|n| !n.is_dir()) else {
                    continue;
                };
                let target = match side {
                    Side::Local => t.local.as_ref(),
                    Side::Remote => t.remote.as_ref(),
                };
                if !fixing || target != Some(node) {
                    continue;
                }
                if mode == Mode::OneWaySafe && side == Side::Local {
                    continue;
                }
                let copy = conflict_copy_path(&ancestor, side.name(), node);
                if let Some(copy) = &copy
                    && !plan.copies.iter().any(|c| &c.copy == copy)
                {
                    plan.copies.push(ConflictCopy {
                        path: ancestor.clone(),
                        copy: copy.clone(),
                        from: side,
                        node: node.clone(),
                    });
                    plan.notices.push(Notice::Conflict {
                        path: ancestor.clone(),
                        kept: side.other(),
                        copy: Some(copy.clone()),
                    });
                }
            }
            if mode == Mode::OneWaySafe {
                // The folder is never changed; the sandbox keeps the
                // directory its own changes live in.
                if fix_remote {
                    t.remote = Some(Node::Dir);
                }
            } else {
                t.local = Some(Node::Dir);
                t.remote = Some(Node::Dir);
            }
        }
    }
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

fn changes(
    current: &Tree,
    targets: &BTreeMap<WorkspacePath, Target>,
    target_of: impl Fn(&Target) -> Option<&Node>,
) -> Vec<Change> {
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    for (path, target) in targets {
        let now = current.get(path);
        let want = target_of(target);
        if now == want {
            continue;
        }
        match (now, want) {
            (Some(was), None) => deletes.push(Change::Delete {
                path: path.clone(),
                was: was.clone(),
            }),
            (Some(was), Some(node)) if !was.same_kind(node) || was.is_dir() => {
                deletes.push(Change::Delete {
                    path: path.clone(),
                    was: was.clone(),
                });
                puts.push(Change::Put {
                    path: path.clone(),
                    node: node.clone(),
                    was: None,
                });
            }
            (was, Some(node)) => puts.push(Change::Put {
                path: path.clone(),
                node: node.clone(),
                was: was.cloned(),
            }),
            (None, None) => {}
        }
    }
    deletes.sort_by(|a, b| {
        depth(b.path())
            .cmp(&depth(a.path()))
            .then_with(|| a.path().cmp(b.path()))
    });
    // BTreeMap order already puts a parent before everything below it.
    deletes.extend(puts);
    deletes
}

/// The agreed state after a round: every path both sides now hold equally;
/// where they still differ (a conflict left alone, a change that failed),
/// what was agreed before, so the next round decides it again.
pub fn advance_base(local: &Tree, remote: &Tree, base: &Tree) -> Tree {
    let mut next = Tree::new();
    let paths: BTreeSet<&WorkspacePath> = local.keys().chain(remote.keys()).chain(base.keys()).collect();
    for path in paths {
        let (l, r) = (local.get(path), remote.get(path));
        if l == r {
            if let Some(node) = l {
                next.insert(path.clone(), node.clone());
            }
        } else if let Some(node) = base.get(path) {
            next.insert(path.clone(), node.clone());
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn a_mode_is_named_as_the_command_line_takes_it() {
        use clap::ValueEnum;
        for mode in Mode::all() {
            assert_eq!(mode.to_possible_value().unwrap().get_name(), mode.name());
        }
    }

    fn f(hash: &str) -> Node {
        Node::File {
            hash: hash.into(),
            executable: false,
        }
    }

    fn x(hash: &str) -> Node {
        Node::File {
            hash: hash.into(),
            executable: true,
        }
    }

    fn link(target: &str) -> Node {
        Node::Symlink { target: target.into() }
    }

    fn d() -> Node {
        Node::Dir
    }

    fn tree(entries: &[(&str, Node)]) -> Tree {
        entries.iter().map(|(path, node)| (p(path), node.clone())).collect()
    }

    /// Applies a plan to both trees as a perfect executor would.
    fn apply(local: &Tree, remote: &Tree, plan: &Plan) -> (Tree, Tree) {
        let (mut l, mut r) = (local.clone(), remote.clone());
        for copy in &plan.copies {
            l.insert(copy.copy.clone(), copy.node.clone());
        }
        for (tree, changes) in [(&mut l, &plan.local), (&mut r, &plan.remote)] {
            for change in changes {
                match change {
                    Change::Delete { path, .. } => {
                        assert!(
                            !tree.keys().any(|k| k != path && k.starts_with(path)),
                            "{path} deleted before its children: {tree:?}"
                        );
                        tree.remove(path);
                    }
                    Change::Put { path, node, .. } => {
                        for a in ancestors(path) {
                            assert_eq!(tree.get(&a), Some(&Node::Dir), "{path} put before its parent {a}");
                        }
                        tree.insert(path.clone(), node.clone());
                    }
                    Change::Move { from, to } => {
                        assert!(!tree.contains_key(to), "{to} is not free");
                        for a in ancestors(to) {
                            assert_eq!(tree.get(&a), Some(&Node::Dir), "{to} moved before its parent {a}");
                        }
                        let moved: Vec<(WorkspacePath, Node)> = tree
                            .iter()
                            .filter(|(p, _)| p.starts_with(from))
                            .map(|(p, n)| (p.clone(), n.clone()))
                            .collect();
                        for (p, n) in moved {
                            tree.remove(&p);
                            let rest = &p.as_str()[from.as_str().len()..];
                            tree.insert(WorkspacePath::parse(&format!("{to}{rest}")).unwrap(), n);
                        }
                    }
                }
            }
        }
        (l, r)
    }

    /// Rounds until nothing is left to do; returns the trees and every
    /// notice.
    fn settle(mut local: Tree, mut remote: Tree, mut base: Tree, mode: Mode) -> (Tree, Tree, Vec<Notice>) {
        let mut notices = Vec::new();
        for _ in 0..4 {
            let plan = reconcile(&local, &remote, &base, mode);
            notices.extend(plan.notices.clone());
            if plan.is_empty() {
                return (local, remote, notices);
            }
            (local, remote) = apply(&local, &remote, &plan);
            base = advance_base(&local, &remote, &base);
        }
        panic!("did not settle: {local:?} {remote:?}");
    }

    #[test]
    fn one_sided_changes_flow_to_the_other_side() {
        let base = tree(&[("a", f("1")), ("gone", f("2")), ("dir", d()), ("dir/x", f("3"))]);
        let local = tree(&[("a", f("9")), ("dir", d()), ("dir/x", f("3")), ("new", f("4"))]);
        let remote = tree(&[("a", f("1")), ("gone", f("2")), ("dir", d()), ("dir/x", x("3"))]);
        let plan = reconcile(&local, &remote, &base, Mode::TwoWaySafe);
        assert_eq!(
            plan.remote,
            vec![
                Change::Delete {
                    path: p("gone"),
                    was: f("2")
                },
                Change::Put {
                    path: p("a"),
                    node: f("9"),
                    was: Some(f("1"))
                },
                Change::Put {
                    path: p("new"),
                    node: f("4"),
                    was: None
                },
            ]
        );
        assert_eq!(
            plan.local,
            vec![Change::Put {
                path: p("dir/x"),
                node: x("3"),
                was: Some(f("3"))
            }]
        );
        assert!(plan.notices.is_empty() && plan.copies.is_empty());
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, r);
    }

    #[test]
    fn equal_sides_need_nothing_even_without_a_base() {
        let t = tree(&[("a", f("1")), ("d", d()), ("d/l", link("../a"))]);
        assert!(reconcile(&t, &t, &Tree::new(), Mode::TwoWaySafe).is_empty());
        assert!(reconcile(&t, &t, &Tree::new(), Mode::OneWaySafe).is_empty());
        assert!(reconcile(&t, &t, &Tree::new(), Mode::OneWayReplica).is_empty());
        assert_eq!(advance_base(&t, &t, &Tree::new()), t);
    }

    #[test]
    fn both_changed_is_a_conflict_and_nothing_is_lost() {
        let base = tree(&[("a.txt", f("0"))]);
        let local = tree(&[("a.txt", f("L"))]);
        let remote = tree(&[("a.txt", f("R"))]);
        let plan = reconcile(&local, &remote, &base, Mode::TwoWaySafe);
        assert_eq!(plan.conflicts(), 1);
        assert_eq!(
            plan.copies,
            vec![ConflictCopy {
                path: p("a.txt"),
                copy: p("a.conflict-remote-R.txt"),
                from: Side::Remote,
                node: f("R"),
            }]
        );
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, r);
        assert_eq!(l.get(&p("a.txt")), Some(&f("L")));
        assert_eq!(l.get(&p("a.conflict-remote-R.txt")), Some(&f("R")));
    }

    #[test]
    fn both_created_differently_is_a_conflict_too() {
        let local = tree(&[("n", f("L"))]);
        let remote = tree(&[("n", f("R"))]);
        let plan = reconcile(&local, &remote, &Tree::new(), Mode::TwoWaySafe);
        assert_eq!(plan.conflicts(), 1);
        assert_eq!(plan.copies.len(), 1);
    }

    #[test]
    fn a_modification_beats_a_deletion_either_way() {
        let base = tree(&[("a", f("0")), ("b", f("0"))]);
        let local = tree(&[("b", f("L"))]);
        let remote = tree(&[("a", f("R"))]);
        let plan = reconcile(&local, &remote, &base, Mode::TwoWaySafe);
        assert!(plan.notices.contains(&Notice::DeleteLostToModify {
            path: p("a"),
            deleted_on: Side::Local
        }));
        assert!(plan.notices.contains(&Notice::DeleteLostToModify {
            path: p("b"),
            deleted_on: Side::Remote
        }));
        assert_eq!(plan.deletions(Side::Local) + plan.deletions(Side::Remote), 0);
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, tree(&[("a", f("R")), ("b", f("L"))]));
        assert_eq!(l, r);
    }

    #[test]
    fn a_deleted_directory_gives_way_to_a_file_added_in_it() {
        let base = tree(&[("d", d()), ("d/old", f("1"))]);
        let local = Tree::new();
        let remote = tree(&[("d", d()), ("d/old", f("1")), ("d/new", f("2"))]);
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, tree(&[("d", d()), ("d/new", f("2"))]));
        assert_eq!(l, r);
    }

    #[test]
    fn a_directory_replaced_by_a_file_and_back() {
        let base = tree(&[("d", d()), ("d/a", f("1")), ("d/b", f("2"))]);
        let local = tree(&[("d", f("F"))]);
        let remote = base.clone();
        let plan = reconcile(&local, &remote, &base, Mode::TwoWaySafe);
        // Children first, then the directory, then the file.
        let paths: Vec<&str> = plan.remote.iter().map(|c| c.path().as_str()).collect();
        assert_eq!(paths, ["d/a", "d/b", "d", "d"]);
        let (l, r, _) = settle(local, remote, base.clone(), Mode::TwoWaySafe);
        assert_eq!(l, r);
        assert_eq!(r, tree(&[("d", f("F"))]));
        // And back: the file becomes a directory again on the remote side.
        let base = r.clone();
        let remote = tree(&[("d", d()), ("d/a", f("1"))]);
        let (l, r, _) = settle(l, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, tree(&[("d", d()), ("d/a", f("1"))]));
        assert_eq!(l, r);
    }

    #[test]
    fn a_directory_beats_a_file_and_the_file_is_kept() {
        // Both created `d`: a directory with content locally, a file in the
        // sandbox.
        let local = tree(&[("d", d()), ("d/a", f("1"))]);
        let remote = tree(&[("d", f("R"))]);
        let (l, r, notices) = settle(local, remote, Tree::new(), Mode::TwoWaySafe);
        assert_eq!(l, r);
        assert_eq!(l.get(&p("d")), Some(&d()));
        assert_eq!(l.get(&p("d.conflict-remote-R")), Some(&f("R")));
        assert!(notices.iter().any(|n| matches!(n, Notice::Conflict { .. })));

        // The sandbox replaced a file by a directory while the folder
        // changed the file.
        let base = tree(&[("d", f("0"))]);
        let local = tree(&[("d", f("L"))]);
        let remote = tree(&[("d", d()), ("d/x", f("2"))]);
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, r);
        assert_eq!(l.get(&p("d/x")), Some(&f("2")));
        assert_eq!(l.get(&p("d.conflict-local-L")), Some(&f("L")));
    }

    #[test]
    fn a_file_where_a_new_remote_file_needs_a_directory_is_kept_as_a_copy() {
        // Local replaced directory `d` by a file; the sandbox added d/new.
        let base = tree(&[("d", d())]);
        let local = tree(&[("d", f("F"))]);
        let remote = tree(&[("d", d()), ("d/new", f("N"))]);
        let (l, r, _) = settle(local, remote, base, Mode::TwoWaySafe);
        assert_eq!(l, r);
        assert_eq!(l.get(&p("d/new")), Some(&f("N")));
        assert_eq!(l.get(&p("d.conflict-local-F")), Some(&f("F")));
    }

    #[test]
    fn links_and_the_executable_bit_are_content() {
        let base = tree(&[("l", link("a")), ("run.sh", f("1"))]);
        let local = tree(&[("l", link("b")), ("run.sh", x("1"))]);
        let plan = reconcile(&local, &base, &base, Mode::TwoWaySafe);
        assert_eq!(plan.remote.len(), 2);
        // A link replaced by a file is a delete then a put.
        let local = tree(&[("l", f("9")), ("run.sh", f("1"))]);
        let plan = reconcile(&local, &base, &base, Mode::TwoWaySafe);
        assert_eq!(plan.deletions(Side::Remote), 1);
    }

    #[test]
    fn renames_are_a_delete_and_a_create_that_settle() {
        // a -> b -> a, a swap through a temp name, and a directory moved
        // with its contents, all while the sync was not looking.
        let base = tree(&[
            ("a", f("A")),
            ("x", f("X")),
            ("y", f("Y")),
            ("src", d()),
            ("src/m", f("M")),
        ]);
        let local = tree(&[
            ("a", f("A")),
            ("x", f("Y")),
            ("y", f("X")),
            ("lib", d()),
            ("lib/src", d()),
            ("lib/src/m", f("M")),
        ]);
        let (l, r, notices) = settle(local.clone(), base.clone(), base, Mode::TwoWaySafe);
        assert_eq!(l, local);
        assert_eq!(r, local);
        assert!(notices.is_empty());
    }

    #[test]
    fn a_renamed_directory_or_file_is_one_move() {
        let base = tree(&[
            ("src", d()),
            ("src/a", f("A")),
            ("src/sub", d()),
            ("src/sub/b", f("B")),
            ("big.bin", f("G")),
        ]);
        let local = tree(&[
            ("lib", d()),
            ("lib/src", d()),
            ("lib/src/a", f("A")),
            ("lib/src/sub", d()),
            ("lib/src/sub/b", f("B")),
            ("renamed.bin", f("G")),
        ]);
        let plan = reconcile(&local, &base, &base, Mode::TwoWaySafe);
        assert_eq!(plan.deletions(Side::Remote), 0, "{:?}", plan.remote);
        assert_eq!(
            plan.remote,
            vec![
                Change::Put {
                    path: p("lib"),
                    node: d(),
                    was: None
                },
                Change::Move {
                    from: p("src"),
                    to: p("lib/src")
                },
                Change::Move {
                    from: p("big.bin"),
                    to: p("renamed.bin")
                },
            ]
        );
        assert_eq!(apply(&local, &base, &plan).1, local);
        // Not a move when the content differs: a file added on the way.
        let mut changed = local.clone();
        changed.insert(p("lib/src/new"), f("N"));
        let plan = reconcile(&changed, &base, &base, Mode::TwoWaySafe);
        assert!(
            plan.remote
                .iter()
                .any(|c| matches!(c, Change::Move { from, .. } if from == &p("big.bin")))
        );
        assert!(
            !plan
                .remote
                .iter()
                .any(|c| matches!(c, Change::Move { from, .. } if from == &p("src")))
        );
        assert_eq!(apply(&changed, &base, &plan).1, changed);
    }

    #[test]
    fn one_way_safe_never_touches_the_folder_nor_what_the_sandbox_changed() {
        let base = tree(&[("a", f("0")), ("b", f("0")), ("c", f("0"))]);
        let local = tree(&[("a", f("L")), ("b", f("L")), ("new", f("N"))]);
        let remote = tree(&[("a", f("0")), ("b", f("R")), ("c", f("R")), ("theirs", f("T"))]);
        let plan = reconcile(&local, &remote, &base, Mode::OneWaySafe);
        assert!(plan.local.is_empty());
        assert!(plan.copies.is_empty());
        assert_eq!(
            plan.remote,
            vec![
                Change::Put {
                    path: p("a"),
                    node: f("L"),
                    was: Some(f("0"))
                },
                Change::Put {
                    path: p("new"),
                    node: f("N"),
                    was: None
                },
            ]
        );
        assert_eq!(
            plan.notices,
            vec![
                Notice::Conflict {
                    path: p("b"),
                    kept: Side::Remote,
                    copy: None
                },
                Notice::DeleteLostToModify {
                    path: p("c"),
                    deleted_on: Side::Local
                }
            ]
        );
        // A local deletion of something the sandbox did not change does go.
        let local = tree(&[("a", f("0")), ("b", f("0"))]);
        let plan = reconcile(&local, &base, &base, Mode::OneWaySafe);
        assert_eq!(plan.deletions(Side::Remote), 1);
    }

    #[test]
    fn one_way_safe_keeps_the_sandboxs_files_in_a_directory_the_folder_deleted() {
        let base = tree(&[("d", d()), ("d/a", f("1"))]);
        let local = Tree::new();
        let remote = tree(&[("d", d()), ("d/a", f("1")), ("d/theirs", f("T"))]);
        let plan = reconcile(&local, &remote, &base, Mode::OneWaySafe);
        assert_eq!(
            plan.remote,
            vec![Change::Delete {
                path: p("d/a"),
                was: f("1")
            }]
        );
    }

    #[test]
    fn one_way_replica_makes_the_sandbox_a_copy() {
        let local = tree(&[("a", f("L")), ("d", d()), ("d/x", f("X"))]);
        let remote = tree(&[("a", f("R")), ("d", f("D")), ("theirs", f("T"))]);
        let plan = reconcile(&local, &remote, &Tree::new(), Mode::OneWayReplica);
        assert!(plan.local.is_empty());
        let (_, r) = apply(&local, &remote, &plan);
        assert_eq!(r, local);
        assert_eq!(plan.deletions(Side::Remote), 2);
    }

    /// A small deterministic generator, so a failure names its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// A random consistent tree over a small universe of paths.
    fn random_tree(rng: &mut Rng) -> Tree {
        let universe = ["a", "a/b", "a/b/c", "a/d", "e", "e/f"];
        let nodes = [f("1"), f("2"), x("1"), link("t"), d(), d(), d()];
        let mut t = Tree::new();
        for path in universe {
            let path = p(path);
            let parent_ok = path
                .parent()
                .is_none_or(|pa| pa.is_root() || t.get(&pa) == Some(&Node::Dir));
            if parent_ok && !rng.next().is_multiple_of(3) {
                t.insert(path, rng.pick(&nodes).clone());
            }
        }
        t
    }

    #[test]
    fn random_three_way_states_settle_without_losing_content() {
        for seed in 1..3000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (base, local, remote) = (random_tree(&mut rng), random_tree(&mut rng), random_tree(&mut rng));
            let (l, r, _) = settle(local.clone(), remote.clone(), base.clone(), Mode::TwoWaySafe);
            assert_eq!(l, r, "seed {seed}: sides differ");
            // Every file content either side held and changed since the
            // base is somewhere in the result (a deletion never beats it).
            let held: BTreeSet<&Node> = l.values().collect();
            for (side, t) in [("local", &local), ("remote", &remote)] {
                for (path, node) in t {
                    if node.is_dir() || base.get(path) == Some(node) {
                        continue;
                    }
                    assert!(
                        held.contains(node),
                        "seed {seed}: {side} {path} {node:?} lost\nbase {base:?}\nlocal {local:?}\nremote {remote:?}\nresult {l:?}"
                    );
                }
            }
            // One-way modes never change the folder.
            let plan = reconcile(&local, &remote, &base, Mode::OneWaySafe);
            assert!(plan.local.is_empty() && plan.copies.is_empty(), "seed {seed}");
            let (_, r) = apply(&local, &remote, &plan);
            for (path, node) in &remote {
                if base.get(path) != Some(node) && !node.is_dir() {
                    assert_eq!(
                        r.get(path),
                        Some(node),
                        "seed {seed}: one-way-safe lost the sandbox's {path}"
                    );
                }
            }
            let plan = reconcile(&local, &remote, &base, Mode::OneWayReplica);
            assert_eq!(apply(&local, &remote, &plan).1, local, "seed {seed}");
        }
    }
}
