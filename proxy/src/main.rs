//! `slotgate`: the cluster proxy. Legacy (non-cluster) clients connect to one address and use a
//! whole Redis Cluster as if it were one Redis.
//!
//! Request path: client connection (`client.rs`) → command splitter (`splitter.rs`, strategies;
//! `local.rs` for proxy-answered and broadcast commands) → router over the slot map
//! (`router.rs`, `slotmap.rs`) → per-node connection pool (`pool.rs`); redirects in
//! `redirect.rs`; metrics in `metrics.rs`.
//!
//! The lab: `--launch` (`launch.rs`) starts and supervises a node fleet and serves it;
//! `slotgate create` (`create.rs`), `status` and `probe` (`status.rs`) share the admin
//! client in `admin.rs`.

mod admin;
mod bufs;
mod client;
mod config;
mod create;
mod launch;
mod local;
mod metrics;
mod pool;
mod proxy;
mod redirect;
mod router;
mod session;
mod slotmap;
mod splitter;
mod status;

/// mimalloc: measured on 2 cores at -P 16, about 10% less proxy user time per request than
/// glibc malloc (the per-request reply channels and buffers), see bench/results/2026-12-06.md.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option: off, so memory is committed as it is used (with the
/// default, 10,000 idle clients cost ~9 MiB more resident memory).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

use std::sync::Arc;
use std::time::Duration;

/// Sets the allocator options before the first allocation (std's runtime set-up allocates
/// before `main`, and the first allocation creates mimalloc's arena).
#[cfg(target_os = "linux")]
extern "C" fn allocator_options() {
    // SAFETY: sets a process-wide option; runs from `.init_array`, before any thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() {
    let cli = match config::Cli::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotgate: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_level.clone()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotgate: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(cli));
    std::process::exit(code);
}

async fn run(cli: config::Cli) -> i32 {
    match &cli.command {
        Some(config::Command::Create(a)) => return create::main(a).await,
        Some(config::Command::Status(a)) => return status::main(a).await,
        Some(config::Command::Probe(a)) => return status::probe(a).await,
        None => {}
    }
    if cli.launch.is_some() {
        return launch::main(cli).await;
    }
    if cli.seeds.is_empty() {
        eprintln!("slotgate: no cluster to front: give at least one --seed HOST:PORT (or start a local one with --launch)");
        return 2;
    }
    let listen = match check_listen(cli.listen) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Some(addr) = cli.metrics {
        if let Err(e) = metrics::install(addr) {
            eprintln!("slotgate: cannot serve metrics on {addr}: {e}");
            return 1;
        }
    }
    let seeds = cli.seeds.clone();
    serve(&cli, listen, seeds, Box::new(|| {})).await
}

/// Checks that the client address is free with a plain bind (SO_REUSEPORT would silently
/// share a port with another slotgate); returns the address (port 0 resolved) or an exit code.
fn check_listen(addr: std::net::SocketAddr) -> Result<std::net::SocketAddr, i32> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(l.local_addr().unwrap_or(addr)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!(
                "slotgate: {addr} is already in use (is a redis-server running there?). Pick another address with --listen 127.0.0.1:PORT"
            );
            Err(1)
        }
        Err(e) => {
            eprintln!("slotgate: cannot listen on {addr}: {e}");
            Err(1)
        }
    }
}

