//! The client I/O workers and their balancer.
//!
//! Each worker is a thread running a single-threaded tokio runtime that accepts on its own
//! SO_REUSEPORT listener and serves its clients. Workers `0..active` serve clients; a
//! connection on any other worker, or on one asked to give connections away, moves at its next
//! safe point (between two reads, all replies written) to the active worker with the fewest
//! connections. It takes its state with it: only the socket is detached from one reactor
//! and attached to the other.
//!
//! The balancer (every [`TICK`]) reads each worker's CPU time from the kernel. It packs
//! clients onto fewer workers when they would fit ([`SHRINK_AT`] of a core each) and adds a
//! worker when the active ones are saturated ([`GROW_AT`]). When the load generator shares
//! the machine, one worker that owns a core serves `-P 1` traffic better than two that
//! time-share one. It is also cheaper in CPU, as redis-server's single thread is, and the second
//! worker is still there for a load that saturates one. `DEBUG IO-WORKERS` shows or pins the
//! state.

use crate::connection::Moving;
use crate::server::Server;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How often the balancer samples the workers' CPU time.
pub const TICK: Duration = Duration::from_millis(200);
/// Active workers busier than this (fraction of one core, on average, for [`GROW_TICKS`]
/// ticks) get one more worker beside them.
pub const GROW_AT: f64 = 0.93;
/// Consecutive saturated ticks before a worker is added.
const GROW_TICKS: u32 = 2;
/// The workers are packed onto fewer when their total CPU over [`SHRINK_TICKS`] ticks would
/// keep each remaining worker under this fraction of a core (below [`GROW_AT`], so a packed
/// load does not bounce straight back).
pub const SHRINK_AT: f64 = 0.88;
/// Consecutive ticks a smaller worker set must have sufficed before the pool shrinks.
const SHRINK_TICKS: u32 = 3;
/// Below this total (fraction of one core) the workers are idle: they are packed onto one at
/// once, so the next burst of load starts packed.
const IDLE: f64 = 0.05;

/// One worker's shared counters.
#[derive(Default)]
struct Slot {
    /// Kernel thread id (0 until the thread has started), for its CPU time.
    tid: AtomicI64,
    /// Connections it serves now.
    conns: AtomicUsize,
    /// Connections it should still hand to other active workers.
    evict: AtomicUsize,
    /// Where moving connections are sent to this worker.
    inbox: OnceLock<mpsc::UnboundedSender<Moving>>,
}

/// The set of I/O workers: which ones serve clients and how many clients each has.
pub struct Pool {
    slots: Vec<Slot>,
    /// Workers `0..active` serve clients.
    active: AtomicUsize,
    /// Set by `DEBUG IO-WORKERS <n>`: the balancer leaves `active` alone.
    pinned: AtomicBool,
}

impl Pool {
    /// A pool of `n` workers (at least one), all active until the balancer has readings.
    pub fn new(n: usize) -> Pool {
        let n = n.max(1);
        Pool {
            slots: (0..n).map(|_| Slot::default()).collect(),
            active: AtomicUsize::new(n),
            pinned: AtomicBool::new(false),
        }
    }

    /// Number of worker threads.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the pool has no workers (never: [`Pool::new`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Workers serving clients now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections served by each worker.
    pub fn conns(&self) -> Vec<usize> {
        self.slots
            .iter()
            .map(|s| s.conns.load(Ordering::Relaxed))
            .collect()
    }

    /// True while `DEBUG IO-WORKERS <n>` holds the active count.
    pub fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Called by a connection on worker `w` at a safe point: the worker it should move to,
    /// if any. Two relaxed loads when it stays.
    #[inline]
    pub fn leave(&self, w: usize) -> Option<usize> {
        let active = self.active.load(Ordering::Relaxed);
        if w < active {
            let evict = &self.slots.get(w)?.evict;
            if evict.load(Ordering::Relaxed) == 0
                || evict
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| e.checked_sub(1))
                    .is_err()
            {
                return None;
            }
        }
        (0..active)
            .filter(|&i| i != w)
            .min_by_key(|&i| self.slots[i].conns.load(Ordering::Relaxed))
    }

    /// A connection starts being served by worker `w`.
    pub fn arrived(&self, w: usize) {
        if let Some(s) = self.slots.get(w) {
            s.conns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection stops being served by worker `w` (closed or moving away).
    pub fn left(&self, w: usize) {
        if let Some(s) = self.slots.get(w) {
            let _ = s
                .conns
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
    }

    /// Hands a moving connection to worker `to`; gives it back if that worker is gone.
    pub fn send(&self, to: usize, m: Moving) -> Result<(), Box<Moving>> {
        match self.slots.get(to).and_then(|s| s.inbox.get()) {
            Some(tx) => tx.send(m).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(m)),
        }
    }

    /// Sets the active workers (clamped to 1..=len); `pin` stops the balancer changing it.
    pub fn set_active(&self, n: usize, pin: bool) {
        self.pinned.store(pin, Ordering::Relaxed);
        self.active
            .store(n.clamp(1, self.slots.len()), Ordering::Relaxed);
        self.rebalance(0);
    }

    /// Asks each active worker holding more than its share (plus `slack`) of all connections
    /// to give the excess away.
    fn rebalance(&self, slack: usize) {
        let active = self.active();
        let total: usize = self.conns().iter().sum();
        let share = total.div_ceil(active) + slack;
        for (i, s) in self.slots.iter().enumerate() {
            let excess = if i < active {
                s.conns.load(Ordering::Relaxed).saturating_sub(share)
            } else {
                0
            };
            s.evict.store(excess, Ordering::Relaxed);
        }
    }
}

/// Starts one I/O worker thread per pool slot, each with its own SO_REUSEPORT listener on
/// every address; returns once all of them listen.
pub fn start(server: &Arc<Server>, addrs: &[std::net::SocketAddr]) -> anyhow::Result<()> {
    for i in 0..server.io.len() {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let srv = server.clone();
        let addrs = addrs.to_vec();
        std::thread::Builder::new()
            .name(format!("slotgate-io{i}"))
            .spawn(move || io_worker(srv, i, addrs, tx))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("{e}"),
            Err(_) => anyhow::bail!("I/O worker {i} failed to start"),
        }
    }
    Ok(())
}

