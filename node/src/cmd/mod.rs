//! Command dispatch: from a parsed request to a reply.
//!
//! The path is: look the command up in protocol's command table → check arity, auth, MULTI and
//! pub/sub context → lock the shards of the command's keys (positions from the table) →
//! run the family handler with a [`Ctx`] → account (stats, slowlog, dirty writes).
//!
//! To add a command: implement `fn(&mut Ctx) -> Outcome` in its family file and list it in that
//! file's `COMMANDS`; key positions, arity and flags come from protocol's table.

pub mod cluster;
pub mod connection;
pub mod dump;
pub mod hashes;
pub mod hll;
pub mod keys;
pub mod lists;
pub mod pubsub;
pub mod replication;
pub mod server;
pub mod sets;
pub mod strings;
pub mod transactions;
pub mod zsets;

use crate::client::{Client, ReplyMode};
use crate::db::Locked;
use crate::reply::Reply;
use crate::server::Server;
use bytes::Bytes;
use slotgate_protocol::commands::{self, flags, CommandSpec, KeyPositions};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A command implementation.
pub type Handler = fn(&mut Ctx<'_, '_>) -> Outcome;

/// What a handler asks the connection to do next.
pub enum Outcome {
    /// The reply is written.
    Done,
    /// Nothing was available: the client was queued on `keys` (via [`Locked::block_on`]);
    /// wait until woken or until `timeout_ms` (0 = forever) passes, then run the command again.
    Block {
        /// Keys the client waits on.
        keys: Vec<Bytes>,
        /// Timeout in milliseconds, 0 for none.
        timeout_ms: u64,
        /// Reply on timeout.
        on_timeout: TimeoutReply,
    },
    /// Close the connection after flushing the reply (QUIT).
    Close,
    /// WAIT: reply the number of replicas that acknowledged `offset` once `replicas` did or
    /// `timeout_ms` (0 = forever) passed.
    Wait {
        /// Replicas wanted.
        replicas: usize,
        /// The client's last write offset.
        offset: u64,
        /// Timeout in milliseconds, 0 for none.
        timeout_ms: u64,
    },
    /// PSYNC/SYNC: the connection becomes a replication link.
    Replicate(Box<crate::replication::master::LinkStart>),
}

/// Commands to propagate instead of the one executed (see [`Ctx::propagate_as`]).
pub type Rewrite = smallvec::SmallVec<[Vec<Bytes>; 1]>;

/// The reply a blocking command gives when it times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReply {
    /// Null array (BLPOP, BZPOPMIN, BLMPOP...).
    NullArray,
    /// Null bulk (BLMOVE, BRPOPLPUSH).
    NullBulk,
}

/// Everything a handler may use.
pub struct Ctx<'a, 's> {
    /// Shared server state.
    pub server: &'s Server,
    /// This connection's state.
    pub client: &'a mut Client,
    /// Reply writer.
    pub out: &'a mut Reply,
    /// The locked keyspace view (the command's key shards are already locked).
    pub ks: &'a mut Locked<'s>,
    /// The request, command name included.
    pub args: &'a [Bytes],
    /// The command's table entry.
    pub spec: &'static CommandSpec,
    /// True while running inside EXEC (blocking commands must not block).
    pub in_exec: bool,
    /// Set by handlers whose effect must reach replicas as other commands (relative
    /// expiry, random or blocking pops, float increments); None propagates the request.
    pub rewrite: Option<Rewrite>,
}

impl Ctx<'_, '_> {
    /// The argument at `i` (name is 0).
    pub fn arg(&self, i: usize) -> &[u8] {
        &self.args[i]
    }

    /// Parses argument `i` as an integer, replying the Redis error when it is not one.
    pub fn int_arg(&mut self, i: usize) -> Option<i64> {
        match slotgate_protocol::resp::parse_i64(&self.args[i]) {
            Some(n) => Some(n),
            None => {
                self.out.not_integer();
                None
            }
        }
    }

    /// Parses argument `i` as a float, replying the Redis error when it is not one.
    pub fn float_arg(&mut self, i: usize) -> Option<f64> {
        match crate::reply::parse_f64(&self.args[i]) {
            Some(n) => Some(n),
            None => {
                self.out.not_float();
                None
            }
        }
    }

