//! A client connection: read → parse every complete request → dispatch each through the
//! splitter (backend work starts at once) → resolve replies in request order → write them in
//! one go. At most `max_pipeline` requests are in flight per client; the rest wait in the
//! socket (backpressure), so a client that sends without reading cannot grow proxy memory.

use crate::proxy::Proxy;
use crate::splitter::{self, Pending};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use slotgate_protocol::resp::{Limits, Parsed, RequestParser};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What CLIENT LIST shows about a client (shared with other connections).
pub struct ClientInfo {
    /// Client id.
    pub id: u64,
    /// Peer address.
    pub addr: String,
    /// Connect time.
    pub created: Instant,
    /// CLIENT SETNAME.
    pub name: Mutex<Option<Bytes>>,
    /// CLIENT SETINFO lib-name / lib-ver.
    pub lib: Mutex<(String, String)>,
    /// Last command.
    pub last_cmd: Mutex<&'static str>,
    /// Millis since `created` of the last request.
    pub last_active_ms: AtomicU64,
    /// Set by CLIENT KILL.
    pub killed: AtomicBool,
    /// Wakes the connection when killed.
    pub kill: tokio::sync::Notify,
    /// Waiting in a blocking command (CLIENT LIST flag `b`; CLIENT UNBLOCK applies).
    pub blocked: AtomicBool,
    /// CLIENT UNBLOCK request: [`UNBLOCK_TIMEOUT`] or [`UNBLOCK_ERROR`].
    pub unblock: std::sync::atomic::AtomicU8,
    /// Wakes a blocked client for CLIENT UNBLOCK.
    pub unblock_notify: tokio::sync::Notify,
}

/// CLIENT UNBLOCK ... TIMEOUT (the default): the blocked command answers as if it timed out.
pub const UNBLOCK_TIMEOUT: u8 = 1;
/// CLIENT UNBLOCK ... ERROR: the blocked command answers `-UNBLOCKED`.
pub const UNBLOCK_ERROR: u8 = 2;

impl ClientInfo {
    /// CLIENT UNBLOCK: asks this client's blocking command to be released (by its node, so
    /// nothing it pops is lost); false when it is not blocked.
    pub fn request_unblock(&self, reason: u8) -> bool {
        if !self.blocked.load(Ordering::Acquire) {
            return false;
        }
        self.unblock.store(reason, Ordering::Release);
        self.unblock_notify.notify_waiters();
        true
    }

    /// One CLIENT LIST line.
    pub fn line(&self) -> String {
        let name = self
            .name
            .lock()
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let lib = self.lib.lock().clone();
        let age = self.created.elapsed();
        let idle = age.as_millis() as u64
            - self
                .last_active_ms
                .load(Ordering::Relaxed)
                .min(age.as_millis() as u64);
        format!(
            "id={} addr={} name={} age={} idle={} flags={} db=0 cmd={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            name,
            age.as_secs(),
            idle / 1000,
            if self.blocked.load(Ordering::Relaxed) {
                "b"
            } else {
                "N"
            },
            self.last_cmd.lock(),
            lib.0,
            lib.1
        )
    }
}

/// Per-connection protocol state.
pub struct ClientState {
    /// Client id (also picks the backend connection, so per-node order is kept).
    pub id: u64,
    /// HELLO 3 was negotiated.
    pub resp3: bool,
    /// AUTH succeeded (or no password is required).
    pub authenticated: bool,
    /// Shared info.
    pub info: Arc<ClientInfo>,
    /// Transaction / WATCH state (pinned connection).
    pub tx: crate::session::Tx,
    /// Node that took this client's last write (WAIT goes there).
    pub last_write: Option<Arc<str>>,
    /// The router (slot map and backend pools) of the worker thread serving this client.
    pub router: Arc<crate::router::Router>,
}

/// What a client carries from one worker to another besides its [`ClientState`]: input not
/// parsed yet and the parser's place in it, and its metric handles.
pub struct Carry {
    rbuf: BytesMut,
    parser: RequestParser,
    cm: crate::metrics::CommandMetrics,
}

impl Default for Carry {
    fn default() -> Carry {
        Carry {
            rbuf: BytesMut::new(),
            // Requests are forwarded as they came when they can be (no re-encoding).
            parser: RequestParser::keeping_frames(),
            cm: Default::default(),
        }
    }
}

