//! The screen as it is now, for windowed clients that skip the output they
//! are too far behind on (see [`super::flow::Window::skips_to_live`]).
//!
//! The screen the runner always keeps ([`super::screen`]) is the one at the
//! start of the scrollback, for clients resuming from before it. The screen
//! at the end of the output is needed only when a client skips, so it is
//! made then: from the last one made (kept here) plus the output since, or,
//! when that has left the scrollback, from the start screen plus the whole
//! scrollback. A terminal that never has a client fall behind never pays for
//! a second emulator; one that has them pays one emulation of what it prints
//! while they skip, however many skip.

use bytes::Bytes;

use super::fast_forward::FastForward;

/// What takes a live screen from where it was to the end of the output,
/// collected under the terminal's lock (a copy of at most the scrollback)
/// and applied outside it: emulating a MiB of `yes` takes tens of
/// milliseconds, which the PTY reader must not wait for.
pub struct CatchUp {
    pub start: Start,
    pub steps: Vec<Step>,
    /// The screen made is current here.
    pub end_seq: u64,
    /// Resizes applied by then, counting from the terminal's first.
    pub resizes: u64,
}

pub enum Start {
    /// The last live screen, still reachable through the scrollback.
    From(LiveScreen),
    /// The screen at the scrollback's start, with its size, and what is
    /// known of its parser's state.
    Base(Box<(vt100::Screen, FastForward)>),
}

pub enum Step {
    Output(Vec<u8>),
    Resize { rows: u16, cols: u16 },
}

/// A screen current at `seq`.
pub struct LiveScreen {
    parser: Box<vt100::Parser>,
    fast_forward: FastForward,
    seq: u64,
    resizes: u64,
}

impl CatchUp {
    pub fn apply(self) -> LiveScreen {
        let (mut parser, mut fast_forward) = match self.start {
            Start::From(live) => (live.parser, live.fast_forward),
            Start::Base(base) => {
                let (screen, fast_forward) = *base;
                let (rows, cols) = screen.size();
                let mut parser = Box::new(vt100::Parser::new(rows, cols, 0));
                *parser.screen_mut() = screen;
                (parser, fast_forward.restarted())
            }
        };
        for step in self.steps {
            match step {
                Step::Output(data) => {
                    fast_forward.process(&mut parser, &data);
                }
                Step::Resize { rows, cols } => parser.screen_mut().set_size(rows, cols),
            }
        }
        LiveScreen {
            parser,
            fast_forward,
            seq: self.end_seq,
            resizes: self.resizes,
        }
    }
}

impl LiveScreen {
    /// Every byte before this one is on the screen.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many of the terminal's resizes are applied.
    pub fn resizes(&self) -> u64 {
        self.resizes
    }

    /// Bytes that redraw this screen on a reset terminal, as a snapshot
    /// frame carries them.
    pub fn snapshot(&self) -> Bytes {
        let mut out = b"\x1bc".to_vec();
        out.extend_from_slice(&self.parser.screen().state_formatted());
        Bytes::from(out)
    }
}
