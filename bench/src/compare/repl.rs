//! The replication suite (`compare --suite repl`): redis-server and slotgate-node side by side
//! on three measurements of issue 6.
//!
//! * **Failover time**: a 3-master / 3-replica cluster (`redis-cli --cluster create
//!   --cluster-replicas 1`, `cluster-node-timeout` 2000 ms); a master is killed with SIGKILL
//!   and the clock runs until a live node names a new owner for a slot of the dead master, a
//!   SET of a key in that slot is answered `+OK` by that owner, and every live node reports
//!   `cluster_state:ok` (polled every 20 ms). The old master is then restarted in place and
//!   must rejoin as a replica before the next round kills another master.
//! * **Replication lag** under a paced SET load (`--lag-rate`, default 50,000 writes/s, open
//!   loop, 50 connections) on a standalone master with one replica: a probe writes
//!   `SET __lag_probe <seq>` on the master every 10 ms over its own connection and then reads
//!   the key on the replica in a tight loop until it returns `<seq>`. The lag of a probe is
//!   the time from the master's `+OK` to the first replica read that returns the new value
//!   (resolution: one GET round trip). Reported: p50 / p99 / max over all probes.
//! * **Full sync time**: `DEBUG POPULATE <--sync-keys>` on a standalone master (started with
//!   `--enable-debug-command local`, which Redis 7 needs for DEBUG), then a replica
//!   is started with `--replicaof`; the time from its spawn until it reports
//!   `master_link_status:up` and the master's DBSIZE (polled every 20 ms).
//!
//! Every server gets `--repl-diskless-sync-delay 0` (Redis 7.0 otherwise waits 5 s before a
//! full sync to batch replicas). A side that fails (e.g. slotgate-node before replication is
//! implemented) is reported as `failed: <reason>`; the suite goes on with the other one.

use super::cluster_fixture::{bin_version, strip_ansi};
use super::procfs::{self, Machine};
use super::report::{append_results, shell_join, utc_stamp};
use super::target::{log_tail, resolve_bin, wait_ready, ChildGuard};
use super::{check_stop, node_bin, Plan, TargetKind, BASELINE};
use crate::loadgen::{self, LoadConfig};
use crate::stats::{median, Latency, LatencySummary};
use crate::workload::Workload;
use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use slotgate_protocol::resp::write_command;
use slotgate_protocol::{decode_frame, key_slot, Frame};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Arguments every server of this suite gets: start a full sync at once.
const FAST_SYNC: [&str; 2] = ["--repl-diskless-sync-delay", "0"];
/// Longest wait for a cluster to form or a replica to link.
const LINK_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest wait for a failover after the kill.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Period of the failover poll.
const POLL: Duration = Duration::from_millis(20);
/// Period of the lag probe.
const PROBE_PERIOD: Duration = Duration::from_millis(10);
/// A probe not seen on the replica after this long counts as lost.
const PROBE_GIVE_UP: Duration = Duration::from_secs(5);
/// Connections of the paced load.
const LAG_CONNS: usize = 50;

/// One server kind under test.
struct Kind {
    label: String,
    bin: PathBuf,
    extra: Vec<String>,
}

impl Kind {
    fn describe(&self) -> String {
        format!(
            "`{}` — `{}` ({}){}",
            self.label,
            resolve_bin(&self.bin).display(),
            bin_version(&self.bin),
            if self.extra.is_empty() {
                String::new()
            } else {
                format!(
                    ", extra arguments `{}`",
                    shell_join(self.extra.iter().cloned())
                )
            }
        )
    }
}

