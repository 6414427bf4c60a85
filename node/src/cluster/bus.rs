//! The cluster bus: slotgate's own binary node-to-node protocol on port + 10000
//! (or `cluster-port`), and the tasks that run it.
//!
//! # Wire format (all integers big-endian)
//!
//! Every message is one frame: a fixed header followed by a type-specific body.
//!
//! | offset | size | field                                                       |
//! |-------:|-----:|-------------------------------------------------------------|
//! | 0      | 4    | magic `SGCB`                                                |
//! | 4      | 2    | protocol version (1)                                        |
//! | 6      | 2    | message type (see below)                                    |
//! | 8      | 4    | total length of the message, header included                |
//! | 12     | 40   | sender node ID                                              |
//! | 52     | 8    | sender's current epoch                                      |
//! | 60     | 8    | sender's config epoch (its master's for a replica)          |
//! | 68     | 8    | sender's replication offset                                 |
//! | 76     | 2    | sender's client port (announced)                            |
//! | 78     | 2    | sender's bus port (announced)                               |
//! | 80     | 2    | sender's flags (MASTER=1 SLAVE=2 PFAIL=4 FAIL=8 ... as Redis)|
//! |        |      | plus message flag 0x4000 PAUSED: a master paused for a manual |
//! |        |      | failover (its replication offset above is final)             |
//! | 82     | 1    | sender's cluster state (1 = ok)                             |
//! | 83     | 1    | length of the announced IP (0 = use the peer address)      |
//! | 84     | 46   | announced IP, zero padded                                   |
//! | 130    | 40   | sender's master ID, all zero bytes for a master             |
//! | 170    | 2048 | slot bitmap claimed by the sender (its master's for replicas)|
//! | 2218   | ...  | body                                                        |
//!
//! Types and bodies:
//! - 0 PING, 1 PONG, 2 MEET: `u16 count` then `count` gossip entries of 101 bytes:
//!   node ID (40), ping sent (u32 seconds), pong received (u32 seconds), IP length (u8),
//!   IP (46), port (u16), bus port (u16), flags (u16).
//! - 3 FAIL: the failing node's ID (40).
//! - 4 PUBLISH and 10 PUBLISHSHARD: `u32 channel length`, `u32 message length`, channel, message.
//! - 5 FAILOVER_AUTH_REQUEST (a replica asks the masters for their vote; the election epoch
//!   is the header's current epoch): `u8 flags` (1 = FORCEACK, a manual failover: vote even
//!   though the master is up), `u64` claimed config epoch (the master's), slot bitmap (2048)
//!   claimed (the master's slots).
//! - 6 FAILOVER_AUTH_ACK (a master's vote for the header's current epoch), 8 MFSTART (a
//!   replica asks its master to pause for a manual failover), 9 MODULE (unused): empty bodies.
//! - 7 UPDATE: config epoch (u64), node ID (40), slot bitmap (2048): "this node owns these
//!   slots with this epoch" — sent to a node announcing a stale slot claim.
//!
//! Decoding never panics: a short, oversized or inconsistent frame is rejected with an error,
//! the link is closed and the event logged.
//!
//! # Links
//! Each known node gets one outbound link (we connect to its bus port and send PING / MEET;
//! it answers PONG on that link); nodes connect to us the same way (inbound links, where we
//! answer PONG). Handshake nodes (after CLUSTER MEET, or learned from gossip) have a random
//! placeholder ID until the first PONG tells us their real one.

use super::failover::ReplView;
use super::{
    now_ms, Cluster, Node, NodeId, SlotBitmap, State, FAIL, HANDSHAKE, MASTER, MEET, MYSELF,
    NOADDR, NOFAILOVER, PFAIL, SLAVE,
};
use crate::server::Server;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// PING
pub const PING: u16 = 0;
/// PONG
pub const PONG: u16 = 1;
/// MEET
pub const MEET_MSG: u16 = 2;
/// FAIL
pub const FAIL_MSG: u16 = 3;
/// PUBLISH
pub const PUBLISH: u16 = 4;
/// Failover vote request.
pub const AUTH_REQUEST: u16 = 5;
/// Failover vote.
pub const AUTH_ACK: u16 = 6;
/// UPDATE
pub const UPDATE: u16 = 7;
/// Manual failover start.
pub const MFSTART: u16 = 8;
/// Header flag: the sender is a master paused for a manual failover.
pub const MSGFLAG_PAUSED: u16 = 0x4000;
/// FAILOVER_AUTH_REQUEST flag: vote even if the master is not failing (manual failover).
pub const REQFLAG_FORCEACK: u8 = 1;
/// Shard-channel PUBLISH.
pub const PUBLISHSHARD: u16 = 10;
/// Number of message types (for the counters).
pub const MSG_TYPES: usize = 11;
/// Message type names as CLUSTER INFO prints them.
pub const MSG_NAMES: [&str; MSG_TYPES] = [
    "ping",
    "pong",
    "meet",
    "fail",
    "publish",
    "auth-req",
    "auth-ack",
    "update",
    "mfstart",
    "module",
    "publishshard",
];

const MAGIC: &[u8; 4] = b"SGCB";
const VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 2218;
const GOSSIP_LEN: usize = 101;
const IP_MAX: usize = 46;
/// Largest frame accepted (PUBLISH payloads included).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The fixed header of a bus message.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Message type.
    pub typ: u16,
    /// Sender ID.
    pub sender: NodeId,
    /// Sender's current epoch.
    pub current_epoch: u64,
    /// Sender's config epoch.
    pub config_epoch: u64,
    /// Sender's replication offset.
    pub repl_offset: u64,
    /// Client port.
    pub port: u16,
    /// Bus port.
    pub cport: u16,
    /// Flags.
    pub flags: u16,
    /// Sender sees the cluster ok.
    pub state_ok: bool,
    /// Announced IP ("" = use the connection's peer address).
    pub ip: String,
    /// Sender's master (replicas).
    pub master: Option<NodeId>,
    /// Slots claimed.
    pub slots: SlotBitmap,
}

/// One gossip entry: what the sender knows about another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    /// Node ID.
    pub id: NodeId,
    /// Ping sent (seconds).
    pub ping_sent: u32,
    /// Pong received (seconds).
    pub pong_received: u32,
    /// IP.
    pub ip: String,
    /// Client port.
    pub port: u16,
    /// Bus port.
    pub cport: u16,
    /// Flags.
    pub flags: u16,
}

/// A message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// PING / PONG / MEET.
    Gossip(Vec<Gossip>),
    /// FAIL about a node.
    Fail(NodeId),
    /// PUBLISH / PUBLISHSHARD.
    Publish(Vec<u8>, Vec<u8>),
    /// UPDATE.
    Update(u64, NodeId, Box<SlotBitmap>),
    /// FAILOVER_AUTH_REQUEST.
    AuthRequest {
        /// Manual failover: vote even though the master is not FAIL.
        force_ack: bool,
        /// Config epoch of the claimed slots (the requester's master's).
        config_epoch: u64,
        /// Slots claimed (the requester's master's).
        slots: Box<SlotBitmap>,
    },
    /// AUTH_ACK, MFSTART, MODULE.
    Empty,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Header.
    pub hdr: Header,
    /// Body.
    pub body: Body,
}

fn put_ip(out: &mut Vec<u8>, ip: &str) {
    let b = ip.as_bytes();
    let n = b.len().min(IP_MAX);
    out.push(n as u8);
    out.extend_from_slice(&b[..n]);
    out.extend(std::iter::repeat_n(0u8, IP_MAX - n));
}

