//! The router: the current slot map (lock-free reads via `ArcSwap`), the backend pools by
//! node address, and slot-map refreshes (coalesced: at most one in flight, rate-limited,
//! plus a periodic background refresh).

use crate::pool::{dial, roundtrip, Pool, PoolConfig};
use crate::slotmap::SlotMap;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
use slotgate_protocol::Frame;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Seed nodes (`host:port`).
    pub seeds: Vec<String>,
    /// Backend pool settings.
    pub pool: PoolConfig,
    /// Minimum time between two refreshes.
    pub min_refresh_interval: Duration,
    /// Background refresh period (0 = off).
    pub refresh_period: Duration,
}

/// Slot-map refresh counters (metrics).
#[derive(Default)]
pub struct RefreshStats {
    /// Successful refreshes.
    pub ok: AtomicU64,
    /// Failed refreshes.
    pub failed: AtomicU64,
    /// Unix ms of the last success.
    pub last_ok_ms: AtomicU64,
    /// Duration of the last refresh in microseconds.
    pub last_us: AtomicU64,
}

/// A slot map and, beside each shard, its master's pool once a request needed it; swapped as
/// one, so the request path goes from slot to pool with no lookup by address.
pub struct Routing {
    /// The map.
    pub map: SlotMap,
    /// The RESP2 pool of `map.shards[i].master`, set on first use.
    pools: Box<[std::sync::OnceLock<Arc<Pool>>]>,
}

impl Routing {
    fn new(map: SlotMap) -> Routing {
        let pools = map.shards.iter().map(|_| Default::default()).collect();
        Routing { map, pools }
    }
}

impl std::ops::Deref for Routing {
    type Target = SlotMap;
    fn deref(&self) -> &SlotMap {
        &self.map
    }
}

/// Routes slots to backend pools.
pub struct Router {
    map: ArcSwap<Routing>,
    pools: DashMap<Arc<str>, Arc<Pool>>,
    resp3_pools: DashMap<Arc<str>, Arc<Pool>>,
    replica_pools: DashMap<(Arc<str>, bool), Arc<Pool>>,
    cfg: RouterConfig,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    prefer: Mutex<Option<String>>,
    wake: tokio::sync::Notify,
    /// Refresh counters.
    pub refresh_stats: RefreshStats,
    /// Spare client buffers of this router's worker.
    pub bufs: crate::bufs::BufCache,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Router {
    /// A router with an empty map; call [`Router::refresh`] before serving.
    pub fn new(cfg: RouterConfig) -> Arc<Router> {
        Arc::new(Router {
            map: ArcSwap::from_pointee(Routing::new(SlotMap::default())),
            pools: DashMap::new(),
            resp3_pools: DashMap::new(),
            replica_pools: DashMap::new(),
            cfg,
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            prefer: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            refresh_stats: RefreshStats::default(),
            bufs: Default::default(),
        })
    }

    /// Backend connection settings (dedicated connections use them too).
    pub fn pool_config(&self) -> &PoolConfig {
        &self.cfg.pool
    }

    /// Installs a map obtained elsewhere (another worker's discovery).
    pub fn install_map(&self, map: SlotMap) {
        self.map.store(Arc::new(Routing::new(map)));
    }

    /// The current map.
    pub fn map(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.map.load()
    }

    /// Queues `data` for the master of `slot` (as [`Router::send`]); `None` when no node
    /// serves the slot. The hot path: the pool comes from the map, not from a lookup.
    pub fn send_slot(
        &self,
        slot: u16,
        resp3: bool,
        client: u64,
        data: &[u8],
        frames: u32,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<bytes::Bytes, crate::pool::BackendError>>>
    {
        let r = self.map.load();
        let i = *r.map.slots.get(slot as usize)? as usize;
        let shard = r.map.shards.get(i)?;
        if resp3 {
            return Some(self.pool3(&shard.master).send(client, data, frames));
        }
        let pool = r.pools.get(i)?.get_or_init(|| self.pool(&shard.master));
        Some(pool.send(client, data, frames))
    }

    /// The pool for a node, created on first use (also for nodes learned from a redirect).
    pub fn pool(&self, addr: &Arc<str>) -> Arc<Pool> {
        if let Some(p) = self.pools.get(addr) {
            return p.clone();
        }
        self.pools
            .entry(addr.clone())
            .or_insert_with(|| Pool::new(addr.clone(), &self.cfg.pool))
            .clone()
    }

    /// The pool a client speaking RESP3 (`resp3`) or RESP2 uses for `addr`.
    pub fn pool_for(&self, addr: &Arc<str>, resp3: bool) -> Arc<Pool> {
        if resp3 {
            self.pool3(addr)
        } else {
            self.pool(addr)
        }
    }

    /// Queues `data` (answered by `frames` reply frames) on `addr`'s pool for `client`, as
    /// [`Router::pool_for`] picks it (the hot path: an existing pool is used in place,
    /// without taking a reference to it).
    pub fn send(
        &self,
        addr: &Arc<str>,
        resp3: bool,
        client: u64,
        data: &[u8],
        frames: u32,
    ) -> tokio::sync::oneshot::Receiver<Result<bytes::Bytes, crate::pool::BackendError>> {
        let pools = if resp3 {
            &self.resp3_pools
        } else {
            &self.pools
        };
        if let Some(p) = pools.get(addr) {
            return p.send(client, data, frames);
        }
        self.pool_for(addr, resp3).send(client, data, frames)
    }

    /// The RESP3 pool for a node (for clients that said HELLO 3).
    pub fn pool3(&self, addr: &Arc<str>) -> Arc<Pool> {
        if let Some(p) = self.resp3_pools.get(addr) {
            return p.clone();
        }
        let mut cfg = self.cfg.pool.clone();
        cfg.resp3 = true;
        self.resp3_pools
            .entry(addr.clone())
            .or_insert_with(|| Pool::new(addr.clone(), &cfg))
            .clone()
    }

    /// A READONLY pool for a replica (replica reads).
    pub fn replica_pool(&self, addr: &Arc<str>, resp3: bool) -> Arc<Pool> {
        let key = (addr.clone(), resp3);
        if let Some(p) = self.replica_pools.get(&key) {
            return p.clone();
        }
        let mut cfg = self.cfg.pool.clone();
        cfg.readonly = true;
        cfg.resp3 = resp3;
        self.replica_pools
            .entry(key)
            .or_insert_with(|| Pool::new(addr.clone(), &cfg))
            .clone()
    }

    /// All pools (metrics).
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().map(|e| e.value().clone()).collect()
    }

    /// Applies a MOVED at once (this slot now lives at `addr`) and schedules a full refresh
    /// asking that node first.
    pub fn moved(&self, slot: u16, addr: &str) {
        let cur = self.map.load();
        if cur.master_of(slot).map(|a| &**a) != Some(addr) {
            self.install_map(cur.with_moved(slot, addr));
        }
        self.schedule_refresh(Some(addr.to_string()));
    }

    /// Asks the background task for a refresh (coalesced and rate-limited).
    pub fn schedule_refresh(&self, prefer: Option<String>) {
        if let Some(p) = prefer {
            *self.prefer.lock() = Some(p);
        }
        self.wake.notify_one();
    }

    /// Background task: refreshes when asked (at most one in flight, at most one per
    /// `min_refresh_interval`) and periodically.
    pub async fn refresh_loop(self: Arc<Self>) {
        loop {
            let period = self.cfg.refresh_period;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = async {
                    if period.is_zero() { std::future::pending::<()>().await } else { tokio::time::sleep(period).await }
                } => {}
            }
            let wait = {
                let last = self.last_refresh.lock();
                last.map(|t| self.cfg.min_refresh_interval.saturating_sub(t.elapsed()))
            };
            if let Some(w) = wait {
                if !w.is_zero() {
                    tokio::time::sleep(w).await;
                }
            }
            let prefer = self.prefer.lock().take();
            let _ = self.refresh(prefer.as_deref()).await;
        }
    }

