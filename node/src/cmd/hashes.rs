//! Hash commands (Redis 7.0): HSET, HSETNX, HMSET, HGET, HMGET, HDEL, HEXISTS, HLEN, HSTRLEN,
//! HGETALL, HKEYS, HVALS, HINCRBY, HINCRBYFLOAT, HSCAN, HRANDFIELD.
//!
//! Also home of two helpers the set family shares:
//! * the HSCAN/SSCAN cursor machinery ([`parse_scan_cursor`], [`parse_scan_opts`],
//!   [`scan_positions`]), see [`scan_positions`] for how cursors work;
//! * [`ld`], a software model of the x87 80-bit `long double` Redis uses for HINCRBYFLOAT, so
//!   results print digit-for-digit as Redis prints them (`%.17Lf`, trailing zeros trimmed).

use super::{Ctx, Handler, Outcome};
use crate::db::{Entry, Locked};
use crate::glob::glob_match;
use crate::notify as ev;
use crate::reply::Reply;
use crate::value::{Elem, Map, Value};
use bytes::Bytes;
use rand::Rng;
use slotgate_protocol::resp::parse_i64;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("hset", hset),
    ("hmset", hmset),
    ("hsetnx", hsetnx),
    ("hget", hget),
    ("hmget", hmget),
    ("hdel", hdel),
    ("hexists", hexists),
    ("hlen", hlen),
    ("hstrlen", hstrlen),
    ("hgetall", hgetall),
    ("hkeys", hkeys),
    ("hvals", hvals),
    ("hincrby", hincrby),
    ("hincrbyfloat", hincrbyfloat),
    ("hscan", hscan),
    ("hrandfield", hrandfield),
];

/// The hash stored at `key`: `Ok(None)` when missing, `Err(())` after replying WRONGTYPE.
#[allow(clippy::result_unit_err)]
fn read_hash<'e>(
    ks: &'e mut Locked<'_>,
    out: &mut Reply,
    key: &[u8],
) -> Result<Option<&'e Map<Elem, Elem>>, ()> {
    match ks.get(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Hash(h),
            ..
        }) => Ok(Some(h)),
        Some(_) => {
            out.wrong_type();
            Err(())
        }
    }
}

/// The hash at `key` for writing, created when missing. Call only after [`read_hash`]
/// confirmed the key is absent or a hash.
fn write_hash<'e>(ks: &'e mut Locked<'_>, key: &[u8]) -> Option<&'e mut Map<Elem, Elem>> {
    match &mut ks.get_or_insert_with(key, Value::new_hash).value {
        Value::Hash(h) => Some(h),
        _ => None,
    }
}

/// Sets `field` to `value`; true when the field is new. Reuses the old allocation when the
/// new value has the same length.
fn put(h: &mut Map<Elem, Elem>, field: &[u8], value: &[u8]) -> bool {
    match h.get_mut(field) {
        Some(old) => {
            if old.len() == value.len() {
                old.copy_from_slice(value);
            } else {
                *old = value.into();
            }
            false
        }
        None => {
            h.insert(field.into(), value.into());
            true
        }
    }
}

/// HSET / HMSET: stores every field-value pair; returns the number of new fields, or None
/// after replying an error.
fn set_pairs(ctx: &mut Ctx, name: &str) -> Option<i64> {
    let args = ctx.args;
    if args.len() & 1 == 1 {
        ctx.out.wrong_arity(name);
        return None;
    }
    let key = &args[1][..];
    let exists = read_hash(ctx.ks, ctx.out, key).ok()?.is_some();
    let pairs = &args[2..];
    let mut added = 0;
    if exists {
        if let Some(Entry {
            value: Value::Hash(h),
            ..
        }) = ctx.ks.get_mut(key)
        {
            for p in pairs.chunks_exact(2) {
                added += put(h, &p[0], &p[1]) as i64;
            }
        }
    } else {
        let mut h = Map::with_capacity_and_hasher(pairs.len() / 2, Default::default());
        for p in pairs.chunks_exact(2) {
            added += put(&mut h, &p[0], &p[1]) as i64;
        }
        ctx.ks.set(key, Value::Hash(Box::new(h)), false);
    }
    ctx.notify(ev::HASH, "hset", key);
    Some(added)
}

