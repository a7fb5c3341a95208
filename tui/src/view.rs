//! Drawing: the project list, the IDE, the status bar, dialogs and help.
//! Only named ANSI colours and reverse video are used, so every screen reads
//! on light and dark terminals alike.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Wrap};

use crate::app::{App, Focus, Ide, LANGUAGES, Modal, SyncPane};
use crate::highlight::Language;
use crate::keymap::KEYMAP;
use crate::remote::Connection;
use crate::sync::conflicts::{Conflict, Content, DiffTag};
use crate::sync::reconcile::{Mode, Side};
use crate::sync::report::Phase;

pub fn draw(app: &mut App, frame: &mut Frame) {
    let area = frame.area();
    if app.size != area {
        app.resized(area);
    }
    if app.ide.is_some() {
        draw_ide(app, frame);
    } else {
        draw_projects(app, frame);
    }
    if let Some(modal) = &app.modal {
        draw_modal(modal, frame);
    }
    if app.help {
        draw_help(frame);
    }
}

fn pane_block(title: Line<'_>, focused: bool) -> Block<'_> {
    let style = if focused {
        Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(style)
        .title(title)
}

/// Where the rows of the project list are drawn.
pub fn project_list_area(size: Rect) -> Rect {
    let outer = centered(size, 70, 20);
    Rect::new(
        outer.x + 2,
        outer.y + 2,
        outer.width.saturating_sub(4),
        outer.height.saturating_sub(5),
    )
}

fn draw_projects(app: &App, frame: &mut Frame) {
    let size = frame.area();
    let outer = centered(size, 70, 20);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .title(Line::from(vec![
            Span::styled(" cloudcode ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("· projects on {} ", app.server)),
        ]));
    frame.render_widget(Clear, outer);
    frame.render_widget(block, outer);
    let list = project_list_area(size);
    let projects = &app.projects;
    if projects.projects.is_empty() {
        let text = if projects.loading {
            "loading…"
        } else {
            "No projects yet. Press n to create one."
        };
        frame.render_widget(Paragraph::new(text).alignment(Alignment::Center), list);
    }
    let visible = list.height as usize;
    let top = projects.selected.saturating_sub(visible.saturating_sub(1));
    for (row, project) in projects.projects.iter().enumerate().skip(top).take(visible) {
        let y = list.y + (row - top) as u16;
        let selected = row == projects.selected;
        let style = if selected {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default()
        };
        let marker = if selected { "▶ " } else { "  " };
        let line = Line::from(vec![
            Span::styled(format!("{marker}{:<40}", project.id), style),
            Span::styled(format!(" {}", project.language), Style::default().fg(Color::DarkGray)),
        ]);
        frame.render_widget(Paragraph::new(line), Rect::new(list.x, y, list.width, 1));
    }
    let keys = "Enter open · s open synced · n new · d delete · r refresh · q quit";
    let footer = Rect::new(
        outer.x + 2,
        outer.bottom().saturating_sub(2),
        outer.width.saturating_sub(4),
        1,
    );
    frame.render_widget(
        Paragraph::new(keys)
            .style(Style::default().fg(Color::DarkGray))
            .alignment(Alignment::Center),
        footer,
    );
    if let Some((text, error)) = app.current_notice() {
        let style = if error {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        let line = Rect::new(0, size.bottom().saturating_sub(1), size.width, 1.min(size.height));
        frame.render_widget(Paragraph::new(text).style(style), line);
    }
}

/// Titles drawn as ` a │ b │ c `, starting at `x0`.
fn titles_line(titles: &[String], active: usize, focused: bool) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, title) in titles.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled("│", Style::default().fg(Color::DarkGray)));
        }
        let style = if i == active {
            let style = Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED);
            if focused { style.fg(Color::Cyan) } else { style }
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!(" {title} "), style));
    }
    Line::from(spans)
}

/// Which title of [`titles_line`] (drawn at `x0`) is at `column`.
pub fn title_hit(x0: u16, titles: &[String], column: u16) -> Option<usize> {
    let mut x = x0;
    for (i, title) in titles.iter().enumerate() {
        if i > 0 {
            x += 1;
        }
        let width = unicode_width::UnicodeWidthStr::width(title.as_str()) as u16 + 2;
        if column >= x && column < x + width {
            return Some(i);
        }
        x += width;
    }
    None
}

