//! Connection commands: PING, ECHO, AUTH, HELLO, SELECT, QUIT, RESET, CLIENT.

use super::{Ctx, Handler, Outcome};
use crate::client::ReplyMode;
use std::sync::atomic::Ordering;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("ping", ping),
    ("echo", echo),
    ("auth", auth),
    ("hello", hello),
    ("select", select),
    ("quit", quit),
    ("reset", reset),
    ("client", client),
];

fn ping(ctx: &mut Ctx) -> Outcome {
    if ctx.args.len() > 2 {
        ctx.out.wrong_arity("ping");
        return Outcome::Done;
    }
    if ctx.client.in_pubsub() && !ctx.out.resp3 {
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(ctx.args.get(1).map(|a| &a[..]).unwrap_or(b""));
        return Outcome::Done;
    }
    match ctx.args.get(1) {
        Some(m) => ctx.out.bulk(m),
        None => ctx.out.simple("PONG"),
    }
    Outcome::Done
}

fn echo(ctx: &mut Ctx) -> Outcome {
    ctx.out.bulk(&ctx.args[1]);
    Outcome::Done
}

/// Checks a username/password pair against `requirepass` (only the `default` user exists).
fn check_password(ctx: &mut Ctx, user: Option<&[u8]>, pass: &[u8]) -> bool {
    let required = ctx.server.config.read().get("requirepass").to_string();
    let user_ok = user.is_none_or(|u| u == b"default");
    if user_ok && (required.is_empty() || required.as_bytes() == pass) {
        ctx.client.authenticated = true;
        true
    } else {
        false
    }
}

