//! `slotgate --launch N`: the lab in one command. Spawns N `slotgate-node` processes (one
//! redis.conf and directory each under `--data-dir`), forms the cluster with
//! [`crate::create`] (or resumes the one the data directory holds), waits for
//! `cluster_state:ok`, prints the ready table and then serves as the proxy over it.
//!
//! The nodes are supervised by one dedicated thread ([`Fleet`]): a node that exits is logged
//! and restarted after a delay (1 s, doubling up to 30 s while it keeps crashing), restarts
//! are counted in `slotgate_launch_node_restarts_total`. SIGINT/SIGTERM: the proxy stops
//! accepting and drains, then the nodes get SIGTERM (SIGKILL after 10 s) and slotgate exits 0.
//! Nodes run in their own process group (a terminal's Ctrl-C reaches only slotgate, which
//! stops them in order) with `PR_SET_PDEATHSIG`, so they die with slotgate even when it is
//! SIGKILLed: no orphans.

use crate::admin::{format_ranges, parse_nodes, table, Admin};
use crate::config::Cli;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default proxy metrics address in launch mode (when `--metrics` is not given).
const DEFAULT_METRICS: &str = "127.0.0.1:9121";
/// First restart delay; doubles while a node keeps crashing.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Longest restart delay.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A node that ran this long before exiting gets the short delay again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long nodes get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One node of the fleet.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Client port (bus: port + 10000).
    pub port: u16,
    /// Its directory (redis.conf, nodes.conf, node.log, node.pid).
    pub dir: PathBuf,
}

