//! Generic key commands: DEL, UNLINK, EXISTS, TOUCH, TYPE, RENAME(NX), COPY, MOVE, the
//! EXPIRE/TTL family, PERSIST, KEYS, SCAN, RANDOMKEY, OBJECT, SORT and SORT_RO.
//!
//! Per-key commands run with their keys' shards locked by the dispatcher. KEYS, SCAN and
//! RANDOMKEY are db-wide: they walk every slot map of the current database (all shards are
//! held) and skip entries that are already expired at `ctx.ks.now`. SCAN's cursor is the next
//! hash slot to visit, so a full iteration sees every key that lived for the whole scan.

use super::{Ctx, Handler, Outcome};
use crate::db::{Entry, Locked, Shard, SHARDS};
use crate::glob::glob_match;
use crate::notify as ev;
use crate::value::{Kind, Value};
use rand::Rng;
use slotgate_protocol::resp::parse_i64;
use slotgate_protocol::SLOT_COUNT;
use std::cmp::Ordering;
use std::collections::VecDeque;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("del", del),
    ("unlink", del),
    ("exists", exists),
    ("touch", exists),
    ("type", type_cmd),
    ("rename", rename),
    ("renamenx", renamenx),
    ("copy", copy),
    ("move", move_cmd),
    ("expire", expire),
    ("pexpire", pexpire),
    ("expireat", expireat),
    ("pexpireat", pexpireat),
    ("ttl", ttl),
    ("pttl", pttl),
    ("expiretime", expiretime),
    ("pexpiretime", pexpiretime),
    ("persist", persist),
    ("keys", keys),
    ("scan", scan),
    ("randomkey", randomkey),
    ("object", object),
    ("sort", sort),
    ("sort_ro", sort_ro),
];

const NO_SUCH_KEY: &str = "ERR no such key";
const SAME_OBJECT: &str = "ERR source and destination objects are the same";
const DB_OUT_OF_RANGE: &str = "ERR DB index is out of range";

/// True when `e` is still alive at `now` (db-wide walks see not-yet-collected entries).
#[inline]
fn live(e: &Entry, now: u64) -> bool {
    e.expire_at == 0 || e.expire_at > now
}

// ---------------------------------------------------------------------------------------------
// DEL / UNLINK / EXISTS / TOUCH / TYPE

/// DEL and UNLINK: UNLINK frees big values on the background thread.
fn del(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let lazy = ctx.spec.name == "unlink";
    let mut n = 0;
    for k in &args[1..] {
        if let Some(e) = ctx.ks.remove(k) {
            n += 1;
            ctx.ks.notify(ev::GENERIC, "del", k);
            if lazy {
                let effort = e.value.free_effort();
                ctx.server.lazyfree.free(e.value, effort);
            }
        }
    }
    ctx.out.int(n);
    Outcome::Done
}

/// EXISTS and TOUCH: the number of given keys that exist (duplicates count each time).
fn exists(ctx: &mut Ctx) -> Outcome {
    let args = ctx.args;
    let mut n = 0;
    for k in &args[1..] {
        if ctx.ks.exists(k) {
            n += 1;
        }
    }
    ctx.out.int(n);
    Outcome::Done
}