/// A request's arguments as the slow log would record them.
enum Kept {
    /// The slow log is off.
    Nothing,
    /// The raw request (its arguments are parsed again only if it turns out slow).
    Frame(Bytes),
    /// The arguments (an inline request, which has no raw frame).
    Args(Vec<Bytes>),
}

impl Kept {
    /// The arguments.
    fn args(self) -> Vec<Bytes> {
        match self {
            Kept::Nothing => Vec::new(),
            Kept::Frame(f) => {
                let mut buf = BytesMut::from(&f[..]);
                let mut args = Vec::new();
                let _ =
                    slotgate_protocol::resp::parse_command(&mut buf, &mut args, &Limits::default());
                args
            }
            Kept::Args(a) => a,
        }
    }
}

/// A client on its way between two workers, its socket detached from the old worker's reactor.
pub enum Moving {
    /// Just accepted by a worker that is not serving clients now.
    Accepted {
        /// The socket.
        sock: std::net::TcpStream,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A client between two requests, with its state.
    Client(Box<Parked>),
}

/// A client between two requests.
pub struct Parked {
    /// Protocol state.
    st: ClientState,
    /// The socket.
    sock: std::net::TcpStream,
    /// Unparsed input and metric handles.
    carry: Carry,
}

/// Registers a client accepted by worker `worker` and returns the task that serves it until it
/// disconnects or moves to another worker. (Built here rather than in an `async fn` so the
/// task holds only [`drive`]'s state, not a second copy of the client's: idle clients are
/// counted in bytes.)
pub fn serve(
    proxy: Arc<Proxy>,
    router: Arc<crate::router::Router>,
    sock: TcpStream,
    peer: SocketAddr,
    worker: usize,
) -> impl std::future::Future<Output = ()> {
    let id = proxy.next_client_id();
    let info = Arc::new(ClientInfo {
        id,
        addr: peer.to_string(),
        created: Instant::now(),
        name: Mutex::new(None),
        lib: Mutex::new((String::new(), String::new())),
        last_cmd: Mutex::new("NULL"),
        last_active_ms: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        kill: tokio::sync::Notify::new(),
        blocked: AtomicBool::new(false),
        unblock: std::sync::atomic::AtomicU8::new(0),
        unblock_notify: tokio::sync::Notify::new(),
    });
    proxy.clients.lock().insert(id, info.clone());
    crate::metrics::client_opened();
    let st = ClientState {
        id,
        resp3: false,
        authenticated: proxy.cfg().requirepass.is_none(),
        info,
        tx: crate::session::Tx::default(),
        last_write: None,
        router,
    };
    proxy.io.arrived(worker);
    drive(proxy, st, sock, Carry::default(), worker)
}

/// Goes on serving a client that moved to worker `worker` (whose router is `router`), in a
/// task of its own on this worker (the same size as an accepted client's task).
pub fn resume(proxy: Arc<Proxy>, router: Arc<crate::router::Router>, m: Moving, worker: usize) {
    let (mut st, sock, carry) = match m {
        Moving::Client(p) => {
            let Parked { st, sock, carry } = *p;
            (st, sock, carry)
        }
        Moving::Accepted { sock, peer } => {
            match TcpStream::from_std(sock) {
                Ok(sock) => {
                    tokio::spawn(serve(proxy, router, sock, peer, worker));
                }
                Err(e) => tracing::warn!("moving a new client between workers: {e}"),
            }
            return;
        }
    };
    st.router = router;
    match TcpStream::from_std(sock) {
        Ok(sock) => {
            proxy.io.arrived(worker);
            tokio::spawn(drive(proxy, st, sock, carry, worker));
        }
        Err(e) => {
            tracing::warn!("moving client id={} between workers: {e}", st.id);
            closed(&proxy, &st);
        }
    }
}

/// Runs a client on this worker; then closes it, or hands it to the worker it moves to.
async fn drive(
    proxy: Arc<Proxy>,
    mut st: ClientState,
    mut sock: TcpStream,
    mut carry: Carry,
    worker: usize,
) {
    let end = run(&proxy, &mut st, &mut sock, &mut carry, worker).await;
    proxy.io.left(worker);
    if let Ok(Some(to)) = end {
        match sock.into_std() {
            Ok(sock) => match proxy
                .io
                .send(to, Moving::Client(Box::new(Parked { st, sock, carry })))
            {
                Ok(()) => return,
                Err(m) => {
                    if let Moving::Client(p) = *m {
                        closed(&proxy, &p.st);
                    }
                    return;
                }
            },
            Err(e) => tracing::warn!("moving client id={} between workers: {e}", st.id),
        }
    }
    closed(&proxy, &st);
}

/// The client is gone.
fn closed(proxy: &Proxy, st: &ClientState) {
    proxy.clients.lock().remove(&st.id);
    crate::metrics::client_closed();
}

/// One read from a socket just reported readable, never waiting: `WouldBlock` when it had
/// nothing after all. It goes through `poll_read`, which drops tokio's readiness after a short
/// read (the socket is drained), so the next wait parks at once instead of spending a
/// syscall on a read that can only answer EAGAIN (`try_read` keeps the readiness).
async fn read_ready(sock: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let fut = sock.read_buf(buf);
    tokio::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(r) => std::task::Poll::Ready(r),
        std::task::Poll::Pending => {
            std::task::Poll::Ready(Err(std::io::ErrorKind::WouldBlock.into()))
        }
    })
    .await
}