fn draw_ide(app: &mut App, frame: &mut Frame) {
    let Some(layout) = app.layout() else { return };
    let notice = app.current_notice().map(|(t, e)| (t.to_string(), e));
    let Some(ide) = app.ide.as_mut() else { return };
    let mut cursor = None;

    // The file tree.
    let tree_focused = ide.focus == Focus::Tree;
    let block = pane_block(Line::from(format!(" {} ", ide.project.id)), tree_focused);
    let inner = block.inner(layout.tree);
    frame.render_widget(block, layout.tree);
    ide.tree.scroll_into_view(inner.height as usize);
    let top = ide.tree.top;
    let selected = ide.tree.selected;
    for (i, row) in ide.tree.rows().iter().enumerate().skip(top).take(inner.height as usize) {
        let icon = match (&row.kind, row.expanded) {
            (cloudcode_proto::message::EntryKind::Dir, true) => "▾ ",
            (cloudcode_proto::message::EntryKind::Dir, false) => "▸ ",
            (cloudcode_proto::message::EntryKind::Symlink, _) => "↪ ",
            _ => "  ",
        };
        let mut style = match row.kind {
            cloudcode_proto::message::EntryKind::Dir => Style::default().fg(Color::Blue).add_modifier(Modifier::BOLD),
            _ => Style::default(),
        };
        if i == selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let text = format!("{}{icon}{}", "  ".repeat(row.depth), row.name);
        let y = inner.y + (i - top) as u16;
        frame.render_widget(
            Paragraph::new(Span::styled(text, style)),
            Rect::new(inner.x, y, inner.width, 1),
        );
    }
    if ide.tree.rows().is_empty() {
        let text = match ide.connection {
            Connection::Connected { .. } => "(empty)",
            _ => "connecting…",
        };
        frame.render_widget(Paragraph::new(text).style(Style::default().fg(Color::DarkGray)), inner);
    }

    // The editor.
    let editor_focused = ide.focus == Focus::Editor;
    let titles: Vec<String> = ide.editor.tabs.iter().map(|b| b.title()).collect();
    let title = if titles.is_empty() {
        Line::from(" editor ")
    } else {
        titles_line(&titles, ide.editor.active, editor_focused)
    };
    frame.render_widget(pane_block(title, editor_focused), layout.editor);
    let search = ide.editor.search.clone();
    match ide.editor.current() {
        Some(buffer) => {
            let at = buffer.render(layout.editor_inner, frame.buffer_mut(), search.as_deref());
            if editor_focused {
                cursor = at;
            }
        }
        None => {
            let text = "Open a file from the tree with Enter, or click it. F1 lists every key.";
            frame.render_widget(
                Paragraph::new(text)
                    .style(Style::default().fg(Color::DarkGray))
                    .wrap(Wrap { trim: true }),
                layout.editor_inner,
            );
        }
    }

    // The terminals.
    let terminal_focused = ide.focus == Focus::Terminal;
    let titles: Vec<String> = ide.terms.iter().enumerate().map(|(i, t)| t.title(i)).collect();
    let title = if titles.is_empty() {
        Line::from(" terminal ")
    } else {
        titles_line(&titles, ide.active_term, terminal_focused)
    };
    frame.render_widget(pane_block(title, terminal_focused), layout.terminal);
    match ide.terms.get(ide.active_term) {
        Some(pane) => {
            let at = pane.render(layout.terminal_inner, frame.buffer_mut());
            if terminal_focused && matches!(ide.connection, Connection::Connected { .. }) {
                cursor = at;
            }
            if let Some(reason) = pane.lost {
                // Its last screen stays readable above the notice.
                let label = format!(" this terminal ended: {reason}. F6 opens a new one ");
                let inner = layout.terminal_inner;
                let width = (label.chars().count() as u16).min(inner.width);
                frame.render_widget(
                    Paragraph::new(label).style(Style::default().fg(Color::Yellow).add_modifier(Modifier::REVERSED)),
                    Rect::new(inner.x, inner.bottom().saturating_sub(1), width, 1.min(inner.height)),
                );
            }
            if pane.scrolled_back() {
                let label = format!(
                    " scrolled back {} lines (Shift-PageDown) ",
                    pane.parser.screen().scrollback()
                );
                let width = (label.len() as u16).min(layout.terminal_inner.width);
                let x = layout.terminal_inner.right().saturating_sub(width);
                frame.render_widget(
                    Paragraph::new(label).style(Style::default().add_modifier(Modifier::REVERSED)),
                    Rect::new(x, layout.terminal_inner.y, width, 1.min(layout.terminal_inner.height)),
                );
            }
        }
        None => {
            frame.render_widget(
                Paragraph::new("No terminal: F6 opens one, F5 runs the project.")
                    .style(Style::default().fg(Color::DarkGray)),
                layout.terminal_inner,
            );
        }
    }
    if !matches!(ide.connection, Connection::Connected { .. }) && !ide.terms.is_empty() {
        let label = " disconnected: the screen resumes on reconnect ";
        let width = (label.chars().count() as u16).min(layout.terminal_inner.width);
        frame.render_widget(
            Paragraph::new(label).style(Style::default().fg(Color::Yellow).add_modifier(Modifier::REVERSED)),
            Rect::new(
                layout.terminal_inner.x,
                layout.terminal_inner.y,
                width,
                1.min(layout.terminal_inner.height),
            ),
        );
    }

    if let Some(sync) = ide.sync.as_ref().filter(|s| s.open) {
        // Over the editor and the terminal: the tree stays in view.
        let area = Rect::new(
            layout.editor.x,
            layout.editor.y,
            layout.editor.width,
            layout.terminal.bottom().saturating_sub(layout.editor.y),
        );
        draw_sync_view(sync, &ide.project.id, area, frame);
        cursor = None;
    }
    draw_status(ide, notice, layout.status, frame);
    if let Some(at) = cursor
        && app.modal.is_none()
        && !app.help
    {
        frame.set_cursor_position(at);
    }
}

