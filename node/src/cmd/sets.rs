//! Set commands (Redis 7.0): SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SPOP,
//! SRANDMEMBER, SMOVE, SINTER, SINTERCARD, SINTERSTORE, SUNION, SUNIONSTORE, SDIFF,
//! SDIFFSTORE, SSCAN.
//!
//! Multi-key commands read all their sets at once through the held shards (see [`with_sets`]),
//! without copying them; the dispatcher has already locked every key's shard.

use super::hashes::{
    parse_rand_count, parse_scan_cursor, parse_scan_opts, scan_positions, write_empty_scan,
    write_scan_cursor, MAX_RANDOM_REPEATS,
};
use super::{Ctx, Handler, Outcome};
use crate::db::{shard_of_slot, Entry, Locked, Shard, SHARDS};
use crate::glob::glob_match;
use crate::notify as ev;
use crate::reply::Reply;
use crate::value::{Elem, Set, Value};
use bytes::Bytes;
use rand::Rng;
use slotgate_protocol::resp::parse_i64;
use slotgate_protocol::slot::key_slot;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("sadd", sadd),
    ("srem", srem),
    ("smembers", smembers),
    ("sismember", sismember),
    ("smismember", smismember),
    ("scard", scard),
    ("spop", spop),
    ("srandmember", srandmember),
    ("smove", smove),
    ("sinter", sinter),
    ("sintercard", sintercard),
    ("sinterstore", sinterstore),
    ("sunion", sunion),
    ("sunionstore", sunionstore),
    ("sdiff", sdiff),
    ("sdiffstore", sdiffstore),
    ("sscan", sscan),
];

/// The set stored at `key`: `Ok(None)` when missing, `Err(())` after replying WRONGTYPE.
#[allow(clippy::result_unit_err)]
fn read_set<'e>(
    ks: &'e mut Locked<'_>,
    out: &mut Reply,
    key: &[u8],
) -> Result<Option<&'e Set<Elem>>, ()> {
    match ks.get(key) {
        None => Ok(None),
        Some(Entry {
            value: Value::Set(s),
            ..
        }) => Ok(Some(s)),
        Some(_) => {
            out.wrong_type();
            Err(())
        }
    }
}

/// The set at `key` for writing (counts a write). Call only after [`read_set`] found it.
fn set_mut<'e>(ks: &'e mut Locked<'_>, key: &[u8]) -> Option<&'e mut Set<Elem>> {
    match ks.get_mut(key) {
        Some(Entry {
            value: Value::Set(s),
            ..
        }) => Some(s),
        _ => None,
    }
}

/// Runs `f` on the sets stored at `keys` (None for a missing key), all borrowed at once.
/// Replies WRONGTYPE and returns None if any key holds another type (every key is checked
/// first, as Redis does).
fn with_sets<R>(
    ks: &mut Locked<'_>,
    out: &mut Reply,
    keys: &[Bytes],
    f: impl FnOnce(&[Option<&Set<Elem>>], &mut Reply) -> R,
) -> Option<R> {
    // `get` expires stale keys and locks any shard the dispatcher did not.
    for k in keys {
        if read_set(ks, out, k).is_err() {
            return None;
        }
    }
    let now = ks.now;
    let mut shards: Vec<Option<&Shard>> = vec![None; SHARDS];
    for (i, s) in ks.shards_mut() {
        if let Some(slot) = shards.get_mut(i) {
            *slot = Some(&*s);
        }
    }
    let sets: Vec<Option<&Set<Elem>>> = keys
        .iter()
        .map(|k| {
            let slot = key_slot(k);
            let e = shards
                .get(shard_of_slot(slot))?
                .as_ref()?
                .slot_map(slot)?
                .get(&k[..])?;
            if e.expire_at != 0 && e.expire_at <= now {
                return None;
            }
            match &e.value {
                Value::Set(s) => Some(&**s),
                _ => None,
            }
        })
        .collect();
    Some(f(&sets, out))
}

