//! The slot map: which node serves each of the 16384 slots, built from CLUSTER SLOTS.
//!
//! A map is immutable once built; the router swaps in a new one (`ArcSwap`) on refresh, and
//! a MOVED patches a copy of the current one. Readers never lock.

use bytes::Bytes;
use slotgate_protocol::{Frame, SLOT_COUNT};
use std::sync::Arc;

/// Marker for a slot no node serves.
pub const UNASSIGNED: u16 = u16::MAX;

/// One shard: a master and its replicas (addresses `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Master address.
    pub master: Arc<str>,
    /// Master node id (may be empty when the server did not report one).
    pub master_id: Arc<str>,
    /// Replica addresses.
    pub replicas: Vec<Arc<str>>,
}

/// The map from slot to shard.
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// Shard index per slot ([`UNASSIGNED`] when not served).
    pub slots: Box<[u16]>,
    /// The shards.
    pub shards: Vec<Shard>,
    /// Increases with every new map (metrics, logs).
    pub version: u64,
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            slots: vec![UNASSIGNED; SLOT_COUNT].into_boxed_slice(),
            shards: Vec::new(),
            version: 0,
        }
    }
}

/// Why a CLUSTER SLOTS reply could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The reply was an error (e.g. the node is not in cluster mode).
    #[error("{0}")]
    Server(String),
    /// The reply did not have CLUSTER SLOTS's shape.
    #[error("unexpected CLUSTER SLOTS reply: {0}")]
    Shape(&'static str),
}

fn node_addr(f: &Frame, seed_host: &str) -> Result<(Arc<str>, Arc<str>), MapError> {
    let Frame::Array(parts) = f else {
        return Err(MapError::Shape("node entry is not an array"));
    };
    let host = match parts.first() {
        Some(Frame::Bulk(h)) | Some(Frame::Simple(h)) => String::from_utf8_lossy(h).into_owned(),
        _ => return Err(MapError::Shape("node host")),
    };
    let port = match parts.get(1) {
        Some(Frame::Integer(p)) => *p,
        _ => return Err(MapError::Shape("node port")),
    };
    let id = match parts.get(2) {
        Some(Frame::Bulk(i)) => String::from_utf8_lossy(i).into_owned(),
        _ => String::new(),
    };
    // An empty or "?" host means "the address you reached me on".
    let host = if host.is_empty() || host == "?" {
        seed_host.to_string()
    } else {
        host
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((addr.into(), id.into()))
}

impl SlotMap {
    /// Builds a map from a CLUSTER SLOTS reply obtained from `seed_host`.
    pub fn from_cluster_slots(
        reply: &Frame,
        seed_host: &str,
        version: u64,
    ) -> Result<SlotMap, MapError> {
        let entries = match reply {
            Frame::Array(e) => e,
            Frame::Error(e) => {
                return Err(MapError::Server(String::from_utf8_lossy(e).into_owned()))
            }
            _ => return Err(MapError::Shape("not an array")),
        };
        let mut map = SlotMap {
            version,
            ..SlotMap::default()
        };
        for e in entries {
            let Frame::Array(parts) = e else {
                return Err(MapError::Shape("entry is not an array"));
            };
            if parts.len() < 3 {
                return Err(MapError::Shape("entry too short"));
            }
            let (Frame::Integer(start), Frame::Integer(end)) = (&parts[0], &parts[1]) else {
                return Err(MapError::Shape("slot range"));
            };
            let (start, end) = (*start, *end);
            if start < 0 || end < start || end >= SLOT_COUNT as i64 {
                return Err(MapError::Shape("slot range out of bounds"));
            }
            let (master, master_id) = node_addr(&parts[2], seed_host)?;
            let mut replicas = Vec::new();
            for r in &parts[3..] {
                replicas.push(node_addr(r, seed_host)?.0);
            }
            let shard = Shard {
                master,
                master_id,
                replicas,
            };
            let idx = match map.shards.iter().position(|s| s.master == shard.master) {
                Some(i) => i,
                None => {
                    map.shards.push(shard);
                    map.shards.len() - 1
                }
            };
            for s in start..=end {
                map.slots[s as usize] = idx as u16;
            }
        }
        Ok(map)
    }

    /// The master address serving `slot`.
    pub fn master_of(&self, slot: u16) -> Option<&Arc<str>> {
        let i = *self.slots.get(slot as usize)?;
        self.shards.get(i as usize).map(|s| &s.master)
    }

    /// A copy with `slot` moved to `addr` (MOVED), adding a shard for an unknown node.
    pub fn with_moved(&self, slot: u16, addr: &str) -> SlotMap {
        let mut m = self.clone();
        let idx = match m.shards.iter().position(|s| &*s.master == addr) {
            Some(i) => i,
            None => {
                m.shards.push(Shard {
                    master: addr.into(),
                    master_id: "".into(),
                    replicas: Vec::new(),
                });
                m.shards.len() - 1
            }
        };
        if (slot as usize) < m.slots.len() {
            m.slots[slot as usize] = idx as u16;
        }
        m.version += 1;
        m
    }

    /// Distinct master addresses that serve at least one slot.
    pub fn masters(&self) -> Vec<Arc<str>> {
        let mut used = vec![false; self.shards.len()];
        for &s in self.slots.iter() {
            if let Some(u) = used.get_mut(s as usize) {
                *u = true;
            }
        }
        self.shards
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(s, _)| s.master.clone())
            .collect()
    }

    /// Number of slots with an owner.
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|&&s| s != UNASSIGNED).count()
    }
}