/// Which way a sync carries changes: both ways, or from the folder only.
fn direction(mode: Mode) -> &'static str {
    if mode.one_way() { "→" } else { "⇅" }
}

/// The sync's state for the status bar, and its style.
fn sync_status(sync: &SyncPane, bar: Style) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let (text, style) = match (&sync.status.phase, &sync.ended) {
        (_, Some(Err(_))) => (
            "sync failed (F4)".to_string(),
            bar.fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (_, Some(Ok(()))) | (Phase::Stopped, _) => ("sync stopped".to_string(), bar.fg(Color::DarkGray)),
        (Phase::Starting, _) => ("sync: reading…".to_string(), bar.fg(Color::Yellow)),
        (Phase::Reconciling, _) => ("sync: reconciling…".to_string(), bar.fg(Color::Yellow)),
        (Phase::Reconnecting, _) => ("sync: reconnecting…".to_string(), bar.fg(Color::Yellow)),
        (Phase::Held { .. }, _) => (
            "sync held: F4 to decide".to_string(),
            bar.fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (Phase::Watching, _) if sync.status.pending > 0 => {
            (format!("{} pending", sync.status.pending), bar.fg(Color::Yellow))
        }
        (Phase::Watching, _) => (
            format!("watching{}", if sync.status.polling { " (polling)" } else { "" }),
            bar.fg(Color::Green),
        ),
    };
    // The default is said by the arrow alone; a one-way mode by name.
    let mode = if sync.status.mode.one_way() {
        format!(" · {}", sync.status.mode.name())
    } else {
        String::new()
    };
    spans.push(Span::styled(
        format!("{} {text}{mode}", direction(sync.status.mode)),
        style,
    ));
    if !sync.conflicts.is_empty() {
        let n = sync.conflicts.len();
        spans.push(Span::styled(
            format!(" ⚠ {n} conflict{} (F4)", if n == 1 { "" } else { "s" }),
            bar.fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::styled(" │ ", bar));
    spans
}

fn draw_sync_view(sync: &SyncPane, project: &str, area: Rect, frame: &mut Frame) {
    frame.render_widget(Clear, area);
    let arrow = if sync.status.mode.one_way() { "→" } else { "⇄" };
    let title = format!(
        " sync · {} {arrow} {project} · {} · Esc closes ",
        sync.dir.display(),
        sync.status.mode.name()
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(Style::default().fg(Color::Cyan))
        .title(Span::styled(title, Style::default().add_modifier(Modifier::BOLD)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let list_height = (sync.conflicts.len().max(1) as u16 + 1).min(inner.height / 3).max(2);
    let rows = Layout::vertical([
        Constraint::Length(list_height),
        Constraint::Min(3),
        Constraint::Length(4),
        Constraint::Length(1),
    ])
    .split(inner);
    let dim = Style::default().fg(Color::DarkGray);
    let bold = Style::default().add_modifier(Modifier::BOLD);

    // The conflicts, one a line.
    let mut lines = vec![Line::from(Span::styled(
        match sync.conflicts.len() {
            0 => "No conflicts: both sides agree.".to_string(),
            1 => "1 conflict: changed in the folder and in the sandbox".to_string(),
            n => format!("{n} conflicts: changed in the folder and in the sandbox"),
        },
        bold,
    ))];
    let visible = rows[0].height.saturating_sub(1) as usize;
    let top = sync.selected.saturating_sub(visible.saturating_sub(1));
    for (i, conflict) in sync.conflicts.iter().enumerate().skip(top).take(visible) {
        let style = if i == sync.selected {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default()
        };
        let other = match conflict.copy_from {
            Side::Remote => "the sandbox's",
            Side::Local => "the folder's",
        };
        lines.push(Line::from(vec![
            Span::styled(format!(" {} ", conflict.path), style),
            Span::styled(format!("  {other} version is in {}", conflict.copy), dim),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), rows[0]);

    // The chosen conflict's diff.
    let diff_block = Block::default().borders(Borders::TOP).border_style(dim);
    let diff_area = diff_block.inner(rows[1]);
    frame.render_widget(diff_block, rows[1]);
    if let Some(conflict) = sync.selected_conflict() {
        frame.render_widget(
            Paragraph::new(diff_text(conflict, sync.scroll, diff_area.height)),
            diff_area,
        );
    }

    // The latest lines of the sync.
    let log_block = Block::default()
        .borders(Borders::TOP)
        .border_style(dim)
        .title(" activity ");
    let log_area = log_block.inner(rows[2]);
    frame.render_widget(log_block, rows[2]);
    let shown = log_area.height as usize;
    let log: Vec<Line> = sync
        .log
        .iter()
        .skip(sync.log.len().saturating_sub(shown))
        .map(|(text, warn)| {
            let style = if *warn { Style::default().fg(Color::Red) } else { dim };
            Line::from(Span::styled(text.clone(), style))
        })
        .collect();
    frame.render_widget(Paragraph::new(log), log_area);

    let help = if sync.running() {
        "↑↓ choose · l keep local · r keep remote · b keep both · PgUp PgDn scroll · S stop · Esc close"
    } else {
        "the sync has stopped: F4 starts it again · Esc close"
    };
    frame.render_widget(Paragraph::new(help).style(dim), rows[3]);
}

fn diff_text(conflict: &Conflict, scroll: usize, height: u16) -> Vec<Line<'static>> {
    let remote = Style::default().fg(Color::Red);
    let local = Style::default().fg(Color::Green);
    let mut lines = vec![
        Line::from(Span::styled(format!("--- sandbox  {}", conflict.remote_path()), remote)),
        Line::from(Span::styled(format!("+++ folder   {}", conflict.local_path()), local)),
    ];
    let describe = |content: &Content| match content {
        Content::Text(_) => None,
        Content::Binary { size } => Some(format!("binary, {size} bytes")),
        Content::TooLarge { size } => Some(format!("{size} bytes: too large to show")),
        Content::Link { target } => Some(format!("a link to {target}")),
        Content::Dir => Some("a directory".to_string()),
        Content::Missing => Some("gone".to_string()),
        Content::Unreadable(why) => Some(format!("unreadable: {why}")),
    };
    match (describe(&conflict.remote), describe(&conflict.local)) {
        (None, None) => {
            let body = height.saturating_sub(2) as usize;
            for line in conflict.diff.iter().skip(scroll).take(body) {
                let (mark, style) = match line.tag {
                    DiffTag::Same => (' ', Style::default()),
                    DiffTag::Remote => ('-', remote),
                    DiffTag::Local => ('+', local),
                };
                lines.push(Line::from(Span::styled(format!("{mark} {}", line.text), style)));
            }
        }
        (r, l) => {
            let text = |c: Option<String>| c.unwrap_or_else(|| "text".to_string());
            lines.push(Line::from(Span::styled(
                format!("- the sandbox's: {}", text(r)),
                remote,
            )));
            lines.push(Line::from(Span::styled(format!("+ the folder's: {}", text(l)), local)));
        }
    }
    lines
}

fn draw_status(ide: &Ide, notice: Option<(String, bool)>, area: Rect, frame: &mut Frame) {
    let bar = Style::default().add_modifier(Modifier::REVERSED);
    let (connection, connection_style) = match &ide.connection {
        Connection::Connected { .. } => ("● connected".to_string(), bar.fg(Color::Green)),
        Connection::Connecting { attempt } if *attempt <= 1 => ("○ connecting…".to_string(), bar.fg(Color::Yellow)),
        Connection::Connecting { attempt } => (format!("○ reconnecting (try {attempt})…"), bar.fg(Color::Yellow)),
        Connection::Lost { retry_in, .. } => (
            format!("✕ disconnected; retry in {:.1}s", retry_in.as_secs_f32()),
            bar.fg(Color::Red),
        ),
    };
    // Why the connection was lost can be a long sentence (a URL in it): it
    // goes after the save state, so it never pushes "NOT SAVED" off a
    // narrow bar.
    let lost_because = match &ide.connection {
        Connection::Lost { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    // Most important first: a narrow terminal cuts the bar from the right.
    let mut spans = vec![
        Span::styled(" F1 help │ ", bar),
        Span::styled(format!("{} ", ide.project.id), bar.add_modifier(Modifier::BOLD)),
        Span::styled(format!("{} │ ", ide.project.language), bar),
        Span::styled(connection, connection_style),
        Span::styled(" │ ", bar),
    ];
    if let Some(sync) = &ide.sync {
        spans.extend(sync_status(sync, bar));
    }
    // Saves are acknowledged only once durable: while storage fails they
    // wait, and the user should know why.
    if let Some(storage) = ide.storage.as_ref().filter(|s| !s.healthy) {
        spans.push(Span::styled(
            format!("⚠ storage unavailable, {} change(s) waiting", storage.pending),
            bar.fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::styled(" │ ", bar));
    }
    if let Some(buffer) = ide.editor.current_ref() {
        let state_style = match buffer.state {
            crate::editor::SaveState::Saved => bar,
            crate::editor::SaveState::Conflict { .. } | crate::editor::SaveState::Failed(_) => bar.fg(Color::Red),
            _ => bar.fg(Color::Yellow),
        };
        let ratatui_textarea::DataCursor(row, col) = buffer.textarea.cursor();
        spans.push(Span::styled(format!("{} ", buffer.path), bar));
        spans.push(Span::styled(buffer.state_label(), state_style));
        let language = if buffer.language == Language::Plain {
            String::new()
        } else {
            format!(" {}", buffer.language.name())
        };
        spans.push(Span::styled(format!(" {}:{}{language} │ ", row + 1, col + 1), bar));
    }
    if let Some(reason) = lost_because {
        spans.push(Span::styled(format!("{reason} │ "), bar.fg(Color::Red)));
    }
    if let Some((text, error)) = notice {
        let style = if error {
            bar.fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            bar
        };
        spans.push(Span::styled(format!("{text} │ "), style));
    }
    if let Some(url) = &ide.preview_url {
        spans.push(Span::styled(format!("F7 preview {url}"), bar));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

fn draw_modal(modal: &Modal, frame: &mut Frame) {
    if let Modal::ChooseSyncMode { dir, selected } = modal {
        return draw_choose_sync_mode(dir, *selected, frame);
    }
    let area = centered(frame.area(), 64, 8);
    let inner = modal_box(area, frame);
    let rows = Layout::vertical([Constraint::Length(3), Constraint::Length(1), Constraint::Min(0)]).split(inner);
    match modal {
        Modal::Prompt { title, text, .. } => {
            frame.render_widget(
                Paragraph::new(title.as_str())
                    .style(Style::default().add_modifier(Modifier::BOLD))
                    .wrap(Wrap { trim: true }),
                rows[0],
            );
            frame.render_widget(
                Paragraph::new(text.as_str()).style(Style::default().add_modifier(Modifier::UNDERLINED)),
                rows[1],
            );
            let x = rows[1].x + (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16).min(rows[1].width);
            frame.set_cursor_position((x, rows[1].y));
            frame.render_widget(
                Paragraph::new("Enter confirm · Esc cancel").style(Style::default().fg(Color::DarkGray)),
                rows[2],
            );
        }
        Modal::ChooseLanguage { id, selected } => {
            frame.render_widget(
                Paragraph::new(format!("Language for {id}")).style(Style::default().add_modifier(Modifier::BOLD)),
                rows[0],
            );
            let mut spans = Vec::new();
            for (i, language) in LANGUAGES.iter().enumerate() {
                let style = if i == *selected {
                    Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
                } else {
                    Style::default()
                };
                spans.push(Span::styled(format!(" {language} "), style));
                spans.push(Span::raw("  "));
            }
            frame.render_widget(Paragraph::new(Line::from(spans)), rows[1]);
            frame.render_widget(
                Paragraph::new("←/→ choose · Enter create · Esc cancel").style(Style::default().fg(Color::DarkGray)),
                rows[2],
            );
        }
        Modal::Confirm { message, .. } => {
            frame.render_widget(
                Paragraph::new(message.as_str())
                    .style(Style::default().add_modifier(Modifier::BOLD))
                    .wrap(Wrap { trim: true }),
                rows[0],
            );
            frame.render_widget(Paragraph::new("y yes · n no"), rows[2]);
        }
        Modal::ChooseSyncMode { .. } => {}
    }
}

/// A modal's frame over whatever is below it; returns the space inside.
fn modal_box(area: Rect, frame: &mut Frame) -> Rect {
    frame.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .border_style(Style::default().fg(Color::Yellow));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    inner
}

fn draw_choose_sync_mode(dir: &std::path::Path, selected: Mode, frame: &mut Frame) {
    let modes = Mode::all();
    let area = centered(frame.area(), 84, modes.len() as u16 + 6);
    let inner = modal_box(area, frame);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let name_width = modes.iter().map(|m| m.name().len()).max().unwrap_or(0);
    let mut lines = vec![
        Line::from(Span::styled(
            format!("Sync {} with the sandbox: how?", dir.display()),
            bold,
        )),
        Line::default(),
    ];
    for mode in modes {
        let style = if *mode == selected {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::default()
        };
        lines.push(Line::from(vec![
            Span::styled(format!(" {} {:<name_width$} ", direction(*mode), mode.name()), style),
            Span::raw(format!("  {}", mode.summary())),
        ]));
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        "↑↓ choose · Enter start · Esc cancel",
        Style::default().fg(Color::DarkGray),
    )));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_help(frame: &mut Frame) {
    let sections = KEYMAP.windows(2).filter(|w| w[0].section != w[1].section).count() + 1;
    let area = centered(frame.area(), 84, (KEYMAP.len() + sections) as u16 + 2);
    frame.render_widget(Clear, area);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Double)
        .title(" keys · Esc closes ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let keys_width = KEYMAP
        .iter()
        .map(|b| unicode_width::UnicodeWidthStr::width(b.keys))
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    let mut section = "";
    for binding in KEYMAP {
        if binding.section != section {
            section = binding.section;
            lines.push(Line::from(Span::styled(
                section,
                Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            )));
        }
        lines.push(Line::from(vec![
            Span::styled(
                format!("  {:<width$} ", binding.keys, width = keys_width),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(binding.action),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}
