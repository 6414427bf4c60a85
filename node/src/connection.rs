//! One client connection: read → parse every complete request in the buffer → dispatch →
//! write all replies at once. Also delivers pub/sub and MONITOR pushes, waits for blocking
//! commands, and cleans up (subscriptions, WATCHes, blocked queues) when the client goes.

use crate::client::{Client, ClientHandle, Push, ReplyMode, PUSH_QUEUE};
use crate::cmd::{self, Outcome, TimeoutReply};
use crate::db::Locked;
use crate::reply::Reply;
use crate::server::Server;
use crate::stream::{ReadHalf, WriteHalf};
use bytes::{Bytes, BytesMut};
use slotgate_protocol::resp::{Limits, Parsed, RequestParser};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const READ_CHUNK: usize = 16 * 1024;
/// Flush replies early when this much output is pending (bounds memory for big pipelines).
const FLUSH_AT: usize = 256 * 1024;

/// Why the connection loop ended.
enum End {
    Closed,
    /// The balancer moves this connection to another I/O worker (`crate::workers`).
    Move(usize),
}

/// A connection served by one I/O worker: its state and the two halves of its socket.
struct Conn {
    /// Everything but the socket (what moves between workers).
    st: Parked,
    rd: ReadHalf,
    wr: WriteHalf,
    /// The I/O worker serving it now.
    worker: usize,
}

