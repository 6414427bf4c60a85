//! Redis Cluster mode: this node's view of the cluster (node table, slot owners, epochs,
//! open slots), the `cluster-config-file` (CLUSTER NODES format plus a `vars` line, written
//! atomically), the cluster state computation and the per-command slot routing
//! (MOVED / ASK / TRYAGAIN / CROSSSLOT / CLUSTERDOWN).
//!
//! Layout:
//! - this file: [`Cluster`] (shared, owned by the server) wrapping [`State`] (behind a mutex);
//! - [`bus`]: the node-to-node gossip protocol and its tasks (port + 10000);
//! - [`failure`]: PFAIL / FAIL detection from missed PONGs and failure reports;
//! - [`failover`]: replica elections, votes, manual failover and replica migration;
//! - [`migrate`]: the client side of MIGRATE (RESTORE-ASKING over cached connections).
//!
//! The data path avoids the state mutex: [`Cluster::route`] first consults a per-slot atomic
//! table ("mine and stable") plus an atomic "cluster ok" flag, refreshed whenever the slot
//! configuration changes; only open slots, foreign slots and errors take the lock.

pub mod bus;
mod confsave;
pub mod failover;
pub mod failure;
pub mod migrate;

use crate::client::Client;
use crate::db::{Keyspace, Locked};
use crate::log::Logger;
use bytes::Bytes;
use parking_lot::Mutex;
use slotgate_protocol::commands::{self, flags, CommandSpec, KeyPositions};
use slotgate_protocol::slot::{key_slot, SLOT_COUNT};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Node flag: this node.
pub const MYSELF: u16 = 16;
/// Node flag: a master.
pub const MASTER: u16 = 1;
/// Node flag: a replica.
pub const SLAVE: u16 = 2;
/// Node flag: possibly failing (no PONG within node timeout), our local opinion.
pub const PFAIL: u16 = 4;
/// Node flag: failing, agreed by a majority of masters.
pub const FAIL: u16 = 8;
/// Node flag: first contact in progress; the ID is a placeholder until the first PONG.
pub const HANDSHAKE: u16 = 32;
/// Node flag: the address is unknown.
pub const NOADDR: u16 = 64;
/// Node flag: send MEET (not PING) on the next connection.
pub const MEET: u16 = 128;
/// Node flag: a master that had replicas (or a promoted replica): a valid target for replica
/// migration once orphaned. Never persisted nor shown.
pub const MIGRATE_TO: u16 = 256;
/// Node flag: the replica never fails over.
pub const NOFAILOVER: u16 = 512;

/// How long a forgotten node is ignored in gossip (CLUSTER FORGET), in milliseconds.
pub const FORGET_BAN_MS: u64 = 60_000;

/// A node ID: 40 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 40]);

impl NodeId {
    /// A fresh random ID.
    pub fn random() -> NodeId {
        let s = crate::server::random_hex40();
        let mut id = [b'0'; 40];
        id.copy_from_slice(&s.as_bytes()[..40]);
        NodeId(id)
    }

    /// Parses 40 bytes (any content is kept verbatim; lookups compare bytes).
    pub fn parse(b: &[u8]) -> Option<NodeId> {
        let arr: [u8; 40] = b.try_into().ok()?;
        Some(NodeId(arr))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("????????????????????????????????????????")
    }

    /// The all-zero ID (used on the wire for "none").
    pub const ZERO: NodeId = NodeId([0u8; 40]);
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of hash slots (16384 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct SlotBitmap(pub [u64; SLOT_COUNT / 64]);

impl Default for SlotBitmap {
    fn default() -> Self {
        SlotBitmap([0; SLOT_COUNT / 64])
    }
}

impl fmt::Debug for SlotBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotBitmap({:?})", self.ranges())
    }
}

impl SlotBitmap {
    /// Size of the wire / file form in bytes.
    pub const BYTES: usize = SLOT_COUNT / 8;

    /// True when `slot` is in the set.
    pub fn get(&self, slot: u16) -> bool {
        let s = slot as usize % SLOT_COUNT;
        self.0[s / 64] & (1 << (s % 64)) != 0
    }

    /// Adds `slot`; returns true if it was absent.
    pub fn set(&mut self, slot: u16) -> bool {
        let s = slot as usize % SLOT_COUNT;
        let was = self.get(slot);
        self.0[s / 64] |= 1 << (s % 64);
        !was
    }

    /// Removes `slot`; returns true if it was present.
    pub fn clear(&mut self, slot: u16) -> bool {
        let s = slot as usize % SLOT_COUNT;
        let was = self.get(slot);
        self.0[s / 64] &= !(1 << (s % 64));
        was
    }

    /// Number of slots in the set.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no slot is set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The set as sorted inclusive ranges.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut start: Option<u16> = None;
        for (wi, &w) in self.0.iter().enumerate() {
            // Whole words of zeros or ones are handled without looking at single bits.
            if w == 0 {
                if let Some(b) = start.take() {
                    out.push((b, (wi * 64) as u16 - 1));
                }
                continue;
            }
            if w == u64::MAX {
                if start.is_none() {
                    start = Some((wi * 64) as u16);
                }
                continue;
            }
            for bit in 0..64 {
                let s = (wi * 64 + bit) as u16;
                match (w & (1 << bit) != 0, start) {
                    (true, None) => start = Some(s),
                    (false, Some(b)) => {
                        out.push((b, s - 1));
                        start = None;
                    }
                    _ => {}
                }
            }
        }
        if let Some(b) = start {
            out.push((b, SLOT_COUNT as u16 - 1));
        }
        out
    }

    /// Little-endian bit order bytes (bit `s % 8` of byte `s / 8`), as Redis's bitmaps.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::BYTES);
        for w in &self.0 {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }

    /// Inverse of [`SlotBitmap::to_bytes`]; None unless exactly [`SlotBitmap::BYTES`] long.
    pub fn from_bytes(b: &[u8]) -> Option<SlotBitmap> {
        if b.len() != Self::BYTES {
            return None;
        }
        let mut m = SlotBitmap::default();
        for (i, c) in b.chunks_exact(8).enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            m.0[i] = u64::from_le_bytes(w);
        }
        Some(m)
    }
}

