//! Strategies that need a dedicated backend connection for one client: transactions
//! (MULTI/EXEC/DISCARD/WATCH/UNWATCH pinned to the owner of the first key's slot), blocking
//! commands (BLPOP & co. wait on their own connection so they never stall the shared pipelines),
//! and pub/sub (a subscription connection to one node, re-established after a failure).

use crate::client::ClientState;
use crate::pool::{dial, roundtrip};
use crate::redirect::error_reply;
use crate::slotmap::{error_text, parse_redirect};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection owned by one client for the duration of a transaction, a blocking command
/// or a subscription.
pub struct Dedicated {
    /// Node address.
    pub addr: Arc<str>,
    stream: TcpStream,
    buf: BytesMut,
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

    /// Sends `data` (producing `n` replies) and returns the replies.
    pub async fn call(&mut self, data: &[u8], n: usize) -> std::io::Result<Vec<Bytes>> {
        self.send(data).await?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.read_frame().await?);
        }
        Ok(out)
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
                    Ok(mut r) => r.pop().unwrap_or_default(),
                    Err(e) => lost(e),
                },
                None => lost(std::io::ErrorKind::NotConnected.into()),
            };
            end_tx(st);
            reply
        }
    }
}

/// Runs a blocking command on its own connection to the slot's master, following MOVED/ASK.
pub async fn run_blocking(st: &ClientState, slot: u16, data: Bytes) -> Bytes {
    let mut target: Option<Arc<str>> = None;
    let mut asking = false;
    for _ in 0..crate::redirect::MAX_REDIRECTS {
        let addr = match target.take() {
            Some(a) => a,
            None => match st.router.map().master_of(slot) {
                Some(a) => a.clone(),
                None => return error_reply("CLUSTERDOWN Hash slot not served"),
            },
        };
        let mut conn = match Dedicated::open(&st.router, addr, st.resp3).await {
            Ok(c) => c,
            Err(e) => {
                st.router.schedule_refresh(None);
                return error_reply(&format!("ERR slotgate: {e}"));
            }
        };
        let reply = if asking {
            let mut d = BytesMut::from(&b"*1\r\n$6\r\nASKING\r\n"[..]);
            d.extend_from_slice(&data);
            conn.call(&d, 2)
                .await
                .map(|mut v| v.pop().unwrap_or_default())
        } else {
            conn.call(&data, 1)
                .await
                .map(|mut v| v.pop().unwrap_or_default())
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return error_reply(&format!("ERR slotgate: backend connection lost: {e}")),
        };
        match error_text(&reply).and_then(parse_redirect) {
            Some((ask, s, to)) => {
                if !ask {
                    st.router.moved(s, &to);
                }
                asking = ask;
                target = Some(Arc::from(to.as_str()));
            }
            None => return reply,
        }
    }
    error_reply("ERR slotgate: too many redirects")
}

/// Subscriptions of a client in pub/sub mode (kept to re-subscribe after a node failure).
#[derive(Default)]
pub struct Subs {
    /// Channels.
    pub channels: Vec<Bytes>,
    /// Patterns.
    pub patterns: Vec<Bytes>,
}

