//! Replica side of replication: the link to our master.
//!
//! One task per master assignment ([`spawn`]); it exits when the assignment changes
//! (REPLICAOF, CLUSTER REPLICATE, failover). Each session: connect, `PING`, `AUTH` with
//! `masterauth`, `REPLCONF listening-port` and `capa eof psync2`, then `PSYNC <replid>
//! <offset+1>` offering our own history (or `? -1`). `+FULLRESYNC`: receive the RDB (length
//! prefixed, or `$EOF:<mark>` as diskless Redis masters send it), flush our data and load it.
//! `+CONTINUE`: keep our data. Then apply the stream with a master client (no replies, no
//! routing or read-only checks, expiry left to the master), append it verbatim to our own
//! backlog, answer `REPLCONF GETACK` and send `REPLCONF ACK <offset>` every second. A silent
//! master (`repl-timeout`) or any error ends the session; the next one starts a second later.

use super::LinkState;
use crate::client::{Client, ClientHandle};
use crate::db::{Entry, Locked};
use crate::reply::Reply;
use crate::server::Server;
use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use slotgate_protocol::resp::{Limits, Parsed, RequestParser};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts following `host:port` for master assignment `generation`.
pub fn spawn(server: Arc<Server>, generation: u64, host: String, port: u16) {
    let fut = run(server.clone(), generation, host, port);
    match server.repl.control.get() {
        Some(h) => {
            h.spawn(fut);
        }
        None => {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(fut);
            }
        }
    }
}

fn current(server: &Server, generation: u64) -> bool {
    server.repl.generation.load(Ordering::Acquire) == generation
}

fn set_link(server: &Server, generation: u64, state: LinkState) {
    if !current(server, generation) {
        return;
    }
    let mut i = server.repl.inner.lock();
    if i.link == LinkState::Connected && state != LinkState::Connected {
        i.link_down_since_ms = crate::db::now_ms();
    }
    i.link = state;
}

