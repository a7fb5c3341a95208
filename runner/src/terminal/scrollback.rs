//! A terminal's bounded, sequence-numbered output history.
//!
//! Every output byte has a sequence number: its offset in the terminal's
//! whole output. The last `capacity` bytes are kept verbatim, so a client that
//! reconnects with its next sequence number gets exactly what it missed.
//! Bytes that fall out of the window are fed to a VT100 emulator
//! ([`ScreenTracker`]), which therefore holds the screen as it was at the
//! window's first byte: a client too far behind gets that screen as a
//! snapshot, then the window.
//! Memory is bounded by `capacity` plus one screen, whatever the program
//! prints and however slowly clients read (plus one more screen, the live
//! one, for a terminal whose windowed clients skipped: [`super::live`]).

use std::collections::VecDeque;

use bytes::Bytes;

use super::live::{CatchUp, LiveScreen, Start, Step};
use super::screen::{EMULATOR_MIN_SIZE, ScreenTracker};

pub struct Scrollback {
    /// One byte ring rather than a list of chunks: a program that prints a
    /// byte at a time must not cost a heap allocation per byte.
    buf: VecDeque<u8>,
    /// Sequence number of `buf[0]`.
    start_seq: u64,
    capacity: usize,
    /// The screen as of `start_seq`.
    screen: ScreenTracker,
    /// Resizes not yet applied to `screen`, with the sequence number at
    /// which they happened.
    pending_resizes: VecDeque<(u64, u16, u16)>,
    /// Resizes ever recorded: `pending_resizes` holds the last ones.
    resizes: u64,
}

/// What a reader at some sequence number gets next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Bytes starting at `seq`.
    Data { seq: u64, data: Bytes },
    /// The reader fell out of the window: reset, draw this, continue at `seq`.
    Snapshot { seq: u64, data: Bytes },
    /// Nothing new yet.
    UpToDate,
}

impl Scrollback {
    pub fn new(capacity: usize, rows: u16, cols: u16) -> Self {
        Self {
            buf: VecDeque::new(),
            start_seq: 0,
            capacity: capacity.max(1),
            screen: ScreenTracker::new(rows, cols),
            pending_resizes: VecDeque::new(),
            resizes: 0,
        }
    }

    /// Sequence number of the next byte to be written.
    pub fn end_seq(&self) -> u64 {
        self.start_seq + self.buf.len() as u64
    }

    pub fn push(&mut self, data: &[u8]) {
        // Output larger than the whole window: its head is evicted at once.
        let (head, tail) = data.split_at(data.len().saturating_sub(self.capacity));
        if !head.is_empty() {
            let old = self.buf.len();
            self.evict_front(old);
            self.evict(head);
        }
        let excess = (self.buf.len() + tail.len()).saturating_sub(self.capacity);
        self.evict_front(excess);
        self.buf.extend(tail);
    }