/// Results of the failover measurement of one kind.
#[derive(Debug, Default)]
struct FailoverResult {
    /// Seconds from kill -9 to served slots + cluster ok, per round.
    secs: Vec<f64>,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// Results of the lag measurement of one kind.
#[derive(Debug)]
struct LagResult {
    offered: f64,
    achieved: f64,
    load_errors: u64,
    lag: LatencySummary,
    lost: u64,
}

/// Results of the full sync of one kind.
#[derive(Debug)]
struct SyncResult {
    keys: u64,
    secs: f64,
    populate_secs: f64,
}

/// Everything the suite writes.
struct ReplReport {
    started: SystemTime,
    machine: Machine,
    command_line: String,
    loadavg_start: String,
    loadavg_end: String,
    descriptions: Vec<String>,
    node_timeout_ms: u64,
    rounds: usize,
    lag_secs: f64,
    failover: Vec<(String, FailoverResult)>,
    lag: Vec<(String, Result<LagResult, String>)>,
    sync: Vec<(String, Result<SyncResult, String>)>,
    notes: Vec<String>,
    elapsed: Duration,
}

/// Runs the suite and writes the report.
pub(crate) fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    machine: &Machine,
) -> Result<()> {
    let a = &plan.args;
    let started = Instant::now();
    let deadline = started + plan.max_time;
    let base = std::env::temp_dir().join(format!("slotgate-bench-repl-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut kinds = Vec::new();
    for t in &a.targets {
        kinds.push(match t {
            TargetKind::Redis => Kind {
                label: BASELINE.to_string(),
                bin: a.redis_bin.clone(),
                extra: Vec::new(),
            },
            TargetKind::Node => Kind {
                label: "slotgate-node".to_string(),
                bin: node_bin(a)?,
                extra: a.node_args.clone(),
            },
        });
    }
    // Servers run in their own directories: a relative binary path must not depend on that.
    for k in kinds.iter_mut() {
        if k.bin.components().count() > 1 {
            if let Ok(abs) = std::fs::canonicalize(&k.bin) {
                k.bin = abs;
            }
        }
    }
    let mut rep = ReplReport {
        started: SystemTime::now(),
        machine: machine.clone(),
        command_line: shell_join(std::env::args()),
        loadavg_start: procfs::loadavg(),
        loadavg_end: String::new(),
        descriptions: kinds.iter().map(Kind::describe).collect(),
        node_timeout_ms: a.repl_node_timeout,
        rounds: plan.rounds,
        lag_secs: plan.lag_secs,
        failover: Vec::new(),
        lag: Vec::new(),
        sync: Vec::new(),
        notes: Vec::new(),
        elapsed: Duration::ZERO,
    };

    for k in &kinds {
        check_stop(stop)?;
        if Instant::now() + Duration::from_secs(30) > deadline {
            rep.notes.push(format!(
                "time budget exhausted: failover of {} skipped",
                k.label
            ));
            continue;
        }
        eprintln!("failover: {} ({} rounds)", k.label, plan.rounds);
        let dir = base.join(format!("failover-{}", k.label));
        let r = measure_failover(
            k,
            &a.redis_cli,
            &dir,
            a.repl_node_timeout,
            plan.rounds,
            stop,
        );
        if let Some(e) = &r.error {
            eprintln!("  failed: {e}");
        }
        rep.failover.push((k.label.clone(), r));
    }
    for k in &kinds {
        check_stop(stop)?;
        if Instant::now() + Duration::from_secs_f64(plan.lag_secs + 20.0) > deadline {
            rep.notes
                .push(format!("time budget exhausted: lag of {} skipped", k.label));
            continue;
        }
        eprintln!(
            "lag: {} at {} writes/s for {} s",
            k.label, a.lag_rate, plan.lag_secs
        );
        let dir = base.join(format!("lag-{}", k.label));
        let r =
            measure_lag(k, &dir, a.lag_rate, plan.lag_secs, rt, stop).map_err(|e| format!("{e:#}"));
        match &r {
            Ok(l) => eprintln!(
                "  p50 {:.2} ms, p99 {:.2} ms over {} probes",
                l.lag.p50 as f64 / 1000.0,
                l.lag.p99 as f64 / 1000.0,
                l.lag.count
            ),
            Err(e) => eprintln!("  failed: {e}"),
        }
        rep.lag.push((k.label.clone(), r));
    }
    for k in &kinds {
        check_stop(stop)?;
        if Instant::now() + Duration::from_secs(20) > deadline {
            rep.notes.push(format!(
                "time budget exhausted: full sync of {} skipped",
                k.label
            ));
            continue;
        }
        eprintln!("full sync: {} with {} keys", k.label, plan.sync_keys);
        let dir = base.join(format!("sync-{}", k.label));
        let left = deadline.saturating_duration_since(Instant::now());
        let r =
            measure_full_sync(k, &dir, plan.sync_keys, left, stop).map_err(|e| format!("{e:#}"));
        match &r {
            Ok(s) => eprintln!("  {:.2} s", s.secs),
            Err(e) => eprintln!("  failed: {e}"),
        }
        rep.sync.push((k.label.clone(), r));
    }
    rep.loadavg_end = procfs::loadavg();
    rep.elapsed = started.elapsed();
    let failed = rep.failover.iter().any(|(_, r)| r.error.is_some())
        || rep.lag.iter().any(|(_, r)| r.is_err())
        || rep.sync.iter().any(|(_, r)| r.is_err());
    if failed {
        rep.notes
            .push(format!("server logs kept in {}", base.display()));
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    let text = rep.render(a.lag_rate);
    println!("{text}");
    if !a.no_write {
        let path = append_results(a.out_dir.clone(), rep.started, &text)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Small blocking client
// ------------------------------------------------------------------------------------------

/// A blocking request/reply connection with timeouts.
struct Link {
    s: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Link {
    fn connect(port: u16, timeout: Duration) -> Result<Link> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to port {port}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Link {
            s,
            buf: BytesMut::with_capacity(4096),
            out: BytesMut::with_capacity(256),
        })
    }

    fn call(&mut self, args: &[&str]) -> Result<Frame> {
        self.out.clear();
        write_command(&mut self.out, args);
        self.s.write_all(&self.out)?;
        let mut tmp = [0u8; 16384];
        // Bounded by the read timeout per read and the reply size cap.
        while self.buf.len() < 64 * 1024 * 1024 {
            if let Some(f) = decode_frame(&mut self.buf)? {
                return Ok(f);
            }
            let n = self.s.read(&mut tmp)?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
        bail!("reply too large")
    }
}

/// One command on a fresh connection.
fn call(port: u16, args: &[&str], timeout: Duration) -> Result<Frame> {
    Link::connect(port, timeout)?.call(args)
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Error(b) | Frame::Verbatim(_, b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        Frame::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A field of `INFO <section>`, None when unreachable or absent.
fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let f = call(port, &["INFO", section], Duration::from_secs(2)).ok()?;
    text(&f).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

fn dbsize(port: u16) -> Option<i64> {
    match call(port, &["DBSIZE"], Duration::from_secs(5)) {
        Ok(Frame::Integer(n)) => Some(n),
        _ => None,
    }
}

fn linked_to(port: u16, master: u16) -> bool {
    let Ok(f) = call(port, &["INFO", "replication"], Duration::from_secs(2)) else {
        return false;
    };
    let t = text(&f);
    t.contains("role:slave")
        && t.contains(&format!("master_port:{master}\r"))
        && t.contains("master_link_status:up")
}

/// Polls `f` every `period` until true or `limit`; returns the elapsed time or an error
/// naming `what`.
fn poll(
    what: &str,
    limit: Duration,
    period: Duration,
    stop: &AtomicBool,
    mut f: impl FnMut() -> bool,
) -> Result<Duration> {
    let t = Instant::now();
    // Bounded by `limit` and by the iteration cap.
    for _ in 0..10_000_000u64 {
        if f() {
            return Ok(t.elapsed());
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if t.elapsed() >= limit {
            break;
        }
        std::thread::sleep(period);
    }
    bail!("{what}: not within {limit:?}")
}

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

/// A loopback port `p` with `p + 10000` free as well (the cluster bus).
fn free_port_pair() -> Result<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let p = l.local_addr()?.port();
        if p <= 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair (p, p+10000) on loopback")
}

/// Starts a server of `kind` on `port` in `dir` (created; log appended to `dir/server.log`).
fn spawn(
    kind: &Kind,
    port: u16,
    dir: &Path,
    cluster_timeout: Option<u64>,
    extra: &[&str],
) -> Result<ChildGuard> {
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = Command::new(&kind.bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(FAST_SYNC);
    if let Some(t) = cluster_timeout {
        cmd.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", &t.to_string()]);
    }
    cmd.args(&kind.extra)
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = ChildGuard::spawn(cmd, &format!("{} on port {port}", kind.label))?;
    if let Err(e) = wait_ready(&format!("127.0.0.1:{port}"), || child.try_wait().is_none()) {
        bail!(
            "{} on port {port} did not start: {e:#}\n{}",
            kind.label,
            log_tail(&log_path, 10)
        );
    }
    Ok(child)
}

/// SIGKILL, then reap.
fn kill9(c: &mut ChildGuard) {
    // SAFETY: signalling our own child, not yet reaped, by its pid.
    unsafe {
        libc::kill(c.pid() as libc::pid_t, libc::SIGKILL);
    }
    let _ = c.wait_timeout(Duration::from_secs(5));
}

// ------------------------------------------------------------------------------------------
// Failover
// ------------------------------------------------------------------------------------------

/// One CLUSTER NODES line: (id, port, flags, master id, slot ranges).
struct NodeLine {
    id: String,
    port: u16,
    flags: String,
    master: String,
    slots: Vec<(u16, u16)>,
}

fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    let Ok(f) = call(port, &["CLUSTER", "NODES"], Duration::from_secs(2)) else {
        return Vec::new();
    };
    text(&f)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            if w.len() < 8 {
                return None;
            }
            let port = w[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = w[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeLine {
                id: w[0].to_string(),
                port,
                flags: w[2].to_string(),
                master: w[3].to_string(),
                slots,
            })
        })
        .collect()
}

fn has_flag(flags: &str, f: &str) -> bool {
    flags.split(',').any(|x| x == f)
}

fn cluster_ok(port: u16) -> bool {
    call(port, &["CLUSTER", "INFO"], Duration::from_secs(2))
        .map(|f| text(&f).contains("cluster_state:ok"))
        .unwrap_or(false)
}

/// A 3+3 cluster of one kind; slots of `nodes` are `None` while a node is down.
struct BenchCluster<'a> {
    kind: &'a Kind,
    timeout_ms: u64,
    nodes: Vec<(u16, PathBuf, Option<ChildGuard>)>,
}

impl BenchCluster<'_> {
    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.2.is_some())
            .map(|n| n.0)
            .collect()
    }

    /// Every live node ok, and every live node that is a replica in its own view linked.
    fn healthy(&self) -> bool {
        self.live_ports().iter().all(|&p| {
            if !cluster_ok(p) {
                return false;
            }
            let me = cluster_nodes(p)
                .into_iter()
                .find(|n| has_flag(&n.flags, "myself"));
            match me {
                Some(n) if has_flag(&n.flags, "slave") => {
                    info_field(p, "replication", "master_link_status").as_deref() == Some("up")
                        && info_field(p, "replication", "role").as_deref() == Some("slave")
                }
                Some(_) => true,
                None => false,
            }
        })
    }

    fn restart(&mut self, i: usize) -> Result<()> {
        let (port, dir) = (self.nodes[i].0, self.nodes[i].1.clone());
        let c = spawn(self.kind, port, &dir, Some(self.timeout_ms), &[])?;
        self.nodes[i].2 = Some(c);
        Ok(())
    }
}

fn form_cluster<'a>(
    kind: &'a Kind,
    redis_cli: &Path,
    dir: &Path,
    timeout_ms: u64,
    stop: &AtomicBool,
) -> Result<BenchCluster<'a>> {
    let mut c = BenchCluster {
        kind,
        timeout_ms,
        nodes: Vec::new(),
    };
    for i in 0..6 {
        let port = free_port_pair()?;
        let ndir = dir.join(format!("node-{i}"));
        let child = spawn(kind, port, &ndir, Some(timeout_ms), &[])?;
        c.nodes.push((port, ndir, Some(child)));
    }
    let addrs: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.0))
        .collect();
    let log_path = dir.join("create.log");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(redis_cli);
    cmd.args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut cli = ChildGuard::spawn(cmd, "redis-cli --cluster create")?;
    match cli.wait_timeout(LINK_TIMEOUT) {
        Some(s) if s.success() => {}
        other => bail!(
            "redis-cli --cluster create failed ({other:?}): {}",
            strip_ansi(&log_tail(&log_path, 5))
        ),
    }
    poll(
        "cluster ok with every replica linked",
        LINK_TIMEOUT,
        Duration::from_millis(200),
        stop,
        || {
            c.healthy()
                && cluster_nodes(c.nodes[0].0)
                    .iter()
                    .filter(|n| has_flag(&n.flags, "slave"))
                    .count()
                    == 3
        },
    )?;
    Ok(c)
}

