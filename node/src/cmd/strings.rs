//! String commands: GET/SET and friends, counters (INCR..., INCRBYFLOAT), ranges (GETRANGE,
//! SETRANGE, APPEND), LCS and the bitmap commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP,
//! BITFIELD, BITFIELD_RO), with Redis 7.0 replies and error texts.
//!
//! Strings are stored as `Value::Str(Vec<u8>)`; integers are plain decimal text. GET, SET and
//! INCR are the benchmark hot path: they do no allocation beyond storing the value, and SET /
//! INCR on an existing string reuse its buffer. INCRBYFLOAT emulates Redis's x87 `long double`
//! arithmetic and `%.17Lf` formatting exactly (see [`ld`]).

use super::{Ctx, Handler, Outcome};
use crate::db::Locked;
use crate::notify as ev;
use crate::value::Value;
use slotgate_protocol::resp::parse_i64;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("get", get),
    ("set", set),
    ("setnx", setnx),
    ("setex", setex),
    ("psetex", psetex),
    ("getset", getset),
    ("getdel", getdel),
    ("getex", getex),
    ("mget", mget),
    ("mset", mset),
    ("msetnx", msetnx),
    ("append", append),
    ("strlen", strlen),
    ("incr", incr),
    ("decr", decr),
    ("incrby", incrby),
    ("decrby", decrby),
    ("incrbyfloat", incrbyfloat),
    ("getrange", getrange),
    ("substr", getrange),
    ("setrange", setrange),
    ("lcs", lcs),
    ("setbit", setbit),
    ("getbit", getbit),
    ("bitcount", bitcount),
    ("bitpos", bitpos),
    ("bitop", bitop),
    ("bitfield", bitfield),
    ("bitfield_ro", bitfield_ro),
];

const ERR_OVERFLOW: &str = "ERR increment or decrement would overflow";
const ERR_STRING_SIZE: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const ERR_BIT_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const ERR_BIT_VALUE: &str = "ERR bit is not an integer or out of range";
const DEFAULT_PROTO_MAX_BULK_LEN: i64 = 512 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

/// Result of looking a key up as a string.
enum Lookup<'a> {
    Missing,
    Str(&'a Vec<u8>),
    WrongType,
}

/// Reads `key` as a string value (lazily expiring it).
fn lookup_str<'a>(ks: &'a mut Locked<'_>, key: &[u8]) -> Lookup<'a> {
    match ks.get(key) {
        None => Lookup::Missing,
        Some(e) => match &e.value {
            Value::Str(s) => Lookup::Str(s),
            _ => Lookup::WrongType,
        },
    }
}

/// The configured `proto-max-bulk-len` (the largest string a command may build).
fn proto_max_bulk_len(ctx: &Ctx) -> i64 {
    let cfg = ctx.server.config.read();
    crate::config::parse_memory(cfg.get("proto-max-bulk-len"))
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_PROTO_MAX_BULK_LEN)
}

/// Redis's `checkStringLength`: false (and the error written) when `size + append` is too big.
fn check_string_length(ctx: &mut Ctx, size: u64, append: u64) -> bool {
    let max = proto_max_bulk_len(ctx) as u64;
    match size.checked_add(append) {
        Some(total) if total <= max => true,
        _ => {
            ctx.out.error(ERR_STRING_SIZE);
            false
        }
    }
}

/// Appends the decimal form of `n` to `out` without allocating.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Stores `val` as the string value of `key`, reusing the old string buffer when there is one.
/// The expiry is cleared unless `keep_ttl`. Counts exactly one write.
fn store_str(ks: &mut Locked<'_>, key: &[u8], val: &[u8], keep_ttl: bool) {
    let e = ks.get_or_insert_with(key, || Value::Str(Vec::with_capacity(val.len())));
    match &mut e.value {
        Value::Str(v) if v.capacity() <= 2 * val.len() + 64 => {
            v.clear();
            v.extend_from_slice(val);
        }
        other => *other = Value::Str(val.to_vec()),
    }
    if !keep_ttl && e.expire_at != 0 {
        ks.set_expire(key, 0);
        // set_expire counted a second write for the same SET.
        ks.dirty = ks.dirty.saturating_sub(1);
    }
}

/// Sets the absolute expiry of a key just written, counting no extra write.
fn set_expire_quiet(ks: &mut Locked<'_>, key: &[u8], at: u64) {
    if ks.set_expire(key, at) {
        ks.dirty = ks.dirty.saturating_sub(1);
    }
}

/// Parses a GETRANGE/BITCOUNT style signed index argument.
fn parse_index(ctx: &mut Ctx, i: usize) -> Option<i64> {
    ctx.int_arg(i)
}

// ---------------------------------------------------------------------------------------------
// GET / SET family.
// ---------------------------------------------------------------------------------------------

fn get(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => ctx.out.null(),
        Lookup::Str(s) => ctx.out.bulk(s),
        Lookup::WrongType => ctx.out.wrong_type(),
    }
    Outcome::Done
}

/// Option flags of SET / GETEX (Redis's `OBJ_*` flags).
mod flag {
    pub const NX: u32 = 1;
    pub const XX: u32 = 2;
    pub const GET: u32 = 4;
    pub const KEEPTTL: u32 = 8;
    pub const PERSIST: u32 = 16;
    pub const EX: u32 = 32;
    pub const PX: u32 = 64;
    pub const EXAT: u32 = 128;
    pub const PXAT: u32 = 256;
    pub const ANY_EXPIRE: u32 = EX | PX | EXAT | PXAT;
}

