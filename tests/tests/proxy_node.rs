//! The slotgate proxy in front of a slotgate-node cluster (3 masters formed with stock
//! `redis-cli --cluster create`): the same legacy-client behaviour as over real Redis —
//! split multi-key commands, redis-benchmark's default set, pipelines, and resharding under
//! load with nothing lost.

use slotgate_tests::cluster::{redis_cli, start_proxy, Cluster};
use slotgate_tests::*;
use std::time::Duration;

fn node_cluster() -> Option<Cluster> {
    require_peer("redis-cli")?;
    Some(Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000))
}

#[test]
fn legacy_client_over_a_slotgate_node_cluster() {
    let Some(cluster) = node_cluster() else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut c = proxy.conn();
    let _: () = redis::cmd("MSET")
        .arg(&["key1", "a", "key2", "b", "key3", "c", "key4", "d"])
        .query(&mut c)
        .unwrap();
    let v: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["key1", "key2", "nosuch", "key3", "key4"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        v,
        vec![
            Some("a".into()),
            Some("b".into()),
            None,
            Some("c".into()),
            Some("d".into())
        ]
    );
    let n: i64 = redis::cmd("DEL")
        .arg(&["key1", "key3", "nosuch"])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("EXISTS")
        .arg(&["key1", "key2", "key4"])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 2);
    let r: redis::RedisResult<()> = redis::cmd("RENAME").arg("key2").arg("key4").query(&mut c);
    assert!(
        format!("{r:?}").to_lowercase().contains("crossslot"),
        "{r:?}"
    );
    // A pipeline across all shards keeps its order.
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("pk:{i}")).arg(i);
        p.cmd("GET").arg(format!("pk:{i}"));
    }
    let replies: Vec<redis::Value> = p.query(&mut c).unwrap();
    for i in 0..2000usize {
        assert_eq!(
            redis::from_redis_value::<i64>(&replies[i * 2 + 1]).unwrap(),
            i as i64
        );
    }
}

#[test]
fn redis_benchmark_through_the_proxy_over_slotgate_nodes() {
    let Some(cluster) = node_cluster() else {
        return;
    };
    let Some(bench) = require_peer("redis-benchmark") else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let out = std::process::Command::new(bench)
        .args([
            "-p",
            &proxy.port.to_string(),
            "-n",
            "2000",
            "-c",
            "10",
            "-r",
            "10000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "{text}");
    for t in [
        "SET", "GET", "INCR", "LPUSH", "SADD", "HSET", "ZADD", "MSET",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(t) && l.contains("requests per second")),
            "{t} missing in: {text}"
        );
    }
    assert!(!text.contains("ERR"), "{text}");
}

#[test]
fn reshard_under_load_through_the_proxy_loses_nothing() {
    let Some(cluster) = node_cluster() else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let port = proxy.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut i = 0u64;
        let mut errors = Vec::new();
        let t = std::time::Instant::now();
        while !s2.load(std::sync::atomic::Ordering::Relaxed)
            && t.elapsed() < Duration::from_secs(120)
        {
            let k = format!("rs:{i}");
            let r: redis::RedisResult<()> = redis::cmd("SET").arg(&k).arg(i).query(&mut con);
            let g: redis::RedisResult<Option<u64>> =
                r.and_then(|_| redis::cmd("GET").arg(&k).query(&mut con));
            match g {
                Ok(Some(v)) if v == i => i += 1,
                other => {
                    errors.push(format!("{k}: {other:?}"));
                    if errors.len() > 20 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        (i, errors)
    });
    std::thread::sleep(Duration::from_millis(500));
    let (_, id) = redis_cli(&["-p", &cluster.nodes[0].port.to_string(), "cluster", "myid"]);
    let (ok, out) = redis_cli(&[
        "--cluster",
        "reshard",
        &cluster.nodes[1].addr(),
        "--cluster-from",
        "all",
        "--cluster-to",
        id.trim(),
        "--cluster-slots",
        "120",
        "--cluster-yes",
    ]);
    assert!(ok, "reshard failed: {out}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, errors) = writer.join().unwrap();
    assert!(written > 50, "no progress");
    assert!(
        errors.is_empty(),
        "client saw errors during reshard: {errors:?}"
    );
    let mut c = proxy.conn();
    for i in (0..written).step_by(7) {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("rs:{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, Some(i), "rs:{i} lost");
    }
}
