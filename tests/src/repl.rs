//! Helpers for the replication and failover acceptance tests (tests/tests/replication.rs and
//! tests/tests/failover.rs): the two server kinds every test runs against (real redis-server
//! and slotgate-node), non-panicking one-shot commands and INFO parsing for nodes that may be
//! dead, bounded waits that report how long they took, cluster fixtures with extra server
//! arguments and restart-in-place, a small slot-aware client, and a background writer that
//! records every acknowledged write so that a test can read them all back after a failover.

use crate::cluster::{redis_cli, Cluster};
use crate::{our_bin, require_peer, Proc};
use bytes::BytesMut;
use slotgate_protocol::{decode_frame, key_slot, Frame, SLOT_COUNT};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Arguments every replication test gives every server, whatever its kind: Redis 7.0 delays a
/// diskless full sync by `repl-diskless-sync-delay` (5 s by default) to batch replicas; the
/// tests want the sync to start at once.
pub const FAST_SYNC: &[&str] = &["--repl-diskless-sync-delay", "0"];

/// The real redis-server binary, when redis-server and redis-cli are installed (None with a
/// printed reason otherwise; panics under CI=true).
pub fn redis_kind() -> Option<PathBuf> {
    let bin = require_peer("redis-server")?;
    require_peer("redis-cli")?;
    Some(bin)
}

/// Our slotgate-node binary (redis-cli is needed too: the cluster tests drive it with
/// `redis-cli --cluster`).
pub fn node_kind() -> Option<PathBuf> {
    require_peer("redis-cli")?;
    Some(our_bin("slotgate-node"))
}

