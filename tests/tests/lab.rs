//! The lab (issue 7), end to end against real processes:
//! - `slotgate --launch` on free ports and a temp data dir: forms the cluster, serves
//!   SET/GET/MGET across slots, restarts a node that dies, stops every node on SIGTERM (exit 0,
//!   no node process left), resumes the same cluster (same node ids) from the same directory,
//!   and leaves no orphan when SIGKILLed;
//! - `slotgate create` / `status` / `probe` on separately started nodes (create is idempotent);
//! - the top-level docker-compose.yml, run for real with `--no-build` on an image built here
//!   from our binaries and Debian's prometheus: every service healthy, redis-cli through the
//!   published proxy port, Prometheus sees every target up, a killed master is failed over
//!   and every key is served again, `down -v` leaves nothing behind.

use slotgate_tests::{free_port, in_ci, our_bin, require_peer, start_node, which, Raw};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// helpers

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// First port of the kernel's ephemeral range: ports below it are never taken by outgoing
/// connections, so one found free stays free until a server binds it (docker binds late).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A base port with `n` consecutive free ports and their bus ports (+10000), below the
/// ephemeral range.
fn free_block(n: u16, avoid: &[u16]) -> u16 {
    let top = ephemeral_start().saturating_sub(n).max(20001);
    for _ in 0..1000 {
        let base = 20000 + rand::random::<u16>() % (top - 20000);
        let ok = (base..base + n).all(|p| {
            !avoid.contains(&p)
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        });
        if ok {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

/// One free port below the ephemeral range (see [`ephemeral_start`]).
fn quiet_port(avoid: &[u16]) -> u16 {
    let top = ephemeral_start().max(20001);
    for _ in 0..1000 {
        let p = 20000 + rand::random::<u16>() % (top - 20000);
        if !avoid.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "slotgate-lab-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

// ---------------------------------------------------------------------------------------
// slotgate --launch

/// Ports of one launch.
#[derive(Clone, Copy)]
struct LaunchPorts {
    base: u16,
    node_metrics: u16,
    listen: u16,
    metrics: u16,
}

/// A running `slotgate --launch`; SIGKILLed on drop (its nodes die with it).
struct Launch {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Launch {
    fn start(data: &Path, p: LaunchPorts, tag: &str) -> Launch {
        let out = data.join(format!("launch-{tag}.out"));
        let err = data.join(format!("launch-{tag}.err"));
        let child = Command::new(our_bin("slotgate"))
            .args([
                "--launch",
                "--replicas",
                "1",
                "--base-port",
                &p.base.to_string(),
                "--node-metrics-port",
                &p.node_metrics.to_string(),
                "--listen",
                &format!("127.0.0.1:{}", p.listen),
                "--metrics",
                &format!("127.0.0.1:{}", p.metrics),
                "--node-timeout-ms",
                "3000",
                "--threads",
                "1",
                "--node-bin",
            ])
            .arg(our_bin("slotgate-node"))
            .arg("--data-dir")
            .arg(data.join("lab"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"))
            .spawn()
            .expect("spawn slotgate --launch");
        Launch { child, out, err }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.output(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits until stdout contains `needle`; panics with the logs otherwise.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let t = Instant::now();
        while t.elapsed() < limit {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "slotgate --launch exited ({st}) before {needle:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no {needle:?} after {limit:?}:\n{}", self.logs());
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit status.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slotgate did not exit within {limit:?}:\n{}", self.logs());
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes a directory on drop (after the processes using it are gone).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node_pids(data: &Path, p: LaunchPorts) -> Vec<u32> {
    (p.base..p.base + 6)
        .filter_map(|port| {
            std::fs::read_to_string(data.join("lab").join(port.to_string()).join("node.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .collect()
}

fn node_ids(p: LaunchPorts) -> Vec<String> {
    (p.base..p.base + 6)
        .map(|port| {
            let f = Raw::connect(port).cmd(&["CLUSTER", "MYID"]);
            match f {
                slotgate_protocol::Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                other => panic!("CLUSTER MYID on {port}: {other:?}"),
            }
        })
        .collect()
}

/// SET/GET/MGET of `n` keys spread over every slot range, through the proxy.
fn check_keys(port: u16, n: usize, tag: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut c = client.get_connection().expect("connect to the proxy");
    let keys: Vec<String> = (0..n).map(|i| format!("lab:{tag}:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(format!("v{i}"))
            .query(&mut c)
            .unwrap_or_else(|e| panic!("SET {k}: {e}"));
    }
    for (i, k) in keys.iter().enumerate() {
        let v: String = redis::cmd("GET").arg(k).query(&mut c).expect("GET");
        assert_eq!(v, format!("v{i}"));
    }
    let vals: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut c).expect("MGET");
    let want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    assert_eq!(vals, want);
    let slots: std::collections::BTreeSet<u16> = keys
        .iter()
        .map(|k| slotgate_protocol::key_slot(k.as_bytes()) / 5462)
        .collect();
    assert_eq!(slots.len(), 3, "the keys cover all three masters' ranges");
}

#[test]
fn launch_forms_serves_supervises_stops_and_resumes() {
    let data = temp_dir("launch");
    let _dir = DirGuard(data.clone());
    let base = free_block(6, &[]);
    let avoid: Vec<u16> = (base..base + 6).chain(base + 10000..base + 10006).collect();
    let node_metrics = free_block(6, &avoid);
    let mut avoid = avoid;
    avoid.extend(node_metrics..node_metrics + 6);
    let listen = quiet_port(&avoid);
    avoid.push(listen);
    let p = LaunchPorts {
        base,
        node_metrics,
        listen,
        metrics: quiet_port(&avoid),
    };
    let t = Instant::now();
    let mut l = Launch::start(&data, p, "first");
    let out = l.wait_for("slotgate is serving", Duration::from_secs(120));
    eprintln!("launch ready in {:?}", t.elapsed());
    assert!(
        out.contains("creating a cluster of 3 masters and 3 replicas"),
        "{out}"
    );
    assert!(out.contains("cluster_state:ok"), "{out}");
    // The ready table: three masters with the three ranges, three replicas.
    for range in ["0-5460", "5461-10922", "10923-16383"] {
        assert!(out.contains(range), "ready table lacks {range}:\n{out}");
    }
    assert_eq!(out.matches("replica of 127.0.0.1:").count(), 3, "{out}");
    assert!(out.contains(&format!("redis-cli -p {}", p.listen)), "{out}");
    assert!(
        out.contains(&format!("http://127.0.0.1:{}/metrics", p.metrics)),
        "{out}"
    );

    check_keys(p.listen, 60, "a");
    let ids = node_ids(p);
    let pids = node_pids(&data, p);
    assert_eq!(pids.len(), 6, "every node wrote its pid file");

    // Node metrics and proxy metrics.
    let (code, body) = http_get(p.node_metrics, "/metrics").expect("node metrics");
    assert_eq!(code, 200);
    assert!(body.contains("slotgate_node_cluster_state 1"), "{body}");
    assert!(body.contains("slotgate_node_is_master 1"), "{body}");
    assert!(
        body.contains("slotgate_node_commands_total{command=\"set\"}"),
        "{body}"
    );
    let (_, body) = http_get(p.node_metrics + 5, "/metrics").expect("replica metrics");
    assert!(body.contains("slotgate_node_is_master 0"), "{body}");

    // Supervision: a node that dies is restarted and counted.
    let victim = p.base + 5;
    let old_pid = pids[5];
    // SAFETY: kill(2) on a node process launched by our slotgate child.
    unsafe {
        libc::kill(old_pid as i32, libc::SIGKILL);
    }
    let restarted = wait_until(Duration::from_secs(20), || {
        let now = node_pids(&data, p);
        now.len() == 6
            && now[5] != old_pid
            && TcpStream::connect(("127.0.0.1", victim)).is_ok()
            && http_get(p.metrics, "/metrics").is_some_and(|(_, b)| {
                b.contains(&format!(
                    "slotgate_launch_node_restarts_total{{node=\"127.0.0.1:{victim}\"}} 1"
                ))
            })
    });
    assert!(restarted, "node {victim} was not restarted:\n{}", l.logs());
    let pids_after = node_pids(&data, p);

    // SIGTERM: drain, stop the nodes, exit 0, no node left.
    l.signal(libc::SIGTERM);
    let st = l.wait_exit(Duration::from_secs(40));
    assert!(st.success(), "exit status {st}:\n{}", l.logs());
    for pid in pids.iter().chain(&pids_after) {
        assert!(!alive(*pid), "node pid {pid} still running after SIGTERM");
    }
    assert!(l.output().contains("stopping the nodes"));

    // Same data dir again: the cluster is resumed, not re-created.
    let mut l2 = Launch::start(&data, p, "second");
    let out = l2.wait_for("slotgate is serving", Duration::from_secs(120));
    assert!(out.contains("resuming 6 nodes"), "{out}");
    assert!(out.contains("already form a cluster"), "{out}");
    assert!(!out.contains("creating a cluster"), "{out}");
    assert_eq!(node_ids(p), ids, "same node ids after the restart");
    check_keys(p.listen, 60, "b");

    // SIGKILL of slotgate itself: the nodes die with it (PR_SET_PDEATHSIG), no orphans.
    let pids2 = node_pids(&data, p);
    assert_eq!(pids2.len(), 6);
    l2.signal(libc::SIGKILL);
    let _ = l2.wait_exit(Duration::from_secs(10));
    let gone = wait_until(Duration::from_secs(15), || pids2.iter().all(|p| !alive(*p)));
    assert!(gone, "orphaned nodes after SIGKILL of slotgate: {pids2:?}");
}

// ---------------------------------------------------------------------------------------
// slotgate create / status / probe

fn slotgate(args: &[&str]) -> (bool, String) {
    let o = Command::new(our_bin("slotgate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run slotgate");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn create_status_and_probe_on_separately_started_nodes() {
    let nodes: Vec<_> = (0..6)
        .map(|_| {
            start_node(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "3000",
                "--io-threads",
                "1",
            ])
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let mut args: Vec<&str> = vec!["create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--replicas", "1"]);
    let (ok, out) = slotgate(&args);
    assert!(ok, "{out}");
    assert!(out.contains("cluster created"), "{out}");
    // Idempotent: a second run changes nothing and succeeds.
    let (ok, out) = slotgate(&args);
    assert!(ok, "{out}");
    assert!(out.contains("already exists"), "{out}");

    let (ok, out) = slotgate(&["status", "--seed", &addrs[0]]);
    assert!(ok, "{out}");
    assert!(out.contains("cluster_state:ok"), "{out}");
    for a in &addrs {
        assert!(out.contains(a.as_str()), "{a} missing:\n{out}");
    }
    assert_eq!(out.matches("replica of").count(), 3, "{out}");
    assert!(out.contains("0-5460 (5461)"), "{out}");
    assert!(out.contains("myself"), "{out}");

    let (ok, out) = slotgate(&[
        "probe",
        "--expect",
        "cluster_state:ok",
        &addrs[0],
        "CLUSTER",
        "INFO",
    ]);
    assert!(ok, "{out}");
    let (ok, _) = slotgate(&["probe", "--quiet", &format!("127.0.0.1:{}", free_port())]);
    assert!(!ok, "probe of a closed port fails");

    // A node that is not in cluster mode, and too few masters, are clear errors.
    let plain = start_node(&[]);
    let (ok, out) = slotgate(&["create", &plain.addr(), &addrs[0], &addrs[1]]);
    assert!(!ok);
    assert!(out.contains("not in cluster mode"), "{out}");
    // Nodes of an existing cluster mixed with others are refused, not re-created.
    let (ok, out) = slotgate(&["create", &addrs[0], &addrs[1], &addrs[2]]);
    assert!(!ok && out.contains("cannot create"), "{out}");
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml

/// The compose tool: `docker-compose` (v1) or `docker compose` (v2).
fn compose_tool() -> Option<Vec<String>> {
    if which("docker-compose").is_some() {
        return Some(vec!["docker-compose".into()]);
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    v2.then(|| vec!["docker".into(), "compose".into()])
}

fn skip_or_fail(why: &str) {
    if in_ci() {
        panic!("{why} (required under CI=true)");
    }
    eprintln!("SKIPPED: {why}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The image name docker-compose.yml uses by default (`${SLOTGATE_IMAGE:-...}`).
fn compose_image_name() -> String {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    let start = text.find("${SLOTGATE_IMAGE:-").expect("image line") + "${SLOTGATE_IMAGE:-".len();
    let end = text[start..].find('}').expect("image line end") + start;
    text[start..end].to_string()
}

/// Shared libraries a binary loads, per `ldd`.
fn shared_libs(bin: &Path) -> Vec<PathBuf> {
    let o = Command::new("ldd").arg(bin).output().expect("ldd");
    let text = String::from_utf8_lossy(&o.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

/// Builds the runtime image from our binaries, Debian's prometheus and the shared libraries
/// they load (`FROM scratch` equivalent through `docker import`): no registry needed.
fn build_image(image: &str, prometheus: &Path) {
    let bins = std::env::var_os("SLOTGATE_LAB_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(slotgate_tests::bin_dir);
    let stage = temp_dir("image");
    let _g = DirGuard(stage.clone());
    let copy = |from: &Path, to: &str| {
        let dest = stage.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    let ours = [bins.join("slotgate"), bins.join("slotgate-node")];
    for b in &ours {
        assert!(b.exists(), "{} not built", b.display());
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        copy(b, &format!("/usr/local/bin/{name}"));
    }
    copy(prometheus, "/usr/bin/prometheus");
    for b in ours
        .iter()
        .chain(std::iter::once(&prometheus.to_path_buf()))
    {
        for lib in shared_libs(b) {
            copy(&lib, &lib.display().to_string());
        }
    }
    for d in [
        "tmp",
        "data",
        "prometheus",
        "etc/prometheus",
        "etc/slotgate",
    ] {
        std::fs::create_dir_all(stage.join(d)).expect("mkdir");
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(stage.join("tmp"), std::fs::Permissions::from_mode(0o1777));
    std::fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )
    .expect("passwd");
    std::fs::write(stage.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let tar_out = tar.stdout.take().expect("tar stdout");
    // The image this import replaces (removed afterwards, so runs do not pile up images).
    let previous = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            "--change",
            "WORKDIR /data",
            "--change",
            "CMD [\"slotgate\", \"--help\"]",
            "-",
            image,
        ])
        .stdin(Stdio::from(tar_out))
        .output()
        .expect("docker import");
    let _ = tar.wait();
    assert!(
        import.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let new_id = String::from_utf8_lossy(&import.stdout).trim().to_string();
    if let Some(old) = previous.filter(|id| !id.is_empty() && *id != new_id) {
        // Fails harmlessly while another project still uses it.
        let _ = Command::new("docker")
            .args(["rmi", &old])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One compose project; `down -v` on drop, whatever happened.
struct Compose {
    tool: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> (bool, String) {
        let file = repo_root().join("docker-compose.yml");
        let mut c = Command::new(&self.tool[0]);
        c.args(&self.tool[1..])
            .arg("-f")
            .arg(&file)
            .args(["-p", &self.project])
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        match c.output() {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    /// Every container of the project: (service, status, health, exit code).
    fn states(&self) -> Vec<(String, String, String, i64)> {
        let (_, ids) = self.cmd(&["ps", "-q"]);
        let ids: Vec<&str> = ids
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 12 && l.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let o = Command::new("docker")
            .arg("inspect")
            .arg("-f")
            .arg("{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}")
            .args(&ids)
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4).then(|| {
                    (
                        f[0].to_string(),
                        f[1].to_string(),
                        f[2].to_string(),
                        f[3].parse().unwrap_or(-1),
                    )
                })
            })
            .collect()
    }

    fn logs(&self) -> String {
        self.cmd(&["logs", "--no-color", "--tail", "40"]).1
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let (ok, out) = self.cmd(&["down", "-v", "--remove-orphans", "--timeout", "5"]);
        if !ok {
            eprintln!("docker-compose down -v failed: {out}");
        }
    }
}

/// Leftovers carrying the compose project's label: containers, volumes, networks.
fn leftovers(project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut out = Vec::new();
    for what in [
        vec!["ps", "-a", "-q"],
        vec!["volume", "ls", "-q"],
        vec!["network", "ls", "-q"],
    ] {
        let o = Command::new("docker")
            .args(&what)
            .args(["--filter", &label])
            .output()
            .expect("docker ls");
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if !l.trim().is_empty() {
                out.push(format!("{}: {l}", what[0]));
            }
        }
    }
    out
}

/// GETs every key through the proxy; Ok when all answer their value.
fn all_keys_served(port: u16, keys: &[String]) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    for (i, k) in keys.iter().enumerate() {
        let v: Option<String> = redis::cmd("GET")
            .arg(k)
            .query(&mut c)
            .map_err(|e| format!("GET {k}: {e}"))?;
        if v.as_deref() != Some(format!("v{i}").as_str()) {
            return Err(format!("GET {k} = {v:?}"));
        }
    }
    Ok(())
}

fn redis_cli_at(port: u16, args: &[&str]) -> String {
    let (ok, out) =
        slotgate_tests::cluster::redis_cli(&[&["-p", &port.to_string()], args].concat());
    assert!(ok, "redis-cli {args:?}: {out}");
    out
}

#[test]
fn docker_compose_lab() {
    let t0 = Instant::now();
    if which("docker").is_none() {
        return skip_or_fail("docker is not installed");
    }
    let Some(tool) = compose_tool() else {
        return skip_or_fail("neither docker-compose nor `docker compose` is installed");
    };
    let daemon = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !daemon {
        return skip_or_fail("the docker daemon is not reachable");
    }
    let Some(prometheus) = require_peer("prometheus") else {
        return;
    };
    if require_peer("redis-cli").is_none() {
        return;
    }
    let image = compose_image_name();
    build_image(&image, &prometheus);
    eprintln!("image {image} built in {:?}", t0.elapsed());

    let mut compose = None;
    let mut last = String::new();
    for _ in 0..4 {
        // Fresh ports and subnet on every try: a port taken meanwhile, or a subnet that
        // overlaps another network, only costs a retry.
        let port = quiet_port(&[]);
        let metrics = quiet_port(&[port]);
        let prom = quiet_port(&[port, metrics]);
        let net = format!("172.30.{}", rand::random::<u8>());
        let c = Compose {
            tool: tool.clone(),
            project: format!(
                "slotgatelab{}x{}",
                std::process::id(),
                rand::random::<u32>()
            ),
            env: vec![
                ("SLOTGATE_IMAGE".into(), image.clone()),
                ("SLOTGATE_PORT".into(), port.to_string()),
                ("SLOTGATE_METRICS_PORT".into(), metrics.to_string()),
                ("PROMETHEUS_PORT".into(), prom.to_string()),
                ("SLOTGATE_BIND".into(), "127.0.0.1".into()),
                ("SLOTGATE_NET".into(), net.clone()),
            ],
        };
        let (ok, out) = c.cmd(&["up", "-d", "--no-build"]);
        if ok {
            compose = Some((c, net, port, metrics, prom));
            break;
        }
        last = format!("{out}\n{}", c.logs());
        let lower = out.to_lowercase();
        if !lower.contains("overlap") && !lower.contains("address already in use") {
            panic!("docker-compose up failed:\n{last}");
        }
        eprintln!(
            "docker-compose up: retrying after: {}",
            out.lines().last().unwrap_or("")
        );
        // Drop runs `down -v` before the next try.
    }
    let Some((compose, net, port, metrics, prom)) = compose else {
        panic!("docker-compose up failed on every subnet tried:\n{last}");
    };
    eprintln!("compose up in {:?}", t0.elapsed());

    // Every service healthy (the one-shot init: exited 0).
    let services = [
        "node1",
        "node2",
        "node3",
        "node4",
        "node5",
        "node6",
        "init",
        "proxy",
        "prometheus",
    ];
    let mut states = Vec::new();
    let healthy = wait_until(Duration::from_secs(180), || {
        states = compose.states();
        services.iter().all(|svc| {
            states.iter().any(|(s, status, health, code)| {
                s == svc
                    && if *svc == "init" {
                        status == "exited" && *code == 0
                    } else {
                        status == "running" && health == "healthy"
                    }
            })
        })
    });
    assert!(
        healthy,
        "services not healthy: {states:?}\n{}",
        compose.logs()
    );
    eprintln!("all services healthy after {:?}", t0.elapsed());

    // redis-cli from the host through the published proxy port, across slots.
    assert_eq!(redis_cli_at(port, &["SET", "{a}k", "1"]).trim(), "OK");
    assert_eq!(redis_cli_at(port, &["SET", "{b}k", "2"]).trim(), "OK");
    assert_eq!(redis_cli_at(port, &["SET", "{c}k", "3"]).trim(), "OK");
    assert_eq!(redis_cli_at(port, &["GET", "{b}k"]).trim(), "2");
    assert_eq!(
        redis_cli_at(port, &["MGET", "{a}k", "{b}k", "{c}k"]).trim(),
        "1\n2\n3"
    );
    let keys: Vec<String> = (0..200).map(|i| format!("lab:{i}")).collect();
    {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
        let mut c = client.get_connection().expect("connect");
        for (i, k) in keys.iter().enumerate() {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(format!("v{i}"))
                .query(&mut c)
                .expect("SET");
        }
    }
    all_keys_served(port, &keys).expect("keys served");

    // Proxy metrics on the published port; Prometheus sees every target up.
    let (code, body) = http_get(metrics, "/metrics").expect("proxy metrics");
    assert_eq!(code, 200);
    assert!(body.contains("slotgate_commands_total"), "{body}");
    let mut targets = String::new();
    let all_up = wait_until(Duration::from_secs(90), || {
        targets = http_get(prom, "/api/v1/targets?state=active")
            .map(|(_, b)| b)
            .unwrap_or_default();
        targets.matches("\"health\":\"up\"").count() == 7
            && targets.matches("\"health\":").count() == 7
    });
    assert!(all_up, "Prometheus targets not all up:\n{targets}");
    let (_, q) = http_get(prom, "/api/v1/query?query=slotgate_node_cluster_state").expect("query");
    assert_eq!(q.matches("\"slotgate-node\"").count(), 6, "{q}");
    eprintln!("Prometheus sees 7 targets up after {:?}", t0.elapsed());

    // Kill a master container: the proxy serves every key again within the node timeout
    // (5 s in docker/node.conf) plus a few seconds.
    let (_, status) = compose.cmd(&[
        "exec",
        "-T",
        "proxy",
        "slotgate",
        "status",
        "--seed",
        "node2:6379",
    ]);
    let node1 = format!("{net}.11:6379");
    assert!(
        status
            .lines()
            .any(|l| l.contains(&node1) && l.contains(" master ")),
        "node1 is expected to be a master:\n{status}"
    );
    let (ok, out) = compose.cmd(&["kill", "node1"]);
    assert!(ok, "kill node1: {out}");
    let killed = Instant::now();
    let mut last_err = String::new();
    let served = wait_until(Duration::from_secs(5 + 15), || {
        match all_keys_served(port, &keys) {
            Ok(()) => true,
            Err(e) => {
                last_err = e;
                false
            }
        }
    });
    let (_, status) = compose.cmd(&[
        "exec",
        "-T",
        "proxy",
        "slotgate",
        "status",
        "--seed",
        "node2:6379",
    ]);
    assert!(
        served,
        "after killing master node1 the proxy did not serve every key within 20 s (last: {last_err}); cluster:\n{status}\n{}",
        compose.logs()
    );
    eprintln!(
        "failover: every key served {:?} after the kill; cluster:\n{status}",
        killed.elapsed()
    );

    // down -v removes everything.
    let project = compose.project.clone();
    drop(compose);
    let left = leftovers(&project);
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
    eprintln!("docker lab test done in {:?}", t0.elapsed());
}
