//! Acceptance tests of cluster failover (issue 6), each written once as a function over the
//! server binary and run against both kinds: real redis-server 7.0.15 (`redis_*`, which must
//! pass: they prove the assertions are Redis's behaviour) and slotgate-node (`node_*`).
//!
//! - `kill -9` of a master under a recording writer: its replica serves the slots within
//!   node timeout + a bound, the cluster is ok again, every write acknowledged (safely) before
//!   the kill is readable, and the old master restarted in place becomes a replica of the
//!   new one.
//! - `CLUSTER FAILOVER` (default, FORCE, TAKEOVER) on a replica under write load.
//! - Replica migration to an orphaned master (`cluster-migration-barrier 1`).
//!
//! Writes are recorded by [`Writer`] (each key written once, every `+OK` kept with its time)
//! and read back through the redis crate's cluster client. Replication is asynchronous in
//! Redis: a write acknowledged by a master in the last moments before it dies may not have
//! reached the replica; such writes are reported, not required (see each test).

use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::repl::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// cluster-node-timeout of these clusters (ms).
const NODE_TIMEOUT_MS: u64 = 2000;
/// Margin over the node timeout within which a failover must complete (the target is
/// + 2 s; real Redis needs about + 2-3 s on a loaded 2-core machine, so this is generous).
const FAILOVER_MARGIN: Duration = Duration::from_secs(10);
/// Writes acknowledged at least this long before a master was killed must survive.
const SAFE_AGE: Duration = Duration::from_secs(1);

fn spec(bin: &Path, extra: &[&str]) -> NodeSpec {
    NodeSpec {
        bin: bin.to_path_buf(),
        timeout_ms: NODE_TIMEOUT_MS,
        extra: extra.iter().map(|s| s.to_string()).collect(),
    }
}

fn cluster_ok(port: u16) -> bool {
    try_cmd(port, &["CLUSTER", "INFO"])
        .map(|f| text(&f).contains("cluster_state:ok"))
        .unwrap_or(false)
}

/// True when the node on `port` reports every slot of `ranges` as its own.
fn owns(port: u16, ranges: &[(u16, u16)]) -> bool {
    let mine = own_slots(port);
    ranges
        .iter()
        .all(|&(a, b)| in_ranges(&mine, a) && in_ranges(&mine, b))
        && ranges.iter().map(|&(a, b)| (b - a) as u32 + 1).sum::<u32>()
            <= mine.iter().map(|&(a, b)| (b - a) as u32 + 1).sum::<u32>()
}

/// `to - from` in seconds, negative when `to` is earlier.
fn signed_secs(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64()
    } else {
        -from.duration_since(to).as_secs_f64()
    }
}

fn report_missing(what: &str, missing: &[(String, String, Option<String>)]) -> String {
    let sample: Vec<String> = missing
        .iter()
        .take(10)
        .map(|(k, v, got)| format!("{k} (wanted {v}, got {got:?})"))
        .collect();
    format!("{} {what}: {}", missing.len(), sample.join(", "))
}

/// Runs `f`; if it panics (a wait timed out), first prints what every node but `skip` logged
/// about failure detection, elections and replication, and its CLUSTER NODES, so a failed
/// failover can be understood.
fn explained<T>(c: &Cluster, skip: u16, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|e| {
        for n in c.nodes.iter().filter(|n| n.port != skip) {
            let log = n.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    [
                        "FAIL", "fail", "lection", "vote", "ailover", "epoch", "andshake",
                        "MASTER", "ync", "eplica",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                })
                .collect();
            let (_, nodes) = redis_cli(&["-p", &n.port.to_string(), "cluster", "nodes"]);
            eprintln!("--- node {} ---\n{}\n{nodes}", n.port, lines.join("\n"));
        }
        std::panic::resume_unwind(e)
    })
}

// ------------------------------------------------------------------------------------------
// 2. kill -9 a master under a writer
// ------------------------------------------------------------------------------------------

