//! The process's own warn and error log lines, kept in memory for the
//! console's App Log page (`GET /admin/logs`): a [`Capture`] logger wraps
//! the real one (env_logger, set up by `main`), writes every record through
//! it, and copies the warn and error lines the real logger wrote into a
//! ring bounded in lines and bytes. A low leaf: it knows nothing of the
//! console, which reads [`recent`].
//!
//! What is kept is the record's message as the log line carries it (the
//! same `format_args` text), so the page shows what the log shows.

use std::collections::VecDeque;

use log::{Level, Log, Metadata, Record};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use serde::Serialize;

/// Lines kept at most.
pub const MAX_LINES: usize = 500;
/// Bytes of kept text (messages and targets) at most.
pub const MAX_BYTES: usize = 256 * 1024;
/// A longer message is cut to this many bytes (so one line cannot take the
/// whole ring).
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// One kept log line.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Increasing from 1: says whether lines were dropped between two.
    pub seq: u64,
    /// Unix milliseconds.
    pub time_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it (as the log line's target).
    pub target: String,
    pub message: String,
}

impl Line {
    fn size(&self) -> usize {
        self.target.len() + self.message.len()
    }
}

/// The ring: the newest lines within [`MAX_LINES`] and [`MAX_BYTES`].
#[derive(Default)]
pub struct Ring {
    lines: VecDeque<Line>,
    bytes: usize,
    next_seq: u64,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    /// An empty ring with these bounds.
    pub fn new(max_lines: usize, max_bytes: usize) -> Ring {
        Ring {
            lines: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            max_lines,
            max_bytes,
        }
    }

    /// Keeps a line, dropping the oldest ones past the bounds.
    pub fn push(&mut self, time_ms: u64, level: Level, target: &str, message: String) {
        let mut message = message;
        if message.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let line = Line {
            seq: self.next_seq,
            time_ms,
            level: if level == Level::Error {
                "ERROR"
            } else {
                "WARN"
            },
            target: target.to_owned(),
            message,
        };
        self.next_seq += 1;
        self.bytes += line.size();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines || self.bytes > self.max_bytes {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// The newest lines at `level` or worse (`Warn`: warn and error), up
    /// to `limit`, newest first.
    pub fn recent(&self, level: Level, limit: usize) -> Vec<Line> {
        self.lines
            .iter()
            .rev()
            .filter(|l| level == Level::Warn || l.level == "ERROR")
            .take(limit)
            .cloned()
            .collect()
    }

    /// Lines and bytes kept now.
    pub fn usage(&self) -> (usize, usize) {
        (self.lines.len(), self.bytes)
    }
}

/// This process's ring.
static RING: Lazy<Mutex<Ring>> = Lazy::new(|| Mutex::new(Ring::new(MAX_LINES, MAX_BYTES)));

/// The newest warn/error lines of this process (see [`Ring::recent`]).
pub fn recent(level: Level, limit: usize) -> Vec<Line> {
    RING.lock().recent(level, limit)
}

/// Keeps a line in this process's ring as [`Capture`] does for the lines
/// the log wrote (unix milliseconds now).
pub fn keep(level: Level, target: &str, message: String) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    RING.lock().push(now_ms, level, target, message);
}

/// Lines and bytes the ring holds now.
pub fn usage() -> (usize, usize) {
    RING.lock().usage()
}

/// Matches what a logger will write: implemented for env_logger's.
pub trait Matches: Log {
    /// Whether the logger writes this record (its filters pass it).
    fn writes(&self, record: &Record) -> bool;
}

impl Matches for env_logger::Logger {
    fn writes(&self, record: &Record) -> bool {
        self.matches(record)
    }
}

/// A logger that writes through `inner` and keeps the warn and error lines
/// `inner` wrote in this process's ring.
pub struct Capture<L> {
    pub inner: L,
}

impl<L: Matches> Log for Capture<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        self.inner.log(record);
        // Only what the log itself carries: a line its filters drop is
        // not shown either.
        if record.level() <= Level::Warn && self.inner.writes(record) {
            keep(record.level(), record.target(), record.args().to_string());
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_within_lines_and_bytes() {
        let mut r = Ring::new(3, 1000);
        for i in 0..5 {
            r.push(i, Level::Warn, "t", format!("line {i}"));
        }
        let got: Vec<String> = r
            .recent(Level::Warn, 10)
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(got, ["line 4", "line 3", "line 2"]);
        let mut r = Ring::new(100, 25);
        r.push(1, Level::Warn, "t", "a".repeat(10));
        r.push(2, Level::Error, "t", "b".repeat(10));
        // 11 + 11 bytes fit; a third line pushes the first out.
        assert_eq!(r.usage(), (2, 22));
        r.push(3, Level::Warn, "t", "c".repeat(10));
        assert_eq!(r.usage(), (2, 22));
        assert_eq!(r.recent(Level::Warn, 10)[1].message, "b".repeat(10));
        assert_eq!(r.recent(Level::Error, 10).len(), 1);
        assert_eq!(r.recent(Level::Warn, 1).len(), 1);
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary() {
        let mut r = Ring::new(10, MAX_BYTES);
        r.push(1, Level::Warn, "t", "é".repeat(MAX_LINE_BYTES));
        let l = &r.recent(Level::Warn, 1)[0];
        assert!(l.message.len() <= MAX_LINE_BYTES + '…'.len_utf8());
        assert!(l.message.ends_with('…'));
    }
}
