//! Flow control for one client's view of one terminal (`flow_window` in
//! `term_open`/`term_attach`): what has been sent to the client and not yet
//! acknowledged, and so how much more may go.
//!
//! A browser reads its socket as fast as the network allows whatever its
//! terminal emulator manages to parse, so TCP backpressure never reaches the
//! runner; the window stands in for it. Nothing is buffered here: a client
//! over its window is simply not read for, and its bytes wait in the
//! terminal's scrollback (or leave it, and the client gets a snapshot, as any
//! client that fell behind does).
//!
//! Acknowledgements are sequence numbers ("every byte before this one is
//! processed"), but what counts against the window is bytes sent: a snapshot
//! is sent in place of the output it skips, so its length counts, and an ack
//! of the sequence number it is current at releases it. The bookkeeping is
//! per frame, never per byte: consecutive output frames merge into one run.
//!
//! The window bounds what a client has unparsed; [`Window::skips_to_live`]
//! bounds how far behind the terminal it can fall: a client that cannot keep
//! up (a browser's emulator is slower than `yes`) would otherwise be owed
//! the whole scrollback, and after Ctrl-C the user would watch a MiB of
//! output scroll by before the prompt.

use std::collections::VecDeque;

/// A client skips output it is further behind on than its window, and
/// never less than this: replaying this much takes an emulator a few tens of
/// milliseconds, not worth losing the output for.
pub const SKIP_LAG_MIN: u64 = 256 * 1024;

/// What a client that skips still gets of the output it was behind on: the
/// snapshot is of the screen this many bytes before the end, and these
/// bytes follow it, so its own scrollback holds the last of what scrolled
/// by (about a thousand lines of ordinary output), not just one screen.
pub const SKIP_KEEP: u64 = 64 * 1024;

/// Sent and not acknowledged, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unacked {
    /// Output bytes `from..to`.
    Output { from: u64, to: u64 },
    /// A snapshot current at `seq`, `len` bytes long: released by an ack of
    /// `seq` or later.
    Snapshot { seq: u64, len: u64 },
}

#[derive(Debug)]
pub struct Window {
    size: u64,
    unacked: VecDeque<Unacked>,
    /// Sum of what `unacked` holds.
    in_flight: u64,
    /// Length of a snapshot that did not fit: none is made again until it
    /// would (making one costs a screen's worth of work under the
    /// terminal's lock, so not on every ack).
    waiting_snapshot: Option<u64>,
    /// The terminal's output end when the client attached: what it missed
    /// up to there is its history, sent byte-exact as far as the
    /// scrollback holds it, never skipped.
    history_end: u64,
}

impl Window {
    pub fn new(size: u32, history_end: u64) -> Self {
        Self {
            size: u64::from(size),
            unacked: VecDeque::new(),
            in_flight: 0,
            waiting_snapshot: None,
            history_end,
        }
    }

    /// Whether a client whose next byte is `seq`, of a terminal whose output
    /// ends at `end`, skips to a snapshot of the screen as it is now: when
    /// what it has not been sent of the output printed since it attached is
    /// more than its window (and [`SKIP_LAG_MIN`]). It then never has more
    /// than about two windows to parse before it shows the live screen.
    pub fn skips_to_live(&self, seq: u64, end: u64) -> bool {
        seq >= self.history_end && end.saturating_sub(seq) > self.size.max(SKIP_LAG_MIN)
    }

    /// Bytes sent and not acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// How many output bytes may be sent now; 0 also while a snapshot waits
    /// for room.
    pub fn room(&self) -> u64 {
        match self.waiting_snapshot {
            Some(len) if !self.admits_snapshot(len) => 0,
            _ => self.size.saturating_sub(self.in_flight),
        }
    }

    /// A snapshot cannot be split: it goes when it fits, or else once at
    /// most half the window is unacknowledged. Waiting for it to fit could
    /// be forever: a client that acks every so many bytes (the recommended
    /// scheme) leaves up to that many unacknowledged when it has parsed
    /// everything, and a large screen's snapshot may never fit beside them
    /// (or in the whole window). Any client that acks at least every half
    /// window is heard from before this wait.
    pub fn admits_snapshot(&self, len: u64) -> bool {
        self.in_flight + len <= self.size || self.in_flight <= self.size / 2
    }

    /// A snapshot of `len` bytes was due but [`Window::admits_snapshot`]
    /// refused it.
    pub fn defer_snapshot(&mut self, len: u64) {
        self.waiting_snapshot = Some(len);
    }

