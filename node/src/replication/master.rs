//! Master side of replication: answering PSYNC/SYNC and feeding a replica.
//!
//! PSYNC is decided by [`prepare`] while the command runs: a partial resync when the replica's
//! replication ID is ours (or our previous one, up to `second_repl_offset`) and the offset it
//! asks for is still in the backlog; otherwise a full resync, for which every shard of every
//! database is locked for a moment to clone a consistent snapshot and register the link at
//! the exact stream offset the snapshot reflects. The connection then turns into a
//! replication link ([`serve`]): `+FULLRESYNC`/`+CONTINUE`, the RDB as a bulk payload
//! (newlines as keep-alives while it is serialized, as Redis), then the stream from the
//! link's position; the replica's `REPLCONF ACK <offset>` lines are read concurrently.

use super::{ReplicaInfo, Replication};
use crate::db::{Entry, Key, Locked};
use crate::server::Server;
use crate::stream::{ReadHalf as OwnedReadHalf, WriteHalf as OwnedWriteHalf};
use bytes::{Bytes, BytesMut};
use slotgate_protocol::resp::{Limits, Parsed, RequestParser};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A consistent copy of the keyspace, taken at one stream offset.
pub struct Snapshot {
    /// Per database: its keys.
    pub dbs: Vec<(usize, Vec<(Key, Entry)>)>,
    /// Database the stream last selected (RDB aux `repl-stream-db`).
    pub stream_db: usize,
    /// Stream offset the snapshot reflects.
    pub offset: u64,
    /// Replication ID at that offset.
    pub replid: String,
    /// The copy's memory, left out of `maxmemory` until the snapshot is dropped.
    pub charge: Option<crate::persist::CopyCharge>,
}

/// What a PSYNC/SYNC turns into.
pub enum SyncPlan {
    /// Send the snapshot, then the stream from its offset.
    Full(Box<Snapshot>),
    /// Continue the stream from `pos` (0-based).
    Partial {
        /// Our replication ID.
        replid: String,
        /// First stream byte to send.
        pos: u64,
    },
}

/// A connection that became a replication link (returned by PSYNC/SYNC to the connection).
pub struct LinkStart {
    /// Link id (the client's id).
    pub id: u64,
    /// "ip:port" for logs.
    pub name: String,
    /// What to send first.
    pub plan: SyncPlan,
    /// SYNC (old protocol): no +FULLRESYNC line.
    pub legacy: bool,
}

/// Decides a PSYNC (`replid`, `psync_offset` as the replica sent them; SYNC passes "?" -1)
/// and registers the link. Called from the PSYNC handler.
pub fn prepare(
    server: &Server,
    id: u64,
    ip: String,
    port: u16,
    replid: &[u8],
    psync_offset: i64,
) -> SyncPlan {
    let r = &server.repl;
    let now = crate::db::now_ms();
    let name = format!("{ip}:{port}");
    server
        .log
        .notice(&format!("Replica {name} asks for synchronization"));
    {
        let mut f = r.feed.lock();
        let i = r.inner.lock();
        let want = psync_offset - 1;
        let id_ok = replid == i.replid.as_bytes()
            || (replid == i.replid2.as_bytes() && psync_offset <= i.second_offset);
        let end = r.offset();
        if replid != b"?"
            && id_ok
            && f.active
            && want >= f.first as i64
            && want <= end as i64
            && !r.is_replica()
        {
            let pos = want as u64;
            f.links.push(ReplicaInfo {
                id,
                ip,
                port,
                state: "online",
                pos,
                ack_offset: pos,
                ack_time_ms: now,
            });
            r.stats.sync_partial_ok.fetch_add(1, Ordering::Relaxed);
            server.log.notice(&format!(
                "Partial resynchronization request from {name} accepted. Sending {} bytes of backlog starting from offset {psync_offset}.",
                end - pos
            ));
            return SyncPlan::Partial {
                replid: i.replid.clone(),
                pos,
            };
        }
        if replid != b"?" {
            r.stats.sync_partial_err.fetch_add(1, Ordering::Relaxed);
            let why = if !id_ok {
                format!(
                    "Partial resynchronization not accepted: Replication ID mismatch (Replica asked for '{}', my replication IDs are '{}' and '{}')",
                    String::from_utf8_lossy(replid),
                    i.replid,
                    i.replid2
                )
            } else {
                format!(
                    "Unable to partial resync with replica {name} for lack of backlog (Replica request was: {psync_offset})."
                )
            };
            server.log.notice(&why);
        } else {
            server
                .log
                .notice(&format!("Full resync requested by replica {name}"));
        }
    }
    // Full resync: a consistent cut. Every database is created first so that a write to a
    // database made while we lock cannot slip past the snapshot.
    for d in 0..server.ks.count() {
        let _ = server.ks.db(d);
    }
    let mut l = Locked::new(&server.ks, 0, now);
    l.lock_everything();
    let mut f = r.feed.lock();
    let i = r.inner.lock();
    if !f.active {
        f.active = true;
        f.first = r.offset();
        r.feeding.store(true, Ordering::Release);
        server.log.notice(&format!(
            "Replication backlog created, my new replication IDs are '{}' and '{}'",
            i.replid, i.replid2
        ));
    }
    let offset = r.offset();
    f.links.push(ReplicaInfo {
        id,
        ip,
        port,
        state: "wait_bgsave",
        pos: offset,
        ack_offset: 0,
        ack_time_ms: now,
    });
    let stream_db = f.stream_db.unwrap_or(0);
    let replid = i.replid.clone();
    drop(i);
    drop(f);
    let (dbs, charge) = crate::persist::charged_copy(server, &mut l);
    drop(l);
    r.stats.sync_full.fetch_add(1, Ordering::Relaxed);
    server.log.notice(&format!(
        "Starting BGSAVE for SYNC with target: replicas sockets (snapshot of {} keys at offset {offset})",
        dbs.iter().map(|(_, k)| k.len()).sum::<usize>()
    ));
    SyncPlan::Full(Box::new(Snapshot {
        dbs,
        stream_db,
        offset,
        replid,
        charge: Some(charge),
    }))
}