fn kill_master_failover(bin: &Path) {
    let spec = spec(bin, &[]);
    let mut c = start_cluster(&spec, 3, 1);
    let ports: Vec<u16> = c.nodes.iter().map(|p| p.port).collect();
    let topo = topology(ports[0]);
    let (victim, heir) = (topo[0].0, topo[0].1[0]);
    let victim_slots = own_slots(victim);
    let probe_key = key_in(&victim_slots, "probe");

    let writer = Writer::start(ports.clone(), "w", None);
    writer.wait_more(1000, Duration::from_secs(30));
    let vi = c
        .nodes
        .iter()
        .position(|p| p.port == victim)
        .expect("victim is one of ours");
    let t_kill = Instant::now();
    kill9(&mut c.nodes[vi]);
    let t_dead = Instant::now();

    let limit = Duration::from_millis(NODE_TIMEOUT_MS) + FAILOVER_MARGIN;
    let promoted = explained(&c, victim, || {
        wait_until("the replica to become master of the slots", limit, || {
            info(heir, "replication").get("role").map(String::as_str) == Some("master")
                && owns(heir, &victim_slots)
        })
    });
    let live: Vec<u16> = ports.iter().copied().filter(|&p| p != victim).collect();
    let mut probe = SlotClient::new(&live, Duration::from_secs(2));
    wait_until("the slots served and the cluster ok", limit, || {
        probe.refresh();
        owns(heir, &victim_slots)
            && probe.owner(&probe_key) == heir
            && probe.call(&probe_key, &["SET", &probe_key, "1"]).is_ok()
            && live.iter().all(|&p| cluster_ok(p))
    });
    let served = t_kill.elapsed();
    eprintln!(
        "kill -9 of master {victim}: replica {heir} promoted after {promoted:?}, slots served and \
         cluster ok after {served:?} (node timeout {NODE_TIMEOUT_MS} ms)"
    );
    assert!(served <= limit);

    // Writes keep flowing to the promoted replica's slots.
    writer.wait_more(1000, Duration::from_secs(20));
    let log = writer.stop();
    eprintln!(
        "writer: {} acknowledged writes, errors {:?}",
        log.acks.len(),
        log.errors
    );
    let missing = missing_acks(&live, &log.acks);
    let (window, required): (Vec<_>, Vec<_>) = missing.iter().cloned().partition(|(k, _, _)| {
        log.acks
            .iter()
            .find(|a| &a.key == k)
            .is_some_and(|a| a.at + SAFE_AGE > t_kill && a.at <= t_dead)
    });
    if !window.is_empty() {
        eprintln!(
            "{}",
            report_missing(
                "writes acknowledged within 1 s of the kill were lost (async replication)",
                &window
            )
        );
    }
    assert!(
        required.is_empty(),
        "{}",
        report_missing("acknowledged writes lost", &required)
    );
    let after = log.acks.iter().filter(|a| a.at > t_dead).count();
    assert!(
        after >= 1000,
        "only {after} writes acknowledged after the kill"
    );

    // The old master, restarted in place, becomes a replica of its successor and syncs.
    let t = Instant::now();
    restart_in_place(&mut c.nodes[vi], &spec);
    wait_until(
        "the old master to follow the new one",
        Duration::from_secs(30),
        || replica_linked_to(victim, heir),
    );
    wait_until("the old master in sync", Duration::from_secs(30), || {
        in_sync(heir, victim)
    });
    eprintln!(
        "restarted old master synced with {heir} after {:?}",
        t.elapsed()
    );
    assert!(own_slots(victim).is_empty());
    let heir_id = my_id(heir);
    wait_until(
        "every live node to see the old master as a replica of the new one",
        Duration::from_secs(20),
        || {
            ports.iter().all(|&p| {
                cluster_nodes(p)
                    .iter()
                    .any(|n| n.port == victim && n.has("slave") && n.master == heir_id)
            })
        },
    );
    c.wait_ok(Duration::from_secs(30));
}

#[test]
fn redis_kill_master_failover() {
    if let Some(b) = redis_kind() {
        kill_master_failover(&b);
    }
}

#[test]
fn node_kill_master_failover() {
    if let Some(b) = node_kind() {
        kill_master_failover(&b);
    }
}

