//! Pub/Sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB, and the
//! shard flavour SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH.
//!
//! Channel and pattern subscriptions live in the server's registry (`server.pubsub`) and in the
//! client's `channels`/`patterns` sets; both are kept in sync here (and the `subs`/`psubs`
//! counters CLIENT LIST shows). Confirmations are push frames in RESP3, arrays in RESP2.
//!
//! Shard channels are a separate namespace, as in Redis 7.0: their messages are `smessage`
//! pushes; in cluster mode SPUBLISH reaches the subscribers of every node of the slot's shard
//! (owner and replicas, through PUBLISHSHARD bus messages), and a node whose shard stops
//! serving a slot unsubscribes that slot's shard channels with an `sunsubscribe` push.

use super::{Ctx, Handler, Outcome};
use crate::cluster::NodeId;
use crate::server::Server;
use bytes::Bytes;
use std::sync::atomic::Ordering;

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
    let subscribed = ctx.client.in_pubsub();
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
            let list = ctx
                .server
                .pubsub
                .shard_channels(ctx.args.get(2).map(|p| &p[..]));
            ctx.out.array(list.len());
            for c in list {
                ctx.out.bulk(&c);
            }
        }
        (b"shardnumsub", _) => {
            let counts: Vec<usize> = ctx.args[2..]
                .iter()
                .map(|c| ctx.server.pubsub.shard_numsub(c))
                .collect();
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

/// Number of active shard channels (INFO `pubsubshard_channels`).
pub fn shard_channel_count(server: &Server) -> usize {
    server.pubsub.shard_channel_count()
}

/// Drops every shard subscription of client `id` (RESET).
pub fn drop_shard_subscriptions(server: &Server, id: u64) {
    server.pubsub.drop_shard_client(id);
}

fn ssubscribe(ctx: &mut Ctx) -> Outcome {
    let handle = ctx.client.handle.clone();
    if let (Some(c), Some(ch)) = (ctx.server.cluster.as_ref(), ctx.args.get(1)) {
        // Remember who serves the slot now: losing it later unsubscribes (see below).
        let slot = slotgate_protocol::key_slot(ch);
        let view = slot_view(&c.state.lock(), slot);
        ctx.server
            .pubsub
            .shard_seen
            .lock()
            .entry(slot)
            .or_insert(view);
    }
    for i in 1..ctx.args.len() {
        let n = ctx.server.pubsub.ssubscribe(&ctx.args[i], &handle);
        confirm(ctx, b"ssubscribe", Some(&ctx.args[i]), n);
    }
    sync_handle(ctx);
    Outcome::Done
}

fn sunsubscribe(ctx: &mut Ctx) -> Outcome {
    let handle = ctx.client.handle.clone();
    if ctx.args.len() == 1 {
        let all = ctx.server.pubsub.shard_channels_of(handle.id);
        if all.is_empty() {
            confirm(ctx, b"sunsubscribe", None, 0);
        }
        for ch in all {
            let n = ctx.server.pubsub.sunsubscribe(&ch, &handle);
            confirm(ctx, b"sunsubscribe", Some(&ch), n);
        }
    } else {
        for i in 1..ctx.args.len() {
            let n = ctx.server.pubsub.sunsubscribe(&ctx.args[i], &handle);
            confirm(ctx, b"sunsubscribe", Some(&ctx.args[i]), n);
        }
    }
    sync_handle(ctx);
    Outcome::Done
}

fn spublish(ctx: &mut Ctx) -> Outcome {
    let channel = Bytes::copy_from_slice(&ctx.args[1]);
    let message = Bytes::copy_from_slice(&ctx.args[2]);
    let n = ctx.server.pubsub.spublish(&channel, &message);
    propagate_spublish(ctx.server, &channel, &message);
    ctx.out.int(n);
    Outcome::Done
}

/// Cluster mode: sends an SPUBLISH to the other nodes of my shard (my master or myself, and
/// its replicas) as a PUBLISHSHARD bus message, as Redis 7.0 does; they deliver it to their
/// own subscribers.
fn propagate_spublish(server: &Server, channel: &[u8], message: &[u8]) {
    use crate::cluster::bus;
    let Some(c) = server.cluster.as_ref() else {
        return;
    };
    let mut st = c.state.lock();
    let me = st.myself;
    let master = st.my_master().unwrap_or(me);
    let mut targets = st.replicas_of(master);
    targets.push(master);
    targets.retain(|id| *id != me);
    if targets.is_empty() {
        return;
    }
    let msg = bus::encode(&bus::Msg {
        hdr: st.my_header(bus::PUBLISHSHARD),
        body: bus::Body::Publish(channel.to_vec(), message.to_vec()),
    });
    let mut sent = 0;
    for id in targets {
        if let Some(l) = st.nodes.get(&id).and_then(|n| n.link.as_ref()) {
            if l.try_send(msg.clone()).is_ok() {
                sent += 1;
            }
        }
    }
    st.stats.sent[bus::PUBLISHSHARD as usize % bus::MSG_TYPES] += sent;
}

/// A PUBLISHSHARD from another node of my shard: delivered to my shard subscribers.
pub fn deliver_shard_publish(server: &Server, channel: &[u8], message: &[u8]) {
    server.pubsub.spublish(
        &Bytes::copy_from_slice(channel),
        &Bytes::copy_from_slice(message),
    );
}

/// The owner of `slot` and whether my shard (myself or my master) serves it.
fn slot_view(st: &crate::cluster::State, slot: u16) -> (Option<NodeId>, bool) {
    let owner = st.slots.get(slot as usize).copied().flatten();
    let mine = owner.is_some() && (owner == Some(st.myself) || owner == st.my_master());
    (owner, mine)
}

/// Cluster mode, run by the cluster cron: shard channels whose slot my shard stopped serving
/// are unsubscribed and their clients told with an `sunsubscribe` push, as Redis 7.0 does when
/// a slot is deleted from a node of the shard (migrated away, or taken over by a replica other
/// than myself). A replica promoted in place keeps its subscribers.
pub fn drop_lost_shard_channels(server: &Server) {
    let Some(c) = server.cluster.as_ref() else {
        return;
    };
    let slots = server.pubsub.shard_slots();
    if slots.is_empty() {
        let mut seen = server.pubsub.shard_seen.lock();
        if !seen.is_empty() {
            seen.clear();
        }
        return;
    }
    // Per slot: its owner now, and whether my shard (myself or my master) serves it.
    let (me, now) = {
        let st = c.state.lock();
        let now: Vec<(u16, (Option<NodeId>, bool))> =
            slots.iter().map(|&s| (s, slot_view(&st, s))).collect();
        (st.myself, now)
    };
    let mut lost = Vec::new();
    {
        let mut seen = server.pubsub.shard_seen.lock();
        seen.retain(|s, _| slots.contains(s));
        for (s, (owner, mine)) in now {
            // Dropped when the owner changed away from my shard to a node other than myself
            // (a replica promoted in place keeps its subscribers).
            let dropped = match seen.get(&s) {
                Some(&(prev, prev_mine)) => prev_mine && prev != owner && owner != Some(me),
                None => !mine,
            };
            if dropped {
                lost.push(s);
                seen.remove(&s);
            } else {
                seen.insert(s, (owner, mine));
            }
        }
    }
    for s in lost {
        server.pubsub.drop_shard_slot(s);
    }
}
