//! The TUI's state and every decision it makes: keys, mouse, and what the
//! server and runner report. Nothing here does I/O; it asks for it with
//! [`Effect`]s that the event loop in `main.rs` carries out, so all of it is
//! testable with ratatui's TestBackend.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::message::{EntryKind, ErrorCode, StorageStatus, TermId};
use cloudcode_proto::path::WorkspacePath;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use crate::api::{ApiError, Project};
use crate::editor::{self, Buffer, Editor, SaveState};
use crate::keys;
use crate::layout::IdeLayout;
use crate::remote::{Command, Connection, SessionError, TermPurpose, Update};
use crate::sync::conflicts::{Conflict, Resolution};
use crate::sync::reconcile::Mode;
use crate::sync::report::{Control, Phase, Status};
use crate::sync::task::Update as SyncUpdate;
use cloudcode_proto::rest::Language;

use crate::term_pane::TermPane;
use crate::tree::Tree;

/// The languages offered for a new project, in the order shown.
pub const LANGUAGES: [&str; 2] = [Language::Python.name(), Language::NodeJs.name()];

/// What the app asks the outside world to do.
#[derive(Debug)]
pub enum Effect {
    ListProjects,
    CreateProject {
        id: String,
        language: String,
    },
    DeleteProject(String),
    /// Start a session with this project's runner.
    OpenProject(Project),
    /// End the session (back to the project list).
    CloseProject,
    Session(Command),
    OpenUrl(String),
    /// Open a project in the browser IDE, logged in as this client is.
    OpenInBrowser(String),
    /// Put text on the system clipboard (OSC 52).
    Copy(String),
    /// Keep `dir` and the open project's sandbox equal (a sync task), in
    /// `mode` or, without one, the mode the folder last synced in.
    StartSync {
        project: String,
        dir: PathBuf,
        mode: Option<Mode>,
    },
    /// Look up the mode `dir` last synced with `project` in, for the mode
    /// chooser ([`Input::SyncModeRecalled`]).
    RecallSyncMode {
        project: String,
        dir: PathBuf,
    },
    /// Tell the running sync (`Control::Stop` ends it).
    Sync(Control),
}

