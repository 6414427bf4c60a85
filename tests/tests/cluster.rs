//! End-to-end tests of slotgate-node's cluster mode, driven the way users drive Redis
//! Cluster: nodes started from tutorial-style redis.conf files, formed with stock
//! `redis-cli --cluster create` (or, in builds without INFO, with the same CLUSTER commands
//! redis-cli sends), redirects seen by plain clients and `redis-cli -c`, 10,000 keys through
//! the redis crate's cluster client, slot migration under load (SETSLOT + MIGRATE, or
//! `redis-cli --cluster reshard`), `--cluster fix`, restart with the same identity, and the
//! CLUSTER subcommands' replies compared with a real redis-server cluster node.
//!
//! Missing redis-cli / redis-server: the affected part is skipped with a printed reason
//! (a failure under CI=true, by the harness's design).

use bytes::BytesMut;
use slotgate_protocol::Frame;
use slotgate_tests::cluster::redis_cli;
use slotgate_tests::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE_TIMEOUT: u64 = 5000;

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn send(port: u16, args: &[&str]) -> Frame {
    let mut r = Raw::connect(port);
    r.cmd(args)
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Error(b) | Frame::Verbatim(_, b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        Frame::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn cl(port: u16, args: &[&str]) -> String {
    let mut a = vec!["CLUSTER"];
    a.extend_from_slice(args);
    text(&send(port, &a))
}

/// A node started like the tutorials: `slotgate-node /dir/redis.conf`.
fn spawn_in(dir: PathBuf, port: u16) -> Proc {
    let conf = dir.join("redis.conf");
    if !conf.exists() {
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ncluster-enabled yes\ncluster-config-file nodes-{port}.conf\ncluster-node-timeout {NODE_TIMEOUT}\nappendonly no\nsave \"\"\ndir {}\n",
                dir.display()
            ),
        )
        .expect("write redis.conf");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .expect("log");
    let log2 = log.try_clone().expect("log");
    let child = Command::new(our_bin("slotgate-node"))
        .arg(&conf)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn slotgate-node");
    let mut p = Proc { child, port, dir };
    wait_ready_pub(&mut p);
    p
}

fn spawn_node() -> Proc {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "slotgate-cl-{}-{}-{}",
        std::process::id(),
        port,
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    spawn_in(dir, port)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Signature of the slot configuration as redis-cli computes it: "id:slots" of each master.
fn signature(port: u16) -> String {
    let nodes = cl(port, &["NODES"]);
    let mut sig: Vec<String> = nodes
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (w.len() >= 8 && w[2].contains("master")).then(|| {
                let slots: Vec<&str> = w[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .copied()
                    .collect();
                format!("{}:{}", w[0], slots.join(","))
            })
        })
        .collect();
    sig.sort();
    sig.join("|")
}

fn all_ok(ports: &[u16]) -> bool {
    let sig = signature(ports[0]);
    ports
        .iter()
        .all(|&p| cl(p, &["INFO"]).contains("cluster_state:ok") && signature(p) == sig)
}

/// True when this build has INFO with the cluster section (redis-cli --cluster needs it).
fn has_info(port: u16) -> bool {
    text(&send(port, &["INFO", "cluster"])).contains("cluster_enabled:1")
}

fn myid(port: u16) -> String {
    cl(port, &["MYID"])
}

/// Forms a cluster with the commands `redis-cli --cluster create` sends.
fn form_manually(ports: &[u16], masters: usize) {
    let per = 16384 / masters;
    for (i, &p) in ports.iter().take(masters).enumerate() {
        let a = i * per;
        let b = if i + 1 == masters {
            16383
        } else {
            (i + 1) * per - 1
        };
        assert_eq!(
            cl(p, &["ADDSLOTSRANGE", &a.to_string(), &b.to_string()]),
            "OK"
        );
    }
    for (i, &p) in ports.iter().enumerate() {
        assert_eq!(cl(p, &["set-config-epoch", &(i + 1).to_string()]), "OK");
    }
    for &p in &ports[1..] {
        assert_eq!(cl(ports[0], &["MEET", "127.0.0.1", &p.to_string()]), "OK");
    }
    wait_for(
        "every node to know every other",
        Duration::from_secs(30),
        || {
            ports.iter().all(|&p| {
                cl(p, &["INFO"]).contains(&format!("cluster_known_nodes:{}", ports.len()))
            })
        },
    );
    for (i, &p) in ports.iter().enumerate().skip(masters) {
        let m = myid(ports[i % masters]);
        // The first try may fail while the master is still in handshake (redis-cli retries).
        wait_for("REPLICATE to succeed", Duration::from_secs(20), || {
            cl(p, &["REPLICATE", &m]) == "OK"
        });
    }
}

fn owner_port(ports: &[u16], slot: u16) -> u16 {
    let slots = send(ports[0], &["CLUSTER", "SLOTS"]);
    let Frame::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    for r in ranges {
        let Frame::Array(items) = r else { continue };
        let (Frame::Integer(a), Frame::Integer(b)) = (&items[0], &items[1]) else {
            continue;
        };
        if (*a as u16..=*b as u16).contains(&slot) {
            if let Frame::Array(node) = &items[2] {
                if let Frame::Integer(p) = node[1] {
                    return p as u16;
                }
            }
        }
    }
    panic!("slot {slot} not served")
}

fn key_slot(k: &str) -> u16 {
    slotgate_protocol::key_slot(k.as_bytes())
}

/// Moves `slots` from their owners to `dst` exactly as redis-cli's reshard does.
fn move_slot_manually(ports: &[u16], slot: u16, dst: u16) {
    let src = owner_port(ports, slot);
    if src == dst {
        return;
    }
    let (src_id, dst_id) = (myid(src), myid(dst));
    let s = slot.to_string();
    assert_eq!(cl(dst, &["SETSLOT", &s, "IMPORTING", &src_id]), "OK");
    assert_eq!(cl(src, &["SETSLOT", &s, "MIGRATING", &dst_id]), "OK");
    for _ in 0..10_000 {
        let keys = send(src, &["CLUSTER", "GETKEYSINSLOT", &s, "10"]);
        let Frame::Array(keys) = keys else {
            panic!("GETKEYSINSLOT: {keys:?}")
        };
        if keys.is_empty() {
            break;
        }
        let dport = dst.to_string();
        let mut args: Vec<String> = ["MIGRATE", "127.0.0.1", &dport, "", "0", "60000", "KEYS"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(keys.iter().map(text));
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        assert_eq!(text(&send(src, &a)), "OK");
    }
    for &p in ports {
        if cl(p, &["NODES"])
            .lines()
            .any(|l| l.contains("myself,master"))
        {
            assert_eq!(
                cl(p, &["SETSLOT", &s, "NODE", &dst_id]),
                "OK",
                "SETSLOT NODE on {p}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// The acceptance story
// ------------------------------------------------------------------------------------------

#[test]
fn cluster_end_to_end() {
    let Some(_) = require_peer("redis-cli") else {
        return;
    };
    let mut nodes: Vec<Proc> = (0..6).map(|_| spawn_node()).collect();
    let ports: Vec<u16> = nodes.iter().map(|p| p.port).collect();

    // Identity: logged like redis-server, kept in the config file with the vars line.
    for p in &nodes {
        let id = myid(p.port);
        assert_eq!(id.len(), 40);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(
            p.log()
                .contains(&format!("No cluster configuration found, I'm {id}")),
            "{}",
            p.log()
        );
        let conf = std::fs::read_to_string(p.dir.join(format!("nodes-{}.conf", p.port)))
            .expect("nodes.conf");
        assert!(conf.contains(&id) && conf.ends_with("vars currentEpoch 0 lastVoteEpoch 0\n"));
    }
    // A fresh node: no slots, cluster down.
    assert!(cl(ports[0], &["INFO"]).starts_with("cluster_state:fail\r\n"));
    assert_eq!(
        text(&send(ports[0], &["HSET", "foo", "f", "v"])),
        "CLUSTERDOWN Hash slot not served"
    );

    let with_cli = has_info(ports[0]);
    if with_cli {
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(|p| p.addr()));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (ok, out) = redis_cli(&a);
        assert!(ok && out.contains("[OK] All 16384 slots covered."), "{out}");
    } else {
        eprintln!("NOTE: this build has no INFO command (server family not merged): forming the cluster with redis-cli's CLUSTER commands instead of `redis-cli --cluster create`");
        form_manually(&ports, 3);
    }
    wait_for(
        "cluster ok and agreed everywhere",
        Duration::from_secs(30),
        || all_ok(&ports),
    );
    if with_cli {
        let (_, out) = redis_cli(&["--cluster", "check", &nodes[0].addr()]);
        assert!(
            out.contains("[OK] All nodes agree about slots configuration."),
            "{out}"
        );
        assert!(out.contains("[OK] All 16384 slots covered."), "{out}");
    }

    // Shapes of CLUSTER INFO / NODES / SLOTS / SHARDS.
    let info = cl(ports[0], &["INFO"]);
    for l in [
        "cluster_state:ok\r\n",
        "cluster_slots_assigned:16384\r\n",
        "cluster_slots_ok:16384\r\n",
        "cluster_known_nodes:6\r\n",
        "cluster_size:3\r\n",
        "cluster_current_epoch:6\r\n",
    ] {
        assert!(info.contains(l), "{l} in {info}");
    }
    let nodes_txt = cl(ports[0], &["NODES"]);
    assert!(nodes_txt.ends_with('\n'));
    assert_eq!(nodes_txt.lines().count(), 6);
    assert_eq!(
        nodes_txt.lines().filter(|l| l.contains("master -")).count(),
        3
    );
    assert_eq!(
        nodes_txt.lines().filter(|l| l.contains(" slave ")).count(),
        3
    );
    assert_eq!(
        nodes_txt.lines().filter(|l| l.contains("myself,")).count(),
        1
    );
    for l in nodes_txt.lines() {
        let w: Vec<&str> = l.split(' ').collect();
        assert!(w.len() >= 8, "{l}");
        assert!(w[1].starts_with("127.0.0.1:") && w[1].contains('@'), "{l}");
        assert!(w[7] == "connected", "{l}");
    }
    match send(ports[0], &["CLUSTER", "SLOTS"]) {
        Frame::Array(r) => {
            assert_eq!(r.len(), 3);
            for e in r {
                let Frame::Array(e) = e else { panic!() };
                let Frame::Array(n) = &e[2] else { panic!() };
                assert_eq!(n.len(), 4);
                assert_eq!(text(&n[0]), "127.0.0.1");
                assert_eq!(text(&n[2]).len(), 40);
            }
        }
        other => panic!("SLOTS {other:?}"),
    }
    match send(ports[0], &["CLUSTER", "SHARDS"]) {
        Frame::Array(r) => assert_eq!(r.len(), 3),
        other => panic!("SHARDS {other:?}"),
    }

    // Redirects.
    let foo_owner = owner_port(&ports, 12182);
    let other = *ports[..3]
        .iter()
        .find(|&&p| p != foo_owner)
        .expect("other master");
    assert_eq!(
        text(&send(other, &["HSET", "foo", "f", "v"])),
        format!("MOVED 12182 127.0.0.1:{foo_owner}")
    );
    assert_eq!(
        text(&send(other, &["SUNION", "key1", "key2", "key3"])),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    let tag_owner = owner_port(&ports, key_slot("{user1}"));
    assert_eq!(text(&send(tag_owner, &["SADD", "{user1}:a", "x"])), "1");
    assert_eq!(
        text(&send(
            tag_owner,
            &["SUNIONSTORE", "{user1}:c", "{user1}:a", "{user1}:b"]
        )),
        "1"
    );
    assert_eq!(
        text(&send(other, &["SELECT", "1"])),
        "ERR SELECT is not allowed in cluster mode"
    );
    // redis-cli -c follows MOVED.
    let op = other.to_string();
    let (_, out) = redis_cli(&["-c", "-p", &op, "HSET", "foo", "f", "bar"]);
    assert_eq!(out.trim(), "1");
    let (_, out) = redis_cli(&["-c", "-p", &op, "HGET", "foo", "f"]);
    assert_eq!(out.trim(), "bar");
    // A replica redirects to its master; READONLY allows reads there.
    let replica_of_foo = ports[3..]
        .iter()
        .copied()
        .find(|&p| {
            cl(p, &["NODES"])
                .lines()
                .any(|l| l.contains("myself,slave") && l.contains(&myid(foo_owner)))
        })
        .expect("replica of foo's master");
    assert_eq!(
        text(&send(replica_of_foo, &["HGET", "foo", "f"])),
        format!("MOVED 12182 127.0.0.1:{foo_owner}")
    );
    {
        let mut r = Raw::connect(replica_of_foo);
        assert_eq!(text(&r.cmd(&["READONLY"])), "OK");
        // No data sync yet (replication is the next milestone): served locally, not redirected.
        assert!(matches!(
            r.cmd(&["HGET", "foo", "f"]),
            Frame::Null | Frame::Bulk(_)
        ));
        assert!(text(&r.cmd(&["HSET", "foo", "f", "x"])).starts_with("MOVED "));
        assert_eq!(text(&r.cmd(&["READWRITE"])), "OK");
        assert!(text(&r.cmd(&["HGET", "foo", "f"])).starts_with("MOVED "));
    }

    // 10,000 keys through the redis crate's cluster client.
    let seeds: Vec<String> = ports[..3]
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let client = redis::cluster::ClusterClient::new(seeds.clone()).expect("cluster client");
    let mut cc = client.get_connection().expect("cluster connection");
    for i in 0..10_000 {
        let _: i64 = redis::cmd("HSET")
            .arg(format!("k:{i}"))
            .arg("v")
            .arg(i)
            .query(&mut cc)
            .expect("HSET via cluster client");
    }
    for i in (0..10_000).step_by(97) {
        let v: i64 = redis::cmd("HGET")
            .arg(format!("k:{i}"))
            .arg("v")
            .query(&mut cc)
            .expect("HGET");
        assert_eq!(v, i);
    }
    if with_cli {
        let (_, out) = redis_cli(&["--cluster", "info", &nodes[0].addr()]);
        assert!(out.contains("keys in 3 masters."), "{out}");
    }

    // ASK / TRYAGAIN on an open slot (set up by hand, then closed again).
    {
        let slot = key_slot("foo");
        let dst = other;
        let s = slot.to_string();
        assert_eq!(
            cl(dst, &["SETSLOT", &s, "IMPORTING", &myid(foo_owner)]),
            "OK"
        );
        assert_eq!(
            cl(foo_owner, &["SETSLOT", &s, "MIGRATING", &myid(dst)]),
            "OK"
        );
        assert!(cl(foo_owner, &["NODES"]).contains(&format!("[{slot}->-{}]", myid(dst))));
        assert!(cl(dst, &["NODES"]).contains(&format!("[{slot}-<-{}]", myid(foo_owner))));
        // Present key: served by the source; absent key: ASK.
        assert_eq!(text(&send(foo_owner, &["HGET", "foo", "f"])), "bar");
        let missing = "foo{foo}x";
        assert_eq!(key_slot(missing), 12182);
        assert_eq!(
            text(&send(foo_owner, &["HGET", missing, "f"])),
            format!("ASK 12182 127.0.0.1:{dst}")
        );
        assert_eq!(
            text(&send(foo_owner, &["SUNION", "{foo}a", "{foo}b"])),
            "TRYAGAIN Multiple keys request during rehashing of slot"
        );
        // The target serves only after ASKING (for one command).
        assert_eq!(
            text(&send(dst, &["HGET", missing, "f"])),
            format!("MOVED 12182 127.0.0.1:{foo_owner}")
        );
        let mut r = Raw::connect(dst);
        assert_eq!(text(&r.cmd(&["ASKING"])), "OK");
        assert!(matches!(r.cmd(&["HGET", missing, "f"]), Frame::Null));
        assert!(text(&r.cmd(&["HGET", missing, "f"])).starts_with("MOVED"));
        assert_eq!(cl(dst, &["SETSLOT", &s, "STABLE"]), "OK");
        assert_eq!(cl(foo_owner, &["SETSLOT", &s, "STABLE"]), "OK");
    }

    // A seventh master joins; slots move to it while a client keeps writing and reading.
    nodes.push(spawn_node());
    let new_port = nodes[6].port;
    let mut all_ports = ports.clone();
    all_ports.push(new_port);
    if with_cli {
        let (ok, out) = redis_cli(&["--cluster", "add-node", &nodes[6].addr(), &nodes[0].addr()]);
        assert!(
            ok && out.contains("[OK] New node added correctly."),
            "{out}"
        );
    } else {
        assert_eq!(
            cl(ports[0], &["MEET", "127.0.0.1", &new_port.to_string()]),
            "OK"
        );
    }
    wait_for("the new node to join", Duration::from_secs(30), || {
        all_ok(&all_ports)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, written, errors) = (stop.clone(), written.clone(), errors.clone());
        let seeds = seeds.clone();
        std::thread::spawn(move || {
            let client = redis::cluster::ClusterClient::new(seeds).expect("client");
            let mut c = client.get_connection().expect("conn");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                let key = format!("load:{i}");
                let w: redis::RedisResult<i64> =
                    redis::cmd("HSET").arg(&key).arg("v").arg(i).query(&mut c);
                let r: redis::RedisResult<u64> =
                    redis::cmd("HGET").arg(&key).arg("v").query(&mut c);
                match (w, r) {
                    (Ok(_), Ok(v)) if v == i => {}
                    (w, r) => {
                        eprintln!("load error on {key}: {w:?} {r:?}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let moved_slots = 120;
    if with_cli {
        let id = myid(new_port);
        let n = moved_slots.to_string();
        let (ok, out) = redis_cli(&[
            "--cluster",
            "reshard",
            &nodes[0].addr(),
            "--cluster-from",
            "all",
            "--cluster-to",
            &id,
            "--cluster-slots",
            &n,
            "--cluster-yes",
        ]);
        assert!(ok, "{out}");
    } else {
        // Slots with keys from each of the three masters.
        let mut moved = 0;
        for m in 0..3u16 {
            for s in 0..moved_slots / 3 {
                move_slot_manually(&all_ports, m * 5461 + 100 + s as u16, new_port);
                moved += 1;
            }
        }
        assert_eq!(moved, moved_slots);
    }
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "client errors during the reshard"
    );
    assert!(written.load(Ordering::Relaxed) > 0);
    wait_for(
        "agreement after the reshard",
        Duration::from_secs(30),
        || all_ok(&all_ports),
    );
    let new_slots = cl(new_port, &["NODES"])
        .lines()
        .find(|l| l.contains("myself"))
        .map(|l| l.split(' ').skip(8).count())
        .unwrap_or(0);
    assert!(new_slots > 0, "the new node owns slots");
    // Every key is still there, with its value.
    let mut cc = client.get_connection().expect("cluster connection");
    for i in 0..10_000 {
        let v: i64 = redis::cmd("HGET")
            .arg(format!("k:{i}"))
            .arg("v")
            .query(&mut cc)
            .expect("HGET");
        assert_eq!(v, i);
    }
    let n = written.load(Ordering::Relaxed);
    for i in (0..n).step_by(7) {
        let v: u64 = redis::cmd("HGET")
            .arg(format!("load:{i}"))
            .arg("v")
            .query(&mut cc)
            .expect("HGET");
        assert_eq!(v, i);
    }
    if with_cli {
        let (_, out) = redis_cli(&["--cluster", "check", &nodes[0].addr()]);
        assert!(out.contains("[OK] All 16384 slots covered."), "{out}");
    }

    // `--cluster fix` closes a half-migrated slot.
    if with_cli {
        let slot = key_slot("k:1");
        let src = owner_port(&all_ports, slot);
        let dst = *ports[..3].iter().find(|&&p| p != src).unwrap_or(&new_port);
        let s = slot.to_string();
        assert_eq!(cl(dst, &["SETSLOT", &s, "IMPORTING", &myid(src)]), "OK");
        assert_eq!(cl(src, &["SETSLOT", &s, "MIGRATING", &myid(dst)]), "OK");
        let (_, out) = redis_cli(&["--cluster", "fix", &nodes[0].addr()]);
        assert!(out.contains("Fixing open slot"), "{out}");
        wait_for("agreement after fix", Duration::from_secs(30), || {
            all_ok(&all_ports)
        });
        let (_, out) = redis_cli(&["--cluster", "check", &nodes[0].addr()]);
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERR]"),
            "{out}"
        );
        let v: i64 = redis::cmd("HGET")
            .arg("k:1")
            .arg("v")
            .query(&mut cc)
            .expect("HGET");
        assert_eq!(v, 1);
    }

    // Scale in: empty the new master with rebalance (weight 0), then del-node it.
    if with_cli {
        let id = myid(new_port);
        let w = format!("{id}=0");
        let (ok, out) = redis_cli(&[
            "--cluster",
            "rebalance",
            &nodes[0].addr(),
            "--cluster-weight",
            &w,
        ]);
        assert!(ok, "{out}");
        let (ok, out) = redis_cli(&["--cluster", "del-node", &nodes[0].addr(), &id]);
        assert!(ok && out.contains("Sending CLUSTER RESET SOFT"), "{out}");
        let gone = nodes.pop().expect("seventh node");
        drop(gone);
        all_ports.pop();
        wait_for("six known nodes again", Duration::from_secs(30), || {
            all_ok(&ports)
        });
        // A fresh connection: the old one still points at the removed node.
        cc = client.get_connection().expect("cluster connection");
        for i in (0..10_000).step_by(13) {
            let v: i64 = redis::cmd("HGET")
                .arg(format!("k:{i}"))
                .arg("v")
                .query(&mut cc)
                .expect("HGET");
            assert_eq!(v, i);
        }
        let (_, out) = redis_cli(&["--cluster", "check", &nodes[0].addr()]);
        assert!(out.contains("[OK] All 16384 slots covered."), "{out}");
    }

    // Restart: SIGTERM, then the same config file: same ID, slots and peers.
    let victim = 1;
    let id_before = myid(ports[victim]);
    let slots_before = signature(ports[victim]);
    let dir = nodes[victim].dir.clone();
    assert!(nodes[victim].terminate(Duration::from_secs(10)));
    // Keep the directory: the old handle must not delete it.
    let mut old = std::mem::replace(&mut nodes[victim], spawn_in(dir.clone(), ports[victim]));
    old.dir = std::env::temp_dir().join("slotgate-cl-nonexistent");
    drop(old);
    assert_eq!(myid(ports[victim]), id_before);
    assert!(nodes[victim]
        .log()
        .contains(&format!("Node configuration loaded, I'm {id_before}")));
    assert_eq!(signature(ports[victim]), slots_before);
    let known = format!("cluster_known_nodes:{}", all_ports.len());
    assert!(cl(ports[victim], &["INFO"]).contains(&known));
    wait_for(
        "the restarted node back in the cluster",
        Duration::from_secs(30),
        || all_ok(&all_ports),
    );
    // No persistence is configured (appendonly no, save ""): like redis-server, the restarted
    // master comes back empty; the other masters' keys are still served.
    let i = (0..10_000)
        .find(|i| owner_port(&all_ports, key_slot(&format!("k:{i}"))) != ports[victim])
        .expect("a key elsewhere");
    let mut cc = client.get_connection().expect("cluster connection");
    let v: i64 = redis::cmd("HGET")
        .arg(format!("k:{i}"))
        .arg("v")
        .query(&mut cc)
        .expect("HGET after restart");
    assert_eq!(v, i);
}

// ------------------------------------------------------------------------------------------
// CLUSTER subcommands on a fresh node, compared with a real redis-server cluster node
// ------------------------------------------------------------------------------------------

/// Requests whose replies do not depend on node IDs or timing.
const SCRIPT: &[&[&str]] = &[
    &["CLUSTER", "ADDSLOTS"],
    &["CLUSTER", "ADDSLOTS", "abc"],
    &["CLUSTER", "ADDSLOTS", "16384"],
    &["CLUSTER", "ADDSLOTS", "-1"],
    &["CLUSTER", "ADDSLOTS", "1", "1"],
    &["CLUSTER", "ADDSLOTS", "1"],
    &["CLUSTER", "ADDSLOTS", "1"],
    &["CLUSTER", "ADDSLOTSRANGE", "5", "3"],
    &["CLUSTER", "ADDSLOTSRANGE", "5"],
    &["CLUSTER", "ADDSLOTSRANGE", "2", "4", "3", "7"],
    &["CLUSTER", "ADDSLOTSRANGE", "10", "20"],
    &["CLUSTER", "DELSLOTS", "100"],
    &["CLUSTER", "DELSLOTSRANGE", "10", "12"],
    &["CLUSTER", "DELSLOTS", "1", "1"],
    &["CLUSTER", "SETSLOT", "5000", "NODE", "abc"],
    &["CLUSTER", "SETSLOT", "5000", "IMPORTING", "abc"],
    &["CLUSTER", "SETSLOT", "5000", "MIGRATING", "abc"],
    &["CLUSTER", "SETSLOT", "5000", "MIGRATING"],
    &["CLUSTER", "SETSLOT", "5000", "foo"],
    &["CLUSTER", "SETSLOT", "5000", "STABLE"],
    &["CLUSTER", "SETSLOT", "15", "MIGRATING", "abc"],
    &["CLUSTER", "SETSLOT", "abc", "STABLE"],
    &["CLUSTER", "SET-CONFIG-EPOCH", "-1"],
    &["CLUSTER", "SET-CONFIG-EPOCH", "abc"],
    &["cluster", "set-config-epoch", "5"],
    &["CLUSTER", "BUMPEPOCH"],
    &["CLUSTER", "SET-CONFIG-EPOCH", "7"],
    &["CLUSTER", "COUNT-FAILURE-REPORTS", "abc"],
    &["CLUSTER", "FORGET", "abc"],
    &["CLUSTER", "MEET", "127.0.0.1", "abc"],
    &["CLUSTER", "MEET", "127.0.0.1", "99999"],
    &["CLUSTER", "MEET", "1.2.3", "5000"],
    &["CLUSTER", "MEET", "127.0.0.1", "5000", "abc"],
    &["CLUSTER", "MEET", "127.0.0.1"],
    &["CLUSTER", "REPLICATE", "abc"],
    &["CLUSTER", "REPLICAS", "abc"],
    &["CLUSTER", "SLAVES", "abc"],
    &["CLUSTER", "FAILOVER"],
    &["CLUSTER", "FAILOVER", "foo"],
    &["CLUSTER", "FAILOVER", "force", "takeover"],
    &["CLUSTER", "KEYSLOT", "foo"],
    &["CLUSTER", "KEYSLOT", "{user1}:a"],
    &["CLUSTER", "KEYSLOT"],
    &["CLUSTER", "COUNTKEYSINSLOT", "16384"],
    &["CLUSTER", "COUNTKEYSINSLOT", "-1"],
    &["CLUSTER", "COUNTKEYSINSLOT", "abc"],
    &["CLUSTER", "COUNTKEYSINSLOT", "12182"],
    &["CLUSTER", "GETKEYSINSLOT", "1", "-1"],
    &["CLUSTER", "GETKEYSINSLOT", "16384", "1"],
    &["CLUSTER", "GETKEYSINSLOT", "a", "1"],
    &["CLUSTER", "GETKEYSINSLOT", "1", "10"],
    &["CLUSTER", "RESET", "foo"],
    &["CLUSTER", "RESET", "hard", "hard"],
    &["CLUSTER", "foo"],
    &["CLUSTER", "INFO", "foo"],
    &["CLUSTER", "NODES", "foo"],
    &["CLUSTER", "MYID", "x"],
    &["CLUSTER", "LINKS"],
    &["CLUSTER", "SAVECONFIG"],
    &["HSET", "foo", "f", "v"],
    &["SUNION", "key1", "key2"],
    &["SELECT", "1"],
    &["SELECT", "0"],
    &["READONLY"],
    &["READWRITE"],
    &["ASKING"],
    &["ASKING", "x"],
    &["MULTI"],
    &["CLUSTER", "DELSLOTS", "1"],
    &["CLUSTER", "ADDSLOTS", "1"],
    &["CLUSTER", "BUMPEPOCH"],
    &["EXEC"],
    &["CLUSTER", "FLUSHSLOTS"],
    &["CLUSTER", "SLOTS"],
    &["CLUSTER", "RESET", "soft"],
    &["CLUSTER", "INFO"],
];

fn run_script(port: u16) -> Vec<Frame> {
    let mut r = Raw::connect(port);
    SCRIPT.iter().map(|c| r.cmd(c)).collect()
}

#[test]
fn subcommands_on_a_fresh_node_match_redis() {
    let ours = spawn_node();
    let got = run_script(ours.port);
    // Spot checks that hold with or without a reference server.
    let by_cmd: BTreeMap<String, String> = SCRIPT
        .iter()
        .zip(&got)
        .map(|(c, f)| (c.join(" "), text(f)))
        .collect();
    assert_eq!(
        by_cmd["CLUSTER ADDSLOTS 1 1"],
        "ERR Slot 1 specified multiple times"
    );
    assert_eq!(by_cmd["CLUSTER KEYSLOT foo"], "12182");
    assert_eq!(by_cmd["cluster set-config-epoch 5"], "OK");
    assert_eq!(
        by_cmd["CLUSTER SET-CONFIG-EPOCH 7"],
        "ERR Node config epoch is already non-zero"
    );
    assert_eq!(
        by_cmd["CLUSTER MEET 127.0.0.1 99999"],
        "ERR Invalid node address specified: 127.0.0.1:99999"
    );
    // The MULTI/EXEC block (redis-cli --cluster fix relies on CLUSTER queuing).
    let exec_pos = SCRIPT.iter().position(|c| c == &["EXEC"]).expect("EXEC");
    match &got[exec_pos] {
        Frame::Array(items) => {
            assert_eq!(items.len(), 3);
            assert_eq!(text(&items[0]), "OK");
            assert_eq!(text(&items[1]), "OK");
        }
        other => panic!("EXEC: {other:?}"),
    }
    let Some(redis) = start_redis(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]) else {
        return;
    };
    let want = run_script(redis.port);
    let mut diffs = Vec::new();
    for (i, c) in SCRIPT.iter().enumerate() {
        let (w, g) = (&want[i], &got[i]);
        let same = match (w, g) {
            // Same shape; counters and IDs differ between any two nodes.
            (Frame::Verbatim(..), Frame::Verbatim(..)) | (Frame::Bulk(_), Frame::Bulk(_))
                if c[1..]
                    .first()
                    .is_some_and(|s| s.eq_ignore_ascii_case("INFO")) =>
            {
                let keys = |f: &Frame| -> BTreeSet<String> {
                    text(f)
                        .lines()
                        .filter(|l| !l.starts_with("cluster_stats"))
                        .map(|l| l.split(':').next().unwrap_or("").to_string())
                        .collect()
                };
                keys(w) == keys(g)
            }
            _ => w == g,
        };
        if !same {
            diffs.push(format!("{}: redis {:?} / slotgate {:?}", c.join(" "), w, g));
        }
    }
    assert!(
        diffs.is_empty(),
        "differences from redis-server:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn resp3_shapes_and_config_file() {
    let p = spawn_node();
    let mut r = Raw::connect(p.port);
    r.cmd(&["HELLO", "3"]);
    assert!(matches!(r.cmd(&["CLUSTER", "INFO"]), Frame::Verbatim(..)));
    assert!(matches!(r.cmd(&["CLUSTER", "NODES"]), Frame::Verbatim(..)));
    assert_eq!(
        text(&r.cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])),
        "OK"
    );
    match r.cmd(&["CLUSTER", "SLOTS"]) {
        Frame::Array(e) => {
            let Frame::Array(e) = &e[0] else { panic!() };
            let Frame::Array(n) = &e[2] else { panic!() };
            assert!(matches!(n[3], Frame::Map(ref m) if m.is_empty()));
        }
        other => panic!("{other:?}"),
    }
    match r.cmd(&["CLUSTER", "SHARDS"]) {
        Frame::Array(s) => assert!(matches!(s[0], Frame::Map(_))),
        other => panic!("{other:?}"),
    }
    // The config file follows every change, in CLUSTER NODES format.
    let conf = std::fs::read_to_string(p.dir.join(format!("nodes-{}.conf", p.port))).expect("conf");
    let id = myid(p.port);
    assert!(
        conf.contains(&format!("{id} "))
            && conf.contains("myself,master - 0 0 0 connected 0-16383"),
        "{conf}"
    );
    wait_for(
        "state ok on a single full-coverage node",
        Duration::from_secs(10),
        || cl(p.port, &["INFO"]).contains("cluster_state:ok"),
    );
    assert_eq!(text(&r.cmd(&["HSET", "foo", "f", "v"])), "1");
    assert_eq!(text(&r.cmd(&["CLUSTER", "COUNTKEYSINSLOT", "12182"])), "1");
    match r.cmd(&["CLUSTER", "GETKEYSINSLOT", "12182", "10"]) {
        Frame::Array(k) => assert_eq!(k.iter().map(text).collect::<Vec<_>>(), vec!["foo"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        text(&r.cmd(&["CLUSTER", "FLUSHSLOTS"])),
        "ERR DB must be empty to perform CLUSTER FLUSHSLOTS."
    );
    assert_eq!(
        text(&r.cmd(&["CLUSTER", "RESET"])),
        "ERR CLUSTER RESET can't be called with master nodes containing keys"
    );
    assert_eq!(
        text(&r.cmd(&["CLUSTER", "FORGET", &id])),
        "ERR I tried hard but I can't forget myself..."
    );
    assert_eq!(
        text(&r.cmd(&["CLUSTER", "REPLICATE", &id])),
        "ERR Can't replicate myself"
    );
    assert_eq!(text(&r.cmd(&["CLUSTER", "MYSHARDID"])), id);
}

// ------------------------------------------------------------------------------------------
// MIGRATE between two standalone nodes (the same client code serves cluster resharding)
// ------------------------------------------------------------------------------------------

fn bsend(port: u16, args: &[&[u8]]) -> Frame {
    let mut r = Raw::connect(port);
    let mut out = BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    r.send(&out);
    r.read().expect("reply")
}

#[test]
fn migrate_replies_and_options() {
    let a = start_node(&[]);
    let b = start_node(&[]);
    let bp = b.port.to_string();
    assert_eq!(text(&send(a.port, &["HSET", "h", "f", "1"])), "1");
    assert_eq!(text(&send(a.port, &["SADD", "s0", "x", "y"])), "2");
    // An expiring set, made with DUMP/RESTORE (no dependency on the keys family).
    let Frame::Bulk(payload) = bsend(a.port, &[b"DUMP", b"s0"]) else {
        panic!("DUMP")
    };
    assert_eq!(
        text(&bsend(a.port, &[b"RESTORE", b"s", b"100000", &payload])),
        "OK"
    );
    // Missing key: NOKEY.
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &bp, "nokey", "0", "1000"]
        )),
        "NOKEY"
    );
    // Syntax.
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &bp, "h", "0", "1000", "KEYS", "s"]
        )),
        "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string"
    );
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &bp, "h", "0", "1000", "BOGUS"]
        )),
        "ERR syntax error"
    );
    assert_eq!(
        text(&send(a.port, &["MIGRATE", "127.0.0.1", &bp, "h", "0", "x"])),
        "ERR value is not an integer or out of range"
    );
    // COPY keeps the source.
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &bp, "h", "0", "1000", "COPY"]
        )),
        "OK"
    );
    assert_eq!(text(&send(a.port, &["HGET", "h", "f"])), "1");
    assert_eq!(text(&send(b.port, &["HGET", "h", "f"])), "1");
    // Existing target key without REPLACE: the target's error, source kept.
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &bp, "h", "0", "1000"]
        )),
        "ERR Target instance replied with error: BUSYKEY Target key name already exists."
    );
    assert_eq!(text(&send(a.port, &["HLEN", "h"])), "1");
    // KEYS form with REPLACE moves both; the TTL travels.
    assert_eq!(
        text(&send(
            a.port,
            &[
                "MIGRATE",
                "127.0.0.1",
                &bp,
                "",
                "0",
                "1000",
                "REPLACE",
                "KEYS",
                "h",
                "s",
                "absent"
            ]
        )),
        "OK"
    );
    assert_eq!(text(&send(a.port, &["HLEN", "h"])), "0");
    assert_eq!(text(&send(a.port, &["SCARD", "s"])), "0");
    assert_eq!(text(&send(b.port, &["SCARD", "s"])), "2");
    let pttl = text(&send(b.port, &["PTTL", "s"]));
    if pttl.starts_with("ERR unknown command") {
        eprintln!("NOTE: PTTL not in this build; TTL transfer not checked here");
    } else {
        let ttl: i64 = pttl.parse().unwrap_or(-3);
        assert!(ttl > 90_000 && ttl <= 100_000, "ttl {ttl}");
    }
    // AUTH to a target without a password: the target's error.
    assert_eq!(text(&send(a.port, &["HSET", "h2", "f", "1"])), "1");
    let r = text(&send(
        a.port,
        &["MIGRATE", "127.0.0.1", &bp, "h2", "0", "1000", "AUTH", "pw"],
    ));
    assert!(
        r.starts_with("ERR Target instance replied with error: ERR"),
        "{r}"
    );
    // Nobody listening: IOERR.
    let dead = free_port().to_string();
    assert_eq!(
        text(&send(
            a.port,
            &["MIGRATE", "127.0.0.1", &dead, "h2", "0", "300"]
        )),
        "IOERR error or timeout connecting to the client"
    );
    // Binary keys and values survive.
    let key: &[u8] = b"bin\x00key\xff";
    assert_eq!(
        text(&bsend(a.port, &[b"HSET", key, b"f", b"\x00\x01\x02"])),
        "1"
    );
    assert_eq!(
        text(&bsend(
            a.port,
            &[b"MIGRATE", b"127.0.0.1", bp.as_bytes(), key, b"0", b"1000"]
        )),
        "OK"
    );
    assert_eq!(
        bsend(b.port, &[b"HGET", key, b"f"]),
        Frame::Bulk(bytes::Bytes::from_static(b"\x00\x01\x02"))
    );
    // READONLY / READWRITE / ASKING need cluster mode; CLUSTER too.
    assert_eq!(
        text(&send(a.port, &["READONLY"])),
        "ERR This instance has cluster support disabled"
    );
    assert_eq!(
        text(&send(a.port, &["CLUSTER", "INFO"])),
        "ERR This instance has cluster support disabled"
    );
}
