//! End-to-end runs of the `slotgate-bench` binary against a real server on loopback.
//!
//! The server is slotgate-node when `SLOTGATE_NODE_BIN` or target/{release,debug}/slotgate-node
//! exists and answers PING and SET, else redis-server. With neither available the tests print
//! why and pass, except under `CI=true`, where that is a failure. No timing assertions.

use slotgate_bench::compare::target::{free_port, wait_ready, ChildGuard};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A started server and its address.
struct Server {
    _guard: ChildGuard,
    port: u16,
    name: String,
}

fn start(bin: &Path, extra: &[&str]) -> Option<Server> {
    let port = free_port().ok()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(cmd, &bin.display().to_string()).ok()?;
    let addr = format!("127.0.0.1:{port}");
    match wait_ready(&addr, || guard.try_wait().is_none()) {
        Ok(()) => Some(Server {
            _guard: guard,
            port,
            name: bin.display().to_string(),
        }),
        Err(e) => {
            eprintln!("{} not usable: {e:#}", bin.display());
            None
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let p = slotgate_bench::compare::target::resolve_bin(Path::new(name));
    p.is_file().then_some(p)
}

fn node_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("SLOTGATE_NODE_BIN") {
        c.push(PathBuf::from(p));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("slotgate-node");
        if p.is_file() {
            c.push(p);
        }
    }
    c
}

/// True when the server at `port` answers a SET (a slotgate-node without the string
/// commands answers PING but is no use to the generator).
fn serves_strings(port: u16) -> bool {
    slotgate_bench::compare::target::blocking_call(
        &format!("127.0.0.1:{port}"),
        &["SET", "slotgate-bench:probe", "1"],
        std::time::Duration::from_secs(5),
    )
    .is_ok_and(|r| r.starts_with(b"+OK"))
}

/// slotgate-node if one works, else redis-server; `None` (or a panic under CI) otherwise.
fn any_server() -> Option<Server> {
    for bin in node_candidates() {
        if let Some(s) = start(&bin, &[]) {
            if serves_strings(s.port) {
                return Some(s);
            }
            eprintln!("{} does not serve SET yet; trying the next server", s.name);
        }
    }
    if let Some(s) = on_path("redis-server").and_then(|b| start(&b, &[])) {
        return Some(s);
    }
    skip("neither a working slotgate-node nor redis-server is available")
}

fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Runs the generator with `args` and returns (exit success, stdout).
fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate-bench"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running slotgate-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// The integer after `"key":` in a flat JSON text.
fn json_int(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn assert_clean_run(json: &str) {
    let ok = json_int(json, "ok").expect("ok field");
    assert!(ok > 0, "no successful requests: {json}");
    assert_eq!(json_int(json, "errors_total"), Some(0), "errors: {json}");
    assert_eq!(json_int(json, "verified_keys"), Some(8), "{json}");
}

#[test]
fn one_second_of_mixed_load_has_throughput_and_no_errors() {
    let Some(server) = any_server() else {
        return;
    };
    eprintln!("server: {}", server.name);
    let port = server.port.to_string();
    let (success, json) = bench(&[
        "-p",
        &port,
        "-c",
        "4",
        "-P",
        "8",
        "--duration",
        "1",
        "-t",
        "mixed",
        "-r",
        "1000",
        "--dist",
        "zipf",
        "--json",
        "-q",
    ]);
    assert!(success, "exit status: {json}");
    assert_clean_run(&json);
    let (success, json) = bench(&[
        "-p", &port, "-c", "2", "-P", "4", "-n", "2000", "-t", "mget", "-k", "4", "--json", "-q",
    ]);
    assert!(success, "exit status: {json}");
    assert_clean_run(&json);
}

#[test]
fn cluster_mode_against_a_single_node_cluster() {
    let Some(bin) = on_path("redis-server") else {
        skip::<()>("redis-server is not available for the cluster test");
        return;
    };
    let dir = std::env::temp_dir().join(format!("slotgate-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("nodes.conf");
    let Some(server) = start(
        &bin,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            conf.to_str().expect("utf-8 temp path"),
        ],
    ) else {
        skip::<()>("redis-server did not start in cluster mode");
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let call = |args: &[&str]| {
        slotgate_bench::compare::target::blocking_call(
            &addr,
            args,
            std::time::Duration::from_secs(5),
        )
        .expect("cluster command")
    };
    assert!(call(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).starts_with(b"+OK"));
    // Bounded wait for the node to declare the cluster usable.
    let mut ready = false;
    for _ in 0..100 {
        let info = call(&["CLUSTER", "INFO"]);
        if String::from_utf8_lossy(&info).contains("cluster_state:ok") {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready, "cluster_state never became ok");
    let port = server.port.to_string();
    let (success, json) = bench(&[
        "-p",
        &port,
        "--cluster",
        "-c",
        "2",
        "-P",
        "8",
        "-n",
        "4000",
        "-t",
        "mset",
        "-k",
        "5",
        "--json",
        "-q",
    ]);
    assert!(success, "exit status: {json}");
    assert_clean_run(&json);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_runs_against_redis_server() {
    let Some(redis) = on_path("redis-server") else {
        skip::<()>("redis-server is not available for the compare test");
        return;
    };
    let mut args = vec![
        "compare".to_string(),
        "--targets".into(),
        "redis".into(),
        "--redis-bin".into(),
        redis.display().to_string(),
        "--rounds".into(),
        "1".into(),
        "-n".into(),
        "2000".into(),
        "-r".into(),
        "1000".into(),
        "-c".into(),
        "4".into(),
        "-P".into(),
        "1,4".into(),
        "--memory-keys".into(),
        "5000".into(),
        "--no-write".into(),
    ];
    if on_path("redis-benchmark").is_none() {
        args.extend(["--tools".into(), "slotgate-bench".into()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (success, md) = bench(&refs);
    assert!(success, "compare failed: {md}");
    assert!(
        md.contains("| redis-server | slotgate-bench | set | 1 |"),
        "{md}"
    );
    assert!(md.contains("| redis-server | 5000 |"), "{md}");
}

#[test]
fn paced_run_stays_within_its_rate() {
    let Some(server) = any_server() else {
        return;
    };
    let port = server.port.to_string();
    // 2000 req/s over 4 connections for 1 s: each connection sends one request every 2 ms
    // on a fixed schedule, so at most 2000 + 4 requests can be issued, however fast the
    // server is (a bound, not a timing assertion).
    let (success, json) = bench(&[
        "-p",
        &port,
        "-c",
        "4",
        "-P",
        "1",
        "--duration",
        "1",
        "--rate",
        "2000",
        "-t",
        "get",
        "-r",
        "1000",
        "--json",
        "-q",
    ]);
    assert!(success, "exit status: {json}");
    assert_clean_run(&json);
    let ok = json_int(&json, "ok").expect("ok field");
    assert!(ok <= 2004, "paced run sent more than its budget: {json}");
    assert!(json.contains("\"rate\":2000"), "{json}");
    let (success, out) = bench(&["-p", &port, "--rate", "0", "-n", "10", "-q"]);
    assert!(!success, "a zero rate must be refused: {out}");
}
