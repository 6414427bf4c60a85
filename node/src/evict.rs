//! `maxmemory`: keeping the memory in use under the limit by evicting keys by
//! `maxmemory-policy`, as Redis's evict.c.
//!
//! Before each command (and on a background tick) the dispatcher asks [`Evictor::perform`] to
//! bring the memory counted by [`crate::alloc`] (minus the replication buffer, which Redis does
//! not count either) under `maxmemory`. The LRU, LFU and TTL policies sample
//! `maxmemory-samples` keys per database into a pool of the 16 best candidates seen so far and
//! evict the best; the random policies evict a random key. Each eviction goes through
//! [`Locked`] and reaches replicas as a DEL. When nothing can be evicted the result is
//! [`Evicted::Fail`], and commands that may grow memory get the OOM error.

use crate::config::Config;
use crate::db::{idle_seconds, lfu_counter, now_ms, Entry, Key, Locked, SHARDS};
use crate::server::Server;
use parking_lot::Mutex;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The reply to a command refused for lack of memory.
pub const ERR_OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Candidates kept between evictions (Redis's `EVPOOL_SIZE`).
const POOL_SIZE: usize = 16;
/// Candidate pools (threads that evict at the same time use different ones).
const POOLS: usize = 4;

/// `maxmemory-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Refuse writes instead of evicting.
    NoEviction,
    /// Least recently used key of all.
    AllKeysLru,
    /// Least frequently used key of all.
    AllKeysLfu,
    /// Any key.
    AllKeysRandom,
    /// Least recently used key with an expiry.
    VolatileLru,
    /// Least frequently used key with an expiry.
    VolatileLfu,
    /// Any key with an expiry.
    VolatileRandom,
    /// The key with an expiry that is nearest.
    VolatileTtl,
}

impl Policy {
    const ALL: [Policy; 8] = [
        Policy::NoEviction,
        Policy::AllKeysLru,
        Policy::AllKeysLfu,
        Policy::AllKeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
    ];

    /// The policy a `maxmemory-policy` value names (noeviction for anything else).
    pub fn from_name(name: &str) -> Policy {
        match name {
            "allkeys-lru" => Policy::AllKeysLru,
            "allkeys-lfu" => Policy::AllKeysLfu,
            "allkeys-random" => Policy::AllKeysRandom,
            "volatile-lru" => Policy::VolatileLru,
            "volatile-lfu" => Policy::VolatileLfu,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => Policy::NoEviction,
        }
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    fn random(self) -> bool {
        matches!(self, Policy::AllKeysRandom | Policy::VolatileRandom)
    }
}

/// What [`Evictor::perform`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// Memory is under the limit (or there is none).
    Ok,
    /// Still over the limit after this call's time budget; later calls go on.
    Running,
    /// Over the limit and nothing can be evicted.
    Fail,
}

/// One candidate of the pool: how good a victim it is (higher is better) and where it lives.
struct Candidate {
    score: u64,
    db: usize,
    key: Key,
}

/// The eviction state: the limit and policy (cached from the config), the candidate pool
/// and the count of evicted keys.
#[derive(Default)]
pub struct Evictor {
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
    tenacity: AtomicU32,
    replica_ignore: AtomicBool,
    lfu_decay_time: AtomicU32,
    /// Candidate pools, one per thread evicting at the same time.
    pools: [Mutex<Vec<Candidate>>; POOLS],
    /// INFO `evicted_keys`.
    pub evicted: AtomicU64,
}

impl Evictor {
    /// Takes `maxmemory`, `maxmemory-policy`, `maxmemory-samples`,
    /// `maxmemory-eviction-tenacity`, `replica-ignore-maxmemory` and `lfu-decay-time`.
    pub fn configure(&self, c: &Config) {
        let policy = Policy::from_name(c.get("maxmemory-policy"));
        let idx = Policy::ALL.iter().position(|p| *p == policy).unwrap_or(0);
        self.policy.store(idx as u8, Ordering::Relaxed);
        self.samples.store(
            c.get_int("maxmemory-samples").clamp(1, 64) as u32,
            Ordering::Relaxed,
        );
        self.tenacity.store(
            c.get_int("maxmemory-eviction-tenacity").clamp(0, 100) as u32,
            Ordering::Relaxed,
        );
        self.replica_ignore
            .store(c.get_bool("replica-ignore-maxmemory"), Ordering::Relaxed);
        self.lfu_decay_time.store(
            c.get_int("lfu-decay-time").clamp(0, u32::MAX as i64) as u32,
            Ordering::Relaxed,
        );
        // Last: a command seeing the limit sees the policy that goes with it.
        self.maxmemory
            .store(c.get_int("maxmemory").max(0) as u64, Ordering::Relaxed);
    }

    /// True when a limit is set (one relaxed load: the per-command check).
    #[inline]
    pub fn active(&self) -> bool {
        self.maxmemory.load(Ordering::Relaxed) != 0
    }