    /// Fetches CLUSTER SLOTS from `prefer`, then the known masters, then the seeds, and
    /// installs the first good map. Returns an error when no node answered.
    pub async fn refresh(&self, prefer: Option<&str>) -> anyhow::Result<()> {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let started = Instant::now();
        let res = self.refresh_inner(prefer).await;
        *self.last_refresh.lock() = Some(Instant::now());
        self.refresh_stats
            .last_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &res {
            Ok(()) => {
                self.refresh_stats.ok.fetch_add(1, Ordering::Relaxed);
                self.refresh_stats
                    .last_ok_ms
                    .store(now_ms(), Ordering::Relaxed);
            }
            Err(e) => {
                self.refresh_stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("slot map refresh failed: {e}");
            }
        }
        self.refreshing.store(false, Ordering::Release);
        res
    }

    async fn refresh_inner(&self, prefer: Option<&str>) -> anyhow::Result<()> {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(p) = prefer {
            candidates.push(p.to_string());
        }
        for m in self.map.load().masters() {
            candidates.push(m.to_string());
        }
        candidates.extend(self.cfg.seeds.iter().cloned());
        candidates.dedup();
        let mut last_err = anyhow::anyhow!("no seed nodes");
        for addr in candidates {
            match self.fetch_map(&addr).await {
                Ok(map) if map.covered() > 0 => {
                    let old = self.map.load();
                    let changed = old.slots != map.slots || old.shards != map.shards;
                    if changed {
                        tracing::info!(
                            "slot map v{} from {addr}: {} masters, {} slots covered",
                            map.version,
                            map.masters().len(),
                            map.covered()
                        );
                        self.install_map(map);
                    }
                    return Ok(());
                }
                Ok(_) => last_err = anyhow::anyhow!("{addr} reports no slots assigned"),
                Err(e) => last_err = e.context(format!("asking {addr}")),
            }
        }
        Err(last_err)
    }

    async fn fetch_map(&self, addr: &str) -> anyhow::Result<SlotMap> {
        let t = self.cfg.pool.connect_timeout;
        let mut s = dial(addr, t).await?;
        if let Some((user, pass)) = &self.cfg.pool.auth {
            let r = match user {
                Some(u) => roundtrip(&mut s, &[b"AUTH", u.as_bytes(), pass.as_bytes()], t).await?,
                None => roundtrip(&mut s, &[b"AUTH", pass.as_bytes()], t).await?,
            };
            if r.first() == Some(&b'-') {
                anyhow::bail!(
                    "AUTH failed: {}",
                    String::from_utf8_lossy(&r[1..]).trim_end()
                );
            }
        }
        let raw = roundtrip(
            &mut s,
            &[b"CLUSTER", b"SLOTS"],
            self.cfg.pool.read_timeout.max(t),
        )
        .await?;
        let frame: Frame = slotgate_protocol::resp::decode_complete(&raw)?;
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
        let version = self.map.load().version + 1;
        Ok(SlotMap::from_cluster_slots(&frame, host, version)?)
    }
}
