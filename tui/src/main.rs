use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use cloudcode_tui::api::ApiClient;
use cloudcode_tui::app::{App, Effect, Input};
use cloudcode_tui::remote::{ControlPlane, Session, Update};
use cloudcode_tui::settings::{LocalServer, Origin, Server};
use cloudcode_tui::sync::reconcile::Mode;
use cloudcode_tui::sync::task::{SyncTask, Update as SyncUpdate};
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, EventStream,
};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

/// cloudcode-tui: a cloud IDE in your terminal.
///
/// With no server given it finds the local cloudcode server, or starts one
/// (`cloudcode-server` next to this binary) on the embedded defaults. A
/// remote server is `--server URL --token TOKEN`, the variables below, or
/// the same `CLOUDCODE_NAME=value` lines in `tui.env` in your config
/// directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The control plane's URL, e.g. https://cloudcode.example.com.
    #[arg(long, env = "CLOUDCODE_SERVER_URL")]
    server: Option<String>,
    /// The control plane's API token.
    #[arg(long, env = "CLOUDCODE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Open this project straight away.
    #[arg(long)]
    project: Option<String>,
    /// Keep this local folder and the project's sandbox equal while the IDE
    /// is open (as `cloudcode-tui sync DIR` does); F4 shows its conflicts.
    #[arg(long, value_name = "DIR")]
    sync: Option<std::path::PathBuf>,
    /// How `--sync` syncs (F4 and `s` ask) [default: the mode the folder
    /// last synced with the project in, else two-way-safe].
    #[arg(long, value_enum, value_name = "MODE", requires = "sync")]
    sync_mode: Option<Mode>,
    /// Leave the mouse to the terminal (its own selection and copy), and
    /// use the keyboard only.
    #[arg(long, env = "CLOUDCODE_TUI_NO_MOUSE")]
    no_mouse: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Keep a local folder and a project's sandbox equal: work with your own
    /// editor and tools, and the sandbox's terminals, Run and preview see
    /// every save.
    Sync(cloudcode_tui::sync::run::SyncArgs),
}

fn main() -> anyhow::Result<()> {
    // The config file fills in what neither flags nor environment set.
    if let Some(dirs) = cloudcode_tui::settings::project_dirs() {
        for (name, value) in cloudcode_tui::settings::read_env_file(&dirs.config_dir().join("tui.env"))? {
            if std::env::var_os(&name).is_none() {
                // SAFETY: single-threaded here: no runtime has started yet.
                unsafe { std::env::set_var(name, value) };
            }
        }
    }
    let mut args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Some(Command::Sync(sync)) = args.command.take() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let code = runtime.block_on(sync_folder(args, sync))?;
        std::process::exit(code);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        "cloudcode-tui draws in a terminal: run it in one"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn find_server(args: &Args) -> anyhow::Result<Server> {
    match (&args.server, &args.token) {
        (Some(url), Some(token)) => {
            let api = ApiClient::new(url, token)?;
            api.check().await.with_context(|| format!("connecting to {url}"))?;
            Ok(Server {
                api,
                origin: Origin::Configured,
            })
        }
        (Some(_), None) => anyhow::bail!("--server needs --token (or CLOUDCODE_API_TOKEN)"),
        (None, _) => LocalServer::from_env()?.find_or_start().await,
    }
}

async fn sync_folder(args: Args, sync: cloudcode_tui::sync::run::SyncArgs) -> anyhow::Result<i32> {
    use cloudcode_tui::sync::run::{DirectRunner, Stdout, run};
    let mut report = Stdout;
    match (&sync.runner_url, &sync.runner_token) {
        (Some(url), Some(token)) => {
            let dialer = DirectRunner {
                url: url.clone(),
                token: token.clone(),
            };
            run(sync, &dialer, &mut report).await
        }
        _ => {
            let server = find_server(&args).await?;
            let dialer = ControlPlane {
                api: server.api,
                project: sync.project.clone(),
            };
            run(sync, &dialer, &mut report).await
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    eprintln!("cloudcode-tui: connecting…");
    let server = find_server(&args).await?;
    let mut app = App::new(server.api.base().to_string());
    app.open_on_start = args.project.clone();
    app.sync_on_start = args.sync.clone().map(|dir| (dir, args.sync_mode));
    app.default_sync_dir = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if let Origin::StartedLocal { pid, log } = &server.origin {
        app.notify(format!(
            "started a local server (pid {pid}, log {}); it keeps running after you quit",
            log.display()
        ));
    }
    let mut screen = Screen::enter(!args.no_mouse)?;
    let result = event_loop(&mut app, &mut screen, server.api).await;
    drop(screen);
    result
}

/// The user's terminal in raw mode on the alternate screen; put back as it
/// was on drop, on error and on panic.
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
    mouse: bool,
}

impl Screen {
    fn enter(mouse: bool) -> anyhow::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal(true);
            previous(info);
        }));
        crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let mut stdout = std::io::stdout();
        crossterm::execute!(stdout, EnterAlternateScreen, EnableBracketedPaste)?;
        if mouse {
            crossterm::execute!(stdout, EnableMouseCapture)?;
        }
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        Ok(Self { terminal, mouse })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal(self.mouse);
        let _ = self.terminal.show_cursor();
    }
}

