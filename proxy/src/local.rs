//! Commands the proxy answers itself (PING, HELLO, AUTH, CLIENT, COMMAND, CLUSTER ... as one
//! node owning all slots), and the broadcast strategy for keyless commands that concern the
//! whole cluster (DBSIZE, FLUSHALL, KEYS, SCAN, RANDOMKEY, SCRIPT, FUNCTION, INFO keyspace).

use crate::client::ClientState;
use crate::proxy::Proxy;
use crate::redirect::error_reply;
use crate::splitter::{encode, Pending};
use bytes::{Bytes, BytesMut};
use slotgate_protocol::commands::{self, flags, CommandSpec};
use slotgate_protocol::resp::{self, parse_i64};
use slotgate_protocol::Frame;
use std::sync::Arc;

/// Commands the proxy refuses, with the reason given to the client.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("monitor", "MONITOR is not supported through the proxy"),
    (
        "sync",
        "replication commands are not supported through the proxy",
    ),
    (
        "psync",
        "replication commands are not supported through the proxy",
    ),
    (
        "replicaof",
        "replication commands are not supported through the proxy",
    ),
    (
        "slaveof",
        "replication commands are not supported through the proxy",
    ),
    ("shutdown", "SHUTDOWN is not supported through the proxy"),
    ("debug", "DEBUG is not supported through the proxy"),
    ("swapdb", "SWAPDB is not supported in cluster mode"),
    ("move", "MOVE is not supported in cluster mode"),
    ("migrate", "MIGRATE is not supported through the proxy"),
    ("failover", "FAILOVER is not supported through the proxy"),
    (
        "save",
        "persistence commands are not supported through the proxy",
    ),
    (
        "bgsave",
        "persistence commands are not supported through the proxy",
    ),
    (
        "bgrewriteaof",
        "persistence commands are not supported through the proxy",
    ),
    ("acl", "ACL is not supported through the proxy"),
    ("module", "MODULE is not supported through the proxy"),
    ("latency", "LATENCY is not supported through the proxy"),
    (
        "memory",
        "MEMORY is only supported with a key (MEMORY USAGE key)",
    ),
];

/// The Redis "unknown command" error.
pub fn unknown_command(args: &[Bytes]) -> Bytes {
    let t = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned();
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        t(&args[0])
    );
    for a in &args[1..] {
        msg.push_str(&format!("'{}' ", t(a)));
    }
    error_reply(&msg)
}

fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

fn bulk(b: &[u8]) -> Bytes {
    let mut o = BytesMut::new();
    resp::write_bulk(&mut o, b);
    o.freeze()
}

fn int(n: i64) -> Bytes {
    let mut o = BytesMut::new();
    resp::write_integer(&mut o, n);
    o.freeze()
}

fn frame(f: &Frame, resp3: bool) -> Bytes {
    let mut o = BytesMut::new();
    if resp3 {
        f.encode(&mut o);
    } else {
        commands::to_resp2(f.clone()).encode(&mut o);
    }
    o.freeze()
}