    /// True when this command's writes are propagated (a master feeding replicas); handlers
    /// only build rewrites then.
    pub fn replicating(&self) -> bool {
        self.server.repl.feeding() && !self.server.repl.is_replica()
    }

    /// Propagates `cmds` instead of this request (no-op unless [`Ctx::replicating`]).
    pub fn propagate_as(&mut self, cmds: impl IntoIterator<Item = Vec<Bytes>>) {
        if self.replicating() {
            self.rewrite.get_or_insert_with(Rewrite::new).extend(cmds);
        }
    }

    /// Records keyspace event `name` of `class` (a [`crate::notify`] class) on `key`.
    pub fn notify(&mut self, class: u32, name: &'static str, key: &[u8]) {
        self.ks.notify(class, name, key);
    }

    /// Upper-case comparison of argument `i` with `word`.
    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }
}

/// The handler registry, built once at start from every family's `COMMANDS`.
pub struct Registry {
    map: hashbrown::HashMap<&'static str, Handler>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// Collects every family's commands.
    pub fn new() -> Registry {
        let mut map = hashbrown::HashMap::new();
        for family in [
            connection::COMMANDS,
            dump::COMMANDS,
            server::COMMANDS,
            keys::COMMANDS,
            strings::COMMANDS,
            hashes::COMMANDS,
            lists::COMMANDS,
            sets::COMMANDS,
            zsets::COMMANDS,
            hll::COMMANDS,
            pubsub::COMMANDS,
            transactions::COMMANDS,
            cluster::COMMANDS,
            replication::COMMANDS,
        ] {
            for (name, h) in family {
                map.insert(*name, *h);
            }
        }
        Registry { map }
    }

    /// The handler for a top-level command name (lowercase, as in the table).
    pub fn get(&self, name: &str) -> Option<Handler> {
        self.map.get(name).copied()
    }

    /// True when slotgate implements the command (COMMAND lists only those).
    pub fn implements(&self, spec: &CommandSpec) -> bool {
        let top = if spec.container.is_empty() {
            spec.name
        } else {
            spec.container
        };
        self.map.contains_key(top)
    }
}

/// Commands that read or change the whole database: they lock every shard. (SCAN locks
/// only the shards of the slots one call visits, as it reaches them.)
fn db_wide(name: &str) -> bool {
    matches!(
        name,
        "keys" | "dbsize" | "randomkey" | "flushdb" | "exec" | "swapdb"
    )
}

fn unknown_command(out: &mut Reply, args: &[Bytes]) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        trunc(&args[0])
    );
    for a in args.iter().skip(1) {
        msg.push_str(&format!("'{}' ", trunc(a)));
    }
    out.error(&msg);
}

fn trunc(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned()
}