/// Serves clients on `listen` in front of the cluster `seeds` until SIGTERM/SIGINT, then
/// drains; `on_ready` runs once the workers accept. Metrics must already be installed when
/// `cli.metrics` is set. Returns the exit code.
async fn serve(
    cli: &config::Cli,
    listen: std::net::SocketAddr,
    seeds: Vec<String>,
    on_ready: Box<dyn FnOnce() + Send>,
) -> i32 {
    let pool_cfg = pool::PoolConfig {
        conns_per_node: cli.conns_per_node,
        connect_timeout: Duration::from_millis(cli.connect_timeout_ms),
        read_timeout: Duration::from_millis(cli.read_timeout_ms),
        down_for: Duration::from_millis(cli.down_ms),
        auth: cli
            .backend_password
            .clone()
            .map(|p| (cli.backend_user.clone(), p)),
        readonly: false,
        resp3: false,
    };
    let router_cfg = router::RouterConfig {
        seeds,
        pool: pool_cfg,
        min_refresh_interval: Duration::from_millis(cli.min_refresh_interval_ms),
        refresh_period: Duration::from_secs(cli.refresh_interval_secs),
    };
    let router = router::Router::new(router_cfg.clone());
    // Discover the cluster before serving (keep trying for a while; then serve anyway and let
    // the background refresh find it).
    let mut tries = 0;
    loop {
        match router.refresh(None).await {
            Ok(()) => break,
            Err(e) => {
                tries += 1;
                if tries == 1 || tries % 10 == 0 {
                    tracing::warn!("cannot discover the cluster yet: {e:#}");
                }
                if tries >= 60 {
                    tracing::error!("serving without a slot map; requests fail with CLUSTERDOWN until a seed answers");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // One worker per core, each a single-threaded runtime with its own router and backend
    // pools (as Envoy's workers): a request never changes thread on its way to the backend.
    // The balancer (slotgate_iopool) packs clients onto as few workers as carry the load.
    let workers = cli
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
        .max(1);
    let cfg = cli.proxy_config(listen);
    let p = Arc::new(proxy::Proxy::new(cfg, workers));
    let mut routers = Vec::new();
    for i in 0..workers {
        let r = if i == 0 {
            router.clone()
        } else {
            let r = router::Router::new(router_cfg.clone());
            r.install_map(router.map().map.clone());
            r
        };
        routers.push(r.clone());
        let p2 = p.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let spawned = std::thread::Builder::new()
            .name(format!("slotgate-w{i}"))
            .spawn(move || {
                if let Err(e) = slotgate_iopool::batch_scheduling() {
                    tracing::debug!("SCHED_BATCH refused: {e}");
                }
                let mut inbox = p2.io.register(i);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let l = match slotgate_iopool::reuseport_listener(listen, 1024) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    tokio::spawn(r.clone().refresh_loop());
                    // Clients the balancer moves to this worker.
                    let (p3, r3) = (p2.clone(), r.clone());
                    tokio::spawn(async move {
                        while let Some(m) = inbox.recv().await {
                            client::resume(p3.clone(), r3.clone(), m, i);
                        }
                    });
                    proxy::serve(p2, r, l, i).await;
                });
            });
        if let Err(e) = spawned {
            eprintln!("slotgate: cannot start worker thread: {e}");
            return 1;
        }
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("slotgate: cannot listen on {listen}: {e}");
                return 1;
            }
            Err(_) => {
                eprintln!("slotgate: worker thread {i} failed to start");
                return 1;
            }
        }
    }
    if cli.metrics.is_some() {
        tokio::spawn(metrics::publish_loop(routers.clone()));
    }
    let balanced = p.clone();
    tokio::spawn(async move {
        slotgate_iopool::balance(
            &balanced.io,
            |line| tracing::debug!("{line}"),
            || balanced.commands.load(std::sync::atomic::Ordering::Relaxed),
        )
        .await
    });
    let map = router.map();
    tracing::info!(
        "slotgate ready on {listen} ({workers} workers): {} masters, {} slots covered{}",
        map.masters().len(),
        map.covered(),
        cli.metrics
            .map(|m| format!(", metrics on http://{m}/metrics"))
            .unwrap_or_default()
    );
    println!("Ready to accept connections on {listen}");
    on_ready();
    wait_for_shutdown(&p, listen).await;
    // Drain: clients finish the requests they have in flight, idle ones are closed.
    p.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in p.clients.lock().values() {
        c.kill.notify_one();
    }
    let t = std::time::Instant::now();
    while !p.clients.lock().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("shut down after draining clients");
    0
}

/// Waits for SIGTERM/SIGINT; on SIGHUP re-reads the config file and applies the live settings.
async fn wait_for_shutdown(p: &Arc<proxy::Proxy>, listen: std::net::SocketAddr) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match config::Cli::try_load() {
                    Ok(cli) => {
                        p.set_cfg(cli.proxy_config(listen));
                        tracing::info!("SIGHUP: configuration reloaded");
                    }
                    Err(e) => tracing::warn!("SIGHUP: keeping the current configuration: {e}"),
                }
            }
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
}