/// Copies every key of every database `l` holds locked (all of them: `lock_everything`).
pub fn copy_keyspace(l: &mut Locked) -> Vec<(usize, Vec<(Key, Entry)>)> {
    let mut dbs: Vec<(usize, Vec<(Key, Entry)>)> = Vec::new();
    for (d, s, shard) in l.all_shards_mut() {
        if shard.is_empty() {
            continue;
        }
        if dbs.last().map(|(x, _)| *x) != Some(d) {
            dbs.push((d, Vec::new()));
        }
        if let Some((_, keys)) = dbs.last_mut() {
            for (_, map) in shard.slot_maps(s) {
                keys.extend(map.iter().map(|(k, e)| (k.clone(), e.clone())));
            }
        }
    }
    dbs
}

/// Serializes a snapshot as an RDB file into `sink`, in pieces of about 64 KB (a save writes
/// them to the file as they come; a full resync collects them for the replica).
pub fn write_snapshot(
    s: &Snapshot,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    const PIECE: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(PIECE + 4096);
    let mut crc = 0u64;
    let mut flush = |buf: &mut Vec<u8>, crc: &mut u64| -> std::io::Result<()> {
        *crc = crate::rdb::crc64(*crc, buf);
        sink(buf)?;
        buf.clear();
        Ok(())
    };
    let ctime = crate::db::now_ms() / 1000;
    crate::rdb::write_file_header(
        &mut buf,
        &[
            ("redis-ver", crate::REDIS_VERSION.to_string()),
            ("redis-bits", "64".into()),
            ("ctime", ctime.to_string()),
            ("used-mem", "0".into()),
            ("repl-stream-db", s.stream_db.to_string()),
            ("repl-id", s.replid.clone()),
            ("repl-offset", s.offset.to_string()),
            ("aof-base", "0".into()),
        ],
    );
    for (db, entries) in &s.dbs {
        let expires = entries.iter().filter(|(_, e)| e.expire_at != 0).count();
        crate::rdb::write_file_db(&mut buf, *db, entries.len(), expires);
        for (k, e) in entries {
            crate::rdb::write_file_key(&mut buf, k, &e.value, e.expire_at);
            if buf.len() >= PIECE {
                flush(&mut buf, &mut crc)?;
            }
        }
    }
    buf.push(crate::rdb::opcodes::EOF);
    crc = crate::rdb::crc64(crc, &buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    sink(&buf)
}

/// Runs a replication link on a connection that sent PSYNC/SYNC until it breaks.
pub async fn serve(
    server: Arc<Server>,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    start: LinkStart,
) {
    let r = &server.repl;
    let id = start.id;
    let name = start.name.clone();
    let pos = match sync(&server, wr, start).await {
        Ok(pos) => pos,
        Err(e) => {
            server.log.warning(&format!(
                "Connection with replica {name} lost during sync: {e}"
            ));
            r.remove_link(id);
            return;
        }
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = server.clone();
    let reader = async move {
        read_acks(&srv, rd, id).await;
        let _ = done_tx.send(());
    };
    let writer = async {
        let mut pos = pos;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match r.read_stream(id, pos, 1 << 20, &mut buf) {
                Err(()) => {
                    server.log.warning(&format!(
                        "Client id={id} addr={name} scheduled to be closed ASAP for overcoming of output buffer limits."
                    ));
                    return;
                }
                Ok(p) => pos = p,
            }
            if !buf.is_empty() {
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
                // Let this worker's clients run first: the next write carries their
                // commands together (fewer, larger writes under load).
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = r.wait_stream(pos) => {}
                _ = &mut done_rx => return,
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    r.remove_link(id);
    server
        .log
        .notice(&format!("Connection with replica {name} lost."));
}

/// Sends the sync preamble (and the snapshot); returns the stream position to continue at.
async fn sync(
    server: &Arc<Server>,
    wr: &mut OwnedWriteHalf,
    start: LinkStart,
) -> std::io::Result<u64> {
    let r = &server.repl;
    match start.plan {
        SyncPlan::Partial { replid, pos } => {
            wr.write_all(format!("+CONTINUE {replid}\r\n").as_bytes())
                .await?;
            Ok(pos)
        }
        SyncPlan::Full(snap) => {
            if !start.legacy {
                wr.write_all(format!("+FULLRESYNC {} {}\r\n", snap.replid, snap.offset).as_bytes())
                    .await?;
            }
            let offset = snap.offset;
            r.set_link(start.id, |l| l.state = "send_bulk");
            // The serialized file is charged like the copy (not counted against maxmemory)
            // until it has been sent.
            let copies = server.persist.copies.clone();
            let mut job = tokio::task::spawn_blocking(move || {
                let mut charge = crate::persist::CopyCharge::new(&copies, 0);
                let mut out = Vec::new();
                let _ = write_snapshot(&snap, &mut |b| {
                    out.extend_from_slice(b);
                    charge.resize(out.capacity() as u64);
                    Ok(())
                });
                drop(snap);
                (out, charge)
            });
            let (rdb, _charge) = loop {
                tokio::select! {
                    res = &mut job => break res.map_err(std::io::Error::other)?,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        // Keep-alive while the snapshot is serialized (replicas skip newlines).
                        wr.write_all(b"\n").await?;
                    }
                }
            };
            wr.write_all(format!("${}\r\n", rdb.len()).as_bytes())
                .await?;
            wr.write_all(&rdb).await?;
            r.set_link(start.id, |l| {
                l.state = "online";
                l.ack_time_ms = crate::db::now_ms();
            });
            server.log.notice(&format!(
                "Synchronization with replica {} succeeded",
                start.name
            ));
            Ok(offset)
        }
    }
}

/// Reads what a replica sends on its link: `REPLCONF ACK <offset> [FACK <offset>]`.
async fn read_acks(server: &Arc<Server>, rd: &mut OwnedReadHalf, id: u64) {
    let mut buf = BytesMut::with_capacity(1024);
    let mut parser = RequestParser::default();
    let mut args: Vec<Bytes> = Vec::new();
    let limits = Limits {
        max_bulk_len: 1024,
        unauthenticated: false,
    };
    let timeout = Duration::from_secs(server.config.read().get_int("repl-timeout").max(1) as u64);
    loop {
        loop {
            match parser.parse(&mut buf, &mut args, &limits) {
                Ok(Some(Parsed::Command)) => {
                    if args.len() >= 3
                        && args[0].eq_ignore_ascii_case(b"replconf")
                        && args[1].eq_ignore_ascii_case(b"ack")
                    {
                        if let Some(off) = slotgate_protocol::resp::parse_i64(&args[2]) {
                            server.repl.record_ack(id, off.max(0) as u64);
                        }
                    }
                }
                Ok(Some(Parsed::Empty)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match tokio::time::timeout(timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return,
            Err(_) => {
                server
                    .log
                    .warning("Disconnecting timedout replica (streaming sync)");
                return;
            }
        }
    }
}

/// Background duty of a master with replicas: PING into the stream every
/// `repl-ping-replica-period` seconds so replicas can tell a live link from a dead one.
pub async fn heartbeat(server: Arc<Server>) {
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let period = server
            .config
            .read()
            .get_int("repl-ping-replica-period")
            .max(1) as u64;
        if last.elapsed() < Duration::from_secs(period) {
            continue;
        }
        last = std::time::Instant::now();
        let r: &Replication = &server.repl;
        if r.is_replica() {
            continue;
        }
        let db = {
            let f = r.feed.lock();
            if f.links.is_empty() {
                continue;
            }
            f.stream_db.unwrap_or(0)
        };
        r.propagate(db, &[b"PING"]);
    }
}