/// Encodes a message.
pub fn encode(msg: &Msg) -> Vec<u8> {
    let h = &msg.hdr;
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&h.typ.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&h.sender.0);
    out.extend_from_slice(&h.current_epoch.to_be_bytes());
    out.extend_from_slice(&h.config_epoch.to_be_bytes());
    out.extend_from_slice(&h.repl_offset.to_be_bytes());
    out.extend_from_slice(&h.port.to_be_bytes());
    out.extend_from_slice(&h.cport.to_be_bytes());
    out.extend_from_slice(&h.flags.to_be_bytes());
    out.push(h.state_ok as u8);
    put_ip(&mut out, &h.ip);
    out.extend_from_slice(&h.master.unwrap_or(NodeId::ZERO).0);
    out.extend_from_slice(&h.slots.to_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    match &msg.body {
        Body::Gossip(g) => {
            out.extend_from_slice(&(g.len().min(u16::MAX as usize) as u16).to_be_bytes());
            for e in g.iter().take(u16::MAX as usize) {
                out.extend_from_slice(&e.id.0);
                out.extend_from_slice(&e.ping_sent.to_be_bytes());
                out.extend_from_slice(&e.pong_received.to_be_bytes());
                put_ip(&mut out, &e.ip);
                out.extend_from_slice(&e.port.to_be_bytes());
                out.extend_from_slice(&e.cport.to_be_bytes());
                out.extend_from_slice(&e.flags.to_be_bytes());
            }
        }
        Body::Fail(id) => out.extend_from_slice(&id.0),
        Body::Publish(ch, m) => {
            out.extend_from_slice(&(ch.len() as u32).to_be_bytes());
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(ch);
            out.extend_from_slice(m);
        }
        Body::Update(e, id, slots) => {
            out.extend_from_slice(&e.to_be_bytes());
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&slots.to_bytes());
        }
        Body::AuthRequest {
            force_ack,
            config_epoch,
            slots,
        } => {
            out.push(if *force_ack { REQFLAG_FORCEACK } else { 0 });
            out.extend_from_slice(&config_epoch.to_be_bytes());
            out.extend_from_slice(&slots.to_bytes());
        }
        Body::Empty => {}
    }
    let len = out.len() as u32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let s = self.b.get(self.pos..end).ok_or(DecodeError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn id(&mut self) -> Result<NodeId, DecodeError> {
        let s = self.take(40)?;
        NodeId::parse(s).ok_or(DecodeError("bad id"))
    }
    fn ip(&mut self) -> Result<String, DecodeError> {
        let n = self.u8()? as usize;
        let s = self.take(IP_MAX)?;
        if n > IP_MAX {
            return Err(DecodeError("bad ip length"));
        }
        let ip = std::str::from_utf8(&s[..n]).map_err(|_| DecodeError("bad ip"))?;
        if !ip
            .bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b'.' || c == b':' || c == b'%')
        {
            return Err(DecodeError("bad ip"));
        }
        Ok(ip.to_string())
    }
}

fn valid_id(id: &NodeId) -> bool {
    id.0.iter().all(|c| c.is_ascii_hexdigit())
}

/// Length of the frame at the start of `buf`, once its length field is readable.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 12 {
        if buf.len() >= 4 && &buf[..4] != MAGIC {
            return Err(DecodeError("bad magic"));
        }
        return Ok(None);
    }
    if &buf[..4] != MAGIC {
        return Err(DecodeError("bad magic"));
    }
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if !(HEADER_LEN..=MAX_FRAME).contains(&len) {
        return Err(DecodeError("bad length"));
    }
    Ok(Some(len))
}

/// Decodes one complete frame.
pub fn decode(b: &[u8]) -> Result<Msg, DecodeError> {
    let mut r = Rd { b, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err(DecodeError("bad magic"));
    }
    if r.u16()? != VERSION {
        return Err(DecodeError("unsupported version"));
    }
    let typ = r.u16()?;
    let len = r.u32()? as usize;
    if len != b.len() {
        return Err(DecodeError("length mismatch"));
    }
    let sender = r.id()?;
    if !valid_id(&sender) {
        return Err(DecodeError("bad sender id"));
    }
    let current_epoch = r.u64()?;
    let config_epoch = r.u64()?;
    let repl_offset = r.u64()?;
    let port = r.u16()?;
    let cport = r.u16()?;
    let flags = r.u16()?;
    let state_ok = r.u8()? == 1;
    let ip = r.ip()?;
    let m = r.id()?;
    let master = if m == NodeId::ZERO {
        None
    } else if valid_id(&m) {
        Some(m)
    } else {
        return Err(DecodeError("bad master id"));
    };
    let slots = SlotBitmap::from_bytes(r.take(SlotBitmap::BYTES)?).ok_or(DecodeError("slots"))?;
    let hdr = Header {
        typ,
        sender,
        current_epoch,
        config_epoch,
        repl_offset,
        port,
        cport,
        flags,
        state_ok,
        ip,
        master,
        slots,
    };
    let body = match typ {
        PING | PONG | MEET_MSG => {
            let n = r.u16()? as usize;
            if r.b.len() - r.pos != n * GOSSIP_LEN {
                return Err(DecodeError("gossip count mismatch"));
            }
            let mut g = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.id()?;
                if !valid_id(&id) {
                    return Err(DecodeError("bad gossip id"));
                }
                g.push(Gossip {
                    id,
                    ping_sent: r.u32()?,
                    pong_received: r.u32()?,
                    ip: r.ip()?,
                    port: r.u16()?,
                    cport: r.u16()?,
                    flags: r.u16()?,
                });
            }
            Body::Gossip(g)
        }
        FAIL_MSG => {
            let id = r.id()?;
            if !valid_id(&id) {
                return Err(DecodeError("bad fail id"));
            }
            Body::Fail(id)
        }
        PUBLISH | PUBLISHSHARD => {
            let cl = r.u32()? as usize;
            let ml = r.u32()? as usize;
            let ch = r.take(cl)?.to_vec();
            let m = r.take(ml)?.to_vec();
            Body::Publish(ch, m)
        }
        UPDATE => {
            let e = r.u64()?;
            let id = r.id()?;
            if !valid_id(&id) {
                return Err(DecodeError("bad update id"));
            }
            let s =
                SlotBitmap::from_bytes(r.take(SlotBitmap::BYTES)?).ok_or(DecodeError("slots"))?;
            Body::Update(e, id, Box::new(s))
        }
        AUTH_REQUEST => {
            let f = r.u8()?;
            let config_epoch = r.u64()?;
            let slots =
                SlotBitmap::from_bytes(r.take(SlotBitmap::BYTES)?).ok_or(DecodeError("slots"))?;
            Body::AuthRequest {
                force_ack: f & REQFLAG_FORCEACK != 0,
                config_epoch,
                slots: Box::new(slots),
            }
        }
        AUTH_ACK | MFSTART | 9 => Body::Empty,
        _ => return Err(DecodeError("unknown type")),
    };
    if r.pos != b.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Msg { hdr, body })
}

/// What processing a message asks the I/O layer to do.
#[derive(Default)]
pub struct Effects {
    /// Reply to write on the connection the message came from.
    pub reply: Option<Vec<u8>>,
    /// A PUBLISH to deliver to local subscribers (channel, message, shard).
    pub publish: Option<(Vec<u8>, Vec<u8>, bool)>,
    /// Slots we lost to another master: delete our keys in them.
    pub flush_slots: Vec<u16>,
    /// Close the link (the peer is unusable).
    pub close: bool,
}