/// Parses SET (`for_set`) or GETEX options starting at argument 3 (SET) / 2 (GETEX), exactly as
/// Redis's `parseExtendedStringArgumentsOrReply`. Returns the flags and the expire argument index.
fn parse_ext_options(ctx: &mut Ctx, start: usize, for_set: bool) -> Option<(u32, Option<usize>)> {
    use flag::*;
    let args = ctx.args;
    let mut flags = 0u32;
    let mut expire = None;
    let mut j = start;
    while j < args.len() {
        let opt = &args[j][..];
        let has_next = j + 1 < args.len();
        let is = |w: &str| opt.eq_ignore_ascii_case(w.as_bytes());
        if is("nx") && flags & XX == 0 && for_set {
            flags |= NX;
        } else if is("xx") && flags & NX == 0 && for_set {
            flags |= XX;
        } else if is("get") && for_set {
            flags |= GET;
        } else if is("keepttl") && flags & (PERSIST | ANY_EXPIRE) == 0 && for_set {
            flags |= KEEPTTL;
        } else if is("persist") && !for_set && flags & (ANY_EXPIRE | KEEPTTL) == 0 {
            flags |= PERSIST;
        } else if is("ex") && flags & (KEEPTTL | PERSIST | EXAT | PX | PXAT) == 0 && has_next {
            flags |= EX;
            expire = Some(j + 1);
            j += 1;
        } else if is("px") && flags & (KEEPTTL | PERSIST | EX | EXAT | PXAT) == 0 && has_next {
            flags |= PX;
            expire = Some(j + 1);
            j += 1;
        } else if is("exat") && flags & (KEEPTTL | PERSIST | EX | PX | PXAT) == 0 && has_next {
            flags |= EXAT;
            expire = Some(j + 1);
            j += 1;
        } else if is("pxat") && flags & (KEEPTTL | PERSIST | EX | EXAT | PX) == 0 && has_next {
            flags |= PXAT;
            expire = Some(j + 1);
            j += 1;
        } else {
            ctx.out.syntax_error();
            return None;
        }
        j += 1;
    }
    Some((flags, expire))
}

/// Redis's `getExpireMillisecondsOrReply`: the absolute expiry in unix ms for an expire
/// argument in seconds (`EX`/`EXAT`) or milliseconds, relative (`EX`/`PX`) or absolute.
fn expire_at_or_reply(ctx: &mut Ctx, i: usize, seconds: bool, relative: bool) -> Option<u64> {
    let name = ctx.spec.name;
    let mut ms = ctx.int_arg(i)?;
    if ms <= 0 || (seconds && ms > i64::MAX / 1000) {
        ctx.out
            .error(&format!("ERR invalid expire time in '{name}' command"));
        return None;
    }
    if seconds {
        ms *= 1000;
    }
    if relative {
        ms = ms.wrapping_add(ctx.ks.now as i64);
    }
    if ms <= 0 {
        ctx.out
            .error(&format!("ERR invalid expire time in '{name}' command"));
        return None;
    }
    Some(ms as u64)
}

/// Redis's `setGenericCommand`. `expire` is (argument index, seconds?, relative?).
/// `ok_reply`: None for +OK / null, Some for SETNX's 1 / 0.
fn set_generic(
    ctx: &mut Ctx,
    flags: u32,
    val_idx: usize,
    expire: Option<(usize, bool, bool)>,
    int_reply: bool,
) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let mut at = 0u64;
    if let Some((i, seconds, relative)) = expire {
        match expire_at_or_reply(ctx, i, seconds, relative) {
            Some(v) => at = v,
            None => return Outcome::Done,
        }
    }
    let found;
    if flags & flag::GET != 0 {
        match lookup_str(ctx.ks, key) {
            Lookup::Missing => {
                ctx.out.null();
                found = false;
            }
            Lookup::Str(s) => {
                ctx.out.bulk(s);
                found = true;
            }
            Lookup::WrongType => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
        }
    } else if flags & (flag::NX | flag::XX) != 0 {
        found = ctx.ks.exists(key);
    } else {
        found = false;
    }
    if (flags & flag::NX != 0 && found) || (flags & flag::XX != 0 && !found) {
        if flags & flag::GET == 0 {
            if int_reply {
                ctx.out.int(0);
            } else {
                ctx.out.null();
            }
        }
        return Outcome::Done;
    }
    store_str(ctx.ks, key, &args[val_idx], flags & flag::KEEPTTL != 0);
    ctx.notify(ev::STRING, "set", key);
    if expire.is_some() {
        set_expire_quiet(ctx.ks, key, at);
        ctx.notify(ev::GENERIC, "expire", key);
    }
    if flags & flag::GET == 0 {
        if int_reply {
            ctx.out.int(1);
        } else {
            ctx.out.ok();
        }
    }
    Outcome::Done
}

fn set(ctx: &mut Ctx) -> Outcome {
    if ctx.args.len() == 3 {
        // Hot path: plain SET key value.
        let args = ctx.args;
        store_str(ctx.ks, &args[1], &args[2], false);
        ctx.notify(ev::STRING, "set", &args[1]);
        ctx.out.ok();
        return Outcome::Done;
    }
    let Some((flags, expire)) = parse_ext_options(ctx, 3, true) else {
        return Outcome::Done;
    };
    let expire = expire.map(|i| {
        (
            i,
            flags & (flag::EX | flag::EXAT) != 0,
            flags & (flag::EX | flag::PX) != 0,
        )
    });
    set_generic(ctx, flags, 2, expire, false)
}

