//! The front suite (`compare --suite front`): what a legacy client pays to reach a cluster.
//!
//! Targets, interleaved each round (A B C A B C):
//! * `slotgate` — the slotgate proxy over a cluster of real redis-server masters;
//! * `direct` — no proxy: cluster-aware clients (`redis-benchmark --cluster`,
//!   `slotgate-bench --cluster`) against the same cluster;
//! * `twemproxy` — nutcracker over as many standalone redis-servers (ketama, fnv1a_64);
//! * `slotgate/node-cluster` (`--with-node-cluster`) — slotgate over a slotgate-node cluster.
//!
//! Besides throughput/latency/CPU (proxy process and backends separately), the suite measures
//! the proxies' RSS with many idle client connections and the latency added by a proxy at
//! half of the direct client's peak rate.

use super::cluster_fixture::{bin_version, ClusterFixture};
use super::front_report::{FrontReport, HalfLoadSample, IdleSample};
use super::procfs::{self, Machine};
use super::report::shell_join;
use super::target::{
    blocking_call, free_port, log_tail, resolve_bin, wait_ready, ChildGuard, ServerTarget, Target,
};
use super::{check_stop, node_bin, run_throughput, sibling_bin, Plan, Tool};
use crate::loadgen::{self, LoadConfig};
use crate::workload::Workload;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Label of the direct cluster client target (the reference of the "vs direct" ratios).
pub const DIRECT: &str = "direct";
/// Label of the twemproxy target (the reference of the "vs twemproxy" ratios).
pub const TWEMPROXY: &str = "twemproxy";
/// Idle connections opened concurrently per batch (below nutcracker's default backlog, 512).
const IDLE_BATCH: usize = 250;
/// Longest time one idle connection may take to connect and answer PING.
const IDLE_CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time the idle-connection check may spend on one proxy.
const IDLE_BUDGET: Duration = Duration::from_secs(90);
/// Time kept free for the idle-connection check of each proxy, per 10,000 connections (a
/// loaded 2-core machine needed up to ~25 s for 10,000 connections to a fresh slotgate).
const IDLE_RESERVE_PER_10K: Duration = Duration::from_secs(30);
/// File descriptors kept free beyond the idle connections (runtime, load connections, logs).
const FD_MARGIN: u64 = 4096;
/// Time allowed for preloading a target's keyspace.
const FILL_TIMEOUT: Duration = Duration::from_secs(120);

/// Kinds of target `--front-targets` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FrontKind {
    /// The slotgate proxy over a redis-server cluster.
    Slotgate,
    /// Cluster-aware clients straight to the redis-server cluster.
    Direct,
    /// nutcracker over standalone redis-servers.
    Twemproxy,
    /// The slotgate proxy over a slotgate-node cluster (same as `--with-node-cluster`).
    NodeCluster,
}

impl FrontKind {
    /// Label in reports.
    pub fn label(self) -> &'static str {
        match self {
            FrontKind::Slotgate => "slotgate",
            FrontKind::Direct => DIRECT,
            FrontKind::Twemproxy => TWEMPROXY,
            FrontKind::NodeCluster => "slotgate/node-cluster",
        }
    }
}

/// Output of `<bin> <flag>` (stdout, else stderr), first line; `version unknown` otherwise.
fn version_any(bin: &Path, flag: &str) -> String {
    Command::new(bin)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "version unknown".to_string())
}

/// The slotgate proxy over a cluster: `slotgate --listen 127.0.0.1:N --seed <first master>`,
/// with its Prometheus metrics on (as deployments run it, and as twemproxy runs with stats).
pub struct ProxyTarget {
    label: String,
    bin: PathBuf,
    extra_args: Vec<String>,
    cluster: Arc<ClusterFixture>,
    log_dir: PathBuf,
    maxclients: usize,
    port: u16,
    metrics_port: u16,
    child: Option<ChildGuard>,
}

