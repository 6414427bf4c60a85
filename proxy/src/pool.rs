//! Per-node backend connection pool: a small fixed number of multiplexed, pipelined
//! connections to one cluster node.
//!
//! Each connection is one task owning its socket. A client queues a request by appending its
//! bytes to the connection's next write (no message per request, no copy later): the task
//! swaps that buffer for its spare one and writes everything queued with one syscall, and
//! replies are matched to requests in FIFO order by framing them with `protocol::frame_len`.
//! A client always uses the same connection of a node (chosen by client id), so its requests
//! to that node keep their order. A connection that cannot connect marks the node down for a short while;
//! requests then fail fast with a clear error instead of waiting.

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Errors from a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Could not connect (node down).
    #[error("backend {0} is unreachable: {1}")]
    Unreachable(Arc<str>, String),
    /// The connection broke or timed out with the request in flight.
    #[error("backend {0} connection lost: {1}")]
    Lost(Arc<str>, String),
    /// The backend sent something that is not RESP.
    #[error("backend {0} protocol error")]
    Protocol(Arc<str>),
}

/// Settings shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Connections per node.
    pub conns_per_node: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply.
    pub read_timeout: Duration,
    /// How long a node stays marked down after a failed connect.
    pub down_for: Duration,
    /// AUTH sent on connect: (user, password).
    pub auth: Option<(Option<String>, String)>,
    /// Send READONLY on connect (replica connections).
    pub readonly: bool,
    /// Use RESP3 (HELLO 3) on these connections.
    pub resp3: bool,
}

/// What waits for one connection's task: the bytes of every queued request, already laid
/// out as the next write, and where each one's reply goes.
#[derive(Default)]
struct Queue {
    /// The queued requests' bytes, in order.
    wbuf: BytesMut,
    /// Reply frames expected and reply sender of each queued request, in order.
    waiting: Vec<(u32, Reply)>,
    /// The pool is gone: the task ends.
    closed: bool,
}

/// Where a request's reply goes (the last of its frames; earlier ones, e.g. ASKING's `+OK`,
/// are dropped).
type Reply = oneshot::Sender<Result<Bytes, BackendError>>;

/// One connection of a pool as its clients see it: the queue and the task's wake-up.
#[derive(Default)]
struct Conn {
    queue: Mutex<Queue>,
    /// Notified when the queue goes from empty to not empty (or the pool closes).
    wake: tokio::sync::Notify,
}

/// Live counters of a pool (metrics, status).
#[derive(Default)]
pub struct PoolStats {
    /// Errors (connect failures, lost connections).
    pub errors: AtomicU64,
    /// Connections currently established.
    pub connected: AtomicU64,
}

/// The pool of one node.
pub struct Pool {
    /// Node address `host:port`.
    pub addr: Arc<str>,
    conns: Vec<Arc<Conn>>,
    /// Set while `down_until` holds a mark: the request path reads only this flag.
    down: AtomicBool,
    down_until: Mutex<Option<(Instant, String)>>,
    /// Counters.
    pub stats: Arc<PoolStats>,
}

impl Pool {
    /// Starts the connection tasks of a new pool (they connect lazily, on first request).
    pub fn new(addr: Arc<str>, cfg: &PoolConfig) -> Arc<Pool> {
        let stats = Arc::new(PoolStats::default());
        let n = cfg.conns_per_node.max(1);
        let mut conns = Vec::with_capacity(n);
        Arc::new_cyclic(|weak: &std::sync::Weak<Pool>| {
            for _ in 0..n {
                let conn = Arc::new(Conn::default());
                conns.push(conn.clone());
                let task = ConnTask {
                    addr: addr.clone(),
                    cfg: cfg.clone(),
                    conn,
                    pool: weak.clone(),
                    stats: stats.clone(),
                };
                tokio::spawn(task.run());
            }
            Pool {
                addr: addr.clone(),
                conns,
                down: AtomicBool::new(false),
                down_until: Mutex::new(None),
                stats: stats.clone(),
            }
        })
    }

