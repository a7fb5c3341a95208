//! The TUI's screens and key handling, driven through ratatui's TestBackend:
//! what a user sees after each key, and what the app asks of the server and
//! the runner.

use bytes::Bytes;
use cloudcode_proto::message::{ChangeKind, Entry, EntryKind, FsChange};
use cloudcode_proto::path::WorkspacePath;
use cloudcode_tui::api::Project;
use cloudcode_tui::app::{App, Effect, Input};
use cloudcode_tui::keymap::KEYMAP;
use cloudcode_tui::remote::{Command, Connection, LostReason, SessionError, TermPurpose, Update};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn p(path: &str) -> WorkspacePath {
    WorkspacePath::parse(path).unwrap()
}

fn project(id: &str, language: &str) -> Project {
    Project {
        id: id.into(),
        language: language.into(),
    }
}

fn key(app: &mut App, code: KeyCode) {
    key_with(app, code, KeyModifiers::NONE);
}

fn key_with(app: &mut App, code: KeyCode, modifiers: KeyModifiers) {
    app.handle(Input::Terminal(Event::Key(KeyEvent::new(code, modifiers))));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn update(app: &mut App, update: Update) {
    app.handle(Input::Session(update));
}

/// Draws the app and returns the screen as lines of text.
fn screen(app: &mut App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| cloudcode_tui::view::draw(app, frame)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect())
        .collect()
}

fn shows(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// Answers the mode chooser's lookup of the folder's remembered mode, as
/// the effects runner does from the sync's state file; returns the project
/// and folder it was asked for.
fn recall(app: &mut App, remembered: Option<cloudcode_tui::sync::reconcile::Mode>) -> (String, std::path::PathBuf) {
    let effects = app.take_effects();
    let [Effect::RecallSyncMode { project, dir }] = &effects[..] else {
        panic!("the folder's remembered mode is looked up first: {effects:?}");
    };
    app.handle(Input::SyncModeRecalled {
        dir: dir.clone(),
        mode: remembered,
    });
    (project.clone(), dir.clone())
}

fn sessions(effects: Vec<Effect>) -> Vec<Command> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Session(command) => Some(command),
            _ => None,
        })
        .collect()
}

fn file(path: &str) -> Entry {
    let path = p(path);
    Entry {
        name: path.file_name().unwrap().to_string(),
        path,
        kind: EntryKind::File,
        size: 1,
        mtime_ms: 0,
        target: None,
        version: Some("v1".into()),
    }
}

/// An app in the IDE of a connected python project at 80x24, with
/// `main.py` open and the effects so far taken.
fn ide() -> App {
    let mut app = App::new("http://127.0.0.1:8080".into());
    app.take_effects();
    app.handle(Input::Projects(Ok(vec![project("demo", "python")])));
    screen(&mut app, 80, 24);
    key(&mut app, KeyCode::Enter);
    let effects = app.take_effects();
    assert!(
        matches!(&effects[..], [Effect::OpenProject(p)] if p.id == "demo"),
        "{effects:?}"
    );
    update(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://demo.preview.localhost:8080/".into(),
        }),
    );
    update(
        &mut app,
        Update::Listed {
            path: WorkspacePath::root(),
            result: Ok(vec![file("main.py"), file("README.md")]),
        },
    );
    update(
        &mut app,
        Update::Read {
            path: p("main.py"),
            result: Ok((b"print('hi')\n".to_vec(), "v1".into())),
        },
    );
    app.take_effects();
    app
}

#[test]
fn the_project_list_creates_with_a_name_and_a_language() {
    let mut app = App::new("http://127.0.0.1:8080".into());
    assert!(matches!(&app.take_effects()[..], [Effect::ListProjects]));
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "loading"), "{lines:#?}");
    app.handle(Input::Projects(Ok(vec![])));
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "No projects yet. Press n to create one."));

    key(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "my-app");
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "New project name"), "{lines:#?}");
    assert!(shows(&lines, "my-app"));
    key(&mut app, KeyCode::Enter);
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "Language for my-app"), "{lines:#?}");
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Enter);
    let effects = app.take_effects();
    assert!(
        matches!(&effects[..], [Effect::CreateProject { id, language }] if id == "my-app" && language == "node-js"),
        "{effects:?}"
    );
}

#[test]
fn deleting_a_project_needs_a_yes() {
    let mut app = App::new("s".into());
    app.take_effects();
    app.handle(Input::Projects(Ok(vec![
        project("alpha", "python"),
        project("beta", "node-js"),
    ])));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('d'));
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "Delete project beta"), "{lines:#?}");
    key(&mut app, KeyCode::Char('n'));
    assert!(app.take_effects().is_empty());
    key(&mut app, KeyCode::Char('d'));
    key(&mut app, KeyCode::Char('y'));
    assert!(matches!(&app.take_effects()[..], [Effect::DeleteProject(id)] if id == "beta"));
}

#[test]
fn a_failed_create_is_shown_and_the_list_stays() {
    let mut app = App::new("s".into());
    app.handle(Input::Projects(Ok(vec![project("alpha", "python")])));
    app.handle(Input::Created(Err(cloudcode_tui::api::ApiError::Refused {
        status: 409,
        code: "already_exists".into(),
        message: "project alpha already exists".into(),
    })));
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "project alpha already exists"), "{lines:#?}");
    assert!(shows(&lines, "alpha"));
    assert!(app.ide.is_none());
}