async fn run(server: Arc<Server>, generation: u64, host: String, port: u16) {
    while current(&server, generation) {
        if let Err(e) = session(&server, generation, &host, port).await {
            if current(&server, generation) {
                server.log.warning(&format!("{e:#}"));
            }
        }
        let was_up = server.repl.inner.lock().link == LinkState::Connected;
        set_link(&server, generation, LinkState::Connect);
        if was_up && current(&server, generation) {
            server.log.notice("Connection with master lost.");
            server.log.notice("Caching the disconnected master state.");
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if current(&server, generation) {
            server
                .log
                .notice(&format!("Connecting to MASTER {host}:{port}"));
        }
    }
}

/// Buffered line/bulk reading over the master connection.
struct Link {
    sock: TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Link {
    async fn fill(&mut self) -> anyhow::Result<()> {
        let n = tokio::time::timeout(self.timeout, self.sock.read_buf(&mut self.buf))
            .await
            .map_err(|_| anyhow!("Timeout connecting to the MASTER..."))??;
        if n == 0 {
            bail!("Master closed the connection");
        }
        Ok(())
    }

    /// One reply line without CRLF; bare newlines (keep-alives) are skipped.
    async fn line(&mut self) -> anyhow::Result<String> {
        loop {
            while self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            }
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let l = self.buf.split_to(p + 1);
                let s = String::from_utf8_lossy(&l[..p]);
                return Ok(s.trim_end_matches('\r').to_string());
            }
            if self.buf.len() > 64 * 1024 {
                bail!("Protocol error: reply line too long");
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, args: &[&[u8]]) -> anyhow::Result<()> {
        let mut out = Vec::new();
        super::encode_command(&mut out, args);
        self.sock.write_all(&out).await?;
        Ok(())
    }

    async fn command(&mut self, args: &[&[u8]]) -> anyhow::Result<String> {
        self.send(args).await?;
        self.line().await
    }
}

async fn session(
    server: &Arc<Server>,
    generation: u64,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    let (timeout_s, auth, user, my_port) = {
        let c = server.config.read();
        (
            c.get_int("repl-timeout").max(1) as u64,
            c.get("masterauth").to_string(),
            c.get("masteruser").to_string(),
            server.port.load(Ordering::Relaxed),
        )
    };
    server.log.notice("MASTER <-> REPLICA sync started");
    let timeout = Duration::from_secs(timeout_s);
    let sock = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| anyhow!("Timeout connecting to the MASTER..."))?
        .with_context(|| format!("Error condition on socket for SYNC: {host}:{port}"))?;
    let _ = sock.set_nodelay(true);
    server
        .log
        .notice("Non blocking connect for SYNC fired the event.");
    set_link(server, generation, LinkState::Handshake);
    let mut link = Link {
        sock,
        buf: BytesMut::with_capacity(64 * 1024),
        timeout,
    };
    let pong = link.command(&[b"PING"]).await?;
    if pong.starts_with('-')
        && !pong.starts_with("-NOAUTH")
        && !pong.starts_with("-NOPERM")
        && !pong.starts_with("-ERR operation not permitted")
    {
        bail!("Error reply to PING from master: '{pong}'");
    }
    server
        .log
        .notice("Master replied to PING, replication can continue...");
    if !auth.is_empty() {
        let r = if user.is_empty() {
            link.command(&[b"AUTH", auth.as_bytes()]).await?
        } else {
            link.command(&[b"AUTH", user.as_bytes(), auth.as_bytes()])
                .await?
        };
        if r.starts_with('-') {
            bail!("Unable to AUTH to MASTER: {r}");
        }
    }
    let port_s = my_port.to_string();
    let r = link
        .command(&[b"REPLCONF", b"listening-port", port_s.as_bytes()])
        .await?;
    if r.starts_with('-') {
        server.log.notice(&format!(
            "(Non critical) Master does not understand REPLCONF listening-port: {r}"
        ));
    }
    let r = link
        .command(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
        .await?;
    if r.starts_with('-') {
        server.log.notice(&format!(
            "(Non critical) Master does not understand REPLCONF capa: {r}"
        ));
    }
    let (psync_id, psync_off) = {
        let i = server.repl.inner.lock();
        if i.has_history {
            (i.replid.clone(), (server.repl.offset() + 1) as i64)
        } else {
            ("?".to_string(), -1)
        }
    };
    if psync_id == "?" {
        server
            .log
            .notice("Partial resynchronization not possible (no cached master)");
    } else {
        server.log.notice(&format!(
            "Trying a partial resynchronization (request {psync_id}:{psync_off})."
        ));
    }
    let off_s = psync_off.to_string();
    let reply = link
        .command(&[b"PSYNC", psync_id.as_bytes(), off_s.as_bytes()])
        .await?;
    if !current(server, generation) {
        return Ok(());
    }
    let master_db;
    if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
        let mut it = rest.split(' ');
        let replid = it.next().unwrap_or_default().to_string();
        let offset: u64 = it
            .next()
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| anyhow!("Bad FULLRESYNC reply: {reply}"))?;
        server
            .log
            .notice(&format!("Full resync from master: {replid}:{offset}"));
        set_link(server, generation, LinkState::Transfer);
        let rdb = receive_rdb(&mut link).await?;
        if !current(server, generation) {
            return Ok(());
        }
        server
            .log
            .notice("MASTER <-> REPLICA sync: Flushing old data");
        server
            .log
            .notice("MASTER <-> REPLICA sync: Loading DB in memory");
        let srv = server.clone();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || load_rdb(&srv, &rdb, replid, offset))
            .await
            .map_err(|e| anyhow!("loading task: {e}"))?;
        let (keys, db) = loaded.map_err(|e| {
            anyhow!("Failed trying to load the MASTER synchronization DB from socket: {e}")
        })?;
        master_db = db;
        server.log.notice(&format!(
            "MASTER <-> REPLICA sync: Finished with success ({keys} keys in {} ms)",
            started.elapsed().as_millis()
        ));
    } else if let Some(rest) = reply.strip_prefix("+CONTINUE") {
        let new_id = rest.trim();
        let r = &server.repl;
        let mut f = r.feed.lock();
        let mut i = r.inner.lock();
        if !new_id.is_empty() && new_id != i.replid {
            i.replid2 = std::mem::replace(&mut i.replid, new_id.to_string());
            i.second_offset = r.offset() as i64 + 1;
            server
                .log
                .notice(&format!("Master replication ID changed to {new_id}"));
        }
        // Sub-replicas of ours follow the same history: nothing to reset.
        master_db = i.master_db;
        if !f.active {
            f.active = true;
            f.first = r.offset();
            r.feeding.store(true, Ordering::Release);
        }
        drop(i);
        drop(f);
        server
            .log
            .notice("Successful partial resynchronization with master.");
        server
            .log
            .notice("MASTER <-> REPLICA sync: Master accepted a Partial Resynchronization.");
    } else if reply.starts_with("-NOMASTERLINK") || reply.starts_with("-LOADING") {
        bail!("Master is currently unable to PSYNC but should be in the future: {reply}");
    } else {
        bail!("Unexpected reply to PSYNC from master: {reply}");
    }
    {
        let mut i = server.repl.inner.lock();
        i.last_io_ms = crate::db::now_ms();
    }
    set_link(server, generation, LinkState::Connected);
    stream(server, generation, link, master_db, host, port).await
}

