//! The slotgate proxy in front of a real Redis 7 cluster (3 masters + 3 replicas started with
//! redis-server and formed with `redis-cli --cluster create`): legacy clients, redis-benchmark,
//! a differential test against a standalone redis-server, pipeline ordering, resharding and
//! failover under load, a stalled (SIGSTOPped) master, bad input, and a Prometheus scrape.

use slotgate_tests::cluster::{redis_cli, start_proxy, Cluster};
use slotgate_tests::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn q(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<redis::Value>(con) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!(
            "ERR {} {}",
            e.code().unwrap_or(""),
            e.detail().unwrap_or_default()
        ),
    }
}

/// The differential script: replies must be equal on a standalone redis-server and through
/// the proxy. Keys deliberately span many slots.
const SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["ECHO", "hello"],
    &["SET", "foo", "bar"],
    &["GET", "foo"],
    &["GET", "missing"],
    &["MSET", "key1", "a", "key2", "b", "key3", "c", "key4", "d"],
    &["MGET", "key1", "key2", "nosuch", "key3", "key4", "foo"],
    &["EXISTS", "key1", "key2", "nosuch", "key1"],
    &["DEL", "key1", "key3", "nosuch"],
    &["MGET", "key1", "key2", "key3", "key4"],
    &["TOUCH", "key2", "key4", "x"],
    &["UNLINK", "key2", "key4"],
    &["INCR", "counter"],
    &["INCRBY", "counter", "41"],
    &["APPEND", "foo", "baz"],
    &["STRLEN", "foo"],
    &["GETRANGE", "foo", "1", "4"],
    &["HSET", "h", "f1", "v1", "f2", "v2"],
    &["HGET", "h", "f2"],
    &["HGETALL", "h"],
    &["LPUSH", "l", "a", "b", "c"],
    &["LRANGE", "l", "0", "-1"],
    &["RPOP", "l"],
    &["SADD", "s", "1", "2", "3"],
    &["SCARD", "s"],
    &["ZADD", "z", "1", "a", "2", "b"],
    &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
    &["EXPIRE", "foo", "100"],
    &["TTL", "foo"],
    &["TYPE", "h"],
    &["GET", "h"],
    &["SET", "{tag}a", "1"],
    &["RENAME", "{tag}a", "{tag}b"],
    &["GET", "{tag}b"],
    &["GET"],
    &["NOSUCHCOMMAND", "x"],
    &["SELECT", "0"],
    &["MGET", "{u}1", "{u}2"],
];

#[test]
fn legacy_client_differential_against_standalone() {
    let Some(cluster) = Cluster::redis(3, 1, 3000) else {
        return;
    };
    let Some(single) = start_redis(&[]) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut a = single.conn();
    let mut b = proxy.conn();
    for cmd in SCRIPT {
        let ra = q(&mut a, cmd);
        let rb = q(&mut b, cmd);
        assert_eq!(ra, rb, "reply differs for {cmd:?}");
    }
    // DBSIZE through the proxy sums the masters.
    assert_eq!(q(&mut b, &["DBSIZE"]), q(&mut a, &["DBSIZE"]));
    // Cross-slot atomic commands are refused, never half-applied.
    let r = q(&mut b, &["MSETNX", "key1", "x", "key2", "y"]);
    assert!(r.contains("CROSSSLOT"), "{r}");
    assert_eq!(q(&mut b, &["EXISTS", "key1", "key2"]), "int(0)");
    let r = q(&mut b, &["RENAME", "key1", "key2"]);
    assert!(r.contains("CROSSSLOT"), "{r}");
}

#[test]
fn redis_benchmark_default_set_has_no_errors() {
    let Some(cluster) = Cluster::redis(3, 1, 3000) else {
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    for t in [
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "LRANGE_100",
        "MSET",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(t) && l.contains("requests per second")),
            "{t} missing in: {text}"
        );
    }
    assert!(
        !text.contains("ERR") && !err.contains("ERR"),
        "{text}\n{err}"
    );
    // Verify MSET (10 keys, many slots) really wrote through the proxy.
    let mut c = proxy.conn();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(n > 0);
}

