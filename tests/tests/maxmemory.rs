//! End-to-end tests of `maxmemory`: the limit holds under every evicting policy, the policies
//! pick the keys they promise (LRU keeps recently read keys, volatile policies only take keys
//! with a TTL, volatile-ttl the nearest expiries), `noeviction` refuses writes with Redis's
//! errors (also inside MULTI/EXEC), evictions reach replicas, and INFO's `used_memory` follows
//! the data. Each test runs the same steps against slotgate-node and a real redis-server.

use slotgate_protocol::Frame;
use slotgate_tests::repl::{cmd, dbsize, info, wait_until};
use slotgate_tests::*;
use std::time::Duration;

/// A 1000-byte value.
fn value() -> String {
    "v".repeat(1000)
}

/// The servers under test: slotgate-node, and redis-server when installed (under CI it must be).
fn servers(extra: &[&str]) -> Vec<(&'static str, Proc)> {
    let mut v = vec![("slotgate-node", start_node(extra))];
    match start_redis(extra) {
        Some(r) => v.push(("redis-server", r)),
        None => eprintln!("note: redis-server not installed; checking slotgate-node alone"),
    }
    v
}

fn int_field(port: u16, section: &str, name: &str) -> i64 {
    info(port, section)
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// Sends `cmds` pipelined in batches of 200 and returns every reply.
fn pipeline(port: u16, cmds: &[Vec<String>]) -> Vec<Frame> {
    let mut r = Raw::connect(port);
    let mut replies = Vec::with_capacity(cmds.len());
    for batch in cmds.chunks(200) {
        let mut out = bytes::BytesMut::new();
        for c in batch {
            let args: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
            slotgate_protocol::resp::write_command(&mut out, &args);
        }
        r.send(&out);
        for _ in batch {
            replies.push(r.read().expect("reply"));
        }
    }
    replies
}

/// SETs `prefix:0..n` to 1000-byte values (with `EX ttl` when given); panics on an error.
fn fill(port: u16, prefix: &str, n: usize, ttl: Option<u64>) {
    let v = value();
    let cmds: Vec<Vec<String>> = (0..n)
        .map(|i| {
            let mut c = vec!["SET".to_string(), format!("{prefix}:{i}"), v.clone()];
            if let Some(t) = ttl {
                c.push("EX".into());
                c.push(t.to_string());
            }
            c
        })
        .collect();
    for (i, f) in pipeline(port, &cmds).into_iter().enumerate() {
        assert!(
            matches!(&f, Frame::Simple(s) if &s[..] == b"OK"),
            "SET {prefix}:{i}: {f:?}"
        );
    }
}

/// How many of `prefix:0..n` still exist.
fn surviving(port: u16, prefix: &str, n: usize) -> usize {
    let cmds: Vec<Vec<String>> = (0..n)
        .map(|i| vec!["EXISTS".to_string(), format!("{prefix}:{i}")])
        .collect();
    pipeline(port, &cmds)
        .into_iter()
        .filter(|f| *f == Frame::Integer(1))
        .count()
}

/// GETs `prefix:0..n` (an access for LRU and LFU).
fn read_all(port: u16, prefix: &str, n: usize) {
    let cmds: Vec<Vec<String>> = (0..n)
        .map(|i| vec!["GET".to_string(), format!("{prefix}:{i}")])
        .collect();
    pipeline(port, &cmds);
}

fn set_limit(port: u16, policy: &str, bytes: u64) {
    let ok = Frame::Simple("OK".into());
    assert_eq!(
        cmd(port, &["CONFIG", "SET", "maxmemory-policy", policy]),
        ok
    );
    assert_eq!(
        cmd(port, &["CONFIG", "SET", "maxmemory", &bytes.to_string()]),
        ok
    );
}

/// Under every evicting policy, writing three times the limit in 1 KB values keeps
/// `used_memory` near the limit and evicts (Redis's "is the memory limit honoured" test).
#[test]
fn the_memory_limit_is_honoured_under_every_evicting_policy() {
    for (name, p) in servers(&[]) {
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert_eq!(
                cmd(p.port, &["FLUSHALL", "SYNC"]),
                Frame::Simple("OK".into())
            );
            set_limit(p.port, "noeviction", 0);
            let base = int_field(p.port, "memory", "used_memory") as u64;
            let limit = base + 4 * 1024 * 1024;
            set_limit(p.port, policy, limit);
            let evicted_before = int_field(p.port, "stats", "evicted_keys");
            let ttl = policy.starts_with("volatile").then_some(100_000);
            fill(p.port, "k", 12_000, ttl);
            let used = int_field(p.port, "memory", "used_memory") as u64;
            // redis-server may go on evicting between these reads (its eviction timer).
            let keys = dbsize(p.port).unwrap_or(-1);
            let evicted = int_field(p.port, "stats", "evicted_keys") - evicted_before;
            let keys_after = dbsize(p.port).unwrap_or(-1);
            eprintln!("{name} {policy}: used {used} limit {limit}, {keys} keys, {evicted} evicted");
            assert!(
                used <= limit + limit / 20,
                "{name} {policy}: used_memory {used} over the limit {limit}"
            );
            assert!(
                (1000..12_000).contains(&keys),
                "{name} {policy}: {keys} keys left"
            );
            assert!(
                (12_000 - keys..=12_000 - keys_after).contains(&evicted),
                "{name} {policy}: evicted_keys {evicted} for {keys}..{keys_after} keys left"
            );
        }
    }
}