fn sadd(ctx: &mut Ctx) -> Outcome {
    let key = &ctx.args[1][..];
    let members = &ctx.args[2..];
    let Ok(s) = read_set(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    let exists = match s {
        // Adding only present members is not a write (no dirty count, WATCH untouched).
        Some(s) if members.iter().all(|m| s.contains(&m[..])) => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        Some(_) => true,
        None => false,
    };
    let mut added = 0;
    if exists {
        if let Some(s) = set_mut(ctx.ks, key) {
            for m in members {
                if !s.contains(&m[..]) {
                    s.insert(m[..].into());
                    added += 1;
                }
            }
        }
    } else {
        let mut s = Set::with_capacity_and_hasher(members.len(), Default::default());
        for m in members {
            if !s.contains(&m[..]) {
                s.insert(m[..].into());
                added += 1;
            }
        }
        ctx.ks.set(key, Value::Set(Box::new(s)), false);
    }
    if added > 0 {
        ctx.notify(ev::SET, "sadd", key);
    }
    ctx.out.int(added);
    Outcome::Done
}

fn srem(ctx: &mut Ctx) -> Outcome {
    let key = &ctx.args[1][..];
    let members = &ctx.args[2..];
    let Ok(s) = read_set(ctx.ks, ctx.out, key) else {
        return Outcome::Done;
    };
    if !s.is_some_and(|s| members.iter().any(|m| s.contains(&m[..]))) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    let mut n = 0;
    if let Some(s) = set_mut(ctx.ks, key) {
        for m in members {
            n += s.swap_remove(&m[..]) as i64;
        }
    }
    ctx.notify(ev::SET, "srem", key);
    ctx.ks.remove_if_empty(key);
    ctx.out.int(n);
    Outcome::Done
}

/// Writes `items` as a set reply (RESP3 `~`, RESP2 array).
fn reply_set<'a>(out: &mut Reply, n: usize, items: impl Iterator<Item = &'a [u8]>) {
    out.set(n);
    for m in items {
        out.bulk(m);
    }
}

fn smembers(ctx: &mut Ctx) -> Outcome {
    match read_set(ctx.ks, ctx.out, &ctx.args[1]) {
        Ok(Some(s)) => reply_set(ctx.out, s.len(), s.iter().map(|m| &m[..])),
        Ok(None) => ctx.out.set(0),
        Err(()) => {}
    }
    Outcome::Done
}

fn sismember(ctx: &mut Ctx) -> Outcome {
    if let Ok(s) = read_set(ctx.ks, ctx.out, &ctx.args[1]) {
        let found = s.is_some_and(|s| s.contains(&ctx.args[2][..]));
        ctx.out.int(found as i64);
    }
    Outcome::Done
}

fn smismember(ctx: &mut Ctx) -> Outcome {
    if let Ok(s) = read_set(ctx.ks, ctx.out, &ctx.args[1]) {
        let members = &ctx.args[2..];
        ctx.out.array(members.len());
        for m in members {
            ctx.out.int(s.is_some_and(|s| s.contains(&m[..])) as i64);
        }
    }
    Outcome::Done
}

fn scard(ctx: &mut Ctx) -> Outcome {
    if let Ok(s) = read_set(ctx.ks, ctx.out, &ctx.args[1]) {
        ctx.out.int(s.map_or(0, |s| s.len()) as i64);
    }
    Outcome::Done
}

/// Removes and returns the members at the (sorted, distinct) positions `picks`: from the
/// highest down, so each swap-removal fills its hole with a member not picked yet.
fn extract_at(s: &mut Set<Elem>, picks: &[usize]) -> Vec<Elem> {
    picks
        .iter()
        .rev()
        .filter_map(|&i| s.swap_remove_index(i))
        .collect()
}