fn measure_failover(
    kind: &Kind,
    redis_cli: &Path,
    dir: &Path,
    timeout_ms: u64,
    rounds: usize,
    stop: &AtomicBool,
) -> FailoverResult {
    let mut out = FailoverResult::default();
    let mut c = match form_cluster(kind, redis_cli, dir, timeout_ms, stop) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    for round in 0..rounds {
        match failover_round(&mut c, round, stop) {
            Ok(secs) => {
                eprintln!("  round {}: {secs:.2} s", round + 1);
                out.secs.push(secs);
            }
            Err(e) => {
                out.error = Some(format!("round {}: {e:#}", round + 1));
                break;
            }
        }
    }
    out
}

/// Kills one master, times the failover, restarts it in place and waits until it is a
/// linked replica again.
fn failover_round(c: &mut BenchCluster, round: usize, stop: &AtomicBool) -> Result<f64> {
    let view_port = c.live_ports()[0];
    let nodes = cluster_nodes(view_port);
    let mut masters: Vec<&NodeLine> = nodes
        .iter()
        .filter(|n| has_flag(&n.flags, "master") && !n.slots.is_empty())
        .filter(|m| {
            nodes
                .iter()
                .any(|r| has_flag(&r.flags, "slave") && r.master == m.id)
        })
        .collect();
    masters.sort_by_key(|m| m.port);
    let victim = masters
        .get(round % masters.len().max(1))
        .ok_or_else(|| anyhow!("no master with a replica to kill"))?;
    let (victim_port, victim_id) = (victim.port, victim.id.clone());
    let (s0, s1) = victim.slots[0];
    let probe = (0..1_000_000u32)
        .map(|i| format!("probe:{i}"))
        .find(|k| (s0..=s1).contains(&key_slot(k.as_bytes())))
        .ok_or_else(|| anyhow!("no probe key found"))?;
    let slot = key_slot(probe.as_bytes());
    let vi = c
        .nodes
        .iter()
        .position(|n| n.0 == victim_port)
        .ok_or_else(|| anyhow!("victim {victim_port} is not ours"))?;

    let t0 = Instant::now();
    if let Some(mut child) = c.nodes[vi].2.take() {
        kill9(&mut child);
    }
    let live = c.live_ports();
    poll(
        "slots of the killed master served and cluster_state:ok",
        FAILOVER_TIMEOUT,
        POLL,
        stop,
        || {
            let Some(owner) = live.iter().find_map(|&p| {
                let ns = cluster_nodes(p);
                if ns.is_empty() {
                    return None;
                }
                Some(
                    ns.into_iter()
                        .find(|n| {
                            has_flag(&n.flags, "master")
                                && !has_flag(&n.flags, "fail")
                                && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
                        })
                        .map(|n| n.port),
                )
            }) else {
                return false;
            };
            match owner {
                Some(p) if p != victim_port => {
                    matches!(call(p, &["SET", &probe, "1"], Duration::from_secs(1)), Ok(Frame::Simple(ref s)) if &s[..] == b"OK")
                        && live.iter().all(|&q| cluster_ok(q))
                }
                _ => false,
            }
        },
    )?;
    let secs = t0.elapsed().as_secs_f64();
    // The old master comes back and must rejoin as a replica before the next round.
    c.restart(vi)?;
    poll(
        "the restarted master to rejoin as a linked replica",
        LINK_TIMEOUT,
        Duration::from_millis(100),
        stop,
        || {
            let me = cluster_nodes(victim_port)
                .into_iter()
                .find(|n| has_flag(&n.flags, "myself"));
            me.is_some_and(|n| n.id == victim_id && has_flag(&n.flags, "slave")) && c.healthy()
        },
    )?;
    Ok(secs)
}

