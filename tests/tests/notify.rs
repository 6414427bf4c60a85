//! Keyspace notifications (`notify-keyspace-events`): the same command script runs against
//! slotgate-node and a real redis-server with several class settings, and the pub/sub messages
//! each publishes on `__keyspace@*__` / `__keyevent@*__` must be the same, in the same order.
//! Also active expiry (`expired`), eviction (`evicted`) and the config value's canonical form.

use slotgate_protocol::Frame;
use slotgate_tests::*;
use std::time::{Duration, Instant};

/// Commands touching every family, including no-ops (which publish nothing) and the cases
/// that delete an emptied key, rename, move between databases and store results.
const SCRIPT: &[&str] = &[
    "SET s1 v",
    "SET s1 v2 EX 100",
    "SET s1 v3 KEEPTTL",
    "SETNX s1 x",
    "SETNX s2 x",
    "SETEX s3 100 v",
    "PSETEX s4 100000 v",
    "GETSET s2 y",
    "GETDEL s2",
    "GETEX s3 PERSIST",
    "GETEX s3 EX 50",
    "GETEX s3 PXAT 1",
    "MSET m1 a m2 b",
    "MSETNX m3 a m4 b",
    "MSETNX m3 a m5 b",
    "APPEND s1 xx",
    "APPEND newap yy",
    "INCR n1",
    "DECR n1",
    "INCRBY n1 5",
    "DECRBY n1 2",
    "INCRBYFLOAT n1 1.5",
    "SETRANGE s1 1 zz",
    "SETRANGE s1 0 ''",
    "SETBIT b1 3 1",
    "SETBIT b1 3 1",
    "SETBIT b1 3 0",
    "BITFIELD bf SET u8 0 5 GET u8 0",
    "BITFIELD bf GET u8 0",
    "BITOP AND b2 b1 b1",
    "BITOP AND b3 nokey nokey2",
    "SET s1 v GET",
    "SET nx1 v NX",
    "SET nx1 v NX",
    "SET xx1 v XX",
    "DEL s1 nokey m1",
    "UNLINK m2",
    "RENAME m3 m3r",
    "RENAMENX m3r m4",
    "RENAMENX m3r m3rr",
    "SET over x",
    "RENAME m4 over",
    "COPY m3rr m3c",
    "COPY m3rr m3c REPLACE",
    "COPY m3rr m3c",
    "EXPIRE m3c 100",
    "PEXPIRE m3c 100000",
    "EXPIREAT m3c 9999999999",
    "PEXPIREAT m3c 9999999999000",
    "EXPIRE m3c 100 NX",
    "PERSIST m3c",
    "PERSIST m3c",
    "EXPIRE m3c -1",
    "EXPIRE nokey 10",
    "MOVE m3rr 1",
    "LPUSH l1 a b c",
    "RPUSH l1 d e",
    "LPUSHX l1 f",
    "RPUSHX l1 g",
    "LPUSHX nol f",
    "LPOP l1",
    "RPOP l1 2",
    "LSET l1 0 z",
    "LINSERT l1 BEFORE z y",
    "LINSERT l1 BEFORE nothere y",
    "LREM l1 1 y",
    "LTRIM l1 0 1",
    "LTRIM l1 0 1",
    "LMOVE l1 l2 LEFT RIGHT",
    "RPOPLPUSH l1 l2",
    "LPOP l1",
    "LMOVE l2 l2 LEFT RIGHT",
    "LMPOP 1 l2 RIGHT COUNT 1",
    "BLPOP l2 0.01",
    "BRPOP nol 0.01",
    "LPUSH l3 a",
    "BLMOVE l3 l4 RIGHT LEFT 0.01",
    "BRPOPLPUSH l4 l5 0.01",
    "BLMPOP 0.01 1 l5 LEFT",
    "HSET h1 f1 v1 f2 v2",
    "HSET h1 f1 v1",
    "HSETNX h1 f3 v3",
    "HSETNX h1 f3 v3",
    "HMSET h1 f4 v4",
    "HINCRBY h1 n 2",
    "HINCRBYFLOAT h1 fl 1.5",
    "HDEL h1 f1 nof",
    "HDEL h1 nof",
    "HDEL h1 f2 f3 f4 n fl",
    "SADD st1 a b c",
    "SADD st1 a",
    "SREM st1 a",
    "SREM st1 nothere",
    "SMOVE st1 st2 b",
    "SMOVE st1 st2 nothere",
    "SPOP st1",
    "SPOP st2 5",
    "SPOP st2 0",
    "SADD sa a b",
    "SADD sb b c",
    "SINTERSTORE si sa sb",
    "SUNIONSTORE su sa sb",
    "SDIFFSTORE sd sa sb",
    "SINTERSTORE si sa nokey",
    "SDIFFSTORE nothing nokey sa",
    "ZADD z1 1 a 2 b 3 c",
    "ZADD z1 1 a",
    "ZADD z1 INCR 5 a",
    "ZADD z1 XX CH 9 a",
    "ZINCRBY z1 1 b",
    "ZREM z1 c nothere",
    "ZADD z2 1 a 2 b 3 c 4 d 5 e",
    "ZREMRANGEBYRANK z2 0 0",
    "ZREMRANGEBYSCORE z2 2 2",
    "ZREMRANGEBYLEX z2 [c [c",
    "ZREMRANGEBYLEX z2 [x [y",
    "ZPOPMIN z2",
    "ZPOPMIN z2 0",
    "ZPOPMAX z2 5",
    "ZADD za 1 a 2 b",
    "ZADD zb 1 b 2 c",
    "ZUNIONSTORE zu 2 za zb",
    "ZINTERSTORE zi 2 za zb",
    "ZDIFFSTORE zd 2 za zb",
    "ZINTERSTORE zi 2 za nokey",
    "ZRANGESTORE zr za 0 -1",
    "ZRANGESTORE zr nokey 0 -1",
    "ZMPOP 1 za MIN",
    "BZPOPMIN za 0.01",
    "BZPOPMAX zb 0.01",
    "BZMPOP 0.01 1 zu MAX COUNT 10",
    "PFADD hll a b c",
    "PFADD hll a",
    "PFADD hll2 x",
    "PFMERGE hll3 hll hll2",
    "RPUSH srt 3 1 2",
    "SORT srt STORE srtd",
    "SORT nokey STORE srtd",
    "MULTI",
    "SET tx1 a",
    "LPUSH tx2 b",
    "EXEC",
    "FLUSHDB",
    "SET after v",
    "SELECT 2",
    "SET indb2 v",
    "DEL indb2",
    "SELECT 0",
    "GET nokey",
    "GET after",
    "MGET after nokey nokey2",
    "HGET noh f",
    "EXISTS nokey after",
    "LRANGE nol 0 -1",
    "ZSCORE noz a",
    "GETDEL nokey",
    "COPY nokey x",
    "SUNIONSTORE dst nos1 nos2",
];