    pub fn sent_output(&mut self, from: u64, len: u64) {
        let to = from + len;
        match self.unacked.back_mut() {
            Some(Unacked::Output { to: end, .. }) if *end == from => *end = to,
            _ => self.unacked.push_back(Unacked::Output { from, to }),
        }
        self.in_flight += len;
    }

    pub fn sent_snapshot(&mut self, seq: u64, len: u64) {
        self.waiting_snapshot = None;
        self.unacked.push_back(Unacked::Snapshot { seq, len });
        self.in_flight += len;
    }

    /// The client processed everything before `seq`. Acks arrive here
    /// already checked (not backwards, not beyond what was sent); an old
    /// one releases nothing.
    pub fn ack(&mut self, seq: u64) {
        while let Some(front) = self.unacked.front_mut() {
            match front {
                Unacked::Output { from, to } => {
                    if seq >= *to {
                        self.in_flight -= *to - *from;
                        self.unacked.pop_front();
                    } else {
                        if seq > *from {
                            self.in_flight -= seq - *from;
                            *from = seq;
                        }
                        return;
                    }
                }
                Unacked::Snapshot { seq: at, len } => {
                    if seq >= *at {
                        self.in_flight -= *len;
                        self.unacked.pop_front();
                    } else {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_released_by_the_bytes_acknowledged() {
        let mut w = Window::new(100, 0);
        assert_eq!(w.room(), 100);
        w.sent_output(1000, 60);
        w.sent_output(1060, 40);
        assert_eq!(w.room(), 0);
        // Consecutive frames are one run, not one entry each.
        assert_eq!(w.unacked.len(), 1);
        w.ack(1030);
        assert_eq!((w.in_flight(), w.room()), (70, 30));
        w.ack(1030);
        w.ack(1010);
        assert_eq!(w.in_flight(), 70, "an old ack releases nothing");
        w.ack(1100);
        assert_eq!((w.in_flight(), w.room()), (0, 100));
        assert!(w.unacked.is_empty());
    }

    #[test]
    fn a_snapshot_counts_its_length_and_is_released_by_its_seq() {
        let mut w = Window::new(100, 0);
        w.sent_output(0, 30);
        // The client fell out of the scrollback: a 50-byte snapshot current
        // at 5000 replaces bytes 30..5000, then output from 5000.
        w.sent_snapshot(5000, 50);
        w.sent_output(5000, 20);
        assert_eq!(w.in_flight(), 100);
        w.ack(30);
        assert_eq!(w.in_flight(), 70);
        // Acks between the two positions are legal and release no more.
        w.ack(4000);
        assert_eq!(w.in_flight(), 70);
        w.ack(5000);
        assert_eq!(w.in_flight(), 20);
        w.ack(5020);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_snapshot_goes_when_it_fits_or_at_half_the_window() {
        let mut w = Window::new(100, 0);
        w.sent_output(0, 60);
        assert!(w.admits_snapshot(40));
        assert!(!w.admits_snapshot(41));
        w.defer_snapshot(41);
        assert_eq!(w.room(), 0, "no output overtakes a waiting snapshot");
        w.ack(1);
        assert_eq!(w.room(), 41);
        // Too large to fit ever: once half the window is free.
        w.defer_snapshot(500);
        assert_eq!(w.room(), 0);
        w.ack(9);
        assert!(!w.admits_snapshot(500));
        w.ack(10);
        assert!(w.admits_snapshot(500));
        w.sent_snapshot(900, 500);
        assert_eq!((w.in_flight(), w.room()), (550, 0));
        w.ack(60);
        assert_eq!((w.in_flight(), w.room()), (500, 0));
        w.ack(900);
        assert_eq!(w.room(), 100);
    }

    #[test]
    fn history_is_never_skipped_and_live_output_past_the_window_is() {
        let big = 4 * SKIP_LAG_MIN as u32;
        let w = Window::new(big, 10_000_000);
        // Catching up on history, however far behind: byte-exact.
        assert!(!w.skips_to_live(0, 20_000_000));
        // Behind on live output: skips past a window.
        assert!(!w.skips_to_live(10_000_000, 10_000_000 + u64::from(big)));
        assert!(w.skips_to_live(10_000_000, 10_000_001 + u64::from(big)));
        // A small window still lets a client fall SKIP_LAG_MIN behind.
        let small = Window::new(4096, 0);
        assert!(!small.skips_to_live(0, SKIP_LAG_MIN));
        assert!(small.skips_to_live(0, SKIP_LAG_MIN + 1));
    }
}