fn wrong_arity(name: &str) -> Bytes {
    error_reply(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn is(a: &[u8], w: &str) -> bool {
    a.eq_ignore_ascii_case(w.as_bytes())
}

/// Handles proxy-local commands; `None` means "route it".
pub fn handle(
    proxy: &Proxy,
    client: &mut ClientState,
    spec: &'static CommandSpec,
    top: &'static CommandSpec,
    args: &[Bytes],
    enc: &mut BytesMut,
) -> Option<Pending> {
    let name = top.name;
    if !commands::arity_ok(top, args.len()) {
        return Some(Pending::Ready(wrong_arity(name)));
    }
    if !client.authenticated && !spec.has_flag(flags::NO_AUTH) {
        return Some(Pending::Ready(error_reply(
            "NOAUTH Authentication required.",
        )));
    }
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
        if !(name == "memory" && args.len() >= 3 && is(&args[1], "usage")) {
            return Some(Pending::Ready(error_reply(&format!("ERR slotgate: {why}"))));
        }
    }
    let r = |b: Bytes| Some(Pending::Ready(b));
    match name {
        "ping" => match args.len() {
            1 => r(Bytes::from_static(b"+PONG\r\n")),
            2 => r(bulk(&args[1])),
            _ => r(wrong_arity("ping")),
        },
        "echo" => r(bulk(&args[1])),
        "quit" => Some(Pending::Close(ok())),
        "select" => match parse_i64(&args[1]) {
            Some(0) => r(ok()),
            Some(_) => r(error_reply("ERR SELECT is not allowed in cluster mode")),
            None => r(error_reply("ERR value is not an integer or out of range")),
        },
        "readonly" | "readwrite" => r(ok()),
        // Not subscribed to anything (pub/sub mode is served by session.rs).
        "unsubscribe" | "punsubscribe" => r(crate::session::unsubscribed_reply(
            client.resp3,
            name,
            &args[1..],
        )),
        "sunsubscribe" => {
            let first = args.get(1).map(|c| slotgate_protocol::key_slot(c));
            if args[1..]
                .iter()
                .any(|c| Some(slotgate_protocol::key_slot(c)) != first)
            {
                return r(error_reply(
                    "CROSSSLOT Keys in request don't hash to the same slot",
                ));
            }
            r(crate::session::unsubscribed_reply(
                client.resp3,
                name,
                &args[1..],
            ))
        }
        "reset" => {
            reset_client(proxy, client);
            r(Bytes::from_static(b"+RESET\r\n"))
        }
        "auth" => r(auth(proxy, client, &args[1..])),
        "hello" => r(hello(proxy, client, args)),
        "client" => r(client_cmd(proxy, client, args)),
        "config" => r(config_cmd(proxy, client, args)),
        "slowlog" => r(slowlog_cmd(proxy, client, args)),
        "wait" => {
            let data = encode(enc, args);
            Some(Pending::Local(match client.last_write.clone() {
                Some(node) => Job::ToNode(node, data),
                None => Job::AnyMaster(data),
            }))
        }
        "command" => r(command_cmd(client, args)),
        "cluster" => r(cluster_cmd(proxy, client, args)),
        "dbsize" => Some(Pending::Local(Job::SumMasters(encode(enc, args)))),
        "flushall" | "flushdb" => Some(Pending::Local(Job::AllMasters(encode(enc, args)))),
        "keys" => Some(Pending::Local(Job::ConcatMasters(encode(enc, args)))),
        "randomkey" => Some(Pending::Local(Job::RandomKey)),
        "scan" => Some(Pending::Local(Job::Scan(args.to_vec()))),
        "info" => Some(Pending::Local(Job::Info(args.to_vec()))),
        // Every pub/sub session of this proxy holds its SUBSCRIBE/PSUBSCRIBE link on the first
        // reachable master (session.rs): PUBLISH and the channel introspection go there too, so
        // their counts include this proxy's subscribers (a cluster node counts its own only).
        "publish" => Some(Pending::Local(Job::FirstMaster(encode(enc, args)))),
        "pubsub" if args.len() >= 2 && is(&args[1], "shardchannels") => {
            Some(Pending::Local(Job::ConcatMasters(encode(enc, args))))
        }
        "pubsub" if args.len() >= 2 && is(&args[1], "shardnumsub") => {
            Some(Pending::Local(Job::ShardNumsub(args[2..].to_vec())))
        }
        "pubsub" => Some(Pending::Local(Job::FirstMaster(encode(enc, args)))),
        "script" if args.len() >= 2 && is(&args[1], "exists") => Some(Pending::Local(
            Job::ScriptExists(encode(enc, args), args.len() - 2),
        )),
        "script" | "function" => {
            if name == "script" && args.len() == 3 && is(&args[1], "load") {
                proxy.remember_script(&args[2]);
            }
            if name == "script" && args.len() >= 2 && is(&args[1], "flush") {
                // Scripts flushed on purpose are not reloaded behind the client's back.
                proxy.scripts.lock().clear();
            }
            if args.len() >= 2
                && (is(&args[1], "load")
                    || is(&args[1], "flush")
                    || is(&args[1], "delete")
                    || is(&args[1], "restore")
                    || is(&args[1], "kill"))
            {
                Some(Pending::Local(Job::AllMasters(encode(enc, args))))
            } else {
                Some(Pending::Local(Job::AnyMaster(encode(enc, args))))
            }
        }
        _ => None,
    }
}

/// RESET: the client's state back to a fresh connection's (the pinned transaction connection
/// is closed, RESP2, no name, authenticated again only when no password is required).
pub fn reset_client(proxy: &Proxy, client: &mut ClientState) {
    client.tx = crate::session::Tx::default();
    client.resp3 = false;
    client.last_write = None;
    client.authenticated = proxy.cfg().requirepass.is_none();
    *client.info.name.lock() = None;
}

/// Keyless commands that are not local: sent to any master (TIME, PUBLISH, EVAL with 0 keys...).
pub fn keyless(spec: &'static CommandSpec, args: &[Bytes], enc: &mut BytesMut) -> Pending {
    if spec.has_flag(flags::ADMIN) {
        return Pending::Ready(error_reply(&format!(
            "ERR slotgate: '{}' is an admin command and is not supported through the proxy",
            spec.name
        )));
    }
    Pending::Local(Job::AnyMaster(encode(enc, args)))
}

fn auth(proxy: &Proxy, client: &mut ClientState, a: &[Bytes]) -> Bytes {
    let cfg = proxy.cfg();
    let Some(pass) = &cfg.requirepass else {
        return error_reply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    let (user, pw) = match a.len() {
        1 => (&b"default"[..], &a[0]),
        2 => (&a[0][..], &a[1]),
        _ => return error_reply("ERR syntax error"),
    };
    if user == b"default" && pw.as_ref() == pass.as_bytes() {
        client.authenticated = true;
        ok()
    } else {
        error_reply("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn hello(proxy: &Proxy, client: &mut ClientState, args: &[Bytes]) -> Bytes {
    let mut i = 1;
    let mut proto = if client.resp3 { 3 } else { 2 };
    if args.len() > 1 {
        match parse_i64(&args[1]) {
            Some(2) => proto = 2,
            Some(3) => proto = 3,
            Some(_) => return error_reply("NOPROTO unsupported protocol version"),
            None => return error_reply("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    while i < args.len() {
        if is(&args[i], "auth") && i + 2 < args.len() {
            let r = auth(proxy, client, &args[i + 1..i + 3]);
            if r.first() == Some(&b'-') {
                return r;
            }
            i += 3;
        } else if is(&args[i], "setname") && i + 1 < args.len() {
            *client.info.name.lock() = Some(args[i + 1].clone());
            i += 2;
        } else {
            return error_reply(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[i])
            ));
        }
    }
    if !client.authenticated {
        return error_reply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    client.resp3 = proto == 3;
    let f = Frame::Map(vec![
        (Frame::bulk("server"), Frame::bulk("redis")),
        (Frame::bulk("version"), Frame::bulk("7.0.15")),
        (Frame::bulk("proto"), Frame::Integer(proto)),
        (Frame::bulk("id"), Frame::Integer(client.id as i64)),
        (Frame::bulk("mode"), Frame::bulk("standalone")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(vec![])),
    ]);
    frame(&f, client.resp3)
}

fn client_cmd(proxy: &Proxy, client: &mut ClientState, args: &[Bytes]) -> Bytes {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    match sub.as_slice() {
        b"id" => int(client.id as i64),
        b"setname" if args.len() == 3 => {
            if args[2].iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return error_reply(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            *client.info.name.lock() = if args[2].is_empty() {
                None
            } else {
                Some(args[2].clone())
            };
            ok()
        }
        b"getname" => match client.info.name.lock().clone() {
            Some(n) => bulk(&n),
            None => Bytes::from_static(b"$-1\r\n"),
        },
        b"setinfo" if args.len() == 4 => {
            let mut lib = client.info.lib.lock();
            let v = String::from_utf8_lossy(&args[3]).into_owned();
            if is(&args[2], "lib-name") {
                lib.0 = v;
            } else if is(&args[2], "lib-ver") {
                lib.1 = v;
            } else {
                return error_reply(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[2])
                ));
            }
            ok()
        }
        b"list" => {
            let mut text = String::new();
            for c in proxy.clients.lock().values() {
                text.push_str(&c.line());
                text.push('\n');
            }
            bulk(text.as_bytes())
        }
        b"info" => bulk((client.info.line() + "\n").as_bytes()),
        b"kill" if args.len() >= 3 => {
            let clients: Vec<_> = proxy.clients.lock().values().cloned().collect();
            let mut n = 0;
            if args.len() == 3 {
                for c in &clients {
                    if c.addr.as_bytes() == &args[2][..] {
                        c.killed.store(true, std::sync::atomic::Ordering::Release);
                        c.kill.notify_one();
                        return ok();
                    }
                }
                return error_reply("ERR No such client");
            }
            let mut i = 2;
            while i + 1 < args.len() {
                for c in &clients {
                    let hit = (is(&args[i], "id") && parse_i64(&args[i + 1]) == Some(c.id as i64))
                        || (is(&args[i], "addr") && c.addr.as_bytes() == &args[i + 1][..]);
                    if hit && c.id != client.id {
                        c.kill.notify_one();
                        n += 1;
                    }
                }
                i += 2;
            }
            int(n)
        }
        b"unblock" if matches!(args.len(), 3 | 4) => {
            // CLIENT UNBLOCK id [TIMEOUT|ERROR], for the proxy's own client ids.
            let reason = match args.get(3) {
                None => crate::client::UNBLOCK_TIMEOUT,
                Some(r) if is(r, "timeout") => crate::client::UNBLOCK_TIMEOUT,
                Some(r) if is(r, "error") => crate::client::UNBLOCK_ERROR,
                Some(_) => {
                    return error_reply("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
                }
            };
            let Some(id) = parse_i64(&args[2]) else {
                return error_reply("ERR value is not an integer or out of range");
            };
            let target = u64::try_from(id)
                .ok()
                .and_then(|id| proxy.clients.lock().get(&id).cloned());
            int(target.is_some_and(|t| t.request_unblock(reason)) as i64)
        }
        b"no-evict" | b"no-touch" | b"reply" => ok(),
        _ => error_reply(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(args.get(1).map(|a| &a[..]).unwrap_or(b""))
        )),
    }
}

fn command_cmd(client: &ClientState, args: &[Bytes]) -> Bytes {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    match sub.as_slice() {
        b"" => {
            let all: Vec<Frame> = commands::all().iter().map(commands::command_info).collect();
            frame(&Frame::Array(all), client.resp3)
        }
        b"count" => int(commands::all().len() as i64),
        b"info" => {
            let items = args[2..]
                .iter()
                .map(|n| {
                    commands::lookup_fullname(n)
                        .map(commands::command_info)
                        .unwrap_or(Frame::Null)
                })
                .collect();
            frame(&Frame::Array(items), client.resp3)
        }
        b"docs" => {
            let mut pairs = Vec::new();
            let specs: Vec<&CommandSpec> = if args.len() > 2 {
                args[2..]
                    .iter()
                    .filter_map(|n| commands::lookup_fullname(n))
                    .collect()
            } else {
                commands::all().iter().collect()
            };
            for s in specs {
                pairs.push((Frame::bulk(s.name), commands::command_docs(s)));
            }
            frame(&Frame::Map(pairs), client.resp3)
        }
        b"getkeys" if args.len() > 2 => {
            let mut kp = commands::KeyPositions::new();
            match commands::getkeys(&args[2..], &mut kp) {
                Ok(_) => {
                    let keys = kp
                        .iter()
                        .map(|&i| Frame::Bulk(args[2 + i].clone()))
                        .collect();
                    frame(&Frame::Array(keys), client.resp3)
                }
                Err(e) => error_reply(commands::getkeys_error_text(e)),
            }
        }
        b"list" => {
            let names = commands::all()
                .iter()
                .map(|s| Frame::bulk(s.name))
                .collect();
            frame(&Frame::Array(names), client.resp3)
        }
        _ => error_reply(&format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

fn cluster_cmd(proxy: &Proxy, client: &ClientState, args: &[Bytes]) -> Bytes {
    let sub = args[1].to_ascii_lowercase();
    let ip = proxy.cfg().listen.ip().to_string();
    let port = proxy.cfg().listen.port() as i64;
    match sub.as_slice() {
        b"info" => bulk(
            b"cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n",
        ),
        b"myid" => bulk(proxy.id.as_bytes()),
        b"keyslot" if args.len() == 3 => int(slotgate_protocol::key_slot(&args[2]) as i64),
        b"slots" => {
            let node = Frame::Array(vec![
                Frame::bulk(ip.clone()),
                Frame::Integer(port),
                Frame::bulk(proxy.id.clone()),
            ]);
            let f = Frame::Array(vec![Frame::Array(vec![
                Frame::Integer(0),
                Frame::Integer(16383),
                node,
            ])]);
            frame(&f, client.resp3)
        }
        b"shards" => {
            let node = Frame::Map(vec![
                (Frame::bulk("id"), Frame::bulk(proxy.id.clone())),
                (Frame::bulk("port"), Frame::Integer(port)),
                (Frame::bulk("ip"), Frame::bulk(ip.clone())),
                (Frame::bulk("endpoint"), Frame::bulk(ip.clone())),
                (Frame::bulk("role"), Frame::bulk("master")),
                (Frame::bulk("replication-offset"), Frame::Integer(0)),
                (Frame::bulk("health"), Frame::bulk("online")),
            ]);
            let shard = Frame::Map(vec![
                (Frame::bulk("slots"), Frame::Array(vec![Frame::Integer(0), Frame::Integer(16383)])),
                (Frame::bulk("nodes"), Frame::Array(vec![node])),
            ]);
            frame(&Frame::Array(vec![shard]), client.resp3)
        }
        b"nodes" => bulk(
            format!(
                "{} {ip}:{port}@{} myself,master - 0 0 1 connected 0-16383\n",
                proxy.id,
                port + 10000
            )
            .as_bytes(),
        ),
        _ => error_reply(&format!(
            "ERR slotgate: CLUSTER {} is not supported through the proxy",
            String::from_utf8_lossy(&args[1]).to_uppercase()
        )),
    }
}

/// Asynchronous local work (broadcasts and aggregations over the masters).
pub enum Job {
    /// Send to every master; reply OK when all succeed (FLUSHALL, SCRIPT LOAD → first reply).
    AllMasters(Bytes),
    /// Send to every master and sum integer replies (DBSIZE).
    SumMasters(Bytes),
    /// Send to every master and concatenate array replies (KEYS).
    ConcatMasters(Bytes),
    /// SCRIPT EXISTS: a script exists only if every master has it.
    ScriptExists(Bytes, usize),
    /// Send to any one master.
    AnyMaster(Bytes),
    /// Send to the first reachable master in address order (PUBLISH, PUBSUB CHANNELS...).
    FirstMaster(Bytes),
    /// PUBSUB SHARDNUMSUB: each shard channel asked of its slot's owner.
    ShardNumsub(Vec<Bytes>),
    /// Send to one node on the client's own pooled connection (WAIT after a write).
    ToNode(Arc<str>, Bytes),
    /// RANDOMKEY over a random master (then the others if it is empty).
    RandomKey,
    /// SCAN with a cursor that encodes the master index.
    Scan(Vec<Bytes>),
    /// INFO: the proxy's own sections plus keyspace summed over masters.
    Info(Vec<Bytes>),
}

async fn to_master(proxy: &Proxy, client: &ClientState, addr: &Arc<str>, data: Bytes) -> Bytes {
    let r = to_master_once(client, addr, data.clone()).await;
    if r.starts_with(b"-NOSCRIPT") {
        if let Some(r2) = crate::splitter::reload_script(proxy, client, addr, &data).await {
            return r2;
        }
    }
    r
}

async fn to_master_once(client: &ClientState, addr: &Arc<str>, data: Bytes) -> Bytes {
    match client
        .router
        .send(addr, client.resp3, client.id, &data, 1)
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_reply(&format!("ERR slotgate: {e}")),
        Err(_) => error_reply("ERR slotgate: backend connection closed"),
    }
}

async fn all_masters(client: &ClientState, data: &Bytes) -> Vec<Bytes> {
    let masters = sorted_masters(client);
    let mut rxs = Vec::new();
    for m in &masters {
        rxs.push(client.router.send(m, client.resp3, client.id, data, 1));
    }
    let mut out = Vec::new();
    for rx in rxs {
        out.push(match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => error_reply(&format!("ERR slotgate: {e}")),
            Err(_) => error_reply("ERR slotgate: backend connection closed"),
        });
    }
    out
}

fn sorted_masters(client: &ClientState) -> Vec<Arc<str>> {
    let mut m = client.router.map().masters();
    m.sort();
    m
}

fn first_error(replies: &[Bytes]) -> Option<Bytes> {
    replies.iter().find(|r| r.first() == Some(&b'-')).cloned()
}

fn decode(b: &Bytes) -> Option<Frame> {
    resp::decode_complete(b).ok()
}

impl Job {
    /// Runs the job and returns the raw reply.
    pub async fn run(self, proxy: &Proxy, client: &ClientState) -> Bytes {
        match self {
            Job::AllMasters(data) => {
                let replies = all_masters(client, &data).await;
                if replies.is_empty() {
                    return error_reply("CLUSTERDOWN The cluster is down");
                }
                if let Some(e) = first_error(&replies) {
                    return e;
                }
                replies[0].clone()
            }
            Job::SumMasters(data) => {
                let replies = all_masters(client, &data).await;
                if let Some(e) = first_error(&replies) {
                    return e;
                }
                let mut total = 0;
                for r in &replies {
                    if let Some(Frame::Integer(n)) = decode(r) {
                        total += n;
                    }
                }
                int(total)
            }
            Job::ConcatMasters(data) => {
                let replies = all_masters(client, &data).await;
                if let Some(e) = first_error(&replies) {
                    return e;
                }
                let mut items = Vec::new();
                for r in &replies {
                    if let Some(Frame::Array(v) | Frame::Set(v)) = decode(r) {
                        items.extend(v);
                    }
                }
                frame(&Frame::Array(items), client.resp3)
            }
            Job::ScriptExists(data, n) => {
                let replies = all_masters(client, &data).await;
                if let Some(e) = first_error(&replies) {
                    return e;
                }
                let mut all = vec![1i64; n];
                for r in &replies {
                    if let Some(Frame::Array(v)) = decode(r) {
                        for (i, f) in v.iter().enumerate() {
                            if let (Some(slot), Frame::Integer(x)) = (all.get_mut(i), f) {
                                *slot &= *x;
                            }
                        }
                    }
                }
                frame(
                    &Frame::Array(all.into_iter().map(Frame::Integer).collect()),
                    client.resp3,
                )
            }
            Job::AnyMaster(data) => {
                let masters = sorted_masters(client);
                if masters.is_empty() {
                    return error_reply("CLUSTERDOWN The cluster is down");
                }
                let i = (client.id as usize) % masters.len();
                to_master(proxy, client, &masters[i], data).await
            }
            Job::ToNode(node, data) => to_master(proxy, client, &node, data).await,
            Job::FirstMaster(data) => {
                let masters = sorted_masters(client);
                let mut last = error_reply("CLUSTERDOWN The cluster is down");
                for m in &masters {
                    if !client.router.pool(m).is_up() {
                        continue;
                    }
                    last = to_master(proxy, client, m, data.clone()).await;
                    if !last.starts_with(b"-ERR slotgate: backend") {
                        break;
                    }
                }
                last
            }
            Job::ShardNumsub(channels) => {
                let mut items = Vec::with_capacity(channels.len() * 2);
                for ch in channels {
                    let slot = slotgate_protocol::key_slot(&ch);
                    let mut enc = BytesMut::new();
                    let data = encode(&mut enc, &[&b"PUBSUB"[..], b"SHARDNUMSUB", &ch]);
                    let r = crate::redirect::execute(
                        &client.router,
                        client.id,
                        slot,
                        data,
                        client.resp3,
                        std::time::Instant::now() + proxy.cfg().request_timeout,
                        None,
                    )
                    .await;
                    let n = match decode(&r) {
                        Some(Frame::Array(v)) => match v.get(1) {
                            Some(Frame::Integer(n)) => *n,
                            _ => 0,
                        },
                        _ => return r,
                    };
                    items.push(Frame::Bulk(ch));
                    items.push(Frame::Integer(n));
                }
                frame(&Frame::Array(items), client.resp3)
            }
            Job::RandomKey => {
                let masters = sorted_masters(client);
                let start = rand::random::<usize>() % masters.len().max(1);
                for k in 0..masters.len() {
                    let m = &masters[(start + k) % masters.len()];
                    let r = to_master(
                        proxy,
                        client,
                        m,
                        Bytes::from_static(b"*1\r\n$9\r\nRANDOMKEY\r\n"),
                    )
                    .await;
                    if r.first() == Some(&b'$') && !r.starts_with(b"$-1") {
                        return r;
                    }
                    if r.first() == Some(&b'-') {
                        return r;
                    }
                }
                Bytes::from_static(b"$-1\r\n")
            }
            Job::Scan(args) => scan(proxy, client, args).await,
            Job::Info(args) => info(proxy, client, args).await,
        }
    }
}

/// SCAN over all masters: cursor = node_cursor * 1024 + master index.
async fn scan(proxy: &Proxy, client: &ClientState, mut args: Vec<Bytes>) -> Bytes {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u128>().ok())
    else {
        return error_reply("ERR invalid cursor");
    };
    let masters = sorted_masters(client);
    if masters.is_empty() {
        return error_reply("CLUSTERDOWN The cluster is down");
    }
    let mut idx = (cursor % 1024) as usize;
    let node_cursor = cursor / 1024;
    if idx >= masters.len() {
        return error_reply("ERR invalid cursor");
    }
    args[1] = Bytes::from(node_cursor.to_string());
    let mut enc = BytesMut::new();
    let data = encode(&mut enc, &args);
    let r = to_master(proxy, client, &masters[idx], data).await;
    let Some(Frame::Array(parts)) = decode(&r) else {
        return r;
    };
    let (Some(Frame::Bulk(next)), Some(keys)) = (parts.first(), parts.get(1)) else {
        return r;
    };
    let next: u128 = std::str::from_utf8(next)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let out_cursor = if next == 0 {
        idx += 1;
        if idx >= masters.len() {
            0
        } else {
            idx as u128
        }
    } else {
        next * 1024 + idx as u128
    };
    let f = Frame::Array(vec![Frame::bulk(out_cursor.to_string()), keys.clone()]);
    frame(&f, client.resp3)
}

async fn info(proxy: &Proxy, client: &ClientState, args: Vec<Bytes>) -> Bytes {
    use std::fmt::Write;
    let want = |s: &str| {
        args.len() == 1
            || args[1..]
                .iter()
                .any(|a| is(a, s) || is(a, "all") || is(a, "everything") || is(a, "default"))
    };
    let mut t = String::new();
    if want("server") {
        let _ = write!(
            t,
            "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\nslotgate_version:{}\r\nslotgate_role:proxy\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nio_threads_active:{}\r\nslotgate_workers:{}\r\nslotgate_workers_active:{}\r\nslotgate_workers_clients:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            proxy.id,
            proxy.cfg().listen.port(),
            proxy.started.elapsed().as_secs(),
            u8::from(proxy.io.active() > 1),
            proxy.io.len(),
            proxy.io.active(),
            proxy.io.conns_list()
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            proxy.clients.lock().len(),
            proxy.cfg().maxclients
        );
    }
    if want("stats") {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\r\n",
            proxy.connections.load(Relaxed),
            proxy.commands.load(Relaxed),
            proxy.rejected.load(Relaxed)
        );
    }
    if want("cluster") {
        let map = client.router.map();
        let _ = write!(
            t,
            "# Cluster\r\ncluster_enabled:0\r\nbackend_masters:{}\r\nslots_covered:{}\r\nslot_map_version:{}\r\n\r\n",
            map.masters().len(),
            map.covered(),
            map.version
        );
    }
    if want("keyspace") {
        let replies = all_masters(
            client,
            &Bytes::from_static(b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n"),
        )
        .await;
        let (mut keys, mut expires) = (0u64, 0u64);
        for r in &replies {
            if let Some(f) = decode(r) {
                if let Some(text) = f.as_bytes() {
                    for line in String::from_utf8_lossy(text).lines() {
                        if let Some(rest) = line.strip_prefix("db0:") {
                            for kv in rest.split(',') {
                                if let Some(v) = kv.strip_prefix("keys=") {
                                    keys += v.parse::<u64>().unwrap_or(0);
                                }
                                if let Some(v) = kv.strip_prefix("expires=") {
                                    expires += v.parse::<u64>().unwrap_or(0);
                                }
                            }
                        }
                    }
                }
            }
        }
        t.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(t, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    }
    if client.resp3 {
        let mut o = BytesMut::new();
        Frame::Verbatim(Bytes::from_static(b"txt"), Bytes::from(t)).encode(&mut o);
        o.freeze()
    } else {
        bulk(t.as_bytes())
    }
}

/// The settings CONFIG GET/SET expose (name, getter, setter).
fn config_get(cfg: &crate::proxy::ProxyConfig, name: &str) -> Option<String> {
    Some(match name {
        "requirepass" => cfg.requirepass.clone().unwrap_or_default(),
        "maxclients" => cfg.maxclients.to_string(),
        "timeout" => cfg.idle_timeout.as_secs().to_string(),
        "slowlog-log-slower-than" => cfg.slowlog_slower_than_us.to_string(),
        "slowlog-max-len" => cfg.slowlog_max_len.to_string(),
        "read-from" => cfg.read_from.name().to_string(),
        "request-timeout-ms" => cfg.request_timeout.as_millis().to_string(),
        "max-pipeline" => cfg.max_pipeline.to_string(),
        "client-query-buffer-limit" => cfg.max_query_buffer.to_string(),
        // Asked by redis-benchmark; a proxy has no persistence of its own.
        "save" => String::new(),
        "appendonly" => "no".to_string(),
        _ => return None,
    })
}

const CONFIG_NAMES: &[&str] = &[
    "requirepass",
    "maxclients",
    "timeout",
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "read-from",
    "request-timeout-ms",
    "max-pipeline",
    "client-query-buffer-limit",
    "save",
    "appendonly",
    "workers-active",
];

fn config_set(cfg: &mut crate::proxy::ProxyConfig, name: &str, v: &str) -> Result<(), String> {
    let int = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| "argument couldn't be parsed into an integer".to_string())
    };
    match name {
        "requirepass" => {
            cfg.requirepass = if v.is_empty() {
                None
            } else {
                Some(v.to_string())
            }
        }
        "maxclients" => cfg.maxclients = int(v)?.max(1) as usize,
        "timeout" => cfg.idle_timeout = std::time::Duration::from_secs(int(v)?.max(0) as u64),
        "slowlog-log-slower-than" => cfg.slowlog_slower_than_us = int(v)?,
        "slowlog-max-len" => cfg.slowlog_max_len = int(v)?.max(0) as usize,
        "read-from" => {
            cfg.read_from = crate::proxy::ReadFrom::parse(v).ok_or_else(|| {
                "argument must be one of: master, prefer-replica, replica".to_string()
            })?
        }
        "request-timeout-ms" => {
            cfg.request_timeout = std::time::Duration::from_millis(int(v)?.max(1) as u64)
        }
        "max-pipeline" => cfg.max_pipeline = int(v)?.max(1) as usize,
        "client-query-buffer-limit" => cfg.max_query_buffer = int(v)?.max(1024) as usize,
        _ => return Err(String::new()),
    }
    Ok(())
}

fn config_cmd(proxy: &Proxy, client: &ClientState, args: &[Bytes]) -> Bytes {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    match sub.as_slice() {
        b"get" if args.len() >= 3 => {
            let cfg = proxy.cfg();
            let mut pairs = Vec::new();
            for pat in &args[2..] {
                let pat = String::from_utf8_lossy(pat).to_ascii_lowercase();
                for n in CONFIG_NAMES {
                    if glob(&pat, n)
                        && !pairs
                            .iter()
                            .any(|(k, _): &(Frame, Frame)| k.as_bytes() == Some(n.as_bytes()))
                    {
                        let v = if *n == "workers-active" {
                            Some(proxy.io.setting())
                        } else {
                            config_get(&cfg, n)
                        };
                        if let Some(v) = v {
                            pairs.push((Frame::bulk(*n), Frame::bulk(v)));
                        }
                    }
                }
            }
            frame(&Frame::Map(pairs), client.resp3)
        }
        b"set" if args.len() >= 4 && args.len().is_multiple_of(2) => {
            let mut cfg = (**proxy.cfg()).clone();
            let mut workers = None;
            for pair in args[2..].chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                let v = String::from_utf8_lossy(&pair[1]).into_owned();
                let set = if name == "workers-active" {
                    match proxy.io.parse_setting(v.as_bytes()) {
                        Some(n) => {
                            workers = Some(n);
                            Ok(())
                        }
                        None => Err(format!(
                            "argument must be auto or a count from 1 to {}",
                            proxy.io.len()
                        )),
                    }
                } else {
                    config_set(&mut cfg, &name, &v)
                };
                if let Err(e) = set {
                    return if e.is_empty() {
                        error_reply(&format!(
                            "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                        ))
                    } else {
                        error_reply(&format!(
                            "ERR CONFIG SET failed (possibly related to argument '{name}') - {e}"
                        ))
                    };
                }
            }
            proxy.set_cfg(cfg);
            if let Some(setting) = workers {
                proxy.io.apply_setting(setting);
            }
            ok()
        }
        b"resetstat" => {
            proxy.slowlog.lock().clear();
            ok()
        }
        b"rewrite" => error_reply(
            "ERR slotgate: CONFIG REWRITE is not supported; edit the --config file and send SIGHUP",
        ),
        _ => error_reply(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args.get(1).map(|a| &a[..]).unwrap_or(b""))
        )),
    }
}

fn glob(pat: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(pat.as_bytes(), s.as_bytes())
}

fn slowlog_cmd(proxy: &Proxy, client: &ClientState, args: &[Bytes]) -> Bytes {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    match sub.as_slice() {
        b"len" => int(proxy.slowlog.lock().len() as i64),
        b"reset" => {
            proxy.slowlog.lock().clear();
            ok()
        }
        b"get" => {
            let n = match args.get(2) {
                Some(a) => match parse_i64(a) {
                    Some(n) if n >= -1 => n,
                    _ => return error_reply("ERR count should be greater than or equal to -1"),
                },
                None => 10,
            };
            let log = proxy.slowlog.lock();
            let take = if n < 0 {
                log.len()
            } else {
                (n as usize).min(log.len())
            };
            let entries = log
                .iter()
                .take(take)
                .map(|e| {
                    Frame::Array(vec![
                        Frame::Integer(e.id as i64),
                        Frame::Integer(e.time as i64),
                        Frame::Integer(e.micros as i64),
                        Frame::Array(e.args.iter().map(|a| Frame::Bulk(a.clone())).collect()),
                        Frame::bulk(e.addr.clone()),
                        Frame::bulk(e.name.clone()),
                        Frame::bulk(e.node.clone()),
                    ])
                })
                .collect();
            frame(&Frame::Array(entries), client.resp3)
        }
        _ => error_reply(&format!(
            "ERR unknown subcommand '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(args.get(1).map(|a| &a[..]).unwrap_or(b""))
        )),
    }
}
