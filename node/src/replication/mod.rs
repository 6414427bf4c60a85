//! Replication: a master's stream of writes and the replicas that follow it.
//!
//! A master (standalone or cluster) keeps a *replication ID* and an *offset* (bytes of write
//! stream produced). Every successful write is propagated — under the keys' shard locks, so
//! the stream order is the execution order — as RESP commands into the backlog (a ring of
//! `repl-backlog-size` bytes for partial resyncs) and to every connected replica.
//! A replica connects to its master's client port, handshakes (PING, AUTH, REPLCONF, PSYNC),
//! loads the full snapshot (RDB) or continues from the backlog, then applies the stream as
//! the master executed it, keeping the same offset so that after a failover the others can
//! continue from it (replid2 / second_repl_offset, as Redis).
//!
//! - [`master`]: serving replicas (PSYNC/SYNC, snapshot + buffered stream, REPLCONF ACK, WAIT).
//! - [`replica`]: following a master (handshake, load, apply, ACK every second).
//!
//! Other modules use the [`Replication`] API: cluster mode points the node at a master with
//! [`Replication::set_master`] (Some = follow, None = be a master), reads the offset for
//! elections and pauses writes for manual failover.

use crate::server::Server;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// State of this node's link to its master (INFO `master_link_status` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; a connection attempt is pending.
    Connect,
    /// Connected, handshake in progress.
    Handshake,
    /// Receiving the snapshot.
    Transfer,
    /// Streaming.
    Connected,
}

/// One replica as the master sees it (INFO `slaveN`, ROLE, WAIT).
#[derive(Debug, Clone)]
pub struct ReplicaInfo {
    /// IP the replica connected from.
    pub ip: String,
    /// Its `REPLCONF listening-port`.
    pub port: u16,
    /// `wait_bgsave`, `send_bulk` or `online`.
    pub state: &'static str,
    /// Last acknowledged offset.
    pub ack_offset: u64,
    /// Unix ms of the last ACK.
    pub ack_time_ms: u64,
}

struct Inner {
    replid: String,
    replid2: String,
    second_offset: i64,
    master: Option<(String, u16)>,
    link: LinkState,
    link_down_since_ms: u64,
    replicas: Vec<ReplicaInfo>,
}

/// Replication state of one node (owned by [`Server`]).
pub struct Replication {
    inner: Mutex<Inner>,
    offset: AtomicU64,
    is_replica: AtomicBool,
    paused_until_ms: AtomicU64,
}

impl Default for Replication {
    fn default() -> Self {
        Replication::new()
    }
}

impl Replication {
    /// A master with a fresh replication ID and no stream yet.
    pub fn new() -> Replication {
        Replication {
            inner: Mutex::new(Inner {
                replid: crate::server::random_hex40(),
                replid2: "0".repeat(40),
                second_offset: -1,
                master: None,
                link: LinkState::Connect,
                link_down_since_ms: 0,
                replicas: Vec::new(),
            }),
            offset: AtomicU64::new(0),
            is_replica: AtomicBool::new(false),
            paused_until_ms: AtomicU64::new(0),
        }
    }

    /// `master_repl_offset`: bytes of the write stream this node has produced (master) or
    /// processed from its master (replica).
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Acquire)
    }

    /// True while this node follows a master.
    pub fn is_replica(&self) -> bool {
        self.is_replica.load(Ordering::Acquire)
    }

    /// True when this replica's link to its master is streaming.
    pub fn link_up(&self) -> bool {
        self.is_replica() && self.inner.lock().link == LinkState::Connected
    }

    /// Milliseconds since the link to the master went down (None on a master or when up).
    pub fn link_down_for_ms(&self, now_ms: u64) -> Option<u64> {
        let i = self.inner.lock();
        (self.is_replica() && i.link != LinkState::Connected)
            .then(|| now_ms.saturating_sub(i.link_down_since_ms))
    }

    /// The master this node follows, if any.
    pub fn master(&self) -> Option<(String, u16)> {
        self.inner.lock().master.clone()
    }

    /// Follows `target` (Some) or becomes a master keeping its data (None). Idempotent: the
    /// same target again changes nothing. Safe to call from the cluster cron every tick.
    pub fn set_master(server: &Arc<Server>, target: Option<(String, u16)>) {
        let r = &server.repl;
        let mut i = r.inner.lock();
        if i.master == target {
            return;
        }
        i.master = target.clone();
        match target {
            Some(_) => {
                r.is_replica.store(true, Ordering::Release);
                i.link = LinkState::Connect;
                i.link_down_since_ms = crate::db::now_ms();
            }
            None => {
                r.is_replica.store(false, Ordering::Release);
                // A promoted replica keeps its history: others can continue from it.
                i.replid2 = std::mem::replace(&mut i.replid, crate::server::random_hex40());
                i.second_offset = r.offset() as i64 + 1;
            }
        }
    }

    /// Pauses client writes until `until_ms` (unix ms; manual failover on the master).
    pub fn pause_writes(&self, until_ms: u64) {
        self.paused_until_ms.store(until_ms, Ordering::Release);
    }

    /// Ends a write pause early.
    pub fn unpause_writes(&self) {
        self.paused_until_ms.store(0, Ordering::Release);
    }

    /// True while client writes are paused.
    pub fn writes_paused(&self, now_ms: u64) -> bool {
        self.paused_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// The replicas connected to this master.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.inner.lock().replicas.clone()
    }
}

/// INFO `# Replication` fields in Redis's order (also read by the metrics exporter).
pub fn info_fields(server: &Server) -> Vec<(&'static str, String)> {
    let r = &server.repl;
    let i = r.inner.lock();
    let mut v: Vec<(&'static str, String)> = Vec::new();
    if let Some((host, port)) = &i.master {
        v.push(("role", "slave".into()));
        v.push(("master_host", host.clone()));
        v.push(("master_port", port.to_string()));
        let up = i.link == LinkState::Connected;
        v.push(("master_link_status", if up { "up" } else { "down" }.into()));
    } else {
        v.push(("role", "master".into()));
        v.push(("connected_slaves", i.replicas.len().to_string()));
    }
    v.push(("master_replid", i.replid.clone()));
    v.push(("master_replid2", i.replid2.clone()));
    v.push(("master_repl_offset", r.offset().to_string()));
    v.push(("second_repl_offset", i.second_offset.to_string()));
    v
}
