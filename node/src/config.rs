//! Configuration: redis.conf parsing (file plus `--directive value` arguments, later wins),
//! the directive table, CONFIG GET/SET/REWRITE storage, fatal errors in redis-server's format.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// How a directive's value is checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// yes/no
    Bool,
    /// An integer within bounds.
    Int(i64, i64),
    /// A memory amount (`1gb`, `100mb`, bytes).
    Memory,
    /// Any string.
    Str,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// Free-form with several arguments (`save 900 1`, `bind a b`).
    Multi,
}

/// A known directive.
#[derive(Debug)]
pub struct Directive {
    /// Canonical name (lowercase).
    pub name: &'static str,
    /// Other accepted names (`slaveof` for `replicaof`).
    pub aliases: &'static [&'static str],
    /// Value check.
    pub kind: Kind,
    /// Default as CONFIG GET shows it.
    pub default: &'static str,
    /// False when slotgate accepts the directive but does not act on it yet (one warning).
    pub acted_on: bool,
}

macro_rules! d {
    ($name:expr, $kind:expr, $def:expr, $acted:expr) => {
        Directive {
            name: $name,
            aliases: &[],
            kind: $kind,
            default: $def,
            acted_on: $acted,
        }
    };
    ($name:expr, [$($alias:expr),*], $kind:expr, $def:expr, $acted:expr) => {
        Directive {
            name: $name,
            aliases: &[$($alias),*],
            kind: $kind,
            default: $def,
            acted_on: $acted,
        }
    };
}

const YESNO: Kind = Kind::Bool;
const MAXI: i64 = i64::MAX;

