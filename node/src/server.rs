//! The server: shared state (config, keyspace, clients, pub/sub, stats), the accept loop and
//! the background cycles (active expiry).

use crate::client::ClientHandle;
use crate::config::Config;
use crate::db::Keyspace;
use crate::log::{Level, Logger};
use crate::pubsub::PubSub;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version reported in INFO and HELLO (the Redis version whose behaviour we follow).
pub const REDIS_VERSION: &str = "7.0.15";

/// Number of stripes of a [`Striped`] counter.
const STRIPES: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct PaddedU64(AtomicU64);

/// A counter split into cache-line-padded stripes so connections on different cores do not
/// fight over one cache line on every command; reads sum the stripes.
#[derive(Default)]
pub struct Striped {
    stripes: [PaddedU64; STRIPES],
}

impl Striped {
    /// Adds `n` on the stripe of `key` (a client id).
    #[inline]
    pub fn add(&self, key: u64, n: u64) {
        self.stripes[key as usize % STRIPES]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The total (the `Ordering` is accepted for call-site symmetry with atomics).
    pub fn load(&self, _o: Ordering) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0u64, |a, b| a.wrapping_add(b))
    }

    /// Resets the total to `v`.
    pub fn store(&self, v: u64, _o: Ordering) {
        for (i, s) in self.stripes.iter().enumerate() {
            s.0.store(if i == 0 { v } else { 0 }, Ordering::Relaxed);
        }
    }
}

/// Server-wide counters for INFO.
#[derive(Default)]
pub struct Stats {
    /// total_connections_received
    pub connections: AtomicU64,
    /// total_commands_processed
    pub commands: Striped,
    /// expired_keys
    pub expired: AtomicU64,
    /// rejected_connections
    pub rejected: AtomicU64,
    /// total_net_input_bytes
    pub net_in: Striped,
    /// total_net_output_bytes
    pub net_out: Striped,
    /// Changes since the last save (rdb_changes_since_last_save).
    pub dirty: Striped,
    /// total_error_replies
    pub errors: Striped,
}

/// Per-command statistics (INFO commandstats).
#[derive(Default, Clone, Copy)]
pub struct CmdStat {
    /// Calls.
    pub calls: u64,
    /// Total microseconds.
    pub usec: u64,
    /// Rejected calls (arity, auth...).
    pub rejected: u64,
    /// Calls that returned an error.
    pub failed: u64,
}

/// One SLOWLOG entry.
#[derive(Clone)]
pub struct SlowEntry {
    /// Unique id.
    pub id: u64,
    /// Unix seconds.
    pub time: u64,
    /// Duration in microseconds.
    pub micros: u64,
    /// Arguments (trimmed as Redis does).
    pub args: Vec<bytes::Bytes>,
    /// Client address.
    pub addr: String,
    /// Client name.
    pub name: String,
}

/// The slow log.
#[derive(Default)]
pub struct SlowLog {
    /// Newest first.
    pub entries: VecDeque<SlowEntry>,
    /// Next id.
    pub next_id: u64,
}

