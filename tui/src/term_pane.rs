//! A remote terminal as the TUI shows it: a vt100 emulator fed with the
//! runner's output and drawn by tui-term, with scrollback and a mouse
//! selection that can be copied.

use cloudcode_proto::message::TermId;
use ratatui::buffer::Buffer as Cells;
use ratatui::layout::{Position, Rect};
use ratatui::style::Modifier;
use ratatui::widgets::Widget;
use tui_term::widget::{Cursor, PseudoTerminal};

use crate::remote::{LostReason, TermPurpose};

/// Lines kept for scrolling back in the pane.
const SCROLLBACK_LINES: usize = 5000;

pub struct TermPane {
    pub id: TermId,
    pub purpose: TermPurpose,
    pub parser: vt100::Parser,
    /// Set when the process ended: its exit code, if it had one.
    pub exited: Option<Option<u32>>,
    /// The runner no longer has this terminal, and why (a sandbox restart).
    pub lost: Option<LostReason>,
    /// A selection, in screen cells (row, col), from anchor to the mouse.
    pub selection: Option<((u16, u16), (u16, u16))>,
}

impl TermPane {
    pub fn new(id: TermId, purpose: TermPurpose, rows: u16, cols: u16) -> Self {
        Self {
            id,
            purpose,
            parser: vt100::Parser::new(rows.max(1), cols.max(1), SCROLLBACK_LINES),
            exited: None,
            lost: None,
            selection: None,
        }
    }

    pub fn title(&self, index: usize) -> String {
        let name = match self.purpose {
            TermPurpose::Shell => "shell",
            TermPurpose::Run => "run",
        };
        let state = match (self.lost, self.exited) {
            (Some(_), _) => " [ended]".to_string(),
            (None, Some(Some(code))) => format!(" [exit {code}]"),
            (None, Some(None)) => " [killed]".to_string(),
            (None, None) => String::new(),
        };
        format!("{} {name}{state}", index + 1)
    }

    /// Still running on the runner: neither exited nor lost.
    pub fn live(&self) -> bool {
        self.exited.is_none() && self.lost.is_none()
    }

    pub fn output(&mut self, data: &[u8]) {
        self.parser.process(data);
    }

    /// Replaces the screen with a snapshot: the bytes redraw it on a reset
    /// emulator.
    pub fn snapshot(&mut self, data: &[u8]) {
        let (rows, cols) = self.parser.screen().size();
        self.parser = vt100::Parser::new(rows, cols, SCROLLBACK_LINES);
        self.parser.process(data);
    }

    /// Resizes the emulator; true when the size changed (and the runner
    /// must be told).
    pub fn resize(&mut self, rows: u16, cols: u16) -> bool {
        let (rows, cols) = (rows.max(1), cols.max(1));
        if self.parser.screen().size() == (rows, cols) {
            return false;
        }
        self.parser.screen_mut().set_size(rows, cols);
        true
    }

    pub fn scroll(&mut self, lines: isize) {
        let current = self.parser.screen().scrollback() as isize;
        self.parser
            .screen_mut()
            .set_scrollback((current + lines).max(0) as usize);
    }

    pub fn scrolled_back(&self) -> bool {
        self.parser.screen().scrollback() > 0
    }

    /// The selected text, rows joined by newlines.
    pub fn selected_text(&self) -> Option<String> {
        let ((r1, c1), (r2, c2)) = self.selection?;
        let ((sr, sc), (er, ec)) = if (r1, c1) <= (r2, c2) {
            ((r1, c1), (r2, c2))
        } else {
            ((r2, c2), (r1, c1))
        };
        let text = self.parser.screen().contents_between(sr, sc, er, ec.saturating_add(1));
        (!text.is_empty()).then_some(text)
    }

    /// Draws the screen into `area`; returns where the cursor is when it
    /// should be shown.
    pub fn render(&self, area: Rect, cells: &mut Cells) -> Option<Position> {
        let screen = self.parser.screen();
        let mut cursor = Cursor::default();
        // The real terminal's cursor is placed by the caller instead.
        cursor.hide();
        PseudoTerminal::new(screen).cursor(cursor).render(area, cells);
        if let Some(((r1, c1), (r2, c2))) = self.selection {
            let (start, end) = if (r1, c1) <= (r2, c2) {
                ((r1, c1), (r2, c2))
            } else {
                ((r2, c2), (r1, c1))
            };
            for row in start.0..=end.0.min(area.height.saturating_sub(1)) {
                let from = if row == start.0 { start.1 } else { 0 };
                let to = if row == end.0 {
                    end.1
                } else {
                    area.width.saturating_sub(1)
                };
                for col in from..=to.min(area.width.saturating_sub(1)) {
                    let cell = &mut cells[(area.x + col, area.y + row)];
                    cell.modifier.toggle(Modifier::REVERSED);
                }
            }
        }
        if screen.hide_cursor() || self.scrolled_back() || !self.live() {
            return None;
        }
        let (row, col) = screen.cursor_position();
        (row < area.height && col < area.width).then_some(Position {
            x: area.x + col,
            y: area.y + row,
        })
    }
}

#[cfg(test)]
mod tests {
    use ratatui::style::Color;

    use super::*;

    #[test]
    fn colours_cursor_and_alternate_screen() {
        let mut pane = TermPane::new(1, TermPurpose::Shell, 5, 20);
        pane.output(b"\x1b[31mred\x1b[0m ok");
        let area = Rect::new(0, 0, 20, 5);
        let mut cells = Cells::empty(area);
        let cursor = pane.render(area, &mut cells);
        assert_eq!(cells[(0, 0)].symbol(), "r");
        assert_eq!(
            cells[(0, 0)].fg,
            Color::Indexed(1),
            "palette red: follows the user's theme"
        );
        assert_eq!(cursor, Some(Position { x: 6, y: 0 }));
        // A full-screen program draws on the alternate screen; leaving it
        // brings the shell's screen back.
        pane.output(b"\x1b[?1049h\x1b[2J\x1b[HFULL");
        assert!(pane.parser.screen().alternate_screen());
        pane.output(b"\x1b[?1049l");
        assert!(pane.parser.screen().contents().starts_with("red ok"));
    }

    #[test]
    fn selections_copy_text_and_snapshots_reset() {
        let mut pane = TermPane::new(1, TermPurpose::Shell, 5, 20);
        pane.output(b"hello world\r\nsecond");
        pane.selection = Some(((0, 6), (0, 10)));
        assert_eq!(pane.selected_text().as_deref(), Some("world"));
        pane.selection = Some(((1, 5), (0, 6)));
        assert_eq!(pane.selected_text().as_deref(), Some("world\nsecond"));
        pane.snapshot(b"fresh");
        assert_eq!(pane.parser.screen().contents(), "fresh");
    }

    #[test]
    fn scrollback_and_resize() {
        let mut pane = TermPane::new(1, TermPurpose::Shell, 3, 10);
        for i in 0..10 {
            pane.output(format!("line{i}\r\n").as_bytes());
        }
        pane.scroll(3);
        assert!(pane.scrolled_back());
        assert!(pane.parser.screen().contents().contains("line5"));
        pane.scroll(-100);
        assert!(!pane.scrolled_back());
        assert!(pane.resize(10, 40));
        assert!(!pane.resize(10, 40));
    }
}