/// One known node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node ID.
    pub id: NodeId,
    /// Announced or observed IP ("" until known, for myself).
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// Bus port.
    pub cport: u16,
    /// Flags (MASTER, SLAVE, PFAIL, ...).
    pub flags: u16,
    /// The master of a replica.
    pub master: Option<NodeId>,
    /// When our unanswered PING was sent (ms), 0 when none is pending.
    pub ping_sent: u64,
    /// Last PONG received (ms).
    pub pong_received: u64,
    /// Last time any bus data arrived from the node (ms).
    pub data_received: u64,
    /// When FAIL was set (ms).
    pub fail_time: u64,
    /// Config epoch of the node's slot claims.
    pub config_epoch: u64,
    /// Slots the node serves (as far as we know).
    pub slots: SlotBitmap,
    /// Replication offset announced by the node.
    pub repl_offset: u64,
    /// Failure reports from other masters: (reporter, last report time ms).
    pub fail_reports: Vec<(NodeId, u64)>,
    /// When this entry was created (ms): handshakes time out.
    pub ctime: u64,
    /// Outbound link: messages queued here are written to the node's bus port.
    pub link: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// True while the outbound link is connected.
    pub link_up: bool,
    /// When the outbound link was created (ms).
    pub link_ctime: u64,
    /// Generation of the current outbound link (a finished link task only clears its own).
    pub link_gen: u64,
    /// Number of inbound bus connections currently attributed to this node.
    pub inbound: u32,
    /// When I last voted for a replica of this master (ms).
    pub voted_time: u64,
    /// Since when this master has no working replica (ms, 0 = not orphaned).
    pub orphaned_time: u64,
}

impl Node {
    /// A node with no slots and no links.
    pub fn new(id: NodeId, flags: u16, now: u64) -> Node {
        Node {
            id,
            ip: String::new(),
            port: 0,
            cport: 0,
            flags,
            master: None,
            ping_sent: 0,
            pong_received: 0,
            data_received: 0,
            fail_time: 0,
            config_epoch: 0,
            slots: SlotBitmap::default(),
            repl_offset: 0,
            fail_reports: Vec::new(),
            ctime: now,
            link: None,
            link_up: false,
            link_ctime: 0,
            link_gen: 0,
            inbound: 0,
            voted_time: 0,
            orphaned_time: 0,
        }
    }

    /// True for masters.
    pub fn is_master(&self) -> bool {
        self.flags & MASTER != 0
    }

    /// True for replicas.
    pub fn is_slave(&self) -> bool {
        self.flags & SLAVE != 0
    }

    /// True when FAIL is set.
    pub fn failed(&self) -> bool {
        self.flags & FAIL != 0
    }

    /// True when PFAIL is set.
    pub fn pfailed(&self) -> bool {
        self.flags & PFAIL != 0
    }

    /// True during the handshake.
    pub fn in_handshake(&self) -> bool {
        self.flags & HANDSHAKE != 0
    }

    /// The flags field of CLUSTER NODES.
    pub fn flags_text(&self) -> String {
        let mut v: Vec<&str> = Vec::new();
        for (f, name) in [
            (MYSELF, "myself"),
            (MASTER, "master"),
            (SLAVE, "slave"),
            (PFAIL, "fail?"),
            (FAIL, "fail"),
            (HANDSHAKE, "handshake"),
            (NOADDR, "noaddr"),
            (NOFAILOVER, "nofailover"),
        ] {
            if self.flags & f != 0 {
                v.push(name);
            }
        }
        if v.is_empty() {
            "noflags".into()
        } else {
            v.join(",")
        }
    }
}

/// Counters shown by CLUSTER INFO (per message type, sent / received).
#[derive(Debug, Default, Clone)]
pub struct MsgStats {
    /// Sent, indexed by bus message type.
    pub sent: [u64; bus::MSG_TYPES],
    /// Received, indexed by bus message type.
    pub received: [u64; bus::MSG_TYPES],
}

/// The cluster state of this node (guarded by [`Cluster::state`]).
pub struct State {
    /// My node ID.
    pub myself: NodeId,
    /// Every known node, myself included.
    pub nodes: HashMap<NodeId, Node>,
    /// Slot owners.
    pub slots: Vec<Option<NodeId>>,
    /// Open slots we are migrating away: slot → destination.
    pub migrating: HashMap<u16, NodeId>,
    /// Open slots we are importing: slot → source.
    pub importing: HashMap<u16, NodeId>,
    /// Cluster current epoch.
    pub current_epoch: u64,
    /// Last epoch we voted in (failover; persisted).
    pub last_vote_epoch: u64,
    /// True when the cluster state is ok.
    pub ok: bool,
    /// Number of masters serving at least one slot (cluster_size).
    pub size: usize,
    /// Forgotten nodes and when the ban ends (ms).
    pub blacklist: HashMap<NodeId, u64>,
    /// Message counters.
    pub stats: MsgStats,
    /// Node timeout (ms).
    pub node_timeout: u64,
    /// cluster-require-full-coverage.
    pub full_coverage: bool,
    /// cluster-allow-reads-when-down.
    pub reads_when_down: bool,
    /// cluster-allow-replica-migration.
    pub allow_replica_migration: bool,
    /// Announced IP (cluster-announce-ip), "" to learn it from peers.
    pub announce_ip: String,
    /// The config must be written before replying / after processing.
    pub todo_save: bool,
    /// Slot ownership or open slots changed: the route table must be refreshed.
    pub todo_routes: bool,
    /// Messages to send: (destination or None for every connected node, encoded message).
    pub outbox: Vec<(Option<NodeId>, Vec<u8>)>,
    /// When this state was created (ms); the node waits before declaring the state ok.
    pub start_time: u64,
    /// Last time a majority of masters was unreachable (ms).
    pub among_minority_time: u64,
    /// Messages to log after the lock is released (level warning when true).
    pub log: Vec<(bool, String)>,
    /// Elections, votes, manual failover (see [`failover`]).
    pub fo: failover::Failover,
    /// Broadcast a PONG to every node after the next save (configuration change).
    pub todo_broadcast_pong: bool,
    /// A node became PFAIL: PING the other masters now to spread the failure report.
    pub todo_ping_masters: bool,
}

