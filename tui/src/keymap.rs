//! Every key the TUI answers to, in one table: the help overlay is drawn
//! from it and a test checks it against the key handling.

pub struct Binding {
    pub section: &'static str,
    pub keys: &'static str,
    pub action: &'static str,
}

const fn b(section: &'static str, keys: &'static str, action: &'static str) -> Binding {
    Binding { section, keys, action }
}

pub const KEYMAP: &[Binding] = &[
    b("Everywhere", "F1", "this help"),
    b("Everywhere", "Ctrl-Q", "quit (asks when files are unsaved)"),
    b("Projects", "↑ ↓ / Enter", "choose / open a project"),
    b(
        "Projects",
        "n / d / r / s",
        "new / delete / refresh / open synced with a folder",
    ),
    b(
        "IDE",
        "Alt-1 Alt-2 Alt-3 / F2",
        "focus files / editor / terminal / next pane",
    ),
    b("IDE", "Alt-← Alt-→ Alt-↑ Alt-↓", "resize the file tree / the terminal"),
    b("IDE", "F5 / F6 / F8", "run the project / new terminal / close terminal"),
    b("IDE", "Alt-, Alt-.", "previous / next terminal"),
    b("IDE", "F4 / F7", "sync a local folder, its conflicts / the preview"),
    b("IDE", "F9", "open this project in the browser IDE"),
    b("IDE", "F10", "back to the project list"),
    b("Files", "↑ ↓ ← → / Enter", "move, collapse, expand / open"),
    b("Files", "n / f / r / d", "new file / new folder / rename / delete"),
    b("Files", "R", "reload the tree"),
    b("Editor", "Ctrl-S", "save (● modified, … saving, no mark = durable)"),
    b("Editor", "Ctrl-Z / Ctrl-Y", "undo / redo"),
    b("Editor", "Ctrl-F / F3 / Shift-F3", "find / next / previous"),
    b(
        "Editor",
        "Ctrl-PgUp Ctrl-PgDn / Ctrl-W",
        "previous / next tab / close tab",
    ),
    b("Editor", "Ctrl-R", "reload from the sandbox (resolves a conflict)"),
    b(
        "Sync",
        "↑ ↓ / PgUp PgDn / Esc",
        "choose a conflict / scroll its diff / close",
    ),
    b(
        "Sync",
        "l / r / b / S",
        "keep local / remote (asks first) / both / stop",
    ),
    b("Terminal", "any key", "goes to the program in the terminal"),
    b("Terminal", "Shift-PgUp Shift-PgDn", "scroll back / forward"),
    b("Terminal", "Alt-C", "copy the selection, or the whole screen"),
    b("Mouse", "click / drag a border", "focus, select, open / resize panes"),
    b(
        "Mouse",
        "drag in a terminal",
        "select and copy (to the system clipboard)",
    ),
];
