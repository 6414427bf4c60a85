//! redis-py's `RedisCluster` (PyPI `redis`, which `.ci/run` installs) against a slotgate-node
//! cluster: 10,000 keys written and read back, and `redis-cli --cluster info` counts them.

use slotgate_tests::cluster::{redis_cli, Cluster};
use slotgate_tests::*;

const SCRIPT: &str = r#"
import sys
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True)
for i in range(10000):
    rc.set(f"py:{i}", str(i))
bad = [i for i in range(10000) if rc.get(f"py:{i}") != str(i)]
print("BAD", len(bad))
"#;

fn redis_py_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import redis.cluster"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn redis_py_cluster_client_writes_10000_keys() {
    let Some(_) = require_peer("redis-cli") else {
        return;
    };
    if !redis_py_available() {
        assert!(
            !in_ci(),
            "python3 module redis is required under CI=true (pip install redis)"
        );
        eprintln!("SKIPPED: python3 module redis not installed (pip install redis)");
        return;
    }
    let cluster = Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000);
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &cluster.nodes[0].port.to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("BAD 0"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, info) = redis_cli(&["--cluster", "info", &cluster.seed()]);
    assert!(
        ok && info.contains("[OK] 10000 keys in 3 masters."),
        "{info}"
    );
}
