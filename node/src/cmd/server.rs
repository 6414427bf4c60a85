//! Server commands: INFO, DBSIZE, FLUSHDB, FLUSHALL, SWAPDB, CONFIG, COMMAND, TIME, ROLE,
//! LASTSAVE, SAVE, BGSAVE, BGREWRITEAOF, SHUTDOWN, SLOWLOG, MONITOR, DEBUG, FUNCTION, MEMORY,
//! LATENCY and WAIT, with Redis 7.0's reply shapes and error texts.
//!
//! Not (yet) backed by the real thing: SAVE/BGSAVE write no file (persistence does not exist
//! yet; they only reset the change counter and LASTSAVE), WAIT answers 0 at once (standalone,
//! no replicas), FUNCTION knows no engine (an empty library set), LATENCY keeps no samples.

use super::{Ctx, Handler, Outcome};
use crate::reply::Reply;
use crate::server::Server;
use crate::value::Value;
use parking_lot::Mutex;
use slotgate_protocol::commands::{self, BeginSearch, CommandSpec, FindKeys, KeyPositions};
use slotgate_protocol::resp::{self, parse_i64};
use slotgate_protocol::Frame;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[
    ("info", info),
    ("dbsize", dbsize),
    ("flushdb", flushdb),
    ("flushall", flushall),
    ("config", config),
    ("command", command),
    ("time", time),
    ("lastsave", lastsave),
    ("save", save),
    ("bgsave", bgsave),
    ("bgrewriteaof", bgrewriteaof),
    ("shutdown", shutdown),
    ("slowlog", slowlog),
    ("monitor", monitor),
    ("debug", debug),
    ("function", function),
    ("memory", memory),
    ("latency", latency),
    ("swapdb", swapdb),
];

/// The empty FUNCTION DUMP payload of Redis 7.0 (no libraries, RDB version 10, CRC64).
const EMPTY_FUNCTION_DUMP: &[u8] = b"\x0a\x00\x5d\x9b\x5c\x40\x0f\x7f\xa2\xda";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn unknown_subcommand(ctx: &mut Ctx, cmd: &str) {
    let msg = format!(
        "ERR unknown subcommand '{}'. Try {cmd} HELP.",
        lossy(&ctx.args[1])
    );
    ctx.out.error(&msg);
}

fn help(out: &mut Reply, lines: &[&str]) {
    out.array(lines.len());
    for l in lines {
        out.simple(l);
    }
}

/// Writes a protocol [`Frame`] with the client's protocol (maps/sets/nulls follow RESP2/3).
fn write_frame(out: &mut Reply, f: &Frame) {
    match f {
        Frame::Simple(s) => {
            out.count += 1;
            resp::write_simple(&mut out.buf, s);
        }
        Frame::Error(e) => {
            out.count += 1;
            resp::write_error(&mut out.buf, e);
        }
        Frame::Integer(i) => out.int(*i),
        Frame::Bulk(b) | Frame::BigNumber(b) => out.bulk(b),
        Frame::Null => out.null(),
        Frame::Array(v) => {
            out.array(v.len());
            v.iter().for_each(|x| write_frame(out, x));
        }
        Frame::Double(d) => out.double(*d),
        Frame::Boolean(b) => out.boolean(*b),
        Frame::Verbatim(_, d) => out.verbatim(d),
        Frame::Map(pairs) => {
            out.map(pairs.len());
            for (k, v) in pairs {
                write_frame(out, k);
                write_frame(out, v);
            }
        }
        Frame::Set(v) => {
            out.set(v.len());
            v.iter().for_each(|x| write_frame(out, x));
        }
        Frame::Push(v) => {
            out.push(v.len());
            v.iter().for_each(|x| write_frame(out, x));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------------------------

/// Sections in the order Redis prints them; the flag says whether `default` includes it.
const SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("modules", true),
    ("commandstats", false),
    ("errorstats", true),
    ("latencystats", false),
    ("cluster", true),
    ("keyspace", true),
];

/// Which sections `INFO args...` asks for (Redis 7.0: several names, `default`/`all`/`everything`).
fn wanted_sections(args: &[bytes::Bytes]) -> Vec<&'static str> {
    let mut want = [false; SECTIONS.len()];
    if args.is_empty() {
        for (i, (_, d)) in SECTIONS.iter().enumerate() {
            want[i] = *d;
        }
    }
    for a in args {
        let a = a.to_ascii_lowercase();
        match a.as_slice() {
            b"default" => SECTIONS
                .iter()
                .enumerate()
                .for_each(|(i, (_, d))| want[i] |= *d),
            b"all" | b"everything" => want = [true; SECTIONS.len()],
            name => {
                let name: &[u8] = if name == b"module_list" {
                    b"modules"
                } else {
                    name
                };
                if let Some(i) = SECTIONS.iter().position(|(s, _)| s.as_bytes() == name) {
                    want[i] = true;
                }
            }
        }
    }
    SECTIONS
        .iter()
        .zip(want)
        .filter(|(_, w)| *w)
        .map(|((s, _), _)| *s)
        .collect()
}

/// `bytesToHuman` of Redis.
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    const K: f64 = 1024.0;
    if n < K {
        format!("{}B", n as u64)
    } else if n < K * K {
        format!("{:.2}K", n / K)
    } else if n < K * K * K {
        format!("{:.2}M", n / (K * K))
    } else if n < K * K * K * K {
        format!("{:.2}G", n / (K * K * K))
    } else if n < K * K * K * K * K {
        format!("{:.2}T", n / (K * K * K * K))
    } else {
        format!("{:.2}P", n / (K * K * K * K * K))
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Resident set size of this process in bytes (from /proc/self/statm).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page_size())
        .unwrap_or(0)
}

fn total_system_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    if pages > 0 {
        pages as u64 * page_size()
    } else {
        0
    }
}

/// Memory figures: (used, peak). slotgate has no allocator statistics, so "used" is the RSS.
/// (used, peak): the bytes allocated (counted by `crate::alloc`; the RSS when that allocator
/// is not installed).
fn used_memory() -> (u64, u64) {
    static PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let used = match crate::alloc::used() {
        0 => rss_bytes(),
        n => n,
    };
    let peak = PEAK.fetch_max(used, Ordering::Relaxed).max(used);
    (used, peak)
}

/// (sys, user) CPU seconds for `who` (RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD).
fn cpu_times(who: libc::c_int) -> (String, String) {
    // SAFETY: rusage is plain data; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return ("0.000000".into(), "0.000000".into());
    }
    let f = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (f(ru.ru_stime), f(ru.ru_utime))
}