    fn policy(&self) -> Policy {
        Policy::ALL
            .get(self.policy.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or(Policy::NoEviction)
    }

    /// Memory that counts against `maxmemory`: everything allocated except
    /// [`Evictor::not_counted`] (INFO `mem_not_counted_for_evict`).
    pub fn counted(server: &Server) -> u64 {
        crate::alloc::used().saturating_sub(Self::not_counted(server))
    }

    /// What evictions could not shrink: the replication buffer, and keyspace copies being
    /// saved or sent to a replica.
    pub fn not_counted(server: &Server) -> u64 {
        server.repl.buffer_bytes() as u64 + server.persist.copies.load(Ordering::Relaxed)
    }

    fn over(&self, server: &Server, max: u64) -> bool {
        // The allocator's total first: when it is under the limit, so is what counts.
        crate::alloc::used() > max && Self::counted(server) > max
    }

    /// How long one call may evict (Redis's `evictionTimeLimitUs`): 500 µs at the default
    /// tenacity 10, growing 15% per step above it; unlimited at 100.
    fn time_limit(&self) -> Option<Duration> {
        let t = self.tenacity.load(Ordering::Relaxed);
        if t <= 10 {
            Some(Duration::from_micros(50 * u64::from(t)))
        } else if t < 100 {
            Some(Duration::from_micros(
                (500.0 * 1.15f64.powi(t as i32 - 10)) as u64,
            ))
        } else {
            None
        }
    }

    /// Evicts keys until the memory in use is under `maxmemory`, within the time budget.
    pub fn perform(&self, server: &Server) -> Evicted {
        let max = self.maxmemory.load(Ordering::Relaxed);
        // No evictions on a replica that leaves them to its master, nor while writes are
        // paused (CLIENT PAUSE): they are writes.
        if max == 0
            || (self.replica_ignore.load(Ordering::Relaxed) && server.repl.is_replica())
            || !self.over(server, max)
            || (server.repl.pause_set() && server.repl.writes_paused(now_ms()))
        {
            return Evicted::Ok;
        }
        let policy = self.policy();
        if policy == Policy::NoEviction {
            return Evicted::Fail;
        }
        // Threads evicting at once each take a pool of their own instead of queueing.
        let mut pool = match self.pools.iter().find_map(|p| p.try_lock()) {
            Some(p) => p,
            None => self.pools[0].lock(),
        };
        let limit = self.time_limit();
        let mut started = None;
        for n in 1u64.. {
            if !self.over(server, max) {
                return Evicted::Ok;
            }
            if !self.evict_one(server, policy, &mut pool) {
                return Evicted::Fail;
            }
            // The clock is read every 16 evictions (most calls evict one key), as Redis.
            if n % 16 == 1 {
                let now = Instant::now();
                let since = *started.get_or_insert(now);
                if limit.is_some_and(|l| now - since > l) {
                    return Evicted::Running;
                }
            }
        }
        Evicted::Running
    }

    /// Deletes `key` if it is still there (with an expiry, for a volatile policy) and sends
    /// its DEL to replicas while its shard is locked (the stream keeps execution order).
    /// Returns whether it was evicted.
    /// Also true, evicting nothing, when memory is no longer over the limit: the locks may
    /// have been waited for (a save copying the keyspace) while things changed.
    fn evict(&self, server: &Server, db: usize, key: &Key, volatile: bool) -> bool {
        let mut ks = Locked::new(&server.ks, db, now_ms());
        ks.track_expired = server.repl.feeding();
        let notify = server.notify_flags.load(Ordering::Relaxed);
        ks.notify = notify;
        ks.lock_request_keys([&key[..]]);
        if !self.over(server, self.maxmemory.load(Ordering::Relaxed)) {
            return true;
        }
        let qualifies = ks.peek(key).is_some_and(|e| !volatile || e.expire_at != 0);
        let old = if qualifies { ks.remove(key) } else { None };
        for k in std::mem::take(&mut ks.expired_keys) {
            server.repl.propagate(db, &[b"DEL", &k]);
        }
        if old.is_some() {
            server.repl.propagate(db, &[b"DEL", key]);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            ks.notify(crate::notify::EVICTED, "evicted", key);
        }
        crate::notify::publish_all(server, notify, &mut ks.events);
        ks.unlock();
        // Freed after the shard is unlocked.
        old.is_some()
    }

    /// Evicts the best key by the policy; false when no key qualifies.
    fn evict_one(&self, server: &Server, policy: Policy, pool: &mut Vec<Candidate>) -> bool {
        let volatile = policy.volatile();
        let mut rng = rand::thread_rng();
        if policy.random() {
            for db in random_order(server.ks.count(), &mut rng) {
                let mut found = None;
                sample_db(server, db, volatile, 1, &mut rng, |k, _| {
                    found = Some(k.clone());
                });
                if let Some(k) = found {
                    if self.evict(server, db, &k, volatile) {
                        return true;
                    }
                }
            }
            return false;
        }
        let samples = self.samples.load(Ordering::Relaxed) as usize;
        let now = now_ms();
        let decay = self.lfu_decay_time.load(Ordering::Relaxed);
        // A few rounds: pooled candidates may have been deleted or rewritten since.
        for _ in 0..4 {
            let mut sampled = 0;
            for db in 0..server.ks.count() {
                sample_db(server, db, volatile, samples, &mut rng, |k, e| {
                    sampled += 1;
                    let score = score(policy, e, now, decay);
                    pool_insert(
                        pool,
                        Candidate {
                            score,
                            db,
                            key: k.clone(),
                        },
                    );
                });
            }
            if sampled == 0 && pool.is_empty() {
                return false;
            }
            while let Some(c) = pool.pop() {
                if self.evict(server, c.db, &c.key, volatile) {
                    return true;
                }
            }
        }
        false
    }
}

/// How good a victim the entry is under the policy: idle seconds (LRU), 255 minus the
/// decayed access counter (LFU), or nearness of the expiry (TTL).
fn score(policy: Policy, e: &Entry, now: u64, decay: u32) -> u64 {
    match policy {
        Policy::AllKeysLfu | Policy::VolatileLfu => {
            255 - u64::from(lfu_counter(e.lru, now, decay).min(255))
        }
        Policy::VolatileTtl => u64::MAX - e.expire_at,
        _ => idle_seconds(e.lru, now),
    }
}

/// Adds a candidate to the pool (ascending by score, at most [`POOL_SIZE`]), unless it is
/// already there or worse than every candidate of a full pool.
fn pool_insert(pool: &mut Vec<Candidate>, c: Candidate) {
    if pool.iter().any(|p| p.db == c.db && p.key == c.key) {
        return;
    }
    if pool.len() == POOL_SIZE && pool.first().is_some_and(|p| c.score <= p.score) {
        return;
    }
    let pos = pool.partition_point(|p| p.score < c.score);
    pool.insert(pos, c);
    if pool.len() > POOL_SIZE {
        pool.remove(0);
    }
}

fn random_order(n: usize, rng: &mut impl Rng) -> impl Iterator<Item = usize> {
    let start = rng.gen_range(0..n.max(1));
    (0..n).map(move |i| (start + i) % n.max(1))
}

/// Visits up to `n` keys of database `db` (only keys with an expiry when `volatile`), from
/// random places: a few random shards, then, for a sparse database, the first shards holding
/// any from a random start.
fn sample_db(
    server: &Server,
    db: usize,
    volatile: bool,
    n: usize,
    rng: &mut impl Rng,
    mut visit: impl FnMut(&Key, &Entry),
) {
    let Some(d) = server.ks.existing(db) else {
        return;
    };
    let mut seen = 0;
    let has_keys = |s: &crate::db::Shard| {
        if volatile {
            s.expires > 0
        } else {
            !s.is_empty()
        }
    };
    // Eight random shards; only when none of them held a key, every shard from a random one.
    const RANDOM_TRIES: usize = 8;
    let random: [usize; RANDOM_TRIES] = std::array::from_fn(|_| rng.gen_range(0..SHARDS));
    let first = rng.gen_range(0..SHARDS);
    let scan = (0..SHARDS).map(|i| (first + i) % SHARDS);
    let mut found_any = false;
    for (i, idx) in random.into_iter().chain(scan).enumerate() {
        if i == RANDOM_TRIES && found_any {
            return;
        }
        let shard = d.lock_shard(idx);
        if !has_keys(&shard) {
            continue;
        }
        found_any = true;
        let (start, skip) = (rng.gen(), rng.gen());
        shard.sample(start, skip, volatile, n - seen, |k, e| {
            seen += 1;
            visit(k, e);
        });
        if seen >= n {
            return;
        }
    }
}

/// Evicts on a timer too, so a lowered `maxmemory` takes effect without traffic; an eviction
/// that ran out of its time budget goes on at once, yielding between budgets (Redis's
/// eviction time proc).
pub async fn background(server: std::sync::Arc<Server>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        while server.evict.active() && server.evict.perform(&server) == Evicted::Running {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(score: u64, key: &[u8]) -> Candidate {
        Candidate {
            score,
            db: 0,
            key: Key::from(key),
        }
    }

    #[test]
    fn the_pool_keeps_the_best_candidates_in_order() {
        let mut pool = Vec::new();
        for i in 0..40u64 {
            pool_insert(&mut pool, cand((i * 7) % 40, format!("k{i}").as_bytes()));
        }
        assert_eq!(pool.len(), POOL_SIZE);
        let scores: Vec<u64> = pool.iter().map(|c| c.score).collect();
        assert_eq!(scores, (24..40).collect::<Vec<_>>());
        pool_insert(&mut pool, cand(39, b"k37"));
        assert_eq!(
            pool.len(),
            POOL_SIZE,
            "a key already pooled is not added twice"
        );
    }

    #[test]
    fn the_time_budget_follows_tenacity() {
        let e = Evictor::default();
        e.tenacity.store(10, Ordering::Relaxed);
        assert_eq!(e.time_limit(), Some(Duration::from_micros(500)));
        e.tenacity.store(0, Ordering::Relaxed);
        assert_eq!(e.time_limit(), Some(Duration::ZERO));
        e.tenacity.store(100, Ordering::Relaxed);
        assert_eq!(e.time_limit(), None);
    }
}
