//! slotgate-node: a Redis-compatible server (standalone today; cluster mode, replication and
//! persistence build on the same keyspace and dispatch).
//!
//! Data flows one way: socket → [`connection`] (RESP parsing from `slotgate_protocol`) →
//! [`cmd`] (dispatch, one file per command family) → [`db`] (the keyspace) → [`reply`].

// Memory accounting (the counting global allocator).
pub mod alloc;
pub mod client;
// Cluster mode (issue 5): state, gossip bus, failure detection, MIGRATE.
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod db;
// maxmemory and its eviction policies.
pub mod evict;
pub mod glob;
pub mod lazyfree;
pub mod log;
pub mod longdouble;
// Prometheus `/metrics` (`metrics-port`), issue 7.
pub mod metrics;
pub mod notify;
// RDB files: SAVE, BGSAVE, save points, load at startup.
pub mod persist;
pub mod pubsub;
pub mod ranked;
pub mod rdb;
pub mod replication;
pub mod reply;
pub mod server;
pub mod stream;
pub mod value;
// Client I/O worker threads and the balancer that packs or spreads connections.
pub mod workers;

pub use server::REDIS_VERSION;

use std::sync::Arc;

/// Entry point shared by the binary: parse arguments, build the server, run until SHUTDOWN.
pub fn main_with_args(args: Vec<String>) -> i32 {
    if args.iter().any(|a| a == "-v" || a == "--version") {
        println!(
            "slotgate-node v={} (Redis {} compatible) bits=64",
            env!("CARGO_PKG_VERSION"),
            REDIS_VERSION
        );
        return 0;
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("Usage: slotgate-node [/path/to/redis.conf] [--directive value ...]");
        println!("Examples:");
        println!("       slotgate-node (run the server with default config)");
        println!("       slotgate-node /etc/redis/7000.conf");
        println!("       slotgate-node --port 7777");
        println!("       slotgate-node /etc/myredis.conf --loglevel verbose");
        return 0;
    }
    let config = match config::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    // `daemonize yes`: detach before anything else starts a thread, as redis-server does
    // (its startup errors then go to the log file, not to the terminal that started it);
    // not when supervised by systemd, which then tracks the process it started.
    let supervised = server::systemd_socket(&config).is_some();
    if config.get_bool("daemonize") && !supervised {
        if let Err(e) = daemonize() {
            eprintln!("Can't daemonize: {e}");
            return 1;
        }
    }
    let server = match server::Server::new(config) {
        Ok(s) => {
            let s = Arc::new(s);
            let _ = s.me.set(Arc::downgrade(&s));
            s
        }
        Err(e) => {
            eprintln!("Can't open the log file: {e}");
            return 1;
        }
    };
    let pid = std::process::id();
    if supervised {
        server.log.notice("Supervised by systemd. Please make sure you set appropriate values for TimeoutStartSec and TimeoutStopSec in your service unit.");
    }
    server
        .log
        .notice("oO0OoO0OoO0Oo slotgate-node is starting oO0OoO0OoO0Oo");
    server.log.notice(&format!(
        "slotgate-node version={}, Redis {} compatible, bits=64, pid={pid}, just started",
        env!("CARGO_PKG_VERSION"),
        REDIS_VERSION
    ));
    {
        let c = server.config.read();
        match &c.file {
            Some(f) => server.log.notice(&format!("Configuration loaded from {}", f.display())),
            None => server.log.warning(
                "Warning: no config file specified, using the default config. In order to specify a config file use slotgate-node /path/to/redis.conf",
            ),
        }
        for d in &c.ignored {
            server.log.warning(&format!(
                "Directive '{d}' is accepted but not yet acted on by slotgate-node"
            ));
        }
    }
    let dir = server.config.read().get("dir").to_string();
    if !dir.is_empty() {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!("Can't chdir to '{dir}': {e}");
            return 1;
        }
    }
    // Client I/O runs on `server.workers` single-threaded workers (see server::run); this
    // runtime drives the control plane: cluster bus, active expiry, signals.
    let threads = 1;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Failed to start the runtime: {e}");
            return 1;
        }
    };
    let res = rt.block_on(async move {
        let srv = server.clone();
        tokio::spawn(async move {
            shutdown_on_signal(srv).await;
        });
        server::run(server).await
    });
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Detaches from the terminal as redis-server's `daemonize()`: fork (the parent exits 0), a
/// new session, stdin/stdout/stderr on /dev/null. Call while the process has one thread.
fn daemonize() -> std::io::Result<()> {
    // SAFETY: the process is still single-threaded (no runtime, no worker started), so the
    // child is a full copy and may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => return Err(std::io::Error::last_os_error()),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: plain syscalls on the child's own session and file descriptors; the path is a
    // NUL-terminated literal.
    unsafe {
        libc::setsid();
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, libc::STDIN_FILENO);
            libc::dup2(fd, libc::STDOUT_FILENO);
            libc::dup2(fd, libc::STDERR_FILENO);
            if fd > libc::STDERR_FILENO {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// SIGTERM / SIGINT: shut down like SHUTDOWN, saving first when save points are set. As
/// redis-server, a node whose final save fails does not exit (that would lose the changes
/// since the last good save): it logs why and goes on serving until the next signal.
async fn shutdown_on_signal(server: Arc<server::Server>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => server.log.warning("Received SIGTERM scheduling shutdown..."),
            _ = int.recv() => server.log.warning("Received SIGINT scheduling shutdown..."),
        }
        let srv = server.clone();
        let saved =
            tokio::task::spawn_blocking(move || persist::save_on_shutdown(&srv, false, false))
                .await
                .unwrap_or(false);
        if saved {
            server
                .persist
                .final_done
                .store(true, std::sync::atomic::Ordering::Release);
            server.shutdown.notify_one();
            return;
        }
        server
            .log
            .warning("Errors trying to shut down the server. Check the logs for more information.");
    }
}