// ------------------------------------------------------------------------------------------
// Lag
// ------------------------------------------------------------------------------------------

fn standalone_pair(
    kind: &Kind,
    dir: &Path,
    stop: &AtomicBool,
) -> Result<(ChildGuard, u16, ChildGuard, u16)> {
    let mp = free_port_pair()?;
    let master = spawn(kind, mp, &dir.join("master"), None, &[])?;
    let rp = free_port_pair()?;
    let mps = mp.to_string();
    let replica = spawn(
        kind,
        rp,
        &dir.join("replica"),
        None,
        &["--replicaof", "127.0.0.1", &mps],
    )?;
    poll(
        "the replica's link up",
        LINK_TIMEOUT,
        Duration::from_millis(50),
        stop,
        || linked_to(rp, mp),
    )?;
    Ok((master, mp, replica, rp))
}

fn measure_lag(
    kind: &Kind,
    dir: &Path,
    rate: f64,
    secs: f64,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
) -> Result<LagResult> {
    let (_m, mp, _r, rp) = standalone_pair(kind, dir, stop)?;
    let cfg = LoadConfig {
        addr: format!("127.0.0.1:{mp}"),
        connections: LAG_CONNS,
        pipeline: 1,
        requests: None,
        duration: Some(Duration::from_secs_f64(secs)),
        timeout: Duration::from_secs_f64(secs + 30.0),
        workload: Workload::Set,
        verify: false,
        progress: false,
        rate: Some(rate),
        ..LoadConfig::default()
    };
    let load = rt.spawn(loadgen::run(cfg, stop.clone()));
    // Let the load reach its pace before probing.
    std::thread::sleep(Duration::from_millis(300));
    let mut m = Link::connect(mp, Duration::from_secs(5))?;
    let mut r = Link::connect(rp, Duration::from_secs(5))?;
    let mut hist = Latency::new();
    let mut lost = 0u64;
    let end = Instant::now() + Duration::from_secs_f64((secs - 0.5).max(0.5));
    let mut next = Instant::now();
    let mut seq: u64 = 0;
    // Bounded by `end` (each probe by PROBE_GIVE_UP) and by the stop flag.
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        seq += 1;
        let v = seq.to_string();
        let reply = m.call(&["SET", "__lag_probe", &v])?;
        if !matches!(&reply, Frame::Simple(s) if &s[..] == b"OK") {
            bail!("probe SET on the master: {reply:?}");
        }
        let acked = Instant::now();
        let seen = loop {
            let got = r.call(&["GET", "__lag_probe"])?;
            if matches!(&got, Frame::Bulk(b) if b[..] == *v.as_bytes()) {
                break Some(acked.elapsed());
            }
            if acked.elapsed() > PROBE_GIVE_UP {
                break None;
            }
        };
        match seen {
            Some(d) => hist.record(d.as_micros() as u64),
            None => lost += 1,
        }
        next += PROBE_PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    let report = rt
        .block_on(load)
        .map_err(|e| anyhow!("load task failed: {e}"))??;
    if hist.is_empty() {
        bail!("no probe reached the replica ({lost} lost)");
    }
    Ok(LagResult {
        offered: rate,
        achieved: report.rps(),
        load_errors: report.errors.total(),
        lag: hist.summary(),
        lost,
    })
}