/// Everything the connections of one server share.
pub struct Server {
    /// Effective configuration (CONFIG GET/SET).
    pub config: RwLock<Config>,
    /// The databases.
    pub ks: Keyspace,
    /// Logger.
    pub log: Logger,
    /// Connected clients by id.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    /// Next client id.
    pub next_client_id: AtomicU64,
    /// Pub/Sub registry.
    pub pubsub: PubSub,
    /// Counters.
    pub stats: Stats,
    /// Per-command counters, striped by client id (see [`Server::cmdstats_snapshot`]).
    cmdstats: Vec<Mutex<BTreeMap<&'static str, CmdStat>>>,
    /// Cached `slowlog-log-slower-than` (read on every command without the config lock).
    pub slowlog_threshold: std::sync::atomic::AtomicI64,
    /// Cached `notify-keyspace-events` classes ([`crate::notify`]; 0 when nothing is published).
    pub notify_flags: std::sync::atomic::AtomicU32,
    /// Cached compact-encoding thresholds (`hash-max-listpack-entries` & co.).
    pub compact: crate::value::CompactLimits,
    /// SLOWLOG.
    pub slowlog: Mutex<SlowLog>,
    /// 40-hex run id.
    pub run_id: String,
    /// Process start.
    pub started: Instant,
    /// Unix seconds of the last successful save (LASTSAVE).
    pub last_save: AtomicU64,
    /// Set when SHUTDOWN was requested.
    pub shutting_down: AtomicBool,
    /// Wakes the accept loop on shutdown.
    pub shutdown: tokio::sync::Notify,
    /// False while DEBUG SET-ACTIVE-EXPIRE 0 is in force.
    pub active_expire: AtomicBool,
    /// Listening TCP port.
    pub port: AtomicU64,
    /// Command handlers.
    pub registry: crate::cmd::Registry,
    /// `rename-command`: the names clients must use instead (lowercase) → the command's own
    /// name, and the renamed or disabled originals → None. Empty in most deployments.
    pub renames: hashbrown::HashMap<Vec<u8>, Option<&'static str>>,
    /// Clients in MONITOR mode.
    pub monitors: Mutex<Vec<Arc<ClientHandle>>>,
    /// Number of MONITOR clients.
    pub monitor_count: AtomicU64,
    /// Client I/O worker threads (`io-threads`, default one per core) and their balancer.
    pub io: crate::workers::Pool,
    /// True when `requirepass` is set (checked on every command; updated by CONFIG SET).
    pub auth_required: AtomicBool,
    /// Cluster mode state (`cluster-enabled yes`), None in standalone mode.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Replication state: role, replication ID and offset, replicas, master link.
    pub repl: crate::replication::Replication,
    /// A weak handle to ourselves (for handlers that must start tasks owning the server).
    pub me: std::sync::OnceLock<std::sync::Weak<Server>>,
    /// The background freeing thread (UNLINK, FLUSHALL/FLUSHDB ASYNC).
    pub lazyfree: crate::lazyfree::LazyFree,
    /// `maxmemory` and its evictions.
    pub evict: crate::evict::Evictor,
    /// RDB saves (SAVE, BGSAVE, save points).
    pub persist: crate::persist::Persistence,
}

/// Random 40-hex identifier (run ids, node ids, replication ids).
pub fn random_hex40() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

impl Server {
    /// Builds the server state from a configuration.
    pub fn new(config: Config) -> anyhow::Result<Server> {
        let mut renames = hashbrown::HashMap::new();
        for (from, _) in &config.renames {
            renames.insert(from.as_bytes().to_vec(), None);
        }
        for (from, to) in &config.renames {
            let name = slotgate_protocol::commands::lookup(from.as_bytes()).map(|s| s.name);
            if let (false, Some(name)) = (to.is_empty(), name) {
                renames.insert(to.as_bytes().to_vec(), Some(name));
            }
        }
        let log = Logger::new(
            config.get("logfile"),
            Level::from_name(config.get("loglevel")),
        )?;
        let dbs = config.get_int("databases").max(1) as usize;
        let auth = !config.get("requirepass").is_empty();
        let slowlog_threshold = config.get_int("slowlog-log-slower-than");
        // `io-threads` (a redis.conf directive) sets the client I/O threads; default every core.
        let workers = if config.explicit.contains(&"io-threads") {
            config.get_int("io-threads").max(1) as usize
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        };
        // Cluster mode: load or create the node identity and cluster config file.
        let cluster = if config.get_bool("cluster-enabled") {
            Some(Arc::new(crate::cluster::Cluster::new(&config, &log)?))
        } else {
            None
        };
        Ok(Server {
            cluster,
            repl: crate::replication::Replication::new(
                config.get_int("repl-backlog-size").max(0) as usize
            ),
            me: std::sync::OnceLock::new(),
            lazyfree: crate::lazyfree::LazyFree::new(),
            evict: crate::evict::Evictor::default(),
            persist: crate::persist::Persistence::default(),
            ks: Keyspace::new(dbs),
            log,
            config: RwLock::new(config),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            pubsub: PubSub::default(),
            stats: Stats::default(),
            cmdstats: (0..STRIPES).map(|_| Mutex::new(BTreeMap::new())).collect(),
            slowlog_threshold: std::sync::atomic::AtomicI64::new(slowlog_threshold),
            notify_flags: std::sync::atomic::AtomicU32::new(0),
            compact: Default::default(),
            slowlog: Mutex::new(SlowLog::default()),
            run_id: random_hex40(),
            started: Instant::now(),
            last_save: AtomicU64::new(crate::db::now_ms() / 1000),
            shutting_down: AtomicBool::new(false),
            shutdown: tokio::sync::Notify::new(),
            active_expire: AtomicBool::new(true),
            port: AtomicU64::new(0),
            registry: crate::cmd::Registry::new(),
            renames,
            monitors: Mutex::new(Vec::new()),
            monitor_count: AtomicU64::new(0),
            auth_required: AtomicBool::new(auth),
            io: crate::workers::Pool::new(workers),
        })
    }