/// The client loop; `Some(worker)` when the client must move to that worker.
/// (The socket and carried state are borrowed from [`drive`], so the task holds one copy.)
async fn run(
    proxy: &Proxy,
    st: &mut ClientState,
    sock: &mut TcpStream,
    carry: &mut Carry,
    worker: usize,
) -> std::io::Result<Option<usize>> {
    let Carry { rbuf, parser, cm } = carry;
    let mut out = BytesMut::new();
    let mut enc = BytesMut::new();
    let mut args: Vec<Bytes> = Vec::new();
    // Grows with the pipeline depth actually used; idle clients keep nothing.
    let mut batch: Vec<(Pending, &'static str, Kept, Option<u16>)> = Vec::new();
    let idle = proxy.cfg().idle_timeout;
    loop {
        // Safe point to change workers: every reply written, no backend work in flight. A
        // transaction's pinned connection belongs to this worker, so such a client stays.
        if st.tx.conn.is_none() {
            if let Some(to) = proxy.io.leave(worker) {
                return Ok(Some(to));
            }
        }
        // Read more input (or time out when idle, or stop when killed).
        // Buffers are released between batches (below) so idle clients hold no buffer memory.
        // Wait for readability first and only then take a buffer: an idle client holds no
        // read buffer at all (10,000 idle clients cost little memory).
        // Always wait for readiness: a WouldBlock from try_read below clears it, so a client
        // that sent half a request is parked here, never spun on.
        tokio::select! {
            r = sock.readable() => r?,
            _ = st.info.kill.notified() => return Ok(None),
            _ = async {
                if idle.is_zero() { std::future::pending::<()>().await } else { tokio::time::sleep(idle).await }
            } => return Ok(None),
        }
        if rbuf.capacity() == 0 {
            *rbuf = st.router.bufs.take();
        }
        rbuf.reserve(4096);
        let n = match read_ready(sock, rbuf).await {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if rbuf.is_empty() {
                    st.router.bufs.give(std::mem::take(rbuf));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut closing = false;
        loop {
            // Dispatch up to max_pipeline requests; their backend work starts immediately.
            let mut protocol_error = None;
            let (max_pipeline, slow_us) = {
                let c = proxy.cfg();
                (c.max_pipeline, c.slowlog_slower_than_us)
            };
            let slowlog_on = slow_us >= 0;
            if proxy.draining.load(Ordering::Relaxed) {
                return Ok(None);
            }
            // One clock read per batch: every request in it arrived with the same read.
            let started = Instant::now();
            st.info.last_active_ms.store(
                started
                    .saturating_duration_since(st.info.created)
                    .as_millis() as u64,
                Ordering::Relaxed,
            );
            while batch.len() < max_pipeline {
                let limits = Limits {
                    max_bulk_len: slotgate_protocol::resp::DEFAULT_MAX_BULK_LEN,
                    unauthenticated: !st.authenticated,
                };
                match parser.parse(rbuf, &mut args, &limits) {
                    Ok(None) => break,
                    Ok(Some(Parsed::Empty)) => continue,
                    Ok(Some(Parsed::Command)) => {
                        let top = slotgate_protocol::commands::lookup(&args[0]);
                        let raw = parser.take_frame();
                        // What the slow log would show: the raw request (one reference) or
                        // its arguments; turned into text only for a slow request.
                        let kept = match (&raw, slowlog_on) {
                            (_, false) => Kept::Nothing,
                            (Some(f), true) => Kept::Frame(f.clone()),
                            (None, true) => Kept::Args(args.clone()),
                        };
                        let p = splitter::dispatch(proxy, st, top, &args, raw, &mut enc);
                        let name = top.map(|s| s.name).unwrap_or("unknown");
                        // After a (P|S)SUBSCRIBE the rest of the input is read in pub/sub mode.
                        let is_close = matches!(p, Pending::Close(_) | Pending::Subscribe(_));
                        let slot = match &p {
                            Pending::Single { slot, .. } => Some(*slot),
                            Pending::Blocking(b) => Some(b.slot),
                            _ => None,
                        };
                        batch.push((p, name, kept, slot));
                        if is_close {
                            closing = matches!(batch.last(), Some((Pending::Close(_), ..)));
                            break;
                        }
                    }
                    Err(e) => {
                        protocol_error = Some(e);
                        break;
                    }
                }
            }
            if batch.is_empty() && protocol_error.is_none() {
                break;
            }
            // Resolve in request order and write all replies at once.
            if out.capacity() == 0 {
                out = st.router.bufs.take();
            }
            let mut subscribe = None;
            let (mut done, mut last) = (0, None);
            // The clock is read again only after a reply that had to be waited for: replies
            // already there (most of a pipeline) share the last reading.
            let mut now = started;
            for (p, name, kept, slot) in batch.drain(..) {
                let reply = match p {
                    Pending::Subscribe(args) => {
                        subscribe = Some(args);
                        continue;
                    }
                    p @ Pending::Blocking(_) => {
                        // Wait for the backend, but notice a client that goes away.
                        let fut = p.resolve(proxy, st, started);
                        tokio::pin!(fut);
                        let r = loop {
                            tokio::select! {
                                r = &mut fut => break r,
                                n = sock.read_buf(rbuf) => {
                                    if n? == 0 {
                                        return Ok(None);
                                    }
                                }
                            }
                        };
                        now = Instant::now();
                        r
                    }
                    p => {
                        // Polled in place (not moved into a helper future, which would keep a
                        // second copy of it in every client's task).
                        let mut fut = std::pin::pin!(p.resolve(proxy, st, started));
                        let mut waited = false;
                        let reply = std::future::poll_fn(|cx| {
                            let r = fut.as_mut().poll(cx);
                            waited |= r.is_pending();
                            r
                        })
                        .await;
                        if waited {
                            now = Instant::now();
                        }
                        reply
                    }
                };
                let elapsed = now.saturating_duration_since(started);
                cm.record(name, reply.first() != Some(&b'-'), elapsed);
                if slowlog_on && name != "slowlog" && elapsed.as_micros() as u64 >= slow_us as u64 {
                    let node = slot
                        .and_then(|s| st.router.map().master_of(s).map(|a| a.to_string()))
                        .unwrap_or_default();
                    let cname = st
                        .info
                        .name
                        .lock()
                        .as_ref()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .unwrap_or_default();
                    proxy.maybe_slowlog(
                        elapsed.as_micros() as u64,
                        &kept.args(),
                        &st.info.addr,
                        cname,
                        node,
                    );
                }
                out.extend_from_slice(&reply);
                last = Some(name);
                done += 1;
            }
            // Shared counters once per batch, not per request.
            proxy.commands.fetch_add(done, Ordering::Relaxed);
            if let Some(name) = last {
                *st.info.last_cmd.lock() = name;
            }
            if let Some(args) = subscribe {
                sock.write_all(&out).await?;
                out.clear();
                if Box::pin(crate::session::pubsub(proxy, st, sock, rbuf, parser, args))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
                continue;
            }
            if let Some(e) = protocol_error {
                out.extend_from_slice(b"-ERR ");
                out.extend_from_slice(e.0.as_bytes());
                out.extend_from_slice(b"\r\n");
                closing = true;
            }
            cm.flush();
            cm.bytes(0, out.len() as u64);
            sock.write_all(&out).await?;
            out.clear();
            if closing {
                return Ok(None);
            }
            if rbuf.len() > proxy.cfg().max_query_buffer {
                return Ok(None);
            }
        }
        cm.bytes(n as u64, 0);
        // Give the buffers back to the worker between batches: an idle client holds none.
        // (The arguments of the last request are slices of `rbuf`; drop them first so the
        // next user of the buffer can reuse its storage.)
        args.clear();
        if rbuf.is_empty() {
            st.router.bufs.give(std::mem::take(rbuf));
        }
        st.router.bufs.give(std::mem::take(&mut out));
        enc = BytesMut::new();
    }
}
