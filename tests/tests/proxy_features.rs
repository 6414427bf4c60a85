//! Differential tests of the proxy's stateful features (issue 8): the same client script runs
//! through the proxy and directly against a standalone redis-server (with one replica, as each
//! shard has) and the replies must be equal — transactions, blocking commands, pub/sub and
//! sharded pub/sub (RESP2 and RESP3), scripts and functions, replica reads, WAIT and CONFIG.
//! Where a cluster must differ from a standalone server (CROSSSLOT) the cluster's answer is
//! asserted instead. Each test body runs over a real Redis 7 cluster and over a slotgate-node
//! cluster; slotgate-node has no Lua, so there the proxy must pass the node's own error
//! through. Also: 1,000 messages of each pub/sub kind, none lost or duplicated.

#[path = "features/common.rs"]
mod common;

use common::*;
use slotgate_protocol::Frame;
use slotgate_tests::cluster::{redis_cli, start_proxy};
use slotgate_tests::Raw;
use std::time::{Duration, Instant};

fn transactions(p: &mut Raw, d: &mut Raw, proxy_port: u16, direct_port: u16) {
    same(p, d, &["MULTI"]);
    same(p, d, &["SET", "{t}a", "1"]);
    same(p, d, &["INCR", "{t}a"]);
    same(p, d, &["PING"]);
    assert_eq!(
        same(p, d, &["EXEC"]),
        arr(vec![simple("OK"), int(2), simple("PONG")])
    );
    // A runtime error inside EXEC is one element of the reply.
    same(p, d, &["MULTI"]);
    same(p, d, &["INCR", "{t}a"]);
    same(p, d, &["LPUSH", "{t}a", "z"]);
    same(p, d, &["EXEC"]);
    // Queue-time errors: EXECABORT.
    same(p, d, &["MULTI"]);
    same(p, d, &["NOSUCHCMD", "{t}a"]);
    same(p, d, &["SET", "{t}a", "never"]);
    same(p, d, &["EXEC"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["GET"]);
    same(p, d, &["EXEC"]);
    same(p, d, &["GET", "{t}a"]);
    // Nesting and stray EXEC/DISCARD.
    same(p, d, &["MULTI"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["DISCARD"]);
    same(p, d, &["DISCARD"]);
    same(p, d, &["EXEC"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["EXEC"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["SET", "{t}k1", "v"]);
    same(p, d, &["DISCARD"]);
    same(p, d, &["GET", "{t}k1"]);
    // WATCH: untouched, then touched by another client.
    same(p, d, &["WATCH", "{t}a", "{t}b"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["SET", "{t}b", "1"]);
    same(p, d, &["EXEC"]);
    let (mut p2, mut d2) = (Raw::connect(proxy_port), Raw::connect(direct_port));
    same(p, d, &["WATCH", "{t}a"]);
    same(&mut p2, &mut d2, &["SET", "{t}a", "9"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["SET", "{t}a", "4"]);
    assert_eq!(same(p, d, &["EXEC"]), Frame::Null);
    same(p, d, &["GET", "{t}a"]);
    same(p, d, &["MULTI"]);
    same(p, d, &["WATCH", "{t}x"]);
    same(p, d, &["DISCARD"]);
    same(p, d, &["UNWATCH"]);
    // The cluster's rule: a key in another slot inside MULTI is CROSSSLOT, EXEC then
    // EXECABORT, and nothing of the transaction is applied.
    assert_eq!(p.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(p.cmd(&["SET", "{t}a", "changed"]), simple("QUEUED"));
    assert_eq!(p.cmd(&["SET", "other", "x"]), err(CROSSSLOT));
    assert_eq!(
        p.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(p.cmd(&["GET", "{t}a"]), bulk("9"));
    assert_eq!(p.cmd(&["GET", "other"]), Frame::Null);
    assert_eq!(p.cmd(&["WATCH", "{t}a", "other"]), err(CROSSSLOT));
}

fn blocking(p: &mut Raw, d: &mut Raw, kind: Kind, proxy_port: u16, direct_port: u16) {
    same(p, d, &["BLPOP", "{b}none", "0.1"]);
    same(p, d, &["RPUSH", "{b}l", "a", "b", "c", "d"]);
    same(p, d, &["BLPOP", "{b}l", "0"]);
    same(p, d, &["BRPOP", "{b}none", "{b}l", "0"]);
    same(p, d, &["BLMOVE", "{b}l", "{b}m", "LEFT", "RIGHT", "0"]);
    same(p, d, &["BRPOPLPUSH", "{b}m", "{b}l", "0"]);
    same(
        p,
        d,
        &[
            "BLMPOP", "0.1", "2", "{b}none", "{b}l", "RIGHT", "COUNT", "5",
        ],
    );
    same(p, d, &["BLMOVE", "{b}none", "{b}m", "LEFT", "RIGHT", "0.1"]);
    same(p, d, &["ZADD", "{b}z", "1", "a", "2", "b", "3", "c"]);
    same(p, d, &["BZPOPMIN", "{b}z", "0"]);
    same(p, d, &["BZPOPMAX", "{b}z", "0"]);
    same(p, d, &["BZMPOP", "0.1", "1", "{b}z", "MIN"]);
    same(p, d, &["BZPOPMIN", "{b}z", "0.1"]);
    same(p, d, &["BLPOP", "{b}l", "notanumber"]);
    if kind == Kind::Redis {
        same(p, d, &["XADD", "{b}s", "1-1", "f", "v"]);
        same(p, d, &["XREAD", "BLOCK", "100", "STREAMS", "{b}s", "0"]);
        same(p, d, &["XREAD", "BLOCK", "100", "STREAMS", "{b}s", "$"]);
    }
    // Keys of one blocking command in two slots: CROSSSLOT, as a cluster node.
    assert_eq!(p.cmd(&["BLPOP", "{b}l", "other", "0.1"]), err(CROSSSLOT));
    // Timeout 0, woken later by another client; other clients are served meanwhile.
    let waiter = |port: u16| {
        std::thread::spawn(move || {
            let mut b = Raw::connect(port);
            b.s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            b.cmd(&["BLPOP", "{b}w", "0"])
        })
    };
    let (wp, wd) = (waiter(proxy_port), waiter(direct_port));
    std::thread::sleep(Duration::from_millis(300));
    same(p, d, &["PING"]);
    same(p, d, &["RPUSH", "{b}w", "job"]);
    let (rp, rd) = (wp.join().unwrap(), wd.join().unwrap());
    assert_eq!(rp, rd);
    assert_eq!(rp, arr(vec![bulk("{b}w"), bulk("job")]));
    // A blocked client that disconnects releases its backend connection: the next element
    // stays in the list instead of going to the dead client.
    {
        let mut gone = Raw::connect(proxy_port);
        send(&mut gone, &["BLPOP", "{b}gone", "0"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.cmd(&["RPUSH", "{b}gone", "kept"]), int(1));
    assert_eq!(p.cmd(&["LLEN", "{b}gone"]), int(1));
}

/// Pub/sub in RESP2 and RESP3, classic and sharded, through the proxy and directly.
/// Reads `n` messages from each subscriber: the same ones, in any order.
fn same_messages(p: &mut Raw, d: &mut Raw, n: usize) {
    let mut ours: Vec<String> = (0..n)
        .map(|_| format!("{:?}", p.read().expect("message")))
        .collect();
    let mut theirs: Vec<String> = (0..n)
        .map(|_| format!("{:?}", d.read().expect("message")))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

fn pubsub(proxy_port: u16, direct_port: u16) {
    let (mut p, mut d) = (Raw::connect(proxy_port), Raw::connect(direct_port));
    let (mut pp, mut dp) = (Raw::connect(proxy_port), Raw::connect(direct_port));
    // Outside pub/sub mode.
    same(&mut p, &mut d, &["UNSUBSCRIBE"]);
    same_n(&mut p, &mut d, &["UNSUBSCRIBE", "a", "b"], 2);
    same(&mut p, &mut d, &["PUNSUBSCRIBE"]);
    same(&mut p, &mut d, &["SUNSUBSCRIBE"]);
    same_n(&mut p, &mut d, &["SUNSUBSCRIBE", "{s}a", "{s}b"], 2);
    same(&mut p, &mut d, &["SUBSCRIBE"]);
    // RESP2 subscriber.
    same_n(&mut p, &mut d, &["SUBSCRIBE", "c1", "c2", "c1"], 3);
    same(&mut p, &mut d, &["PSUBSCRIBE", "p*"]);
    same_n(&mut p, &mut d, &["SSUBSCRIBE", "{s}1", "{s}2"], 2);
    same(&mut p, &mut d, &["SSUBSCRIBE", "{s}1"]);
    same(&mut p, &mut d, &["PING"]);
    same(&mut p, &mut d, &["PING", "hi"]);
    same(&mut p, &mut d, &["GET", "x"]);
    same(&mut p, &mut d, &["SSUBSCRIBE"]);
    same(&mut pp, &mut dp, &["PUBLISH", "c1", "m1"]);
    same(&mut pp, &mut dp, &["PUBLISH", "px", "m2"]);
    same(&mut pp, &mut dp, &["SPUBLISH", "{s}2", "m3"]);
    same(&mut pp, &mut dp, &["SPUBLISH", "{s}9", "m4"]);
    same(&mut pp, &mut dp, &["PUBSUB", "NUMSUB", "c1", "c2", "zz"]);
    same(&mut pp, &mut dp, &["PUBSUB", "NUMPAT"]);
    same(&mut pp, &mut dp, &["PUBSUB", "SHARDNUMSUB", "{s}1", "{s}9"]);
    let mut sc = pp.cmd(&["PUBSUB", "SHARDCHANNELS"]);
    if let Frame::Array(v) = &mut sc {
        v.sort_by_key(|f| format!("{f:?}"));
    }
    assert_eq!(sc, arr(vec![bulk("{s}1"), bulk("{s}2")]));
    // The same three messages. Their order may differ: a cluster PUBLISH reaches the
    // subscription's node over the cluster bus, an SPUBLISH comes from the shard's owner, and
    // nothing orders the two (nor does Redis Cluster promise it).
    same_messages(&mut p, &mut d, 3);
    same(&mut p, &mut d, &["SUNSUBSCRIBE", "{s}1"]);
    same_n(&mut p, &mut d, &["UNSUBSCRIBE", "c2", "c1"], 2);
    same(&mut p, &mut d, &["PING"]);
    same(&mut p, &mut d, &["PUNSUBSCRIBE", "p*"]);
    // Still subscribed to {s}2: still in pub/sub mode.
    same(&mut p, &mut d, &["PING"]);
    same(&mut p, &mut d, &["SUNSUBSCRIBE"]);
    // Back in normal mode.
    same(&mut p, &mut d, &["PING"]);
    same(&mut p, &mut d, &["SET", "after", "1"]);
    // Shard channels of one SSUBSCRIBE must share a slot in a cluster.
    assert_eq!(p.cmd(&["SSUBSCRIBE", "a", "b"]), err(CROSSSLOT));
    assert_eq!(p.cmd(&["SUNSUBSCRIBE", "a", "b"]), err(CROSSSLOT));
    assert_eq!(p.cmd(&["PING"]), simple("PONG"));
    // RESP3: pushes, and any command while subscribed.
    let (mut p3, mut d3) = (Raw::connect(proxy_port), Raw::connect(direct_port));
    let Frame::Map(_) = p3.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3")
    };
    let Frame::Map(_) = d3.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3")
    };
    same(&mut p3, &mut d3, &["SUBSCRIBE", "c3"]);
    same(&mut p3, &mut d3, &["SSUBSCRIBE", "{s}3"]);
    same(&mut p3, &mut d3, &["SET", "{s}3", "v"]);
    same(&mut p3, &mut d3, &["GET", "{s}3"]);
    same(&mut p3, &mut d3, &["PING"]);
    same(&mut pp, &mut dp, &["PUBLISH", "c3", "r3"]);
    same(&mut pp, &mut dp, &["SPUBLISH", "{s}3", "s3"]);
    same_messages(&mut p3, &mut d3, 2);
    same(&mut p3, &mut d3, &["SUNSUBSCRIBE"]);
    same(&mut p3, &mut d3, &["UNSUBSCRIBE"]);
    same(&mut p3, &mut d3, &["UNSUBSCRIBE"]);
    // RESET leaves pub/sub mode and RESP3.
    same(&mut p3, &mut d3, &["SUBSCRIBE", "c4"]);
    same(&mut p3, &mut d3, &["RESET"]);
    same(&mut p3, &mut d3, &["PING"]);
    let _ = pp.cmd(&["PUBLISH", "c4", "gone"]);
    assert_eq!(try_read(&mut p3, Duration::from_millis(300)), None);
}

fn scripts(p: &mut Raw, d: &mut Raw, kind: Kind, node_port: u16) {
    let body = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let lib = "#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\nredis.register_function{function_name='myro', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}";
    let sha = "8cd00688c05c46bde4a2e60658ef20a2e5c0b248";
    let script: &[&[&str]] = &[
        &["SCRIPT", "LOAD", body],
        &["EVALSHA", sha, "1", "{x}k", "2"],
        &["EVAL", body, "1", "{x}k", "3"],
        &["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "{x}k"],
        &["EVALSHA_RO", sha, "1", "{x}k", "1"],
        &["EVAL", "return 1", "0"],
        &[
            "SCRIPT",
            "EXISTS",
            sha,
            "ffffffffffffffffffffffffffffffffffffffff",
        ],
        &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
        &["FUNCTION", "LOAD", lib],
        &["FCALL", "myfunc", "1", "{x}f", "v"],
        &["FCALL_RO", "myro", "1", "{x}f"],
        &["FCALL_RO", "myfunc", "1", "{x}f", "w"],
        &["FUNCTION", "DELETE", "mylib"],
        &["SCRIPT", "FLUSH"],
        &["EVALSHA", sha, "1", "{x}k", "2"],
    ];
    match kind {
        Kind::Redis => {
            for c in script {
                same(p, d, c);
            }
            // Declared keys in two slots: CROSSSLOT.
            assert_eq!(p.cmd(&["EVAL", body, "2", "a", "b", "1"]), err(CROSSSLOT));
        }
        Kind::Node => {
            // No scripting engine: the node's own answer comes through unchanged.
            let mut n = Raw::connect(node_port);
            for c in script {
                let (a, b) = (p.cmd(c), n.cmd(c));
                assert!(matches!(a, Frame::Error(_)), "{c:?}: {a:?}");
                assert_eq!(a, b, "{c:?}: proxy vs node");
            }
        }
    }
}

/// WAIT and replica reads (through `r`, a proxy started with `--read-from replica`), and
/// CONFIG GET/SET (through `p`).
fn wait_replicas_config(p: &mut Raw, r: &mut Raw, d: &mut Raw, cluster_ports: &[u16]) {
    let gets_on_replicas = || -> u64 {
        let mut n = 0;
        for port in cluster_ports {
            let (_, role) = redis_cli(&["-p", &port.to_string(), "role"]);
            if !role.starts_with("slave") {
                continue;
            }
            let (_, stats) = redis_cli(&["-p", &port.to_string(), "info", "commandstats"]);
            for l in stats.lines() {
                if let Some(rest) = l.strip_prefix("cmdstat_get:calls=") {
                    n += rest
                        .split(',')
                        .next()
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        n
    };
    // The proxy learns the replicas from CLUSTER SLOTS, which lists a replica once it has a
    // replication offset (Redis rule): write to every shard, then wait until the map
    // refreshes include their replicas (all reads of a round reach replicas).
    for i in 0..10 {
        let k = format!("rr{i}");
        same(r, d, &["SET", &k, &i.to_string()]);
        same(r, d, &["WAIT", "1", "5000"]);
    }
    let t = Instant::now();
    loop {
        let before = gets_on_replicas();
        for i in 0..10 {
            assert_eq!(r.cmd(&["GET", &format!("rr{i}")]), bulk(&i.to_string()));
        }
        if gets_on_replicas() >= before + 10 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "reads do not reach every shard's replica"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let before = gets_on_replicas();
    for i in 10..20 {
        let k = format!("rr{i}");
        same(r, d, &["SET", &k, &i.to_string()]);
        same(r, d, &["WAIT", "1", "5000"]);
        same(r, d, &["GET", &k]);
        same(r, d, &["GET", &format!("rr{}", i - 10)]);
    }
    same(r, d, &["WAIT", "1", "100"]);
    assert!(
        gets_on_replicas() >= before + 20,
        "GETs were not served by replicas"
    );
    for c in [
        &["CONFIG", "GET", "timeout"][..],
        &["CONFIG", "GET", "maxclients"],
        &["CONFIG", "GET", "slowlog-log-slower-than"],
        &["CONFIG", "GET", "slowlog-max-len"],
        &["CONFIG", "SET", "timeout", "100"],
        &["CONFIG", "GET", "timeout"],
        &["CONFIG", "SET", "timeout", "0"],
        &["CONFIG", "SET", "slowlog-max-len", "64"],
        &["CONFIG", "GET", "slowlog-max-len"],
        &["CONFIG", "SET", "slowlog-max-len", "128"],
        &["CONFIG", "GET", "nosuchsetting"],
        &["CONFIG", "SET", "nosuchsetting", "1"],
        &["CONFIG", "SET", "maxclients", "abc"],
    ] {
        same(p, d, c);
    }
}

/// 1,000 messages of each kind through the proxy to a RESP2 and a RESP3 subscriber: every
/// one arrives exactly once, in order.
fn thousand_messages(proxy_port: u16) {
    let mut s2 = Raw::connect(proxy_port);
    let mut s3 = Raw::connect(proxy_port);
    let Frame::Map(_) = s3.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3")
    };
    for s in [&mut s2, &mut s3] {
        send_read(s, &["SUBSCRIBE", "news"], 1);
        send_read(s, &["SSUBSCRIBE", "{sh}news"], 1);
    }
    let mut publisher = Raw::connect(proxy_port);
    const N: usize = 1000;
    let t = Instant::now();
    // Pipelined in batches: the publisher does not wait for each reply.
    for batch in 0..N / 100 {
        for i in batch * 100..(batch + 1) * 100 {
            send(&mut publisher, &["PUBLISH", "news", &format!("m{i}")]);
            send(&mut publisher, &["SPUBLISH", "{sh}news", &format!("s{i}")]);
        }
        for _ in 0..200 {
            assert_eq!(publisher.read().expect("publish reply"), int(2));
        }
    }
    for (s, push) in [(&mut s2, false), (&mut s3, true)] {
        let (mut next_m, mut next_s) = (0, 0);
        for _ in 0..2 * N {
            let f = s.read().expect("message");
            if f == msg("message", "news", &format!("m{next_m}"), push) {
                next_m += 1;
            } else if f == msg("smessage", "{sh}news", &format!("s{next_s}"), push) {
                next_s += 1;
            } else {
                panic!("out of order or duplicate: {f:?} (next m{next_m} / s{next_s})");
            }
        }
        assert_eq!((next_m, next_s), (N, N));
        assert_eq!(
            try_read(s, Duration::from_millis(300)),
            None,
            "extra message"
        );
    }
    println!(
        "2x{N} messages to 2 subscribers in {:.2}s",
        t.elapsed().as_secs_f64()
    );
}

/// Keyspace notifications are published by the node holding the key only: a subscriber
/// through the proxy gets those of every master (the proxy subscribes on each), once each.
fn keyspace_notifications(proxy_port: u16, node_ports: &[u16]) {
    for &port in node_ports {
        let mut n = Raw::connect(port);
        assert_eq!(
            n.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
            simple("OK")
        );
    }
    let mut pat = Raw::connect(proxy_port);
    send_read(&mut pat, &["PSUBSCRIBE", "__keyevent@0__:*"], 1);
    let mut chan = Raw::connect(proxy_port);
    send_read(&mut chan, &["SUBSCRIBE", "__keyevent@0__:del"], 1);
    let mut w = Raw::connect(proxy_port);
    // Keys spread over every master's slots.
    let keys: Vec<String> = (0..30).map(|i| format!("ks:{i}")).collect();
    for k in &keys {
        assert_eq!(w.cmd(&["SET", k, "v"]), simple("OK"));
    }
    for k in &keys {
        assert_eq!(w.cmd(&["DEL", k]), int(1));
    }
    let event = |f: Frame| -> (String, String) {
        let Frame::Array(v) = f else {
            panic!("not a message: {f:?}")
        };
        let s = |f: &Frame| match f {
            Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        };
        (s(&v[v.len() - 2]), s(&v[v.len() - 1]))
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 * keys.len() {
        let (channel, key) = event(pat.read().expect("keyspace event"));
        assert!(seen.insert((channel, key)), "duplicate event");
    }
    for k in &keys {
        assert!(
            seen.contains(&("__keyevent@0__:set".to_string(), k.clone())),
            "{k}"
        );
        assert!(
            seen.contains(&("__keyevent@0__:del".to_string(), k.clone())),
            "{k}"
        );
    }
    let dels: std::collections::BTreeSet<String> = (0..keys.len())
        .map(|_| event(chan.read().expect("del event")).1)
        .collect();
    assert_eq!(dels.len(), keys.len());
    for s in [&mut pat, &mut chan] {
        assert_eq!(try_read(s, Duration::from_millis(300)), None, "extra event");
    }
    for &port in node_ports {
        Raw::connect(port).cmd(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    }
}

fn run(kind: Kind) {
    let Some(cluster) = cluster(kind, 3, 1) else {
        return;
    };
    let Some((standalone, _replica)) = standalone_with_replica() else {
        return;
    };
    let t = Instant::now();
    let proxy = start_proxy(&cluster.seed(), &["--refresh-interval-secs", "1"]);
    let (mut p, mut d) = (Raw::connect(proxy.port), Raw::connect(standalone.port));
    transactions(&mut p, &mut d, proxy.port, standalone.port);
    blocking(&mut p, &mut d, kind, proxy.port, standalone.port);
    pubsub(proxy.port, standalone.port);
    let node = cluster.master_ports(cluster.nodes[0].port)[0];
    scripts(&mut p, &mut d, kind, node);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let replica_proxy = start_proxy(
        &cluster.seed(),
        &["--read-from", "replica", "--refresh-interval-secs", "1"],
    );
    let mut r = Raw::connect(replica_proxy.port);
    wait_replicas_config(&mut p, &mut r, &mut d, &ports);
    thousand_messages(proxy.port);
    keyspace_notifications(proxy.port, &ports);
    println!(
        "{kind:?}: features checked in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn features_match_standalone_over_redis_cluster() {
    run(Kind::Redis);
}

#[test]
fn features_match_standalone_over_slotgate_node_cluster() {
    run(Kind::Node);
}
