//! A client blocked through the proxy (BLPOP) on a master that a manual `CLUSTER FAILOVER`
//! turns into a replica. The old master answers its blocked connections
//! `-UNBLOCKED force unblock ... (master -> replica?)` and closes them (Redis 7; slotgate-node
//! does the same); the proxy must not pass that on but wait again on the slot's new master, so
//! the client is served by the next push there. Over a real Redis 7 cluster and over a
//! slotgate-node cluster.

#[path = "features/common.rs"]
mod common;

use common::*;
use slotgate_tests::cluster::{redis_cli, start_proxy};
use slotgate_tests::Raw;
use std::time::{Duration, Instant};

fn run(kind: Kind) {
    let Some(cluster) = cluster(kind, 3, 1) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &["--refresh-interval-secs", "1"]);
    let via = cluster.nodes[0].port;
    // The first master in port order, once CLUSTER SLOTS lists its replica.
    let t = Instant::now();
    let (victim, replica) = loop {
        let mut masters = slots(via);
        masters.sort_by_key(|(_, _, m, _)| *m);
        if let Some(r) = masters.first().and_then(|m| m.3.first()) {
            break (masters[0].2, *r);
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{kind:?}: no replica listed in CLUSTER SLOTS"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let tag = tag_on(via, victim, "bf");
    let slot = slotgate_protocol::key_slot(tag.as_bytes());
    let key = format!("{tag}q");

    let mut blocked = Raw::connect(proxy.port);
    send(&mut blocked, &["BLPOP", &key, "0"]);
    let t = Instant::now();
    while !redis_cli(&["-p", &victim.to_string(), "client", "list"])
        .1
        .contains("flags=b ")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{kind:?}: the proxy's BLPOP never blocked on {victim}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (_, out) = redis_cli(&["-p", &replica.to_string(), "cluster", "failover"]);
    assert_eq!(out.trim(), "OK", "{kind:?}: CLUSTER FAILOVER on {replica}");
    let t = Instant::now();
    loop {
        let promoted = owner(replica, slot).0 == replica && owner(victim, slot).0 == replica;
        if promoted {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{kind:?}: {replica} did not take over slot {slot}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{kind:?}: {replica} took over from {victim} in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    // Nothing reached the client: it is still waiting.
    assert_eq!(
        try_read(&mut blocked, Duration::from_millis(300)),
        None,
        "{kind:?}: the blocked client got a reply during the failover"
    );
    // The client now waits on the new master: a push there serves it.
    let mut pusher = Raw::connect(proxy.port);
    let t = Instant::now();
    let got = loop {
        assert_eq!(
            retry_ok(&mut pusher, &["RPUSH", &key, "x"], Duration::from_secs(20)),
            int(1)
        );
        if let Some(f) = try_read(&mut blocked, Duration::from_secs(2)) {
            break f;
        }
        // The proxy may not have re-issued the BLPOP yet: take the element back and retry.
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{kind:?}: the blocked client was never served"
        );
        let _ = pusher.cmd(&["DEL", &key]);
    };
    assert_eq!(got, arr(vec![bulk(&key), bulk("x")]), "{kind:?}");
    assert_eq!(pusher.cmd(&["LLEN", &key]), int(0), "{kind:?}");
}

#[test]
fn redis_blocked_client_survives_manual_failover() {
    run(Kind::Redis);
}

#[test]
fn node_blocked_client_survives_manual_failover() {
    run(Kind::Node);
}

/// CLIENT UNBLOCK through the proxy, with the proxy's own client ids: TIMEOUT (the default)
/// answers the command's timeout reply, ERROR an `-UNBLOCKED` error (both relayed to the
/// node, which answers the blocked command itself), 0 for a client that is not blocked; the
/// released client goes on working and a later push is not taken by its released command.
fn client_unblock(kind: Kind) {
    let Some(cluster) = cluster(kind, 3, 0) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut c = Raw::connect(proxy.port);
    let mut admin = Raw::connect(proxy.port);
    let slotgate_protocol::Frame::Integer(id) = c.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID")
    };
    let id = id.to_string();
    let wait_blocked = |admin: &mut Raw, want: bool| {
        let t = Instant::now();
        loop {
            let list = match admin.cmd(&["CLIENT", "LIST"]) {
                slotgate_protocol::Frame::Bulk(b) | slotgate_protocol::Frame::Verbatim(_, b) => b,
                f => panic!("CLIENT LIST: {f:?}"),
            };
            let line = String::from_utf8_lossy(&list)
                .lines()
                .find(|l| l.starts_with(&format!("id={id} ")))
                .map(str::to_string)
                .unwrap_or_default();
            if line.contains(" flags=b ") == want {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{kind:?}: blocked={want}: {line}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]), int(0));
    send(&mut c, &["BLPOP", "{ub}l", "0"]);
    wait_blocked(&mut admin, true);
    std::thread::sleep(Duration::from_millis(100)); // let the BLPOP reach its node
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id]), int(1));
    assert_eq!(
        try_read(&mut c, Duration::from_secs(5)),
        Some(slotgate_protocol::Frame::Null),
        "{kind:?}"
    );
    wait_blocked(&mut admin, false);
    send(&mut c, &["BLMOVE", "{ub}l", "{ub}d", "LEFT", "LEFT", "0"]);
    wait_blocked(&mut admin, true);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"]), int(1));
    assert_eq!(
        try_read(&mut c, Duration::from_secs(5)),
        Some(err("UNBLOCKED client unblocked via CLIENT UNBLOCK")),
        "{kind:?}"
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", &id, "maybe"]),
        err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", "abc"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(c.cmd(&["RPUSH", "{ub}l", "x"]), int(1));
    assert_eq!(c.cmd(&["LRANGE", "{ub}l", "0", "-1"]), arr(vec![bulk("x")]));
}

#[test]
fn redis_client_unblock_through_the_proxy() {
    client_unblock(Kind::Redis);
}

#[test]
fn node_client_unblock_through_the_proxy() {
    client_unblock(Kind::Node);
}
