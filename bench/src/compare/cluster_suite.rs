//! The cluster suite (`compare --suite cluster`): what cluster mode costs, for slotgate-node
//! and redis-server side by side, in three parts.
//!
//! 1. **Per-node throughput, cluster vs standalone.** Each server runs twice: standalone,
//!    and as a one-node cluster (`--cluster-enabled yes`, `CLUSTER ADDSLOTSRANGE 0 16383`)
//!    so every key is local and the only difference is the cluster data path (slot check,
//!    redirect machinery, bus in the background). The node suite's workloads and tools run
//!    against the four targets interleaved; the table gives cluster/standalone per server.
//! 2. **Idle bus.** A 6-master cluster of each server formed with `redis-cli --cluster
//!    create` (`--cluster-node-timeout 5000`), left alone for a settling period, then
//!    measured over `--idle-secs`: CPU% per node from /proc/PID/stat, bus bytes sent per
//!    node from the kernel's per-socket counters (`ss -tin`, sockets whose local or peer
//!    port is one of the cluster's bus ports), and bus messages per node from CLUSTER INFO's
//!    `cluster_stats_messages_sent`.
//! 3. **Reshard.** A 3-master cluster filled with `--reshard-keys` keys (pipelined writes,
//!    each to its slot's master), an empty master added with `redis-cli --cluster add-node`,
//!    then `redis-cli --cluster reshard --cluster-from all --cluster-to <new> --cluster-slots
//!    4096 --cluster-yes` timed; keys are counted on every node afterwards.
//!
//! The Markdown report is appended to `bench/results/<YYYY-MM-DD>.md` like the others.

use super::cluster_fixture::{strip_ansi, ClusterFixture};
use super::procfs::{self, Machine};
use super::report::{append_results, opt, ratio, shell_join, utc_stamp};
use super::target::{
    blocking_call, log_tail, resolve_bin, wait_ready, ChildGuard, ServerTarget, Target,
};
use super::{check_stop, node_bin, run_throughput, Plan, Tool};
use crate::loadgen;
use crate::stats::median;
use crate::workload::Workload;
use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Slots moved by the reshard part.
const RESHARD_SLOTS: usize = 4096;
/// Node timeout of the clusters this suite forms (the tutorials' value).
const NODE_TIMEOUT_MS: &str = "5000";
/// Longest wait for a cluster to agree after a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest reshard before it is abandoned.
const RESHARD_TIMEOUT: Duration = Duration::from_secs(900);

/// One server binary compared in every part.
struct Server {
    label: &'static str,
    bin: PathBuf,
    extra: Vec<String>,
}

/// A single cluster-enabled node owning all 16384 slots.
struct SoloClusterTarget {
    inner: ServerTarget,
    label: String,
    bin: PathBuf,
    dir: PathBuf,
}

impl SoloClusterTarget {
    fn new(server: &Server, log_dir: &Path) -> SoloClusterTarget {
        let label = format!("{} (cluster)", server.label);
        let dir = log_dir.join(format!("{}-solo-cluster", server.label));
        let mut args = server.extra.clone();
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                NODE_TIMEOUT_MS,
                "--dir",
            ]
            .map(String::from),
        );
        args.push(dir.display().to_string());
        SoloClusterTarget {
            inner: ServerTarget::new(&label, server.bin.clone(), args, log_dir.to_path_buf()),
            label,
            bin: server.bin.clone(),
            dir,
        }
    }
}

impl Target for SoloClusterTarget {
    fn name(&self) -> &str {
        &self.label
    }

    fn describe(&self) -> String {
        format!(
            "`{}` — one `--cluster-enabled yes` node owning all 16384 slots (`CLUSTER \
             ADDSLOTSRANGE 0 16383`), `{}`",
            self.label,
            resolve_bin(&self.bin).display()
        )
    }