    /// Queues a request on the connection assigned to `client` and returns the reply future.
    pub fn send(
        &self,
        client: u64,
        data: &[u8],
        frames: u32,
    ) -> oneshot::Receiver<Result<Bytes, BackendError>> {
        let (tx, rx) = oneshot::channel();
        if let Some(reason) = self.down_reason() {
            let _ = tx.send(Err(BackendError::Unreachable(self.addr.clone(), reason)));
            return rx;
        }
        let conn = &self.conns[(client as usize) % self.conns.len()];
        let mut q = conn.queue.lock();
        let first = q.waiting.is_empty();
        q.wbuf.extend_from_slice(data);
        q.waiting.push((frames, tx));
        drop(q);
        if first {
            conn.wake.notify_one();
        }
        rx
    }

    /// Why the node is marked down, if it is.
    pub fn down_reason(&self) -> Option<String> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        let mut d = self.down_until.lock();
        match &*d {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            Some(_) => {
                *d = None;
                self.down.store(false, Ordering::Release);
                None
            }
            None => None,
        }
    }

    fn mark_down(&self, why: String, for_: Duration) {
        let mut d = self.down_until.lock();
        *d = Some((Instant::now() + for_, why));
        self.down.store(true, Ordering::Release);
    }

    /// True when not marked down.
    pub fn is_up(&self) -> bool {
        self.down_reason().is_none()
    }
}

impl Drop for Pool {
    /// Ends the connection tasks (what they still hold fails as a closed connection).
    fn drop(&mut self) {
        for c in &self.conns {
            c.queue.lock().closed = true;
            c.wake.notify_one();
        }
    }
}

struct ConnTask {
    addr: Arc<str>,
    cfg: PoolConfig,
    conn: Arc<Conn>,
    pool: std::sync::Weak<Pool>,
    stats: Arc<PoolStats>,
}

struct Pending {
    frames: u32,
    sent: Instant,
    reply: Reply,
}

