//! Pub/Sub registry: channel and pattern subscriptions, shard-channel subscriptions (a
//! namespace apart, as in Redis 7.0), and delivery of messages to the subscribed connections
//! through their push queues.

use crate::client::{ClientHandle, Push};
use crate::glob::glob_match;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A subscriber: client id and its push queue.
type Sub = (u64, Arc<ClientHandle>);

/// Shard-channel subscriptions.
#[derive(Default)]
struct Shard {
    /// Shard channel → subscribers.
    channels: BTreeMap<Bytes, Vec<Arc<ClientHandle>>>,
    /// Client id → its shard channels.
    clients: HashMap<u64, BTreeSet<Bytes>>,
}

impl Shard {
    /// Forgets subscribers whose connection has gone (their push queue is closed).
    fn purge_dead(&mut self) {
        let mut dead = Vec::new();
        self.channels.retain(|_, subs| {
            subs.retain(|h| {
                let gone = h.push.is_closed();
                if gone {
                    dead.push(h.id);
                }
                !gone
            });
            !subs.is_empty()
        });
        for id in dead {
            self.clients.remove(&id);
        }
    }

    /// Removes one subscription; returns the client's remaining count.
    fn remove(&mut self, channel: &[u8], id: u64) -> usize {
        let left = match self.clients.get_mut(&id) {
            Some(set) => {
                set.remove(channel);
                set.len()
            }
            None => 0,
        };
        if left == 0 {
            self.clients.remove(&id);
        }
        if let Some(v) = self.channels.get_mut(channel) {
            v.retain(|h| h.id != id);
            if v.is_empty() {
                self.channels.remove(channel);
            }
        }
        left
    }
}

/// All subscriptions of the server.
#[derive(Default)]
pub struct PubSub {
    channels: RwLock<BTreeMap<Bytes, Vec<Sub>>>,
    patterns: RwLock<BTreeMap<Bytes, Vec<Sub>>>,
    shard: Mutex<Shard>,
    /// Cluster mode: per slot with shard subscribers, its owner at the last check and whether
    /// my shard (myself or my master) served it then (see `cmd::pubsub`).
    pub shard_seen: Mutex<HashMap<u16, (Option<crate::cluster::NodeId>, bool)>>,
}

fn add(map: &RwLock<BTreeMap<Bytes, Vec<Sub>>>, name: &Bytes, id: u64, tx: &Arc<ClientHandle>) {
    let mut m = map.write();
    let v = m.entry(name.clone()).or_default();
    if !v.iter().any(|(i, _)| *i == id) {
        v.push((id, tx.clone()));
    }
}

fn remove(map: &RwLock<BTreeMap<Bytes, Vec<Sub>>>, name: &[u8], id: u64) {
    let mut m = map.write();
    if let Some(v) = m.get_mut(name) {
        v.retain(|(i, _)| *i != id);
        if v.is_empty() {
            m.remove(name);
        }
    }
}

impl PubSub {
    /// Subscribes client `id` to `channel`.
    pub fn subscribe(&self, channel: &Bytes, id: u64, tx: &Arc<ClientHandle>) {
        add(&self.channels, channel, id, tx);
    }

    /// Unsubscribes client `id` from `channel`.
    pub fn unsubscribe(&self, channel: &[u8], id: u64) {
        remove(&self.channels, channel, id);
    }

    /// Subscribes client `id` to `pattern`.
    pub fn psubscribe(&self, pattern: &Bytes, id: u64, tx: &Arc<ClientHandle>) {
        add(&self.patterns, pattern, id, tx);
    }

    /// Unsubscribes client `id` from `pattern`.
    pub fn punsubscribe(&self, pattern: &[u8], id: u64) {
        remove(&self.patterns, pattern, id);
    }

