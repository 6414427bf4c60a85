//! MIGRATE, the client side: serialize keys in DUMP format and send them to the target as
//! `RESTORE-ASKING key ttl payload [REPLACE]` (`RESTORE` outside cluster mode), over a
//! connection cached per target for 10 s, then delete the local keys that the target
//! accepted (unless COPY). Replies and errors follow Redis's migrateCommand: `+NOKEY` when no
//! key exists, `-IOERR ...` on socket errors (one silent retry on a fresh connection when
//! nothing was processed), `-ERR Target instance replied with error: ...`.
//!
//! Like Redis, MIGRATE blocks its caller while talking to the target (the network I/O runs
//! in `block_in_place` so the runtime's other tasks keep running); the keys' shards stay
//! locked meanwhile, so no other client sees a half-migrated key.

use crate::cmd::{Ctx, Outcome};
use crate::rdb;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cached connections are closed after this much idle time.
const CACHE_IDLE: Duration = Duration::from_secs(10);

/// AUTH reply, SELECT reply, one reply per RESTORE (empty = socket error after it).
type Replies = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<Vec<u8>>);

struct Cached {
    sock: TcpStream,
    last_dbid: i64,
    last_use: Instant,
    buf: Vec<u8>,
}

fn cache() -> &'static Mutex<HashMap<String, Cached>> {
    static C: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Number of cached MIGRATE connections (for tests and INFO).
pub fn cached_connections() -> usize {
    cache().lock().len()
}

enum SockErr {
    Write,
    Read,
    Timeout,
}

impl Cached {
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, SockErr> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..p].to_vec();
                self.buf.drain(..p + 2);
                return Ok(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SockErr::Timeout);
            }
            let _ = self.sock.set_read_timeout(Some(left));
            let mut tmp = [0u8; 4096];
            match self.sock.read(&mut tmp) {
                Ok(0) => return Err(SockErr::Read),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err(SockErr::Timeout)
                }
                Err(_) => return Err(SockErr::Read),
            }
        }
    }
}

fn get_socket(host: &str, port: &str, timeout: Duration) -> Option<Cached> {
    let name = format!("{host}:{port}");
    if let Some(c) = cache().lock().remove(&name) {
        if c.last_use.elapsed() < CACHE_IDLE {
            return Some(c);
        }
    }
    let addr = (host, port.parse::<u16>().ok()?)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let sock = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(timeout));
    Some(Cached {
        sock,
        last_dbid: -1,
        last_use: Instant::now(),
        buf: Vec::new(),
    })
}