#[test]
fn connecting_lists_files_opens_a_shell_and_the_starter_file() {
    let mut app = App::new("s".into());
    app.handle(Input::Created(Ok(project("demo", "python"))));
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "connecting"), "{lines:#?}");
    app.take_effects();
    update(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://demo.preview.localhost:8080/".into(),
        }),
    );
    let commands = sessions(app.take_effects());
    assert!(
        commands.iter().any(|c| matches!(c, Command::List(p) if p.is_root())),
        "{commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::Read(p) if p.as_str() == "main.py"))
    );
    // The shell is as large as the terminal pane: 80 - 16 tree - 2 borders
    // wide, 40% of 23 rows less the borders high.
    assert!(
        commands.iter().any(|c| matches!(
            c,
            Command::TermOpen {
                cols: 62,
                rows: 7,
                command: None,
                purpose: TermPurpose::Shell
            }
        )),
        "{commands:?}"
    );
    let lines = screen(&mut app, 120, 24);
    assert!(shows(&lines, "● connected"), "{lines:#?}");
    assert!(
        shows(&lines, "F7 preview http://demo.preview.localhost:8080/"),
        "{lines:#?}"
    );
}

#[test]
fn editing_shows_modified_and_saving_sends_the_text_with_its_base_version() {
    let mut app = ide();
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "print('hi')"), "{lines:#?}");
    assert!(shows(&lines, "main.py saved"));
    key(&mut app, KeyCode::End);
    type_text(&mut app, " # more");
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "main.py ●"), "the tab shows the change: {lines:#?}");
    assert!(shows(&lines, "modified"));
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    let commands = sessions(app.take_effects());
    match &commands[..] {
        [
            Command::Write {
                path,
                data,
                base_version,
            },
        ] => {
            assert_eq!(path.as_str(), "main.py");
            assert_eq!(data, b"print('hi') # more\n");
            assert_eq!(base_version.as_deref(), Some("v1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(shows(&screen(&mut app, 80, 24), "saving"));
    update(
        &mut app,
        Update::Saved {
            path: p("main.py"),
            result: Ok("v2".into()),
        },
    );
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "main.py saved"), "{lines:#?}");
    // Undo is one more edit to save.
    key_with(&mut app, KeyCode::Char('z'), KeyModifiers::CONTROL);
    assert!(shows(&screen(&mut app, 80, 24), "main.py ●"));
}

#[test]
fn a_failed_save_keeps_the_buffer_and_says_so() {
    let mut app = ide();
    type_text(&mut app, "x");
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    update(
        &mut app,
        Update::Saved {
            path: p("main.py"),
            result: Err(SessionError::Disconnected),
        },
    );
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "NOT SAVED"), "{lines:#?}");
    assert!(shows(&lines, "xprint('hi')"), "the edit is still there");
    key_with(&mut app, KeyCode::Char('q'), KeyModifiers::CONTROL);
    assert!(!app.quit, "quitting with unsaved changes asks first");
    assert!(shows(&screen(&mut app, 80, 24), "unsaved changes"));
}

#[test]
fn a_long_disconnection_reason_never_hides_that_a_save_failed() {
    let mut app = ide();
    type_text(&mut app, "x");
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    update(
        &mut app,
        Update::Connection(Connection::Lost {
            reason: "starting the project: the server at http://127.0.0.1:44467 cannot be reached".into(),
            retry_in: std::time::Duration::from_secs(2),
        }),
    );
    update(
        &mut app,
        Update::Saved {
            path: p("main.py"),
            result: Err(SessionError::Disconnected),
        },
    );
    let lines = screen(&mut app, 120, 30);
    let bar = lines.last().unwrap();
    assert!(bar.contains("disconnected; retry in 2.0s"), "{bar}");
    assert!(bar.contains("NOT SAVED"), "{bar}");
}

#[test]
fn a_sandbox_change_reloads_a_clean_buffer() {
    let mut app = ide();
    update(
        &mut app,
        Update::FsChanged(vec![FsChange {
            path: p("main.py"),
            kind: ChangeKind::Modified,
        }]),
    );
    let commands = sessions(app.take_effects());
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::Stat(p) if p.as_str() == "main.py"))
    );
    update(
        &mut app,
        Update::Stat {
            path: p("main.py"),
            result: Ok(Entry {
                version: Some("v2".into()),
                ..file("main.py")
            }),
        },
    );
    let commands = sessions(app.take_effects());
    assert!(
        matches!(&commands[..], [Command::Read(p)] if p.as_str() == "main.py"),
        "{commands:?}"
    );
    update(
        &mut app,
        Update::Read {
            path: p("main.py"),
            result: Ok((b"print('changed in the sandbox')\n".to_vec(), "v2".into())),
        },
    );
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "changed in the sandbox"), "{lines:#?}");
    assert_eq!(app.ide.as_ref().unwrap().editor.tabs.len(), 1, "reloaded in place");
}