/// One I/O worker: a single-threaded runtime serving the clients accepted on its own
/// listeners and the ones moved to it.
fn io_worker(
    server: Arc<Server>,
    w: usize,
    addrs: Vec<std::net::SocketAddr>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    batch_scheduling();
    if let Some(slot) = server.io.slots.get(w) {
        slot.tid.store(thread_id(), Ordering::Relaxed);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for a in &addrs {
            match reuseport_listener(*a) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let _ = ready.send(Err(format!("{a}: {e}")));
                    return;
                }
            }
        }
        let (tx, mut inbox) = mpsc::unbounded_channel();
        if let Some(slot) = server.io.slots.get(w) {
            let _ = slot.inbox.set(tx);
        }
        let _ = ready.send(Ok(()));
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_loop(server.clone(), w, l)));
        }
        tasks.push(tokio::spawn(async move {
            while let Some(m) = inbox.recv().await {
                tokio::spawn(crate::connection::resume(m, w));
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    sock.listen(511)
}

async fn accept_loop(server: Arc<Server>, w: usize, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let max = server.config.read().get_int("maxclients").max(1) as usize;
                if server.clients.lock().len() >= max {
                    server
                        .stats
                        .rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut sock = sock;
                        let _ = sock
                            .write_all(b"-ERR max number of clients reached\r\n")
                            .await;
                    });
                    continue;
                }
                let _ = sock.set_nodelay(true);
                server
                    .stats
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(crate::connection::serve(server.clone(), sock, peer, w));
            }
            Err(e) => {
                server
                    .log
                    .warning(&format!("Accepting client connection: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The balancer: every [`TICK`], packs the clients onto as few workers as carry the load
/// and adds a worker when the active ones are saturated. Runs only where the kernel reports
/// per-thread CPU time; elsewhere every worker stays active.
pub async fn balance(server: Arc<Server>) {
    let pool = &server.io;
    if pool.len() < 2 {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(std::time::Instant, Vec<u64>)> = None;
    let (mut hot, mut cool) = (0u32, 0u32);
    let mut cool_cpu = 0.0f64;
    loop {
        tick.tick().await;
        let Some(cpu) = pool
            .slots
            .iter()
            .map(|s| thread_cpu_ns(s.tid.load(Ordering::Relaxed)))
            .collect::<Option<Vec<u64>>>()
        else {
            // No per-thread CPU time here (or a worker is not up yet): keep every worker.
            continue;
        };
        let now = std::time::Instant::now();
        let Some((then, before)) = last.replace((now, cpu.clone())) else {
            continue;
        };
        let wall = now.duration_since(then).as_nanos().max(1) as f64;
        let used: Vec<f64> = cpu
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b) as f64 / wall)
            .collect();
        if pool.pinned() {
            continue;
        }
        let active = pool.active();
        let total: f64 = used.iter().sum();
        // Saturated: every active worker near a full core.
        let least_busy = used.iter().take(active).cloned().fold(f64::MAX, f64::min);
        if active < pool.len() && least_busy >= GROW_AT {
            hot += 1;
        } else {
            hot = 0;
        }
        // Would fit on fewer workers.
        let fewer = ((total / SHRINK_AT).ceil() as usize).max(1);
        if fewer < active {
            cool += 1;
            cool_cpu = cool_cpu.max(total);
        } else {
            cool = 0;
            cool_cpu = 0.0;
        }
        if hot >= GROW_TICKS {
            hot = 0;
            pool.active.store(active + 1, Ordering::Relaxed);
            server.log.verbose(&format!(
                "I/O workers: {} active (load {total:.2} cores)",
                active + 1
            ));
        } else if cool > 0 && total < IDLE {
            cool = 0;
            cool_cpu = 0.0;
            pool.active.store(1, Ordering::Relaxed);
            server.log.verbose("I/O workers: 1 active (idle)");
        } else if cool >= SHRINK_TICKS {
            let n = ((cool_cpu / SHRINK_AT).ceil() as usize).clamp(1, active);
            cool = 0;
            cool_cpu = 0.0;
            if n < active {
                pool.active.store(n, Ordering::Relaxed);
                server
                    .log
                    .verbose(&format!("I/O workers: {n} active (load {total:.2} cores)"));
            }
        }
        // Even out the active workers, with some slack so clients do not churn.
        let conns: usize = pool.conns().iter().sum();
        pool.rebalance(1 + conns / 16);
    }
}

/// The calling thread's kernel id (0 where there is none to read CPU time by).
fn thread_id() -> i64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::syscall(libc::SYS_gettid) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// CPU time used by thread `tid` of this process, from `/proc/self/task/<tid>/schedstat`.
fn thread_cpu_ns(tid: i64) -> Option<u64> {
    if tid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Puts the calling worker thread under `SCHED_BATCH`: the kernel then does not let a
/// newly woken worker preempt the one running on its core, so two workers sharing a core
/// (clients on the other) switch about half as often. Measured on 2 cores with
/// redis-benchmark -P 1: context switches per request halved, CPU per request ~10% lower,
/// -P 16 unchanged. Non-real-time policy: needs no privilege; a refusal changes nothing else.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread with a valid, initialised parameter.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}