#[test]
fn pipeline_of_10000_mixed_commands_keeps_order() {
    let Some(cluster) = Cluster::redis(3, 1, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut c = proxy.conn();
    let mut p = redis::pipe();
    for i in 0..2500 {
        let k = format!("pk:{i}");
        p.cmd("SET").arg(&k).arg(i);
        p.cmd("INCR").arg(&k);
        p.cmd("GET").arg(&k);
        p.cmd("MGET")
            .arg(&k)
            .arg(format!("pk:{}", i + 1))
            .arg("pk:0");
    }
    let replies: Vec<redis::Value> = p.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), 10000);
    for i in 0..2500usize {
        let get = &replies[i * 4 + 2];
        assert_eq!(
            redis::from_redis_value::<i64>(get).unwrap(),
            i as i64 + 1,
            "GET reply out of order at {i}"
        );
        let mget: Vec<Option<i64>> = redis::from_redis_value(&replies[i * 4 + 3]).unwrap();
        assert_eq!(mget[0], Some(i as i64 + 1));
        assert_eq!(mget[1], None);
    }
}

#[test]
fn bad_input_is_isolated_to_its_client() {
    let Some(cluster) = Cluster::redis(3, 1, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut good = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut good)
        .unwrap();
    let mut bad = Raw::connect(proxy.port);
    bad.send(b"*1\r\n$-3\r\n");
    match bad.read() {
        Some(slotgate_protocol::Frame::Error(e)) => {
            assert_eq!(&e[..], b"ERR Protocol error: invalid bulk length")
        }
        other => panic!("expected protocol error, got {other:?}"),
    }
    assert!(bad.closed());
    let mut half = Raw::connect(proxy.port);
    half.send(b"*2\r\n$3\r\nGET\r\n$10\r\nabc");
    drop(half);
    let mut unknown = Raw::connect(proxy.port);
    match unknown.cmd(&["FOO", "bar"]) {
        slotgate_protocol::Frame::Error(e) => {
            assert!(e.starts_with(b"ERR unknown command 'FOO'"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    let v: String = redis::cmd("GET").arg("k").query(&mut good).unwrap();
    assert_eq!(v, "v");
}

/// A client thread that writes unique keys and reads each back through the proxy, counting
/// errors and wrong values, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_err: Arc<parking_lot_free::Slot>,
    handle: Option<std::thread::JoinHandle<()>>,
}

mod parking_lot_free {
    /// A tiny holder for the first error text and the error time window.
    #[derive(Default)]
    pub struct Slot(
        pub  std::sync::Mutex<(
            Option<String>,
            Option<std::time::Instant>,
            Option<std::time::Instant>,
        )>,
    );
}

impl Load {
    fn start(port: u16, prefix: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let first_err = Arc::new(parking_lot_free::Slot::default());
        let (s, w, e, f) = (
            stop.clone(),
            written.clone(),
            errors.clone(),
            first_err.clone(),
        );
        let handle = std::thread::spawn(move || {
            let url = format!("redis://127.0.0.1:{port}/");
            let client = redis::Client::open(url).unwrap();
            let mut con = client.get_connection().unwrap();
            let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
            let started = Instant::now();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(120)
                && i < 2_000_000
            {
                let k = format!("{prefix}:{i}");
                let r: redis::RedisResult<()> = redis::cmd("SET").arg(&k).arg(i).query(&mut con);
                let r2: redis::RedisResult<Option<u64>> = match r {
                    Ok(()) => redis::cmd("GET").arg(&k).query(&mut con),
                    Err(err) => Err(err),
                };
                match r2 {
                    Ok(Some(v)) if v == i => {
                        w.store(i + 1, Ordering::Relaxed);
                        i += 1;
                    }
                    other => {
                        e.fetch_add(1, Ordering::Relaxed);
                        let mut g = f.0.lock().unwrap();
                        if g.0.is_none() {
                            g.0 = Some(format!("{k}: {other:?}"));
                            g.1 = Some(Instant::now());
                        }
                        g.2 = Some(Instant::now());
                        std::thread::sleep(Duration::from_millis(20));
                        if redis::ConnectionLike::check_connection(&mut con) {
                            continue;
                        }
                        if let Ok(c) = client.get_connection() {
                            con = c;
                        }
                    }
                }
            }
        });
        Load {
            stop,
            written,
            errors,
            first_err,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u64, u64, String, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let g = self.first_err.0.lock().unwrap();
        let window = match (g.1, g.2) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        };
        (
            self.written.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            g.0.clone().unwrap_or_default(),
            window,
        )
    }
}

fn check_all_present(port: u16, prefix: &str, n: u64) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 500).min(n);
        let keys: Vec<String> = (i..end).map(|j| format!("{prefix}:{j}")).collect();
        let vals: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for (j, v) in (i..end).zip(vals) {
            assert_eq!(v, Some(j), "key {prefix}:{j} lost or wrong");
        }
        i = end;
    }
}