/// Shared cluster-mode state of the server.
pub struct Cluster {
    /// The state (node table, slots, epochs).
    pub state: Mutex<State>,
    /// Per slot: 1 when the slot is served by myself and not open (fast path).
    route: Box<[AtomicU8]>,
    /// Mirrors `State::ok` for the fast path.
    ok: AtomicBool,
    /// Absolute path of the cluster config file.
    pub conf_path: PathBuf,
    /// Bytes written to / read from the bus (for idle-traffic measurement).
    pub bus_bytes_out: AtomicU64,
    /// Bytes read from the bus.
    pub bus_bytes_in: AtomicU64,
    /// Wakes the bus cron early (after MEET, SETSLOT...).
    pub wake: tokio::sync::Notify,
    /// Digest of the epochs at the last save (an epoch change forces an fsync).
    saved_epochs: AtomicU64,
    /// The fast-path slot set last written to `route`.
    route_cache: Mutex<SlotBitmap>,
}

/// Where a command must go instead of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot ip:port`
    Moved(u16, String),
    /// `-ASK slot ip:port`
    Ask(u16, String),
    /// Any other cluster error (full text).
    Error(&'static str),
}

impl Redirect {
    /// The error reply text.
    pub fn text(&self) -> String {
        match self {
            Redirect::Moved(s, a) => format!("MOVED {s} {a}"),
            Redirect::Ask(s, a) => format!("ASK {s} {a}"),
            Redirect::Error(e) => (*e).to_string(),
        }
    }
}

/// `-CROSSSLOT`
pub const ERR_CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// `-CLUSTERDOWN` for an unassigned slot.
pub const ERR_UNBOUND: &str = "CLUSTERDOWN Hash slot not served";
/// `-CLUSTERDOWN` when the cluster state is fail.
pub const ERR_DOWN: &str = "CLUSTERDOWN The cluster is down";
/// `-CLUSTERDOWN` for writes when reads are allowed while down.
pub const ERR_DOWN_RO: &str = "CLUSTERDOWN The cluster is down and only accepts read commands";
/// `-TRYAGAIN`
pub const ERR_TRYAGAIN: &str = "TRYAGAIN Multiple keys request during rehashing of slot";

/// Now in unix milliseconds.
pub fn now_ms() -> u64 {
    crate::db::now_ms()
}

impl State {
    /// A fresh state with a new random identity.
    pub fn new(now: u64) -> State {
        let me = NodeId::random();
        let mut nodes = HashMap::new();
        nodes.insert(me, Node::new(me, MYSELF | MASTER, now));
        State {
            myself: me,
            nodes,
            slots: vec![None; SLOT_COUNT],
            migrating: HashMap::new(),
            importing: HashMap::new(),
            current_epoch: 0,
            last_vote_epoch: 0,
            ok: false,
            size: 0,
            blacklist: HashMap::new(),
            stats: MsgStats::default(),
            node_timeout: 15000,
            full_coverage: true,
            reads_when_down: false,
            allow_replica_migration: true,
            announce_ip: String::new(),
            todo_save: false,
            todo_routes: true,
            outbox: Vec::new(),
            start_time: now,
            among_minority_time: 0,
            log: Vec::new(),
            fo: failover::Failover::default(),
            todo_broadcast_pong: false,
            todo_ping_masters: false,
        }
    }

    /// My node entry.
    pub fn me(&self) -> &Node {
        // The myself entry is never removed (FORGET refuses it, RESET keeps it).
        &self.nodes[&self.myself]
    }

    /// My node entry, mutable.
    pub fn me_mut(&mut self) -> &mut Node {
        let id = self.myself;
        self.nodes
            .entry(id)
            .or_insert_with(|| Node::new(id, MYSELF | MASTER, 0))
    }

    /// Looks a node up by its ID text.
    pub fn lookup(&self, name: &[u8]) -> Option<NodeId> {
        let id = NodeId::parse(name)?;
        self.nodes.contains_key(&id).then_some(id)
    }

    /// True when I am a replica.
    pub fn i_am_slave(&self) -> bool {
        self.me().is_slave()
    }

    /// My master (when a replica).
    pub fn my_master(&self) -> Option<NodeId> {
        if self.i_am_slave() {
            self.me().master
        } else {
            None
        }
    }

    /// Assigns `slot` to `owner` (removing it from any previous owner).
    pub fn add_slot(&mut self, slot: u16, owner: NodeId) {
        self.del_slot(slot);
        // A master getting its first slot while other masters have replicas becomes a valid
        // replica migration target (as Redis, issue 3043).
        let first = self.nodes.get(&owner).is_some_and(|n| n.slots.is_empty());
        let replicas_exist = first && self.nodes.values().any(|n| n.is_slave());
        if let Some(n) = self.nodes.get_mut(&owner) {
            n.slots.set(slot);
            if replicas_exist {
                n.flags |= MIGRATE_TO;
            }
        }
        self.slots[slot as usize] = Some(owner);
        self.todo_routes = true;
    }

    /// Unassigns `slot`.
    pub fn del_slot(&mut self, slot: u16) {
        if let Some(prev) = self.slots[slot as usize].take() {
            if let Some(n) = self.nodes.get_mut(&prev) {
                n.slots.clear(slot);
            }
        }
        self.todo_routes = true;
    }