impl State {
    /// The header describing myself.
    pub fn my_header(&self, typ: u16) -> Header {
        let me = self.me();
        let master_node = self.my_master().and_then(|m| self.nodes.get(&m));
        let (slots, config_epoch) = match master_node {
            Some(m) => (m.slots.clone(), m.config_epoch),
            None => (me.slots.clone(), me.config_epoch),
        };
        Header {
            typ,
            sender: self.myself,
            current_epoch: self.current_epoch,
            config_epoch,
            repl_offset: me.repl_offset,
            port: me.port,
            cport: me.cport,
            flags: self.my_message_flags(),
            state_ok: self.ok,
            ip: self.announce_ip.clone(),
            master: self.my_master(),
            slots,
        }
    }

    /// Builds a PING / PONG / MEET with a gossip section about some other nodes.
    pub fn build_ping(&mut self, typ: u16, to: Option<NodeId>) -> Vec<u8> {
        use rand::seq::SliceRandom;
        let now_s = |ms: u64| (ms / 1000) as u32;
        let mut cands: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| {
                n.id != self.myself
                    && Some(n.id) != to
                    && n.flags & (HANDSHAKE | NOADDR) == 0
                    && !(n.link.is_none() && n.slots.is_empty() && n.pong_received == 0)
            })
            .collect();
        let wanted = (self.nodes.len() / 10).max(3);
        let mut rng = rand::thread_rng();
        cands.shuffle(&mut rng);
        let mut chosen: Vec<Gossip> = Vec::new();
        for n in cands.iter() {
            if chosen.len() >= wanted && n.flags & PFAIL == 0 {
                continue;
            }
            chosen.push(Gossip {
                id: n.id,
                ping_sent: now_s(n.ping_sent),
                pong_received: now_s(n.pong_received),
                ip: n.ip.clone(),
                port: n.port,
                cport: n.cport,
                flags: n.flags,
            });
        }
        let msg = Msg {
            hdr: self.my_header(typ),
            body: Body::Gossip(chosen),
        };
        self.stats.sent[typ as usize % MSG_TYPES] += 1;
        encode(&msg)
    }

    /// Queues a PING (or MEET) to `id` on its outbound link.
    pub fn send_ping(&mut self, id: NodeId, typ: u16, now: u64) {
        let msg = self.build_ping(typ, Some(id));
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(l) = &n.link {
                if l.try_send(msg).is_ok() && typ == PING && n.ping_sent == 0 {
                    n.ping_sent = now;
                }
            }
        }
    }

    /// Queues a PONG to every connected node (after a configuration change).
    pub fn broadcast_pong(&mut self) {
        let ids: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.link_up && n.flags & (MYSELF | HANDSHAKE) == 0)
            .map(|n| n.id)
            .collect();
        for id in ids {
            let m = self.build_ping(PONG, Some(id));
            if let Some(Some(l)) = self.nodes.get(&id).map(|n| n.link.as_ref()) {
                let _ = l.try_send(m);
            }
        }
    }

    /// Sends `msg` (already encoded) to every node with a link.
    pub fn broadcast(&mut self, typ: u16, msg: &[u8]) {
        let mut sent = 0;
        for n in self.nodes.values() {
            if n.flags & (MYSELF | HANDSHAKE) != 0 {
                continue;
            }
            if let Some(l) = &n.link {
                if l.try_send(msg.to_vec()).is_ok() {
                    sent += 1;
                }
            }
        }
        self.stats.sent[typ as usize % MSG_TYPES] += sent;
    }

    /// Broadcasts FAIL about `id`.
    pub fn send_fail(&mut self, id: NodeId) {
        let msg = encode(&Msg {
            hdr: self.my_header(FAIL_MSG),
            body: Body::Fail(id),
        });
        self.broadcast(FAIL_MSG, &msg);
    }

    fn update_address(&mut self, id: NodeId, ip: &str, port: u16, cport: u16) {
        if ip.is_empty() {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.ip != ip || n.port != port || n.cport != cport {
                n.ip = ip.to_string();
                n.port = port;
                n.cport = cport;
                n.flags &= !NOADDR;
                // Reconnect to the new address.
                n.link = None;
                n.link_up = false;
                self.log.push((
                    true,
                    format!("Address updated for node {id}, now {ip}:{port}"),
                ));
                self.todo_save = true;
            }
        }
    }

    /// Adopts `slots` for `sender` where its epoch wins (Redis's clusterUpdateSlotsConfigWith).
    pub fn update_slots_config_with(
        &mut self,
        sender: NodeId,
        epoch: u64,
        slots: &SlotBitmap,
        fx: &mut Effects,
    ) {
        if sender == self.myself {
            return;
        }
        let me = self.myself;
        let cur_master = self.my_master().unwrap_or(me);
        let mut new_master = None;
        let mut migrated_our_slots = 0;
        let held = self.nodes.get(&sender).map(|n| n.slots.clone());
        for s in claimed_elsewhere(slots, held.as_ref()) {
            let owner = self.slots[s as usize];
            if owner == Some(sender) || self.importing.contains_key(&s) {
                continue;
            }
            let owner_epoch = owner
                .and_then(|o| self.nodes.get(&o))
                .map(|n| n.config_epoch)
                .unwrap_or(0);
            if owner.is_none() || owner_epoch < epoch {
                if owner == Some(me) {
                    fx.flush_slots.push(s);
                }
                if owner == Some(cur_master) {
                    new_master = Some(sender);
                    migrated_our_slots += 1;
                }
                self.add_slot(s, sender);
                self.migrating.remove(&s);
                self.todo_save = true;
            }
        }
        let cur_empty = self
            .nodes
            .get(&cur_master)
            .map(|n| n.slots.is_empty())
            .unwrap_or(true);
        let sender_slots = self
            .nodes
            .get(&sender)
            .map(|n| n.slots.count())
            .unwrap_or(0);
        if let Some(nm) = new_master {
            if cur_empty && (self.allow_replica_migration || sender_slots == migrated_our_slots) {
                self.log.push((
                    true,
                    format!(
                        "Configuration change detected. Reconfiguring myself as a replica of {nm}"
                    ),
                ));
                self.set_my_master(nm);
                fx.flush_slots.clear();
            }
        }
    }

    /// What every message from a known node tells about it: data received now, the cluster's
    /// current epoch, the node's config epoch (a master's own), its replication offset, and a
    /// master paused for my manual failover.
    fn note_sender_header(&mut self, s: NodeId, hdr: &Header, now: u64) {
        if let Some(n) = self.nodes.get_mut(&s) {
            n.data_received = now;
        }
        if hdr.current_epoch > self.current_epoch {
            self.current_epoch = hdr.current_epoch;
            self.todo_save = true;
        }
        if let Some(n) = self.nodes.get_mut(&s) {
            if hdr.config_epoch > n.config_epoch && hdr.master.is_none() {
                n.config_epoch = hdr.config_epoch;
                self.todo_save = true;
            }
            n.repl_offset = hdr.repl_offset;
        }
        // My master paused for my manual failover: its offset is the one to reach.
        if hdr.flags & MSGFLAG_PAUSED != 0 && self.my_master() == Some(s) {
            self.note_paused_master_offset(hdr.repl_offset);
        }
    }

    /// Processes one message. `link_node` is the node of an outbound link (None for
    /// inbound); `peer_ip` the connection's remote IP; `local_ip` our side's IP.
    pub fn process(
        &mut self,
        msg: Msg,
        link_node: Option<NodeId>,
        peer_ip: &str,
        local_ip: &str,
        now: u64,
    ) -> Effects {
        let mut fx = Effects::default();
        let hdr = &msg.hdr;
        let typ = hdr.typ;
        self.stats.received[typ as usize % MSG_TYPES] += 1;
        if self.blacklist.get(&hdr.sender).is_some_and(|&t| t > now) {
            return fx;
        }
        if hdr.sender == self.myself && link_node.is_none() {
            // Our own message looped back (a MEET to ourselves): ignore it.
            return fx;
        }
        let sender_ip = if hdr.ip.is_empty() {
            peer_ip.to_string()
        } else {
            hdr.ip.clone()
        };
        let known = |st: &State, id: &NodeId| st.nodes.get(id).is_some_and(|n| !n.in_handshake());
        let mut sender = known(self, &hdr.sender).then_some(hdr.sender);
        if let Some(s) = sender {
            self.note_sender_header(s, hdr, now);
        }

        if typ == PING || typ == MEET_MSG {
            // Learn my own address from the connection when nobody announced it.
            if self.announce_ip.is_empty()
                && (typ == MEET_MSG || self.me().ip.is_empty())
                && !local_ip.is_empty()
                && self.me().ip != local_ip
            {
                let ip = local_ip.to_string();
                self.me_mut().ip = ip.clone();
                self.log
                    .push((false, format!("IP address for this node updated to {ip}")));
                self.todo_save = true;
            }
            if sender.is_none() && typ == MEET_MSG {
                // Add the node in handshake; the PONG on our own link gives its real ID.
                if self.start_handshake(&sender_ip, hdr.port, hdr.cport, false, now) {
                    self.todo_save = true;
                }
                if let Body::Gossip(g) = &msg.body {
                    self.process_gossip(None, g, now);
                }
            }
            fx.reply = Some(self.build_ping(PONG, None));
        }

        if matches!(typ, PING | PONG | MEET_MSG) {
            if let Some(ln) = link_node {
                let in_hs = self.nodes.get(&ln).is_some_and(|n| n.in_handshake());
                if in_hs {
                    if sender.is_some() {
                        // We already know this node under its real ID: drop the placeholder.
                        self.update_address(hdr.sender, &sender_ip, hdr.port, hdr.cport);
                        self.del_node(ln);
                        fx.close = true;
                        return fx;
                    }
                    if typ == PONG || typ == PING {
                        self.rename_node(ln, hdr.sender);
                        let flags = hdr.flags & (MASTER | SLAVE);
                        if let Some(n) = self.nodes.get_mut(&hdr.sender) {
                            n.flags = (n.flags & !(MASTER | SLAVE)) | flags;
                            if n.flags & (MASTER | SLAVE) == 0 {
                                n.flags |= MASTER;
                            }
                        }
                        self.log.push((
                            false,
                            format!("Handshake with node {} completed.", hdr.sender),
                        ));
                        sender = Some(hdr.sender);
                        // This PONG already carries the node's epochs: a replica that gets
                        // its master from it must not keep config epoch 0 until the next
                        // ping (its failover requests would be denied meanwhile).
                        self.note_sender_header(hdr.sender, hdr, now);
                    }
                } else if ln != hdr.sender {
                    // The node at this address changed its ID: forget the address.
                    if let Some(n) = self.nodes.get_mut(&ln) {
                        n.flags |= NOADDR;
                        n.ip.clear();
                        n.port = 0;
                        n.cport = 0;
                        n.link = None;
                        n.link_up = false;
                    }
                    self.todo_save = true;
                    fx.close = true;
                    return fx;
                }
            }
            if let (Some(s), true) = (sender, typ == PING) {
                self.update_address(s, &sender_ip, hdr.port, hdr.cport);
            }
            // NOFAILOVER is the sender's current setting (replicas rank themselves without it).
            if let Some(n) = sender.and_then(|s| self.nodes.get_mut(&s)) {
                n.flags = (n.flags & !NOFAILOVER) | (hdr.flags & NOFAILOVER);
            }
            // PONG on our link: the node is alive.
            if typ == PONG {
                if let Some(ln) = link_node.map(|l| if sender.is_some() { hdr.sender } else { l }) {
                    let mut cleared = false;
                    if let Some(n) = self.nodes.get_mut(&ln) {
                        n.pong_received = now;
                        n.ping_sent = 0;
                        if n.pfailed() {
                            n.flags &= !PFAIL;
                            cleared = true;
                        }
                    }
                    if !cleared {
                        self.clear_failure_if_needed(ln, now);
                    }
                }
            }
            let Some(s) = sender else {
                return fx;
            };
            // Role changes.
            match hdr.master {
                None => {
                    if self.nodes.get(&s).is_some_and(|n| n.is_slave()) {
                        self.set_node_as_master(s);
                    }
                }
                Some(m) => {
                    if let Some(n) = self.nodes.get_mut(&s) {
                        if n.is_master() {
                            n.flags &= !MASTER;
                            n.flags |= SLAVE;
                            self.todo_save = true;
                        }
                    }
                    if self.nodes.get(&s).is_some_and(|n| !n.slots.is_empty()) {
                        for slot in 0..super::SLOT_COUNT as u16 {
                            if self.slots[slot as usize] == Some(s) {
                                self.del_slot(slot);
                            }
                        }
                        self.todo_save = true;
                    }
                    if self.nodes.contains_key(&m) {
                        if let Some(n) = self.nodes.get_mut(&s) {
                            if n.master != Some(m) {
                                n.master = Some(m);
                                self.todo_save = true;
                            }
                        }
                    }
                }
            }
            // Slot configuration.
            let sender_master = if hdr.master.is_none() {
                Some(s)
            } else {
                self.nodes.get(&s).and_then(|n| n.master)
            };
            let dirty = sender_master
                .and_then(|m| self.nodes.get(&m))
                .is_some_and(|m| m.slots != hdr.slots);
            if dirty && hdr.master.is_none() {
                let slots = hdr.slots.clone();
                self.update_slots_config_with(s, hdr.config_epoch, &slots, &mut fx);
            }
            if dirty {
                let held = self.nodes.get(&s).map(|n| n.slots.clone());
                for slot in claimed_elsewhere(&hdr.slots, held.as_ref()) {
                    let Some(owner) = self.slots[slot as usize] else {
                        continue;
                    };
                    if owner == s {
                        continue;
                    }
                    let Some(o) = self.nodes.get(&owner) else {
                        continue;
                    };
                    if o.config_epoch > hdr.config_epoch {
                        let upd = encode(&Msg {
                            hdr: self.my_header(UPDATE),
                            body: Body::Update(o.config_epoch, owner, Box::new(o.slots.clone())),
                        });
                        self.stats.sent[UPDATE as usize] += 1;
                        if let Some(Some(l)) = self.nodes.get(&s).map(|n| n.link.as_ref()) {
                            let _ = l.try_send(upd);
                        }
                        break;
                    }
                }
            }
            // Config epoch collision between masters: the smaller node ID takes a new epoch.
            if hdr.master.is_none()
                && self.me().is_master()
                && hdr.config_epoch == self.me().config_epoch
                && hdr.sender > self.myself
            {
                self.current_epoch += 1;
                let e = self.current_epoch;
                self.me_mut().config_epoch = e;
                self.todo_save = true;
                self.log.push((
                    false,
                    format!(
                        "WARNING: configEpoch collision with node {} ({}). configEpoch set to {e}",
                        hdr.sender, hdr.config_epoch
                    ),
                ));
            }
            if let Body::Gossip(g) = &msg.body {
                self.process_gossip(Some(s), g, now);
            }
            return fx;
        }

        match msg.body {
            Body::Fail(id) if sender.is_some() => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    if n.flags & (FAIL | MYSELF) == 0 {
                        n.flags |= FAIL;
                        n.flags &= !PFAIL;
                        n.fail_time = now;
                        self.todo_save = true;
                        self.log.push((
                            false,
                            format!("FAIL message received from {} about {id}", hdr.sender),
                        ));
                    }
                }
            }
            Body::Publish(ch, m) if sender.is_some() => {
                fx.publish = Some((ch, m, hdr.typ == PUBLISHSHARD));
            }
            Body::AuthRequest {
                force_ack,
                config_epoch,
                slots,
            } => {
                if let Some(s) = sender {
                    self.handle_auth_request(
                        s,
                        hdr.current_epoch,
                        config_epoch,
                        &slots,
                        force_ack,
                        now,
                    );
                }
            }
            Body::Empty if typ == AUTH_ACK => {
                if let Some(s) = sender {
                    self.handle_auth_ack(s, hdr.current_epoch, now);
                }
            }
            Body::Empty if typ == MFSTART => {
                if let Some(s) = sender {
                    self.handle_mfstart(s, now);
                }
            }
            Body::Update(epoch, id, slots) => {
                if sender.is_none() {
                    return fx;
                }
                let Some(n) = self.nodes.get(&id) else {
                    return fx;
                };
                if n.config_epoch >= epoch {
                    return fx;
                }
                if n.is_slave() {
                    self.set_node_as_master(id);
                }
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.config_epoch = epoch;
                }
                self.todo_save = true;
                self.update_slots_config_with(id, epoch, &slots, &mut fx);
            }
            _ => {}
        }
        fx
    }

    fn process_gossip(&mut self, sender: Option<NodeId>, g: &[Gossip], now: u64) {
        let sender_is_master = sender
            .and_then(|s| self.nodes.get(&s))
            .is_some_and(|n| n.is_master());
        for e in g {
            if e.id == self.myself {
                continue;
            }
            if self.nodes.contains_key(&e.id) {
                if let (true, Some(s)) = (sender_is_master, sender) {
                    if e.flags & (FAIL | PFAIL) != 0 {
                        if self.add_failure_report(e.id, s, now) {
                            self.log.push((
                                false,
                                format!("Node {s} reported node {} as not reachable.", e.id),
                            ));
                        }
                        self.mark_failing_if_needed(e.id, now);
                    } else {
                        self.del_failure_report(e.id, s);
                    }
                }
                let Some(n) = self.nodes.get_mut(&e.id) else {
                    continue;
                };
                // Fresher PONG seen by someone else: we are not waiting on this node.
                if e.flags & (FAIL | PFAIL) == 0 && n.ping_sent == 0 && n.fail_reports.is_empty() {
                    let pong = (e.pong_received as u64) * 1000;
                    if pong > n.pong_received && pong <= now + 500 {
                        n.pong_received = pong;
                    }
                }
                // A failed node's address may have changed while it was away.
                if n.flags & (FAIL | PFAIL) != 0
                    && e.flags & NOADDR == 0
                    && !e.ip.is_empty()
                    && (n.ip != e.ip || n.port != e.port || n.cport != e.cport)
                {
                    n.ip = e.ip.clone();
                    n.port = e.port;
                    n.cport = e.cport;
                    n.link = None;
                    n.link_up = false;
                    n.flags &= !NOADDR;
                }
            } else if sender.is_some()
                && e.flags & NOADDR == 0
                && !e.ip.is_empty()
                && e.port != 0
                && self.blacklist.get(&e.id).is_none_or(|&t| t <= now)
            {
                self.start_handshake(&e.ip, e.port, e.cport, false, now);
            }
        }
    }
}