#[test]
fn a_sandbox_change_to_a_modified_buffer_is_a_conflict_never_an_overwrite() {
    let mut app = ide();
    type_text(&mut app, "mine ");
    update(
        &mut app,
        Update::FsChanged(vec![FsChange {
            path: p("main.py"),
            kind: ChangeKind::Modified,
        }]),
    );
    app.take_effects();
    update(
        &mut app,
        Update::Stat {
            path: p("main.py"),
            result: Ok(Entry {
                version: Some("v9".into()),
                ..file("main.py")
            }),
        },
    );
    assert!(
        sessions(app.take_effects()).is_empty(),
        "nothing is read over the edits"
    );
    let lines = screen(&mut app, 100, 30);
    assert!(shows(&lines, "CONFLICT"), "{lines:#?}");
    assert!(shows(&lines, "main.py !"));
    // Saving asks; yes overwrites on purpose, naming their version.
    key_with(&mut app, KeyCode::Char('s'), KeyModifiers::CONTROL);
    assert!(sessions(app.take_effects()).is_empty());
    assert!(shows(&screen(&mut app, 100, 30), "with your version?"));
    key(&mut app, KeyCode::Char('y'));
    let commands = sessions(app.take_effects());
    assert!(
        matches!(&commands[..], [Command::Write { base_version: Some(v), data, .. }] if v == "v9" && data.starts_with(b"mine ")),
        "{commands:?}"
    );
}

#[test]
fn binary_files_are_refused_politely() {
    let mut app = ide();
    key_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let commands = sessions(app.take_effects());
    assert!(
        matches!(&commands[..], [Command::Read(p)] if p.as_str() == "README.md"),
        "{commands:?}"
    );
    update(
        &mut app,
        Update::Read {
            path: p("README.md"),
            result: Ok((vec![0, 1, 2, 3], "v1".into())),
        },
    );
    let lines = screen(&mut app, 100, 30);
    assert!(shows(&lines, "README.md is a binary file"), "{lines:#?}");
    assert_eq!(app.ide.as_ref().unwrap().editor.tabs.len(), 1);
}

/// A user who moves to the terminal while the starter file is still on its
/// way keeps the terminal: the file's arrival does not take the keys back.
#[test]
fn a_file_that_arrives_late_does_not_steal_the_focus() {
    let mut app = App::new("s".into());
    app.handle(Input::Created(Ok(project("demo", "python"))));
    update(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://demo.preview.localhost:8080/".into(),
        }),
    );
    update(
        &mut app,
        Update::TermOpened {
            term: 4,
            purpose: TermPurpose::Shell,
            cols: 62,
            rows: 7,
        },
    );
    app.take_effects();
    key_with(&mut app, KeyCode::Char('3'), KeyModifiers::ALT);
    update(
        &mut app,
        Update::Read {
            path: p("main.py"),
            result: Ok((b"print('hi')\n".to_vec(), "v1".into())),
        },
    );
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "main.py"), "the file opens: {lines:#?}");
    assert!(shows(&lines, "┏ 1 shell"), "the terminal keeps the focus: {lines:#?}");
    type_text(&mut app, "ls");
    let sent: Vec<u8> = sessions(app.take_effects())
        .into_iter()
        .flat_map(|c| match c {
            Command::Input { term: 4, data } => data.to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, b"ls");

    // Left where it was asked from, the editor takes the focus as before.
    let mut app = ide();
    assert!(shows(&screen(&mut app, 80, 24), "┏ main.py"));
}

#[test]
fn terminal_output_is_drawn_and_keys_go_to_the_shell() {
    let mut app = ide();
    // Output that arrives before the open reply is kept for the pane.
    update(
        &mut app,
        Update::TermOutput {
            term: 7,
            data: Bytes::from_static(b"\x1b[32mgreen\x1b[0m prompt$ "),
        },
    );
    update(
        &mut app,
        Update::TermOpened {
            term: 7,
            purpose: TermPurpose::Shell,
            cols: 62,
            rows: 7,
        },
    );
    let lines = screen(&mut app, 80, 24);
    assert!(shows(&lines, "green prompt$"), "{lines:#?}");
    assert!(shows(&lines, "1 shell"));
    key_with(&mut app, KeyCode::Char('3'), KeyModifiers::ALT);
    type_text(&mut app, "ls");
    key(&mut app, KeyCode::Enter);
    key_with(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
    let sent: Vec<u8> = sessions(app.take_effects())
        .into_iter()
        .flat_map(|c| match c {
            Command::Input { term: 7, data } => data.to_vec(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, b"ls\r\x03");
    update(&mut app, Update::TermExited { term: 7, code: Some(0) });
    assert!(shows(&screen(&mut app, 80, 24), "1 shell [exit 0]"));
}

#[test]
fn run_saves_then_runs_the_language_command_in_its_own_terminal() {
    let mut app = ide();
    type_text(&mut app, "#");
    key(&mut app, KeyCode::F(5));
    let commands = sessions(app.take_effects());
    assert!(matches!(&commands[0], Command::Write { .. }), "{commands:?}");
    assert!(
        matches!(&commands[1], Command::TermOpen { command: Some(c), purpose: TermPurpose::Run, .. } if c == &["python3", "main.py"]),
        "{commands:?}"
    );
}

#[test]
fn terminals_follow_the_size_of_their_pane() {
    let mut app = ide();
    update(
        &mut app,
        Update::TermOpened {
            term: 1,
            purpose: TermPurpose::Shell,
            cols: 62,
            rows: 7,
        },
    );
    app.take_effects();
    screen(&mut app, 300, 100);
    let commands = sessions(app.take_effects());
    assert!(
        matches!(
            &commands[..],
            [Command::Resize {
                term: 1,
                cols: 282,
                rows: 37
            }]
        ),
        "{commands:?}"
    );
    // Growing the terminal pane with Alt-Up resizes it again.
    key_with(&mut app, KeyCode::Up, KeyModifiers::ALT);
    let commands = sessions(app.take_effects());
    assert!(
        matches!(&commands[..], [Command::Resize { term: 1, rows: 42, .. }]),
        "{commands:?}"
    );
}

#[test]
fn a_lost_connection_is_shown_and_the_screen_kept() {
    let mut app = ide();
    update(
        &mut app,
        Update::TermOpened {
            term: 1,
            purpose: TermPurpose::Shell,
            cols: 62,
            rows: 7,
        },
    );
    update(
        &mut app,
        Update::TermOutput {
            term: 1,
            data: Bytes::from_static(b"before the outage"),
        },
    );
    update(
        &mut app,
        Update::Connection(Connection::Lost {
            reason: "the connection dropped".into(),
            retry_in: std::time::Duration::from_secs(2),
        }),
    );
    let lines = screen(&mut app, 120, 30);
    assert!(shows(&lines, "disconnected; retry in 2.0s"), "{lines:#?}");
    assert!(shows(&lines, "the connection dropped"), "{lines:#?}");
    assert!(
        shows(&lines, "disconnected: the screen resumes on reconnect"),
        "{lines:#?}"
    );
    app.take_effects();
    update(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://demo.preview.localhost:8080/".into(),
        }),
    );
    let commands = sessions(app.take_effects());
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::Stat(p) if p.as_str() == "main.py")),
        "open files are checked again: {commands:?}"
    );
    assert!(
        !commands.iter().any(|c| matches!(c, Command::TermOpen { .. })),
        "the shell resumes; no new one: {commands:?}"
    );
    update(
        &mut app,
        Update::TermOutput {
            term: 1,
            data: Bytes::from_static(b" and after"),
        },
    );
    assert!(shows(&screen(&mut app, 120, 30), "before the outage and after"));
}

