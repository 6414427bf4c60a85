//! Prometheus metrics (`--metrics ADDR` serves `/metrics`); every name starts `slotgate_`.
//!
//! Commands by command and outcome, latency histograms by command, backend requests and
//! latency by node, redirects by kind, slot-map refreshes, backend connection state, client
//! connections, bytes in/out, errors by kind.

use crate::router::Router;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets in seconds (50 µs .. 5 s).
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Installs the metrics recorder and serves `/metrics` on `addr` from a thread of its own.
///
/// Counters and gauges go through the `metrics` facade and its Prometheus recorder. The two
/// per-request latency histograms are [`Latency`] series rendered beside them: the recorder's
/// histograms keep every sample until the next scrape or upkeep, which under load cost the
/// proxy a fifth of its CPU and tens of MB of memory.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let _ = LATENCIES.set(Latencies::default());
    describe();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve_http(listener, handle))?;
    Ok(())
}

/// Answers scrapes one connection at a time (bounded: 8 KiB of request, 5 s per connection).
fn serve_http(listener: std::net::TcpListener, handle: PrometheusHandle) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = answer_http(&mut conn, &handle);
    }
}

fn answer_http(conn: &mut std::net::TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics" | b"/") => {
            handle.run_upkeep();
            let mut body = handle.render();
            if let Some(l) = LATENCIES.get() {
                l.render(&mut body);
            }
            ("200 OK", body)
        }
        (b"GET" | b"HEAD", _) => ("404 Not Found", "not found; try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != b"HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

/// The latency histograms: name, label name, help.
const LATENCY_FAMILIES: &[(&str, &str, &str)] = &[
    (
        COMMAND_DURATION,
        "command",
        "Client command latency by command.",
    ),
    (
        BACKEND_DURATION,
        "node",
        "Backend round-trip latency by node.",
    ),
];
const COMMAND_DURATION: &str = "slotgate_command_duration_seconds";
const BACKEND_DURATION: &str = "slotgate_backend_duration_seconds";

/// The process's latency series (set by [`install`]; without it every [`Latency`] is a no-op,
/// as `metrics` handles are without a recorder).
static LATENCIES: std::sync::OnceLock<Latencies> = std::sync::OnceLock::new();

/// Every latency series, by (histogram name, label value).
#[derive(Default)]
struct Latencies {
    series: parking_lot::Mutex<std::collections::BTreeMap<(&'static str, String), Arc<Buckets>>>,
}

/// One series: counts per bucket of [`BUCKETS`] (not cumulative; the last is +Inf) and the sum.
struct Buckets {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latencies {
    fn series(&self, name: &'static str, label: &str) -> Arc<Buckets> {
        self.series
            .lock()
            .entry((name, label.to_string()))
            .or_insert_with(|| {
                Arc::new(Buckets {
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_ns: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Appends every series in Prometheus's text format.
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let series = self.series.lock();
        for (name, label, help) in LATENCY_FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ((n, value), b) in series.iter() {
                if n != name {
                    continue;
                }
                let value = escape_label(value);
                let mut total = 0u64;
                for (i, c) in b.counts.iter().enumerate() {
                    total += c.load(Ordering::Relaxed);
                    let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {total}"
                    );
                }
                let sum = b.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum}");
                let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {total}");
            }
        }
    }
}

/// A label value escaped for the text format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A handle on one latency series; observations reach it through a [`LatencyBatch`] (a few
/// relaxed atomic adds per batch; nothing is buffered).
#[derive(Clone, Default)]
pub struct Latency(Option<Arc<Buckets>>);

impl Latency {
    /// Client command latency of `command`.
    pub fn command(command: &str) -> Latency {
        Latency(LATENCIES.get().map(|l| l.series(COMMAND_DURATION, command)))
    }

    /// Backend round-trip latency of `node`.
    pub fn backend(node: &str) -> Latency {
        Latency(LATENCIES.get().map(|l| l.series(BACKEND_DURATION, node)))
    }
}

/// Observations gathered locally (a client's batch, a backend read) and added to a
/// [`Latency`] at once: one atomic add per bucket used instead of two per observation.
#[derive(Default)]
pub struct LatencyBatch {
    counts: [u32; BUCKETS.len() + 1],
    sum_ns: u64,
    n: u32,
}

impl LatencyBatch {
    /// Counts one observation.
    pub fn add(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[BUCKETS_NS.partition_point(|&bound| bound < ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.n += 1;
    }

    /// Adds the observations to `to` and starts over.
    pub fn flush(&mut self, to: &Latency) {
        if self.n == 0 {
            return;
        }
        if let Some(b) = &to.0 {
            for (shared, c) in b.counts.iter().zip(&mut self.counts) {
                if *c > 0 {
                    shared.fetch_add(u64::from(std::mem::take(c)), Ordering::Relaxed);
                }
            }
            b.sum_ns.fetch_add(self.sum_ns, Ordering::Relaxed);
        }
        *self = LatencyBatch::default();
    }
}

/// [`BUCKETS`] in nanoseconds.
const BUCKETS_NS: [u64; BUCKETS.len()] = {
    let mut out = [0u64; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        out[i] = (BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
};

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "slotgate_commands_total",
        "Client commands by command and outcome (ok, error)."
    );
    describe_counter!(
        "slotgate_backend_requests_total",
        "Requests sent to each backend node."
    );
    describe_counter!(
        "slotgate_redirects_total",
        "Cluster redirects and retries by kind (moved, ask, tryagain, clusterdown)."
    );
    describe_counter!("slotgate_errors_total", "Errors by kind.");
    describe_counter!(
        "slotgate_slotmap_refreshes_total",
        "Slot map refreshes by result."
    );
    describe_gauge!(
        "slotgate_slotmap_refresh_duration_seconds",
        "Duration of the last slot map refresh."
    );
    describe_gauge!(
        "slotgate_slotmap_last_success_age_seconds",
        "Seconds since the last successful refresh."
    );
    describe_gauge!(
        "slotgate_slotmap_version",
        "Version of the slot map in use."
    );
    describe_gauge!(
        "slotgate_slotmap_slots_covered",
        "Slots with a known owner."
    );
    describe_gauge!(
        "slotgate_backend_connections",
        "Established backend connections by node."
    );
    describe_gauge!("slotgate_backend_up", "1 when the node is not marked down.");
    describe_gauge!("slotgate_client_connections", "Connected clients.");
    describe_counter!(
        "slotgate_client_connections_total",
        "Accepted client connections."
    );
    describe_counter!(
        "slotgate_client_connections_rejected_total",
        "Rejected client connections (maxclients)."
    );
    describe_counter!("slotgate_bytes_in_total", "Bytes read from clients.");
    describe_counter!("slotgate_bytes_out_total", "Bytes written to clients.");
}

/// Per-connection cache of command metric handles, so the hot path does not build label sets
/// (an allocation and a registry lookup) for every request. Counts gather here and reach the
/// shared series once per batch of requests ([`CommandMetrics::flush`]).
pub struct CommandMetrics {
    handles: Vec<CommandHandles>,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
}

/// One command's handles and what this connection counted since the last flush.
struct CommandHandles {
    name: &'static str,
    ok: metrics::Counter,
    error: metrics::Counter,
    latency: Latency,
    ok_n: u64,
    error_n: u64,
    batch: LatencyBatch,
}

impl Default for CommandMetrics {
    fn default() -> Self {
        CommandMetrics {
            handles: Vec::new(),
            bytes_in: counter!("slotgate_bytes_in_total"),
            bytes_out: counter!("slotgate_bytes_out_total"),
        }
    }
}

impl CommandMetrics {
    /// Bytes read from / written to this client.
    pub fn bytes(&self, in_: u64, out: u64) {
        self.bytes_in.increment(in_);
        self.bytes_out.increment(out);
    }

    /// Counts one client command and records its latency (locally, until [`Self::flush`]).
    pub fn record(&mut self, name: &'static str, ok: bool, elapsed: Duration) {
        let i = match self.handles.iter().position(|h| std::ptr::eq(h.name, name)) {
            Some(i) => i,
            None => {
                // One slot at a time: a connection uses few commands, and an idle one should
                // not hold room for four.
                self.handles.reserve_exact(1);
                self.handles.push(CommandHandles {
                    name,
                    ok: counter!("slotgate_commands_total", "command" => name, "outcome" => "ok"),
                    error: counter!("slotgate_commands_total", "command" => name, "outcome" => "error"),
                    latency: Latency::command(name),
                    ok_n: 0,
                    error_n: 0,
                    batch: LatencyBatch::default(),
                });
                self.handles.len() - 1
            }
        };
        let h = &mut self.handles[i];
        if ok {
            h.ok_n += 1;
        } else {
            h.error_n += 1;
        }
        h.batch.add(elapsed);
    }

    /// Adds what was counted since the last flush to the shared series.
    pub fn flush(&mut self) {
        for h in &mut self.handles {
            if h.ok_n > 0 {
                h.ok.increment(std::mem::take(&mut h.ok_n));
            }
            if h.error_n > 0 {
                h.error.increment(std::mem::take(&mut h.error_n));
            }
            h.batch.flush(&h.latency);
        }
    }
}

impl Drop for CommandMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Counts a redirect or retry.
pub fn redirect(kind: &'static str) {
    counter!("slotgate_redirects_total", "kind" => kind).increment(1);
}

/// Counts an error.
pub fn error(kind: &'static str) {
    counter!("slotgate_errors_total", "kind" => kind).increment(1);
}

/// Client connection accepted / closed / rejected.
pub fn client_opened() {
    counter!("slotgate_client_connections_total").increment(1);
    gauge!("slotgate_client_connections").increment(1.0);
}

/// A client went away.
pub fn client_closed() {
    gauge!("slotgate_client_connections").decrement(1.0);
}

/// A client was refused (maxclients).
pub fn client_rejected() {
    counter!("slotgate_client_connections_rejected_total").increment(1);
}

/// Periodically publishes router state as gauges.
pub async fn publish_loop(routers: Vec<Arc<Router>>) {
    let Some(router) = routers.first().cloned() else {
        return;
    };
    let mut last_ok = 0u64;
    let mut last_failed = 0u64;
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        first = false;
        let map = router.map();
        gauge!("slotgate_slotmap_version").set(map.version as f64);
        gauge!("slotgate_slotmap_slots_covered").set(map.covered() as f64);
        let st = &router.refresh_stats;
        let ok = st.ok.load(Ordering::Relaxed);
        let failed = st.failed.load(Ordering::Relaxed);
        counter!("slotgate_slotmap_refreshes_total", "result" => "ok").increment(ok - last_ok);
        counter!("slotgate_slotmap_refreshes_total", "result" => "error")
            .increment(failed - last_failed);
        last_ok = ok;
        last_failed = failed;
        gauge!("slotgate_slotmap_refresh_duration_seconds")
            .set(st.last_us.load(Ordering::Relaxed) as f64 / 1e6);
        let last = st.last_ok_ms.load(Ordering::Relaxed);
        if last > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            gauge!("slotgate_slotmap_last_success_age_seconds")
                .set(now.saturating_sub(last) as f64 / 1000.0);
        }
        let mut per_node: std::collections::BTreeMap<String, (u64, bool)> = Default::default();
        for r in &routers {
            for p in r.pools() {
                let e = per_node.entry(p.addr.to_string()).or_insert((0, true));
                e.0 += p.stats.connected.load(Ordering::Relaxed);
                e.1 &= p.is_up();
            }
        }
        for (node, (conns, up)) in per_node {
            gauge!("slotgate_backend_connections", "node" => node.clone()).set(conns as f64);
            gauge!("slotgate_backend_up", "node" => node).set(if up { 1.0 } else { 0.0 });
        }
    }
}
