//! Replication: a master's stream of writes and the replicas that follow it.
//!
//! A master (standalone or cluster) keeps a *replication ID* and an *offset* (bytes of write
//! stream produced). Every successful write is propagated — under the keys' shard locks, so
//! the stream order is the execution order — as RESP commands into the backlog and to every
//! connected replica. The backlog keeps at least `repl-backlog-size` bytes for partial
//! resyncs, and also everything a connected replica has not been sent yet (a replica loading
//! a snapshot receives the writes made meanwhile afterwards), up to [`REPLICA_BUFFER_LIMIT`].
//! A replica connects to its master's client port, handshakes (PING, AUTH, REPLCONF, PSYNC),
//! loads the full snapshot (an RDB file) or continues from the backlog, then applies the
//! stream as the master executed it, appending the same bytes to its own backlog so that
//! after a failover the others can continue from it (replid2 / second_repl_offset, as Redis).
//!
//! - [`master`]: serving replicas (PSYNC/SYNC, snapshot + buffered stream, REPLCONF ACK).
//! - [`replica`]: following a master (handshake, load, apply, ACK every second).
//!
//! Lock order: keyspace shard locks → `feed` → `inner`.
//!
//! Other modules use the [`Replication`] API: cluster mode points the node at a master with
//! [`Replication::set_master`] (Some = follow, None = be a master), reads the offset for
//! elections and pauses writes for manual failover.

pub mod master;
pub mod replica;
pub mod rewrite;

use crate::server::Server;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A replica whose unsent stream exceeds this is disconnected (Redis's default
/// `client-output-buffer-limit replica 256mb`).
pub const REPLICA_BUFFER_LIMIT: u64 = 256 * 1024 * 1024;

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
    /// Link id (the replica's client id on this master).
    pub id: u64,
    /// IP the replica connected from.
    pub ip: String,
    /// Its `REPLCONF listening-port`.
    pub port: u16,
    /// `wait_bgsave`, `send_bulk` or `online`.
    pub state: &'static str,
    /// Stream position (0-based byte index) of the next byte to send it.
    pub pos: u64,
    /// Last acknowledged offset.
    pub ack_offset: u64,
    /// Unix ms of the last ACK.
    pub ack_time_ms: u64,
}

/// The write stream kept for replicas: backlog plus the connected links' positions.
struct Feed {
    /// Stream bytes `[first, offset)`.
    data: VecDeque<u8>,
    /// Stream index of `data[0]`.
    first: u64,
    /// True once a backlog exists (first replica, or a replica's own stream).
    active: bool,
    /// `repl-backlog-size`.
    size: usize,
    /// Database of the last SELECT in the stream (None: emit one before the next command).
    stream_db: Option<usize>,
    links: Vec<ReplicaInfo>,
    scratch: Vec<u8>,
}

struct Inner {
    replid: String,
    replid2: String,
    second_offset: i64,
    master: Option<(String, u16)>,
    link: LinkState,
    link_down_since_ms: u64,
    last_io_ms: u64,
    /// Database the master's stream last selected (kept across reconnections).
    master_db: usize,
    /// True once this node holds data from its current master's history (may PSYNC).
    has_history: bool,
}

/// Replication counters (INFO stats).
#[derive(Default)]
pub struct ReplStats {
    /// Full resyncs served.
    pub sync_full: AtomicU64,
    /// Partial resyncs accepted.
    pub sync_partial_ok: AtomicU64,
    /// Partial resyncs refused.
    pub sync_partial_err: AtomicU64,
}