/// A connection on its way between two I/O workers, its socket detached from the old worker's
/// reactor.
pub enum Moving {
    /// Just accepted by a worker that is not serving clients now.
    Accepted {
        /// The server.
        server: Arc<Server>,
        /// The socket.
        sock: std::net::TcpStream,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A client between two requests, with everything it holds.
    Client {
        /// Its state.
        state: Box<Parked>,
        /// The socket.
        sock: std::net::TcpStream,
    },
}

/// A client's state apart from its socket: what moves from one I/O worker to another.
pub struct Parked {
    server: Arc<Server>,
    client: Client,
    out: Reply,
    rbuf: BytesMut,
    rx: mpsc::Receiver<Push>,
    args: Vec<Bytes>,
    /// Incremental request parser (no quadratic re-scan of half-received requests).
    parser: RequestParser,
    max_bulk: usize,
    qbuf_limit: usize,
}

/// Serves one client accepted by I/O worker `worker` until it disconnects, is killed, or
/// moves to another worker.
pub async fn serve(server: Arc<Server>, sock: TcpStream, peer: SocketAddr, worker: usize) {
    let laddr = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let fd = sock.as_raw_fd();
    let (rd, wr) = sock.into_split();
    let handle = register(&server, peer.to_string(), laddr, fd, "N");
    let st = parked(&server, handle);
    drive(st, ReadHalf::Tcp(rd), WriteHalf::Tcp(wr), worker).await;
}

/// Serves one client of the `unixsocket` listener at `path` (on the worker that accepted it:
/// such clients do not move) until it disconnects or is killed.
pub async fn serve_unix(server: Arc<Server>, sock: tokio::net::UnixStream, path: String) {
    // CLIENT LIST shows `addr=<path>:0 laddr=<path>:0 ... flags=U`, as redis-server.
    let addr = format!("{path}:0");
    let fd = sock.as_raw_fd();
    let (rd, wr) = sock.into_split();
    let handle = register(&server, addr.clone(), addr, fd, "U");
    let st = parked(&server, handle);
    drive(st, ReadHalf::Unix(rd), WriteHalf::Unix(wr), 0).await;
}

/// Adds a new client to the server's list.
fn register(
    server: &Arc<Server>,
    addr: String,
    laddr: String,
    fd: i32,
    flags: &str,
) -> (Arc<ClientHandle>, mpsc::Receiver<Push>) {
    let id = server.next_client_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(PUSH_QUEUE);
    let handle = Arc::new(ClientHandle::new(id, addr, laddr, fd, tx));
    if flags != "N" {
        *handle.flags.lock() = flags.to_string();
    }
    server.clients.lock().insert(id, handle.clone());
    (handle, rx)
}

/// A new client's state.
fn parked(server: &Arc<Server>, (handle, rx): (Arc<ClientHandle>, mpsc::Receiver<Push>)) -> Parked {
    let (max_bulk, qbuf_limit) = {
        let c = server.config.read();
        (
            c.get_int("proto-max-bulk-len").max(1) as usize,
            c.get_int("client-query-buffer-limit").max(1024 * 1024) as usize,
        )
    };
    Parked {
        client: Client::new(handle.clone(), !server.requires_auth()),
        server: server.clone(),
        out: Reply::default(),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        rx,
        args: Vec::with_capacity(8),
        parser: RequestParser::default(),
        max_bulk,
        qbuf_limit,
    }
}

/// Goes on serving a connection that moved to I/O worker `worker`.
pub async fn resume(m: Moving, worker: usize) {
    let (mut st, sock) = match m {
        Moving::Client { state, sock } => (*state, sock),
        Moving::Accepted { server, sock, peer } => {
            match TcpStream::from_std(sock) {
                Ok(sock) => serve(server, sock, peer, worker).await,
                Err(e) => server
                    .log
                    .warning(&format!("Moving a new client between I/O workers: {e}")),
            }
            return;
        }
    };
    match TcpStream::from_std(sock) {
        Ok(sock) => {
            let (rd, wr) = sock.into_split();
            drive(st, ReadHalf::Tcp(rd), WriteHalf::Tcp(wr), worker).await
        }
        Err(e) => {
            st.server.log.warning(&format!(
                "Moving client id={} between I/O workers: {e}",
                st.client.handle.id
            ));
            finish(&st.server.clone(), &mut st.client);
        }
    }
}

/// Serves a connection on worker `worker`; then closes it, or hands it to the worker it
/// moves to.
async fn drive(st: Parked, rd: ReadHalf, wr: WriteHalf, worker: usize) {
    st.server.io.arrived(worker);
    let mut conn = Conn { st, rd, wr, worker };
    let end = conn.run().await;
    let Conn { mut st, rd, wr, .. } = conn;
    let server = st.server.clone();
    server.io.left(worker);
    let Ok(End::Move(to)) = end else {
        finish(&server, &mut st.client);
        return;
    };
    let sock = match (rd, wr) {
        (ReadHalf::Tcp(rd), WriteHalf::Tcp(wr)) => match rd.reunite(wr) {
            Ok(s) => s.into_std(),
            Err(_) => Err(std::io::Error::other("socket halves do not match")),
        },
        _ => Err(std::io::Error::other("a Unix-socket client does not move")),
    };
    match sock {
        Ok(sock) => {
            let m = Moving::Client {
                state: Box::new(st),
                sock,
            };
            if let Err(m) = server.io.send(to, m) {
                if let Moving::Client { mut state, .. } = *m {
                    finish(&server, &mut state.client);
                }
            }
        }
        Err(e) => {
            server.log.warning(&format!(
                "Moving client id={} between I/O workers: {e}",
                st.client.handle.id
            ));
            finish(&server, &mut st.client);
        }
    }
}

/// A connection is gone: leave every subscription, WATCH and MONITOR, and the client list.
fn finish(server: &Arc<Server>, client: &mut Client) {
    let id = client.handle.id;
    for c in std::mem::take(&mut client.channels) {
        server.pubsub.unsubscribe(&c, id);
    }
    for p in std::mem::take(&mut client.patterns) {
        server.pubsub.punsubscribe(&p, id);
    }
    server.pubsub.drop_shard_client(id);
    cmd::transactions::unwatch_all(server, client);
    if client.monitor {
        server.remove_monitor(id);
    }
    server.clients.lock().remove(&id);
}

impl Conn {
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.st.out.buf.is_empty() {
            self.st
                .server
                .stats
                .net_out
                .add(self.st.client.handle.id, self.st.out.buf.len() as u64);
            self.wr.write_all(&self.st.out.buf).await?;
            self.st.out.buf.clear();
            if self.st.out.buf.capacity() > 4 * FLUSH_AT {
                self.st.out.buf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        Ok(())
    }

    async fn run(&mut self) -> std::io::Result<End> {
        loop {
            // Run every complete request already buffered, then write all replies at once.
            loop {
                if self.st.client.handle.killed.load(Ordering::Acquire) {
                    self.flush().await?;
                    return Ok(End::Closed);
                }
                let limits = Limits {
                    max_bulk_len: self.st.max_bulk,
                    unauthenticated: !self.st.client.authenticated
                        && self.st.server.requires_auth(),
                };
                match self
                    .st
                    .parser
                    .parse(&mut self.st.rbuf, &mut self.st.args, &limits)
                {
                    Ok(None) => break,
                    Ok(Some(Parsed::Empty)) => continue,
                    Ok(Some(Parsed::Command)) => {
                        if self.execute().await? {
                            self.flush().await?;
                            return Ok(End::Closed);
                        }
                        if self.st.out.buf.len() >= FLUSH_AT {
                            self.flush().await?;
                        }
                    }
                    Err(e) => {
                        self.st.out.error(&format!("ERR {}", e.0));
                        self.flush().await?;
                        self.st.server.log.verbose(&format!(
                            "Protocol error ({}) from client: id={} addr={}",
                            e.0, self.st.client.handle.id, self.st.client.handle.addr
                        ));
                        return Ok(End::Closed);
                    }
                }
            }
            self.flush().await?;
            if self.st.rbuf.len() > self.st.qbuf_limit {
                self.st.server.log.warning(&format!(
                    "Closing client that reached max query buffer length: id={} addr={}",
                    self.st.client.handle.id, self.st.client.handle.addr
                ));
                return Ok(End::Closed);
            }
            // Safe point to change workers: every reply written, nothing awaited. (Only TCP
            // clients move; a Unix-socket client stays on the worker that accepted it.)
            if self.rd.is_tcp() {
                if let Some(to) = self.st.server.io.leave(self.worker) {
                    return Ok(End::Move(to));
                }
            }
            self.st.rbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                r = self.rd.read_buf(&mut self.st.rbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(End::Closed);
                    }
                    self.st.server.stats.net_in.add(self.st.client.handle.id, n as u64);
                    self.st.client.now_ms = crate::db::now_ms();
                    let ms = self.st.client.handle.created.elapsed().as_millis() as u64;
                    self.st.client.handle.last_active_ms.store(ms, Ordering::Relaxed);
                }
                Some(p) = self.st.rx.recv() => {
                    self.write_push(p);
                    while let Ok(p) = self.st.rx.try_recv() {
                        self.write_push(p);
                    }
                }
                _ = self.st.client.handle.kill_notify.notified() => {
                    return Ok(End::Closed);
                }
            }
        }
    }

