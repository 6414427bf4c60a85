//! `redis-cli --cluster import` into a slotgate-node cluster: keys of every type, with TTLs,
//! from a standalone slotgate-node and from a standalone redis-server (whose MIGRATE sends
//! real Redis DUMP payloads as plain `RESTORE`). Covers `--cluster-copy` (the source keeps
//! its keys), the BUSYKEY failure when a key exists, `--cluster-replace`, and a plain move
//! (the source ends empty).

use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::*;

/// Keys of each type in the source.
const N: u64 = 300;

/// Writes N keys of each type into a standalone server; `tag` goes into every value.
fn fill_source(p: &Proc, tag: &str) {
    let mut c = p.conn();
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("SET")
            .arg(format!("str:{i}"))
            .arg(format!("{tag}{i}"))
            .ignore();
        pipe.cmd("DEL").arg(format!("list:{i}")).ignore();
        pipe.cmd("RPUSH")
            .arg(format!("list:{i}"))
            .arg(format!("{tag}{i}"))
            .arg("b")
            .ignore();
        pipe.cmd("HSET")
            .arg(format!("hash:{i}"))
            .arg("f")
            .arg(format!("{tag}{i}"))
            .ignore();
        pipe.cmd("SADD")
            .arg(format!("set:{i}"))
            .arg(format!("{tag}{i}"))
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("zset:{i}"))
            .arg(i)
            .arg(format!("{tag}{i}"))
            .ignore();
        pipe.cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg(format!("{tag}{i}"))
            .arg("EX")
            .arg(3600)
            .ignore();
    }
    pipe.query::<()>(&mut c).expect("fill source");
}

fn dbsize(p: &Proc) -> u64 {
    redis::cmd("DBSIZE").query(&mut p.conn()).expect("DBSIZE")
}

/// Every key written by `fill_source(.., tag)` is in the cluster with its value and TTL.
fn verify_cluster(c: &Cluster, tag: &str) {
    let seeds: Vec<String> = c.nodes.iter().map(|p| p.url()).collect();
    let mut cc = redis::cluster::ClusterClient::new(seeds)
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection");
    for i in 0..N {
        let want = format!("{tag}{i}");
        let s: Option<String> = redis::cmd("GET")
            .arg(format!("str:{i}"))
            .query(&mut cc)
            .expect("GET");
        assert_eq!(s.as_deref(), Some(want.as_str()), "str:{i}");
        let l: Vec<String> = redis::cmd("LRANGE")
            .arg(format!("list:{i}"))
            .arg(0)
            .arg(-1)
            .query(&mut cc)
            .expect("LRANGE");
        assert_eq!(l, vec![want.clone(), "b".to_string()], "list:{i}");
        let h: Option<String> = redis::cmd("HGET")
            .arg(format!("hash:{i}"))
            .arg("f")
            .query(&mut cc)
            .expect("HGET");
        assert_eq!(h.as_deref(), Some(want.as_str()), "hash:{i}");
        let m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("set:{i}"))
            .query(&mut cc)
            .expect("SMEMBERS");
        assert!(m.contains(&want), "set:{i} = {m:?}");
        let z: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("zset:{i}"))
            .arg(&want)
            .query(&mut cc)
            .expect("ZSCORE");
        assert_eq!(z, Some(i as f64), "zset:{i}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("ttl:{i}"))
            .query(&mut cc)
            .expect("TTL");
        assert!((3000..=3600).contains(&ttl), "ttl:{i} has TTL {ttl}");
    }
}

/// Keys in all masters, from `redis-cli --cluster info`.
fn cluster_keys(c: &Cluster) -> String {
    let (_, out) = redis_cli(&["--cluster", "info", &c.seed()]);
    out
}

fn import(c: &Cluster, from: &Proc, opts: &[&str]) -> (bool, String) {
    let (seed, addr) = (c.seed(), from.addr());
    let mut args = vec!["--cluster", "import", &seed, "--cluster-from", &addr];
    args.extend_from_slice(opts);
    redis_cli(&args)
}

#[test]
fn import_from_standalone_slotgate_node_copy_busykey_replace() {
    let Some(_) = require_peer("redis-cli") else {
        return;
    };
    let c = Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000);
    let src = start_node(&[]);
    fill_source(&src, "a");
    let total = 6 * N;
    assert_eq!(dbsize(&src), total);

    // --cluster-copy: the keys arrive, the source keeps them.
    let (ok, out) = import(&c, &src, &["--cluster-copy"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("Importing {total} keys from DB 0")),
        "{out}"
    );
    verify_cluster(&c, "a");
    assert_eq!(dbsize(&src), total);
    assert!(
        cluster_keys(&c).contains(&format!("[OK] {total} keys in 3 masters.")),
        "{}",
        cluster_keys(&c)
    );

    // Again without REPLACE: the target refuses the existing key, redis-cli stops.
    fill_source(&src, "b");
    let (ok, out) = import(&c, &src, &["--cluster-copy"]);
    assert!(!ok && out.contains("BUSYKEY"), "{out}");

    // --cluster-replace (a move, no copy): new values win, the source ends empty.
    let (ok, out) = import(&c, &src, &["--cluster-replace"]);
    assert!(ok, "{out}");
    verify_cluster(&c, "b");
    assert_eq!(dbsize(&src), 0);
    assert!(
        cluster_keys(&c).contains(&format!("[OK] {total} keys in 3 masters.")),
        "{}",
        cluster_keys(&c)
    );
}

#[test]
fn import_from_standalone_redis_server() {
    let Some(_) = require_peer("redis-cli") else {
        return;
    };
    let Some(src) = start_redis(&[]) else {
        return;
    };
    let c = Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000);
    fill_source(&src, "r");
    let total = 6 * N;
    // A plain import moves the keys: RESTORE of real Redis payloads on slotgate-node.
    let (ok, out) = import(&c, &src, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("Importing {total} keys from DB 0")),
        "{out}"
    );
    verify_cluster(&c, "r");
    assert_eq!(dbsize(&src), 0);
    assert!(
        cluster_keys(&c).contains(&format!("[OK] {total} keys in 3 masters.")),
        "{}",
        cluster_keys(&c)
    );
    // A cluster node is refused as the source.
    let (ok, out) = redis_cli(&[
        "--cluster",
        "import",
        &c.seed(),
        "--cluster-from",
        &c.nodes[1].addr(),
    ]);
    assert!(!ok && out.contains("should not be a cluster node"), "{out}");
}
