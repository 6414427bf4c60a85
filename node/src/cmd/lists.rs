//! The LIST family: LPUSH/RPUSH(X), LPOP/RPOP, LLEN, LRANGE, LINDEX, LSET, LREM, LTRIM,
//! LINSERT, LPOS, LMOVE, RPOPLPUSH, LMPOP and the blocking BLPOP, BRPOP, BLMOVE, BRPOPLPUSH,
//! BLMPOP (Redis 7.0 semantics and error texts).
//!
//! Lists are `Value::List(Box<VecDeque<Elem>>)`; a list that becomes empty is deleted.
//!
//! Blocking: when nothing is available a blocking command queues the client's waiter on every
//! key ([`crate::db::Locked::block_on`]) and returns [`Outcome::Block`]; the connection re-runs
//! the command on each wake-up. To keep FIFO order among blocked clients, a key that holds data
//! is only taken by the client first in line on it; the others block again. As in Redis 7.0, a
//! key that turned into another type while a client waited on it does not end the wait, and a
//! blocking command inside EXEC never blocks (it answers a null at once). Redis 7.0 times out
//! every blocking list command with a null array, BLMOVE/BRPOPLPUSH included (RESP2 `*-1`);
//! inside EXEC those two answer a null bulk (`$-1`).

use super::{Ctx, Handler, Outcome, TimeoutReply};
use crate::db::{Entry, Locked};
use crate::notify as ev;
use crate::reply::Reply;
use crate::value::{Elem, Value};
use bytes::Bytes;
use slotgate_protocol::resp::parse_i64;
use std::collections::VecDeque;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("lpush", lpush),
    ("rpush", rpush),
    ("lpushx", lpushx),
    ("rpushx", rpushx),
    ("lpop", lpop),
    ("rpop", rpop),
    ("llen", llen),
    ("lrange", lrange),
    ("lindex", lindex),
    ("lset", lset),
    ("lrem", lrem),
    ("ltrim", ltrim),
    ("linsert", linsert),
    ("lpos", lpos),
    ("lmove", lmove),
    ("rpoplpush", rpoplpush),
    ("lmpop", lmpop),
    ("blpop", blpop),
    ("brpop", brpop),
    ("blmove", blmove),
    ("brpoplpush", brpoplpush),
    ("blmpop", blmpop),
];

type List = VecDeque<Elem>;

/// The list stored in an entry, or `Err` when the entry holds another type.
fn as_list(e: &Entry) -> Result<&List, ()> {
    match &e.value {
        Value::List(l) => Ok(l),
        _ => Err(()),
    }
}

/// Looks `key` up for reading: `Ok(None)` when missing, `Err` (WRONGTYPE written) on a type
/// mismatch.
fn read_list<'k>(
    ks: &'k mut Locked<'_>,
    out: &mut Reply,
    key: &[u8],
) -> Result<Option<&'k List>, ()> {
    match ks.get(key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::List(l) => Ok(Some(l)),
            _ => {
                out.wrong_type();
                Err(())
            }
        },
    }
}

/// The list at `key` for modification (counts a write). The caller has checked it exists.
fn list_mut<'k>(ks: &'k mut Locked<'_>, key: &[u8]) -> Option<&'k mut List> {
    match ks.get_mut(key) {
        Some(Entry {
            value: Value::List(l),
            ..
        }) => Some(l),
        _ => None,
    }
}

/// Parses LEFT/RIGHT (true for LEFT).
fn parse_side(arg: &[u8]) -> Option<bool> {
    if arg.eq_ignore_ascii_case(b"left") {
        Some(true)
    } else if arg.eq_ignore_ascii_case(b"right") {
        Some(false)
    } else {
        None
    }
}

