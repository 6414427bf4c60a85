//! The node's client I/O workers: one thread per `io-threads`, each a single-threaded runtime
//! accepting on its own SO_REUSEPORT listener and resuming the clients moved to it. How many
//! serve clients, and which clients move, is decided by the shared balancer
//! (`slotgate_iopool`); a client moves at a safe point of its loop (`connection.rs`).
//! `DEBUG IO-WORKERS` shows or pins the state.

use crate::connection::Moving;
use crate::server::Server;
use slotgate_iopool::Accepted;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The node's workers; a moving client is a [`Moving`].
pub type Pool = slotgate_iopool::Pool<Moving>;

/// Runs the balancer for the server's workers (never returns).
pub async fn balance(server: Arc<Server>) {
    slotgate_iopool::balance(
        &server.io,
        |line| server.log.verbose(line),
        || {
            server
                .stats
                .commands
                .load(std::sync::atomic::Ordering::Relaxed)
        },
    )
    .await
}

/// The `unixsocket` listener and its path.
pub type UnixListener = (std::os::unix::net::UnixListener, String);

/// Starts one I/O worker thread per pool slot, each with its own SO_REUSEPORT listener on
/// every address (worker 0 also accepts on the Unix socket, if any); returns once all of them
/// listen.
pub fn start(
    server: &Arc<Server>,
    addrs: &[std::net::SocketAddr],
    mut unix: Option<UnixListener>,
) -> anyhow::Result<()> {
    for i in 0..server.io.len() {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let srv = server.clone();
        let addrs = addrs.to_vec();
        let unix = unix.take();
        std::thread::Builder::new()
            .name(format!("slotgate-io{i}"))
            .spawn(move || io_worker(srv, i, addrs, unix, tx))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("{e}"),
            Err(_) => anyhow::bail!("I/O worker {i} failed to start"),
        }
    }
    Ok(())
}

/// One I/O worker: a single-threaded runtime serving the clients accepted on its own
/// listeners and the ones moved to it.
fn io_worker(
    server: Arc<Server>,
    w: usize,
    addrs: Vec<std::net::SocketAddr>,
    unix: Option<UnixListener>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let _ = slotgate_iopool::batch_scheduling();
    let mut inbox = server.io.register(w);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    // `tcp-backlog`: the accept queue of each listener (the kernel caps it at somaxconn).
    let backlog = server
        .config
        .read()
        .get_int("tcp-backlog")
        .clamp(1, u32::MAX as i64) as u32;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for a in &addrs {
            match slotgate_iopool::reuseport_listener(*a, backlog) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let _ = ready.send(Err(format!("{a}: {e}")));
                    return;
                }
            }
        }
        let unix = match unix {
            Some((l, path)) => {
                match l
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixListener::from_std(l))
                {
                    Ok(l) => Some((l, path)),
                    Err(e) => {
                        let _ = ready.send(Err(format!("{path}: {e}")));
                        return;
                    }
                }
            }
            None => None,
        };
        let _ = ready.send(Ok(()));
        let mut tasks = Vec::new();
        if let Some((l, path)) = unix {
            tasks.push(tokio::spawn(unix_accept_loop(server.clone(), l, path)));
        }
        for l in listeners {
            tasks.push(tokio::spawn(accept_loop(server.clone(), w, l)));
        }
        tasks.push(tokio::spawn(async move {
            while let Some(m) = inbox.recv().await {
                tokio::spawn(crate::connection::resume(m, w));
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// redis-server 7.0's reply (then it closes) to a client refused by protected mode.
const ERR_DENIED: &str = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Setup a an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// `protected-mode yes` (the default) with no password: as redis-server, only clients
/// connecting from 127.0.0.1 or ::1 are served.
fn refused_by_protected_mode(server: &Server, peer: &std::net::SocketAddr) -> bool {
    if server.requires_auth() || !server.config.read().get_bool("protected-mode") {
        return false;
    }
    let local = match peer.ip() {
        std::net::IpAddr::V4(ip) => ip == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(ip) => {
            ip == std::net::Ipv6Addr::LOCALHOST
                || ip.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    };
    !local
}

/// `tcp-keepalive N` on a client socket, as redis-server's `anetKeepAlive`: probes after `N`
/// idle seconds, then every `N/3`, and the peer is dead after 3 unanswered probes.
fn set_keepalive(sock: &tokio::net::TcpStream, secs: i64) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let idle = secs.clamp(1, i32::MAX as i64) as libc::c_int;
    let opts: [(libc::c_int, libc::c_int, libc::c_int); 4] = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, (idle / 3).max(1)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ];
    for (level, name, value) in opts {
        // SAFETY: setsockopt on a socket this function borrows, with a pointer to a live
        // c_int and its size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// `maxclients`: true (the refusal counted in rejected_connections) when no other client may
/// connect now.
fn over_maxclients(server: &Server) -> bool {
    let max = server.config.read().get_int("maxclients").max(1) as usize;
    if server.clients.lock().len() >= max {
        server
            .stats
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return true;
    }
    false
}

/// Accepts the clients of the `unixsocket` listener (served on this worker; protected mode
/// does not apply to them, as in Redis).
async fn unix_accept_loop(server: Arc<Server>, listener: tokio::net::UnixListener, path: String) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                if over_maxclients(&server) {
                    if let Ok(sock) = sock.into_std() {
                        use std::io::Write;
                        let _ = (&sock).write_all(b"-ERR max number of clients reached\r\n");
                    }
                    continue;
                }
                server
                    .stats
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(crate::connection::serve_unix(
                    server.clone(),
                    sock,
                    path.clone(),
                ));
            }
            Err(e) => {
                server
                    .log
                    .warning(&format!("Accepting client connection: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_loop(server: Arc<Server>, w: usize, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                if over_maxclients(&server) {
                    slotgate_iopool::refuse(sock, b"-ERR max number of clients reached\r\n");
                    continue;
                }
                if refused_by_protected_mode(&server, &peer) {
                    server
                        .stats
                        .rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    slotgate_iopool::refuse(sock, ERR_DENIED.as_bytes());
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let keepalive = server.config.read().get_int("tcp-keepalive");
                if keepalive > 0 {
                    set_keepalive(&sock, keepalive);
                }
                server
                    .stats
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let srv = server.clone();
                let wrap = |sock| Moving::Accepted {
                    server: srv,
                    sock,
                    peer,
                };
                match server.io.hand_over(w, sock, wrap) {
                    Accepted::Keep(sock) => {
                        tokio::spawn(crate::connection::serve(server.clone(), sock, peer, w));
                    }
                    Accepted::Sent => {}
                    Accepted::Back(m) => {
                        tokio::spawn(crate::connection::resume(*m, w));
                    }
                    Accepted::Failed(e) => server
                        .log
                        .warning(&format!("Handing a new client to another I/O worker: {e}")),
                }
            }
            Err(e) => {
                server
                    .log
                    .warning(&format!("Accepting client connection: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
