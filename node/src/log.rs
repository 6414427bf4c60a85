//! Logging in redis-server's format: `pid:role dd Mon yyyy hh:mm:ss.mmm <level> message`,
//! to stdout or to the `logfile`, filtered by `loglevel`.

use parking_lot::Mutex;
use std::io::Write;

/// Log levels, as redis names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `.`
    Debug,
    /// `-`
    Verbose,
    /// `*`
    Notice,
    /// `#`
    Warning,
}

impl Level {
    /// Parses a `loglevel` value.
    pub fn from_name(s: &str) -> Level {
        match s {
            "debug" => Level::Debug,
            "verbose" => Level::Verbose,
            "warning" | "nothing" => Level::Warning,
            _ => Level::Notice,
        }
    }

    fn mark(self) -> char {
        match self {
            Level::Debug => '.',
            Level::Verbose => '-',
            Level::Notice => '*',
            Level::Warning => '#',
        }
    }
}

/// The server's logger (owned by the server; cheap to share by reference).
pub struct Logger {
    level: Mutex<Level>,
    file: Mutex<Option<std::fs::File>>,
    role: Mutex<char>,
}

impl Logger {
    /// A logger writing to `logfile` (stdout when empty) at `level`.
    pub fn new(logfile: &str, level: Level) -> std::io::Result<Logger> {
        let file = if logfile.is_empty() {
            None
        } else {
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(logfile)?,
            )
        };
        Ok(Logger {
            level: Mutex::new(level),
            file: Mutex::new(file),
            role: Mutex::new('M'),
        })
    }

    /// Changes the level (CONFIG SET loglevel).
    pub fn set_level(&self, level: Level) {
        *self.level.lock() = level;
    }

    /// Sets the role letter: `M` master, `S` replica, `C` child, `X` sentinel.
    pub fn set_role(&self, role: char) {
        *self.role.lock() = role;
    }

    /// Writes one line at `level`.
    pub fn log(&self, level: Level, msg: &str) {
        if level < *self.level.lock() {
            return;
        }
        let line = format!(
            "{}:{} {} {} {}\n",
            std::process::id(),
            *self.role.lock(),
            timestamp(),
            level.mark(),
            msg
        );
        let mut f = self.file.lock();
        match f.as_mut() {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line.as_bytes());
                let _ = out.flush();
            }
        }
    }

    /// Notice level (`*`).
    pub fn notice(&self, msg: &str) {
        self.log(Level::Notice, msg)
    }

    /// Warning level (`#`).
    pub fn warning(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }

    /// Verbose level (`-`).
    pub fn verbose(&self, msg: &str) {
        self.log(Level::Verbose, msg)
    }
}

/// `22 Nov 2026 00:30:00.123` in UTC (redis uses local time; containers run in UTC).
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let ms = now.subsec_millis();
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02} {} {} {:02}:{:02}:{:02}.{:03}",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20779), (2026, 11, 22));
    }
}
