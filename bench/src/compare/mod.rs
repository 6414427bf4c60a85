//! The side-by-side runner (`slotgate-bench compare`): starts every target on loopback,
//! runs the same workloads against each in interleaved rounds (A B A B ...) with both
//! redis-benchmark and slotgate-bench, and writes a Markdown report.
//!
//! Three suites: `node` (slotgate-node vs redis-server, standalone, plus a memory dataset),
//! `front` (module [`front`]: the slotgate proxy vs a direct cluster client vs twemproxy) and
//! `cluster` (module [`cluster_suite`]: cluster mode vs standalone, idle bus, reshard time) and
//! `repl` (module [`repl`]: failover time, replication lag and full sync, slotgate-node vs
//! redis-server).

pub mod cluster_fixture;
pub mod cluster_suite;
pub mod front;
pub mod front_report;
pub mod procfs;
pub mod redis_benchmark;
pub mod repl;
pub mod report;
pub mod target;

use crate::loadgen::{self, LoadConfig};
use crate::workload::Workload;
use anyhow::{anyhow, bail, Context, Result};
use procfs::Machine;
use redis_benchmark::RbRun;
use report::{MemorySample, Report, Sample};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{ServerTarget, Target};

/// Label of the reference target every ratio is computed against.
pub const BASELINE: &str = "redis-server";

/// Longest single measurement run.
const RUN_CAP: Duration = Duration::from_secs(120);

/// Which comparison `--suite` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// slotgate-node vs redis-server, standalone (`--targets`).
    Node,
    /// Cluster fronts: slotgate proxy, direct cluster client, twemproxy (`--front-targets`).
    Front,
    /// Cluster mode itself, slotgate-node and redis-server: per-node throughput vs
    /// standalone, idle bus traffic and CPU, a 4096-slot reshard.
    Cluster,
    /// `node`, then `front`, then `cluster`.
    All,
    /// Replication and failover, slotgate-node vs redis-server (`--targets`): failover time,
    /// replication lag under a paced load, full sync time.
    Repl,
}

/// Kinds of target `--targets` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// `slotgate-node`, standalone.
    Node,
    /// `redis-server`, standalone.
    Redis,
}

/// Load tools `--tools` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tool {
    /// redis-benchmark (its own client; `--csv` results).
    RedisBenchmark,
    /// This crate's generator, in process.
    SlotgateBench,
}

impl Tool {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tool::RedisBenchmark => "redis-benchmark",
            Tool::SlotgateBench => "slotgate-bench",
        }
    }
}

