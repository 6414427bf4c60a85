//! Pub/Sub registry: channel and pattern subscriptions, and delivery of messages to the
//! subscribed connections through their push queues.

use crate::client::{ClientHandle, Push};
use crate::glob::glob_match;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A subscriber: client id and its push queue.
type Sub = (u64, Arc<ClientHandle>);

/// All subscriptions of the server.
#[derive(Default)]
pub struct PubSub {
    channels: RwLock<BTreeMap<Bytes, Vec<Sub>>>,
    patterns: RwLock<BTreeMap<Bytes, Vec<Sub>>>,
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
