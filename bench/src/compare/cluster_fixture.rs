//! A Redis Cluster on loopback for the front suite: N masters (redis-server, or any binary
//! taking the same arguments) started with `--cluster-enabled yes` in their own directories,
//! formed with `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, then
//! waited on until every node reports `cluster_state:ok`.
//!
//! The fixture owns its processes through [`ChildGuard`]s: dropping it stops them all and
//! removes the directories.

use super::target::{blocking_call, resolve_bin, wait_ready, ChildGuard};
use anyhow::{anyhow, bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long forming the cluster (create + convergence) may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(40);

/// A running, formed cluster of masters.
pub struct ClusterFixture {
    label: String,
    description: String,
    ports: Vec<u16>,
    pids: Vec<u32>,
    nodes: Mutex<Vec<ChildGuard>>,
    dir: PathBuf,
}

/// A free loopback port `p` whose cluster-bus port `p + 10000` is free as well.
fn free_cluster_port() -> Result<u16> {
    // Bounded: a handful of tries finds one in the usual ephemeral range.
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let p = l.local_addr()?.port();
        if p > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair (p, p+10000) found on loopback")
}

impl ClusterFixture {
    /// Starts `masters` nodes of `bin` (plus `extra_args`) under `<base_dir>/<label>-<i>`,
    /// forms the cluster with `redis_cli` and waits until it is usable.
    pub fn start(
        label: &str,
        bin: &Path,
        extra_args: &[String],
        masters: usize,
        redis_cli: &Path,
        base_dir: &Path,
        stop: &AtomicBool,
    ) -> Result<ClusterFixture> {
        let dir = base_dir.join(label);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut fx = ClusterFixture {
            label: label.to_string(),
            description: String::new(),
            ports: Vec::new(),
            pids: Vec::new(),
            nodes: Mutex::new(Vec::new()),
            dir,
        };
        for i in 0..masters {
            let port = free_cluster_port()?;
            let ndir = fx.dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&ndir)?;
            let log_path = ndir.join("server.log");
            let log = std::fs::File::create(&log_path)?;
            let mut cmd = Command::new(bin);
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&ndir)
                .args(extra_args)
                .current_dir(&ndir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let mut child = ChildGuard::spawn(cmd, &format!("{label} node {i}"))?;
            let addr = format!("127.0.0.1:{port}");
            if let Err(e) = wait_ready(&addr, || child.try_wait().is_none()) {
                bail!(
                    "{label} node {i} did not start: {e:#}\n--- {} ---\n{}",
                    log_path.display(),
                    log_tail(&log_path, 15)
                );
            }
            fx.pids.push(child.pid());
            fx.ports.push(port);
            fx.lock_nodes().push(child);
        }
        fx.form(redis_cli, stop)?;
        fx.description = format!(
            "{masters} masters of `{}` ({}), `--cluster-enabled yes`, formed with `redis-cli \
             --cluster create --cluster-replicas 0`",
            resolve_bin(bin).display(),
            bin_version(bin)
        );
        Ok(fx)
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Vec<ChildGuard>> {
        // A poisoned lock only means a panic elsewhere; the guards are still valid.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `redis-cli --cluster create`, then waits for every node to agree the cluster is ok.
    fn form(&self, redis_cli: &Path, stop: &AtomicBool) -> Result<()> {
        let log_path = self.dir.join("create.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(redis_cli);
        cmd.arg("--cluster")
            .arg("create")
            .args(self.addrs())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = ChildGuard::spawn(cmd, "redis-cli --cluster create")?;
        let status = child.wait_timeout(FORM_TIMEOUT);
        match status {
            Some(s) if s.success() => {}
            Some(s) => bail!(
                "redis-cli --cluster create failed for {} ({s}):\n{}",
                self.label,
                log_tail(&log_path, 15)
            ),
            None => bail!(
                "redis-cli --cluster create did not finish within {FORM_TIMEOUT:?}:\n{}",
                log_tail(&log_path, 15)
            ),
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        let want_nodes = format!("cluster_known_nodes:{}", self.ports.len());
        let mut last = String::new();
        // Bounded by `deadline` (and the attempt cap); 100 ms per round.
        for _ in 0..10_000 {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let mut all_ok = true;
            for addr in self.addrs() {
                let info = blocking_call(&addr, &["CLUSTER", "INFO"], Duration::from_secs(2))
                    .map(|r| String::from_utf8_lossy(&r).into_owned())
                    .unwrap_or_else(|e| e.to_string());
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.contains(&want_nodes);
                if !ok {
                    all_ok = false;
                    last = format!("{addr}: {}", info.replace("\r\n", " "));
                    break;
                }
            }
            if all_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(anyhow!(
            "{} did not reach cluster_state:ok within {FORM_TIMEOUT:?} (last: {last})",
            self.label
        ))
    }

    /// Label of the cluster (`redis-cluster`, `node-cluster`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// One line about the cluster, for reports.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Every master as `127.0.0.1:port`.
    pub fn addrs(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The seed clients discover the cluster from (the first master).
    pub fn seed(&self) -> String {
        self.addrs().into_iter().next().unwrap_or_default()
    }

    /// Process ids of the masters.
    pub fn pids(&self) -> Vec<u32> {
        self.pids.clone()
    }

    /// True while every master process runs.
    pub fn alive(&self) -> bool {
        self.lock_nodes().iter_mut().all(|c| c.try_wait().is_none())
    }

    /// Stops every node (also done on drop).
    pub fn stop(&self) {
        let mut nodes = self.lock_nodes();
        // SIGTERM to all first so they shut down in parallel, then reap each.
        for c in nodes.iter_mut() {
            if c.try_wait().is_none() {
                // SAFETY: signalling our own, not yet reaped child by its pid.
                unsafe {
                    libc::kill(c.pid() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for c in nodes.iter_mut() {
            c.terminate();
        }
        nodes.clear();
    }
}

impl Drop for ClusterFixture {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last `n` lines of a log, without terminal colour codes (redis-cli prints them).
fn log_tail(path: &Path, n: usize) -> String {
    strip_ansi(&super::target::log_tail(path, n))
}

/// Removes `ESC [ ... <letter>` sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the final byte of the sequence (bounded by the input).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first line of `<bin> --version`, or `version unknown`.
pub fn bin_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "version unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1m[ERR] Node x\u{1b}[0m done"),
            "[ERR] Node x done"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