#[test]
fn after_a_sandbox_restart_the_terminal_shows_it_ended_and_a_new_one_takes_its_id() {
    let mut app = ide();
    let opened = |term| Update::TermOpened {
        term,
        purpose: TermPurpose::Shell,
        cols: 62,
        rows: 7,
    };
    let output = |term, data: &'static [u8]| Update::TermOutput {
        term,
        data: Bytes::from_static(data),
    };
    update(&mut app, opened(1));
    update(&mut app, output(1, b"old-shell$ "));
    update(
        &mut app,
        Update::Connection(Connection::Lost {
            reason: "the runner closed the connection: runner shutting down".into(),
            retry_in: std::time::Duration::from_millis(500),
        }),
    );
    // The session reconnected to another runner instance: it reports the
    // terminal lost, before saying connected.
    update(
        &mut app,
        Update::TermLost {
            term: 1,
            reason: LostReason::Restarted,
        },
    );
    app.take_effects();
    update(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://demo.preview.localhost:8080/".into(),
        }),
    );
    let commands = sessions(app.take_effects());
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::TermOpen { command: None, .. })),
        "a new shell is opened: {commands:?}"
    );
    let lines = screen(&mut app, 120, 30);
    assert!(shows(&lines, "1 shell [ended]"), "{lines:#?}");
    assert!(
        shows(&lines, "this terminal ended: the sandbox restarted. F6 opens a new one"),
        "{lines:#?}"
    );
    assert!(shows(&lines, "old-shell$"), "the last screen stays readable");
    // Keys typed into the ended terminal go nowhere.
    key_with(&mut app, KeyCode::Char('3'), KeyModifiers::ALT);
    type_text(&mut app, "ls");
    let commands = sessions(app.take_effects());
    assert!(
        !commands.iter().any(|c| matches!(c, Command::Input { .. })),
        "{commands:?}"
    );

    // The restarted runner numbers terminals from 1 again: the new shell
    // has the old one's id, and its output goes to the new pane only.
    update(&mut app, opened(1));
    update(&mut app, output(1, b"new-shell$ "));
    let lines = screen(&mut app, 120, 30);
    assert!(shows(&lines, "2 shell"), "{lines:#?}");
    assert!(shows(&lines, "new-shell$"), "{lines:#?}");
    assert!(!shows(&lines, "old-shell$"), "{lines:#?}");
    type_text(&mut app, "ls");
    let inputs: Vec<Command> = sessions(app.take_effects())
        .into_iter()
        .filter(|c| matches!(c, Command::Input { .. }))
        .collect();
    assert!(
        matches!(
            &inputs[..],
            [Command::Input { term: 1, .. }, Command::Input { term: 1, .. }]
        ),
        "{inputs:?}"
    );
    key_with(&mut app, KeyCode::Char(','), KeyModifiers::ALT);
    let lines = screen(&mut app, 120, 30);
    assert!(
        shows(&lines, "old-shell$") && !shows(&lines, "new-shell$"),
        "{lines:#?}"
    );
    assert!(shows(&lines, "the sandbox restarted"), "{lines:#?}");
}

