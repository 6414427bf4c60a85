//! Every proxy feature of issue 8 across a reshard: the slot of the hash tag in use moves to
//! another master (CLUSTER SETSLOT + MIGRATE, as `redis-cli --cluster reshard` does) while a
//! transaction is open on it, a client is blocked on one of its keys, subscribers hold a
//! shard channel in it, a script is loaded and WAIT/replica reads/CONFIG are in use; each
//! feature must then work on the new owner without the client reconnecting. Over a real
//! Redis 7 cluster and over a slotgate-node cluster.

#[path = "features/common.rs"]
mod common;

use common::*;
use slotgate_tests::cluster::start_proxy;
use std::time::Instant;

fn run(kind: Kind) {
    let Some(cluster) = cluster(kind, 3, 1) else {
        return;
    };
    let t = Instant::now();
    let proxy = start_proxy(&cluster.seed(), &["--refresh-interval-secs", "1"]);
    let via = cluster.nodes[0].port;
    let masters = slots(via);
    let (src, dst) = (masters[0].2, masters[1].2);
    let tag = tag_on(via, src, "r");
    let slot = slotgate_protocol::key_slot(tag.as_bytes());
    let inflight = InFlight::start(kind, proxy.port, &tag);
    migrate_slot(&cluster, slot, src, dst);
    println!(
        "{kind:?}: slot {slot} moved {src} -> {dst} after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    inflight
        .check(|e| e.starts_with(b"ERR slotgate: slot") && e.ends_with(b"retry the transaction"));
    println!(
        "{kind:?}: reshard checked in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn features_survive_reshard_redis_cluster() {
    run(Kind::Redis);
}

#[test]
fn features_survive_reshard_slotgate_node_cluster() {
    run(Kind::Node);
}