/// Parses an integer in `[min, max]`, replying `msg` (or the generic integer error when `msg`
/// is None and the text is not an integer) as Redis's `getRangeLongFromObjectOrReply` does.
fn range_arg(ctx: &mut Ctx, i: usize, min: i64, max: i64, msg: &str) -> Option<i64> {
    match parse_i64(&ctx.args[i]) {
        Some(n) if n >= min && n <= max => Some(n),
        _ => {
            ctx.out.error(msg);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Push

fn push(ctx: &mut Ctx, left: bool, only_existing: bool) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    match ctx.ks.get(key) {
        Some(e) if as_list(e).is_err() => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        None if only_existing => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        _ => {}
    }
    let e = ctx.ks.get_or_insert_with(key, Value::new_list);
    let Value::List(l) = &mut e.value else {
        ctx.out.wrong_type();
        return Outcome::Done;
    };
    if left {
        for a in &args[2..] {
            l.push_front(Elem::from(&a[..]));
        }
    } else {
        l.extend(args[2..].iter().map(|a| Elem::from(&a[..])));
    }
    ctx.out.int(l.len() as i64);
    ctx.notify(ev::LIST, push_event(left), key);
    Outcome::Done
}

fn lpush(ctx: &mut Ctx) -> Outcome {
    push(ctx, true, false)
}

fn rpush(ctx: &mut Ctx) -> Outcome {
    push(ctx, false, false)
}

fn lpushx(ctx: &mut Ctx) -> Outcome {
    push(ctx, true, true)
}

fn rpushx(ctx: &mut Ctx) -> Outcome {
    push(ctx, false, true)
}

// ---------------------------------------------------------------------------------------------
// Pop

/// Pops up to `count` elements from the existing list at `key` and writes them; with `count`
/// None a single bulk is written, otherwise an array. The key is deleted when emptied.
fn pop_and_reply(ctx: &mut Ctx, key: &[u8], left: bool, count: Option<usize>) {
    let Some(l) = list_mut(ctx.ks, key) else {
        ctx.out.null();
        return;
    };
    let empty = match count {
        None => {
            let v = if left { l.pop_front() } else { l.pop_back() };
            ctx.out.opt_bulk(v.as_deref());
            l.is_empty()
        }
        Some(n) => {
            let n = n.min(l.len());
            ctx.out.array(n);
            for _ in 0..n {
                let v = if left { l.pop_front() } else { l.pop_back() };
                if let Some(v) = v {
                    ctx.out.bulk(&v);
                }
            }
            l.is_empty()
        }
    };
    ctx.notify(ev::LIST, pop_event(left), key);
    if empty {
        ctx.ks.remove(key);
        ctx.notify(ev::GENERIC, "del", key);
    }
}

/// The keyspace event of a push on that side.
fn push_event(left: bool) -> &'static str {
    if left {
        "lpush"
    } else {
        "rpush"
    }
}

/// The keyspace event of a pop from that side.
fn pop_event(left: bool) -> &'static str {
    if left {
        "lpop"
    } else {
        "rpop"
    }
}

fn pop(ctx: &mut Ctx, left: bool) -> Outcome {
    let args = ctx.args;
    if args.len() > 3 {
        ctx.out.wrong_arity(if left { "lpop" } else { "rpop" });
        return Outcome::Done;
    }
    let count = if args.len() > 2 {
        match parse_i64(&args[2]) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                ctx.out.error("ERR value is out of range, must be positive");
                return Outcome::Done;
            }
        }
    } else {
        None
    };
    let key = &args[1][..];
    match ctx.ks.get(key) {
        None => {
            if count.is_some() {
                ctx.out.null_array();
            } else {
                ctx.out.null();
            }
            return Outcome::Done;
        }
        Some(e) if as_list(e).is_err() => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
        _ => {}
    }
    if count == Some(0) {
        ctx.out.array(0);
        return Outcome::Done;
    }
    pop_and_reply(ctx, key, left, count);
    Outcome::Done
}

fn lpop(ctx: &mut Ctx) -> Outcome {
    pop(ctx, true)
}

fn rpop(ctx: &mut Ctx) -> Outcome {
    pop(ctx, false)
}

// ---------------------------------------------------------------------------------------------
// Reads

fn llen(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    if let Ok(l) = read_list(ctx.ks, ctx.out, &args[1]) {
        let n = l.map_or(0, |l| l.len());
        ctx.out.int(n as i64);
    }
    Outcome::Done
}

/// Resolves a Redis index (negative counts from the end) into `0..len`.
fn resolve_index(idx: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if idx < 0 { idx + len } else { idx };
    (i >= 0 && i < len).then_some(i as usize)
}

/// Resolves LRANGE/LTRIM style `start`/`stop` into an inclusive range, None when empty.
fn resolve_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut stop = if stop < 0 { stop + len } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize))
}

