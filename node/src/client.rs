//! Client state: the shared handle other connections see (CLIENT LIST/KILL, pub/sub delivery)
//! and the private per-connection state (db, protocol, auth, MULTI queue, WATCHes, blocking).

use crate::db::{Waiter, WatchFlag};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Something pushed to a connection from elsewhere.
#[derive(Debug, Clone)]
pub enum Push {
    /// A pub/sub message on a channel.
    Message {
        /// Channel.
        channel: Bytes,
        /// Payload.
        data: Bytes,
    },
    /// A pub/sub message matched by a pattern.
    PMessage {
        /// Pattern.
        pattern: Bytes,
        /// Channel.
        channel: Bytes,
        /// Payload.
        data: Bytes,
    },
    /// A shard-channel message (`smessage`, SPUBLISH).
    SMessage {
        /// Shard channel.
        channel: Bytes,
        /// Payload.
        data: Bytes,
    },
    /// The server unsubscribed the client from a shard channel (its slot moved away):
    /// `sunsubscribe channel count`.
    SUnsubscribed {
        /// Shard channel.
        channel: Bytes,
        /// Shard channels the client still has.
        count: usize,
    },
    /// A MONITOR line (without the leading `+`).
    Monitor(String),
}

/// Capacity of a client's push queue (pub/sub output buffer limit, in messages).
pub const PUSH_QUEUE: usize = 1 << 16;

/// What other connections may see and do to a client.
pub struct ClientHandle {
    /// Unique id (CLIENT ID).
    pub id: u64,
    /// Peer address `ip:port`.
    pub addr: String,
    /// Local address `ip:port`.
    pub laddr: String,
    /// The socket's file descriptor (CLIENT LIST `fd=`).
    pub fd: i32,
    /// Connect time.
    pub created: Instant,
    /// Name (CLIENT SETNAME).
    pub name: Mutex<Option<Bytes>>,
    /// lib-name / lib-ver (CLIENT SETINFO).
    pub lib: Mutex<(String, String)>,
    /// Selected database.
    pub db: AtomicUsize,
    /// Last command name.
    pub last_cmd: Mutex<&'static str>,
    /// Last interaction (for idle), as millis since `created`.
    pub last_active_ms: AtomicU64,
    /// Channel subscriptions count.
    pub subs: AtomicUsize,
    /// Pattern subscriptions count.
    pub psubs: AtomicUsize,
    /// Shard channel subscriptions count (kept by the pub/sub registry).
    pub ssubs: AtomicUsize,
    /// Commands queued in MULTI (-1 when not in MULTI).
    pub multi: AtomicU64,
    /// Protocol version (2 or 3).
    pub resp: AtomicUsize,
    /// Flags letters for CLIENT LIST (`N`, `P` pubsub, `x` multi, `b` blocked, `O` monitor).
    pub flags: Mutex<String>,
    /// Pushes (pub/sub messages, MONITOR lines) to this client.
    pub push: mpsc::Sender<Push>,
    /// Set when the client must be disconnected (CLIENT KILL, output limit).
    pub killed: AtomicBool,
    /// Wakes the connection when killed.
    pub kill_notify: tokio::sync::Notify,
    /// When set, replies are not sent (CLIENT NO-EVICT is accepted; this is CLIENT REPLY OFF).
    pub no_evict: AtomicBool,
    /// CLIENT UNBLOCK request for a blocked client: 0 none, [`UNBLOCK_TIMEOUT`] or
    /// [`UNBLOCK_ERROR`]; set under the `flags` lock while the flags say blocked (`b`).
    pub unblock: std::sync::atomic::AtomicU8,
    /// Wakes a blocked client for CLIENT UNBLOCK.
    pub unblock_notify: tokio::sync::Notify,
}

/// CLIENT UNBLOCK ... TIMEOUT (the default): the blocked command answers as if it timed out.
pub const UNBLOCK_TIMEOUT: u8 = 1;
/// CLIENT UNBLOCK ... ERROR: the blocked command answers `-UNBLOCKED`.
pub const UNBLOCK_ERROR: u8 = 2;

impl ClientHandle {
    /// A handle for a new connection.
    pub fn new(
        id: u64,
        addr: String,
        laddr: String,
        fd: i32,
        push: mpsc::Sender<Push>,
    ) -> ClientHandle {
        ClientHandle {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            name: Mutex::new(None),
            lib: Mutex::new((String::new(), String::new())),
            db: AtomicUsize::new(0),
            last_cmd: Mutex::new("NULL"),
            last_active_ms: AtomicU64::new(0),
            subs: AtomicUsize::new(0),
            psubs: AtomicUsize::new(0),
            ssubs: AtomicUsize::new(0),
            multi: AtomicU64::new(u64::MAX),
            resp: AtomicUsize::new(2),
            flags: Mutex::new("N".into()),
            push,
            killed: AtomicBool::new(false),
            kill_notify: tokio::sync::Notify::new(),
            no_evict: AtomicBool::new(false),
            unblock: std::sync::atomic::AtomicU8::new(0),
            unblock_notify: tokio::sync::Notify::new(),
        }
    }