/// Options of `compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Which comparison to run.
    #[arg(long, value_enum, default_value_t = Suite::Node)]
    pub suite: Suite,
    /// slotgate-node binary [default: slotgate-node beside this executable].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// Extra argument for slotgate-node (repeatable).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_bin: PathBuf,
    /// redis-benchmark binary.
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: PathBuf,
    /// Targets of the node suite, in interleaving order.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["node", "redis"])]
    pub targets: Vec<TargetKind>,
    /// Targets of the front suite, in interleaving order.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["slotgate", "direct", "twemproxy"])]
    pub front_targets: Vec<front::FrontKind>,
    /// Front suite: also run slotgate over a slotgate-node cluster (`--node-bin` started with
    /// `--cluster-enabled yes`); skipped with a note when that cluster cannot be formed.
    #[arg(long)]
    pub with_node_cluster: bool,
    /// slotgate proxy binary [default: slotgate beside this executable].
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// Extra argument for the slotgate proxy (repeatable).
    #[arg(long = "proxy-arg", allow_hyphen_values = true)]
    pub proxy_args: Vec<String>,
    /// twemproxy binary.
    #[arg(long, default_value = "nutcracker")]
    pub nutcracker_bin: PathBuf,
    /// redis-cli binary (forms the clusters).
    #[arg(long, default_value = "redis-cli")]
    pub redis_cli: PathBuf,
    /// Masters of each cluster the front suite creates.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
    /// Front suite: idle client connections opened to each proxy for the memory check,
    /// 0 to skip [default: 10000].
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// Front suite: seconds per paced run of the half-load latency check, 0 to skip
    /// [default: 3, --quick: 2].
    #[arg(long)]
    pub half_load_secs: Option<f64>,
    /// Load tools.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["redis-benchmark", "slotgate-bench"])]
    pub tools: Vec<Tool>,
    /// Workloads (redis-benchmark runs only set, get, incr, lpush, lpop, hset, mset).
    #[arg(short = 't', long, value_enum, value_delimiter = ',', default_values = ["set", "get"])]
    pub tests: Vec<Workload>,
    /// Pipeline depths.
    #[arg(short = 'P', long, value_delimiter = ',', default_values_t = [1usize, 16])]
    pub pipelines: Vec<usize>,
    /// Rounds per (target, tool, workload, pipeline) [default: 3, --quick: 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Client connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: usize,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 64)]
    pub data_size: usize,
    /// Keyspace size (preloaded before the runs).
    #[arg(short = 'r', long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Requests per run at -P 1; deeper pipelines run min(P, 10) times as many
    /// [default: 200000, --quick: 50000; front suite: 120000, --quick: 20000].
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Keys of the memory workload, 0 to skip [default: 1000000, --quick: 200000].
    #[arg(long)]
    pub memory_keys: Option<u64>,
    /// Time budget of each suite in seconds [default: 600, --quick: 90; front suite: 420,
    /// --quick: 85; repl suite: 600, --quick: 180].
    #[arg(long)]
    pub max_time: Option<f64>,
    /// Cluster suite: seconds the idle 6-node clusters are measured, 0 to skip [default: 10,
    /// --quick: 3].
    #[arg(long)]
    pub idle_secs: Option<f64>,
    /// Cluster suite: keys in the cluster before the 4096-slot reshard, 0 to skip
    /// [default: 1000000, --quick: 100000].
    #[arg(long)]
    pub reshard_keys: Option<u64>,
    /// About a minute: one round, fewer requests and keys.
    #[arg(long)]
    pub quick: bool,
    /// Directory for `<YYYY-MM-DD>.md` [default: bench/results of this crate].
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Print the report without writing it.
    #[arg(long)]
    pub no_write: bool,
    /// Repl suite: cluster-node-timeout (ms) of the failover cluster.
    #[arg(long, default_value_t = 2000)]
    pub repl_node_timeout: u64,
    /// Repl suite: writes per second of the paced load during the lag measurement.
    #[arg(long, default_value_t = 50_000.0)]
    pub lag_rate: f64,
    /// Repl suite: seconds of the lag measurement [default: 10, --quick: 4].
    #[arg(long)]
    pub lag_secs: Option<f64>,
    /// Repl suite: keys of the full sync (DEBUG POPULATE) [default: 1000000, --quick: 200000].
    #[arg(long)]
    pub sync_keys: Option<u64>,
}

/// The resolved plan of one suite.
pub(crate) struct Plan {
    pub(crate) args: CompareArgs,
    pub(crate) rounds: usize,
    pub(crate) requests: u64,
    pub(crate) memory_keys: u64,
    pub(crate) max_time: Duration,
    /// Idle connections of the front suite's memory check (0 = skip).
    pub(crate) idle_conns: usize,
    /// Length of each paced half-load run (zero = skip).
    pub(crate) half_load: Duration,
    /// Repl suite: seconds of the lag measurement.
    pub(crate) lag_secs: f64,
    /// Repl suite: keys of the full sync.
    pub(crate) sync_keys: u64,
}

