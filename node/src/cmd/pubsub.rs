//! Pub/Sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB, and the
//! shard flavour SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH.
//!
//! Channel and pattern subscriptions live in the server's registry (`server.pubsub`) and in the
//! client's `channels`/`patterns` sets; both are kept in sync here (and the `subs`/`psubs`
//! counters CLIENT LIST shows). Confirmations are push frames in RESP3, arrays in RESP2.
//!
//! Shard channels are a separate namespace, as in Redis 7.0. The shared registry and client
//! state have no slot for them yet, so they are kept in a private registry in this file;
//! until `Push` gains an `SMessage` variant, their messages are delivered as `message` pushes.

use super::{Ctx, Handler, Outcome};
use crate::client::{ClientHandle, Push};
use crate::server::Server;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("subscribe", subscribe),
    ("unsubscribe", unsubscribe),
    ("psubscribe", psubscribe),
    ("punsubscribe", punsubscribe),
    ("publish", publish),
    ("pubsub", pubsub),
    ("ssubscribe", ssubscribe),
    ("sunsubscribe", sunsubscribe),
    ("spublish", spublish),
];

/// Writes one subscription confirmation: `[kind, name|nil, count]`.
fn confirm(ctx: &mut Ctx, kind: &[u8], name: Option<&[u8]>, count: usize) {
    ctx.out.push(3);
    ctx.out.bulk(kind);
    ctx.out.opt_bulk(name);
    ctx.out.int(count as i64);
}

/// Channel + pattern subscriptions of the client (the count SUBSCRIBE & co. reply).
fn sub_count(ctx: &Ctx) -> usize {
    ctx.client.channels.len() + ctx.client.patterns.len()
}

/// Updates the CLIENT LIST counters and the `P` flag after a subscription change.
fn sync_handle(ctx: &mut Ctx) {
    let h = &ctx.client.handle;
    h.subs.store(ctx.client.channels.len(), Ordering::Relaxed);
    h.psubs.store(ctx.client.patterns.len(), Ordering::Relaxed);
    let subscribed = ctx.client.in_pubsub() || shard_count_of(ctx.server, h.id) > 0;
    let mut flags = h.flags.lock();
    if subscribed && flags.as_str() == "N" {
        flags.replace_range(.., "P");
    } else if !subscribed && flags.as_str() == "P" {
        flags.replace_range(.., "N");
    }
}

fn subscribe(ctx: &mut Ctx) -> Outcome {
    let id = ctx.client.handle.id;
    for i in 1..ctx.args.len() {
        let ch = &ctx.args[i];
        if !ctx.client.channels.contains(&ch[..]) {
            let owned = Bytes::copy_from_slice(ch);
            ctx.server.pubsub.subscribe(&owned, id, &ctx.client.handle);
            ctx.client.channels.insert(owned);
        }
        let n = sub_count(ctx);
        confirm(ctx, b"subscribe", Some(&ctx.args[i]), n);
    }
    sync_handle(ctx);
    Outcome::Done
}

fn unsubscribe(ctx: &mut Ctx) -> Outcome {
    let id = ctx.client.handle.id;
    if ctx.args.len() == 1 {
        let all = std::mem::take(&mut ctx.client.channels);
        if all.is_empty() {
            let n = sub_count(ctx);
            confirm(ctx, b"unsubscribe", None, n);
        }
        let mut left = all.len();
        for ch in all {
            ctx.server.pubsub.unsubscribe(&ch, id);
            left -= 1;
            let n = left + ctx.client.patterns.len();
            confirm(ctx, b"unsubscribe", Some(&ch), n);
        }
    } else {
        for i in 1..ctx.args.len() {
            if ctx.client.channels.remove(&ctx.args[i][..]) {
                ctx.server.pubsub.unsubscribe(&ctx.args[i], id);
            }
            let n = sub_count(ctx);
            confirm(ctx, b"unsubscribe", Some(&ctx.args[i]), n);
        }
    }
    sync_handle(ctx);
    Outcome::Done
}

fn psubscribe(ctx: &mut Ctx) -> Outcome {
    let id = ctx.client.handle.id;
    for i in 1..ctx.args.len() {
        let p = &ctx.args[i];
        if !ctx.client.patterns.contains(&p[..]) {
            let owned = Bytes::copy_from_slice(p);
            ctx.server.pubsub.psubscribe(&owned, id, &ctx.client.handle);
            ctx.client.patterns.insert(owned);
        }
        let n = sub_count(ctx);
        confirm(ctx, b"psubscribe", Some(&ctx.args[i]), n);
    }
    sync_handle(ctx);
    Outcome::Done
}