fn hset(ctx: &mut Ctx) -> Outcome {
    if let Some(n) = set_pairs(ctx, "hset") {
        ctx.out.int(n);
    }
    Outcome::Done
}

fn hmset(ctx: &mut Ctx) -> Outcome {
    if set_pairs(ctx, "hmset").is_some() {
        ctx.out.ok();
    }
    Outcome::Done
}

fn hsetnx(ctx: &mut Ctx) -> Outcome {
    let (key, field) = (&ctx.args[1][..], &ctx.args[2][..]);
    let Ok(h) = read_hash(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    if h.is_some_and(|h| h.contains_key(field)) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    if let Some(h) = write_hash(ctx.ks, key) {
        h.insert(field.into(), ctx.args[3][..].into());
    }
    ctx.notify(ev::HASH, "hset", key);
    ctx.out.int(1);
    Outcome::Done
}

fn hget(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let v = h.and_then(|h| h.get(&ctx.args[2][..]));
        ctx.out.opt_bulk(v.map(|v| &v[..]));
    }
    Outcome::Done
}

fn hmget(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let fields = &ctx.args[2..];
        ctx.out.array(fields.len());
        for f in fields {
            let v = h.and_then(|h| h.get(&f[..]));
            ctx.out.opt_bulk(v.map(|v| &v[..]));
        }
    }
    Outcome::Done
}

fn hdel(ctx: &mut Ctx) -> Outcome {
    let key = &ctx.args[1][..];
    let fields = &ctx.args[2..];
    let Ok(h) = read_hash(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    // A no-op HDEL is not a write (no dirty count, WATCH untouched), as in Redis.
    if !h.is_some_and(|h| fields.iter().any(|f| h.contains_key(&f[..]))) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    let mut n = 0;
    let ordered = ctx
        .server
        .compact
        .hash_entries
        .load(std::sync::atomic::Ordering::Relaxed);
    if let Some(Entry {
        value: Value::Hash(h),
        ..
    }) = ctx.ks.get_mut(key)
    {
        for f in fields {
            n += crate::value::remove_field(h, &f[..], ordered).is_some() as i64;
        }
    }
    ctx.notify(ev::HASH, "hdel", key);
    ctx.ks.remove_if_empty(key);
    ctx.out.int(n);
    Outcome::Done
}

fn hexists(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let found = h.is_some_and(|h| h.contains_key(&ctx.args[2][..]));
        ctx.out.int(found as i64);
    }
    Outcome::Done
}

fn hlen(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        ctx.out.int(h.map_or(0, |h| h.len()) as i64);
    }
    Outcome::Done
}

fn hstrlen(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let v = h.and_then(|h| h.get(&ctx.args[2][..]));
        ctx.out.int(v.map_or(0, |v| v.len()) as i64);
    }
    Outcome::Done
}

fn hgetall(ctx: &mut Ctx) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let Some(h) = h else {
            ctx.out.map(0);
            return Outcome::Done;
        };
        ctx.out.map(h.len());
        for (f, v) in h.iter() {
            ctx.out.bulk(f);
            ctx.out.bulk(v);
        }
    }
    Outcome::Done
}

fn hkeys_or_vals(ctx: &mut Ctx, keys: bool) -> Outcome {
    if let Ok(h) = read_hash(ctx.ks, ctx.out, &ctx.args[1]) {
        let Some(h) = h else {
            ctx.out.array(0);
            return Outcome::Done;
        };
        ctx.out.array(h.len());
        for (f, v) in h.iter() {
            ctx.out.bulk(if keys { f } else { v });
        }
    }
    Outcome::Done
}

fn hkeys(ctx: &mut Ctx) -> Outcome {
    hkeys_or_vals(ctx, true)
}

fn hvals(ctx: &mut Ctx) -> Outcome {
    hkeys_or_vals(ctx, false)
}

