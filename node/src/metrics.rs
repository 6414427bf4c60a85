//! Prometheus metrics for slotgate-node (`metrics-port N`, also `--metrics-port N`).
//!
//! A tiny HTTP/1.x responder on the control runtime: `GET /metrics` renders the text
//! exposition format from the live server state at every scrape (keyspace counts, per-command
//! stats, clients, memory, replication from [`crate::replication::info_fields`], cluster state
//! from [`crate::cluster::State::info_text`] and the bus counters). Nothing is recorded on the
//! request path; the only background work is a 100 ms sampler that counts promotions
//! (replica → master) for `slotgate_node_failovers_total`. Every name starts `slotgate_node_`.

use crate::server::Server;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest HTTP request head we read before answering 431.
const MAX_HEAD: usize = 8192;

/// Times this node was promoted from replica to master since start (sampled every 100 ms).
static FAILOVERS: AtomicU64 = AtomicU64::new(0);

/// Starts the exporter on `port` at every address the client listeners use (`bind`), plus the
/// promotion sampler. Fails when a metrics socket cannot be bound.
pub async fn start(server: Arc<Server>, addrs: &[SocketAddr], port: u16) -> anyhow::Result<()> {
    let mut bound = Vec::new();
    for a in addrs {
        let addr = SocketAddr::new(a.ip(), port);
        let sock = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        if let Err(e) = sock.bind(addr) {
            server.log.warning(&format!(
                "Warning: Could not create the metrics listening socket {addr}: {e}"
            ));
            anyhow::bail!("Failed listening on metrics port {port} (tcp), aborting.");
        }
        bound.push((addr, sock.listen(128)?));
    }
    for (addr, l) in bound {
        server.log.notice(&format!(
            "Serving Prometheus metrics on http://{addr}/metrics"
        ));
        tokio::spawn(accept_loop(server.clone(), l));
    }
    tokio::spawn(sample_promotions(server));
    Ok(())
}

async fn accept_loop(server: Arc<Server>, l: tokio::net::TcpListener) {
    loop {
        match l.accept().await {
            Ok((sock, _)) => {
                let s = server.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(s, sock)).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads one request head and answers it; the connection is closed afterwards.
async fn answer(server: Arc<Server>, mut sock: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut sock, "431 Request Header Fields Too Large", "", false).await;
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut sock, "405 Method Not Allowed", "", false).await;
    }
    match path {
        "/metrics" => {
            let body = render(&server);
            respond(&mut sock, "200 OK", &body, head_only).await
        }
        "/" => {
            let body = "slotgate-node: Prometheus metrics at /metrics\n";
            respond(&mut sock, "200 OK", body, head_only).await
        }
        _ => respond(&mut sock, "404 Not Found", "not found\n", head_only).await,
    }
}

async fn respond(
    sock: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    sock.write_all(out.as_bytes()).await?;
    sock.shutdown().await
}

/// Counts replica → master transitions (failovers that promoted this node).
async fn sample_promotions(server: Arc<Server>) {
    let mut was_replica = server.repl.is_replica();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let replica = server.repl.is_replica();
        if was_replica && !replica {
            FAILOVERS.fetch_add(1, Ordering::Relaxed);
        }
        was_replica = replica;
    }
}

/// The text exposition: one `# HELP`/`# TYPE` header per family, then its samples.
struct Out {
    s: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.s, "# HELP slotgate_node_{name} {help}");
        let _ = writeln!(self.s, "# TYPE slotgate_node_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.s.push_str("slotgate_node_");
        self.s.push_str(name);
        if !labels.is_empty() {
            self.s.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.s.push(',');
                }
                self.s.push_str(k);
                self.s.push_str("=\"");
                for c in val.chars() {
                    match c {
                        '\\' => self.s.push_str("\\\\"),
                        '"' => self.s.push_str("\\\""),
                        '\n' => self.s.push_str("\\n"),
                        c => self.s.push(c),
                    }
                }
                self.s.push('"');
            }
            self.s.push('}');
        }
        if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = writeln!(self.s, " {}", v as i64);
        } else {
            let _ = writeln!(self.s, " {v}");
        }
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], v);
    }
}

/// Resident set size of this process in bytes (slotgate has no allocator statistics; INFO
/// reports the same figure as `used_memory`).
fn rss_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// Parses `key:value` lines (CLUSTER INFO, INFO fields).
fn kv_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
}