fn uname() -> String {
    // SAFETY: utsname is plain data; uname only writes into it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "Linux".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        lossy(&bytes)
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

/// Sampled rates for INFO stats: ops/sec, input kbps, output kbps.
fn instantaneous(server: &Server) -> (u64, f64, f64) {
    struct Sample {
        at: Instant,
        cmds: u64,
        net_in: u64,
        net_out: u64,
        rates: (u64, f64, f64),
    }
    static SAMPLE: Mutex<Option<Sample>> = Mutex::new(None);
    let now = Instant::now();
    let cmds = server.stats.commands.load(Ordering::Relaxed);
    let net_in = server.stats.net_in.load(Ordering::Relaxed);
    let net_out = server.stats.net_out.load(Ordering::Relaxed);
    let mut s = SAMPLE.lock();
    let (at, c0, i0, o0) = match s.as_ref() {
        Some(p) if now.duration_since(p.at) < Duration::from_millis(100) => return p.rates,
        Some(p) if now.duration_since(p.at) < Duration::from_secs(5) => {
            (p.at, p.cmds, p.net_in, p.net_out)
        }
        _ => {
            // First sample (or a stale one): a short look back from now is not available, so
            // use the last second's worth as approximated by the average since start.
            let up = server.started.elapsed().as_secs_f64().max(1.0);
            let rates = (
                (cmds as f64 / up) as u64,
                net_in as f64 / up / 1024.0,
                net_out as f64 / up / 1024.0,
            );
            *s = Some(Sample {
                at: now,
                cmds,
                net_in,
                net_out,
                rates,
            });
            return rates;
        }
    };
    let secs = now.duration_since(at).as_secs_f64().max(0.001);
    let rates = (
        (cmds.saturating_sub(c0) as f64 / secs) as u64,
        net_in.saturating_sub(i0) as f64 / secs / 1024.0,
        net_out.saturating_sub(o0) as f64 / secs / 1024.0,
    );
    *s = Some(Sample {
        at: now,
        cmds,
        net_in,
        net_out,
        rates,
    });
    rates
}

/// Per-database (keys, expires) of every database that holds keys, locking every shard
/// through the command's view (safe inside EXEC, which already holds some of them).
fn keyspace_counts(ctx: &mut Ctx) -> Vec<(usize, usize, usize)> {
    ctx.ks.lock_everything();
    let mut per_db: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for (d, _, shard) in ctx.ks.all_shards_mut() {
        let e = per_db.entry(d).or_default();
        e.0 += shard.len();
        e.1 += shard.expires;
    }
    per_db
        .into_iter()
        .filter(|(_, (k, _))| *k > 0)
        .map(|(d, (k, e))| (d, k, e))
        .collect()
}

fn info_section(ctx: &mut Ctx, name: &str, s: &mut String) {
    let server = ctx.server;
    let st = &server.stats;
    let cfg = server.config.read().clone();
    let l = |s: &mut String, k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(s, "{k}:{v}\r\n");
    };
    match name {
        "server" => {
            s.push_str("# Server\r\n");
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            let up = server.started.elapsed().as_secs();
            let mode = if cfg.get_bool("cluster-enabled") {
                "cluster"
            } else {
                "standalone"
            };
            l(s, "redis_version", &crate::REDIS_VERSION);
            l(s, "redis_git_sha1", &"00000000");
            l(s, "redis_git_dirty", &0);
            l(s, "redis_build_id", &"0000000000000000");
            l(s, "redis_mode", &mode);
            l(s, "os", &uname());
            l(s, "arch_bits", &64);
            l(s, "monotonic_clock", &"POSIX clock_gettime");
            l(s, "multiplexing_api", &"epoll");
            l(s, "atomicvar_api", &"c11-builtin");
            l(s, "gcc_version", &"0.0.0");
            l(s, "process_id", &std::process::id());
            l(s, "process_supervised", &"no");
            l(s, "run_id", &server.run_id);
            l(s, "tcp_port", &server.port.load(Ordering::Relaxed));
            l(s, "server_time_usec", &now_us);
            l(s, "uptime_in_seconds", &up);
            l(s, "uptime_in_days", &(up / 86400));
            l(s, "hz", &cfg.get_int("hz"));
            l(s, "configured_hz", &cfg.get_int("hz"));
            l(s, "lru_clock", &((now_us / 1_000_000) & ((1 << 24) - 1)));
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            l(s, "executable", &exe);
            let file = cfg
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            l(s, "config_file", &file);
            l(s, "io_threads_active", &u8::from(server.io.active() > 1));
        }
        "clients" => {
            s.push_str("# Clients\r\n");
            let (n, blocked) = {
                let cl = server.clients.lock();
                let blocked = cl.values().filter(|c| c.flags.lock().contains('b')).count();
                (cl.len(), blocked)
            };
            l(s, "connected_clients", &n);
            l(s, "cluster_connections", &0);
            l(s, "maxclients", &cfg.get_int("maxclients"));
            l(s, "client_recent_max_input_buffer", &0);
            l(s, "client_recent_max_output_buffer", &0);
            l(s, "blocked_clients", &blocked);
            l(s, "tracking_clients", &0);
            l(s, "clients_in_timeout_table", &0);
        }
        "memory" => {
            s.push_str("# Memory\r\n");
            let rss = rss_bytes();
            let (used, peak) = used_memory();
            let not_counted = crate::evict::Evictor::not_counted(ctx.server);
            let sys = total_system_memory();
            let maxmem = cfg.get_int("maxmemory").max(0) as u64;
            l(s, "used_memory", &used);
            l(s, "used_memory_human", &human_bytes(used));
            l(s, "used_memory_rss", &rss);
            l(s, "used_memory_rss_human", &human_bytes(rss));
            l(s, "used_memory_peak", &peak);
            l(s, "used_memory_peak_human", &human_bytes(peak));
            let perc = if peak > 0 {
                used as f64 * 100.0 / peak as f64
            } else {
                100.0
            };
            l(s, "used_memory_peak_perc", &format!("{perc:.2}%"));
            l(s, "used_memory_overhead", &0);
            l(s, "used_memory_startup", &0);
            l(s, "used_memory_dataset", &used);
            l(s, "used_memory_dataset_perc", &"100.00%");
            l(s, "total_system_memory", &sys);
            l(s, "total_system_memory_human", &human_bytes(sys));
            l(s, "used_memory_lua", &0);
            l(s, "used_memory_vm_eval", &0);
            l(s, "used_memory_lua_human", &"0B");
            l(s, "used_memory_scripts_eval", &0);
            l(s, "number_of_cached_scripts", &0);
            l(s, "number_of_functions", &0);
            l(s, "number_of_libraries", &0);
            l(s, "used_memory_vm_functions", &0);
            l(s, "used_memory_vm_total", &0);
            l(s, "used_memory_vm_total_human", &"0B");
            l(s, "used_memory_functions", &0);
            l(s, "used_memory_scripts", &0);
            l(s, "used_memory_scripts_human", &"0B");
            l(s, "maxmemory", &maxmem);
            l(s, "maxmemory_human", &human_bytes(maxmem));
            l(s, "maxmemory_policy", &cfg.get("maxmemory-policy"));
            let frag = if used > 0 {
                rss as f64 / used as f64
            } else {
                1.0
            };
            l(s, "mem_fragmentation_ratio", &format!("{frag:.2}"));
            l(s, "mem_fragmentation_bytes", &(rss as i64 - used as i64));
            l(s, "mem_not_counted_for_evict", &not_counted);
            l(
                s,
                "mem_replication_backlog",
                &ctx.server.repl.buffer_bytes(),
            );
            l(s, "mem_total_replication_buffers", &0);
            l(s, "mem_clients_slaves", &0);
            l(s, "mem_clients_normal", &0);
            l(s, "mem_cluster_links", &0);
            l(s, "mem_aof_buffer", &0);
            l(s, "mem_allocator", &"libc");
            l(s, "active_defrag_running", &0);
            l(
                s,
                "lazyfree_pending_objects",
                &ctx.server.lazyfree.pending(),
            );
            l(s, "lazyfreed_objects", &ctx.server.lazyfree.freed());
        }
        "persistence" => {
            s.push_str("# Persistence\r\n");
            for (k, v) in [
                ("loading", "0"),
                ("async_loading", "0"),
                ("current_cow_peak", "0"),
                ("current_cow_size", "0"),
                ("current_cow_size_age", "0"),
                ("current_fork_perc", "0.00"),
                ("current_save_keys_processed", "0"),
                ("current_save_keys_total", "0"),
            ] {
                l(s, k, &v);
            }
            l(
                s,
                "rdb_changes_since_last_save",
                &st.dirty.load(Ordering::Relaxed),
            );
            let p = &server.persist;
            l(s, "rdb_bgsave_in_progress", &(p.in_progress() as u8));
            l(
                s,
                "rdb_last_save_time",
                &server.last_save.load(Ordering::Relaxed),
            );
            let ok = p.last_ok.load(Ordering::Relaxed);
            l(s, "rdb_last_bgsave_status", &if ok { "ok" } else { "err" });
            l(
                s,
                "rdb_last_bgsave_time_sec",
                &p.last_secs.load(Ordering::Relaxed),
            );
            let started = p.started.load(Ordering::Relaxed);
            let current = if started == 0 {
                -1
            } else {
                (crate::db::now_ms() / 1000).saturating_sub(started) as i64
            };
            l(s, "rdb_current_bgsave_time_sec", &current);
            l(s, "rdb_saves", &p.saves.load(Ordering::Relaxed));
            for (k, v) in [
                ("rdb_last_cow_size", "0"),
                ("rdb_last_load_keys_expired", "0"),
                ("rdb_last_load_keys_loaded", "0"),
                ("aof_enabled", "0"),
                ("aof_rewrite_in_progress", "0"),
                ("aof_rewrite_scheduled", "0"),
                ("aof_last_rewrite_time_sec", "-1"),
                ("aof_current_rewrite_time_sec", "-1"),
                ("aof_last_bgrewrite_status", "ok"),
                ("aof_rewrites", "0"),
                ("aof_rewrites_consecutive_failures", "0"),
                ("aof_last_write_status", "ok"),
                ("aof_last_cow_size", "0"),
                ("module_fork_in_progress", "0"),
                ("module_fork_last_cow_size", "0"),
            ] {
                l(s, k, &v);
            }
        }
        "stats" => {
            s.push_str("# Stats\r\n");
            let (ops, in_kbps, out_kbps) = instantaneous(server);
            let cmds = st.commands.load(Ordering::Relaxed);
            l(
                s,
                "total_connections_received",
                &st.connections.load(Ordering::Relaxed),
            );
            l(s, "total_commands_processed", &cmds);
            l(s, "instantaneous_ops_per_sec", &ops);
            l(
                s,
                "total_net_input_bytes",
                &st.net_in.load(Ordering::Relaxed),
            );
            l(
                s,
                "total_net_output_bytes",
                &st.net_out.load(Ordering::Relaxed),
            );
            l(s, "total_net_repl_input_bytes", &0);
            l(s, "total_net_repl_output_bytes", &0);
            l(s, "instantaneous_input_kbps", &format!("{in_kbps:.2}"));
            l(s, "instantaneous_output_kbps", &format!("{out_kbps:.2}"));
            l(s, "instantaneous_input_repl_kbps", &"0.00");
            l(s, "instantaneous_output_repl_kbps", &"0.00");
            l(
                s,
                "rejected_connections",
                &st.rejected.load(Ordering::Relaxed),
            );
            let rs = &server.repl.stats;
            l(s, "sync_full", &rs.sync_full.load(Ordering::Relaxed));
            l(
                s,
                "sync_partial_ok",
                &rs.sync_partial_ok.load(Ordering::Relaxed),
            );
            l(
                s,
                "sync_partial_err",
                &rs.sync_partial_err.load(Ordering::Relaxed),
            );
            l(s, "expired_keys", &st.expired.load(Ordering::Relaxed));
            l(s, "expired_stale_perc", &"0.00");
            l(s, "expired_time_cap_reached_count", &0);
            l(s, "expire_cycle_cpu_milliseconds", &0);
            l(
                s,
                "evicted_keys",
                &ctx.server.evict.evicted.load(Ordering::Relaxed),
            );
            l(s, "evicted_clients", &0);
            l(s, "total_eviction_exceeded_time", &0);
            l(s, "current_eviction_exceeded_time", &0);
            let (hits, misses) = server.ks.lookup_stats();
            l(s, "keyspace_hits", &hits);
            l(s, "keyspace_misses", &misses);
            l(s, "pubsub_channels", &server.pubsub.channels(None).len());
            l(s, "pubsub_patterns", &server.pubsub.numpat());
            l(
                s,
                "pubsubshard_channels",
                &super::pubsub::shard_channel_count(server),
            );
            for k in [
                "latest_fork_usec",
                "total_forks",
                "migrate_cached_sockets",
                "slave_expires_tracked_keys",
                "active_defrag_hits",
                "active_defrag_misses",
                "active_defrag_key_hits",
                "active_defrag_key_misses",
                "total_active_defrag_time",
                "current_active_defrag_time",
                "tracking_total_keys",
                "tracking_total_items",
                "tracking_total_prefixes",
                "unexpected_error_replies",
            ] {
                l(s, k, &0);
            }
            l(s, "total_error_replies", &st.errors.load(Ordering::Relaxed));
            l(s, "dump_payload_sanitizations", &0);
            l(s, "total_reads_processed", &cmds);
            l(s, "total_writes_processed", &cmds);
            l(s, "io_threaded_reads_processed", &0);
            l(s, "io_threaded_writes_processed", &0);
            l(s, "reply_buffer_shrinks", &0);
            l(s, "reply_buffer_expands", &0);
        }
        "replication" => {
            s.push_str("# Replication\r\n");
            for (k, v) in crate::replication::info_fields(server) {
                l(s, k, &v);
            }
        }
        "cpu" => {
            s.push_str("# CPU\r\n");
            let (sys, user) = cpu_times(libc::RUSAGE_SELF);
            let (csys, cuser) = cpu_times(libc::RUSAGE_CHILDREN);
            l(s, "used_cpu_sys", &sys);
            l(s, "used_cpu_user", &user);
            l(s, "used_cpu_sys_children", &csys);
            l(s, "used_cpu_user_children", &cuser);
            l(s, "used_cpu_sys_main_thread", &sys);
            l(s, "used_cpu_user_main_thread", &user);
        }
        "modules" => s.push_str("# Modules\r\n"),
        "commandstats" => {
            s.push_str("# Commandstats\r\n");
            let stats = server.cmdstats_snapshot();
            for (name, c) in stats.iter().filter(|(_, c)| c.calls > 0 || c.rejected > 0) {
                let per = if c.calls > 0 {
                    c.usec as f64 / c.calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    s,
                    "cmdstat_{name}:calls={},usec={},usec_per_call={per:.2},rejected_calls={},failed_calls={}\r\n",
                    c.calls, c.usec, c.rejected, c.failed
                );
            }
        }
        "errorstats" => s.push_str("# Errorstats\r\n"),
        "latencystats" => s.push_str("# Latencystats\r\n"),
        "cluster" => {
            s.push_str("# Cluster\r\n");
            l(
                s,
                "cluster_enabled",
                &(cfg.get_bool("cluster-enabled") as u8),
            );
        }
        "keyspace" => {
            s.push_str("# Keyspace\r\n");
            for (d, keys, expires) in keyspace_counts(ctx) {
                let _ = write!(s, "db{d}:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
        }
        _ => {}
    }
}

/// The INFO text for `sections` (as `INFO` would reply it).
fn info_text(ctx: &mut Ctx, sections: &[&str]) -> String {
    let mut s = String::with_capacity(4096);
    for (i, name) in sections.iter().enumerate() {
        if i > 0 {
            s.push_str("\r\n");
        }
        info_section(ctx, name, &mut s);
    }
    s
}

fn info(ctx: &mut Ctx) -> Outcome {
    let sections = wanted_sections(&ctx.args[1..]);
    let text = info_text(ctx, &sections);
    ctx.out.verbatim(text.as_bytes());
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// Keyspace-wide: DBSIZE, FLUSHDB, FLUSHALL
// ---------------------------------------------------------------------------------------------

fn dbsize(ctx: &mut Ctx) -> Outcome {
    let n: usize = ctx.ks.shards_mut().map(|(_, s)| s.len()).sum();
    ctx.out.int(n as i64);
    Outcome::Done
}

/// True when FLUSHDB / FLUSHALL was given ASYNC (the old keys are freed in the background).
fn flush_async(ctx: &Ctx, from: usize) -> bool {
    ctx.args.len() > from && ctx.arg_is(from, "ASYNC")
}

/// Checks the optional ASYNC|SYNC argument of FLUSHDB / FLUSHALL / FUNCTION FLUSH.
fn flush_mode_ok(ctx: &Ctx, from: usize) -> bool {
    match ctx.args.len() - from {
        0 => true,
        1 => ctx.arg_is(from, "ASYNC") || ctx.arg_is(from, "SYNC"),
        _ => false,
    }
}

fn flushdb(ctx: &mut Ctx) -> Outcome {
    if !flush_mode_ok(ctx, 1) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let lazy = flush_async(ctx, 1);
    let mut removed = 0;
    for (_, s) in ctx.ks.shards_mut() {
        let (n, maps) = s.clear_detached();
        removed += n;
        if lazy {
            ctx.server.lazyfree.free_keys(maps, n);
        }
    }
    ctx.ks.dirty += removed as u64 + 1;
    ctx.out.ok();
    Outcome::Done
}

fn flushall(ctx: &mut Ctx) -> Outcome {
    if !flush_mode_ok(ctx, 1) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let lazy = flush_async(ctx, 1);
    let dirty_before = ctx.ks.dirty;
    ctx.ks.lock_everything();
    let mut removed = 0;
    for (_, _, s) in ctx.ks.all_shards_mut() {
        let (n, maps) = s.clear_detached();
        removed += n;
        if lazy {
            ctx.server.lazyfree.free_keys(maps, n);
        }
    }
    // With save points set, the empty keyspace is saved at once (as Redis): a restart must
    // not bring the flushed keys back. Then one change is left, the FLUSHALL itself.
    if !crate::persist::save_points(ctx.server).is_empty()
        && crate::persist::save_flushed(ctx.server)
    {
        ctx.ks.dirty = dirty_before + 1;
    } else {
        ctx.ks.dirty += removed as u64 + 1;
    }
    ctx.out.ok();
    Outcome::Done
}

/// SWAPDB: exchanges the contents of two databases. The keyspace offers no O(1) swap of
/// whole databases, so the entries are moved one by one (watchers of both are touched and
/// clients blocked on their keys are woken, as in Redis).
fn swapdb(ctx: &mut Ctx) -> Outcome {
    let Some(a) = parse_i64(&ctx.args[1]) else {
        ctx.out.error("ERR invalid first DB index");
        return Outcome::Done;
    };
    let Some(b) = parse_i64(&ctx.args[2]) else {
        ctx.out.error("ERR invalid second DB index");
        return Outcome::Done;
    };
    if ctx.server.config.read().get_bool("cluster-enabled") {
        ctx.out.error("ERR SWAPDB is not allowed in cluster mode");
        return Outcome::Done;
    }
    let n = ctx.server.ks.count() as i64;
    if !(0..n).contains(&a) || !(0..n).contains(&b) {
        ctx.out.error("ERR DB index is out of range");
        return Outcome::Done;
    }
    let (a, b) = (a as usize, b as usize);
    if a != b {
        let home = ctx.ks.db_index();
        ctx.ks.set_db(a);
        ctx.ks.lock_all();
        ctx.ks.set_db(b);
        ctx.ks.lock_all();
        let mut taken: [Vec<(crate::db::Key, crate::db::Entry)>; 2] = [Vec::new(), Vec::new()];
        let now = ctx.ks.now;
        for (d, idx, shard) in ctx.ks.all_shards_mut() {
            let slot = if d == a {
                0
            } else if d == b {
                1
            } else {
                continue;
            };
            for (_, m) in shard.slot_maps(idx) {
                taken[slot].extend(
                    m.iter()
                        .filter(|(_, e)| e.expire_at == 0 || e.expire_at > now)
                        .map(|(k, e)| (k.clone(), e.clone())),
                );
            }
            shard.clear();
        }
        let [from_a, from_b] = taken;
        ctx.ks.set_db(a);
        for (k, e) in from_b {
            ctx.ks.set_entry(&k, e);
        }
        ctx.ks.set_db(b);
        for (k, e) in from_a {
            ctx.ks.set_entry(&k, e);
        }
        ctx.ks.set_db(home);
        ctx.ks.dirty += 1;
    }
    ctx.out.ok();
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// CONFIG
// ---------------------------------------------------------------------------------------------

/// Directives CONFIG SET refuses (Redis's immutable configs, plus the listening address,
/// which slotgate cannot rebind at run time).
const IMMUTABLE: &[&str] = &[
    "daemonize",
    "databases",
    "pidfile",
    "logfile",
    "supervised",
    "io-threads",
    "always-show-logo",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-port",
    "unixsocket",
    "unixsocketperm",
    "appendfilename",
    "appenddirname",
    "enable-debug-command",
    "enable-protected-configs",
    "enable-module-command",
    "port",
    "bind",
    "metrics-port",
];

/// Directives CONFIG SET changes only with `enable-protected-configs` (redis-server 7.0's
/// PROTECTED_CONFIG: where the node writes its files).
const PROTECTED: &[&str] = &["dir", "dbfilename"];

fn config(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" => config_get(ctx),
        b"set" => config_set(ctx),
        b"rewrite" => {
            let res = ctx.server.config.read().rewrite();
            match res {
                Ok(()) => ctx.out.ok(),
                Err(e) => ctx.out.error(&format!("ERR {e}")),
            }
        }
        b"resetstat" => {
            reset_stats(ctx.server);
            ctx.out.ok();
        }
        b"help" => help(
            ctx.out,
            &[
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "REWRITE",
                "    Rewrite the configuration file.",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "CONFIG"),
    }
    Outcome::Done
}

/// CONFIG RESETSTAT: zeroes the INFO counters and command statistics.
fn reset_stats(server: &Server) {
    let st = &server.stats;
    for c in [&st.connections, &st.expired, &st.rejected] {
        c.store(0, Ordering::Relaxed);
    }
    server.ks.reset_lookup_stats();
    for c in [&st.commands, &st.net_in, &st.net_out, &st.errors] {
        c.store(0, Ordering::Relaxed);
    }
    server.cmdstats_reset();
}

fn config_get(ctx: &mut Ctx) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    {
        let cfg = ctx.server.config.read();
        for pat in &ctx.args[2..] {
            for (k, v) in cfg.matching(pat) {
                if !pairs.iter().any(|(n, _)| *n == k) {
                    pairs.push((k, v));
                }
            }
        }
    }
    ctx.out.map(pairs.len());
    for (k, v) in pairs {
        ctx.out.bulk(k.as_bytes());
        ctx.out.bulk(v.as_bytes());
    }
}

fn config_set(ctx: &mut Ctx) {
    if !ctx.args.len().is_multiple_of(2) {
        ctx.out.wrong_arity("config|set");
        return;
    }
    let mut names: Vec<&'static str> = Vec::new();
    let mut new_cfg = ctx.server.config.read().clone();
    for pair in ctx.args[2..].chunks(2) {
        let name = lossy(&pair[0]);
        let value = lossy(&pair[1]);
        let Some(d) = crate::config::lookup(&name) else {
            ctx.out.error(&format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
            return;
        };
        let fail = |reason: &str| {
            format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")
        };
        if IMMUTABLE.contains(&d.name) {
            ctx.out.error(&fail("can't set immutable config"));
            return;
        }
        if PROTECTED.contains(&d.name) && !enabled_for(ctx, "enable-protected-configs") {
            ctx.out.error(&fail("can't set protected config"));
            return;
        }
        if names.contains(&d.name) {
            ctx.out.error(&fail("duplicate parameter"));
            return;
        }
        names.push(d.name);
        if let Err(e) = new_cfg.set(&name, &value) {
            ctx.out.error(&format!("ERR {e}"));
            return;
        }
    }
    // Side effects of the directives that act at run time.
    if names.contains(&"dir") {
        // As redis-server: the process moves there (where RDB files and nodes.conf go).
        if let Err(e) = std::env::set_current_dir(new_cfg.get("dir")) {
            let why = e.to_string();
            let why = why.split(" (os error").next().unwrap_or_default();
            ctx.out.error(&format!(
                "ERR CONFIG SET failed (possibly related to argument 'dir') - {why}"
            ));
            return;
        }
        // CONFIG GET dir shows the absolute path, as redis-server's getcwd().
        if let Some(cwd) = std::env::current_dir()
            .ok()
            .and_then(|p| p.to_str().map(String::from))
        {
            let _ = new_cfg.set("dir", &cwd);
        }
    }
    let requirepass = !new_cfg.get("requirepass").is_empty();
    let loglevel = new_cfg.get("loglevel").to_string();
    *ctx.server.config.write() = new_cfg;
    if names.contains(&"requirepass") {
        ctx.server
            .auth_required
            .store(requirepass, Ordering::Relaxed);
    }
    if names.contains(&"loglevel") {
        ctx.server
            .log
            .set_level(crate::log::Level::from_name(&loglevel));
    }
    ctx.server.refresh_cached_config();
    ctx.out.ok();
}

// ---------------------------------------------------------------------------------------------
// COMMAND
// ---------------------------------------------------------------------------------------------

fn implemented(server: &Server) -> impl Iterator<Item = &'static CommandSpec> + '_ {
    commands::all()
        .iter()
        .filter(move |s| server.registry.implements(s))
}

fn command(ctx: &mut Ctx) -> Outcome {
    if ctx.args.len() == 1 {
        let specs: Vec<_> = implemented(ctx.server).collect();
        ctx.out.array(specs.len());
        for s in specs {
            write_frame(ctx.out, &commands::command_info(s));
        }
        return Outcome::Done;
    }
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"count" => {
            let n = implemented(ctx.server).count();
            ctx.out.int(n as i64);
        }
        b"info" => {
            if ctx.args.len() == 2 {
                let specs: Vec<_> = implemented(ctx.server).collect();
                ctx.out.array(specs.len());
                for s in specs {
                    write_frame(ctx.out, &commands::command_info(s));
                }
            } else {
                ctx.out.array(ctx.args.len() - 2);
                for i in 2..ctx.args.len() {
                    match commands::lookup_fullname(&ctx.args[i])
                        .filter(|s| ctx.server.registry.implements(s))
                    {
                        Some(s) => write_frame(ctx.out, &commands::command_info(s)),
                        None => ctx.out.null(),
                    }
                }
            }
        }
        b"docs" => {
            let specs: Vec<(String, &'static CommandSpec)> = if ctx.args.len() == 2 {
                implemented(ctx.server)
                    .map(|s| (s.name.to_string(), s))
                    .collect()
            } else {
                ctx.args[2..]
                    .iter()
                    .filter_map(|a| {
                        commands::lookup_fullname(a)
                            .filter(|s| ctx.server.registry.implements(s))
                            .map(|s| (s.name.to_string(), s))
                    })
                    .collect()
            };
            ctx.out.map(specs.len());
            for (name, s) in specs {
                ctx.out.bulk(name.as_bytes());
                write_frame(ctx.out, &commands::command_docs(s));
            }
        }
        b"list" => command_list(ctx),
        b"getkeys" | b"getkeysandflags" => {
            let with_flags = sub.as_slice() == b"getkeysandflags";
            let mut kp = KeyPositions::new();
            let args = &ctx.args[2..];
            match commands::getkeys(args, &mut kp) {
                Err(e) => ctx.out.error(commands::getkeys_error_text(e)),
                Ok(spec) => {
                    let pos = kp.as_slice();
                    ctx.out.array(pos.len());
                    for &p in pos {
                        if with_flags {
                            ctx.out.array(2);
                            ctx.out.bulk(&args[p]);
                            let flags = key_flags(spec, args, p);
                            ctx.out.set(flags.len());
                            for f in flags {
                                ctx.out.simple(f);
                            }
                        } else {
                            ctx.out.bulk(&args[p]);
                        }
                    }
                }
            }
        }
        b"help" => help(
            ctx.out,
            &[
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all Redis commands.",
                "COUNT",
                "    Return the total number of commands in this Redis server.",
                "LIST",
                "    Return a list of all commands in this Redis server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple Redis commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full Redis command.",
                "GETKEYSANDFLAGS <full-command>",
                "    Return the keys and the access flags from a full Redis command.",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "COMMAND"),
    }
    Outcome::Done
}

/// The argument positions a key spec covers in `args` (the command without `COMMAND GETKEYS`).
fn spec_positions(ks: &commands::KeySpec, args: &[bytes::Bytes]) -> Vec<usize> {
    let argc = args.len() as i64;
    let start = match ks.begin_search {
        BeginSearch::Index(i) => i as i64,
        BeginSearch::Keyword { keyword, startfrom } => {
            let found = if startfrom >= 0 {
                (startfrom as i64..argc)
                    .find(|&i| args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()))
            } else {
                let from = argc + startfrom as i64;
                (1..=from.max(0)).rev().find(|&i| {
                    i < argc && args[i as usize].eq_ignore_ascii_case(keyword.as_bytes())
                })
            };
            match found {
                Some(i) => i + 1,
                None => return Vec::new(),
            }
        }
        BeginSearch::Unknown => return Vec::new(),
    };
    let mut out = Vec::new();
    match ks.find_keys {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let last = if lastkey >= 0 {
                start + lastkey as i64
            } else if limit <= 1 {
                argc + lastkey as i64
            } else {
                start + (argc - start) / limit as i64 + lastkey as i64
            };
            let step = keystep.max(1) as i64;
            let mut i = start;
            while i <= last && i < argc {
                out.push(i as usize);
                i += step;
            }
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = start + keynumidx as i64;
            if at < argc {
                let n = parse_i64(&args[at as usize]).unwrap_or(0).max(0);
                let first = start + firstkey as i64;
                let step = keystep.max(1) as i64;
                for k in 0..n {
                    let i = first + k * step;
                    if i < argc {
                        out.push(i as usize);
                    }
                }
            }
        }
        FindKeys::Unknown => {}
    }
    out
}

/// The key-spec flags of the key at argument `pos` (COMMAND GETKEYSANDFLAGS). Specs flagged
/// `variable_flags` are refined as Redis's getkeys procs do (SET ... GET, BITFIELD).
fn key_flags(spec: &CommandSpec, args: &[bytes::Bytes], pos: usize) -> Vec<&'static str> {
    let has = |from: usize, words: &[&str]| {
        args.iter()
            .skip(from)
            .any(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w.as_bytes())))
    };
    let flags = spec
        .key_specs
        .iter()
        .find(|ks| spec_positions(ks, args).contains(&pos))
        .or(spec.key_specs.first())
        .map(|k| k.flags)
        .unwrap_or(&[]);
    if flags.contains(&"variable_flags") {
        match spec.name {
            "set" if !has(3, &["GET"]) => return vec!["OW", "update"],
            "bitfield" if !has(2, &["SET", "INCRBY"]) => return vec!["RO", "access"],
            _ => {}
        }
    }
    flags
        .iter()
        .copied()
        .filter(|f| *f != "variable_flags")
        .collect()
}

