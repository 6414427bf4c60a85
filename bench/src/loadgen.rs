//! The load generator: pipelined workers (one per `-c` connection, or one connection set per
//! master in `--cluster` mode), the start-up verification pass, the per-second progress line
//! and the final report.
//!
//! Each worker claims `-P` requests at a time, encodes them into one buffer per node, writes
//! the buffer once, then reads the replies with [`frame_len`] (no reply is materialized).
//! Latency of a request is the time from its batch's write to the read that completed it.

use crate::cluster::{self, parse_redirect, redirect_addr, Redirect, SlotMap};
use crate::conn::SimpleConn;
use crate::json::Obj;
use crate::keys::{DistKind, KeyDist};
use crate::stats::{ErrorCounts, Latency, LatencySummary};
use crate::workload::{check_reply, error_text, Outcome, Req, RequestGen, Workload};
use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use slotgate_protocol::resp::write_command;
use slotgate_protocol::{frame_len, key_slot, Frame};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often one request may be redirected (MOVED/ASK) before it counts as an error.
pub const MAX_REDIRECTS: u8 = 5;
/// Reconnections a worker may make over a run before it gives up.
const MAX_RECONNECTS: u32 = 100;
/// Known keys written and read back by the verification pass.
pub const VERIFY_KEYS: usize = 8;
/// Extra time granted past `--duration` for the last batches' replies.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Largest number of nodes followed through redirections.
const MAX_NODES: usize = 1024;

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Target (seed in cluster mode) as `host:port`.
    pub addr: String,
    /// Route every request to its slot's master (direct smart-client mode).
    pub cluster: bool,
    /// Client connections (in cluster mode: per master).
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Hard cap on the whole run, whatever `requests` says.
    pub timeout: Duration,
    /// Keyspace size.
    pub keyspace: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Key distribution.
    pub dist: DistKind,
    /// The commands to send.
    pub workload: Workload,
    /// Share of GETs in the mixed workload.
    pub read_ratio: f64,
    /// Keys per MGET/MSET/DEL call.
    pub keys_per_call: u32,
    /// Run the SET-then-GET verification pass first.
    pub verify: bool,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// RNG seed (each worker derives its own stream).
    pub seed: u64,
    /// Request budget per second over all connections (open-loop pacing); `None` = as fast
    /// as possible. Each connection sends its batches on its own fixed schedule.
    pub rate: Option<f64>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            addr: "127.0.0.1:6379".to_string(),
            cluster: false,
            connections: 50,
            pipeline: 1,
            requests: Some(100_000),
            duration: None,
            timeout: Duration::from_secs(600),
            keyspace: 100_000,
            value_size: 64,
            dist: DistKind::Uniform,
            workload: Workload::Set,
            read_ratio: 0.9,
            keys_per_call: 10,
            verify: true,
            progress: false,
            seed: 0x5107_6a7e,
            rate: None,
        }
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The configuration that was run.
    pub config: LoadConfig,
    /// Wall time of the load phase.
    pub elapsed: Duration,
    /// Requests answered with the expected reply.
    pub ok: u64,
    /// Requests answered at all (including error replies).
    pub answered: u64,
    /// Latency of successful requests (µs).
    pub latency: LatencySummary,
    /// Errors by kind, including verification mismatches.
    pub errors: ErrorCounts,
    /// Keys checked by the verification pass.
    pub verified_keys: u64,
    /// MOVED redirections followed.
    pub moved: u64,
    /// ASK redirections followed.
    pub asked: u64,
    /// Masters known at the start (1 when not in cluster mode).
    pub masters: usize,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let l = &self.latency;
        let mut s = String::new();
        let mode = if c.cluster {
            format!("cluster, {} masters", self.masters)
        } else {
            "standalone".to_string()
        };
        let _ = writeln!(
            s,
            "slotgate-bench: {} against {} ({mode}); {} conns, pipeline {}, {} B values, {} keys {}",
            c.workload.name(),
            c.addr,
            c.connections,
            c.pipeline,
            c.value_size,
            c.keyspace,
            c.dist.name()
        );
        if let Some(r) = c.rate {
            let _ = writeln!(s, "  paced at    {r:.0} req/s (open loop)");
        }
        let _ = writeln!(
            s,
            "  throughput  {:.0} req/s  ({} ok of {} answered in {:.2} s)",
            self.rps(),
            self.ok,
            self.answered,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  latency us  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if c.cluster {
            let _ = writeln!(s, "  redirects   MOVED {}  ASK {}", self.moved, self.asked);
        }
        let _ = writeln!(s, "  verified    {} keys", self.verified_keys);
        let _ = writeln!(s, "  errors      {}", self.errors.total());
        for (kind, k) in self.errors.iter() {
            let _ = writeln!(s, "    {kind:<24} {:>10}  e.g. {}", k.count, k.sample);
        }
        s
    }

    /// The machine-readable summary (one JSON object).
    pub fn to_json(&self) -> String {
        let c = &self.config;
        let l = &self.latency;
        let mut errs = Obj::new();
        for (kind, k) in self.errors.iter() {
            errs = errs.obj(
                kind,
                Obj::new().int("count", k.count).str("sample", &k.sample),
            );
        }
        Obj::new()
            .str("workload", c.workload.name())
            .str("addr", &c.addr)
            .bool("cluster", c.cluster)
            .int("masters", self.masters as u64)
            .int("connections", c.connections as u64)
            .int("pipeline", c.pipeline as u64)
            .int("value_size", c.value_size as u64)
            .int("keyspace", c.keyspace)
            .str("dist", c.dist.name())
            .int("keys_per_call", u64::from(c.keys_per_call))
            .num("read_ratio", c.read_ratio)
            .num("rate", c.rate.unwrap_or(0.0))
            .num("elapsed_s", self.elapsed.as_secs_f64())
            .int("requests", self.answered)
            .int("ok", self.ok)
            .num("rps", self.rps())
            .obj(
                "latency_us",
                Obj::new()
                    .int("min", l.min)
                    .num("mean", l.mean)
                    .int("p50", l.p50)
                    .int("p90", l.p90)
                    .int("p99", l.p99)
                    .int("p999", l.p999)
                    .int("max", l.max),
            )
            .int("errors_total", self.errors.total())
            .obj("errors", errs)
            .int("verified_keys", self.verified_keys)
            .obj(
                "redirects",
                Obj::new().int("moved", self.moved).int("ask", self.asked),
            )
            .finish()
    }
}