fn punsubscribe(ctx: &mut Ctx) -> Outcome {
    let id = ctx.client.handle.id;
    if ctx.args.len() == 1 {
        let all = std::mem::take(&mut ctx.client.patterns);
        if all.is_empty() {
            let n = sub_count(ctx);
            confirm(ctx, b"punsubscribe", None, n);
        }
        let mut left = all.len();
        for p in all {
            ctx.server.pubsub.punsubscribe(&p, id);
            left -= 1;
            let n = left + ctx.client.channels.len();
            confirm(ctx, b"punsubscribe", Some(&p), n);
        }
    } else {
        for i in 1..ctx.args.len() {
            if ctx.client.patterns.remove(&ctx.args[i][..]) {
                ctx.server.pubsub.punsubscribe(&ctx.args[i], id);
            }
            let n = sub_count(ctx);
            confirm(ctx, b"punsubscribe", Some(&ctx.args[i]), n);
        }
    }
    sync_handle(ctx);
    Outcome::Done
}

fn publish(ctx: &mut Ctx) -> Outcome {
    // Owned copies: the request's bytes must not be pinned by subscribers' queues.
    let channel = Bytes::copy_from_slice(&ctx.args[1]);
    let message = Bytes::copy_from_slice(&ctx.args[2]);
    let n = ctx.server.pubsub.publish(&channel, &message);
    // Cluster mode: every other node delivers it to its own subscribers too.
    crate::cluster::bus::broadcast_publish(ctx.server, &channel, &message);
    ctx.out.int(n);
    Outcome::Done
}