/// An approximated LRU: keys read after the others went idle survive the evictions that
/// take the idle ones; LFU keeps the keys read many times.
#[test]
fn lru_and_lfu_keep_the_keys_in_use() {
    for (name, p) in servers(&[]) {
        for policy in ["allkeys-lru", "allkeys-lfu"] {
            assert_eq!(
                cmd(p.port, &["FLUSHALL", "SYNC"]),
                Frame::Simple("OK".into())
            );
            set_limit(p.port, policy, 0);
            let base = int_field(p.port, "memory", "used_memory") as u64;
            fill(p.port, "old", 3000, None);
            fill(p.port, "hot", 1000, None);
            // The LRU clock counts seconds.
            std::thread::sleep(Duration::from_millis(2100));
            for _ in 0..10 {
                read_all(p.port, "hot", 1000);
            }
            let used = int_field(p.port, "memory", "used_memory") as u64;
            // Room for what is there now: the next 2500 keys must evict about as many.
            set_limit(p.port, policy, used.max(base + 1));
            fill(p.port, "new", 2500, None);
            let hot = surviving(p.port, "hot", 1000);
            let old = surviving(p.port, "old", 3000);
            eprintln!("{name} {policy}: {hot}/1000 hot and {old}/3000 old keys left");
            assert!(hot >= 900, "{name} {policy}: only {hot}/1000 hot keys left");
            if policy == "allkeys-lru" {
                assert!(old <= 1500, "{name} {policy}: {old}/3000 idle keys left");
            }
        }
    }
}

/// volatile-* evict only keys with a TTL; volatile-ttl the nearest expiries first.
#[test]
fn volatile_policies_evict_only_keys_with_a_ttl() {
    for (name, p) in servers(&[]) {
        for policy in ["volatile-lru", "volatile-random", "volatile-ttl"] {
            assert_eq!(
                cmd(p.port, &["FLUSHALL", "SYNC"]),
                Frame::Simple("OK".into())
            );
            set_limit(p.port, policy, 0);
            fill(p.port, "persistent", 1500, None);
            fill(p.port, "far", 1500, Some(100_000));
            fill(p.port, "near", 1500, Some(1_000));
            let used = int_field(p.port, "memory", "used_memory") as u64;
            set_limit(p.port, policy, used);
            fill(p.port, "more", 1500, Some(50_000));
            let persistent = surviving(p.port, "persistent", 1500);
            let far = surviving(p.port, "far", 1500);
            let near = surviving(p.port, "near", 1500);
            eprintln!("{name} {policy}: persistent {persistent}, far {far}, near {near}");
            assert_eq!(
                persistent, 1500,
                "{name} {policy}: a key without TTL was evicted"
            );
            assert!(far + near < 3000, "{name} {policy}: nothing was evicted");
            if policy == "volatile-ttl" {
                assert!(
                    far >= 1350 && near <= 300,
                    "{name} {policy}: far {far}, near {near} left"
                );
            }
        }
    }
}