/// Counters shared by all workers and the progress printer.
struct Shared {
    issued: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    limit: u64,
}

impl Shared {
    /// Claims up to `want` requests of the budget; 0 when it is spent.
    fn claim(&self, want: u64) -> u64 {
        let prev = self.issued.fetch_add(want, Ordering::Relaxed);
        if prev >= self.limit {
            return 0;
        }
        want.min(self.limit - prev)
    }
}

/// Runs the load described by `cfg`; sets of `stop` ends it early (e.g. on Ctrl-C).
pub async fn run(cfg: LoadConfig, stop: Arc<AtomicBool>) -> Result<LoadReport> {
    if cfg.connections == 0 || cfg.pipeline == 0 {
        bail!("connections and pipeline must be at least 1");
    }
    if cfg.requests.is_none() && cfg.duration.is_none() {
        bail!("give a request count or a duration");
    }
    if let Some(r) = cfg.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("the request rate must be a positive number");
        }
    }
    let seed_host = host_of(&cfg.addr).to_string();
    let map = if cfg.cluster {
        Some(cluster::fetch_slot_map(&cfg.addr, &seed_host).await?)
    } else {
        crate::conn::wait_for_ping(&cfg.addr, Duration::from_secs(5)).await?;
        None
    };
    let masters = map.as_ref().map_or(1, |m| m.addrs.len());

    let mut errors = ErrorCounts::default();
    let verified_keys = if cfg.verify {
        verify(&cfg, map.as_ref(), &seed_host, &mut errors).await?
    } else {
        0
    };

    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(errors.total()),
        limit: cfg.requests.unwrap_or(u64::MAX),
    });
    let cfg = Arc::new(cfg);
    let value = make_value(cfg.value_size, cfg.seed);
    let dist = KeyDist::new(cfg.dist, cfg.keyspace);
    let barrier = Arc::new(tokio::sync::Barrier::new(cfg.connections + 1));
    let mut handles = Vec::with_capacity(cfg.connections);
    for id in 0..cfg.connections {
        let gen = RequestGen::new(
            cfg.workload,
            dist.clone(),
            cfg.read_ratio,
            cfg.keys_per_call,
            cfg.cluster,
            value.clone(),
            SmallRng::seed_from_u64(cfg.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        let w = Worker::new(
            id,
            cfg.clone(),
            shared.clone(),
            stop.clone(),
            gen,
            map.clone(),
            seed_host.clone(),
        );
        let b = barrier.clone();
        handles.push(tokio::spawn(w.run(b)));
    }
    barrier.wait().await;
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let progress = cfg.progress.then(|| {
        tokio::spawn(progress_loop(
            shared.clone(),
            done.clone(),
            start,
            cfg.duration,
            cfg.timeout,
        ))
    });

    let mut latency = Latency::new();
    let (mut ok, mut answered, mut moved, mut asked) = (0, 0, 0, 0);
    for h in handles {
        match h.await {
            Ok(r) => {
                latency.merge(&r.hist);
                errors.merge(&r.errors);
                ok += r.ok;
                answered += r.answered;
                moved += r.moved;
                asked += r.asked;
            }
            Err(e) => errors.add("worker-panic", &e.to_string(), 1),
        }
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    Ok(LoadReport {
        config: (*cfg).clone(),
        elapsed,
        ok,
        answered,
        latency: latency.summary(),
        errors,
        verified_keys,
        moved,
        asked,
        masters,
    })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A printable value of `size` bytes.
fn make_value(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..size).map(|_| rng.gen_range(b'a'..=b'z')).collect()
}

/// Prints `[ Ns] R req/s, E errors` to stderr every second until `done`.
async fn progress_loop(
    shared: Arc<Shared>,
    done: Arc<AtomicBool>,
    start: Instant,
    duration: Option<Duration>,
    timeout: Duration,
) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_ok, mut last_t) = (0u64, start);
    // Bounded by the run's own cap plus the drain grace.
    let max_ticks = duration.unwrap_or(timeout).min(timeout).as_secs() + DRAIN_GRACE.as_secs() + 2;
    for _ in 0..max_ticks {
        tick.tick().await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let ok = shared.ok.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
        eprintln!(
            "[{:>4}s] {:>10.0} req/s  {:>12} ok  {:>8} errors",
            now.duration_since(start).as_secs(),
            (ok - last_ok) as f64 / dt,
            ok,
            errors
        );
        (last_ok, last_t) = (ok, now);
    }
}

