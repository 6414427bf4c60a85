//! How a write reaches replicas when replaying the request itself would not reproduce it.
//!
//! Replicas must end up with the master's exact data, so commands whose effect depends on
//! the clock, on chance, on blocking or on float formatting are propagated as deterministic
//! equivalents (as Redis 7 does): relative expiries become `PEXPIREAT`/`SET ... PXAT`,
//! float increments become `SET`/`HSET` of the result, `SPOP` becomes `SREM` of what was
//! popped, blocking pops become their non-blocking multi-key forms (same data, same choice),
//! `MIGRATE` becomes `DEL` of the keys that left, `RESTORE` gets an absolute TTL.
//! [`rewrite`] runs after the command, with its keys still locked.

use crate::cmd::Rewrite;
use crate::db::Locked;
use bytes::Bytes;
use slotgate_protocol::resp::Frame;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn int(n: u64) -> Bytes {
    Bytes::copy_from_slice(itoa::Buffer::new().format(n).as_bytes())
}

fn one(cmd: Vec<Bytes>) -> Option<Rewrite> {
    let mut r = Rewrite::new();
    r.push(cmd);
    Some(r)
}

/// The expiry state of `key` after the command, as commands: `PEXPIREAT`, `PERSIST` or `DEL`.
fn expiry_of(ks: &mut Locked<'_>, key: &Bytes) -> Vec<Bytes> {
    match ks.get(key) {
        Some(e) if e.expire_at != 0 => vec![b("PEXPIREAT"), key.clone(), int(e.expire_at)],
        Some(_) => vec![b("PERSIST"), key.clone()],
        None => vec![b("DEL"), key.clone()],
    }
}

/// `SET key value` with the key's resulting expiry.
fn set_with_expiry(ks: &mut Locked<'_>, key: &Bytes, value: &Bytes) -> Vec<Bytes> {
    let mut cmd = vec![b("SET"), key.clone(), value.clone()];
    if let Some(e) = ks.get(key) {
        if e.expire_at != 0 {
            cmd.push(b("PXAT"));
            cmd.push(int(e.expire_at));
        }
    }
    cmd
}

/// Replaces the timeout-bearing blocking form with its non-blocking equivalent.
fn multi_pop(name: &str, keys: &[Bytes], dir: &str) -> Vec<Bytes> {
    let mut cmd = vec![b(name), int(keys.len() as u64)];
    cmd.extend(keys.iter().cloned());
    cmd.push(b(dir));
    cmd
}

/// The commands to propagate instead of `args` (None: propagate `args` as they are).
/// `reply` is the reply the command wrote (RESP), for commands whose effect it names.
pub fn rewrite(name: &str, args: &[Bytes], ks: &mut Locked<'_>, reply: &[u8]) -> Option<Rewrite> {
    let n = args.len();
    match name {
        "expire" | "pexpire" | "expireat" if n >= 3 => one(expiry_of(ks, &args[1])),
        "getex" if n >= 3 => one(expiry_of(ks, &args[1])),
        "setex" | "psetex" if n >= 4 => one(set_with_expiry(ks, &args[1], &args[3])),
        "set" if n >= 4 => {
            let relative = args[3..].iter().any(|a| {
                a.eq_ignore_ascii_case(b"ex")
                    || a.eq_ignore_ascii_case(b"px")
                    || a.eq_ignore_ascii_case(b"exat")
            });
            relative.then(|| one(set_with_expiry(ks, &args[1], &args[2])))?
        }
        "incrbyfloat" if n >= 3 => {
            let v = match ks.get(&args[1]).map(|e| &e.value) {
                Some(crate::value::Value::Str(s)) => Bytes::copy_from_slice(s),
                _ => return None,
            };
            one(vec![b("SET"), args[1].clone(), v, b("KEEPTTL")])
        }
        "hincrbyfloat" if n >= 4 => {
            let Frame::Bulk(v) =
                slotgate_protocol::resp::decode_complete(&Bytes::copy_from_slice(reply)).ok()?
            else {
                return None;
            };
            one(vec![b("HSET"), args[1].clone(), args[2].clone(), v])
        }
        "spop" if n >= 2 => {
            let members =
                match slotgate_protocol::resp::decode_complete(&Bytes::copy_from_slice(reply))
                    .ok()?
                {
                    Frame::Bulk(m) => vec![m],
                    Frame::Array(items) | Frame::Set(items) => items
                        .into_iter()
                        .filter_map(|f| match f {
                            Frame::Bulk(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
            if members.is_empty() {
                return Some(Rewrite::new());
            }
            let mut cmd = vec![b("SREM"), args[1].clone()];
            cmd.extend(members);
            one(cmd)
        }
        "blpop" if n >= 3 => one(multi_pop("LMPOP", &args[1..n - 1], "LEFT")),
        "brpop" if n >= 3 => one(multi_pop("LMPOP", &args[1..n - 1], "RIGHT")),
        "bzpopmin" if n >= 3 => one(multi_pop("ZMPOP", &args[1..n - 1], "MIN")),
        "bzpopmax" if n >= 3 => one(multi_pop("ZMPOP", &args[1..n - 1], "MAX")),
        "blmove" if n == 6 => one(vec![
            b("LMOVE"),
            args[1].clone(),
            args[2].clone(),
            args[3].clone(),
            args[4].clone(),
        ]),
        "brpoplpush" if n == 4 => one(vec![b("RPOPLPUSH"), args[1].clone(), args[2].clone()]),
        "blmpop" if n >= 3 => {
            let mut cmd = vec![b("LMPOP")];
            cmd.extend(args[2..].iter().cloned());
            one(cmd)
        }
        "bzmpop" if n >= 3 => {
            let mut cmd = vec![b("ZMPOP")];
            cmd.extend(args[2..].iter().cloned());
            one(cmd)
        }
        "restore" if n >= 4 => {
            let abs = args[4..].iter().any(|a| a.eq_ignore_ascii_case(b"absttl"));
            let ttl = slotgate_protocol::resp::parse_i64(&args[2]).unwrap_or(0);
            if abs || ttl <= 0 {
                return None;
            }
            let mut cmd: Vec<Bytes> = args.to_vec();
            let at = ks.get(&args[1]).map(|e| e.expire_at).unwrap_or(0);
            if at == 0 {
                return None;
            }
            cmd[2] = int(at);
            cmd.push(b("ABSTTL"));
            one(cmd)
        }
        "migrate" if n >= 6 => {
            if args[6..].iter().any(|a| a.eq_ignore_ascii_case(b"copy")) {
                return Some(Rewrite::new());
            }
            let mut keys: Vec<Bytes> = Vec::new();
            if !args[3].is_empty() {
                keys.push(args[3].clone());
            }
            if let Some(p) = args.iter().position(|a| a.eq_ignore_ascii_case(b"keys")) {
                keys.extend(args[p + 1..].iter().cloned());
            }
            keys.retain(|k| !ks.exists(k));
            if keys.is_empty() {
                return Some(Rewrite::new());
            }
            let mut cmd = vec![b("DEL")];
            cmd.extend(keys);
            one(cmd)
        }
        _ => None,
    }
}
