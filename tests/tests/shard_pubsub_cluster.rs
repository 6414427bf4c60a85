//! Sharded pub/sub of slotgate-node in a cluster, against a real Redis 7 cluster: the same
//! script runs on both (3 masters, 1 replica each) and the transcripts must be equal once node
//! addresses are replaced by their role. Covers SSUBSCRIBE/SUNSUBSCRIBE confirmations and
//! counts, CROSSSLOT/MOVED, subscribers on replicas, SPUBLISH reaching the whole shard (from
//! the master or a replica), `smessage` in RESP2 and RESP3, the owner serving shard channels
//! while its slot migrates, the `sunsubscribe` push when a node's shard loses a slot (migration
//! and manual failover), and the promoted replica keeping its subscribers.

#[path = "features/common.rs"]
mod common;

use common::*;
use slotgate_protocol::Frame;
use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::Raw;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Records replies with node addresses replaced by roles (`M0` = master of the range starting
/// at slot 0, `R0` its replica...).
struct Transcript {
    lines: Vec<String>,
    roles: HashMap<u16, String>,
}

impl Transcript {
    fn new(via: u16) -> Transcript {
        let mut roles = HashMap::new();
        for (a, _, m, _) in slots(via) {
            roles.insert(m, format!("M{a}"));
            roles.insert(replica_of(via, m), format!("R{a}"));
        }
        Transcript {
            lines: Vec::new(),
            roles,
        }
    }

    fn norm(&self, f: &Frame) -> String {
        let mut s = format!("{f:?}");
        for (port, role) in &self.roles {
            s = s.replace(&format!("127.0.0.1:{port}"), role);
        }
        s
    }

    fn cmd(&mut self, who: &str, c: &mut Raw, args: &[&str], n: usize) {
        let replies = send_read(c, args, n);
        for r in replies {
            let line = format!("{who} {args:?} => {}", self.norm(&r));
            self.lines.push(line);
        }
    }

    /// Reads what `c` receives within `wait` (pushes).
    fn pushes(&mut self, who: &str, c: &mut Raw, wait: Duration) {
        while let Some(f) = try_read(c, wait) {
            let line = format!("{who} got {}", self.norm(&f));
            self.lines.push(line);
        }
        self.lines.push(format!("{who} quiet"));
    }
}

/// The port of the replica of the master on `master` (CLUSTER NODES; CLUSTER SLOTS lists a
/// replica only once it has a replication offset).
fn replica_of(via: u16, master: u16) -> u16 {
    let id = myid(master);
    let (_, nodes) = redis_cli(&["-p", &via.to_string(), "cluster", "nodes"]);
    nodes
        .lines()
        .find(|l| l.split(' ').nth(3) == Some(id.as_str()))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|a| a.split('@').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no replica of {master}: {nodes}"))
}

fn setslot(port: u16, slot: u16, what: &[&str]) {
    let mut args = vec![
        "-p".to_string(),
        port.to_string(),
        "cluster".into(),
        "setslot".into(),
        slot.to_string(),
    ];
    args.extend(what.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (ok, out) = redis_cli(&a);
    assert!(ok && out.trim() == "OK", "{a:?}: {out}");
}

fn wait_role(port: u16, role: &str) {
    let t = Instant::now();
    loop {
        let (_, r) = redis_cli(&["-p", &port.to_string(), "role"]);
        if r.starts_with(role) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{port} not {role}: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn script(cluster: &Cluster) -> Vec<String> {
    let via = cluster.nodes[0].port;
    let mut t = Transcript::new(via);
    let mut ranges = slots(via);
    ranges.sort();
    // "b" (slot 3300) and "f" (slot 3168) live in the first range, "a" (15495) in the last.
    let m = ranges[0].2;
    let r = replica_of(via, m);
    let m2 = ranges[1].2;
    let wait = Duration::from_millis(1500);
    let short = Duration::from_millis(300);

    // Confirmations, counts, CROSSSLOT and MOVED, subscriber mode.
    let mut d = Raw::connect(m);
    for (args, n) in [
        (&["SSUBSCRIBE", "b", "f"][..], 1),
        (&["SSUBSCRIBE", "a"], 1),
        (&["SUNSUBSCRIBE", "a"], 1),
        (&["SUNSUBSCRIBE"], 1),
        (&["SUBSCRIBE", "x"], 1),
        (&["SSUBSCRIBE", "b", "{b}2", "b"], 3),
        (&["GET", "b"], 1),
        (&["PING"], 1),
        (&["SUNSUBSCRIBE", "b"], 1),
        (&["SUNSUBSCRIBE"], 1),
        (&["PING"], 1),
        (&["UNSUBSCRIBE"], 1),
        (&["SSUBSCRIBE", "f"], 1),
        (&["PING"], 1),
    ] {
        t.cmd("d", &mut d, args, n);
    }
    // Subscribers on the master and on its replica; SPUBLISH from either reaches both.
    let mut rs = Raw::connect(r);
    t.cmd("rs", &mut rs, &["SSUBSCRIBE", "f"], 1);
    t.cmd("rs", &mut rs, &["SUBSCRIBE", "f"], 1);
    let mut h = Raw::connect(m);
    let Frame::Map(_) = h.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3")
    };
    t.cmd("h", &mut h, &["SSUBSCRIBE", "f"], 1);
    t.cmd("h", &mut h, &["GET", "f"], 1);
    let mut pm = Raw::connect(m);
    let mut pr = Raw::connect(r);
    t.cmd("pm", &mut pm, &["SPUBLISH", "f", "from-master"], 1);
    t.pushes("d", &mut d, short);
    t.pushes("rs", &mut rs, short);
    t.cmd("pr", &mut pr, &["SPUBLISH", "f", "from-replica"], 1);
    t.pushes("d", &mut d, short);
    t.pushes("rs", &mut rs, short);
    t.pushes("h", &mut h, short);
    t.cmd("pm", &mut pm, &["PUBSUB", "SHARDNUMSUB", "f", "b"], 1);
    t.cmd("pr", &mut pr, &["PUBSUB", "SHARDNUMSUB", "f"], 1);
    t.cmd("pm", &mut pm, &["SPUBLISH", "a", "x"], 1);
    let mut o = Raw::connect(m2);
    t.cmd("o", &mut o, &["SSUBSCRIBE", "f"], 1);
    t.cmd("o", &mut o, &["READONLY"], 1);
    t.cmd("o", &mut o, &["SSUBSCRIBE", "f"], 1);

    // Slot 3168 ("f") migrates from m to m2: the owner serves it until the end, then the
    // shard's subscribers are told.
    let slot = 3168;
    let (mid, m2id) = (myid(m), myid(m2));
    setslot(m2, slot, &["importing", &mid]);
    setslot(m, slot, &["migrating", &m2id]);
    t.cmd("pm", &mut pm, &["SPUBLISH", "f", "during"], 1);
    t.pushes("d", &mut d, short);
    let mut late = Raw::connect(m);
    t.cmd("late", &mut late, &["SSUBSCRIBE", "f"], 1);
    let mut x = Raw::connect(m2);
    t.cmd("x", &mut x, &["SSUBSCRIBE", "f"], 1);
    t.cmd("x", &mut x, &["ASKING"], 1);
    t.cmd("x", &mut x, &["SSUBSCRIBE", "f"], 1);
    setslot(m2, slot, &["node", &m2id]);
    setslot(m, slot, &["node", &m2id]);
    t.pushes("d", &mut d, wait);
    t.pushes("rs", &mut rs, wait);
    t.pushes("h", &mut h, wait);
    t.pushes("late", &mut late, wait);
    t.pushes("x", &mut x, short);
    t.cmd("d", &mut d, &["PING"], 1);
    t.cmd("rs", &mut rs, &["PING"], 1);
    t.cmd("late", &mut late, &["PING"], 1);
    t.cmd("d", &mut d, &["SSUBSCRIBE", "f"], 1);
    // And back: the subscriber the importing node took under ASKING is told now.
    setslot(m, slot, &["importing", &m2id]);
    setslot(m2, slot, &["migrating", &mid]);
    setslot(m, slot, &["node", &mid]);
    setslot(m2, slot, &["node", &mid]);
    t.pushes("x", &mut x, wait);

    // Manual failover of the first shard: the old master's subscribers are told, the
    // promoted replica's keep their subscription.
    let mut dm = Raw::connect(m);
    t.cmd("dm", &mut dm, &["SSUBSCRIBE", "b"], 1);
    let mut dr = Raw::connect(r);
    t.cmd("dr", &mut dr, &["SSUBSCRIBE", "b"], 1);
    let (ok, out) = redis_cli(&["-p", &r.to_string(), "cluster", "failover"]);
    assert!(ok && out.trim() == "OK", "CLUSTER FAILOVER: {out}");
    wait_role(r, "master");
    wait_role(m, "slave");
    t.pushes("dm", &mut dm, wait);
    t.pushes("dr", &mut dr, short);
    let mut p = Raw::connect(r);
    t.cmd("p", &mut p, &["SPUBLISH", "b", "after-failover"], 1);
    t.pushes("dr", &mut dr, short);
    t.pushes("dm", &mut dm, short);
    t.lines
}

#[test]
fn shard_pubsub_node_cluster_matches_redis_cluster() {
    let started = Instant::now();
    let node = std::thread::spawn(|| cluster(Kind::Node, 3, 1).map(|c| script(&c)));
    let Some(redis) = cluster(Kind::Redis, 3, 1).map(|c| script(&c)) else {
        let _ = node.join();
        return;
    };
    let node = node
        .join()
        .expect("node cluster script")
        .expect("node cluster");
    for (i, (a, b)) in redis.iter().zip(node.iter()).enumerate() {
        assert_eq!(
            a, b,
            "line {i} differs (redis vs slotgate-node)\n{redis:#?}"
        );
    }
    assert_eq!(redis.len(), node.len(), "{redis:#?}\n{node:#?}");
    println!(
        "{} lines equal in {:.1}s",
        redis.len(),
        started.elapsed().as_secs_f64()
    );
}