fn setnx(ctx: &mut Ctx) -> Outcome {
    set_generic(ctx, flag::NX, 2, None, true)
}

fn setex(ctx: &mut Ctx) -> Outcome {
    set_generic(ctx, 0, 3, Some((2, true, true)), false)
}

fn psetex(ctx: &mut Ctx) -> Outcome {
    set_generic(ctx, 0, 3, Some((2, false, true)), false)
}

fn getset(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => ctx.out.null(),
        Lookup::Str(s) => ctx.out.bulk(s),
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
    }
    store_str(ctx.ks, &args[1], &args[2], false);
    ctx.notify(ev::STRING, "set", &args[1]);
    Outcome::Done
}

fn getdel(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => ctx.out.null(),
        Lookup::WrongType => ctx.out.wrong_type(),
        Lookup::Str(_) => {
            if let Some(e) = ctx.ks.remove(&args[1]) {
                if let Value::Str(s) = &e.value {
                    ctx.out.bulk(s);
                }
                ctx.notify(ev::GENERIC, "del", &args[1]);
            }
        }
    }
    Outcome::Done
}

fn getex(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let Some((flags, expire)) = parse_ext_options(ctx, 2, false) else {
        return Outcome::Done;
    };
    match lookup_str(ctx.ks, key) {
        Lookup::Missing => {
            ctx.out.null();
            return Outcome::Done;
        }
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(_) => {}
    }
    let mut at = 0;
    if let Some(i) = expire {
        let seconds = flags & (flag::EX | flag::EXAT) != 0;
        let relative = flags & (flag::EX | flag::PX) != 0;
        match expire_at_or_reply(ctx, i, seconds, relative) {
            Some(v) => at = v,
            None => return Outcome::Done,
        }
    }
    if let Lookup::Str(s) = lookup_str(ctx.ks, key) {
        ctx.out.bulk(s);
    }
    if flags & (flag::EXAT | flag::PXAT) != 0 && at <= ctx.ks.now {
        ctx.ks.remove(key);
        ctx.notify(ev::GENERIC, "del", key);
    } else if expire.is_some() {
        ctx.ks.set_expire(key, at);
        ctx.notify(ev::GENERIC, "expire", key);
    } else if flags & flag::PERSIST != 0 {
        let has_ttl = ctx.ks.get(key).is_some_and(|e| e.expire_at != 0);
        if has_ttl {
            ctx.ks.set_expire(key, 0);
            ctx.notify(ev::GENERIC, "persist", key);
        }
    }
    Outcome::Done
}

fn mget(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    ctx.out.array(args.len() - 1);
    for k in &args[1..] {
        match lookup_str(ctx.ks, k) {
            Lookup::Str(s) => ctx.out.bulk(s),
            _ => ctx.out.null(),
        }
    }
    Outcome::Done
}

fn mset_generic(ctx: &mut Ctx, nx: bool) -> Outcome {
    let args = ctx.args;
    if args.len() & 1 == 0 {
        ctx.out.wrong_arity(ctx.spec.name);
        return Outcome::Done;
    }
    if nx && args[1..].chunks(2).any(|kv| ctx.ks.exists(&kv[0])) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    for kv in args[1..].chunks(2) {
        store_str(ctx.ks, &kv[0], &kv[1], false);
        ctx.notify(ev::STRING, "set", &kv[0]);
    }
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
    Outcome::Done
}

fn mset(ctx: &mut Ctx) -> Outcome {
    mset_generic(ctx, false)
}

fn msetnx(ctx: &mut Ctx) -> Outcome {
    mset_generic(ctx, true)
}

fn append(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let (key, add) = (&args[1][..], &args[2][..]);
    let old_len = match lookup_str(ctx.ks, key) {
        Lookup::Missing => {
            ctx.ks.set(key, Value::Str(add.to_vec()), false);
            ctx.notify(ev::STRING, "append", key);
            ctx.out.int(add.len() as i64);
            return Outcome::Done;
        }
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(s) => s.len(),
    };
    if !check_string_length(ctx, old_len as u64, add.len() as u64) {
        return Outcome::Done;
    }
    let mut len = old_len;
    if let Some(e) = ctx.ks.get_mut(key) {
        if let Value::Str(s) = &mut e.value {
            s.extend_from_slice(add);
            len = s.len();
        }
    }
    ctx.notify(ev::STRING, "append", key);
    ctx.out.int(len as i64);
    Outcome::Done
}

fn strlen(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => ctx.out.int(0),
        Lookup::Str(s) => ctx.out.int(s.len() as i64),
        Lookup::WrongType => ctx.out.wrong_type(),
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Counters.
// ---------------------------------------------------------------------------------------------

/// Redis's `incrDecrCommand`.
fn incr_decr(ctx: &mut Ctx, delta: i64) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let cur = match lookup_str(ctx.ks, key) {
        Lookup::Missing => 0,
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(s) => match parse_i64(s) {
            Some(v) => v,
            None => {
                ctx.out.not_integer();
                return Outcome::Done;
            }
        },
    };
    let Some(new) = cur.checked_add(delta) else {
        ctx.out.error(ERR_OVERFLOW);
        return Outcome::Done;
    };
    let e = ctx
        .ks
        .get_or_insert_with(key, || Value::Str(Vec::with_capacity(20)));
    match &mut e.value {
        Value::Str(v) => {
            v.clear();
            write_i64(v, new);
        }
        other => {
            let mut v = Vec::with_capacity(20);
            write_i64(&mut v, new);
            *other = Value::Str(v);
        }
    }
    ctx.notify(ev::STRING, "incrby", key);
    ctx.out.int(new);
    Outcome::Done
}