// ------------------------------------------------------------------------------------------
// Full sync
// ------------------------------------------------------------------------------------------

fn measure_full_sync(
    kind: &Kind,
    dir: &Path,
    keys: u64,
    left: Duration,
    stop: &AtomicBool,
) -> Result<SyncResult> {
    let mp = free_port_pair()?;
    let _master = spawn(
        kind,
        mp,
        &dir.join("master"),
        None,
        &["--enable-debug-command", "local"],
    )?;
    let t = Instant::now();
    let n = keys.to_string();
    let reply = call(mp, &["DEBUG", "POPULATE", &n], Duration::from_secs(300))?;
    if !matches!(&reply, Frame::Simple(s) if &s[..] == b"OK") {
        bail!("DEBUG POPULATE {keys}: {}", text(&reply));
    }
    let populate_secs = t.elapsed().as_secs_f64();
    let want = dbsize(mp).ok_or_else(|| anyhow!("DBSIZE on the master failed"))?;
    if want != keys as i64 {
        bail!("DBSIZE after DEBUG POPULATE {keys} is {want}");
    }
    let rp = free_port_pair()?;
    let mps = mp.to_string();
    let t0 = Instant::now();
    let _replica = spawn(
        kind,
        rp,
        &dir.join("replica"),
        None,
        &["--replicaof", "127.0.0.1", &mps],
    )?;
    let limit = left
        .min(Duration::from_secs(300))
        .max(Duration::from_secs(10));
    let mut started = false;
    let mut last = String::new();
    // Bounded by `limit` (and LINK_TIMEOUT while no sync has started) and the stop flag.
    while t0.elapsed() < limit {
        check_stop(stop)?;
        let link = info_field(rp, "replication", "master_link_status");
        let syncing = info_field(rp, "replication", "master_sync_in_progress");
        let n = dbsize(rp);
        if link.as_deref() == Some("up") && n == Some(want) {
            return Ok(SyncResult {
                keys,
                secs: t0.elapsed().as_secs_f64(),
                populate_secs,
            });
        }
        started |= syncing.as_deref() == Some("1") || n.is_some_and(|n| n > 0);
        last = format!(
            "master_link_status:{}, master_sync_in_progress:{}, DBSIZE {}",
            link.unwrap_or_default(),
            syncing.unwrap_or_default(),
            n.map_or("?".into(), |n| n.to_string())
        );
        if !started && t0.elapsed() > LINK_TIMEOUT {
            bail!("no sync started within {LINK_TIMEOUT:?} ({last})");
        }
        std::thread::sleep(POLL);
    }
    bail!("the replica did not hold every key within {limit:?} ({last})")
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl ReplReport {
    fn render(&self, lag_rate: f64) -> String {
        let m = &self.machine;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "## slotgate-bench compare --suite repl — {}\n",
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
        let _ = writeln!(o, "- Targets:");
        for d in &self.descriptions {
            let _ = writeln!(o, "  - {d}");
        }
        let _ = writeln!(
            o,
            "- Every server: `--save \"\" --appendonly no --repl-diskless-sync-delay 0`; wall \
             time {:.0} s\n",
            self.elapsed.as_secs_f64()
        );

        let _ = writeln!(
            o,
            "### Failover: kill -9 of a master → its slots served and cluster_state:ok\n"
        );
        let _ = writeln!(
            o,
            "3 masters + 3 replicas (`redis-cli --cluster create --cluster-replicas 1`), \
             `cluster-node-timeout {}`; {} round(s), each killing another master (SIGKILL), \
             timing until a live node names a new owner of one of its slots, that owner answers \
             a SET there with +OK and every live node reports cluster_state:ok (20 ms polls), \
             then restarting it in place as a replica.\n",
            self.node_timeout_ms, self.rounds
        );
        let _ = writeln!(
            o,
            "| target | rounds | min s | median s | max s | median − node timeout s | result |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---|");
        for (name, r) in &self.failover {
            let min = r.secs.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = r.secs.iter().cloned().fold(0.0, f64::max);
            let med = median(&r.secs);
            let f = |v: f64| {
                if r.secs.is_empty() {
                    "–".to_string()
                } else {
                    format!("{v:.2}")
                }
            };
            let result = match &r.error {
                None => "ok".to_string(),
                Some(e) => format!("failed: {}", one_line(e)),
            };
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} | {result} |",
                r.secs.len(),
                f(min),
                med.map_or("–".into(), |v| format!("{v:.2}")),
                f(max),
                med.map_or("–".into(), |v| format!(
                    "{:+.2}",
                    v - self.node_timeout_ms as f64 / 1000.0
                )),
            );
        }

        let _ = writeln!(o, "\n### Replication lag under a paced write load\n");
        let _ = writeln!(
            o,
            "Standalone master + 1 replica. Load: slotgate-bench `-t set -c {LAG_CONNS} -P 1 -d 64 \
             -r 100000 --rate {lag_rate:.0}` for {:.0} s on the master. Probe every {} ms: `SET \
             __lag_probe <seq>` on the master, then `GET __lag_probe` on the replica in a tight \
             loop until it returns `<seq>`; lag = master's +OK → first replica read showing the \
             write (resolution: one GET round trip; a probe unseen after {} s counts as lost).\n",
            self.lag_secs,
            PROBE_PERIOD.as_millis(),
            PROBE_GIVE_UP.as_secs()
        );
        let _ = writeln!(
            o,
            "| target | offered writes/s | achieved writes/s | load errors | probes | lost | p50 ms | p99 ms | max ms | result |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (name, r) in &self.lag {
            match r {
                Ok(l) => {
                    let _ = writeln!(
                        o,
                        "| {name} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} | ok |",
                        l.offered,
                        l.achieved,
                        l.load_errors,
                        l.lag.count,
                        l.lost,
                        ms(l.lag.p50),
                        ms(l.lag.p99),
                        ms(l.lag.max)
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        o,
                        "| {name} | {lag_rate:.0} | – | – | – | – | – | – | – | failed: {} |",
                        one_line(e)
                    );
                }
            }
        }

        let _ = writeln!(o, "\n### Full sync\n");
        let _ = writeln!(
            o,
            "`DEBUG POPULATE <keys>` on a standalone master (`--enable-debug-command local`), \
             then a replica started with \
             `--replicaof`; time from its spawn until `master_link_status:up` and DBSIZE equal to \
             the master's (20 ms polls).\n"
        );
        let _ = writeln!(
            o,
            "| target | keys | DEBUG POPULATE s | full sync s | keys/s | result |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---|");
        for (name, r) in &self.sync {
            match r {
                Ok(s) => {
                    let _ = writeln!(
                        o,
                        "| {name} | {} | {:.2} | {:.2} | {:.0} | ok |",
                        s.keys,
                        s.populate_secs,
                        s.secs,
                        s.keys as f64 / s.secs.max(1e-9)
                    );
                }
                Err(e) => {
                    let _ = writeln!(o, "| {name} | – | – | – | – | failed: {} |", one_line(e));
                }
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\n### Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {}", one_line(n));
            }
        }
        o
    }
}