/// Dials `addr` (`host:port`, IPv6 hosts in brackets or bare).
pub async fn dial(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let target = match addr.rfind(':') {
        Some(i) if addr[..i].contains(':') && !addr.starts_with('[') => {
            format!("[{}]:{}", &addr[..i], &addr[i + 1..])
        }
        _ => addr.to_string(),
    };
    let s = tokio::time::timeout(timeout, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Sends one command on a fresh connection and reads one reply frame (setup commands).
pub async fn roundtrip(
    s: &mut TcpStream,
    args: &[&[u8]],
    timeout: Duration,
) -> std::io::Result<Bytes> {
    let mut out = BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = Instant::now() + timeout;
    loop {
        match slotgate_protocol::frame_len(&buf) {
            Ok(Some(n)) => return Ok(buf.split_to(n).freeze()),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read_buf(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply timed out"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
    }
}

impl ConnTask {
    async fn connect(&self) -> Result<TcpStream, String> {
        let mut s = dial(&self.addr, self.cfg.connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        let t = self.cfg.read_timeout;
        if let Some((user, pass)) = &self.cfg.auth {
            let r = match user {
                Some(u) => roundtrip(&mut s, &[b"AUTH", u.as_bytes(), pass.as_bytes()], t).await,
                None => roundtrip(&mut s, &[b"AUTH", pass.as_bytes()], t).await,
            }
            .map_err(|e| e.to_string())?;
            if r.first() == Some(&b'-') {
                return Err(format!(
                    "AUTH failed: {}",
                    String::from_utf8_lossy(&r[1..]).trim_end()
                ));
            }
        }
        if self.cfg.resp3 {
            let r = roundtrip(&mut s, &[b"HELLO", b"3"], t)
                .await
                .map_err(|e| e.to_string())?;
            if r.first() == Some(&b'-') {
                return Err("backend does not speak RESP3".into());
            }
        }
        if self.cfg.readonly {
            let _ = roundtrip(&mut s, &[b"READONLY"], t).await;
        }
        Ok(s)
    }

    /// Moves everything queued into `pending` and swaps the queued bytes into `wbuf` (empty
    /// on entry, so the queue gets the spare buffer back). `None` once the pool is gone.
    fn take_queued(&self, wbuf: &mut BytesMut, pending: &mut VecDeque<Pending>) -> Option<usize> {
        let mut q = self.conn.queue.lock();
        if q.closed {
            return None;
        }
        if q.waiting.is_empty() {
            return Some(0);
        }
        std::mem::swap(&mut q.wbuf, wbuf);
        let n = q.waiting.len();
        // One clock read (and one count) for the whole write batch.
        let sent = Instant::now();
        pending.extend(q.waiting.drain(..).map(|(frames, reply)| Pending {
            frames,
            sent,
            reply,
        }));
        Some(n)
    }

    /// Fails every queued request with `err` (the node is unreachable).
    fn fail_queued(&self, err: &BackendError) {
        let mut q = self.conn.queue.lock();
        q.wbuf.clear();
        for (_, reply) in q.waiting.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    async fn run(self) {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let latency = crate::metrics::Latency::backend(&self.addr);
        let mut latencies = crate::metrics::LatencyBatch::default();
        let requests =
            metrics::counter!("slotgate_backend_requests_total", "node" => self.addr.to_string());
        // One timer per connection, armed while replies are awaited. It is reset only when it
        // fires (to the oldest request's deadline), not per request: the connection is
        // dropped once its oldest request has waited `read_timeout`, however much new work
        // keeps arriving behind it.
        let timer = tokio::time::sleep(self.cfg.read_timeout);
        tokio::pin!(timer);
        loop {
            // Wait for work before connecting (lazy connect).
            loop {
                {
                    let q = self.conn.queue.lock();
                    if q.closed {
                        return;
                    }
                    if !q.waiting.is_empty() {
                        break;
                    }
                }
                self.conn.wake.notified().await;
            }
            let mut sock = match self.connect().await {
                Ok(s) => s,
                Err(why) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = self.pool.upgrade() {
                        p.mark_down(why.clone(), self.cfg.down_for);
                    }
                    self.fail_queued(&BackendError::Unreachable(self.addr.clone(), why));
                    continue;
                }
            };
            self.stats.connected.fetch_add(1, Ordering::Relaxed);
            let mut armed = false;
            let err = 'conn: loop {
                // Take everything queued and write it in one go.
                match self.take_queued(&mut wbuf, &mut pending) {
                    None => return,
                    Some(0) => {}
                    Some(n) => requests.increment(n as u64),
                }
                if !wbuf.is_empty() {
                    if let Err(e) = sock.write_all(&wbuf).await {
                        break 'conn e.to_string();
                    }
                    wbuf.clear();
                    if wbuf.capacity() > 1 << 20 {
                        // A burst's buffer is not kept.
                        wbuf = BytesMut::with_capacity(16 * 1024);
                    }
                }
                if !armed {
                    if let Some(p) = pending.front() {
                        timer
                            .as_mut()
                            .reset((p.sent + self.cfg.read_timeout).into());
                        armed = true;
                    }
                }
                tokio::select! {
                    biased;
                    r = sock.read_buf(&mut rbuf) => {
                        match r {
                            Ok(0) => break 'conn "connection closed by backend".to_string(),
                            Err(e) => break 'conn e.to_string(),
                            Ok(_) => {}
                        }
                        // One clock read for every reply of this read.
                        let received = Instant::now();
                        loop {
                            match slotgate_protocol::frame_len(&rbuf) {
                                Ok(Some(n)) => {
                                    let frame = rbuf.split_to(n).freeze();
                                    let Some(front) = pending.front_mut() else {
                                        // A reply nobody asked for (e.g. a RESP3 push): drop it.
                                        continue;
                                    };
                                    if frame.first() == Some(&b'>') {
                                        continue;
                                    }
                                    front.frames -= 1;
                                    if front.frames == 0 {
                                        if let Some(p) = pending.pop_front() {
                                            latencies.add(received.saturating_duration_since(p.sent));
                                            let _ = p.reply.send(Ok(frame));
                                        }
                                    }
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    let e = BackendError::Protocol(self.addr.clone());
                                    break 'conn e.to_string();
                                }
                            }
                        }
                        latencies.flush(&latency);
                        if rbuf.capacity() - rbuf.len() < 4096 {
                            rbuf.reserve(16 * 1024);
                        }
                    }
                    _ = self.conn.wake.notified() => {}
                    _ = &mut timer, if armed => {
                        match pending.front() {
                            Some(p) if p.sent.elapsed() >= self.cfg.read_timeout => {
                                break 'conn "read timeout".to_string();
                            }
                            Some(p) => {
                                timer.as_mut().reset((p.sent + self.cfg.read_timeout).into());
                            }
                            None => armed = false,
                        }
                    }
                }
            };
            // The connection is gone: fail what is in flight (it may or may not have run).
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let e = BackendError::Lost(self.addr.clone(), err);
            for p in pending.drain(..) {
                let _ = p.reply.send(Err(e.clone()));
            }
            wbuf.clear();
            rbuf.clear();
        }
    }
}
