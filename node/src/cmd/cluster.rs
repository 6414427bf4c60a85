//! Cluster commands: CLUSTER (every subcommand redis-cli --cluster and cluster clients use),
//! READONLY / READWRITE / ASKING, and MIGRATE (client side in [`crate::cluster::migrate`]).
//!
//! Subcommands that change the configuration save the cluster config file before replying,
//! as Redis does. They never hold the cluster state lock while locking keyspace shards (EXEC
//! holds every shard while it runs queued CLUSTER commands): key counts are taken first
//! through `ctx.ks`.

use super::{Ctx, Handler, Outcome};
use crate::cluster::{now_ms, Cluster, NodeId, State, FORGET_BAN_MS, MASTER};
use slotgate_protocol::slot::{key_slot, SLOT_COUNT};

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("cluster", cluster),
    ("readonly", readonly),
    ("readwrite", readwrite),
    ("asking", asking),
    ("migrate", migrate),
];

const NOT_ENABLED: &str = "ERR This instance has cluster support disabled";

fn readonly(ctx: &mut Ctx) -> Outcome {
    if ctx.server.cluster.is_none() {
        ctx.out.error(NOT_ENABLED);
        return Outcome::Done;
    }
    ctx.client.readonly = true;
    ctx.out.ok();
    Outcome::Done
}

fn readwrite(ctx: &mut Ctx) -> Outcome {
    if ctx.server.cluster.is_none() {
        ctx.out.error(NOT_ENABLED);
        return Outcome::Done;
    }
    ctx.client.readonly = false;
    ctx.out.ok();
    Outcome::Done
}

fn asking(ctx: &mut Ctx) -> Outcome {
    if ctx.server.cluster.is_none() {
        ctx.out.error(NOT_ENABLED);
        return Outcome::Done;
    }
    ctx.client.asking = true;
    ctx.out.ok();
    Outcome::Done
}

fn migrate(ctx: &mut Ctx) -> Outcome {
    crate::cluster::migrate::migrate(ctx)
}

const HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ADDSLOTS <slot> [<slot> ...]",
    "    Assign slots to current node.",
    "ADDSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
    "    Assign slots which are between <start-slot> and <end-slot> to current node.",
    "BUMPEPOCH",
    "    Advance the cluster config epoch.",
    "COUNT-FAILURE-REPORTS <node-id>",
    "    Return number of failure reports for <node-id>.",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot>.",
    "DELSLOTS <slot> [<slot> ...]",
    "    Delete slots information from current node.",
    "DELSLOTSRANGE <start slot> <end slot> [<start slot> <end slot> ...]",
    "    Delete slots information which are between <start-slot> and <end-slot> from current node.",
    "FAILOVER [FORCE|TAKEOVER]",
    "    Promote current replica node to being a master.",
    "FORGET <node-id>",
    "    Remove a node from the cluster.",
    "GETKEYSINSLOT <slot> <count>",
    "    Return key names stored by current node in a slot.",
    "FLUSHSLOTS",
    "    Delete current node own slots information.",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "LINKS",
    "    Return information about all network links between this node and its peers.",
    "    Output format is an array where each array element is a map containing attributes of a link",
    "MEET <ip> <port> [<bus-port>]",
    "    Connect nodes into a working cluster.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "REPLICATE <node-id>",
    "    Configure current node as replica to <node-id>.",
    "RESET [HARD|SOFT]",
    "    Reset current node (default: soft).",
    "SET-CONFIG-EPOCH <epoch>",
    "    Set config epoch of current node.",
    "SETSLOT <slot> (IMPORTING <node-id>|MIGRATING <node-id>|STABLE|NODE <node-id>)",
    "    Set slot state.",
    "REPLICAS <node-id>",
    "    Return <node-id> replicas.",
    "SAVECONFIG",
    "    Force saving cluster configuration on disk.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "SHARDS",
    "    Return information about slot range mappings and the nodes associated with them.",
    "HELP",
    "    Prints this help.",
];

fn unknown_sub(ctx: &mut Ctx) {
    let sub = String::from_utf8_lossy(&ctx.args[1]).into_owned();
    ctx.out.error(&format!(
        "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
        &sub[..sub.len().min(128)]
    ));
}

fn wrong_args(ctx: &mut Ctx) {
    let sub = String::from_utf8_lossy(&ctx.args[1]).into_owned();
    ctx.out.error(&format!(
        "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLUSTER HELP."
    ));
}

