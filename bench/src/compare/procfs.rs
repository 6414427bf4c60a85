//! Per-process CPU time and memory from `/proc`, and the machine description for reports.

use anyhow::{anyhow, Context, Result};

/// User + system CPU time of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu(&stat).ok_or_else(|| anyhow!("unparsable /proc/{pid}/stat"))
}

/// Extracts utime + stime from a `/proc/PID/stat` line.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    // The command name (field 2) is parenthesized and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is fields[N - 3].
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, usually 100).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_kb(&status, field)
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// Finds `field:   N kB` in a status file; returns N.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of `f(pid)` over `pids`.
pub fn sum_over(pids: &[u32], f: impl Fn(u32) -> Result<u64>) -> Result<u64> {
    pids.iter().map(|&p| f(p)).sum()
}

/// The soft "Max open files" limit of `pid` (`/proc/PID/limits`, what `ulimit -n` shows
/// inside it); `None` when unreadable or unlimited.
pub fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_nofile(&limits)
}

/// Extracts the soft limit from the `Max open files` line of a limits file.
pub fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's soft RLIMIT_NOFILE to `want` (never above the hard limit; never
/// lowers it). Children started afterwards inherit it. Returns the (soft, hard) limits now.
pub fn raise_nofile(want: u64) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        let want = want as libc::rlim_t;
        if r.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(r.rlim_max),
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
    }
    (r.rlim_cur, r.rlim_max)
}

/// The 1/5/15-minute load averages (`/proc/loadavg`), e.g. `1.52 0.98 0.61`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

/// What the results were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

impl Machine {
    /// Reads the description of this machine.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields() {
        let line = "1234 (redis server) S 1 1234 1234 0 -1 4194560 1449 0 0 0 250 75 0 0 20 0 \
                    5 0 123 100000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu(line), Some(325));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert!(cpu_ticks(std::process::id()).is_ok());
    }

    #[test]
    fn limits_file() {
        let l = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max processes             63455                63455                processes \n\
                 Max open files            20000                524288               files     \n";
        assert_eq!(parse_nofile(l), Some(20000));
        assert_eq!(
            parse_nofile("Max open files  unlimited unlimited files"),
            None
        );
        assert!(nofile_limit(std::process::id()).is_some());
        let (soft, hard) = raise_nofile(0);
        assert!(soft > 0 && soft <= hard);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tredis-server\nVmHWM:\t   10240 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(10240));
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(8192));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
        assert!(status_bytes(std::process::id(), "VmRSS").is_ok_and(|b| b > 0));
    }
}
