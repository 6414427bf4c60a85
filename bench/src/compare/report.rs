//! Aggregation (medians over rounds, ratios to redis-server) and the Markdown report.

use super::procfs::Machine;
use super::{CompareArgs, Tool, BASELINE};
use crate::stats::median;
use crate::workload::Workload;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One measured run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index into the report's target list.
    pub target: usize,
    /// Round number (0-based).
    pub round: usize,
    /// The load tool.
    pub tool: Tool,
    /// The workload.
    pub workload: Workload,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Requests per second.
    pub rps: f64,
    /// Median latency (µs), when the tool reports it.
    pub p50_us: Option<f64>,
    /// 99th percentile latency (µs), when the tool reports it.
    pub p99_us: Option<f64>,
    /// CPU seconds (user+system) per million requests of the measured processes (the server,
    /// or a front's proxy).
    pub cpu_per_mreq: Option<f64>,
    /// CPU seconds per million requests of all backend servers behind a front.
    pub backend_cpu_per_mreq: Option<f64>,
    /// Errors counted by the tool.
    pub errors: u64,
    /// Errors by kind, for the notes.
    pub error_kinds: String,
}

/// Memory after loading the memory workload into one target.
#[derive(Debug, Clone)]
pub struct MemorySample {
    /// Target label.
    pub target: String,
    /// DBSIZE after the load.
    pub dbsize: Option<u64>,
    /// VmRSS before the load (bytes).
    pub rss_before: u64,
    /// VmRSS after the load (bytes).
    pub rss_after: u64,
    /// VmHWM after the load (bytes).
    pub peak: Option<u64>,
}

/// Everything that goes into the results file.
pub struct Report {
    machine: Machine,
    command_line: String,
    args: CompareArgs,
    rounds: usize,
    requests: u64,
    /// Target labels, in the order of `Sample::target`.
    pub target_names: Vec<String>,
    /// One line per target.
    pub target_descriptions: Vec<String>,
    /// Every run.
    pub samples: Vec<Sample>,
    /// Peak RSS per target after the throughput runs.
    pub peak_rss: Vec<(String, Option<u64>)>,
    /// Keys loaded by the memory workload.
    pub memory_keys: u64,
    /// Memory workload results.
    pub memory: Vec<MemorySample>,
    /// Failures, skipped runs and other remarks.
    pub notes: Vec<String>,
    /// Wall time of the whole comparison.
    pub elapsed: Duration,
    started: SystemTime,
}

/// Medians of one (target, tool, workload, pipeline) cell.
#[derive(Debug, Clone, Copy)]
struct Cell {
    rps: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    cpu: Option<f64>,
    errors: u64,
    runs: usize,
}

impl Report {
    /// An empty report.
    pub fn new(
        machine: Machine,
        command_line: String,
        args: &CompareArgs,
        rounds: usize,
        requests: u64,
    ) -> Report {
        Report {
            machine,
            command_line,
            args: args.clone(),
            rounds,
            requests,
            target_names: Vec::new(),
            target_descriptions: Vec::new(),
            samples: Vec::new(),
            peak_rss: Vec::new(),
            memory_keys: 0,
            memory: Vec::new(),
            notes: Vec::new(),
            elapsed: Duration::ZERO,
            started: SystemTime::now(),
        }
    }