/// Renders every metric from the current state.
pub fn render(server: &Server) -> String {
    let mut o = Out {
        s: String::with_capacity(8192),
    };
    let st = &server.stats;
    o.one(
        "uptime_seconds",
        "gauge",
        "Seconds since the node started.",
        server.started.elapsed().as_secs_f64(),
    );

    // Keyspace.
    let mut dbs = Vec::new();
    for d in 0..server.ks.count() {
        if let Some(db) = server.ks.existing(d) {
            dbs.push((d.to_string(), db.len(), db.expires()));
        }
    }
    o.family("keys", "gauge", "Keys per database.");
    for (d, k, _) in &dbs {
        o.sample("keys", &[("db", d)], *k as f64);
    }
    o.family("expires", "gauge", "Keys with an expiry per database.");
    for (d, _, e) in &dbs {
        o.sample("expires", &[("db", d)], *e as f64);
    }
    o.one(
        "expired_keys_total",
        "counter",
        "Keys deleted because they expired.",
        st.expired.load(Ordering::Relaxed) as f64,
    );
    let (hits, misses) = server.ks.lookup_stats();
    o.one(
        "keyspace_hits_total",
        "counter",
        "Successful key lookups.",
        hits as f64,
    );
    o.one(
        "keyspace_misses_total",
        "counter",
        "Failed key lookups.",
        misses as f64,
    );

    // Commands.
    let cmds = server.cmdstats_snapshot();
    o.family("commands_total", "counter", "Calls by command.");
    for (name, c) in &cmds {
        o.sample("commands_total", &[("command", name)], c.calls as f64);
    }
    o.family(
        "command_errors_total",
        "counter",
        "Calls that failed or were rejected, by command.",
    );
    for (name, c) in &cmds {
        o.sample(
            "command_errors_total",
            &[("command", name)],
            (c.failed + c.rejected) as f64,
        );
    }
    o.family(
        "command_duration_seconds_total",
        "counter",
        "Time spent executing each command.",
    );
    for (name, c) in &cmds {
        o.sample(
            "command_duration_seconds_total",
            &[("command", name)],
            c.usec as f64 / 1e6,
        );
    }
    o.one(
        "commands_processed_total",
        "counter",
        "Commands processed.",
        st.commands.load(Ordering::Relaxed) as f64,
    );

    // Clients, network, memory.
    o.one(
        "connected_clients",
        "gauge",
        "Connected clients.",
        server.clients.lock().len() as f64,
    );
    o.one(
        "connections_received_total",
        "counter",
        "Client connections accepted.",
        st.connections.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "rejected_connections_total",
        "counter",
        "Client connections rejected (maxclients).",
        st.rejected.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "net_input_bytes_total",
        "counter",
        "Bytes read from clients.",
        st.net_in.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "net_output_bytes_total",
        "counter",
        "Bytes written to clients.",
        st.net_out.load(Ordering::Relaxed) as f64,
    );
    o.one(
        "memory_used_bytes",
        "gauge",
        "Memory used (resident set size).",
        rss_bytes() as f64,
    );

    // Replication.
    let repl = crate::replication::info_fields(server);
    let field = |k: &str| repl.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    let num = |k: &str| field(k).and_then(|v| v.parse::<f64>().ok());
    // In cluster mode the cluster's view of this node's role is authoritative (replication
    // follows it); standalone, INFO's role.
    let is_master = match &server.cluster {
        Some(c) => c.state.lock().me().is_master(),
        None => field("role") != Some("slave"),
    };
    o.one(
        "is_master",
        "gauge",
        "1 when this node is a master, 0 when it is a replica.",
        if is_master { 1.0 } else { 0.0 },
    );
    let offset = num("master_repl_offset").unwrap_or(0.0);
    o.one(
        "repl_offset_bytes",
        "gauge",
        "Replication offset (master_repl_offset).",
        offset,
    );
    if is_master {
        o.one(
            "connected_replicas",
            "gauge",
            "Replicas connected to this master.",
            num("connected_slaves").unwrap_or(0.0),
        );
        // slaveN:ip=..,port=..,state=..,offset=..,lag=..
        let replicas: Vec<(String, f64, f64)> = repl
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, v)| {
                let f = |name: &str| {
                    v.split(',')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or("")
                };
                (
                    format!("{}:{}", f("ip"), f("port")),
                    f("offset").parse().unwrap_or(0.0),
                    f("lag").parse().unwrap_or(0.0),
                )
            })
            .collect();
        o.family(
            "replica_lag_bytes",
            "gauge",
            "Bytes of the stream each connected replica has not acknowledged yet.",
        );
        for (name, acked, _) in &replicas {
            o.sample(
                "replica_lag_bytes",
                &[("replica", name)],
                (offset - acked).max(0.0),
            );
        }
        o.family(
            "replica_lag_seconds",
            "gauge",
            "Seconds since each connected replica's last acknowledgement.",
        );
        for (name, _, lag) in &replicas {
            o.sample("replica_lag_seconds", &[("replica", name)], *lag);
        }
    } else {
        o.one(
            "repl_link_up",
            "gauge",
            "1 when this replica's link to its master is up.",
            if field("master_link_status") == Some("up") {
                1.0
            } else {
                0.0
            },
        );
        if let Some(io) = num("master_last_io_seconds_ago").filter(|v| *v >= 0.0) {
            o.one(
                "repl_last_io_seconds",
                "gauge",
                "Seconds since this replica last heard from its master.",
                io,
            );
        }
    }

    // Cluster.
    o.one(
        "cluster_enabled",
        "gauge",
        "1 in cluster mode.",
        if server.cluster.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(c) = &server.cluster {
        let (info, served, master_offset, sent, received) = {
            let st = c.state.lock();
            let master_offset = st
                .my_master()
                .and_then(|m| st.nodes.get(&m))
                .map(|m| m.repl_offset);
            (
                st.info_text(),
                st.me().slots.count(),
                master_offset,
                st.stats.sent,
                st.stats.received,
            )
        };
        if let (false, Some(mo)) = (is_master, master_offset) {
            o.one(
                "repl_lag_bytes",
                "gauge",
                "Bytes this replica is behind its master (master offset from the cluster bus).",
                (mo as f64 - offset).max(0.0),
            );
        }
        let kv = kv_lines(&info);
        let get = |k: &str| {
            kv.iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.parse::<f64>().ok())
        };
        o.one(
            "cluster_state",
            "gauge",
            "1 when cluster_state is ok.",
            if kv.iter().any(|(k, v)| *k == "cluster_state" && *v == "ok") {
                1.0
            } else {
                0.0
            },
        );
        o.one(
            "cluster_slots_served",
            "gauge",
            "Slots this node serves as a master.",
            served as f64,
        );
        for (k, help) in [
            ("cluster_slots_assigned", "Slots assigned to some master."),
            (
                "cluster_slots_ok",
                "Assigned slots whose master is reachable.",
            ),
            ("cluster_slots_pfail", "Slots whose master is PFAIL."),
            ("cluster_slots_fail", "Slots whose master is FAIL."),
            ("cluster_known_nodes", "Nodes in this node's table."),
            ("cluster_size", "Masters serving at least one slot."),
            ("cluster_current_epoch", "Cluster current epoch."),
            (
                "cluster_my_epoch",
                "Config epoch of this node (or its master).",
            ),
        ] {
            if let Some(v) = get(k) {
                o.one(k, "gauge", help, v);
            }
        }
        // Any further numeric field a later version of CLUSTER INFO adds (failover counters...).
        for (k, v) in &kv {
            let known = k.starts_with("cluster_stats_messages")
                || k.starts_with("cluster_slots_")
                || matches!(
                    *k,
                    "cluster_state"
                        | "cluster_known_nodes"
                        | "cluster_size"
                        | "cluster_current_epoch"
                        | "cluster_my_epoch"
                );
            let valid = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if let (false, true, Ok(n)) = (known, valid, v.parse::<f64>()) {
                o.one(k, "gauge", "CLUSTER INFO field.", n);
            }
        }
        o.family(
            "cluster_messages_sent_total",
            "counter",
            "Cluster bus messages sent, by type.",
        );
        for (i, name) in crate::cluster::bus::MSG_NAMES.iter().enumerate() {
            o.sample(
                "cluster_messages_sent_total",
                &[("type", name)],
                sent[i] as f64,
            );
        }
        o.family(
            "cluster_messages_received_total",
            "counter",
            "Cluster bus messages received, by type.",
        );
        for (i, name) in crate::cluster::bus::MSG_NAMES.iter().enumerate() {
            o.sample(
                "cluster_messages_received_total",
                &[("type", name)],
                received[i] as f64,
            );
        }
        o.one(
            "cluster_bus_bytes_sent_total",
            "counter",
            "Bytes written to the cluster bus.",
            c.bus_bytes_out.load(Ordering::Relaxed) as f64,
        );
        o.one(
            "cluster_bus_bytes_received_total",
            "counter",
            "Bytes read from the cluster bus.",
            c.bus_bytes_in.load(Ordering::Relaxed) as f64,
        );
    }
    o.one(
        "failovers_total",
        "counter",
        "Times this node was promoted from replica to master since it started.",
        FAILOVERS.load(Ordering::Relaxed) as f64,
    );
    o.s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut o = Out { s: String::new() };
        o.sample("x", &[("a", "q\"b\\n\n")], 1.5);
        assert_eq!(o.s, "slotgate_node_x{a=\"q\\\"b\\\\n\\n\"} 1.5\n");
        let mut o = Out { s: String::new() };
        o.sample("y", &[], 3.0);
        assert_eq!(o.s, "slotgate_node_y 3\n");
    }

    #[test]
    fn kv_lines_split_info_text() {
        let kv = kv_lines("cluster_state:ok\r\ncluster_size:3\r\n");
        assert_eq!(kv, vec![("cluster_state", "ok"), ("cluster_size", "3")]);
    }
}
