//! Strategies that need a dedicated backend connection for one client: transactions
//! (MULTI/EXEC/DISCARD/WATCH/UNWATCH pinned to the owner of the first key's slot), blocking
//! commands (BLPOP & co. wait on their own connection so they never stall the shared pipelines),
//! and pub/sub (SUBSCRIBE/PSUBSCRIBE on one connection to one node, since PUBLISH reaches every
//! node; SSUBSCRIBE on one connection per slot owner; keyspace notifications, which each node
//! publishes for its own keys, on every master; all re-established after a failure, a slot
//! migration or a failover without disconnecting the client).

use crate::client::ClientState;
use crate::pool::{dial, roundtrip};
use crate::redirect::error_reply;
use crate::slotmap::{error_text, parse_redirect};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection owned by one client for the duration of a transaction, a blocking command
/// or a subscription.
pub struct Dedicated {
    /// Node address.
    pub addr: Arc<str>,
    stream: TcpStream,
    buf: BytesMut,
    /// Bound of one [`Dedicated::call`] (the backend read timeout).
    read_timeout: Duration,
    /// A call failed or timed out: the connection may be out of step, so later calls fail.
    broken: bool,
}

impl Dedicated {
    /// Connects (with the backend credentials and protocol of the client) to `addr`.
    pub async fn open(
        router: &crate::router::Router,
        addr: Arc<str>,
        resp3: bool,
    ) -> Result<Dedicated, String> {
        let cfg = router.pool_config();
        let mut s = dial(&addr, cfg.connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        if let Some((user, pass)) = &cfg.auth {
            let r = match user {
                Some(u) => {
                    roundtrip(
                        &mut s,
                        &[b"AUTH", u.as_bytes(), pass.as_bytes()],
                        cfg.read_timeout,
                    )
                    .await
                }
                None => roundtrip(&mut s, &[b"AUTH", pass.as_bytes()], cfg.read_timeout).await,
            }
            .map_err(|e| e.to_string())?;
            if r.first() == Some(&b'-') {
                return Err("backend AUTH failed".into());
            }
        }
        if resp3 {
            let r = roundtrip(&mut s, &[b"HELLO", b"3"], cfg.read_timeout)
                .await
                .map_err(|e| e.to_string())?;
            if r.first() == Some(&b'-') {
                return Err("backend does not speak RESP3".into());
            }
        }
        Ok(Dedicated {
            addr,
            stream: s,
            buf: BytesMut::with_capacity(4096),
            read_timeout: cfg.read_timeout,
            broken: false,
        })
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Reads one complete frame (no timeout: callers bound it when they must).
    pub async fn read_frame(&mut self) -> std::io::Result<Bytes> {
        loop {
            match slotgate_protocol::frame_len(&self.buf) {
                Ok(Some(n)) => return Ok(self.buf.split_to(n).freeze()),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed by backend",
                ));
            }
        }
    }

    /// The socket and any bytes already read from it (to hand the connection to a reader task).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Sends `data` (producing `n` replies) and returns the replies, within the backend read
    /// timeout (a node that stops answering fails the call instead of holding the client).
    /// After a failed call the connection is out of step: every later call fails at once.
    pub async fn call(&mut self, data: &[u8], n: usize) -> std::io::Result<Vec<Bytes>> {
        if self.broken {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection broken by an earlier error",
            ));
        }
        let limit = self.read_timeout;
        let exchange = async {
            self.send(data).await?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(self.read_frame().await?);
            }
            Ok(out)
        };
        let r = match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timeout",
            )),
        };
        self.broken = r.is_err();
        r
    }
}

/// Transaction state of a client.
#[derive(Default)]
pub struct Tx {
    /// MULTI was sent by the client (EXEC/DISCARD pending).
    pub in_multi: bool,
    /// Slot every key of the transaction (and WATCH) must hash to.
    pub slot: Option<u16>,
    /// A queued command was rejected: EXEC answers EXECABORT.
    pub aborted: bool,
    /// Commands queued before the connection was opened (keyless ones).
    pub buffered: Vec<Bytes>,
    /// The pinned connection (opened at WATCH or at the first keyed command).
    pub conn: Option<Dedicated>,
    /// MULTI already sent on `conn`.
    pub multi_sent: bool,
}

/// Transaction operations, resolved in request order.
pub enum TxOp {
    /// MULTI.
    Multi,
    /// A command inside MULTI (encoded), with its slot if it has keys.
    Queue(Bytes, Option<u16>),
    /// WATCH (encoded) for keys in `slot`.
    Watch(Bytes, u16),
    /// UNWATCH.
    Unwatch,
    /// EXEC.
    Exec,
    /// DISCARD.
    Discard,
}

fn clean_error(reply: Bytes, router: &crate::router::Router) -> Bytes {
    if let Some(t) = error_text(&reply) {
        if let Some((_, slot, _)) = parse_redirect(t) {
            router.schedule_refresh(None);
            return error_reply(&format!(
                "ERR slotgate: slot {slot} moved during the transaction; retry the transaction"
            ));
        }
    }
    reply
}

async fn ensure_conn(st: &mut ClientState, slot: Option<u16>) -> Result<(), Bytes> {
    if st.tx.conn.is_some() {
        return Ok(());
    }
    let map = st.router.map();
    let addr = match slot {
        Some(s) => map.master_of(s).cloned(),
        None => {
            let mut m = map.masters();
            m.sort();
            m.into_iter().next()
        }
    };
    let Some(addr) = addr else {
        return Err(error_reply("CLUSTERDOWN Hash slot not served"));
    };
    let c = Dedicated::open(&st.router, addr, st.resp3)
        .await
        .map_err(|e| error_reply(&format!("ERR slotgate: {e}")))?;
    st.tx.conn = Some(c);
    Ok(())
}

/// Sends MULTI and the buffered commands on the pinned connection if not done yet.
async fn start_multi(st: &mut ClientState) -> std::io::Result<()> {
    if st.tx.multi_sent {
        return Ok(());
    }
    let Some(conn) = st.tx.conn.as_mut() else {
        return Ok(());
    };
    let mut data = BytesMut::from(&b"*1\r\n$5\r\nMULTI\r\n"[..]);
    for b in &st.tx.buffered {
        data.extend_from_slice(b);
    }
    let n = 1 + st.tx.buffered.len();
    let replies = conn.call(&data, n).await?;
    st.tx.buffered.clear();
    st.tx.multi_sent = true;
    if replies.iter().any(|r| r.first() == Some(&b'-')) {
        st.tx.aborted = true;
    }
    Ok(())
}

