//! The command splitter: turns one client request into backend work, with one strategy per
//! family (as Envoy's redis_proxy does):
//! * **simple** — every key in one slot: forwarded to that slot's master as-is;
//! * **fan-out + merge** — MGET/MSET across slots: one sub-command per slot (pipelined to each
//!   node at once), replies merged in the client's key order;
//! * **sum** — DEL/UNLINK/EXISTS/TOUCH across slots: per-slot sub-commands, integer replies summed;
//! * **broadcast** — FLUSHALL, SCRIPT LOAD, DBSIZE, KEYS...: every master (see `local.rs`);
//! * **local** — answered by the proxy itself (see `local.rs`).
//!
//! `dispatch` sends the work immediately and returns a [`Pending`] that the client connection
//! resolves in request order, so pipelined requests overlap on the backends.

use crate::client::ClientState;
use crate::local;
use crate::pool::BackendError;
use crate::proxy::Proxy;
use crate::redirect::{self, error_reply};
use crate::slotmap::{error_text, parse_redirect};
use bytes::{Bytes, BytesMut};
use slotgate_protocol::commands::{self, flags, CommandSpec, KeyPositions};
use slotgate_protocol::key_slot;
use std::time::Instant;
use tokio::sync::oneshot;

type Rx = oneshot::Receiver<Result<Bytes, BackendError>>;

/// One sub-request to a slot's master.
pub struct Part {
    /// Slot of every key in this part.
    pub slot: u16,
    /// Encoded command.
    pub data: Bytes,
    /// Reply receiver (None when not sent yet).
    pub rx: Option<Rx>,
    /// For MGET: indexes of the client's keys this part answers.
    pub keys: Vec<usize>,
}

/// How split replies are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// MGET: values reassembled in key order.
    Values,
    /// MSET: all parts must answer OK.
    AllOk,
    /// DEL/EXISTS/UNLINK/TOUCH: integers summed.
    Sum,
}

/// A request in flight, resolved in order by the client connection.
pub enum Pending {
    /// The reply is known already.
    Ready(Bytes),
    /// Forwarded to one slot's master.
    Single {
        /// The slot.
        slot: u16,
        /// The encoded request (kept for retries after a redirect).
        data: Bytes,
        /// Reply receiver.
        rx: Rx,
    },
    /// Split across slots.
    Split {
        /// Merge strategy.
        merge: Merge,
        /// Sub-requests.
        parts: Vec<Part>,
        /// Number of keys (MGET reply length).
        nkeys: usize,
    },
    /// Needs asynchronous local work (broadcasts, INFO...).
    Local(local::Job),
    /// Reply then close the connection (QUIT).
    Close(Bytes),
    /// A transaction step on the client's pinned connection.
    Tx(crate::session::TxOp),
    /// A blocking command on its own connection (boxed: rare, and it keeps every pending
    /// request small).
    Blocking(Box<Blocking>),
    /// (P|S)SUBSCRIBE: the connection switches to pub/sub mode.
    Subscribe(Vec<Bytes>),
}

/// A blocking command to run on its own connection.
pub struct Blocking {
    /// The slot of its keys.
    pub slot: u16,
    /// The encoded command.
    pub data: Bytes,
    /// Its first key (probes whether the node still owns the slot).
    pub key: Bytes,
    /// The command's own timeout (None: waits forever).
    pub timeout: Option<std::time::Duration>,
    /// BLMOVE / BRPOPLPUSH: a timeout answers a null bulk (others a null array).
    pub null_bulk: bool,
}

/// Encodes `args` as a RESP command into `enc` and returns it as `Bytes`.
pub fn encode(enc: &mut BytesMut, args: &[impl AsRef<[u8]>]) -> Bytes {
    slotgate_protocol::resp::write_command(enc, args);
    enc.split().freeze()
}

fn send_part(client: &ClientState, slot: u16, data: &[u8]) -> Option<Rx> {
    client
        .router
        .send_slot(slot, client.resp3, client.id, data, 1)
}