/// What a client sees when nothing can be evicted, compared reply by reply with redis-server:
/// writes get OOM, reads and DEL still work, MULTI refuses queuing, EXEC aborts.
#[test]
fn without_anything_to_evict_writes_get_redis_oom_errors() {
    let mut transcripts = Vec::new();
    for (name, p) in servers(&[]) {
        let mut a = Raw::connect(p.port);
        let mut b = Raw::connect(p.port);
        let mut t: Vec<(String, Frame)> = Vec::new();
        let mut step = |who: &mut Raw, line: &str| {
            let args: Vec<&str> = line.split(' ').collect();
            let reply = who.cmd(&args);
            t.push((line.to_string(), reply));
        };
        step(&mut a, "SET kept v");
        step(&mut a, "MULTI");
        step(&mut a, "SET queued v");
        step(&mut b, "CONFIG SET maxmemory 1");
        // The queue holds a write: EXEC aborts with the reason.
        step(&mut a, "EXEC");
        step(&mut a, "SET x y");
        step(&mut a, "APPEND kept more");
        step(&mut a, "GET kept");
        step(&mut a, "EXISTS queued");
        // Nothing may be queued while out of memory; EXEC then aborts for that error.
        step(&mut a, "MULTI");
        step(&mut a, "GET kept");
        step(&mut a, "EXEC");
        // Only keys with a TTL may go under volatile-lru: there are none.
        step(&mut a, "CONFIG SET maxmemory-policy volatile-lru");
        step(&mut a, "SET x y");
        step(&mut a, "DEL kept");
        step(&mut a, "CONFIG SET maxmemory 0");
        step(&mut a, "SET x y");
        eprintln!("{name}: {t:?}");
        let oom = Frame::Error("OOM command not allowed when used memory > 'maxmemory'.".into());
        assert_eq!(t[5].1, oom, "{name}: SET under noeviction");
        assert_eq!(
            t[4].1,
            Frame::Error(
                "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'."
                    .into()
            ),
            "{name}: EXEC of a queued write"
        );
        assert_eq!(t[7].1, Frame::Bulk("v".into()), "{name}: GET still works");
        assert_eq!(t[13].1, oom, "{name}: volatile-lru without volatile keys");
        assert_eq!(t[14].1, Frame::Integer(1), "{name}: DEL still works");
        transcripts.push((name, t));
    }
    if let [(_, node), (_, redis)] = &transcripts[..] {
        for ((line, ours), (_, theirs)) in node.iter().zip(redis) {
            assert_eq!(ours, theirs, "{line}: slotgate-node vs redis-server");
        }
    }
}

/// A lowered limit takes effect without traffic under an evicting policy, and `used_memory`
/// counts the data: it grows by the values written and falls back when they are deleted
/// (FLUSHALL, or DEL key by key).
#[test]
fn used_memory_follows_the_data_and_a_lowered_limit_evicts_at_once() {
    for (name, p) in servers(&[]) {
        let before = int_field(p.port, "memory", "used_memory");
        fill(p.port, "k", 10_000, None);
        let full = int_field(p.port, "memory", "used_memory");
        assert!(
            full - before >= 10_000 * 1000,
            "{name}: used_memory grew by {} for 10 MB of values",
            full - before
        );
        assert!(
            full - before <= 10_000 * 2000,
            "{name}: used_memory grew by {} for 10 MB of values",
            full - before
        );
        assert_eq!(
            cmd(p.port, &["FLUSHALL", "SYNC"]),
            Frame::Simple("OK".into())
        );
        let after = int_field(p.port, "memory", "used_memory");
        assert!(
            after < before + 1024 * 1024,
            "{name}: used_memory {after} after FLUSHALL (was {before} before the writes)"
        );
        // Deleting keys one by one gives their tables back too.
        fill(p.port, "k", 10_000, None);
        let dels: Vec<Vec<String>> = (0..10_000)
            .map(|i| vec!["DEL".to_string(), format!("k:{i}")])
            .collect();
        pipeline(p.port, &dels);
        let after = int_field(p.port, "memory", "used_memory");
        assert!(
            after < before + 1024 * 1024,
            "{name}: used_memory {after} after DEL of every key (was {before} before the writes)"
        );
        fill(p.port, "k", 10_000, None);
        set_limit(p.port, "allkeys-random", (before + 2 * 1024 * 1024) as u64);
        // Nothing else runs on this server meanwhile: the evictions are its own.
        std::thread::sleep(Duration::from_secs(2));
        let left = dbsize(p.port).unwrap_or(-1);
        assert!(
            left < 5000,
            "{name}: {left} keys left after lowering the limit"
        );
        set_limit(p.port, "noeviction", 0);
    }
}