/// Every directive slotgate-node knows.
pub static DIRECTIVES: &[Directive] = &[
    d!("port", Kind::Int(0, 65535), "6379", true),
    d!("bind", Kind::Multi, "* -::*", true),
    d!("protected-mode", YESNO, "yes", true),
    d!("daemonize", YESNO, "no", true),
    d!("pidfile", Kind::Str, "", true),
    d!("logfile", Kind::Str, "", true),
    d!(
        "loglevel",
        Kind::Enum(&["debug", "verbose", "notice", "warning", "nothing"]),
        "notice",
        true
    ),
    d!("dir", Kind::Str, "", true),
    d!("dbfilename", Kind::Str, "dump.rdb", true),
    d!("save", Kind::Multi, "3600 1 300 100 60 10000", true),
    d!("appendonly", YESNO, "no", false),
    d!("appendfilename", Kind::Str, "appendonly.aof", false),
    d!("appenddirname", Kind::Str, "appendonlydir", false),
    d!(
        "appendfsync",
        Kind::Enum(&["always", "everysec", "no"]),
        "everysec",
        false
    ),
    d!("requirepass", Kind::Str, "", true),
    d!("masterauth", Kind::Str, "", true),
    d!("masteruser", Kind::Str, "", true),
    d!("replicaof", ["slaveof"], Kind::Multi, "", true),
    d!("replica-read-only", ["slave-read-only"], YESNO, "yes", true),
    d!(
        "replica-serve-stale-data",
        ["slave-serve-stale-data"],
        YESNO,
        "yes",
        true
    ),
    d!(
        "replica-priority",
        ["slave-priority"],
        Kind::Int(0, i32::MAX as i64),
        "100",
        true
    ),
    d!("repl-backlog-size", Kind::Memory, "1048576", true),
    d!(
        "repl-ping-replica-period",
        ["repl-ping-slave-period"],
        Kind::Int(1, i32::MAX as i64),
        "10",
        true
    ),
    d!("repl-timeout", Kind::Int(1, i32::MAX as i64), "60", true),
    d!("repl-diskless-sync", YESNO, "yes", false),
    d!(
        "repl-diskless-sync-delay",
        Kind::Int(0, i32::MAX as i64),
        "5",
        false
    ),
    d!(
        "min-replicas-to-write",
        ["min-slaves-to-write"],
        Kind::Int(0, i32::MAX as i64),
        "0",
        true
    ),
    d!(
        "min-replicas-max-lag",
        ["min-slaves-max-lag"],
        Kind::Int(0, i32::MAX as i64),
        "10",
        true
    ),
    d!("cluster-enabled", YESNO, "no", true),
    d!("cluster-config-file", Kind::Str, "nodes.conf", true),
    d!("cluster-node-timeout", Kind::Int(0, MAXI), "15000", true),
    d!("cluster-port", Kind::Int(0, 65535), "0", true),
    d!(
        "cluster-replica-validity-factor",
        ["cluster-slave-validity-factor"],
        Kind::Int(0, i32::MAX as i64),
        "10",
        false
    ),
    d!(
        "cluster-migration-barrier",
        Kind::Int(0, i32::MAX as i64),
        "1",
        false
    ),
    d!("cluster-require-full-coverage", YESNO, "yes", true),
    d!("cluster-allow-reads-when-down", YESNO, "no", true),
    d!("cluster-allow-replica-migration", YESNO, "yes", true),
    d!(
        "cluster-replica-no-failover",
        ["cluster-slave-no-failover"],
        YESNO,
        "no",
        false
    ),
    d!("cluster-announce-ip", Kind::Str, "", true),
    d!("cluster-announce-port", Kind::Int(0, 65535), "0", true),
    d!("cluster-announce-bus-port", Kind::Int(0, 65535), "0", true),
    d!("cluster-announce-hostname", Kind::Str, "", false),
    d!("maxmemory", Kind::Memory, "0", true),
    d!(
        "maxmemory-policy",
        Kind::Enum(&[
            "volatile-lru",
            "allkeys-lru",
            "volatile-lfu",
            "allkeys-lfu",
            "volatile-random",
            "allkeys-random",
            "volatile-ttl",
            "noeviction"
        ]),
        "noeviction",
        true
    ),
    d!("maxmemory-samples", Kind::Int(1, 64), "5", true),
    d!("maxmemory-eviction-tenacity", Kind::Int(0, 100), "10", true),
    d!(
        "replica-ignore-maxmemory",
        ["slave-ignore-maxmemory"],
        YESNO,
        "yes",
        true
    ),
    d!("lfu-log-factor", Kind::Int(0, MAXI), "10", true),
    d!("lfu-decay-time", Kind::Int(0, MAXI), "1", true),
    d!("maxclients", Kind::Int(1, MAXI), "10000", true),
    d!("databases", Kind::Int(1, i32::MAX as i64), "16", true),
    d!("timeout", Kind::Int(0, MAXI), "0", true),
    d!("tcp-keepalive", Kind::Int(0, MAXI), "300", true),
    d!("tcp-backlog", Kind::Int(0, MAXI), "511", true),
    d!("proto-max-bulk-len", Kind::Memory, "536870912", true),
    d!(
        "client-query-buffer-limit",
        Kind::Memory,
        "1073741824",
        true
    ),
    d!(
        "slowlog-log-slower-than",
        Kind::Int(-1, MAXI),
        "10000",
        true
    ),
    d!("slowlog-max-len", Kind::Int(0, MAXI), "128", true),
    d!("hz", Kind::Int(0, MAXI), "10", true),
    d!(
        "lua-time-limit",
        ["busy-reply-threshold"],
        Kind::Int(0, MAXI),
        "5000",
        false
    ),
    d!(
        "supervised",
        Kind::Enum(&["upstart", "systemd", "auto", "no"]),
        "no",
        true
    ),
    d!("always-show-logo", YESNO, "no", false),
    d!("set-proc-title", YESNO, "yes", false),
    d!("stop-writes-on-bgsave-error", YESNO, "yes", true),
    d!("rdbcompression", YESNO, "yes", false),
    d!("rdbchecksum", YESNO, "yes", false),
    d!("lazyfree-lazy-eviction", YESNO, "no", false),
    d!("lazyfree-lazy-expire", YESNO, "no", false),
    d!("lazyfree-lazy-server-del", YESNO, "no", false),
    d!("lazyfree-lazy-user-del", YESNO, "no", false),
    d!("io-threads", Kind::Int(1, 128), "1", true),
    d!("notify-keyspace-events", Kind::Str, "", true),
    d!("no-appendfsync-on-rewrite", YESNO, "no", false),
    d!(
        "auto-aof-rewrite-percentage",
        Kind::Int(0, MAXI),
        "100",
        false
    ),
    d!("auto-aof-rewrite-min-size", Kind::Memory, "67108864", false),
    d!("aof-use-rdb-preamble", YESNO, "yes", false),
    d!("latency-monitor-threshold", Kind::Int(0, MAXI), "0", false),
    d!("activerehashing", YESNO, "yes", false),
    d!(
        "client-output-buffer-limit",
        Kind::Multi,
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
        false
    ),
    d!("unixsocket", Kind::Str, "", true),
    d!("unixsocketperm", Kind::Str, "0", true),
    d!("metrics-port", Kind::Int(0, 65535), "0", true),
    d!(
        "enable-debug-command",
        Kind::Enum(&["yes", "no", "local"]),
        "no",
        true
    ),
    d!(
        "enable-protected-configs",
        Kind::Enum(&["yes", "no", "local"]),
        "no",
        true
    ),
    d!(
        "enable-module-command",
        Kind::Enum(&["yes", "no", "local"]),
        "no",
        false
    ),
    d!(
        "hash-max-listpack-entries",
        ["hash-max-ziplist-entries"],
        Kind::Int(0, MAXI),
        "512",
        true
    ),
    d!(
        "hash-max-listpack-value",
        ["hash-max-ziplist-value"],
        Kind::Int(0, MAXI),
        "64",
        true
    ),
    d!(
        "list-max-listpack-size",
        ["list-max-ziplist-size"],
        Kind::Int(i32::MIN as i64, i32::MAX as i64),
        "-2",
        false
    ),
    d!("set-max-intset-entries", Kind::Int(0, MAXI), "512", true),
    d!(
        "zset-max-listpack-entries",
        ["zset-max-ziplist-entries"],
        Kind::Int(0, MAXI),
        "128",
        true
    ),
    d!(
        "zset-max-listpack-value",
        ["zset-max-ziplist-value"],
        Kind::Int(0, MAXI),
        "64",
        true
    ),
    // The rest of redis-server 7.0's directives (CONFIG GET * lists the same names), so any
    // redis.conf it accepts loads here (Debian's default one included); not acted on.
    d!("tls-prefer-server-ciphers", YESNO, "no", false),
    d!("replica-announced", YESNO, "yes", false),
    d!("aof-disable-auto-gc", YESNO, "no", false),
    d!("syslog-enabled", YESNO, "no", false),
    d!("tls-cluster", YESNO, "no", false),
    d!("rdb-save-incremental-fsync", YESNO, "yes", false),
    d!("aof-timestamp-enabled", YESNO, "no", false),
    d!("repl-disable-tcp-nodelay", YESNO, "no", false),
    d!("rdb-del-sync-files", YESNO, "no", false),
    d!("crash-memcheck-enabled", YESNO, "yes", false),
    d!("crash-log-enabled", YESNO, "yes", false),
    d!("aof-rewrite-incremental-fsync", YESNO, "yes", false),
    d!("lazyfree-lazy-user-flush", YESNO, "no", false),
    d!("replica-ignore-disk-write-errors", YESNO, "no", false),
    d!("disable-thp", YESNO, "yes", false),
    d!("jemalloc-bg-thread", YESNO, "yes", false),
    d!("tls-replication", YESNO, "no", false),
    d!("aof-load-truncated", YESNO, "yes", false),
    d!("activedefrag", YESNO, "no", false),
    d!("io-threads-do-reads", YESNO, "no", false),
    d!("tls-session-caching", YESNO, "yes", false),
    d!("latency-tracking", YESNO, "yes", false),
    d!("dynamic-hz", YESNO, "yes", false),
    d!("cluster-allow-pubsubshard-when-down", YESNO, "yes", false),
    d!(
        "active-defrag-threshold-upper",
        Kind::Int(0, 1000),
        "100",
        false
    ),
    d!("acllog-max-len", Kind::Int(0, MAXI), "128", false),
    d!(
        "active-defrag-threshold-lower",
        Kind::Int(0, 1000),
        "10",
        false
    ),
    d!(
        "active-defrag-max-scan-fields",
        Kind::Int(1, MAXI),
        "1000",
        false
    ),
    d!("active-defrag-cycle-max", Kind::Int(1, 99), "25", false),
    d!("active-defrag-cycle-min", Kind::Int(1, 99), "1", false),
    d!(
        "shutdown-timeout",
        Kind::Int(0, i32::MAX as i64),
        "10",
        false
    ),
    d!(
        "repl-diskless-sync-max-replicas",
        Kind::Int(0, i32::MAX as i64),
        "0",
        false
    ),
    d!("active-expire-effort", Kind::Int(1, 10), "1", false),
    d!(
        "list-compress-depth",
        Kind::Int(0, i32::MAX as i64),
        "0",
        false
    ),
    d!("socket-mark-id", Kind::Int(0, u32::MAX as i64), "0", false),
    d!("tls-port", Kind::Int(0, 65535), "0", false),
    d!("stream-node-max-entries", Kind::Int(0, MAXI), "100", false),
    d!("repl-backlog-ttl", Kind::Int(0, MAXI), "3600", false),
    d!(
        "tracking-table-max-keys",
        Kind::Int(0, MAXI),
        "1000000",
        false
    ),
    d!(
        "tls-session-cache-timeout",
        Kind::Int(0, MAXI),
        "300",
        false
    ),
    d!("tls-session-cache-size", Kind::Int(0, MAXI), "20480", false),
    d!("cluster-announce-tls-port", Kind::Int(0, 65535), "0", false),
    d!("cluster-link-sendbuf-limit", Kind::Memory, "0", false),
    d!("hll-sparse-max-bytes", Kind::Memory, "3000", false),
    d!(
        "active-defrag-ignore-bytes",
        Kind::Memory,
        "104857600",
        false
    ),
    d!("stream-node-max-bytes", Kind::Memory, "4096", false),
    d!("tls-ciphers", Kind::Str, "", false),
    d!("bgsave_cpulist", Kind::Str, "", false),
    d!("bio_cpulist", Kind::Str, "", false),
    d!("tls-client-cert-file", Kind::Str, "", false),
    d!("tls-ca-cert-dir", Kind::Str, "", false),
    d!("tls-key-file-pass", Kind::Str, "", false),
    d!("bind-source-addr", Kind::Str, "", false),
    d!("shutdown-on-sigint", Kind::Str, "default", false),
    d!("tls-ca-cert-file", Kind::Str, "", false),
    d!("aclfile", Kind::Str, "", false),
    d!("tls-key-file", Kind::Str, "", false),
    d!("maxmemory-clients", Kind::Str, "0", false),
    d!("tls-client-key-file-pass", Kind::Str, "", false),
    d!(
        "proc-title-template",
        Kind::Str,
        "{title} {listen-addr} {server-mode}",
        false
    ),
    d!("tls-cert-file", Kind::Str, "", false),
    d!("tls-client-key-file", Kind::Str, "", false),
    d!("tls-protocols", Kind::Str, "", false),
    d!("tls-dh-params-file", Kind::Str, "", false),
    d!("ignore-warnings", Kind::Str, "", false),
    d!("shutdown-on-sigterm", Kind::Str, "default", false),
    d!("tls-ciphersuites", Kind::Str, "", false),
    d!("syslog-ident", Kind::Str, "redis", false),
    d!("aof_rewrite_cpulist", Kind::Str, "", false),
    d!("server_cpulist", Kind::Str, "", false),
    d!(
        "propagation-error-behavior",
        Kind::Enum(&["ignore", "panic", "panic-on-replicas"]),
        "ignore",
        false
    ),
    d!(
        "acl-pubsub-default",
        Kind::Enum(&["allchannels", "resetchannels"]),
        "resetchannels",
        false
    ),
    d!(
        "repl-diskless-load",
        Kind::Enum(&["disabled", "on-empty-db", "swapdb"]),
        "disabled",
        false
    ),
    d!(
        "syslog-facility",
        Kind::Enum(&[
            "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"
        ]),
        "local0",
        false
    ),
    d!(
        "cluster-preferred-endpoint-type",
        Kind::Enum(&["ip", "hostname", "unknown-endpoint"]),
        "ip",
        false
    ),
    d!(
        "oom-score-adj",
        Kind::Enum(&["no", "yes", "relative", "absolute"]),
        "no",
        false
    ),
    d!(
        "sanitize-dump-payload",
        Kind::Enum(&["no", "yes", "clients"]),
        "no",
        false
    ),
    d!(
        "tls-auth-clients",
        Kind::Enum(&["no", "yes", "optional"]),
        "yes",
        false
    ),
    d!("oom-score-adj-values", Kind::Multi, "0 200 800", false),
    d!(
        "latency-tracking-info-percentiles",
        Kind::Multi,
        "50 99 99.9",
        false
    ),
    d!(
        "replica-lazy-flush",
        ["slave-lazy-flush"],
        YESNO,
        "no",
        false
    ),
    d!(
        "replica-announce-ip",
        ["slave-announce-ip"],
        Kind::Str,
        "",
        false
    ),
    d!(
        "replica-announce-port",
        ["slave-announce-port"],
        Kind::Int(0, 65535),
        "0",
        false
    ),
];