impl ProxyTarget {
    /// A proxy target; `maxclients` must cover the idle-connection check.
    pub fn new(
        label: &str,
        bin: PathBuf,
        extra_args: Vec<String>,
        cluster: Arc<ClusterFixture>,
        log_dir: PathBuf,
        maxclients: usize,
    ) -> ProxyTarget {
        ProxyTarget {
            label: label.to_string(),
            bin,
            extra_args,
            cluster,
            log_dir,
            maxclients,
            port: 0,
            metrics_port: 0,
            child: None,
        }
    }

    fn log_path(&self) -> PathBuf {
        let name = self.label.replace('/', "-");
        self.log_dir.join(format!("{name}-{}.log", self.port))
    }

    fn fixed_args(&self) -> Vec<String> {
        let mut a = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{}", self.port),
            "--seed".to_string(),
            self.cluster.seed(),
            "--log-level".to_string(),
            "warn".to_string(),
            "--maxclients".to_string(),
            self.maxclients.to_string(),
            "--metrics".to_string(),
            format!("127.0.0.1:{}", self.metrics_port),
        ];
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

impl Target for ProxyTarget {
    fn name(&self) -> &str {
        &self.label
    }

    fn describe(&self) -> String {
        format!(
            "`{}` — proxy `{}` ({}), `{}`, over {}",
            self.label,
            resolve_bin(&self.bin).display(),
            version_any(&self.bin, "--version"),
            shell_join(self.fixed_args()),
            self.cluster.describe()
        )
    }