fn auth(ctx: &mut Ctx) -> Outcome {
    let (user, pass) = match ctx.args.len() {
        2 => (None, &ctx.args[1]),
        3 => (Some(&ctx.args[1][..]), &ctx.args[2]),
        _ => {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    };
    if user.is_none() && !ctx.server.requires_auth() {
        ctx.out.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        return Outcome::Done;
    }
    let pass = pass.clone();
    if check_password(ctx, user, &pass) {
        ctx.out.ok();
    } else {
        ctx.out
            .error("WRONGPASS invalid username-password pair or user is disabled.");
    }
    Outcome::Done
}

fn hello(ctx: &mut Ctx) -> Outcome {
    let mut proto = None;
    let mut i = 1;
    if ctx.args.len() > 1 {
        match slotgate_protocol::resp::parse_i64(&ctx.args[1]) {
            Some(v) if v == 2 || v == 3 => proto = Some(v),
            Some(_) => {
                ctx.out.error("NOPROTO unsupported protocol version");
                return Outcome::Done;
            }
            None => {
                ctx.out
                    .error("ERR Protocol version is not an integer or out of range");
                return Outcome::Done;
            }
        }
        i = 2;
    }
    let mut setname = None;
    while i < ctx.args.len() {
        let left = ctx.args.len() - i - 1;
        if ctx.arg_is(i, "AUTH") && left >= 2 {
            let (u, p) = (ctx.args[i + 1].clone(), ctx.args[i + 2].clone());
            if !check_password(ctx, Some(&u), &p) {
                ctx.out
                    .error("WRONGPASS invalid username-password pair or user is disabled.");
                return Outcome::Done;
            }
            i += 3;
        } else if ctx.arg_is(i, "SETNAME") && left >= 1 {
            setname = Some(ctx.args[i + 1].clone());
            i += 2;
        } else {
            let a = String::from_utf8_lossy(&ctx.args[i]).into_owned();
            ctx.out
                .error(&format!("ERR Syntax error in HELLO option '{a}'"));
            return Outcome::Done;
        }
    }
    if !ctx.client.authenticated && ctx.server.requires_auth() {
        ctx.out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return Outcome::Done;
    }
    if let Some(name) = setname {
        if !valid_name(&name) {
            ctx.out
                .error("ERR Client names cannot contain spaces, newlines or special characters.");
            return Outcome::Done;
        }
        *ctx.client.handle.name.lock() = if name.is_empty() { None } else { Some(name) };
    }
    if let Some(p) = proto {
        ctx.out.resp3 = p == 3;
        ctx.client.handle.resp.store(p as usize, Ordering::Relaxed);
    }
    let proto_now = if ctx.out.resp3 { 3 } else { 2 };
    let mode = if ctx.server.config.read().get_bool("cluster-enabled") {
        "cluster"
    } else {
        "standalone"
    };
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(crate::REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(proto_now);
    out.bulk(b"id");
    out.int(ctx.client.handle.id as i64);
    out.bulk(b"mode");
    out.bulk(mode.as_bytes());
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Outcome::Done
}

fn select(ctx: &mut Ctx) -> Outcome {
    let Some(n) = slotgate_protocol::resp::parse_i64(&ctx.args[1]) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    if ctx.server.config.read().get_bool("cluster-enabled") && n != 0 {
        ctx.out.error("ERR SELECT is not allowed in cluster mode");
        return Outcome::Done;
    }
    if n < 0 || n as usize >= ctx.server.ks.count() {
        ctx.out.error("ERR DB index is out of range");
        return Outcome::Done;
    }
    ctx.client.db = n as usize;
    ctx.client.handle.db.store(n as usize, Ordering::Relaxed);
    ctx.out.ok();
    Outcome::Done
}

fn quit(ctx: &mut Ctx) -> Outcome {
    ctx.out.ok();
    Outcome::Close
}

fn reset(ctx: &mut Ctx) -> Outcome {
    let server = ctx.server;
    let c = &mut *ctx.client;
    c.multi = None;
    c.multi_error = false;
    c.handle.multi.store(u64::MAX, Ordering::Relaxed);
    super::transactions::unwatch_all(server, c);
    for ch in std::mem::take(&mut c.channels) {
        server.pubsub.unsubscribe(&ch, c.handle.id);
    }
    for p in std::mem::take(&mut c.patterns) {
        server.pubsub.punsubscribe(&p, c.handle.id);
    }
    c.handle.subs.store(0, Ordering::Relaxed);
    c.handle.psubs.store(0, Ordering::Relaxed);
    super::pubsub::drop_shard_subscriptions(server, c.handle.id);
    if c.monitor {
        server.remove_monitor(c.handle.id);
        c.monitor = false;
    }
    c.db = 0;
    c.handle.db.store(0, Ordering::Relaxed);
    c.reply_mode = ReplyMode::On;
    c.asking = false;
    c.readonly = false;
    *c.handle.name.lock() = None;
    c.authenticated = !server.requires_auth();
    ctx.out.resp3 = false;
    c.handle.resp.store(2, Ordering::Relaxed);
    ctx.out.simple("RESET");
    Outcome::Done
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn client(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"id" => ctx.out.int(ctx.client.handle.id as i64),
        b"setname" => {
            let name = ctx.args[2].clone();
            if !valid_name(&name) {
                ctx.out.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                *ctx.client.handle.name.lock() = if name.is_empty() { None } else { Some(name) };
                ctx.out.ok();
            }
        }
        b"getname" => {
            let name = ctx.client.handle.name.lock().clone();
            ctx.out.opt_bulk(name.as_deref());
        }
        b"info" => {
            let line = ctx.client.handle.info_line() + "\n";
            ctx.out.verbatim(line.as_bytes());
        }
        b"list" => return client_list(ctx),
        b"kill" => return client_kill(ctx),
        b"setinfo" => {
            let attr = ctx.args[2].to_ascii_lowercase();
            let val = String::from_utf8_lossy(&ctx.args[3]).into_owned();
            if val.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
                ctx.out.error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(&attr)
                ));
                return Outcome::Done;
            }
            let mut lib = ctx.client.handle.lib.lock();
            match attr.as_slice() {
                b"lib-name" => lib.0 = val,
                b"lib-ver" => lib.1 = val,
                _ => {
                    drop(lib);
                    ctx.out.error(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&ctx.args[2])
                    ));
                    return Outcome::Done;
                }
            }
            drop(lib);
            ctx.out.ok();
        }
        b"no-evict" | b"no-touch" => {
            if ctx.arg_is(2, "on") || ctx.arg_is(2, "off") {
                ctx.client
                    .handle
                    .no_evict
                    .store(ctx.arg_is(2, "on"), Ordering::Relaxed);
                ctx.out.ok();
            } else {
                ctx.out.syntax_error();
            }
        }
        b"reply" => {
            if ctx.arg_is(2, "on") {
                ctx.client.reply_mode = ReplyMode::On;
                ctx.out.ok();
            } else if ctx.arg_is(2, "off") {
                ctx.client.reply_mode = ReplyMode::Off;
            } else if ctx.arg_is(2, "skip") {
                if ctx.client.reply_mode != ReplyMode::Off {
                    ctx.client.reply_mode = ReplyMode::Skip;
                }
            } else {
                ctx.out.syntax_error();
            }
        }
        b"pause" => {
            let Some(ms) = slotgate_protocol::resp::parse_i64(ctx.arg(2)).filter(|n| *n >= 0)
            else {
                ctx.out
                    .error("ERR timeout is not an integer or out of range");
                return Outcome::Done;
            };
            let all = match ctx.args.get(3) {
                None => true,
                Some(m) if m.eq_ignore_ascii_case(b"all") => true,
                Some(m) if m.eq_ignore_ascii_case(b"write") => false,
                Some(_) => {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            };
            if ctx.args.len() > 4 {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
            ctx.server
                .repl
                .pause_clients(crate::db::now_ms() + ms as u64, all);
            ctx.out.ok();
        }
        b"unblock" => {
            // CLIENT UNBLOCK id [TIMEOUT|ERROR]
            let reason = match ctx.args.get(3) {
                None => crate::client::UNBLOCK_TIMEOUT,
                Some(r) if r.eq_ignore_ascii_case(b"timeout") => crate::client::UNBLOCK_TIMEOUT,
                Some(r) if r.eq_ignore_ascii_case(b"error") => crate::client::UNBLOCK_ERROR,
                Some(_) => {
                    ctx.out
                        .error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
                    return Outcome::Done;
                }
            };
            let Some(id) = slotgate_protocol::resp::parse_i64(ctx.arg(2)) else {
                ctx.out.error("ERR value is not an integer or out of range");
                return Outcome::Done;
            };
            let target = u64::try_from(id)
                .ok()
                .and_then(|id| ctx.server.clients.lock().get(&id).cloned());
            let done = target.is_some_and(|t| t.request_unblock(reason));
            ctx.out.int(done as i64);
        }
        b"unpause" => {
            ctx.server.repl.unpause_writes();
            ctx.out.ok();
        }
        b"help" => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "KILL <ip:port>",
                "    Kill connection made from <ip:port>.",
                "KILL <option> <value> [<option> <value> [...]]",
                "    Kill connections. Options are: ID, ADDR, LADDR, TYPE, USER, SKIPME.",
                "LIST [options ...]",
                "    Return information about client connections.",
                "GETNAME",
                "    Return the name of the current connection.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <option> <value>",
                "    Set client meta attr (LIB-NAME, LIB-VER).",
                "REPLY (ON|OFF|SKIP)",
                "    Control the replies sent to the current connection.",
                "NO-EVICT (ON|OFF)",
                "    Accepted for compatibility.",
                "PAUSE <timeout> [WRITE|ALL]",
                "    Suspend all, or just write, clients for <timeout> milliseconds.",
                "UNPAUSE",
                "    Stop the current client pause, resuming traffic.",
                "UNBLOCK <clientid> [TIMEOUT|ERROR]",
                "    Unblock the specified blocked client.",
                "HELP",
                "    Print this help.",
            ];
            ctx.out.array(lines.len());
            for l in lines {
                ctx.out.simple(l);
            }
        }
        _ => {
            ctx.out.error(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&ctx.args[1])
            ));
        }
    }
    Outcome::Done
}

