//! The proxy's shared state: settings, the router, the connected clients and the listener.

use crate::client::ClientInfo;
use crate::router::Router;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where read-only commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Always the master.
    Master,
    /// A healthy replica when there is one, else the master.
    PreferReplica,
    /// A replica (the master only when no replica is healthy).
    Replica,
}

impl ReadFrom {
    /// Parses `master`, `prefer-replica`, `replica`.
    pub fn parse(s: &str) -> Option<ReadFrom> {
        match s.to_ascii_lowercase().as_str() {
            "master" => Some(ReadFrom::Master),
            "prefer-replica" => Some(ReadFrom::PreferReplica),
            "replica" => Some(ReadFrom::Replica),
            _ => None,
        }
    }

    /// The name CONFIG GET shows.
    pub fn name(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::PreferReplica => "prefer-replica",
            ReadFrom::Replica => "replica",
        }
    }
}

/// Settings the client connections use (swapped as a whole by CONFIG SET and SIGHUP).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Password clients must AUTH with (None: no auth).
    pub requirepass: Option<String>,
    /// Most client connections.
    pub maxclients: usize,
    /// Close clients idle this long (0: never).
    pub idle_timeout: Duration,
    /// Per-request deadline (retries on redirects/TRYAGAIN/CLUSTERDOWN happen within it).
    pub request_timeout: Duration,
    /// Most requests of one client in flight (pipeline depth limit; backpressure beyond).
    pub max_pipeline: usize,
    /// Largest query buffer per client.
    pub max_query_buffer: usize,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// SLOWLOG threshold in microseconds (negative: off).
    pub slowlog_slower_than_us: i64,
    /// SLOWLOG length.
    pub slowlog_max_len: usize,
}

/// One SLOWLOG entry of the proxy.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    /// Id.
    pub id: u64,
    /// Unix seconds.
    pub time: u64,
    /// Microseconds.
    pub micros: u64,
    /// Arguments (trimmed).
    pub args: Vec<bytes::Bytes>,
    /// Client address.
    pub addr: String,
    /// Client name.
    pub name: String,
    /// Backend node that served it ("" when answered locally or split).
    pub node: String,
}

/// Shared state.
pub struct Proxy {
    cfg: arc_swap::ArcSwap<ProxyConfig>,
    /// Slow requests, newest first.
    pub slowlog: Mutex<std::collections::VecDeque<SlowEntry>>,
    slowlog_next: AtomicU64,
    /// Set when shutting down: stop reading new requests.
    pub draining: std::sync::atomic::AtomicBool,
    /// Scripts seen in SCRIPT LOAD / EVAL, by SHA1, to reload them after a NOSCRIPT.
    pub scripts: Mutex<std::collections::HashMap<String, bytes::Bytes>>,
    /// Proxy identity (CLUSTER MYID and friends).
    pub id: String,
    /// Connected clients.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    next_id: AtomicU64,
    /// Start time.
    pub started: Instant,
    /// Commands processed.
    pub commands: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections rejected.
    pub rejected: AtomicU64,
    /// The worker threads and their balancer (which ones serve clients, how many each has).
    pub io: slotgate_iopool::Pool<crate::client::Moving>,
}

impl Proxy {
    /// New shared state for `workers` worker threads.
    pub fn new(cfg: ProxyConfig, workers: usize) -> Proxy {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let id = (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect();
        Proxy {
            cfg: arc_swap::ArcSwap::from_pointee(cfg),
            slowlog: Mutex::new(std::collections::VecDeque::new()),
            slowlog_next: AtomicU64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            scripts: Mutex::new(std::collections::HashMap::new()),
            id,
            clients: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            commands: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            io: slotgate_iopool::Pool::new(workers),
        }
    }

    /// The current settings.
    pub fn cfg(&self) -> arc_swap::Guard<Arc<ProxyConfig>> {
        self.cfg.load()
    }

    /// Replaces the settings (CONFIG SET, SIGHUP); clients see them from their next request.
    pub fn set_cfg(&self, cfg: ProxyConfig) {
        self.cfg.store(Arc::new(cfg));
    }

    /// Records a slow request when it is over the threshold.
    pub fn maybe_slowlog(
        &self,
        micros: u64,
        args: &[bytes::Bytes],
        addr: &str,
        name: String,
        node: String,
    ) {
        let cfg = self.cfg();
        if cfg.slowlog_slower_than_us < 0 || (micros as i64) < cfg.slowlog_slower_than_us {
            return;
        }
        let mut trimmed: Vec<bytes::Bytes> = args.iter().take(32).cloned().collect();
        for a in trimmed.iter_mut() {
            if a.len() > 128 {
                *a = bytes::Bytes::from(format!(
                    "{}... ({} more bytes)",
                    String::from_utf8_lossy(&a[..128]),
                    a.len() - 128
                ));
            }
        }
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut log = self.slowlog.lock();
        log.push_front(SlowEntry {
            id: self.slowlog_next.fetch_add(1, Ordering::Relaxed),
            time,
            micros,
            args: trimmed,
            addr: addr.to_string(),
            name,
            node,
        });
        log.truncate(cfg.slowlog_max_len);
    }

    /// Remembers a script body (SCRIPT LOAD, EVAL) under its SHA1.
    pub fn remember_script(&self, body: &bytes::Bytes) {
        let sha = sha1_smol::Sha1::from(&body[..]).digest().to_string();
        let mut s = self.scripts.lock();
        if !s.contains_key(&sha) && s.len() < 100_000 {
            s.insert(sha, body.clone());
        }
    }

    /// The body of a known script.
    pub fn script(&self, sha: &[u8]) -> Option<bytes::Bytes> {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.scripts.lock().get(&sha).cloned()
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Accepts clients for worker `worker` until the process ends.
pub async fn serve(
    proxy: Arc<Proxy>,
    router: Arc<Router>,
    listener: tokio::net::TcpListener,
    worker: usize,
) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                if proxy.draining.load(Ordering::Relaxed) {
                    drop(sock);
                    continue;
                }
                if proxy.clients.lock().len() >= proxy.cfg().maxclients {
                    proxy.rejected.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::client_rejected();
                    slotgate_iopool::refuse(sock, b"-ERR max number of clients reached\r\n");
                    continue;
                }
                let _ = sock.set_nodelay(true);
                proxy.connections.fetch_add(1, Ordering::Relaxed);
                let p = proxy.clone();
                let r = router.clone();
                use slotgate_iopool::Accepted;
                let wrap = |sock| crate::client::Moving::Accepted { sock, peer };
                match proxy.io.hand_over(worker, sock, wrap) {
                    Accepted::Keep(sock) => {
                        tokio::spawn(crate::client::serve(p, r, sock, peer, worker));
                    }
                    Accepted::Sent => {}
                    Accepted::Back(m) => crate::client::resume(p, r, *m, worker),
                    Accepted::Failed(e) => {
                        tracing::warn!("handing a new client to another worker: {e}")
                    }
                }
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
