//! Progress of an encode run (sharded or one file) on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress on stderr: one updating line on a terminal, periodic plain lines otherwise.
pub(super) struct Progress {
    total: usize,
    start: Instant,
    last: Instant,
    tty: bool,
    enabled: bool,
}

impl Progress {
    pub(super) fn new(total: usize, enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            total,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    pub(super) fn update(&mut self, done: usize, force: bool) {
        if !self.enabled {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            format!("{:.0} s", (self.total - done.min(self.total)) as f64 / rate)
        } else {
            "?".into()
        };
        let pct = if self.total > 0 {
            100.0 * done as f64 / self.total as f64
        } else {
            100.0
        };
        let line = format!(
            "{done}/{} images ({pct:.1}%), {rate:.1} images/s, ETA {eta}",
            self.total
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "progress: {line}");
        }
        let _ = err.flush();
    }

    pub(super) fn finish(&mut self, done: usize) {
        if self.total == 0 {
            return;
        }
        self.update(done, true);
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}