fn end_tx(st: &mut ClientState) {
    st.tx = Tx::default();
}

fn lost(e: std::io::Error) -> Bytes {
    error_reply(&format!("ERR slotgate: transaction connection lost: {e}"))
}

/// Runs one transaction operation.
pub async fn run_tx(op: TxOp, st: &mut ClientState) -> Bytes {
    match op {
        TxOp::Multi => Bytes::from_static(b"+OK\r\n"),
        TxOp::Watch(data, slot) => {
            if let Err(e) = ensure_conn(st, Some(slot)).await {
                return e;
            }
            let Some(conn) = st.tx.conn.as_mut() else {
                return lost(std::io::ErrorKind::NotConnected.into());
            };
            match conn.call(&data, 1).await {
                Ok(mut r) => clean_error(r.pop().unwrap_or_default(), &st.router),
                Err(e) => {
                    end_tx(st);
                    lost(e)
                }
            }
        }
        TxOp::Unwatch => {
            if let Some(conn) = st.tx.conn.as_mut() {
                if !st.tx.in_multi {
                    let _ = conn.call(b"*1\r\n$7\r\nUNWATCH\r\n", 1).await;
                    end_tx(st);
                }
            }
            Bytes::from_static(b"+OK\r\n")
        }
        TxOp::Queue(data, slot) => {
            if st.tx.conn.is_none() && slot.is_none() {
                st.tx.buffered.push(data);
                return Bytes::from_static(b"+QUEUED\r\n");
            }
            if let Err(e) = ensure_conn(st, slot.or(st.tx.slot)).await {
                st.tx.aborted = true;
                return e;
            }
            if let Err(e) = start_multi(st).await {
                st.tx.aborted = true;
                return lost(e);
            }
            let Some(conn) = st.tx.conn.as_mut() else {
                return lost(std::io::ErrorKind::NotConnected.into());
            };
            match conn.call(&data, 1).await {
                Ok(mut r) => {
                    let reply = r.pop().unwrap_or_default();
                    if reply.first() == Some(&b'-') {
                        st.tx.aborted = true;
                    }
                    clean_error(reply, &st.router)
                }
                Err(e) => {
                    st.tx.aborted = true;
                    lost(e)
                }
            }
        }
        TxOp::Discard => {
            if let Some(conn) = st.tx.conn.as_mut() {
                let _ = conn.call(b"*1\r\n$7\r\nDISCARD\r\n", 1).await;
            }
            end_tx(st);
            Bytes::from_static(b"+OK\r\n")
        }
        TxOp::Exec => {
            if st.tx.aborted {
                if let Some(conn) = st.tx.conn.as_mut() {
                    if st.tx.multi_sent {
                        let _ = conn.call(b"*1\r\n$7\r\nDISCARD\r\n", 1).await;
                    }
                }
                end_tx(st);
                return error_reply("EXECABORT Transaction discarded because of previous errors.");
            }
            if let Err(e) = ensure_conn(st, st.tx.slot).await {
                end_tx(st);
                return e;
            }
            if let Err(e) = start_multi(st).await {
                end_tx(st);
                return lost(e);
            }
            let reply = match st.tx.conn.as_mut() {
                Some(conn) => match conn.call(b"*1\r\n$4\r\nEXEC\r\n", 1).await {
                    // A slot that moved since MULTI: the node discarded the transaction.
                    Ok(mut r) => clean_error(r.pop().unwrap_or_default(), &st.router),
                    Err(e) => lost(e),
                },
                None => lost(std::io::ErrorKind::NotConnected.into()),
            };
            end_tx(st);
            reply
        }
    }
}

/// False when `addr` answers a redirect for `key` (it no longer serves the slot); true when
/// it serves it or cannot be asked (a stale slot map must not cut a blocked client).
async fn still_owner(st: &ClientState, addr: &Arc<str>, key: &Bytes) -> bool {
    let mut enc = BytesMut::new();
    slotgate_protocol::resp::write_command(&mut enc, &[&b"EXISTS"[..], key]);
    let probe = st.router.pool(addr).send(st.id, &enc, 1);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(Ok(r))) => error_text(&r).and_then(parse_redirect).is_none(),
        _ => true,
    }
}

/// How long a blocking command keeps retrying when its node is unreachable (failover).
const BLOCKING_RETRY_FOR: Duration = Duration::from_secs(60);