fn frame_items(raw: &Bytes) -> Vec<Bytes> {
    match slotgate_protocol::resp::decode_complete(raw) {
        Ok(slotgate_protocol::Frame::Array(v)) | Ok(slotgate_protocol::Frame::Push(v)) => v
            .into_iter()
            .map(|f| match f {
                slotgate_protocol::Frame::Bulk(b) | slotgate_protocol::Frame::Simple(b) => b,
                slotgate_protocol::Frame::Integer(i) => Bytes::from(i.to_string()),
                _ => Bytes::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn open_any(
    router: &crate::router::Router,
    resp3: bool,
    avoid: Option<&str>,
) -> Result<Dedicated, String> {
    let mut masters = router.map().masters();
    masters.sort();
    masters.sort_by_key(|m| Some(&**m) == avoid);
    let mut last = "no masters known".to_string();
    for m in masters {
        match Dedicated::open(router, m, resp3).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves a client in pub/sub mode: `first` is the (P)SUBSCRIBE that started it. Returns when
/// the client has unsubscribed from everything (back to normal mode) or is gone (Err).
pub async fn pubsub(
    st: &mut ClientState,
    sock: &mut TcpStream,
    rbuf: &mut BytesMut,
    first: Vec<Bytes>,
) -> std::io::Result<()> {
    let mut subs = Subs::default();
    let mut conn = match open_any(&st.router, st.resp3, None).await {
        Ok(c) => c,
        Err(e) => {
            sock.write_all(&error_reply(&format!("ERR slotgate: {e}")))
                .await?;
            return Ok(());
        }
    };
    let mut parser = slotgate_protocol::resp::RequestParser::new();
    let mut args: Vec<Bytes> = Vec::new();
    let mut enc = BytesMut::new();
    let mut pending_cmds = vec![first];
    loop {
        // Forward the client's commands (only pub/sub ones are allowed in this mode).
        for cmd in pending_cmds.drain(..) {
            let name = cmd[0].to_ascii_lowercase();
            match name.as_slice() {
                b"subscribe" => subs.channels.extend(cmd[1..].iter().cloned()),
                b"psubscribe" => subs.patterns.extend(cmd[1..].iter().cloned()),
                b"unsubscribe" => {
                    if cmd.len() == 1 {
                        subs.channels.clear();
                    } else {
                        subs.channels.retain(|c| !cmd[1..].contains(c));
                    }
                }
                b"punsubscribe" => {
                    if cmd.len() == 1 {
                        subs.patterns.clear();
                    } else {
                        subs.patterns.retain(|c| !cmd[1..].contains(c));
                    }
                }
                b"ping" | b"reset" | b"quit" => {}
                _ => {
                    let msg = format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                        String::from_utf8_lossy(&name)
                    );
                    sock.write_all(&error_reply(&msg)).await?;
                    continue;
                }
            }
            if name.as_slice() == b"quit" {
                sock.write_all(b"+OK\r\n").await?;
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
            slotgate_protocol::resp::write_command(&mut enc, &cmd);
            let data = enc.split();
            if conn.send(&data).await.is_err() {
                // Handled by the read side below (reconnect).
            }
            if name.as_slice() == b"reset" {
                // RESET leaves pub/sub mode; its reply is forwarded below.
                let r = conn
                    .read_frame()
                    .await
                    .unwrap_or_else(|_| Bytes::from_static(b"+RESET\r\n"));
                sock.write_all(&r).await?;
                return Ok(());
            }
        }
        tokio::select! {
            f = conn.read_frame() => {
                match f {
                    Ok(frame) => {
                        sock.write_all(&frame).await?;
                        let items = frame_items(&frame);
                        let kind = items.first().map(|k| k.to_ascii_lowercase()).unwrap_or_default();
                        if (kind == b"unsubscribe" || kind == b"punsubscribe")
                            && items.get(2).map(|c| &c[..] == b"0").unwrap_or(false)
                            && subs.channels.is_empty() && subs.patterns.is_empty()
                        {
                            return Ok(());
                        }
                    }
                    Err(_) => {
                        // The node went away: re-subscribe on another one; the client stays.
                        crate::metrics::error("pubsub_resubscribe");
                        let failed = conn.addr.clone();
                        st.router.schedule_refresh(None);
                        let mut tries = 0;
                        conn = loop {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if let Ok(c) = open_any(&st.router, st.resp3, Some(&failed)).await {
                                break c;
                            }
                            if tries > 150 {
                                return Err(std::io::ErrorKind::NotConnected.into());
                            }
                        };
                        let mut n = 0;
                        if !subs.channels.is_empty() {
                            let mut c = vec![Bytes::from_static(b"SUBSCRIBE")];
                            c.extend(subs.channels.iter().cloned());
                            slotgate_protocol::resp::write_command(&mut enc, &c);
                            n += subs.channels.len();
                        }
                        if !subs.patterns.is_empty() {
                            let mut c = vec![Bytes::from_static(b"PSUBSCRIBE")];
                            c.extend(subs.patterns.iter().cloned());
                            slotgate_protocol::resp::write_command(&mut enc, &c);
                            n += subs.patterns.len();
                        }
                        let data = enc.split();
                        // Swallow the confirmations: the client is already subscribed.
                        if conn.call(&data, n).await.is_err() {
                            continue;
                        }
                    }
                }
            }
            r = sock.read_buf(rbuf) => {
                if r? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let limits = slotgate_protocol::Limits::default();
                loop {
                    match parser.parse(rbuf, &mut args, &limits) {
                        Ok(Some(slotgate_protocol::Parsed::Command)) => pending_cmds.push(args.clone()),
                        Ok(Some(slotgate_protocol::Parsed::Empty)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            sock.write_all(format!("-ERR {}\r\n", e.0).as_bytes()).await?;
                            return Err(std::io::ErrorKind::InvalidData.into());
                        }
                    }
                }
                rbuf.reserve(4096);
            }
        }
    }
}