    fn start(&mut self) -> Result<()> {
        self.stop();
        if !self.cluster.alive() {
            bail!(
                "the {} behind {} is not running",
                self.cluster.label(),
                self.label
            );
        }
        self.port = free_port()?;
        self.metrics_port = free_port()?;
        std::fs::create_dir_all(&self.log_dir)?;
        let log = std::fs::File::create(self.log_path())
            .with_context(|| format!("creating {}", self.log_path().display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(self.fixed_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child =
            ChildGuard::spawn(cmd, &format!("{} ({})", self.label, self.bin.display()))?;
        let addr = format!("127.0.0.1:{}", self.port);
        if let Err(e) = wait_ready(&addr, || child.try_wait().is_none()) {
            drop(child);
            bail!(
                "{} did not start: {e:#}\n--- {} ---\n{}",
                self.label,
                self.log_path().display(),
                log_tail(&self.log_path(), 15)
            );
        }
        self.child = Some(child);
        Ok(())
    }

    fn addr(&self) -> Option<String> {
        self.child
            .as_ref()
            .map(|_| format!("127.0.0.1:{}", self.port))
    }

    fn pids(&self) -> Vec<u32> {
        self.child.iter().map(|c| c.pid()).collect()
    }

    fn backend_pids(&self) -> Vec<u32> {
        self.cluster.pids()
    }

    fn needs_preload(&self) -> bool {
        // The cluster was filled once, directly, when it was formed.
        false
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate();
        }
    }
}

impl Drop for ProxyTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Cluster-aware clients straight to the cluster: nothing runs in between.
pub struct DirectTarget {
    cluster: Arc<ClusterFixture>,
    started: bool,
}

impl DirectTarget {
    /// The direct-client target over `cluster`.
    pub fn new(cluster: Arc<ClusterFixture>) -> DirectTarget {
        DirectTarget {
            cluster,
            started: false,
        }
    }
}

impl Target for DirectTarget {
    fn name(&self) -> &str {
        DIRECT
    }

    fn describe(&self) -> String {
        format!(
            "`{DIRECT}` — no proxy: `redis-benchmark --cluster` / `slotgate-bench --cluster` \
             (seed {}; slotgate-bench opens -c connections per master) against {}",
            self.cluster.seed(),
            self.cluster.describe()
        )
    }

    fn start(&mut self) -> Result<()> {
        if !self.cluster.alive() {
            bail!("the {} is not running", self.cluster.label());
        }
        wait_ready(&self.cluster.seed(), || true)?;
        self.started = true;
        Ok(())
    }

    fn addr(&self) -> Option<String> {
        self.started.then(|| self.cluster.seed())
    }

    fn is_cluster(&self) -> bool {
        true
    }

    fn pids(&self) -> Vec<u32> {
        Vec::new()
    }

    fn backend_pids(&self) -> Vec<u32> {
        self.cluster.pids()
    }

    fn needs_preload(&self) -> bool {
        false
    }

    fn stop(&mut self) {
        self.started = false;
    }
}

/// twemproxy (nutcracker) over `servers` standalone redis-servers.
pub struct TwemproxyTarget {
    bin: PathBuf,
    redis_bin: PathBuf,
    servers: usize,
    log_dir: PathBuf,
    backends: Vec<ServerTarget>,
    port: u16,
    child: Option<ChildGuard>,
}

impl TwemproxyTarget {
    /// A twemproxy target; nothing starts before [`Target::start`].
    pub fn new(bin: PathBuf, redis_bin: PathBuf, servers: usize, log_dir: PathBuf) -> Self {
        TwemproxyTarget {
            bin,
            redis_bin,
            servers,
            log_dir,
            backends: Vec::new(),
            port: 0,
            child: None,
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.log_dir.join(format!("twemproxy-{}.yml", self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.join(format!("twemproxy-{}.log", self.port))
    }
}

/// The nutcracker pool configuration for `listen` over `backends`.
pub fn twemproxy_config(listen: &str, backends: &[String]) -> String {
    let mut y = format!(
        "bench:\n  listen: {listen}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  \
         auto_eject_hosts: false\n  servers:\n"
    );
    for b in backends {
        y.push_str(&format!("   - {b}:1\n"));
    }
    y
}

impl Target for TwemproxyTarget {
    fn name(&self) -> &str {
        TWEMPROXY
    }

    fn describe(&self) -> String {
        format!(
            "`{TWEMPROXY}` — `{}` ({}; `redis: true`, `hash: fnv1a_64`, `distribution: ketama`, \
             1 server connection each, `-v 4`) over {} standalone `{}` ({})",
            resolve_bin(&self.bin).display(),
            version_any(&self.bin, "-V"),
            self.servers,
            resolve_bin(&self.redis_bin).display(),
            bin_version(&self.redis_bin)
        )
    }

    fn start(&mut self) -> Result<()> {
        self.stop();
        for i in 0..self.servers {
            let mut b = ServerTarget::new(
                &format!("twemproxy-backend-{i}"),
                self.redis_bin.clone(),
                Vec::new(),
                self.log_dir.clone(),
            );
            b.start()?;
            self.backends.push(b);
        }
        let backends: Vec<String> = self.backends.iter().filter_map(|b| b.addr()).collect();
        self.port = free_port()?;
        let stats_port = free_port()?;
        let listen = format!("127.0.0.1:{}", self.port);
        std::fs::create_dir_all(&self.log_dir)?;
        std::fs::write(self.conf_path(), twemproxy_config(&listen, &backends))
            .with_context(|| format!("writing {}", self.conf_path().display()))?;
        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(self.conf_path())
            .arg("-o")
            .arg(self.log_path())
            .args(["-v", "4", "-a", "127.0.0.1", "-s", &stats_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = ChildGuard::spawn(cmd, &format!("twemproxy ({})", self.bin.display()))?;
        if let Err(e) = wait_ready(&listen, || child.try_wait().is_none()) {
            drop(child);
            bail!(
                "twemproxy did not start: {e:#}\n--- {} ---\n{}",
                self.log_path().display(),
                log_tail(&self.log_path(), 15)
            );
        }
        self.child = Some(child);
        Ok(())
    }

    fn addr(&self) -> Option<String> {
        self.child
            .as_ref()
            .map(|_| format!("127.0.0.1:{}", self.port))
    }

    fn pids(&self) -> Vec<u32> {
        self.child.iter().map(|c| c.pid()).collect()
    }

    fn backend_pids(&self) -> Vec<u32> {
        self.backends.iter().flat_map(|b| b.pids()).collect()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate();
        }
        for mut b in self.backends.drain(..) {
            b.stop();
        }
    }
}

impl Drop for TwemproxyTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `--front-targets` plus `node-cluster` under `--with-node-cluster`, without repeats.
fn front_kinds(plan: &Plan) -> Vec<FrontKind> {
    let mut kinds: Vec<FrontKind> = Vec::new();
    let extra = plan
        .args
        .with_node_cluster
        .then_some(FrontKind::NodeCluster);
    for k in plan.args.front_targets.iter().copied().chain(extra) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// Fails early, with a hint, when `bin` names a path that does not exist.
fn require_file(bin: &Path, what: &str, hint: &str) -> Result<()> {
    let resolved = resolve_bin(bin);
    if !resolved.is_file() {
        bail!("{what} not found at {} ({hint})", resolved.display());
    }
    Ok(())
}

/// Forms a cluster and fills its keyspace.
fn start_cluster(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    label: &str,
    bin: &Path,
    extra: &[String],
    log_dir: &Path,
) -> Result<Arc<ClusterFixture>> {
    let a = &plan.args;
    eprintln!(
        "forming {label}: {} masters of {}",
        a.masters,
        bin.display()
    );
    let fx = ClusterFixture::start(label, bin, extra, a.masters, &a.redis_cli, log_dir, stop)?;
    eprintln!(
        "  {label} ok at {:?}; filling {} keys",
        fx.addrs(),
        a.keyspace
    );
    rt.block_on(loadgen::fill_cluster(
        &fx.seed(),
        a.keyspace,
        a.data_size,
        4,
        FILL_TIMEOUT,
    ))
    .with_context(|| format!("filling {label}"))?;
    Ok(Arc::new(fx))
}

/// Runs the front suite and writes its report.
pub(crate) fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    machine: &Machine,
) -> Result<()> {
    let a = &plan.args;
    let started = Instant::now();
    let deadline = started + plan.max_time;
    let kinds = front_kinds(plan);
    let mut rep = FrontReport::new(
        machine.clone(),
        shell_join(std::env::args()),
        a,
        plan.rounds,
        plan.requests,
    );

    // Idle connections need file descriptors in this process and in the proxies, which
    // inherit this limit (the `ulimit -n` they run with is recorded in the report).
    let want = plan.idle_conns as u64 + FD_MARGIN;
    let (soft, hard) = procfs::raise_nofile(want);
    rep.nofile = (soft, hard);
    let mut idle_conns = plan.idle_conns;
    if plan.idle_conns > 0 && soft < want {
        idle_conns = soft.saturating_sub(FD_MARGIN) as usize;
        rep.notes.push(format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}): idle-connection check reduced from {} to \
             {idle_conns} connections",
            plan.idle_conns
        ));
    }
    rep.idle_conns = idle_conns;

    let needs_proxy = kinds
        .iter()
        .any(|k| matches!(k, FrontKind::Slotgate | FrontKind::NodeCluster));
    let proxy_bin = match &a.proxy_bin {
        Some(b) => b.clone(),
        None => sibling_bin("slotgate")?,
    };
    if needs_proxy {
        require_file(
            &proxy_bin,
            "the slotgate proxy",
            "build it with `cargo build --release -p slotgate` or pass --proxy-bin",
        )?;
    }
    if kinds.iter().any(|k| {
        matches!(
            k,
            FrontKind::Slotgate | FrontKind::Direct | FrontKind::NodeCluster
        )
    }) {
        require_file(&a.redis_cli, "redis-cli", "needed to form the clusters")?;
    }
    if kinds.contains(&FrontKind::Twemproxy) {
        require_file(&a.nutcracker_bin, "nutcracker", "install twemproxy")?;
    }

    let log_dir = std::env::temp_dir().join(format!("slotgate-bench-front-{}", std::process::id()));
    let maxclients = idle_conns + 1024;

    // Clusters first (shared by the slotgate and direct targets); targets are declared after
    // them, so they are dropped (stopped) first.
    let redis_cluster = if kinds
        .iter()
        .any(|k| matches!(k, FrontKind::Slotgate | FrontKind::Direct))
    {
        Some(start_cluster(
            plan,
            rt,
            stop,
            "redis-cluster",
            &a.redis_bin,
            &[],
            &log_dir,
        )?)
    } else {
        None
    };
    let node_cluster = if kinds.contains(&FrontKind::NodeCluster) {
        let bin = node_bin(a)?;
        match start_cluster(plan, rt, stop, "node-cluster", &bin, &a.node_args, &log_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                check_stop(stop)?;
                eprintln!("  node-cluster unavailable: {e:#}");
                rep.notes.push(format!(
                    "slotgate/node-cluster skipped: a slotgate-node cluster could not be formed \
                     ({e:#})"
                ));
                None
            }
        }
    } else {
        None
    };

    let mut targets: Vec<Box<dyn Target>> = Vec::new();
    for k in &kinds {
        match (k, &redis_cluster, &node_cluster) {
            (FrontKind::Slotgate, Some(c), _) => targets.push(Box::new(ProxyTarget::new(
                k.label(),
                proxy_bin.clone(),
                a.proxy_args.clone(),
                c.clone(),
                log_dir.clone(),
                maxclients,
            ))),
            (FrontKind::Direct, Some(c), _) => targets.push(Box::new(DirectTarget::new(c.clone()))),
            (FrontKind::Twemproxy, _, _) => targets.push(Box::new(TwemproxyTarget::new(
                a.nutcracker_bin.clone(),
                a.redis_bin.clone(),
                a.masters,
                log_dir.clone(),
            ))),
            (FrontKind::NodeCluster, _, Some(c)) => targets.push(Box::new(ProxyTarget::new(
                k.label(),
                proxy_bin.clone(),
                a.proxy_args.clone(),
                c.clone(),
                log_dir.clone(),
                maxclients,
            ))),
            _ => {}
        }
    }
    if targets.is_empty() {
        bail!("no front target could be set up");
    }
    for t in targets.iter_mut() {
        check_stop(stop)?;
        eprintln!("starting {}", t.name());
        t.start()?;
        let addr = t
            .addr()
            .ok_or_else(|| anyhow!("{} has no address", t.name()))?;
        eprintln!(
            "  {} ready at {addr} (proxy pids {:?}, backend pids {:?})",
            t.name(),
            t.pids(),
            t.backend_pids()
        );
        if t.needs_preload() {
            eprintln!("  preloading {} keys through {}", a.keyspace, t.name());
            rt.block_on(loadgen::fill(
                &addr,
                a.keyspace,
                a.data_size,
                8,
                FILL_TIMEOUT,
            ))
            .with_context(|| format!("preloading {}", t.name()))?;
        }
        rep.target_names.push(t.name().to_string());
        rep.target_is_cluster.push(t.is_cluster());
        rep.target_descriptions.push(t.describe());
    }

    // Keep time for the half-load and idle-connection checks after the throughput rounds.
    let proxies = targets.iter().filter(|t| !t.pids().is_empty()).count() as u32;
    let reserve = plan
        .half_load
        .saturating_add(Duration::from_secs(2))
        .saturating_mul(targets.len() as u32 * plan.rounds as u32)
        + if idle_conns > 0 {
            IDLE_RESERVE_PER_10K
                .mul_f64(idle_conns as f64 / 10_000.0)
                .max(Duration::from_secs(2))
                * proxies
        } else {
            Duration::ZERO
        };
    let tp_deadline = deadline
        .checked_sub(reserve)
        .unwrap_or(deadline)
        .max(Instant::now() + Duration::from_secs(5));
    run_throughput(
        plan,
        rt,
        stop,
        tp_deadline.min(deadline),
        &mut targets,
        &mut rep.samples,
        &mut rep.notes,
    )?;
    for t in targets.iter() {
        if let Some(&pid) = t.pids().first() {
            rep.proxy_rss.push((
                t.name().to_string(),
                procfs::status_bytes(pid, "VmHWM").ok(),
                procfs::nofile_limit(pid),
            ));
        }
    }
    if !plan.half_load.is_zero() {
        run_half_load(plan, rt, stop, deadline, &targets, &mut rep)?;
    }
    if idle_conns > 0 {
        run_idle(rt, stop, deadline, &mut targets, &mut rep, idle_conns)?;
    }
    for t in targets.iter_mut() {
        t.stop();
    }
    drop(targets);
    drop(redis_cluster);
    drop(node_cluster);
    rep.elapsed = started.elapsed();
    rep.loadavg_end = procfs::loadavg();
    if rep.notes.is_empty() && rep.samples.iter().all(|s| s.errors == 0) {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        rep.notes
            .push(format!("logs kept in {}", log_dir.display()));
    }
    let text = rep.render();
    println!("{text}");
    if !a.no_write {
        let path = super::report::append_results(a.out_dir.clone(), rep.started, &text)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Paced slotgate-bench runs at half of the direct client's peak, through every target.
fn run_half_load(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    deadline: Instant,
    targets: &[Box<dyn Target>],
    rep: &mut FrontReport,
) -> Result<()> {
    let a = &plan.args;
    let w = if a.tests.contains(&Workload::Get) {
        Workload::Get
    } else {
        a.tests[0]
    };
    let p = a.pipelines.iter().copied().min().unwrap_or(1);
    let Some(direct) = rep.target_names.iter().position(|n| n == DIRECT) else {
        rep.notes
            .push("half-load latency skipped: it needs the direct target".to_string());
        return Ok(());
    };
    let Some(peak) = rep.median_rps(direct, Tool::SlotgateBench, w, p) else {
        rep.notes.push(format!(
            "half-load latency skipped: no slotgate-bench {} -P {p} run of the direct client",
            w.name()
        ));
        return Ok(());
    };
    let rate = peak * 0.5;
    rep.half_load = Some((w, p, peak, rate, plan.half_load));
    for round in 0..plan.rounds {
        for (ti, t) in targets.iter().enumerate() {
            check_stop(stop)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left < plan.half_load + Duration::from_secs(2) {
                rep.notes
                    .push("time budget exhausted: later half-load runs skipped".to_string());
                return Ok(());
            }
            let addr = t
                .addr()
                .ok_or_else(|| anyhow!("{} is not running", t.name()))?;
            eprintln!(
                "half load {}/{}: slotgate-bench {} -P {p} at {rate:.0} req/s against {}",
                round + 1,
                plan.rounds,
                w.name(),
                t.name()
            );
            let cfg = LoadConfig {
                addr,
                cluster: t.is_cluster(),
                connections: a.clients,
                pipeline: p,
                requests: None,
                duration: Some(plan.half_load),
                timeout: plan.half_load + Duration::from_secs(30),
                keyspace: a.keyspace,
                value_size: a.data_size,
                workload: w,
                verify: false,
                progress: false,
                rate: Some(rate),
                ..LoadConfig::default()
            };
            match rt.block_on(loadgen::run(cfg, stop.clone())) {
                Ok(r) => {
                    eprintln!(
                        "  {:.0} req/s, p50 {} µs, p99 {} µs, {} errors",
                        r.rps(),
                        r.latency.p50,
                        r.latency.p99,
                        r.errors.total()
                    );
                    rep.half_samples.push(HalfLoadSample {
                        target: ti,
                        rps: r.rps(),
                        p50_us: r.latency.p50 as f64,
                        p99_us: r.latency.p99 as f64,
                        errors: r.errors.total(),
                    });
                }
                Err(e) => rep.notes.push(format!(
                    "half-load run against {} (round {}) failed: {e:#}",
                    t.name(),
                    round + 1
                )),
            }
        }
    }
    Ok(())
}

/// Restarts each proxy and records its RSS before and while `n` idle clients are connected.
fn run_idle(
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    deadline: Instant,
    targets: &mut [Box<dyn Target>],
    rep: &mut FrontReport,
    n: usize,
) -> Result<()> {
    for t in targets.iter_mut() {
        if t.pids().is_empty() {
            continue; // the direct client has no process in between
        }
        check_stop(stop)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_secs(5) {
            rep.notes
                .push("time budget exhausted: idle-connection check skipped".to_string());
            return Ok(());
        }
        eprintln!("idle connections: restarting {} and opening {n}", t.name());
        t.start()?;
        let addr = t
            .addr()
            .ok_or_else(|| anyhow!("{} is not running", t.name()))?;
        let Some(&pid) = t.pids().first() else {
            continue;
        };
        let budget = left.min(IDLE_BUDGET);
        let s = rt.block_on(idle_check(&addr, pid, n, stop, budget))?;
        eprintln!(
            "  {} held ({} failed) in {:.1} s; RSS {:.1} -> {:.1} MiB",
            s.held,
            s.failed,
            s.open_secs,
            s.rss_before as f64 / 1048576.0,
            s.rss_after as f64 / 1048576.0
        );
        if let Some(e) = &s.first_error {
            rep.notes.push(format!(
                "{}: {} of {n} idle connections failed (first: {e})",
                t.name(),
                s.failed
            ));
        }
        rep.idle.push(IdleSample {
            target: t.name().to_string(),
            ..s
        });
    }
    Ok(())
}

/// Opens `n` connections to `addr` (each answers one PING, so the proxy really accepted it),
/// in batches of [`IDLE_BATCH`], within `budget`; measures `pid`'s RSS around it.
async fn idle_check(
    addr: &str,
    pid: u32,
    n: usize,
    stop: &AtomicBool,
    budget: Duration,
) -> Result<IdleSample> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = procfs::status_bytes(pid, "VmRSS")?;
    let deadline = Instant::now() + budget;
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    // Each round settles up to IDLE_BATCH attempts; bounded by `n`, the deadline and the
    // failure cap.
    while held.len() + failed < n {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if Instant::now() >= deadline || failed > n / 10 + 10 {
            break;
        }
        let k = IDLE_BATCH.min(n - held.len() - failed);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..k {
            let addr = addr.to_string();
            set.spawn(async move {
                tokio::time::timeout(IDLE_CONN_TIMEOUT, idle_conn(&addr))
                    .await
                    .map_err(|_| anyhow!("no PONG within {IDLE_CONN_TIMEOUT:?}"))?
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    if held.len() + failed < n {
        first_error.get_or_insert_with(|| "stopped early (time budget or failures)".into());
        failed = n - held.len();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = procfs::status_bytes(pid, "VmRSS")?;
    let hwm = procfs::status_bytes(pid, "VmHWM").ok();
    // One more client while all of them are held: the proxy must still answer.
    let addr_owned = addr.to_string();
    let still_answers = tokio::task::spawn_blocking(move || {
        blocking_call(&addr_owned, &["PING"], Duration::from_secs(5))
            .is_ok_and(|r| r.starts_with(b"+PONG"))
    })
    .await
    .unwrap_or(false);
    let held_n = held.len();
    drop(held);
    Ok(IdleSample {
        target: String::new(),
        held: held_n,
        failed,
        open_secs,
        rss_before,
        rss_after,
        peak: hwm,
        nofile: procfs::nofile_limit(pid),
        still_answers,
        first_error,
    })
}

/// One idle client: connect, PING, wait for PONG, keep the socket.
async fn idle_conn(addr: &str) -> Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.context("reading PONG")?;
    if &buf != b"+PONG\r\n" {
        bail!("unexpected reply {:?}", String::from_utf8_lossy(&buf));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twemproxy_yaml() {
        let y = twemproxy_config(
            "127.0.0.1:7000",
            &["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
        );
        assert!(y.starts_with("bench:\n  listen: 127.0.0.1:7000\n  redis: true\n"));
        assert!(y.contains("  hash: fnv1a_64\n  distribution: ketama\n"));
        assert!(y.ends_with("  servers:\n   - 127.0.0.1:7001:1\n   - 127.0.0.1:7002:1\n"));
    }

    #[test]
    fn labels() {
        assert_eq!(FrontKind::Direct.label(), DIRECT);
        assert_eq!(FrontKind::Twemproxy.label(), TWEMPROXY);
        assert_eq!(FrontKind::NodeCluster.label(), "slotgate/node-cluster");
    }
}