fn lrange(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let Ok(l) = read_list(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    match l.and_then(|l| resolve_range(start, stop, l.len()).map(|r| (l, r))) {
        None => ctx.out.array(0),
        Some((l, (a, b))) => {
            ctx.out.array(b - a + 1);
            for e in l.range(a..=b) {
                ctx.out.bulk(e);
            }
        }
    }
    Outcome::Done
}

fn lindex(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Ok(l) = read_list(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    let Some(l) = l else {
        ctx.out.null();
        return Outcome::Done;
    };
    let Some(idx) = parse_i64(&args[2]) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let v = resolve_index(idx, l.len()).and_then(|i| l.get(i));
    ctx.out.opt_bulk(v.map(|v| &v[..]));
    Outcome::Done
}

fn lpos(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let mut rank: i64 = 1;
    let mut count: Option<i64> = None;
    let mut maxlen: i64 = 0;
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        if ctx.arg_is(j, "RANK") && more {
            j += 1;
            let Some(r) = ctx.int_arg(j) else {
                return Outcome::Done;
            };
            if r == 0 {
                ctx.out.error(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                );
                return Outcome::Done;
            }
            rank = r;
        } else if ctx.arg_is(j, "COUNT") && more {
            j += 1;
            let Some(c) = range_arg(ctx, j, 0, i64::MAX, "ERR COUNT can't be negative") else {
                return Outcome::Done;
            };
            count = Some(c);
        } else if ctx.arg_is(j, "MAXLEN") && more {
            j += 1;
            let Some(m) = range_arg(ctx, j, 0, i64::MAX, "ERR MAXLEN can't be negative") else {
                return Outcome::Done;
            };
            maxlen = m;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    // A negative rank searches from the tail (Redis negates it; i64::MIN stays negative and
    // then matches from the first hit, as in Redis).
    let from_tail = rank < 0;
    if from_tail {
        rank = rank.wrapping_neg();
    }
    let Ok(l) = read_list(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    let Some(l) = l else {
        if count.is_some() {
            ctx.out.array(0);
        } else {
            ctx.out.null();
        }
        return Outcome::Done;
    };
    let elem = &args[2][..];
    let len = l.len();
    let scan = if maxlen == 0 {
        len
    } else {
        len.min(maxlen as usize)
    };
    let mut found: Vec<i64> = Vec::new();
    let mut matches: i64 = 0;
    for i in 0..scan {
        let pos = if from_tail { len - 1 - i } else { i };
        if l[pos][..] != *elem {
            continue;
        }
        matches += 1;
        if matches >= rank {
            found.push(pos as i64);
            match count {
                None => break,
                // Wrapping as in Redis (rank may be i64::MIN, see above).
                Some(c) if c != 0 && matches.wrapping_sub(rank).wrapping_add(1) >= c => break,
                _ => {}
            }
        }
    }
    match count {
        None => match found.first() {
            Some(&p) => ctx.out.int(p),
            None => ctx.out.null(),
        },
        Some(_) => {
            ctx.out.array(found.len());
            for p in found {
                ctx.out.int(p);
            }
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// In-place modifications

fn lset(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let key = &args[1][..];
    let len = match ctx.ks.get(key) {
        None => {
            ctx.out.error("ERR no such key");
            return Outcome::Done;
        }
        Some(e) => match as_list(e) {
            Ok(l) => l.len(),
            Err(()) => {
                ctx.out.wrong_type();
                return Outcome::Done;
            }
        },
    };
    let Some(idx) = parse_i64(&args[2]) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let Some(i) = resolve_index(idx, len) else {
        ctx.out.error("ERR index out of range");
        return Outcome::Done;
    };
    if let Some(slot) = list_mut(ctx.ks, key).and_then(|l| l.get_mut(i)) {
        *slot = Elem::from(&args[3][..]);
    }
    ctx.notify(ev::LIST, "lset", key);
    ctx.out.ok();
    Outcome::Done
}

fn lrem(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let Some(count) = parse_i64(&args[2]) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let key = &args[1][..];
    let elem = &args[3][..];
    let total = match read_list(ctx.ks, ctx.out, key) {
        Err(()) => return Outcome::Done,
        Ok(None) => 0,
        Ok(Some(l)) => l.iter().filter(|e| ***e == *elem).count(),
    };
    if total == 0 {
        ctx.out.int(0);
        return Outcome::Done;
    }
    let limit = if count == 0 {
        total
    } else {
        (count.unsigned_abs().min(total as u64)) as usize
    };
    // From the head: remove the first `limit` matches; from the tail: skip the first
    // `total - limit` matches and remove the rest.
    let mut skip = if count < 0 { total - limit } else { 0 };
    let mut left = limit;
    let Some(l) = list_mut(ctx.ks, key) else {
        ctx.out.int(0);
        return Outcome::Done;
    };
    l.retain(|e| {
        if left == 0 || **e != *elem {
            return true;
        }
        if skip > 0 {
            skip -= 1;
            return true;
        }
        left -= 1;
        false
    });
    let empty = l.is_empty();
    ctx.notify(ev::LIST, "lrem", key);
    if empty {
        ctx.ks.remove(key);
        ctx.notify(ev::GENERIC, "del", key);
    }
    ctx.out.int(limit as i64);
    Outcome::Done
}

fn ltrim(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        ctx.out.not_integer();
        return Outcome::Done;
    };
    let key = &args[1][..];
    match read_list(ctx.ks, ctx.out, key) {
        Err(()) => return Outcome::Done,
        Ok(None) => {
            ctx.out.ok();
            return Outcome::Done;
        }
        Ok(Some(_)) => {}
    }
    let Some(l) = list_mut(ctx.ks, key) else {
        ctx.out.ok();
        return Outcome::Done;
    };
    match resolve_range(start, stop, l.len()) {
        None => l.clear(),
        Some((a, b)) => {
            l.truncate(b + 1);
            l.drain(..a);
        }
    }
    let empty = l.is_empty();
    ctx.notify(ev::LIST, "ltrim", key);
    if empty {
        ctx.ks.remove(key);
        ctx.notify(ev::GENERIC, "del", key);
    }
    ctx.out.ok();
    Outcome::Done
}

fn linsert(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let after = if ctx.arg_is(2, "AFTER") {
        true
    } else if ctx.arg_is(2, "BEFORE") {
        false
    } else {
        ctx.out.syntax_error();
        return Outcome::Done;
    };
    let key = &args[1][..];
    let pivot = &args[3][..];
    let pos = match read_list(ctx.ks, ctx.out, key) {
        Err(()) => return Outcome::Done,
        Ok(None) => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        Ok(Some(l)) => l.iter().position(|e| **e == *pivot),
    };
    let Some(pos) = pos else {
        ctx.out.int(-1);
        return Outcome::Done;
    };
    let Some(l) = list_mut(ctx.ks, key) else {
        ctx.out.int(0);
        return Outcome::Done;
    };
    l.insert(pos + after as usize, Elem::from(&args[4][..]));
    let n = l.len();
    ctx.notify(ev::LIST, "linsert", key);
    ctx.out.int(n as i64);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// LMOVE family

/// Moves one element from the existing list `src` to `dst` and replies it. Replies WRONGTYPE
/// (nothing moved) when `dst` holds another type.
fn move_and_reply(ctx: &mut Ctx, src: &[u8], dst: &[u8], from_left: bool, to_left: bool) {
    if src == dst {
        let Some(l) = list_mut(ctx.ks, src) else {
            ctx.out.null();
            return;
        };
        let v = if from_left {
            l.pop_front()
        } else {
            l.pop_back()
        };
        match v {
            Some(v) => {
                ctx.out.bulk(&v);
                if to_left {
                    l.push_front(v);
                } else {
                    l.push_back(v);
                }
                ctx.notify(ev::LIST, push_event(to_left), dst);
                ctx.notify(ev::LIST, pop_event(from_left), src);
            }
            None => ctx.out.null(),
        }
        return;
    }
    if let Some(e) = ctx.ks.get(dst) {
        if as_list(e).is_err() {
            ctx.out.wrong_type();
            return;
        }
    }
    let Some(l) = list_mut(ctx.ks, src) else {
        ctx.out.null();
        return;
    };
    let v = if from_left {
        l.pop_front()
    } else {
        l.pop_back()
    };
    let empty = l.is_empty();
    let Some(v) = v else {
        ctx.out.null();
        return;
    };
    if empty {
        ctx.ks.remove(src);
    }
    ctx.out.bulk(&v);
    if let Value::List(d) = &mut ctx.ks.get_or_insert_with(dst, Value::new_list).value {
        if to_left {
            d.push_front(v);
        } else {
            d.push_back(v);
        }
    }
    // Redis's order: the push, the pop, then the emptied source's deletion.
    ctx.notify(ev::LIST, push_event(to_left), dst);
    ctx.notify(ev::LIST, pop_event(from_left), src);
    if empty {
        ctx.notify(ev::GENERIC, "del", src);
    }
}

/// LMOVE/RPOPLPUSH once the sides are parsed.
fn lmove_generic(ctx: &mut Ctx, from_left: bool, to_left: bool) -> Outcome {
    let args = ctx.args;
    match read_list(ctx.ks, ctx.out, &args[1]) {
        Err(()) => {}
        Ok(None) => ctx.out.null(),
        Ok(Some(_)) => move_and_reply(ctx, &args[1], &args[2], from_left, to_left),
    }
    Outcome::Done
}

fn lmove(ctx: &mut Ctx) -> Outcome {
    let (Some(from), Some(to)) = (parse_side(&ctx.args[3]), parse_side(&ctx.args[4])) else {
        ctx.out.syntax_error();
        return Outcome::Done;
    };
    lmove_generic(ctx, from, to)
}

fn rpoplpush(ctx: &mut Ctx) -> Outcome {
    lmove_generic(ctx, false, true)
}

/// Parses `numkeys key... LEFT|RIGHT [COUNT n]` starting at `numkeys_idx`; on error the
/// reply is written. Returns (index of the first key, number of keys, left, count).
fn parse_mpop(ctx: &mut Ctx, numkeys_idx: usize) -> Option<(usize, usize, bool, usize)> {
    let args = ctx.args;
    let numkeys = range_arg(
        ctx,
        numkeys_idx,
        1,
        i64::MAX,
        "ERR numkeys should be greater than 0",
    )?;
    let where_idx = (numkeys as u64).saturating_add(numkeys_idx as u64 + 1);
    if where_idx >= args.len() as u64 {
        ctx.out.syntax_error();
        return None;
    }
    let where_idx = where_idx as usize;
    let Some(left) = parse_side(&args[where_idx]) else {
        ctx.out.syntax_error();
        return None;
    };
    let mut count: Option<i64> = None;
    let mut j = where_idx + 1;
    while j < args.len() {
        if count.is_none() && ctx.arg_is(j, "COUNT") && j + 1 < args.len() {
            j += 1;
            count = Some(range_arg(
                ctx,
                j,
                1,
                i64::MAX,
                "ERR count should be greater than 0",
            )?);
        } else {
            ctx.out.syntax_error();
            return None;
        }
        j += 1;
    }
    let count = usize::try_from(count.unwrap_or(1)).unwrap_or(usize::MAX);
    Some((numkeys_idx + 1, numkeys as usize, left, count))
}

/// Writes the LMPOP/BLMPOP reply `[key, [elements...]]` popping from the list at `key`.
fn mpop_reply(ctx: &mut Ctx, key: &[u8], left: bool, count: usize) {
    ctx.out.array(2);
    ctx.out.bulk(key);
    pop_and_reply(ctx, key, left, Some(count));
}

fn lmpop(ctx: &mut Ctx) -> Outcome {
    let Some((first, n, left, count)) = parse_mpop(ctx, 1) else {
        return Outcome::Done;
    };
    let keys = &ctx.args[first..first + n];
    for k in keys {
        match read_list(ctx.ks, ctx.out, k) {
            Err(()) => return Outcome::Done,
            Ok(Some(l)) if !l.is_empty() => {
                mpop_reply(ctx, k, left, count);
                return Outcome::Done;
            }
            _ => {}
        }
    }
    ctx.out.null_array();
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Blocking commands

/// Timeouts above this (about 300 years) are treated as "forever".
const MAX_TIMEOUT_MS: f64 = 1e13;

/// Parses a blocking timeout in seconds (Redis: `ceil(seconds * 1000)` milliseconds).
/// Returns milliseconds, 0 meaning forever; on error the reply is written.
fn timeout_arg(ctx: &mut Ctx, i: usize) -> Option<u64> {
    let Some(secs) = parse_timeout_secs(&ctx.args[i]) else {
        ctx.out.error("ERR timeout is not a float or out of range");
        return None;
    };
    let ms = (secs * 1000.0).ceil();
    // Redis converts to a signed 64-bit integer; values that do not fit become negative.
    // `i64::MAX as f64` is 2^63, the first value that does not fit.
    if !(0.0..i64::MAX as f64).contains(&ms) {
        ctx.out.error("ERR timeout is negative");
        return None;
    }
    Some(if ms > MAX_TIMEOUT_MS { 0 } else { ms as u64 })
}

/// Parses a float as `strtold` accepts it (decimal, inf, or C99 hex floats); NaN is refused.
fn parse_timeout_secs(s: &[u8]) -> Option<f64> {
    crate::reply::parse_f64(s).or_else(|| parse_hex_float(s))
}

/// Parses a C99 hexadecimal float such as `0x1.8p3`.
fn parse_hex_float(s: &[u8]) -> Option<f64> {
    let (neg, rest) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let rest = rest
        .strip_prefix(b"0x")
        .or_else(|| rest.strip_prefix(b"0X"))?;
    let mut mant = 0f64;
    let mut exp: i64 = 0;
    let mut digits = 0;
    let mut seen_dot = false;
    let mut i = 0;
    while i < rest.len() {
        let c = rest[i];
        if c == b'.' && !seen_dot {
            seen_dot = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            mant = mant * 16.0 + d as f64;
            if seen_dot {
                exp -= 4;
            }
            digits += 1;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if i < rest.len() {
        if !matches!(rest[i], b'p' | b'P') {
            return None;
        }
        let e = std::str::from_utf8(&rest[i + 1..]).ok()?;
        if e.is_empty() || e.starts_with(|c: char| !(c.is_ascii_digit() || c == '+' || c == '-')) {
            return None;
        }
        exp = exp.saturating_add(e.parse::<i64>().ok()?.clamp(-100_000, 100_000));
    }
    let v = mant * 2f64.powi(exp.clamp(-100_000, 100_000) as i32);
    Some(if neg { -v } else { v })
}

/// True when this run is a retry after a wake-up (the connection marks blocked clients "b").
fn is_rerun(ctx: &Ctx) -> bool {
    ctx.client.handle.flags.lock().as_str() == "b"
}

/// Checks whether `key` can serve this client now: `Ok(true)` when it holds a non-empty list
/// and this client is first in line on it (outside EXEC). A key of another type is an error on
/// the first run (WRONGTYPE written) and simply "not ready" on a retry, as in Redis.
fn ready(ctx: &mut Ctx, key: &[u8]) -> Result<bool, ()> {
    let nonempty = match ctx.ks.get(key) {
        None => return Ok(false),
        Some(e) => match as_list(e) {
            Ok(l) => !l.is_empty(),
            Err(()) => {
                if is_rerun(ctx) {
                    return Ok(false);
                }
                ctx.out.wrong_type();
                return Err(());
            }
        },
    };
    if !nonempty {
        return Ok(false);
    }
    Ok(ctx.in_exec || ctx.ks.first_in_line(key, &ctx.client.waiter))
}

/// Queues the client on `keys`, or (inside EXEC) answers `in_exec` at once.
///
/// Redis 7.0 answers a timed-out blocking list command with a null array, BLMOVE and
/// BRPOPLPUSH included (RESP2 `*-1`); only inside EXEC do those two answer a null bulk.
fn block(ctx: &mut Ctx, keys: &[Bytes], timeout_ms: u64, in_exec: TimeoutReply) -> Outcome {
    if ctx.in_exec {
        match in_exec {
            TimeoutReply::NullArray => ctx.out.null_array(),
            TimeoutReply::NullBulk => ctx.out.null(),
        }
        return Outcome::Done;
    }
    for k in keys {
        ctx.ks.block_on(k, &ctx.client.waiter);
    }
    Outcome::Block {
        keys: keys.to_vec(),
        timeout_ms,
        on_timeout: TimeoutReply::NullArray,
    }
}

/// BLPOP/BRPOP.
fn bpop(ctx: &mut Ctx, left: bool) -> Outcome {
    let args = ctx.args;
    let last = args.len() - 1;
    let Some(timeout_ms) = timeout_arg(ctx, last) else {
        return Outcome::Done;
    };
    let keys = &args[1..last];
    for k in keys {
        match ready(ctx, k) {
            Err(()) => return Outcome::Done,
            Ok(false) => {}
            Ok(true) => {
                let Some(l) = list_mut(ctx.ks, k) else {
                    continue;
                };
                let v = if left { l.pop_front() } else { l.pop_back() };
                let empty = l.is_empty();
                let Some(v) = v else { continue };
                ctx.notify(ev::LIST, pop_event(left), k);
                if empty {
                    ctx.ks.remove(k);
                    ctx.notify(ev::GENERIC, "del", k);
                }
                ctx.out.array(2);
                ctx.out.bulk(k);
                ctx.out.bulk(&v);
                return Outcome::Done;
            }
        }
    }
    block(ctx, keys, timeout_ms, TimeoutReply::NullArray)
}

fn blpop(ctx: &mut Ctx) -> Outcome {
    bpop(ctx, true)
}

fn brpop(ctx: &mut Ctx) -> Outcome {
    bpop(ctx, false)
}

/// BLMOVE/BRPOPLPUSH once sides and timeout are parsed.
fn blmove_generic(ctx: &mut Ctx, from_left: bool, to_left: bool, timeout_ms: u64) -> Outcome {
    let args = ctx.args;
    match ready(ctx, &args[1]) {
        Err(()) => Outcome::Done,
        Ok(true) => {
            move_and_reply(ctx, &args[1], &args[2], from_left, to_left);
            Outcome::Done
        }
        Ok(false) => block(ctx, &args[1..2], timeout_ms, TimeoutReply::NullBulk),
    }
}

fn blmove(ctx: &mut Ctx) -> Outcome {
    let (Some(from), Some(to)) = (parse_side(&ctx.args[3]), parse_side(&ctx.args[4])) else {
        ctx.out.syntax_error();
        return Outcome::Done;
    };
    let Some(timeout_ms) = timeout_arg(ctx, 5) else {
        return Outcome::Done;
    };
    blmove_generic(ctx, from, to, timeout_ms)
}

fn brpoplpush(ctx: &mut Ctx) -> Outcome {
    let Some(timeout_ms) = timeout_arg(ctx, 3) else {
        return Outcome::Done;
    };
    blmove_generic(ctx, false, true, timeout_ms)
}

fn blmpop(ctx: &mut Ctx) -> Outcome {
    let Some((first, n, left, count)) = parse_mpop(ctx, 2) else {
        return Outcome::Done;
    };
    let Some(timeout_ms) = timeout_arg(ctx, 1) else {
        return Outcome::Done;
    };
    let keys = &ctx.args[first..first + n];
    for k in keys {
        match ready(ctx, k) {
            Err(()) => return Outcome::Done,
            Ok(false) => {}
            Ok(true) => {
                mpop_reply(ctx, k, left, count);
                return Outcome::Done;
            }
        }
    }
    block(ctx, keys, timeout_ms, TimeoutReply::NullArray)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve_range(0, -1, 3), Some((0, 2)));
        assert_eq!(resolve_range(-100, 100, 3), Some((0, 2)));
        assert_eq!(resolve_range(2, 1, 3), None);
        assert_eq!(resolve_range(3, 5, 3), None);
        assert_eq!(resolve_range(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(resolve_range(0, i64::MIN, 3), None);
        assert_eq!(resolve_range(0, 0, 0), None);
        assert_eq!(resolve_index(-1, 3), Some(2));
        assert_eq!(resolve_index(3, 3), None);
        assert_eq!(resolve_index(-4, 3), None);
        assert_eq!(resolve_index(i64::MIN, 3), None);
    }

    #[test]
    fn hex_floats() {
        assert_eq!(parse_timeout_secs(b"0x10"), Some(16.0));
        assert_eq!(parse_timeout_secs(b"0x0.1p-3"), Some(0.0078125));
        assert_eq!(parse_timeout_secs(b"-0x1P2"), Some(-4.0));
        assert_eq!(parse_timeout_secs(b"0x"), None);
        assert_eq!(parse_timeout_secs(b"0x1p"), None);
        assert_eq!(parse_timeout_secs(b"0x1g"), None);
        assert_eq!(parse_timeout_secs(b"1.5"), Some(1.5));
        assert_eq!(parse_timeout_secs(b"nan"), None);
    }
}