/// Writes known keys, reads them back, counts mismatches; returns the number of keys checked.
async fn verify(
    cfg: &LoadConfig,
    map: Option<&SlotMap>,
    seed_host: &str,
    errors: &mut ErrorCounts,
) -> Result<u64> {
    let mut conns: Vec<(String, SimpleConn)> = Vec::new();
    for i in 0..VERIFY_KEYS {
        let key = format!("slotgate-bench:verify:{i}");
        let mut value = format!("verify-{i}-{:x}-", cfg.seed).into_bytes();
        value.resize(cfg.value_size.max(value.len()), b'v' + (i % 3) as u8);
        let set: [&[u8]; 3] = [b"SET", key.as_bytes(), &value];
        match routed_call(&mut conns, map, seed_host, &cfg.addr, &set).await? {
            Frame::Simple(s) if &s[..] == b"OK" => {}
            other => {
                errors.add("verify-set-failed", &format!("SET {key}: {other}"), 1);
                continue;
            }
        }
        let get: [&[u8]; 2] = [b"GET", key.as_bytes()];
        match routed_call(&mut conns, map, seed_host, &cfg.addr, &get).await? {
            Frame::Bulk(b) if b[..] == value[..] => {}
            other => {
                let shown: String = other.to_string().chars().take(80).collect();
                errors.add(
                    "verify-mismatch",
                    &format!(
                        "GET {key}: expected {} bytes written just before, got {shown}",
                        value.len()
                    ),
                    1,
                );
            }
        }
    }
    Ok(VERIFY_KEYS as u64)
}