/// Replication state of one node (owned by [`Server`]).
pub struct Replication {
    inner: Mutex<Inner>,
    feed: Mutex<Feed>,
    offset: AtomicU64,
    feeding: AtomicBool,
    is_replica: AtomicBool,
    paused_until_ms: AtomicU64,
    pause_all: AtomicBool,
    /// Bumped by every change of master: a replica link task of an older generation exits.
    generation: AtomicU64,
    /// Wakes master-side link tasks parked waiting for stream bytes.
    stream_notify: tokio::sync::Notify,
    /// True while at least one link task is parked (writers only notify then: one atomic
    /// swap per write instead of a wake-up per write).
    link_parked: AtomicBool,
    /// Bumped on every ACK from a replica (WAIT waiters).
    ack_tx: tokio::sync::watch::Sender<u64>,
    /// Counters.
    pub stats: ReplStats,
    /// `min-replicas-to-write` (cached for the write path).
    pub min_replicas: AtomicU64,
    /// `min-replicas-max-lag` in seconds.
    pub min_replicas_lag: AtomicU64,
    /// The control-plane runtime, where replica links run (set by `server::run`).
    pub control: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication::new(1024 * 1024)
    }
}

/// Appends `args` as a RESP array.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Replication {
    /// A master with a fresh replication ID and no stream yet.
    pub fn new(backlog_size: usize) -> Replication {
        Replication {
            inner: Mutex::new(Inner {
                replid: crate::server::random_hex40(),
                replid2: "0".repeat(40),
                second_offset: -1,
                master: None,
                link: LinkState::Connect,
                link_down_since_ms: 0,
                last_io_ms: 0,
                master_db: 0,
                has_history: false,
            }),
            feed: Mutex::new(Feed {
                data: VecDeque::new(),
                first: 0,
                active: false,
                size: backlog_size.max(16 * 1024),
                stream_db: None,
                links: Vec::new(),
                scratch: Vec::new(),
            }),
            offset: AtomicU64::new(0),
            feeding: AtomicBool::new(false),
            is_replica: AtomicBool::new(false),
            paused_until_ms: AtomicU64::new(0),
            pause_all: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            stream_notify: tokio::sync::Notify::new(),
            link_parked: AtomicBool::new(false),
            ack_tx: tokio::sync::watch::channel(0).0,
            stats: ReplStats::default(),
            control: std::sync::OnceLock::new(),
            min_replicas: AtomicU64::new(0),
            min_replicas_lag: AtomicU64::new(10),
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

    /// True when this node's writes go to a backlog (it has or had replicas): commands are
    /// propagated and lazily expired keys produce DELs.
    pub fn feeding(&self) -> bool {
        self.feeding.load(Ordering::Relaxed)
    }

    /// The current replication ID.
    pub fn replid(&self) -> String {
        self.inner.lock().replid.clone()
    }

    /// The database the stream last selected (for an RDB's `repl-stream-db`).
    pub fn stream_db(&self) -> usize {
        self.feed.lock().stream_db.unwrap_or(0)
    }

    /// Bytes the replication stream buffer holds (INFO `mem_replication_backlog`; not counted
    /// against `maxmemory`).
    pub fn buffer_bytes(&self) -> usize {
        if !self.feeding() && !self.is_replica() {
            return 0;
        }
        self.feed.lock().data.capacity()
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

    /// ROLE's link state of a replica: connect, connecting, sync or connected.
    pub fn link_state_name(&self) -> &'static str {
        match self.inner.lock().link {
            LinkState::Connect => "connect",
            LinkState::Handshake => "connecting",
            LinkState::Transfer => "sync",
            LinkState::Connected => "connected",
        }
    }

    /// The master this node follows, if any.
    pub fn master(&self) -> Option<(String, u16)> {
        self.inner.lock().master.clone()
    }

    /// Follows `target` (Some) or becomes a master keeping its data (None). Idempotent: the
    /// same target again changes nothing. Safe to call from the cluster cron every tick.
    pub fn set_master(server: &Arc<Server>, target: Option<(String, u16)>) {
        Self::change_master(server, target, true);
    }

    /// Follows `target` from the start (`replicaof` in the config): like Redis, a node that
    /// starts as a replica has no history of its own to offer and asks for a full sync.
    pub fn start_as_replica(server: &Arc<Server>, target: (String, u16)) {
        Self::change_master(server, Some(target), false);
    }

    fn change_master(server: &Arc<Server>, target: Option<(String, u16)>, cache_self: bool) {
        let r = &server.repl;
        let mut f = r.feed.lock();
        let mut i = r.inner.lock();
        if i.master == target {
            return;
        }
        let generation = r.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let was_replica = i.master.is_some();
        i.master = target.clone();
        match target {
            Some((host, port)) => {
                r.is_replica.store(true, Ordering::Release);
                server.log.set_role('S');
                i.link = LinkState::Connect;
                i.link_down_since_ms = crate::db::now_ms();
                if !was_replica {
                    // Our own history is what we offer the new master for a partial resync.
                    i.has_history = cache_self;
                    i.master_db = f.stream_db.unwrap_or(0);
                }
                // Replicas of ours must resync with the new history.
                f.links.clear();
                drop(i);
                drop(f);
                // Clients blocked on keys of a master that just became a replica are
                // answered -UNBLOCKED and disconnected (connection.rs), as Redis 7 does.
                server.ks.wake_all_blocked();
                server
                    .log
                    .notice(&format!("Connecting to MASTER {host}:{port}"));
                replica::spawn(server.clone(), generation, host, port);
            }
            None => {
                r.is_replica.store(false, Ordering::Release);
                server.log.set_role('M');
                // A promoted replica keeps its history: others can continue from it.
                let new_id = crate::server::random_hex40();
                i.replid2 = std::mem::replace(&mut i.replid, new_id);
                i.second_offset = r.offset() as i64 + 1;
                i.link = LinkState::Connect;
                f.stream_db = None;
                if !f.active {
                    f.active = true;
                    f.first = r.offset();
                    r.feeding.store(true, Ordering::Release);
                }
                server.log.notice(&format!(
                    "Setting secondary replication ID to {}, valid up to offset: {}. New replication ID is {}",
                    i.replid2, i.second_offset, i.replid
                ));
                server.log.notice("MASTER MODE enabled");
            }
        }
    }

    /// Pauses client writes until `until_ms` (unix ms; manual failover on the master).
    pub fn pause_writes(&self, until_ms: u64) {
        self.paused_until_ms.store(until_ms, Ordering::Release);
    }

    /// CLIENT PAUSE: pauses writes (`all` = every command) until `until_ms`.
    pub fn pause_clients(&self, until_ms: u64, all: bool) {
        self.pause_all.store(all, Ordering::Release);
        self.paused_until_ms.store(until_ms, Ordering::Release);
    }

    /// True when the current pause holds every command, not only writes.
    pub fn pause_is_all(&self) -> bool {
        self.pause_all.load(Ordering::Acquire)
    }

    /// Ends a write pause early.
    pub fn unpause_writes(&self) {
        self.paused_until_ms.store(0, Ordering::Release);
        self.pause_all.store(false, Ordering::Release);
    }

    /// True when a write pause was requested (cheap pre-check: no clock read).
    pub fn pause_set(&self) -> bool {
        self.paused_until_ms.load(Ordering::Relaxed) != 0
    }

    /// True while client writes are paused.
    pub fn writes_paused(&self, now_ms: u64) -> bool {
        self.paused_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// The replicas connected to this node.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        self.feed.lock().links.clone()
    }

    /// Number of online replicas whose last ACK is at most `max_lag_s` seconds old.
    pub fn good_replicas(&self, now_ms: u64, max_lag_s: u64) -> usize {
        self.feed
            .lock()
            .links
            .iter()
            .filter(|l| {
                l.state == "online" && now_ms.saturating_sub(l.ack_time_ms) <= max_lag_s * 1000
            })
            .count()
    }

    /// Number of replicas that acknowledged at least `offset`.
    pub fn acked(&self, offset: u64) -> usize {
        self.feed
            .lock()
            .links
            .iter()
            .filter(|l| l.state == "online" && l.ack_offset >= offset)
            .count()
    }

    /// A receiver notified on every replica ACK (WAIT).
    pub fn ack_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ack_tx.subscribe()
    }

    /// Appends one command to the stream (a master's write, under its keys' shard locks).
    /// No-op on replicas (they forward their master's stream verbatim) and before any
    /// replica ever connected.
    pub fn propagate(&self, db: usize, args: &[&[u8]]) {
        if !self.feeding() || self.is_replica() {
            return;
        }
        let mut f = self.feed.lock();
        let mut buf = std::mem::take(&mut f.scratch);
        buf.clear();
        if f.stream_db != Some(db) {
            let mut n = itoa::Buffer::new();
            encode_command(&mut buf, &[b"SELECT", n.format(db).as_bytes()]);
            f.stream_db = Some(db);
        }
        encode_command(&mut buf, args);
        let end = self.append(&mut f, &buf);
        f.scratch = buf;
        drop(f);
        let _ = end;
        self.wake_links();
    }

    /// Propagates a command given as owned arguments.
    pub fn propagate_bytes(&self, db: usize, args: &[Bytes]) {
        if !self.feeding() || self.is_replica() {
            return;
        }
        let v: smallvec::SmallVec<[&[u8]; 8]> = args.iter().map(|a| &a[..]).collect();
        self.propagate(db, &v);
    }

    /// Appends stream bytes received from our master verbatim (a replica's own backlog, so
    /// that its replicas, and everyone after a failover, can continue from it).
    pub fn feed_raw(&self, bytes: &[u8]) {
        let mut f = self.feed.lock();
        if !f.active {
            f.active = true;
            f.first = self.offset();
            self.feeding.store(true, Ordering::Release);
        }
        let end = self.append(&mut f, bytes);
        drop(f);
        let _ = end;
        self.wake_links();
    }

    fn wake_links(&self) {
        // SeqCst pairs with `wait_stream` (store parked, then read the offset).
        if self.link_parked.load(Ordering::SeqCst) && self.link_parked.swap(false, Ordering::SeqCst)
        {
            self.stream_notify.notify_waiters();
        }
    }

    /// Waits until stream bytes past `pos` may exist (a link task with nothing to send).
    async fn wait_stream(&self, pos: u64) {
        let notified = self.stream_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.link_parked.store(true, Ordering::SeqCst);
        if self.offset.load(Ordering::SeqCst) > pos {
            return;
        }
        notified.await;
    }

    fn append(&self, f: &mut Feed, bytes: &[u8]) -> u64 {
        f.data.extend(bytes.iter().copied());
        let end = self.offset.fetch_add(bytes.len() as u64, Ordering::SeqCst) + bytes.len() as u64;
        // Trim: keep `size` bytes, and everything a link still needs (within its limit).
        let keep_from_backlog = end.saturating_sub(f.size as u64);
        let mut keep_from = keep_from_backlog;
        for l in &f.links {
            if end - l.pos <= REPLICA_BUFFER_LIMIT {
                keep_from = keep_from.min(l.pos);
            }
        }
        if keep_from > f.first {
            let n = ((keep_from - f.first) as usize).min(f.data.len());
            f.data.drain(..n);
            f.first += n as u64;
            if f.data.capacity() > 4 * f.size.max(f.data.len()) {
                f.data.shrink_to(2 * f.size.max(f.data.len()));
            }
        }
        end
    }

    /// Copies up to `max` stream bytes from position `pos` for link `id`; Err when `pos` was
    /// trimmed (the replica fell too far behind) or the link is gone.
    fn read_stream(&self, id: u64, pos: u64, max: usize, out: &mut Vec<u8>) -> Result<u64, ()> {
        let mut f = self.feed.lock();
        if pos < f.first || !f.links.iter().any(|l| l.id == id) {
            return Err(());
        }
        let start = (pos - f.first) as usize;
        let n = (f.data.len().saturating_sub(start)).min(max);
        let (a, b) = f.data.as_slices();
        if start < a.len() {
            let from_a = (a.len() - start).min(n);
            out.extend_from_slice(&a[start..start + from_a]);
            out.extend_from_slice(&b[..n - from_a]);
        } else {
            out.extend_from_slice(&b[start - a.len()..start - a.len() + n]);
        }
        let new_pos = pos + n as u64;
        if let Some(l) = f.links.iter_mut().find(|l| l.id == id) {
            l.pos = new_pos;
        }
        Ok(new_pos)
    }

    fn set_link(&self, id: u64, upd: impl FnOnce(&mut ReplicaInfo)) {
        if let Some(l) = self.feed.lock().links.iter_mut().find(|l| l.id == id) {
            upd(l);
        }
    }

    /// Drops link `id` if it is still registered (its connection closed).
    pub fn remove_link(&self, id: u64) {
        self.feed.lock().links.retain(|l| l.id != id);
    }

    fn record_ack(&self, id: u64, offset: u64) {
        let now = crate::db::now_ms();
        self.set_link(id, |l| {
            l.ack_offset = l.ack_offset.max(offset);
            l.ack_time_ms = now;
        });
        self.ack_tx.send_modify(|n| *n += 1);
    }
}