#[test]
fn the_tree_creates_renames_and_deletes_with_confirmation() {
    let mut app = ide();
    key_with(&mut app, KeyCode::Char('1'), KeyModifiers::ALT);
    key(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "app.py");
    key(&mut app, KeyCode::Enter);
    assert!(matches!(&sessions(app.take_effects())[..], [Command::CreateFile(p)] if p.as_str() == "app.py"));
    key(&mut app, KeyCode::Char('f'));
    type_text(&mut app, "src");
    key(&mut app, KeyCode::Enter);
    assert!(matches!(&sessions(app.take_effects())[..], [Command::CreateDir(p)] if p.as_str() == "src"));
    key(&mut app, KeyCode::Char('r'));
    for _ in 0.."main.py".len() {
        key(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "app2.py");
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        &sessions(app.take_effects())[..],
        [Command::Rename { from, to }] if from.as_str() == "main.py" && to.as_str() == "app2.py"
    ));
    key(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "../escape");
    key(&mut app, KeyCode::Enter);
    let commands = sessions(app.take_effects());
    assert!(commands.is_empty(), "a bad name never reaches the runner: {commands:?}");
    assert!(shows(&screen(&mut app, 80, 24), "invalid"));
    key(&mut app, KeyCode::Delete);
    assert!(shows(&screen(&mut app, 80, 24), "Delete the file main.py"));
    key(&mut app, KeyCode::Char('y'));
    assert!(matches!(&sessions(app.take_effects())[..], [Command::Delete(p)] if p.as_str() == "main.py"));
    // A terminal-made file appears when the runner reports it.
    update(
        &mut app,
        Update::FsChanged(vec![FsChange {
            path: p("made-in-shell.txt"),
            kind: ChangeKind::Created,
        }]),
    );
    assert!(matches!(&sessions(app.take_effects())[..], [Command::List(p)] if p.is_root()));
}

#[test]
fn help_lists_every_key() {
    let mut app = ide();
    key(&mut app, KeyCode::F(1));
    let lines = screen(&mut app, 100, 40);
    for binding in KEYMAP {
        assert!(shows(&lines, binding.keys), "{} missing: {lines:#?}", binding.keys);
        assert!(shows(&lines, binding.action), "{} missing", binding.action);
    }
    key(&mut app, KeyCode::Esc);
    assert!(!shows(&screen(&mut app, 100, 40), KEYMAP[0].action));
}

#[test]
fn the_mouse_focuses_opens_and_resizes() {
    let mut app = ide();
    let click = |app: &mut App, column, row, kind| {
        app.handle(Input::Terminal(Event::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })))
    };
    // README.md is the second row of the tree.
    click(&mut app, 5, 2, MouseEventKind::Down(MouseButton::Left));
    assert!(matches!(&sessions(app.take_effects())[..], [Command::Read(p)] if p.as_str() == "README.md"));
    // Dragging the tree's right border (16 columns wide at 80) to column 39
    // makes it 40 wide.
    click(&mut app, 15, 5, MouseEventKind::Down(MouseButton::Left));
    click(&mut app, 39, 5, MouseEventKind::Drag(MouseButton::Left));
    click(&mut app, 39, 5, MouseEventKind::Up(MouseButton::Left));
    assert_eq!(app.ide.as_ref().unwrap().tree_width, 40);
}

#[test]
fn every_size_draws_without_panicking() {
    for (w, h) in [(80, 24), (300, 100), (20, 6), (1, 1), (0, 0)] {
        let mut app = ide();
        key(&mut app, KeyCode::F(1));
        screen(&mut app, w.max(1), h.max(1));
        key(&mut app, KeyCode::Esc);
        let lines = screen(&mut app, w.max(1), h.max(1));
        if w >= 80 {
            assert!(shows(&lines, "demo"), "{lines:#?}");
            assert!(shows(&lines, "print('hi')"));
        }
    }
}

#[test]
fn an_idle_screen_needs_no_redraw_but_a_reconnection_does() {
    let mut app = ide();
    assert!(
        !app.changes_with_time(),
        "connected and quiet: nothing to redraw on a tick"
    );
    app.notify("saved");
    assert!(app.changes_with_time(), "a notice expires by itself");
    update(
        &mut app,
        Update::Connection(Connection::Lost {
            reason: "gone".into(),
            retry_in: std::time::Duration::from_secs(1),
        }),
    );
    app.notice = None;
    assert!(app.changes_with_time(), "a reconnection under way");
}

#[test]
fn a_storage_outage_is_shown_until_it_ends() {
    use cloudcode_proto::message::StorageStatus;
    let mut app = ide();
    let status = |healthy, pending| StorageStatus {
        healthy,
        pending,
        last_error: None,
        ..Default::default()
    };
    update(&mut app, Update::Storage(status(false, 3)));
    let lines = screen(&mut app, 140, 24);
    assert!(shows(&lines, "storage unavailable, 3 change(s) waiting"), "{lines:#?}");
    update(&mut app, Update::Storage(status(true, 0)));
    assert!(!shows(&screen(&mut app, 140, 24), "storage unavailable"));
}

#[test]
fn alt_c_copies_the_terminal_screen_without_a_mouse() {
    let mut app = ide();
    update(
        &mut app,
        Update::TermOpened {
            term: 4,
            purpose: TermPurpose::Shell,
            cols: 62,
            rows: 7,
        },
    );
    update(
        &mut app,
        Update::TermOutput {
            term: 4,
            data: Bytes::from_static(b"$ ls\r\nmain.py  README.md\r\n$ "),
        },
    );
    app.take_effects();
    key_with(&mut app, KeyCode::Char('c'), KeyModifiers::ALT);
    let effects = app.take_effects();
    match &effects[..] {
        [Effect::Copy(text)] => assert_eq!(text, "$ ls\nmain.py  README.md\n$"),
        other => panic!("{other:?}"),
    }
    assert!(shows(&screen(&mut app, 100, 24), "copied"));
}

