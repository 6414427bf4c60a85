//! The client I/O workers of slotgate-node and the slotgate proxy, and their balancer.
//!
//! Each server runs one worker thread per core. A worker is a single-threaded tokio runtime
//! that accepts on its own SO_REUSEPORT listener ([`reuseport_listener`]) under
//! `SCHED_BATCH` ([`batch_scheduling`]). Workers `0..active` of a [`Pool`] serve clients. A
//! connection on any other worker, or on one asked to give connections away, moves at its next
//! safe point to the active worker with the fewest connections. The server decides what a safe
//! point is and what travels (the `M` of [`Pool`]). Typically that is all replies written and
//! nothing awaited, with the socket detached from one reactor and attached to the other.
//!
//! The balancer ([`balance`], every [`TICK`]) reads each worker's CPU and run-queue time from
//! the kernel and the server's count of commands served. It packs clients onto fewer workers
//! when they clearly fit ([`SHRINK_AT`] of a core each). A change it cannot judge from CPU
//! alone runs as a trial of under a second, and stays only if the work done per second says so:
//! a worker added because the active ones are saturated ([`GROW_AT`]) must raise it by
//! [`TRIAL_GAIN`]; one fewer, tried when the load might fit, must keep [`TRIAL_KEEP`] of it. A
//! failed trial waits (5 s, doubling to a minute) before the next at a similar load. When the
//! load generator shares the machine, one worker that owns a core serves `-P 1` traffic as fast
//! as two that time-share one, with a lower tail latency and less CPU, as redis-server's single
//! thread does; a deeply pipelined load still gets the second worker.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the balancer samples the workers' CPU time.
pub const TICK: Duration = Duration::from_millis(200);
/// Active workers busier than this (fraction of the time running or waiting for a core, for
/// [`GROW_TICKS`] ticks) get one more worker beside them. Waiting counts: a worker starved
/// by other processes (clients on the same machine) is saturated too, and a second worker
/// gets it a second share of the cores.
pub const GROW_AT: f64 = 0.98;
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
/// Ticks a changed worker set runs on trial before it is judged (the first is not counted:
/// connections are still moving).
const TRIAL_TICKS: u32 = 4;
/// An added worker stays only if the server then does at least this much more work per
/// second. Else it goes back: on a machine the clients share, a second worker can take the
/// core the clients need and only add latency.
pub const TRIAL_GAIN: f64 = 1.10;
/// A worker set one smaller stays if it does at least this share of the work per second the
/// larger one did.
pub const TRIAL_KEEP: f64 = 0.95;
/// Fewer workers are tried when the load would keep each of them under this fraction of a
/// core (above [`SHRINK_AT`], where the pool shrinks without a trial).
const TRY_FEWER_AT: f64 = 1.1;
/// How long a failed trial holds off the next one of its kind at a similar load; doubles
/// with every failure up to [`RETRY_MAX`], and starts over once the workers go idle or a
/// trial succeeds.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest wait between trials of one kind at a similar load.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// A load this factor away from the one a failed trial started from is a new load: tried at
/// once.
const NEW_LOAD: f64 = 1.25;

/// A changed worker set on trial.
struct Trial {
    /// Active workers before it.
    from: usize,
    /// Work per second before it.
    before: f64,
    /// Ticks since it started.
    ticks: u32,
    /// Work per second summed over the counted ticks.
    sum: f64,
}

/// When the next trial of one kind (more or fewer workers) may start.
struct Retry {
    wait: Duration,
    at: Option<std::time::Instant>,
    /// Work per second when the last trial failed.
    rate: f64,
}

impl Retry {
    fn new() -> Retry {
        Retry {
            wait: RETRY_AFTER,
            at: None,
            rate: 0.0,
        }
    }

    /// May a trial start now, at `rate` work per second?
    fn allows(&self, now: std::time::Instant, rate: f64) -> bool {
        self.at.is_none_or(|t| now >= t)
            || rate > self.rate * NEW_LOAD
            || rate < self.rate / NEW_LOAD
    }

    fn failed(&mut self, now: std::time::Instant, rate: f64) {
        self.at = Some(now + self.wait);
        self.rate = rate;
        self.wait = (self.wait * 2).min(RETRY_MAX);
    }
}