/// INFO `# Replication` fields in Redis's order (also read by the metrics exporter).
pub fn info_fields(server: &Server) -> Vec<(&'static str, String)> {
    let r = &server.repl;
    let now = crate::db::now_ms();
    let f = r.feed.lock();
    let i = r.inner.lock();
    let mut v: Vec<(&'static str, String)> = Vec::new();
    let cfg = server.config.read();
    if let Some((host, port)) = &i.master {
        v.push(("role", "slave".into()));
        v.push(("master_host", host.clone()));
        v.push(("master_port", port.to_string()));
        let up = i.link == LinkState::Connected;
        v.push(("master_link_status", if up { "up" } else { "down" }.into()));
        let io = if i.last_io_ms == 0 {
            -1
        } else {
            (now.saturating_sub(i.last_io_ms) / 1000) as i64
        };
        v.push(("master_last_io_seconds_ago", io.to_string()));
        let syncing = matches!(i.link, LinkState::Transfer);
        v.push(("master_sync_in_progress", (syncing as u8).to_string()));
        v.push(("slave_read_repl_offset", r.offset().to_string()));
        v.push(("slave_repl_offset", r.offset().to_string()));
        if !up {
            v.push((
                "master_link_down_since_seconds",
                (now.saturating_sub(i.link_down_since_ms) / 1000).to_string(),
            ));
        }
        v.push((
            "slave_priority",
            cfg.get_int("replica-priority").to_string(),
        ));
        v.push((
            "slave_read_only",
            (cfg.get_bool("replica-read-only") as u8).to_string(),
        ));
        v.push(("replica_announced", "1".into()));
    } else {
        v.push(("role", "master".into()));
    }
    v.push(("connected_slaves", f.links.len().to_string()));
    for (n, l) in f.links.iter().enumerate() {
        let lag = now.saturating_sub(l.ack_time_ms) / 1000;
        let key: &'static str = SLAVE_KEYS.get(n).copied().unwrap_or("slaveN");
        v.push((
            key,
            format!(
                "ip={},port={},state={},offset={},lag={}",
                l.ip, l.port, l.state, l.ack_offset, lag
            ),
        ));
    }
    v.push(("master_failover_state", "no-failover".into()));
    v.push(("master_replid", i.replid.clone()));
    v.push(("master_replid2", i.replid2.clone()));
    v.push(("master_repl_offset", r.offset().to_string()));
    v.push(("second_repl_offset", i.second_offset.to_string()));
    v.push(("repl_backlog_active", (f.active as u8).to_string()));
    v.push(("repl_backlog_size", f.size.to_string()));
    let (first, hist) = if f.active {
        (f.first + 1, f.data.len())
    } else {
        (0, 0)
    };
    v.push(("repl_backlog_first_byte_offset", first.to_string()));
    v.push(("repl_backlog_histlen", hist.to_string()));
    v
}

const SLAVE_KEYS: [&str; 16] = [
    "slave0", "slave1", "slave2", "slave3", "slave4", "slave5", "slave6", "slave7", "slave8",
    "slave9", "slave10", "slave11", "slave12", "slave13", "slave14", "slave15",
];