#[test]
fn f9_opens_the_project_in_the_browser_ide() {
    let mut app = ide();
    app.take_effects();
    key(&mut app, KeyCode::F(9));
    let effects = app.take_effects();
    assert!(
        matches!(&effects[..], [Effect::OpenInBrowser(id)] if id == "demo"),
        "{effects:?}"
    );
    let lines = screen(&mut app, 120, 24);
    assert!(shows(&lines, "opening demo in the browser"), "{lines:#?}");
}

#[test]
fn the_browser_url_logs_in_through_the_fragment() {
    let api = cloudcode_tui::api::ApiClient::new("http://127.0.0.1:8080", "tok").unwrap();
    assert_eq!(api.browser_url("demo"), "http://127.0.0.1:8080/p/demo#token=tok");
    assert!(!api.browser_url_without_token("demo").contains("tok"));
}

// ----- the folder sync -----

mod sync {
    use super::*;
    use cloudcode_tui::sync::conflicts::{Conflict, Content, Resolution, diff_lines};
    use cloudcode_tui::sync::model::Node;
    use cloudcode_tui::sync::reconcile::{Mode, Side};
    use cloudcode_tui::sync::report::{Control, Phase, Status};
    use cloudcode_tui::sync::task::Update as SyncUpdate;

    fn status(phase: Phase, pending: usize) -> SyncUpdate {
        status_in(Mode::TwoWaySafe, phase, pending)
    }

    /// What a sync running in `mode` reports.
    fn status_in(mode: Mode, phase: Phase, pending: usize) -> SyncUpdate {
        SyncUpdate::Status(Status {
            mode,
            phase,
            pending,
            polling: false,
        })
    }

    fn conflict() -> Conflict {
        let node = |h: &str| Node::File {
            hash: h.into(),
            executable: false,
        };
        Conflict {
            path: p("notes.txt"),
            copy: p("notes.conflict-remote-1f2e3d4c.txt"),
            copy_from: Side::Remote,
            at_path: Some(node("aaaa")),
            in_copy: node("1f2e3d4c"),
            local: Content::Text("shared\nmine\n".into()),
            remote: Content::Text("shared\ntheirs\n".into()),
            diff: diff_lines("shared\ntheirs\n", "shared\nmine\n"),
        }
    }

    fn syncing() -> App {
        let mut app = ide();
        key(&mut app, KeyCode::F(4));
        key_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
        type_text(&mut app, "/home/u/work");
        key(&mut app, KeyCode::Enter);
        // The mode is asked first; a folder never synced is offered
        // two-way-safe, and Enter takes it.
        recall(&mut app, None);
        key(&mut app, KeyCode::Enter);
        let effects = app.take_effects();
        assert!(
            matches!(&effects[..], [Effect::StartSync { project, dir, mode: Some(Mode::TwoWaySafe) }]
                if project == "demo" && dir == std::path::Path::new("/home/u/work")),
            "{effects:?}"
        );
        app
    }

    fn sync_update(app: &mut App, update: SyncUpdate) {
        app.handle(Input::Sync(update));
    }