// ------------------------------------------------------------------------------------------
// 4. CLUSTER FAILOVER [FORCE|TAKEOVER] under write load
// ------------------------------------------------------------------------------------------

fn manual_failover(bin: &Path, option: Option<&str>) {
    let spec = spec(bin, &[]);
    let c = start_cluster(&spec, 3, 1);
    let ports: Vec<u16> = c.nodes.iter().map(|p| p.port).collect();
    let topo = topology(ports[0]);
    let (master, replica) = (topo[1].0, topo[1].1[0]);
    let slots = own_slots(master);

    // The writer only writes that master's slots: every write goes through the failover.
    let writer = Writer::start(ports.clone(), "mf", Some(slots.clone()));
    writer.wait_more(1000, Duration::from_secs(30));
    let mut args = vec!["CLUSTER", "FAILOVER"];
    args.extend(option);
    let t_cmd = Instant::now();
    assert_eq!(text(&cmd(replica, &args)), "OK");
    let limit = Duration::from_secs(15);
    let promoted = explained(&c, 0, || {
        wait_until("the replica promoted with the slots", limit, || {
            info(replica, "replication").get("role").map(String::as_str) == Some("master")
                && owns(replica, &slots)
        })
    });
    let t_promoted = Instant::now();
    let demoted = wait_until("the old master following the new one", limit, || {
        replica_linked_to(master, replica)
    });
    let t_demoted = Instant::now();
    eprintln!(
        "CLUSTER FAILOVER {}: promoted after {promoted:?}, old master linked after {demoted:?}",
        option.unwrap_or("")
    );
    writer.wait_more(1000, Duration::from_secs(20));
    let log = writer.stop();
    eprintln!(
        "writer: {} acknowledged writes, errors {:?}",
        log.acks.len(),
        log.errors
    );
    assert!(
        log.acks.iter().filter(|a| a.at > t_promoted).count() >= 1000,
        "writes did not resume on the new master"
    );
    let missing = missing_acks(&ports, &log.acks);
    match option {
        // The master pauses writers and the replica catches up to its exact offset: nothing
        // acknowledged can be lost.
        None => assert!(
            missing.is_empty(),
            "{}",
            report_missing("acknowledged writes lost", &missing)
        ),
        // FORCE / TAKEOVER skip that handshake: the old master keeps acknowledging writes
        // until it learns of the new configuration, and those are lost when it full-syncs
        // from its successor (real Redis 7.0.15 lost 30-1300 writes here, acknowledged up to
        // ~100 ms after the promotion). Writes acknowledged more than SAFE_AGE before the
        // command, or after the old master was seen following the new one, must be there.
        Some(_) => {
            let (window, required): (Vec<_>, Vec<_>) =
                missing.iter().cloned().partition(|(k, _, _)| {
                    log.acks
                        .iter()
                        .find(|a| &a.key == k)
                        .is_some_and(|a| a.at + SAFE_AGE > t_cmd && a.at <= t_demoted)
                });
            if !window.is_empty() {
                let rel: Vec<f64> = window
                    .iter()
                    .filter_map(|(k, _, _)| log.acks.iter().find(|a| &a.key == k))
                    .map(|a| signed_secs(t_cmd, a.at))
                    .collect();
                let lo = rel.iter().cloned().fold(f64::MAX, f64::min);
                let hi = rel.iter().cloned().fold(f64::MIN, f64::max);
                eprintln!(
                    "{} (acknowledged {lo:+.3} s .. {hi:+.3} s from the command; promotion seen at \
                     {:+.3} s, demotion at {:+.3} s)",
                    report_missing("writes acknowledged around the failover were lost", &window),
                    t_promoted.duration_since(t_cmd).as_secs_f64(),
                    t_demoted.duration_since(t_cmd).as_secs_f64()
                );
            }
            assert!(
                required.is_empty(),
                "{}",
                report_missing("acknowledged writes lost", &required)
            );
        }
    }
    explained(&c, 0, || {
        wait_until("the old master in sync", Duration::from_secs(20), || {
            in_sync(replica, master)
        })
    });
    c.wait_ok(Duration::from_secs(30));
}