/// What the outside world tells the app.
#[derive(Debug)]
pub enum Input {
    Terminal(Event),
    Projects(Result<Vec<Project>, ApiError>),
    Created(Result<Project, ApiError>),
    Deleted {
        id: String,
        result: Result<(), ApiError>,
    },
    Session(Update),
    /// From the running folder sync.
    Sync(SyncUpdate),
    /// The mode `dir` last synced in (`None`: never, or unreadable).
    SyncModeRecalled {
        dir: PathBuf,
        mode: Option<Mode>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Tree,
    Editor,
    Terminal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFor {
    ProjectName,
    NewFile(WorkspacePath),
    NewFolder(WorkspacePath),
    Rename(WorkspacePath),
    Search,
    SyncFolder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmFor {
    DeleteProject(String),
    DeletePath(WorkspacePath),
    Overwrite,
    DiscardAndReload,
    QuitWithUnsaved,
    LeaveWithUnsaved,
    /// The sync holds a round that would delete a lot.
    SyncDeletions,
    /// Syncing the home directory (or the root) was asked for.
    SyncFolder(PathBuf),
    /// Keep one side's version of a conflict, deleting the other's.
    Resolve {
        conflict: Box<Conflict>,
        resolution: Resolution,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modal {
    Prompt {
        title: String,
        text: String,
        purpose: PromptFor,
    },
    ChooseLanguage {
        id: String,
        selected: usize,
    },
    Confirm {
        message: String,
        purpose: ConfirmFor,
    },
    /// How to sync the folder just chosen.
    ChooseSyncMode {
        dir: PathBuf,
        selected: Mode,
    },
}

pub struct ProjectList {
    pub projects: Vec<Project>,
    pub selected: usize,
    pub loading: bool,
}

pub struct Ide {
    pub project: Project,
    pub connection: Connection,
    pub preview_url: Option<String>,
    pub storage: Option<StorageStatus>,
    pub tree: Tree,
    pub editor: Editor,
    pub terms: Vec<TermPane>,
    pub active_term: usize,
    pub focus: Focus,
    /// Columns of the file tree, and the terminal's share of the right side
    /// in percent: both changed with Alt-arrows or by dragging a border.
    pub tree_width: u16,
    pub terminal_percent: u16,
    /// Files asked for and not yet arrived (so a second Enter opens one
    /// tab), each with the focus when it was asked for: the editor takes
    /// the focus when the file arrives only if the user has not moved it
    /// meanwhile.
    opening: HashMap<WorkspacePath, Focus>,
    /// The first connection opens a shell and the starter file.
    greeted: bool,
    /// A border being dragged with the mouse.
    dragging: Option<Border>,
    /// The next terminal to open was asked for by the user (F6), so it
    /// takes the focus; the shell opened on connecting does not.
    focus_next_terminal: bool,
    /// Output and exits of terminals whose open reply has not arrived yet:
    /// a quick program can finish before it does.
    early: Vec<Update>,
    /// The folder synced with this project, if any (also once ended, so
    /// the status bar says so and F4 offers the same folder again).
    pub sync: Option<SyncPane>,
}

/// A folder sync as the user sees it: its state in the status bar, its
/// conflicts in the sync view (F4).
pub struct SyncPane {
    pub dir: PathBuf,
    /// The mode as the sync reports it (`status.mode`).
    pub status: Status,
    pub conflicts: Vec<Conflict>,
    /// The conflict chosen in the view, and how far its diff is scrolled.
    pub selected: usize,
    pub scroll: usize,
    /// The sync view is on screen.
    pub open: bool,
    /// The sync's latest lines, newest last.
    pub log: VecDeque<(String, bool)>,
    /// The sync ended (stopped, or failed with this message).
    pub ended: Option<Result<(), String>>,
    /// A held round was put to the user already (asked once per hold).
    asked: bool,
}

impl SyncPane {
    pub fn running(&self) -> bool {
        self.ended.is_none()
    }

    pub fn selected_conflict(&self) -> Option<&Conflict> {
        self.conflicts.get(self.selected)
    }
}

/// Lines of the sync's log kept for the sync view.
const SYNC_LOG: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Border {
    TreeRight,
    TerminalTop,
}

pub struct App {
    pub server: String,
    pub projects: ProjectList,
    pub ide: Option<Ide>,
    pub modal: Option<Modal>,
    pub help: bool,
    /// A message for the status bar, and whether it is an error.
    pub notice: Option<(String, bool, Instant)>,
    pub quit: bool,
    pub size: Rect,
    /// A project to open as soon as the list arrives (`--project`).
    pub open_on_start: Option<String>,
    /// A folder to sync with the first project opened, and how
    /// (`--sync`, `--sync-mode`; without a mode, as the folder last synced).
    pub sync_on_start: Option<(PathBuf, Option<Mode>)>,
    /// What F4's folder prompt offers first (the working directory).
    pub default_sync_dir: String,
    effects: Vec<Effect>,
}

/// Bounds what is kept for terminals not opened yet (or closed already).
const MAX_EARLY: usize = 4096;
const NOTICE_FOR: Duration = Duration::from_secs(6);

impl App {
    pub fn new(server: String) -> Self {
        Self {
            server,
            projects: ProjectList {
                projects: Vec::new(),
                selected: 0,
                loading: true,
            },
            ide: None,
            modal: None,
            help: false,
            notice: None,
            quit: false,
            size: Rect::new(0, 0, 80, 24),
            open_on_start: None,
            sync_on_start: None,
            default_sync_dir: String::new(),
            effects: vec![Effect::ListProjects],
        }
    }

    /// Takes what the app asked for since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn session(&mut self, command: Command) {
        self.effects.push(Effect::Session(command));
    }

    pub fn notify(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), false, Instant::now()));
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), true, Instant::now()));
    }

    /// Forgets a notice whose time is up (errors stay until replaced).
    pub fn expire_notice(&mut self) {
        if self
            .notice
            .as_ref()
            .is_some_and(|(_, error, at)| !error && at.elapsed() >= NOTICE_FOR)
        {
            self.notice = None;
        }
    }

    pub fn current_notice(&self) -> Option<(&str, bool)> {
        self.notice
            .as_ref()
            .filter(|(_, error, at)| *error || at.elapsed() < NOTICE_FOR)
            .map(|(text, error, _)| (text.as_str(), *error))
    }

    /// Whether the screen changes by itself as time passes (a notice to
    /// expire, a reconnection under way), so an idle tick must redraw.
    pub fn changes_with_time(&self) -> bool {
        self.notice.as_ref().is_some_and(|(_, error, _)| !error)
            || self
                .ide
                .as_ref()
                .is_some_and(|ide| !matches!(ide.connection, Connection::Connected { .. }))
    }

    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Terminal(Event::Key(key)) if key.kind != KeyEventKind::Release => self.on_key(key),
            Input::Terminal(Event::Mouse(mouse)) => self.on_mouse(mouse),
            Input::Terminal(Event::Paste(text)) => self.on_paste(&text),
            Input::Terminal(Event::Resize(cols, rows)) => self.resized(Rect::new(0, 0, cols, rows)),
            Input::Terminal(_) => {}
            Input::Projects(result) => {
                self.projects.loading = false;
                match result {
                    Ok(projects) => {
                        self.projects.projects = projects;
                        let len = self.projects.projects.len();
                        self.projects.selected = self.projects.selected.min(len.saturating_sub(1));
                        if let Some(id) = self.open_on_start.take() {
                            match self.projects.projects.iter().find(|p| p.id == id).cloned() {
                                Some(project) => self.open_project(project),
                                None => self.error(format!("there is no project {id:?}")),
                            }
                        }
                    }
                    Err(e) => self.error(format!("listing projects failed: {e}")),
                }
            }
            Input::SyncModeRecalled { dir, mode } => self.sync_mode_recalled(dir, mode),
            Input::Created(result) => match result {
                Ok(project) => {
                    self.notify(format!("created {}", project.id));
                    self.open_project(project);
                }
                Err(e) => self.error(format!("creating the project failed: {e}")),
            },
            Input::Deleted { id, result } => match result {
                Ok(()) => {
                    self.notify(format!("deleted {id}"));
                    self.effect(Effect::ListProjects);
                }
                Err(e) => self.error(format!("deleting {id} failed: {e}")),
            },
            Input::Session(update) => self.on_update(update),
            Input::Sync(update) => self.on_sync(update),
        }
    }

    /// The terminal's size changed: terminals follow their panes.
    pub fn resized(&mut self, size: Rect) {
        self.size = size;
        let layout = self.layout();
        if let (Some(ide), Some(layout)) = (self.ide.as_mut(), layout) {
            let inner = layout.terminal_inner;
            let mut commands = Vec::new();
            for pane in &mut ide.terms {
                if pane.live() && pane.resize(inner.height, inner.width) {
                    commands.push(Command::Resize {
                        term: pane.id,
                        cols: inner.width.max(1),
                        rows: inner.height.max(1),
                    });
                }
            }
            for command in commands {
                self.session(command);
            }
        }
    }

    pub fn layout(&self) -> Option<IdeLayout> {
        self.ide
            .as_ref()
            .map(|ide| IdeLayout::new(self.size, ide.tree_width, ide.terminal_percent))
    }

    fn open_project(&mut self, project: Project) {
        self.ide = Some(Ide {
            project: project.clone(),
            connection: Connection::Connecting { attempt: 1 },
            preview_url: None,
            storage: None,
            tree: Tree::default(),
            editor: Editor::default(),
            terms: Vec::new(),
            active_term: 0,
            focus: Focus::Tree,
            // A fifth of the width, within reason, until the user drags it.
            tree_width: (self.size.width / 5).clamp(16, 32),
            terminal_percent: 40,
            opening: HashMap::new(),
            greeted: false,
            dragging: None,
            focus_next_terminal: false,
            early: Vec::new(),
            sync: None,
        });
        self.effect(Effect::OpenProject(project));
        if let Some((dir, mode)) = self.sync_on_start.take() {
            self.start_sync(dir, mode);
        }
    }

    fn leave_project(&mut self) {
        if self
            .ide
            .as_ref()
            .and_then(|ide| ide.sync.as_ref())
            .is_some_and(SyncPane::running)
        {
            self.effect(Effect::Sync(Control::Stop));
        }
        self.ide = None;
        self.effect(Effect::CloseProject);
        self.effect(Effect::ListProjects);
    }

    // ----- the folder sync -----

    fn start_sync(&mut self, dir: PathBuf, mode: Option<Mode>) {
        let Some(ide) = self.ide.as_mut() else { return };
        if ide.sync.as_ref().is_some_and(SyncPane::running) {
            return;
        }
        ide.sync = Some(SyncPane {
            dir: dir.clone(),
            status: Status {
                // Until the sync says which mode it runs in.
                mode: mode.unwrap_or_default(),
                phase: Phase::Starting,
                pending: 0,
                polling: false,
            },
            conflicts: Vec::new(),
            selected: 0,
            scroll: 0,
            open: false,
            log: VecDeque::new(),
            ended: None,
            asked: false,
        });
        let project = ide.project.id.clone();
        match mode {
            Some(mode) => self.notify(format!("syncing {} with {project} ({})", dir.display(), mode.name())),
            None => self.notify(format!("syncing {} with {project}", dir.display())),
        }
        self.effect(Effect::StartSync { project, dir, mode });
    }

    fn on_sync(&mut self, update: SyncUpdate) {
        let Some(sync) = self.ide.as_mut().and_then(|ide| ide.sync.as_mut()) else {
            return;
        };
        match update {
            SyncUpdate::Line { text, warn } => {
                if sync.log.len() >= SYNC_LOG {
                    sync.log.pop_front();
                }
                sync.log.push_back((text.clone(), warn));
                if warn {
                    self.error(format!("sync: {text}"));
                } else {
                    self.notify(format!("sync: {text}"));
                }
            }
            SyncUpdate::Status(status) => {
                let held = matches!(status.phase, Phase::Held { .. });
                if !held {
                    sync.asked = false;
                }
                sync.status = status;
                if held && !sync.asked {
                    self.ask_sync_deletions();
                }
            }
            SyncUpdate::Conflicts(conflicts) => {
                // The same conflict stays chosen when others come or go.
                let chosen = sync.selected_conflict().map(|c| c.copy.clone());
                sync.conflicts = conflicts;
                match chosen.and_then(|copy| sync.conflicts.iter().position(|c| c.copy == copy)) {
                    Some(index) => sync.selected = index,
                    None => {
                        sync.selected = sync.selected.min(sync.conflicts.len().saturating_sub(1));
                        sync.scroll = 0;
                    }
                }
            }
            SyncUpdate::Ended(result) => {
                sync.status.phase = Phase::Stopped;
                sync.status.pending = 0;
                match &result {
                    Ok(()) => self.notify("sync stopped"),
                    Err(e) => self.error(format!("sync stopped: {e}")),
                }
                if let Some(sync) = self.ide.as_mut().and_then(|ide| ide.sync.as_mut()) {
                    sync.ended = Some(result);
                }
            }
        }
    }

    fn ask_sync_deletions(&mut self) {
        let Some(sync) = self.ide.as_mut().and_then(|ide| ide.sync.as_mut()) else {
            return;
        };
        let Phase::Held { why } = &sync.status.phase else {
            return;
        };
        sync.asked = true;
        if self.modal.is_none() {
            self.modal = Some(Modal::Confirm {
                message: format!("The sync held a round: {why}. Go ahead?"),
                purpose: ConfirmFor::SyncDeletions,
            });
        }
    }

    /// F4: start a sync (asking for the folder), or show the running one.
    fn sync_key(&mut self) {
        let Some(ide) = self.ide.as_mut() else { return };
        match &mut ide.sync {
            Some(sync) if sync.running() => {
                if matches!(sync.status.phase, Phase::Held { .. }) && !sync.open {
                    self.ask_sync_deletions();
                }
                if let Some(sync) = self.ide.as_mut().and_then(|ide| ide.sync.as_mut()) {
                    sync.open = !sync.open;
                }
            }
            previous => {
                let text = previous
                    .as_ref()
                    .map(|s| s.dir.display().to_string())
                    .unwrap_or_else(|| self.default_sync_dir.clone());
                self.modal = Some(Modal::Prompt {
                    title: "Sync a local folder with this project (its path)".into(),
                    text,
                    purpose: PromptFor::SyncFolder,
                });
            }
        }
    }

    /// Keys while the sync view is open; true when the key was its own.
    fn on_sync_view_key(&mut self, key: KeyEvent) -> bool {
        let Some(sync) = self.ide.as_mut().and_then(|ide| ide.sync.as_mut()).filter(|s| s.open) else {
            return false;
        };
        match key.code {
            KeyCode::Esc | KeyCode::F(4) | KeyCode::Char('q') => sync.open = false,
            KeyCode::Up | KeyCode::Char('k') => {
                sync.selected = sync.selected.saturating_sub(1);
                sync.scroll = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => {
                sync.selected = (sync.selected + 1).min(sync.conflicts.len().saturating_sub(1));
                sync.scroll = 0;
            }
            KeyCode::PageUp => sync.scroll = sync.scroll.saturating_sub(10),
            KeyCode::PageDown => {
                let lines = sync.selected_conflict().map_or(0, |c| c.diff.len());
                sync.scroll = (sync.scroll + 10).min(lines.saturating_sub(1));
            }
            KeyCode::Char(c @ ('l' | 'r' | 'b')) => {
                let resolution = match c {
                    'l' => Resolution::KeepLocal,
                    'r' => Resolution::KeepRemote,
                    _ => Resolution::KeepBoth,
                };
                match sync.selected_conflict().cloned() {
                    // Keeping both loses nothing: done at once.
                    Some(conflict) if sync.running() && resolution == Resolution::KeepBoth => {
                        self.resolve(conflict, resolution)
                    }
                    // Keeping one side deletes the other's version on both
                    // sides: asked first.
                    Some(conflict) if sync.running() => {
                        let (kept, lost) = match resolution {
                            Resolution::KeepLocal => ("folder's", "sandbox's"),
                            _ => ("sandbox's", "folder's"),
                        };
                        self.modal = Some(Modal::Confirm {
                            message: format!(
                                "Keep the {kept} version of {}? The {lost} version is deleted, in the folder and in the sandbox.",
                                conflict.path
                            ),
                            purpose: ConfirmFor::Resolve {
                                conflict: Box::new(conflict),
                                resolution,
                            },
                        });
                    }
                    Some(_) => self.error("the sync has stopped: F4 starts it again"),
                    None => self.notify("no conflicts"),
                }
            }
            KeyCode::Char('S') if sync.running() => {
                self.effect(Effect::Sync(Control::Stop));
                self.notify("stopping the sync…");
            }
            // The rest of the IDE waits behind the view.
            _ => {}
        }
        true
    }

    fn resolve(&mut self, conflict: Conflict, resolution: Resolution) {
        // Asked before the sync ended: nothing there to carry it out.
        let running = self
            .ide
            .as_ref()
            .and_then(|ide| ide.sync.as_ref())
            .is_some_and(SyncPane::running);
        if !running {
            return self.error("the sync has stopped: F4 starts it again");
        }
        self.notify(format!("resolving {}…", conflict.path));
        self.effect(Effect::Sync(Control::Resolve {
            conflict: Box::new(conflict),
            resolution,
        }));
    }

    // ----- keys -----

    fn on_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.help {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q') | KeyCode::Enter
            ) {
                self.help = false;
            }
            return;
        }
        if self.modal.is_some() {
            self.on_modal_key(key);
            return;
        }
        match key.code {
            KeyCode::F(1) => {
                self.help = true;
                return;
            }
            KeyCode::Char('q') if ctrl => {
                self.request_quit();
                return;
            }
            _ => {}
        }
        if self.ide.is_some() {
            self.on_ide_key(key);
        } else {
            self.on_projects_key(key);
        }
    }

    fn request_quit(&mut self) {
        if self.ide.as_ref().is_some_and(|ide| ide.editor.any_unsaved()) {
            self.modal = Some(Modal::Confirm {
                message: "Some files have unsaved changes. Quit anyway?".into(),
                purpose: ConfirmFor::QuitWithUnsaved,
            });
        } else {
            self.quit = true;
        }
    }

    fn on_projects_key(&mut self, key: KeyEvent) {
        let list = &mut self.projects;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => list.selected = list.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                list.selected = (list.selected + 1).min(list.projects.len().saturating_sub(1))
            }
            KeyCode::Enter => {
                if let Some(project) = list.projects.get(list.selected).cloned() {
                    self.open_project(project);
                }
            }
            KeyCode::Char('n') => {
                self.modal = Some(Modal::Prompt {
                    title: "New project name (a-z, 0-9, -; 3 to 63)".into(),
                    text: String::new(),
                    purpose: PromptFor::ProjectName,
                })
            }
            KeyCode::Char('d') | KeyCode::Delete => {
                if let Some(project) = list.projects.get(list.selected) {
                    self.modal = Some(Modal::Confirm {
                        message: format!("Delete project {} and all its files?", project.id),
                        purpose: ConfirmFor::DeleteProject(project.id.clone()),
                    });
                }
            }
            KeyCode::Char('r') => {
                list.loading = true;
                self.effect(Effect::ListProjects);
            }
            KeyCode::Char('s') => {
                if let Some(project) = list.projects.get(list.selected) {
                    self.modal = Some(Modal::Prompt {
                        title: format!("Open {} synced with a local folder (its path)", project.id),
                        text: self.default_sync_dir.clone(),
                        purpose: PromptFor::SyncFolder,
                    });
                }
            }
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            _ => {}
        }
    }

    fn on_modal_key(&mut self, key: KeyEvent) {
        let Some(modal) = self.modal.take() else { return };
        match modal {
            Modal::Prompt {
                title,
                mut text,
                purpose,
            } => match key.code {
                KeyCode::Esc => {}
                KeyCode::Enter => self.submit_prompt(purpose, text.trim().to_string()),
                KeyCode::Backspace => {
                    text.pop();
                    self.modal = Some(Modal::Prompt { title, text, purpose });
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.modal = Some(Modal::Prompt {
                        title,
                        text: String::new(),
                        purpose,
                    });
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    text.push(c);
                    self.modal = Some(Modal::Prompt { title, text, purpose });
                }
                _ => self.modal = Some(Modal::Prompt { title, text, purpose }),
            },
            Modal::ChooseLanguage { id, selected } => match key.code {
                KeyCode::Esc => {}
                KeyCode::Enter => self.effect(Effect::CreateProject {
                    id,
                    language: LANGUAGES[selected].to_string(),
                }),
                KeyCode::Up | KeyCode::Down | KeyCode::Left | KeyCode::Right | KeyCode::Tab => {
                    self.modal = Some(Modal::ChooseLanguage {
                        id,
                        selected: (selected + 1) % LANGUAGES.len(),
                    })
                }
                _ => self.modal = Some(Modal::ChooseLanguage { id, selected }),
            },
            Modal::ChooseSyncMode { dir, selected } => {
                let modes = Mode::all();
                let at = modes.iter().position(|m| *m == selected).unwrap_or(0);
                let step = |by: usize| modes[(at + by) % modes.len()];
                match key.code {
                    KeyCode::Esc => {}
                    KeyCode::Enter => self.sync_folder(dir, selected),
                    KeyCode::Down | KeyCode::Tab | KeyCode::Char('j') => {
                        self.modal = Some(Modal::ChooseSyncMode { dir, selected: step(1) })
                    }
                    KeyCode::Up | KeyCode::BackTab | KeyCode::Char('k') => {
                        self.modal = Some(Modal::ChooseSyncMode {
                            dir,
                            selected: step(modes.len() - 1),
                        })
                    }
                    _ => self.modal = Some(Modal::ChooseSyncMode { dir, selected }),
                }
            }
            Modal::Confirm { message, purpose } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => self.confirmed(purpose),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {}
                _ => self.modal = Some(Modal::Confirm { message, purpose }),
            },
        }
    }

    fn submit_prompt(&mut self, purpose: PromptFor, text: String) {
        if text.is_empty() && purpose != PromptFor::Search {
            return;
        }
        let join = |dir: &WorkspacePath, name: &str| dir.join(name).map_err(|e| format!("invalid name {name:?}: {e}"));
        match purpose {
            PromptFor::ProjectName => self.modal = Some(Modal::ChooseLanguage { id: text, selected: 0 }),
            PromptFor::NewFile(dir) => match join(&dir, &text) {
                Ok(path) => self.session(Command::CreateFile(path)),
                Err(e) => self.error(e),
            },
            PromptFor::NewFolder(dir) => match join(&dir, &text) {
                Ok(path) => self.session(Command::CreateDir(path)),
                Err(e) => self.error(e),
            },
            PromptFor::Rename(from) => {
                let dir = from.parent().unwrap_or_default();
                match join(&dir, &text) {
                    Ok(to) => self.session(Command::Rename { from, to }),
                    Err(e) => self.error(e),
                }
            }
            PromptFor::Search => {
                let Some(ide) = self.ide.as_mut() else { return };
                ide.editor.search = (!text.is_empty()).then_some(text);
                self.find_next(true);
            }
            PromptFor::SyncFolder => {
                let dir = expand_home(&text);
                // The whole home directory (or the root) is one Enter away
                // from a prompt that offers the working directory: it would
                // copy every private file into the sandbox. Asked first.
                let home = std::env::var_os("HOME").map(PathBuf::from);
                if dir.parent().is_none() || Some(&dir) == home.as_ref() {
                    self.modal = Some(Modal::Confirm {
                        message: format!(
                            "Sync all of {} with the sandbox? Every file in it, hidden ones too, is copied there.",
                            dir.display()
                        ),
                        purpose: ConfirmFor::SyncFolder(dir),
                    });
                } else {
                    self.choose_sync_mode(dir);
                }
            }
        }
    }

    /// Asks how to sync `dir` once its remembered mode is known
    /// ([`Input::SyncModeRecalled`]): a folder synced one-way before is
    /// offered one-way again, not two-way, which would pull the sandbox's
    /// own files into it.
    fn choose_sync_mode(&mut self, dir: PathBuf) {
        let project = match &self.ide {
            Some(ide) => Some(ide.project.id.clone()),
            None => self.projects.projects.get(self.projects.selected).map(|p| p.id.clone()),
        };
        if let Some(project) = project {
            self.effect(Effect::RecallSyncMode { project, dir });
        }
    }

    /// Offers the remembered mode, else two-way-safe, which loses nothing.
    fn sync_mode_recalled(&mut self, dir: PathBuf, mode: Option<Mode>) {
        // Something else asked meanwhile (a keypress opened a modal).
        if self.modal.is_some() {
            return;
        }
        self.modal = Some(Modal::ChooseSyncMode {
            dir,
            selected: mode.unwrap_or_default(),
        });
    }

    fn sync_folder(&mut self, dir: PathBuf, mode: Mode) {
        if self.ide.is_some() {
            self.start_sync(dir, Some(mode));
        } else if let Some(project) = self.projects.projects.get(self.projects.selected).cloned() {
            // From the project list: open the chosen project synced.
            self.sync_on_start = Some((dir, Some(mode)));
            self.open_project(project);
        }
    }

    fn confirmed(&mut self, purpose: ConfirmFor) {
        match purpose {
            ConfirmFor::DeleteProject(id) => self.effect(Effect::DeleteProject(id)),
            ConfirmFor::DeletePath(path) => self.session(Command::Delete(path)),
            ConfirmFor::QuitWithUnsaved => self.quit = true,
            ConfirmFor::LeaveWithUnsaved => self.leave_project(),
            ConfirmFor::SyncDeletions => self.effect(Effect::Sync(Control::AllowDeletions)),
            ConfirmFor::SyncFolder(dir) => self.choose_sync_mode(dir),
            ConfirmFor::Resolve { conflict, resolution } => self.resolve(*conflict, resolution),
            ConfirmFor::Overwrite => {
                let Some(buffer) = self.ide.as_mut().and_then(|ide| ide.editor.current()) else {
                    return;
                };
                if let SaveState::Conflict { theirs } = &buffer.state {
                    buffer.base_version = Some(theirs.clone());
                }
                self.save_current();
            }
            ConfirmFor::DiscardAndReload => {
                let Some(buffer) = self.ide.as_mut().and_then(|ide| ide.editor.current()) else {
                    return;
                };
                let path = buffer.path.clone();
                self.session(Command::Read(path));
            }
        }
    }

    fn on_ide_key(&mut self, key: KeyEvent) {
        if self.on_sync_view_key(key) {
            return;
        }
        let Some(ide) = self.ide.as_mut() else { return };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        // Keys that work in every pane, the terminal included: function
        // keys and Alt chords, which shells and editors rarely need.
        match key.code {
            KeyCode::Char('1') if alt => return ide.focus = Focus::Tree,
            KeyCode::Char('2') if alt => return ide.focus = Focus::Editor,
            KeyCode::Char('3') if alt => return ide.focus = Focus::Terminal,
            KeyCode::F(2) => {
                ide.focus = match ide.focus {
                    Focus::Tree => Focus::Editor,
                    Focus::Editor => Focus::Terminal,
                    Focus::Terminal => Focus::Tree,
                };
                return;
            }
            KeyCode::Left if alt => {
                ide.tree_width = ide.tree_width.saturating_sub(2).max(12);
                return self.resized(self.size);
            }
            KeyCode::Right if alt => {
                ide.tree_width = (ide.tree_width + 2).min(self.size.width / 2);
                return self.resized(self.size);
            }
            KeyCode::Up if alt => {
                ide.terminal_percent = (ide.terminal_percent + 5).min(85);
                return self.resized(self.size);
            }
            KeyCode::Down if alt => {
                ide.terminal_percent = ide.terminal_percent.saturating_sub(5).max(15);
                return self.resized(self.size);
            }
            KeyCode::Char(',') if alt => {
                if !ide.terms.is_empty() {
                    ide.active_term = (ide.active_term + ide.terms.len() - 1) % ide.terms.len();
                }
                return;
            }
            KeyCode::Char('.') if alt => {
                if !ide.terms.is_empty() {
                    ide.active_term = (ide.active_term + 1) % ide.terms.len();
                }
                return;
            }
            KeyCode::Char('c') if alt => {
                // The keyboard's way to copy: the mouse selection if there
                // is one, else the terminal's whole screen.
                let Some(pane) = ide.terms.get(ide.active_term) else {
                    return;
                };
                let text = pane.selected_text().unwrap_or_else(|| {
                    let screen = pane.parser.screen().contents();
                    screen.trim_end().to_string()
                });
                let count = text.chars().count();
                self.effect(Effect::Copy(text));
                self.notify(format!("copied {count} characters"));
                return;
            }
            KeyCode::F(4) => return self.sync_key(),
            KeyCode::F(5) => return self.run_project(),
            KeyCode::F(6) => {
                ide.focus_next_terminal = true;
                return self.open_terminal(TermPurpose::Shell, None);
            }
            KeyCode::F(7) => {
                match ide.preview_url.clone() {
                    Some(url) => {
                        self.notify(format!("opening {url}"));
                        self.effect(Effect::OpenUrl(url));
                    }
                    None => self.error("no preview yet: the project is not connected"),
                }
                return;
            }
            KeyCode::F(9) => {
                let id = ide.project.id.clone();
                self.notify(format!("opening {id} in the browser"));
                self.effect(Effect::OpenInBrowser(id));
                return;
            }
            KeyCode::F(8) => {
                if let Some(pane) = ide.terms.get(ide.active_term) {
                    let id = pane.id;
                    let live = pane.live();
                    ide.terms.remove(ide.active_term);
                    ide.active_term = ide.active_term.min(ide.terms.len().saturating_sub(1));
                    if live {
                        self.session(Command::TermClose(id));
                    }
                }
                return;
            }
            KeyCode::F(10) => {
                if ide.editor.any_unsaved() {
                    self.modal = Some(Modal::Confirm {
                        message: "Some files have unsaved changes. Leave the project anyway?".into(),
                        purpose: ConfirmFor::LeaveWithUnsaved,
                    });
                } else {
                    self.leave_project();
                }
                return;
            }
            _ => {}
        }
        match ide.focus {
            Focus::Tree => self.on_tree_key(key),
            Focus::Editor => self.on_editor_key(key, ctrl),
            Focus::Terminal => self.on_terminal_key(key),
        }
    }

    fn on_tree_key(&mut self, key: KeyEvent) {
        let Some(ide) = self.ide.as_mut() else { return };
        let tree = &mut ide.tree;
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => tree.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => tree.move_selection(1),
            KeyCode::PageUp => tree.move_selection(-10),
            KeyCode::PageDown => tree.move_selection(10),
            KeyCode::Left | KeyCode::Char('h') => tree.collapse_selected(),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.activate_selected(),
            KeyCode::Char('n') => {
                let dir = tree.target_dir();
                self.modal = Some(Modal::Prompt {
                    title: format!("New file in /{dir}"),
                    text: String::new(),
                    purpose: PromptFor::NewFile(dir),
                });
            }
            KeyCode::Char('N') | KeyCode::Char('f') => {
                let dir = tree.target_dir();
                self.modal = Some(Modal::Prompt {
                    title: format!("New folder in /{dir}"),
                    text: String::new(),
                    purpose: PromptFor::NewFolder(dir),
                });
            }
            KeyCode::Char('r') | KeyCode::F(2) => {
                if let Some(row) = tree.selected_row() {
                    self.modal = Some(Modal::Prompt {
                        title: format!("Rename {}", row.path),
                        text: row.name.clone(),
                        purpose: PromptFor::Rename(row.path.clone()),
                    });
                }
            }
            KeyCode::Char('d') | KeyCode::Delete => {
                if let Some(row) = tree.selected_row() {
                    let what = if row.kind == EntryKind::Dir {
                        "the folder"
                    } else {
                        "the file"
                    };
                    self.modal = Some(Modal::Confirm {
                        message: format!("Delete {what} {} ?", row.path),
                        purpose: ConfirmFor::DeletePath(row.path.clone()),
                    });
                }
            }
            KeyCode::Char('R') => {
                for dir in tree.loaded_dirs() {
                    self.session(Command::List(dir));
                }
            }
            _ => {}
        }
    }

    fn activate_selected(&mut self) {
        let Some(ide) = self.ide.as_mut() else { return };
        let Some(row) = ide.tree.selected_row().cloned() else {
            return;
        };
        match row.kind {
            EntryKind::Dir => {
                if let Some(dir) = ide.tree.toggle(&row.path) {
                    self.session(Command::List(dir));
                }
            }
            _ => self.open_file(row.path),
        }
    }

    fn open_file(&mut self, path: WorkspacePath) {
        let Some(ide) = self.ide.as_mut() else { return };
        if ide.editor.focus(&path) {
            ide.focus = Focus::Editor;
            return;
        }
        if !ide.opening.contains_key(&path) {
            ide.opening.insert(path.clone(), ide.focus);
            self.session(Command::Read(path));
        }
    }

    fn on_editor_key(&mut self, key: KeyEvent, ctrl: bool) {
        let Some(ide) = self.ide.as_mut() else { return };
        match key.code {
            KeyCode::Char('s') if ctrl => return self.save_current(),
            KeyCode::Char('f') if ctrl => {
                let text = ide.editor.search.clone().unwrap_or_default();
                self.modal = Some(Modal::Prompt {
                    title: "Find".into(),
                    text,
                    purpose: PromptFor::Search,
                });
                return;
            }
            KeyCode::F(3) => return self.find_next(!key.modifiers.contains(KeyModifiers::SHIFT)),
            KeyCode::Char('g') if ctrl => return self.find_next(true),
            KeyCode::Char('w') if ctrl => {
                match ide.editor.current_ref() {
                    Some(buffer) if buffer.is_modified() => {
                        self.error("this file has unsaved changes: save (Ctrl-S) before closing it")
                    }
                    _ => ide.editor.close_current(),
                }
                return;
            }
            KeyCode::PageUp if ctrl => return ide.editor.cycle(-1),
            KeyCode::PageDown if ctrl => return ide.editor.cycle(1),
            KeyCode::Char('r') if ctrl => {
                if ide.editor.current_ref().is_some_and(|b| b.is_modified()) {
                    self.modal = Some(Modal::Confirm {
                        message: "Discard your changes and load the file from the sandbox?".into(),
                        purpose: ConfirmFor::DiscardAndReload,
                    });
                } else if let Some(buffer) = ide.editor.current_ref() {
                    let path = buffer.path.clone();
                    self.session(Command::Read(path));
                }
                return;
            }
            KeyCode::Esc => {
                ide.editor.search = None;
                return;
            }
            _ => {}
        }
        let Some(buffer) = ide.editor.current() else { return };
        let changed = match key.code {
            KeyCode::Char('z') if ctrl => buffer.textarea.undo(),
            KeyCode::Char('y') if ctrl => buffer.textarea.redo(),
            _ => buffer.textarea.input(key),
        };
        if changed {
            buffer.changed();
        }
    }

    fn find_next(&mut self, forward: bool) {
        let Some(ide) = self.ide.as_mut() else { return };
        let Some(needle) = ide.editor.search.clone() else {
            return;
        };
        let Some(buffer) = ide.editor.current() else { return };
        if buffer.textarea.set_search_pattern(regex_escape(&needle)).is_err() {
            return;
        }
        let found = if forward {
            buffer.textarea.search_forward(false)
        } else {
            buffer.textarea.search_back(false)
        };
        if !found {
            self.error(format!("{needle:?} not found"));
        }
    }

    fn save_current(&mut self) {
        if let Some(index) = self.ide.as_ref().map(|ide| ide.editor.active) {
            self.save(index);
        }
    }

    /// Saves tab `index`; a conflict asks first, with that tab shown, since
    /// the answer applies to the current tab.
    fn save(&mut self, index: usize) {
        let Some(ide) = self.ide.as_mut() else { return };
        if index >= ide.editor.tabs.len() {
            return;
        }
        let buffer = &mut ide.editor.tabs[index];
        match &buffer.state {
            SaveState::Conflict { .. } if buffer.base_version.as_ref() != conflict_version(buffer) => {
                ide.editor.active = index;
                self.modal = Some(Modal::Confirm {
                    message: format!(
                        "{} changed in the sandbox since you opened it. Overwrite it with your version?",
                        buffer.path
                    ),
                    purpose: ConfirmFor::Overwrite,
                });
            }
            SaveState::Saving { .. } => self.notify("a save is already on its way"),
            _ => {
                let path = buffer.path.clone();
                let (data, base_version) = buffer.begin_save();
                self.session(Command::Write {
                    path,
                    data,
                    base_version,
                });
            }
        }
    }

    fn on_terminal_key(&mut self, key: KeyEvent) {
        let Some(ide) = self.ide.as_mut() else { return };
        let Some(pane) = ide.terms.get_mut(ide.active_term) else {
            // No terminal yet: Enter opens one.
            if key.code == KeyCode::Enter {
                ide.focus_next_terminal = true;
                self.open_terminal(TermPurpose::Shell, None);
            }
            return;
        };
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::PageUp if shift => return pane.scroll(10),
            KeyCode::PageDown if shift => return pane.scroll(-10),
            _ => {}
        }
        if !pane.live() {
            return;
        }
        pane.scroll(-(pane.parser.screen().scrollback() as isize));
        pane.selection = None;
        let application_cursor = pane.parser.screen().application_cursor();
        if let Some(bytes) = keys::encode(&key, application_cursor) {
            let term = pane.id;
            self.session(Command::Input {
                term,
                data: Bytes::from(bytes),
            });
        }
    }

    fn on_paste(&mut self, text: &str) {
        if let Some(Modal::Prompt { text: input, .. }) = self.modal.as_mut() {
            input.push_str(text.lines().next().unwrap_or(""));
            return;
        }
        let Some(ide) = self.ide.as_mut() else { return };
        match ide.focus {
            Focus::Editor => {
                if let Some(buffer) = ide.editor.current() {
                    let text = text.replace("\r\n", "\n").replace('\r', "\n");
                    if buffer.textarea.insert_str(&text) {
                        buffer.changed();
                    }
                }
            }
            Focus::Terminal => {
                let Some(pane) = ide.terms.get(ide.active_term) else {
                    return;
                };
                let data = if pane.parser.screen().bracketed_paste() {
                    format!("\x1b[200~{text}\x1b[201~")
                } else {
                    text.to_string()
                };
                let term = pane.id;
                self.session(Command::Input {
                    term,
                    data: Bytes::from(data),
                });
            }
            Focus::Tree => {}
        }
    }

    /// Runs the project the way its language expects, in a terminal of its
    /// own; a second F5 ends the previous run first.
    fn run_project(&mut self) {
        let Some(ide) = self.ide.as_mut() else { return };
        let command = run_command(&ide.project.language);
        // Unsaved files would make the run surprising: save them first.
        let unsaved: Vec<usize> = (0..ide.editor.tabs.len())
            .filter(|i| ide.editor.tabs[*i].is_modified())
            .collect();
        for index in unsaved {
            self.save(index);
        }
        let Some(ide) = self.ide.as_mut() else { return };
        if let Some(index) = ide.terms.iter().position(|t| t.purpose == TermPurpose::Run) {
            let pane = ide.terms.remove(index);
            if pane.live() {
                self.session(Command::TermClose(pane.id));
            }
        }
        self.notify(format!("running: {}", command.join(" ")));
        self.open_terminal(TermPurpose::Run, Some(command));
    }

    fn open_terminal(&mut self, purpose: TermPurpose, command: Option<Vec<String>>) {
        let Some(layout) = self.layout() else { return };
        let inner = layout.terminal_inner;
        self.session(Command::TermOpen {
            cols: inner.width.max(1),
            rows: inner.height.max(1),
            command,
            purpose,
        });
    }

    // ----- mouse -----

    fn on_mouse(&mut self, mouse: MouseEvent) {
        if self.modal.is_some() || self.help {
            return;
        }
        let Some(layout) = self.layout() else {
            self.on_projects_mouse(mouse);
            return;
        };
        let Some(ide) = self.ide.as_mut() else { return };
        let at = Position::new(mouse.column, mouse.row);
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if mouse.column + 1 == layout.tree.right() && layout.tree.contains(at) {
                    ide.dragging = Some(Border::TreeRight);
                } else if mouse.row == layout.terminal.y && layout.terminal.contains(at) && !on_title(&layout, at) {
                    ide.dragging = Some(Border::TerminalTop);
                } else if layout.tree.contains(at) {
                    ide.focus = Focus::Tree;
                    let row = ide.tree.top + (mouse.row.saturating_sub(layout.tree.y + 1)) as usize;
                    if mouse.row > layout.tree.y && row < ide.tree.rows().len() {
                        ide.tree.selected = row;
                        self.activate_selected();
                    }
                } else if layout.editor.contains(at) {
                    ide.focus = Focus::Editor;
                    if mouse.row == layout.editor.y {
                        if let Some(index) = tab_at(&layout, ide, mouse.column) {
                            ide.editor.active = index;
                        }
                    } else if layout.editor_inner.contains(at)
                        && let Some(buffer) = ide.editor.current()
                    {
                        buffer.click(layout.editor_inner, mouse.column, mouse.row);
                    }
                } else if layout.terminal.contains(at) {
                    ide.focus = Focus::Terminal;
                    if mouse.row == layout.terminal.y {
                        if let Some(index) = term_tab_at(&layout, ide, mouse.column) {
                            ide.active_term = index;
                        }
                    } else if layout.terminal_inner.contains(at)
                        && let Some(pane) = ide.terms.get_mut(ide.active_term)
                    {
                        let cell = (
                            mouse.row - layout.terminal_inner.y,
                            mouse.column - layout.terminal_inner.x,
                        );
                        pane.selection = Some((cell, cell));
                    }
                }
            }
            MouseEventKind::Drag(MouseButton::Left) => match ide.dragging {
                Some(Border::TreeRight) => {
                    ide.tree_width = (mouse.column + 1).clamp(12, self.size.width / 2);
                    self.resized(self.size);
                }
                Some(Border::TerminalTop) => {
                    let right = layout.editor.height + layout.terminal.height;
                    let from_bottom = (layout.terminal.bottom()).saturating_sub(mouse.row);
                    ide.terminal_percent = ((from_bottom as u32 * 100 / right.max(1) as u32) as u16).clamp(15, 85);
                    self.resized(self.size);
                }
                None => {
                    if let Some(pane) = ide.terms.get_mut(ide.active_term)
                        && let Some((anchor, _)) = pane.selection
                    {
                        let inner = layout.terminal_inner;
                        let row = mouse.row.clamp(inner.y, inner.bottom().saturating_sub(1)) - inner.y;
                        let col = mouse.column.clamp(inner.x, inner.right().saturating_sub(1)) - inner.x;
                        pane.selection = Some((anchor, (row, col)));
                    }
                }
            },
            MouseEventKind::Up(MouseButton::Left) => {
                ide.dragging = None;
                if let Some(pane) = ide.terms.get_mut(ide.active_term) {
                    match pane.selection {
                        Some((a, b)) if a != b => {
                            if let Some(text) = pane.selected_text() {
                                let count = text.chars().count();
                                self.effect(Effect::Copy(text));
                                self.notify(format!("copied {count} characters"));
                            }
                        }
                        _ => pane.selection = None,
                    }
                }
            }
            MouseEventKind::ScrollUp | MouseEventKind::ScrollDown => {
                let step: isize = if mouse.kind == MouseEventKind::ScrollUp { -3 } else { 3 };
                if layout.tree.contains(at) {
                    ide.tree.move_selection(step);
                } else if layout.editor.contains(at) {
                    if let Some(buffer) = ide.editor.current() {
                        buffer.scroll(step, layout.editor_inner.height as usize);
                    }
                } else if layout.terminal.contains(at)
                    && let Some(pane) = ide.terms.get_mut(ide.active_term)
                {
                    pane.scroll(-step);
                }
            }
            _ => {}
        }
    }

    fn on_projects_mouse(&mut self, mouse: MouseEvent) {
        if let MouseEventKind::Down(MouseButton::Left) = mouse.kind {
            let area = crate::view::project_list_area(self.size);
            let row = mouse.row.saturating_sub(area.y) as usize;
            if area.contains(Position::new(mouse.column, mouse.row)) && row < self.projects.projects.len() {
                if self.projects.selected == row {
                    let project = self.projects.projects[row].clone();
                    self.open_project(project);
                } else {
                    self.projects.selected = row;
                }
            }
        }
    }

    // ----- the runner -----

    fn on_update(&mut self, update: Update) {
        let Some(ide) = self.ide.as_mut() else { return };
        match update {
            Update::Connection(connection) => {
                let connected = matches!(connection, Connection::Connected { .. });
                if let Connection::Connected { preview_url } = &connection {
                    ide.preview_url = Some(preview_url.clone());
                }
                ide.connection = connection;
                if connected {
                    self.connected();
                }
            }
            Update::Listed { path, result } => match result {
                Ok(entries) => ide.tree.set_listing(path, entries),
                Err(_) if !path.is_root() => ide.tree.forget(&path),
                Err(e) => self.error(format!("listing files failed: {e}")),
            },
            Update::Read { path, result } => {
                let asked_with_focus = ide.opening.remove(&path);
                match result.map_err(|e| e.to_string()).and_then(|(data, version)| {
                    editor::decode(&path, &data)
                        .map(|text| (text, version))
                        .map_err(|e| e.to_string())
                }) {
                    Ok((text, version)) => match ide.editor.find(&path) {
                        Some(buffer) => buffer.reload(&text, version),
                        None if asked_with_focus.is_some() => {
                            ide.editor.open(Buffer::new(path, &text, version));
                            if asked_with_focus == Some(ide.focus) {
                                ide.focus = Focus::Editor;
                            }
                        }
                        None => {}
                    },
                    Err(e) => self.error(e),
                }
            }
            Update::Stat { path, result } => {
                let Some(buffer) = ide.editor.find(&path) else { return };
                match result {
                    Ok(entry) if entry.version.is_some() && entry.version != buffer.base_version => {
                        let theirs = entry.version.unwrap_or_default();
                        match &buffer.state {
                            SaveState::Saving { .. } => buffer.recheck_after_save = true,
                            _ if buffer.is_modified() => buffer.state = SaveState::Conflict { theirs },
                            _ => self.session(Command::Read(path)),
                        }
                    }
                    Ok(_) => {}
                    // Deleted in the sandbox: the buffer is all that is left,
                    // so it counts as unsaved.
                    Err(SessionError::Remote {
                        code: ErrorCode::NotFound,
                        ..
                    }) => {
                        if !buffer.is_modified() {
                            buffer.changed();
                        }
                        buffer.base_version = None;
                        buffer.state = SaveState::Failed("deleted in the sandbox: Ctrl-S writes it again".into());
                    }
                    // Offline, or another failure: nothing learnt about the
                    // file; it is checked again on reconnect.
                    Err(_) => {}
                }
            }
            Update::Saved { path, result } => {
                let Some(buffer) = ide.editor.find(&path) else { return };
                match result {
                    Ok(version) => {
                        buffer.saved(version);
                        if std::mem::take(&mut buffer.recheck_after_save) {
                            self.session(Command::Stat(path));
                        }
                    }
                    Err(SessionError::Remote {
                        code: ErrorCode::Conflict,
                        ..
                    }) => {
                        buffer.save_failed(Some(String::new()), String::new());
                        // Learn the sandbox's version so an overwrite can
                        // name it.
                        self.session(Command::Stat(path.clone()));
                        self.error(format!(
                            "{path} changed in the sandbox: Ctrl-S to overwrite, Ctrl-R to load theirs"
                        ));
                    }
                    Err(e) => {
                        let message = e.to_string();
                        buffer.save_failed(None, message.clone());
                        self.error(format!("saving {path} failed: {message}"));
                    }
                }
            }
            Update::Done { what, result } => match result {
                Ok(()) => self.notify(format!("done: {what}")),
                Err(e) => self.error(format!("{what}: {e}")),
            },
            Update::FsChanged(changes) => {
                for dir in ide.tree.dirs_to_refresh(&changes) {
                    self.effects.push(Effect::Session(Command::List(dir)));
                }
                let open: HashSet<&WorkspacePath> = ide.editor.tabs.iter().map(|b| &b.path).collect();
                let touched: HashSet<WorkspacePath> = changes
                    .iter()
                    .filter(|c| open.contains(&c.path))
                    .map(|c| c.path.clone())
                    .collect();
                for path in touched {
                    self.session(Command::Stat(path));
                }
            }
            Update::TermOpened {
                term,
                purpose,
                cols,
                rows,
            } => {
                ide.terms.push(TermPane::new(term, purpose, rows, cols));
                ide.active_term = ide.terms.len() - 1;
                let (mine, others): (Vec<Update>, Vec<Update>) = std::mem::take(&mut ide.early)
                    .into_iter()
                    .partition(|u| early_term(u) == Some(term));
                ide.early = others;
                for update in mine {
                    self.on_update(update);
                }
                let Some(ide) = self.ide.as_mut() else { return };
                if std::mem::take(&mut ide.focus_next_terminal) {
                    ide.focus = Focus::Terminal;
                }
                // The pane may have changed size while the open was on its way.
                self.resized(self.size);
            }
            Update::TermOpenFailed(e) => self.error(format!("opening a terminal failed: {e}")),
            Update::TermOutput { term, data } => match live_term(&mut ide.terms, term) {
                Some(pane) => pane.output(&data),
                None if ide.early.len() < MAX_EARLY => ide.early.push(Update::TermOutput { term, data }),
                None => {}
            },
            Update::TermSnapshot { term, data } => {
                if let Some(pane) = live_term(&mut ide.terms, term) {
                    pane.snapshot(&data);
                }
            }
            Update::TermExited { term, code } => match live_term(&mut ide.terms, term) {
                Some(pane) => pane.exited = Some(code),
                None if ide.early.len() < MAX_EARLY => ide.early.push(Update::TermExited { term, code }),
                None => {}
            },
            Update::TermLost { term, reason } => {
                if let Some(pane) = live_term(&mut ide.terms, term) {
                    pane.lost = Some(reason);
                }
            }
            Update::Storage(status) => ide.storage = Some(status),
        }
    }

    /// On every (re)connection the tree and open files are checked again,
    /// since anything may have changed meanwhile; the first one also opens
    /// a shell and the project's starter file.
    fn connected(&mut self) {
        let Some(ide) = self.ide.as_mut() else { return };
        let mut commands: Vec<Command> = ide.tree.loaded_dirs().into_iter().map(Command::List).collect();
        commands.extend(ide.editor.tabs.iter().map(|b| Command::Stat(b.path.clone())));
        if !ide.greeted {
            ide.greeted = true;
            if let Ok(path) = WorkspacePath::parse(starter_file(&ide.project.language)) {
                ide.opening.insert(path.clone(), ide.focus);
                commands.push(Command::Read(path));
            }
        }
        let open_shell = ide.terms.iter().all(|t| !t.live()) && ide.terms.len() < 2;
        for command in commands {
            self.session(command);
        }
        if open_shell {
            self.open_terminal(TermPurpose::Shell, None);
        }
        self.resized(self.size);
    }
}

