//! Where the IDE's panes are, computed in one place for drawing and for
//! hit-testing the mouse.

use ratatui::layout::Rect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdeLayout {
    pub tree: Rect,
    pub editor: Rect,
    pub editor_inner: Rect,
    pub terminal: Rect,
    pub terminal_inner: Rect,
    pub status: Rect,
}

impl IdeLayout {
    /// `tree_width` columns for the tree, the terminal taking
    /// `terminal_percent` of the height to the right of it, one status line.
    pub fn new(area: Rect, tree_width: u16, terminal_percent: u16) -> Self {
        let body_height = area.height.saturating_sub(1);
        let status = Rect::new(area.x, area.y + body_height, area.width, area.height.min(1));
        let tree_width = tree_width.min(area.width / 2).max(area.width.min(12));
        let tree = Rect::new(area.x, area.y, tree_width, body_height);
        let right_width = area.width.saturating_sub(tree_width);
        let terminal_height = ((body_height as u32 * terminal_percent as u32) / 100) as u16;
        let terminal_height = terminal_height.clamp(body_height.min(3), body_height.saturating_sub(3).max(3));
        let terminal_height = terminal_height.min(body_height);
        let editor = Rect::new(area.x + tree_width, area.y, right_width, body_height - terminal_height);
        let terminal = Rect::new(area.x + tree_width, editor.bottom(), right_width, terminal_height);
        Self {
            tree,
            editor,
            editor_inner: inner(editor),
            terminal,
            terminal_inner: inner(terminal),
            status,
        }
    }
}

/// Inside a block with borders on every side.
fn inner(area: Rect) -> Rect {
    Rect::new(
        area.x.saturating_add(1),
        area.y.saturating_add(1),
        area.width.saturating_sub(2),
        area.height.saturating_sub(2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panes_tile_the_screen_at_any_size() {
        for (w, h) in [(80, 24), (300, 100), (20, 6), (1, 1)] {
            let area = Rect::new(0, 0, w, h);
            let layout = IdeLayout::new(area, 28, 40);
            assert_eq!(layout.status.bottom(), h);
            assert_eq!(layout.tree.width + layout.editor.width, w);
            assert_eq!(layout.editor.height + layout.terminal.height, h - 1);
            assert_eq!(layout.editor.width, layout.terminal.width);
        }
        let layout = IdeLayout::new(Rect::new(0, 0, 80, 24), 28, 40);
        assert_eq!(layout.terminal.height, 9);
        assert_eq!(layout.terminal_inner.width, 80 - 28 - 2);
    }
}