fn spop(ctx: &mut Ctx) -> Outcome {
    let key = &ctx.args[1][..];
    if ctx.args.len() > 3 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let count = if ctx.args.len() == 3 {
        match parse_i64(&ctx.args[2]) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => {
                ctx.out.error("ERR value is out of range, must be positive");
                return Outcome::Done;
            }
        }
    } else {
        None
    };
    let len = match read_set(ctx.ks, ctx.out, key) {
        Err(()) => return Outcome::Done,
        Ok(s) => s.map_or(0, |s| s.len()),
    };
    let Some(count) = count else {
        if len == 0 {
            ctx.out.null();
            return Outcome::Done;
        }
        let idx = rand::thread_rng().gen_range(0..len);
        let popped = set_mut(ctx.ks, key).and_then(|s| extract_at(s, &[idx]).pop());
        ctx.notify(ev::SET, "spop", key);
        ctx.ks.remove_if_empty(key);
        ctx.out.opt_bulk(popped.as_deref());
        return Outcome::Done;
    };
    if len == 0 || count == 0 {
        ctx.out.set(0);
        return Outcome::Done;
    }
    if count >= len as u64 {
        let all = match ctx.ks.remove(key) {
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => s,
            _ => Box::default(),
        };
        ctx.notify(ev::SET, "spop", key);
        ctx.notify(ev::GENERIC, "del", key);
        reply_set(ctx.out, all.len(), all.iter().map(|m| &m[..]));
        return Outcome::Done;
    }
    let mut picks =
        rand::seq::index::sample(&mut rand::thread_rng(), len, count as usize).into_vec();
    picks.sort_unstable();
    let popped = set_mut(ctx.ks, key)
        .map(|s| extract_at(s, &picks))
        .unwrap_or_default();
    ctx.notify(ev::SET, "spop", key);
    ctx.ks.remove_if_empty(key);
    reply_set(ctx.out, popped.len(), popped.iter().map(|m| &m[..]));
    Outcome::Done
}

fn srandmember(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    if args.len() > 3 {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    if args.len() == 2 {
        if let Ok(s) = read_set(ctx.ks, ctx.out, &args[1]) {
            let m = s.and_then(|s| s.get_index(rand::thread_rng().gen_range(0..s.len().max(1))));
            ctx.out.opt_bulk(m.map(|m| &m[..]));
        }
        return Outcome::Done;
    }
    let Some(count) = parse_rand_count(&args[2], ctx.out) else {
        return Outcome::Done;
    };
    let Ok(s) = read_set(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    let s = match s {
        Some(s) if count != 0 => s,
        _ => {
            ctx.out.array(0);
            return Outcome::Done;
        }
    };
    let out = &mut *ctx.out;
    let mut rng = rand::thread_rng();
    if count < 0 {
        let n = count.unsigned_abs();
        if n > MAX_RANDOM_REPEATS {
            out.error("ERR value is out of range");
            return Outcome::Done;
        }
        out.array(n as usize);
        for _ in 0..n {
            if let Some(m) = s.get_index(rng.gen_range(0..s.len())) {
                out.bulk(m);
            }
        }
    } else if count as u64 >= s.len() as u64 {
        out.array(s.len());
        for m in s.iter() {
            out.bulk(m);
        }
    } else {
        let n = count as usize;
        let mut picks = rand::seq::index::sample(&mut rng, s.len(), n).into_vec();
        picks.sort_unstable();
        out.array(n);
        for &i in &picks {
            if let Some(m) = s.get_index(i) {
                out.bulk(m);
            }
        }
    }
    Outcome::Done
}

fn smove(ctx: &mut Ctx) -> Outcome {
    let (src, dst, member) = (&ctx.args[1][..], &ctx.args[2][..], &ctx.args[3][..]);
    let present = match read_set(ctx.ks, ctx.out, src) {
        Err(()) => return Outcome::Done,
        Ok(None) => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        Ok(Some(s)) => s.contains(member),
    };
    if read_set(ctx.ks, ctx.out, dst).is_err() {
        return Outcome::Done;
    }
    if src == dst || !present {
        ctx.out.int(present as i64);
        return Outcome::Done;
    }
    let moved = set_mut(ctx.ks, src).and_then(|s| s.swap_take(member));
    ctx.notify(ev::SET, "srem", src);
    ctx.ks.remove_if_empty(src);
    if let Some(m) = moved {
        let added = match &mut ctx.ks.get_or_insert_with(dst, Value::new_set).value {
            Value::Set(d) => d.insert(m),
            _ => false,
        };
        if added {
            ctx.notify(ev::SET, "sadd", dst);
        }
    }
    ctx.out.int(1);
    Outcome::Done
}

/// Members of the intersection of `sets`, at most `limit` of them (0 = all).
fn intersect<'a>(sets: &[Option<&'a Set<Elem>>], limit: usize) -> Vec<&'a [u8]> {
    let Some(mut all) = sets.iter().copied().collect::<Option<Vec<&Set<Elem>>>>() else {
        return Vec::new();
    };
    all.sort_by_key(|s| s.len());
    let Some((first, rest)) = all.split_first() else {
        return Vec::new();
    };
    let mut res = Vec::new();
    for m in first.iter() {
        if rest.iter().all(|s| s.contains(m)) {
            res.push(&m[..]);
            if limit != 0 && res.len() >= limit {
                break;
            }
        }
    }
    res
}