/// A fatal configuration error, printed exactly as redis-server prints it.
#[derive(Debug)]
pub struct ConfigError {
    /// 1-based line in the combined configuration (file, then command-line arguments).
    pub line: usize,
    /// The offending line.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not about one line (a file that cannot be read): redis-server's one-line form.
            return write!(f, "{}", self.reason);
        }
        write!(
            f,
            "\n*** FATAL CONFIG FILE ERROR (Redis {}) ***\nReading the configuration file, at line {}\n>>> '{}'\n{}",
            crate::REDIS_VERSION,
            self.line,
            self.text,
            self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// The table name of a top-level command (case-insensitive).
fn lookup_command_name(name: &str) -> Option<&'static str> {
    slotgate_protocol::commands::lookup(name.as_bytes()).map(|s| s.name)
}

/// An I/O error as redis-server words it (strerror, without Rust's "(os error N)").
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Finds a directive by name or alias (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static Directive> {
    let lower = name.to_ascii_lowercase();
    DIRECTIVES
        .iter()
        .find(|d| d.name == lower || d.aliases.contains(&lower.as_str()))
}

/// Parses a memory amount as redis does (`1gb`, `10mb`, `100k`, plain bytes).
pub fn parse_memory(s: &str) -> Option<i64> {
    let l = s.to_ascii_lowercase();
    let units: &[(&str, i64)] = &[
        ("gb", 1 << 30),
        ("mb", 1 << 20),
        ("kb", 1 << 10),
        ("g", 1_000_000_000),
        ("m", 1_000_000),
        ("k", 1000),
        ("b", 1),
    ];
    for (u, mul) in units {
        if let Some(num) = l.strip_suffix(u) {
            return num.parse::<i64>().ok().and_then(|n| n.checked_mul(*mul));
        }
    }
    l.parse::<i64>().ok()
}

fn check_value(d: &Directive, args: &[String]) -> Result<String, String> {
    let single = || -> Result<&String, String> {
        if args.len() == 1 {
            Ok(&args[0])
        } else {
            Err("wrong number of arguments".into())
        }
    };
    match d.kind {
        Kind::Bool => {
            let v = single()?.to_ascii_lowercase();
            if v == "yes" || v == "no" {
                Ok(v)
            } else {
                Err("argument must be 'yes' or 'no'".into())
            }
        }
        Kind::Int(lo, hi) => {
            let v = single()?;
            let n = parse_memory(v)
                .ok_or_else(|| "argument couldn't be parsed into an integer".to_string())?;
            if n < lo || n > hi {
                Err(format!("argument must be between {lo} and {hi} inclusive"))
            } else {
                Ok(n.to_string())
            }
        }
        Kind::Memory => {
            let v = single()?;
            let n = parse_memory(v).ok_or_else(|| "argument must be a memory value".to_string())?;
            if n < 0 {
                Err("argument must be a memory value".into())
            } else {
                Ok(n.to_string())
            }
        }
        Kind::Str => {
            let v = single()?;
            if d.name == "dbfilename" && v.contains('/') {
                return Err("dbfilename can't be a path, just a filename".into());
            }
            if d.name == "unixsocketperm" {
                // Octal, as redis-server reads it (`unixsocketperm 700`).
                return match u32::from_str_radix(v, 8) {
                    Ok(n) if n <= 0o777 => Ok(v.clone()),
                    Ok(_) => Err("argument must be between 0 and 777 inclusive".into()),
                    Err(_) => Err("argument couldn't be parsed as an octal number".into()),
                };
            }
            if d.name == "notify-keyspace-events" {
                // Stored in the canonical form CONFIG GET shows.
                return crate::notify::parse(v)
                    .map(crate::notify::to_config)
                    .ok_or_else(|| crate::notify::ERR_CLASS.to_string());
            }
            Ok(v.clone())
        }
        Kind::Enum(words) => {
            let v = single()?.to_ascii_lowercase();
            if words.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err("argument(s) must be one of the following: ".to_string() + &words.join(", "))
            }
        }
        Kind::Multi => {
            let v = args.join(" ");
            if d.name == "save" {
                let words: Vec<&str> = v.split_whitespace().collect();
                if !words.len().is_multiple_of(2) || words.iter().any(|w| w.parse::<u64>().is_err())
                {
                    return Err("Invalid save parameters".into());
                }
            }
            Ok(v)
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    values: BTreeMap<&'static str, String>,
    /// Absolute path of the configuration file, when started with one (CONFIG REWRITE needs it).
    pub file: Option<PathBuf>,
    /// Directives given that slotgate accepts but does not act on (warned once at start).
    pub ignored: Vec<&'static str>,
    /// Directives set explicitly in the file or on the command line.
    pub explicit: Vec<&'static str>,
    /// `rename-command <from> <to>` lines, lowercase, in order (`to` empty: disabled).
    pub renames: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            values: DIRECTIVES
                .iter()
                .map(|d| (d.name, d.default.to_string()))
                .collect(),
            file: None,
            ignored: Vec::new(),
            explicit: Vec::new(),
            renames: Vec::new(),
        }
    }
}

