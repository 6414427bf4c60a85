//! slotgate-bench entry point: `slotgate-bench [load options]` runs the load generator,
//! `slotgate-bench compare [options]` runs the side-by-side comparison.

use anyhow::{anyhow, bail, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use slotgate_bench::compare::{self, CompareArgs};
use slotgate_bench::keys::DistKind;
use slotgate_bench::loadgen::{self, LoadConfig};
use slotgate_bench::workload::Workload;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Load generator for Redis-protocol servers and clusters.
#[derive(Parser, Debug)]
#[command(
    name = "slotgate-bench",
    version,
    disable_help_flag = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Benchmark side by side on loopback: slotgate-node vs redis-server (`--suite node`),
    /// slotgate vs a direct cluster client vs twemproxy (`--suite front`), or both; replication
    /// and failover, slotgate-node vs redis-server (`--suite repl`).
    Compare(CompareArgs),
}

/// Options of a load run.
#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Server host (cluster mode: seed node).
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379)]
    port: u16,
    /// Server address as host:port (overrides -h/-p).
    #[arg(long)]
    addr: Option<String>,
    /// Connections (cluster mode: per master).
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    connections: usize,
    /// Pipeline depth: requests in flight per connection.
    #[arg(short = 'P', long = "pipeline", default_value_t = 1)]
    pipeline: usize,
    /// Total requests (default 100000 unless --duration is given).
    #[arg(short = 'n', long = "requests")]
    requests: Option<u64>,
    /// Run for this many seconds (with -n: whichever ends first).
    #[arg(long)]
    duration: Option<f64>,
    /// Hard cap on the run in seconds, whatever -n says.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Keyspace size (keys are key:<12 digits>, as redis-benchmark's __rand_int__).
    #[arg(short = 'r', long = "keyspace", default_value_t = 100_000)]
    keyspace: u64,
    /// Value size in bytes.
    #[arg(short = 'd', long = "data-size", default_value_t = 64)]
    data_size: usize,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = DistKind::Uniform)]
    dist: DistKind,
    /// Workload.
    #[arg(short = 't', long = "workload", value_enum, default_value_t = Workload::Set)]
    workload: Workload,
    /// Share of GETs in the mixed workload (0..1).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Keys per MGET/MSET/DEL call.
    #[arg(short = 'k', long = "keys", default_value_t = 10)]
    keys: u32,
    /// Direct smart client: read CLUSTER SLOTS, send each request to its master.
    #[arg(long)]
    cluster: bool,
    /// Skip the SET-then-GET verification pass.
    #[arg(long)]
    no_verify: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No per-second progress line.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// RNG seed.
    #[arg(long, default_value_t = 0x5107_6a7e)]
    seed: u64,
    /// Pace the load at this many requests per second in total (open loop, spread over the
    /// connections) instead of as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
}

impl LoadArgs {
    fn to_config(&self) -> Result<LoadConfig> {
        let secs = |name: &str, v: f64| -> Result<Duration> {
            if v.is_finite() && v > 0.0 && v < 1e7 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(anyhow!("--{name} must be a positive number of seconds"))
            }
        };
        if !(0.0..=1.0).contains(&self.read_ratio) {
            bail!("--read-ratio must be within 0..1");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            bail!("--rate must be a positive number of requests per second");
        }
        let duration = self.duration.map(|d| secs("duration", d)).transpose()?;
        let requests = match (self.requests, duration) {
            (None, None) => Some(100_000),
            (r, _) => r,
        };
        Ok(LoadConfig {
            addr: self.addr.clone().unwrap_or_else(|| {
                slotgate_bench::cluster::join_host_port(&self.host, self.port.into())
            }),
            cluster: self.cluster,
            connections: self.connections,
            pipeline: self.pipeline,
            requests,
            duration,
            timeout: secs("timeout", self.timeout)?,
            keyspace: self.keyspace,
            value_size: self.data_size,
            dist: self.dist,
            workload: self.workload,
            read_ratio: self.read_ratio,
            keys_per_call: self.keys,
            verify: !self.no_verify,
            progress: !self.quiet,
            seed: self.seed,
            rate: self.rate,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Compare(args)) => compare::main(args).map(|()| ExitCode::SUCCESS),
        None => run_load(&cli.load),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slotgate-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one load; exit status 1 when any error was counted.
fn run_load(args: &LoadArgs) -> Result<ExitCode> {
    let cfg = args.to_config()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing in-flight batches");
                s.store(true, Ordering::Relaxed);
            }
        });
        loadgen::run(cfg, stop).await
    })?;
    rt.shutdown_timeout(Duration::from_millis(100));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if !report.errors.is_empty() {
        if args.json {
            eprint!("{}", report.to_text());
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