    /// True when at least one client is in MONITOR mode (cheap check on every command).
    pub fn has_monitors(&self) -> bool {
        self.monitor_count.load(Ordering::Relaxed) > 0
    }

    /// Adds a MONITOR client.
    pub fn add_monitor(&self, h: Arc<ClientHandle>) {
        let mut m = self.monitors.lock();
        m.push(h);
        self.monitor_count.store(m.len() as u64, Ordering::Relaxed);
    }

    /// Removes a MONITOR client.
    pub fn remove_monitor(&self, id: u64) {
        let mut m = self.monitors.lock();
        m.retain(|h| h.id != id);
        self.monitor_count.store(m.len() as u64, Ordering::Relaxed);
    }

    /// True when clients must AUTH before running commands.
    pub fn requires_auth(&self) -> bool {
        self.auth_required.load(Ordering::Relaxed)
    }

    /// The server as an `Arc` (None only while it is being torn down).
    pub fn self_arc(&self) -> Option<Arc<Server>> {
        self.me.get().and_then(|w| w.upgrade())
    }

    /// Sends a MONITOR line for a command to every monitoring client.
    pub fn feed_monitors(&self, db: usize, addr: &str, args: &[bytes::Bytes]) {
        if !self.has_monitors() {
            return;
        }
        let mons = self.monitors.lock();
        if mons.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = format!(
            "{}.{:06} [{} {}]",
            now.as_secs(),
            now.subsec_micros(),
            db,
            addr
        );
        for a in args {
            line.push_str(" \"");
            for &b in a.iter() {
                match b {
                    b'\\' => line.push_str("\\\\"),
                    b'"' => line.push_str("\\\""),
                    b'\n' => line.push_str("\\n"),
                    b'\r' => line.push_str("\\r"),
                    b'\t' => line.push_str("\\t"),
                    7 => line.push_str("\\a"),
                    8 => line.push_str("\\b"),
                    0x20..=0x7e => line.push(b as char),
                    _ => line.push_str(&format!("\\x{b:02x}")),
                }
            }
            line.push('"');
        }
        for m in mons.iter() {
            if m.push
                .try_send(crate::client::Push::Monitor(line.clone()))
                .is_err()
            {
                m.kill();
            }
        }
    }