/// Splits a script line into words ('' is an empty argument).
fn words(line: &str) -> Vec<&str> {
    line.split(' ')
        .map(|w| if w == "''" { "" } else { w })
        .collect()
}

/// Sends one command given as byte strings and reads its reply.
fn call(r: &mut Raw, args: &[&[u8]]) -> Frame {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    r.send(&out);
    r.read().expect("reply")
}

fn bytes(f: &Frame) -> Vec<u8> {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) => b.to_vec(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A connection subscribed to every keyspace channel.
fn subscriber(port: u16) -> Raw {
    let mut sub = Raw::connect(port);
    let r = sub.cmd(&["PSUBSCRIBE", "__key*__:*"]);
    assert!(matches!(r, Frame::Array(_)), "{r:?}");
    sub
}

/// Reads keyspace messages as "channel message" lines until the marker published on
/// `__keyevent@0__:end` arrives.
fn drain(sub: &mut Raw) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let f = sub.read().expect("keyspace message (or the end marker)");
        let Frame::Array(parts) = f else {
            panic!("not a pub/sub message: {f:?}")
        };
        assert_eq!(bytes(&parts[0]), b"pmessage");
        let channel = String::from_utf8_lossy(&bytes(&parts[2])).into_owned();
        let message = String::from_utf8_lossy(&bytes(&parts[3])).into_owned();
        if channel == "__keyevent@0__:end" {
            return lines;
        }
        lines.push(format!("{channel} {message}"));
    }
}