fn hincrby(ctx: &mut Ctx) -> Outcome {
    let Some(incr) = ctx.int_arg(3) else {
        return Outcome::Done;
    };
    let (key, field) = (&ctx.args[1][..], &ctx.args[2][..]);
    let Ok(h) = read_hash(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    let cur = match h.and_then(|h| h.get(field)) {
        None => 0,
        Some(v) => match parse_i64(v) {
            Some(n) => n,
            None => {
                ctx.out.error("ERR hash value is not an integer");
                return Outcome::Done;
            }
        },
    };
    let Some(new) = cur.checked_add(incr) else {
        ctx.out.error("ERR increment or decrement would overflow");
        return Outcome::Done;
    };
    let text = new.to_string();
    if let Some(h) = write_hash(ctx.ks, key) {
        put(h, field, text.as_bytes());
    }
    ctx.notify(ev::HASH, "hincrby", key);
    ctx.out.int(new);
    Outcome::Done
}

fn hincrbyfloat(ctx: &mut Ctx) -> Outcome {
    use crate::longdouble::LongDouble;
    let incr = match LongDouble::parse(&ctx.args[3]) {
        None => {
            ctx.out.not_float();
            return Outcome::Done;
        }
        Some(v) if v.is_infinite() => {
            ctx.out.error("ERR value is NaN or Infinity");
            return Outcome::Done;
        }
        Some(v) => v,
    };
    let (key, field) = (&ctx.args[1][..], &ctx.args[2][..]);
    let Ok(h) = read_hash(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    let cur = match h.and_then(|h| h.get(field)) {
        None => LongDouble::ZERO,
        Some(v) => match LongDouble::parse(v) {
            Some(x) => x,
            None => {
                ctx.out.error("ERR hash value is not a float");
                return Outcome::Done;
            }
        },
    };
    let Some(text) = (cur + incr).format() else {
        ctx.out.error("ERR increment would produce NaN or Infinity");
        return Outcome::Done;
    };
    if let Some(h) = write_hash(ctx.ks, key) {
        put(h, field, text.as_bytes());
    }
    ctx.notify(ev::HASH, "hincrbyfloat", key);
    ctx.out.bulk(text.as_bytes());
    Outcome::Done
}

fn hscan(ctx: &mut Ctx) -> Outcome {
    let Some(cursor) = parse_scan_cursor(&ctx.args[2]) else {
        ctx.out.error("ERR invalid cursor");
        return Outcome::Done;
    };
    let args = ctx.args;
    let Ok(entry) = read_hash(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    // A missing key replies an empty scan before the options are even parsed (as Redis).
    let Some(h) = entry else {
        write_empty_scan(ctx.out);
        return Outcome::Done;
    };
    let Some((pattern, count)) = parse_scan_opts(&args[3..], ctx.out) else {
        return Outcome::Done;
    };
    let compact = ctx.server.compact.hash_compact(h);
    let (next, batch) = if compact {
        // Redis returns a listpack-encoded hash whole, whatever the cursor.
        (0, h.iter().map(|(k, v)| (&k[..], v)).collect::<Vec<_>>())
    } else {
        let (next, range) = scan_positions(h.len(), cursor, count);
        let batch = range.filter_map(|i| h.get_index(i));
        (next, batch.map(|(k, v)| (&k[..], v)).collect::<Vec<_>>())
    };
    let keep = |f: &[u8]| pattern.is_none_or(|p| glob_match(p, f, false));
    let n = batch.iter().filter(|(f, _)| keep(f)).count();
    write_scan_cursor(ctx.out, next);
    ctx.out.array(n * 2);
    for (f, v) in batch {
        if keep(f) {
            ctx.out.bulk(f);
            ctx.out.bulk(v);
        }
    }
    Outcome::Done
}

/// Largest |count| HRANDFIELD / SRANDMEMBER serve with repetitions (a larger negative count
/// would only exhaust memory; Redis would try and die).
pub(crate) const MAX_RANDOM_REPEATS: u64 = 1 << 27;

/// Parses the count argument of HRANDFIELD / SRANDMEMBER (range ±i64::MAX), replying the
/// Redis error when it is invalid.
pub(crate) fn parse_rand_count(arg: &[u8], out: &mut Reply) -> Option<i64> {
    match parse_i64(arg) {
        None => {
            out.not_integer();
            None
        }
        Some(i64::MIN) => {
            out.error(
                "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
            );
            None
        }
        Some(n) => Some(n),
    }
}

fn hrandfield(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    if args.len() == 2 {
        if let Ok(h) = read_hash(ctx.ks, ctx.out, &args[1]) {
            let f = h.and_then(|h| {
                h.get_index(rand::thread_rng().gen_range(0..h.len().max(1)))
                    .map(|(f, _)| f)
            });
            ctx.out.opt_bulk(f.map(|f| &f[..]));
        }
        return Outcome::Done;
    }
    let Some(count) = parse_rand_count(&args[2], ctx.out) else {
        return Outcome::Done;
    };
    if args.len() > 4 || (args.len() == 4 && !ctx.arg_is(3, "WITHVALUES")) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let withvalues = args.len() == 4;
    if withvalues && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        ctx.out.error("ERR value is out of range");
        return Outcome::Done;
    }
    let Ok(h) = read_hash(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    let h = match h {
        Some(h) if count != 0 => h,
        _ => {
            ctx.out.array(0);
            return Outcome::Done;
        }
    };
    let resp3 = ctx.out.resp3;
    let out = &mut *ctx.out;
    let emit = |out: &mut Reply, f: &[u8], v: &[u8]| {
        if withvalues && resp3 {
            out.array(2);
        }
        out.bulk(f);
        if withvalues {
            out.bulk(v);
        }
    };
    let header = |out: &mut Reply, n: usize| {
        out.array(if withvalues && !resp3 { n * 2 } else { n });
    };
    let mut rng = rand::thread_rng();
    if count < 0 {
        let n = count.unsigned_abs();
        if n > MAX_RANDOM_REPEATS {
            out.error("ERR value is out of range");
            return Outcome::Done;
        }
        header(out, n as usize);
        for _ in 0..n {
            if let Some((f, v)) = h.get_index(rng.gen_range(0..h.len())) {
                emit(out, f, v);
            }
        }
    } else if count as u64 >= h.len() as u64 {
        header(out, h.len());
        for (f, v) in h.iter() {
            emit(out, f, v);
        }
    } else {
        let n = count as usize;
        let mut picks = rand::seq::index::sample(&mut rng, h.len(), n).into_vec();
        picks.sort_unstable();
        header(out, n);
        for &i in &picks {
            if let Some((f, v)) = h.get_index(i) {
                emit(out, f, v);
            }
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// HSCAN / SSCAN cursors.

/// Parses a SCAN cursor as Redis 7.0 does (`strtoul`: optional sign, a negative value wraps,
/// overflow and trailing garbage rejected). None means `ERR invalid cursor`.
pub(crate) fn parse_scan_cursor(s: &[u8]) -> Option<u64> {
    if s.first()
        .is_some_and(|c| c.is_ascii_whitespace() || *c == 0x0b)
    {
        return None;
    }
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        // strtoul("") consumes nothing and leaves eptr at the terminator: cursor 0.
        return if s.is_empty() { Some(0) } else { None };
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Parses `[MATCH pattern] [COUNT n]` (the arguments after the cursor): the pattern (None
/// for none or `*`) and the count (default 10). Replies the Redis error and returns None on
/// bad input.
pub(crate) fn parse_scan_opts<'a>(
    opts: &'a [Bytes],
    out: &mut Reply,
) -> Option<(Option<&'a [u8]>, usize)> {
    let mut pattern = None;
    let mut count = 10usize;
    let mut i = 0;
    while i < opts.len() {
        let more = opts.len() - i - 1;
        if opts[i].eq_ignore_ascii_case(b"COUNT") && more >= 1 {
            match parse_i64(&opts[i + 1]) {
                None => {
                    out.not_integer();
                    return None;
                }
                Some(n) if n < 1 => {
                    out.syntax_error();
                    return None;
                }
                Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
            }
            i += 2;
        } else if opts[i].eq_ignore_ascii_case(b"MATCH") && more >= 1 {
            let p = &opts[i + 1][..];
            pattern = if p == b"*" { None } else { Some(p) };
            i += 2;
        } else {
            out.syntax_error();
            return None;
        }
    }
    Some((pattern, count))
}

/// The reply for a scan of a missing key: cursor 0, no elements.
pub(crate) fn write_empty_scan(out: &mut Reply) {
    out.array(2);
    out.bulk(b"0");
    out.array(0);
}

/// Writes the `[cursor, ...]` header: a 2-array and the cursor as a bulk string. The caller
/// writes the element array next.
pub(crate) fn write_scan_cursor(out: &mut Reply, cursor: u64) {
    out.array(2);
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut c = cursor;
    loop {
        i -= 1;
        buf[i] = b'0' + (c % 10) as u8;
        c /= 10;
        if c == 0 {
            break;
        }
    }
    out.bulk(&buf[i..]);
}

/// One step of an HSCAN / SSCAN over a large collection: the positions to visit and the
/// next cursor.
///
/// Hashes and sets keep their elements at positions (`indexmap`): a new element is appended
/// at the end, and a removal either moves the last element into the hole or (small hashes)
/// shifts the elements above the hole down by one. The scan walks the positions from the end
/// down, `count` per call, and the cursor is the lowest position visited (0 = start and end).
/// Nothing that has not been visited ever moves up into the visited range: only the last
/// element moves (down), shifts move elements down, and elements added meanwhile land at the
/// end. So, as Redis guarantees, every element present for the whole iteration is returned;
/// one moved down by a removal may be returned twice, and elements added meanwhile are not.
/// Each call costs O(count).
pub(crate) fn scan_positions(
    len: usize,
    cursor: u64,
    count: usize,
) -> (u64, std::ops::Range<usize>) {
    let top = if cursor == 0 {
        len
    } else {
        usize::try_from(cursor).map_or(len, |c| c.min(len))
    };
    let low = top.saturating_sub(count.max(1));
    (low as u64, low..top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(parse_scan_cursor(b"0"), Some(0));
        assert_eq!(parse_scan_cursor(b"+5"), Some(5));
        assert_eq!(parse_scan_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_scan_cursor(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_scan_cursor(b"18446744073709551616"), None);
        assert_eq!(parse_scan_cursor(b"abc"), None);
        assert_eq!(parse_scan_cursor(b" 1"), None);
        assert_eq!(parse_scan_cursor(b"+"), None);
    }

    #[test]
    fn position_scans_return_every_element_present_throughout() {
        // A set scanned 7 at a time while other members are added and removed (removals swap
        // the last member into the hole, as SREM and large-hash HDEL do).
        // Members m* stay for the whole scan; x* (interleaved with them) are removed meanwhile.
        let mut set: indexmap::IndexSet<String> = (0..1000)
            .flat_map(|i| [format!("m{i}"), format!("x{i}")])
            .collect();
        let mut seen = std::collections::HashSet::new();
        let (mut cursor, mut calls) = (0u64, 0u64);
        loop {
            calls += 1;
            assert!(calls < 10_000, "scan does not end");
            let (next, range) = scan_positions(set.len(), cursor, 7);
            for i in range {
                if let Some(m) = set.get_index(i) {
                    seen.insert(m.clone());
                }
            }
            set.insert(format!("new{calls}"));
            // Remove x members all over the positions, visited or not.
            for k in 0..3 {
                set.swap_remove(&format!("x{}", (calls * 3 + k) * 7919 % 1000));
            }
            if calls % 3 == 0 {
                set.swap_remove(&format!("new{}", calls - 1));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..1000 {
            assert!(seen.contains(&format!("m{i}")), "m{i} missed");
        }
        // A shrinking collection: the cursor is clamped, and the scan still ends.
        assert_eq!(scan_positions(5, 100, 10), (0, 0..5));
        assert_eq!(scan_positions(50, 0, 10), (40, 40..50));
    }
}