/// The text of a simple/bulk/error reply, the number of an integer reply, else its Debug form.
pub fn text(f: &Frame) -> String {
    match f {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Error(b) | Frame::Verbatim(_, b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        Frame::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A request/reply connection whose failures are errors, not panics (the peer may be killed).
pub struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects to `127.0.0.1:port` with `timeout` for the connect and for each reply.
    pub fn connect(port: u16, timeout: Duration) -> Result<Conn, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(timeout)).ok();
        s.set_write_timeout(Some(timeout)).ok();
        s.set_nodelay(true).ok();
        Ok(Conn {
            s,
            buf: BytesMut::new(),
        })
    }

    /// Sends one command without reading its reply (a blocking command, say).
    pub fn send(&mut self, args: &[&str]) -> Result<(), String> {
        let mut out = BytesMut::new();
        slotgate_protocol::resp::write_command(&mut out, args);
        self.s.write_all(&out).map_err(|e| format!("write: {e}"))
    }

    /// Sends one command and reads its reply (error replies are `Ok(Frame::Error)`).
    pub fn call(&mut self, args: &[&str]) -> Result<Frame, String> {
        self.send(args)?;
        self.read()
    }

    /// Reads one reply.
    pub fn read(&mut self) -> Result<Frame, String> {
        // Bounded by the socket's read timeout per read and by the reply size cap.
        while self.buf.len() < 256 * 1024 * 1024 {
            match decode_frame(&mut self.buf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(format!("protocol: {e:?}")),
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Err("reply too large".into())
    }
}

/// One command over a fresh connection (5 s timeouts).
pub fn try_cmd(port: u16, args: &[&str]) -> Result<Frame, String> {
    Conn::connect(port, Duration::from_secs(5))?.call(args)
}

/// One command over a fresh connection; panics when the server cannot be reached.
pub fn cmd(port: u16, args: &[&str]) -> Frame {
    match try_cmd(port, args) {
        Ok(f) => f,
        Err(e) => panic!("{args:?} to port {port}: {e}"),
    }
}

/// `INFO <section>` as field → value (empty when the server cannot be reached).
pub fn info(port: u16, section: &str) -> BTreeMap<String, String> {
    let Ok(f) = try_cmd(port, &["INFO", section]) else {
        return BTreeMap::new();
    };
    parse_info(&text(&f))
}

/// Parses INFO text into field → value (section headers and blank lines skipped).
pub fn parse_info(s: &str) -> BTreeMap<String, String> {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The field names of an INFO section, in the order printed.
pub fn info_field_names(port: u16, section: &str) -> Vec<String> {
    let Ok(f) = try_cmd(port, &["INFO", section]) else {
        return Vec::new();
    };
    text(&f)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// DBSIZE, None when unreachable or not an integer.
pub fn dbsize(port: u16) -> Option<i64> {
    match try_cmd(port, &["DBSIZE"]) {
        Ok(Frame::Integer(n)) => Some(n),
        _ => None,
    }
}

/// Polls `f` every 50 ms until it is true; panics with `what` after `limit`. Returns the time
/// it took.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    // Bounded by `limit` (the assertion) and, as a backstop, by the iteration count.
    for _ in 0..1_000_000 {
        if f() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// A replica's view: role:slave, the given master port, link up.
pub fn replica_linked_to(port: u16, master_port: u16) -> bool {
    let i = info(port, "replication");
    i.get("role").map(String::as_str) == Some("slave")
        && i.get("master_port") == Some(&master_port.to_string())
        && i.get("master_link_status").map(String::as_str) == Some("up")
}

/// True when the replica's applied offset has reached the master's current offset and both
/// hold the same number of keys.
pub fn in_sync(master: u16, replica: u16) -> bool {
    let m = info(master, "replication");
    let r = info(replica, "replication");
    let mo = m.get("master_repl_offset");
    let ro = r.get("slave_repl_offset");
    mo.is_some() && mo == ro && dbsize(master).is_some() && dbsize(master) == dbsize(replica)
}

// ------------------------------------------------------------------------------------------
// Cluster fixtures
// ------------------------------------------------------------------------------------------

/// How a cluster node is started; kept so that it can be restarted identically.
#[derive(Clone)]
pub struct NodeSpec {
    /// The server binary.
    pub bin: PathBuf,
    /// cluster-node-timeout (ms).
    pub timeout_ms: u64,
    /// Extra arguments.
    pub extra: Vec<String>,
}

/// Spawns a cluster node of `spec` on `port` in `dir` (which keeps nodes.conf across
/// restarts), its output appended to `dir/stdout.log`.
fn spawn_cluster_child(spec: &NodeSpec, port: u16, dir: &Path) -> std::process::Child {
    let _ = std::fs::create_dir_all(dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .expect("log file");
    let log2 = log.try_clone().expect("log file");
    Command::new(&spec.bin)
        .current_dir(dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", &spec.timeout_ms.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(FAST_SYNC)
        .args(&spec.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .expect("spawn cluster node")
}

/// Starts a cluster node of `spec` on `port` in `dir` and waits until it answers PING.
pub fn spawn_cluster_node_in(spec: &NodeSpec, port: u16, dir: &Path) -> Proc {
    let child = spawn_cluster_child(spec, port, dir);
    let mut p = Proc {
        child,
        port,
        dir: dir.to_path_buf(),
    };
    crate::wait_ready_pub(&mut p);
    p
}

/// Starts a fresh cluster node of `spec` on a free port.
pub fn spawn_cluster_node(spec: &NodeSpec) -> Proc {
    crate::start_on_free_port(|port| {
        let dir = std::env::temp_dir().join(format!(
            "slotgate-repl-{}-{}-{}",
            std::process::id(),
            port,
            rand::random::<u32>()
        ));
        let child = spawn_cluster_child(spec, port, &dir);
        Proc { child, port, dir }
    })
}

/// `redis-cli --cluster create` over `masters × (1 + replicas)` nodes of `spec`; waits until
/// the cluster is ok and every replica's link is up.
pub fn start_cluster(spec: &NodeSpec, masters: usize, replicas: usize) -> Cluster {
    let n = masters * (1 + replicas);
    let nodes: Vec<Proc> = (0..n).map(|_| spawn_cluster_node(spec)).collect();
    let addrs: Vec<String> = nodes.iter().map(|p| p.addr()).collect();
    let mut args: Vec<&str> = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(|s| s.as_str()));
    let r = replicas.to_string();
    args.extend(["--cluster-replicas", &r, "--cluster-yes"]);
    let (ok, out) = redis_cli(&args);
    assert!(
        ok && out.contains("[OK] All 16384 slots covered"),
        "cluster create failed: {out}"
    );
    let c = Cluster { nodes };
    c.wait_ok(Duration::from_secs(30));
    wait_until(
        "every node to see every master with its replicas",
        Duration::from_secs(30),
        || {
            c.nodes.iter().all(|p| {
                let t = topology(p.port);
                t.len() == masters && t.iter().all(|(_, r)| r.len() == replicas)
            })
        },
    );
    if replicas > 0 {
        wait_until(
            "every replica's role:slave and link up",
            Duration::from_secs(30),
            || all_replicas_linked(&c),
        );
    }
    c
}

/// True when every node that is a replica in its own CLUSTER NODES line reports `role:slave`
/// and `master_link_status:up` in INFO replication.
pub fn all_replicas_linked(c: &Cluster) -> bool {
    c.nodes.iter().all(|p| {
        let me_replica = cluster_nodes(p.port)
            .iter()
            .any(|n| n.has("myself") && n.has("slave"));
        let i = info(p.port, "replication");
        !me_replica
            || (i.get("role").map(String::as_str) == Some("slave")
                && i.get("master_link_status").map(String::as_str) == Some("up"))
    })
}

/// SIGKILL and reap the process, keeping its directory (for a restart in place).
pub fn kill9(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

/// Starts `p` again (after killing it if needed) with the same port and directory, so that
/// it reads its nodes.conf back; waits until it answers PING.
pub fn restart_in_place(p: &mut Proc, spec: &NodeSpec) {
    kill9(p);
    p.child = spawn_cluster_child(spec, p.port, &p.dir);
    crate::wait_ready_pub(p);
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone)]
pub struct NodeLine {
    /// Node ID.
    pub id: String,
    /// Client port.
    pub port: u16,
    /// Flags (`myself`, `master`, `slave`, `fail`, ...).
    pub flags: Vec<String>,
    /// Master's ID (`-` for masters).
    pub master: String,
    /// link-state (`connected` / `disconnected`).
    pub link: String,
    /// Slot ranges served (inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    /// Has the flag.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// CLUSTER NODES as seen by the node on `port` (empty when unreachable).
pub fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    let Ok(f) = try_cmd(port, &["CLUSTER", "NODES"]) else {
        return Vec::new();
    };
    text(&f)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            if w.len() < 8 {
                return None;
            }
            let hp = w[1].split('@').next()?;
            let port = hp.rsplit(':').next()?.parse().ok()?;
            let slots = w[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(NodeLine {
                id: w[0].to_string(),
                port,
                flags: w[2].split(',').map(String::from).collect(),
                master: w[3].to_string(),
                link: w[7].to_string(),
                slots,
            })
        })
        .collect()
}

/// `(master port, its working replicas' ports)` for every slot-owning master, as `via` sees
/// it (replicas flagged `fail` or `fail?` are left out), sorted by master port.
pub fn topology(via: u16) -> Vec<(u16, Vec<u16>)> {
    let nodes = cluster_nodes(via);
    let mut out: Vec<(u16, Vec<u16>)> = nodes
        .iter()
        .filter(|n| n.has("master") && !n.slots.is_empty())
        .map(|m| {
            let reps = nodes
                .iter()
                .filter(|r| r.has("slave") && r.master == m.id && !r.has("fail") && !r.has("fail?"))
                .map(|r| r.port)
                .collect();
            (m.port, reps)
        })
        .collect();
    out.sort();
    out
}

/// The node ID of the node on `port`.
pub fn my_id(port: u16) -> String {
    text(&cmd(port, &["CLUSTER", "MYID"]))
}

/// The slots served by the node on `port`, as it reports itself in CLUSTER NODES.
pub fn own_slots(port: u16) -> Vec<(u16, u16)> {
    cluster_nodes(port)
        .into_iter()
        .find(|n| n.has("myself"))
        .map(|n| n.slots)
        .unwrap_or_default()
}

/// True when `slot` is in one of `ranges`.
pub fn in_ranges(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
}

/// A key (`<prefix>:<n>`) whose slot is in `ranges`.
pub fn key_in(ranges: &[(u16, u16)], prefix: &str) -> String {
    (0..1_000_000u32)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| in_ranges(ranges, key_slot(k.as_bytes())))
        .unwrap_or_else(|| format!("{prefix}:none"))
}

// ------------------------------------------------------------------------------------------
// Slot-aware client and recording writer
// ------------------------------------------------------------------------------------------

/// A minimal cluster client: slot → port map from CLUSTER SLOTS, one connection per node,
/// MOVED / ASK followed, every failure returned as an error (never a panic).
pub struct SlotClient {
    known: Vec<u16>,
    slots: Vec<u16>,
    conns: HashMap<u16, Conn>,
    timeout: Duration,
}

impl SlotClient {
    /// A client that discovers the cluster from `seeds`; `timeout` bounds each reply.
    pub fn new(seeds: &[u16], timeout: Duration) -> SlotClient {
        let mut c = SlotClient {
            known: seeds.to_vec(),
            slots: vec![0; SLOT_COUNT],
            conns: HashMap::new(),
            timeout,
        };
        c.refresh();
        c
    }

    /// Reloads the slot map from the first known node that answers; false if none did.
    pub fn refresh(&mut self) -> bool {
        let known = self.known.clone();
        for port in known {
            let Ok(Frame::Array(ranges)) = self.call_at(port, &["CLUSTER", "SLOTS"]) else {
                continue;
            };
            let mut slots = vec![0u16; SLOT_COUNT];
            for r in &ranges {
                let Frame::Array(items) = r else { continue };
                let (Some(Frame::Integer(a)), Some(Frame::Integer(b)), Some(Frame::Array(m))) =
                    (items.first(), items.get(1), items.get(2))
                else {
                    continue;
                };
                let Some(Frame::Integer(p)) = m.get(1) else {
                    continue;
                };
                let p = *p as u16;
                if !self.known.contains(&p) {
                    self.known.push(p);
                }
                for s in (*a).max(0)..=(*b).min(SLOT_COUNT as i64 - 1) {
                    slots[s as usize] = p;
                }
            }
            self.slots = slots;
            return true;
        }
        false
    }

    /// One command on the node at `port` (its connection is dropped on any I/O error).
    pub fn call_at(&mut self, port: u16, args: &[&str]) -> Result<Frame, String> {
        if !self.conns.contains_key(&port) {
            let c = Conn::connect(port, self.timeout)?;
            self.conns.insert(port, c);
        }
        let Some(c) = self.conns.get_mut(&port) else {
            return Err("no connection".into());
        };
        let r = c.call(args);
        if r.is_err() {
            self.conns.remove(&port);
        }
        r
    }

    /// The node currently believed to serve `key`.
    pub fn owner(&self, key: &str) -> u16 {
        self.slots[key_slot(key.as_bytes()) as usize]
    }

    /// Sends `args` (whose key is `key`) to the slot's owner, following up to 5 redirections.
    /// Error replies other than redirections are returned as `Err("<reply text>")`.
    pub fn call(&mut self, key: &str, args: &[&str]) -> Result<Frame, String> {
        let slot = key_slot(key.as_bytes()) as usize;
        let mut asking: Option<u16> = None;
        for _ in 0..5 {
            let port = asking.unwrap_or(self.slots[slot]);
            if port == 0 {
                self.refresh();
                return Err("slot not covered".into());
            }
            if asking.is_some() {
                self.call_at(port, &["ASKING"])?;
            }
            let reply = self.call_at(port, args)?;
            let Frame::Error(e) = &reply else {
                return Ok(reply);
            };
            let e = String::from_utf8_lossy(e).into_owned();
            let mut w = e.split(' ');
            let kind = w.next().unwrap_or("");
            let target = w
                .nth(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            match (kind, target) {
                ("MOVED", Some(p)) => {
                    self.slots[slot] = p;
                    if !self.known.contains(&p) {
                        self.known.push(p);
                    }
                    asking = None;
                }
                ("ASK", Some(p)) => asking = Some(p),
                _ => return Err(e),
            }
        }
        Err("too many redirections".into())
    }
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The key (written once).
    pub key: String,
    /// The value the server acknowledged.
    pub value: String,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// What a writer did.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Every acknowledged write, in order.
    pub acks: Vec<Ack>,
    /// Failed attempts by error kind (first word of the error).
    pub errors: BTreeMap<String, u64>,
}

/// A background thread writing `SET <prefix>:<n> v<n>` (each key once) through a
/// [`SlotClient`] as fast as it gets replies, recording every acknowledged write.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<JoinHandle<WriterLog>>,
}

impl Writer {
    /// Starts writing keys whose slot passes `only` (all keys when None).
    pub fn start(seeds: Vec<u16>, prefix: &str, only: Option<Vec<(u16, u16)>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
        let handle = std::thread::spawn(move || {
            let mut log = WriterLog::default();
            let mut client = SlotClient::new(&seeds, Duration::from_secs(5));
            let mut n: u64 = 0;
            // Bounded by the stop flag (the test always stops it) and a 10-minute backstop.
            let t0 = Instant::now();
            while !s.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(600) {
                n += 1;
                let key = format!("{prefix}:{n}");
                if let Some(r) = &only {
                    if !in_ranges(r, key_slot(key.as_bytes())) {
                        continue;
                    }
                }
                let value = format!("v{n}");
                match client.call(&key, &["SET", &key, &value]) {
                    Ok(Frame::Simple(ok)) if &ok[..] == b"OK" => {
                        log.acks.push(Ack {
                            key,
                            value,
                            at: Instant::now(),
                        });
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => {
                        *log.errors.entry(format!("reply {other:?}")).or_default() += 1;
                    }
                    Err(e) => {
                        let kind = e.split([' ', ':']).next().unwrap_or("").to_string();
                        *log.errors.entry(kind).or_default() += 1;
                        std::thread::sleep(Duration::from_millis(10));
                        client.refresh();
                    }
                }
            }
            log
        });
        Writer {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` more writes have been acknowledged.
    pub fn wait_more(&self, n: u64, limit: Duration) {
        let base = self.acked();
        wait_until(&format!("{n} more acknowledged writes"), limit, || {
            self.acked() >= base + n
        });
    }

    /// Stops the thread and returns its log.
    pub fn stop(mut self) -> WriterLog {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads every acknowledged key back through the redis crate's cluster client (an independent
/// client implementation); returns the keys that are missing or hold another value.
pub fn missing_acks(seeds: &[u16], acks: &[Ack]) -> Vec<(String, String, Option<String>)> {
    let urls: Vec<String> = seeds
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let client = redis::cluster::ClusterClient::builder(urls)
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5))
        .build()
        .expect("cluster client");
    let mut conn = client.get_connection().expect("cluster connection");
    let mut missing = Vec::new();
    for a in acks {
        let got: Option<String> = redis::cmd("GET")
            .arg(&a.key)
            .query(&mut conn)
            .unwrap_or_else(|e| Some(format!("error: {e}")));
        if got.as_deref() != Some(a.value.as_str()) {
            missing.push((a.key.clone(), a.value.clone(), got));
        }
    }
    missing
}