    fn write_push(&mut self, p: Push) {
        let out = &mut self.st.out;
        match p {
            Push::Message { channel, data } => {
                out.push(3);
                out.bulk(b"message");
                out.bulk(&channel);
                out.bulk(&data);
            }
            Push::PMessage {
                pattern,
                channel,
                data,
            } => {
                out.push(4);
                out.bulk(b"pmessage");
                out.bulk(&pattern);
                out.bulk(&channel);
                out.bulk(&data);
            }
            Push::SMessage { channel, data } => {
                out.push(3);
                out.bulk(b"smessage");
                out.bulk(&channel);
                out.bulk(&data);
            }
            Push::SUnsubscribed { channel, count } => {
                out.push(3);
                out.bulk(b"sunsubscribe");
                out.bulk(&channel);
                out.int(count as i64);
            }
            Push::Monitor(line) => {
                out.simple(&line);
            }
        }
    }

    /// Runs the request in `self.st.args`; returns true when the connection must close.
    async fn execute(&mut self) -> std::io::Result<bool> {
        let server = self.st.server.clone();
        let monitor_db = self.st.client.db;
        if self.st.client.reply_mode == ReplyMode::Skip {
            self.st.client.reply_mode = ReplyMode::Skipping;
        }
        let args = std::mem::take(&mut self.st.args);
        // CLIENT PAUSE WRITE (manual failover): writes wait until the pause ends; they are
        // then routed afresh (a node that stopped being master answers MOVED).
        if server.repl.pause_set() && server.repl.writes_paused(crate::db::now_ms()) {
            self.wait_unpaused(&args).await?;
        }
        let outcome = cmd::dispatch(&server, &mut self.st.client, &mut self.st.out, &args);
        let close = match outcome {
            Outcome::Done => false,
            Outcome::Close => true,
            Outcome::Wait {
                replicas,
                offset,
                timeout_ms,
            } => {
                self.wait_acks(replicas, offset, timeout_ms).await?;
                false
            }
            Outcome::Replicate(start) => {
                self.flush().await?;
                let kill = self.st.client.handle.clone();
                tokio::select! {
                    _ = crate::replication::master::serve(
                        server.clone(), &mut self.rd, &mut self.wr, *start) => {}
                    _ = kill.kill_notify.notified() => {}
                }
                server.repl.remove_link(self.st.client.handle.id);
                true
            }
            Outcome::Block {
                keys,
                timeout_ms,
                on_timeout,
            } => self.block(&args, keys, timeout_ms, on_timeout).await?,
        };
        if self.st.client.reply_mode == ReplyMode::Skipping {
            self.st.client.reply_mode = ReplyMode::On;
        }
        if server.has_monitors() {
            // As Redis 7.0: after the command ran; not for unknown, admin or skip-monitor
            // commands (AUTH, HELLO, CONFIG, MONITOR itself...).
            use slotgate_protocol::commands::{self, flags};
            if let Some(spec) = commands::resolve(&args) {
                if !spec.has_flag(flags::ADMIN)
                    && !spec.has_flag(flags::SKIP_MONITOR)
                    && !self.st.client.monitor
                {
                    server.feed_monitors(monitor_db, &self.st.client.handle.addr, &args);
                }
            }
        }
        self.st.args = args;
        Ok(close || self.st.client.quit)
    }