/// Runs the script with `flags` on the server at `port`; the messages it published.
fn events(port: u16, flags: &str) -> Vec<String> {
    let mut c = Raw::connect(port);
    assert_eq!(c.cmd(&["FLUSHALL"]), Frame::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", flags]),
        Frame::Simple("OK".into())
    );
    let mut sub = subscriber(port);
    for line in SCRIPT {
        c.cmd(&words(line));
    }
    // DUMP / RESTORE (binary payload), with and without REPLACE.
    c.cmd(&["SET", "rk", "v"]);
    let payload = bytes(&c.cmd(&["DUMP", "rk"]));
    call(&mut c, &[b"RESTORE", b"rk2", b"0", &payload]);
    call(&mut c, &[b"RESTORE", b"rk2", b"0", &payload, b"REPLACE"]);
    // Lazy expiry on access.
    c.cmd(&["SET", "exp", "v", "PX", "1"]);
    std::thread::sleep(Duration::from_millis(20));
    c.cmd(&["GET", "exp"]);
    c.cmd(&["PUBLISH", "__keyevent@0__:end", "x"]);
    drain(&mut sub)
}

#[test]
fn keyspace_events_match_redis() {
    let Some(redis) = start_redis(&["--save", ""]) else {
        return;
    };
    let node = start_node(&["--save", ""]);
    for flags in [
        "KEA",
        "KEg$lshzxetn",
        "Kl",
        "Ez",
        "E$h",
        "Ks",
        "Kgn",
        "Ex",
        "Em",
        "KEAm",
    ] {
        let ours = events(node.port, flags);
        let theirs = events(redis.port, flags);
        if ours != theirs {
            let n = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
            panic!(
                "flags {flags}: first difference at message {n}\n ours:  {:?}\n redis: {:?}",
                &ours[n..ours.len().min(n + 5)],
                &theirs[n..theirs.len().min(n + 5)]
            );
        }
        if flags == "KEA" {
            assert!(ours.len() > 200, "{ours:?}");
        }
    }
    // Without K or E nothing is published, whatever the classes.
    assert!(events(node.port, "A").is_empty());
}

#[test]
fn config_value_is_canonical_like_redis() {
    let Some(redis) = start_redis(&["--save", ""]) else {
        return;
    };
    let node = start_node(&["--save", ""]);
    for port in [node.port, redis.port] {
        let mut c = Raw::connect(port);
        for (set, shown) in [("KEA", "AKE"), ("Klg", "glK"), ("Emnlx", "lxnEm"), ("", "")] {
            assert_eq!(
                c.cmd(&["CONFIG", "SET", "notify-keyspace-events", set]),
                Frame::Simple("OK".into())
            );
            let got = c.cmd(&["CONFIG", "GET", "notify-keyspace-events"]);
            assert_eq!(
                got,
                Frame::Array(vec![
                    Frame::Bulk("notify-keyspace-events".into()),
                    Frame::Bulk(shown.to_string().into())
                ]),
                "port {port}"
            );
        }
        assert_eq!(
            c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KQ"]),
            Frame::Error(
                "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
                    .into()
            ),
            "port {port}"
        );
    }
    // The directive at start-up acts too.
    let started = start_node(&["--save", "", "--notify-keyspace-events", "Eg"]);
    let mut sub = subscriber(started.port);
    let mut c = Raw::connect(started.port);
    c.cmd(&["SET", "a", "1"]);
    c.cmd(&["DEL", "a"]);
    c.cmd(&["PUBLISH", "__keyevent@0__:end", "x"]);
    assert_eq!(drain(&mut sub), vec!["__keyevent@0__:del a".to_string()]);
}