impl Plan {
    /// Resolves the defaults of `suite` (`Node`, `Front` or `Repl`).
    pub(crate) fn new(args: CompareArgs, suite: Suite) -> Result<Plan> {
        let q = args.quick;
        let front = suite == Suite::Front;
        let rounds = args.rounds.unwrap_or(if q { 1 } else { 3 });
        let requests = args.requests.unwrap_or(match (front, q) {
            (false, false) => 200_000,
            (false, true) => 50_000,
            (true, false) => 120_000,
            (true, true) => 20_000,
        });
        let memory_keys = args
            .memory_keys
            .unwrap_or(if q { 200_000 } else { 1_000_000 });
        let secs = args.max_time.unwrap_or(match (suite, front, q) {
            (Suite::Repl, _, false) => 600.0,
            (Suite::Repl, _, true) => 180.0,
            (_, false, false) => 600.0,
            (_, false, true) => 90.0,
            (_, true, false) => 420.0,
            (_, true, true) => 85.0,
        });
        let lag_secs = args.lag_secs.unwrap_or(if q { 4.0 } else { 10.0 });
        if !(lag_secs.is_finite() && (1.0..=3600.0).contains(&lag_secs)) {
            bail!("--lag-secs must be within 1..=3600");
        }
        if !(args.lag_rate.is_finite() && args.lag_rate > 0.0 && args.lag_rate <= 10_000_000.0) {
            bail!("--lag-rate must be a positive number of writes per second");
        }
        let sync_keys = args
            .sync_keys
            .unwrap_or(if q { 200_000 } else { 1_000_000 });
        if !(1..=100_000_000).contains(&sync_keys) {
            bail!("--sync-keys must be within 1..=100000000");
        }
        if !(100..=600_000).contains(&args.repl_node_timeout) {
            bail!("--repl-node-timeout must be within 100..=600000 ms");
        }
        if !(secs.is_finite() && secs > 0.0 && secs < 1e6) {
            bail!("--max-time must be a positive number of seconds");
        }
        let idle_conns = args.idle_conns.unwrap_or(10_000);
        if idle_conns > 1_000_000 {
            bail!("--idle-conns must be at most 1000000");
        }
        let half = args.half_load_secs.unwrap_or(if q { 2.0 } else { 3.0 });
        if !(half.is_finite() && (0.0..=600.0).contains(&half)) {
            bail!("--half-load-secs must be within 0..=600");
        }
        if front && !(1..=64).contains(&args.masters) {
            bail!("--masters must be within 1..=64");
        }
        if rounds == 0 || rounds > 100 {
            bail!("--rounds must be within 1..=100");
        }
        let no_targets = if front {
            args.front_targets.is_empty() && !args.with_node_cluster
        } else {
            args.targets.is_empty()
        };
        if no_targets || args.tools.is_empty() || args.tests.is_empty() {
            bail!("need at least one target, tool and test");
        }
        if args.pipelines.iter().any(|&p| p == 0 || p > 10_000) || args.pipelines.is_empty() {
            bail!("pipeline depths must be within 1..=10000");
        }
        if args.clients == 0 || requests == 0 {
            bail!("-c and -n must be at least 1");
        }
        Ok(Plan {
            args,
            rounds,
            requests,
            memory_keys,
            max_time: Duration::from_secs_f64(secs),
            idle_conns,
            half_load: Duration::from_secs_f64(half),
            lag_secs,
            sync_keys,
        })
    }

    /// Requests of one run at pipeline depth `p`.
    pub(crate) fn requests_at(&self, p: usize) -> u64 {
        self.requests * p.clamp(1, 10) as u64
    }
}

/// Whether redis-benchmark has a test for `w`.
fn redis_benchmark_test(w: Workload) -> Option<&'static str> {
    match w {
        Workload::Set => Some("set"),
        Workload::Get => Some("get"),
        Workload::Incr => Some("incr"),
        Workload::Lpush => Some("lpush"),
        Workload::Lpop => Some("lpop"),
        Workload::Hset => Some("hset"),
        Workload::Mset => Some("mset"),
        Workload::Mixed | Workload::Mget | Workload::Del => None,
    }
}

/// `name` beside this executable (or one directory up, for target/<profile>/deps).
pub(crate) fn sibling_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("executable has no parent directory"))?;
    // Integration-test and `cargo run` binaries may live in target/<profile>/deps.
    let candidates = [dir.join(name), dir.join("..").join(name)];
    Ok(candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone()))
}

/// The slotgate-node binary: `--node-bin`, else beside this executable.
pub(crate) fn node_bin(args: &CompareArgs) -> Result<PathBuf> {
    match &args.node_bin {
        Some(b) => Ok(b.clone()),
        None => sibling_bin("slotgate-node"),
    }
}