/// Sends a one-key command to the owner of its key, following MOVED/ASK a few times.
async fn routed_call(
    conns: &mut Vec<(String, SimpleConn)>,
    map: Option<&SlotMap>,
    seed_host: &str,
    default_addr: &str,
    args: &[&[u8]],
) -> Result<Frame> {
    let key = args.get(1).copied().unwrap_or_default();
    let mut addr = match map {
        Some(m) => m.addrs[m.slots[key_slot(key) as usize] as usize].clone(),
        None => default_addr.to_string(),
    };
    let mut asking = false;
    for _ in 0..=MAX_REDIRECTS {
        let pos = match conns.iter().position(|(a, _)| *a == addr) {
            Some(p) => p,
            None => {
                conns.push((addr.clone(), SimpleConn::connect(&addr).await?));
                conns.len() - 1
            }
        };
        let conn = &mut conns[pos].1;
        if asking {
            conn.call(&["ASKING"]).await?;
        }
        let reply = conn.call(args).await?;
        let redirect = match &reply {
            Frame::Error(e) if map.is_some() => match parse_redirect(e) {
                Some(Redirect::Moved(_, a)) => Some((redirect_addr(a, seed_host), false)),
                Some(Redirect::Ask(_, a)) => Some((redirect_addr(a, seed_host), true)),
                None => None,
            },
            _ => None,
        };
        match redirect {
            Some((a, ask)) => {
                addr = a;
                asking = ask;
            }
            None => return Ok(reply),
        }
    }
    Err(anyhow!(
        "too many redirections for key {}",
        String::from_utf8_lossy(key)
    ))
}

/// A request awaiting its reply on a node connection.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// The `+OK` of an `ASKING` sent before a redirected request.
    Asking,
    /// The reply to `batch[i]`.
    Req(u32),
}

/// One connection of a worker to one node.
struct NodeConn {
    stream: Option<TcpStream>,
    wbuf: BytesMut,
    rbuf: BytesMut,
    pending: Vec<Pending>,
}

impl NodeConn {
    fn new() -> NodeConn {
        NodeConn {
            stream: None,
            wbuf: BytesMut::with_capacity(64 * 1024),
            rbuf: BytesMut::with_capacity(64 * 1024),
            pending: Vec::new(),
        }
    }
}

/// Per-worker results.
struct WorkerResult {
    hist: Latency,
    errors: ErrorCounts,
    ok: u64,
    answered: u64,
    moved: u64,
    asked: u64,
}

/// One load connection (or, in cluster mode, one connection per master).
struct Worker {
    /// Index among the run's workers (staggers paced schedules).
    id: usize,
    cfg: Arc<LoadConfig>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    gen: RequestGen,
    map: Option<SlotMap>,
    seed_host: String,
    nodes: Vec<NodeConn>,
    batch: Vec<Req>,
    arena: Vec<u64>,
    todo: Vec<u32>,
    next_todo: Vec<u32>,
    res: WorkerResult,
    err_count: u64,
    reconnects: u32,
    hard_deadline: Instant,
    fatal: bool,
}