/// Reads the RDB payload: `$<len>\r\n<bytes>` or `$EOF:<40 bytes>\r\n<bytes><40 bytes>`.
async fn receive_rdb(link: &mut Link) -> anyhow::Result<Vec<u8>> {
    let header = link.line().await?;
    if header.starts_with('-') {
        bail!("MASTER aborted replication with an error: {header}");
    }
    let Some(spec) = header.strip_prefix('$') else {
        bail!("Bad protocol from MASTER, the first byte is not '$' (we received '{header}'), are you sure the host and port are right?");
    };
    if let Some(mark) = spec.strip_prefix("EOF:") {
        let mark = mark.as_bytes().to_vec();
        if mark.len() != 40 {
            bail!("Bad EOF mark from MASTER: {spec}");
        }
        let mut data: Vec<u8> = Vec::new();
        loop {
            data.extend_from_slice(&link.buf);
            link.buf.clear();
            if data.len() >= 40 && data[data.len() - 40..] == mark[..] {
                data.truncate(data.len() - 40);
                return Ok(data);
            }
            link.fill().await?;
        }
    }
    let len: usize = spec
        .parse()
        .map_err(|_| anyhow!("Bad bulk length from MASTER: {spec}"))?;
    let mut data = Vec::with_capacity(len.min(1 << 30));
    while data.len() < len {
        if link.buf.is_empty() {
            link.fill().await?;
        }
        let take = (len - data.len()).min(link.buf.len());
        data.extend_from_slice(&link.buf[..take]);
        link.buf.advance(take);
    }
    Ok(data)
}

/// Replaces our data with the RDB's and adopts the master's history; returns the number of
/// keys loaded and the stream's selected database.
fn load_rdb(
    server: &Arc<Server>,
    rdb: &[u8],
    replid: String,
    offset: u64,
) -> Result<(usize, usize), crate::rdb::RdbError> {
    let now = crate::db::now_ms();
    for d in 0..server.ks.count() {
        let _ = server.ks.db(d);
    }
    let mut l = Locked::new(&server.ks, 0, now);
    l.lock_everything();
    l.ignore_expired = true;
    for (_, _, shard) in l.all_shards_mut() {
        shard.clear();
    }
    let mut keys = 0usize;
    let mut stream_db = 0usize;
    let dbs = server.ks.count();
    let res = crate::rdb::read_file(
        rdb,
        |k, v| {
            if k == b"repl-stream-db" {
                if let Some(n) = slotgate_protocol::resp::parse_i64(v) {
                    stream_db = n.max(0) as usize;
                }
            }
        },
        |fk| {
            if fk.db < dbs {
                l.set_db(fk.db);
                l.set_entry(&fk.key, Entry::with_expiry(fk.value, fk.expire_at));
                keys += 1;
            }
        },
    );
    // The data (even partial, on error) is now the master's: adopt its history so the
    // offsets stay meaningful; on error the next session asks for a full resync again.
    let r = &server.repl;
    let mut f = r.feed.lock();
    let mut i = r.inner.lock();
    i.replid = replid;
    i.replid2 = "0".repeat(40);
    i.second_offset = -1;
    i.has_history = res.is_ok();
    i.master_db = stream_db;
    r.offset.store(offset, Ordering::Release);
    f.data.clear();
    f.first = offset;
    f.active = true;
    f.stream_db = Some(stream_db);
    f.links.clear();
    r.feeding.store(true, Ordering::Release);
    drop(i);
    drop(f);
    drop(l);
    res.map(|()| (keys, stream_db))
}

