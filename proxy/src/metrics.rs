//! Prometheus metrics (`--metrics ADDR` serves `/metrics`); every name starts `slotgate_`.
//!
//! Commands by command and outcome, latency histograms by command, backend requests and
//! latency by node, redirects by kind, slot-map refreshes, backend connection state, client
//! connections, bytes in/out, errors by kind.

use crate::router::Router;
use metrics::{counter, gauge, histogram};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Latency buckets in seconds (50 µs .. 5 s).
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Installs the Prometheus exporter listening on `addr`.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(BUCKETS)?
        .install()?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "slotgate_commands_total",
        "Client commands by command and outcome (ok, error)."
    );
    describe_histogram!(
        "slotgate_command_duration_seconds",
        "Client command latency by command."
    );
    describe_counter!(
        "slotgate_backend_requests_total",
        "Requests sent to each backend node."
    );
    describe_histogram!(
        "slotgate_backend_duration_seconds",
        "Backend round-trip latency by node."
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
/// (an allocation and a registry lookup) for every request.
pub struct CommandMetrics {
    handles: Vec<(
        &'static str,
        metrics::Counter,
        metrics::Counter,
        metrics::Histogram,
    )>,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
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

    /// Counts one client command and records its latency.
    pub fn record(&mut self, name: &'static str, ok: bool, elapsed: Duration) {
        let i = match self.handles.iter().position(|h| std::ptr::eq(h.0, name)) {
            Some(i) => i,
            None => {
                self.handles.push((
                    name,
                    counter!("slotgate_commands_total", "command" => name, "outcome" => "ok"),
                    counter!("slotgate_commands_total", "command" => name, "outcome" => "error"),
                    histogram!("slotgate_command_duration_seconds", "command" => name),
                ));
                self.handles.len() - 1
            }
        };
        let h = &self.handles[i];
        if ok {
            h.1.increment(1);
        } else {
            h.2.increment(1);
        }
        h.3.record(elapsed.as_secs_f64());
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
