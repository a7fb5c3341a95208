//! Feeding a VT100 emulator long runs of plain text without emulating every
//! byte of them.
//!
//! Emulating is most of what a terminal's output costs the runner (vt100
//! draws every character into its grid), yet of a run of plain lines only
//! the last screenful or two can still be on the screen once the run is
//! over. Printable ASCII, carriage return and line feed, parsed in the
//! ground state with the scroll region spanning the whole screen, touch
//! nothing but the grid's cells and the cursor: the attributes, the modes,
//! the other grid and the parser's state are what they were. And where the
//! cursor goes does not depend on what the cells hold (vt100 wraps at the
//! last column whatever is there). So two emulators that start a run from
//! the same state and are fed different beginnings of it end the same once
//! both cursors are in the same place and every row has scrolled in since
//! then:
//!
//! - after a carriage return followed by at least `2 × rows` line feeds
//!   (`rows - 1` bring any cursor to the bottom row, `rows` more scroll out
//!   every row written before), everything before that carriage return
//!   can go;
//! - a line longer than `2 × rows + 1` screen widths is cut to its last
//!   part of that length plus its length modulo the width (so every
//!   character lands in the column it would have), behind a carriage
//!   return when the line started after one.
//!
//! To know when a run is in the ground state with the whole screen as
//! scroll region, [`FastForward`] follows the byte stream with a copy of
//! `vte`'s state machine (the parser vt100 uses), and watches the sequences
//! that change the scroll region or the grid (`CSI r`, `CSI ? 47/1049 h/l`,
//! `ESC c`). When it cannot tell (an unusual parameter list), it stops
//! shortening until a reset: it only ever saves work, never guesses.

/// Runs shorter than this are fed as they are: too little to save.
const MIN_RUN: usize = 16 * 1024;
/// Parameters and sub-parameters `vte` keeps per sequence; beyond them it
/// drops them, which this module does not follow.
const VTE_MAX_PARAMS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    Escape,
    EscapeIntermediate,
    CsiEntry,
    CsiParam,
    CsiIntermediate,
    CsiIgnore,
    DcsEntry,
    DcsParam,
    DcsIntermediate,
    DcsIgnore,
    DcsPassthrough,
    OscString,
    SosPmApcString,
}

/// The parameters of the CSI sequence being parsed, as far as the
/// sequences followed here need them.
#[derive(Debug, Clone, Copy, Default)]
struct Csi {
    first_intermediate: Option<u8>,
    /// The first value of each of the first two parameters.
    leading: [u16; 2],
    /// The parameter being read, its first value, and whether it has
    /// sub-parameters (`47:1` is not `47`).
    index: usize,
    value: u16,
    has_sub: bool,
    /// Values (and sub-values) seen, to know when `vte` starts dropping.
    entries: usize,
    /// A whole parameter 47 / 1049 was seen.
    alt: bool,
    alt_cleared: bool,
}

impl Csi {
    fn digit(&mut self, byte: u8) {
        if !self.has_sub {
            self.value = self.value.saturating_mul(10).saturating_add(u16::from(byte - b'0'));
        }
    }

    fn sub(&mut self) {
        self.has_sub = true;
        self.entries += 1;
    }

    /// Ends the parameter being read (at `;` or the final byte).
    fn end_param(&mut self) {
        if self.index < 2 {
            self.leading[self.index] = self.value;
        }
        if !self.has_sub {
            match self.value {
                47 => self.alt = true,
                1049 => {
                    self.alt = true;
                    self.alt_cleared = true;
                }
                _ => {}
            }
        }
        self.index += 1;
        self.entries += 1;
        self.value = 0;
        self.has_sub = false;
    }
}

/// What is known of the emulator's state, from the bytes it was fed.
#[derive(Debug, Clone)]
pub struct FastForward {
    state: State,
    /// In the ground state with no partial UTF-8 character pending: the
    /// last byte was ASCII, or ended a sequence.
    clean: bool,
    csi: Csi,
    alternate: bool,
    /// Whether the scroll region of the main / alternate grid is the
    /// whole screen.
    full_region: [bool; 2],
    /// False once a sequence could not be followed: nothing is shortened
    /// until the terminal is reset.
    trusted: bool,
    /// The screen's height while a call's bytes are followed (a resize
    /// comes between calls).
    rows: u16,
}