impl NodeSpec {
    fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// What the supervisor shares about each node.
#[derive(Debug, Default, Clone)]
pub struct NodeState {
    /// PID of the running process.
    pub pid: Option<u32>,
    /// Times the process exited.
    pub exits: u64,
    /// Times it was restarted.
    pub restarts: u64,
}

/// The supervised node processes.
pub struct Fleet {
    states: Arc<parking_lot::Mutex<Vec<NodeState>>>,
    stopping: Arc<AtomicBool>,
    stop_tx: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fleet {
    /// Spawns every node from the supervisor thread (the children's parent-death signal is
    /// tied to the thread that forks them, so one long-lived thread forks them all).
    pub fn start(bin: PathBuf, specs: Vec<NodeSpec>) -> anyhow::Result<Fleet> {
        let states = Arc::new(parking_lot::Mutex::new(vec![
            NodeState::default();
            specs.len()
        ]));
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let st = states.clone();
        let stop_flag = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("slotgate-fleet".into())
            .spawn(move || supervise(bin, specs, st, stop_flag, stop_rx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Fleet {
                states,
                stopping,
                stop_tx: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(anyhow::anyhow!(e))
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the node supervisor thread failed")
            }
        }
    }

    /// A snapshot of every node's state.
    pub fn states(&self) -> Vec<NodeState> {
        self.states.lock().clone()
    }

    /// From now on exited nodes are not restarted (shutdown has begun).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Stops every node gracefully (SIGTERM, SIGKILL after a grace period) and waits.
    pub fn stop(&mut self) {
        self.set_stopping();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_node(bin: &Path, spec: &NodeSpec) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join("node.log"))?;
    let log2 = log.try_clone()?;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(bin);
    cmd.arg(spec.dir.join("redis.conf"))
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would signal us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("slotgate exited"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn set_up_metric(spec: &NodeSpec, up: bool) {
    metrics::gauge!("slotgate_launch_node_up", "node" => spec.name()).set(if up {
        1.0
    } else {
        0.0
    });
}

fn supervise(
    bin: PathBuf,
    specs: Vec<NodeSpec>,
    states: Arc<parking_lot::Mutex<Vec<NodeState>>>,
    stopping: Arc<AtomicBool>,
    stop_rx: std::sync::mpsc::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let n = specs.len();
    let mut kids: Vec<Option<Child>> = Vec::with_capacity(n);
    for s in &specs {
        match spawn_node(&bin, s) {
            Ok(c) => {
                states.lock()[kids.len()].pid = Some(c.id());
                set_up_metric(s, true);
                kids.push(Some(c));
            }
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "cannot start {} for {}: {e}",
                    bin.display(),
                    s.name()
                )));
                stop_all(&mut kids);
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    let mut started = vec![Instant::now(); n];
    let mut delay = vec![RESTART_DELAY; n];
    let mut next_start: Vec<Option<Instant>> = vec![None; n];
    // Until stop() sends (or the Fleet is gone): poll the children every 100 ms.
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop_rx.recv_timeout(Duration::from_millis(100))
    {
        let stop = stopping.load(Ordering::Relaxed);
        for i in 0..n {
            let spec = &specs[i];
            if let Some(c) = kids[i].as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    kids[i] = None;
                    set_up_metric(spec, false);
                    let mut st = states.lock();
                    st[i].pid = None;
                    st[i].exits += 1;
                    drop(st);
                    if stop {
                        continue;
                    }
                    if started[i].elapsed() >= STABLE_AFTER {
                        delay[i] = RESTART_DELAY;
                    }
                    tracing::warn!(
                        "node {} exited ({status}); restarting it in {:.0?} (log: {})",
                        spec.name(),
                        delay[i],
                        spec.dir.join("node.log").display()
                    );
                    next_start[i] = Some(Instant::now() + delay[i]);
                }
            }
            let due = next_start[i].is_some_and(|t| Instant::now() >= t);
            if kids[i].is_none() && due && !stop {
                next_start[i] = None;
                match spawn_node(&bin, spec) {
                    Ok(c) => {
                        tracing::info!("node {} restarted (pid {})", spec.name(), c.id());
                        let mut st = states.lock();
                        st[i].pid = Some(c.id());
                        st[i].restarts += 1;
                        drop(st);
                        metrics::counter!("slotgate_launch_node_restarts_total", "node" => spec.name())
                            .increment(1);
                        set_up_metric(spec, true);
                        kids[i] = Some(c);
                        started[i] = Instant::now();
                    }
                    Err(e) => {
                        tracing::error!("cannot restart node {}: {e}", spec.name());
                        next_start[i] = Some(Instant::now() + delay[i]);
                    }
                }
                delay[i] = (delay[i] * 2).min(MAX_RESTART_DELAY);
            }
        }
    }
    stop_all(&mut kids);
    let mut st = states.lock();
    for s in st.iter_mut() {
        s.pid = None;
    }
}

/// SIGTERM to every child, then SIGKILL to those still running after the grace period.
fn stop_all(kids: &mut [Option<Child>]) {
    for c in kids.iter().flatten() {
        // SAFETY: plain kill(2) on the PID of a child we have not reaped yet.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let t = Instant::now();
    loop {
        let mut running = 0;
        for k in kids.iter_mut() {
            if let Some(c) = k {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => *k = None,
                    Ok(None) => running += 1,
                }
            }
        }
        if running == 0 {
            return;
        }
        if t.elapsed() >= STOP_GRACE {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in kids.iter_mut().flatten() {
        tracing::warn!("node pid {} did not stop in time: SIGKILL", c.id());
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The node binary: `--node-bin`, else `slotgate-node` beside this executable, else on PATH.
fn find_node_bin(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.clone());
        }
        anyhow::bail!("--node-bin {}: no such file", p.display());
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join("slotgate-node");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join("slotgate-node");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "cannot find slotgate-node beside slotgate or on PATH: build it (cargo build --release -p slotgate-node) or pass --node-bin PATH"
    )
}

/// redis.conf of one launched node (rewritten at every launch; the cluster state lives in
/// nodes.conf, which is kept).
fn node_conf(spec: &NodeSpec, timeout_ms: u64, metrics_port: Option<u16>) -> String {
    let mut s = format!(
        "# Written by `slotgate --launch` at every start; edits are overwritten.\n\
         port {}\n\
         bind 127.0.0.1\n\
         dir {}\n\
         pidfile {}\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {timeout_ms}\n\
         io-threads 1\n",
        spec.port,
        quote(&spec.dir.display().to_string()),
        quote(&spec.dir.join("node.pid").display().to_string()),
    );
    if let Some(p) = metrics_port {
        s.push_str(&format!("metrics-port {p}\n"));
    }
    s
}

/// Quotes a redis.conf argument when it needs it.
fn quote(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The last lines of a node's log (for error messages).
fn log_tail(dir: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Everything before serving: nodes up, cluster formed or resumed and ok.
async fn form(
    fleet: &Fleet,
    specs: &[NodeSpec],
    replicas: usize,
    progress: &dyn Fn(&str),
) -> anyhow::Result<()> {
    // Every node answers PING (or one exited: show why).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, s) in specs.iter().enumerate() {
        loop {
            if fleet.states()[i].exits > 0 {
                anyhow::bail!(
                    "node {} exited at start; the end of {}:\n{}",
                    s.name(),
                    s.dir.join("node.log").display(),
                    log_tail(&s.dir, 15)
                );
            }
            if let Ok(mut a) = Admin::connect(&s.name(), &None, Duration::from_secs(1)).await {
                if a.cmd(&["PING"]).await.is_ok() {
                    break;
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "node {} does not answer; the end of its log:\n{}",
                    s.name(),
                    log_tail(&s.dir, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    progress(&format!("{} nodes are up", specs.len()));
    let opts = crate::create::CreateOpts {
        nodes: specs.iter().map(NodeSpec::name).collect(),
        replicas,
        timeout: Duration::from_secs(90),
        auth: None,
    };
    crate::create::create(&opts, progress).await?;
    Ok(())
}

/// The ready table: node, role, slots, address (sorted by port).
async fn ready_table(specs: &[NodeSpec]) -> String {
    for s in specs {
        let Ok(mut a) = Admin::connect(&s.name(), &None, Duration::from_secs(1)).await else {
            continue;
        };
        let Ok(text) = a.text(&["CLUSTER", "NODES"]).await else {
            continue;
        };
        let mut nodes = parse_nodes(&text);
        nodes.sort_by_key(|n| n.port());
        let mut rows = vec![vec![
            "  NODE".to_string(),
            "ROLE".into(),
            "SLOTS".into(),
            "ADDRESS".into(),
        ]];
        for n in &nodes {
            rows.push(vec![
                format!("  {}", n.short_id()),
                crate::status::role_text(n, &nodes),
                format_ranges(&n.slots),
                n.addr.clone(),
            ]);
        }
        return table(&rows);
    }
    "  (no node answered CLUSTER NODES)\n".into()
}

/// `slotgate --launch N`: returns the process exit code.
pub async fn main(mut cli: Cli) -> i32 {
    let started = Instant::now();
    let progress = move |m: &str| println!("[{:>5.1}s] {m}", started.elapsed().as_secs_f64());
    let n = cli.launch.unwrap_or(6);
    let replicas = cli.replicas;
    if n / (replicas + 1) < 3 {
        eprintln!(
            "slotgate: --launch {n} --replicas {replicas} gives fewer than 3 masters; use at least {} nodes",
            3 * (replicas + 1)
        );
        return 2;
    }
    let bin = match find_node_bin(&cli.node_bin) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("slotgate: {e}");
            return 1;
        }
    };
    if cli.base_port as usize + n - 1 + 10000 > 65535 || cli.base_port == 0 {
        eprintln!(
            "slotgate: --base-port {} leaves no room for {n} nodes and their bus ports (+10000)",
            cli.base_port
        );
        return 2;
    }
    let data = match std::path::absolute(&cli.data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("slotgate: --data-dir {}: {e}", cli.data_dir.display());
            return 1;
        }
    };
    let specs: Vec<NodeSpec> = (0..n)
        .map(|i| {
            let port = cli.base_port + i as u16;
            NodeSpec {
                port,
                dir: data.join(port.to_string()),
            }
        })
        .collect();
    let metrics_ports: Vec<Option<u16>> = (0..n)
        .map(|i| {
            (cli.node_metrics_port != 0)
                .then(|| cli.node_metrics_port.checked_add(i as u16))
                .flatten()
        })
        .collect();
    for (s, m) in specs.iter().zip(&metrics_ports) {
        for p in [Some(s.port), Some(s.port + 10000), *m]
            .into_iter()
            .flatten()
        {
            if !port_free(p) {
                eprintln!(
                    "slotgate: port {p} (for node {}) is in use: is another cluster or `slotgate --launch` running? Pick other ports with --base-port / --node-metrics-port",
                    s.name()
                );
                return 1;
            }
        }
    }
    let listen = match crate::check_listen(cli.listen) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Proxy metrics: default on in the lab; a busy default port only costs a warning.
    let explicit_metrics = cli.metrics.is_some();
    let maddr = cli
        .metrics
        .or_else(|| DEFAULT_METRICS.parse().ok())
        .filter(|a| explicit_metrics || std::net::TcpListener::bind(a).is_ok());
    cli.metrics = None;
    if let Some(addr) = maddr {
        match crate::metrics::install(addr) {
            Ok(()) => cli.metrics = Some(addr),
            Err(e) if explicit_metrics => {
                eprintln!("slotgate: cannot serve metrics on {addr}: {e}");
                return 1;
            }
            Err(e) => tracing::warn!("no proxy metrics: cannot serve them on {addr}: {e}"),
        }
    }
    metrics::describe_counter!(
        "slotgate_launch_node_restarts_total",
        "Launched nodes restarted after they exited."
    );
    metrics::describe_gauge!(
        "slotgate_launch_node_up",
        "1 while the launched node's process runs."
    );
    let mut resuming = false;
    for (s, m) in specs.iter().zip(&metrics_ports) {
        if let Err(e) = std::fs::create_dir_all(&s.dir) {
            eprintln!("slotgate: cannot create {}: {e}", s.dir.display());
            return 1;
        }
        resuming |= std::fs::metadata(s.dir.join("nodes.conf")).is_ok_and(|m| m.len() > 0);
        if let Err(e) = std::fs::write(
            s.dir.join("redis.conf"),
            node_conf(s, cli.node_timeout_ms, *m),
        ) {
            eprintln!(
                "slotgate: cannot write {}: {e}",
                s.dir.join("redis.conf").display()
            );
            return 1;
        }
    }
    let last = cli.base_port + n as u16 - 1;
    progress(&format!(
        "{} {n} nodes on 127.0.0.1:{}-{last} ({}), data in {}",
        if resuming { "resuming" } else { "starting" },
        cli.base_port,
        bin.display(),
        data.display()
    ));
    let mut fleet = match Fleet::start(bin, specs.clone()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("slotgate: {e}");
            return 1;
        }
    };
    let formed = tokio::select! {
        r = form(&fleet, &specs, replicas, &progress) => r,
        _ = shutdown_signal() => {
            progress("interrupted: stopping the nodes");
            fleet.stop();
            return 0;
        }
    };
    if let Err(e) = formed {
        eprintln!("slotgate: {e:#}");
        progress("stopping the nodes");
        fleet.stop();
        return 1;
    }
    progress("cluster_state:ok");
    let mut ready = ready_table(&specs).await;
    let connect = if listen.ip().is_loopback() && listen.ip().is_ipv4() {
        if listen.port() == 6379 {
            "redis-cli".to_string()
        } else {
            format!("redis-cli -p {}", listen.port())
        }
    } else {
        format!("redis-cli -h {} -p {}", listen.ip(), listen.port())
    };
    ready.push_str(&format!(
        "\nslotgate is serving the cluster on {listen}\n  connect:  {connect}   (any Redis client; no cluster support needed)\n"
    ));
    let node_metrics = match (metrics_ports.first(), metrics_ports.last()) {
        (Some(Some(a)), Some(Some(b))) => {
            format!("http://127.0.0.1:{a}/metrics .. http://127.0.0.1:{b}/metrics (nodes)")
        }
        _ => "off (nodes)".into(),
    };
    ready.push_str(&format!(
        "  metrics:  {}, {node_metrics}\n  status:   slotgate status --seed 127.0.0.1:{}\n  data:     {} (node logs: <port>/node.log)\n  stop:     Ctrl-C (drains clients, then stops the nodes)\n",
        cli.metrics
            .map(|m| format!("http://{m}/metrics (proxy)"))
            .unwrap_or_else(|| "off (proxy)".into()),
        cli.base_port,
        data.display()
    ));
    let seeds: Vec<String> = specs.iter().map(NodeSpec::name).collect();
    let stop_flag = fleet.stopping.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop_flag.store(true, Ordering::Relaxed);
    });
    let code = crate::serve(
        &cli,
        listen,
        seeds,
        Box::new(move || {
            print!("{ready}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }),
    )
    .await;
    progress("stopping the nodes");
    fleet.stop();
    let restarts: u64 = fleet.states().iter().map(|s| s.restarts).sum();
    progress(&format!(
        "stopped ({restarts} node restart(s) during the run)"
    ));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_conf_has_cluster_settings() {
        let s = NodeSpec {
            port: 7001,
            dir: PathBuf::from("/tmp/a b"),
        };
        let c = node_conf(&s, 5000, Some(9123));
        assert!(c.contains("port 7001\n"));
        assert!(c.contains("cluster-enabled yes\n"));
        assert!(c.contains("dir \"/tmp/a b\"\n"));
        assert!(c.contains("metrics-port 9123\n"));
        assert!(!node_conf(&s, 5000, None).contains("metrics-port"));
    }
}