/// Starts the bus: binds the bus port on the same addresses as the clients' port, then
/// spawns the accept loops and the cron.
pub async fn start(server: Arc<Server>, addrs: &[String], port: u16) -> anyhow::Result<()> {
    let Some(cluster) = server.cluster.clone() else {
        return Ok(());
    };
    let (cport_cfg, ann_port, ann_bus) = {
        let c = server.config.read();
        (
            c.get_int("cluster-port") as u16,
            c.get_int("cluster-announce-port") as u16,
            c.get_int("cluster-announce-bus-port") as u16,
        )
    };
    let cport = if cport_cfg != 0 {
        cport_cfg
    } else {
        port.wrapping_add(10000)
    };
    let mut listeners = Vec::new();
    for a in addrs {
        let addr = match a.as_str() {
            "*" => format!("0.0.0.0:{cport}"),
            "::*" => format!("[::]:{cport}"),
            ip if ip.contains(':') => format!("[{ip}]:{cport}"),
            ip => format!("{ip}:{cport}"),
        };
        match TcpListener::bind(&addr).await {
            Ok(l) => listeners.push(l),
            Err(_) if a == "::*" => {}
            Err(e) => {
                server
                    .log
                    .warning(&format!("Could not bind the cluster bus on {addr}: {e}"));
                anyhow::bail!("Failed listening on cluster bus port {cport}, aborting.");
            }
        }
    }
    {
        let mut st = cluster.state.lock();
        let me = st.me_mut();
        me.port = if ann_port != 0 { ann_port } else { port };
        me.cport = if ann_bus != 0 { ann_bus } else { cport };
        st.todo_save = true;
        cluster.commit(&mut st, &server.log);
    }
    for l in listeners {
        tokio::spawn(accept_loop(server.clone(), cluster.clone(), l));
    }
    tokio::spawn(cron(server.clone(), cluster));
    Ok(())
}