impl Default for FastForward {
    /// The state of a new parser.
    fn default() -> Self {
        Self {
            state: State::Ground,
            clean: true,
            csi: Csi::default(),
            alternate: false,
            full_region: [true, true],
            trusted: true,
            rows: 1,
        }
    }
}

/// Bytes that only print or move the cursor by line and column.
fn is_plain(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte) || byte == b'\r' || byte == b'\n'
}

/// How many bytes from the start of `bytes` are plain: 64 at a time where
/// it can, a comparison the compiler does in vector registers.
fn plain_len(bytes: &[u8]) -> usize {
    let mut done = 0;
    for chunk in bytes.chunks_exact(64) {
        if !chunk.iter().fold(true, |all, &b| all & is_plain(b)) {
            break;
        }
        done += 64;
    }
    done + bytes[done..]
        .iter()
        .position(|&b| !is_plain(b))
        .unwrap_or(bytes.len() - done)
}

/// Where in a plain run the emulator can start instead of at its
/// beginning, and whether a carriage return goes first: see the module
/// comment. `None`: the run is fed whole.
fn shortcut(run: &[u8], rows: u16, cols: u16) -> Option<(bool, usize)> {
    let (rows, cols) = (usize::from(rows.max(1)), usize::from(cols.max(1)));
    let last_cr = run.iter().rposition(|&b| b == b'\r');
    let line_start = last_cr.map_or(0, |i| i + 1);
    let line = &run[line_start..];
    // A long last line (no line feed after the last carriage return).
    let keep = (2 * rows + 1) * cols;
    if line.len() >= keep + cols && !line.contains(&b'\n') {
        let keep = keep + line.len() % cols;
        return Some((last_cr.is_some(), run.len() - keep));
    }
    // Enough lines after a carriage return.
    let mut feeds = 0;
    let mut at = run.len();
    while feeds < 2 * rows {
        at = run[..at].iter().rposition(|&b| b == b'\n')?;
        feeds += 1;
    }
    let start = run[..at].iter().rposition(|&b| b == b'\r')?;
    (start > 0).then_some((false, start))
}

impl FastForward {
    /// What is known of a new parser given a copy of this one's screen: the
    /// same grids, and a parser in the ground state.
    pub fn restarted(&self) -> Self {
        Self {
            state: State::Ground,
            clean: true,
            csi: Csi::default(),
            ..self.clone()
        }
    }

    /// Feeds `bytes` to `parser` (whose state this follows), leaving out
    /// what cannot change the result; returns how many bytes it was given.
    pub fn process(&mut self, parser: &mut vt100::Parser, bytes: &[u8]) -> usize {
        let (rows, cols) = parser.screen().size();
        self.rows = rows;
        let mut skipped: isize = 0;
        // bytes[fed..i] are yet to be handed to the parser as they are.
        let mut fed = 0;
        let mut i = 0;
        while i < bytes.len() {
            if self.state != State::Ground {
                self.step(bytes[i]);
                i += 1;
                continue;
            }
            let run = plain_len(&bytes[i..]);
            if run == 0 {
                let byte = bytes[i];
                if byte == 0x1b {
                    self.enter_escape();
                } else {
                    // A control runs in place; a byte of a UTF-8 character
                    // may leave part of one pending at the end of a call.
                    self.clean = byte < 0x80;
                }
                i += 1;
                continue;
            }
            if !self.clean {
                // The first plain byte settles a pending partial character.
                self.clean = true;
                i += 1;
                continue;
            }
            let end = i + run;
            let shortened = (run >= MIN_RUN && self.trusted && self.full_region[usize::from(self.alternate)])
                .then(|| shortcut(&bytes[i..end], rows, cols))
                .flatten();
            if let Some((carriage_return, start)) = shortened {
                parser.process(&bytes[fed..i]);
                if carriage_return {
                    parser.process(b"\r");
                    skipped -= 1;
                }
                fed = i + start;
                skipped += start as isize;
            }
            i = end;
        }
        parser.process(&bytes[fed..]);
        (bytes.len() as isize - skipped) as usize
    }