impl Worker {
    fn new(
        id: usize,
        cfg: Arc<LoadConfig>,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
        gen: RequestGen,
        map: Option<SlotMap>,
        seed_host: String,
    ) -> Worker {
        let n_nodes = map.as_ref().map_or(1, |m| m.addrs.len());
        let pipeline = cfg.pipeline;
        let hard_deadline = Instant::now() + cfg.timeout;
        Worker {
            id,
            cfg,
            shared,
            stop,
            gen,
            map,
            seed_host,
            nodes: (0..n_nodes).map(|_| NodeConn::new()).collect(),
            batch: Vec::with_capacity(pipeline),
            arena: Vec::with_capacity(pipeline * 4),
            todo: Vec::with_capacity(pipeline),
            next_todo: Vec::with_capacity(pipeline),
            res: WorkerResult {
                hist: Latency::new(),
                errors: ErrorCounts::default(),
                ok: 0,
                answered: 0,
                moved: 0,
                asked: 0,
            },
            err_count: 0,
            reconnects: 0,
            hard_deadline,
            fatal: false,
        }
    }

    fn addr(&self, node: usize) -> String {
        match &self.map {
            Some(m) => m.addrs.get(node).cloned().unwrap_or_default(),
            None => self.cfg.addr.clone(),
        }
    }

    fn error(&mut self, kind: &str, sample: &str, n: u64) {
        self.res.errors.add(kind, sample, n);
        self.err_count += n;
    }

