//! The front suite's Markdown report: throughput/latency/CPU per (target, tool, workload,
//! pipeline) with ratios to the direct client and to twemproxy, the proxies' memory, the
//! idle-connection check and the added latency at half load.

use super::front::{DIRECT, TWEMPROXY};
use super::procfs::{self, Machine};
use super::report::{mib, opt, ratio, utc_stamp, Sample};
use super::{CompareArgs, Tool};
use crate::stats::median;
use crate::workload::Workload;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// One paced run of the half-load latency check.
#[derive(Debug, Clone)]
pub struct HalfLoadSample {
    /// Index into the report's target list.
    pub target: usize,
    /// Achieved successful requests per second.
    pub rps: f64,
    /// Median latency (µs).
    pub p50_us: f64,
    /// 99th percentile latency (µs).
    pub p99_us: f64,
    /// Errors counted.
    pub errors: u64,
}

/// A proxy's memory while many idle clients are connected.
#[derive(Debug, Clone, Default)]
pub struct IdleSample {
    /// Target label.
    pub target: String,
    /// Connections open (each answered one PING).
    pub held: usize,
    /// Connections that could not be opened.
    pub failed: usize,
    /// Time taken to open them.
    pub open_secs: f64,
    /// VmRSS of the freshly started proxy (bytes).
    pub rss_before: u64,
    /// VmRSS with the connections open (bytes).
    pub rss_after: u64,
    /// VmHWM with the connections open (bytes).
    pub peak: Option<u64>,
    /// The proxy's soft open-files limit.
    pub nofile: Option<u64>,
    /// Whether one more client still got PONG while all were held.
    pub still_answers: bool,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Everything the front suite writes.
pub struct FrontReport {
    machine: Machine,
    command_line: String,
    args: CompareArgs,
    rounds: usize,
    requests: u64,
    loadavg_start: String,
    /// Load averages at the end.
    pub loadavg_end: String,
    /// When the suite started (names the results file).
    pub started: SystemTime,
    /// Wall time of the suite.
    pub elapsed: Duration,
    /// The runner's (soft, hard) RLIMIT_NOFILE after raising it.
    pub nofile: (u64, u64),
    /// Idle connections the check aimed for.
    pub idle_conns: usize,
    /// Target labels, in the order of `Sample::target`.
    pub target_names: Vec<String>,
    /// Whether each target is reached as a cluster (direct client).
    pub target_is_cluster: Vec<bool>,
    /// One line per target.
    pub target_descriptions: Vec<String>,
    /// Every throughput run.
    pub samples: Vec<Sample>,
    /// Per proxy: (label, VmHWM after the throughput runs, open-files limit).
    pub proxy_rss: Vec<(String, Option<u64>, Option<u64>)>,
    /// Half-load setup: (workload, pipeline, direct peak req/s, paced rate, run length).
    pub half_load: Option<(Workload, usize, f64, f64, Duration)>,
    /// Half-load runs.
    pub half_samples: Vec<HalfLoadSample>,
    /// Idle-connection results.
    pub idle: Vec<IdleSample>,
    /// Failures, skipped parts and remarks.
    pub notes: Vec<String>,
}

/// Medians of one (target, tool, workload, pipeline) cell.
#[derive(Debug, Clone, Copy)]
struct Cell {
    rps: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    cpu: Option<f64>,
    backend_cpu: Option<f64>,
    errors: u64,
    runs: usize,
}

impl FrontReport {
    /// An empty report (records the load averages now).
    pub fn new(
        machine: Machine,
        command_line: String,
        args: &CompareArgs,
        rounds: usize,
        requests: u64,
    ) -> FrontReport {
        FrontReport {
            machine,
            command_line,
            args: args.clone(),
            rounds,
            requests,
            loadavg_start: procfs::loadavg(),
            loadavg_end: String::new(),
            started: SystemTime::now(),
            elapsed: Duration::ZERO,
            nofile: (0, 0),
            idle_conns: 0,
            target_names: Vec::new(),
            target_is_cluster: Vec::new(),
            target_descriptions: Vec::new(),
            samples: Vec::new(),
            proxy_rss: Vec::new(),
            half_load: None,
            half_samples: Vec::new(),
            idle: Vec::new(),
            notes: Vec::new(),
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
            backend_cpu: med(&|x| x.backend_cpu_per_mreq),
            errors: s.iter().map(|x| x.errors).sum(),
            runs: s.len(),
        })
    }