    fn start(&mut self) -> Result<()> {
        // A fresh identity each start: an old nodes.conf would already own the slots.
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        self.inner.start()?;
        let addr = self
            .inner
            .addr()
            .ok_or_else(|| anyhow!("{} has no address", self.label))?;
        let r = blocking_call(
            &addr,
            &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"],
            Duration::from_secs(10),
        )?;
        if !r.starts_with(b"+OK") {
            bail!(
                "{}: CLUSTER ADDSLOTSRANGE answered {}",
                self.label,
                String::from_utf8_lossy(&r).trim()
            );
        }
        wait_until(SETTLE_TIMEOUT, || {
            Ok(cluster_info(&addr)?.contains("cluster_state:ok"))
        })
        .with_context(|| format!("{} never reached cluster_state:ok", self.label))
    }

    fn addr(&self) -> Option<String> {
        self.inner.addr()
    }

    fn pids(&self) -> Vec<u32> {
        self.inner.pids()
    }

    fn stop(&mut self) {
        self.inner.stop();
    }
}

/// Polls `f` every 100 ms until it says true; an error after `limit`.
fn wait_until(limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    // Bounded by the deadline and by the iteration cap.
    for _ in 0..100_000 {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("condition not met within {limit:?} {last}")
}

fn call_text(addr: &str, args: &[&str]) -> Result<String> {
    let r = blocking_call(addr, args, Duration::from_secs(10))?;
    Ok(String::from_utf8_lossy(&r).into_owned())
}

fn cluster_info(addr: &str) -> Result<String> {
    call_text(addr, &["CLUSTER", "INFO"])
}

/// An integer field of CLUSTER INFO.
fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k == field).then(|| v.trim().parse().ok())?
    })
}

/// DBSIZE of one node.
fn dbsize(addr: &str) -> Result<u64> {
    let t = call_text(addr, &["DBSIZE"])?;
    t.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("DBSIZE of {addr}: {t}"))
}

/// Runs redis-cli with `args`, output to `log`; fails on a non-zero exit or after `limit`.
fn redis_cli(cli: &Path, args: &[String], log: &Path, limit: Duration) -> Result<Duration> {
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(cli);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    let t = Instant::now();
    let mut child = ChildGuard::spawn(cmd, "redis-cli")?;
    match child.wait_timeout(limit) {
        Some(s) if s.success() => Ok(t.elapsed()),
        Some(s) => bail!(
            "redis-cli {} failed ({s}):\n{}",
            args.join(" "),
            strip_ansi(&log_tail(log, 10))
        ),
        None => bail!(
            "redis-cli {} did not finish within {limit:?}",
            args.join(" ")
        ),
    }
}

/// A free loopback port `p` with `p + 10000` free as well (the bus port).
fn free_pair() -> Result<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
        let p = l.local_addr()?.port();
        if p <= 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair (p, p+10000) found on loopback")
}

/// Total bytes sent on established loopback sockets whose local or peer port is in `ports`
/// (`ss -tin`), or None when `ss` is unavailable.
fn socket_bytes_sent(ports: &[u16]) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(parse_ss_bytes_sent(
        &String::from_utf8_lossy(&out.stdout),
        ports,
    ))
}

/// See [`socket_bytes_sent`]: address lines (`recv-q send-q local peer`) are followed by an
/// indented info line holding `bytes_sent:N`.
fn parse_ss_bytes_sent(text: &str, ports: &[u16]) -> u64 {
    let port_of = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let mut total = 0;
    let mut selected = false;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let f: Vec<&str> = line.split_whitespace().collect();
            selected = f.len() >= 2
                && f[f.len() - 2..]
                    .iter()
                    .any(|a| port_of(a).is_some_and(|p| ports.contains(&p)));
        } else if selected {
            total += line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("bytes_sent:"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            selected = false;
        }
    }
    total
}

/// Part 2 result for one server.
struct IdleSample {
    label: &'static str,
    nodes: usize,
    secs: f64,
    cpu_pct_avg: f64,
    cpu_pct_max: f64,
    bytes_per_node: Option<f64>,
    msgs_per_node: Option<f64>,
}

/// Part 3 result for one server.
struct ReshardSample {
    label: &'static str,
    keys: u64,
    moved_keys: u64,
    secs: f64,
    cpu_secs: f64,
    total_after: u64,
}