    fn controls(effects: Vec<Effect>) -> Vec<Control> {
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Sync(control) => Some(control),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_sync_flag_starts_a_sync_with_the_project_and_the_status_bar_follows_it() {
        let mut app = App::new("http://127.0.0.1:8080".into());
        app.sync_on_start = Some(("/home/u/work".into(), Some(Mode::TwoWaySafe)));
        app.open_on_start = Some("demo".into());
        app.take_effects();
        app.handle(Input::Projects(Ok(vec![project("demo", "python")])));
        let effects = app.take_effects();
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::StartSync { project, .. } if project == "demo")),
            "{effects:?}"
        );
        let bar = |app: &mut App| screen(app, 120, 30).last().cloned().unwrap();
        assert!(bar(&mut app).contains("⇅ sync: reading…"), "{}", bar(&mut app));
        sync_update(&mut app, status(Phase::Watching, 0));
        assert!(bar(&mut app).contains("⇅ watching"), "{}", bar(&mut app));
        sync_update(&mut app, status(Phase::Watching, 3));
        assert!(bar(&mut app).contains("⇅ 3 pending"), "{}", bar(&mut app));
        sync_update(&mut app, status(Phase::Watching, 0));
        sync_update(&mut app, SyncUpdate::Conflicts(vec![conflict()]));
        let line = bar(&mut app);
        assert!(
            line.contains("⇅ watching") && line.contains("⚠ 1 conflict (F4)"),
            "{line}"
        );
        sync_update(&mut app, SyncUpdate::Conflicts(vec![]));
        assert!(!bar(&mut app).contains("conflict"));
        sync_update(
            &mut app,
            SyncUpdate::Ended(Err("the folder /x cannot be opened".into())),
        );
        let line = bar(&mut app);
        assert!(line.contains("⇅ sync failed"), "{line}");
        assert!(line.contains("the folder /x cannot be opened"), "{line}");
    }

    #[test]
    fn the_sync_flag_without_a_mode_runs_in_the_folders_last_one_and_shows_it() {
        let mut app = App::new("http://127.0.0.1:8080".into());
        app.sync_on_start = Some(("/home/u/work".into(), None));
        app.open_on_start = Some("demo".into());
        app.take_effects();
        app.handle(Input::Projects(Ok(vec![project("demo", "python")])));
        let effects = app.take_effects();
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::StartSync { project, mode: None, .. } if project == "demo")),
            "the sync picks the mode: {effects:?}"
        );
        sync_update(&mut app, status_in(Mode::OneWaySafe, Phase::Watching, 0));
        let bar = screen(&mut app, 120, 30).last().cloned().unwrap();
        assert!(bar.contains("→ watching · one-way-safe"), "{bar}");
    }

    #[test]
    fn the_sync_view_shows_each_conflict_with_a_diff_and_sends_the_choice_to_the_sync() {
        let mut app = syncing();
        sync_update(&mut app, status(Phase::Watching, 0));
        let mut second = conflict();
        second.path = p("src/b.py");
        second.copy = p("src/b.conflict-remote-99887766.py");
        sync_update(&mut app, SyncUpdate::Conflicts(vec![conflict(), second]));
        sync_update(
            &mut app,
            SyncUpdate::Line {
                text: "conflict: notes.txt changed on both sides".into(),
                warn: true,
            },
        );
        key(&mut app, KeyCode::F(4));
        let lines = screen(&mut app, 120, 36);
        for needle in [
            "2 conflicts",
            "notes.txt",
            "the sandbox's version is in notes.conflict-remote-1f2e3d4c.txt",
            "src/b.py",
            "--- sandbox  notes.conflict-remote-1f2e3d4c.txt",
            "+++ folder   notes.txt",
            "  shared",
            "- theirs",
            "+ mine",
            "conflict: notes.txt changed on both sides",
            "l keep local · r keep remote · b keep both",
        ] {
            assert!(shows(&lines, needle), "{needle} missing: {lines:#?}");
        }
        // Keys go to the view, not the editor behind it.
        key(&mut app, KeyCode::Char('b'));
        let sent = controls(app.take_effects());
        assert!(
            matches!(&sent[..], [Control::Resolve { conflict, resolution: Resolution::KeepBoth }]
                if conflict.path.as_str() == "notes.txt"),
            "{sent:?}"
        );
        assert!(!app.ide.as_ref().unwrap().editor.current_ref().unwrap().is_modified());
        // Keeping one side deletes the other's version: asked first, and
        // no is nothing.
        key(&mut app, KeyCode::Down);
        key(&mut app, KeyCode::Char('r'));
        assert!(controls(app.take_effects()).is_empty(), "nothing before the answer");
        let lines = screen(&mut app, 120, 36);
        assert!(
            shows(&lines, "Keep the sandbox's version of src/b.py? The folder's version")
                && shows(&lines, "is deleted, in the folder and in the sandbox."),
            "{lines:#?}"
        );
        key(&mut app, KeyCode::Char('n'));
        assert!(controls(app.take_effects()).is_empty());
        assert!(app.modal.is_none());
        key(&mut app, KeyCode::Char('r'));
        key(&mut app, KeyCode::Char('y'));
        key(&mut app, KeyCode::Char('l'));
        let lines = screen(&mut app, 120, 36);
        assert!(
            shows(&lines, "Keep the folder's version of src/b.py? The sandbox's version"),
            "{lines:#?}"
        );
        key(&mut app, KeyCode::Char('y'));
        let sent = controls(app.take_effects());
        assert!(
            matches!(&sent[..], [
                Control::Resolve { conflict: a, resolution: Resolution::KeepRemote },
                Control::Resolve { conflict: b, resolution: Resolution::KeepLocal },
            ] if a.path.as_str() == "src/b.py" && b.path.as_str() == "src/b.py"),
            "{sent:?}"
        );
        // Resolved one goes: the chosen one stays chosen.
        let mut left = conflict();
        left.path = p("src/b.py");
        left.copy = p("src/b.conflict-remote-99887766.py");
        sync_update(&mut app, SyncUpdate::Conflicts(vec![left]));
        assert_eq!(app.ide.as_ref().unwrap().sync.as_ref().unwrap().selected, 0);
        key(&mut app, KeyCode::Char('S'));
        assert_eq!(controls(app.take_effects()), [Control::Stop]);
        key(&mut app, KeyCode::Esc);
        let lines = screen(&mut app, 120, 36);
        assert!(!shows(&lines, "--- sandbox"), "{lines:#?}");
    }

    #[test]
    fn the_sync_mode_is_chosen_when_starting_and_shown_while_it_runs() {
        let mut app = ide();
        key(&mut app, KeyCode::F(4));
        key_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
        type_text(&mut app, "/home/u/site");
        key(&mut app, KeyCode::Enter);
        let (project, dir) = recall(&mut app, None);
        assert_eq!(
            (project.as_str(), dir.as_path()),
            ("demo", std::path::Path::new("/home/u/site"))
        );
        let lines = screen(&mut app, 120, 36);
        for needle in [
            "Sync /home/u/site with the sandbox: how?",
            "⇅ two-way-safe",
            "→ one-way-safe",
            "→ one-way-replica",
            "the sandbox becomes a copy, extras deleted",
            "↑↓ choose · Enter start · Esc cancel",
        ] {
            assert!(shows(&lines, needle), "{needle} missing: {lines:#?}");
        }
        // Esc starts nothing.
        key(&mut app, KeyCode::Esc);
        assert!(app.take_effects().is_empty());
        key(&mut app, KeyCode::F(4));
        type_text(&mut app, "/home/u/site");
        key(&mut app, KeyCode::Enter);
        recall(&mut app, None);
        // Up from the first wraps to the last.
        key(&mut app, KeyCode::Up);
        key(&mut app, KeyCode::Enter);
        let effects = app.take_effects();
        assert!(
            matches!(&effects[..], [Effect::StartSync { dir, mode: Some(Mode::OneWayReplica), .. }]
                if dir == std::path::Path::new("/home/u/site")),
            "{effects:?}"
        );
        let bar = screen(&mut app, 120, 36).last().cloned().unwrap();
        assert!(bar.contains("one-way-replica"), "shown before the sync reports: {bar}");
        sync_update(&mut app, status_in(Mode::OneWayReplica, Phase::Watching, 0));
        let bar = screen(&mut app, 120, 36).last().cloned().unwrap();
        assert!(bar.contains("→ watching · one-way-replica"), "{bar}");
        key(&mut app, KeyCode::F(4));
        let lines = screen(&mut app, 120, 36);
        assert!(
            shows(&lines, "sync · /home/u/site → demo · one-way-replica"),
            "{lines:#?}"
        );
        // Stopped and started again: the mode the folder's state
        // remembers is offered.
        sync_update(&mut app, SyncUpdate::Ended(Ok(())));
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::F(4));
        key(&mut app, KeyCode::Enter);
        recall(&mut app, Some(Mode::OneWayReplica));
        key(&mut app, KeyCode::Enter);
        let effects = app.take_effects();
        assert!(
            matches!(
                &effects[..],
                [Effect::StartSync {
                    mode: Some(Mode::OneWayReplica),
                    ..
                }]
            ),
            "{effects:?}"
        );
    }

    #[test]
    fn a_resolution_confirmed_after_the_sync_ended_is_not_sent() {
        let mut app = syncing();
        sync_update(&mut app, SyncUpdate::Conflicts(vec![conflict()]));
        key(&mut app, KeyCode::F(4));
        key(&mut app, KeyCode::Char('l'));
        sync_update(&mut app, SyncUpdate::Ended(Err("the connection dropped".into())));
        key(&mut app, KeyCode::Char('y'));
        assert!(controls(app.take_effects()).is_empty());
        let bar = screen(&mut app, 200, 36).last().cloned().unwrap();
        assert!(bar.contains("the sync has stopped: F4 starts it again"), "{bar}");
    }

    #[test]
    fn a_held_round_asks_before_deleting_and_yes_lets_the_sync_go_on() {
        let mut app = syncing();
        let why = "this sync would delete 80 of 100 files in the sandbox";
        sync_update(&mut app, status(Phase::Held { why: why.into() }, 0));
        let lines = screen(&mut app, 120, 36);
        assert!(shows(&lines, "The sync held a round"), "{lines:#?}");
        assert!(shows(&lines, "⇅ sync held: F4 to decide"), "{lines:#?}");
        key(&mut app, KeyCode::Char('n'));
        assert!(controls(app.take_effects()).is_empty());
        // F4 asks again.
        key(&mut app, KeyCode::F(4));
        key(&mut app, KeyCode::Char('y'));
        assert_eq!(controls(app.take_effects()), [Control::AllowDeletions]);
        // Leaving the project stops its sync.
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::F(10));
        assert!(controls(app.take_effects()).contains(&Control::Stop));
    }
}