#[test]
fn reshard_under_load_loses_nothing() {
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let load = Load::start(proxy.port, "rs");
    std::thread::sleep(Duration::from_millis(500));
    let (_, nodes) = redis_cli(&["-p", &cluster.nodes[0].port.to_string(), "cluster", "myid"]);
    let to = nodes.trim().to_string();
    let (ok, out) = redis_cli(&[
        "--cluster",
        "reshard",
        &cluster.nodes[1].addr(),
        "--cluster-from",
        "all",
        "--cluster-to",
        &to,
        "--cluster-slots",
        "4096",
        "--cluster-yes",
        "--cluster-pipeline",
        "100",
    ]);
    assert!(ok, "reshard failed: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let (written, errors, first, _) = load.finish();
    assert!(written > 100, "load made no progress");
    assert_eq!(
        errors, 0,
        "client saw errors during reshard, first: {first}"
    );
    check_all_present(proxy.port, "rs", written);
}

#[test]
fn master_killed_traffic_resumes_after_failover() {
    let Some(cluster) = Cluster::redis(3, 1, 2000) else {
        return;
    };
    let mut cluster = cluster;
    let proxy = start_proxy(&cluster.seed(), &["--refresh-interval-secs", "1"]);
    let load = Load::start(proxy.port, "fo");
    std::thread::sleep(Duration::from_millis(700));
    // Kill the master serving the load's next keys' slots (any master will do: keys spread).
    let victim = 1;
    let victim_port = cluster.nodes[victim].port;
    let _ = cluster.nodes[victim].child.kill();
    let killed_at = Instant::now();
    let seed_port = cluster.nodes[0].port;
    // Wait for a replica to take over: the dead master is flagged fail and the state is ok.
    let mut recovered = false;
    while killed_at.elapsed() < Duration::from_secs(30) {
        let (_, info) = redis_cli(&["-p", &seed_port.to_string(), "cluster", "info"]);
        let (_, nodes) = redis_cli(&["-p", &seed_port.to_string(), "cluster", "nodes"]);
        let dead_failed = nodes.lines().any(|l| {
            l.contains(&format!(":{victim_port}@")) && l.contains("fail") && !l.contains("fail?")
        });
        if info.contains("cluster_state:ok") && dead_failed {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(recovered, "cluster did not fail over");
    println!(
        "cluster failed over {:.2}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    // Traffic must resume without restarting the proxy.
    let before = load.written.load(Ordering::Relaxed);
    let t = Instant::now();
    while load.written.load(Ordering::Relaxed) < before + 200
        && t.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (written, errors, first, window) = load.finish();
    assert!(
        written >= before + 200,
        "traffic did not resume after failover (first error: {first}); proxy log:\n{}",
        proxy.log()
    );
    println!(
        "failover: {errors} client errors over {:.2}s (first: {first}); {written} keys written",
        window.as_secs_f64()
    );
    // Every acknowledged key written after the failover is readable.
    let mut con = proxy.conn();
    let v: Option<u64> = redis::cmd("GET")
        .arg(format!("fo:{}", written - 1))
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Some(written - 1));
}

#[test]
fn prometheus_scrapes_proxy_metrics() {
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    let Some(prom) = require_peer("prometheus") else {
        return;
    };
    let mport = free_port();
    let proxy = start_proxy(
        &cluster.seed(),
        &["--metrics", &format!("127.0.0.1:{mport}")],
    );
    let mut c = proxy.conn();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("m{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let _: Vec<Option<String>> = redis::cmd("MGET")
        .arg("m1")
        .arg("m2")
        .arg("m3")
        .query(&mut c)
        .unwrap();
    // Our own scrape first: the names we promise are there.
    let body = http_get(mport, "/metrics");
    for name in [
        "slotgate_commands_total",
        "slotgate_command_duration_seconds",
        "slotgate_backend_requests_total",
        "slotgate_client_connections",
        "slotgate_slotmap_version",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    // The latency histograms count every command once, in cumulative buckets ending at +Inf.
    let value = |line: &str| -> Option<u64> {
        body.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("slotgate_command_duration_seconds_count{command=\"set\"}"),
        Some(50),
        "{body}"
    );
    assert_eq!(
        value("slotgate_command_duration_seconds_bucket{command=\"set\",le=\"+Inf\"}"),
        Some(50),
        "{body}"
    );
    assert_eq!(
        value("slotgate_commands_total{command=\"set\",outcome=\"ok\"}"),
        Some(50),
        "{body}"
    );
    let buckets: Vec<u64> = body
        .lines()
        .filter(|l| l.starts_with("slotgate_command_duration_seconds_bucket{command=\"set\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(buckets.len(), 17, "{body}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // Every backend request got a round-trip observation (MGET split over the masters).
    let backend: u64 = body
        .lines()
        .filter(|l| l.starts_with("slotgate_backend_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let requests: u64 = body
        .lines()
        .filter(|l| l.starts_with("slotgate_backend_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        backend >= 51 && backend == requests,
        "{backend} vs {requests}\n{body}"
    );
    assert!(http_get_opt(mport, "/nope").is_some_and(|r| r.starts_with("HTTP/1.1 404")));
    // Then a real Prometheus scraping it.
    let dir = std::env::temp_dir().join(format!("slotgate-prom-{}", mport));
    let _ = std::fs::create_dir_all(&dir);
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: slotgate\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let pport = free_port();
    let mut child = std::process::Command::new(prom)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus");
    let t = Instant::now();
    let mut up = false;
    while t.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(500));
        let r = http_get_opt(pport, "/api/v1/query?query=up%7Bjob%3D%22slotgate%22%7D");
        if let Some(r) = r {
            if r.contains("\"value\"") && r.contains(",\"1\"]") {
                up = true;
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(up, "prometheus did not report the proxy target up");
}

fn http_get_opt(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get(port: u16, path: &str) -> String {
    http_get_opt(port, path).unwrap_or_default()
}

#[test]
fn proxy_local_commands_scan_resp3_and_auth() {
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &["--requirepass", "pw"]);
    let mut raw = Raw::connect(proxy.port);
    use slotgate_protocol::Frame;
    assert_eq!(
        raw.cmd(&["GET", "x"]),
        Frame::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        raw.cmd(&["AUTH", "nope"]),
        Frame::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(raw.cmd(&["AUTH", "pw"]), Frame::Simple("OK".into()));
    // Write 300 keys across all masters, then SCAN must return each exactly once.
    for i in 0..300 {
        let k = format!("scan:{i}");
        assert_eq!(raw.cmd(&["SET", &k, "v"]), Frame::Simple("OK".into()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "SCAN does not terminate");
        let Frame::Array(parts) = raw.cmd(&["SCAN", &cursor, "COUNT", "50"]) else {
            panic!("bad SCAN reply")
        };
        let (Frame::Bulk(c), Frame::Array(keys)) = (&parts[0], &parts[1]) else {
            panic!("bad SCAN reply shape")
        };
        for k in keys {
            if let Frame::Bulk(k) = k {
                assert!(seen.insert(k.clone()), "SCAN returned {k:?} twice");
            }
        }
        cursor = String::from_utf8_lossy(c).into_owned();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 300);
    let Frame::Array(keys) = raw.cmd(&["KEYS", "scan:*"]) else {
        panic!()
    };
    assert_eq!(keys.len(), 300);
    assert_eq!(raw.cmd(&["DBSIZE"]), Frame::Integer(300));
    assert!(matches!(raw.cmd(&["RANDOMKEY"]), Frame::Bulk(_)));
    // CLUSTER SLOTS presents the proxy as one node owning every slot.
    let Frame::Array(slots) = raw.cmd(&["CLUSTER", "SLOTS"]) else {
        panic!()
    };
    let Frame::Array(range) = &slots[0] else {
        panic!()
    };
    assert_eq!(range[0], Frame::Integer(0));
    assert_eq!(range[1], Frame::Integer(16383));
    assert_eq!(
        raw.cmd(&["CLUSTER", "KEYSLOT", "foo"]),
        Frame::Integer(12182)
    );
    // RESP3: HELLO 3, then a hash comes back as a map.
    assert_eq!(raw.cmd(&["HSET", "h3", "a", "1"]), Frame::Integer(1));
    let Frame::Map(hello) = raw.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3 must reply a map")
    };
    assert!(hello.contains(&(Frame::bulk("proto"), Frame::Integer(3))));
    assert_eq!(
        raw.cmd(&["HGETALL", "h3"]),
        Frame::Map(vec![(Frame::bulk("a"), Frame::bulk("1"))])
    );
    assert_eq!(raw.cmd(&["GET", "nosuchkey"]), Frame::Null);
    // Unsupported commands answer clearly and keep the connection.
    let Frame::Error(e) = raw.cmd(&["MONITOR"]) else {
        panic!()
    };
    assert!(e.starts_with(b"ERR slotgate:"), "{e:?}");
    let Frame::Error(e) = raw.cmd(&["SELECT", "1"]) else {
        panic!()
    };
    assert_eq!(&e[..], b"ERR SELECT is not allowed in cluster mode");
    assert_eq!(raw.cmd(&["PING"]), Frame::Simple("PONG".into()));
    // INFO keyspace sums the masters.
    let info = raw.cmd(&["INFO", "keyspace"]);
    let text = String::from_utf8_lossy(info.as_bytes().unwrap_or_default()).into_owned();
    assert!(text.contains("db0:keys=301"), "{text}");
}

#[test]
fn transactions_blocking_and_pubsub_through_the_proxy() {
    use slotgate_protocol::Frame;
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut c = Raw::connect(proxy.port);
    // A transaction on one slot.
    assert_eq!(c.cmd(&["MULTI"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["SET", "{t}a", "1"]), Frame::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["INCR", "{t}a"]), Frame::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Frame::Array(vec![
            Frame::Simple("OK".into()),
            Frame::Integer(2),
            Frame::Simple("PONG".into())
        ])
    );
    // A later key in another slot: CROSSSLOT inside, EXECABORT at EXEC, nothing applied.
    assert_eq!(c.cmd(&["MULTI"]), Frame::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["SET", "{t}a", "changed"]),
        Frame::Simple("QUEUED".into())
    );
    assert_eq!(
        c.cmd(&["SET", "other", "x"]),
        Frame::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        Frame::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(c.cmd(&["GET", "{t}a"]), Frame::Bulk("2".into()));
    // WATCH: a write from another client makes EXEC fail with a null array.
    let mut other = Raw::connect(proxy.port);
    assert_eq!(c.cmd(&["WATCH", "{t}a"]), Frame::Simple("OK".into()));
    assert_eq!(other.cmd(&["SET", "{t}a", "3"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["MULTI"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["SET", "{t}a", "4"]), Frame::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]), Frame::Null);
    assert_eq!(c.cmd(&["GET", "{t}a"]), Frame::Bulk("3".into()));
    assert_eq!(
        c.cmd(&["DISCARD"]),
        Frame::Error("ERR DISCARD without MULTI".into())
    );
    // Blocking: BLPOP waits on its own connection; other clients are not blocked meanwhile.
    let port = proxy.port;
    let waiter = std::thread::spawn(move || {
        let mut b = Raw::connect(port);
        b.cmd(&["BLPOP", "queue", "0"])
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(other.cmd(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(other.cmd(&["RPUSH", "queue", "job1"]), Frame::Integer(1));
    let got = waiter.join().unwrap();
    assert_eq!(
        got,
        Frame::Array(vec![Frame::bulk("queue"), Frame::bulk("job1")])
    );
    assert_eq!(c.cmd(&["BLPOP", "empty", "0.1"]), Frame::Null);
    // Pub/sub: a subscriber gets 1,000 messages in order, none lost.
    let mut sub = Raw::connect(proxy.port);
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "news"]),
        Frame::Array(vec![
            Frame::bulk("subscribe"),
            Frame::bulk("news"),
            Frame::Integer(1)
        ])
    );
    let Frame::Error(e) = sub.cmd(&["GET", "x"]) else {
        panic!("GET in subscribe mode must fail")
    };
    assert!(e.starts_with(b"ERR Can't execute 'get'"), "{e:?}");
    for i in 0..1000 {
        let r = other.cmd(&["PUBLISH", "news", &format!("m{i}")]);
        assert_eq!(r, Frame::Integer(1), "publish {i}");
    }
    for i in 0..1000 {
        let f = sub.read().expect("message");
        assert_eq!(
            f,
            Frame::Array(vec![
                Frame::bulk("message"),
                Frame::bulk("news"),
                Frame::bulk(format!("m{i}"))
            ])
        );
    }
    assert_eq!(
        sub.cmd(&["UNSUBSCRIBE"]),
        Frame::Array(vec![
            Frame::bulk("unsubscribe"),
            Frame::bulk("news"),
            Frame::Integer(0)
        ])
    );
    // Back in normal mode.
    assert_eq!(sub.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn config_slowlog_wait_replica_reads_sighup_and_drain() {
    use slotgate_protocol::Frame;
    let Some(cluster) = Cluster::redis(3, 1, 3000) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("slotgate-cfg-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_file = dir.join("slotgate.toml");
    std::fs::write(
        &cfg_file,
        "maxclients = 500\nread_from = \"prefer-replica\"\n",
    )
    .unwrap();
    let mut proxy = start_proxy(&cluster.seed(), &["--config", cfg_file.to_str().unwrap()]);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "maxclients"]),
        Frame::Array(vec![Frame::bulk("maxclients"), Frame::bulk("500")])
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "read-from"]),
        Frame::Array(vec![
            Frame::bulk("read-from"),
            Frame::bulk("prefer-replica")
        ])
    );
    // Replica reads: a write, WAIT for the replica, then the read (served by the replica).
    assert_eq!(c.cmd(&["SET", "rr", "1"]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["WAIT", "1", "2000"]), Frame::Integer(1));
    assert_eq!(c.cmd(&["GET", "rr"]), Frame::Bulk("1".into()));
    // SLOWLOG: everything is slow at threshold 0.
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        Frame::Simple("OK".into())
    );
    // The newest slow-log entry: (its arguments, its client address).
    let newest = |c: &mut Raw| -> (Frame, Frame) {
        let Frame::Array(entries) = c.cmd(&["SLOWLOG", "GET", "1"]) else {
            panic!()
        };
        let Frame::Array(e) = &entries[0] else {
            panic!()
        };
        (e[3].clone(), e[6].clone())
    };
    let set = |k: &'static str, v: &'static str| {
        Frame::Array(vec![Frame::bulk("SET"), Frame::bulk(k), Frame::bulk(v)])
    };
    assert_eq!(c.cmd(&["SET", "slow", "x"]), Frame::Simple("OK".into()));
    let (args, addr) = newest(&mut c);
    assert_eq!(args, set("slow", "x"));
    assert!(
        matches!(&addr, Frame::Bulk(n) if n.starts_with(b"127.0.0.1:")),
        "{addr:?}"
    );
    // An inline request is logged with its arguments too.
    c.send(b"SET slowinline y\r\n");
    assert_eq!(c.read(), Some(Frame::Simple("OK".into())));
    assert_eq!(newest(&mut c).0, set("slowinline", "y"));
    assert_eq!(c.cmd(&["SLOWLOG", "RESET"]), Frame::Simple("OK".into()));
    let Frame::Error(err) = c.cmd(&["CONFIG", "SET", "nosuch", "1"]) else {
        panic!()
    };
    assert!(err.starts_with(b"ERR Unknown option"));
    // CONFIG SET requirepass applies to new AUTHs without dropping this client.
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "requirepass", "pw"]),
        Frame::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
    let mut fresh = Raw::connect(proxy.port);
    assert_eq!(
        fresh.cmd(&["GET", "rr"]),
        Frame::Error("NOAUTH Authentication required.".into())
    );
    // SIGHUP re-reads the file (and resets what CONFIG SET changed to the file's values).
    std::fs::write(&cfg_file, "maxclients = 700\nread_from = \"master\"\n").unwrap();
    unsafe {
        libc::kill(proxy.child.id() as i32, libc::SIGHUP);
    }
    let t = Instant::now();
    loop {
        let r = c.cmd(&["CONFIG", "GET", "maxclients"]);
        if r == Frame::Array(vec![Frame::bulk("maxclients"), Frame::bulk("700")]) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Graceful shutdown: SIGTERM, exits 0 promptly.
    assert!(
        proxy.terminate(Duration::from_secs(15)),
        "proxy did not exit on SIGTERM"
    );
    let st = proxy.child.wait().unwrap();
    assert!(st.success(), "exit status {st}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scripts_route_by_keys_and_reload_after_noscript() {
    use slotgate_protocol::Frame;
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &[]);
    let mut c = Raw::connect(proxy.port);
    let body = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let Frame::Bulk(sha) = c.cmd(&["SCRIPT", "LOAD", body]) else {
        panic!("SCRIPT LOAD")
    };
    let sha = String::from_utf8_lossy(&sha).into_owned();
    // EVALSHA works wherever the key lives (the script was broadcast to every master).
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", k, "2"]),
            Frame::Integer(2),
            "key {k}"
        );
    }
    assert_eq!(
        c.cmd(&["SCRIPT", "EXISTS", &sha]),
        Frame::Array(vec![Frame::Integer(1)])
    );
    // Keys in two slots: CROSSSLOT, as a cluster node answers.
    let Frame::Error(e) = c.cmd(&["EVAL", body, "2", "a", "b", "1"]) else {
        panic!()
    };
    assert!(e.starts_with(b"CROSSSLOT"), "{e:?}");
    // A node forgets its scripts (as after a failover or restart): the proxy reloads the
    // script it knows and the client never sees NOSCRIPT.
    for n in &cluster.nodes {
        let (ok, _) = redis_cli(&["-p", &n.port.to_string(), "script", "flush"]);
        assert!(ok);
    }
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            c.cmd(&["EVALSHA", &sha, "1", k, "3"]),
            Frame::Integer(5),
            "key {k}"
        );
    }
    // An unknown script still gets NOSCRIPT.
    let Frame::Error(e) = c.cmd(&[
        "EVALSHA",
        "ffffffffffffffffffffffffffffffffffffffff",
        "1",
        "a",
    ]) else {
        panic!()
    };
    assert!(e.starts_with(b"NOSCRIPT"), "{e:?}");
}

#[test]
fn half_a_request_does_not_stall_other_clients() {
    use slotgate_protocol::Frame;
    let Some(cluster) = Cluster::redis(3, 0, 3000) else {
        return;
    };
    // One worker thread, so both clients share it: a spinning reader would starve the other.
    let proxy = start_proxy(&cluster.seed(), &["--threads", "1"]);
    let mut half = Raw::connect(proxy.port);
    half.send(b"*2\r\n$3\r\nGET\r\n$10\r\nabc");
    std::thread::sleep(Duration::from_millis(200));
    let mut other = Raw::connect(proxy.port);
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(other.cmd(&["PING"]), Frame::Simple("PONG".into()));
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "other client stalled: {:?}",
        t.elapsed()
    );
    // The half request completes later and is answered.
    half.send(b"defghij\r\n");
    assert_eq!(half.read(), Some(Frame::Null));
}

/// Sends SIGSTOP to a process now and SIGCONT when dropped (also when the test fails).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -STOP {pid} failed");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// A master that stops answering without closing its connections (SIGSTOP: the kernel still
/// accepts connections for it) while new requests for it keep arriving: each request fails
/// with a clear error about read_timeout after it was sent, not when the node wakes up, and
/// so does EXEC of a transaction open there; keys on other masters are served meanwhile.
/// Once the node resumes, its keys work again.
#[test]
fn stalled_master_fails_requests_after_read_timeout() {
    use std::io::{Read, Write};
    // A long node timeout: the cluster itself does not notice the stall.
    let Some(cluster) = Cluster::redis(3, 0, 60_000) else {
        return;
    };
    let proxy = start_proxy(&cluster.seed(), &["--read-timeout-ms", "1000"]);
    let victim = &cluster.nodes[0];
    // A key the victim owns and one it does not (it answers MOVED for that one).
    let mut direct = victim.conn();
    let owned = |k: &str, con: &mut redis::Connection| {
        redis::cmd("GET")
            .arg(k)
            .query::<Option<String>>(con)
            .is_ok()
    };
    let stalled_key = (0..1000)
        .map(|i| format!("stall:{i}"))
        .find(|k| owned(k, &mut direct))
        .expect("a key on the victim");
    let other_key = (0..1000)
        .map(|i| format!("other:{i}"))
        .find(|k| !owned(k, &mut direct))
        .expect("a key elsewhere");
    let mut con = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg(&stalled_key)
        .arg("v")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&other_key)
        .arg("w")
        .query(&mut con)
        .unwrap();
    drop(direct);
    // A transaction open on the victim (its pinned connection holds MULTI and a SET).
    let mut tx = Raw::connect(proxy.port);
    assert_eq!(
        tx.cmd(&["MULTI"]),
        slotgate_protocol::Frame::Simple("OK".into())
    );
    assert_eq!(
        tx.cmd(&["SET", &stalled_key, "tx"]),
        slotgate_protocol::Frame::Simple("QUEUED".into())
    );

    let stop = Stopped::new(victim.child.id());
    let stopped_at = Instant::now();
    // Every 100 ms for 3 s a new client asks for the stalled key: the victim's backend
    // connection always has fresh work queued behind its oldest request.
    let get = format!(
        "*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n",
        stalled_key.len(),
        stalled_key
    );
    let mut waiting = Vec::new();
    while stopped_at.elapsed() < Duration::from_secs(3) {
        let (addr, get) = (proxy.addr(), get.clone());
        waiting.push(std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let sent = Instant::now();
            s.write_all(get.as_bytes()).unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap_or(0);
            (
                sent.elapsed(),
                String::from_utf8_lossy(&buf[..n]).to_string(),
            )
        }));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Other masters are unaffected meanwhile.
    let t = Instant::now();
    let v: String = redis::cmd("GET").arg(&other_key).query(&mut con).unwrap();
    assert_eq!(v, "w");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Each stalled request is answered with an error within read timeout + slack of its send.
    let mut worst = Duration::ZERO;
    for h in waiting {
        let (took, reply) = h.join().unwrap();
        assert!(
            reply.starts_with("-ERR slotgate: backend") && reply.contains("read timeout"),
            "reply after {took:?}: {reply:?}"
        );
        assert!(
            took < Duration::from_millis(3000),
            "a request for a stalled node waited {took:?} (read timeout 1 s)"
        );
        worst = worst.max(took);
    }
    println!("stalled node: worst wait for the error {worst:?} (read timeout 1 s)");
    // EXEC on the stalled node fails after the read timeout too, not when the node wakes.
    let t = Instant::now();
    match tx.cmd(&["EXEC"]) {
        slotgate_protocol::Frame::Error(e) => {
            let e = String::from_utf8_lossy(&e).to_string();
            assert!(
                e.contains("transaction connection lost") && e.contains("read timeout"),
                "{e}"
            )
        }
        other => panic!("EXEC on a stalled node answered {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(3000),
        "EXEC waited {:?}",
        t.elapsed()
    );
    drop(stop);
    // Once the node is back, its keys are served again through the same proxy.
    let t = Instant::now();
    loop {
        match redis::cmd("GET")
            .arg(&stalled_key)
            .query::<Option<String>>(&mut con)
        {
            Ok(v) => {
                // The timed-out EXEC was already in the node's socket buffer: once awake the
                // node may run it before it sees the connection closed (as with any client
                // whose read timed out, the outcome is unknown).
                assert!(matches!(v.as_deref(), Some("v" | "tx")), "{v:?}");
                break;
            }
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(10),
                "still failing after SIGCONT: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