/// Per-node bus ports of a fixture (client port + 10000).
fn bus_ports(fx: &ClusterFixture) -> Vec<u16> {
    fx.addrs()
        .iter()
        .filter_map(|a| a.rsplit(':').next()?.parse::<u16>().ok())
        .map(|p| p + 10_000)
        .collect()
}

fn ticks(pids: &[u32]) -> Result<Vec<u64>> {
    pids.iter().map(|&p| procfs::cpu_ticks(p)).collect()
}

fn measure_idle(
    server: &Server,
    plan: &Plan,
    base: &Path,
    secs: f64,
    stop: &AtomicBool,
) -> Result<IdleSample> {
    let mut args = server.extra.clone();
    args.extend(["--cluster-node-timeout".to_string(), NODE_TIMEOUT_MS.into()]);
    eprintln!("idle: forming a 6-master {} cluster", server.label);
    let fx = ClusterFixture::start(
        &format!("{}-idle", server.label),
        &server.bin,
        &args,
        6,
        &plan.args.redis_cli,
        base,
        stop,
    )?;
    // Let the handshakes and the first full gossip rounds pass.
    std::thread::sleep(Duration::from_secs(3));
    check_stop(stop)?;
    let pids = fx.pids();
    let ports = bus_ports(&fx);
    let msgs = |fx: &ClusterFixture| -> Option<u64> {
        fx.addrs()
            .iter()
            .map(|a| {
                cluster_info(a)
                    .ok()
                    .and_then(|i| info_field(&i, "cluster_stats_messages_sent"))
            })
            .sum()
    };
    let (c0, b0, m0) = (ticks(&pids)?, socket_bytes_sent(&ports), msgs(&fx));
    let t0 = Instant::now();
    eprintln!("  measuring {secs:.0} s of idleness");
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, b1, m1) = (ticks(&pids)?, socket_bytes_sent(&ports), msgs(&fx));
    let dt = t0.elapsed().as_secs_f64();
    let n = pids.len().max(1) as f64;
    let pct: Vec<f64> = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / procfs::clock_ticks_per_sec() / dt * 100.0)
        .collect();
    Ok(IdleSample {
        label: server.label,
        nodes: pids.len(),
        secs: dt,
        cpu_pct_avg: pct.iter().sum::<f64>() / n,
        cpu_pct_max: pct.iter().copied().fold(0.0, f64::max),
        bytes_per_node: b0.zip(b1).map(|(a, b)| b.saturating_sub(a) as f64 / n / dt),
        msgs_per_node: m0.zip(m1).map(|(a, b)| b.saturating_sub(a) as f64 / n / dt),
    })
}