    async fn run(mut self, barrier: Arc<tokio::sync::Barrier>) -> WorkerResult {
        // Connect to every known node before the clock starts.
        for node in 0..self.nodes.len() {
            if let Err(e) = self.connect(node).await {
                self.error("connect", &e.to_string(), 1);
            }
        }
        barrier.wait().await;
        let start = Instant::now();
        let end = self.cfg.duration.map(|d| start + d);
        self.hard_deadline = match end {
            Some(e) => (e + DRAIN_GRACE).min(start + self.cfg.timeout),
            None => start + self.cfg.timeout,
        };
        let soft_end = end.unwrap_or(self.hard_deadline);
        let pipeline = self.cfg.pipeline as u64;
        // Paced runs: this connection's share of the rate, one batch every `interval`, on an
        // absolute schedule (timer lateness does not accumulate), staggered across workers.
        let interval = self.cfg.rate.and_then(|r| {
            Duration::try_from_secs_f64(pipeline as f64 * self.cfg.connections as f64 / r).ok()
        });
        let mut next_at = match interval {
            Some(iv) => start + iv.mul_f64(self.id as f64 / self.cfg.connections as f64),
            None => start,
        };
        while !self.fatal && !self.stop.load(Ordering::Relaxed) && Instant::now() < soft_end {
            if let Some(iv) = interval {
                if next_at >= soft_end {
                    break;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(next_at)).await;
                next_at += iv;
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            let n = self.shared.claim(pipeline);
            if n == 0 {
                break;
            }
            let (ok0, err0) = (self.res.ok, self.err_count);
            self.run_batch(n as usize).await;
            self.shared
                .ok
                .fetch_add(self.res.ok - ok0, Ordering::Relaxed);
            self.shared
                .errors
                .fetch_add(self.err_count - err0, Ordering::Relaxed);
        }
        self.res
    }

    async fn connect(&mut self, node: usize) -> Result<()> {
        let addr = self.addr(node);
        let left = self.hard_deadline.saturating_duration_since(Instant::now());
        let stream =
            tokio::time::timeout(left.min(Duration::from_secs(5)), TcpStream::connect(&addr))
                .await
                .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
                .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let nc = &mut self.nodes[node];
        nc.stream = Some(stream);
        nc.rbuf.clear();
        Ok(())
    }

    /// Sends `n` fresh requests, following redirections, until every one is answered or failed.
    async fn run_batch(&mut self, n: usize) {
        self.batch.clear();
        self.arena.clear();
        self.todo.clear();
        for i in 0..n {
            let r = self.gen.next(&mut self.arena);
            self.batch.push(r);
            self.todo.push(i as u32);
        }
        let t0 = Instant::now();
        for _round in 0..=MAX_REDIRECTS {
            if self.todo.is_empty() || self.fatal {
                break;
            }
            self.encode_todo();
            self.next_todo.clear();
            for node in 0..self.nodes.len() {
                if !self.nodes[node].pending.is_empty() {
                    self.flush(node).await;
                }
            }
            for node in 0..self.nodes.len() {
                if !self.nodes[node].pending.is_empty() {
                    self.read_replies(node, t0).await;
                }
            }
            std::mem::swap(&mut self.todo, &mut self.next_todo);
        }
        if !self.todo.is_empty() {
            let n = self.todo.len() as u64;
            self.error(
                "too-many-redirects",
                "request still redirected after the maximum number of rounds",
                n,
            );
            self.todo.clear();
        }
    }

    /// Encodes every request of `todo` into the buffer of the node that should get it.
    fn encode_todo(&mut self) {
        for &i in &self.todo {
            let req = self.batch[i as usize];
            let node = match (req.ask, &self.map) {
                (Some(a), _) => a as usize,
                (None, Some(m)) => m.slots[self.gen.slot(&req, &self.arena) as usize] as usize,
                (None, None) => 0,
            };
            let nc = &mut self.nodes[node];
            if req.ask.is_some() {
                write_command(&mut nc.wbuf, &["ASKING"]);
                nc.pending.push(Pending::Asking);
            }
            self.gen.encode(&req, &self.arena, &mut nc.wbuf);
            nc.pending.push(Pending::Req(i));
        }
    }

    /// Writes a node's buffer, (re)connecting first if needed.
    async fn flush(&mut self, node: usize) {
        if self.nodes[node].stream.is_none() {
            if self.reconnects >= MAX_RECONNECTS {
                self.fatal = true;
                self.fail_node(node, "gave-up", "too many reconnections");
                return;
            }
            self.reconnects += 1;
            if let Err(e) = self.connect(node).await {
                self.fail_node(node, "connect", &e.to_string());
                return;
            }
        }
        let deadline = tokio::time::Instant::from_std(self.hard_deadline);
        let nc = &mut self.nodes[node];
        let Some(stream) = nc.stream.as_mut() else {
            return;
        };
        let res = tokio::time::timeout_at(deadline, stream.write_all(&nc.wbuf)).await;
        nc.wbuf.clear();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail_node(node, "io", &format!("write: {e}")),
            Err(_) => {
                self.fatal = true;
                self.fail_node(
                    node,
                    "timeout",
                    "write did not complete before the deadline",
                );
            }
        }
    }