/// Members of the union of `sets`.
fn union<'a>(sets: &[Option<&'a Set<Elem>>]) -> Vec<&'a [u8]> {
    let mut seen: Set<&'a [u8]> = Set::default();
    let mut res = Vec::new();
    for s in sets.iter().flatten() {
        for m in s.iter() {
            if seen.insert(&m[..]) {
                res.push(&m[..]);
            }
        }
    }
    res
}

/// Members of the first set that are in none of the others.
fn difference<'a>(sets: &[Option<&'a Set<Elem>>]) -> Vec<&'a [u8]> {
    let Some((Some(first), rest)) = sets.split_first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|m| !rest.iter().flatten().any(|s| s.contains(*m)))
        .map(|m| &m[..])
        .collect()
}

type SetOp = for<'a> fn(&[Option<&'a Set<Elem>>]) -> Vec<&'a [u8]>;

fn inter_all<'a>(sets: &[Option<&'a Set<Elem>>]) -> Vec<&'a [u8]> {
    intersect(sets, 0)
}

/// SINTER / SUNION / SDIFF: replies the result as a set.
fn set_op(ctx: &mut Ctx, op: SetOp) -> Outcome {
    with_sets(ctx.ks, ctx.out, &ctx.args[1..], |sets, out| {
        let res = op(sets);
        reply_set(out, res.len(), res.into_iter());
    });
    Outcome::Done
}

/// SINTERSTORE / SUNIONSTORE / SDIFFSTORE: stores the result at the destination (replacing
/// any value; deleting it when the result is empty) and replies its size.
fn set_op_store(ctx: &mut Ctx, op: SetOp) -> Outcome {
    let dst = &ctx.args[1][..];
    let res = with_sets(ctx.ks, ctx.out, &ctx.args[2..], |sets, _| {
        let res = op(sets);
        let mut owned: Set<Elem> = Set::with_capacity_and_hasher(res.len(), Default::default());
        owned.extend(res.into_iter().map(Elem::from));
        owned
    });
    let Some(res) = res else {
        return Outcome::Done;
    };
    let n = res.len() as i64;
    if res.is_empty() {
        if ctx.ks.remove(dst).is_some() {
            ctx.notify(ev::GENERIC, "del", dst);
        }
    } else {
        ctx.ks.set(dst, Value::Set(Box::new(res)), false);
        let event = match ctx.spec.name {
            "sinterstore" => "sinterstore",
            "sunionstore" => "sunionstore",
            _ => "sdiffstore",
        };
        ctx.notify(ev::SET, event, dst);
    }
    ctx.out.int(n);
    Outcome::Done
}

fn sinter(ctx: &mut Ctx) -> Outcome {
    set_op(ctx, inter_all)
}

fn sunion(ctx: &mut Ctx) -> Outcome {
    set_op(ctx, union)
}

fn sdiff(ctx: &mut Ctx) -> Outcome {
    set_op(ctx, difference)
}

fn sinterstore(ctx: &mut Ctx) -> Outcome {
    set_op_store(ctx, inter_all)
}

fn sunionstore(ctx: &mut Ctx) -> Outcome {
    set_op_store(ctx, union)
}

