//! Real Redis Cluster fixtures: N redis-server (or slotgate-node) processes in cluster mode,
//! formed with stock `redis-cli --cluster create`, plus a `slotgate` proxy in front.

use crate::{our_bin, require_peer, Proc};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct Cluster {
    /// The nodes (masters first, as given to `--cluster create`).
    pub nodes: Vec<Proc>,
}

fn spawn_cluster_node(bin: &Path, port: u16, timeout_ms: u64) -> Proc {
    let dir = std::env::temp_dir().join(format!(
        "slotgate-cluster-{}-{}-{}",
        std::process::id(),
        port,
        rand::random::<u32>()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let log = std::fs::File::create(dir.join("stdout.log")).expect("log");
    let log2 = log.try_clone().expect("log");
    let child = Command::new(bin)
        .current_dir(&dir)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout_ms.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn cluster node");
    Proc { child, port, dir }
}

/// Runs redis-cli with arguments; returns (success, stdout+stderr).
pub fn redis_cli(args: &[&str]) -> (bool, String) {
    let Some(cli) = crate::which("redis-cli") else {
        return (false, "redis-cli not installed".into());
    };
    // Bounded (coreutils `timeout`): a redis-cli that talks to the wrong process (a port
    // taken by someone else) must fail the test, not hang it.
    match Command::new("timeout")
        .arg("300")
        .arg(cli)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        ),
        Err(e) => (false, e.to_string()),
    }
}

impl Cluster {
    /// Starts a real redis-server cluster of `masters` masters with `replicas` replicas each.
    /// None (with a printed reason) when redis-server/redis-cli are missing; panics under CI.
    pub fn redis(masters: usize, replicas: usize, node_timeout_ms: u64) -> Option<Cluster> {
        let bin = require_peer("redis-server")?;
        require_peer("redis-cli")?;
        Some(Self::start(&bin, masters, replicas, node_timeout_ms))
    }

    /// Starts a cluster of `bin` processes and forms it with `redis-cli --cluster create`.
    pub fn start(bin: &Path, masters: usize, replicas: usize, node_timeout_ms: u64) -> Cluster {
        let n = masters * (1 + replicas);
        let nodes: Vec<Proc> = (0..n)
            .map(|_| {
                crate::start_on_free_port(|port| spawn_cluster_node(bin, port, node_timeout_ms))
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|p| p.addr()).collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(|s| s.as_str()));
        let r = replicas.to_string();
        args.extend(["--cluster-replicas", &r, "--cluster-yes"]);
        let (ok, out) = redis_cli(&args);
        assert!(
            ok && out.contains("[OK] All 16384 slots covered"),
            "cluster create failed: {out}"
        );
        let c = Cluster { nodes };
        c.wait_ok(Duration::from_secs(30));
        if replicas > 0 {
            c.wait_replicas_synced(Duration::from_secs(30));
        }
        c
    }

    /// Waits until every replica reports `master_link_status:up` (a replica that never synced
    /// cannot be promoted).
    pub fn wait_replicas_synced(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let pending: Vec<u16> = self
                .nodes
                .iter()
                .filter(|p| {
                    let (_, info) = redis_cli(&["-p", &p.port.to_string(), "info", "replication"]);
                    info.contains("role:slave") && !info.contains("master_link_status:up")
                })
                .map(|p| p.port)
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "replicas {pending:?} not synced after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every live node reports cluster_state:ok and agrees on the slot owners.
    pub fn wait_ok(&self, limit: Duration) {
        let t = Instant::now();
        loop {
            let all_ok = self.nodes.iter().all(|p| {
                let (_, out) = redis_cli(&["-p", &p.port.to_string(), "cluster", "info"]);
                out.contains("cluster_state:ok")
            });
            let (_, check) = redis_cli(&["--cluster", "check", &self.nodes[0].addr()]);
            if all_ok && check.contains("[OK] All nodes agree about slots configuration.") {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "cluster not ok after {limit:?}: {check}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Address of a seed node.
    pub fn seed(&self) -> String {
        self.nodes[0].addr()
    }

    /// Ports of the current masters (from CLUSTER NODES of a live node).
    pub fn master_ports(&self, via: u16) -> Vec<u16> {
        let (_, out) = redis_cli(&["-p", &via.to_string(), "cluster", "nodes"]);
        out.lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && l.split(' ').count() > 8)
            .filter_map(|l| {
                let addr = l.split(' ').nth(1)?;
                let hp = addr.split('@').next()?;
                hp.rsplit(':').next()?.parse().ok()
            })
            .collect()
    }
}

/// Starts the `slotgate` proxy in front of `seed` on a free port; waits until it serves.
pub fn start_proxy(seed: &str, extra: &[&str]) -> Proc {
    crate::start_on_free_port(|port| spawn_proxy(port, seed, extra))
}

fn spawn_proxy(port: u16, seed: &str, extra: &[&str]) -> Proc {
    let dir = std::env::temp_dir().join(format!("slotgate-proxy-{}-{}", std::process::id(), port));
    let _ = std::fs::create_dir_all(&dir);
    let log = std::fs::File::create(dir.join("stdout.log")).expect("log");
    let log2 = log.try_clone().expect("log");
    let child = Command::new(our_bin("slotgate"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--seed", seed])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn slotgate");
    Proc { child, port, dir }
}