    /// Counts every request still pending on `node` as failed and drops its connection.
    fn fail_node(&mut self, node: usize, kind: &str, msg: &str) {
        let nc = &mut self.nodes[node];
        let lost = nc
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Req(_)))
            .count() as u64;
        nc.pending.clear();
        nc.wbuf.clear();
        nc.rbuf.clear();
        nc.stream = None;
        let addr = self.addr(node);
        self.error(kind, &format!("{addr}: {msg}"), lost.max(1));
    }

    /// Reads until every pending reply of `node` has arrived.
    async fn read_replies(&mut self, node: usize, t0: Instant) {
        let deadline = tokio::time::Instant::from_std(self.hard_deadline);
        let mut pending = std::mem::take(&mut self.nodes[node].pending);
        let mut rbuf = std::mem::take(&mut self.nodes[node].rbuf);
        let Some(mut stream) = self.nodes[node].stream.take() else {
            self.nodes[node].pending = pending;
            self.fail_node(node, "io", "not connected");
            return;
        };
        let mut idx = 0;
        let mut now = Instant::now();
        let mut failure: Option<(&'static str, String)> = None;
        while idx < pending.len() {
            match frame_len(&rbuf) {
                Ok(Some(len)) => {
                    let lat = now.duration_since(t0).as_micros() as u64;
                    self.handle_reply(pending[idx], &rbuf[..len], lat);
                    rbuf.advance(len);
                    idx += 1;
                }
                Ok(None) => {
                    match tokio::time::timeout_at(deadline, stream.read_buf(&mut rbuf)).await {
                        Ok(Ok(0)) => {
                            failure = Some(("io", "connection closed by peer".to_string()));
                            break;
                        }
                        Ok(Ok(_)) => now = Instant::now(),
                        Ok(Err(e)) => {
                            failure = Some(("io", format!("read: {e}")));
                            break;
                        }
                        Err(_) => {
                            self.fatal = true;
                            failure = Some(("timeout", "no reply before the deadline".to_string()));
                            break;
                        }
                    }
                }
                Err(e) => {
                    failure = Some(("protocol", format!("bad reply: {e}")));
                    break;
                }
            }
        }
        pending.drain(..idx);
        let nc = &mut self.nodes[node];
        nc.pending = pending;
        nc.rbuf = rbuf;
        nc.stream = Some(stream);
        if let Some((kind, msg)) = failure {
            self.fail_node(node, kind, &msg);
        }
    }

    fn handle_reply(&mut self, p: Pending, frame: &[u8], lat_us: u64) {
        let i = match p {
            Pending::Asking => {
                if !frame.starts_with(b"+OK") {
                    let text = String::from_utf8_lossy(error_text(frame)).into_owned();
                    self.error("asking-failed", &text, 1);
                }
                return;
            }
            Pending::Req(i) => i,
        };
        let req = self.batch[i as usize];
        match check_reply(&req, frame) {
            Outcome::Ok => {
                self.res.ok += 1;
                self.res.answered += 1;
                self.res.hist.record(lat_us);
            }
            Outcome::Error(msg) => {
                if self.map.is_some() {
                    if let Some(r) = parse_redirect(msg) {
                        self.redirect(i, r);
                        return;
                    }
                }
                self.res.answered += 1;
                self.res.errors.add_reply(msg);
                self.err_count += 1;
            }
            Outcome::Unexpected => {
                self.res.answered += 1;
                let shown = String::from_utf8_lossy(&frame[..frame.len().min(80)]).into_owned();
                self.error("unexpected-reply", &shown, 1);
            }
        }
    }

    fn redirect(&mut self, i: u32, r: Redirect<'_>) {
        let i_us = i as usize;
        if self.batch[i_us].redirects >= MAX_REDIRECTS {
            self.res.answered += 1;
            self.error("too-many-redirects", &format!("{r:?}"), 1);
            return;
        }
        let (slot, addr, ask) = match r {
            Redirect::Moved(s, a) => (s, a, false),
            Redirect::Ask(s, a) => (s, a, true),
        };
        let addr = redirect_addr(addr, &self.seed_host);
        let Some(map) = self.map.as_mut() else {
            return;
        };
        if map.addrs.len() >= MAX_NODES && !map.addrs.contains(&addr) {
            self.res.answered += 1;
            self.error("too-many-nodes", &addr, 1);
            return;
        }
        let node = map.index_of(&addr);
        while self.nodes.len() < map.addrs.len() {
            self.nodes.push(NodeConn::new());
        }
        let req = &mut self.batch[i_us];
        req.redirects += 1;
        if ask {
            req.ask = Some(node);
            self.res.asked += 1;
        } else {
            req.ask = None;
            map.slots[slot as usize] = node;
            self.res.moved += 1;
        }
        self.next_todo.push(i);
    }
}