#[test]
fn active_expiry_and_eviction_publish() {
    let node = start_node(&["--save", "", "--notify-keyspace-events", "Exe"]);
    let mut sub = subscriber(node.port);
    let mut c = Raw::connect(node.port);
    // Never read again: only the active expiry cycle can remove it.
    c.cmd(&["SET", "shortlived", "v", "PX", "50"]);
    let f = sub.read().expect("expired event");
    let Frame::Array(parts) = f else {
        panic!("{f:?}")
    };
    assert_eq!(bytes(&parts[2]), b"__keyevent@0__:expired");
    assert_eq!(bytes(&parts[3]), b"shortlived");
    // Fill past maxmemory: keys are evicted, each with an event.
    c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-random"]);
    let used: u64 = {
        let info = String::from_utf8_lossy(&bytes(&c.cmd(&["INFO", "memory"]))).into_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    };
    let limit = (used + 2 * 1024 * 1024).to_string();
    c.cmd(&["CONFIG", "SET", "maxmemory", &limit]);
    let value = "x".repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let evicted = loop {
        assert!(Instant::now() < deadline, "no eviction after {i} keys");
        for _ in 0..100 {
            c.cmd(&["SET", &format!("fill:{i}"), &value]);
            i += 1;
        }
        sub.s
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Some(Frame::Array(parts)) = sub.read() {
            break parts;
        }
    };
    assert_eq!(bytes(&evicted[2]), b"__keyevent@0__:evicted");
    assert!(bytes(&evicted[3]).starts_with(b"fill:"));
}

/// Read lookups, one command at a time, and what each adds to INFO's keyspace_hits and
/// keyspace_misses.
const READS: &[&str] = &[
    "GET a",
    "GET nokey",
    "MGET a nokey a",
    "EXISTS a nokey",
    "TYPE a",
    "TYPE nokey",
    "TTL a",
    "PTTL nokey",
    "STRLEN a",
    "GETRANGE a 0 1",
    "LRANGE l 0 -1",
    "LINDEX l 0",
    "LLEN nol",
    "HGET h f",
    "HGET noh f",
    "HGETALL h",
    "HMGET h f g",
    "SMEMBERS s",
    "SISMEMBER s a",
    "SINTER s nos",
    "SUNION s s",
    "ZRANGE z 0 -1",
    "ZSCORE z a",
    "ZCARD noz",
    "ZUNION 2 z noz",
    "PFCOUNT nohll",
    "DUMP a",
    "DUMP nokey",
    "OBJECT ENCODING a",
    "GETDEL a",
    "GETDEL nokey",
    "GETEX l",
    "GETSET gs v",
    "SET a 1 GET",
    "SET b 1",
    "COPY l l2",
    "COPY nol l3",
    "SUNIONSTORE d s nos",
    "ZUNIONSTORE zd 2 z noz",
    "LMOVE nol x LEFT LEFT",
    "INCR i",
    "RANDOMKEY",
    "SCAN 0",
    "KEYS *",
    "DBSIZE",
    "BITCOUNT a",
    "GETBIT a 1",
    "LPOS l x",
    "SRANDMEMBER s",
    "HEXISTS h f",
    "HLEN h",
    "SMISMEMBER s a b",
    "ZRANK z a",
    "ZCOUNT z 0 10",
    "SORT l ALPHA",
    "SORT_RO l ALPHA",
    "SINTERCARD 2 s nos",
    "TOUCH a nokey",
    "MEMORY USAGE a",
    "EXPIRETIME a",
];

fn lookups(port: u16) -> Vec<String> {
    let mut c = Raw::connect(port);
    c.cmd(&["FLUSHALL"]);
    for setup in [
        "SET a 1",
        "RPUSH l x y",
        "HSET h f v",
        "SADD s a",
        "ZADD z 1 a",
    ] {
        c.cmd(&words(setup));
    }
    let stats = |c: &mut Raw| {
        let info = String::from_utf8_lossy(&bytes(&c.cmd(&["INFO", "stats"]))).into_owned();
        let field = |name: &str| -> i64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .expect(name)
        };
        (field("keyspace_hits:"), field("keyspace_misses:"))
    };
    let mut out = Vec::new();
    for line in READS {
        let (h0, m0) = stats(&mut c);
        c.cmd(&words(line));
        let (h1, m1) = stats(&mut c);
        out.push(format!("{line}: hits +{} misses +{}", h1 - h0, m1 - m0));
    }
    c.cmd(&["CONFIG", "RESETSTAT"]);
    assert_eq!(stats(&mut c), (0, 0), "CONFIG RESETSTAT zeroes them");
    out
}

#[test]
fn keyspace_hits_and_misses_match_redis() {
    let Some(redis) = start_redis(&["--save", ""]) else {
        return;
    };
    let node = start_node(&["--save", ""]);
    let (ours, theirs) = (lookups(node.port), lookups(redis.port));
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b);
    }
    assert!(ours.iter().any(|l| l.contains("hits +1")), "{ours:?}");
}