/// Parses a slot like Redis's getSlotOrReply.
fn slot_arg(ctx: &mut Ctx, i: usize) -> Option<u16> {
    match slotgate_protocol::resp::parse_i64(&ctx.args[i]) {
        Some(n) if (0..SLOT_COUNT as i64).contains(&n) => Some(n as u16),
        _ => {
            ctx.out.error("ERR Invalid or out of range slot");
            None
        }
    }
}

/// Keys in database 0, counted through the command's locked view (EXEC-safe).
fn db_keys(ctx: &mut Ctx) -> usize {
    ctx.ks.lock_all();
    ctx.ks.shards_mut().map(|(_, s)| s.len()).sum()
}

/// Runs `f` on the locked state, then commits (routes, state, config save, logs).
fn with_state<R>(ctx: &Ctx, c: &Cluster, f: impl FnOnce(&mut State) -> R) -> R {
    let mut st = c.state.lock();
    let r = f(&mut st);
    c.commit(&mut st, &ctx.server.log);
    r
}

fn cluster(ctx: &mut Ctx) -> Outcome {
    let sub = String::from_utf8_lossy(&ctx.args[1]).to_ascii_lowercase();
    if sub == "help" {
        ctx.out.array(HELP.len());
        for l in HELP {
            ctx.out.simple(l);
        }
        return Outcome::Done;
    }
    let Some(c) = ctx.server.cluster.clone() else {
        ctx.out.error(NOT_ENABLED);
        return Outcome::Done;
    };
    let argc = ctx.args.len();
    match sub.as_str() {
        "info" => {
            let text = c.state.lock().info_text();
            ctx.out.verbatim(text.as_bytes());
        }
        "nodes" => {
            let text = c.state.lock().nodes_text();
            ctx.out.verbatim(text.as_bytes());
        }
        "myid" => {
            let id = c.state.lock().myself;
            ctx.out.bulk(id.as_str().as_bytes());
        }
        "myshardid" => {
            let st = c.state.lock();
            let id = st.my_master().unwrap_or(st.myself);
            ctx.out.bulk(id.as_str().as_bytes());
        }
        "slots" => slots(ctx, &c),
        "shards" => shards(ctx, &c),
        "links" => links(ctx, &c),
        "keyslot" => {
            ctx.out.int(key_slot(&ctx.args[2]) as i64);
        }
        "countkeysinslot" => {
            let Some(n) = ctx.int_arg(2) else {
                return Outcome::Done;
            };
            if !(0..SLOT_COUNT as i64).contains(&n) {
                ctx.out.error("ERR Invalid slot");
                return Outcome::Done;
            }
            let count = ctx.ks.count_in_slot(n as u16);
            ctx.out.int(count as i64);
        }
        "getkeysinslot" => {
            let Some(slot) = ctx.int_arg(2) else {
                return Outcome::Done;
            };
            let Some(max) = ctx.int_arg(3) else {
                return Outcome::Done;
            };
            if !(0..SLOT_COUNT as i64).contains(&slot) || max < 0 {
                ctx.out.error("ERR Invalid slot or number of keys");
                return Outcome::Done;
            }
            let keys = ctx.ks.keys_in_slot(slot as u16, max as usize);
            ctx.out.array(keys.len());
            for k in keys {
                ctx.out.bulk(&k);
            }
        }
        "addslots" | "delslots" => {
            let del = sub == "delslots";
            let mut list = Vec::with_capacity(argc - 2);
            for i in 2..argc {
                let Some(s) = slot_arg(ctx, i) else {
                    return Outcome::Done;
                };
                list.push((s, s));
            }
            assign_slots(ctx, &c, &list, del);
        }
        "addslotsrange" | "delslotsrange" => {
            if argc % 2 == 1 {
                ctx.out.error(&format!(
                    "ERR wrong number of arguments for 'cluster|{sub}' command"
                ));
                return Outcome::Done;
            }
            let del = sub == "delslotsrange";
            let mut list = Vec::new();
            let mut i = 2;
            while i + 1 < argc {
                let Some(a) = slot_arg(ctx, i) else {
                    return Outcome::Done;
                };
                let Some(b) = slot_arg(ctx, i + 1) else {
                    return Outcome::Done;
                };
                if a > b {
                    ctx.out.error(&format!(
                        "ERR start slot number {a} is greater than end slot number {b}"
                    ));
                    return Outcome::Done;
                }
                list.push((a, b));
                i += 2;
            }
            assign_slots(ctx, &c, &list, del);
        }
        "flushslots" => {
            if db_keys(ctx) != 0 {
                ctx.out
                    .error("ERR DB must be empty to perform CLUSTER FLUSHSLOTS.");
                return Outcome::Done;
            }
            with_state(ctx, &c, |st| {
                for s in 0..SLOT_COUNT as u16 {
                    if st.slots[s as usize] == Some(st.myself) {
                        st.del_slot(s);
                    }
                }
                st.todo_save = true;
            });
            ctx.out.ok();
        }
        "setslot" => setslot(ctx, &c),
        "set-config-epoch" => {
            let Some(e) = ctx.int_arg(2) else {
                return Outcome::Done;
            };
            let r = with_state(ctx, &c, |st| {
                if e < 0 {
                    Err(format!("ERR Invalid config epoch specified: {e}"))
                } else if st.nodes.len() > 1 {
                    Err("ERR The user can assign a config epoch only when the node does not know any other node.".into())
                } else if st.me().config_epoch != 0 {
                    Err("ERR Node config epoch is already non-zero".into())
                } else {
                    st.me_mut().config_epoch = e as u64;
                    st.log.push((
                        true,
                        format!("configEpoch set to {e} via CLUSTER SET-CONFIG-EPOCH"),
                    ));
                    if st.current_epoch < e as u64 {
                        st.current_epoch = e as u64;
                    }
                    st.todo_save = true;
                    Ok(())
                }
            });
            match r {
                Ok(()) => ctx.out.ok(),
                Err(e) => ctx.out.error(&e),
            }
        }
        "bumpepoch" => {
            let (bumped, e) = with_state(ctx, &c, |st| {
                let b = st.bump_epoch_without_consensus();
                (b, st.me().config_epoch)
            });
            ctx.out
                .simple(&format!("{} {e}", if bumped { "BUMPED" } else { "STILL" }));
        }
        "saveconfig" => {
            let st = c.state.lock();
            match c.save(&st) {
                Ok(()) => ctx.out.ok(),
                Err(e) => ctx
                    .out
                    .error(&format!("ERR error saving the cluster node config: {e}")),
            }
        }
        "count-failure-reports" => {
            let r = with_state(ctx, &c, |st| {
                st.lookup(&ctx.args[2])
                    .map(|id| st.count_failure_reports(id, now_ms()))
            });
            match r {
                Some(n) => ctx.out.int(n as i64),
                None => unknown_node(ctx, 2),
            }
        }
        "forget" => {
            let arg = ctx.args[2].clone();
            let r = with_state(ctx, &c, |st| {
                let Some(id) = st.lookup(&arg) else {
                    return Err(None);
                };
                if id == st.myself {
                    return Err(Some("ERR I tried hard but I can't forget myself..."));
                }
                if st.my_master() == Some(id) {
                    return Err(Some("ERR Can't forget my master!"));
                }
                st.blacklist.insert(id, now_ms() + FORGET_BAN_MS);
                st.del_node(id);
                st.todo_save = true;
                Ok(())
            });
            match r {
                Ok(()) => ctx.out.ok(),
                Err(Some(e)) => ctx.out.error(e),
                Err(None) => unknown_node(ctx, 2),
            }
        }
        "meet" => meet(ctx, &c),
        "reset" => {
            let hard = if argc == 3 {
                if ctx.arg_is(2, "hard") {
                    true
                } else if ctx.arg_is(2, "soft") {
                    false
                } else {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            } else if argc > 3 {
                wrong_args(ctx);
                return Outcome::Done;
            } else {
                false
            };
            let is_master = c.state.lock().me().is_master();
            if is_master && db_keys(ctx) != 0 {
                ctx.out
                    .error("ERR CLUSTER RESET can't be called with master nodes containing keys");
                return Outcome::Done;
            }
            with_state(ctx, &c, |st| reset(st, hard));
            ctx.out.ok();
        }
        "replicate" => {
            let arg = ctx.args[2].clone();
            let keys = db_keys(ctx);
            let r = with_state(ctx, &c, |st| {
                let Some(id) = st.lookup(&arg) else {
                    return Err(None);
                };
                if id == st.myself {
                    return Err(Some("ERR Can't replicate myself"));
                }
                if st.nodes.get(&id).is_some_and(|n| n.is_slave()) {
                    return Err(Some("ERR I can only replicate a master, not a replica."));
                }
                if st.me().is_master() && (!st.me().slots.is_empty() || keys != 0) {
                    return Err(Some(
                        "ERR To set a master the node must be empty and without assigned slots.",
                    ));
                }
                st.set_my_master(id);

                st.broadcast_pong();
                Ok(())
            });
            match r {
                Ok(()) => {
                    ctx.server.log.set_role('S');
                    c.wake.notify_one();
                    ctx.out.ok()
                }
                Err(Some(e)) => ctx.out.error(e),
                Err(None) => unknown_node(ctx, 2),
            }
        }
        "replicas" | "slaves" => {
            let st = c.state.lock();
            let Some(id) = st.lookup(&ctx.args[2]) else {
                drop(st);
                unknown_node(ctx, 2);
                return Outcome::Done;
            };
            if st.nodes.get(&id).is_some_and(|n| n.is_slave()) {
                drop(st);
                ctx.out.error("ERR The specified node is not a master");
                return Outcome::Done;
            }
            let lines: Vec<String> = st
                .replicas_of(id)
                .iter()
                .filter_map(|r| st.nodes.get(r).map(|n| st.node_line(n)))
                .collect();
            drop(st);
            ctx.out.array(lines.len());
            for l in lines {
                ctx.out.bulk(l.as_bytes());
            }
        }
        "failover" => {
            use crate::cluster::failover::ManualMode;
            let mode = if argc == 3 {
                if ctx.arg_is(2, "force") {
                    ManualMode::Force
                } else if ctx.arg_is(2, "takeover") {
                    ManualMode::Takeover
                } else {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            } else if argc > 3 {
                wrong_args(ctx);
                return Outcome::Done;
            } else {
                ManualMode::Default
            };
            let r = with_state(ctx, &c, |st| st.manual_failover(mode, now_ms()));
            match r {
                Ok(()) => {
                    // The cron drives the rest (and applies a takeover's new role at once).
                    c.wake.notify_one();
                    ctx.out.ok();
                }
                Err(e) => ctx.out.error(e),
            }
        }
        _ => unknown_sub(ctx),
    }
    Outcome::Done
}

fn unknown_node(ctx: &mut Ctx, i: usize) {
    let name = String::from_utf8_lossy(&ctx.args[i]).into_owned();
    ctx.out.error(&format!("ERR Unknown node {name}"));
}

fn assign_slots(ctx: &mut Ctx, c: &Cluster, list: &[(u16, u16)], del: bool) {
    let r = with_state(ctx, c, |st| {
        let mut seen = vec![false; SLOT_COUNT];
        for &(a, b) in list {
            for s in a..=b {
                let owner = st.slots[s as usize];
                if del && owner.is_none() {
                    return Err(format!("ERR Slot {s} is already unassigned"));
                }
                if !del && owner.is_some() {
                    return Err(format!("ERR Slot {s} is already busy"));
                }
                if std::mem::replace(&mut seen[s as usize], true) {
                    return Err(format!("ERR Slot {s} specified multiple times"));
                }
            }
        }
        let me = st.myself;
        for &(a, b) in list {
            for s in a..=b {
                if del {
                    st.del_slot(s);
                } else {
                    // Owning the slot ends any import of it.
                    st.importing.remove(&s);
                    st.add_slot(s, me);
                }
            }
        }
        st.todo_save = true;
        Ok(())
    });
    match r {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(&e),
    }
}

fn setslot(ctx: &mut Ctx, c: &Cluster) {
    let argc = ctx.args.len();
    if c.state.lock().i_am_slave() {
        ctx.out.error("ERR Please use SETSLOT only with masters.");
        return;
    }
    let Some(slot) = slot_arg(ctx, 2) else {
        return;
    };
    let action = String::from_utf8_lossy(&ctx.args[3]).to_ascii_lowercase();
    let node_arg = ctx.args.get(4).cloned();
    // Keys are counted before the state lock is taken (lock order: shards, then state).
    let keys_in_slot = if action == "node" && argc == 5 {
        ctx.ks.count_in_slot(slot)
    } else {
        0
    };
    let r: Result<(), String> = with_state(ctx, c, |st| {
        let me = st.myself;
        let lookup = |st: &State| node_arg.as_ref().and_then(|a| st.lookup(a));
        let name = || {
            node_arg
                .as_ref()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        };
        match (action.as_str(), argc) {
            ("migrating", 5) => {
                if st.slots[slot as usize] != Some(me) {
                    return Err(format!("ERR I'm not the owner of hash slot {slot}"));
                }
                let Some(n) = lookup(st) else {
                    return Err(format!("ERR I don't know about node {}", name()));
                };
                if st.nodes.get(&n).is_some_and(|x| x.is_slave()) {
                    return Err("ERR Target node is not a master".into());
                }
                st.migrating.insert(slot, n);
            }
            ("importing", 5) => {
                if st.slots[slot as usize] == Some(me) {
                    return Err(format!("ERR I'm already the owner of hash slot {slot}"));
                }
                let Some(n) = lookup(st) else {
                    return Err(format!("ERR I don't know about node {}", name()));
                };
                if st.nodes.get(&n).is_some_and(|x| x.is_slave()) {
                    return Err("ERR Target node is not a master".into());
                }
                st.importing.insert(slot, n);
            }
            ("stable", 4) => {
                st.importing.remove(&slot);
                st.migrating.remove(&slot);
            }
            ("node", 5) => {
                let Some(n) = lookup(st) else {
                    return Err(format!("ERR Unknown node {}", name()));
                };
                if st.nodes.get(&n).is_some_and(|x| x.is_slave()) {
                    return Err("ERR Target node is not a master".into());
                }
                let was_mine = st.slots[slot as usize] == Some(me);
                if was_mine && n != me && keys_in_slot != 0 {
                    return Err(format!("ERR Can't assign hashslot {slot} to a different node while I still hold keys for this hash slot."));
                }
                if keys_in_slot == 0 {
                    st.migrating.remove(&slot);
                }
                st.add_slot(slot, n);
                if was_mine && n != me && st.me().slots.is_empty() && st.allow_replica_migration {
                    st.log.push((
                        true,
                        format!("Configuration change detected. Reconfiguring myself as a replica of {n}"),
                    ));
                    st.set_my_master(n);
                }
                if n == me && st.importing.remove(&slot).is_some() {
                    if st.bump_epoch_without_consensus() {
                        st.log.push((
                            true,
                            format!("configEpoch updated after importing slot {slot}"),
                        ));
                    }
                    st.broadcast_pong();
                }
            }
            _ => {
                return Err(
                    "ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP"
                        .into(),
                );
            }
        }
        st.todo_save = true;
        st.todo_routes = true;
        Ok(())
    });
    match r {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(&e),
    }
}

fn meet(ctx: &mut Ctx, c: &Cluster) {
    let argc = ctx.args.len();
    let ip = String::from_utf8_lossy(&ctx.args[2]).into_owned();
    let port_s = String::from_utf8_lossy(&ctx.args[3]).into_owned();
    let Some(port) = slotgate_protocol::resp::parse_i64(&ctx.args[3]) else {
        ctx.out
            .error(&format!("ERR Invalid TCP base port specified: {port_s}"));
        return;
    };
    let cport = if argc > 4 {
        match slotgate_protocol::resp::parse_i64(&ctx.args[4]) {
            Some(p) => p,
            None => {
                let s = String::from_utf8_lossy(&ctx.args[4]).into_owned();
                ctx.out
                    .error(&format!("ERR Invalid TCP bus port specified: {s}"));
                return;
            }
        }
    } else {
        port + 10000
    };
    let norm_ip = ip.parse::<std::net::IpAddr>().ok().map(|a| a.to_string());
    let (Some(norm_ip), true, true) = (
        norm_ip,
        (1..=65535).contains(&port),
        (1..=65535).contains(&cport),
    ) else {
        ctx.out.error(&format!(
            "ERR Invalid node address specified: {ip}:{port_s}"
        ));
        return;
    };
    with_state(ctx, c, |st| {
        st.start_handshake(&norm_ip, port as u16, cport as u16, true, now_ms());
    });
    c.wake.notify_one();
    ctx.out.ok();
}

/// CLUSTER RESET: forget every other node and every slot; HARD also takes a new identity and
/// zeroes the epochs.
fn reset(st: &mut State, hard: bool) {
    let me = st.myself;
    if st.i_am_slave() {
        st.set_node_as_master(me);
    }
    st.migrating.clear();
    st.importing.clear();
    for s in 0..SLOT_COUNT as u16 {
        st.del_slot(s);
    }
    let others: Vec<NodeId> = st.nodes.keys().filter(|k| **k != me).copied().collect();
    for id in others {
        st.del_node(id);
    }
    if hard {
        st.current_epoch = 0;
        st.last_vote_epoch = 0;
        st.me_mut().config_epoch = 0;
        let new = NodeId::random();
        if let Some(mut n) = st.nodes.remove(&me) {
            n.id = new;
            st.nodes.insert(new, n);
        }
        st.myself = new;
        st.log
            .push((false, format!("Node hard reset, now I'm {new}")));
    }
    let m = st.me_mut();
    m.flags = crate::cluster::MYSELF | MASTER;
    m.master = None;
    st.todo_save = true;
    st.todo_routes = true;
}

fn slots(ctx: &mut Ctx, c: &Cluster) {
    let st = c.state.lock();
    // Ranges of consecutive slots with the same owner.
    let mut ranges: Vec<(u16, u16, NodeId)> = Vec::new();
    for s in 0..SLOT_COUNT as u16 {
        let Some(o) = st.slots[s as usize] else {
            continue;
        };
        match ranges.last_mut() {
            Some((_, end, owner)) if *owner == o && *end + 1 == s => *end = s,
            _ => ranges.push((s, s, o)),
        }
    }
    let out = &mut *ctx.out;
    out.array(ranges.len());
    for (a, b, o) in ranges {
        let replicas: Vec<NodeId> = st
            .replicas_of(o)
            .into_iter()
            .filter(|r| {
                st.nodes
                    .get(r)
                    .is_some_and(|n| !n.failed() && n.repl_offset != 0)
            })
            .collect();
        out.array(3 + replicas.len());
        out.int(a as i64);
        out.int(b as i64);
        for id in std::iter::once(o).chain(replicas) {
            let Some(n) = st.nodes.get(&id) else {
                out.array(0);
                continue;
            };
            out.array(4);
            out.bulk(n.ip.as_bytes());
            out.int(n.port as i64);
            out.bulk(n.id.as_str().as_bytes());
            out.map(0);
        }
    }
}

fn shards(ctx: &mut Ctx, c: &Cluster) {
    let st = c.state.lock();
    let mut masters: Vec<&crate::cluster::Node> =
        st.nodes.values().filter(|n| n.is_master()).collect();
    masters.sort_by_key(|n| n.id);
    let out = &mut *ctx.out;
    out.array(masters.len());
    for m in masters {
        out.map(2);
        out.bulk(b"slots");
        let ranges = m.slots.ranges();
        out.array(ranges.len() * 2);
        for (a, b) in ranges {
            out.int(a as i64);
            out.int(b as i64);
        }
        out.bulk(b"nodes");
        let reps = st.replicas_of(m.id);
        out.array(1 + reps.len());
        for id in std::iter::once(m.id).chain(reps) {
            let Some(n) = st.nodes.get(&id) else {
                out.map(0);
                continue;
            };
            out.map(7);
            out.bulk(b"id");
            out.bulk(n.id.as_str().as_bytes());
            out.bulk(b"port");
            out.int(n.port as i64);
            out.bulk(b"ip");
            out.bulk(n.ip.as_bytes());
            out.bulk(b"endpoint");
            out.bulk(n.ip.as_bytes());
            out.bulk(b"role");
            out.bulk(if n.is_slave() {
                b"replica" as &[u8]
            } else {
                b"master"
            });
            out.bulk(b"replication-offset");
            out.int(n.repl_offset as i64);
            out.bulk(b"health");
            let health: &[u8] = if n.failed() {
                b"fail"
            } else if n.is_slave() && n.repl_offset == 0 {
                b"loading"
            } else {
                b"online"
            };
            out.bulk(health);
        }
    }
}

fn links(ctx: &mut Ctx, c: &Cluster) {
    let st = c.state.lock();
    let mut rows: Vec<(&'static str, NodeId, u64)> = Vec::new();
    let mut ids: Vec<&NodeId> = st.nodes.keys().collect();
    ids.sort();
    for id in ids {
        let n = &st.nodes[id];
        if n.link_up {
            rows.push(("to", n.id, n.link_ctime));
        }
        if n.inbound > 0 {
            rows.push(("from", n.id, n.link_ctime));
        }
    }
    let out = &mut *ctx.out;
    out.array(rows.len());
    for (dir, id, ctime) in rows {
        out.map(6);
        out.bulk(b"direction");
        out.bulk(dir.as_bytes());
        out.bulk(b"node");
        out.bulk(id.as_str().as_bytes());
        out.bulk(b"create-time");
        out.int(ctime as i64);
        out.bulk(b"events");
        out.bulk(b"r");
        out.bulk(b"send-buffer-allocated");
        out.int(0);
        out.bulk(b"send-buffer-used");
        out.int(0);
    }
}