/// Splits one config line into words (quotes as redis's sdssplitargs).
fn split_line(line: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    slotgate_protocol::resp::split_inline_args(line.as_bytes(), &mut args).ok()?;
    Some(
        args.into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect(),
    )
}

impl Config {
    /// Builds the configuration from `slotgate-node [config-file] [--directive value ...]`.
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let mut text = String::new();
        let mut cfg = Config::default();
        let mut rest = args;
        if let Some(first) = args.first() {
            if !first.starts_with("--") {
                let path = PathBuf::from(first);
                let content = if first == "-" {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
                } else {
                    std::fs::read_to_string(&path)
                };
                match content {
                    Ok(c) => text.push_str(&c),
                    Err(e) => {
                        return Err(ConfigError {
                            line: 0,
                            text: first.clone(),
                            reason: format!(
                                "Fatal error, can't open config file '{first}': {}",
                                io_reason(&e)
                            ),
                        })
                    }
                }
                if !text.ends_with('\n') && !text.is_empty() {
                    text.push('\n');
                }
                cfg.file = Some(std::fs::canonicalize(&path).unwrap_or(path));
                rest = &args[1..];
            }
        }
        // Command-line options become lines appended to the file, as redis-server does.
        let mut cur: Vec<String> = Vec::new();
        for a in rest {
            if let Some(name) = a.strip_prefix("--") {
                if !cur.is_empty() {
                    text.push_str(&cur.join(" "));
                    text.push('\n');
                }
                cur = vec![name.to_string()];
            } else if cur.is_empty() {
                return Err(ConfigError {
                    line: 0,
                    text: a.clone(),
                    reason: "Invalid argument: options must start with --".into(),
                });
            } else {
                cur.push(quote_arg(a));
            }
        }
        if !cur.is_empty() {
            text.push_str(&cur.join(" "));
            text.push('\n');
        }
        cfg.load_text(&text)?;
        Ok(cfg)
    }

    /// `include <path>` (a glob in the file name loads every match, in name order), as
    /// redis-server: the file's lines apply at that point; a file that cannot be read is fatal.
    fn include(&mut self, path: &str, depth: usize) -> Result<(), ConfigError> {
        if depth > 16 {
            return Err(ConfigError {
                line: 0,
                text: path.to_string(),
                reason: format!("Fatal error, too many nested includes at '{path}'"),
            });
        }
        let cant_open = |p: &str, e: std::io::Error| ConfigError {
            line: 0,
            text: p.to_string(),
            reason: format!(
                "Fatal error, can't open config file '{p}': {}",
                io_reason(&e)
            ),
        };
        let p = std::path::Path::new(path);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let files: Vec<PathBuf> = if name.contains(['*', '?', '[']) {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| cant_open(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        crate::glob::glob_match(name.as_bytes(), n.as_bytes(), false)
                    })
                })
                .collect();
            found.sort();
            found
        } else {
            vec![p.to_path_buf()]
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).map_err(|e| cant_open(&f.to_string_lossy(), e))?;
            self.load_lines(&text, depth + 1)?;
        }
        Ok(())
    }

    /// `user <name> <rules...>`: only the `default` user exists here; its password rules
    /// (`>pw`, `nopass`, `resetpass`) set `requirepass`, as they would in Redis. Other users
    /// cannot be created (no ACL), so a line naming one is accepted with a warning.
    fn user_rules(&mut self, user: &str, rules: &[String]) -> Result<(), String> {
        if user != "default" {
            self.note_ignored("user");
            return Ok(());
        }
        for r in rules {
            if let Some(pw) = r.strip_prefix('>') {
                self.values.insert("requirepass", pw.to_string());
            } else if r == "nopass" || r == "resetpass" {
                self.values.insert("requirepass", String::new());
            } else if r == "off" {
                return Err("slotgate-node cannot disable the default user (no ACL)".into());
            }
        }
        Ok(())
    }

    fn load_text(&mut self, text: &str) -> Result<(), ConfigError> {
        self.load_lines(text, 0)
    }

    fn load_lines(&mut self, text: &str, depth: usize) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| ConfigError {
                line: i + 1,
                text: raw.to_string(),
                reason,
            };
            let words = split_line(line)
                .ok_or_else(|| err("Unbalanced quotes in configuration line".into()))?;
            let Some((name, vals)) = words.split_first() else {
                continue;
            };
            let lname = name.to_ascii_lowercase();
            match (lname.as_str(), vals) {
                ("include", [path]) => {
                    self.include(path, depth)?;
                    continue;
                }
                ("rename-command", [from, to]) => {
                    if lookup_command_name(from).is_none() {
                        return Err(err("No such command in rename-command".into()));
                    }
                    self.renames
                        .push((from.to_ascii_lowercase(), to.to_ascii_lowercase()));
                    continue;
                }
                ("user", [user, rules @ ..]) => {
                    self.user_rules(user, rules).map_err(err)?;
                    continue;
                }
                ("loadmodule", [path, ..]) => {
                    // Modules cannot be loaded here: fail as redis-server does when one does
                    // not load, rather than start without the commands it would add.
                    return Err(ConfigError {
                        line: 0,
                        text: raw.to_string(),
                        reason: format!(
                            "Module {path} failed to load: slotgate-node does not load Redis modules\nCan't load module from {path}: server aborting"
                        ),
                    });
                }
                _ => {}
            }
            let Some(d) = lookup(&lname) else {
                return Err(err("Bad directive or wrong number of arguments".into()));
            };
            if d.name == "replicaof" && self.get("cluster-enabled") == "yes" {
                return Err(err("replicaof directive not allowed in cluster mode".into()));
            }
            let v = check_value(d, vals).map_err(err)?;
            if d.name == "cluster-enabled" && v == "yes" && !self.get("replicaof").is_empty() {
                return Err(err("replicaof directive not allowed in cluster mode".into()));
            }
            // A directive left at its default loses nothing by not being acted on: only the
            // others are worth the start-up warning.
            if !d.acted_on && v != d.default {
                self.note_ignored(d.name);
            }
            self.values.insert(d.name, v);
            if !self.explicit.contains(&d.name) {
                self.explicit.push(d.name);
            }
        }
        Ok(())
    }

    fn note_ignored(&mut self, name: &'static str) {
        if !self.ignored.contains(&name) {
            self.ignored.push(name);
        }
    }

    /// The value of a directive as CONFIG GET shows it ("" when unknown).
    pub fn get(&self, name: &str) -> &str {
        lookup(name)
            .and_then(|d| self.values.get(d.name))
            .map(|s| s.as_str())
            .unwrap_or("")
    }

    /// Integer value of a directive (0 when unset or not a number).
    pub fn get_int(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or(0)
    }

    /// Boolean value of a yes/no directive.
    pub fn get_bool(&self, name: &str) -> bool {
        self.get(name) == "yes"
    }

    /// CONFIG SET: validates and stores a value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let d = lookup(name).ok_or_else(|| {
            format!("Unknown option or number of arguments for CONFIG SET - '{name}'")
        })?;
        let args: Vec<String> = if matches!(d.kind, Kind::Multi) {
            value.split_whitespace().map(str::to_string).collect()
        } else {
            vec![value.to_string()]
        };
        let v = check_value(d, &args).map_err(|e| {
            format!("CONFIG SET failed (possibly related to argument '{name}') - {e}")
        })?;
        self.values.insert(d.name, v);
        Ok(())
    }

    /// CONFIG GET: every (name, value) whose name or alias matches the glob `pattern`.
    pub fn matching(&self, pattern: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for d in DIRECTIVES {
            let v = self.values.get(d.name).cloned().unwrap_or_default();
            if crate::glob::glob_match(pattern, d.name.as_bytes(), true) {
                out.push((d.name.to_string(), v.clone()));
            }
            for a in d.aliases {
                if crate::glob::glob_match(pattern, a.as_bytes(), true) {
                    out.push((a.to_string(), v.clone()));
                }
            }
        }
        out
    }

    /// CONFIG REWRITE: rewrites the config file with the current values, keeping comments.
    pub fn rewrite(&self) -> Result<(), String> {
        let path = self
            .file
            .as_ref()
            .ok_or_else(|| "The server is running without a config file".to_string())?;
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let mut seen: Vec<&'static str> = Vec::new();
        let mut out = String::new();
        for raw in old.lines() {
            let words = split_line(raw.trim()).unwrap_or_default();
            let d = words.first().and_then(|w| lookup(w));
            match d {
                Some(d) if !raw.trim_start().starts_with('#') => {
                    if seen.contains(&d.name) {
                        continue;
                    }
                    seen.push(d.name);
                    out.push_str(&format!("{} {}\n", d.name, quote_arg(self.get(d.name))));
                }
                _ => {
                    out.push_str(raw);
                    out.push('\n');
                }
            }
        }
        let mut header = false;
        for d in DIRECTIVES {
            let v = self.get(d.name);
            if !seen.contains(&d.name) && v != d.default {
                if !header {
                    out.push_str("# Generated by CONFIG REWRITE\n");
                    header = true;
                }
                out.push_str(&format!("{} {}\n", d.name, quote_arg(v)));
            }
        }
        let tmp = path.with_extension("tmp-rewrite");
        std::fs::write(&tmp, out).map_err(|e| format!("Rewriting config file: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("Rewriting config file: {e}"))
    }
}

fn quote_arg(a: &str) -> String {
    if a.is_empty() {
        "\"\"".into()
    } else if a
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        format!("{a:?}")
    } else {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line_overrides() {
        let c = Config::from_args(&args(&[
            "--port",
            "7000",
            "--save",
            "",
            "--appendonly",
            "no",
        ]))
        .unwrap();
        assert_eq!(c.get("port"), "7000");
        assert_eq!(c.get("save"), "");
        assert_eq!(c.get("slaveof"), "");
    }

    #[test]
    fn fatal_errors_name_the_line() {
        let e = Config::from_args(&args(&["--port", "7000", "--bogus", "1"])).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains(">>> 'bogus 1'"));
        let e = Config::from_args(&args(&["--port", "99999"])).unwrap_err();
        assert!(e.reason.contains("between 0 and 65535"));
        let e = Config::from_args(&args(&[
            "--cluster-enabled",
            "yes",
            "--slaveof",
            "127.0.0.1",
            "6379",
        ]))
        .unwrap_err();
        assert_eq!(e.reason, "replicaof directive not allowed in cluster mode");
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("1gb"), Some(1 << 30));
        assert_eq!(parse_memory("100mb"), Some(100 << 20));
        assert_eq!(parse_memory("5k"), Some(5000));
    }
}