    /// Median req/s of one cell, when it was measured.
    pub fn median_rps(&self, target: usize, tool: Tool, w: Workload, p: usize) -> Option<f64> {
        self.cell(target, tool, w, p)
            .map(|c| c.rps)
            .filter(|r| *r > 0.0)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.target_names.iter().position(|n| n == name)
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let a = &self.args;
        let m = &self.machine;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "## slotgate-bench compare --suite front — {}\n",
            utc_stamp(self.started)
        );
        let _ = writeln!(
            o,
            "- Machine: {} cores, {}, kernel {}; load average {} at start, {} at end",
            m.cores, m.cpu_model, m.kernel, self.loadavg_start, self.loadavg_end
        );
        let load1: f64 = self
            .loadavg_start
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if m.cores > 0 && load1 > m.cores as f64 {
            let _ = writeln!(
                o,
                "- **Busy machine**: load average {load1:.1} on {} cores when the suite \
                 started (other work ran alongside); treat the numbers as noisy.",
                m.cores
            );
        }
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
            "- Everything shares the machine. \"proxy CPU\" is the proxy process's user+system \
             time (/proc/PID/stat) per million requests; \"backend CPU\" the sum over all \
             backend servers. `redis-benchmark --cluster` tags its keys per node, so its GETs \
             against the direct cluster miss the preloaded keys.\n"
        );

        let names = &self.target_names;
        let direct = self.index_of(DIRECT);
        let twem = self.index_of(TWEMPROXY);
        let _ = writeln!(o, "### Throughput, latency, CPU\n");
        let _ = writeln!(
            o,
            "| target | tool | workload | P | req/s | vs direct | vs twemproxy | p50 µs | p99 µs | proxy CPU s/Mreq | proxy CPU vs twemproxy | backend CPU s/Mreq | errors |"
        );
        let _ = writeln!(
            o,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &tool in &a.tools {
            for &w in &a.tests {
                for &p in &a.pipelines {
                    let d = direct.and_then(|i| self.cell(i, tool, w, p));
                    let tw = twem.and_then(|i| self.cell(i, tool, w, p));
                    for (ti, name) in names.iter().enumerate() {
                        let Some(c) = self.cell(ti, tool, w, p) else {
                            continue;
                        };
                        let cluster = self.target_is_cluster.get(ti).copied().unwrap_or(false);
                        let _ = writeln!(
                            o,
                            "| {name} | {}{} | {} | {p} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            tool.name(),
                            if cluster { " --cluster" } else { "" },
                            w.name(),
                            c.rps,
                            ratio(Some(c.rps), d.map(|b| b.rps)),
                            ratio(Some(c.rps), tw.map(|b| b.rps)),
                            opt(c.p50, 0),
                            opt(c.p99, 0),
                            opt(c.cpu, 2),
                            ratio(c.cpu, tw.and_then(|b| b.cpu)),
                            opt(c.backend_cpu, 2),
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

        if !self.proxy_rss.is_empty() {
            let _ = writeln!(o, "\n### Proxy processes\n");
            let _ = writeln!(
                o,
                "| proxy | peak RSS MiB (after throughput) | vs twemproxy | open-files limit |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|");
            let tw = self
                .proxy_rss
                .iter()
                .find(|(n, _, _)| n == TWEMPROXY)
                .and_then(|(_, r, _)| *r)
                .map(|r| r as f64);
            for (name, rss, nofile) in &self.proxy_rss {
                let _ = writeln!(
                    o,
                    "| {name} | {} | {} | {} |",
                    opt(rss.map(mib), 1),
                    ratio(rss.map(|r| r as f64), tw),
                    nofile.map_or_else(|| "?".to_string(), |n| n.to_string())
                );
            }
        }

        if let Some((w, p, peak, rate, secs)) = self.half_load {
            let _ = writeln!(
                o,
                "\n### Added latency at half load\n\nslotgate-bench -t {} -P {p} -c {}, paced \
                 (open loop) at {rate:.0} req/s = 50% of the direct client's median peak \
                 ({peak:.0} req/s) for {:.1} s per run; medians of the rounds. Latency is from \
                 the write of a request to its reply.\n",
                w.name(),
                a.clients,
                secs.as_secs_f64()
            );
            let _ = writeln!(
                o,
                "| target | achieved req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | errors |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
            let med = |ti: usize, f: fn(&HalfLoadSample) -> f64| {
                let v: Vec<f64> = self
                    .half_samples
                    .iter()
                    .filter(|s| s.target == ti)
                    .map(f)
                    .collect();
                median(&v)
            };
            let d50 = direct.and_then(|d| med(d, |s| s.p50_us));
            let d99 = direct.and_then(|d| med(d, |s| s.p99_us));
            for (ti, name) in names.iter().enumerate() {
                let Some(rps) = med(ti, |s| s.rps) else {
                    continue;
                };
                let p50 = med(ti, |s| s.p50_us);
                let p99 = med(ti, |s| s.p99_us);
                let diff = |x: Option<f64>, b: Option<f64>| match (x, b) {
                    (Some(x), Some(b)) if Some(ti) != direct => format!("{:+.0}", x - b),
                    _ => "–".to_string(),
                };
                let errors: u64 = self
                    .half_samples
                    .iter()
                    .filter(|s| s.target == ti)
                    .map(|s| s.errors)
                    .sum();
                let _ = writeln!(
                    o,
                    "| {name} | {rps:.0} | {} | {} | {} | {} | {errors} |",
                    opt(p50, 0),
                    opt(p99, 0),
                    diff(p50, d50),
                    diff(p99, d99)
                );
            }
        }

        if !self.idle.is_empty() {
            let _ = writeln!(
                o,
                "\n### Memory with {} idle client connections\n\nEach proxy freshly restarted; \
                 connections opened in batches of 250, each answering one PING; runner \
                 RLIMIT_NOFILE raised to {} (hard {}), inherited by the proxies.\n",
                self.idle_conns, self.nofile.0, self.nofile.1
            );
            let _ = writeln!(
                o,
                "| proxy | held | failed | open s | RSS before MiB | RSS after MiB | KiB/conn | vs twemproxy | peak RSS MiB | open-files limit | PONG after |"
            );
            let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
            let per_conn = |s: &IdleSample| {
                (s.held > 0).then(|| {
                    s.rss_after.saturating_sub(s.rss_before) as f64 / s.held as f64 / 1024.0
                })
            };
            let tw = self
                .idle
                .iter()
                .find(|s| s.target == TWEMPROXY)
                .map(|s| s.rss_after as f64);
            for s in &self.idle {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                    s.target,
                    s.held,
                    s.failed,
                    s.open_secs,
                    mib(s.rss_before),
                    mib(s.rss_after),
                    opt(per_conn(s), 1),
                    ratio(Some(s.rss_after as f64), tw),
                    opt(s.peak.map(mib), 1),
                    s.nofile.map_or_else(|| "?".to_string(), |n| n.to_string()),
                    if s.still_answers { "yes" } else { "no" }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn sample(target: usize, rps: f64, cpu: Option<f64>) -> Sample {
        Sample {
            target,
            round: 0,
            tool: Tool::SlotgateBench,
            workload: Workload::Get,
            pipeline: 1,
            rps,
            p50_us: Some(100.0),
            p99_us: Some(300.0),
            cpu_per_mreq: cpu,
            backend_cpu_per_mreq: Some(4.0),
            errors: 0,
            error_kinds: String::new(),
        }
    }

    #[test]
    fn renders_ratios_to_direct_and_twemproxy() {
        let args = Wrap::parse_from(["x", "--suite", "front", "-t", "get", "-P", "1"]).args;
        let mut r = FrontReport::new(Machine::detect(), "cmd".into(), &args, 1, 1000);
        r.target_names = vec!["slotgate".into(), DIRECT.into(), TWEMPROXY.into()];
        r.target_is_cluster = vec![false, true, false];
        r.samples = vec![
            sample(0, 50_000.0, Some(3.0)),
            sample(1, 100_000.0, None),
            sample(2, 40_000.0, Some(2.0)),
        ];
        r.half_load = Some((
            Workload::Get,
            1,
            100_000.0,
            50_000.0,
            Duration::from_secs(1),
        ));
        r.half_samples = vec![
            HalfLoadSample {
                target: 0,
                rps: 49_000.0,
                p50_us: 150.0,
                p99_us: 900.0,
                errors: 0,
            },
            HalfLoadSample {
                target: 1,
                rps: 50_000.0,
                p50_us: 100.0,
                p99_us: 400.0,
                errors: 0,
            },
        ];
        r.idle = vec![IdleSample {
            target: "slotgate".into(),
            held: 1000,
            rss_before: 10 << 20,
            rss_after: 12 << 20,
            still_answers: true,
            ..IdleSample::default()
        }];
        assert_eq!(
            r.median_rps(1, Tool::SlotgateBench, Workload::Get, 1),
            Some(100_000.0)
        );
        let md = r.render();
        assert!(
            md.contains("| slotgate | slotgate-bench | get | 1 | 50000 | 0.50× | 1.25× | 100 | 300 | 3.00 | 1.50× | 4.00 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| direct | slotgate-bench --cluster | get | 1 | 100000 | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| slotgate | 49000 | 150 | 900 | +50 | +500 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| slotgate | 1000 | 0 | 0.0 | 10.0 | 12.0 | 2.0 |"),
            "{md}"
        );
    }
}
