//! Helpers shared by the proxy feature tests (`proxy_features*.rs`): the two backends (a real
//! Redis 7 cluster and a slotgate-node cluster), a standalone redis-server with a replica as
//! the reference, raw-protocol helpers, and cluster surgery (slot owners, hand-made slot
//! migration, killing a master and waiting for its replica to take over).

#![allow(dead_code)]

use slotgate_protocol::Frame;
use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::*;
use std::time::{Duration, Instant};

/// Which cluster the proxy fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// redis-server 7 processes.
    Redis,
    /// slotgate-node processes.
    Node,
}

/// Starts a cluster of `kind` (None when the peers are missing, outside CI).
pub fn cluster(kind: Kind, masters: usize, replicas: usize) -> Option<Cluster> {
    match kind {
        Kind::Redis => Cluster::redis(masters, replicas, 2000),
        Kind::Node => {
            require_peer("redis-cli")?;
            Some(Cluster::start(
                &our_bin("slotgate-node"),
                masters,
                replicas,
                2000,
            ))
        }
    }
}

/// A standalone redis-server and a replica of it (WAIT and replica reads then answer as
/// through the proxy, whose shards have one replica each).
pub fn standalone_with_replica() -> Option<(Proc, Proc)> {
    let master = start_redis(&[])?;
    let replica = start_redis(&["--replicaof", "127.0.0.1", &master.port.to_string()])?;
    let t = Instant::now();
    loop {
        let (_, info) = redis_cli(&["-p", &replica.port.to_string(), "info", "replication"]);
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "replica not synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((master, replica))
}

pub fn bulk(s: &str) -> Frame {
    Frame::bulk(s.to_string())
}

pub fn simple(s: &str) -> Frame {
    Frame::Simple(s.to_string().into())
}

pub fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

pub fn arr(v: Vec<Frame>) -> Frame {
    Frame::Array(v)
}

pub fn err(s: &str) -> Frame {
    Frame::Error(s.to_string().into())
}

/// A (un)subscribe confirmation or message as a RESP2 array.
pub fn conf(kind: &str, name: Option<&str>, n: i64) -> Frame {
    arr(vec![
        bulk(kind),
        name.map(bulk).unwrap_or(Frame::Null),
        int(n),
    ])
}

/// A message frame `[kind, channel, data]` (RESP2 array, or RESP3 push).
pub fn msg(kind: &str, channel: &str, data: &str, push: bool) -> Frame {
    let v = vec![bulk(kind), bulk(channel), bulk(data)];
    if push {
        Frame::Push(v)
    } else {
        arr(v)
    }
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Sends a command without reading its reply.
pub fn send(r: &mut Raw, args: &[&str]) {
    let mut out = bytes::BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    r.send(&out);
}

/// Sends a command and reads `n` replies.
pub fn send_read(r: &mut Raw, args: &[&str], n: usize) -> Vec<Frame> {
    send(r, args);
    (0..n)
        .map(|i| {
            r.read()
                .unwrap_or_else(|| panic!("reply {i} of {args:?} missing"))
        })
        .collect()
}

/// Reads one frame, or None after `wait`.
pub fn try_read(r: &mut Raw, wait: Duration) -> Option<Frame> {
    r.s.set_read_timeout(Some(wait)).ok();
    let f = r.read();
    r.s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    f
}

/// Runs `args` through the proxy and directly; the replies must be equal.
pub fn same(p: &mut Raw, d: &mut Raw, args: &[&str]) -> Frame {
    let a = p.cmd(args);
    let b = d.cmd(args);
    assert_eq!(a, b, "{args:?}: proxy vs standalone");
    a
}

/// Like [`same`] for a command with `n` replies.
pub fn same_n(p: &mut Raw, d: &mut Raw, args: &[&str], n: usize) -> Vec<Frame> {
    let a = send_read(p, args, n);
    let b = send_read(d, args, n);
    assert_eq!(a, b, "{args:?}: proxy vs standalone");
    a
}

/// Slot ranges and owners from CLUSTER SLOTS of the node on `port`: (start, end, master
/// port, replica ports).
pub fn slots(port: u16) -> Vec<(u16, u16, u16, Vec<u16>)> {
    let mut r = Raw::connect(port);
    let Frame::Array(ranges) = r.cmd(&["CLUSTER", "SLOTS"]) else {
        panic!("CLUSTER SLOTS")
    };
    let port_of = |f: &Frame| -> u16 {
        match f {
            Frame::Array(n) => match n.get(1) {
                Some(Frame::Integer(p)) => *p as u16,
                _ => 0,
            },
            _ => 0,
        }
    };
    ranges
        .iter()
        .filter_map(|r| match r {
            Frame::Array(v) if v.len() >= 3 => {
                let (Frame::Integer(a), Frame::Integer(b)) = (&v[0], &v[1]) else {
                    return None;
                };
                Some((
                    *a as u16,
                    *b as u16,
                    port_of(&v[2]),
                    v[3..].iter().map(port_of).collect(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// The master port owning `slot`, and its replicas, as the node on `via` sees it.
pub fn owner(via: u16, slot: u16) -> (u16, Vec<u16>) {
    slots(via)
        .into_iter()
        .find(|(a, b, _, _)| (*a..=*b).contains(&slot))
        .map(|(_, _, m, r)| (m, r))
        .unwrap_or((0, vec![]))
}

/// A hash tag (`{tagN}`) whose slot is served by the master on `master`.
pub fn tag_on(via: u16, master: u16, prefix: &str) -> String {
    for i in 0..100_000 {
        let tag = format!("{{{prefix}{i}}}");
        if owner(via, slotgate_protocol::key_slot(tag.as_bytes())).0 == master {
            return tag;
        }
    }
    panic!("no tag on {master}")
}

/// `CLUSTER MYID` of the node on `port`.
pub fn myid(port: u16) -> String {
    let (_, id) = redis_cli(&["-p", &port.to_string(), "cluster", "myid"]);
    id.trim().to_string()
}

/// Moves `slot` from the master on `src` to the master on `dst` by hand (SETSLOT IMPORTING /
/// MIGRATING, MIGRATE of its keys, SETSLOT NODE everywhere), as `redis-cli --cluster
/// reshard` does for each slot.
pub fn migrate_slot(cluster: &Cluster, slot: u16, src: u16, dst: u16) {
    let (s, d) = (src.to_string(), dst.to_string());
    let (src_id, dst_id) = (myid(src), myid(dst));
    let sl = slot.to_string();
    let run = |args: &[&str]| {
        let (ok, out) = redis_cli(args);
        assert!(ok && !out.contains("ERR"), "{args:?}: {out}");
    };
    run(&["-p", &d, "cluster", "setslot", &sl, "importing", &src_id]);
    run(&["-p", &s, "cluster", "setslot", &sl, "migrating", &dst_id]);
    for _ in 0..1000 {
        let (_, keys) = redis_cli(&["-p", &s, "cluster", "getkeysinslot", &sl, "100"]);
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut args = vec![
            "-p",
            &s,
            "migrate",
            "127.0.0.1",
            &d,
            "",
            "0",
            "5000",
            "KEYS",
        ];
        args.extend(keys.iter().copied());
        run(&args);
    }
    run(&["-p", &d, "cluster", "setslot", &sl, "node", &dst_id]);
    run(&["-p", &s, "cluster", "setslot", &sl, "node", &dst_id]);
    for n in &cluster.nodes {
        if n.port != src && n.port != dst {
            let _ = redis_cli(&[
                "-p",
                &n.port.to_string(),
                "cluster",
                "setslot",
                &sl,
                "node",
                &dst_id,
            ]);
        }
    }
    let t = Instant::now();
    while owner(src, slot).0 != dst || owner(dst, slot).0 != dst {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "slot {slot} did not move"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills (SIGKILL) the master on `victim` and waits until `via` reports one of its replicas
/// serving `slot` and the cluster state ok.
pub fn kill_and_fail_over(cluster: &mut Cluster, victim: u16, via: u16, slot: u16) -> u16 {
    let i = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim)
        .expect("victim");
    let _ = cluster.nodes[i].child.kill();
    let _ = cluster.nodes[i].child.wait();
    let t = Instant::now();
    loop {
        let (_, info) = redis_cli(&["-p", &via.to_string(), "cluster", "info"]);
        let now = owner(via, slot).0;
        if info.contains("cluster_state:ok") && now != victim && now != 0 {
            return now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no failover of {victim}: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `args` through the proxy until the reply is not an error (a failover in progress),
/// at most `limit`.
pub fn retry_ok(p: &mut Raw, args: &[&str], limit: Duration) -> Frame {
    let t = Instant::now();
    loop {
        let r = p.cmd(args);
        if !matches!(r, Frame::Error(_)) {
            return r;
        }
        assert!(t.elapsed() < limit, "{args:?} kept failing: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes (`PUBLISH` or `SPUBLISH`) probe messages until every subscriber has received
/// one (a subscription being re-established loses what is published meanwhile), then reads
/// the probes still in flight. Only this channel's messages may arrive meanwhile.
pub fn publish_until_received(
    publisher: &mut Raw,
    subs: &mut [(Raw, bool)],
    cmd: &str,
    channel: &str,
    limit: Duration,
) {
    let t = Instant::now();
    let kind = if cmd == "SPUBLISH" {
        "smessage"
    } else {
        "message"
    };
    let check = |f: &Frame| {
        let (Frame::Array(v) | Frame::Push(v)) = f else {
            panic!("unexpected {f:?}")
        };
        assert_eq!(v[0], bulk(kind), "{f:?}");
        assert_eq!(v[1], bulk(channel), "{f:?}");
    };
    let mut done = vec![false; subs.len()];
    let mut i = 0;
    while done.iter().any(|d| !d) {
        assert!(
            t.elapsed() < limit,
            "{cmd} {channel}: not received by every subscriber after {limit:?}"
        );
        let _ = publisher.cmd(&[cmd, channel, &format!("probe{i}")]);
        i += 1;
        for (k, (s, _)) in subs.iter_mut().enumerate() {
            if !done[k] {
                if let Some(f) = try_read(s, Duration::from_millis(100)) {
                    check(&f);
                    done[k] = true;
                }
            }
        }
    }
    for (s, _) in subs.iter_mut() {
        while let Some(f) = try_read(s, Duration::from_millis(300)) {
            check(&f);
        }
    }
}

/// Every feature in flight on one hash tag, to be checked after the cluster changed under it
/// (a failover or a reshard of the tag's slot).
pub struct InFlight {
    pub kind: Kind,
    pub proxy_port: u16,
    pub tag: String,
    /// A client with a transaction open (MULTI and one queued write).
    pub tx: Raw,
    /// A client blocked in BLPOP with timeout 0.
    pub blocked: std::thread::JoinHandle<Frame>,
    /// A RESP2 subscriber (a channel and a shard channel) and a RESP3 one.
    pub subs: Vec<(Raw, bool)>,
    pub sha: String,
    pub main: Raw,
}

pub const SCRIPT_BODY: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

impl InFlight {
    /// Starts everything on `tag` through the proxy.
    pub fn start(kind: Kind, proxy_port: u16, tag: &str) -> InFlight {
        let mut main = Raw::connect(proxy_port);
        let k = format!("{tag}k");
        assert_eq!(main.cmd(&["SET", &k, "before"]), simple("OK"));
        assert_eq!(main.cmd(&["WAIT", "1", "5000"]), int(1));
        let mut sha = String::new();
        if kind == Kind::Redis {
            let Frame::Bulk(s) = main.cmd(&["SCRIPT", "LOAD", SCRIPT_BODY]) else {
                panic!("SCRIPT LOAD")
            };
            sha = String::from_utf8_lossy(&s).into_owned();
            assert_eq!(
                main.cmd(&["EVALSHA", &sha, "1", &format!("{tag}n"), "1"]),
                int(1)
            );
        }
        assert_eq!(
            main.cmd(&["CONFIG", "SET", "slowlog-max-len", "77"]),
            simple("OK")
        );
        let mut tx = Raw::connect(proxy_port);
        assert_eq!(tx.cmd(&["MULTI"]), simple("OK"));
        assert_eq!(tx.cmd(&["SET", &format!("{tag}tx"), "1"]), simple("QUEUED"));
        let q = format!("{tag}q");
        let blocked = std::thread::spawn(move || {
            let mut b = Raw::connect(proxy_port);
            b.s.set_read_timeout(Some(Duration::from_secs(90))).ok();
            b.cmd(&["BLPOP", &q, "0"])
        });
        let mut subs = Vec::new();
        for resp3 in [false, true] {
            let mut s = Raw::connect(proxy_port);
            if resp3 {
                let Frame::Map(_) = s.cmd(&["HELLO", "3"]) else {
                    panic!("HELLO 3")
                };
            }
            let f = s.cmd(&["SUBSCRIBE", "news"]);
            assert_eq!(f.clone(), {
                let v = vec![bulk("subscribe"), bulk("news"), int(1)];
                if resp3 {
                    Frame::Push(v)
                } else {
                    arr(v)
                }
            });
            let ch = format!("{tag}ch");
            let f = s.cmd(&["SSUBSCRIBE", &ch]);
            assert!(
                matches!(&f, Frame::Array(v) | Frame::Push(v) if v[0] == bulk("ssubscribe")),
                "{f:?}"
            );
            subs.push((s, resp3));
        }
        std::thread::sleep(Duration::from_millis(300));
        InFlight {
            kind,
            proxy_port,
            tag: tag.to_string(),
            tx,
            blocked,
            subs,
            sha,
            main,
        }
    }

    /// Checks every feature after the change. `tx_error` tells whether EXEC's error is right.
    pub fn check(mut self, tx_error: impl Fn(&[u8]) -> bool) {
        let limit = Duration::from_secs(30);
        let tag = self.tag.clone();
        let main = &mut self.main;
        // Transactions: the open one fails cleanly and applies nothing; a new one works.
        let r = self.tx.cmd(&["EXEC"]);
        match &r {
            Frame::Error(e) => assert!(tx_error(e), "EXEC: {r:?}"),
            other => panic!("EXEC after the change must fail, got {other:?}"),
        }
        let txk = format!("{tag}tx");
        assert_eq!(retry_ok(main, &["GET", &txk], limit), Frame::Null);
        let t = Instant::now();
        loop {
            assert_eq!(self.tx.cmd(&["MULTI"]), simple("OK"));
            let q = self.tx.cmd(&["SET", &txk, "2"]);
            let e = self.tx.cmd(&["EXEC"]);
            if q == simple("QUEUED") && e == arr(vec![simple("OK")]) {
                break;
            }
            assert!(t.elapsed() < limit, "new transaction: {q:?} {e:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(main.cmd(&["GET", &txk]), bulk("2"));
        // Blocking: the blocked client is woken by a push after the change.
        let q = format!("{tag}q");
        assert_eq!(retry_ok(main, &["RPUSH", &q, "job"], limit), int(1));
        let got = self.blocked.join().expect("blocked client");
        assert_eq!(got, arr(vec![bulk(&q), bulk("job")]));
        // Pub/sub: both subscriptions come back on their own; then exactly-once in order.
        let mut publisher = Raw::connect(self.proxy_port);
        let ch = format!("{tag}ch");
        publish_until_received(&mut publisher, &mut self.subs, "PUBLISH", "news", limit);
        publish_until_received(&mut publisher, &mut self.subs, "SPUBLISH", &ch, limit);
        for i in 0..100 {
            // PUBLISH counts the receivers of the node that took it, as a cluster node does;
            // after a failover the subscription links may sit on another master.
            let r = publisher.cmd(&["PUBLISH", "news", &format!("m{i}")]);
            assert!(matches!(r, Frame::Integer(0..=2)), "PUBLISH: {r:?}");
            assert_eq!(publisher.cmd(&["SPUBLISH", &ch, &format!("s{i}")]), int(2));
        }
        // In order per channel (the two channels come from different nodes: no order
        // between them, as for any cluster client).
        for (s, push) in &mut self.subs {
            let (mut m, mut sm) = (0, 0);
            for _ in 0..200 {
                let f = s.read().expect("message");
                if f == msg("message", "news", &format!("m{m}"), *push) {
                    m += 1;
                } else if f == msg("smessage", &ch, &format!("s{sm}"), *push) {
                    sm += 1;
                } else {
                    panic!("lost, duplicated or out of order: {f:?} (next m{m} / s{sm})");
                }
            }
            assert_eq!(try_read(s, Duration::from_millis(300)), None);
        }
        // Scripts: EVALSHA works where the key lives now (reloaded if the node lost it).
        let n = format!("{tag}n");
        if self.kind == Kind::Redis {
            assert_eq!(
                retry_ok(main, &["EVALSHA", &self.sha, "1", &n, "1"], limit),
                int(2)
            );
        } else {
            let r = main.cmd(&["EVAL", SCRIPT_BODY, "1", &n, "1"]);
            assert!(
                matches!(&r, Frame::Error(e) if e.starts_with(b"ERR unknown command 'EVAL'")),
                "{r:?}"
            );
        }
        // Replica reads: served (by a replica, or the master when the shard has none).
        assert_eq!(
            main.cmd(&["CONFIG", "SET", "read-from", "replica"]),
            simple("OK")
        );
        let k = format!("{tag}k");
        let t = Instant::now();
        while main.cmd(&["GET", &k]) != bulk("before") {
            assert!(t.elapsed() < limit, "replica read of {k}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            main.cmd(&["CONFIG", "SET", "read-from", "master"]),
            simple("OK")
        );
        // WAIT goes to the node that took the last write (the new owner).
        assert_eq!(main.cmd(&["SET", &format!("{tag}k2"), "v"]), simple("OK"));
        let w = main.cmd(&["WAIT", "0", "1000"]);
        assert!(matches!(w, Frame::Integer(_)), "WAIT: {w:?}");
        // CONFIG: the proxy's own settings are untouched.
        assert_eq!(
            main.cmd(&["CONFIG", "GET", "slowlog-max-len"]),
            arr(vec![bulk("slowlog-max-len"), bulk("77")])
        );
    }
}