fn measure_reshard(
    server: &Server,
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    base: &Path,
    keys: u64,
    stop: &AtomicBool,
) -> Result<ReshardSample> {
    let cli = &plan.args.redis_cli;
    let mut args = server.extra.clone();
    args.extend(["--cluster-node-timeout".to_string(), NODE_TIMEOUT_MS.into()]);
    eprintln!("reshard: forming a 3-master {} cluster", server.label);
    let fx = ClusterFixture::start(
        &format!("{}-reshard", server.label),
        &server.bin,
        &args,
        3,
        cli,
        base,
        stop,
    )?;
    let seed = fx.seed();
    eprintln!("  writing {keys} keys");
    rt.block_on(loadgen::fill_cluster(
        &seed,
        keys,
        plan.args.data_size,
        4,
        Duration::from_secs(600),
    ))
    .context("filling the cluster")?;
    check_stop(stop)?;

    // The empty master.
    let port = free_pair()?;
    let dir = base
        .join(format!("{}-reshard", server.label))
        .join("new-node");
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut cmd = Command::new(&server.bin);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .arg("--dir")
        .arg(&dir)
        .args(&args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = ChildGuard::spawn(cmd, &format!("{} new node", server.label))?;
    let new_addr = format!("127.0.0.1:{port}");
    wait_ready(&new_addr, || child.try_wait().is_none())?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    redis_cli(
        cli,
        &s(&["--cluster", "add-node", &new_addr, &seed]),
        &dir.join("add-node.log"),
        SETTLE_TIMEOUT,
    )?;
    let mut all = fx.addrs();
    all.push(new_addr.clone());
    let mut pids = fx.pids();
    pids.push(child.pid());
    // Everyone ok (a new node refuses RESTORE while its state is fail) and in agreement.
    wait_until(SETTLE_TIMEOUT, || {
        for a in &all {
            let info = cluster_info(a)?;
            if !info.contains("cluster_state:ok") || !info.contains("cluster_known_nodes:4") {
                return Ok(false);
            }
        }
        let out = Command::new(cli)
            .args(["--cluster", "check", &seed])
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("[OK] All nodes agree"))
    })
    .context("the cluster did not settle after add-node")?;
    let id = call_text(&new_addr, &["CLUSTER", "MYID"])?
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    if id.len() != 40 {
        bail!("CLUSTER MYID of the new node: {id:?}");
    }
    check_stop(stop)?;
    eprintln!("  resharding {RESHARD_SLOTS} slots to {new_addr}");
    let cpu0: u64 = ticks(&pids)?.iter().sum();
    let took = redis_cli(
        cli,
        &s(&[
            "--cluster",
            "reshard",
            &seed,
            "--cluster-from",
            "all",
            "--cluster-to",
            &id,
            "--cluster-slots",
            &RESHARD_SLOTS.to_string(),
            "--cluster-yes",
        ]),
        &dir.join("reshard.log"),
        RESHARD_TIMEOUT,
    )?;
    let cpu1: u64 = ticks(&pids)?.iter().sum();
    let moved_keys = dbsize(&new_addr)?;
    let total_after = all.iter().map(|a| dbsize(a)).sum::<Result<u64>>()?;
    eprintln!(
        "  {:.2} s, {moved_keys} keys moved, {total_after} keys in the cluster",
        took.as_secs_f64()
    );
    drop(child);
    Ok(ReshardSample {
        label: server.label,
        keys,
        moved_keys,
        secs: took.as_secs_f64(),
        cpu_secs: cpu1.saturating_sub(cpu0) as f64 / procfs::clock_ticks_per_sec(),
        total_after,
    })
}