/// Runs a blocking command on its own connection to the slot's master, following MOVED/ASK.
/// It survives its node: a lost connection (node killed) or a slot that the map gives to
/// another node (reshard, failover; a node that keeps the client blocked instead of answering
/// MOVED) makes it start again on the new owner, within the command's own timeout.
pub async fn run_blocking(
    st: &ClientState,
    slot: u16,
    data: Bytes,
    key: Bytes,
    timeout: Option<Duration>,
    null_bulk: bool,
) -> Bytes {
    let started = tokio::time::Instant::now();
    let deadline = timeout.map(|t| started + t);
    let null = || -> Bytes {
        if st.resp3 {
            Bytes::from_static(b"_\r\n")
        } else if null_bulk {
            Bytes::from_static(b"$-1\r\n")
        } else {
            Bytes::from_static(b"*-1\r\n")
        }
    };
    let mut target: Option<Arc<str>> = None;
    let mut asking = false;
    let mut redirects = 0;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(50);
    // CLIENT UNBLOCK for this client: listened for before the client shows as blocked.
    let info = st.info.clone();
    let unblocked = info.unblock_notify.notified();
    tokio::pin!(unblocked);
    unblocked.as_mut().enable();
    let _blocked = BlockedFlag::set(&info);
    let mut unblock_pending = false;
    loop {
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return null();
        }
        if let Some(t) = failing_since {
            if t.elapsed() > BLOCKING_RETRY_FOR {
                return error_reply("ERR slotgate: the slot's master stayed unreachable");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        let addr = match target.take() {
            Some(a) => a,
            None => match st.router.map().master_of(slot) {
                Some(a) => a.clone(),
                None => {
                    st.router.schedule_refresh(None);
                    failing_since.get_or_insert_with(tokio::time::Instant::now);
                    continue;
                }
            },
        };
        let mut conn = match Dedicated::open(&st.router, addr.clone(), st.resp3).await {
            Ok(c) => c,
            Err(_) => {
                st.router.schedule_refresh(None);
                failing_since.get_or_insert_with(tokio::time::Instant::now);
                continue;
            }
        };
        // CLIENT ID first: CLIENT UNBLOCK is then relayed to the node for this connection, and
        // the node's own answer (or an element it had popped just before) goes to the client.
        let mut d = BytesMut::from(&b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n"[..]);
        if asking {
            d.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
        }
        d.extend_from_slice(&data);
        let sent = conn.send(&d).await;
        let asked = std::mem::take(&mut asking);
        let backend_id = match sent {
            Ok(()) => conn.read_frame().await.ok().map(|r| {
                r.strip_prefix(b":")
                    .and_then(|x| x.strip_suffix(b"\r\n"))
                    .and_then(slotgate_protocol::resp::parse_i64)
            }),
            Err(_) => None,
        };
        if backend_id.is_none() || (asked && conn.read_frame().await.is_err()) {
            st.router.schedule_refresh(None);
            failing_since.get_or_insert_with(tokio::time::Instant::now);
            continue;
        }
        let backend_id = backend_id.flatten();
        failing_since = None;
        backoff = Duration::from_millis(50);
        // Wait for the reply, watching the slot map and the command's own deadline.
        let mut check = tokio::time::interval(Duration::from_millis(250));
        check.tick().await;
        let blocked_at = tokio::time::Instant::now();
        let reply = loop {
            tokio::select! {
                r = conn.read_frame() => break r,
                _ = &mut unblocked, if !unblock_pending => {
                    unblock_pending = true;
                    let Some(bid) = backend_id else {
                        // The node did not say who we are: release the client here.
                        return unblocked_reply(&info, null());
                    };
                    let reason = if info.unblock.load(Ordering::Acquire) == crate::client::UNBLOCK_ERROR {
                        "ERROR"
                    } else {
                        "TIMEOUT"
                    };
                    let mut enc = BytesMut::new();
                    slotgate_protocol::resp::write_command(
                        &mut enc,
                        &[&b"CLIENT"[..], b"UNBLOCK", bid.to_string().as_bytes(), reason.as_bytes()],
                    );
                    let r = st.router.pool(&addr).send(st.id, &enc, 1);
                    match tokio::time::timeout(Duration::from_secs(2), r).await {
                        // Keep reading: the node now answers the blocked command itself.
                        Ok(Ok(Ok(r))) if r.starts_with(b":1") => {}
                        // Not blocked there (yet, or any more), or the node cannot be asked.
                        _ => return unblocked_reply(&info, null()),
                    }
                }
                _ = check.tick() => {
                    let moved = st.router.map().master_of(slot).is_some_and(|m| *m != addr);
                    if moved && !asked && !still_owner(st, &addr, &key).await {
                        // The node itself says the slot is gone (it takes no more writes
                        // there): unblock by dropping the connection, after a last look for
                        // a reply already on its way.
                        match tokio::time::timeout(Duration::from_millis(100), conn.read_frame()).await {
                            Ok(r) => break r,
                            Err(_) => break Err(std::io::ErrorKind::Interrupted.into()),
                        }
                    }
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => return null(),
            }
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    crate::metrics::error("blocking_retry");
                    st.router.schedule_refresh(None);
                    failing_since.get_or_insert_with(tokio::time::Instant::now);
                }
                continue;
            }
        };
        if blocked_at.elapsed() > Duration::from_secs(1) {
            redirects = 0; // a long wait is not a redirect loop
        }
        // A master that became a replica (failover, REPLICAOF) unblocks its clients with
        // this error and drops them: wait again on the slot's new master.
        if reply.starts_with(b"-UNBLOCKED force unblock") {
            crate::metrics::error("blocking_retry");
            st.router.schedule_refresh(None);
            failing_since.get_or_insert_with(tokio::time::Instant::now);
            continue;
        }
        match error_text(&reply).and_then(parse_redirect) {
            Some((ask, s, to)) => {
                redirects += 1;
                if redirects > crate::redirect::MAX_REDIRECTS {
                    return error_reply("ERR slotgate: too many redirects");
                }
                if !ask {
                    st.router.moved(s, &to);
                }
                asking = ask;
                target = Some(Arc::from(to.as_str()));
            }
            None => return reply,
        }
    }
}

/// Marks a client blocked (CLIENT LIST `b`, CLIENT UNBLOCK) for as long as it lives.
struct BlockedFlag<'a>(&'a crate::client::ClientInfo);

impl<'a> BlockedFlag<'a> {
    fn set(info: &'a crate::client::ClientInfo) -> BlockedFlag<'a> {
        info.blocked.store(true, Ordering::Release);
        BlockedFlag(info)
    }
}

impl Drop for BlockedFlag<'_> {
    fn drop(&mut self) {
        self.0.blocked.store(false, Ordering::Release);
    }
}