/// The pane of a terminal still running on the runner. An ended pane
/// (exited, or lost with a restart) keeps its id on screen, but the id may
/// name a new terminal of a restarted runner: output never goes there.
fn live_term(terms: &mut [TermPane], term: TermId) -> Option<&mut TermPane> {
    terms.iter_mut().find(|t| t.id == term && t.live())
}

fn early_term(update: &Update) -> Option<TermId> {
    match update {
        Update::TermOutput { term, .. } | Update::TermExited { term, .. } => Some(*term),
        _ => None,
    }
}

fn conflict_version(buffer: &Buffer) -> Option<&String> {
    match &buffer.state {
        SaveState::Conflict { theirs } => Some(theirs),
        _ => None,
    }
}

fn on_title(layout: &IdeLayout, at: Position) -> bool {
    at.y == layout.terminal.y && at.x > layout.terminal.x + 1 && at.x < layout.terminal.right().saturating_sub(1)
}

fn tab_at(layout: &IdeLayout, ide: &Ide, column: u16) -> Option<usize> {
    let titles: Vec<String> = ide.editor.tabs.iter().map(|b| b.title()).collect();
    crate::view::title_hit(layout.editor.x + 1, &titles, column)
}

fn term_tab_at(layout: &IdeLayout, ide: &Ide, column: u16) -> Option<usize> {
    let titles: Vec<String> = ide.terms.iter().enumerate().map(|(i, t)| t.title(i)).collect();
    crate::view::title_hit(layout.terminal.x + 1, &titles, column)
}

/// The command F5 runs for a project of `language`.
pub fn run_command(language: &str) -> Vec<String> {
    let language = Language::parse(language).unwrap_or(Language::Python);
    language.run_command().iter().map(|s| s.to_string()).collect()
}

fn starter_file(language: &str) -> &'static str {
    Language::parse(language).unwrap_or(Language::Python).entry_file()
}

/// `~/x` is the home directory's `x`, as a shell would read it.
fn expand_home(text: &str) -> PathBuf {
    match text.strip_prefix("~/").or((text == "~").then_some("")) {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) if rest.is_empty() => PathBuf::from(home),
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(text),
        },
        None => PathBuf::from(text),
    }
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