    fn enter_escape(&mut self) {
        self.state = State::Escape;
        self.clean = false;
        self.csi = Csi::default();
    }

    fn enter_ground(&mut self) {
        self.state = State::Ground;
        self.clean = true;
    }

    /// The transitions of `vte::Parser` outside the ground state.
    fn step(&mut self, byte: u8) {
        use State::*;
        let c0 = matches!(byte, 0x00..=0x17 | 0x19 | 0x1c..=0x1f);
        // What vte's `anywhere` does with the bytes no state claims.
        let anywhere = |ff: &mut Self| match byte {
            0x18 | 0x1a => ff.enter_ground(),
            0x1b => ff.enter_escape(),
            _ => {}
        };
        match self.state {
            Ground => unreachable!("the ground state is handled by process"),
            Escape => match byte {
                _ if c0 => {}
                0x20..=0x2f => {
                    self.csi.first_intermediate.get_or_insert(byte);
                    self.state = EscapeIntermediate;
                }
                b'P' => self.state = DcsEntry,
                b'X' | b'^' | b'_' => self.state = SosPmApcString,
                b'[' => self.state = CsiEntry,
                b']' => self.state = OscString,
                0x30..=0x7e => {
                    if byte == b'c' {
                        // vt100's full reset: a new screen.
                        *self = Self {
                            rows: self.rows,
                            ..Self::default()
                        };
                    }
                    self.enter_ground();
                }
                0x18 | 0x1a => self.enter_ground(),
                _ => {}
            },
            EscapeIntermediate => match byte {
                _ if c0 => {}
                0x20..=0x2f => {}
                0x30..=0x7e => self.enter_ground(),
                0x7f => {}
                _ => anywhere(self),
            },
            CsiEntry | CsiParam | CsiIntermediate => match byte {
                _ if c0 => {}
                0x20..=0x2f => {
                    self.csi.first_intermediate.get_or_insert(byte);
                    self.state = CsiIntermediate;
                }
                0x30..=0x3f if self.state == CsiIntermediate => self.state = CsiIgnore,
                0x30..=0x39 => {
                    self.csi.digit(byte);
                    self.state = CsiParam;
                }
                b':' => {
                    self.csi.sub();
                    self.state = CsiParam;
                }
                b';' => {
                    self.csi.end_param();
                    self.state = CsiParam;
                }
                0x3c..=0x3f if self.state == CsiEntry => {
                    self.csi.first_intermediate.get_or_insert(byte);
                    self.state = CsiParam;
                }
                0x3c..=0x3f => self.state = CsiIgnore,
                0x40..=0x7e => self.csi_dispatch(byte),
                _ => anywhere(self),
            },
            CsiIgnore => match byte {
                _ if c0 => {}
                0x20..=0x3f | 0x7f => {}
                0x40..=0x7e => self.enter_ground(),
                _ => anywhere(self),
            },
            DcsEntry | DcsParam | DcsIntermediate => match byte {
                _ if c0 => {}
                0x20..=0x2f => self.state = DcsIntermediate,
                0x30..=0x3f if self.state == DcsIntermediate => self.state = DcsIgnore,
                0x30..=0x3b => self.state = DcsParam,
                0x3c..=0x3f if self.state == DcsEntry => self.state = DcsParam,
                0x3c..=0x3f => self.state = DcsIgnore,
                0x40..=0x7e => self.state = DcsPassthrough,
                0x7f => {}
                _ => anywhere(self),
            },
            DcsPassthrough => match byte {
                0x18 | 0x1a | 0x9c => self.enter_ground(),
                0x1b => self.enter_escape(),
                _ => {}
            },
            OscString => match byte {
                0x07 | 0x18 | 0x1a => self.enter_ground(),
                0x1b => self.enter_escape(),
                _ => {}
            },
            DcsIgnore | SosPmApcString => anywhere(self),
        }
    }