    /// Holds a write command while client writes are paused (bounded by the pause).
    async fn wait_unpaused(&mut self, args: &[Bytes]) -> std::io::Result<()> {
        use slotgate_protocol::commands::{self, flags};
        let spec = commands::resolve(args);
        let write =
            spec.is_some_and(|s| s.has_flag(flags::WRITE) || s.has_flag(flags::MAY_REPLICATE));
        // CLIENT PAUSE ALL holds every command except the ones that end or inspect a pause.
        let write = write
            || (self.st.server.repl.pause_is_all()
                && !spec.is_some_and(|s| matches!(s.name, "client|unpause" | "info" | "ping")));
        if !write || self.st.client.from_master {
            return Ok(());
        }
        self.flush().await?;
        let limit = Instant::now() + Duration::from_secs(60);
        while self.st.server.repl.writes_paused(crate::db::now_ms()) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.st.client.now_ms = crate::db::now_ms();
        Ok(())
    }

    /// WAIT: replies how many replicas acknowledged `offset`, once `replicas` did or the
    /// timeout passed.
    async fn wait_acks(
        &mut self,
        replicas: usize,
        offset: u64,
        timeout_ms: u64,
    ) -> std::io::Result<()> {
        let server = self.st.server.clone();
        let mut acks = server.repl.ack_watch();
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
        self.flush().await?;
        loop {
            let n = server.repl.acked(offset);
            if n >= replicas {
                self.st.out.int(n as i64);
                return Ok(());
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = acks.changed() => {}
                _ = sleep => {
                    self.st.out.int(server.repl.acked(offset) as i64);
                    return Ok(());
                }
                _ = self.st.client.handle.kill_notify.notified() => {
                    return Err(std::io::Error::other("killed"));
                }
            }
        }
    }

    /// Waits for a blocking command: retried on each wake-up until served, timed out, or the
    /// client is gone. Returns true when the connection must close.
    async fn block(
        &mut self,
        args: &[Bytes],
        mut keys: Vec<Bytes>,
        timeout_ms: u64,
        on_timeout: TimeoutReply,
    ) -> std::io::Result<bool> {
        let server = self.st.server.clone();
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
        // Listen for CLIENT UNBLOCK before the flags say blocked, so no request is missed.
        let handle = self.st.client.handle.clone();
        let unblocked = handle.unblock_notify.notified();
        tokio::pin!(unblocked);
        unblocked.as_mut().enable();
        {
            let mut flags = handle.flags.lock();
            flags.replace_range(.., "b");
            handle.unblock.store(0, Ordering::Relaxed);
        }
        self.flush().await?;
        let waiter = self.st.client.waiter.clone();
        let blocked_on_master = !server.repl.is_replica();
        let mut close = false;
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = waiter.notify.notified() => {
                    if blocked_on_master && server.repl.is_replica() {
                        // As Redis 7: a master turned replica (REPLICAOF, failover) unblocks
                        // its blocked clients with this error and closes their connections.
                        self.st.out.error(
                            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
                        );
                        close = true;
                        break;
                    }
                    self.st.client.now_ms = crate::db::now_ms();
                    let len_before = self.st.out.buf.len();
                    match cmd::dispatch(&server, &mut self.st.client, &mut self.st.out, args) {
                        Outcome::Block { keys: k, .. } => {
                            self.st.out.buf.truncate(len_before);
                            keys = k;
                            continue;
                        }
                        Outcome::Close => { close = true; break; }
                        _ => break,
                    }
                }
                _ = sleep => {
                    self.timed_out(on_timeout);
                    break;
                }
                _ = self.st.client.handle.kill_notify.notified() => { close = true; break; }
                _ = &mut unblocked => {
                    if handle.unblock.load(Ordering::Acquire) == crate::client::UNBLOCK_ERROR {
                        self.st.out.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                    } else {
                        self.timed_out(on_timeout);
                    }
                    break;
                }
                r = self.rd.read_buf(&mut self.st.rbuf) => {
                    match r {
                        Ok(0) | Err(_) => { close = true; break; }
                        Ok(_) => {
                            if self.st.rbuf.len() > self.st.qbuf_limit { close = true; break; }
                        }
                    }
                }
            }
        }
        // Leave every queue this client was in; pass a pending wake-up on to the next waiter.
        let mut l = Locked::new(&server.ks, self.st.client.db, crate::db::now_ms());
        l.lock_keys(keys.iter());
        for k in &keys {
            l.unblock(k, &waiter);
        }
        drop(l);
        self.st.client.handle.flags.lock().replace_range(.., "N");
        Ok(close)
    }

    /// The reply of a blocking command whose timeout passed (or CLIENT UNBLOCK TIMEOUT).
    fn timed_out(&mut self, on_timeout: TimeoutReply) {
        match on_timeout {
            TimeoutReply::NullArray => self.st.out.null_array(),
            TimeoutReply::NullBulk => self.st.out.null(),
        }
    }
}