fn client_list(ctx: &mut Ctx) -> Outcome {
    let mut ids: Option<Vec<u64>> = None;
    let mut kind: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "TYPE") && i + 1 < ctx.args.len() {
            let t = ctx.args[i + 1].to_ascii_lowercase();
            if !matches!(
                t.as_slice(),
                b"normal" | b"master" | b"replica" | b"slave" | b"pubsub"
            ) {
                ctx.out.error(&format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(&ctx.args[i + 1])
                ));
                return Outcome::Done;
            }
            kind = Some(if t == b"slave" {
                b"replica".to_vec()
            } else {
                t
            });
            i += 2;
        } else if ctx.arg_is(i, "ID") && i + 1 < ctx.args.len() {
            let mut v = Vec::new();
            for a in &ctx.args[i + 1..] {
                match slotgate_protocol::resp::parse_i64(a) {
                    Some(n) if n > 0 => v.push(n as u64),
                    _ => {
                        ctx.out.error("ERR Invalid client ID");
                        return Outcome::Done;
                    }
                }
            }
            ids = Some(v);
            i = ctx.args.len();
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    }
    let clients: Vec<_> = ctx.server.clients.lock().values().cloned().collect();
    let mut text = String::new();
    for c in clients {
        if let Some(ids) = &ids {
            if !ids.contains(&c.id) {
                continue;
            }
        }
        if let Some(k) = &kind {
            if client_type(&c) != k.as_slice() {
                continue;
            }
        }
        text.push_str(&c.info_line());
        text.push('\n');
    }
    ctx.out.verbatim(text.as_bytes());
    Outcome::Done
}

