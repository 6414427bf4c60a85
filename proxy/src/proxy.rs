//! The proxy's shared state: settings, the router, the connected clients and the listener.

use crate::client::ClientInfo;
use crate::router::Router;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings the client connections use.
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
}

/// Shared state.
pub struct Proxy {
    /// Settings.
    pub cfg: ProxyConfig,
    /// Slot map and backend pools.
    pub router: Arc<Router>,
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
}

impl Proxy {
    /// New shared state.
    pub fn new(cfg: ProxyConfig, router: Arc<Router>) -> Proxy {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        let id = (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect();
        Proxy {
            cfg,
            router,
            id,
            clients: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            commands: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Accepts clients until the process ends.
pub async fn serve(proxy: Arc<Proxy>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                if proxy.clients.lock().len() >= proxy.cfg.maxclients {
                    proxy.rejected.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::client_rejected();
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
                proxy.connections.fetch_add(1, Ordering::Relaxed);
                let p = proxy.clone();
                tokio::spawn(async move { crate::client::serve(p, sock, peer).await });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
