//! Failover of a slotgate-node cluster with real processes: `kill -9` of a master (its
//! replica takes over; the restarted old master follows it), `CLUSTER FAILOVER` with its
//! FORCE and TAKEOVER variants, replica migration to an orphaned master, a master cut from the
//! majority (SIGSTOP of the others) answering CLUSTERDOWN, and a SIGSTOPped master rejoining
//! as a replica. Also measures kill -9 → cluster_state:ok beside real redis-server.
//!
//! The clusters here are formed with stock `redis-cli --cluster create`, but unlike
//! `Cluster::start` they do not wait for the replicas' data sync: these tests are about the
//! cluster roles and slots (data checks live in tests/tests/failover.rs).

use slotgate_tests::cluster::redis_cli;
use slotgate_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One cluster node we can kill and restart on the same port and directory.
struct Node {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    timeout_ms: u64,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn spawn(bin: &Path, timeout_ms: u64, extra: &[&str]) -> Node {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "slotgate-failover-{}-{}-{}",
            std::process::id(),
            port,
            rand::random::<u32>()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let mut n = Node {
            bin: bin.to_path_buf(),
            port,
            dir,
            timeout_ms,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        n.start();
        n
    }

    /// Starts (or restarts) the process with the same port, directory and nodes.conf.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .expect("log");
        let log2 = log.try_clone().expect("log");
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &self.timeout_ms.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .expect("spawn cluster node");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let (_, out) = redis_cli(&["-p", &self.port.to_string(), "ping"]);
            if out.contains("PONG") {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "node {} not ready: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid();
        assert!(pid > 0);
        unsafe {
            libc::kill(pid, sig);
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> String {
        let p = self.port.to_string();
        let mut a = vec!["-p", p.as_str()];
        a.extend_from_slice(args);
        redis_cli(&a).1
    }

    fn myid(&self) -> String {
        self.cli(&["cluster", "myid"]).trim().to_string()
    }

    /// This node's view: id → (port, flags, master id, has slots).
    fn view(&self) -> Vec<NodeLine> {
        parse_nodes(&self.cli(&["cluster", "nodes"]))
    }

    /// INFO replication says this node follows `master` (role:slave, master_port).
    fn follows(&self, master: &Node) -> bool {
        let i = self.cli(&["info", "replication"]);
        i.contains("role:slave") && i.contains(&format!("master_port:{}\r\n", master.port))
    }

    fn state_ok(&self) -> bool {
        self.cli(&["cluster", "info"]).contains("cluster_state:ok")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A SIGSTOPped process must be continued to die cleanly.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    flags: String,
    master: String,
    slots: bool,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            if w.len() < 8 {
                return None;
            }
            let port = w[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            Some(NodeLine {
                id: w[0].to_string(),
                port,
                flags: w[2].to_string(),
                master: w[3].to_string(),
                slots: w.len() > 8,
            })
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TestCluster {
    nodes: Vec<Node>,
}

impl TestCluster {
    /// `masters` masters with `replicas` replicas each, formed by `redis-cli --cluster create`.
    fn start(bin: &Path, masters: usize, replicas: usize, timeout_ms: u64, extra: &[&str]) -> Self {
        let nodes: Vec<Node> = (0..masters * (1 + replicas))
            .map(|_| Node::spawn(bin, timeout_ms, extra))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(|s| s.as_str()));
        let r = replicas.to_string();
        args.extend(["--cluster-replicas", &r, "--cluster-yes"]);
        let (ok, out) = redis_cli(&args);
        assert!(ok && out.contains("[OK] All 16384 slots covered"), "{out}");
        let c = TestCluster { nodes };
        c.wait_ok(Duration::from_secs(30));
        c
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.alive())
    }

    fn by_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("node by port")
    }

    /// Every live node reports cluster_state:ok and `redis-cli --cluster check` agrees.
    fn all_ok(&self) -> bool {
        if !self.live().all(|n| n.state_ok()) {
            return false;
        }
        let Some(seed) = self.live().next() else {
            return false;
        };
        let (_, check) = redis_cli(&["--cluster", "check", &seed.addr()]);
        check.contains("[OK] All nodes agree about slots configuration.")
            && check.contains("[OK] All 16384 slots covered.")
    }

    fn wait_ok(&self, limit: Duration) {
        let t = Instant::now();
        while !self.all_ok() {
            if t.elapsed() > limit {
                let seed = self.live().next().map(|n| n.addr()).unwrap_or_default();
                let (_, check) = redis_cli(&["--cluster", "check", &seed]);
                let views: Vec<String> = self
                    .live()
                    .map(|n| format!("{}:\n{}", n.port, n.cli(&["cluster", "nodes"])))
                    .collect();
                panic!(
                    "cluster not ok after {limit:?}: {check}\n{}",
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Index of a replica of the node at index `master` (from that master's view).
    fn replica_of(&self, master: usize) -> usize {
        let id = self.nodes[master].myid();
        let line = self.nodes[master]
            .view()
            .into_iter()
            .find(|l| l.master == id)
            .expect("a replica");
        self.by_port(line.port)
    }

    /// True when every live node sees `node` as a master with slots and `old` as its replica
    /// (or `old` is dead).
    fn promoted_everywhere(&self, node: usize, old: usize) -> bool {
        let id = self.nodes[node].myid();
        if id.is_empty() {
            return false;
        }
        self.live().all(|n| {
            let v = n.view();
            let new_ok = v
                .iter()
                .any(|l| l.id == id && l.flags.contains("master") && l.slots);
            let old_ok = !self.nodes[old].alive()
                || v.iter()
                    .any(|l| l.port == self.nodes[old].port && l.master == id);
            new_ok && old_ok
        })
    }
}

fn require_cli() -> bool {
    require_peer("redis-cli").is_some()
}

/// kill -9 of a master at `node_timeout` ms; returns the time until the replica is master
/// everywhere and every live node reports cluster_state:ok (`--cluster check` agreeing).
fn measure_failover(c: &mut TestCluster, timeout_ms: u64) -> (Duration, usize, usize) {
    let master = 0;
    let replica = c.replica_of(master);
    let t = Instant::now();
    c.nodes[master].kill9();
    let limit = Duration::from_millis(timeout_ms + 20_000);
    loop {
        if c.promoted_everywhere(replica, master) && c.live().all(|n| n.state_ok()) {
            break;
        }
        assert!(
            t.elapsed() < limit,
            "no failover after {limit:?}: {}",
            c.nodes[replica].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if std::env::var("FAILOVER_DEBUG").is_ok() {
        for n in c.live() {
            eprintln!("--- {} ---\n{}", n.port, n.log());
        }
    }
    (t.elapsed(), master, replica)
}

#[test]
fn kill_master_replica_takes_over_and_old_master_rejoins_as_replica() {
    if !require_cli() {
        return;
    }
    let timeout = 2000;
    let mut c = TestCluster::start(&our_bin("slotgate-node"), 3, 1, timeout, &[]);
    let (took, master, replica) = measure_failover(&mut c, timeout);
    eprintln!("slotgate-node: kill -9 → replica promoted and cluster_state:ok in {took:?} (node timeout {timeout} ms)");
    assert!(
        took <= Duration::from_millis(timeout + 2000),
        "failover took {took:?}"
    );
    c.wait_ok(Duration::from_secs(10));
    let log = c.nodes[replica].log();
    for l in [
        "Start of election delayed for",
        "Starting a failover election for epoch",
        "Failover election won: I'm the new master.",
        "after successful failover",
    ] {
        assert!(log.contains(l), "{l} not in the log:\n{log}");
    }
    // Votes and requests are counted in CLUSTER INFO.
    let info = c.nodes[replica].cli(&["cluster", "info"]);
    assert!(
        info.contains("cluster_stats_messages_auth-req_sent:"),
        "{info}"
    );
    assert!(
        info.contains("cluster_stats_messages_auth-ack_received:"),
        "{info}"
    );
    // Writes go to the new master.
    let (_, out) = redis_cli(&[
        "-c",
        "-p",
        &c.nodes[replica].port.to_string(),
        "set",
        "foo",
        "bar",
    ]);
    assert!(out.contains("OK"), "{out}");

    // The old master comes back with its old nodes.conf: it becomes a replica of the winner.
    c.nodes[master].start();
    let new_id = c.nodes[replica].myid();
    wait_for(
        "old master is a replica of the new one everywhere",
        Duration::from_secs(20),
        || c.promoted_everywhere(replica, master),
    );
    let me = c.nodes[master]
        .view()
        .into_iter()
        .find(|l| l.flags.contains("myself"))
        .expect("myself");
    assert!(me.flags.contains("slave") && me.master == new_id, "{me:?}");
    wait_for(
        "INFO: the old master replicates the new one",
        Duration::from_secs(10),
        || c.nodes[master].follows(&c.nodes[replica]),
    );
    c.wait_ok(Duration::from_secs(20));
}

#[test]
fn cluster_failover_default_force_and_takeover_promote_the_replica() {
    if !require_cli() {
        return;
    }
    let c = TestCluster::start(&our_bin("slotgate-node"), 3, 1, 2000, &[]);
    // Errors.
    let out = c.nodes[0].cli(&["cluster", "failover"]);
    assert!(
        out.contains("ERR You should send CLUSTER FAILOVER to a replica"),
        "{out}"
    );
    let r = c.replica_of(0);
    let out = c.nodes[r].cli(&["cluster", "failover", "now"]);
    assert!(out.contains("ERR syntax error"), "{out}");
    for (master, mode) in [(0usize, None), (1, Some("force")), (2, Some("takeover"))] {
        let r = c.replica_of(master);
        let mut args = vec!["cluster", "failover"];
        args.extend(mode);
        let t = Instant::now();
        let out = c.nodes[r].cli(&args);
        assert!(out.contains("OK"), "{mode:?}: {out}");
        let took = wait_for(
            &format!("CLUSTER FAILOVER {mode:?} promotes the replica"),
            Duration::from_secs(15),
            || c.promoted_everywhere(r, master),
        );
        eprintln!("CLUSTER FAILOVER {mode:?}: promoted everywhere in {took:?}");
        c.wait_ok(Duration::from_secs(15));
        let log = c.nodes[r].log();
        let line = match mode {
            None => "Manual failover user request accepted.",
            Some("force") => "Forced failover user request accepted.",
            _ => "Taking over the master (user request).",
        };
        assert!(log.contains(line), "{line}: {log}");
        if mode.is_none() {
            let mlog = c.nodes[master].log();
            assert!(
                mlog.contains("Manual failover requested by replica"),
                "{mlog}"
            );
            assert!(log.contains("manual failover can start"), "{log}");
        }
        if mode != Some("takeover") {
            assert!(log.contains("Failover election won"), "{log}");
        }
        wait_for(
            "INFO: the old master replicates the new one",
            Duration::from_secs(10),
            || c.nodes[master].follows(&c.nodes[r]),
        );
        assert!(t.elapsed() < Duration::from_secs(30));
    }
    c.wait_ok(Duration::from_secs(15));
}

#[test]
fn replica_migrates_to_an_orphaned_master() {
    if !require_cli() {
        return;
    }
    let bin = our_bin("slotgate-node");
    // 2 s node timeout: with 1 s, failure reports (valid for two timeouts) could expire on a
    // loaded 2-core CI machine before a majority marked the killed replica FAIL, so the
    // orphan was never seen as one.
    let mut c = TestCluster::start(&bin, 3, 1, 2000, &[]);
    // A second replica for master 0.
    let extra = Node::spawn(&bin, 2000, &[]);
    let (ok, out) = redis_cli(&[
        "--cluster",
        "add-node",
        &extra.addr(),
        &c.nodes[0].addr(),
        "--cluster-slave",
        "--cluster-master-id",
        &c.nodes[0].myid(),
    ]);
    assert!(ok, "{out}");
    c.nodes.push(extra);
    let m0 = c.nodes[0].myid();
    wait_for(
        "master 0 has two replicas everywhere",
        Duration::from_secs(20),
        || {
            c.live()
                .all(|n| n.view().iter().filter(|l| l.master == m0).count() == 2)
        },
    );
    c.wait_ok(Duration::from_secs(20));
    // Orphan master 1.
    let r1 = c.replica_of(1);
    c.nodes[r1].kill9();
    let m1 = c.nodes[1].myid();
    // The replica of master 0 with the smallest ID moves to master 1.
    let mut donors: Vec<String> = c.nodes[0]
        .view()
        .into_iter()
        .filter(|l| l.master == m0)
        .map(|l| l.id)
        .collect();
    donors.sort();
    let mover = donors[0].clone();
    let migrated = || {
        c.live()
            .all(|n| n.view().iter().any(|l| l.id == mover && l.master == m1))
    };
    let t = Instant::now();
    while !migrated() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !migrated() {
        // What each node saw, for the CI log.
        for n in c.live() {
            eprintln!("--- view of {}:\n{:#?}", n.port, n.view());
        }
        let log: Vec<String> = c
            .live()
            .filter(|n| n.myid() == mover)
            .map(|n| n.log())
            .collect();
        panic!("timed out after 60s: a replica of master 0 migrates to master 1\nmover's log:\n{log:?}");
    }
    let took = t.elapsed();
    eprintln!("replica migration done {took:?} after the orphan's replica was killed");
    let idx = c
        .nodes
        .iter()
        .position(|n| n.alive() && n.myid() == mover)
        .expect("mover");
    assert!(
        c.nodes[idx].log().contains("Migrating to orphaned master"),
        "{}",
        c.nodes[idx].log()
    );
    // Master 0 keeps its other replica.
    assert_eq!(
        c.nodes[0].view().iter().filter(|l| l.master == m0).count(),
        1
    );
}

#[test]
fn master_cut_from_the_majority_refuses_writes_then_recovers() {
    if !require_cli() {
        return;
    }
    let timeout = 1500;
    let c = TestCluster::start(&our_bin("slotgate-node"), 3, 0, timeout, &[]);
    // A key served by node 0.
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let out = c.nodes[0].cli(&["set", k, "v"]);
            out.trim() == "OK"
        })
        .expect("a key of node 0");
    // Freeze the two other masters: node 0 is alone, in the minority.
    let t = Instant::now();
    c.nodes[1].signal(libc::SIGSTOP);
    c.nodes[2].signal(libc::SIGSTOP);
    let took = wait_for(
        "node 0 answers writes with CLUSTERDOWN",
        Duration::from_millis(timeout + 10_000),
        || c.nodes[0].cli(&["set", &key, "w"]).contains("CLUSTERDOWN"),
    );
    eprintln!("minority master refuses writes {took:?} after the partition");
    assert!(took >= Duration::from_millis(timeout), "{took:?}");
    assert!(c.nodes[0]
        .cli(&["cluster", "info"])
        .contains("cluster_state:fail"));
    assert_eq!(
        c.nodes[0].cli(&["set", &key, "w"]).trim(),
        "CLUSTERDOWN The cluster is down"
    );
    c.nodes[1].signal(libc::SIGCONT);
    c.nodes[2].signal(libc::SIGCONT);
    c.wait_ok(Duration::from_secs(30));
    assert!(t.elapsed() > Duration::from_millis(timeout));
    assert_eq!(c.nodes[0].cli(&["set", &key, "x"]).trim(), "OK");
}

#[test]
fn stopped_master_is_failed_over_and_rejoins_as_replica() {
    if !require_cli() {
        return;
    }
    let timeout = 1500;
    let c = TestCluster::start(&our_bin("slotgate-node"), 3, 1, timeout, &[]);
    let r = c.replica_of(0);
    c.nodes[0].signal(libc::SIGSTOP);
    // Everybody else sees the replica promoted.
    let new_id = c.nodes[r].myid();
    wait_for(
        "replica of the stopped master promoted",
        Duration::from_millis(timeout + 15_000),
        || {
            c.nodes.iter().skip(1).all(|n| {
                n.view()
                    .iter()
                    .any(|l| l.id == new_id && l.flags.contains("master") && l.slots)
            }) && c.nodes.iter().skip(1).all(|n| n.state_ok())
        },
    );
    c.nodes[0].signal(libc::SIGCONT);
    wait_for(
        "the old master follows the new one",
        Duration::from_secs(20),
        || c.promoted_everywhere(r, 0),
    );
    wait_for(
        "INFO: the old master replicates the new one",
        Duration::from_secs(10),
        || c.nodes[0].follows(&c.nodes[r]),
    );
    c.wait_ok(Duration::from_secs(20));
}

/// kill -9 → cluster_state:ok, slotgate-node beside real redis-server, same node timeout.
#[test]
fn failover_time_beside_redis() {
    if !require_cli() {
        return;
    }
    let timeout = 3000;
    let mut ours = TestCluster::start(&our_bin("slotgate-node"), 3, 1, timeout, &[]);
    let (t_ours, _, _) = measure_failover(&mut ours, timeout);
    drop(ours);
    let theirs = require_peer("redis-server").map(|bin| {
        let mut c = TestCluster::start(&bin, 3, 1, timeout, &[]);
        // Real replicas need their initial sync before they may be promoted.
        wait_for("redis replicas synced", Duration::from_secs(30), || {
            c.live().all(|n| {
                let i = n.cli(&["info", "replication"]);
                !i.contains("role:slave") || i.contains("master_link_status:up")
            })
        });
        measure_failover(&mut c, timeout).0
    });
    eprintln!(
        "FAILOVER TIME (node timeout {timeout} ms): slotgate-node {t_ours:?}, redis-server {theirs:?}"
    );
    assert!(
        t_ours <= Duration::from_millis(timeout + 2000),
        "{t_ours:?}"
    );
}

#[test]
fn two_replicas_one_is_elected_the_other_follows_it() {
    if !require_cli() {
        return;
    }
    let bin = our_bin("slotgate-node");
    let timeout = 1500;
    let mut c = TestCluster::start(&bin, 3, 1, timeout, &[]);
    let extra = Node::spawn(&bin, timeout, &[]);
    let (ok, out) = redis_cli(&[
        "--cluster",
        "add-node",
        &extra.addr(),
        &c.nodes[0].addr(),
        "--cluster-slave",
        "--cluster-master-id",
        &c.nodes[0].myid(),
    ]);
    assert!(ok, "{out}");
    c.nodes.push(extra);
    let m0 = c.nodes[0].myid();
    wait_for(
        "master 0 has two replicas everywhere",
        Duration::from_secs(20),
        || {
            c.live()
                .all(|n| n.view().iter().filter(|l| l.master == m0).count() == 2)
        },
    );
    c.wait_ok(Duration::from_secs(20));
    let replicas: Vec<usize> = c.nodes[0]
        .view()
        .into_iter()
        .filter(|l| l.master == m0)
        .map(|l| c.by_port(l.port))
        .collect();
    c.nodes[0].kill9();
    let mut winner = None;
    wait_for(
        "one replica promoted",
        Duration::from_millis(timeout + 15_000),
        || {
            winner = replicas.iter().copied().find(|&r| {
                c.nodes[r]
                    .view()
                    .iter()
                    .any(|l| l.flags.contains("myself,master") && l.slots)
            });
            winner.is_some()
        },
    );
    let w = winner.expect("winner");
    let loser = replicas.into_iter().find(|&r| r != w).expect("loser");
    let wid = c.nodes[w].myid();
    wait_for(
        "the other replica follows the winner everywhere",
        Duration::from_secs(15),
        || {
            let lid = c.nodes[loser].myid();
            c.live()
                .all(|n| n.view().iter().any(|l| l.id == lid && l.master == wid))
        },
    );
    c.wait_ok(Duration::from_secs(15));
    assert!(
        c.nodes[loser]
            .log()
            .contains("Configuration change detected. Reconfiguring myself as a replica of"),
        "{}",
        c.nodes[loser].log()
    );
}

#[test]
fn no_failover_replica_waits_for_a_manual_failover() {
    if !require_cli() {
        return;
    }
    let timeout = 1000;
    let mut c = TestCluster::start(
        &our_bin("slotgate-node"),
        3,
        1,
        timeout,
        &["--cluster-replica-no-failover", "yes"],
    );
    let r = c.replica_of(0);
    let rid = c.nodes[r].myid();
    // The flag is announced to the others.
    wait_for(
        "nofailover seen by the others",
        Duration::from_secs(10),
        || {
            c.nodes[1]
                .view()
                .iter()
                .any(|l| l.id == rid && l.flags.contains("nofailover"))
        },
    );
    c.nodes[0].kill9();
    let m0 = c.nodes[0].port;
    wait_for("the master is FAIL", Duration::from_secs(15), || {
        c.nodes[1]
            .view()
            .iter()
            .any(|l| l.port == m0 && l.flags.contains("fail") && !l.flags.contains("fail?"))
    });
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        c.nodes[r]
            .view()
            .iter()
            .any(|l| l.id == rid && l.flags.contains("slave")),
        "a no-failover replica was promoted"
    );
    assert!(c.nodes[1]
        .cli(&["cluster", "info"])
        .contains("cluster_state:fail"));
    // A manual FORCE failover still promotes it.
    assert!(c.nodes[r]
        .cli(&["cluster", "failover", "force"])
        .contains("OK"));
    wait_for(
        "FORCE promotes the no-failover replica",
        Duration::from_secs(15),
        || c.promoted_everywhere(r, 0),
    );
    c.wait_ok(Duration::from_secs(15));
}