    /// Delivers a message; returns the number of receivers (PUBLISH's reply).
    /// A subscriber whose queue is full is disconnected (output buffer limit), as Redis does.
    pub fn publish(&self, channel: &Bytes, message: &Bytes) -> i64 {
        let mut n = 0;
        if let Some(subs) = self.channels.read().get(channel) {
            for (_, tx) in subs {
                if deliver(
                    tx,
                    Push::Message {
                        channel: channel.clone(),
                        data: message.clone(),
                    },
                ) {
                    n += 1;
                }
            }
        }
        for (pat, subs) in self.patterns.read().iter() {
            if glob_match(pat, channel, false) {
                for (_, tx) in subs {
                    if deliver(
                        tx,
                        Push::PMessage {
                            pattern: pat.clone(),
                            channel: channel.clone(),
                            data: message.clone(),
                        },
                    ) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Subscribes client `h` to shard channel `channel`; returns its shard channel count.
    pub fn ssubscribe(&self, channel: &[u8], h: &Arc<ClientHandle>) -> usize {
        let mut r = self.shard.lock();
        let set = r.clients.entry(h.id).or_default();
        if !set.contains(channel) {
            let owned = Bytes::copy_from_slice(channel);
            set.insert(owned.clone());
            r.channels.entry(owned).or_default().push(h.clone());
        }
        let n = r.clients.get(&h.id).map_or(0, |s| s.len());
        h.ssubs.store(n, Ordering::Relaxed);
        n
    }

    /// Unsubscribes client `h` from shard channel `channel`; returns its remaining count.
    pub fn sunsubscribe(&self, channel: &[u8], h: &ClientHandle) -> usize {
        let n = self.shard.lock().remove(channel, h.id);
        h.ssubs.store(n, Ordering::Relaxed);
        n
    }

    /// The shard channels of client `id`.
    pub fn shard_channels_of(&self, id: u64) -> Vec<Bytes> {
        self.shard
            .lock()
            .clients
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every shard subscription of client `id` (RESET, disconnect).
    pub fn drop_shard_client(&self, id: u64) {
        let mut r = self.shard.lock();
        if let Some(set) = r.clients.remove(&id) {
            for ch in set {
                if let Some(v) = r.channels.get_mut(&ch) {
                    if let Some(h) = v.iter().find(|h| h.id == id) {
                        h.ssubs.store(0, Ordering::Relaxed);
                    }
                    v.retain(|h| h.id != id);
                    if v.is_empty() {
                        r.channels.remove(&ch);
                    }
                }
            }
        }
    }

    /// Delivers a shard-channel message (`smessage`) to this server's subscribers; returns
    /// their number (SPUBLISH's reply counts local subscribers only, as in Redis).
    pub fn spublish(&self, channel: &Bytes, message: &Bytes) -> i64 {
        let targets: Vec<Arc<ClientHandle>> = {
            let mut r = self.shard.lock();
            let mut gone = false;
            let subs = match r.channels.get_mut(channel) {
                Some(v) => {
                    v.retain(|h| {
                        let closed = h.push.is_closed();
                        gone |= closed;
                        !closed
                    });
                    v.clone()
                }
                None => Vec::new(),
            };
            if gone {
                r.purge_dead();
            }
            subs
        };
        let mut n = 0;
        for h in targets {
            let p = Push::SMessage {
                channel: channel.clone(),
                data: message.clone(),
            };
            if deliver(&h, p) {
                n += 1;
            }
        }
        n
    }

    /// Active shard channels, optionally filtered by a glob (PUBSUB SHARDCHANNELS).
    pub fn shard_channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let mut r = self.shard.lock();
        r.purge_dead();
        r.channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    /// Subscriber count of a shard channel (PUBSUB SHARDNUMSUB).
    pub fn shard_numsub(&self, channel: &[u8]) -> usize {
        let mut r = self.shard.lock();
        r.purge_dead();
        r.channels.get(channel).map_or(0, |v| v.len())
    }

    /// Number of active shard channels (INFO `pubsubshard_channels`).
    pub fn shard_channel_count(&self) -> usize {
        let mut r = self.shard.lock();
        r.purge_dead();
        r.channels.len()
    }

    /// The slots that have shard channel subscribers.
    pub fn shard_slots(&self) -> BTreeSet<u16> {
        self.shard
            .lock()
            .channels
            .keys()
            .map(|c| slotgate_protocol::key_slot(c))
            .collect()
    }

    /// Unsubscribes every client from the shard channels of `slot`, telling each with an
    /// `sunsubscribe` push (what Redis does when the node stops serving the slot).
    pub fn drop_shard_slot(&self, slot: u16) {
        let mut pushes = Vec::new();
        {
            let mut r = self.shard.lock();
            let chans: Vec<Bytes> = r
                .channels
                .keys()
                .filter(|c| slotgate_protocol::key_slot(c) == slot)
                .cloned()
                .collect();
            for ch in chans {
                let subs = r.channels.get(&ch).cloned().unwrap_or_default();
                for h in subs {
                    let left = r.remove(&ch, h.id);
                    h.ssubs.store(left, Ordering::Relaxed);
                    pushes.push((h, ch.clone(), left));
                }
                r.channels.remove(&ch);
            }
        }
        for (h, channel, count) in pushes {
            if count == 0 && h.subs.load(Ordering::Relaxed) + h.psubs.load(Ordering::Relaxed) == 0 {
                let mut f = h.flags.lock();
                if f.as_str() == "P" {
                    f.replace_range(.., "N");
                }
            }
            deliver(&h, Push::SUnsubscribed { channel, count });
        }
    }

    /// Active channels, optionally filtered by a glob (PUBSUB CHANNELS).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.channels
            .read()
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    /// Subscriber count of a channel (PUBSUB NUMSUB).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.channels.read().get(channel).map_or(0, |v| v.len())
    }

    /// Number of distinct patterns (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        self.patterns.read().len()
    }
}

fn deliver(client: &ClientHandle, p: Push) -> bool {
    match client.push.try_send(p) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            // Over the pub/sub output limit: the connection is closed, as Redis does.
            client.kill();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
