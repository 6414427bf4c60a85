//! DUMP and RESTORE (and RESTORE-ASKING): serialized values in Redis's DUMP format.
//!
//! The payload codec lives in [`crate::rdb`]. LRU/LFU hints (`IDLETIME`, `FREQ`) are validated
//! like Redis does but not stored: slotgate keeps no per-key access clock.

use super::{Ctx, Handler, Outcome};
use crate::db::Entry;
use crate::rdb;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("dump", dump),
    ("restore", restore),
    // Same as RESTORE; its cluster ASKING semantics (the ASKING flag) arrive with cluster mode.
    ("restore-asking", restore),
];

fn dump(ctx: &mut Ctx) -> Outcome {
    match ctx.ks.get(&ctx.args[1]) {
        Some(e) => {
            let payload = rdb::dump_value(&e.value);
            ctx.out.bulk(&payload);
        }
        None => ctx.out.null(),
    }
    Outcome::Done
}

/// RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]
fn restore(ctx: &mut Ctx) -> Outcome {
    let mut replace = false;
    let mut absttl = false;
    let mut idletime: Option<i64> = None;
    let mut freq: Option<i64> = None;
    let mut j = 4;
    // Options first, in Redis's order of checks: options, BUSYKEY, TTL, payload.
    while j < ctx.args.len() {
        let additional = ctx.args.len() - j - 1;
        if ctx.arg_is(j, "REPLACE") {
            replace = true;
        } else if ctx.arg_is(j, "ABSTTL") {
            absttl = true;
        } else if ctx.arg_is(j, "IDLETIME") && additional >= 1 && freq.is_none() {
            let Some(v) = ctx.int_arg(j + 1) else {
                return Outcome::Done;
            };
            if v < 0 {
                ctx.out.error("ERR Invalid IDLETIME value, must be >= 0");
                return Outcome::Done;
            }
            idletime = Some(v);
            j += 1;
        } else if ctx.arg_is(j, "FREQ") && additional >= 1 && idletime.is_none() {
            let Some(v) = ctx.int_arg(j + 1) else {
                return Outcome::Done;
            };
            if !(0..=255).contains(&v) {
                ctx.out
                    .error("ERR Invalid FREQ value, must be >= 0 and <= 255");
                return Outcome::Done;
            }
            freq = Some(v);
            j += 1;
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
        j += 1;
    }

    let key = &ctx.args[1];
    if !replace && ctx.ks.exists(key) {
        ctx.out.error("BUSYKEY Target key name already exists.");
        return Outcome::Done;
    }
    let Some(ttl) = ctx.int_arg(2) else {
        return Outcome::Done;
    };
    if ttl < 0 {
        ctx.out.error("ERR Invalid TTL value, must be >= 0");
        return Outcome::Done;
    }
    let value = match rdb::restore_value(&ctx.args[3]) {
        Ok(v) => v,
        Err(e) => {
            ctx.out.error(e.restore_reply());
            return Outcome::Done;
        }
    };

    let now = i64::try_from(ctx.ks.now).unwrap_or(i64::MAX);
    // Redis 7.0 adds the relative TTL to the clock with wrapping arithmetic; an overflow lands
    // in the past and the key is (like any already-expired restore) not created.
    let at = if ttl != 0 && !absttl {
        ttl.wrapping_add(now)
    } else {
        ttl
    };
    // Replicas keep keys whose TTL already passed (the master decides), as Redis does.
    if ttl != 0 && at <= now && !ctx.ks.no_delete_expired {
        if replace && ctx.ks.remove(key).is_some() {
            ctx.notify(crate::notify::GENERIC, "del", key);
        }
        ctx.out.ok();
        return Outcome::Done;
    }
    let expire_at = if ttl == 0 { 0 } else { at.max(1) as u64 };
    if replace {
        // Redis deletes the old key and adds the restored one anew (a `new` event).
        ctx.ks.remove(key);
    }
    ctx.ks.set_entry(key, Entry::with_expiry(value, expire_at));
    if idletime.is_some() || freq.is_some() {
        ctx.ks
            .set_access(key, idletime.map(|v| v as u64), freq.map(|v| v as u32));
    }
    ctx.notify(crate::notify::GENERIC, "restore", key);
    ctx.out.ok();
    Outcome::Done
}