fn type_cmd(ctx: &mut Ctx) -> Outcome {
    let name = match ctx.ks.peek(&ctx.args[1]) {
        Some(e) => e.value.kind().name(),
        None => "none",
    };
    ctx.out.simple(name);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// RENAME / RENAMENX / COPY / MOVE

fn rename(ctx: &mut Ctx) -> Outcome {
    rename_generic(ctx, false)
}

fn renamenx(ctx: &mut Ctx) -> Outcome {
    rename_generic(ctx, true)
}

fn rename_generic(ctx: &mut Ctx, nx: bool) -> Outcome {
    let (src, dst) = (&ctx.args[1][..], &ctx.args[2][..]);
    if !ctx.ks.exists(src) {
        ctx.out.error(NO_SUCH_KEY);
        return Outcome::Done;
    }
    if src == dst {
        if nx {
            ctx.out.int(0);
        } else {
            ctx.out.ok();
        }
        return Outcome::Done;
    }
    if nx && ctx.ks.exists(dst) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    if let Some(entry) = ctx.ks.remove(src) {
        // Redis deletes the old destination and adds the key anew (a `new` event).
        ctx.ks.remove(dst);
        ctx.ks.set_entry(dst, entry);
        ctx.notify(ev::GENERIC, "rename_from", src);
        ctx.notify(ev::GENERIC, "rename_to", dst);
    }
    if nx {
        ctx.out.int(1);
    } else {
        ctx.out.ok();
    }
    Outcome::Done
}

/// Parses a database index argument: `Err(())` once the error reply is written.
fn db_index_arg(ctx: &mut Ctx, i: usize) -> Result<usize, ()> {
    let n = match parse_i64(&ctx.args[i]) {
        Some(n) if i32::try_from(n).is_ok() => n,
        _ => {
            ctx.out.not_integer();
            return Err(());
        }
    };
    if n < 0 || n as usize >= ctx.server.ks.count() {
        ctx.out.error(DB_OUT_OF_RANGE);
        return Err(());
    }
    Ok(n as usize)
}

fn cluster_enabled(ctx: &Ctx) -> bool {
    ctx.server.config.read().get_bool("cluster-enabled")
}

/// Locks `key`'s shard in database `db` up front, so that later accesses never have to
/// re-acquire locks halfway through the command.
fn prelock_other_db(ctx: &mut Ctx, db: usize, key: &[u8]) {
    let cur = ctx.ks.db_index();
    ctx.ks.set_db(db);
    ctx.ks.lock_keys([key]);
    ctx.ks.set_db(cur);
}

fn copy(ctx: &mut Ctx) -> Outcome {
    let src_db = ctx.ks.db_index();
    let mut dst_db = src_db;
    let mut replace = false;
    let mut j = 3;
    while j < ctx.args.len() {
        let more = ctx.args.len() - j - 1;
        if ctx.arg_is(j, "replace") {
            replace = true;
        } else if ctx.arg_is(j, "db") && more >= 1 {
            match db_index_arg(ctx, j + 1) {
                Ok(d) => dst_db = d,
                Err(()) => return Outcome::Done,
            }
            j += 1;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }
    if (src_db != 0 || dst_db != 0) && cluster_enabled(ctx) {
        ctx.out
            .error("ERR Copying to another database is not allowed in cluster mode");
        return Outcome::Done;
    }
    let (key, newkey) = (&ctx.args[1][..], &ctx.args[2][..]);
    if src_db == dst_db && key == newkey {
        ctx.out.error(SAME_OBJECT);
        return Outcome::Done;
    }
    if dst_db != src_db {
        prelock_other_db(ctx, dst_db, newkey);
    }
    if !ctx.ks.exists(key) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    ctx.ks.set_db(dst_db);
    let taken = ctx.ks.exists(newkey);
    ctx.ks.set_db(src_db);
    if taken && !replace {
        ctx.out.int(0);
        return Outcome::Done;
    }
    // Only now pay for the deep copy.
    let entry = ctx.ks.get(key).cloned();
    let done = entry.is_some();
    if let Some(entry) = entry {
        ctx.ks.set_db(dst_db);
        if taken {
            // REPLACE deletes the old key first: the copy is a new key (Redis's dbAdd).
            ctx.ks.remove(newkey);
        }
        ctx.ks.set_entry(newkey, entry);
        ctx.ks.set_db(src_db);
        ctx.ks.notify_db(ev::GENERIC, "copy_to", newkey, dst_db);
    }
    ctx.out.int(done as i64);
    Outcome::Done
}

fn move_cmd(ctx: &mut Ctx) -> Outcome {
    if cluster_enabled(ctx) {
        ctx.out.error("ERR MOVE is not allowed in cluster mode");
        return Outcome::Done;
    }
    let src_db = ctx.ks.db_index();
    let Ok(dst_db) = db_index_arg(ctx, 2) else {
        return Outcome::Done;
    };
    if dst_db == src_db {
        ctx.out.error(SAME_OBJECT);
        return Outcome::Done;
    }
    let key = &ctx.args[1][..];
    prelock_other_db(ctx, dst_db, key);
    if !ctx.ks.exists(key) {
        ctx.out.int(0);
        return Outcome::Done;
    }
    ctx.ks.set_db(dst_db);
    let taken = ctx.ks.exists(key);
    ctx.ks.set_db(src_db);
    if taken {
        ctx.out.int(0);
        return Outcome::Done;
    }
    if let Some(entry) = ctx.ks.remove(key) {
        ctx.ks.set_db(dst_db);
        ctx.ks.set_entry(key, entry);
        ctx.ks.set_db(src_db);
        ctx.notify(ev::GENERIC, "move_from", key);
        ctx.ks.notify_db(ev::GENERIC, "move_to", key, dst_db);
    }
    ctx.out.int(1);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// EXPIRE family, TTL family, PERSIST

fn expire(ctx: &mut Ctx) -> Outcome {
    expire_generic(ctx, true, true)
}

fn pexpire(ctx: &mut Ctx) -> Outcome {
    expire_generic(ctx, true, false)
}

fn expireat(ctx: &mut Ctx) -> Outcome {
    expire_generic(ctx, false, true)
}

fn pexpireat(ctx: &mut Ctx) -> Outcome {
    expire_generic(ctx, false, false)
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT], as Redis 7.0's
/// `expireGenericCommand`: options are validated before the time, overflow is an error and a
/// time already in the past deletes the key (reply 1).
fn expire_generic(ctx: &mut Ctx, relative: bool, seconds: bool) -> Outcome {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for j in 3..ctx.args.len() {
        let o = &ctx.args[j];
        if o.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if o.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if o.eq_ignore_ascii_case(b"gt") {
            gt = true;
        } else if o.eq_ignore_ascii_case(b"lt") {
            lt = true;
        } else {
            let msg = format!("ERR Unsupported option {}", printable(o));
            ctx.out.error(&msg);
            return Outcome::Done;
        }
    }
    if nx && (xx || gt || lt) {
        ctx.out
            .error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Outcome::Done;
    }
    if gt && lt {
        ctx.out
            .error("ERR GT and LT options at the same time are not compatible");
        return Outcome::Done;
    }
    let Some(mut when) = ctx.int_arg(2) else {
        return Outcome::Done;
    };
    let bad_time = |ctx: &mut Ctx| {
        let msg = format!("ERR invalid expire time in '{}' command", ctx.spec.name);
        ctx.out.error(&msg);
        Outcome::Done
    };
    if seconds {
        match when.checked_mul(1000) {
            Some(ms) => when = ms,
            None => return bad_time(ctx),
        }
    }
    let now = ctx.ks.now as i64;
    if relative {
        match when.checked_add(now) {
            Some(t) => when = t,
            None => return bad_time(ctx),
        }
    }
    let key = &ctx.args[1][..];
    let current = match ctx.ks.get(key) {
        None => {
            ctx.out.int(0);
            return Outcome::Done;
        }
        Some(e) if e.expire_at == 0 => None,
        Some(e) => Some(e.expire_at as i64),
    };
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| when <= c))
        || (lt && current.is_some_and(|c| when >= c));
    if refused {
        ctx.out.int(0);
        return Outcome::Done;
    }
    if when <= now && !ctx.ks.no_delete_expired {
        ctx.ks.remove(key);
        ctx.notify(ev::GENERIC, "del", key);
    } else {
        ctx.ks.set_expire(key, when.max(1) as u64);
        ctx.notify(ev::GENERIC, "expire", key);
    }
    ctx.out.int(1);
    Outcome::Done
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TtlKind {
    Relative,
    Absolute,
}

fn ttl(ctx: &mut Ctx) -> Outcome {
    ttl_generic(ctx, false, TtlKind::Relative)
}

fn pttl(ctx: &mut Ctx) -> Outcome {
    ttl_generic(ctx, true, TtlKind::Relative)
}

fn expiretime(ctx: &mut Ctx) -> Outcome {
    ttl_generic(ctx, false, TtlKind::Absolute)
}

fn pexpiretime(ctx: &mut Ctx) -> Outcome {
    ttl_generic(ctx, true, TtlKind::Absolute)
}

fn ttl_generic(ctx: &mut Ctx, ms: bool, kind: TtlKind) -> Outcome {
    let now = ctx.ks.now as i64;
    let at = match ctx.ks.peek(&ctx.args[1]) {
        None => {
            ctx.out.int(-2);
            return Outcome::Done;
        }
        Some(e) => e.expire_at,
    };
    if at == 0 {
        ctx.out.int(-1);
        return Outcome::Done;
    }
    let at = at.min(i64::MAX as u64) as i64;
    let t = match kind {
        TtlKind::Relative => at - now,
        TtlKind::Absolute => at,
    }
    .max(0);
    ctx.out.int(if ms { t } else { (t + 500) / 1000 });
    Outcome::Done
}

fn persist(ctx: &mut Ctx) -> Outcome {
    let key = &ctx.args[1][..];
    let has_ttl = matches!(ctx.ks.get(key), Some(e) if e.expire_at != 0);
    if has_ttl {
        ctx.ks.set_expire(key, 0);
        ctx.notify(ev::GENERIC, "persist", key);
    }
    ctx.out.int(has_ttl as i64);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// KEYS / SCAN / RANDOMKEY (db-wide)

/// The shards of the current database indexed by shard number (all of them are locked).
fn shard_table<'s>(ks: &'s mut Locked<'_>) -> Vec<Option<&'s Shard>> {
    // Inside EXEC after a SELECT the new database's shards may not be held yet.
    ks.lock_all();
    let mut table: Vec<Option<&Shard>> = vec![None; SHARDS];
    for (i, s) in ks.shards_mut() {
        if let Some(slot) = table.get_mut(i) {
            *slot = Some(&*s);
        }
    }
    table
}

fn keys(ctx: &mut Ctx) -> Outcome {
    let pattern = ctx.args[1].clone();
    let all = &pattern[..] == b"*";
    let now = ctx.ks.now;
    ctx.ks.lock_all();
    let mut found: Vec<&[u8]> = Vec::new();
    for (_, shard) in ctx.ks.shards_mut() {
        let shard: &Shard = shard;
        for (_, map) in shard.slot_maps(0) {
            for (k, e) in map {
                if live(e, now) && (all || glob_match(&pattern, k, false)) {
                    found.push(k);
                }
            }
        }
    }
    ctx.out.array(found.len());
    for k in found {
        ctx.out.bulk(k);
    }
    Outcome::Done
}

/// Parses a SCAN cursor as Redis does (`strtoul` base 10, no leading space, no trailing junk;
/// a leading `-` wraps around, the empty string is 0).
fn parse_cursor(b: &[u8]) -> Option<u64> {
    let b = match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    };
    if b.is_empty() {
        return Some(0);
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(if neg { n.wrapping_neg() } else { n })
}

fn scan(ctx: &mut Ctx) -> Outcome {
    let Some(cursor) = parse_cursor(&ctx.args[1]) else {
        ctx.out.error("ERR invalid cursor");
        return Outcome::Done;
    };
    let mut count: usize = 10;
    let mut pattern: Option<bytes::Bytes> = None;
    let mut type_filter: Option<Option<Kind>> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let more = ctx.args.len() - i - 1;
        if ctx.arg_is(i, "count") && more >= 1 {
            let Some(n) = ctx.int_arg(i + 1) else {
                return Outcome::Done;
            };
            if n < 1 {
                ctx.out.syntax_error();
                return Outcome::Done;
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if ctx.arg_is(i, "match") && more >= 1 {
            let p = &ctx.args[i + 1];
            pattern = if &p[..] == b"*" {
                None
            } else {
                Some(p.clone())
            };
        } else if ctx.arg_is(i, "type") && more >= 1 {
            // Redis 7.0: an unknown type name is not an error, it just matches nothing.
            type_filter = Some(Kind::from_name(&ctx.args[i + 1]));
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        i += 2;
    }
    let now = ctx.ks.now;
    // The keys found, back to back in `arena` (copied out: each visited shard is locked as
    // the walk reaches it, so no borrow of one outlives the next lock).
    let (mut arena, mut ends): (Vec<u8>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut next: u64 = 0;
    // A cursor past the last slot (never handed out) ends the iteration at once.
    if cursor < SLOT_COUNT as u64 {
        let mut slot = cursor as usize;
        let mut examined = 0usize;
        while slot < SLOT_COUNT {
            let map = ctx.ks.shard(slot % SHARDS).slot_map(slot as u16);
            examined += map.map_or(0, |m| m.len());
            for (k, e) in map.into_iter().flatten() {
                if !live(e, now) {
                    continue;
                }
                if let Some(p) = &pattern {
                    if !glob_match(p, k, false) {
                        continue;
                    }
                }
                if let Some(t) = type_filter {
                    if t != Some(e.value.kind()) {
                        continue;
                    }
                }
                arena.extend_from_slice(k);
                ends.push(arena.len());
            }
            slot += 1;
            if examined >= count {
                break;
            }
        }
        if slot < SLOT_COUNT {
            next = slot as u64;
        }
    }
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(ends.len());
    let mut start = 0;
    for end in ends {
        ctx.out.bulk(&arena[start..end]);
        start = end;
    }
    Outcome::Done
}

fn randomkey(ctx: &mut Ctx) -> Outcome {
    let now = ctx.ks.now;
    let table = shard_table(ctx.ks);
    let shards: Vec<&Shard> = table.into_iter().flatten().collect();
    let lens: Vec<usize> = shards.iter().map(|s| s.len()).collect();
    let total: usize = lens.iter().sum();
    let mut rng = rand::thread_rng();
    let mut chosen: Option<&[u8]> = None;
    if total > 0 {
        // Uniform pick among stored entries; retry a few times when an expired one comes up.
        'tries: for _ in 0..32 {
            let mut r = rng.gen_range(0..total);
            for (s, &len) in shards.iter().zip(&lens) {
                if r >= len {
                    r -= len;
                    continue;
                }
                for (_, map) in s.slot_maps(0) {
                    if r >= map.len() {
                        r -= map.len();
                        continue;
                    }
                    if let Some((k, e)) = map.iter().nth(r) {
                        if live(e, now) {
                            chosen = Some(k);
                            break 'tries;
                        }
                    }
                    continue 'tries;
                }
            }
        }
        if chosen.is_none() {
            // Mostly expired keyspace: pick among the live keys exactly.
            let live_keys = || {
                shards
                    .iter()
                    .flat_map(|s| s.slot_maps(0))
                    .flat_map(|(_, m)| m.iter())
                    .filter(|(_, e)| live(e, now))
            };
            let n = live_keys().count();
            if n > 0 {
                chosen = live_keys().nth(rng.gen_range(0..n)).map(|(k, _)| &k[..]);
            }
        }
    }
    ctx.out.opt_bulk(chosen);
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// OBJECT

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

/// Redis's OBJ_SHARED_REFCOUNT (shared small integers).
const SHARED_REFCOUNT: i64 = i32::MAX as i64;
/// Redis's OBJ_SHARED_INTEGERS.
const SHARED_INTEGERS: i64 = 10000;

/// A byte string as Redis prints it inside an error (newlines blanked, at most `max` bytes).
fn printable_max(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)])
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

fn printable(b: &[u8]) -> String {
    printable_max(b, usize::MAX)
}

fn lfu_policy(ctx: &Ctx) -> bool {
    ctx.server
        .config
        .read()
        .get("maxmemory-policy")
        .ends_with("-lfu")
}

fn object(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    if sub == b"help" && ctx.args.len() == 2 {
        ctx.out.array(OBJECT_HELP.len());
        for line in OBJECT_HELP {
            ctx.out.simple(line);
        }
        return Outcome::Done;
    }
    let known = matches!(&sub[..], b"encoding" | b"freq" | b"idletime" | b"refcount");
    if !known || ctx.args.len() != 3 {
        let msg = format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            printable_max(&ctx.args[1], 128),
            printable(&ctx.args[0]).to_ascii_uppercase()
        );
        ctx.out.error(&msg);
        return Outcome::Done;
    }
    let now = ctx.ks.now;
    let lfu = lfu_policy(ctx);
    let decay = ctx
        .server
        .ks
        .access
        .lfu_decay_time
        .load(std::sync::atomic::Ordering::Relaxed);
    let Some(e) = ctx.ks.peek(&ctx.args[2]) else {
        ctx.out.null();
        return Outcome::Done;
    };
    match &sub[..] {
        b"encoding" => {
            // Redis 7.0 always encodes lists as quicklists (listpack lists came with 7.2).
            let enc = match e.value {
                Value::List(_) => "quicklist",
                _ => e.value.encoding(&ctx.server.compact),
            };
            ctx.out.bulk(enc.as_bytes());
        }
        b"refcount" => {
            let small_int = match &e.value {
                Value::Str(s) => {
                    e.value.encoding(&ctx.server.compact) == "int"
                        && parse_i64(s).is_some_and(|v| (0..SHARED_INTEGERS).contains(&v))
                }
                _ => false,
            };
            let shared = small_int && {
                let cfg = ctx.server.config.read();
                let policy = cfg.get("maxmemory-policy");
                cfg.get_int("maxmemory") == 0
                    || !(policy.ends_with("-lru") || policy.ends_with("-lfu"))
            };
            ctx.out.int(if shared { SHARED_REFCOUNT } else { 1 });
        }
        b"idletime" => {
            if lfu {
                ctx.out.error("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
            } else {
                ctx.out.int(crate::db::idle_seconds(e.lru, now) as i64);
            }
        }
        _ => {
            if lfu {
                ctx.out
                    .int(i64::from(crate::db::lfu_counter(e.lru, now, decay)));
            } else {
                ctx.out.error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
            }
        }
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// SORT / SORT_RO

fn sort(ctx: &mut Ctx) -> Outcome {
    sort_generic(ctx, false)
}

fn sort_ro(ctx: &mut Ctx) -> Outcome {
    sort_generic(ctx, true)
}

/// Parses a number as C's `strtod` and Redis's SORT accept it: the whole string (up to a NUL)
/// must be consumed, leading whitespace is skipped, NaN and out-of-range values are rejected,
/// and the empty string is 0.
fn sort_score(b: &[u8]) -> Option<f64> {
    let b = match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    };
    if b.is_empty() {
        return Some(0.0);
    }
    let start = b
        .iter()
        .position(|&c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))?;
    let t = std::str::from_utf8(&b[start..]).ok()?;
    let v: f64 = t.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    let unsigned = t.trim_start_matches(['+', '-']);
    if v.is_infinite()
        && !unsigned
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("inf"))
    {
        return None; // overflow (ERANGE)
    }
    if v.is_subnormal() {
        return None; // underflow (ERANGE)
    }
    if v == 0.0 {
        let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
        if mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
            return None; // underflow to zero (ERANGE)
        }
    }
    Some(v)
}

/// The key a SORT BY/GET pattern names for `elem`, and the hash field after `->` if any;
/// None when the pattern has no `*` (Redis's `lookupKeyByPattern`).
fn pattern_key(pattern: &[u8], elem: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let star = pattern.iter().position(|&c| c == b'*')?;
    let rest = &pattern[star + 1..];
    let arrow = rest
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&i| i + 2 < rest.len());
    let (post, field) = match arrow {
        Some(i) => (&rest[..i], Some(rest[i + 2..].to_vec())),
        None => (rest, None),
    };
    let mut key = Vec::with_capacity(star + elem.len() + post.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(elem);
    key.extend_from_slice(post);
    Some((key, field))
}

/// Reads what a BY/GET pattern refers to for `elem`: the element itself for `#`, a string
/// value, or a hash field (None when missing or of another type).
fn lookup_by_pattern(ctx: &mut Ctx, pattern: &[u8], elem: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(elem.to_vec());
    }
    let (key, field) = pattern_key(pattern, elem)?;
    let e = ctx.ks.get(&key)?;
    match (&e.value, field) {
        (Value::Str(s), None) => Some(s.clone()),
        (Value::Hash(h), Some(f)) => h.get(&f[..]).map(|v| v.to_vec()),
        _ => None,
    }
}

/// One element being sorted with its sort weight.
struct SortItem {
    elem: Box<[u8]>,
    score: f64,
    cmp: Option<Vec<u8>>,
}

fn sort_generic(ctx: &mut Ctx, readonly: bool) -> Outcome {
    let mut desc = false;
    let mut alpha = false;
    let mut limit_start: i64 = 0;
    let mut limit_count: i64 = -1;
    let mut dontsort = false;
    let mut sortby: Option<&[u8]> = None;
    let mut store: Option<&[u8]> = None;
    let mut gets: Vec<&[u8]> = Vec::new();
    let args = ctx.args;
    let mut cluster: Option<bool> = None;
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let a = &args[j][..];
        if a.eq_ignore_ascii_case(b"asc") {
            desc = false;
        } else if a.eq_ignore_ascii_case(b"desc") {
            desc = true;
        } else if a.eq_ignore_ascii_case(b"alpha") {
            alpha = true;
        } else if a.eq_ignore_ascii_case(b"limit") && left >= 2 {
            match (parse_i64(&args[j + 1]), parse_i64(&args[j + 2])) {
                (Some(s), Some(c)) => {
                    limit_start = s;
                    limit_count = c;
                }
                _ => {
                    ctx.out.not_integer();
                    return Outcome::Done;
                }
            }
            j += 2;
        } else if !readonly && a.eq_ignore_ascii_case(b"store") && left >= 1 {
            store = Some(&args[j + 1]);
            j += 1;
        } else if a.eq_ignore_ascii_case(b"by") && left >= 1 {
            let p = &args[j + 1][..];
            sortby = Some(p);
            if !p.contains(&b'*') {
                dontsort = true;
            } else if *cluster.get_or_insert_with(|| cluster_enabled(ctx)) {
                ctx.out
                    .error("ERR BY option of SORT denied in Cluster mode.");
                return Outcome::Done;
            }
            j += 1;
        } else if a.eq_ignore_ascii_case(b"get") && left >= 1 {
            if *cluster.get_or_insert_with(|| cluster_enabled(ctx)) {
                ctx.out
                    .error("ERR GET option of SORT denied in Cluster mode.");
                return Outcome::Done;
            }
            gets.push(&args[j + 1]);
            j += 1;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }

    // Copy out the elements to sort (the source may live on a shard we re-lock below).
    let mut items: Vec<SortItem> = Vec::new();
    let item = |e: &[u8]| SortItem {
        elem: e.into(),
        score: 0.0,
        cmp: None,
    };
    let (is_set, len) = match ctx.ks.get(&args[1]).map(|e| &e.value) {
        None => (false, 0),
        Some(Value::List(l)) => (false, l.len() as i64),
        Some(Value::Set(s)) => (true, s.len() as i64),
        Some(Value::ZSet(z)) => (false, z.len() as i64),
        Some(_) => {
            ctx.out.wrong_type();
            return Outcome::Done;
        }
    };
    if dontsort && is_set && store.is_some() {
        // Sets have no order of their own: force a deterministic result for STORE.
        dontsort = false;
        alpha = true;
        sortby = None;
    }
    let mut start = limit_start.max(0);
    let mut end = if limit_count < 0 {
        len - 1
    } else {
        start.saturating_add(limit_count - 1)
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    // Lists and sorted sets have an order of their own: without sorting, load just the range.
    let direct = dontsort && !is_set;
    match ctx.ks.get(&args[1]).map(|e| &e.value) {
        _ if direct && end < start => {}
        Some(Value::List(l)) if direct => {
            let (s, n) = (start as usize, (end - start + 1) as usize);
            if desc {
                items.extend(l.iter().rev().skip(s).take(n).map(|e| item(e)));
            } else {
                items.extend(l.iter().skip(s).take(n).map(|e| item(e)));
            }
        }
        Some(Value::ZSet(z)) if direct => {
            let (s, n) = (start as usize, (end - start + 1) as usize);
            if desc {
                let end = z.len().saturating_sub(s);
                items.extend(
                    z.range(end.saturating_sub(n), end)
                        .rev()
                        .map(|(m, _)| item(m)),
                );
            } else {
                items.extend(z.range(s, s.saturating_add(n)).map(|(m, _)| item(m)));
            }
        }
        Some(Value::List(l)) => items.extend(l.iter().map(|e| item(e))),
        Some(Value::Set(s)) => items.extend(s.iter().map(|e| item(e))),
        Some(Value::ZSet(z)) => items.extend(z.iter().map(|(m, _)| item(m))),
        _ => {}
    }
    if direct && end >= start {
        end -= start;
        start = 0;
    }

    // Lock every key the BY/GET patterns refer to at once (one ordered acquisition).
    let by_pattern = if dontsort { None } else { sortby };
    if by_pattern.is_some() || !gets.is_empty() {
        let mut wanted: Vec<Vec<u8>> = Vec::new();
        for it in &items {
            for p in by_pattern.iter().chain(gets.iter()) {
                if let Some((k, _)) = pattern_key(p, &it.elem) {
                    wanted.push(k);
                }
            }
        }
        ctx.ks.lock_keys(wanted.iter());
    }

    let mut conversion_error = false;
    if !dontsort {
        for it in items.iter_mut() {
            let byval = match sortby {
                Some(p) => match lookup_by_pattern(ctx, p, &it.elem) {
                    Some(v) => v,
                    None => continue,
                },
                None => {
                    if !alpha {
                        match sort_score(&it.elem) {
                            Some(s) => it.score = s,
                            None => conversion_error = true,
                        }
                    }
                    continue;
                }
            };
            if alpha {
                it.cmp = Some(byval);
            } else {
                match sort_score(&byval) {
                    Some(s) => it.score = s,
                    None => conversion_error = true,
                }
            }
        }
        let by = sortby.is_some();
        items.sort_by(|a, b| {
            let c = if !alpha {
                a.score
                    .partial_cmp(&b.score)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| a.elem.cmp(&b.elem))
            } else if by {
                match (&a.cmp, &b.cmp) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Less,
                    (Some(_), None) => Ordering::Greater,
                }
            } else {
                a.elem.cmp(&b.elem)
            };
            if desc {
                c.reverse()
            } else {
                c
            }
        });
    }

    if conversion_error {
        ctx.out
            .error("ERR One or more scores can't be converted into double");
        return Outcome::Done;
    }
    let range: &[SortItem] = if end >= start {
        &items[start as usize..=(end as usize).min(items.len().saturating_sub(1))]
    } else {
        &[]
    };
    match store {
        None => {
            let per = gets.len().max(1);
            ctx.out.array(range.len() * per);
            for it in range {
                if gets.is_empty() {
                    ctx.out.bulk(&it.elem);
                }
                for g in &gets {
                    let v = lookup_by_pattern(ctx, g, &it.elem);
                    ctx.out.opt_bulk(v.as_deref());
                }
            }
        }
        Some(dest) => {
            let mut list: VecDeque<Box<[u8]>> = VecDeque::with_capacity(range.len());
            for it in range {
                if gets.is_empty() {
                    list.push_back(it.elem.clone());
                }
                for g in &gets {
                    let v = lookup_by_pattern(ctx, g, &it.elem).unwrap_or_default();
                    list.push_back(v.into_boxed_slice());
                }
            }
            let n = list.len();
            if n > 0 {
                ctx.ks.set(dest, Value::List(Box::new(list)), false);
                ctx.notify(ev::LIST, "sortstore", dest);
            } else if ctx.ks.remove(dest).is_some() {
                ctx.notify(ev::GENERIC, "del", dest);
            }
            ctx.out.int(n as i64);
        }
    }
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parsing() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+12"), Some(12));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b" 1"), None);
        assert_eq!(parse_cursor(b"1 "), None);
        assert_eq!(parse_cursor(b"+"), None);
        assert_eq!(parse_cursor(b"abc"), None);
        assert_eq!(parse_cursor(b"18446744073709551616"), None);
    }

    #[test]
    fn sort_scores() {
        assert_eq!(sort_score(b""), Some(0.0));
        assert_eq!(sort_score(b"1.5"), Some(1.5));
        assert_eq!(sort_score(b" 2"), Some(2.0));
        assert_eq!(sort_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(sort_score(b"2 "), None);
        assert_eq!(sort_score(b"  "), None);
        assert_eq!(sort_score(b"abc"), None);
        assert_eq!(sort_score(b"nan"), None);
        assert_eq!(sort_score(b"1e400"), None);
        assert_eq!(sort_score(b"1e-400"), None);
        assert_eq!(sort_score(b"0e5"), Some(0.0));
    }

    #[test]
    fn pattern_keys() {
        assert_eq!(pattern_key(b"w_*", b"1"), Some((b"w_1".to_vec(), None)));
        assert_eq!(
            pattern_key(b"h_*->f", b"a"),
            Some((b"h_a".to_vec(), Some(b"f".to_vec())))
        );
        assert_eq!(pattern_key(b"h_*->", b"a"), Some((b"h_a->".to_vec(), None)));
        assert_eq!(pattern_key(b"nosort", b"a"), None);
    }
}