/// Outcome of [`dispatch`] plus whether the command was a write (for propagation).
pub fn dispatch(server: &Server, client: &mut Client, out: &mut Reply, args: &[Bytes]) -> Outcome {
    // rename-command: a renamed or disabled command is unknown under its own name; its new
    // name runs it.
    let renamed: Vec<Bytes>;
    let args = match server.renames.is_empty() {
        true => args,
        false => match server.renames.get(&args[0].to_ascii_lowercase()[..]) {
            None => args,
            Some(None) => {
                if client.multi.is_some() {
                    client.multi_error = true;
                }
                unknown_command(out, args);
                return Outcome::Done;
            }
            Some(Some(name)) => {
                renamed = std::iter::once(Bytes::from_static(name.as_bytes()))
                    .chain(args[1..].iter().cloned())
                    .collect();
                &renamed[..]
            }
        },
    };
    let Some(spec) = commands::resolve(args) else {
        if client.multi.is_some() {
            client.multi_error = true;
        }
        unknown_command(out, args);
        return Outcome::Done;
    };
    let top = if spec.container.is_empty() {
        spec
    } else {
        commands::lookup(&args[0]).unwrap_or(spec)
    };
    let Some(handler) = server.registry.get(top.name) else {
        if client.multi.is_some() {
            client.multi_error = true;
        }
        unknown_command(out, args);
        return Outcome::Done;
    };
    // A container whose subcommand is unknown: the handler answers "unknown subcommand".
    if !commands::arity_ok(top, args.len()) {
        reject(
            client,
            out,
            &format!("ERR wrong number of arguments for '{}' command", top.name),
        );
        return Outcome::Done;
    }
    if spec.container.is_empty() || commands::arity_ok(spec, args.len()) {
    } else {
        reject(
            client,
            out,
            &format!("ERR wrong number of arguments for '{}' command", spec.name),
        );
        return Outcome::Done;
    }
    if !client.authenticated && !spec.has_flag(flags::NO_AUTH) && server.requires_auth() {
        reject(client, out, "NOAUTH Authentication required.");
        return Outcome::Done;
    }
    // Cluster mode: MOVED/ASK/TRYAGAIN/CROSSSLOT/CLUSTERDOWN before the command runs or is
    // queued (an EXEC is checked against its queue and discarded on error). See cluster/mod.rs.
    if let Some(cl) = server.cluster.as_deref() {
        if !client.from_master {
            if let Err(r) = cl.route(&server.ks, client, top, spec, args) {
                reject(client, out, &r.text());
                return Outcome::Done;
            }
        }
    }
    // maxmemory: evict first; when nothing more can go, refuse what may grow memory.
    if server.evict.active() && !client.from_master && oom_check(server, client, top, spec, out) {
        return Outcome::Done;
    }
    let refusal = disk_error_check(server, client, top, spec)
        .or_else(|| replication_check(server, client, top, spec));
    if let Some(msg) = refusal {
        if top.name == "exec" && client.multi.is_some() {
            // As Redis: an EXEC refused for what it holds aborts the transaction.
            client.multi_error = true;
            client.exec_abort = Some(msg);
        } else {
            reject(client, out, msg);
            return Outcome::Done;
        }
    }
    if client.multi.is_some()
        && !matches!(
            top.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        )
    {
        if spec.has_flag(flags::NO_MULTI) {
            reject(client, out, "ERR Command not allowed inside a transaction");
            return Outcome::Done;
        }
        let mut kp = KeyPositions::new();
        if let Err(e) = commands::key_positions(spec, args, &mut kp) {
            reject(client, out, &e.to_string());
            return Outcome::Done;
        }
        if let Some(q) = client.multi.as_mut() {
            q.push(args.to_vec());
            client.handle.multi.store(q.len() as u64, Ordering::Relaxed);
        }
        out.simple("QUEUED");
        return Outcome::Done;
    }
    if client.in_pubsub()
        && !out.resp3
        && !matches!(
            top.name,
            "subscribe"
                | "psubscribe"
                | "unsubscribe"
                | "punsubscribe"
                | "ssubscribe"
                | "sunsubscribe"
                | "ping"
                | "quit"
                | "reset"
        )
    {
        out.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
        return Outcome::Done;
    }
    run(server, client, out, args, spec, handler, false, None)
}

/// Runs the evictions `maxmemory` needs; true when the command was refused with OOM.
/// As Redis: commands flagged `denyoom` are refused, and so is anything queued in MULTI (the
/// queue itself grows); an EXEC whose queue holds a `denyoom` command aborts the transaction.
fn oom_check(
    server: &Server,
    client: &mut Client,
    top: &CommandSpec,
    spec: &CommandSpec,
    out: &mut Reply,
) -> bool {
    if server.evict.perform(server) != crate::evict::Evicted::Fail {
        return false;
    }
    let queuing = client.multi.is_some()
        && !matches!(
            top.name,
            "exec" | "discard" | "quit" | "reset" | "multi" | "watch"
        );
    if spec.has_flag(flags::DENYOOM) || queuing {
        reject(client, out, crate::evict::ERR_OOM);
        return true;
    }
    if top.name == "exec" && queued_has(client, flags::DENYOOM) {
        // The EXEC handler answers EXECABORT with this reason.
        client.multi_error = true;
        client.exec_abort = Some(crate::evict::ERR_OOM);
    }
    false
}

/// True when a command queued in the client's MULTI has `flag`.
fn queued_has(client: &Client, flag: u64) -> bool {
    client.multi.as_ref().is_some_and(|q| {
        q.iter()
            .any(|a| commands::resolve(a).is_some_and(|s| s.has_flag(flag)))
    })
}

/// redis-server's reply while writes are stopped by a failed background save.
pub const ERR_MISCONF: &str = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.";

