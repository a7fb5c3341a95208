//! Open files: one [`Buffer`] per tab, editing through ratatui-textarea
//! (cursor, selection, undo/redo, search), drawn by our own view so it can
//! carry syntax highlighting and line numbers.

use cloudcode_proto::path::WorkspacePath;
use ratatui::buffer::Buffer as Cells;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui_textarea::{CursorMove, TextArea};
use unicode_width::UnicodeWidthChar;

use crate::highlight::{self, Carry, Kind, Language};

/// Larger files are refused: the editor keeps the whole file in memory and
/// redraws it on every keystroke.
pub const MAX_EDITABLE_BYTES: usize = 4 * 1024 * 1024;
const TAB_WIDTH: usize = 4;

/// Why a file cannot be opened in the editor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unopenable {
    #[error("{path} is {size} bytes; the editor opens files up to {max} bytes (use a terminal)", max = MAX_EDITABLE_BYTES)]
    TooLarge { path: String, size: usize },
    #[error("{path} is a binary file; the editor opens text only (use a terminal)")]
    Binary { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveState {
    /// Identical to what is durable in storage.
    Saved,
    Modified,
    /// A save of `revision` is on its way.
    Saving {
        revision: u64,
    },
    /// The file changed in the sandbox while this buffer had edits of its
    /// own; `theirs` is the sandbox's version.
    Conflict {
        theirs: String,
    },
    Failed(String),
}

pub struct Buffer {
    pub path: WorkspacePath,
    pub language: Language,
    pub textarea: TextArea<'static>,
    /// The storage version the buffer's content is based on.
    pub base_version: Option<String>,
    pub state: SaveState,
    /// Bumped on every change to the text.
    pub revision: u64,
    saved_revision: u64,
    crlf: bool,
    trailing_newline: bool,
    /// Top line and left column of the view.
    top: usize,
    left: usize,
    /// What each line leaves open for the next, valid for `carries_revision`.
    carries: Vec<Carry>,
    carries_revision: u64,
    /// An FsChanged arrived while saving: look again once the save lands.
    pub recheck_after_save: bool,
}

/// Checks that `data` is text the editor can hold.
pub fn decode(path: &WorkspacePath, data: &[u8]) -> Result<String, Unopenable> {
    if data.len() > MAX_EDITABLE_BYTES {
        return Err(Unopenable::TooLarge {
            path: path.to_string(),
            size: data.len(),
        });
    }
    let binary = || Unopenable::Binary { path: path.to_string() };
    if data.iter().take(8192).any(|b| *b == 0) {
        return Err(binary());
    }
    String::from_utf8(data.to_vec()).map_err(|_| binary())
}

impl Buffer {
    pub fn new(path: WorkspacePath, text: &str, version: String) -> Self {
        let mut buffer = Buffer {
            language: Language::from_path(path.as_str()),
            path,
            textarea: TextArea::default(),
            base_version: Some(version),
            state: SaveState::Saved,
            revision: 0,
            saved_revision: 0,
            crlf: false,
            trailing_newline: false,
            top: 0,
            left: 0,
            carries: Vec::new(),
            carries_revision: u64::MAX,
            recheck_after_save: false,
        };
        buffer.set_text(text);
        buffer
    }

    fn set_text(&mut self, text: &str) {
        self.crlf = text.contains("\r\n");
        self.trailing_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<String> = body
            .split('\n')
            .map(|l| {
                if self.crlf {
                    l.strip_suffix('\r').unwrap_or(l)
                } else {
                    l
                }
                .to_string()
            })
            .collect();
        self.textarea = TextArea::new(lines);
        self.textarea.set_tab_length(TAB_WIDTH as u8);
        self.textarea.set_max_histories(1000);
    }

    /// The file as it will be written.
    pub fn contents(&self) -> String {
        let newline = if self.crlf { "\r\n" } else { "\n" };
        let mut text = self.textarea.lines().join(newline);
        if self.trailing_newline {
            text.push_str(newline);
        }
        text
    }

    pub fn is_modified(&self) -> bool {
        self.revision != self.saved_revision
    }

    /// Records a change made through the textarea.
    pub fn changed(&mut self) {
        self.revision += 1;
        if !matches!(self.state, SaveState::Conflict { .. }) {
            self.state = SaveState::Modified;
        }
    }

    /// Replaces the content with the sandbox's, keeping the cursor where it
    /// was as far as the new text allows.
    pub fn reload(&mut self, text: &str, version: String) {
        let ratatui_textarea::DataCursor(row, col) = self.textarea.cursor();
        self.set_text(text);
        self.textarea.move_cursor(CursorMove::Jump(
            row.min(u16::MAX as usize) as u16,
            col.min(u16::MAX as usize) as u16,
        ));
        self.base_version = Some(version);
        self.revision += 1;
        self.saved_revision = self.revision;
        self.state = SaveState::Saved;
    }

    pub fn begin_save(&mut self) -> (Vec<u8>, Option<String>) {
        self.state = SaveState::Saving {
            revision: self.revision,
        };
        (self.contents().into_bytes(), self.base_version.clone())
    }

    /// A save landed: the saved revision is durable as `version`.
    pub fn saved(&mut self, version: String) {
        if let SaveState::Saving { revision } = self.state {
            self.saved_revision = revision;
        }
        self.base_version = Some(version);
        self.state = if self.is_modified() {
            SaveState::Modified
        } else {
            SaveState::Saved
        };
    }

    pub fn save_failed(&mut self, conflict_with: Option<String>, message: String) {
        self.state = match conflict_with {
            Some(theirs) => SaveState::Conflict { theirs },
            None => SaveState::Failed(message),
        };
    }

    pub fn title(&self) -> String {
        let name = self.path.file_name().unwrap_or("?");
        let mark = match &self.state {
            SaveState::Saved => "",
            SaveState::Modified | SaveState::Failed(_) => " ●",
            SaveState::Saving { .. } => " …",
            SaveState::Conflict { .. } => " !",
        };
        format!("{name}{mark}")
    }

    pub fn state_label(&self) -> String {
        match &self.state {
            SaveState::Saved => "saved".into(),
            SaveState::Modified => "modified".into(),
            SaveState::Saving { .. } => "saving…".into(),
            SaveState::Conflict { .. } => "CONFLICT: changed in the sandbox (Ctrl-S overwrite, Ctrl-R reload)".into(),
            SaveState::Failed(message) => format!("NOT SAVED: {message}"),
        }
    }

    fn refresh_carries(&mut self) {
        if self.carries_revision == self.revision {
            return;
        }
        let lines = self.textarea.lines();
        self.carries.clear();
        let mut carry = Carry::Nothing;
        for line in lines {
            carry = highlight::line(self.language, line, carry).1;
            self.carries.push(carry);
        }
        self.carries_revision = self.revision;
    }

    /// Scrolls by whole lines (mouse wheel), keeping the cursor inside.
    pub fn scroll(&mut self, lines: isize, height: usize) {
        let last = self.textarea.lines().len().saturating_sub(1);
        self.top = (self.top as isize + lines).clamp(0, last as isize) as usize;
        let ratatui_textarea::DataCursor(row, _) = self.textarea.cursor();
        if row < self.top {
            self.textarea
                .move_cursor(CursorMove::Jump(self.top.min(u16::MAX as usize) as u16, 0));
        } else if height > 0 && row >= self.top + height {
            let to = (self.top + height - 1).min(u16::MAX as usize) as u16;
            self.textarea.move_cursor(CursorMove::Jump(to, 0));
        }
    }

    /// Moves the cursor to the text under a click at `(x, y)` inside the
    /// text area the last render drew.
    pub fn click(&mut self, area: Rect, x: u16, y: u16) {
        let gutter = gutter_width(self.textarea.lines().len());
        let row = self.top + (y.saturating_sub(area.y)) as usize;
        let row = row.min(self.textarea.lines().len().saturating_sub(1));
        let column = self.left + x.saturating_sub(area.x + gutter) as usize;
        let line = &self.textarea.lines()[row];
        let col = column_to_char(line, column);
        self.textarea.move_cursor(CursorMove::Jump(
            row.min(u16::MAX as usize) as u16,
            col.min(u16::MAX as usize) as u16,
        ));
    }

    /// Draws the buffer into `area`; returns where the cursor is on screen.
    pub fn render(&mut self, area: Rect, cells: &mut Cells, search: Option<&str>) -> Option<Position> {
        if area.width == 0 || area.height == 0 {
            return None;
        }
        self.refresh_carries();
        let lines = self.textarea.lines();
        let gutter = gutter_width(lines.len());
        let text_width = area.width.saturating_sub(gutter) as usize;
        let height = area.height as usize;
        let ratatui_textarea::DataCursor(cursor_row, cursor_col) = self.textarea.cursor();
        let cursor_x = display_width(&lines[cursor_row], cursor_col);
        // Keep the cursor in view.
        if cursor_row < self.top {
            self.top = cursor_row;
        } else if cursor_row >= self.top + height {
            self.top = cursor_row + 1 - height;
        }
        if cursor_x < self.left {
            self.left = cursor_x;
        } else if text_width > 0 && cursor_x >= self.left + text_width {
            self.left = cursor_x + 1 - text_width;
        }
        let selection = self.textarea.selection_range();
        let number_style = Style::default().fg(Color::DarkGray);
        let mut cursor = None;
        for screen_row in 0..height {
            let row = self.top + screen_row;
            let y = area.y + screen_row as u16;
            let Some(line) = lines.get(row) else { break };
            let number = format!("{:>width$} ", row + 1, width = gutter as usize - 1);
            let style = if row == cursor_row {
                number_style.fg(Color::Reset).add_modifier(Modifier::BOLD)
            } else {
                number_style
            };
            cells.set_stringn(area.x, y, &number, gutter as usize, style);
            let carry = if row == 0 {
                Carry::Nothing
            } else {
                self.carries.get(row - 1).copied().unwrap_or_default()
            };
            let (spans, _) = highlight::line(self.language, line, carry);
            let matches: Vec<(usize, usize)> = match search {
                Some(needle) if !needle.is_empty() => line
                    .match_indices(needle)
                    .map(|(start, m)| (start, start + m.len()))
                    .collect(),
                _ => Vec::new(),
            };
            let mut column = 0usize;
            let mut span = 0usize;
            for (char_index, (byte, ch)) in line.char_indices().enumerate() {
                while span < spans.len() && spans[span].0.end <= byte {
                    span += 1;
                }
                let mut style = match spans.get(span) {
                    Some((range, kind)) if range.contains(&byte) => kind_style(*kind),
                    _ => Style::default(),
                };
                if matches.iter().any(|(s, e)| (*s..*e).contains(&byte)) {
                    style = style.bg(Color::Yellow).fg(Color::Black);
                }
                if let Some(((sr, sc), (er, ec))) = selection {
                    let after_start = (row, char_index) >= (sr, sc);
                    let before_end = (row, char_index) < (er, ec);
                    if after_start && before_end {
                        style = style.add_modifier(Modifier::REVERSED);
                    }
                }
                let (glyph, width) = if ch == '\t' {
                    (' ', TAB_WIDTH - column % TAB_WIDTH)
                } else {
                    (ch, ch.width().unwrap_or(0))
                };
                for part in 0..width {
                    if column >= self.left && column < self.left + text_width {
                        let x = area.x + gutter + (column - self.left) as u16;
                        let cell = &mut cells[(x, y)];
                        if part == 0 || ch == '\t' {
                            cell.set_char(glyph);
                        } else {
                            cell.set_symbol("");
                        }
                        cell.set_style(style);
                    }
                    column += 1;
                }
            }
            if row == cursor_row && cursor_x >= self.left {
                let x = area.x + gutter + (cursor_x - self.left) as u16;
                if x < area.x + area.width {
                    cursor = Some(Position { x, y });
                }
            }
        }
        cursor
    }
}

fn kind_style(kind: Kind) -> Style {
    // Named ANSI colours only: they follow the user's palette, so they read
    // on light and dark terminals alike.
    match kind {
        Kind::Keyword => Style::default().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        Kind::Constant | Kind::Number => Style::default().fg(Color::Cyan),
        Kind::String => Style::default().fg(Color::Green),
        Kind::Comment => Style::default().fg(Color::DarkGray).add_modifier(Modifier::ITALIC),
        Kind::Name => Style::default().fg(Color::Blue).add_modifier(Modifier::BOLD),
        Kind::Heading => Style::default().fg(Color::Blue).add_modifier(Modifier::BOLD),
        Kind::Code => Style::default().fg(Color::Green),
        Kind::Emphasis => Style::default().add_modifier(Modifier::BOLD),
    }
}

fn gutter_width(lines: usize) -> u16 {
    (lines.max(1).ilog10() as u16 + 1).max(3) + 1
}

/// The on-screen column of character `chars` of `line`.
fn display_width(line: &str, chars: usize) -> usize {
    let mut column = 0;
    for ch in line.chars().take(chars) {
        column += if ch == '\t' {
            TAB_WIDTH - column % TAB_WIDTH
        } else {
            ch.width().unwrap_or(0)
        };
    }
    column
}

/// The character index shown at screen column `target` of `line`.
fn column_to_char(line: &str, target: usize) -> usize {
    let mut column = 0;
    for (index, ch) in line.chars().enumerate() {
        let width = if ch == '\t' {
            TAB_WIDTH - column % TAB_WIDTH
        } else {
            ch.width().unwrap_or(0)
        };
        if column + width > target {
            return index;
        }
        column += width;
    }
    line.chars().count()
}

/// The open buffers, as tabs.
#[derive(Default)]
pub struct Editor {
    pub tabs: Vec<Buffer>,
    pub active: usize,
    /// The text being searched for, highlighted in the view.
    pub search: Option<String>,
}

impl Editor {
    pub fn current(&mut self) -> Option<&mut Buffer> {
        self.tabs.get_mut(self.active)
    }

    pub fn current_ref(&self) -> Option<&Buffer> {
        self.tabs.get(self.active)
    }

    pub fn find(&mut self, path: &WorkspacePath) -> Option<&mut Buffer> {
        self.tabs.iter_mut().find(|b| &b.path == path)
    }

    pub fn focus(&mut self, path: &WorkspacePath) -> bool {
        match self.tabs.iter().position(|b| &b.path == path) {
            Some(index) => {
                self.active = index;
                true
            }
            None => false,
        }
    }

    pub fn open(&mut self, buffer: Buffer) {
        self.tabs.push(buffer);
        self.active = self.tabs.len() - 1;
    }

    pub fn close_current(&mut self) {
        if self.active < self.tabs.len() {
            self.tabs.remove(self.active);
            self.active = self.active.min(self.tabs.len().saturating_sub(1));
        }
    }

    pub fn cycle(&mut self, step: isize) {
        if !self.tabs.is_empty() {
            let n = self.tabs.len() as isize;
            self.active = ((self.active as isize + step).rem_euclid(n)) as usize;
        }
    }

    pub fn any_unsaved(&self) -> bool {
        self.tabs.iter().any(|b| b.is_modified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> WorkspacePath {
        WorkspacePath::parse(p).unwrap()
    }

    #[test]
    fn contents_round_trip_newlines_and_crlf() {
        for text in ["a\nb\n", "a\nb", "", "x\r\ny\r\n", "\n\n"] {
            let buffer = Buffer::new(path("f.txt"), text, "v1".into());
            assert_eq!(buffer.contents(), text);
        }
    }

    #[test]
    fn binary_and_huge_files_are_refused() {
        assert!(matches!(
            decode(&path("a.bin"), b"\x00\x01"),
            Err(Unopenable::Binary { .. })
        ));
        assert!(matches!(
            decode(&path("a.bin"), &[0xff, 0xfe]),
            Err(Unopenable::Binary { .. })
        ));
        let huge = vec![b'a'; MAX_EDITABLE_BYTES + 1];
        let error = decode(&path("big.txt"), &huge).unwrap_err();
        assert!(error.to_string().contains("use a terminal"), "{error}");
        assert_eq!(decode(&path("ok.py"), "print('é')".as_bytes()).unwrap(), "print('é')");
    }

    #[test]
    fn save_states_follow_edits_and_acknowledgements() {
        let mut buffer = Buffer::new(path("main.py"), "x = 1\n", "v1".into());
        assert_eq!(buffer.state, SaveState::Saved);
        buffer.textarea.insert_str("y");
        buffer.changed();
        assert!(buffer.is_modified());
        assert_eq!(buffer.title(), "main.py ●");
        let (data, base) = buffer.begin_save();
        assert_eq!(data, b"yx = 1\n");
        assert_eq!(base.as_deref(), Some("v1"));
        // Typing while the save is in flight keeps the buffer modified.
        buffer.textarea.insert_str("z");
        buffer.changed();
        buffer.saved("v2".into());
        assert_eq!(buffer.state, SaveState::Modified);
        let _ = buffer.begin_save();
        buffer.saved("v3".into());
        assert_eq!(buffer.state, SaveState::Saved);
        assert_eq!(buffer.base_version.as_deref(), Some("v3"));
    }

    #[test]
    fn a_reload_keeps_the_cursor_and_clears_modification() {
        let mut buffer = Buffer::new(path("a.js"), "one\ntwo\nthree\n", "v1".into());
        buffer.textarea.move_cursor(CursorMove::Jump(2, 3));
        buffer.reload("one\ntwo\nthree!\nfour\n", "v2".into());
        assert_eq!(buffer.textarea.cursor(), (2, 3));
        assert!(!buffer.is_modified());
        assert_eq!(buffer.contents(), "one\ntwo\nthree!\nfour\n");
    }

    #[test]
    fn render_shows_numbers_highlighting_and_follows_the_cursor() {
        let text: String = (1..=100).map(|i| format!("let v{i} = {i};\n")).collect();
        let mut buffer = Buffer::new(path("a.js"), &text, "v1".into());
        let area = Rect::new(0, 0, 30, 10);
        let mut cells = Cells::empty(area);
        let cursor = buffer.render(area, &mut cells, None).unwrap();
        assert_eq!(cursor, Position { x: 4, y: 0 });
        let first: String = (0..30).map(|x| cells[(x, 0)].symbol().to_string()).collect();
        assert!(first.starts_with("  1 let v1 = 1;"), "{first:?}");
        assert_eq!(cells[(4, 0)].fg, Color::Magenta, "keyword colour");
        assert_eq!(cells[(13, 0)].fg, Color::Cyan, "number colour");
        buffer.textarea.move_cursor(CursorMove::Jump(49, 0));
        let mut cells = Cells::empty(area);
        let cursor = buffer.render(area, &mut cells, Some("v50")).unwrap();
        assert_eq!(cursor.y, 9, "the cursor's line is the last visible one");
        let last: String = (0..30).map(|x| cells[(x, 9)].symbol().to_string()).collect();
        assert!(last.starts_with(" 50 let v50"), "{last:?}");
        assert_eq!(cells[(8, 9)].bg, Color::Yellow, "search match");
    }

    #[test]
    fn tabs_cycle_and_close() {
        let mut editor = Editor::default();
        editor.open(Buffer::new(path("a"), "", "1".into()));
        editor.open(Buffer::new(path("b"), "", "1".into()));
        assert_eq!(editor.active, 1);
        editor.cycle(1);
        assert_eq!(editor.active, 0);
        editor.cycle(-1);
        assert_eq!(editor.active, 1);
        assert!(editor.focus(&path("a")));
        editor.close_current();
        assert_eq!(editor.current_ref().unwrap().path, path("b"));
    }
}