#[test]
fn redis_manual_failover() {
    if let Some(b) = redis_kind() {
        manual_failover(&b, None);
    }
}

#[test]
fn node_manual_failover() {
    if let Some(b) = node_kind() {
        manual_failover(&b, None);
    }
}

#[test]
fn redis_manual_failover_force() {
    if let Some(b) = redis_kind() {
        manual_failover(&b, Some("FORCE"));
    }
}

#[test]
fn node_manual_failover_force() {
    if let Some(b) = node_kind() {
        manual_failover(&b, Some("FORCE"));
    }
}

#[test]
fn redis_manual_failover_takeover() {
    if let Some(b) = redis_kind() {
        manual_failover(&b, Some("TAKEOVER"));
    }
}

#[test]
fn node_manual_failover_takeover() {
    if let Some(b) = node_kind() {
        manual_failover(&b, Some("TAKEOVER"));
    }
}

// ------------------------------------------------------------------------------------------
// 5. Replica migration
// ------------------------------------------------------------------------------------------

fn replica_migration(bin: &Path) {
    let spec = spec(bin, &["--cluster-migration-barrier", "1"]);
    let mut c = start_cluster(&spec, 3, 1);
    let seed = c.nodes[0].port;
    let topo = topology(seed);
    let (rich, orphan) = (topo[0].0, topo[1].0);
    let orphan_replica = topo[1].1[0];
    let rich_id = my_id(rich);

    // A second replica for `rich`.
    let extra = spawn_cluster_node(&spec);
    let (ok, out) = redis_cli(&[
        "--cluster",
        "add-node",
        &extra.addr(),
        &c.seed(),
        "--cluster-slave",
        "--cluster-master-id",
        &rich_id,
    ]);
    assert!(
        ok && out.contains("[OK] New node added correctly."),
        "{out}"
    );
    wait_until("the extra replica linked", Duration::from_secs(20), || {
        replica_linked_to(extra.port, rich)
    });
    let rich_replicas: Vec<u16> = vec![topo[0].1[0], extra.port];
    wait_until(
        "every node to see two replicas of the first master",
        Duration::from_secs(20),
        || topology(seed).first().is_some_and(|(_, r)| r.len() == 2),
    );
    c.nodes.push(extra);

    // Kill the orphan-to-be's only replica.
    let oi = c
        .nodes
        .iter()
        .position(|p| p.port == orphan_replica)
        .expect("replica is one of ours");
    kill9(&mut c.nodes[oi]);
    let migrated = wait_until(
        "a spare replica to migrate to the orphaned master",
        Duration::from_secs(40),
        || rich_replicas.iter().any(|&r| replica_linked_to(r, orphan)),
    );
    eprintln!(
        "replica migration to {orphan} after {migrated:?} (node timeout {NODE_TIMEOUT_MS} ms)"
    );
    let moved: Vec<u16> = rich_replicas
        .iter()
        .copied()
        .filter(|&r| replica_linked_to(r, orphan))
        .collect();
    assert_eq!(moved.len(), 1, "exactly one replica migrates: {moved:?}");
    let stayed: Vec<u16> = rich_replicas
        .iter()
        .copied()
        .filter(|&r| replica_linked_to(r, rich))
        .collect();
    assert_eq!(stayed.len(), 1, "the barrier keeps one replica: {stayed:?}");
    wait_until(
        "the migrated replica in sync",
        Duration::from_secs(20),
        || in_sync(orphan, moved[0]),
    );
    let orphan_id = my_id(orphan);
    wait_until("every live node to agree", Duration::from_secs(20), || {
        c.nodes
            .iter()
            .filter(|p| p.port != orphan_replica)
            .all(|p| {
                cluster_nodes(p.port)
                    .iter()
                    .any(|n| n.port == moved[0] && n.master == orphan_id)
            })
    });
}

#[test]
fn redis_replica_migration() {
    if let Some(b) = redis_kind() {
        replica_migration(&b);
    }
}

#[test]
fn node_replica_migration() {
    if let Some(b) = node_kind() {
        replica_migration(&b);
    }
}