/// `stop-writes-on-bgsave-error`: after a failed background save, with save points set,
/// writes (an EXEC holding one too) and PING are refused with MISCONF until a save succeeds,
/// as redis-server does. Commands from our master are never refused.
fn disk_error_check(
    server: &Server,
    client: &Client,
    top: &CommandSpec,
    spec: &CommandSpec,
) -> Option<&'static str> {
    if client.from_master || server.persist.last_ok.load(Ordering::Relaxed) {
        return None;
    }
    let write = spec.has_flag(flags::WRITE)
        || top.name == "ping"
        || (top.name == "exec" && queued_has(client, flags::WRITE));
    if !write
        || !server.config.read().get_bool("stop-writes-on-bgsave-error")
        || crate::persist::save_points(server).is_empty()
    {
        return None;
    }
    Some(ERR_MISCONF)
}

/// Replica and master-side refusals: writes on a read-only replica, stale data while the
/// master link is down (`replica-serve-stale-data no`), and writes without enough good
/// replicas (`min-replicas-to-write`). An EXEC counts as a write when its queue holds one.
fn replication_check(
    server: &Server,
    client: &Client,
    top: &CommandSpec,
    spec: &CommandSpec,
) -> Option<&'static str> {
    let repl = &server.repl;
    if client.from_master {
        return None;
    }
    let write = spec.has_flag(flags::WRITE)
        || (top.name == "exec" && repl_checks_on(server) && queued_has(client, flags::WRITE));
    if repl.is_replica() {
        let c = server.config.read();
        if write && server.cluster.is_none() && c.get_bool("replica-read-only") {
            return Some("READONLY You can't write against a read only replica.");
        }
        if !spec.has_flag(flags::STALE)
            && !c.get_bool("replica-serve-stale-data")
            && !repl.link_up()
        {
            return Some(
                "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            );
        }
        return None;
    }
    let min = repl.min_replicas.load(Ordering::Relaxed);
    if min > 0 && write {
        let lag = repl.min_replicas_lag.load(Ordering::Relaxed);
        if (repl.good_replicas(crate::db::now_ms(), lag) as u64) < min {
            return Some("NOREPLICAS Not enough good replicas to write.");
        }
    }
    None
}

/// True when a write could be refused here (a replica, or `min-replicas-to-write` set): only
/// then is an EXEC's queue looked through.
fn repl_checks_on(server: &Server) -> bool {
    server.repl.is_replica() || server.repl.min_replicas.load(Ordering::Relaxed) > 0
}

fn reject(client: &mut Client, out: &mut Reply, msg: &str) {
    if client.multi.is_some() {
        client.multi_error = true;
    }
    out.error(msg);
}

/// The keys a write command reads as Redis's `lookupKeyRead` does (counted as keyspace hits
/// or misses): the fetched key of GETDEL/GETEX/GETSET/SET ... GET, COPY's source, the sources
/// of the STORE commands.
fn read_keys<'a>(name: &str, args: &'a [Bytes]) -> &'a [Bytes] {
    let from = |i: usize| args.get(i..).unwrap_or_default();
    match name {
        "getdel" | "getex" | "getset" | "copy" | "sort" => args.get(1..2).unwrap_or_default(),
        "set" if from(3).iter().any(|a| a.eq_ignore_ascii_case(b"get")) => {
            args.get(1..2).unwrap_or_default()
        }
        "sunionstore" | "sinterstore" | "sdiffstore" | "zrangestore" => from(2),
        "bitop" => from(3),
        "pfmerge" => from(1),
        "zunionstore" | "zinterstore" | "zdiffstore" => {
            let n = args
                .get(2)
                .and_then(|n| slotgate_protocol::resp::parse_i64(n))
                .unwrap_or(0)
                .max(0) as usize;
            args.get(3..3 + n)
                .or_else(|| args.get(3..))
                .unwrap_or_default()
        }
        _ => &[],
    }
}