    fn evict_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let (front, back) = self.buf.as_slices();
        let mut evicted = Vec::with_capacity(n);
        evicted.extend_from_slice(&front[..n.min(front.len())]);
        if n > front.len() {
            evicted.extend_from_slice(&back[..n - front.len()]);
        }
        self.buf.drain(..n);
        self.evict(&evicted);
    }

    /// Hands bytes leaving the window (already removed from `buf`) to the
    /// screen, with the resizes that happened among them, in order.
    fn evict(&mut self, bytes: &[u8]) {
        let mut offset = 0usize;
        while let Some(&(at, rows, cols)) = self.pending_resizes.front() {
            let upto = at.saturating_sub(self.start_seq) as usize;
            if upto > bytes.len() {
                break;
            }
            let upto = upto.max(offset);
            if upto > offset {
                self.screen.feed(&bytes[offset..upto]);
            }
            offset = upto;
            self.screen.resize(rows, cols);
            self.pending_resizes.pop_front();
        }
        self.start_seq += bytes.len() as u64;
        if offset < bytes.len() {
            self.screen.feed(&bytes[offset..]);
        }
    }

    pub fn resize(&mut self, rows: u16, cols: u16) {
        self.pending_resizes
            .push_back((self.end_seq(), rows.max(EMULATOR_MIN_SIZE), cols.max(EMULATOR_MIN_SIZE)));
        self.resizes += 1;
    }

    /// Up to `max` bytes for a reader whose next byte is `seq`.
    pub fn next_for(&mut self, seq: u64, max: usize) -> Next {
        if seq >= self.end_seq() {
            return Next::UpToDate;
        }
        if seq < self.start_seq {
            return Next::Snapshot {
                seq: self.start_seq,
                data: self.snapshot(),
            };
        }
        let to = self.end_seq().min(seq.saturating_add(max as u64));
        Next::Data {
            seq,
            data: Bytes::from(self.copy(seq, to)),
        }
    }

    /// Bytes that draw the screen as of `start_seq` on a freshly reset
    /// terminal: clear, contents, attributes, cursor, modes.
    fn snapshot(&mut self) -> Bytes {
        Bytes::from(self.screen.snapshot())
    }

    /// What brings `live` (the last live screen made, if any) to `to` (or
    /// as near as it can: not before `live` itself, nor outside the
    /// window): the output since it, or, once that is no longer all here,
    /// the start screen and the window up to there.
    pub fn catch_up(&mut self, live: Option<LiveScreen>, to: u64) -> CatchUp {
        // The ordinal of `pending_resizes[0]`: older resizes are in
        // `screen` and nowhere else.
        let first_pending = self.resizes - self.pending_resizes.len() as u64;
        let (start, mut at, mut applied) = match live {
            Some(live) if live.seq() >= self.start_seq && live.resizes() >= first_pending => {
                let (seq, resizes) = (live.seq(), live.resizes());
                (Start::From(live), seq, resizes)
            }
            _ => (
                Start::Base(Box::new(self.screen.screen())),
                self.start_seq,
                first_pending,
            ),
        };
        let to = to.clamp(at, self.end_seq());
        let mut steps = Vec::new();
        let from = applied;
        let pending = (first_pending..).zip(&self.pending_resizes);
        for (ordinal, &(resize_at, rows, cols)) in pending.filter(|(ordinal, _)| *ordinal >= from) {
            // Resizes not applied happened at or after `at`; one at `to`
            // came before the byte there, so it is on the screen at `to`.
            if resize_at > to {
                break;
            }
            if resize_at > at {
                steps.push(Step::Output(self.copy(at, resize_at)));
                at = resize_at;
            }
            steps.push(Step::Resize { rows, cols });
            applied = ordinal + 1;
        }
        if to > at {
            steps.push(Step::Output(self.copy(at, to)));
        }
        CatchUp {
            start,
            steps,
            end_seq: to,
            resizes: applied,
        }
    }

    /// The window's bytes `from..to`.
    fn copy(&self, from: u64, to: u64) -> Vec<u8> {
        let (from, to) = ((from - self.start_seq) as usize, (to - self.start_seq) as usize);
        let (front, back) = self.buf.as_slices();
        let mut data = Vec::with_capacity(to - from);
        if from < front.len() {
            data.extend_from_slice(&front[from..to.min(front.len())]);
        }
        if to > front.len() {
            data.extend_from_slice(&back[from.saturating_sub(front.len())..to - front.len()]);
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(next: Next) -> (u64, Vec<u8>) {
        match next {
            Next::Data { seq, data } => (seq, data.to_vec()),
            other => panic!("expected data, got {other:?}"),
        }
    }

    /// vt100 underflows wrapping a line on a 1-row screen and placing a
    /// wide character on a 1-column one: a client may size a terminal 1x1,
    /// and its emulator must survive whatever the program prints.
    #[test]
    fn a_one_row_or_one_column_terminal_survives_long_lines_and_wide_characters() {
        for (rows, cols) in [(1, 80), (24, 1), (1, 1)] {
            let mut scrollback = Scrollback::new(64, rows, cols);
            scrollback.resize(rows, cols);
            for _ in 0..8 {
                scrollback.push("a line far longer than the screen is wide, 漢字 and more\r\n".as_bytes());
            }
            let live = scrollback.catch_up(None, scrollback.end_seq()).apply();
            assert_eq!(live.seq(), scrollback.end_seq());
            assert!(matches!(scrollback.next_for(0, 1024), Next::Snapshot { .. }));
        }
    }

    #[test]
    fn resumes_exactly_where_a_reader_left_off() {
        let mut sb = Scrollback::new(1024, 24, 80);
        sb.push(b"hello ");
        sb.push(b"world");
        assert_eq!(sb.end_seq(), 11);
        assert_eq!(data(sb.next_for(0, 100)), (0, b"hello world".to_vec()));
        assert_eq!(data(sb.next_for(6, 100)), (6, b"world".to_vec()));
        assert_eq!(data(sb.next_for(3, 2)), (3, b"lo".to_vec()));
        assert_eq!(sb.next_for(11, 100), Next::UpToDate);
    }

    #[test]
    fn stays_bounded_and_snapshots_what_scrolled_out() {
        let mut sb = Scrollback::new(64, 5, 20);
        for i in 0..1000 {
            sb.push(format!("line {i}\r\n").as_bytes());
        }
        assert!(sb.buf.len() <= 64);
        assert_eq!(
            sb.end_seq(),
            (0..1000).map(|i| format!("line {i}\r\n").len() as u64).sum::<u64>()
        );
        let Next::Snapshot { seq, data } = sb.next_for(0, 100) else {
            panic!("expected a snapshot")
        };
        assert_eq!(seq, sb.start_seq);
        // Replaying the snapshot and then the window gives the real screen.
        let mut replay = vt100::Parser::new(5, 20, 0);
        replay.process(&data);
        let mut at = seq;
        while let Next::Data { seq, data } = sb.next_for(at, 16) {
            replay.process(&data);
            at = seq + data.len() as u64;
        }
        let contents = replay.screen().contents();
        assert!(contents.contains("line 999"), "{contents}");
        assert!(contents.contains("line 996"), "{contents}");
    }

    #[test]
    fn resizes_apply_in_order() {
        let mut sb = Scrollback::new(4, 5, 20);
        sb.push(b"ab");
        sb.resize(10, 40);
        sb.push(b"cdefgh");
        assert_eq!(sb.screen.size(), (10, 40));
    }

    #[test]
    fn output_larger_than_the_window() {
        let mut sb = Scrollback::new(8, 5, 20);
        sb.push(b"0123");
        sb.push(b"abcdefghijklmnop");
        assert_eq!(sb.end_seq(), 20);
        assert_eq!(sb.start_seq, 12);
        assert_eq!(data(sb.next_for(12, 100)), (12, b"ijklmnop".to_vec()));
    }

    #[test]
    fn the_live_screen_is_the_screen_at_the_end_across_resizes_and_eviction() {
        let mut sb = Scrollback::new(1024, 5, 20);
        let mut real = vt100::Parser::new(5, 20, 0);
        let mut live = None;
        let (mut continued, mut rebuilt) = (0, 0);
        for i in 0..300u16 {
            let line = format!("\x1b[3{}mline {i}\r\n", i % 8);
            sb.push(line.as_bytes());
            real.process(line.as_bytes());
            if i % 37 == 0 {
                let (rows, cols) = (5 + i % 3, 20 + i % 5);
                sb.resize(rows, cols);
                real.screen_mut().set_size(rows, cols);
            }
            // Catch-ups every 23 lines (well inside the window), none for
            // 100 lines (out of it).
            if (i % 23 == 0 && !(150..250).contains(&i)) || i == 299 {
                let work = sb.catch_up(live.take(), u64::MAX);
                match work.start {
                    Start::From(_) => continued += 1,
                    Start::Base(_) => rebuilt += 1,
                }
                let screen = work.apply();
                assert_eq!(screen.seq(), sb.end_seq());
                let (rows, cols) = real.screen().size();
                let mut replay = vt100::Parser::new(rows, cols, 0);
                replay.process(&screen.snapshot());
                assert_eq!(
                    replay.screen().contents_formatted(),
                    real.screen().contents_formatted(),
                    "after line {i}"
                );
                live = Some(screen);
            }
        }
        assert!(
            continued >= 5 && rebuilt >= 2,
            "{continued} continued, {rebuilt} rebuilt"
        );
    }

    #[test]
    fn a_live_screen_can_stop_short_of_the_end_and_go_on_from_there() {
        fn replayed(screen: &LiveScreen, rows: u16, cols: u16) -> Vec<u8> {
            let mut replay = vt100::Parser::new(rows, cols, 0);
            replay.process(&screen.snapshot());
            replay.screen().contents_formatted()
        }
        let mut sb = Scrollback::new(1 << 20, 5, 20);
        let mut real = vt100::Parser::new(5, 20, 0);
        sb.push(b"one\r\ntwo\r\n");
        real.process(b"one\r\ntwo\r\n");
        sb.resize(6, 30);
        real.screen_mut().set_size(6, 30);
        sb.push(b"three\r\n\x1b[1mfour");
        // Up to the resize's seq: the resize is on that screen.
        let work = sb.catch_up(None, 10);
        assert_eq!((work.end_seq, work.resizes), (10, 1));
        let middle = work.apply();
        assert_eq!(replayed(&middle, 6, 30), real.screen().contents_formatted());
        // On to the end from there, the resize not applied twice.
        real.process(b"three\r\n\x1b[1mfour");
        let end = sb.catch_up(Some(middle), u64::MAX).apply();
        assert_eq!(end.seq(), sb.end_seq());
        assert_eq!(replayed(&end, 6, 30), real.screen().contents_formatted());
        // Never backwards.
        assert_eq!(sb.catch_up(Some(end), 0).end_seq, sb.end_seq());
    }

    #[test]
    fn snapshots_after_long_plain_runs_are_the_eagerly_emulated_screen() {
        // Coloured prompts and plain output by the megabyte, in reads of
        // every size, with resizes: the snapshot of what left the window
        // (mostly never emulated) and the live screen both draw what an
        // emulator fed every byte shows.
        let mut sb = Scrollback::new(100_000, 24, 80);
        let mut all = Vec::new();
        let mut resizes = Vec::new();
        let mut live = None;
        for round in 0..12u32 {
            let mut out = format!("\x1b[01;32muser@host\x1b[00m:\x1b[01;34m~\x1b[00m$ cat {round}\r\n").into_bytes();
            if round % 4 == 3 {
                // One long line, as `base64 -w 0` prints.
                out.extend((0..700_000u32).map(|i| b'A' + ((i * 7 + round) % 26) as u8));
            } else {
                for i in 0..9_000u32 {
                    out.extend(format!("{round}:{i} {}\r\n", "x".repeat((i % 97) as usize)).into_bytes());
                }
            }
            let mut at = 0;
            let mut size = 1;
            while at < out.len() {
                let to = (at + size).min(out.len());
                sb.push(&out[at..to]);
                at = to;
                size = size * 3 % 70_001 + 1;
            }
            all.extend_from_slice(&out);
            if round % 5 == 2 {
                let (rows, cols) = (20 + round as u16, 70 + round as u16);
                sb.resize(rows, cols);
                resizes.push((all.len() as u64, rows, cols));
            }
            let eager = |upto: u64| {
                let mut parser = vt100::Parser::new(24, 80, 0);
                let mut from = 0;
                for &(at, rows, cols) in resizes.iter().filter(|r| r.0 <= upto) {
                    parser.process(&all[from..at as usize]);
                    parser.screen_mut().set_size(rows, cols);
                    from = at as usize;
                }
                parser.process(&all[from..upto as usize]);
                parser
            };
            let Next::Snapshot { seq, data } = sb.next_for(0, 100) else {
                panic!("expected a snapshot")
            };
            let expected = eager(seq);
            let (rows, cols) = expected.screen().size();
            let mut replay = vt100::Parser::new(rows, cols, 0);
            replay.process(&data);
            assert_eq!(
                replay.screen().contents_formatted(),
                expected.screen().contents_formatted(),
                "round {round}"
            );
            assert_eq!(replay.screen().cursor_position(), expected.screen().cursor_position());
            let screen = sb.catch_up(live.take(), u64::MAX).apply();
            let expected = eager(sb.end_seq());
            let mut replay = vt100::Parser::new(rows, cols, 0);
            replay.process(&screen.snapshot());
            assert_eq!(
                replay.screen().contents_formatted(),
                expected.screen().contents_formatted(),
                "live, round {round}"
            );
            if round % 2 == 0 {
                live = Some(screen);
            }
        }
    }
}