fn sdiffstore(ctx: &mut Ctx) -> Outcome {
    set_op_store(ctx, difference)
}

fn sintercard(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let numkeys = match parse_i64(&args[1]) {
        Some(n) if n >= 1 => n as u64,
        _ => {
            ctx.out.error("ERR numkeys should be greater than 0");
            return Outcome::Done;
        }
    };
    if numkeys > (args.len() - 2) as u64 {
        ctx.out
            .error("ERR Number of keys can't be greater than number of args");
        return Outcome::Done;
    }
    let keys_end = 2 + numkeys as usize;
    let mut limit = 0usize;
    let mut i = keys_end;
    while i < args.len() {
        if ctx.arg_is(i, "LIMIT") && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => limit = usize::try_from(n).unwrap_or(usize::MAX),
                _ => {
                    ctx.out.error("ERR LIMIT can't be negative");
                    return Outcome::Done;
                }
            }
            i += 2;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    }
    if let Some(n) = with_sets(ctx.ks, ctx.out, &args[2..keys_end], |sets, _| {
        intersect(sets, limit).len()
    }) {
        ctx.out.int(n as i64);
    }
    Outcome::Done
}

fn sscan(ctx: &mut Ctx) -> Outcome {
    let Some(cursor) = parse_scan_cursor(&ctx.args[2]) else {
        ctx.out.error("ERR invalid cursor");
        return Outcome::Done;
    };
    let args = ctx.args;
    let Ok(s) = read_set(ctx.ks, ctx.out, &args[1]) else {
        return Outcome::Done;
    };
    // A missing key replies an empty scan before the options are even parsed (as Redis).
    let Some(s) = s else {
        write_empty_scan(ctx.out);
        return Outcome::Done;
    };
    let Some((pattern, count)) = parse_scan_opts(&args[3..], ctx.out) else {
        return Outcome::Done;
    };
    let intset = ctx.server.compact.set_intset(s);
    let (next, batch) = if intset {
        // Redis returns an intset-encoded set whole, whatever the cursor.
        (0, s.iter().map(|m| (&m[..], ())).collect::<Vec<_>>())
    } else {
        let (next, range) = scan_positions(s.len(), cursor, count);
        let batch = range.filter_map(|i| s.get_index(i));
        (next, batch.map(|m| (&m[..], ())).collect::<Vec<_>>())
    };
    let keep = |m: &[u8]| pattern.is_none_or(|p| glob_match(p, m, false));
    let n = batch.iter().filter(|(m, _)| keep(m)).count();
    write_scan_cursor(ctx.out, next);
    ctx.out.array(n);
    for (m, _) in batch {
        if keep(m) {
            ctx.out.bulk(m);
        }
    }
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> Set<Elem> {
        items.iter().map(|s| Elem::from(s.as_bytes())).collect()
    }

    fn sorted(v: Vec<&[u8]>) -> Vec<String> {
        let mut v: Vec<String> = v
            .into_iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn set_algebra() {
        let (a, b, c) = (set(&["1", "2", "3"]), set(&["2", "3", "4"]), set(&["3"]));
        assert_eq!(sorted(intersect(&[Some(&a), Some(&b)], 0)), ["2", "3"]);
        assert_eq!(intersect(&[Some(&a), Some(&b)], 1).len(), 1);
        assert!(intersect(&[Some(&a), None], 0).is_empty());
        assert_eq!(
            sorted(union(&[Some(&a), None, Some(&b)])),
            ["1", "2", "3", "4"]
        );
        assert_eq!(sorted(difference(&[Some(&a), Some(&b)])), ["1"]);
        assert_eq!(sorted(difference(&[Some(&a), None, Some(&c)])), ["1", "2"]);
        assert!(difference(&[None, Some(&a)]).is_empty());
    }

    #[test]
    fn extract_positions() {
        let mut s = set(&["a", "b", "c", "d"]);
        let got = extract_at(&mut s, &[0, 2]);
        assert_eq!(got.len(), 2);
        assert_eq!(s.len(), 2);
        assert!(got.iter().all(|m| !s.contains(m)));
    }
}