/// CLIENT LIST / KILL TYPE of a client: master (our replication link to our master),
/// replica (a replica's link to us), pubsub or normal.
fn client_type(c: &crate::client::ClientHandle) -> &'static [u8] {
    let flags = c.flags.lock();
    if flags.contains('M') {
        b"master"
    } else if flags.contains('S') {
        b"replica"
    } else if c.subs.load(Ordering::Relaxed)
        + c.psubs.load(Ordering::Relaxed)
        + c.ssubs.load(Ordering::Relaxed)
        > 0
    {
        b"pubsub"
    } else {
        b"normal"
    }
}

fn client_kill(ctx: &mut Ctx) -> Outcome {
    let clients: Vec<_> = ctx.server.clients.lock().values().cloned().collect();
    if ctx.args.len() == 3 {
        // Old form: CLIENT KILL ip:port
        let addr = &ctx.args[2][..];
        match clients.iter().find(|c| c.addr.as_bytes() == addr) {
            Some(c) => {
                c.kill();
                ctx.out.ok();
            }
            None => ctx.out.error("ERR No such client"),
        }
        return Outcome::Done;
    }
    if !ctx.args.len().is_multiple_of(2) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut skipme = true;
    let mut kind: Option<Vec<u8>> = None;
    let mut i = 2;
    while i + 1 < ctx.args.len() {
        let v = ctx.args[i + 1].clone();
        if ctx.arg_is(i, "ID") {
            match slotgate_protocol::resp::parse_i64(&v) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => {
                    ctx.out.error("ERR client-id should be greater than 0");
                    return Outcome::Done;
                }
            }
        } else if ctx.arg_is(i, "ADDR") {
            addr = Some(v);
        } else if ctx.arg_is(i, "LADDR") {
            laddr = Some(v);
        } else if ctx.arg_is(i, "SKIPME") {
            if v.eq_ignore_ascii_case(b"yes") {
                skipme = true;
            } else if v.eq_ignore_ascii_case(b"no") {
                skipme = false;
            } else {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
        } else if ctx.arg_is(i, "TYPE") {
            let t = v.to_ascii_lowercase();
            let t = if t == b"slave" {
                b"replica".to_vec()
            } else {
                t
            };
            if !matches!(t.as_slice(), b"normal" | b"master" | b"replica" | b"pubsub") {
                ctx.out.error(&format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(&v)
                ));
                return Outcome::Done;
            }
            kind = Some(t);
        } else if ctx.arg_is(i, "USER") || ctx.arg_is(i, "MAXAGE") {
            // Accepted filters; every client is user "default".
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        i += 2;
    }
    let me = ctx.client.handle.id;
    let mut n = 0;
    for c in clients {
        if skipme && c.id == me {
            continue;
        }
        if id.is_some_and(|id| id != c.id)
            || addr.as_ref().is_some_and(|a| a != c.addr.as_bytes())
            || laddr.as_ref().is_some_and(|a| a != c.laddr.as_bytes())
            || kind
                .as_ref()
                .is_some_and(|k| k.as_slice() != client_type(&c))
        {
            continue;
        }
        c.kill();
        n += 1;
    }
    ctx.out.int(n);
    Outcome::Done
}
