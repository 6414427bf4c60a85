//! Stock cluster tools against a slotgate-node cluster: `redis-benchmark --cluster`,
//! `redis-cli --cluster call`, `--cluster info` and `--cluster set-timeout`.

use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::*;

#[test]
fn redis_benchmark_cluster_mode_and_cluster_call_info_set_timeout() {
    let Some(_) = require_peer("redis-cli") else {
        return;
    };
    let Some(bench) = require_peer("redis-benchmark") else {
        return;
    };
    let cluster = Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000);
    let seed = cluster.nodes[0].port.to_string();
    let out = std::process::Command::new(bench)
        .args([
            "--cluster",
            "-p",
            &seed,
            "-t",
            "set,get",
            "-n",
            "3000",
            "-c",
            "10",
            "-r",
            "1000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    for t in ["SET", "GET"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(t) && l.contains("requests per second")),
            "{t} missing: {text}\n{err}"
        );
    }
    assert!(
        !text.contains("ERR") && !err.contains("ERR"),
        "{text}\n{err}"
    );
    // --cluster call runs a command on every node.
    let (ok, out) = redis_cli(&["--cluster", "call", &cluster.seed(), "PING"]);
    assert!(ok && out.matches("PONG").count() >= 3, "{out}");
    // --cluster info counts the keys the benchmark wrote.
    let (ok, out) = redis_cli(&["--cluster", "info", &cluster.seed()]);
    assert!(ok && out.contains("keys in 3 masters"), "{out}");
    // --cluster set-timeout: CONFIG SET + CONFIG REWRITE on every node.
    let (ok, out) = redis_cli(&["--cluster", "set-timeout", &cluster.seed(), "4000"]);
    assert!(ok, "{out}");
    let (_, t) = redis_cli(&["-p", &seed, "config", "get", "cluster-node-timeout"]);
    assert!(t.contains("4000"), "{t}");
}