/// Applies the master's stream until the link breaks or the assignment changes.
async fn stream(
    server: &Arc<Server>,
    generation: u64,
    mut link: Link,
    master_db: usize,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    let id = server.next_client_id.fetch_add(1, Ordering::Relaxed);
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let laddr = link
        .sock
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let handle = Arc::new(ClientHandle::new(
        id,
        format!("{host}:{port}"),
        laddr,
        link.sock.as_raw_fd(),
        tx,
    ));
    handle.flags.lock().replace_range(.., "M");
    server.clients.lock().insert(id, handle.clone());
    let _guard = ClientGuard {
        server: server.clone(),
        id,
    };
    let mut client = Client::new(handle.clone(), true);
    client.from_master = true;
    client.db = master_db;
    let mut out = Reply::default();
    let mut parser = RequestParser::default();
    let mut args: Vec<Bytes> = Vec::new();
    let limits = Limits {
        max_bulk_len: usize::MAX / 2,
        unauthenticated: false,
    };
    // Bytes received but not yet processed, kept raw for our own backlog.
    let mut raw: Vec<u8> = link.buf.to_vec();
    let mut rbuf = std::mem::take(&mut link.buf);
    let mut ack_tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_io = Instant::now();
    loop {
        // Apply every complete command buffered.
        let mut processed = 0usize;
        loop {
            let before = rbuf.len();
            match parser.parse(&mut rbuf, &mut args, &limits) {
                Ok(None) => break,
                Ok(Some(Parsed::Empty)) => processed += before - rbuf.len(),
                Ok(Some(Parsed::Command)) => {
                    let n = before - rbuf.len();
                    if args.len() >= 2
                        && args[0].eq_ignore_ascii_case(b"replconf")
                        && args[1].eq_ignore_ascii_case(b"getack")
                    {
                        let off = (server.repl.offset() + processed as u64).to_string();
                        link.send(&[b"REPLCONF", b"ACK", off.as_bytes()]).await?;
                    } else if !args[0].eq_ignore_ascii_case(b"ping") {
                        client.now_ms = crate::db::now_ms();
                        let _ = crate::cmd::dispatch(server, &mut client, &mut out, &args);
                        out.buf.clear();
                    }
                    processed += n;
                }
                Err(e) => bail!("Protocol error in the replication stream: {}", e.0),
            }
        }
        if processed > 0 {
            server.repl.feed_raw(&raw[..processed]);
            raw.drain(..processed);
            handle.db.store(client.db, Ordering::Relaxed);
            server.repl.inner.lock().master_db = client.db;
        }
        if !current(server, generation) || handle.killed.load(Ordering::Acquire) {
            return Ok(());
        }
        let timeout = link.timeout;
        tokio::select! {
            r = link.sock.read_buf(&mut rbuf) => {
                let n = r?;
                if n == 0 {
                    bail!("Connection with master lost.");
                }
                raw.extend_from_slice(&rbuf[rbuf.len() - n..]);
                last_io = Instant::now();
                server.repl.inner.lock().last_io_ms = crate::db::now_ms();
            }
            _ = ack_tick.tick() => {
                if last_io.elapsed() > timeout {
                    bail!("MASTER timeout: no data nor PING received...");
                }
                let off = server.repl.offset().to_string();
                link.send(&[b"REPLCONF", b"ACK", off.as_bytes()]).await?;
            }
            _ = handle.kill_notify.notified() => return Ok(()),
        }
    }
}

/// Removes the master client from the client list when the stream ends.
struct ClientGuard {
    server: Arc<Server>,
    id: u64,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.server.clients.lock().remove(&self.id);
    }
}