fn restore_terminal(mouse: bool) {
    let mut stdout = std::io::stdout();
    if mouse {
        let _ = crossterm::execute!(stdout, DisableMouseCapture);
    }
    let _ = crossterm::execute!(
        stdout,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = crossterm::terminal::disable_raw_mode();
}

/// Most inputs handled before one redraw: a burst of terminal output is
/// drawn once, not once per frame of it.
const BATCH: usize = 256;

/// How long a quitting TUI waits for its folder sync to write its state.
const SYNC_STOP_PATIENCE: Duration = Duration::from_secs(5);

async fn event_loop(app: &mut App, screen: &mut Screen, api: ApiClient) -> anyhow::Result<()> {
    let mut sync: Option<(u64, SyncTask)> = None;
    let result = ui_loop(app, screen, api, &mut sync).await;
    // The sync writes its state before the TUI goes.
    if let Some((_, task)) = sync.take() {
        task.stop(SYNC_STOP_PATIENCE).await;
    }
    result
}

async fn ui_loop(
    app: &mut App,
    screen: &mut Screen,
    api: ApiClient,
    sync: &mut Option<(u64, SyncTask)>,
) -> anyhow::Result<()> {
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
    let (session_tx, mut session_updates) = mpsc::unbounded_channel::<(u64, Update)>();
    let mut session: Option<(u64, Session)> = None;
    let mut generation = 0u64;
    let (sync_tx, mut sync_updates) = mpsc::unbounded_channel::<(u64, SyncUpdate)>();
    let mut sync_generation = 0u64;
    let sync_state_dir = std::env::var_os("CLOUDCODE_SYNC_STATE_DIR").map(std::path::PathBuf::from);
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // Drawn after something happened, not on every tick: an idle TUI
    // costs no CPU.
    let mut dirty = true;
    loop {
        if std::mem::take(&mut dirty) {
            screen.terminal.draw(|frame| cloudcode_tui::view::draw(app, frame))?;
        }
        dirty = true;
        let mut handled = 0;
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => app.handle(Input::Terminal(event)),
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => return Ok(()),
            },
            Some(input) = inputs.recv() => app.handle(input),
            Some((from, update)) = session_updates.recv() => {
                if session.as_ref().is_some_and(|(current, _)| *current == from) {
                    app.handle(Input::Session(update));
                }
            }
            Some((from, update)) = sync_updates.recv() => {
                if sync.as_ref().is_some_and(|(current, _)| *current == from) {
                    if matches!(update, SyncUpdate::Ended(_)) {
                        *sync = None;
                    }
                    app.handle(Input::Sync(update));
                }
            }
            _ = tick.tick() => {
                dirty = app.changes_with_time();
                app.expire_notice();
            }
            _ = terminate.recv() => app.quit = true,
            _ = hangup.recv() => app.quit = true,
        }
        // Take whatever else is already waiting before drawing again.
        while handled < BATCH {
            handled += 1;
            if let Ok((from, update)) = session_updates.try_recv() {
                if session.as_ref().is_some_and(|(current, _)| *current == from) {
                    app.handle(Input::Session(update));
                }
            } else if let Ok(input) = inputs.try_recv() {
                app.handle(input);
            } else {
                break;
            }
        }
        for effect in app.take_effects() {
            match effect {
                Effect::ListProjects => {
                    let (api, tx) = (api.clone(), inputs_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Input::Projects(api.list().await));
                    });
                }
                Effect::CreateProject { id, language } => {
                    let (api, tx) = (api.clone(), inputs_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Input::Created(api.create(&id, &language).await));
                    });
                }
                Effect::DeleteProject(id) => {
                    let (api, tx) = (api.clone(), inputs_tx.clone());
                    tokio::spawn(async move {
                        let result = api.delete(&id).await;
                        let _ = tx.send(Input::Deleted { id, result });
                    });
                }
                Effect::OpenProject(project) => {
                    generation += 1;
                    let (handle, mut updates) = Session::spawn(ControlPlane {
                        api: api.clone(),
                        project: project.id,
                    });
                    let (tx, id) = (session_tx.clone(), generation);
                    tokio::spawn(async move {
                        while let Some(update) = updates.recv().await {
                            if tx.send((id, update)).is_err() {
                                return;
                            }
                        }
                    });
                    session = Some((generation, handle));
                }
                Effect::CloseProject => session = None,
                Effect::StartSync { project, dir, mode } => {
                    sync_generation += 1;
                    let args = cloudcode_tui::sync::task::args(dir, project.clone(), mode, sync_state_dir.clone());
                    let (task, mut updates) = SyncTask::spawn(
                        args,
                        ControlPlane {
                            api: api.clone(),
                            project,
                        },
                    );
                    let (tx, id) = (sync_tx.clone(), sync_generation);
                    tokio::spawn(async move {
                        while let Some(update) = updates.recv().await {
                            if tx.send((id, update)).is_err() {
                                return;
                            }
                        }
                    });
                    // A sync of another project still stopping goes on
                    // stopping on its own.
                    if let Some((_, previous)) = sync.replace((sync_generation, task)) {
                        tokio::spawn(previous.stop(SYNC_STOP_PATIENCE));
                    }
                }
                Effect::RecallSyncMode { project, dir } => {
                    let (tx, state_dir) = (inputs_tx.clone(), sync_state_dir.clone());
                    // A state file can be megabytes: read off the UI loop.
                    tokio::task::spawn_blocking(move || {
                        let mode = cloudcode_tui::sync::state::state_dir(state_dir.as_deref())
                            .and_then(|data| cloudcode_tui::sync::state::remembered_mode(&data, &project, &dir));
                        let _ = tx.send(Input::SyncModeRecalled { dir, mode });
                    });
                }
                Effect::Sync(control) => {
                    if let Some((_, task)) = sync.as_ref() {
                        task.send(control);
                    }
                }
                Effect::Session(command) => {
                    if let Some((_, session)) = &session {
                        session.send(command);
                    }
                }
                Effect::OpenUrl(url) => {
                    if let Err(e) = open_in_browser(&url) {
                        app.error(format!("could not open {url}: {e}"));
                    }
                }
                Effect::OpenInBrowser(project) => {
                    let url = api.browser_url(&project);
                    if let Err(e) = open_in_browser(&url) {
                        app.error(format!(
                            "could not open the browser IDE ({e}): {}",
                            api.browser_url_without_token(&project)
                        ));
                    }
                }
                Effect::Copy(text) => {
                    // OSC 52: the user's terminal puts it on the clipboard,
                    // even over ssh.
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    let mut stdout = std::io::stdout();
                    let _ = write!(stdout, "\x1b]52;c;{encoded}\x07");
                    let _ = stdout.flush();
                }
            }
        }
        if app.quit {
            return Ok(());
        }
    }
}

fn open_in_browser(url: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}