    fn cell(&self, target: usize, tool: Tool, w: Workload, p: usize) -> Option<Cell> {
        let s: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.target == target && s.tool == tool && s.workload == w && s.pipeline == p)
            .collect();
        if s.is_empty() {
            return None;
        }
        let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
            median(&s.iter().filter_map(|x| f(x)).collect::<Vec<_>>())
        };
        Some(Cell {
            rps: med(&|x| Some(x.rps)).unwrap_or(0.0),
            p50: med(&|x| x.p50_us),
            p99: med(&|x| x.p99_us),
            cpu: med(&|x| x.cpu_per_mreq),
            errors: s.iter().map(|x| x.errors).sum(),
            runs: s.len(),
        })
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let a = &self.args;
        let m = &self.machine;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "## slotgate-bench compare — {}\n",
            utc_stamp(self.started)
        );
        let _ = writeln!(
            o,
            "- Machine: {} cores, {}, kernel {}",
            m.cores, m.cpu_model, m.kernel
        );
        let _ = writeln!(o, "- Command: `{}`", self.command_line);
        let _ = writeln!(o, "- Targets (interleaved in this order each round):");
        for d in &self.target_descriptions {
            let _ = writeln!(o, "  - {d}");
        }
        let pipes: Vec<String> = a.pipelines.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            o,
            "- Load: -c {} -d {} -r {} (keyspace preloaded), -n {} at -P 1 and min(P,10)×that at \
             deeper pipelines (-P {}); {} round(s), medians shown; wall time {:.0} s",
            a.clients,
            a.data_size,
            a.keyspace,
            self.requests,
            pipes.join(","),
            self.rounds,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "- Clients and servers share the machine; CPU is the server processes' user+system \
             time from /proc/PID/stat; peak RSS is VmHWM after the throughput runs.\n"
        );

        let names = &self.target_names;
        let base = names.iter().position(|n| n == BASELINE);
        let _ = writeln!(o, "### Throughput, latency, CPU\n");
        let _ = writeln!(
            o,
            "| target | tool | workload | P | req/s | vs redis | p50 µs | p99 µs | CPU s/Mreq | CPU vs redis | peak RSS MiB | errors |"
        );
        let _ = writeln!(
            o,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &tool in &a.tools {
            for &w in &a.tests {
                for &p in &a.pipelines {
                    let b = base.and_then(|bi| self.cell(bi, tool, w, p));
                    for (ti, name) in names.iter().enumerate() {
                        let Some(c) = self.cell(ti, tool, w, p) else {
                            continue;
                        };
                        let rss = self
                            .peak_rss
                            .iter()
                            .find(|(n, _)| n == name)
                            .and_then(|(_, r)| *r);
                        let _ = writeln!(
                            o,
                            "| {name} | {} | {} | {p} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                            tool.name(),
                            w.name(),
                            c.rps,
                            ratio(Some(c.rps), b.map(|b| b.rps)),
                            opt(c.p50, 0),
                            opt(c.p99, 0),
                            opt(c.cpu, 2),
                            ratio(c.cpu, b.and_then(|b| b.cpu)),
                            opt(rss.map(mib), 1),
                            if c.runs == self.rounds {
                                c.errors.to_string()
                            } else {
                                format!("{} ({}/{} runs)", c.errors, c.runs, self.rounds)
                            }
                        );
                    }
                }
            }
        }

        if !self.memory.is_empty() {
            let _ = writeln!(
                o,
                "\n### Memory: {} keys × {} B (fresh process each)\n",
                self.memory_keys, a.data_size
            );
            let _ = writeln!(
                o,
                "| target | DBSIZE | RSS before MiB | RSS after MiB | bytes/key | RSS vs redis | peak RSS MiB |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
            let base_rss = self
                .memory
                .iter()
                .find(|m| m.target == BASELINE)
                .map(|m| m.rss_after as f64);
            for mem in &self.memory {
                let per_key = if self.memory_keys > 0 {
                    (mem.rss_after.saturating_sub(mem.rss_before)) as f64 / self.memory_keys as f64
                } else {
                    0.0
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.1} | {:.1} | {per_key:.0} | {} | {} |",
                    mem.target,
                    mem.dbsize
                        .map_or_else(|| "?".to_string(), |d| d.to_string()),
                    mib(mem.rss_before),
                    mib(mem.rss_after),
                    ratio(Some(mem.rss_after as f64), base_rss),
                    opt(mem.peak.map(mib), 1)
                );
            }
        }

        let mut notes = self.notes.clone();
        for s in &self.samples {
            if s.errors > 0 {
                notes.push(format!(
                    "{} {} -P {} against {} (round {}): {} errors: {}",
                    s.tool.name(),
                    s.workload.name(),
                    s.pipeline,
                    names.get(s.target).map_or("?", |n| n.as_str()),
                    s.round + 1,
                    s.errors,
                    s.error_kinds
                ));
            }
        }
        if !notes.is_empty() {
            let _ = writeln!(o, "\n### Notes\n");
            for n in notes {
                let _ = writeln!(o, "- {}", n.replace('\n', " "));
            }
        }
        o
    }

    /// Appends the report to `<dir>/<YYYY-MM-DD>.md`; returns the path.
    pub fn write(&self, dir: Option<PathBuf>) -> Result<PathBuf> {
        append_results(dir, self.started, &self.render())
    }
}

/// Appends `text` to `<dir>/<YYYY-MM-DD>.md` (date of `started`, UTC; `dir` defaults to
/// bench/results), with a title when the file is new and a rule otherwise; returns the path.
pub fn append_results(dir: Option<PathBuf>, started: SystemTime, text: &str) -> Result<PathBuf> {
    let dir = dir.unwrap_or_else(default_results_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.md", utc_date(started)));
    let exists = path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !exists {
        writeln!(f, "# slotgate benchmark results, {}\n", utc_date(started))?;
    } else {
        writeln!(f, "\n---\n")?;
    }
    f.write_all(text.as_bytes())?;
    Ok(path)
}

/// `bench/results` of this crate's source tree when it exists, else `./results`.
fn default_results_dir() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if src.is_dir() {
        src.join("results")
    } else {
        PathBuf::from("results")
    }
}

/// Bytes → MiB.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// `v` with `decimals` decimals, or `–` when missing or not finite.
pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "–".to_string(), |x| format!("{x:.decimals$}"))
}

/// `a / b` as `1.23×`, or `–` when either is missing or `b` is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}×", a / b),
        _ => "–".to_string(),
    }
}

/// Joins arguments into a command line a POSIX shell would split back the same way.
pub fn shell_join(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD` (UTC).
pub fn utc_date(t: SystemTime) -> String {
    let (y, m, d) = civil_from_days(unix_secs(t).div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc_stamp(t: SystemTime) -> String {
    let s = unix_secs(t).rem_euclid(86_400);
    format!("{} {:02}:{:02} UTC", utc_date(t), s / 3600, s % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_date(t), "2024-02-29");
        assert_eq!(utc_stamp(t), "2024-02-29 12:34 UTC");
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
    }

    #[test]
    fn quoting_and_ratios() {
        let args = ["bench", "--save", "", "it's", "-P", "1,16"].map(String::from);
        assert_eq!(shell_join(args), r"bench --save '' 'it'\''s' -P 1,16");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(1.0)), "–");
    }
}