fn command_list(ctx: &mut Ctx) {
    enum Filter {
        None,
        Module,
        AclCat(String),
        Pattern(bytes::Bytes),
    }
    let filter = match ctx.args.len() {
        2 => Filter::None,
        5 if ctx.arg_is(2, "FILTERBY") => {
            let v = ctx.args[4].clone();
            if ctx.arg_is(3, "MODULE") {
                Filter::Module
            } else if ctx.arg_is(3, "ACLCAT") {
                Filter::AclCat(format!("@{}", lossy(&v).to_ascii_lowercase()))
            } else if ctx.arg_is(3, "PATTERN") {
                Filter::Pattern(v)
            } else {
                ctx.out.syntax_error();
                return;
            }
        }
        _ => {
            ctx.out.syntax_error();
            return;
        }
    };
    let mut names: Vec<&'static str> = Vec::new();
    for top in implemented(ctx.server) {
        for s in std::iter::once(top).chain(top.subcommands.iter()) {
            let keep = match &filter {
                Filter::None => true,
                Filter::Module => false,
                Filter::AclCat(c) => s.acl_categories.iter().any(|a| a.eq_ignore_ascii_case(c)),
                Filter::Pattern(p) => crate::glob::glob_match(p, s.name.as_bytes(), true),
            };
            if keep {
                names.push(s.name);
            }
        }
    }
    ctx.out.array(names.len());
    for n in names {
        ctx.out.bulk(n.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// TIME, ROLE, LASTSAVE, SAVE, BGSAVE, BGREWRITEAOF, SHUTDOWN, WAIT
// ---------------------------------------------------------------------------------------------

fn time(ctx: &mut Ctx) -> Outcome {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk(now.as_secs().to_string().as_bytes());
    ctx.out.bulk(now.subsec_micros().to_string().as_bytes());
    Outcome::Done
}

fn lastsave(ctx: &mut Ctx) -> Outcome {
    ctx.out
        .int(ctx.server.last_save.load(Ordering::Relaxed) as i64);
    Outcome::Done
}

fn save(ctx: &mut Ctx) -> Outcome {
    match crate::persist::save(ctx.server) {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(&e),
    }
    Outcome::Done
}

fn bgsave(ctx: &mut Ctx) -> Outcome {
    if ctx.args.len() > 2 || (ctx.args.len() == 2 && !ctx.arg_is(1, "SCHEDULE")) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    let Some(server) = ctx.server.me.get().and_then(|w| w.upgrade()) else {
        ctx.out.error("ERR Background save failed to start");
        return Outcome::Done;
    };
    if server.persist.in_progress() && ctx.args.len() == 2 {
        // BGSAVE SCHEDULE: after the running one.
        server.persist.scheduled.store(true, Ordering::Release);
        ctx.out.simple("Background saving scheduled");
        return Outcome::Done;
    }
    match crate::persist::bgsave(&server) {
        Ok(()) => ctx.out.simple("Background saving started"),
        Err(e) => ctx.out.error(e),
    }
    Outcome::Done
}

fn bgrewriteaof(ctx: &mut Ctx) -> Outcome {
    ctx.out
        .simple("Background append only file rewriting started");
    Outcome::Done
}

fn shutdown(ctx: &mut Ctx) -> Outcome {
    let (mut nosave, mut save, mut abort) = (false, false, false);
    for i in 1..ctx.args.len() {
        if ctx.arg_is(i, "NOSAVE") {
            nosave = true;
        } else if ctx.arg_is(i, "SAVE") {
            save = true;
        } else if ctx.arg_is(i, "ABORT") {
            abort = true;
        } else if ctx.arg_is(i, "NOW") || ctx.arg_is(i, "FORCE") {
        } else {
            ctx.out.syntax_error();
            return Outcome::Done;
        }
    }
    if (nosave && save) || (abort && ctx.args.len() > 2) {
        ctx.out.syntax_error();
        return Outcome::Done;
    }
    if abort {
        ctx.out.error("ERR No shutdown in progress.");
        return Outcome::Done;
    }
    let force = (1..ctx.args.len()).any(|i| ctx.arg_is(i, "FORCE"));
    if !crate::persist::save_on_shutdown(ctx.server, save, nosave) && !force {
        ctx.out.error("ERR Errors trying to SHUTDOWN. Check logs.");
        return Outcome::Done;
    }
    ctx.server.persist.final_done.store(true, Ordering::Release);
    ctx.server.shutting_down.store(true, Ordering::Release);
    ctx.server.shutdown.notify_one();
    // No reply: the connection closes and the server exits.
    Outcome::Close
}

// ---------------------------------------------------------------------------------------------
// SLOWLOG, MONITOR
// ---------------------------------------------------------------------------------------------

fn slowlog(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"get" => {
            let count = match ctx.args.get(2) {
                None => 10,
                Some(a) => match parse_i64(a) {
                    Some(n) if n >= -1 => n,
                    _ => {
                        ctx.out
                            .error("ERR count should be greater than or equal to -1");
                        return Outcome::Done;
                    }
                },
            };
            let entries: Vec<_> = {
                let sl = ctx.server.slowlog.lock();
                let n = if count == -1 {
                    sl.entries.len()
                } else {
                    count as usize
                };
                sl.entries.iter().take(n).cloned().collect()
            };
            ctx.out.array(entries.len());
            for e in entries {
                ctx.out.array(6);
                ctx.out.int(e.id as i64);
                ctx.out.int(e.time as i64);
                ctx.out.int(e.micros as i64);
                ctx.out.array(e.args.len());
                for a in &e.args {
                    ctx.out.bulk(a);
                }
                ctx.out.bulk(e.addr.as_bytes());
                ctx.out.bulk(e.name.as_bytes());
            }
        }
        b"len" => {
            let n = ctx.server.slowlog.lock().entries.len();
            ctx.out.int(n as i64);
        }
        b"reset" => {
            ctx.server.slowlog.lock().entries.clear();
            ctx.out.ok();
        }
        b"help" => help(
            ctx.out,
            &[
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "    Entries are made of:",
                "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                "    client name",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "SLOWLOG"),
    }
    Outcome::Done
}

fn monitor(ctx: &mut Ctx) -> Outcome {
    if ctx.client.monitor {
        // Redis answers nothing when the client already monitors.
        return Outcome::Done;
    }
    ctx.client.monitor = true;
    ctx.client.handle.flags.lock().replace_range(.., "O");
    ctx.server.add_monitor(ctx.client.handle.clone());
    ctx.out.ok();
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// DEBUG
// ---------------------------------------------------------------------------------------------

/// `enable-debug-command`: `yes`, or `local` and the client connects over loopback.
fn debug_allowed(ctx: &Ctx) -> bool {
    enabled_for(ctx, "enable-debug-command")
}

/// An `enable-*` directive (`yes`, `no`, `local`) as it applies to this client: `local`
/// allows clients connected over loopback.
fn enabled_for(ctx: &Ctx, directive: &str) -> bool {
    let mode = ctx.server.config.read().get(directive).to_string();
    match mode.as_str() {
        "yes" => true,
        "local" => {
            let a = &ctx.client.handle.addr;
            a.starts_with("127.") || a.starts_with("[::1]") || a.starts_with("::1")
        }
        _ => false,
    }
}

/// C `atof`: the longest numeric prefix, 0 when none.
fn atof(b: &[u8]) -> f64 {
    let s = lossy(&b[..b.len().min(64)]);
    let s = s.trim_start();
    (1..=s.len())
        .rev()
        .filter(|&i| s.is_char_boundary(i))
        .find_map(|i| s[..i].parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// C `atoi`-like: an optional sign and leading digits, 0 when none.
fn atoi(b: &[u8]) -> i64 {
    let mut n: i64 = 0;
    let mut it = b.iter().skip_while(|c| c.is_ascii_whitespace()).peekable();
    let neg = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    for &c in it {
        if !c.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add((c - b'0') as i64);
    }
    if neg {
        -n
    } else {
        n
    }
}

/// A 160-bit digest, shown as 40 hex digits like Redis's SHA1-based DEBUG DIGEST.
type Digest = [u8; 20];

fn hash_parts(parts: &[&[u8]]) -> Digest {
    use std::hash::{Hash, Hasher};
    let mut out = [0u8; 20];
    for (round, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (round as u64).hash(&mut h);
        for p in parts {
            p.hash(&mut h);
        }
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

fn xor_into(acc: &mut Digest, d: &Digest) {
    acc.iter_mut().zip(d).for_each(|(a, b)| *a ^= b);
}

/// Order-sensitive mix (Redis's mixDigest): acc = H(acc || d).
fn mix_into(acc: &mut Digest, d: &[u8]) {
    *acc = hash_parts(&[&acc[..], d]);
}

/// Digest of one value: unordered collections XOR their elements' digests.
fn value_digest(v: &Value) -> Digest {
    let mut acc = [0u8; 20];
    match v {
        Value::Str(s) => mix_into(&mut acc, s),
        Value::List(l) => l.iter().for_each(|e| mix_into(&mut acc, e)),
        Value::Set(s) => s.iter().for_each(|e| xor_into(&mut acc, &hash_parts(&[e]))),
        Value::Hash(h) => h
            .iter()
            .for_each(|(k, v)| xor_into(&mut acc, &hash_parts(&[k, v]))),
        Value::ZSet(z) => z.iter().for_each(|(m, s)| {
            let score = crate::reply::format_double(s);
            xor_into(&mut acc, &hash_parts(&[m, score.as_bytes()]))
        }),
    }
    let kind = [v.kind() as u8];
    mix_into(&mut acc, &kind);
    acc
}

fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn debug(ctx: &mut Ctx) -> Outcome {
    if !debug_allowed(ctx) {
        ctx.out.error("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
        return Outcome::Done;
    }
    let sub = ctx.args[1].to_ascii_lowercase();
    let argc = ctx.args.len();
    match (sub.as_slice(), argc) {
        (b"help", 2) => help(
            ctx.out,
            &[
                "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANGE-REPL-ID",
                "    Change the replication IDs of the instance.",
                "DIGEST",
                "    Output a hex signature representing the current DB content.",
                "DIGEST-VALUE <key> [<key> ...]",
                "    Output a hex signature of the values of all the specified keys.",
                "ERROR <string>",
                "    Return a Redis protocol error with <string> as message.",
                "LOG <message>",
                "    Write <message> to the server log.",
                "OBJECT <key>",
                "    Show low level info about `key` and associated value.",
                "POPULATE <count> [<prefix>] [<size>]",
                "    Create <count> string keys named key:<num>.",
                "PROTOCOL <type>",
                "    Reply with a test value of the specified type.",
                "RELOAD [option ...]",
                "    Accepted; slotgate keeps the dataset in memory as it is.",
                "SET-ACTIVE-EXPIRE <0|1>",
                "    Disable (0) or enable (1) expiring keys in the background.",
                "SLEEP <seconds>",
                "    Stop the server for <seconds>. Decimals allowed.",
                "IO-WORKERS [<count>|AUTO]",
                "    Show the client I/O workers, or pin how many serve clients (AUTO: the balancer decides).",
                "HELP",
                "    Prints this help.",
            ],
        ),
        (b"io-workers", 2) => {
            let io = &ctx.server.io;
            let line = format!(
                "workers:{} active:{} mode:{} conns:{}",
                io.len(),
                io.active(),
                if io.pinned() { "pinned" } else { "auto" },
                io.conns_list()
            );
            ctx.out.bulk(line.as_bytes());
        }
        (b"io-workers", 3) => {
            let io = &ctx.server.io;
            match io.parse_setting(&ctx.args[2]) {
                Some(setting) => {
                    io.apply_setting(setting);
                    ctx.out.ok();
                }
                None => ctx.out.error(&format!(
                    "ERR IO-WORKERS takes AUTO or a count from 1 to {}",
                    io.len()
                )),
            }
        }
        (b"sleep", 3) => {
            let secs = atof(&ctx.args[2]);
            if secs > 0.0 && secs.is_finite() {
                let d = Duration::from_secs_f64(secs.min(1e6));
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                        tokio::task::block_in_place(|| std::thread::sleep(d))
                    }
                    _ => std::thread::sleep(d),
                }
            }
            ctx.out.ok();
        }
        (b"object", 3) => {
            let key = ctx.args[2].clone();
            let now = ctx.ks.now;
            let line = match ctx.ks.peek(&key) {
                None => None,
                Some(e) => {
                    let v = &e.value;
                    let enc = v.encoding(&ctx.server.compact);
                    let mut line = format!(
                        "Value at:{:p} refcount:1 encoding:{enc} serializedlength:{} lru:{} lru_seconds_idle:{}",
                        e as *const _,
                        v.approx_size().saturating_sub(16).max(1),
                        e.lru,
                        crate::db::idle_seconds(e.lru, now)
                    );
                    if let (Value::List(l), "quicklist") = (v, enc) {
                        let bytes: usize = l.iter().map(|x| x.len() + 2).sum();
                        let nodes = l.len().div_ceil(128).max(1);
                        let _ = write!(
                            line,
                            " ql_nodes:{nodes} ql_avg_node:{:.2} ql_listpack_max:-2 ql_compressed:0 ql_uncompressed_size:{bytes}",
                            l.len() as f64 / nodes as f64
                        );
                    }
                    Some(line)
                }
            };
            match line {
                Some(l) => ctx.out.simple(&l),
                None => ctx.out.error("ERR no such key"),
            }
        }
        (b"digest-value", _) => {
            let keys: Vec<_> = ctx.args[2..].to_vec();
            ctx.out.array(keys.len());
            for k in keys {
                let d = ctx.ks.peek(&k).map(|e| value_digest(&e.value));
                ctx.out.simple(&hex(&d.unwrap_or([0; 20])));
            }
        }
        (b"digest", 2) => {
            ctx.ks.lock_everything();
            let now = ctx.ks.now;
            let mut acc = [0u8; 20];
            let mut any = false;
            for (d, idx, shard) in ctx.ks.all_shards_mut() {
                for (_, m) in shard.slot_maps(idx) {
                    for (k, e) in m {
                        if e.expire_at != 0 && e.expire_at <= now {
                            continue;
                        }
                        any = true;
                        let mut kd = value_digest(&e.value);
                        mix_into(&mut kd, k);
                        mix_into(&mut kd, &(d as u64).to_le_bytes());
                        if e.expire_at != 0 {
                            mix_into(&mut kd, &e.expire_at.to_le_bytes());
                        }
                        xor_into(&mut acc, &kd);
                    }
                }
            }
            if !any {
                acc = [0; 20];
            }
            ctx.out.simple(&hex(&acc));
        }
        (b"set-active-expire", 3) => {
            let on = atoi(&ctx.args[2]) != 0;
            ctx.server.active_expire.store(on, Ordering::Relaxed);
            ctx.out.ok();
        }
        (b"error", 3) => {
            let msg = lossy(&ctx.args[2]);
            ctx.out.error(&msg);
        }
        (b"log", 3) => {
            let msg = lossy(&ctx.args[2]);
            ctx.server.log.warning(&format!("DEBUG LOG: {msg}"));
            ctx.out.ok();
        }
        (b"populate", 3..=5) => debug_populate(ctx),
        (b"protocol", 3) => debug_protocol(ctx),
        (b"reload", _)
        | (b"change-repl-id", 2)
        | (b"quicklist-packed-threshold", 3)
        | (b"set-skip-checksum-validation", 3)
        | (b"pause-cron", 3) => ctx.out.ok(),
        (b"stringmatch-test", 2) => ctx
            .out
            .simple("Apparently Redis did not crash: test passed"),
        _ => {
            let msg = format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
                lossy(&ctx.args[1])
            );
            ctx.out.error(&msg);
        }
    }
    Outcome::Done
}

fn debug_populate(ctx: &mut Ctx) {
    let count = match parse_i64(&ctx.args[2]) {
        Some(n) if n >= 0 => n as u64,
        Some(_) => {
            ctx.out.error("ERR count must be greater than 0");
            return;
        }
        None => {
            ctx.out.not_integer();
            return;
        }
    };
    let prefix = ctx
        .args
        .get(3)
        .map(|p| p.to_vec())
        .unwrap_or(b"key".to_vec());
    let size = match ctx.args.get(4) {
        None => None,
        Some(a) => match parse_i64(a) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => {
                ctx.out.not_integer();
                return;
            }
        },
    };
    ctx.ks.lock_all();
    let dirty = ctx.ks.dirty;
    let mut key = Vec::with_capacity(prefix.len() + 21);
    for j in 0..count {
        key.clear();
        key.extend_from_slice(&prefix);
        let _ = write!(ByteWriter(&mut key), ":{j}");
        if ctx.ks.exists(&key) {
            continue;
        }
        let mut val = format!("value:{j}").into_bytes();
        if let Some(sz) = size {
            val.resize(sz, 0);
        }
        ctx.ks.set(&key, Value::Str(val), false);
    }
    // Redis does not propagate (nor count) DEBUG POPULATE's keys.
    ctx.ks.dirty = dirty;
    ctx.out.ok();
}

/// `fmt::Write` into a byte vector.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// DEBUG PROTOCOL: Redis's fixed sample replies (3.141 is its literal, not an approximation).
#[allow(clippy::approx_constant)]
fn debug_protocol(ctx: &mut Ctx) {
    let t = ctx.args[2].to_ascii_lowercase();
    let out = &mut *ctx.out;
    match t.as_slice() {
        b"string" => out.bulk(b"Hello World"),
        b"integer" => out.int(12345),
        b"double" => out.double(3.141),
        b"bignum" => {
            if out.resp3 {
                out.raw(b"(1234567999999999999999999999999999999\r\n");
            } else {
                out.bulk(b"1234567999999999999999999999999999999");
            }
        }
        b"null" => out.null(),
        b"array" => {
            out.array(3);
            (0..3).for_each(|i| out.int(i));
        }
        b"set" => {
            out.set(3);
            (0..3).for_each(|i| out.int(i));
        }
        b"map" => {
            out.map(3);
            for i in 0..3 {
                out.int(i);
                out.boolean(i == 1);
            }
        }
        b"attrib" => {
            if out.resp3 {
                out.buf.extend_from_slice(b"|1\r\n");
                out.bulk(b"key-popularity");
                out.array(2);
                out.bulk(b"key:123");
                out.int(90);
            }
            out.bulk(b"Some real reply following the attribute");
        }
        b"push" => {
            if !out.resp3 {
                out.error("ERR RESP2 is not supported by this command");
                return;
            }
            out.push(2);
            out.bulk(b"server-cpu-usage");
            out.int(42);
            out.bulk(b"Some real reply following the push reply");
        }
        b"true" => out.boolean(true),
        b"false" => out.boolean(false),
        b"verbatim" => out.verbatim(b"This is a verbatim\nstring"),
        _ => out.error("ERR Wrong protocol type name. Please use one of the following: string|integer|double|bignum|null|array|set|map|attrib|push|verbatim|true|false"),
    }
}

// ---------------------------------------------------------------------------------------------
// FUNCTION (no engine: always an empty library set)
// ---------------------------------------------------------------------------------------------

fn function(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"dump" => ctx.out.bulk(EMPTY_FUNCTION_DUMP),
        b"flush" => {
            if flush_mode_ok(ctx, 2) {
                ctx.out.ok();
            } else {
                ctx.out
                    .error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
            }
        }
        b"list" => {
            let mut i = 2;
            while i < ctx.args.len() {
                if ctx.arg_is(i, "WITHCODE") {
                    i += 1;
                } else if ctx.arg_is(i, "LIBRARYNAME") && i + 1 < ctx.args.len() {
                    i += 2;
                } else {
                    let msg = format!("ERR Unknown argument {}", lossy(&ctx.args[i]));
                    ctx.out.error(&msg);
                    return Outcome::Done;
                }
            }
            ctx.out.array(0);
        }
        b"stats" => {
            let out = &mut *ctx.out;
            out.map(2);
            out.bulk(b"running_script");
            out.null();
            out.bulk(b"engines");
            out.map(1);
            out.bulk(b"LUA");
            out.map(2);
            out.bulk(b"libraries_count");
            out.int(0);
            out.bulk(b"functions_count");
            out.int(0);
        }
        b"restore" => {
            if ctx.args.len() > 4 {
                ctx.out.syntax_error();
            } else if ctx.args.len() == 4
                && !(ctx.arg_is(3, "FLUSH") || ctx.arg_is(3, "APPEND") || ctx.arg_is(3, "REPLACE"))
            {
                ctx.out.error("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.");
            } else if &ctx.args[2][..] == EMPTY_FUNCTION_DUMP {
                ctx.out.ok();
            } else {
                ctx.out
                    .error("ERR DUMP payload version or checksum are wrong");
            }
        }
        b"delete" => ctx.out.error("ERR Library not found"),
        b"kill" => ctx
            .out
            .error("NOTBUSY No scripts in execution right now."),
        b"load" => {
            let code = ctx.args.last().map(|a| &a[..]).unwrap_or(b"");
            if code.starts_with(b"#!") {
                ctx.out
                    .error("ERR Engine not supported: slotgate has no scripting engine");
            } else {
                ctx.out.error("ERR Missing library metadata");
            }
        }
        b"help" => help(
            ctx.out,
            &[
                "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LOAD [REPLACE] <FUNCTION CODE>",
                "    Create a new library with the given library name and code.",
                "DELETE <LIBRARY NAME>",
                "    Delete the given library.",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "    Return general information on all the libraries.",
                "STATS",
                "    Return information about the current function running.",
                "KILL",
                "    Kill the current running function.",
                "FLUSH [ASYNC|SYNC]",
                "    Delete all the libraries.",
                "DUMP",
                "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
                "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
                "    Restore the libraries represented by the given payload.",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "FUNCTION"),
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------------------------
// MEMORY, LATENCY
// ---------------------------------------------------------------------------------------------

/// Bytes charged per key on top of its value: hash-table entry, key header, object header.
const KEY_OVERHEAD: usize = 46;

fn memory(ctx: &mut Ctx) -> Outcome {
    // Redis reads the dict directly here: not a keyspace hit or miss.
    ctx.ks.read_stats = false;
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"usage" => {
            let mut i = 3;
            while i < ctx.args.len() {
                if ctx.arg_is(i, "SAMPLES") && i + 1 < ctx.args.len() {
                    match parse_i64(&ctx.args[i + 1]) {
                        Some(n) if n >= 0 => {}
                        Some(_) => {
                            ctx.out.syntax_error();
                            return Outcome::Done;
                        }
                        None => {
                            ctx.out.not_integer();
                            return Outcome::Done;
                        }
                    }
                    i += 2;
                } else {
                    ctx.out.syntax_error();
                    return Outcome::Done;
                }
            }
            let key = ctx.args[2].clone();
            match ctx.ks.peek(&key) {
                Some(e) => {
                    let n = e.value.approx_size() + key.len() + KEY_OVERHEAD;
                    ctx.out.int(n as i64);
                }
                None => ctx.out.null(),
            }
        }
        b"stats" => {
            let (used, peak) = used_memory();
            let counts = keyspace_counts(ctx);
            let keys: usize = counts.iter().map(|c| c.1).sum();
            let clients = ctx.server.clients.lock().len();
            let out = &mut *ctx.out;
            out.map(18 + counts.len());
            let ints: [(&str, u64); 14] = [
                ("peak.allocated", peak),
                ("total.allocated", used),
                ("startup.allocated", 0),
                ("replication.backlog", 0),
                ("clients.slaves", 0),
                ("clients.normal", clients as u64 * 20_000),
                ("cluster.links", 0),
                ("aof.buffer", 0),
                ("lua.caches", 0),
                ("functions.caches", 0),
                ("overhead.total", 0),
                ("keys.count", keys as u64),
                ("keys.bytes-per-key", if keys > 0 { used / keys as u64 } else { 0 }),
                ("dataset.bytes", used),
            ];
            for (k, v) in ints {
                out.bulk(k.as_bytes());
                out.int(v as i64);
            }
            for (d, k, e) in &counts {
                out.bulk(format!("db.{d}").as_bytes());
                out.map(2);
                out.bulk(b"overhead.hashtable.main");
                out.int((*k * 24) as i64);
                out.bulk(b"overhead.hashtable.expires");
                out.int((*e * 24) as i64);
            }
            out.bulk(b"dataset.percentage");
            out.double(100.0);
            out.bulk(b"peak.percentage");
            out.double(if peak > 0 {
                used as f64 * 100.0 / peak as f64
            } else {
                100.0
            });
            out.bulk(b"fragmentation");
            out.double(1.0);
            out.bulk(b"fragmentation.bytes");
            out.int(0);
        }
        b"doctor" => ctx.out.verbatim(
            b"Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n",
        ),
        b"malloc-stats" => ctx
            .out
            .verbatim(b"Stats not supported for the current allocator"),
        b"purge" => ctx.out.ok(),
        b"help" => help(
            ctx.out,
            &[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR",
                "    Return memory problems reports.",
                "MALLOC-STATS",
                "    Return internal statistics report from the memory allocator.",
                "PURGE",
                "    Attempt to purge dirty pages for reclamation by the allocator.",
                "STATS",
                "    Return information about the memory usage of the server.",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key> and its value. Nested values are",
                "    sampled up to <count> times (default: 5, 0 means sample all).",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "MEMORY"),
    }
    Outcome::Done
}

fn latency(ctx: &mut Ctx) -> Outcome {
    let sub = ctx.args[1].to_ascii_lowercase();
    match sub.as_slice() {
        b"latest" => ctx.out.array(0),
        b"history" if ctx.args.len() == 3 => ctx.out.array(0),
        b"reset" => ctx.out.int(0),
        b"graph" if ctx.args.len() == 3 => {
            let msg = format!(
                "ERR No samples available for event '{}'",
                lossy(&ctx.args[2])
            );
            ctx.out.error(&msg);
        }
        b"doctor" if ctx.args.len() == 2 => ctx.out.verbatim(
            b"I'm sorry, Dave, I can't do that. Latency monitoring is disabled in this Redis instance. You may use \"CONFIG SET latency-monitor-threshold <milliseconds>.\" in order to enable it. If we weren't in a deep space mission I'd suggest to take a look at https://redis.io/topics/latency-monitor.\n",
        ),
        b"histogram" => {
            // No per-call histogram is kept: every call is charged to the power-of-two bucket of
            // the command's mean latency.
            let stats = ctx.server.cmdstats_snapshot();
            let filter: Vec<String> = ctx.args[2..]
                .iter()
                .map(|a| lossy(a).to_ascii_lowercase())
                .collect();
            let rows: Vec<_> = stats
                .iter()
                .filter(|(n, c)| c.calls > 0 && (filter.is_empty() || filter.iter().any(|f| f == *n)))
                .collect();
            let out = &mut *ctx.out;
            out.map(rows.len());
            for (name, c) in rows {
                out.bulk(name.as_bytes());
                out.map(2);
                out.bulk(b"calls");
                out.int(c.calls as i64);
                out.bulk(b"histogram_usec");
                out.map(1);
                let mean = (c.usec / c.calls).max(1);
                out.int(mean.next_power_of_two() as i64);
                out.int(c.calls as i64);
            }
        }
        b"help" => help(
            ctx.out,
            &[
                "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DOCTOR",
                "    Return a human readable latency analysis report.",
                "GRAPH <event>",
                "    Return an ASCII latency graph for the <event> class.",
                "HISTORY <event>",
                "    Return time-latency samples for the <event> class.",
                "LATEST",
                "    Return the latest latency samples for all events.",
                "RESET [<event> ...]",
                "    Reset latency data of one or more <event> classes.",
                "    (default: reset all data for all event classes)",
                "HISTOGRAM [COMMAND ...]",
                "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
                "    If no commands are specified then all histograms are replied.",
                "HELP",
                "    Prints this help.",
            ],
        ),
        _ => unknown_subcommand(ctx, "LATENCY"),
    }
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[&str]) -> Vec<bytes::Bytes> {
        v.iter()
            .map(|s| bytes::Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn section_selection() {
        let d = wanted_sections(&[]);
        assert_eq!(d.first(), Some(&"server"));
        assert!(!d.contains(&"commandstats"));
        assert!(d.contains(&"keyspace"));
        assert_eq!(
            wanted_sections(&b(&["keyspace", "CPU"])),
            vec!["cpu", "keyspace"]
        );
        assert!(wanted_sections(&b(&["all"])).contains(&"commandstats"));
        assert!(wanted_sections(&b(&["bogus"])).is_empty());
        let dc = wanted_sections(&b(&["default", "commandstats"]));
        assert_eq!(dc.len(), d.len() + 1);
    }

    #[test]
    fn human_and_atoi() {
        assert_eq!(human_bytes(1000), "1000B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(3 << 20), "3.00M");
        assert_eq!(atoi(b"12abc"), 12);
        assert_eq!(atoi(b"-3"), -3);
        assert_eq!(atoi(b"x"), 0);
        assert_eq!(atof(b"0.5s"), 0.5);
        assert_eq!(atof(b"abc"), 0.0);
    }

    #[test]
    fn digests_ignore_set_order() {
        let mut a = crate::value::Set::default();
        a.insert(b"x".to_vec().into_boxed_slice());
        a.insert(b"y".to_vec().into_boxed_slice());
        let mut c = crate::value::Set::default();
        c.insert(b"y".to_vec().into_boxed_slice());
        c.insert(b"x".to_vec().into_boxed_slice());
        let da = value_digest(&Value::Set(Box::new(a)));
        let dc = value_digest(&Value::Set(Box::new(c)));
        assert_eq!(da, dc);
        assert_ne!(
            value_digest(&Value::Str(b"x".to_vec())),
            value_digest(&Value::Str(b"y".to_vec()))
        );
        assert_eq!(hex(&da).len(), 40);
    }

    #[test]
    fn getkeysandflags_positions() {
        let set = commands::lookup(b"set").map(|s| key_flags(s, &b(&["set", "a", "b"]), 1));
        assert_eq!(set, Some(vec!["OW", "update"]));
        let spec = commands::lookup(b"lmove");
        if let Some(spec) = spec {
            let args = b(&["lmove", "src", "dst", "LEFT", "RIGHT"]);
            assert_ne!(key_flags(spec, &args, 1), key_flags(spec, &args, 2));
        }
    }
}
