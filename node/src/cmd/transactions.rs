//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Queued commands run in EXEC with every shard of the database locked, so no other client
//! sees a partial transaction. WATCH registers a per-client flag on the key's shard; any write
//! to the key sets it and EXEC then replies with a null array.

use super::{Ctx, Handler, Outcome};
use crate::client::Client;
use crate::db::Locked;
use crate::server::Server;
use slotgate_protocol::commands;
use std::sync::atomic::Ordering;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("multi", multi),
    ("exec", exec),
    ("discard", discard),
    ("watch", watch),
    ("unwatch", unwatch),
];

fn multi(ctx: &mut Ctx) -> Outcome {
    if ctx.client.multi.is_some() {
        ctx.out.error("ERR MULTI calls can not be nested");
        return Outcome::Done;
    }
    ctx.client.multi = Some(Vec::new());
    ctx.client.multi_error = false;
    ctx.client.exec_abort = None;
    ctx.client.handle.multi.store(0, Ordering::Relaxed);
    ctx.client.handle.flags.lock().replace_range(.., "x");
    ctx.out.ok();
    Outcome::Done
}

fn end_multi(ctx: &mut Ctx) {
    ctx.client.multi = None;
    ctx.client.multi_error = false;
    ctx.client.handle.multi.store(u64::MAX, Ordering::Relaxed);
    ctx.client.handle.flags.lock().replace_range(.., "N");
}

fn discard(ctx: &mut Ctx) -> Outcome {
    if ctx.client.multi.is_none() {
        ctx.out.error("ERR DISCARD without MULTI");
        return Outcome::Done;
    }
    end_multi(ctx);
    unwatch_locked(ctx.ks, ctx.client);
    ctx.out.ok();
    Outcome::Done
}

fn exec(ctx: &mut Ctx) -> Outcome {
    let Some(queue) = ctx.client.multi.take() else {
        ctx.out.error("ERR EXEC without MULTI");
        return Outcome::Done;
    };
    let aborted = ctx.client.multi_error;
    end_multi(ctx);
    if aborted {
        unwatch_locked(ctx.ks, ctx.client);
        match ctx.client.exec_abort.take() {
            Some(why) => ctx.out.error(&format!(
                "EXECABORT Transaction discarded because of: {why}"
            )),
            None => ctx
                .out
                .error("EXECABORT Transaction discarded because of previous errors."),
        }
        return Outcome::Done;
    }
    if ctx.client.watch_flag.load(Ordering::Acquire) {
        unwatch_locked(ctx.ks, ctx.client);
        ctx.out.null_array();
        return Outcome::Done;
    }
    unwatch_locked(ctx.ks, ctx.client);
    ctx.out.array(queue.len());
    let server = ctx.server;
    for args in &queue {
        let Some(spec) = commands::resolve(args) else {
            ctx.out.error("ERR unknown command");
            continue;
        };
        let top = commands::lookup(&args[0]).unwrap_or(spec);
        let Some(handler) = server.registry.get(top.name) else {
            ctx.out.error("ERR unknown command");
            continue;
        };
        let outcome = super::run(
            server,
            ctx.client,
            ctx.out,
            args,
            spec,
            handler,
            true,
            Some(&mut *ctx.ks),
        );
        if matches!(outcome, Outcome::Close) {
            return Outcome::Close;
        }
    }
    Outcome::Done
}

fn watch(ctx: &mut Ctx) -> Outcome {
    if ctx.client.multi.is_some() {
        ctx.out.error("ERR WATCH inside MULTI is not allowed");
        return Outcome::Done;
    }
    let db = ctx.client.db;
    for k in &ctx.args[1..] {
        if ctx.client.watched.iter().any(|(d, w)| *d == db && w == k) {
            continue;
        }
        ctx.ks.watch(k, ctx.client.watch_flag.clone());
        ctx.client.watched.push((db, k.clone()));
    }
    ctx.out.ok();
    Outcome::Done
}

fn unwatch(ctx: &mut Ctx) -> Outcome {
    unwatch_locked(ctx.ks, ctx.client);
    ctx.out.ok();
    Outcome::Done
}

/// Drops every WATCH of `client` using (and extending) an existing locked view.
fn unwatch_locked(ks: &mut Locked<'_>, client: &mut Client) {
    let db = ks.db_index();
    for (d, k) in std::mem::take(&mut client.watched) {
        ks.set_db(d);
        ks.unwatch(&k, &client.watch_flag);
    }
    ks.set_db(db);
    client.watch_flag.store(false, Ordering::Release);
}

/// Drops every WATCH of `client` (on disconnect and RESET).
pub fn unwatch_all(server: &Server, client: &mut Client) {
    if client.watched.is_empty() {
        client.watch_flag.store(false, Ordering::Release);
        return;
    }
    let mut l = Locked::new(&server.ks, client.db, crate::db::now_ms());
    unwatch_locked(&mut l, client);
}
