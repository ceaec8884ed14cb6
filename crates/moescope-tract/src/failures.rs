//! Logging recording failures without flooding the log.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Rate-limits the log lines of recording failures: a serving loop notes every failure of
/// [`MoeModel::record`](crate::MoeModel::record) and prints what [`FailureLog::note`]
/// returns, at most one line per interval, with how many failures it did not print.
/// Monitoring failures are never inference failures: the model's outputs stand either way.
#[derive(Clone, Debug)]
pub struct FailureLog {
    interval: Duration,
    last: Option<Instant>,
    unlogged: u64,
    total: u64,
}

impl FailureLog {
    /// A log that prints at most one line per `interval`.
    pub fn new(interval: Duration) -> FailureLog {
        FailureLog {
            interval,
            last: None,
            unlogged: 0,
            total: 0,
        }
    }

    /// Notes a failure at `now`; returns the line to log when no line was logged within the
    /// interval.
    pub fn note(&mut self, error: &impl Display, now: Instant) -> Option<String> {
        self.total += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            self.unlogged += 1;
            return None;
        }
        let line = match self.unlogged {
            0 => format!("moescope: recording failed (inference unaffected): {error}"),
            n => format!(
                "moescope: recording failed (inference unaffected; {n} more failures since the \
                 last message): {error}"
            ),
        };
        self.last = Some(now);
        self.unlogged = 0;
        Some(line)
    }

    /// Failures noted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let mut log = FailureLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(log.note(&"a", t0).unwrap().ends_with(": a"));
        assert_eq!(log.note(&"b", t0 + Duration::from_secs(3)), None);
        assert_eq!(log.note(&"c", t0 + Duration::from_secs(9)), None);
        let line = log.note(&"d", t0 + Duration::from_secs(10)).unwrap();
        assert!(
            line.contains("2 more failures") && line.ends_with(": d"),
            "{line}"
        );
        assert_eq!(log.total(), 4);
    }
}
