//! Running `redis-benchmark` with `--csv` and reading its results.

use super::target::ChildGuard;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One row of redis-benchmark's CSV output.
#[derive(Debug, Clone, PartialEq)]
pub struct RbRow {
    /// Test name (`SET`, `GET`, ...).
    pub test: String,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in ms, when reported.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in ms, when reported.
    pub p99_ms: Option<f64>,
}

/// Parses `--csv` output (a header line, then one quoted row per test).
pub fn parse_csv(out: &str) -> Result<Vec<RbRow>> {
    let mut lines = out.lines().map(str::trim).filter(|l| l.starts_with('"'));
    let header = lines
        .next()
        .ok_or_else(|| anyhow!("no CSV header in output"))?;
    let cols: Vec<String> = split_row(header);
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (Some(test_i), Some(rps_i)) = (col("test"), col("rps")) else {
        bail!("unexpected CSV header: {header}");
    };
    let (p50_i, p99_i) = (col("p50_latency_ms"), col("p99_latency_ms"));
    let mut rows = Vec::new();
    for l in lines {
        let f = split_row(l);
        let num = |i: Option<usize>| i.and_then(|i| f.get(i)).and_then(|v| v.parse::<f64>().ok());
        let Some(rps) = num(Some(rps_i)) else {
            bail!("unparsable CSV row: {l}");
        };
        rows.push(RbRow {
            test: f.get(test_i).cloned().unwrap_or_default(),
            rps,
            p50_ms: num(p50_i),
            p99_ms: num(p99_i),
        });
    }
    if rows.is_empty() {
        bail!("no result rows in redis-benchmark output");
    }
    Ok(rows)
}

fn split_row(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"').to_string())
        .collect()
}

/// One redis-benchmark invocation.
#[derive(Debug, Clone)]
pub struct RbRun<'a> {
    /// The redis-benchmark binary.
    pub bin: &'a Path,
    /// Target host.
    pub host: &'a str,
    /// Target port.
    pub port: u16,
    /// Pass `--cluster`.
    pub cluster: bool,
    /// Test (`set`, `get`, ...).
    pub test: &'a str,
    /// `-c`
    pub clients: usize,
    /// `-d`
    pub data_size: usize,
    /// `-r`
    pub keyspace: u64,
    /// `-n`
    pub requests: u64,
    /// `-P`
    pub pipeline: usize,
}

impl RbRun<'_> {
    /// The argument list (also shown in reports).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-h".into(),
            self.host.into(),
            "-p".into(),
            self.port.to_string(),
            "-t".into(),
            self.test.into(),
            "-c".into(),
            self.clients.to_string(),
            "-d".into(),
            self.data_size.to_string(),
            "-r".into(),
            self.keyspace.to_string(),
            "-n".into(),
            self.requests.to_string(),
            "-P".into(),
            self.pipeline.to_string(),
            "--csv".into(),
        ];
        if self.cluster {
            a.push("--cluster".into());
        }
        a
    }

    /// Runs it, killing it after `timeout` or once `stop` is set, and returns its result row.
    pub fn run(&self, timeout: Duration, stop: &AtomicBool) -> Result<RbRow> {
        let mut cmd = Command::new(self.bin);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(cmd, "redis-benchmark")?;
        let mut stdout = child
            .child_mut()
            .stdout
            .take()
            .ok_or_else(|| anyhow!("redis-benchmark stdout not captured"))?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let mut status = None;
        // Bounded by `deadline`; each step waits at most 100 ms.
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            status = child.wait_timeout(Duration::from_millis(100));
            if status.is_some() {
                break;
            }
        }
        if status.is_none() {
            child.terminate();
        }
        let out = reader
            .join()
            .map_err(|_| anyhow!("redis-benchmark output reader panicked"))?;
        let Some(status) = status else {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            bail!("redis-benchmark did not finish within {timeout:?}");
        };
        if !status.success() {
            bail!("redis-benchmark failed ({status}): {}", out.trim());
        }
        let rows = parse_csv(&out).with_context(|| format!("parsing: {}", out.trim()))?;
        rows.into_iter()
            .find(|r| r.test.eq_ignore_ascii_case(self.test))
            .ok_or_else(|| anyhow!("no {} row in redis-benchmark output", self.test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_7_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                   \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"141843.97\",\"0.205\",\"0.056\",\"0.183\",\"0.327\",\"0.631\",\"1.463\"\n\
                   \"GET\",\"150000.00\",\"0.2\",\"0.05\",\"0.17\",\"0.3\",\"0.5\",\"1.2\"\n";
        let rows = parse_csv(out).expect("valid csv");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            RbRow {
                test: "SET".into(),
                rps: 141843.97,
                p50_ms: Some(0.183),
                p99_ms: Some(0.631)
            }
        );
        assert_eq!(rows[1].test, "GET");
    }

    #[test]
    fn old_csv_without_percentiles_and_garbage() {
        let rows = parse_csv("\"test\",\"rps\"\n\"SET\",\"1000.5\"\n").expect("valid csv");
        assert_eq!(rows[0].p50_ms, None);
        assert!(parse_csv("").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n").is_err());
        assert!(parse_csv("\"a\",\"b\"\n\"x\",\"y\"\n").is_err());
    }
}