/// Turns a request into a [`Pending`], sending backend work right away. `top` is
/// `commands::lookup(&args[0])`, looked up once by the caller; `raw`, when known, is the
/// request exactly as `encode` would write it (forwarded as it came, without a copy).
pub fn dispatch(
    proxy: &Proxy,
    client: &mut ClientState,
    top: Option<&'static CommandSpec>,
    args: &[Bytes],
    raw: Option<Bytes>,
    enc: &mut BytesMut,
) -> Pending {
    let spec = top.map(|t| match args.get(1) {
        Some(sub) if t.is_container() => commands::lookup_subcommand(t, sub).unwrap_or(t),
        _ => t,
    });
    let (Some(top), Some(spec)) = (top, spec) else {
        if client.tx.in_multi {
            client.tx.aborted = true;
        }
        return Pending::Ready(local::unknown_command(args));
    };
    if let Some(p) = transaction(client, spec, top, args, enc) {
        return p;
    }
    if matches!(spec.name, "subscribe" | "psubscribe" | "ssubscribe")
        && client.authenticated
        && commands::arity_ok(spec, args.len())
    {
        return Pending::Subscribe(args.to_vec());
    }
    if let Some(p) = local::handle(proxy, client, spec, top, args, enc) {
        return p;
    }
    let mut kp = KeyPositions::new();
    if let Err(e) = commands::key_positions(spec, args, &mut kp) {
        return Pending::Ready(error_reply(&e.to_string()));
    }
    if matches!(spec.name, "eval" | "eval_ro") {
        proxy.remember_script(&args[1]);
    }
    if kp.is_empty() {
        return local::keyless(spec, args, enc);
    }
    // All keys in one slot: forward as-is.
    let first = key_slot(&args[kp[0]]);
    let same = kp.iter().skip(1).all(|&i| key_slot(&args[i]) == first);
    let blocking = spec.has_flag(flags::BLOCKING)
        && (!matches!(spec.name, "xread" | "xreadgroup")
            || args.iter().any(|a| a.eq_ignore_ascii_case(b"block")));
    if blocking {
        if !same {
            return Pending::Ready(error_reply(
                "CROSSSLOT Keys in request don't hash to the same slot",
            ));
        }
        return Pending::Blocking(Box::new(Blocking {
            slot: first,
            data: raw.unwrap_or_else(|| encode(enc, args)),
            key: args[kp[0]].clone(),
            timeout: blocking_timeout(spec.name, args),
            null_bulk: matches!(spec.name, "blmove" | "brpoplpush"),
        }));
    }
    if same {
        let data = raw.unwrap_or_else(|| encode(enc, args));
        if spec.has_flag(flags::WRITE) {
            let map = client.router.map();
            if let Some(a) = map.master_of(first) {
                if client.last_write.as_ref() != Some(a) {
                    client.last_write = Some(a.clone());
                }
            }
        } else if spec.has_flag(flags::READONLY)
            && proxy.cfg().read_from != crate::proxy::ReadFrom::Master
        {
            if let Some(p) = replica_read(client, first, data.clone()) {
                return p;
            }
        }
        return match send_part(client, first, &data) {
            Some(rx) => Pending::Single {
                slot: first,
                data,
                rx,
            },
            None => {
                client.router.schedule_refresh(None);
                Pending::Single {
                    slot: first,
                    data,
                    rx: closed_rx(),
                }
            }
        };
    }
    match spec.name {
        "mget" => split_keys(client, args, &kp, enc, Merge::Values, b"MGET", 1),
        "mset" => split_keys(client, args, &kp, enc, Merge::AllOk, b"MSET", 2),
        "del" => split_keys(client, args, &kp, enc, Merge::Sum, b"DEL", 1),
        "unlink" => split_keys(client, args, &kp, enc, Merge::Sum, b"UNLINK", 1),
        "exists" => split_keys(client, args, &kp, enc, Merge::Sum, b"EXISTS", 1),
        "touch" => split_keys(client, args, &kp, enc, Merge::Sum, b"TOUCH", 1),
        _ => Pending::Ready(error_reply(
            "CROSSSLOT Keys in request don't hash to the same slot",
        )),
    }
}

/// The timeout a blocking command gives itself (None: 0, forever, or unparsable — the node
/// then answers the syntax error).
fn blocking_timeout(name: &str, args: &[Bytes]) -> Option<std::time::Duration> {
    let secs = |a: &Bytes| -> Option<f64> { std::str::from_utf8(a).ok()?.parse::<f64>().ok() };
    let t = match name {
        "blmpop" | "bzmpop" => secs(args.get(1)?)?,
        "xread" | "xreadgroup" => {
            let i = args.iter().position(|a| a.eq_ignore_ascii_case(b"block"))?;
            secs(args.get(i + 1)?)? / 1000.0
        }
        _ => secs(args.last()?)?,
    };
    if t > 0.0 && t.is_finite() && t < 1e9 {
        Some(std::time::Duration::from_secs_f64(t))
    } else {
        None
    }
}