/// The reply of a client released by CLIENT UNBLOCK when its node could not be asked.
fn unblocked_reply(info: &crate::client::ClientInfo, timeout_reply: Bytes) -> Bytes {
    if info.unblock.load(Ordering::Acquire) == crate::client::UNBLOCK_ERROR {
        Bytes::from_static(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n")
    } else {
        timeout_reply
    }
}

// ---------------------------------------------------------------------------------------------
// Pub/Sub
// ---------------------------------------------------------------------------------------------

/// A frame from one backend link of a pub/sub session (None: the link closed).
type Event = (u64, Option<Bytes>);

/// Backend frames that may wait for a slow client before the links stop reading (the nodes'
/// output buffer limits then apply, as for a direct subscriber).
const EVENT_QUEUE: usize = 4096;
/// How long a lost subscription is retried before the client is told it is gone.
const RESUBSCRIBE_FOR: Duration = Duration::from_secs(60);
/// How often lost subscriptions are retried and shard channels checked against the slot map.
const REPAIR_EVERY: Duration = Duration::from_millis(250);
/// Most slots re-subscribed per repair round (the client is served in between).
const REPAIR_BATCH: usize = 64;

/// One backend connection of a pub/sub session; its reader task feeds the session's queue.
struct Link {
    id: u64,
    addr: Arc<str>,
    w: tokio::net::tcp::OwnedWriteHalf,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where a shard channel subscription lives.
#[derive(Clone, PartialEq, Eq)]
enum Place {
    /// Subscribed on this node's link.
    On(Arc<str>),
    /// Lost (node down, slot moved) since then: being re-established.
    Lost(Instant),
}

/// What a backend frame is.
enum Kind {
    /// message / pmessage / smessage: forwarded to the client.
    Message,
    /// A (un)subscribe confirmation: kind (lowercase) and channel (None for nil).
    Confirm(Vec<u8>, Option<Bytes>),
    /// An error reply.
    Error,
    /// Anything else (ASKING's +OK, stray replies).
    Other,
}

/// A keyspace-notification channel or pattern (`__keyspace@<db>__:...`, `__keyevent@...`,
/// `__key*__:*`): published by each node for its own keys only.
fn is_keyspace(name: &[u8]) -> bool {
    name.starts_with(b"__key")
}

fn classify(f: &Bytes) -> Kind {
    // Fast path for messages, the bulk of the traffic.
    if f.len() > 16 && (f[0] == b'*' || f[0] == b'>') {
        let rest = &f[1..];
        if rest.starts_with(b"3\r\n$7\r\nmessage\r\n")
            || rest.starts_with(b"3\r\n$8\r\nsmessage\r\n")
            || rest.starts_with(b"4\r\n$8\r\npmessage\r\n")
        {
            return Kind::Message;
        }
    }
    use slotgate_protocol::Frame;
    match slotgate_protocol::resp::decode_complete(f) {
        Ok(Frame::Error(_)) => Kind::Error,
        Ok(Frame::Array(v)) | Ok(Frame::Push(v)) => {
            let kind = match v.first() {
                Some(Frame::Bulk(k)) | Some(Frame::Simple(k)) => k.to_ascii_lowercase(),
                _ => return Kind::Other,
            };
            if matches!(kind.as_slice(), b"message" | b"pmessage" | b"smessage") {
                return Kind::Message;
            }
            let name = match v.get(1) {
                Some(Frame::Bulk(c)) | Some(Frame::Simple(c)) => Some(c.clone()),
                _ => None,
            };
            if v.len() == 3 {
                Kind::Confirm(kind, name)
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    }
}

/// Writes one subscription confirmation `[kind, name|nil, count]` (a push in RESP3).
fn confirm(out: &mut BytesMut, resp3: bool, kind: &str, name: Option<&[u8]>, count: usize) {
    slotgate_protocol::resp::write_header(out, if resp3 { b'>' } else { b'*' }, 3);
    slotgate_protocol::resp::write_bulk(out, kind.as_bytes());
    match name {
        Some(n) => slotgate_protocol::resp::write_bulk(out, n),
        None => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
    }
    slotgate_protocol::resp::write_integer(out, count as i64);
}

/// Confirmations a client not in pub/sub mode gets for (P|S)UNSUBSCRIBE: one per argument,
/// or one with a nil name, all with count 0 (Redis 7.0).
pub fn unsubscribed_reply(resp3: bool, kind: &str, names: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    if names.is_empty() {
        confirm(&mut out, resp3, kind, None, 0);
    }
    for n in names {
        confirm(&mut out, resp3, kind, Some(n), 0);
    }
    out.freeze()
}

/// The slot all `channels` hash to, or the CROSSSLOT error (as a cluster node answers).
fn one_slot(channels: &[Bytes]) -> Result<u16, Bytes> {
    let slot = channels
        .first()
        .map(|c| slotgate_protocol::key_slot(c))
        .unwrap_or(0);
    if channels
        .iter()
        .any(|c| slotgate_protocol::key_slot(c) != slot)
    {
        return Err(error_reply(
            "CROSSSLOT Keys in request don't hash to the same slot",
        ));
    }
    Ok(slot)
}

/// Outcome of waiting for a backend's confirmations.
enum Ack {
    /// All confirmations arrived.
    Done,
    /// The backend answered an error (raw reply).
    Error(Bytes),
    /// The link broke or timed out (it has been dropped).
    Lost,
}

/// What the client loop does after a command.
enum Flow {
    /// Stay in the session.
    Stay,
    /// Close the client connection (QUIT, or the client is gone).
    Close,
    /// Back to normal mode at once (RESET).
    Leave,
}

/// Why a shard subscription could not be made.
enum SubErr {
    /// The cluster answered an error (passed to the client).
    Reply(Bytes),
    /// The node could not be reached or the link broke: retried in the background.
    Lost,
}

/// One client in pub/sub mode.
struct PubSub<'a> {
    proxy: &'a crate::proxy::Proxy,
    st: &'a mut ClientState,
    tx: tokio::sync::mpsc::Sender<Event>,
    rx: tokio::sync::mpsc::Receiver<Event>,
    next_id: u64,
    /// The link carrying SUBSCRIBE/PSUBSCRIBE (one node is enough: PUBLISH reaches all).
    classic: Option<Link>,
    /// The classic link was lost: since when, and the node that failed.
    classic_lost: Option<(Instant, Option<Arc<str>>)>,
    /// Shard links by node address.
    shard: std::collections::HashMap<Arc<str>, Link>,
    /// Links to every other master carrying the client's keyspace-notification subscriptions
    /// (`__keyspace@...`, `__keyevent@...`): Redis publishes those on the node that holds the
    /// key only, so one node would show a fraction of them.
    mirrors: std::collections::HashMap<Arc<str>, Link>,
    channels: std::collections::BTreeSet<Bytes>,
    patterns: std::collections::BTreeSet<Bytes>,
    schannels: std::collections::BTreeMap<Bytes, Place>,
    /// Bytes for the client, written after each batch of work.
    out: BytesMut,
    enc: BytesMut,
}

impl PubSub<'_> {
    fn resp3(&self) -> bool {
        self.st.resp3
    }

    /// Writes a confirmation for the client.
    fn conf(&mut self, kind: &str, name: Option<&[u8]>, count: usize) {
        let resp3 = self.st.resp3;
        confirm(&mut self.out, resp3, kind, name, count);
    }

    fn classic_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// True when the client has no subscription left (back to normal mode).
    fn idle(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.schannels.is_empty()
    }

    async fn open_link(&mut self, addr: Arc<str>) -> Result<Link, String> {
        let d = Dedicated::open(&self.st.router, addr, self.st.resp3).await?;
        let addr = d.addr.clone();
        let (stream, mut buf) = d.into_parts();
        let (mut r, w) = stream.into_split();
        self.next_id += 1;
        let id = self.next_id;
        let tx = self.tx.clone();
        let reader = tokio::spawn(async move {
            loop {
                loop {
                    match slotgate_protocol::frame_len(&buf) {
                        Ok(Some(n)) => {
                            let f = buf.split_to(n).freeze();
                            if tx.send((id, Some(f))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            let _ = tx.send((id, None)).await;
                            return;
                        }
                    }
                }
                buf.reserve(4096);
                match r.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send((id, None)).await;
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
        Ok(Link {
            id,
            addr,
            w,
            reader,
        })
    }

    /// Opens the classic link on some master (the one that failed last, if any, tried last).
    async fn open_classic(&mut self, avoid: Option<&str>) -> Result<(), String> {
        let mut masters = self.st.router.map().masters();
        masters.sort();
        masters.sort_by_key(|m| Some(&**m) == avoid);
        let mut last = "no masters known".to_string();
        for m in masters {
            match self.open_link(m).await {
                Ok(l) => {
                    self.classic = Some(l);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The id of the shard link to `addr`, opened if needed.
    async fn shard_link(&mut self, addr: &Arc<str>) -> Result<u64, String> {
        if let Some(l) = self.shard.get(addr) {
            return Ok(l.id);
        }
        let l = self.open_link(addr.clone()).await?;
        let id = l.id;
        self.shard.insert(addr.clone(), l);
        Ok(id)
    }

    fn link_mut(&mut self, id: u64) -> Option<&mut Link> {
        if self.classic.as_ref().is_some_and(|l| l.id == id) {
            return self.classic.as_mut();
        }
        if let Some(l) = self.mirrors.values_mut().find(|l| l.id == id) {
            return Some(l);
        }
        self.shard.values_mut().find(|l| l.id == id)
    }

    /// The client's keyspace-notification channels and patterns (mirrored on every master).
    fn mirrored(&self) -> (Vec<Bytes>, Vec<Bytes>) {
        let pick = |set: &std::collections::BTreeSet<Bytes>| {
            set.iter()
                .filter(|n| is_keyspace(n))
                .cloned()
                .collect::<Vec<_>>()
        };
        (pick(&self.channels), pick(&self.patterns))
    }

    /// Sends SUBSCRIBE `chans` and PSUBSCRIBE `pats` on link `id` and waits for their
    /// confirmations; false when the link failed (it is then dropped).
    async fn subscribe_on(&mut self, id: u64, chans: &[Bytes], pats: &[Bytes]) -> bool {
        for (kind, names) in [("SUBSCRIBE", chans), ("PSUBSCRIBE", pats)] {
            if !names.is_empty() {
                let mut c = vec![Bytes::from_static(kind.as_bytes())];
                c.extend(names.iter().cloned());
                slotgate_protocol::resp::write_command(&mut self.enc, &c);
            }
        }
        let data = self.enc.split();
        if !self.send(id, &data).await {
            return false;
        }
        for (kind, n) in [
            (&b"subscribe"[..], chans.len()),
            (b"psubscribe", pats.len()),
        ] {
            if n > 0 && !matches!(self.await_acks(id, kind, n).await, Ack::Done) {
                self.link_closed(id);
                return false;
            }
        }
        true
    }

    /// Makes the mirror links match the cluster: one on each master other than the classic
    /// link's node, subscribed to the client's keyspace channels and patterns.
    async fn sync_mirrors(&mut self) {
        let (chans, pats) = self.mirrored();
        if chans.is_empty() && pats.is_empty() {
            self.mirrors.clear();
            return;
        }
        let classic = self.classic.as_ref().map(|l| l.addr.clone());
        let mut want = self.st.router.map().masters();
        want.retain(|m| Some(m) != classic.as_ref());
        self.mirrors.retain(|a, _| want.contains(a));
        for m in want {
            if self.mirrors.contains_key(&m) {
                continue;
            }
            let Ok(l) = self.open_link(m.clone()).await else {
                continue;
            };
            let id = l.id;
            self.mirrors.insert(m, l);
            self.subscribe_on(id, &chans, &pats).await;
        }
    }

    /// Sends on a link; a failed write drops the link. False when it failed.
    async fn send(&mut self, id: u64, data: &[u8]) -> bool {
        let ok = match self.link_mut(id) {
            Some(l) => l.w.write_all(data).await.is_ok(),
            None => false,
        };
        if !ok {
            self.link_closed(id);
        }
        ok
    }

    /// A link is gone: its subscriptions are marked lost (re-established by `repair`).
    fn link_closed(&mut self, id: u64) {
        if let Some(addr) = self
            .mirrors
            .iter()
            .find(|(_, l)| l.id == id)
            .map(|(a, _)| a.clone())
        {
            // Opened again by the next repair (`sync_mirrors`).
            self.mirrors.remove(&addr);
            crate::metrics::error("pubsub_resubscribe");
            self.st.router.schedule_refresh(None);
            return;
        }
        if self.classic.as_ref().is_some_and(|l| l.id == id) {
            let failed = self.classic.take().map(|l| l.addr.clone());
            crate::metrics::error("pubsub_resubscribe");
            self.classic_lost = Some((Instant::now(), failed));
            self.st.router.schedule_refresh(None);
            return;
        }
        let Some(addr) = self
            .shard
            .iter()
            .find(|(_, l)| l.id == id)
            .map(|(a, _)| a.clone())
        else {
            return;
        };
        self.shard.remove(&addr);
        crate::metrics::error("pubsub_resubscribe");
        let now = Instant::now();
        for p in self.schannels.values_mut() {
            if *p == Place::On(addr.clone()) {
                *p = Place::Lost(now);
            }
        }
        self.st.router.schedule_refresh(None);
    }

    /// Handles a frame that is not the answer being waited for.
    fn on_event(&mut self, (id, f): Event) {
        let Some(f) = f else {
            self.link_closed(id);
            return;
        };
        match classify(&f) {
            Kind::Message => self.out.extend_from_slice(&f),
            Kind::Confirm(k, Some(ch)) if k == b"sunsubscribe" => {
                // A node that stops serving a slot unsubscribes its shard channels (Redis 7):
                // re-subscribe where the slot lives now; the client is not told.
                let addr = self
                    .shard
                    .iter()
                    .find(|(_, l)| l.id == id)
                    .map(|(a, _)| a.clone());
                if let (Some(addr), Some(p)) = (addr, self.schannels.get_mut(&ch)) {
                    if *p == Place::On(addr) {
                        *p = Place::Lost(Instant::now());
                        self.st.router.schedule_refresh(None);
                    }
                }
            }
            _ => {}
        }
    }

    /// Waits for `n` confirmations of `kind` (or one error) on link `id`, handling the other
    /// links' frames meanwhile.
    async fn await_acks(&mut self, id: u64, kind: &[u8], n: usize) -> Ack {
        let limit = self
            .st
            .router
            .pool_config()
            .read_timeout
            .max(Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = 0;
        while got < n {
            let ev = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => {
                    self.link_closed(id);
                    return Ack::Lost;
                }
            };
            if ev.0 != id {
                self.on_event(ev);
                continue;
            }
            let Some(f) = ev.1 else {
                self.link_closed(id);
                return Ack::Lost;
            };
            match classify(&f) {
                Kind::Error => return Ack::Error(f),
                Kind::Confirm(k, _) if k == kind => got += 1,
                _ => self.on_event((id, Some(f))),
            }
        }
        Ack::Done
    }

    /// SUBSCRIBE / PSUBSCRIBE.
    async fn subscribe(&mut self, pattern: bool, names: &[Bytes]) {
        let kind = if pattern { "psubscribe" } else { "subscribe" };
        if self.classic.is_none() && self.classic_lost.is_none() {
            if let Err(e) = self.open_classic(None).await {
                self.out
                    .extend_from_slice(&error_reply(&format!("ERR slotgate: {e}")));
                return;
            }
        }
        if let Some(id) = self.classic.as_ref().map(|l| l.id) {
            let mut cmd = vec![Bytes::from_static(kind.as_bytes())];
            cmd.extend(names.iter().cloned());
            slotgate_protocol::resp::write_command(&mut self.enc, &cmd);
            let data = self.enc.split();
            if self.send(id, &data).await {
                if let Ack::Error(e) = self.await_acks(id, kind.as_bytes(), names.len()).await {
                    self.out.extend_from_slice(&e);
                    return;
                }
            }
        }
        // Keyspace notifications: the same subscription on every other master, confirmed
        // there before the client is told (so no event of a later write is missed).
        let local: Vec<Bytes> = names.iter().filter(|n| is_keyspace(n)).cloned().collect();
        if !local.is_empty() {
            let ids: Vec<u64> = self.mirrors.values().map(|l| l.id).collect();
            let (c, p) = if pattern {
                (&[][..], &local[..])
            } else {
                (&local[..], &[][..])
            };
            for id in ids {
                self.subscribe_on(id, c, p).await;
            }
        }
        // Lost links are re-established with every subscription by `repair`.
        let mut counts = Vec::with_capacity(names.len());
        for n in names {
            if pattern {
                self.patterns.insert(n.clone());
            } else {
                self.channels.insert(n.clone());
            }
            counts.push(self.classic_count());
        }
        if !local.is_empty() {
            self.sync_mirrors().await;
        }
        for (n, c) in names.iter().zip(counts) {
            self.conf(kind, Some(n), c);
        }
    }

    /// UNSUBSCRIBE / PUNSUBSCRIBE.
    async fn unsubscribe(&mut self, pattern: bool, names: &[Bytes]) {
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let set = if pattern {
            &self.patterns
        } else {
            &self.channels
        };
        let targets: Vec<Bytes> = if names.is_empty() {
            set.iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if targets.is_empty() {
            let c = self.classic_count();
            self.conf(kind, None, c);
            return;
        }
        if let Some(id) = self.classic.as_ref().map(|l| l.id) {
            let mut cmd = vec![Bytes::from_static(kind.as_bytes())];
            cmd.extend(targets.iter().cloned());
            slotgate_protocol::resp::write_command(&mut self.enc, &cmd);
            let data = self.enc.split();
            if self.send(id, &data).await {
                if let Ack::Error(e) = self.await_acks(id, kind.as_bytes(), targets.len()).await {
                    self.out.extend_from_slice(&e);
                    return;
                }
            }
        }
        // Mirrors drop them too (their confirmations are ignored when they arrive).
        let local: Vec<Bytes> = targets.iter().filter(|n| is_keyspace(n)).cloned().collect();
        if !local.is_empty() {
            let mut cmd = vec![Bytes::from_static(kind.as_bytes())];
            cmd.extend(local.iter().cloned());
            slotgate_protocol::resp::write_command(&mut self.enc, &cmd);
            let data = self.enc.split();
            let ids: Vec<u64> = self.mirrors.values().map(|l| l.id).collect();
            for id in ids {
                self.send(id, &data).await;
            }
        }
        for t in &targets {
            if pattern {
                self.patterns.remove(t);
            } else {
                self.channels.remove(t);
            }
            let c = self.classic_count();
            self.conf(kind, Some(t), c);
        }
        if !local.is_empty() && self.mirrored() == (Vec::new(), Vec::new()) {
            self.mirrors.clear();
        }
        if self.classic_count() == 0 {
            self.classic = None;
            self.classic_lost = None;
        }
    }

    /// Subscribes `chans` (all in `slot`) on the slot's owner, following MOVED/ASK; returns
    /// the node now holding them.
    async fn shard_subscribe(&mut self, slot: u16, chans: &[Bytes]) -> Result<Arc<str>, SubErr> {
        let mut target: Option<Arc<str>> = None;
        let mut asking = false;
        for _ in 0..crate::redirect::MAX_REDIRECTS {
            let addr = match target.take() {
                Some(a) => a,
                None => match self.st.router.map().master_of(slot) {
                    Some(a) => a.clone(),
                    None => {
                        self.st.router.schedule_refresh(None);
                        return Err(SubErr::Reply(error_reply(
                            "CLUSTERDOWN Hash slot not served",
                        )));
                    }
                },
            };
            let id = match self.shard_link(&addr).await {
                Ok(id) => id,
                Err(_) => {
                    self.st.router.schedule_refresh(None);
                    return Err(SubErr::Lost);
                }
            };
            if asking {
                slotgate_protocol::resp::write_command(&mut self.enc, &[&b"ASKING"[..]]);
            }
            let mut cmd = vec![Bytes::from_static(b"SSUBSCRIBE")];
            cmd.extend(chans.iter().cloned());
            slotgate_protocol::resp::write_command(&mut self.enc, &cmd);
            let data = self.enc.split();
            if !self.send(id, &data).await {
                return Err(SubErr::Lost);
            }
            match self.await_acks(id, b"ssubscribe", chans.len()).await {
                Ack::Done => return Ok(addr),
                Ack::Lost => return Err(SubErr::Lost),
                Ack::Error(e) => match error_text(&e).and_then(parse_redirect) {
                    Some((ask, s, to)) => {
                        if !ask {
                            self.st.router.moved(s, &to);
                        }
                        asking = ask;
                        target = Some(Arc::from(to.as_str()));
                    }
                    None => return Err(SubErr::Reply(e)),
                },
            }
        }
        Err(SubErr::Reply(error_reply(
            "ERR slotgate: too many redirects",
        )))
    }

    /// SSUBSCRIBE: every channel must hash to one slot (CROSSSLOT otherwise).
    async fn ssubscribe(&mut self, names: &[Bytes]) {
        let slot = match one_slot(names) {
            Ok(s) => s,
            Err(e) => {
                self.out.extend_from_slice(&e);
                return;
            }
        };
        let mut fresh: Vec<Bytes> = Vec::new();
        for n in names {
            if !self.schannels.contains_key(n) && !fresh.contains(n) {
                fresh.push(n.clone());
            }
        }
        let mut place = None;
        if !fresh.is_empty() {
            place = Some(match self.shard_subscribe(slot, &fresh).await {
                Ok(addr) => Place::On(addr),
                Err(SubErr::Lost) => Place::Lost(Instant::now()),
                Err(SubErr::Reply(e)) => {
                    self.out.extend_from_slice(&e);
                    return;
                }
            });
        }
        for n in names {
            if let Some(p) = &place {
                self.schannels.entry(n.clone()).or_insert_with(|| p.clone());
            }
            let c = self.schannels.len();
            self.conf("ssubscribe", Some(n), c);
        }
    }

    /// Unsubscribes shard channels on the links holding them (errors and lost links are
    /// ignored: the subscription is gone either way).
    async fn shard_unsubscribe(&mut self, targets: &[Bytes]) {
        let mut by_node: Vec<(Arc<str>, Vec<Bytes>)> = Vec::new();
        for t in targets {
            if let Some(Place::On(a)) = self.schannels.get(t) {
                match by_node.iter_mut().find(|(n, _)| n == a) {
                    Some((_, v)) => {
                        if !v.contains(t) {
                            v.push(t.clone())
                        }
                    }
                    None => by_node.push((a.clone(), vec![t.clone()])),
                }
            }
        }
        for (addr, chans) in by_node {
            let Some(id) = self.shard.get(&addr).map(|l| l.id) else {
                continue;
            };
            let mut cmd = vec![Bytes::from_static(b"SUNSUBSCRIBE")];
            cmd.extend(chans.iter().cloned());
            slotgate_protocol::resp::write_command(&mut self.enc, &cmd);
            let data = self.enc.split();
            if self.send(id, &data).await {
                let _ = self.await_acks(id, b"sunsubscribe", chans.len()).await;
            }
        }
    }

    /// Closes shard links that hold no subscription any more.
    fn drop_idle_links(&mut self) {
        let used: std::collections::HashSet<Arc<str>> = self
            .schannels
            .values()
            .filter_map(|p| match p {
                Place::On(a) => Some(a.clone()),
                Place::Lost(_) => None,
            })
            .collect();
        self.shard.retain(|a, _| used.contains(a));
    }

    /// SUNSUBSCRIBE.
    async fn sunsubscribe(&mut self, names: &[Bytes]) {
        let targets: Vec<Bytes> = if names.is_empty() {
            self.schannels.keys().cloned().collect()
        } else {
            if let Err(e) = one_slot(names) {
                self.out.extend_from_slice(&e);
                return;
            }
            names.to_vec()
        };
        if targets.is_empty() {
            self.conf("sunsubscribe", None, 0);
            return;
        }
        self.shard_unsubscribe(&targets).await;
        for t in &targets {
            self.schannels.remove(t);
            let c = self.schannels.len();
            self.conf("sunsubscribe", Some(t), c);
        }
        self.drop_idle_links();
    }

    /// Re-establishes lost subscriptions and moves shard channels whose slot changed owner.
    /// Err when the classic subscriptions could not be restored in time (client closed).
    async fn repair(&mut self) -> std::io::Result<()> {
        if self.classic.is_none() && self.classic_count() > 0 {
            let (since, failed) = self
                .classic_lost
                .get_or_insert((Instant::now(), None))
                .clone();
            if self.open_classic(failed.as_deref()).await.is_ok() {
                if let Some(id) = self.classic.as_ref().map(|l| l.id) {
                    let chans: Vec<Bytes> = self.channels.iter().cloned().collect();
                    let pats: Vec<Bytes> = self.patterns.iter().cloned().collect();
                    for (kind, names) in [("SUBSCRIBE", &chans), ("PSUBSCRIBE", &pats)] {
                        if !names.is_empty() {
                            let mut c = vec![Bytes::from_static(kind.as_bytes())];
                            c.extend(names.iter().cloned());
                            slotgate_protocol::resp::write_command(&mut self.enc, &c);
                        }
                    }
                    let data = self.enc.split();
                    let mut ok = self.send(id, &data).await;
                    if ok && !chans.is_empty() {
                        ok = matches!(
                            self.await_acks(id, b"subscribe", chans.len()).await,
                            Ack::Done
                        );
                    }
                    if ok && !pats.is_empty() {
                        ok = matches!(
                            self.await_acks(id, b"psubscribe", pats.len()).await,
                            Ack::Done
                        );
                    }
                    if ok {
                        self.classic_lost = None;
                    } else {
                        self.classic = None;
                        self.classic_lost = Some((since, failed));
                    }
                }
            } else if since.elapsed() > RESUBSCRIBE_FOR {
                return Err(std::io::ErrorKind::NotConnected.into());
            }
        }
        // Keyspace mirrors follow the masters (failovers, nodes added or removed).
        if !self.mirrors.is_empty() || self.mirrored() != (Vec::new(), Vec::new()) {
            self.sync_mirrors().await;
        }
        if self.schannels.is_empty() {
            return Ok(());
        }
        // Shard channels whose slot the map now gives to another node: move them.
        let mut moved: Vec<(Arc<str>, Bytes)> = Vec::new();
        {
            let map = self.st.router.map();
            for (ch, p) in &self.schannels {
                if let Place::On(a) = p {
                    if let Some(owner) = map.master_of(slotgate_protocol::key_slot(ch)) {
                        if owner != a {
                            moved.push((a.clone(), ch.clone()));
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        for (addr, ch) in moved {
            if let Some(id) = self.shard.get(&addr).map(|l| l.id) {
                // Its confirmation is ignored when it arrives (the channel is no longer there).
                let mut c = vec![Bytes::from_static(b"SUNSUBSCRIBE")];
                c.push(ch.clone());
                slotgate_protocol::resp::write_command(&mut self.enc, &c);
                let data = self.enc.split();
                self.send(id, &data).await;
            }
            self.schannels.insert(ch, Place::Lost(now));
        }
        // Re-subscribe the lost ones, one SSUBSCRIBE per slot.
        let mut groups: Vec<(u16, Vec<Bytes>, Instant)> = Vec::new();
        for (ch, p) in &self.schannels {
            if let Place::Lost(since) = p {
                let slot = slotgate_protocol::key_slot(ch);
                match groups.iter_mut().find(|(s, _, _)| *s == slot) {
                    Some((_, v, t)) => {
                        v.push(ch.clone());
                        *t = (*t).min(*since);
                    }
                    None => groups.push((slot, vec![ch.clone()], *since)),
                }
            }
        }
        for (slot, chans, since) in groups.into_iter().take(REPAIR_BATCH) {
            match self.shard_subscribe(slot, &chans).await {
                Ok(addr) => {
                    for c in chans {
                        self.schannels.insert(c, Place::On(addr.clone()));
                    }
                }
                Err(_) if since.elapsed() > RESUBSCRIBE_FOR => {
                    // Given up: the client is told, as Redis tells subscribers of a lost slot.
                    for c in chans {
                        self.schannels.remove(&c);
                        let n = self.schannels.len();
                        self.conf("sunsubscribe", Some(&c), n);
                    }
                }
                Err(_) => {}
            }
        }
        self.drop_idle_links();
        Ok(())
    }

    /// Runs one client command in pub/sub mode.
    async fn command(&mut self, args: Vec<Bytes>) -> Flow {
        let Some(spec) = slotgate_protocol::commands::lookup(&args[0]) else {
            self.out
                .extend_from_slice(&crate::local::unknown_command(&args));
            return Flow::Stay;
        };
        let name = spec.name;
        let pubsub_cmd = matches!(
            name,
            "subscribe"
                | "psubscribe"
                | "ssubscribe"
                | "unsubscribe"
                | "punsubscribe"
                | "sunsubscribe"
                | "ping"
                | "quit"
                | "reset"
        );
        if !pubsub_cmd {
            if !self.resp3() {
                let msg = format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                );
                self.out.extend_from_slice(&error_reply(&msg));
                return Flow::Stay;
            }
            // RESP3: any command may run while subscribed.
            let started = Instant::now();
            let top = slotgate_protocol::commands::lookup(&args[0]);
            let p = crate::splitter::dispatch(self.proxy, self.st, top, &args, None, &mut self.enc);
            match p {
                crate::splitter::Pending::Close(b) => {
                    self.out.extend_from_slice(&b);
                    return Flow::Close;
                }
                crate::splitter::Pending::Subscribe(_) => {}
                p => {
                    let r = p.resolve(self.proxy, self.st, started).await;
                    self.out.extend_from_slice(&r);
                }
            }
            return Flow::Stay;
        }
        if !slotgate_protocol::commands::arity_ok(spec, args.len()) {
            self.out.extend_from_slice(&error_reply(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
            return Flow::Stay;
        }
        let rest = &args[1..];
        match name {
            "subscribe" => self.subscribe(false, rest).await,
            "psubscribe" => self.subscribe(true, rest).await,
            "unsubscribe" => self.unsubscribe(false, rest).await,
            "punsubscribe" => self.unsubscribe(true, rest).await,
            "ssubscribe" => self.ssubscribe(rest).await,
            "sunsubscribe" => self.sunsubscribe(rest).await,
            "ping" => {
                if self.resp3() {
                    match rest.first() {
                        Some(m) => slotgate_protocol::resp::write_bulk(&mut self.out, m),
                        None => self.out.extend_from_slice(b"+PONG\r\n"),
                    }
                } else {
                    slotgate_protocol::resp::write_header(&mut self.out, b'*', 2);
                    slotgate_protocol::resp::write_bulk(&mut self.out, b"pong");
                    slotgate_protocol::resp::write_bulk(
                        &mut self.out,
                        rest.first().map(|m| &m[..]).unwrap_or(b""),
                    );
                }
            }
            "quit" => {
                self.out.extend_from_slice(b"+OK\r\n");
                return Flow::Close;
            }
            _ => {
                // RESET: drop every subscription (the links close) and reset the client.
                self.classic = None;
                self.classic_lost = None;
                self.shard.clear();
                self.channels.clear();
                self.patterns.clear();
                self.schannels.clear();
                crate::local::reset_client(self.proxy, self.st);
                self.out.extend_from_slice(b"+RESET\r\n");
                return Flow::Leave;
            }
        }
        Flow::Stay
    }
}

/// Serves a client in pub/sub mode: `first` is the (P|S)SUBSCRIBE that started it. Returns
/// Ok when the client has no subscription left (back to normal mode), Err when it is gone or
/// must be closed.
pub async fn pubsub(
    proxy: &crate::proxy::Proxy,
    st: &mut ClientState,
    sock: &mut TcpStream,
    rbuf: &mut BytesMut,
    parser: &mut slotgate_protocol::resp::RequestParser,
    first: Vec<Bytes>,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let mut s = PubSub {
        proxy,
        st,
        tx,
        rx,
        next_id: 0,
        classic: None,
        classic_lost: None,
        shard: Default::default(),
        mirrors: Default::default(),
        channels: Default::default(),
        patterns: Default::default(),
        schannels: Default::default(),
        out: BytesMut::new(),
        enc: BytesMut::new(),
    };
    let mut tick = tokio::time::interval(REPAIR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut args: Vec<Bytes> = Vec::new();
    let mut next = Some(first);
    loop {
        // Commands already received, one at a time: once the client has no subscription
        // left, the rest of its input belongs to normal mode.
        loop {
            let cmd = match next.take() {
                Some(c) => c,
                None => {
                    let limits = slotgate_protocol::Limits::default();
                    match parser.parse(rbuf, &mut args, &limits) {
                        Ok(Some(slotgate_protocol::Parsed::Command)) => std::mem::take(&mut args),
                        Ok(Some(slotgate_protocol::Parsed::Empty)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            s.out
                                .extend_from_slice(format!("-ERR {}\r\n", e.0).as_bytes());
                            sock.write_all(&s.out).await?;
                            return Err(std::io::ErrorKind::InvalidData.into());
                        }
                    }
                }
            };
            let flow = s.command(cmd).await;
            if !s.out.is_empty() {
                sock.write_all(&s.out).await?;
                s.out.clear();
            }
            match flow {
                Flow::Stay => {}
                Flow::Close => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                Flow::Leave => return Ok(()),
            }
            if s.idle() {
                return Ok(());
            }
        }
        tokio::select! {
            ev = s.rx.recv() => {
                if let Some(ev) = ev {
                    s.on_event(ev);
                    for _ in 0..256 {
                        match s.rx.try_recv() {
                            Ok(ev) => s.on_event(ev),
                            Err(_) => break,
                        }
                    }
                }
            }
            r = sock.read_buf(rbuf) => {
                if r? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            _ = tick.tick() => s.repair().await?,
            _ = s.st.info.kill.notified() => {
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
        }
        if !s.out.is_empty() {
            sock.write_all(&s.out).await?;
            s.out.clear();
        }
        if s.idle() {
            return Ok(());
        }
        if proxy.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        rbuf.reserve(4096);
    }
}