    /// CLIENT UNBLOCK: wakes this client if it is blocked on keys (`reason` is
    /// [`UNBLOCK_TIMEOUT`] or [`UNBLOCK_ERROR`]); false when it is not blocked.
    pub fn request_unblock(&self, reason: u8) -> bool {
        let flags = self.flags.lock();
        if flags.as_str() != "b" {
            return false;
        }
        self.unblock.store(reason, Ordering::Release);
        self.unblock_notify.notify_waiters();
        true
    }

    /// Asks the connection to close.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill_notify.notify_one();
    }

    /// The client name, or "".
    pub fn name(&self) -> String {
        self.name
            .lock()
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default()
    }

    /// One CLIENT LIST / CLIENT INFO line (without trailing newline).
    pub fn info_line(&self) -> String {
        let age = self.created.elapsed().as_secs();
        let idle_ms = (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        let multi = self.multi.load(Ordering::Relaxed);
        let multi = if multi == u64::MAX { -1 } else { multi as i64 };
        let lib = self.lib.lock().clone();
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=16384 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            self.name(),
            age,
            idle_ms / 1000,
            self.flags.lock(),
            self.db.load(Ordering::Relaxed),
            self.subs.load(Ordering::Relaxed),
            self.psubs.load(Ordering::Relaxed),
            self.ssubs.load(Ordering::Relaxed),
            multi,
            self.last_cmd.lock(),
            self.resp.load(Ordering::Relaxed),
            lib.0,
            lib.1,
        )
    }
}

/// CLIENT REPLY mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    /// Normal.
    On,
    /// No replies at all.
    Off,
    /// Skip the next command's reply.
    Skip,
    /// Skipping the current command's reply (set from Skip when the next command runs).
    Skipping,
}

/// Private state of one connection.
pub struct Client {
    /// Shared handle.
    pub handle: Arc<ClientHandle>,
    /// Selected database.
    pub db: usize,
    /// True after a successful AUTH (or when no password is required).
    pub authenticated: bool,
    /// Commands queued by MULTI (None when not in MULTI).
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command was rejected: EXEC must answer EXECABORT.
    pub multi_error: bool,
    /// Why EXEC itself was refused (OOM), for its EXECABORT reply.
    pub exec_abort: Option<&'static str>,
    /// Set when a WATCHed key was touched.
    pub watch_flag: WatchFlag,
    /// Watched (db, key) pairs.
    pub watched: Vec<(usize, Bytes)>,
    /// Subscribed channels.
    pub channels: BTreeSet<Bytes>,
    /// Subscribed patterns.
    pub patterns: BTreeSet<Bytes>,
    /// Blocking-command waiter (reused across blocks).
    pub waiter: Arc<Waiter>,
    /// CLIENT REPLY state.
    pub reply_mode: ReplyMode,
    /// MONITOR mode.
    pub monitor: bool,
    /// Set by QUIT: close after flushing.
    pub quit: bool,
    /// ASKING was sent (cluster mode; valid for one command).
    pub asking: bool,
    /// READONLY was sent (cluster mode).
    pub readonly: bool,
    /// Unix milliseconds, refreshed once per batch of requests read (expiry decisions).
    pub now_ms: u64,
    /// True for the replication link applying our master's stream (no replies, no routing
    /// or read-only checks, no propagation, expiry left to the master).
    pub from_master: bool,
    /// Replication offset after this client's last write (WAIT).
    pub woff: u64,
    /// A MULTI was propagated for the EXEC running now (its EXEC closes it).
    pub exec_multi_sent: bool,
    /// `REPLCONF listening-port` of a replica connection.
    pub repl_port: u16,
    /// `REPLCONF ip-address` of a replica connection.
    pub repl_ip: Option<String>,
}

impl Client {
    /// State for a new connection.
    pub fn new(handle: Arc<ClientHandle>, authenticated: bool) -> Client {
        Client {
            handle,
            db: 0,
            authenticated,
            multi: None,
            multi_error: false,
            exec_abort: None,
            watch_flag: Arc::default(),
            watched: Vec::new(),
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            waiter: Arc::default(),
            reply_mode: ReplyMode::On,
            monitor: false,
            quit: false,
            asking: false,
            readonly: false,
            now_ms: crate::db::now_ms(),
            from_master: false,
            woff: 0,
            exec_multi_sent: false,
            repl_port: 0,
            repl_ip: None,
        }
    }

    /// True in RESP2 subscriber mode (only (P|S)SUBSCRIBE/(P|S)UNSUBSCRIBE/PING/QUIT/RESET
    /// allowed): any channel, pattern or shard channel subscription.
    pub fn in_pubsub(&self) -> bool {
        !self.channels.is_empty()
            || !self.patterns.is_empty()
            || self.handle.ssubs.load(Ordering::Relaxed) > 0
    }
}
