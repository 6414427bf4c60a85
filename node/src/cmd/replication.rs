//! Replication commands: REPLICAOF/SLAVEOF, ROLE, WAIT, and the replica-to-master protocol
//! commands REPLCONF, PSYNC and SYNC (the connection becomes a replication link).

use super::{Ctx, Outcome};
use crate::replication::master::{self, LinkStart};
use crate::replication::Replication;

/// The commands of this family.
pub const COMMANDS: &[(&str, super::Handler)] = &[
    ("replicaof", replicaof),
    ("slaveof", replicaof),
    ("role", role),
    ("wait", wait),
    ("replconf", replconf),
    ("psync", psync),
    ("sync", sync),
];

fn who(ctx: &Ctx) -> String {
    format!(
        "id={} addr={} laddr={} fd=0 name={}",
        ctx.client.handle.id,
        ctx.client.handle.addr,
        ctx.client.handle.laddr,
        ctx.client.handle.name()
    )
}

fn replicaof(ctx: &mut Ctx) -> Outcome {
    if ctx.server.cluster.is_some() {
        ctx.out.error("ERR REPLICAOF not allowed in cluster mode.");
        return Outcome::Done;
    }
    let Some(server) = ctx.server.self_arc() else {
        ctx.out.error("ERR server is shutting down");
        return Outcome::Done;
    };
    if ctx.arg_is(1, "no") && ctx.arg_is(2, "one") {
        if ctx.server.repl.is_replica() {
            Replication::set_master(&server, None);
            ctx.server.log.notice(&format!(
                "MASTER MODE enabled (user request from '{}')",
                who(ctx)
            ));
        }
        ctx.out.ok();
        return Outcome::Done;
    }
    let port = match slotgate_protocol::resp::parse_i64(ctx.arg(2)) {
        Some(p) if (0..=65535).contains(&p) => p as u16,
        _ => {
            ctx.out.error("ERR Invalid master port");
            return Outcome::Done;
        }
    };
    let host = String::from_utf8_lossy(ctx.arg(1)).into_owned();
    if ctx.server.repl.master() == Some((host.clone(), port)) {
        ctx.server
            .log
            .notice("REPLICAOF would result into synchronization with the master we are already connected with. No operation performed.");
        ctx.out.simple("OK Already connected to specified master");
        return Outcome::Done;
    }
    Replication::set_master(&server, Some((host.clone(), port)));
    ctx.server.log.notice(&format!(
        "REPLICAOF {host}:{port} enabled (user request from '{}')",
        who(ctx)
    ));
    ctx.out.ok();
    Outcome::Done
}

fn role(ctx: &mut Ctx) -> Outcome {
    let r = &ctx.server.repl;
    match r.master() {
        Some((host, port)) => {
            let state = r.link_state_name();
            ctx.out.array(5);
            ctx.out.bulk(b"slave");
            ctx.out.bulk(host.as_bytes());
            ctx.out.int(port as i64);
            ctx.out.bulk(state.as_bytes());
            ctx.out.int(r.offset() as i64);
        }
        None => {
            let reps = r.replicas();
            ctx.out.array(3);
            ctx.out.bulk(b"master");
            ctx.out.int(r.offset() as i64);
            let online: Vec<_> = reps.iter().filter(|l| l.state == "online").collect();
            ctx.out.array(online.len());
            for l in online {
                ctx.out.array(3);
                ctx.out.bulk(l.ip.as_bytes());
                ctx.out.bulk(l.port.to_string().as_bytes());
                ctx.out.bulk(l.ack_offset.to_string().as_bytes());
            }
        }
    }
    Outcome::Done
}

fn wait(ctx: &mut Ctx) -> Outcome {
    if ctx.server.repl.is_replica() {
        ctx.out.error("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
        return Outcome::Done;
    }
    let Some(n) = ctx.int_arg(1) else {
        return Outcome::Done;
    };
    let Some(timeout) = ctx.int_arg(2) else {
        return Outcome::Done;
    };
    if timeout < 0 {
        ctx.out.error("ERR timeout is negative");
        return Outcome::Done;
    }
    let offset = ctx.client.woff;
    let acked = ctx.server.repl.acked(offset);
    if acked as i64 >= n || ctx.in_exec {
        ctx.out.int(acked as i64);
        return Outcome::Done;
    }
    // Ask the replicas for an ACK now rather than at their next second.
    let db = ctx.client.db;
    ctx.server
        .repl
        .propagate(db, &[b"REPLCONF", b"GETACK", b"*"]);
    Outcome::Wait {
        replicas: n.max(0) as usize,
        offset,
        timeout_ms: timeout as u64,
    }
}

fn replconf(ctx: &mut Ctx) -> Outcome {
    if ctx.args.len().is_multiple_of(2) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let mut i = 1;
    while i + 1 < ctx.args.len() {
        let opt = ctx.arg(i).to_ascii_lowercase();
        let val = ctx.args[i + 1].clone();
        match opt.as_slice() {
            b"listening-port" => match slotgate_protocol::resp::parse_i64(&val) {
                Some(p) if (0..=65535).contains(&p) => ctx.client.repl_port = p as u16,
                _ => {
                    ctx.out.not_integer();
                    return Outcome::Done;
                }
            },
            b"ip-address" => {
                ctx.client.repl_ip = Some(String::from_utf8_lossy(&val).into_owned());
            }
            b"capa" | b"rdb-only" | b"rdb-filter-only" => {}
            // ACKs arrive on replication links (read there); GETACK only matters to replicas.
            b"ack" | b"getack" | b"fack" => return Outcome::Done,
            _ => {
                ctx.out.error(&format!(
                    "ERR Unrecognized REPLCONF option: {}",
                    String::from_utf8_lossy(ctx.arg(i))
                ));
                return Outcome::Done;
            }
        }
        i += 2;
    }
    ctx.out.ok();
    Outcome::Done
}

fn start_link(ctx: &mut Ctx, replid: &[u8], offset: i64, legacy: bool) -> Outcome {
    if ctx.client.from_master {
        return Outcome::Done;
    }
    if ctx.server.repl.is_replica() && !ctx.server.repl.link_up() {
        ctx.out
            .error("NOMASTERLINK Can't SYNC while not connected with my master");
        return Outcome::Done;
    }
    let ip = ctx.client.repl_ip.clone().unwrap_or_else(|| {
        let a = &ctx.client.handle.addr;
        a.rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| a.clone())
    });
    let port = ctx.client.repl_port;
    let id = ctx.client.handle.id;
    let plan = master::prepare(ctx.server, id, ip.clone(), port, replid, offset);
    ctx.client.handle.flags.lock().replace_range(.., "S");
    Outcome::Replicate(Box::new(LinkStart {
        id,
        name: format!("{ip}:{port}"),
        plan,
        legacy,
    }))
}

fn psync(ctx: &mut Ctx) -> Outcome {
    let Some(offset) = slotgate_protocol::resp::parse_i64(ctx.arg(2)) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let replid = ctx.args[1].clone();
    start_link(ctx, &replid, offset, false)
}

fn sync(ctx: &mut Ctx) -> Outcome {
    start_link(ctx, b"?", -1, true)
}