/// A master's evictions reach its replica as DELs: both hold the same keys afterwards.
#[test]
fn evictions_reach_replicas() {
    for (name, bin) in [
        ("slotgate-node", slotgate_tests::repl::node_kind()),
        ("redis-server", slotgate_tests::repl::redis_kind()),
    ] {
        let Some(bin) = bin else {
            eprintln!("note: {name} not available; skipping its run");
            continue;
        };
        let m = spawn_server(&bin, slotgate_tests::repl::FAST_SYNC);
        let mp = m.port.to_string();
        let mut args = slotgate_tests::repl::FAST_SYNC.to_vec();
        args.extend_from_slice(&["--replicaof", "127.0.0.1", &mp]);
        let r = spawn_server(&bin, &args);
        wait_until("the replica's link up", Duration::from_secs(20), || {
            slotgate_tests::repl::replica_linked_to(r.port, m.port)
        });
        let base = int_field(m.port, "memory", "used_memory") as u64;
        set_limit(m.port, "allkeys-lru", base + 3 * 1024 * 1024);
        fill(m.port, "k", 8000, None);
        let evicted = int_field(m.port, "stats", "evicted_keys");
        assert!(evicted > 0, "{name}: nothing evicted");
        wait_until(
            "the replica holding the master's keys",
            Duration::from_secs(20),
            || slotgate_tests::repl::in_sync(m.port, r.port),
        );
        let keys = dbsize(m.port).unwrap_or(-1);
        assert_eq!(dbsize(r.port), Some(keys), "{name}: replica DBSIZE");
        assert_eq!(
            surviving(r.port, "k", 8000) as i64,
            keys,
            "{name}: the replica holds exactly the master's keys"
        );
        // The replica does not evict by itself (replica-ignore-maxmemory yes).
        assert_eq!(int_field(r.port, "stats", "evicted_keys"), 0, "{name}");
    }
}

/// A save's copy of the keyspace is not data: while SAVE writes 20 MB, `maxmemory` (room for
/// the data, not for the data twice) must not evict anything because of the copy.
#[test]
fn a_save_does_not_make_maxmemory_evict() {
    let p = start_node(&[]);
    let base = int_field(p.port, "memory", "used_memory") as u64;
    fill(p.port, "k", 20_000, None);
    let used = int_field(p.port, "memory", "used_memory") as u64;
    set_limit(p.port, "allkeys-lru", used + (used - base) / 4);
    // The file goes to the node's own (temporary) directory.
    let mut r = Raw::connect(p.port);
    assert_eq!(r.cmd(&["SAVE"]), Frame::Simple("OK".into()));
    assert_eq!(
        r.cmd(&["BGSAVE"]),
        Frame::Simple("Background saving started".into())
    );
    wait_until("the background save", Duration::from_secs(30), || {
        info(p.port, "persistence")
            .get("rdb_bgsave_in_progress")
            .map(String::as_str)
            == Some("0")
    });
    // Give the background evictor a few ticks after the copy is gone.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(int_field(p.port, "stats", "evicted_keys"), 0);
    assert_eq!(dbsize(p.port), Some(20_000));
}

/// The same for a replica's full resync: the copy and the RDB built from it are sent, not
/// kept, so a master near its limit does not evict for them.
#[test]
fn a_full_resync_does_not_make_maxmemory_evict() {
    let bin = our_bin("slotgate-node");
    let m = spawn_server(&bin, slotgate_tests::repl::FAST_SYNC);
    let base = int_field(m.port, "memory", "used_memory") as u64;
    fill(m.port, "k", 20_000, None);
    let used = int_field(m.port, "memory", "used_memory") as u64;
    // Room for the replication backlog the first replica creates, not for the data twice.
    set_limit(m.port, "allkeys-lru", used + (used - base) / 4);
    let mp = m.port.to_string();
    let mut args = slotgate_tests::repl::FAST_SYNC.to_vec();
    args.extend_from_slice(&["--replicaof", "127.0.0.1", &mp]);
    let r = spawn_server(&bin, &args);
    wait_until("the replica in sync", Duration::from_secs(30), || {
        slotgate_tests::repl::in_sync(m.port, r.port)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(int_field(m.port, "stats", "evicted_keys"), 0);
    assert_eq!(dbsize(r.port), Some(20_000));
}