    /// The final byte of a CSI sequence: what vt100 does with it, as far as
    /// the scroll regions and the grids go.
    fn csi_dispatch(&mut self, byte: u8) {
        self.csi.end_param();
        let csi = self.csi;
        self.enter_ground();
        let followed = csi.entries <= VTE_MAX_PARAMS;
        match (csi.first_intermediate, byte) {
            (None, b'r') => {
                // As vt100's DECSTBM: 0 is the default (the first / last
                // row), and a region of less than two rows is the whole
                // screen.
                let rows = self.rows.max(1);
                let [top, bottom] = csi.leading;
                let top = top.max(1) - 1;
                let bottom = if bottom == 0 { rows } else { bottom };
                let bottom = (bottom - 1).min(rows - 1);
                let grid = usize::from(self.alternate);
                self.full_region[grid] = top >= bottom || (top == 0 && bottom == rows - 1);
                if !followed {
                    self.trusted = false;
                }
            }
            (Some(b'?'), b'h' | b'l') if csi.alt || !followed => {
                if !followed {
                    self.trusted = false;
                }
                if byte == b'h' {
                    self.alternate = true;
                    if csi.alt_cleared {
                        self.full_region[1] = true;
                    }
                } else {
                    self.alternate = false;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
            items[self.below(items.len())]
        }
    }

    /// Everything a snapshot or a client could see of a screen.
    type Observed = (Vec<u8>, Vec<u8>, (u16, u16), Vec<bool>, Vec<u8>);

    fn observed(parser: &vt100::Parser) -> Observed {
        let screen = parser.screen();
        let (rows, _) = screen.size();
        (
            screen.state_formatted(),
            screen.contents_formatted(),
            screen.cursor_position(),
            (0..rows).map(|r| screen.row_wrapped(r)).collect(),
            screen.input_mode_formatted(),
        )
    }

    /// Plain text: lines of any length, some wrapping, some bare line
    /// feeds and carriage returns.
    fn plain(rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 400);
        // Short lines only (the screen scrolls by line feeds alone), or
        // mixed with wrapping ones, or one long line.
        let mode = rng.below(3);
        while out.len() < len {
            let line = match (mode, rng.below(10)) {
                (0, _) | (1, 3..) => rng.below(90),
                (1, 0) => 0,
                (1, 1) => 200 + rng.below(300),
                (1, _) => 4000 + rng.below(9000),
                _ => len,
            };
            out.extend((0..line).map(|_| b'!' + rng.below(94) as u8));
            out.extend_from_slice(rng.pick(&[b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n\n"]));
        }
        out
    }

    /// What comes between runs of text: colours, cursor moves, scroll
    /// regions, the alternate screen, titles, wide and partial characters,
    /// resets, controls.
    const BETWEEN: &[&[u8]] = &[
        b"\x1b[31m",
        b"\x1b[1;44m",
        b"\x1b[0m",
        b"\x1b[5;10H",
        b"\x1b[H",
        b"\x1b[2J",
        b"\x1b[K",
        b"\x1b[3;12r",
        b"\x1b[r",
        b"\x1b[1;0r",
        b"\x1b[0;200r",
        b"\x1b[2;1r",
        b"\x1b[?1049h",
        b"\x1b[?1049l",
        b"\x1b[?47h",
        b"\x1b[?47l",
        b"\x1b[?6h",
        b"\x1b[?6l",
        b"\x1b[?25;1049h",
        b"\x1b[?47:1h",
        b"\x1b]0;title\x07",
        b"\x1b]2;unterminated",
        b"\x1bP1$r",
        b"\x1b\\",
        b"\x1bc",
        b"\x1b7",
        b"\x1b8",
        b"\x1bM",
        b"\x1b(0",
        b"\x1b[",
        b"\x1b[4",
        b"\x18",
        "中文".as_bytes(),
        b"\xe2\x82",
        b"\xff",
        b"\t\x08\x07",
        b"\x1b[?1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26;27;28;29;30;31;32;47h",
    ];

    fn stream(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..12 {
            for _ in 0..rng.below(4) {
                match rng.below(3) {
                    // The cursor anywhere, also past the screen.
                    0 => out.extend(format!("\x1b[{};{}H", rng.below(60), rng.below(320)).into_bytes()),
                    _ => out.extend_from_slice(rng.pick(BETWEEN)),
                }
            }
            let len = [10, 20_000, 60_000, 200_000][rng.below(4)];
            out.extend(plain(rng, len));
        }
        out
    }

    #[test]
    fn a_shortened_run_leaves_the_screen_as_the_whole_run_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut total, mut emulated) = (0, 0);
        for case in 0..40 {
            let (rows, cols) = [(24, 80), (5, 20), (2, 2), (50, 7), (3, 300)][case % 5];
            let data = stream(&mut rng);
            let mut eager = vt100::Parser::new(rows, cols, 0);
            let mut lazy = vt100::Parser::new(rows, cols, 0);
            let mut ff = FastForward::default();
            // Fed in pieces cut anywhere, through sequences and characters,
            // with resizes between them.
            let mut at = 0;
            while at < data.len() {
                let to = (at + 1 + rng.below(300_000)).min(data.len());
                eager.process(&data[at..to]);
                emulated += ff.process(&mut lazy, &data[at..to]);
                total += to - at;
                at = to;
                assert_eq!(observed(&lazy), observed(&eager), "case {case}, after byte {to}");
                if rng.below(4) == 0 {
                    // At least two rows and two columns: vt100 underflows wrapping a
                    // line in one row, or drawing a wide character in one column.
                    let r = [rows, rows + 3, rows.saturating_sub(1).max(2)][rng.below(3)];
                    let c = [cols, cols + 1, cols.saturating_sub(1).max(2)][rng.below(3)];
                    eager.screen_mut().set_size(r, c);
                    lazy.screen_mut().set_size(r, c);
                }
            }
        }
        // Half the stream is behind a scroll region or an open string.
        assert!(emulated < total / 4 * 3, "{emulated} of {total} bytes emulated");
    }

    #[test]
    fn plain_output_is_mostly_skipped() {
        let lines: Vec<u8> = (0..30_000)
            .flat_map(|i| format!("line {i:>70}\r\n").into_bytes())
            .collect();
        let long_line: Vec<u8> = (0..2_000_000u32).map(|i| b'A' + (i % 26) as u8).collect();
        for output in [lines, long_line] {
            let mut parser = vt100::Parser::new(24, 80, 0);
            let mut ff = FastForward::default();
            let emulated: usize = output
                .chunks(256 * 1024)
                .map(|chunk| ff.process(&mut parser, chunk))
                .sum();
            assert!(emulated < output.len() / 20, "{emulated} of {}", output.len());
            let mut eager = vt100::Parser::new(24, 80, 0);
            eager.process(&output);
            assert_eq!(observed(&parser), observed(&eager));
        }
    }

    #[test]
    fn a_scroll_region_or_an_unfollowed_sequence_stops_shortening() {
        let lines: Vec<u8> = (0..2000).flat_map(|i| format!("{i:>60}\r\n").into_bytes()).collect();
        for (prefix, shortens) in [
            (&b""[..], true),
            (b"\x1b[2;20r", false),
            (b"\x1b[2;20r\x1b[r", true),
            (b"\x1b[1;24r", true),
            (b"\x1b[1;23r", false),
            (b"\x1b[2;20r\x1b[?1049h", true),
            (b"\x1b[?1049h\x1b[2;20r\x1b[?1049l", true),
            (b"\x1b[?1049h\x1b[2;20r\x1b[?1049l\x1b[?47h", false),
            (b"\x1b[?1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26;27;28;29;30;31;32;47h", false),
            (b"\x1b[?1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26;27;28;29;30;31;32;47h\x1bc", true),
            (b"\x1b]0;title", false),
            (b"\x1b]0;title\x07", true),
        ] {
            let mut ff = FastForward::default();
            let mut parser = vt100::Parser::new(24, 80, 0);
            ff.process(&mut parser, prefix);
            let able = ff.state == State::Ground && ff.trusted && ff.full_region[usize::from(ff.alternate)];
            assert_eq!(able, shortens, "{:?}", String::from_utf8_lossy(prefix));
            let mut eager = vt100::Parser::new(24, 80, 0);
            eager.process(prefix);
            ff.process(&mut parser, &lines);
            eager.process(&lines);
            assert_eq!(observed(&parser), observed(&eager), "{:?}", String::from_utf8_lossy(prefix));
        }
    }
}
