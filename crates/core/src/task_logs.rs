//! Task logs: lines a handler writes, kept per attempt, within caps.
//!
//! A worker carries the lines with its next heartbeat or report for the lease (so a line from an
//! attempt whose lease was lost is refused with it). The store keeps at most
//! [`MAX_LINES_PER_ATTEMPT`] lines and [`MAX_BYTES_PER_ATTEMPT`] bytes per attempt; the first line
//! past either cap is replaced by one marker saying so, and later ones are dropped.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A line longer than this many characters is cut to it.
pub const MAX_LINE_CHARS: usize = 4096;
/// Most lines kept per attempt.
pub const MAX_LINES_PER_ATTEMPT: u64 = 1000;
/// Most bytes kept per attempt.
pub const MAX_BYTES_PER_ATTEMPT: u64 = 256 * 1024;
/// What replaces the lines past a cap.
pub const TRUNCATED: &str =
    "[taskwarden: this attempt's log reached its cap (1000 lines or 256 KiB); later lines are dropped]";

/// A line a handler logged, carried to the server with a heartbeat or a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// When the handler logged it, by the worker's clock; absent: when it reached the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// The line; one longer than 4096 characters is cut.
    pub line: String,
}

/// A stored line, as read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskLogLine {
    /// Its place in the task's log, from 1, across attempts.
    pub seq: u64,
    pub attempt: u32,
    pub at: Timestamp,
    pub line: String,
}

/// A page of a task's log.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskLogPage {
    pub lines: Vec<TaskLogLine>,
    /// Give it back as `after` for the lines that follow.
    pub next: u64,
    /// Whether the task has finished: once the lines are read, no more will come.
    pub finished: bool,
}

/// What an attempt's log already holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub lines: u64,
    pub bytes: u64,
}

/// The lines to store of `new`, given what the attempt holds: each cut to [`MAX_LINE_CHARS`],
/// dated `now` when the worker did not say; past a cap, the [`TRUNCATED`] marker once, then
/// nothing.
pub fn admit(held: Held, new: Vec<LogLine>, now: Timestamp) -> Vec<(Timestamp, String)> {
    let mut out = Vec::new();
    let Held { mut lines, mut bytes } = held;
    for l in new {
        if lines > MAX_LINES_PER_ATTEMPT {
            break; // the marker is already there
        }
        let line = match l.line.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => l.line[..cut].to_owned(),
            None => l.line,
        };
        let size = line.len() as u64;
        if lines == MAX_LINES_PER_ATTEMPT || bytes + size > MAX_BYTES_PER_ATTEMPT {
            out.push((now, TRUNCATED.to_owned()));
            break;
        }
        lines += 1;
        bytes += size;
        out.push((l.at.unwrap_or(now), line));
    }
    out
}

/// What an attempt holds after `held` and the admitted lines (the marker counts past the cap).
pub fn held_after(held: Held, admitted: &[(Timestamp, String)]) -> Held {
    let truncated = admitted.last().is_some_and(|(_, l)| l == TRUNCATED);
    Held {
        lines: if truncated { MAX_LINES_PER_ATTEMPT + 1 } else { held.lines + admitted.len() as u64 },
        bytes: held.bytes + admitted.iter().map(|(_, l)| l.len() as u64).sum::<u64>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, text: &str) -> Vec<LogLine> {
        (0..n).map(|_| LogLine { at: None, line: text.to_owned() }).collect()
    }

    #[test]
    fn lines_are_kept_up_to_the_cap_then_one_marker_then_nothing() {
        let now = Timestamp::from_millis(5);
        let first = admit(Held::default(), lines(600, "a"), now);
        assert_eq!(first.len(), 600);
        let held = held_after(Held::default(), &first);
        let second = admit(held, lines(600, "b"), now);
        assert_eq!(second.len(), 401, "400 more, then the marker");
        assert_eq!(second.last().unwrap().1, TRUNCATED);
        let held = held_after(held, &second);
        assert!(admit(held, lines(5, "c"), now).is_empty(), "nothing after the marker");
    }

    #[test]
    fn bytes_are_capped_too_and_long_lines_are_cut_on_a_character_boundary() {
        let now = Timestamp::from_millis(5);
        let long = "é".repeat(5000);
        let got = admit(Held::default(), lines(1, &long), now);
        assert_eq!(got[0].1.chars().count(), MAX_LINE_CHARS);
        let big = admit(Held { lines: 10, bytes: MAX_BYTES_PER_ATTEMPT - 3 }, lines(2, "abcd"), now);
        assert_eq!(big, vec![(now, TRUNCATED.to_owned())]);
        let at = Timestamp::from_millis(1);
        let dated = admit(Held::default(), vec![LogLine { at: Some(at), line: "x".into() }], now);
        assert_eq!(dated, vec![(at, "x".to_owned())]);
    }
}