    /// INFO commandstats: the per-command counters summed over the stripes.
    pub fn cmdstats_snapshot(&self) -> BTreeMap<&'static str, CmdStat> {
        let mut out: BTreeMap<&'static str, CmdStat> = BTreeMap::new();
        for stripe in &self.cmdstats {
            for (k, v) in stripe.lock().iter() {
                let e = out.entry(k).or_default();
                e.calls += v.calls;
                e.usec += v.usec;
                e.rejected += v.rejected;
                e.failed += v.failed;
            }
        }
        out
    }

    /// CONFIG RESETSTAT: clears the per-command counters.
    pub fn cmdstats_reset(&self) {
        for stripe in &self.cmdstats {
            stripe.lock().clear();
        }
    }

    /// Re-reads configuration values cached for the hot path (after CONFIG SET).
    pub fn refresh_cached_config(&self) {
        let c = self.config.read();
        self.notify_flags.store(
            crate::notify::parse(c.get("notify-keyspace-events"))
                .map(crate::notify::effective)
                .unwrap_or(0),
            Ordering::Relaxed,
        );
        self.slowlog_threshold
            .store(c.get_int("slowlog-log-slower-than"), Ordering::Relaxed);
        self.auth_required
            .store(!c.get("requirepass").is_empty(), Ordering::Relaxed);
        self.repl.min_replicas.store(
            c.get_int("min-replicas-to-write").max(0) as u64,
            Ordering::Relaxed,
        );
        self.repl.min_replicas_lag.store(
            c.get_int("min-replicas-max-lag").max(0) as u64,
            Ordering::Relaxed,
        );
        self.evict.configure(&c);
        let compact = &self.compact;
        for (slot, name) in [
            (&compact.hash_entries, "hash-max-listpack-entries"),
            (&compact.hash_value, "hash-max-listpack-value"),
            (&compact.zset_entries, "zset-max-listpack-entries"),
            (&compact.zset_value, "zset-max-listpack-value"),
            (&compact.intset_entries, "set-max-intset-entries"),
        ] {
            slot.store(c.get_int(name).max(0) as usize, Ordering::Relaxed);
        }
        let access = &self.ks.access;
        access.lfu.store(
            c.get("maxmemory-policy").ends_with("-lfu"),
            Ordering::Relaxed,
        );
        access.lfu_log_factor.store(
            c.get_int("lfu-log-factor").clamp(0, u32::MAX as i64) as u32,
            Ordering::Relaxed,
        );
        access.lfu_decay_time.store(
            c.get_int("lfu-decay-time").clamp(0, u32::MAX as i64) as u32,
            Ordering::Relaxed,
        );
    }

    /// Records a finished command in the stats and, if slow enough, in the slow log.
    pub fn record_command(
        &self,
        name: &'static str,
        micros: u64,
        failed: bool,
        args: &[bytes::Bytes],
        client: &ClientHandle,
    ) {
        {
            let mut cs = self.cmdstats[client.id as usize % STRIPES].lock();
            match cs.get_mut(name) {
                Some(e) => {
                    e.calls += 1;
                    e.usec += micros;
                    e.failed += failed as u64;
                }
                None => {
                    cs.insert(
                        name,
                        CmdStat {
                            calls: 1,
                            usec: micros,
                            rejected: 0,
                            failed: failed as u64,
                        },
                    );
                }
            }
        }
        let threshold = self.slowlog_threshold.load(Ordering::Relaxed);
        if threshold >= 0 && micros >= threshold as u64 {
            let max = self.config.read().get_int("slowlog-max-len").max(0) as usize;
            let mut sl = self.slowlog.lock();
            let id = sl.next_id;
            sl.next_id += 1;
            let mut trimmed: Vec<bytes::Bytes> = args.iter().take(32).cloned().collect();
            if args.len() > 32 {
                trimmed[31] = format!("... ({} more arguments)", args.len() - 31).into();
            }
            for a in trimmed.iter_mut() {
                if a.len() > 128 {
                    *a = format!(
                        "{}... ({} more bytes)",
                        String::from_utf8_lossy(&a[..128]),
                        a.len() - 128
                    )
                    .into();
                }
            }
            sl.entries.push_front(SlowEntry {
                id,
                time: crate::db::now_ms() / 1000,
                micros,
                args: trimmed,
                addr: client.addr.clone(),
                name: client.name(),
            });
            sl.entries.truncate(max);
        }
    }
}