    /// Highest epoch known (current epoch or any node's config epoch).
    pub fn max_epoch(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| n.config_epoch)
            .max()
            .unwrap_or(0)
            .max(self.current_epoch)
    }

    /// CLUSTER BUMPEPOCH / after importing a slot: take a new epoch without agreement unless
    /// mine is already the unique maximum. Returns true when bumped.
    pub fn bump_epoch_without_consensus(&mut self) -> bool {
        let max = self.max_epoch();
        let mine = self.me().config_epoch;
        if mine == 0 || mine != max {
            self.current_epoch += 1;
            let e = self.current_epoch;
            self.me_mut().config_epoch = e;
            self.todo_save = true;
            self.log.push((true, format!("New configEpoch set to {e}")));
            true
        } else {
            false
        }
    }

    /// Adds a node in handshake state (CLUSTER MEET or an unknown node learned by gossip).
    /// Returns false when a handshake with that address is already in progress.
    pub fn start_handshake(
        &mut self,
        ip: &str,
        port: u16,
        cport: u16,
        meet: bool,
        now: u64,
    ) -> bool {
        if self.nodes.values().any(|n| {
            n.in_handshake() && n.ip.eq_ignore_ascii_case(ip) && n.port == port && n.cport == cport
        }) {
            return false;
        }
        let id = NodeId::random();
        let mut n = Node::new(id, HANDSHAKE | if meet { MEET } else { 0 }, now);
        n.ip = ip.to_string();
        n.port = port;
        n.cport = cport;
        self.nodes.insert(id, n);
        true
    }

    /// Removes a node and everything pointing at it.
    pub fn del_node(&mut self, id: NodeId) {
        for s in 0..SLOT_COUNT {
            if self.slots[s] == Some(id) {
                self.slots[s] = None;
                self.todo_routes = true;
            }
        }
        self.migrating.retain(|_, v| *v != id);
        self.importing.retain(|_, v| *v != id);
        for n in self.nodes.values_mut() {
            n.fail_reports.retain(|(r, _)| *r != id);
            if n.master == Some(id) && n.id != self.myself {
                n.master = None;
            }
        }
        self.nodes.remove(&id);
        self.todo_routes = true;
    }

    /// Replaces a handshake placeholder ID by the node's real ID.
    pub fn rename_node(&mut self, old: NodeId, new: NodeId) {
        if let Some(mut n) = self.nodes.remove(&old) {
            n.id = new;
            n.flags &= !(HANDSHAKE | MEET);
            self.nodes.insert(new, n);
            self.todo_save = true;
        }
    }

    /// Makes myself a replica of `master` (CLUSTER REPLICATE, or losing all slots).
    pub fn set_my_master(&mut self, master: NodeId) {
        if self.myself == master {
            return;
        }
        let me = self.me_mut();
        if me.is_master() {
            me.flags &= !MASTER;
            me.flags |= SLAVE;
        }
        me.flags &= !MIGRATE_TO;
        me.master = Some(master);
        self.migrating.clear();
        self.importing.clear();
        self.reset_manual_failover();
        self.todo_routes = true;
        self.todo_save = true;
    }

    /// Makes `id` a master (clearing its replica role).
    pub fn set_node_as_master(&mut self, id: NodeId) {
        let myself = self.myself;
        if let Some(n) = self.nodes.get_mut(&id) {
            // A promoted replica takes over a master that had replicas.
            if n.is_slave() && n.master.is_some() && id != myself {
                n.flags |= MIGRATE_TO;
            }
            n.flags &= !SLAVE;
            n.flags |= MASTER;
            n.master = None;
            self.todo_save = true;
        }
    }

    /// The replication upstream this node should have according to the cluster state:
    /// `Some(Some((ip, port)))` of my master when I am a replica and its address is known,
    /// `Some(None)` when I am a master (with or without slots), `None` when I am a replica
    /// whose master's address is not known yet (keep replicating as now).
    pub fn desired_upstream(&self) -> Option<Option<(String, u16)>> {
        let me = self.me();
        if !me.is_slave() {
            return Some(None);
        }
        let m = me.master.and_then(|m| self.nodes.get(&m))?;
        if m.flags & NOADDR != 0 || m.ip.is_empty() || m.port == 0 {
            return None;
        }
        Some(Some((m.ip.clone(), m.port)))
    }

    /// Replicas of `master`.
    pub fn replicas_of(&self, master: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_slave() && n.master == Some(master))
            .map(|n| n.id)
            .collect();
        v.sort();
        v
    }

    /// Recomputes `ok` and `size` as Redis's clusterUpdateState does.
    pub fn update_state(&mut self, now: u64) {
        // A restarted master waits a little before accepting writes, to learn newer configs.
        if self.me().is_master() && !self.ok && now.saturating_sub(self.start_time) < 2000 {
            return;
        }
        let mut new_ok = true;
        if self.full_coverage {
            // Every slot is in exactly one node's bitmap: count the slots of healthy owners.
            let covered: usize = self
                .nodes
                .values()
                .filter(|n| !n.failed())
                .map(|n| n.slots.count())
                .sum();
            if covered < SLOT_COUNT {
                new_ok = false;
            }
        }
        let mut size = 0;
        let mut reachable = 0;
        for n in self.nodes.values() {
            if n.is_master() && !n.slots.is_empty() {
                size += 1;
                if n.flags & (FAIL | PFAIL) == 0 {
                    reachable += 1;
                }
            }
        }
        self.size = size;
        let quorum = size / 2 + 1;
        if reachable < quorum {
            new_ok = false;
            self.among_minority_time = now;
        }
        if new_ok != self.ok {
            // After being in the minority, wait before accepting writes again.
            let rejoin = self.node_timeout.clamp(500, 5000);
            if new_ok
                && self.me().is_master()
                && self.among_minority_time != 0
                && now.saturating_sub(self.among_minority_time) < rejoin
            {
                return;
            }
            self.ok = new_ok;
            self.log.push((
                true,
                format!(
                    "Cluster state changed: {}",
                    if new_ok { "ok" } else { "fail" }
                ),
            ));
        }
    }

    /// One CLUSTER NODES line (without the newline). Open slots are shown on myself only.
    pub fn node_line(&self, n: &Node) -> String {
        let mut s = String::with_capacity(128);
        let master = match n.master {
            Some(m) if n.is_slave() => m.to_string(),
            _ => "-".into(),
        };
        let epoch = if n.is_slave() {
            n.master
                .and_then(|m| self.nodes.get(&m))
                .map(|m| m.config_epoch)
                .unwrap_or(n.config_epoch)
        } else {
            n.config_epoch
        };
        let connected = n.flags & MYSELF != 0 || n.link_up;
        s.push_str(&format!(
            "{} {}:{}@{} {} {} {} {} {} {}",
            n.id,
            n.ip,
            n.port,
            n.cport,
            n.flags_text(),
            master,
            n.ping_sent,
            n.pong_received,
            epoch,
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        ));
        for (a, b) in n.slots.ranges() {
            if a == b {
                s.push_str(&format!(" {a}"));
            } else {
                s.push_str(&format!(" {a}-{b}"));
            }
        }
        if n.flags & MYSELF != 0 {
            let mut mig: Vec<_> = self.migrating.iter().collect();
            mig.sort();
            for (slot, dst) in mig {
                s.push_str(&format!(" [{slot}->-{dst}]"));
            }
            let mut imp: Vec<_> = self.importing.iter().collect();
            imp.sort();
            for (slot, src) in imp {
                s.push_str(&format!(" [{slot}-<-{src}]"));
            }
        }
        s
    }

    /// CLUSTER NODES text (every line ends in `\n`).
    pub fn nodes_text(&self) -> String {
        let mut ids: Vec<&NodeId> = self.nodes.keys().collect();
        ids.sort();
        let mut out = String::new();
        for id in ids {
            let n = &self.nodes[id];
            out.push_str(&self.node_line(n));
            out.push('\n');
        }
        out
    }

    /// The config file content.
    pub fn config_text(&self) -> String {
        let mut out = self.nodes_text();
        out.push_str(&format!(
            "vars currentEpoch {} lastVoteEpoch {}\n",
            self.current_epoch, self.last_vote_epoch
        ));
        out
    }

    /// Loads a config file's content. Errors describe the bad line.
    pub fn load_config(&mut self, text: &str, now: u64) -> Result<(), String> {
        let mut myself: Option<NodeId> = None;
        let mut nodes: HashMap<NodeId, Node> = HashMap::new();
        let mut slots: Vec<Option<NodeId>> = vec![None; SLOT_COUNT];
        let mut migrating = HashMap::new();
        let mut importing = HashMap::new();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.is_empty() {
                continue;
            }
            if w[0] == "vars" {
                let mut i = 1;
                while i + 1 < w.len() {
                    let v: u64 = w[i + 1].parse().map_err(|_| line.to_string())?;
                    match w[i] {
                        "currentEpoch" => self.current_epoch = v,
                        "lastVoteEpoch" => self.last_vote_epoch = v,
                        _ => {}
                    }
                    i += 2;
                }
                continue;
            }
            if w.len() < 8 {
                return Err(line.to_string());
            }
            let id = NodeId::parse(w[0].as_bytes()).ok_or_else(|| line.to_string())?;
            let mut n = Node::new(id, 0, now);
            let addr = w[1].split(',').next().unwrap_or("");
            let (hostport, cport) = addr.split_once('@').ok_or_else(|| line.to_string())?;
            let (ip, port) = hostport.rsplit_once(':').ok_or_else(|| line.to_string())?;
            n.ip = ip.to_string();
            n.port = port.parse().map_err(|_| line.to_string())?;
            n.cport = cport.parse().map_err(|_| line.to_string())?;
            for f in w[2].split(',') {
                n.flags |= match f {
                    "myself" => MYSELF,
                    "master" => MASTER,
                    "slave" => SLAVE,
                    "fail?" => PFAIL,
                    "fail" => FAIL,
                    "handshake" => HANDSHAKE,
                    "noaddr" => NOADDR,
                    "nofailover" => NOFAILOVER,
                    _ => 0,
                };
            }
            if n.flags & MYSELF != 0 {
                myself = Some(id);
            }
            if w[3] != "-" {
                n.master = Some(NodeId::parse(w[3].as_bytes()).ok_or_else(|| line.to_string())?);
            }
            n.pong_received = now;
            n.config_epoch = w[6].parse().map_err(|_| line.to_string())?;
            for s in &w[8..] {
                if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                    if let Some((slot, dst)) = inner.split_once("->-") {
                        let slot: u16 = slot.parse().map_err(|_| line.to_string())?;
                        let dst = NodeId::parse(dst.as_bytes()).ok_or_else(|| line.to_string())?;
                        migrating.insert(slot, dst);
                    } else if let Some((slot, src)) = inner.split_once("-<-") {
                        let slot: u16 = slot.parse().map_err(|_| line.to_string())?;
                        let src = NodeId::parse(src.as_bytes()).ok_or_else(|| line.to_string())?;
                        importing.insert(slot, src);
                    }
                    continue;
                }
                let (a, b) = match s.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (*s, *s),
                };
                let a: usize = a.parse().map_err(|_| line.to_string())?;
                let b: usize = b.parse().map_err(|_| line.to_string())?;
                if a > b || b >= SLOT_COUNT {
                    return Err(line.to_string());
                }
                for (slot, owner) in slots.iter_mut().enumerate().take(b + 1).skip(a) {
                    n.slots.set(slot as u16);
                    *owner = Some(id);
                }
            }
            nodes.insert(id, n);
        }
        let me = myself.ok_or_else(|| "no myself line".to_string())?;
        // Placeholder handshake nodes are not worth keeping across restarts.
        nodes.retain(|_, n| !n.in_handshake());
        if let Some(n) = nodes.get_mut(&me) {
            n.pong_received = 0;
            n.flags &= !(PFAIL | FAIL);
        }
        self.myself = me;
        self.nodes = nodes;
        self.slots = slots;
        self.migrating = migrating;
        self.importing = importing;
        self.todo_routes = true;
        Ok(())
    }

    /// Keys-aware routing decision for one request (Redis's getNodeByQuery). `exists`
    /// answers whether a key is present locally (checked only for open slots).
    #[allow(clippy::too_many_arguments)]
    pub fn route_slow(
        &self,
        slot: u16,
        multiple_keys: bool,
        missing_keys: usize,
        is_write: bool,
        is_migrate: bool,
        asking: bool,
        readonly: bool,
    ) -> Result<(), Redirect> {
        let Some(owner) = self.slots[slot as usize] else {
            return Err(Redirect::Error(ERR_UNBOUND));
        };
        let mine = owner == self.myself;
        let migrating = mine && self.migrating.contains_key(&slot);
        let importing = !migrating && self.importing.contains_key(&slot);
        if !self.ok {
            if !self.reads_when_down {
                return Err(Redirect::Error(ERR_DOWN));
            } else if is_write {
                return Err(Redirect::Error(ERR_DOWN_RO));
            }
        }
        if (migrating || importing) && is_migrate {
            return Ok(());
        }
        if migrating && missing_keys > 0 {
            if multiple_keys {
                return Err(Redirect::Error(ERR_TRYAGAIN));
            }
            let dst = self.migrating.get(&slot).copied().unwrap_or(owner);
            return Err(Redirect::Ask(slot, self.endpoint(dst)));
        }
        if importing && asking {
            if multiple_keys && missing_keys > 0 {
                return Err(Redirect::Error(ERR_TRYAGAIN));
            }
            return Ok(());
        }
        if readonly && !is_write && self.i_am_slave() && self.me().master == Some(owner) {
            return Ok(());
        }
        if !mine {
            return Err(Redirect::Moved(slot, self.endpoint(owner)));
        }
        Ok(())
    }

    /// `ip:port` of a node as redirects show it.
    pub fn endpoint(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(n) => format!("{}:{}", n.ip, n.port),
            None => ":0".into(),
        }
    }

    /// The CLUSTER INFO text.
    pub fn info_text(&self) -> String {
        let mut assigned = 0;
        let mut ok = 0;
        let mut pfail = 0;
        let mut fail = 0;
        for n in self.nodes.values() {
            let c = n.slots.count();
            assigned += c;
            if n.failed() {
                fail += c;
            } else if n.pfailed() {
                pfail += c;
            } else {
                ok += c;
            }
        }
        let my_epoch = match self.my_master().and_then(|m| self.nodes.get(&m)) {
            Some(m) => m.config_epoch,
            None => self.me().config_epoch,
        };
        let mut s = String::new();
        let mut l = |k: &str, v: String| {
            s.push_str(k);
            s.push(':');
            s.push_str(&v);
            s.push_str("\r\n");
        };
        l("cluster_state", if self.ok { "ok" } else { "fail" }.into());
        l("cluster_slots_assigned", assigned.to_string());
        l("cluster_slots_ok", ok.to_string());
        l("cluster_slots_pfail", pfail.to_string());
        l("cluster_slots_fail", fail.to_string());
        l("cluster_known_nodes", self.nodes.len().to_string());
        l("cluster_size", self.size.to_string());
        l("cluster_current_epoch", self.current_epoch.to_string());
        l("cluster_my_epoch", my_epoch.to_string());
        let mut total = 0;
        for (i, name) in bus::MSG_NAMES.iter().enumerate() {
            if self.stats.sent[i] > 0 {
                l(
                    &format!("cluster_stats_messages_{name}_sent"),
                    self.stats.sent[i].to_string(),
                );
                total += self.stats.sent[i];
            }
        }
        l("cluster_stats_messages_sent", total.to_string());
        let mut total = 0;
        for (i, name) in bus::MSG_NAMES.iter().enumerate() {
            if self.stats.received[i] > 0 {
                l(
                    &format!("cluster_stats_messages_{name}_received"),
                    self.stats.received[i].to_string(),
                );
                total += self.stats.received[i];
            }
        }
        l("cluster_stats_messages_received", total.to_string());
        l("total_cluster_links_buffer_limit_exceeded", "0".into());
        s
    }
}

