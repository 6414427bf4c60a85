//! Cluster topology for the direct smart-client mode: the slot → master map read from
//! `CLUSTER SLOTS`, and parsing of `MOVED` / `ASK` redirections.

use anyhow::{anyhow, bail, Result};
use slotgate_protocol::resp::parse_i64;
use slotgate_protocol::{Frame, SLOT_COUNT};

/// Which master serves each slot, as indices into a list of `host:port` addresses.
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// Master addresses; index 0 is the seed when it owns no range.
    pub addrs: Vec<String>,
    /// `slots[s]` indexes `addrs`.
    pub slots: Vec<u32>,
}

impl SlotMap {
    /// Builds the map from a `CLUSTER SLOTS` reply. An empty host means "the node asked",
    /// i.e. `seed_host`. Slots no range covers map to the seed (they answer CLUSTERDOWN, which
    /// is then counted as an error).
    pub fn from_cluster_slots(reply: &Frame, seed: &str, seed_host: &str) -> Result<SlotMap> {
        let Frame::Array(ranges) = reply else {
            bail!("CLUSTER SLOTS: expected an array, got {reply}");
        };
        let mut map = SlotMap {
            addrs: vec![seed.to_string()],
            slots: vec![0; SLOT_COUNT],
        };
        let mut covered = 0usize;
        for r in ranges {
            let Frame::Array(items) = r else {
                bail!("CLUSTER SLOTS: range is not an array: {r}");
            };
            let (Some(Frame::Integer(start)), Some(Frame::Integer(end)), Some(Frame::Array(m))) =
                (items.first(), items.get(1), items.get(2))
            else {
                bail!("CLUSTER SLOTS: malformed range {r}");
            };
            let host = match m.first() {
                Some(f) => String::from_utf8_lossy(f.as_bytes().unwrap_or_default()).into_owned(),
                None => bail!("CLUSTER SLOTS: range without a master: {r}"),
            };
            let Some(Frame::Integer(port)) = m.get(1) else {
                bail!("CLUSTER SLOTS: master without a port: {r}");
            };
            let host = if host.is_empty() || host == "?" {
                seed_host.to_string()
            } else {
                host
            };
            let (start, end) = (*start, *end);
            if start < 0 || end < start || end >= SLOT_COUNT as i64 {
                bail!("CLUSTER SLOTS: bad slot range {start}-{end}");
            }
            let idx = map.index_of(&join_host_port(&host, *port));
            for s in start..=end {
                map.slots[s as usize] = idx;
            }
            covered += (end - start + 1) as usize;
        }
        if covered == 0 {
            bail!("CLUSTER SLOTS: no slot is served (is the cluster set up?)");
        }
        Ok(map)
    }

    /// The index of `addr`, adding it when new.
    pub fn index_of(&mut self, addr: &str) -> u32 {
        if let Some(i) = self.addrs.iter().position(|a| a == addr) {
            return i as u32;
        }
        self.addrs.push(addr.to_string());
        (self.addrs.len() - 1) as u32
    }
}

/// `host:port`, bracketing IPv6 hosts.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A cluster redirection carried by an error reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// `MOVED <slot> <addr>`: the slot lives at `addr` from now on.
    Moved(u16, &'a str),
    /// `ASK <slot> <addr>`: retry this one request at `addr` after `ASKING`.
    Ask(u16, &'a str),
}

/// Parses `MOVED 3999 127.0.0.1:6381` / `ASK ...`; `None` for any other error.
pub fn parse_redirect(msg: &[u8]) -> Option<Redirect<'_>> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next()?;
    let slot = parse_i64(parts.next()?.as_bytes())?;
    let addr = parts.next()?;
    if parts.next().is_some() || !(0..SLOT_COUNT as i64).contains(&slot) || addr.is_empty() {
        return None;
    }
    let slot = slot as u16;
    match kind {
        "MOVED" => Some(Redirect::Moved(slot, addr)),
        "ASK" => Some(Redirect::Ask(slot, addr)),
        _ => None,
    }
}

/// Resolves a redirect address that omits the host (`:6380`) against `seed_host`.
pub fn redirect_addr(addr: &str, seed_host: &str) -> String {
    if let Some(port) = addr.strip_prefix(':') {
        format!("{seed_host}:{port}")
    } else {
        addr.to_string()
    }
}

/// Reads `CLUSTER SLOTS` from `seed` over a fresh connection.
pub async fn fetch_slot_map(seed: &str, seed_host: &str) -> Result<SlotMap> {
    let mut c = crate::conn::SimpleConn::connect(seed).await?;
    let reply = c.call(&[&b"CLUSTER"[..], b"SLOTS"]).await?;
    if let Frame::Error(e) = &reply {
        return Err(anyhow!(
            "CLUSTER SLOTS on {seed} failed: {} (is it a cluster node?)",
            String::from_utf8_lossy(e)
        ));
    }
    SlotMap::from_cluster_slots(&reply, seed, seed_host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn node(host: &str, port: i64) -> Frame {
        Frame::Array(vec![
            Frame::Bulk(Bytes::copy_from_slice(host.as_bytes())),
            Frame::Integer(port),
            Frame::bulk("id"),
        ])
    }

    #[test]
    fn slot_map_from_reply() {
        let reply = Frame::Array(vec![
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(8191),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Frame::Array(vec![
                Frame::Integer(8192),
                Frame::Integer(16383),
                node("", 7001),
            ]),
        ]);
        let m = SlotMap::from_cluster_slots(&reply, "127.0.0.1:7000", "127.0.0.1")
            .expect("valid reply");
        assert_eq!(m.addrs, vec!["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert_eq!(m.slots[0], 0);
        assert_eq!(m.slots[8191], 0);
        assert_eq!(m.slots[8192], 1);
        assert_eq!(m.slots[16383], 1);
        assert!(SlotMap::from_cluster_slots(&Frame::Array(vec![]), "a:1", "a").is_err());
        assert!(SlotMap::from_cluster_slots(&Frame::Integer(1), "a:1", "a").is_err());
    }

    #[test]
    fn redirects() {
        assert_eq!(
            parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved(3999, "127.0.0.1:6381"))
        );
        assert_eq!(
            parse_redirect(b"ASK 1 127.0.0.1:6382"),
            Some(Redirect::Ask(1, "127.0.0.1:6382"))
        );
        assert_eq!(parse_redirect(b"MOVED 99999 a:1"), None);
        assert_eq!(parse_redirect(b"ERR nope"), None);
        assert_eq!(redirect_addr(":7001", "127.0.0.1"), "127.0.0.1:7001");
        assert_eq!(redirect_addr("h:1", "x"), "h:1");
    }
}