/// Runs the server until SHUTDOWN: binds, logs readiness, accepts clients, runs active expiry.
pub async fn run(server: Arc<Server>) -> anyhow::Result<()> {
    let (port, binds) = {
        let c = server.config.read();
        (c.get_int("port") as u16, c.get("bind").to_string())
    };
    let mut addrs: Vec<String> = binds
        .split_whitespace()
        .filter(|a| !a.starts_with('-') || a.len() > 1)
        .map(|a| a.trim_start_matches('-').to_string())
        .collect();
    if addrs.is_empty() {
        addrs.push("*".into());
    }
    // Check every address with a plain bind first (clear errors, port 0 resolved), then each
    // worker thread binds its own SO_REUSEPORT listener on it.
    let mut sockaddrs: Vec<std::net::SocketAddr> = Vec::new();
    let mut real_port = port;
    for a in &addrs {
        let addr = match a.as_str() {
            "*" => format!("0.0.0.0:{real_port}"),
            "::*" => format!("[::]:{real_port}"),
            ip if ip.contains(':') => format!("[{ip}]:{real_port}"),
            ip => format!("{ip}:{real_port}"),
        };
        match std::net::TcpListener::bind(&addr).and_then(|l| l.local_addr()) {
            Ok(sa) => {
                real_port = sa.port();
                sockaddrs.push(sa);
            }
            Err(e) if a == "::*" => {
                server.log.verbose(&format!("Skipping {addr}: {e}"));
            }
            Err(e) => {
                server.log.warning(&format!(
                    "Warning: Could not create server TCP listening socket {addr}: {e}"
                ));
                anyhow::bail!("Failed listening on port {port} (tcp), aborting.");
            }
        }
    }
    // The RDB file, before any client can connect.
    notify_systemd(&server, &[b"STATUS=Redis is loading...\n"]);
    if let Err(e) = crate::persist::load(&server) {
        server.log.warning(&e);
        anyhow::bail!("{e}");
    }
    let unix = match bind_unix_socket(&server) {
        Ok(u) => u,
        Err(e) => {
            server
                .log
                .warning(&format!("Failed opening Unix socket: {e}"));
            anyhow::bail!("Failed opening Unix socket: {e}");
        }
    };
    let unix_path = unix.as_ref().map(|(_, p)| p.clone());
    if let Err(e) = crate::workers::start(&server, &sockaddrs, unix) {
        anyhow::bail!("Failed listening on port {real_port} (tcp): {e}");
    }
    tokio::spawn(crate::workers::balance(server.clone()));
    server.port.store(real_port as u64, Ordering::Relaxed);
    write_pidfile(&server);
    server.log.notice(&format!(
        "Server initialized (slotgate-node {}, port {real_port})",
        env!("CARGO_PKG_VERSION")
    ));
    server.log.notice("Ready to accept connections tcp");
    if let Some(path) = &unix_path {
        server.log.notice(&format!(
            "The server is now ready to accept connections at {path}"
        ));
    }
    notify_systemd(
        &server,
        &[b"STATUS=Ready to accept connections\n", b"READY=1\n"],
    );

    server.refresh_cached_config();
    // Replication: replica links run on this (control) runtime.
    let _ = server.repl.control.set(tokio::runtime::Handle::current());
    tokio::spawn(crate::replication::master::heartbeat(server.clone()));
    let replicaof = server.config.read().get("replicaof").to_string();
    if let Some((host, port)) = replicaof.split_once(' ') {
        if let Ok(port) = port.trim().parse::<u16>() {
            crate::replication::Replication::start_as_replica(&server, (host.to_string(), port));
        }
    }
    // Cluster mode: the gossip bus on port + 10000 (or cluster-port).
    if server.cluster.is_some() {
        crate::cluster::bus::start(server.clone(), &addrs, real_port).await?;
    }
    // Prometheus /metrics on `metrics-port` (node/src/metrics.rs).
    let metrics_port = server.config.read().get_int("metrics-port");
    if metrics_port > 0 {
        crate::metrics::start(server.clone(), &sockaddrs, metrics_port as u16).await?;
    }
    tokio::spawn(active_expire_cycle(server.clone()));
    tokio::spawn(crate::evict::background(server.clone()));
    tokio::spawn(crate::persist::cron(server.clone()));
    server.shutdown.notified().await;
    server.log.warning("User requested shutdown...");
    // SIGTERM: the final save (SHUTDOWN made its own before replying).
    if !server.persist.final_done.load(Ordering::Acquire) {
        let srv = server.clone();
        let _ = tokio::task::spawn_blocking(move || {
            crate::persist::save_on_shutdown(&srv, false, false)
        })
        .await;
    }
    let pidfile = server.config.read().get("pidfile").to_string();
    if !pidfile.is_empty() {
        let _ = std::fs::remove_file(pidfile);
    }
    if let Some(path) = unix_path {
        server.log.notice("Removing the unix socket file.");
        let _ = std::fs::remove_file(path);
    }
    server.log.warning("Redis is now ready to exit, bye bye...");
    Ok(())
}