/// Runs one command with its keys locked. `held` is the EXEC view holding every shard.
#[allow(clippy::too_many_arguments)]
pub fn run<'a>(
    server: &'a Server,
    client: &mut Client,
    out: &mut Reply,
    args: &[Bytes],
    spec: &'static CommandSpec,
    handler: Handler,
    in_exec: bool,
    held: Option<&mut Locked<'a>>,
) -> Outcome {
    let started = Instant::now();
    let errors_before = out.count;
    let buf_before = out.buf.len();
    let mut own;
    let ks: &mut Locked<'a> = match held {
        Some(h) => {
            h.set_db(client.db);
            h
        }
        None => {
            own = Locked::new(&server.ks, client.db, client.now_ms);
            if client.from_master {
                own.ignore_expired = true;
            } else if server.repl.is_replica()
                || (server.repl.pause_set() && server.repl.writes_paused(client.now_ms))
            {
                // Replicas, and masters during CLIENT PAUSE, hide expired keys but keep them.
                own.no_delete_expired = true;
            } else if server.repl.feeding() {
                own.track_expired = true;
            }
            let mut kp = KeyPositions::new();
            match commands::key_positions(spec, args, &mut kp) {
                Ok(()) => {}
                Err(e) => {
                    out.error(&e.to_string());
                    return Outcome::Done;
                }
            }
            if db_wide(spec.name) || db_wide(spec.container) {
                own.lock_all();
            } else if !kp.is_empty() {
                own.lock_request_keys(kp.iter().map(|&i| &args[i][..]));
            }
            &mut own
        }
    };
    // CLIENT LIST shows the command a client is running (its own CLIENT LIST too), as Redis.
    *client.handle.last_cmd.lock() = spec.name;
    let dirty_before = ks.dirty;
    let notify = server.notify_flags.load(Ordering::Relaxed);
    ks.notify = notify;
    if client.from_master {
        ks.count_reads(false, &[]);
    } else {
        let readonly = spec.has_flag(flags::READONLY);
        ks.count_reads(
            readonly,
            if readonly {
                &[][..]
            } else {
                read_keys(spec.name, args)
            },
        );
    }
    let mut ctx = Ctx {
        server,
        client: &mut *client,
        out: &mut *out,
        ks: &mut *ks,
        args,
        spec,
        in_exec,
        rewrite: None,
    };
    let outcome = handler(&mut ctx);
    let rewrite = ctx.rewrite.take();
    if spec.name == "exec" {
        // The queued commands showed themselves while they ran; EXEC is the last command.
        *client.handle.last_cmd.lock() = spec.name;
    }
    let dirty = ks.dirty - dirty_before;
    // Replication: lazily expired keys first (their DELs), then the command or its rewrite,
    // all while the keys' shards are still locked so the stream keeps execution order.
    if !ks.expired_keys.is_empty() {
        let db = ks.db_index();
        for k in std::mem::take(&mut ks.expired_keys) {
            server.repl.propagate(db, &[b"DEL", &k]);
        }
    }
    if dirty > 0 {
        server.stats.dirty.add(client.handle.id, dirty);
        if server.repl.feeding() && !client.from_master {
            if spec.name == "exec" {
                // A transaction reaches replicas as MULTI ... EXEC around its writes.
                if client.exec_multi_sent {
                    client.exec_multi_sent = false;
                    server.repl.propagate(client.db, &[b"EXEC"]);
                }
            } else {
                let rewrite = rewrite.or_else(|| {
                    let reply = out.buf.get(buf_before..).unwrap_or_default();
                    crate::replication::rewrite::rewrite(spec.name, args, ks, reply)
                });
                if in_exec && !client.exec_multi_sent {
                    client.exec_multi_sent = true;
                    server.repl.propagate(client.db, &[b"MULTI"]);
                }
                match rewrite {
                    Some(cmds) => {
                        for c in &cmds {
                            server.repl.propagate_bytes(client.db, c);
                        }
                    }
                    None => server.repl.propagate_bytes(client.db, args),
                }
            }
            client.woff = server.repl.offset();
        }
    }
    ks.read_stats = false;
    if ks.events.is_some() {
        crate::notify::publish_all(server, notify, &mut ks.events);
    }
    let micros = started.elapsed().as_micros() as u64;
    server.stats.commands.add(client.handle.id, 1);
    let failed =
        out.buf.len() > buf_before && out.buf[buf_before] == b'-' && out.count > errors_before;
    if failed {
        server.stats.errors.add(client.handle.id, 1);
    }
    if !spec.has_flag(flags::SKIP_SLOWLOG) {
        server.record_command(spec.name, micros, failed, args, &client.handle);
    }
    if client.reply_mode == ReplyMode::Skipping || client.reply_mode == ReplyMode::Off {
        out.buf.truncate(buf_before);
    }
    outcome
}