#[test]
fn s_on_the_project_list_opens_the_project_synced_with_a_folder() {
    use cloudcode_tui::sync::reconcile::Mode;
    let mut app = App::new("http://127.0.0.1:8080".into());
    app.default_sync_dir = "/home/u".into();
    app.take_effects();
    app.handle(Input::Projects(Ok(vec![project("demo", "python")])));
    key(&mut app, KeyCode::Char('s'));
    let lines = screen(&mut app, 100, 30);
    assert!(shows(&lines, "Open demo synced with a local folder"), "{lines:#?}");
    assert!(shows(&lines, "/home/u"), "{lines:#?}");
    type_text(&mut app, "/work");
    key(&mut app, KeyCode::Enter);
    let (project, _) = recall(&mut app, None);
    assert_eq!(project, "demo", "the selected project's state is asked");
    let lines = screen(&mut app, 100, 30);
    assert!(shows(&lines, "Sync /home/u/work with the sandbox: how?"), "{lines:#?}");
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let effects = app.take_effects();
    assert!(
        matches!(&effects[..], [Effect::OpenProject(p), Effect::StartSync { project, dir, mode: Some(Mode::OneWaySafe) }]
            if p.id == "demo" && project == "demo" && dir == std::path::Path::new("/home/u/work")),
        "{effects:?}"
    );
}

#[test]
fn syncing_the_whole_home_directory_asks_first() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/".into());
    let mut app = ide();
    key(&mut app, KeyCode::F(4));
    key_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
    type_text(&mut app, "~");
    key(&mut app, KeyCode::Enter);
    assert!(app.take_effects().is_empty(), "nothing started before the answer");
    let lines = screen(&mut app, 120, 36);
    assert!(
        shows(&lines, &format!("Sync all of {home} with the sandbox?")),
        "{lines:#?}"
    );
    key(&mut app, KeyCode::Char('n'));
    assert!(app.take_effects().is_empty());
    key(&mut app, KeyCode::F(4));
    key_with(&mut app, KeyCode::Char('u'), KeyModifiers::CONTROL);
    type_text(&mut app, "/");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('y'));
    recall(&mut app, None);
    key(&mut app, KeyCode::Enter);
    let effects = app.take_effects();
    assert!(
        matches!(&effects[..], [Effect::StartSync { dir, .. }] if dir == std::path::Path::new("/")),
        "{effects:?}"
    );
}