/// MULTI/EXEC/DISCARD/WATCH/UNWATCH, and every command while a MULTI is open.
fn transaction(
    client: &mut ClientState,
    spec: &'static CommandSpec,
    top: &'static CommandSpec,
    args: &[Bytes],
    enc: &mut BytesMut,
) -> Option<Pending> {
    use crate::session::TxOp;
    let name = top.name;
    let in_multi = client.tx.in_multi;
    if (!matches!(name, "multi" | "exec" | "discard" | "watch" | "unwatch") && !in_multi)
        || name == "quit"
    {
        return None;
    }
    if !client.authenticated {
        return None; // local::handle answers NOAUTH
    }
    let err = |m: &str| Some(Pending::Ready(error_reply(m)));
    let mut kp = KeyPositions::new();
    let keys_slot = |kp: &KeyPositions| -> Result<Option<u16>, ()> {
        let mut slot = None;
        for &i in kp.iter() {
            let s = key_slot(&args[i]);
            match slot {
                None => slot = Some(s),
                Some(x) if x != s => return Err(()),
                _ => {}
            }
        }
        Ok(slot)
    };
    match name {
        "multi" => {
            if in_multi {
                return err("ERR MULTI calls can not be nested");
            }
            client.tx.in_multi = true;
            Some(Pending::Tx(TxOp::Multi))
        }
        "exec" | "discard" => {
            if !in_multi {
                return err(if name == "exec" {
                    "ERR EXEC without MULTI"
                } else {
                    "ERR DISCARD without MULTI"
                });
            }
            client.tx.in_multi = false;
            Some(Pending::Tx(if name == "exec" {
                TxOp::Exec
            } else {
                TxOp::Discard
            }))
        }
        "watch" => {
            if in_multi {
                return err("ERR WATCH inside MULTI is not allowed");
            }
            if let Err(e) = commands::key_positions(spec, args, &mut kp) {
                return err(&e.to_string());
            }
            match keys_slot(&kp) {
                Ok(Some(s)) if client.tx.slot.is_none_or(|x| x == s) => {
                    client.tx.slot = Some(s);
                    Some(Pending::Tx(TxOp::Watch(encode(enc, args), s)))
                }
                _ => err("CROSSSLOT Keys in request don't hash to the same slot"),
            }
        }
        "unwatch" => {
            if !in_multi {
                client.tx.slot = None;
            }
            Some(Pending::Tx(TxOp::Unwatch))
        }
        _ => {
            // Inside MULTI: queue on the pinned connection; keys must share one slot.
            if let Err(e) = commands::key_positions(spec, args, &mut kp) {
                client.tx.aborted = true;
                return err(&e.to_string());
            }
            match keys_slot(&kp) {
                Ok(None) => Some(Pending::Tx(TxOp::Queue(encode(enc, args), None))),
                Ok(Some(s)) if client.tx.slot.is_none_or(|x| x == s) => {
                    client.tx.slot = Some(s);
                    Some(Pending::Tx(TxOp::Queue(encode(enc, args), Some(s))))
                }
                _ => {
                    client.tx.aborted = true;
                    err("CROSSSLOT Keys in request don't hash to the same slot")
                }
            }
        }
    }
}

/// Sends a read-only command to a healthy replica of the slot's shard (`--read-from`).
fn replica_read(client: &ClientState, slot: u16, data: Bytes) -> Option<Pending> {
    let map = client.router.map();
    let shard = map.shards.get(*map.slots.get(slot as usize)? as usize)?;
    if shard.replicas.is_empty() {
        return None;
    }
    let start = (client.id as usize) % shard.replicas.len();
    for k in 0..shard.replicas.len() {
        let addr = &shard.replicas[(start + k) % shard.replicas.len()];
        let pool = client.router.replica_pool(addr, client.resp3);
        if pool.is_up() {
            let rx = pool.send(client.id, &data, 1);
            return Some(Pending::Single { slot, data, rx });
        }
    }
    None
}