fn incr(ctx: &mut Ctx) -> Outcome {
    incr_decr(ctx, 1)
}

fn decr(ctx: &mut Ctx) -> Outcome {
    incr_decr(ctx, -1)
}

fn incrby(ctx: &mut Ctx) -> Outcome {
    match ctx.int_arg(2) {
        Some(n) => incr_decr(ctx, n),
        None => Outcome::Done,
    }
}

fn decrby(ctx: &mut Ctx) -> Outcome {
    match ctx.int_arg(2) {
        Some(i64::MIN) => {
            ctx.out.error("ERR decrement would overflow");
            Outcome::Done
        }
        Some(n) => incr_decr(ctx, -n),
        None => Outcome::Done,
    }
}

fn incrbyfloat(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let result = match lookup_str(ctx.ks, key) {
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Missing => crate::longdouble::incr_by_float(b"0", &args[2]),
        Lookup::Str(s) => crate::longdouble::incr_by_float(s, &args[2]),
    };
    match result {
        Ok(v) => {
            ctx.out.bulk(&v);
            // Like Redis, the new value replaces the old one but keeps its TTL.
            store_str(ctx.ks, key, &v, true);
            ctx.notify(ev::STRING, "incrbyfloat", key);
        }
        Err(crate::longdouble::IncrError::NotFloat) => ctx.out.not_float(),
        Err(crate::longdouble::IncrError::NanOrInf) => {
            ctx.out.error("ERR increment would produce NaN or Infinity")
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Ranges.
// ---------------------------------------------------------------------------------------------

fn getrange(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(mut start) = parse_index(ctx, 2) else {
        return Outcome::Done;
    };
    let Some(mut end) = parse_index(ctx, 3) else {
        return Outcome::Done;
    };
    let s = match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => {
            ctx.out.bulk(b"");
            return Outcome::Done;
        }
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(s) => s,
    };
    let len = s.len() as i64;
    if start < 0 && end < 0 && start > end {
        ctx.out.bulk(b"");
        return Outcome::Done;
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        ctx.out.bulk(b"");
    } else {
        ctx.out.bulk(&s[start as usize..=end as usize]);
    }
    Outcome::Done
}

fn setrange(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let (key, val) = (&args[1][..], &args[3][..]);
    let Some(offset) = ctx.int_arg(2) else {
        return Outcome::Done;
    };
    if offset < 0 {
        ctx.out.error("ERR offset is out of range");
        return Outcome::Done;
    }
    let offset = offset as u64;
    match lookup_str(ctx.ks, key) {
        Lookup::Missing => {
            if val.is_empty() {
                ctx.out.int(0);
                return Outcome::Done;
            }
            if !check_string_length(ctx, offset, val.len() as u64) {
                return Outcome::Done;
            }
            let mut v = vec![0u8; offset as usize + val.len()];
            v[offset as usize..].copy_from_slice(val);
            let n = v.len();
            ctx.ks.set(key, Value::Str(v), false);
            ctx.notify(ev::STRING, "setrange", key);
            ctx.out.int(n as i64);
        }
        Lookup::WrongType => ctx.out.wrong_type(),
        Lookup::Str(s) => {
            if val.is_empty() {
                ctx.out.int(s.len() as i64);
                return Outcome::Done;
            }
            if !check_string_length(ctx, offset, val.len() as u64) {
                return Outcome::Done;
            }
            let mut n = 0;
            if let Some(e) = ctx.ks.get_mut(key) {
                if let Value::Str(s) = &mut e.value {
                    let off = offset as usize;
                    if s.len() < off + val.len() {
                        s.resize(off + val.len(), 0);
                    }
                    s[off..off + val.len()].copy_from_slice(val);
                    n = s.len();
                }
            }
            ctx.notify(ev::STRING, "setrange", key);
            ctx.out.int(n as i64);
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// LCS.
// ---------------------------------------------------------------------------------------------

fn lcs(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let a = match lookup_str(ctx.ks, &args[1]) {
        Lookup::Str(s) => Some(s.clone()),
        Lookup::Missing => Some(Vec::new()),
        Lookup::WrongType => None,
    };
    let b = match lookup_str(ctx.ks, &args[2]) {
        Lookup::Str(s) => Some(s.clone()),
        Lookup::Missing => Some(Vec::new()),
        Lookup::WrongType => None,
    };
    let (Some(a), Some(b)) = (a, b) else {
        ctx.out
            .error("ERR The specified keys must contain string values");
        return Outcome::Done;
    };
    let (mut getlen, mut getidx, mut withmatchlen) = (false, false, false);
    let mut minmatchlen: i64 = 0;
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        if ctx.arg_is(j, "idx") {
            getidx = true;
        } else if ctx.arg_is(j, "len") {
            getlen = true;
        } else if ctx.arg_is(j, "withmatchlen") {
            withmatchlen = true;
        } else if ctx.arg_is(j, "minmatchlen") && more {
            let Some(n) = ctx.int_arg(j + 1) else {
                return Outcome::Done;
            };
            minmatchlen = n.max(0);
            j += 1;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    if getidx && getlen {
        ctx.out
            .error("ERR If you want both the length and indexes, please just use IDX.");
        return Outcome::Done;
    }
    if a.len() >= u32::MAX as usize - 1 || b.len() >= u32::MAX as usize - 1 {
        ctx.out.error("ERR String too long for LCS");
        return Outcome::Done;
    }
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    if cells * 4 > proto_max_bulk_len(ctx) as u64 {
        ctx.out
            .error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
        return Outcome::Done;
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for jj in 1..=blen {
            t[i * w + jj] = if a[i - 1] == b[jj - 1] {
                t[(i - 1) * w + jj - 1] + 1
            } else {
                t[(i - 1) * w + jj].max(t[i * w + jj - 1])
            };
        }
    }
    let total = t[alen * w + blen];
    let computelcs = getidx || !getlen;
    let mut result = vec![0u8; if computelcs { total as usize } else { 0 }];
    // Ranges are collected first: the array length is only known at the end.
    let mut ranges: Vec<[u32; 5]> = Vec::new();
    let (mut idx, mut i, mut jj) = (total as usize, alen, blen);
    let (mut astart, mut aend, mut bstart, mut bend) = (alen, 0usize, 0usize, 0usize);
    while computelcs && i > 0 && jj > 0 {
        let mut emit = false;
        if a[i - 1] == b[jj - 1] {
            result[idx - 1] = a[i - 1];
            if astart == alen {
                astart = i - 1;
                aend = i - 1;
                bstart = jj - 1;
                bend = jj - 1;
            } else if astart == i && bstart == jj {
                astart -= 1;
                bstart -= 1;
            } else {
                emit = true;
            }
            if astart == 0 || bstart == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            jj -= 1;
        } else {
            let l1 = t[(i - 1) * w + jj];
            let l2 = t[i * w + jj - 1];
            if l1 > l2 {
                i -= 1;
            } else {
                jj -= 1;
            }
            if astart != alen {
                emit = true;
            }
        }
        let match_len = aend.wrapping_sub(astart).wrapping_add(1);
        if emit {
            if minmatchlen == 0 || match_len as i64 >= minmatchlen {
                ranges.push([
                    astart as u32,
                    aend as u32,
                    bstart as u32,
                    bend as u32,
                    match_len as u32,
                ]);
            }
            astart = alen;
        }
    }
    if getidx {
        ctx.out.map(2);
        ctx.out.bulk(b"matches");
        ctx.out.array(ranges.len());
        for r in &ranges {
            ctx.out.array(2 + withmatchlen as usize);
            ctx.out.array(2);
            ctx.out.int(r[0] as i64);
            ctx.out.int(r[1] as i64);
            ctx.out.array(2);
            ctx.out.int(r[2] as i64);
            ctx.out.int(r[3] as i64);
            if withmatchlen {
                ctx.out.int(r[4] as i64);
            }
        }
        ctx.out.bulk(b"len");
        ctx.out.int(total as i64);
    } else if getlen {
        ctx.out.int(total as i64);
    } else {
        ctx.out.bulk(&result);
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Bitmaps.
// ---------------------------------------------------------------------------------------------

/// Redis's `getBitOffsetFromArgument`: a bit offset, `#n` (times `bits`) when `hash` is true.
fn bit_offset_arg(ctx: &mut Ctx, i: usize, hash: bool, bits: u64) -> Option<u64> {
    let a = &ctx.args[i][..];
    let usehash = hash && a.len() > 1 && a[0] == b'#';
    let parsed = parse_i64(if usehash { &a[1..] } else { a }).and_then(|n| {
        if usehash {
            n.checked_mul(bits as i64)
        } else {
            Some(n)
        }
    });
    let max = proto_max_bulk_len(ctx);
    match parsed {
        Some(n) if n >= 0 && (n >> 3) < max => Some(n as u64),
        _ => {
            ctx.out.error(ERR_BIT_OFFSET);
            None
        }
    }
}

/// Redis's `lookupStringForBitCommand`: the string of `key` grown (zero-padded) to hold bit
/// `maxbit`, created if missing. None (WRONGTYPE written) when the key is not a string.
fn string_for_bit_write<'a>(ctx: &'a mut Ctx, key: &[u8], maxbit: u64) -> Option<&'a mut Vec<u8>> {
    let need = (maxbit >> 3) as usize + 1;
    if let Lookup::WrongType = lookup_str(ctx.ks, key) {
        ctx.out.wrong_type();
        return None;
    }
    let e = ctx
        .ks
        .get_or_insert_with(key, || Value::Str(Vec::with_capacity(need)));
    match &mut e.value {
        Value::Str(s) => {
            if s.len() < need {
                s.resize(need, 0);
            }
            Some(s)
        }
        _ => None,
    }
}

fn setbit(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(off) = bit_offset_arg(ctx, 2, false, 0) else {
        return Outcome::Done;
    };
    let on = match parse_i64(&args[3]) {
        Some(v @ (0 | 1)) => v as u8,
        _ => {
            ctx.out.error(ERR_BIT_VALUE);
            return Outcome::Done;
        }
    };
    // Redis 7.0 reports a change only when the key was created or grown, or the bit flipped.
    let len_before = match lookup_str(ctx.ks, &args[1]) {
        Lookup::Str(s) => Some(s.len()),
        _ => None,
    };
    let Some(s) = string_for_bit_write(ctx, &args[1], off) else {
        return Outcome::Done;
    };
    let byte = (off >> 3) as usize;
    let shift = 7 - (off & 7) as u8;
    let old = (s[byte] >> shift) & 1;
    s[byte] = (s[byte] & !(1 << shift)) | (on << shift);
    let changed = len_before != Some(s.len()) || old != on;
    if changed {
        ctx.notify(ev::STRING, "setbit", &args[1]);
    }
    ctx.out.int(old as i64);
    Outcome::Done
}

fn getbit(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(off) = bit_offset_arg(ctx, 2, false, 0) else {
        return Outcome::Done;
    };
    match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => ctx.out.int(0),
        Lookup::WrongType => ctx.out.wrong_type(),
        Lookup::Str(s) => {
            let byte = (off >> 3) as usize;
            let bit = s.get(byte).map_or(0, |b| (b >> (7 - (off & 7))) & 1);
            ctx.out.int(bit as i64);
        }
    }
    Outcome::Done
}

/// Number of set bits of `s` in the inclusive bit range `[lo, hi]`.
fn count_bits(s: &[u8], lo: u64, hi: u64) -> u64 {
    let (bl, bh) = ((lo >> 3) as usize, (hi >> 3) as usize);
    let mut n: u64 = s[bl..=bh].iter().map(|b| b.count_ones() as u64).sum();
    let first_mask = (0xFFu16 << (8 - (lo & 7))) as u8; // bits before lo in the first byte
    let last_mask = ((1u16 << (7 - (hi & 7))) - 1) as u8; // bits after hi in the last byte
    n -= (s[bl] & first_mask).count_ones() as u64;
    n -= (s[bh] & last_mask).count_ones() as u64;
    n
}

fn bitcount(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let s = match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(s) => s,
    };
    let len = s.len() as i64;
    let (lo, hi) = match args.len() {
        2 => (0i64, len * 8 - 1),
        4 | 5 => {
            let (Some(mut start), Some(mut end)) = (parse_i64(&args[2]), parse_i64(&args[3]))
            else {
                ctx.out.not_integer();
                return Outcome::Done;
            };
            if start < 0 && end < 0 && start > end {
                ctx.out.int(0);
                return Outcome::Done;
            }
            let isbit = if args.len() == 5 {
                if args[4].eq_ignore_ascii_case(b"bit") {
                    true
                } else if args[4].eq_ignore_ascii_case(b"byte") {
                    false
                } else {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            } else {
                false
            };
            let total = if isbit { len * 8 } else { len };
            if start < 0 {
                start = start.saturating_add(total);
            }
            if end < 0 {
                end = end.saturating_add(total);
            }
            start = start.max(0);
            end = end.max(0);
            if end >= total {
                end = total - 1;
            }
            if start > end {
                ctx.out.int(0);
                return Outcome::Done;
            }
            if isbit {
                (start, end)
            } else {
                (start * 8, end * 8 + 7)
            }
        }
        _ => {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    };
    if lo > hi {
        ctx.out.int(0);
    } else {
        let n = count_bits(s, lo as u64, hi as u64);
        ctx.out.int(n as i64);
    }
    Outcome::Done
}

/// First bit equal to `bit` in the inclusive bit range `[lo, hi]` of `s`.
fn find_bit(s: &[u8], bit: bool, lo: u64, hi: u64) -> Option<u64> {
    let mut pos = lo;
    // Leading partial byte, then whole bytes, then the trailing partial byte.
    while pos <= hi && pos & 7 != 0 {
        if ((s[(pos >> 3) as usize] >> (7 - (pos & 7))) & 1 == 1) == bit {
            return Some(pos);
        }
        pos += 1;
    }
    let skip = if bit { 0u8 } else { 0xFF };
    while pos + 7 <= hi {
        let b = s[(pos >> 3) as usize];
        if b != skip {
            let x = if bit { b } else { !b };
            return Some(pos + x.leading_zeros() as u64);
        }
        pos += 8;
    }
    while pos <= hi {
        if ((s[(pos >> 3) as usize] >> (7 - (pos & 7))) & 1 == 1) == bit {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

fn bitpos(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let bit = match parse_i64(&args[2]) {
        Some(b @ (0 | 1)) => b == 1,
        Some(_) => {
            ctx.out.error("ERR The bit argument must be 1 or 0.");
            return Outcome::Done;
        }
        None => {
            ctx.out.not_integer();
            return Outcome::Done;
        }
    };
    let s = match lookup_str(ctx.ks, &args[1]) {
        Lookup::Missing => {
            ctx.out.int(if bit { -1 } else { 0 });
            return Outcome::Done;
        }
        Lookup::WrongType => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        Lookup::Str(s) => s,
    };
    let len = s.len() as i64;
    let mut end_given = false;
    let (lo, hi) = match args.len() {
        3 => (0i64, len * 8 - 1),
        4..=6 => {
            let Some(mut start) = parse_i64(&args[3]) else {
                ctx.out.not_integer();
                return Outcome::Done;
            };
            let mut isbit = false;
            if args.len() == 6 {
                if args[5].eq_ignore_ascii_case(b"bit") {
                    isbit = true;
                } else if !args[5].eq_ignore_ascii_case(b"byte") {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            }
            let total = if isbit { len * 8 } else { len };
            let mut end = if args.len() >= 5 {
                let Some(e) = parse_i64(&args[4]) else {
                    ctx.out.not_integer();
                    return Outcome::Done;
                };
                end_given = true;
                e
            } else {
                total - 1
            };
            if start < 0 {
                start = start.saturating_add(total);
            }
            if end < 0 {
                end = end.saturating_add(total);
            }
            start = start.max(0);
            end = end.max(0);
            if end >= total {
                end = total - 1;
            }
            if start > end {
                ctx.out.int(-1);
                return Outcome::Done;
            }
            if isbit {
                (start, end)
            } else {
                (start * 8, end * 8 + 7)
            }
        }
        _ => {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    };
    if lo > hi {
        ctx.out.int(-1);
        return Outcome::Done;
    }
    let pos = match find_bit(s, bit, lo as u64, hi as u64) {
        Some(p) => p as i64,
        None if bit || end_given => -1,
        None => hi + 1,
    };
    ctx.out.int(pos);
    Outcome::Done
}

fn bitop(ctx: &mut Ctx) -> Outcome {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let args = ctx.args;
    let op = if ctx.arg_is(1, "and") {
        Op::And
    } else if ctx.arg_is(1, "or") {
        Op::Or
    } else if ctx.arg_is(1, "xor") {
        Op::Xor
    } else if ctx.arg_is(1, "not") {
        Op::Not
    } else {
        ctx.out.syntax_error();
        return Outcome::Done;
    };
    if op == Op::Not && args.len() != 4 {
        ctx.out
            .error("ERR BITOP NOT must be called with a single source key.");
        return Outcome::Done;
    }
    // Type-check every source first: an error must not leave a partial result.
    for k in &args[3..] {
        if let Lookup::WrongType = lookup_str(ctx.ks, k) {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
    }
    let mut res: Vec<u8> = Vec::new();
    for (n, k) in args[3..].iter().enumerate() {
        let src: &[u8] = match lookup_str(ctx.ks, k) {
            Lookup::Str(s) => s,
            _ => &[],
        };
        if n == 0 {
            res.extend_from_slice(src);
            if op == Op::Not {
                res.iter_mut().for_each(|b| *b = !*b);
            }
            continue;
        }
        if res.len() < src.len() {
            res.resize(src.len(), 0);
        }
        let (head, tail) = res.split_at_mut(src.len());
        match op {
            Op::And => {
                head.iter_mut().zip(src).for_each(|(r, s)| *r &= s);
                tail.iter_mut().for_each(|r| *r = 0);
            }
            Op::Or => head.iter_mut().zip(src).for_each(|(r, s)| *r |= s),
            Op::Xor => head.iter_mut().zip(src).for_each(|(r, s)| *r ^= s),
            Op::Not => {}
        }
    }
    let n = res.len();
    let dest = &args[2][..];
    if n > 0 {
        ctx.ks.set(dest, Value::Str(res), false);
        ctx.notify(ev::STRING, "set", dest);
    } else if ctx.ks.remove(dest).is_some() {
        ctx.notify(ev::GENERIC, "del", dest);
    }
    ctx.out.int(n as i64);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// BITFIELD.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum BfOp {
    Get,
    Set,
    Incr,
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

struct BfItem {
    op: BfOp,
    offset: u64,
    value: i64,
    overflow: Overflow,
    bits: u32,
    signed: bool,
}

fn get_unsigned_bits(p: &[u8], mut offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for _ in 0..bits {
        let byte = (offset >> 3) as usize;
        let bit = 7 - (offset & 7);
        let b = p.get(byte).map_or(0, |x| (x >> bit) & 1);
        v = (v << 1) | b as u64;
        offset += 1;
    }
    v
}

fn get_signed_bits(p: &[u8], offset: u64, bits: u32) -> i64 {
    let mut v = get_unsigned_bits(p, offset, bits);
    if bits < 64 && v & (1u64 << (bits - 1)) != 0 {
        v |= u64::MAX << bits;
    }
    v as i64
}

fn set_bits(p: &mut [u8], mut offset: u64, bits: u32, value: u64) {
    for j in 0..bits {
        let bitval = ((value >> (bits - 1 - j)) & 1) as u8;
        let byte = (offset >> 3) as usize;
        let bit = 7 - (offset & 7) as u8;
        if let Some(b) = p.get_mut(byte) {
            *b = (*b & !(1 << bit)) | (bitval << bit);
        }
        offset += 1;
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: Some(replacement) when `value + incr` overflows.
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> Option<u64> {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = value.wrapping_neg() as i64;
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX.checked_shl(bits).unwrap_or(0));
    if value > max || (incr > 0 && incr > maxincr) {
        Some(match ow {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if incr < 0 && incr < minincr {
        Some(match ow {
            Overflow::Wrap => wrap(),
            _ => 0,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`: Some(replacement) when `value + incr` overflows.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> Option<i64> {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        Some(match ow {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        Some(match ow {
            Overflow::Wrap => wrap(),
            _ => min,
        })
    } else {
        None
    }
}

/// Parses `i<bits>` / `u<bits>`.
fn bitfield_type(ctx: &mut Ctx, i: usize) -> Option<(bool, u32)> {
    let a = &ctx.args[i][..];
    let signed = match a.first() {
        Some(b'i') => Some(true),
        Some(b'u') => Some(false),
        _ => None,
    };
    let bits = signed.and_then(|sg| {
        parse_i64(&a[1..]).filter(|&b| b >= 1 && ((sg && b <= 64) || (!sg && b <= 63)))
    });
    match (signed, bits) {
        (Some(sg), Some(b)) => Some((sg, b as u32)),
        _ => {
            ctx.out.error("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.");
            None
        }
    }
}

fn bitfield_generic(ctx: &mut Ctx, ro: bool) -> Outcome {
    let args = ctx.args;
    let mut ops: Vec<BfItem> = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut readonly = true;
    let mut highest = 0u64;
    let mut j = 2;
    while j < args.len() {
        let rem = args.len() - j - 1;
        let op = if ctx.arg_is(j, "get") && rem >= 2 {
            BfOp::Get
        } else if ctx.arg_is(j, "set") && rem >= 3 {
            BfOp::Set
        } else if ctx.arg_is(j, "incrby") && rem >= 3 {
            BfOp::Incr
        } else if ctx.arg_is(j, "overflow") && rem >= 1 {
            overflow = if ctx.arg_is(j + 1, "wrap") {
                Overflow::Wrap
            } else if ctx.arg_is(j + 1, "sat") {
                Overflow::Sat
            } else if ctx.arg_is(j + 1, "fail") {
                Overflow::Fail
            } else {
                ctx.out.error("ERR Invalid OVERFLOW type specified");
                return Outcome::Done;
            };
            j += 2;
            continue;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        };
        let Some((signed, bits)) = bitfield_type(ctx, j + 1) else {
            return Outcome::Done;
        };
        let Some(offset) = bit_offset_arg(ctx, j + 2, true, bits as u64) else {
            return Outcome::Done;
        };
        let mut value = 0;
        if op != BfOp::Get {
            readonly = false;
            highest = highest.max(offset + bits as u64 - 1);
            let Some(v) = ctx.int_arg(j + 3) else {
                return Outcome::Done;
            };
            value = v;
        }
        ops.push(BfItem {
            op,
            offset,
            value,
            overflow,
            bits,
            signed,
        });
        j += if op == BfOp::Get { 3 } else { 4 };
    }
    if readonly {
        let s: &[u8] = match lookup_str(ctx.ks, &args[1]) {
            Lookup::WrongType => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
            Lookup::Missing => &[],
            Lookup::Str(s) => s,
        };
        ctx.out.array(ops.len());
        for op in &ops {
            if op.signed {
                ctx.out.int(get_signed_bits(s, op.offset, op.bits));
            } else {
                ctx.out.int(get_unsigned_bits(s, op.offset, op.bits) as i64);
            }
        }
        return Outcome::Done;
    }
    if ro {
        ctx.out
            .error("ERR BITFIELD_RO only supports the GET subcommand");
        return Outcome::Done;
    }
    let Some(s) = string_for_bit_write(ctx, &args[1], highest) else {
        return Outcome::Done;
    };
    // `s` borrows the context: collect the replies, write them once it is released.
    let mut replies: Vec<Option<i64>> = Vec::with_capacity(ops.len());
    for op in &ops {
        match op.op {
            BfOp::Get => {
                let v = if op.signed {
                    get_signed_bits(s, op.offset, op.bits)
                } else {
                    get_unsigned_bits(s, op.offset, op.bits) as i64
                };
                replies.push(Some(v));
            }
            BfOp::Set | BfOp::Incr if op.signed => {
                let old = get_signed_bits(s, op.offset, op.bits);
                let (ovf, newval, ret) = if op.op == BfOp::Incr {
                    match signed_overflow(old, op.value, op.bits, op.overflow) {
                        Some(w) => (true, w, w),
                        None => {
                            let n = old.wrapping_add(op.value);
                            (false, n, n)
                        }
                    }
                } else {
                    match signed_overflow(op.value, 0, op.bits, op.overflow) {
                        Some(w) => (true, w, old),
                        None => (false, op.value, old),
                    }
                };
                if ovf && op.overflow == Overflow::Fail {
                    replies.push(None);
                } else {
                    replies.push(Some(ret));
                    set_bits(s, op.offset, op.bits, newval as u64);
                }
            }
            BfOp::Set | BfOp::Incr => {
                let old = get_unsigned_bits(s, op.offset, op.bits);
                let (ovf, newval, ret) = if op.op == BfOp::Incr {
                    match unsigned_overflow(old, op.value, op.bits, op.overflow) {
                        Some(w) => (true, w, w),
                        None => {
                            let n = old.wrapping_add(op.value as u64);
                            (false, n, n)
                        }
                    }
                } else {
                    match unsigned_overflow(op.value as u64, 0, op.bits, op.overflow) {
                        Some(w) => (true, w, old),
                        None => (false, op.value as u64, old),
                    }
                };
                if ovf && op.overflow == Overflow::Fail {
                    replies.push(None);
                } else {
                    replies.push(Some(ret as i64));
                    set_bits(s, op.offset, op.bits, newval);
                }
            }
        }
    }
    let changes = ops
        .iter()
        .zip(&replies)
        .any(|(op, r)| op.op != BfOp::Get && r.is_some());
    if changes {
        ctx.notify(ev::STRING, "setbit", &args[1]);
    }
    ctx.out.array(replies.len());
    for r in replies {
        match r {
            Some(v) => ctx.out.int(v),
            None => ctx.out.null(),
        }
    }
    Outcome::Done
}

fn bitfield(ctx: &mut Ctx) -> Outcome {
    bitfield_generic(ctx, false)
}

fn bitfield_ro(ctx: &mut Ctx) -> Outcome {
    bitfield_generic(ctx, true)
}
