//! Every proxy feature of issue 8 across a failover: a master is killed (SIGKILL) while a
//! transaction is open on it, a client is blocked on one of its keys, subscribers hold a
//! channel and a shard channel there (the proxy's subscription link lives on it), a script is
//! loaded and WAIT/replica reads/CONFIG are in use; once its replica has taken over, each
//! feature must work again without the client reconnecting. Over a real Redis 7 cluster and
//! over a slotgate-node cluster.

#[path = "features/common.rs"]
mod common;

use common::*;
use slotgate_tests::cluster::start_proxy;
use std::time::Instant;

fn run(kind: Kind) {
    let Some(mut cluster) = cluster(kind, 3, 1) else {
        return;
    };
    let t = Instant::now();
    let proxy = start_proxy(&cluster.seed(), &["--refresh-interval-secs", "1"]);
    // The victim: the first master in address order, where the proxy keeps the links of
    // SUBSCRIBE/PSUBSCRIBE (and sends PUBLISH).
    let via0 = cluster.nodes[0].port;
    let mut masters = slots(via0);
    masters.sort_by_key(|(_, _, m, _)| format!("127.0.0.1:{m}"));
    let victim = masters[0].2;
    let via = masters[1].2;
    let tag = tag_on(via, victim, "v");
    let slot = slotgate_protocol::key_slot(tag.as_bytes());
    let inflight = InFlight::start(kind, proxy.port, &tag);
    let new_owner = kill_and_fail_over(&mut cluster, victim, via, slot);
    println!(
        "{kind:?}: {victim} replaced by {new_owner} after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    inflight.check(|e| {
        e.starts_with(b"EXECABORT") || e.starts_with(b"ERR slotgate: transaction connection lost")
    });
    println!(
        "{kind:?}: failover checked in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn features_survive_failover_redis_cluster() {
    run(Kind::Redis);
}

#[test]
fn features_survive_failover_slotgate_node_cluster() {
    run(Kind::Node);
}