fn build_targets(args: &CompareArgs, log_dir: &std::path::Path) -> Result<Vec<Box<dyn Target>>> {
    let mut out: Vec<Box<dyn Target>> = Vec::new();
    for kind in &args.targets {
        match kind {
            TargetKind::Node => {
                let bin = node_bin(args)?;
                if bin.components().count() > 1 && !bin.is_file() {
                    bail!(
                        "slotgate-node not found at {} (build it with `cargo build --release -p \
                         slotgate-node` or pass --node-bin)",
                        bin.display()
                    );
                }
                out.push(Box::new(ServerTarget::new(
                    "slotgate-node",
                    bin,
                    args.node_args.clone(),
                    log_dir.to_path_buf(),
                )));
            }
            TargetKind::Redis => out.push(Box::new(ServerTarget::new(
                BASELINE,
                args.redis_bin.clone(),
                Vec::new(),
                log_dir.to_path_buf(),
            ))),
        }
    }
    Ok(out)
}

/// Runs the comparison (the suites `--suite` names) and writes the report.
pub fn main(args: CompareArgs) -> Result<()> {
    let suites: &[Suite] = match args.suite {
        Suite::Node => &[Suite::Node],
        Suite::Front => &[Suite::Front],
        Suite::Cluster => &[Suite::Cluster],
        Suite::Repl => &[Suite::Repl],
        Suite::All => &[Suite::Node, Suite::Front, Suite::Cluster],
    };
    // Validate every suite's options before anything starts.
    let plans = suites
        .iter()
        .map(|&s| Plan::new(args.clone(), s).map(|p| (s, p)))
        .collect::<Result<Vec<_>>>()?;
    let machine = Machine::detect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(machine.cores.max(1))
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping every started process");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let mut first_err = None;
    for (suite, plan) in plans {
        check_stop(&stop)?;
        let res = match suite {
            Suite::Front => front::run(&plan, &rt, &stop, &machine),
            Suite::Repl => repl::run(&plan, &rt, &stop, &machine),
            Suite::Cluster => cluster_suite::run(&plan, &rt, &stop, &machine),
            _ => run_node_suite(&plan, &rt, &stop, &machine),
        };
        if let Err(e) = res {
            // With `--suite all`, a failed suite does not prevent the other one.
            eprintln!("{suite:?} suite failed: {e:#}");
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The node suite: slotgate-node vs redis-server, standalone.
fn run_node_suite(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    machine: &Machine,
) -> Result<()> {
    let command_line = report::shell_join(std::env::args());
    let started = Instant::now();
    let deadline = started + plan.max_time;
    let machine = machine.clone();
    let log_dir = std::env::temp_dir().join(format!("slotgate-bench-{}", std::process::id()));
    // Targets are declared before anything can fail so that dropping them kills their processes.
    let mut targets = build_targets(&plan.args, &log_dir)?;
    let mut rep = Report::new(
        machine,
        command_line,
        &plan.args,
        plan.rounds,
        plan.requests,
    );

    for t in targets.iter_mut() {
        eprintln!("starting {}", t.name());
        t.start()?;
        rep.target_names.push(t.name().to_string());
        rep.target_descriptions.push(t.describe());
        let addr = t
            .addr()
            .ok_or_else(|| anyhow!("{} has no address", t.name()))?;
        eprintln!("  {} ready at {addr} (pids {:?})", t.name(), t.pids());
        if t.needs_preload() {
            eprintln!("  preloading {} keys", plan.args.keyspace);
            rt.block_on(loadgen::fill(
                &addr,
                plan.args.keyspace,
                plan.args.data_size,
                8,
                Duration::from_secs(120),
            ))
            .with_context(|| format!("preloading {}", t.name()))?;
        }
    }

    run_throughput(
        plan,
        rt,
        stop,
        deadline,
        &mut targets,
        &mut rep.samples,
        &mut rep.notes,
    )?;
    for t in targets.iter() {
        let hwm = procfs::sum_over(&t.pids(), |p| procfs::status_bytes(p, "VmHWM")).ok();
        rep.peak_rss.push((t.name().to_string(), hwm));
    }
    if plan.memory_keys > 0 {
        run_memory(plan, rt, stop, deadline, &mut targets, &mut rep)?;
    }
    for t in targets.iter_mut() {
        t.stop();
    }
    rep.elapsed = started.elapsed();
    // Server logs are only worth keeping when something failed.
    if rep.notes.is_empty() {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        rep.notes
            .push(format!("server logs kept in {}", log_dir.display()));
    }
    let text = rep.render();
    println!("{text}");
    if !plan.args.no_write {
        let path = rep.write(plan.args.out_dir.clone())?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Fails with "interrupted" once Ctrl-C was seen.
pub(crate) fn check_stop(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Interleaved rounds of every (tool, workload, pipeline) over all targets.
pub(crate) fn run_throughput(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    deadline: Instant,
    targets: &mut [Box<dyn Target>],
    samples: &mut Vec<Sample>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let a = &plan.args;
    for round in 0..plan.rounds {
        for &tool in &a.tools {
            for &w in &a.tests {
                if tool == Tool::RedisBenchmark && redis_benchmark_test(w).is_none() {
                    continue;
                }
                for &p in &a.pipelines {
                    for (ti, t) in targets.iter().enumerate() {
                        check_stop(stop)?;
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left < Duration::from_secs(2) {
                            notes.push(format!(
                                "time budget ({:?}) exhausted in round {}: later runs skipped",
                                plan.max_time,
                                round + 1
                            ));
                            return Ok(());
                        }
                        let timeout = left.min(RUN_CAP);
                        eprintln!(
                            "round {}/{}: {} {} -P {p} against {}",
                            round + 1,
                            plan.rounds,
                            tool.name(),
                            w.name(),
                            t.name()
                        );
                        match measure(plan, rt, stop, t.as_ref(), tool, w, p, timeout) {
                            Ok(mut s) => {
                                s.target = ti;
                                s.round = round;
                                eprintln!(
                                    "  {:.0} req/s, cpu {:.2} s/Mreq, {} errors",
                                    s.rps,
                                    s.cpu_per_mreq.unwrap_or(f64::NAN),
                                    s.errors
                                );
                                samples.push(s);
                            }
                            Err(e) => {
                                eprintln!("  failed: {e:#}");
                                notes.push(format!(
                                    "{} {} -P {p} against {} (round {}) failed: {e:#}",
                                    tool.name(),
                                    w.name(),
                                    t.name(),
                                    round + 1
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// One measured run: server CPU before/after, the load, and the results.
#[allow(clippy::too_many_arguments)]
fn measure(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    t: &dyn Target,
    tool: Tool,
    w: Workload,
    p: usize,
    timeout: Duration,
) -> Result<Sample> {
    let a = &plan.args;
    let addr = t
        .addr()
        .ok_or_else(|| anyhow!("{} is not running", t.name()))?;
    let pids = t.pids();
    let backend = t.backend_pids();
    let cpu0 = procfs::sum_over(&pids, procfs::cpu_ticks)?;
    let bcpu0 = procfs::sum_over(&backend, procfs::cpu_ticks)?;
    let n = plan.requests_at(p);
    let mut s = Sample {
        target: 0,
        round: 0,
        tool,
        workload: w,
        pipeline: p,
        rps: 0.0,
        p50_us: None,
        p99_us: None,
        cpu_per_mreq: None,
        backend_cpu_per_mreq: None,
        errors: 0,
        error_kinds: String::new(),
    };
    let requests = match tool {
        Tool::RedisBenchmark => {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("bad address {addr}"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("bad port in {addr}"))?;
            let run = RbRun {
                bin: &a.redis_benchmark,
                host,
                port,
                cluster: t.is_cluster(),
                test: redis_benchmark_test(w).unwrap_or("set"),
                clients: a.clients,
                data_size: a.data_size,
                keyspace: a.keyspace,
                requests: n,
                pipeline: p,
            };
            let row = run.run(timeout, stop)?;
            s.rps = row.rps;
            s.p50_us = row.p50_ms.map(|v| v * 1000.0);
            s.p99_us = row.p99_ms.map(|v| v * 1000.0);
            n
        }
        Tool::SlotgateBench => {
            let cfg = LoadConfig {
                addr: addr.clone(),
                cluster: t.is_cluster(),
                connections: a.clients,
                pipeline: p,
                requests: Some(n),
                duration: None,
                timeout,
                keyspace: a.keyspace,
                value_size: a.data_size,
                workload: w,
                verify: true,
                progress: false,
                ..LoadConfig::default()
            };
            let r = rt.block_on(loadgen::run(cfg, stop.clone()))?;
            s.rps = r.rps();
            s.p50_us = Some(r.latency.p50 as f64);
            s.p99_us = Some(r.latency.p99 as f64);
            s.errors = r.errors.total();
            s.error_kinds = r
                .errors
                .iter()
                .map(|(k, e)| format!("{k}×{} ({})", e.count, e.sample))
                .collect::<Vec<_>>()
                .join("; ");
            r.answered
        }
    };
    let cpu1 = procfs::sum_over(&pids, procfs::cpu_ticks)?;
    let bcpu1 = procfs::sum_over(&backend, procfs::cpu_ticks)?;
    if requests > 0 {
        let per_mreq = |t0: u64, t1: u64| {
            t1.saturating_sub(t0) as f64 / procfs::clock_ticks_per_sec() / requests as f64 * 1e6
        };
        if !pids.is_empty() {
            s.cpu_per_mreq = Some(per_mreq(cpu0, cpu1));
        }
        if !backend.is_empty() {
            s.backend_cpu_per_mreq = Some(per_mreq(bcpu0, bcpu1));
        }
    }
    Ok(s)
}

/// Restarts each target, loads `memory_keys` keys and records its RSS.
fn run_memory(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    stop: &Arc<AtomicBool>,
    deadline: Instant,
    targets: &mut [Box<dyn Target>],
    rep: &mut Report,
) -> Result<()> {
    let keys = plan.memory_keys;
    rep.memory_keys = keys;
    for t in targets.iter_mut() {
        check_stop(stop)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_secs(5) {
            rep.notes
                .push("time budget exhausted: memory workload skipped".to_string());
            return Ok(());
        }
        if t.is_cluster() {
            rep.notes.push(format!(
                "memory workload not implemented for cluster target {}",
                t.name()
            ));
            continue;
        }
        eprintln!("memory: restarting {} and loading {keys} keys", t.name());
        t.start()?;
        let addr = t
            .addr()
            .ok_or_else(|| anyhow!("{} is not running", t.name()))?;
        let pids = t.pids();
        let rss = |f: &str| procfs::sum_over(&pids, |p| procfs::status_bytes(p, f));
        let before = rss("VmRSS")?;
        let res = rt.block_on(loadgen::fill(
            &addr,
            keys,
            plan.args.data_size,
            8,
            left.min(RUN_CAP),
        ));
        if let Err(e) = res {
            rep.notes
                .push(format!("memory load of {} failed: {e:#}", t.name()));
            continue;
        }
        let dbsize = dbsize(&addr);
        let after = rss("VmRSS")?;
        let peak = rss("VmHWM").ok();
        if dbsize != Some(keys) {
            rep.notes.push(format!(
                "{}: DBSIZE after loading {keys} keys is {dbsize:?}",
                t.name()
            ));
        }
        eprintln!(
            "  DBSIZE {dbsize:?}, RSS {:.1} MiB -> {:.1} MiB",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0
        );
        rep.memory.push(MemorySample {
            target: t.name().to_string(),
            dbsize,
            rss_before: before,
            rss_after: after,
            peak,
        });
    }
    Ok(())
}

/// DBSIZE of a standalone server, `None` when it does not answer an integer.
fn dbsize(addr: &str) -> Option<u64> {
    let r = target::blocking_call(addr, &["DBSIZE"], Duration::from_secs(10)).ok()?;
    let line = std::str::from_utf8(&r).ok()?;
    line.strip_prefix(':')?.trim().parse().ok()
}