/// A message on one table-safe line (newlines and pipes replaced, length capped).
fn one_line(s: &str) -> String {
    let mut t: String = s
        .replace(['\n', '\r'], " ")
        .replace('|', "/")
        .chars()
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_table_safe() {
        assert_eq!(one_line("a|b\nc"), "a/b c");
        assert!(one_line(&"x".repeat(400)).ends_with('…'));
    }

    #[test]
    fn renders_failed_sides() {
        let rep = ReplReport {
            started: SystemTime::UNIX_EPOCH,
            machine: Machine {
                cores: 2,
                cpu_model: "cpu".into(),
                kernel: "k".into(),
            },
            command_line: "bench".into(),
            loadavg_start: "0.1 0.1 0.1".into(),
            loadavg_end: "0.1 0.1 0.1".into(),
            descriptions: vec!["redis".into()],
            node_timeout_ms: 2000,
            rounds: 2,
            lag_secs: 5.0,
            failover: vec![
                (
                    "redis-server".into(),
                    FailoverResult {
                        secs: vec![3.5, 4.0],
                        error: None,
                    },
                ),
                (
                    "slotgate-node".into(),
                    FailoverResult {
                        secs: vec![],
                        error: Some("replicas | not\nlinked".into()),
                    },
                ),
            ],
            lag: vec![("slotgate-node".into(), Err("no link".into()))],
            sync: vec![(
                "redis-server".into(),
                Ok(SyncResult {
                    keys: 10,
                    secs: 2.0,
                    populate_secs: 0.1,
                }),
            )],
            notes: vec![],
            elapsed: Duration::from_secs(3),
        };
        let t = rep.render(50000.0);
        assert!(
            t.contains("| redis-server | 2 | 3.50 | 3.75 | 4.00 | +1.75 | ok |"),
            "{t}"
        );
        assert!(t.contains("failed: replicas / not linked"), "{t}");
        assert!(t.contains("| slotgate-node | 50000 | – |"), "{t}");
        assert!(
            t.contains("| redis-server | 10 | 0.10 | 2.00 | 5 | ok |"),
            "{t}"
        );
    }
}