fn put_socket(host: &str, port: &str, mut c: Cached) {
    c.last_use = Instant::now();
    let mut m = cache().lock();
    // Old idle connections are dropped whenever the cache is touched.
    m.retain(|_, v| v.last_use.elapsed() < CACHE_IDLE);
    m.insert(format!("{host}:{port}"), c);
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE] [AUTH password]
/// [AUTH2 username password] [KEYS key [key ...]]
pub fn migrate(ctx: &mut Ctx) -> Outcome {
    let mut copy = false;
    let mut replace = false;
    let mut user: Option<Vec<u8>> = None;
    let mut password: Option<Vec<u8>> = None;
    let mut first_key = 3;
    let mut num_keys = 1;
    let argc = ctx.args.len();
    let mut j = 6;
    while j < argc {
        let more = argc - 1 - j;
        if ctx.arg_is(j, "copy") {
            copy = true;
        } else if ctx.arg_is(j, "replace") {
            replace = true;
        } else if ctx.arg_is(j, "auth") {
            if more == 0 {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
            j += 1;
            password = Some(ctx.args[j].to_vec());
        } else if ctx.arg_is(j, "auth2") {
            if more < 2 {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
            user = Some(ctx.args[j + 1].to_vec());
            password = Some(ctx.args[j + 2].to_vec());
            j += 2;
        } else if ctx.arg_is(j, "keys") {
            if !ctx.args[3].is_empty() {
                ctx.out.error(
                    "ERR When using MIGRATE KEYS option, the key argument must be set to the empty string",
                );
                return Outcome::Done;
            }
            first_key = j + 1;
            num_keys = argc - j - 1;
            break;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    let Some(timeout) = ctx.int_arg(5) else {
        return Outcome::Done;
    };
    let Some(dbid) = ctx.int_arg(4) else {
        return Outcome::Done;
    };
    let timeout = if timeout <= 0 { 1000 } else { timeout as u64 };
    let timeout = Duration::from_millis(timeout);

    // The keys that exist, with their payload and remaining TTL.
    let now = ctx.ks.now;
    let mut items: Vec<(bytes::Bytes, Vec<u8>, u64)> = Vec::new();
    let mut found = 0;
    for k in first_key..first_key + num_keys {
        let key = ctx.args[k].clone();
        if let Some(e) = ctx.ks.get(&key) {
            found += 1;
            let ttl = if e.expire_at == 0 {
                0
            } else if e.expire_at <= now {
                continue;
            } else {
                (e.expire_at - now).max(1)
            };
            items.push((key, rdb::dump_value(&e.value), ttl));
        }
    }
    if found == 0 {
        ctx.out.simple("NOKEY");
        return Outcome::Done;
    }
    let restore: &[u8] = if ctx.server.cluster.is_some() {
        b"RESTORE-ASKING"
    } else {
        b"RESTORE"
    };
    let host = String::from_utf8_lossy(&ctx.args[1]).into_owned();
    let port = String::from_utf8_lossy(&ctx.args[2]).into_owned();

    let mut may_retry = true;
    loop {
        let Some(mut cs) = blocking(|| get_socket(&host, &port, timeout)) else {
            ctx.out
                .error("IOERR error or timeout connecting to the client");
            return Outcome::Done;
        };
        let mut cmd = Vec::new();
        if let Some(pw) = &password {
            match &user {
                Some(u) => {
                    cmd.extend_from_slice(b"*3\r\n");
                    bulk(&mut cmd, b"AUTH");
                    bulk(&mut cmd, u);
                }
                None => {
                    cmd.extend_from_slice(b"*2\r\n");
                    bulk(&mut cmd, b"AUTH");
                }
            }
            bulk(&mut cmd, pw);
        }
        let select = cs.last_dbid != dbid;
        if select {
            cmd.extend_from_slice(b"*2\r\n");
            bulk(&mut cmd, b"SELECT");
            bulk(&mut cmd, dbid.to_string().as_bytes());
        }
        for (key, payload, ttl) in &items {
            cmd.extend_from_slice(if replace { b"*5\r\n" } else { b"*4\r\n" });
            bulk(&mut cmd, restore);
            bulk(&mut cmd, key);
            bulk(&mut cmd, ttl.to_string().as_bytes());
            bulk(&mut cmd, payload);
            if replace {
                bulk(&mut cmd, b"REPLACE");
            }
        }
        let deadline = Instant::now() + timeout;
        // Talk to the target: write everything, then read one line per command.
        let res: Result<Replies, (SockErr, usize)> = blocking(|| {
            if cs.sock.write_all(&cmd).is_err() {
                return Err((SockErr::Write, 0));
            }
            let auth_reply = match &password {
                Some(_) => Some(cs.read_line(deadline).map_err(|e| (e, 0))?),
                None => None,
            };
            let select_reply = if select {
                Some(cs.read_line(deadline).map_err(|e| (e, 0))?)
            } else {
                None
            };
            let mut replies = Vec::with_capacity(items.len());
            for i in 0..items.len() {
                match cs.read_line(deadline) {
                    Ok(l) => replies.push(l),
                    Err(e) => {
                        if i == 0 {
                            return Err((e, 0));
                        }
                        // Partial: report what was processed, then the socket error.
                        replies.push(Vec::new());
                        return Ok((auth_reply, select_reply, replies));
                    }
                }
            }
            Ok((auth_reply, select_reply, replies))
        });
        match res {
            Err((e, _)) => {
                let timed_out = matches!(e, SockErr::Timeout);
                let writing = matches!(e, SockErr::Write);
                drop(cs);
                if !timed_out && may_retry {
                    may_retry = false;
                    continue;
                }
                ctx.out.error(&format!(
                    "IOERR error or timeout {} to target instance",
                    if writing { "writing" } else { "reading" }
                ));
                return Outcome::Done;
            }
            Ok((auth, sel, replies)) => {
                let mut error: Option<String> = None;
                let mut socket_error = false;
                for (i, r) in replies.iter().enumerate() {
                    if r.is_empty() {
                        socket_error = true;
                        break;
                    }
                    let err_line = auth
                        .as_ref()
                        .filter(|a| a.first() == Some(&b'-'))
                        .or(sel.as_ref().filter(|s| s.first() == Some(&b'-')))
                        .or((r.first() == Some(&b'-')).then_some(r));
                    match err_line {
                        Some(l) => {
                            if error.is_none() {
                                cs.last_dbid = -1;
                                error = Some(format!(
                                    "ERR Target instance replied with error: {}",
                                    String::from_utf8_lossy(&l[1..])
                                ));
                            }
                        }
                        None => {
                            if !copy && ctx.ks.remove(&items[i].0).is_some() {
                                ctx.notify(crate::notify::GENERIC, "del", &items[i].0);
                            }
                        }
                    }
                }
                if socket_error {
                    drop(cs);
                    if error.is_none() {
                        ctx.out
                            .error("IOERR error or timeout reading to target instance");
                        return Outcome::Done;
                    }
                } else {
                    if error.is_none() {
                        cs.last_dbid = dbid;
                    }
                    put_socket(&host, &port, cs);
                }
                match error {
                    Some(e) => ctx.out.error(&e),
                    None => ctx.out.ok(),
                }
                return Outcome::Done;
            }
        }
    }
}