/// INFO's `# Cluster` section fields, for the INFO implementation: `[("cluster_enabled", "1")]`
/// when cluster mode is on, `[("cluster_enabled", "0")]` otherwise.
pub fn info_fields(server: &crate::server::Server) -> Vec<(&'static str, String)> {
    let on = server.cluster.is_some();
    vec![("cluster_enabled", if on { "1" } else { "0" }.to_string())]
}

pub use confsave::write_atomic;

impl Cluster {
    /// Builds the cluster state from the configuration: loads `cluster-config-file` (relative
    /// to `dir`) or creates a new identity, logging as redis-server does.
    pub fn new(config: &crate::config::Config, log: &Logger) -> anyhow::Result<Cluster> {
        let now = now_ms();
        let file = config.get("cluster-config-file");
        let dir = config.get("dir");
        let mut path = PathBuf::from(file);
        if path.is_relative() && !dir.is_empty() {
            path = Path::new(dir).join(path);
        }
        let mut st = State::new(now);
        st.node_timeout = config.get_int("cluster-node-timeout").max(1) as u64;
        st.full_coverage = config.get_bool("cluster-require-full-coverage");
        st.reads_when_down = config.get_bool("cluster-allow-reads-when-down");
        st.allow_replica_migration = config.get_bool("cluster-allow-replica-migration");
        st.announce_ip = config.get("cluster-announce-ip").to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                if let Err(line) = st.load_config(&text, now) {
                    log.warning(&format!(
                        "Unrecoverable error: corrupted cluster config file \"{line}\"."
                    ));
                    anyhow::bail!("corrupted cluster config file {}", path.display());
                }
                log.notice(&format!("Node configuration loaded, I'm {}", st.myself));
            }
            _ => {
                log.notice(&format!(
                    "No cluster configuration found, I'm {}",
                    st.myself
                ));
                st.todo_save = true;
            }
        }
        if !st.announce_ip.is_empty() {
            let ip = st.announce_ip.clone();
            st.me_mut().ip = ip;
        }
        let c = Cluster {
            state: Mutex::new(st),
            route: (0..SLOT_COUNT).map(|_| AtomicU8::new(0)).collect(),
            ok: AtomicBool::new(false),
            conf_path: path,
            bus_bytes_out: AtomicU64::new(0),
            bus_bytes_in: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            saved_epochs: AtomicU64::new(u64::MAX),
            route_cache: Mutex::new(SlotBitmap::default()),
        };
        {
            let mut st = c.state.lock();
            c.commit(&mut st, log);
        }
        Ok(c)
    }

    /// After any change: refresh the route table, recompute the state, save the config if
    /// needed, and flush queued log lines. Call with the state locked.
    pub fn commit(&self, st: &mut State, log: &Logger) {
        let now = now_ms();
        st.update_state(now);
        self.ok.store(st.ok, Ordering::Release);
        if st.todo_routes {
            st.todo_routes = false;
            // Fast-path slots: mine and not open. Only changed words touch the atomics.
            let mut fast = st.me().slots.clone();
            for s in st.migrating.keys().chain(st.importing.keys()) {
                fast.clear(*s);
            }
            let mut prev = self.route_cache.lock();
            for (wi, (&new, old)) in fast.0.iter().zip(prev.0.iter_mut()).enumerate() {
                if new == *old {
                    continue;
                }
                for bit in 0..64 {
                    if (new ^ *old) & (1 << bit) != 0 {
                        let v = (new >> bit) & 1;
                        self.route[wi * 64 + bit].store(v as u8, Ordering::Release);
                    }
                }
                *old = new;
            }
        }
        if st.todo_save {
            st.todo_save = false;
            if let Err(e) = self.save(st) {
                log.warning(&format!("Could not save the cluster config file: {e}"));
            }
        }
        // Messages that depend on the saved configuration (votes, new roles) leave now.
        if st.todo_broadcast_pong {
            st.todo_broadcast_pong = false;
            st.broadcast_pong();
        }
        for (to, msg) in std::mem::take(&mut st.outbox) {
            for n in st.nodes.values() {
                if n.flags & (MYSELF | HANDSHAKE) != 0 || to.is_some_and(|t| t != n.id) {
                    continue;
                }
                if let Some(l) = &n.link {
                    let _ = l.try_send(msg.clone());
                }
            }
        }
        for (warn, msg) in st.log.drain(..) {
            if warn {
                log.warning(&msg);
            } else {
                log.notice(&msg);
            }
        }
    }

    /// Writes the config file now; fsyncs when an epoch changed since the last save (epochs
    /// must never go back after a crash; other changes are re-learned from gossip).
    pub fn save(&self, st: &State) -> std::io::Result<()> {
        let epochs = st.current_epoch
            ^ st.last_vote_epoch.rotate_left(21)
            ^ st.me().config_epoch.rotate_left(42);
        let fsync = self.saved_epochs.swap(epochs, Ordering::AcqRel) != epochs;
        write_atomic(&self.conf_path, &st.config_text(), fsync)
    }

    /// The slot check of the data path. `Ok(())` to run the command here, or the redirect /
    /// error to reply. Also consumes the one-shot ASKING flag. An EXEC is checked against its
    /// queued commands; when it is rejected the transaction is discarded.
    pub fn route(
        &self,
        ks: &Keyspace,
        client: &mut Client,
        top: &CommandSpec,
        spec: &CommandSpec,
        args: &[Bytes],
    ) -> Result<(), Redirect> {
        let asking = client.asking;
        if top.name != "asking" && client.multi.is_none() {
            client.asking = false;
        }
        if top.name == "exec" {
            let Some(queue) = client.multi.as_ref() else {
                return Ok(());
            };
            let r = self.route_many(ks, client, queue.iter().map(|a| a.as_slice()), asking);
            if r.is_err() {
                client.multi = None;
                client.multi_error = false;
                client
                    .handle
                    .multi
                    .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
                client.handle.flags.lock().replace_range(.., "N");
            }
            return r;
        }
        let mut kp = KeyPositions::new();
        if commands::key_positions(spec, args, &mut kp).is_err() || kp.is_empty() {
            return Ok(());
        }
        // Fast path: every key in one slot that is mine, stable, and the cluster is ok.
        let slot = key_slot(&args[kp[0]]);
        let mut same = true;
        for &p in kp.iter().skip(1) {
            if key_slot(&args[p]) != slot {
                same = false;
                break;
            }
        }
        if same
            && self.route[slot as usize].load(Ordering::Acquire) == 1
            && self.ok.load(Ordering::Acquire)
        {
            return Ok(());
        }
        self.route_many(ks, client, std::iter::once(args), asking)
    }

    fn route_many<'a>(
        &self,
        ks: &Keyspace,
        client: &Client,
        cmds: impl Iterator<Item = &'a [Bytes]>,
        asking: bool,
    ) -> Result<(), Redirect> {
        let mut slot: Option<u16> = None;
        let mut first_key: Option<&[u8]> = None;
        let mut multiple = false;
        let mut is_write = false;
        let mut is_migrate = false;
        let mut cmd_asking = false;
        // Shard pub/sub (SSUBSCRIBE/SUNSUBSCRIBE/SPUBLISH): served by replicas of the owner
        // too, and by the owner while the slot migrates (channels are not keys), as Redis.
        let mut pubsub = false;
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut st = self.state.lock();
        for args in cmds {
            let Some(spec) = commands::resolve(args) else {
                continue;
            };
            let mut kp = KeyPositions::new();
            if commands::key_positions(spec, args, &mut kp).is_err() {
                continue;
            }
            is_write |= spec.has_flag(flags::WRITE);
            is_migrate |= spec.name == "migrate";
            pubsub |= spec.has_flag(flags::PUBSUB);
            cmd_asking |= spec.has_flag(flags::ASKING);
            for &p in kp.iter() {
                let k: &[u8] = &args[p];
                let s = key_slot(k);
                match slot {
                    None => {
                        if st.slots[s as usize].is_none() {
                            return Err(Redirect::Error(ERR_UNBOUND));
                        }
                        slot = Some(s);
                        first_key = Some(k);
                    }
                    Some(s0) => {
                        if s0 != s {
                            return Err(Redirect::Error(ERR_CROSSSLOT));
                        }
                        if !multiple && first_key != Some(k) {
                            multiple = true;
                        }
                    }
                }
                keys.push(k);
            }
        }
        let Some(slot) = slot else {
            return Ok(());
        };
        let open =
            !pubsub && (st.migrating.contains_key(&slot) || st.importing.contains_key(&slot));
        let mut missing = 0;
        if open {
            // Lock order is always keyspace shards before the cluster state (EXEC holds every
            // shard while running CLUSTER subcommands), so release the state meanwhile.
            drop(st);
            let mut l = Locked::new(ks, 0, now_ms());
            l.lock_keys(keys.iter());
            for k in &keys {
                if !l.exists(k) {
                    missing += 1;
                }
            }
            drop(l);
            st = self.state.lock();
        }
        st.route_slow(
            slot,
            multiple,
            missing,
            is_write,
            is_migrate,
            asking || cmd_asking,
            client.readonly || pubsub,
        )
    }
}