/// Parses `-MOVED 3999 127.0.0.1:6381` / `-ASK ...` into (slot, address) using the last `:`.
pub fn parse_redirect(err: &[u8]) -> Option<(bool, u16, String)> {
    let s = std::str::from_utf8(err).ok()?;
    let mut it = s.split_ascii_whitespace();
    let kind = it.next()?;
    let ask = match kind {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot: u16 = it.next()?.parse().ok()?;
    let addr = it.next()?;
    let colon = addr.rfind(':')?;
    let (host, port) = (&addr[..colon], &addr[colon + 1..]);
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Some((ask, slot, format!("{host}:{port}")))
}

/// The error text of a raw RESP error frame (`-ERR x\r\n` → `ERR x`).
pub fn error_text(raw: &Bytes) -> Option<&[u8]> {
    if raw.first() == Some(&b'-') && raw.len() >= 3 {
        Some(&raw[1..raw.len() - 2])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64, id: &str) -> Frame {
        Frame::Array(vec![
            Frame::Bulk("127.0.0.1".into()),
            Frame::Integer(port),
            Frame::Bulk(Bytes::copy_from_slice(id.as_bytes())),
        ])
    }

    #[test]
    fn builds_from_cluster_slots() {
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(5460),
                node(7000, "a"),
                node(7003, "d"),
            ]),
            Frame::Array(vec![
                Frame::Integer(5461),
                Frame::Integer(10922),
                node(7001, "b"),
            ]),
            Frame::Array(vec![
                Frame::Integer(10923),
                Frame::Integer(16383),
                node(7002, "c"),
            ]),
        ]);
        let m = SlotMap::from_cluster_slots(&reply, "127.0.0.1", 1).unwrap();
        assert_eq!(m.covered(), 16384);
        assert_eq!(m.master_of(0).map(|s| &**s), Some("127.0.0.1:7000"));
        assert_eq!(m.master_of(12182).map(|s| &**s), Some("127.0.0.1:7002"));
        assert_eq!(m.shards[0].replicas.len(), 1);
        let m2 = m.with_moved(12182, "127.0.0.1:7009");
        assert_eq!(m2.master_of(12182).map(|s| &**s), Some("127.0.0.1:7009"));
        assert_eq!(m2.masters().len(), 4);
    }

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect(b"MOVED 12182 127.0.0.1:7002"),
            Some((false, 12182, "127.0.0.1:7002".into()))
        );
        assert_eq!(
            parse_redirect(b"ASK 1 ::1:7002"),
            Some((true, 1, "::1:7002".into()))
        );
        assert_eq!(parse_redirect(b"ERR x"), None);
    }
}