/// Writes `key:<i>` = a `value_size`-byte value for every `i` in `0..keys` (standalone target),
/// over `conns` pipelined connections; fails unless every SET answered `+OK`.
pub async fn fill(
    addr: &str,
    keys: u64,
    value_size: usize,
    conns: usize,
    timeout: Duration,
) -> Result<()> {
    let conns = conns.clamp(1, 64) as u64;
    let deadline = tokio::time::Instant::now() + timeout;
    let value = Arc::new(make_value(value_size, 1));
    let mut handles = Vec::new();
    for c in 0..conns {
        let (addr, value) = (addr.to_string(), value.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::timeout_at(deadline, fill_stride(&addr, c, conns, keys, &value, None))
                .await
                .map_err(|_| anyhow!("filling {addr} did not finish within {timeout:?}"))?
        }));
    }
    for h in handles {
        h.await.map_err(|e| anyhow!("fill task failed: {e}"))??;
    }
    Ok(())
}

/// Like [`fill`] for a cluster: reads `CLUSTER SLOTS` from `seed` and writes each key straight
/// to its slot's master, `conns` connections per master.
pub async fn fill_cluster(
    seed: &str,
    keys: u64,
    value_size: usize,
    conns: usize,
    timeout: Duration,
) -> Result<()> {
    let conns = conns.clamp(1, 64) as u64;
    let deadline = tokio::time::Instant::now() + timeout;
    let map = Arc::new(cluster::fetch_slot_map(seed, host_of(seed)).await?);
    let value = Arc::new(make_value(value_size, 1));
    let mut handles = Vec::new();
    for (node, addr) in map.addrs.iter().enumerate() {
        // The seed sits at index 0 even when it serves no slot: nothing to write there then.
        if !map.slots.iter().any(|&n| n as usize == node) {
            continue;
        }
        for c in 0..conns {
            let (addr, value, map) = (addr.clone(), value.clone(), map.clone());
            let owner = Some((map, node as u32));
            handles.push(tokio::spawn(async move {
                tokio::time::timeout_at(deadline, fill_stride(&addr, c, conns, keys, &value, owner))
                    .await
                    .map_err(|_| anyhow!("filling {addr} did not finish within {timeout:?}"))?
            }));
        }
    }
    for h in handles {
        h.await.map_err(|e| anyhow!("fill task failed: {e}"))??;
    }
    Ok(())
}

/// Fills keys `first, first + step, ...` below `keys`, 256 SETs per write; with `owner`
/// `(map, node)`, only the keys whose slot `node` serves.
async fn fill_stride(
    addr: &str,
    first: u64,
    step: u64,
    keys: u64,
    value: &[u8],
    owner: Option<(Arc<SlotMap>, u32)>,
) -> Result<()> {
    const BATCH: u64 = 256;
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut next = first;
    while next < keys {
        wbuf.clear();
        let mut sent = 0u64;
        while sent < BATCH && next < keys {
            let key = crate::keys::format_key(b"key:", next, None);
            next += step;
            if let Some((map, node)) = &owner {
                if map.slots[key_slot(key.as_bytes()) as usize] != *node {
                    continue;
                }
            }
            write_command(&mut wbuf, &[&b"SET"[..], key.as_bytes(), value]);
            sent += 1;
        }
        if sent == 0 {
            continue;
        }
        stream.write_all(&wbuf).await?;
        let mut got = 0u64;
        while got < sent {
            match frame_len(&rbuf)? {
                Some(len) => {
                    if !rbuf[..len].starts_with(b"+OK") {
                        bail!(
                            "SET during fill of {addr} answered {}",
                            String::from_utf8_lossy(&rbuf[..len]).trim()
                        );
                    }
                    rbuf.advance(len);
                    got += 1;
                }
                None => {
                    if stream.read_buf(&mut rbuf).await? == 0 {
                        bail!("{addr} closed the connection during fill");
                    }
                }
            }
        }
    }
    Ok(())
}