/// Keeps the shared cluster handle type name short at call sites.
pub type SharedCluster = Arc<Cluster>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_basics_and_ranges() {
        let mut b = SlotBitmap::default();
        assert!(b.is_empty());
        assert!(b.set(0));
        assert!(!b.set(0));
        for s in 5..=10 {
            b.set(s);
        }
        b.set(16383);
        assert_eq!(b.count(), 8);
        assert_eq!(b.ranges(), vec![(0, 0), (5, 10), (16383, 16383)]);
        assert!(b.clear(7));
        assert!(!b.clear(7));
        assert_eq!(b.ranges(), vec![(0, 0), (5, 6), (8, 10), (16383, 16383)]);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), SlotBitmap::BYTES);
        assert_eq!(SlotBitmap::from_bytes(&bytes), Some(b.clone()));
        assert_eq!(SlotBitmap::from_bytes(&bytes[1..]), None);
        // Redis bit order: slot s is bit s%8 of byte s/8.
        assert_eq!(bytes[0], 0b0110_0001);
        assert_eq!(bytes[2047], 0x80);
    }

    #[test]
    fn config_roundtrip() {
        let mut st = State::new(1);
        let me = st.myself;
        st.me_mut().ip = "127.0.0.1".into();
        st.me_mut().port = 7000;
        st.me_mut().cport = 17000;
        st.me_mut().config_epoch = 3;
        st.current_epoch = 6;
        st.last_vote_epoch = 2;
        for s in 0..=5460 {
            st.add_slot(s, me);
        }
        let other = NodeId::random();
        let mut n = Node::new(other, MASTER, 1);
        n.ip = "127.0.0.1".into();
        n.port = 7001;
        n.cport = 17001;
        n.config_epoch = 2;
        st.nodes.insert(other, n);
        st.add_slot(5461, other);
        st.migrating.insert(100, other);
        let text = st.config_text();
        assert!(text.ends_with("vars currentEpoch 6 lastVoteEpoch 2\n"));
        assert!(text.contains(&format!(
            "{me} 127.0.0.1:7000@17000 myself,master - 0 0 3 connected 0-5460 [100->-{other}]\n"
        )));
        let mut st2 = State::new(1);
        st2.load_config(&text, 5).unwrap();
        assert_eq!(st2.myself, me);
        assert_eq!(st2.current_epoch, 6);
        assert_eq!(st2.last_vote_epoch, 2);
        assert_eq!(st2.slots[5461], Some(other));
        assert_eq!(st2.slots[0], Some(me));
        assert_eq!(st2.migrating.get(&100), Some(&other));
        assert_eq!(st2.nodes[&other].config_epoch, 2);
        assert!(st2.load_config("garbage line\n", 5).is_err());
        assert!(st2.load_config("vars currentEpoch x\n", 5).is_err());
    }

    #[test]
    fn epoch_rules() {
        let mut st = State::new(1);
        // Epoch 0: bump takes a new one.
        assert!(st.bump_epoch_without_consensus());
        assert_eq!(st.me().config_epoch, 1);
        assert_eq!(st.current_epoch, 1);
        // Already the unique maximum: STILL.
        assert!(!st.bump_epoch_without_consensus());
        let other = NodeId::random();
        let mut n = Node::new(other, MASTER, 1);
        n.config_epoch = 5;
        st.nodes.insert(other, n);
        assert!(st.bump_epoch_without_consensus());
        assert_eq!(st.current_epoch, 2);
        assert_eq!(st.max_epoch(), 5);
    }

    #[test]
    fn routing_decisions() {
        let mut st = State::new(1);
        st.ok = true;
        let me = st.myself;
        let other = NodeId::random();
        let mut n = Node::new(other, MASTER, 1);
        n.ip = "127.0.0.1".into();
        n.port = 7002;
        st.nodes.insert(other, n);
        st.add_slot(1, me);
        st.add_slot(2, other);
        assert_eq!(
            st.route_slow(3, false, 0, false, false, false, false),
            Err(Redirect::Error(ERR_UNBOUND))
        );
        assert_eq!(
            st.route_slow(2, false, 0, false, false, false, false),
            Err(Redirect::Moved(2, "127.0.0.1:7002".into()))
        );
        assert_eq!(
            st.route_slow(1, false, 0, true, false, false, false),
            Ok(())
        );
        st.migrating.insert(1, other);
        assert_eq!(
            st.route_slow(1, false, 1, true, false, false, false),
            Err(Redirect::Ask(1, "127.0.0.1:7002".into()))
        );
        assert_eq!(
            st.route_slow(1, true, 1, true, false, false, false),
            Err(Redirect::Error(ERR_TRYAGAIN))
        );
        assert_eq!(
            st.route_slow(1, false, 0, true, false, false, false),
            Ok(())
        );
        st.importing.insert(2, other);
        assert_eq!(st.route_slow(2, false, 1, true, false, true, false), Ok(()));
        assert!(st
            .route_slow(2, false, 1, true, false, false, false)
            .is_err());
        st.ok = false;
        assert_eq!(
            st.route_slow(1, false, 0, false, false, false, false),
            Err(Redirect::Error(ERR_DOWN))
        );
    }

    #[test]
    fn desired_upstream_follows_cluster_role() {
        let mut st = State::new(1);
        // A node with no slots and no master is a master.
        assert_eq!(st.desired_upstream(), Some(None));
        let m = NodeId::random();
        let mut n = Node::new(m, MASTER, 1);
        n.ip = "127.0.0.1".into();
        n.port = 7001;
        st.nodes.insert(m, n);
        st.set_my_master(m);
        assert_eq!(
            st.desired_upstream(),
            Some(Some(("127.0.0.1".to_string(), 7001)))
        );
        // Master address unknown: keep whatever replication does now.
        if let Some(n) = st.nodes.get_mut(&m) {
            n.flags |= NOADDR;
        }
        assert_eq!(st.desired_upstream(), None);
        let me = st.myself;
        st.set_node_as_master(me);
        assert_eq!(st.desired_upstream(), Some(None));
    }

    #[test]
    fn state_needs_coverage_and_majority() {
        let mut st = State::new(0);
        let me = st.myself;
        st.update_state(10_000);
        assert!(!st.ok);
        for s in 0..SLOT_COUNT as u16 {
            st.add_slot(s, me);
        }
        // Right after being in the minority the node waits before declaring ok.
        st.update_state(10_001);
        assert!(!st.ok);
        st.update_state(20_000);
        assert!(st.ok);
        assert_eq!(st.size, 1);
        st.del_slot(5);
        st.update_state(20_000);
        assert!(!st.ok);
        st.full_coverage = false;
        st.update_state(30_000);
        assert!(st.ok);
    }
}