/// Runs the cluster suite and writes its report.
pub(crate) fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    machine: &Machine,
) -> Result<()> {
    let a = &plan.args;
    let started_at = SystemTime::now();
    let started = Instant::now();
    let q = a.quick;
    let idle_secs = a.idle_secs.unwrap_or(if q { 3.0 } else { 10.0 });
    if !(idle_secs.is_finite() && (0.0..=3600.0).contains(&idle_secs)) {
        bail!("--idle-secs must be within 0..=3600");
    }
    let reshard_keys = a
        .reshard_keys
        .unwrap_or(if q { 100_000 } else { 1_000_000 });
    let servers = [
        Server {
            label: "slotgate-node",
            bin: node_bin(a)?,
            extra: a.node_args.clone(),
        },
        Server {
            label: "redis-server",
            bin: a.redis_bin.clone(),
            extra: Vec::new(),
        },
    ];
    let base = std::env::temp_dir().join(format!("slotgate-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let mut notes = Vec::new();

    // Part 1: throughput, standalone vs one-node cluster, interleaved.
    let mut targets: Vec<Box<dyn Target>> = Vec::new();
    for s in &servers {
        targets.push(Box::new(ServerTarget::new(
            s.label,
            s.bin.clone(),
            s.extra.clone(),
            base.clone(),
        )));
        targets.push(Box::new(SoloClusterTarget::new(s, &base)));
    }
    let mut descriptions = Vec::new();
    for t in targets.iter_mut() {
        check_stop(stop)?;
        eprintln!("starting {}", t.name());
        t.start()?;
        descriptions.push(t.describe());
        let addr = t
            .addr()
            .ok_or_else(|| anyhow!("{} has no address", t.name()))?;
        eprintln!("  preloading {} keys", a.keyspace);
        rt.block_on(loadgen::fill(
            &addr,
            a.keyspace,
            a.data_size,
            8,
            Duration::from_secs(120),
        ))
        .with_context(|| format!("preloading {}", t.name()))?;
    }
    let mut samples = Vec::new();
    // Half the budget for the throughput runs; the other parts are not cut short.
    let deadline = started + plan.max_time / 2;
    run_throughput(
        plan,
        rt,
        stop,
        deadline,
        &mut targets,
        &mut samples,
        &mut notes,
    )?;
    for t in targets.iter_mut() {
        t.stop();
    }
    drop(targets);

    // Part 2: idle 6-node clusters.
    let mut idle = Vec::new();
    if idle_secs > 0.0 {
        for s in &servers {
            check_stop(stop)?;
            match measure_idle(s, plan, &base, idle_secs, stop) {
                Ok(x) => idle.push(x),
                Err(e) => notes.push(format!("idle {}: {e:#}", s.label)),
            }
        }
    }

    // Part 3: the reshard.
    let mut reshards = Vec::new();
    if reshard_keys > 0 {
        for s in &servers {
            check_stop(stop)?;
            match measure_reshard(s, plan, rt, &base, reshard_keys, stop) {
                Ok(x) => reshards.push(x),
                Err(e) => notes.push(format!("reshard {}: {e:#}", s.label)),
            }
        }
    }

    let text = render(
        plan,
        machine,
        started_at,
        started.elapsed(),
        &descriptions,
        &samples,
        &idle,
        &reshards,
        &notes,
    );
    println!("{text}");
    if notes.is_empty() {
        let _ = std::fs::remove_dir_all(&base);
    }
    if !a.no_write {
        let path = append_results(a.out_dir.clone(), started_at, &text)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Median req/s and CPU s/Mreq of one (target, tool, workload, pipeline) cell.
fn cell(
    samples: &[super::report::Sample],
    target: usize,
    tool: Tool,
    w: Workload,
    p: usize,
) -> (Option<f64>, Option<f64>, u64) {
    let s: Vec<_> = samples
        .iter()
        .filter(|s| s.target == target && s.tool == tool && s.workload == w && s.pipeline == p)
        .collect();
    let rps = median(&s.iter().map(|x| x.rps).collect::<Vec<_>>());
    let cpu = median(&s.iter().filter_map(|x| x.cpu_per_mreq).collect::<Vec<_>>());
    (rps, cpu, s.iter().map(|x| x.errors).sum())
}

#[allow(clippy::too_many_arguments)]
fn render(
    plan: &Plan,
    m: &Machine,
    started: SystemTime,
    elapsed: Duration,
    descriptions: &[String],
    samples: &[super::report::Sample],
    idle: &[IdleSample],
    reshards: &[ReshardSample],
    notes: &[String],
) -> String {
    let a = &plan.args;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## slotgate-bench compare --suite cluster — {}\n",
        utc_stamp(started)
    );
    let _ = writeln!(
        o,
        "- Machine: {} cores, {}, kernel {}; load average at the end {}",
        m.cores,
        m.cpu_model,
        m.kernel,
        procfs::loadavg()
    );
    let _ = writeln!(o, "- Command: `{}`", shell_join(std::env::args()));
    let _ = writeln!(o, "- Throughput targets (interleaved each round):");
    for d in descriptions {
        let _ = writeln!(o, "  - {d}");
    }
    let pipes: Vec<String> = a.pipelines.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(
        o,
        "- Load: -c {} -d {} -r {} (preloaded), -n {} at -P 1, min(P,10)× deeper (-P {}); {} \
         round(s), medians; wall time {:.0} s\n",
        a.clients,
        a.data_size,
        a.keyspace,
        plan.requests,
        pipes.join(","),
        plan.rounds,
        elapsed.as_secs_f64()
    );

    let _ = writeln!(o, "### Per-node throughput: cluster mode vs standalone\n");
    let _ = writeln!(
        o,
        "| server | tool | workload | P | standalone req/s | cluster req/s | cluster/standalone | CPU s/Mreq standalone | CPU s/Mreq cluster | errors |"
    );
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for &tool in &a.tools {
        for &w in &a.tests {
            for &p in &a.pipelines {
                for (si, name) in ["slotgate-node", "redis-server"].iter().enumerate() {
                    let (srps, scpu, serr) = cell(samples, 2 * si, tool, w, p);
                    let (crps, ccpu, cerr) = cell(samples, 2 * si + 1, tool, w, p);
                    if srps.is_none() && crps.is_none() {
                        continue;
                    }
                    let _ = writeln!(
                        o,
                        "| {name} | {} | {} | {p} | {} | {} | {} | {} | {} | {} |",
                        tool.name(),
                        w.name(),
                        opt(srps, 0),
                        opt(crps, 0),
                        ratio(crps, srps),
                        opt(scpu, 2),
                        opt(ccpu, 2),
                        serr + cerr
                    );
                }
            }
        }
    }

    if !idle.is_empty() {
        let _ = writeln!(
            o,
            "\n### Idle cluster: {} masters, node timeout {NODE_TIMEOUT_MS} ms, {:.0} s measured after 3 s of settling\n",
            idle[0].nodes, idle[0].secs
        );
        let _ = writeln!(
            o,
            "| server | CPU % per node (avg) | CPU % (busiest node) | bus bytes/s sent per node | bus messages/s sent per node |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|");
        for s in idle {
            let _ = writeln!(
                o,
                "| {} | {:.2} | {:.2} | {} | {} |",
                s.label,
                s.cpu_pct_avg,
                s.cpu_pct_max,
                opt(s.bytes_per_node, 0),
                opt(s.msgs_per_node, 1)
            );
        }
    }

    if !reshards.is_empty() {
        let base = reshards
            .iter()
            .find(|r| r.label == "redis-server")
            .map(|r| r.secs);
        let _ = writeln!(
            o,
            "\n### Reshard: {RESHARD_SLOTS} slots from 3 masters to a new empty one (`redis-cli --cluster reshard --cluster-from all --cluster-yes`)\n"
        );
        let _ = writeln!(
            o,
            "| server | keys in cluster | keys moved | reshard s | vs redis | slots/s | keys moved/s | node CPU s | keys after |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in reshards {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.2} | {} | {:.0} | {:.0} | {:.2} | {}{} |",
                r.label,
                r.keys,
                r.moved_keys,
                r.secs,
                ratio(Some(r.secs), base),
                RESHARD_SLOTS as f64 / r.secs.max(1e-9),
                r.moved_keys as f64 / r.secs.max(1e-9),
                r.cpu_secs,
                r.total_after,
                if r.total_after == r.keys {
                    ""
                } else {
                    " (LOST KEYS)"
                }
            );
        }
    }

    let mut all_notes: Vec<String> = notes.to_vec();
    for s in samples.iter().filter(|s| s.errors > 0) {
        all_notes.push(format!(
            "{} {} -P {} (target {}, round {}): {} errors: {}",
            s.tool.name(),
            s.workload.name(),
            s.pipeline,
            s.target,
            s.round + 1,
            s.errors,
            s.error_kinds
        ));
    }
    if !all_notes.is_empty() {
        let _ = writeln!(o, "\n### Notes\n");
        for n in all_notes {
            let _ = writeln!(o, "- {}", n.replace('\n', " "));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_bytes_of_selected_ports_only() {
        let text = "0      0      127.0.0.1:36084 127.0.0.1:45446\n\
                    \t bbr wscale:10,10 bytes_sent:100 bytes_acked:100 bytes_received:9\n\
                    0      0      127.0.0.1:50000 127.0.0.1:31000\n\
                    \t bbr bytes_sent:25 bytes_received:3\n\
                    0      0      127.0.0.1:31001 127.0.0.1:50001\n\
                    \t bbr bytes_sent:7 bytes_received:3\n";
        assert_eq!(parse_ss_bytes_sent(text, &[31000, 31001]), 32);
        assert_eq!(parse_ss_bytes_sent(text, &[36084]), 100);
        assert_eq!(parse_ss_bytes_sent(text, &[1]), 0);
    }

    #[test]
    fn cluster_info_fields() {
        let info = "cluster_state:ok\r\ncluster_stats_messages_sent:529\r\n";
        assert_eq!(info_field(info, "cluster_stats_messages_sent"), Some(529));
        assert_eq!(info_field(info, "cluster_state"), None);
        assert_eq!(info_field(info, "missing"), None);
    }
}