fn closed_rx() -> Rx {
    let (_tx, rx) = oneshot::channel();
    rx
}

/// Groups the keys by slot (keeping first-seen order) and sends one sub-command per slot.
fn split_keys(
    client: &ClientState,
    args: &[Bytes],
    kp: &KeyPositions,
    enc: &mut BytesMut,
    merge: Merge,
    name: &[u8],
    width: usize,
) -> Pending {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (n, &i) in kp.iter().enumerate() {
        let slot = key_slot(&args[i]);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, v)) => v.push(n),
            None => groups.push((slot, vec![n])),
        }
    }
    let mut parts = Vec::with_capacity(groups.len());
    for (slot, keys) in groups {
        let mut sub: Vec<&[u8]> = Vec::with_capacity(1 + keys.len() * width);
        sub.push(name);
        for &n in &keys {
            let pos = kp[n];
            for w in 0..width {
                sub.push(&args[pos + w]);
            }
        }
        let data = encode(enc, &sub);
        let rx = send_part(client, slot, &data);
        parts.push(Part {
            slot,
            data,
            rx,
            keys,
        });
    }
    Pending::Split {
        merge,
        parts,
        nkeys: kp.len(),
    }
}

/// True when a raw reply is a redirect or a transient cluster error worth retrying.
fn needs_retry(reply: &Bytes) -> bool {
    match error_text(reply) {
        Some(t) => {
            parse_redirect(t).is_some()
                || t.starts_with(b"TRYAGAIN")
                || t.starts_with(b"CLUSTERDOWN")
        }
        None => false,
    }
}

async fn resolve_one(
    proxy: &Proxy,
    client: &ClientState,
    slot: u16,
    data: Bytes,
    rx: Option<Rx>,
    started: Instant,
) -> Bytes {
    let mut ask = None;
    if let Some(rx) = rx {
        match rx.await {
            Ok(Ok(reply)) if reply.starts_with(b"-NOSCRIPT") => {
                // The node lost the script (failover, restart): load it again if we know it.
                let addr = client.router.map().master_of(slot).cloned();
                if let Some(addr) = addr {
                    if let Some(r) = reload_script(proxy, client, &addr, &data).await {
                        return r;
                    }
                }
                return reply;
            }
            Ok(Ok(reply)) if !needs_retry(&reply) => return reply,
            Ok(Ok(reply)) => {
                if let Some((is_ask, rslot, target)) = error_text(&reply).and_then(parse_redirect) {
                    if is_ask {
                        crate::metrics::redirect("ask");
                        ask = Some(std::sync::Arc::from(target.as_str()));
                    } else {
                        crate::metrics::redirect("moved");
                        client.router.moved(rslot, &target);
                    }
                }
            }
            Ok(Err(BackendError::Lost(addr, why))) => {
                crate::metrics::error("backend_lost");
                return error_reply(&format!(
                    "ERR slotgate: backend {addr} connection lost: {why}"
                ));
            }
            _ => {}
        }
    }
    // The slow path (redirects, retries) is boxed: the common case keeps a small future.
    let deadline = started + proxy.cfg().request_timeout;
    Box::pin(redirect::execute(
        &client.router,
        client.id,
        slot,
        data,
        client.resp3,
        deadline,
        ask,
    ))
    .await
}

/// Splits the items of a raw RESP array reply.
fn array_items(raw: &Bytes) -> Option<Vec<Bytes>> {
    if raw.first() != Some(&b'*') {
        return None;
    }
    let eol = raw.iter().position(|&b| b == b'\n')?;
    let n: usize = std::str::from_utf8(&raw[1..eol - 1]).ok()?.parse().ok()?;
    let mut items = Vec::with_capacity(n);
    let mut pos = eol + 1;
    for _ in 0..n {
        let len = slotgate_protocol::frame_len(&raw[pos..]).ok()??;
        items.push(raw.slice(pos..pos + len));
        pos += len;
    }
    Some(items)
}