fn pubsub(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    let argc = ctx.args.len();
    match (sub.as_slice(), argc) {
        (b"channels", 2 | 3) => {
            let list = ctx.server.pubsub.channels(ctx.args.get(2).map(|p| &p[..]));
            ctx.out.array(list.len());
            for c in list {
                ctx.out.bulk(&c);
            }
        }
        (b"numsub", _) => {
            ctx.out.array((argc - 2) * 2);
            for i in 2..argc {
                let n = ctx.server.pubsub.numsub(&ctx.args[i]);
                ctx.out.bulk(&ctx.args[i]);
                ctx.out.int(n as i64);
            }
        }
        (b"numpat", 2) => ctx.out.int(ctx.server.pubsub.numpat() as i64),
        (b"shardchannels", 2 | 3) => {
            let pat = ctx.args.get(2).cloned();
            let list = with_shards(ctx.server, |r| {
                r.purge_dead();
                r.channels
                    .keys()
                    .filter(|c| {
                        pat.as_ref()
                            .is_none_or(|p| crate::glob::glob_match(p, c, false))
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            });
            ctx.out.array(list.len());
            for c in list {
                ctx.out.bulk(&c);
            }
        }
        (b"shardnumsub", _) => {
            let counts = with_shards(ctx.server, |r| {
                r.purge_dead();
                ctx.args[2..]
                    .iter()
                    .map(|c| r.channels.get(&c[..]).map_or(0, |v| v.len()))
                    .collect::<Vec<_>>()
            });
            ctx.out.array(counts.len() * 2);
            for (i, n) in counts.into_iter().enumerate() {
                ctx.out.bulk(&ctx.args[i + 2]);
                ctx.out.int(n as i64);
            }
        }
        (b"help", 2) => {
            let lines = [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
                "HELP",
                "    Prints this help.",
            ];
            ctx.out.array(lines.len());
            for l in lines {
                ctx.out.simple(l);
            }
        }
        (b"channels" | b"shardchannels", _) => {
            let msg = format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&ctx.args[1])
            );
            ctx.out.error(&msg);
        }
        _ => {
            let msg = format!(
                "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&ctx.args[1])
            );
            ctx.out.error(&msg);
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Shard channels
// ---------------------------------------------------------------------------------------------

/// Shard-channel subscriptions of one server.
#[derive(Default)]
struct ShardSubs {
    /// Channel → subscribers.
    channels: BTreeMap<Bytes, Vec<Arc<ClientHandle>>>,
    /// Client id → its shard channels.
    clients: HashMap<u64, BTreeSet<Bytes>>,
}

impl ShardSubs {
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

    fn remove(&mut self, channel: &[u8], id: u64) -> bool {
        let removed = self
            .clients
            .get_mut(&id)
            .is_some_and(|set| set.remove(channel));
        if self.clients.get(&id).is_some_and(|s| s.is_empty()) {
            self.clients.remove(&id);
        }
        if let Some(v) = self.channels.get_mut(channel) {
            v.retain(|h| h.id != id);
            if v.is_empty() {
                self.channels.remove(channel);
            }
        }
        removed
    }
}

/// Runs `f` on the shard registry of `server` (one per server instance in the process).
fn with_shards<R>(server: &Server, f: impl FnOnce(&mut ShardSubs) -> R) -> R {
    static ALL: OnceLock<Mutex<HashMap<usize, ShardSubs>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock();
    f(all.entry(server as *const Server as usize).or_default())
}

fn shard_count_of(server: &Server, id: u64) -> usize {
    with_shards(server, |r| r.clients.get(&id).map_or(0, |s| s.len()))
}

/// Number of active shard channels (INFO `pubsubshard_channels`).
pub fn shard_channel_count(server: &Server) -> usize {
    with_shards(server, |r| {
        r.purge_dead();
        r.channels.len()
    })
}

/// Drops every shard subscription of client `id` (RESET; disconnects are purged lazily).
pub fn drop_shard_subscriptions(server: &Server, id: u64) {
    with_shards(server, |r| {
        if let Some(set) = r.clients.remove(&id) {
            for ch in set {
                if let Some(v) = r.channels.get_mut(&ch) {
                    v.retain(|h| h.id != id);
                    if v.is_empty() {
                        r.channels.remove(&ch);
                    }
                }
            }
        }
    });
}

fn ssubscribe(ctx: &mut Ctx) -> Outcome {
    let handle = ctx.client.handle.clone();
    for i in 1..ctx.args.len() {
        let n = with_shards(ctx.server, |r| {
            let set = r.clients.entry(handle.id).or_default();
            if !set.contains(&ctx.args[i][..]) {
                let owned = Bytes::copy_from_slice(&ctx.args[i]);
                set.insert(owned.clone());
                r.channels.entry(owned).or_default().push(handle.clone());
            }
            r.clients.get(&handle.id).map_or(0, |s| s.len())
        });
        confirm(ctx, b"ssubscribe", Some(&ctx.args[i]), n);
    }
    sync_handle(ctx);
    Outcome::Done
}

fn sunsubscribe(ctx: &mut Ctx) -> Outcome {
    let id = ctx.client.handle.id;
    if ctx.args.len() == 1 {
        let all = with_shards(ctx.server, |r| {
            r.clients.get(&id).cloned().unwrap_or_default()
        });
        if all.is_empty() {
            confirm(ctx, b"sunsubscribe", None, 0);
        }
        for ch in all {
            let n = with_shards(ctx.server, |r| {
                r.remove(&ch, id);
                r.clients.get(&id).map_or(0, |s| s.len())
            });
            confirm(ctx, b"sunsubscribe", Some(&ch), n);
        }
    } else {
        for i in 1..ctx.args.len() {
            let n = with_shards(ctx.server, |r| {
                r.remove(&ctx.args[i], id);
                r.clients.get(&id).map_or(0, |s| s.len())
            });
            confirm(ctx, b"sunsubscribe", Some(&ctx.args[i]), n);
        }
    }
    sync_handle(ctx);
    Outcome::Done
}

fn spublish(ctx: &mut Ctx) -> Outcome {
    let channel = Bytes::copy_from_slice(&ctx.args[1]);
    let message = Bytes::copy_from_slice(&ctx.args[2]);
    let targets: Vec<Arc<ClientHandle>> = with_shards(ctx.server, |r| {
        let mut gone = false;
        let subs = match r.channels.get_mut(&channel) {
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
    });
    let mut n = 0;
    for h in targets {
        let p = Push::Message {
            channel: channel.clone(),
            data: message.clone(),
        };
        match h.push.try_send(p) {
            Ok(()) => n += 1,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => h.kill(),
            Err(_) => {}
        }
    }
    ctx.out.int(n);
    Outcome::Done
}