async fn accept_loop(server: Arc<Server>, cluster: Arc<Cluster>, l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let local = sock
                    .local_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let s = server.clone();
                let c = cluster.clone();
                tokio::spawn(async move {
                    inbound(s, c, sock, peer.ip().to_string(), local).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads frames from `rd` into `buf`; returns the next complete frame.
async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    cluster: &Cluster,
) -> Result<Vec<u8>, String> {
    loop {
        match frame_len(buf) {
            Ok(Some(n)) if buf.len() >= n => {
                let rest = buf.split_off(n);
                let frame = std::mem::replace(buf, rest);
                return Ok(frame);
            }
            Ok(_) => {}
            Err(e) => return Err(e.0.to_string()),
        }
        let mut tmp = [0u8; 16384];
        let n = rd.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        cluster.bus_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Handles one decoded frame: processing under the lock, then the side effects.
fn handle(
    server: &Arc<Server>,
    cluster: &Cluster,
    frame: &[u8],
    link_node: Option<NodeId>,
    peer_ip: &str,
    local_ip: &str,
) -> Result<Effects, String> {
    let msg = decode(frame).map_err(|e| e.0.to_string())?;
    let now = now_ms();
    let (fx, upstream) = {
        let mut st = cluster.state.lock();
        st.me_mut().repl_offset = server.repl.offset();
        let fx = st.process(msg, link_node, peer_ip, local_ip, now);
        apply_pause(server, &mut st);
        let upstream = st.desired_upstream();
        cluster.commit(&mut st, &server.log);
        (fx, upstream)
    };
    // A role change (won election, lost slots to a newer config) applies at once.
    reconcile_replication(server, upstream);
    if let Some((ch, m, true)) = &fx.publish {
        crate::cmd::pubsub::deliver_shard_publish(server, ch, m);
    } else if let Some((ch, m, false)) = &fx.publish {
        server.pubsub.publish(
            &bytes::Bytes::copy_from_slice(ch),
            &bytes::Bytes::copy_from_slice(m),
        );
    }
    if !fx.flush_slots.is_empty() {
        flush_slots(server, &fx.flush_slots);
        server.ks.wake_all_blocked();
    }
    Ok(fx)
}

/// Deletes our keys in slots that now belong to another master.
pub fn flush_slots(server: &Server, slots: &[u16]) {
    for &slot in slots {
        loop {
            let mut l = crate::db::Locked::new(&server.ks, 0, now_ms());
            let notify = server.notify_flags.load(Ordering::Relaxed);
            l.notify = notify;
            let keys = l.keys_in_slot(slot, 1000);
            if keys.is_empty() {
                break;
            }
            for k in keys {
                if l.remove(&k).is_some() {
                    l.notify(crate::notify::GENERIC, "del", &k);
                }
            }
            l.unlock();
            crate::notify::publish_all(server, notify, &mut l.events);
        }
    }
}

async fn inbound(
    server: Arc<Server>,
    cluster: Arc<Cluster>,
    sock: TcpStream,
    peer_ip: String,
    local_ip: String,
) {
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = Vec::new();
    loop {
        let frame = match read_frame(&mut rd, &mut buf, &cluster).await {
            Ok(f) => f,
            Err(e) => {
                if e != "connection closed" && !e.contains("reset") {
                    server.log.verbose(&format!(
                        "Cluster bus: dropping inbound link from {peer_ip}: {e}"
                    ));
                }
                return;
            }
        };
        match handle(&server, &cluster, &frame, None, &peer_ip, &local_ip) {
            Ok(fx) => {
                if let Some(r) = fx.reply {
                    cluster
                        .bus_bytes_out
                        .fetch_add(r.len() as u64, Ordering::Relaxed);
                    if wr.write_all(&r).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                server.log.warning(&format!(
                    "Cluster bus: malformed message from {peer_ip} dropped ({e}); closing the link"
                ));
                return;
            }
        }
    }
}

/// The outbound link to one node: connect, send PING/MEET, write queued messages, process
/// PONGs. Clears the node's link on exit.
async fn outbound(
    server: Arc<Server>,
    cluster: Arc<Cluster>,
    id: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    timeout: u64,
    gen: u64,
) {
    let conn = tokio::time::timeout(
        Duration::from_millis(timeout.clamp(100, 5000)),
        TcpStream::connect(&addr),
    )
    .await;
    let sock = match conn {
        Ok(Ok(s)) => s,
        _ => {
            let mut st = cluster.state.lock();
            let now = now_ms();
            if let Some(n) = st.nodes.get_mut(&id) {
                if n.link_gen == gen {
                    n.link = None;
                    n.link_up = false;
                    if n.ping_sent == 0 {
                        n.ping_sent = now;
                    }
                }
            }
            return;
        }
    };
    let _ = sock.set_nodelay(true);
    let peer_ip = sock
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let local_ip = sock
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let (mut rd, mut wr) = sock.into_split();
    // First message: MEET for nodes met by CLUSTER MEET, else PING.
    let first = {
        let mut st = cluster.state.lock();
        let now = now_ms();
        let Some(n) = st.nodes.get_mut(&id) else {
            return;
        };
        if n.link_gen != gen {
            return;
        }
        n.link_up = true;
        n.link_ctime = now;
        let meet = n.flags & MEET != 0;
        n.flags &= !MEET;
        let old_ping = n.ping_sent;
        let typ = if meet { MEET_MSG } else { PING };
        let m = st.build_ping(typ, Some(id));
        if let Some(n) = st.nodes.get_mut(&id) {
            n.ping_sent = if old_ping != 0 { old_ping } else { now };
        }
        m
    };
    cluster
        .bus_bytes_out
        .fetch_add(first.len() as u64, Ordering::Relaxed);
    let mut ok = wr.write_all(&first).await.is_ok();
    let mut buf = Vec::new();
    let mut current = id;
    while ok {
        tokio::select! {
            m = rx.recv() => {
                match m {
                    Some(m) => {
                        cluster.bus_bytes_out.fetch_add(m.len() as u64, Ordering::Relaxed);
                        ok = wr.write_all(&m).await.is_ok();
                    }
                    None => break,
                }
            }
            f = read_frame(&mut rd, &mut buf, &cluster) => {
                match f {
                    Ok(frame) => {
                        let sender = decode(&frame).ok().map(|m| m.hdr.sender);
                        match handle(&server, &cluster, &frame, Some(current), &peer_ip, &local_ip) {
                            Ok(fx) => {
                                if fx.close {
                                    break;
                                }
                                // After a handshake the node is known by its real ID.
                                if let Some(s) = sender {
                                    if s != current && cluster.state.lock().nodes.contains_key(&s) {
                                        current = s;
                                    }
                                }
                            }
                            Err(e) => {
                                server.log.warning(&format!(
                                    "Cluster bus: malformed message from {addr} dropped ({e}); closing the link"
                                ));
                                break;
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
    let mut st = cluster.state.lock();
    let now = now_ms();
    for key in [id, current] {
        if let Some(n) = st.nodes.get_mut(&key) {
            if n.link_gen == gen {
                n.link = None;
                n.link_up = false;
                // The link broke: the node owes us an answer from now on (the PING on the
                // next link clears this), so failure detection starts now, not at the next
                // periodic PING.
                if n.ping_sent == 0 {
                    n.ping_sent = now;
                }
            }
        }
    }
}

/// The cluster cron (every 100 ms): links, pings, failure detection, handshake timeouts.
async fn cron(server: Arc<Server>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut iteration: u64 = 0;
    let mut link_gen: u64 = 0;
    let mut last_tick: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cluster.wake.notified() => {}
        }
        iteration += 1;
        let now = now_ms();
        // After this process was frozen (SIGSTOP, a stalled VM), give the messages that queued
        // up meanwhile one tick to be read before judging other nodes by their silence.
        let gap = now.saturating_sub(last_tick);
        let stalled = last_tick != 0 && gap > (server_timeout(&server) / 2).max(500);
        last_tick = now;
        if stalled {
            server.log.notice(&format!(
                "Cluster cron was delayed by {gap} ms: skipping failure detection for one tick"
            ));
        }
        // CONFIG SET may change these at run time (redis-cli --cluster set-timeout).
        let (timeout_cfg, full_cov, reads_down, replica_mig) = {
            let c = server.config.read();
            (
                c.get_int("cluster-node-timeout").max(1) as u64,
                c.get_bool("cluster-require-full-coverage"),
                c.get_bool("cluster-allow-reads-when-down"),
                c.get_bool("cluster-allow-replica-migration"),
            )
        };
        let fo_cfg = {
            let c = server.config.read();
            (
                c.get_bool("cluster-replica-no-failover"),
                c.get_int("replica-priority") == 0,
                c.get_int("cluster-replica-validity-factor").max(0) as u64,
                c.get_int("repl-ping-replica-period").max(1) as u64,
                c.get_int("cluster-migration-barrier").max(0) as usize,
            )
        };
        let repl = ReplView {
            offset: server.repl.offset(),
            link_down_ms: server.repl.link_down_for_ms(now),
        };
        let mut st = cluster.state.lock();
        (
            st.fo.no_failover,
            st.fo.priority_zero,
            st.fo.validity_factor,
            st.fo.repl_ping_period,
            st.fo.migration_barrier,
        ) = fo_cfg;
        st.node_timeout = timeout_cfg;
        st.full_coverage = full_cov;
        st.reads_when_down = reads_down;
        st.allow_replica_migration = replica_mig;
        let timeout = st.node_timeout;
        let hs_timeout = timeout.max(1000);
        // Expire handshakes and bans.
        let stale: Vec<NodeId> = st
            .nodes
            .values()
            .filter(|n| n.in_handshake() && now.saturating_sub(n.ctime) > hs_timeout)
            .map(|n| n.id)
            .collect();
        for id in stale {
            st.del_node(id);
        }
        st.blacklist.retain(|_, t| *t > now);
        // Create missing links.
        let need: Vec<(NodeId, String)> = st
            .nodes
            .values()
            .filter(|n| n.flags & (MYSELF | NOADDR) == 0 && n.link.is_none() && n.cport != 0)
            .map(|n| {
                let addr = if n.ip.contains(':') {
                    format!("[{}]:{}", n.ip, n.cport)
                } else {
                    format!("{}:{}", n.ip, n.cport)
                };
                (n.id, addr)
            })
            .collect();
        for (id, addr) in need {
            let (tx, rx) = mpsc::channel(1024);
            link_gen += 1;
            if let Some(n) = st.nodes.get_mut(&id) {
                n.link = Some(tx);
                n.link_up = false;
                n.link_gen = link_gen;
            }
            tokio::spawn(outbound(
                server.clone(),
                cluster.clone(),
                id,
                addr,
                rx,
                timeout,
                link_gen,
            ));
        }
        // Every second, ping the node with the oldest PONG among a few random ones.
        if iteration.is_multiple_of(10) {
            use rand::seq::IteratorRandom;
            let mut rng = rand::thread_rng();
            let pick = st
                .nodes
                .values()
                .filter(|n| n.flags & (MYSELF | HANDSHAKE) == 0 && n.link_up && n.ping_sent == 0)
                .choose_multiple(&mut rng, 5)
                .into_iter()
                .min_by_key(|n| n.pong_received)
                .map(|n| n.id);
            if let Some(id) = pick {
                st.send_ping(id, PING, now);
            }
        }
        // Ping nodes whose last PONG is older than half the timeout; detect PFAIL.
        let ids: Vec<NodeId> = st.nodes.keys().copied().collect();
        for id in ids {
            let Some(n) = st.nodes.get(&id) else { continue };
            if n.flags & (MYSELF | NOADDR | HANDSHAKE) != 0 {
                continue;
            }
            // Reconnect a link that has been silent for too long.
            if n.link_up
                && n.ping_sent != 0
                && now.saturating_sub(n.ping_sent) > timeout / 2
                && now.saturating_sub(n.data_received) > timeout / 2
                && now.saturating_sub(n.link_ctime) > timeout
            {
                if let Some(n) = st.nodes.get_mut(&id) {
                    n.link = None;
                    n.link_up = false;
                }
                continue;
            }
            if n.link_up && n.ping_sent == 0 && now.saturating_sub(n.pong_received) > timeout / 2 {
                st.send_ping(id, PING, now);
                continue;
            }
            if !stalled {
                st.check_pfail(id, now);
            }
        }
        // A node just became PFAIL here: tell the other masters now (the gossip carries every
        // PFAIL node) so that the failure reports reach a majority without waiting for the
        // periodic PINGs.
        if std::mem::take(&mut st.todo_ping_masters) {
            let masters: Vec<NodeId> = st
                .nodes
                .values()
                .filter(|n| {
                    n.is_master() && n.link_up && n.flags & (MYSELF | HANDSHAKE | PFAIL | FAIL) == 0
                })
                .map(|n| n.id)
                .collect();
            for m in masters {
                st.send_ping(m, PING, now);
            }
        }
        st.me_mut().repl_offset = repl.offset;
        st.failover_cron(now, repl);
        apply_pause(&server, &mut st);
        let upstream = st.desired_upstream();
        cluster.commit(&mut st, &server.log);
        drop(st);
        reconcile_replication(&server, upstream);
        // Shard channels of slots my shard no longer serves: unsubscribed (sunsubscribe push).
        crate::cmd::pubsub::drop_lost_shard_channels(&server);
    }
}

fn server_timeout(server: &Server) -> u64 {
    server.config.read().get_int("cluster-node-timeout").max(1) as u64
}

/// Applies the write pause / unpause the failover logic asked for (manual failover).
pub fn apply_pause(server: &Server, st: &mut State) {
    if let Some(until) = st.fo.todo_pause_until.take() {
        server.repl.pause_writes(until);
    }
    if std::mem::take(&mut st.fo.todo_unpause) {
        server.repl.unpause_writes();
    }
}

/// Points replication at the master the cluster state says we follow (or makes this node a
/// master). `upstream` is [`State::desired_upstream`]: `None` = keep the current replication
/// role (a replica whose master has no known address yet).
pub fn reconcile_replication(server: &Arc<Server>, upstream: Option<Option<(String, u16)>>) {
    let Some(target) = upstream else {
        return;
    };
    if server.repl.master() == target {
        return;
    }
    let replica = target.is_some();
    crate::replication::Replication::set_master(server, target);
    server.log.set_role(if replica { 'S' } else { 'M' });
}

/// Sends a PUBLISH to every node (Redis Cluster delivers PUBLISH cluster-wide). For the
/// pub/sub family to call after local delivery when cluster mode is on.
pub fn broadcast_publish(server: &Server, channel: &[u8], message: &[u8]) {
    let Some(c) = server.cluster.as_ref() else {
        return;
    };
    let mut st = c.state.lock();
    let msg = encode(&Msg {
        hdr: st.my_header(PUBLISH),
        body: Body::Publish(channel.to_vec(), message.to_vec()),
    });
    st.broadcast(PUBLISH, &msg);
}

/// The slots in `claims` that are not in `held` (the claimer's slots in our view), in
/// order: the only ones a claim can change, found a word at a time instead of probing all
/// 16384 slots for every message during a reshard.
fn claimed_elsewhere(claims: &SlotBitmap, held: Option<&SlotBitmap>) -> Vec<u16> {
    let mut out = Vec::new();
    for (wi, &w) in claims.0.iter().enumerate() {
        let mut bits = w & !held.map_or(0, |h| h.0[wi]);
        while bits != 0 {
            out.push((wi * 64) as u16 + bits.trailing_zeros() as u16);
            bits &= bits - 1;
        }
    }
    out
}

#[cfg(test)]
mod claimed_elsewhere_tests {
    use super::*;

    #[test]
    fn only_slots_the_claimer_does_not_hold() {
        let mut claims = SlotBitmap::default();
        let mut held = SlotBitmap::default();
        for s in [0u16, 1, 63, 64, 100, 5000, 16383] {
            claims.set(s);
        }
        for s in [1u16, 64, 7000] {
            held.set(s);
        }
        assert_eq!(
            claimed_elsewhere(&claims, Some(&held)),
            vec![0, 63, 100, 5000, 16383]
        );
        assert_eq!(
            claimed_elsewhere(&claims, None),
            vec![0, 1, 63, 64, 100, 5000, 16383]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Msg {
        let mut slots = SlotBitmap::default();
        slots.set(0);
        slots.set(5000);
        slots.set(16383);
        Msg {
            hdr: Header {
                typ: PING,
                sender: NodeId::random(),
                current_epoch: 7,
                config_epoch: 3,
                repl_offset: 12345,
                port: 7000,
                cport: 17000,
                flags: MASTER,
                state_ok: true,
                ip: "127.0.0.1".into(),
                master: None,
                slots,
            },
            body: Body::Gossip(vec![Gossip {
                id: NodeId::random(),
                ping_sent: 1,
                pong_received: 2,
                ip: "::1".into(),
                port: 7001,
                cport: 17001,
                flags: SLAVE | PFAIL,
            }]),
        }
    }

    #[test]
    fn roundtrip_every_type() {
        let m = sample();
        let b = encode(&m);
        assert_eq!(frame_len(&b), Ok(Some(b.len())));
        assert_eq!(decode(&b), Ok(m.clone()));
        let mut f = m.clone();
        f.hdr.typ = FAIL_MSG;
        f.hdr.master = Some(NodeId::random());
        f.body = Body::Fail(NodeId::random());
        assert_eq!(decode(&encode(&f)), Ok(f.clone()));
        f.hdr.typ = PUBLISH;
        f.body = Body::Publish(b"chan".to_vec(), b"hello\0world".to_vec());
        assert_eq!(decode(&encode(&f)), Ok(f.clone()));
        f.hdr.typ = UPDATE;
        f.body = Body::Update(9, NodeId::random(), Box::new(m.hdr.slots.clone()));
        assert_eq!(decode(&encode(&f)), Ok(f.clone()));
        f.hdr.typ = AUTH_REQUEST;
        f.body = Body::AuthRequest {
            force_ack: true,
            config_epoch: 42,
            slots: Box::new(m.hdr.slots.clone()),
        };
        assert_eq!(decode(&encode(&f)), Ok(f.clone()));
        // An AUTH_REQUEST without its body is rejected.
        let mut short = f.clone();
        short.body = Body::Empty;
        assert!(decode(&encode(&short)).is_err());
        for typ in [AUTH_ACK, MFSTART] {
            f.hdr.typ = typ;
            f.body = Body::Empty;
            assert_eq!(decode(&encode(&f)), Ok(f.clone()));
        }
        // The PAUSED message flag survives the trip.
        f.hdr.flags |= MSGFLAG_PAUSED;
        assert_eq!(decode(&encode(&f)), Ok(f));
    }

    #[test]
    fn malformed_input_never_panics() {
        let good = encode(&sample());
        // Every truncation.
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
            let _ = frame_len(&good[..n]);
        }
        // Every single-byte corruption of the header and body (bounded sample).
        for i in (0..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = decode(&b);
        }
        // Random garbage.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..2000 {
            let n = rng.gen_range(0..3000);
            let mut b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            if n >= 12 && rng.gen_bool(0.5) {
                b[..4].copy_from_slice(MAGIC);
                b[4..6].copy_from_slice(&VERSION.to_be_bytes());
                b[8..12].copy_from_slice(&(n as u32).to_be_bytes());
            }
            let _ = decode(&b);
            let _ = frame_len(&b);
        }
        // Lying lengths.
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(frame_len(&b).is_err());
        let mut b = good.clone();
        b.push(0);
        assert!(decode(&b).is_err());
        assert!(decode(b"SGCB").is_err());
        assert!(frame_len(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn meet_then_pong_completes_handshake() {
        let mut a = State::new(1);
        let mut b = State::new(1);
        a.me_mut().port = 7000;
        a.me_mut().cport = 17000;
        b.me_mut().port = 7001;
        b.me_mut().cport = 17001;
        assert!(a.start_handshake("127.0.0.1", 7001, 17001, true, 1));
        let placeholder = *a
            .nodes
            .keys()
            .find(|k| **k != a.myself)
            .expect("handshake node");
        let meet = a.build_ping(MEET_MSG, Some(placeholder));
        let fx = b.process(decode(&meet).unwrap(), None, "127.0.0.1", "127.0.0.1", 2);
        assert_eq!(b.me().ip, "127.0.0.1");
        assert_eq!(b.nodes.len(), 2);
        let pong = fx.reply.expect("pong");
        a.process(
            decode(&pong).unwrap(),
            Some(placeholder),
            "127.0.0.1",
            "127.0.0.1",
            3,
        );
        assert!(a.nodes.contains_key(&b.myself));
        assert!(!a.nodes[&b.myself].in_handshake());
        assert_eq!(a.nodes[&b.myself].port, 7001);
    }

    #[test]
    fn the_pong_that_completes_a_handshake_carries_the_epochs() {
        let mut a = State::new(1);
        let mut b = State::new(1);
        b.me_mut().port = 7001;
        b.me_mut().cport = 17001;
        b.me_mut().config_epoch = 3;
        b.current_epoch = 6;
        assert!(a.start_handshake("127.0.0.1", 7001, 17001, false, 1));
        let placeholder = *a
            .nodes
            .keys()
            .find(|k| **k != a.myself)
            .expect("handshake node");
        let pong = b.build_ping(PONG, None);
        a.process(
            decode(&pong).unwrap(),
            Some(placeholder),
            "127.0.0.1",
            "127.0.0.1",
            2,
        );
        assert!(!a.nodes[&b.myself].in_handshake());
        // A replica made to follow b right after this must claim b's epoch in its failover
        // requests, not 0 (the voters would deny it).
        assert_eq!(a.nodes[&b.myself].config_epoch, 3);
        assert_eq!(a.current_epoch, 6);
    }

    #[test]
    fn higher_epoch_wins_slots_and_collisions_bump_lower_id() {
        let mut a = State::new(1);
        let mut b = State::new(1);
        let bid = b.myself;
        // a knows b.
        let mut nb = Node::new(bid, MASTER, 1);
        nb.ip = "127.0.0.1".into();
        nb.port = 7001;
        nb.cport = 17001;
        a.nodes.insert(bid, nb);
        let aid = a.myself;
        for s in 0..10 {
            a.add_slot(s, aid);
        }
        a.me_mut().config_epoch = 1;
        b.me_mut().config_epoch = 2;
        a.current_epoch = 2;
        b.current_epoch = 2;
        for s in 5..10 {
            b.add_slot(s, bid);
        }
        let ping = b.build_ping(PING, None);
        let fx = a.process(decode(&ping).unwrap(), None, "127.0.0.1", "127.0.0.1", 5);
        assert_eq!(a.slots[5], Some(bid));
        assert_eq!(a.slots[4], Some(aid));
        assert_eq!(fx.flush_slots, vec![5, 6, 7, 8, 9]);
        // Lower epoch claim is ignored.
        b.me_mut().config_epoch = 0;
        b.add_slot(0, bid);
        let ping = b.build_ping(PING, None);
        a.process(decode(&ping).unwrap(), None, "127.0.0.1", "127.0.0.1", 6);
        assert_eq!(a.slots[0], Some(aid));
        // Collision: same epoch; the smaller ID bumps.
        b.me_mut().config_epoch = a.me().config_epoch;
        let before = a.me().config_epoch;
        let ping = b.build_ping(PING, None);
        a.process(decode(&ping).unwrap(), None, "127.0.0.1", "127.0.0.1", 7);
        if aid < bid {
            assert!(a.me().config_epoch > before);
        } else {
            assert_eq!(a.me().config_epoch, before);
        }
    }
}