/// Binds the `unixsocket` listener, if one is configured, as redis-server: a file left at the
/// path is replaced, and `unixsocketperm` (octal) sets its mode.
fn bind_unix_socket(server: &Server) -> std::io::Result<Option<crate::workers::UnixListener>> {
    let (path, perm) = {
        let c = server.config.read();
        (
            c.get("unixsocket").to_string(),
            c.get("unixsocketperm").to_string(),
        )
    };
    if path.is_empty() {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)?;
    let perm = u32::from_str_radix(&perm, 8).unwrap_or(0);
    if perm != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm))?;
    }
    Ok(Some((l, path)))
}

/// The systemd notification socket when `supervised` is `systemd`, or `auto` and systemd
/// started us (`NOTIFY_SOCKET` set), as redis-server decides.
pub fn systemd_socket(config: &Config) -> Option<String> {
    let path = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|p| !p.is_empty())?;
    matches!(config.get("supervised"), "systemd" | "auto").then_some(path)
}

/// Under systemd (`Type=notify` units, as Debian's redis-server.service): sends `messages`
/// to its notification socket, as redis-server does while loading and once ready.
fn notify_systemd(server: &Server, messages: &[&[u8]]) {
    let Some(path) = systemd_socket(&server.config.read()) else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let sock = UnixDatagram::unbound()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        for m in messages {
            sock.send_to_addr(m, &addr)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        server
            .log
            .warning(&format!("Can't notify systemd ({path}): {e}"));
    }
}

/// Where a daemonized server without `pidfile` writes its pid (redis-server's default).
const DEFAULT_PIDFILE: &str = "/var/run/redis.pid";

fn write_pidfile(server: &Server) {
    let mut pidfile = server.config.read().get("pidfile").to_string();
    if pidfile.is_empty() && server.config.read().get_bool("daemonize") {
        pidfile = DEFAULT_PIDFILE.to_string();
        let _ = server.config.write().set("pidfile", &pidfile);
    }
    if !pidfile.is_empty() {
        if let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id())) {
            server
                .log
                .warning(&format!("Failed to write PID file {pidfile}: {e}"));
        }
    }
}

/// Deletes expired keys in the background, a slice of shards every tick, so keys that are
/// never read again do not pile up (Redis's active expire cycle).
async fn active_expire_cycle(server: Arc<Server>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next = 0usize;
    loop {
        tick.tick().await;
        // Replicas leave expiry to their master (it sends the DELs), as Redis.
        // Expiry also waits out a CLIENT PAUSE (its DELs are writes), as Redis.
        if !server.active_expire.load(Ordering::Relaxed)
            || server.repl.is_replica()
            || (server.repl.pause_set() && server.repl.writes_paused(crate::db::now_ms()))
        {
            continue;
        }
        let now = crate::db::now_ms();
        let mut removed = Vec::new();
        for d in 0..server.ks.count() {
            let Some(db) = server.ks.existing(d) else {
                continue;
            };
            for i in 0..32 {
                let idx = (next + i) % crate::db::SHARDS;
                let mut shard = db.lock_shard(idx);
                removed.clear();
                shard.purge_expired_into(now, &mut removed);
                if !removed.is_empty() {
                    server
                        .stats
                        .expired
                        .fetch_add(removed.len() as u64, Ordering::Relaxed);
                    // DELs enter the stream while the shard is still locked (stream order).
                    for k in &removed {
                        server.repl.propagate(d, &[b"DEL", k]);
                    }
                    drop(shard);
                    let flags = server.notify_flags.load(Ordering::Relaxed);
                    if flags & crate::notify::EXPIRED != 0 {
                        for k in &removed {
                            crate::notify::publish(
                                &server,
                                flags,
                                crate::notify::EXPIRED,
                                "expired",
                                k,
                                d,
                            );
                        }
                    }
                }
            }
        }
        next = (next + 32) % crate::db::SHARDS;
    }
}