impl Pending {
    /// Waits for the reply (following redirects) and returns its raw bytes. `started` is when
    /// the request arrived: its retries end at `started + request-timeout`.
    pub async fn resolve(self, proxy: &Proxy, client: &mut ClientState, started: Instant) -> Bytes {
        match self {
            Pending::Ready(b) | Pending::Close(b) => b,
            // Rare, large futures are boxed so the per-client task stays small.
            Pending::Tx(op) => Box::pin(crate::session::run_tx(op, client)).await,
            Pending::Blocking(b) => {
                let Blocking {
                    slot,
                    data,
                    key,
                    timeout,
                    null_bulk,
                } = *b;
                Box::pin(crate::session::run_blocking(
                    client, slot, data, key, timeout, null_bulk,
                ))
                .await
            }
            Pending::Subscribe(_) => {
                error_reply("ERR slotgate: internal: subscribe outside the client loop")
            }
            Pending::Single { slot, data, rx } => {
                resolve_one(proxy, client, slot, data, Some(rx), started).await
            }
            Pending::Local(job) => Box::pin(job.run(proxy, client)).await,
            Pending::Split {
                merge,
                parts,
                nkeys,
            } => Box::pin(resolve_split(proxy, client, merge, parts, nkeys, started)).await,
        }
    }
}

/// Waits for every part of a split request and merges the replies.
async fn resolve_split(
    proxy: &Proxy,
    client: &ClientState,
    merge: Merge,
    parts: Vec<Part>,
    nkeys: usize,
    started: Instant,
) -> Bytes {
    let mut replies = Vec::with_capacity(parts.len());
    for p in parts {
        let r = resolve_one(proxy, client, p.slot, p.data, p.rx, started).await;
        replies.push((p.keys, r));
    }
    // Any error fails the whole request: never a partial answer.
    if let Some((_, e)) = replies.iter().find(|(_, r)| r.first() == Some(&b'-')) {
        return e.clone();
    }
    match merge {
        Merge::AllOk => Bytes::from_static(b"+OK\r\n"),
        Merge::Sum => {
            let mut total = 0i64;
            for (_, r) in &replies {
                let t = r.strip_prefix(b":").and_then(|x| x.strip_suffix(b"\r\n"));
                match t.and_then(slotgate_protocol::resp::parse_i64) {
                    Some(n) => total += n,
                    None => return error_reply("ERR slotgate: unexpected backend reply"),
                }
            }
            let mut b = BytesMut::new();
            slotgate_protocol::resp::write_integer(&mut b, total);
            b.freeze()
        }
        Merge::Values => {
            let mut slots: Vec<Option<Bytes>> = vec![None; nkeys];
            for (keys, r) in &replies {
                let Some(items) = array_items(r) else {
                    return error_reply("ERR slotgate: unexpected backend reply");
                };
                if items.len() != keys.len() {
                    return error_reply("ERR slotgate: unexpected backend reply");
                }
                for (k, item) in keys.iter().zip(items) {
                    slots[*k] = Some(item);
                }
            }
            let mut b = BytesMut::new();
            slotgate_protocol::resp::write_array_len(&mut b, nkeys);
            for s in slots {
                match s {
                    Some(item) => b.extend_from_slice(&item),
                    None => return error_reply("ERR slotgate: missing value in merged reply"),
                }
            }
            b.freeze()
        }
    }
}

/// After a NOSCRIPT for EVALSHA/EVALSHA_RO: SCRIPT LOAD the body the proxy knows on `addr`,
/// then run the request again there. None when the script is unknown to the proxy.
pub async fn reload_script(
    proxy: &Proxy,
    client: &ClientState,
    addr: &std::sync::Arc<str>,
    data: &Bytes,
) -> Option<Bytes> {
    let mut buf = BytesMut::from(&data[..]);
    let mut args = Vec::new();
    slotgate_protocol::resp::parse_command(
        &mut buf,
        &mut args,
        &slotgate_protocol::Limits::default(),
    )
    .ok()??;
    let name = args.first()?.to_ascii_lowercase();
    if name != b"evalsha" && name != b"evalsha_ro" {
        return None;
    }
    let body = proxy.script(args.get(1)?)?;
    crate::metrics::error("noscript_reload");
    let pool = client.router.pool_for(addr, client.resp3);
    let mut enc = BytesMut::new();
    let load = encode(&mut enc, &[&b"SCRIPT"[..], b"LOAD", &body]);
    let r = pool.send(client.id, &load, 1).await.ok()?.ok()?;
    if r.first() == Some(&b'-') {
        return None;
    }
    pool.send(client.id, data, 1).await.ok()?.ok()
}