/// One worker's shared counters.
struct Slot<M> {
    /// Kernel thread id (0 until the thread has started), for its CPU time.
    tid: AtomicI64,
    /// Connections it serves now.
    conns: AtomicUsize,
    /// Connections it should still hand to other active workers.
    evict: AtomicUsize,
    /// Where moving connections are sent to this worker.
    inbox: OnceLock<mpsc::UnboundedSender<M>>,
}

/// What [`Pool::hand_over`] did with a connection just accepted.
pub enum Accepted<M> {
    /// Serve it on this worker.
    Keep(tokio::net::TcpStream),
    /// Sent to another worker.
    Sent,
    /// The other worker is gone: it is back, detached; resume it on this worker.
    Back(Box<M>),
    /// Detaching the socket failed; the connection is lost.
    Failed(std::io::Error),
}

/// The set of I/O workers: which ones serve clients and how many clients each has. `M` is a
/// connection on its way from one worker to another.
pub struct Pool<M> {
    slots: Vec<Slot<M>>,
    /// Workers `0..active` serve clients.
    active: AtomicUsize,
    /// Set by [`Pool::set_active`] with `pin`: the balancer leaves `active` alone.
    pinned: AtomicBool,
}

impl<M> Pool<M> {
    /// A pool of `n` workers (at least one), all active until the balancer has readings.
    pub fn new(n: usize) -> Pool<M> {
        let n = n.max(1);
        Pool {
            slots: (0..n)
                .map(|_| Slot {
                    tid: AtomicI64::new(0),
                    conns: AtomicUsize::new(0),
                    evict: AtomicUsize::new(0),
                    inbox: OnceLock::new(),
                })
                .collect(),
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

    /// True while [`Pool::set_active`] with `pin` holds the active count.
    pub fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Called on worker `w`'s thread when it starts: records its kernel thread id (for its
    /// CPU time) and returns the receiver of the connections moved to it.
    pub fn register(&self, w: usize) -> mpsc::UnboundedReceiver<M> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(slot) = self.slots.get(w) {
            slot.tid.store(thread_id(), Ordering::Relaxed);
            let _ = slot.inbox.set(tx);
        }
        rx
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
    pub fn send(&self, to: usize, m: M) -> Result<(), Box<M>> {
        match self.slots.get(to).and_then(|s| s.inbox.get()) {
            Some(tx) => tx.send(m).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(m)),
        }
    }

    /// For a connection just accepted by worker `w`: hands it (detached, wrapped by `wrap`) to
    /// another worker when `w` is not serving clients now or has more than its share, before
    /// any task is spawned for it; else gives it back to be served here.
    pub fn hand_over(
        &self,
        w: usize,
        sock: tokio::net::TcpStream,
        wrap: impl FnOnce(std::net::TcpStream) -> M,
    ) -> Accepted<M> {
        let Some(to) = self.leave(w) else {
            return Accepted::Keep(sock);
        };
        match sock.into_std() {
            Ok(sock) => match self.send(to, wrap(sock)) {
                Ok(()) => Accepted::Sent,
                Err(m) => Accepted::Back(m),
            },
            Err(e) => Accepted::Failed(e),
        }
    }

    /// Parses an operator's setting: `auto` (`Some(None)`), or a worker count from 1 to
    /// [`Pool::len`] (`Some(Some(n))`); anything else is `None`.
    pub fn parse_setting(&self, v: &[u8]) -> Option<Option<usize>> {
        if v.eq_ignore_ascii_case(b"auto") {
            return Some(None);
        }
        let n = std::str::from_utf8(v).ok()?.parse::<usize>().ok()?;
        (1..=self.len()).contains(&n).then_some(Some(n))
    }

    /// Applies a setting from [`Pool::parse_setting`]: pins the active count, or (`None`)
    /// hands it back to the balancer.
    pub fn apply_setting(&self, setting: Option<usize>) {
        match setting {
            Some(n) => self.set_active(n, true),
            None => self.set_active(self.active(), false),
        }
    }

    /// The current setting as an operator writes it: the pinned count, or `auto`.
    pub fn setting(&self) -> String {
        if self.pinned() {
            self.active().to_string()
        } else {
            "auto".to_string()
        }
    }

    /// Connections per worker, comma-separated (for INFO and DEBUG).
    pub fn conns_list(&self) -> String {
        let conns: Vec<String> = self.conns().iter().map(|c| c.to_string()).collect();
        conns.join(",")
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

/// The balancer: every [`TICK`], packs the clients onto as few workers as carry the load
/// and adds a worker when the active ones are saturated, keeping it only when the server then
/// does more work ([`TRIAL_GAIN`]; `work` reads the server's total of commands served); `log`
/// gets one line per change. Runs only where the kernel reports per-thread CPU time;
/// elsewhere every worker stays active. Never returns (run it as a task).
pub async fn balance<M>(pool: &Pool<M>, log: impl Fn(&str), work: impl Fn() -> u64) {
    if pool.len() < 2 {
        return;
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(std::time::Instant, Vec<(u64, u64)>)> = None;
    let (mut hot, mut cool) = (0u32, 0u32);
    let mut cool_cpu = 0.0f64;
    let mut last_work = work();
    // Work per second over the last two ticks (what a trial is compared with).
    let mut rates = [0.0f64; 2];
    let mut trial: Option<Trial> = None;
    let (mut more, mut fewer_retry) = (Retry::new(), Retry::new());
    let mut calm = 0u32;
    loop {
        tick.tick().await;
        let Some(stats) = pool
            .slots
            .iter()
            .map(|s| thread_sched_ns(s.tid.load(Ordering::Relaxed)))
            .collect::<Option<Vec<(u64, u64)>>>()
        else {
            // No per-thread CPU time here (or a worker is not up yet): keep every worker.
            continue;
        };
        let now = std::time::Instant::now();
        let done = work();
        let Some((then, before)) = last.replace((now, stats.clone())) else {
            last_work = done;
            continue;
        };
        let wall = now.duration_since(then).as_nanos().max(1) as f64;
        let rate = done.saturating_sub(last_work) as f64 / (wall / 1e9);
        last_work = done;
        rates = [rates[1], rate];
        if pool.pinned() {
            trial = None;
            continue;
        }
        if let Some(t) = trial.as_mut() {
            t.ticks += 1;
            if t.ticks > 1 {
                t.sum += rate;
            }
            if t.ticks >= TRIAL_TICKS {
                let after = t.sum / f64::from(TRIAL_TICKS - 1);
                let active = pool.active();
                let (kept, retry) = if active > t.from {
                    (after >= t.before * TRIAL_GAIN, &mut more)
                } else {
                    (after >= t.before * TRIAL_KEEP, &mut fewer_retry)
                };
                if kept {
                    *retry = Retry::new();
                } else {
                    pool.active.store(t.from, Ordering::Relaxed);
                    log(&format!(
                        "I/O workers: {} active again ({active} did {after:.0}/s, {} did {:.0}/s)",
                        t.from, t.from, t.before
                    ));
                    retry.failed(now, t.before);
                }
                trial = None;
                (hot, cool, calm, cool_cpu) = (0, 0, 0, 0.0);
            }
            let conns: usize = pool.conns().iter().sum();
            pool.rebalance(1 + conns / 16);
            continue;
        }
        // Per worker: (fraction of a core used, fraction of time running or runnable).
        let used: Vec<(f64, f64)> = stats
            .iter()
            .zip(&before)
            .map(|((c, d), (c0, d0))| {
                let cpu = c.saturating_sub(*c0) as f64 / wall;
                (cpu, cpu + d.saturating_sub(*d0) as f64 / wall)
            })
            .collect();
        let active = pool.active();
        let total: f64 = used.iter().map(|u| u.0).sum();
        // Saturated: every active worker (almost) never idle.
        let least_busy = used
            .iter()
            .take(active)
            .map(|u| u.1)
            .fold(f64::MAX, f64::min);
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
        // Might fit on one worker less: worth a trial.
        if fewer >= active && active > 1 && total < (active - 1) as f64 * TRY_FEWER_AT {
            calm += 1;
        } else {
            calm = 0;
        }
        let recent = (rates[0] + rates[1]) / 2.0;
        let mut start_trial = |to: usize, why: String| {
            trial = Some(Trial {
                from: active,
                before: recent,
                ticks: 0,
                sum: 0.0,
            });
            pool.active.store(to, Ordering::Relaxed);
            log(&format!("I/O workers: {to} active ({why}, on trial)"));
        };
        if hot >= GROW_TICKS && more.allows(now, recent) {
            hot = 0;
            start_trial(active + 1, format!("load {total:.2} cores"));
        } else if cool > 0 && total < IDLE {
            cool = 0;
            cool_cpu = 0.0;
            (more, fewer_retry) = (Retry::new(), Retry::new());
            pool.active.store(1, Ordering::Relaxed);
            log("I/O workers: 1 active (idle)");
        } else if cool >= SHRINK_TICKS {
            let n = ((cool_cpu / SHRINK_AT).ceil() as usize).clamp(1, active);
            cool = 0;
            cool_cpu = 0.0;
            if n < active {
                pool.active.store(n, Ordering::Relaxed);
                log(&format!("I/O workers: {n} active (load {total:.2} cores)"));
            }
        } else if calm >= GROW_TICKS && fewer_retry.allows(now, recent) {
            calm = 0;
            start_trial(active - 1, format!("load {total:.2} cores"));
        }
        // Even out the active workers, with some slack so clients do not churn.
        let conns: usize = pool.conns().iter().sum();
        pool.rebalance(1 + conns / 16);
    }
}

/// Turns away a connection over the client limit: writes `reply` (a RESP error) in a task of
/// its own, then closes.
pub fn refuse(sock: tokio::net::TcpStream, reply: &'static [u8]) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut sock = sock;
        let _ = sock.write_all(reply).await;
    });
}

/// A listener on `addr` with SO_REUSEPORT, so every worker accepts on the same port and the
/// kernel spreads new connections over them.
pub fn reuseport_listener(
    addr: std::net::SocketAddr,
    backlog: u32,
) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    sock.listen(backlog)
}

/// Puts the calling worker thread under `SCHED_BATCH`: the kernel then does not let a
/// newly woken worker preempt the one running on its core, so two workers sharing a core
/// (clients on the other) switch about half as often. Measured on 2 cores with
/// redis-benchmark -P 1: context switches per request halved, CPU per request ~10% lower,
/// -P 16 unchanged. Non-real-time policy: needs no privilege; the error (if refused) changes
/// nothing else.
pub fn batch_scheduling() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscall on the calling thread with a valid, initialised parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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

/// Time thread `tid` of this process has spent on a core and waiting for one (runnable), in
/// nanoseconds, from `/proc/self/task/<tid>/schedstat`.
fn thread_sched_ns(tid: i64) -> Option<(u64, u64)> {
    if tid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_inactive_workers_and_excess_is_given_away() {
        let pool: Pool<()> = Pool::new(2);
        for _ in 0..10 {
            pool.arrived(0);
        }
        // Both active, all on worker 0: half of them are asked to move to worker 1.
        pool.set_active(2, true);
        let moved = (0..10).filter_map(|_| pool.leave(0)).count();
        assert_eq!(moved, 5);
        assert_eq!(pool.leave(1), None);
        // Packed onto worker 0: everything on worker 1 leaves for it; worker 0 keeps its own.
        pool.set_active(1, true);
        assert_eq!(pool.leave(1), Some(0));
        assert_eq!(pool.leave(0), None);
        assert!(pool.pinned());
    }

    #[test]
    fn settings_parse_and_apply() {
        let pool: Pool<()> = Pool::new(2);
        assert_eq!(pool.parse_setting(b"AUTO"), Some(None));
        assert_eq!(pool.parse_setting(b"2"), Some(Some(2)));
        for bad in [&b"0"[..], b"3", b"x", b"-1", b""] {
            assert_eq!(pool.parse_setting(bad), None);
        }
        pool.apply_setting(Some(1));
        assert_eq!((pool.setting(), pool.active()), ("1".to_string(), 1));
        pool.apply_setting(None);
        assert_eq!((pool.setting(), pool.active()), ("auto".to_string(), 1));
        assert_eq!(pool.conns_list(), "0,0");
    }

    #[test]
    fn a_single_worker_never_moves_anything() {
        let pool: Pool<()> = Pool::new(1);
        pool.arrived(0);
        pool.set_active(3, false);
        assert_eq!(pool.active(), 1);
        assert_eq!(pool.leave(0), None);
    }
}
