//! End-to-end tests of the server command family: INFO, DBSIZE, FLUSHDB/FLUSHALL, CONFIG,
//! COMMAND, TIME, ROLE, LASTSAVE, SAVE/BGSAVE, SHUTDOWN, SLOWLOG, MONITOR, DEBUG, FUNCTION,
//! MEMORY, LATENCY, WAIT — plus a differential run of deterministic replies against a real
//! redis-server (skipped with a message when it is not installed).
//!
//! Keys are created with DEBUG POPULATE so the tests only rely on this family.

use slotgate_protocol::Frame;
use slotgate_tests::*;
use std::time::{Duration, Instant};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec().into())
}

fn simple(s: &str) -> Frame {
    Frame::Simple(s.as_bytes().to_vec().into())
}

fn err(s: &str) -> Frame {
    Frame::Error(s.as_bytes().to_vec().into())
}

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(
        f.as_bytes()
            .unwrap_or_else(|| panic!("not a string: {f:?}")),
    )
    .into_owned()
}

fn items(f: Frame) -> Vec<Frame> {
    match f {
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => v,
        other => panic!("not an aggregate: {other:?}"),
    }
}

fn debug_node() -> Proc {
    start_node(&["--enable-debug-command", "yes"])
}

/// Sends a command given as raw byte arguments.
fn cmd_bytes(r: &mut Raw, args: &[&[u8]]) -> Frame {
    let mut out = bytes::BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    r.send(&out);
    r.read().expect("reply")
}

/// One `field:value` line of an INFO text.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::to_string)
}

/// The slotgate-node command on `port` of 127.0.0.1 with saving off (after the config file
/// `conf`, when there is one), for tests that start the binary themselves.
fn node_cmd(conf: Option<&std::path::Path>, port: u16) -> std::process::Command {
    let mut c = std::process::Command::new(our_bin("slotgate-node"));
    if let Some(conf) = conf {
        c.arg(conf);
    }
    c.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ]);
    c
}

#[test]
fn info_sections_and_fields() {
    let node = debug_node();
    let mut r = Raw::connect(node.port);
    let info = text(&r.cmd(&["INFO"]));
    assert!(info.ends_with("\r\n"));
    assert!(!info.contains("\n\n") && !info.replace("\r\n", "").contains('\n'));
    let headers: Vec<&str> = info.split("\r\n").filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# CPU",
            "# Modules",
            "# Errorstats",
            "# Cluster",
            "# Keyspace"
        ]
    );
    for (k, v) in [
        ("redis_version", "7.0.15"),
        ("redis_git_sha1", "00000000"),
        ("redis_mode", "standalone"),
        ("arch_bits", "64"),
        ("loading", "0"),
        ("aof_enabled", "0"),
        ("role", "master"),
        ("connected_slaves", "0"),
        ("master_repl_offset", "0"),
        ("cluster_enabled", "0"),
        ("maxmemory", "0"),
    ] {
        assert_eq!(info_field(&info, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(info_field(&info, "tcp_port"), Some(node.port.to_string()));
    assert_eq!(
        info_field(&info, "process_id"),
        Some(node.child.id().to_string())
    );
    for k in ["run_id", "master_replid"] {
        let v = info_field(&info, k).unwrap();
        assert!(
            v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()),
            "{k}={v}"
        );
    }
    for k in [
        "os",
        "uptime_in_seconds",
        "connected_clients",
        "used_memory",
        "used_memory_human",
        "used_memory_rss",
        "rdb_changes_since_last_save",
        "total_connections_received",
        "total_commands_processed",
        "instantaneous_ops_per_sec",
        "keyspace_hits",
        "keyspace_misses",
        "expired_keys",
        "used_cpu_sys",
        "used_cpu_user",
    ] {
        assert!(info_field(&info, k).is_some(), "missing {k}");
    }
    assert!(
        info_field(&info, "used_memory")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(info_field(&info, "used_cpu_user").unwrap().contains('.'));
    // Only non-empty databases are listed.
    assert!(!info.contains("db0:"));
    assert_eq!(text(&r.cmd(&["INFO", "keyspace"])), "# Keyspace\r\n");
    assert_eq!(r.cmd(&["DEBUG", "POPULATE", "5"]), simple("OK"));
    r.cmd(&["SELECT", "3"]);
    r.cmd(&["DEBUG", "POPULATE", "2", "other"]);
    assert_eq!(
        text(&r.cmd(&["INFO", "keyspace"])),
        "# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=0,avg_ttl=0\r\n"
    );
    // Several sections in Redis's order; unknown sections are ignored.
    let two = text(&r.cmd(&["INFO", "KEYSPACE", "cpu", "nosuch"]));
    assert!(two.starts_with("# CPU\r\n"));
    assert!(two.contains("\r\n\r\n# Keyspace\r\n"));
    assert_eq!(r.cmd(&["INFO", "nosuch"]), bulk(""));
    let all = text(&r.cmd(&["INFO", "all"]));
    assert!(all.contains("# Commandstats\r\n"));
    assert!(all.contains("cmdstat_select:calls=1,usec="));
    assert!(all.contains("cmdstat_debug:calls=2,"));
    let cs = text(&r.cmd(&["INFO", "commandstats"]));
    assert!(cs.starts_with("# Commandstats\r\ncmdstat_"));
    assert!(cs.contains(",usec_per_call="));
    assert!(cs.contains(",rejected_calls=0,failed_calls=0"));
    let ev = text(&r.cmd(&["INFO", "everything"]));
    assert!(ev.contains("# Commandstats") && ev.contains("# Server"));
    let def = text(&r.cmd(&["INFO", "default"]));
    assert!(!def.contains("# Commandstats") && def.contains("# Keyspace"));
    // RESP3: a verbatim string.
    r.cmd(&["HELLO", "3"]);
    match r.cmd(&["INFO", "cluster"]) {
        Frame::Verbatim(fmt, data) => {
            assert_eq!(&fmt[..], b"txt");
            assert_eq!(&data[..], b"# Cluster\r\ncluster_enabled:0\r\n");
        }
        other => panic!("INFO in RESP3: {other:?}"),
    }
    let cluster = start_node(&["--cluster-enabled", "yes"]);
    let mut c = Raw::connect(cluster.port);
    let info = text(&c.cmd(&["INFO", "server", "cluster"]));
    assert_eq!(info_field(&info, "cluster_enabled").as_deref(), Some("1"));
    assert_eq!(info_field(&info, "redis_mode").as_deref(), Some("cluster"));
}

#[test]
fn dbsize_flushdb_flushall_save() {
    let node = debug_node();
    let mut r = Raw::connect(node.port);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(0));
    r.cmd(&["DEBUG", "POPULATE", "100"]);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(100));
    r.cmd(&["SELECT", "1"]);
    r.cmd(&["DEBUG", "POPULATE", "7"]);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(7));
    assert_eq!(r.cmd(&["FLUSHDB"]), simple("OK"));
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(0));
    r.cmd(&["SELECT", "0"]);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(100));
    assert_eq!(r.cmd(&["FLUSHDB", "foo"]), err("ERR syntax error"));
    assert_eq!(r.cmd(&["FLUSHALL", "ASYNC", "x"]), err("ERR syntax error"));
    r.cmd(&["SELECT", "1"]);
    r.cmd(&["DEBUG", "POPULATE", "3"]);
    let info = text(&r.cmd(&["INFO", "persistence"]));
    let changes: u64 = info_field(&info, "rdb_changes_since_last_save")
        .unwrap()
        .parse()
        .unwrap();
    assert!(changes >= 8, "{changes}");
    assert_eq!(r.cmd(&["FLUSHALL", "sync"]), simple("OK"));
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(0));
    r.cmd(&["SELECT", "0"]);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(0));
    assert_eq!(r.cmd(&["FLUSHDB", "ASYNC"]), simple("OK"));
    // SAVE / BGSAVE reset the change counter and move LASTSAVE.
    let before = match r.cmd(&["LASTSAVE"]) {
        Frame::Integer(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.cmd(&["SAVE"]), simple("OK"));
    let info = text(&r.cmd(&["INFO", "persistence"]));
    assert_eq!(
        info_field(&info, "rdb_changes_since_last_save").as_deref(),
        Some("0")
    );
    match r.cmd(&["LASTSAVE"]) {
        Frame::Integer(n) => assert!(n >= before),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.cmd(&["BGSAVE"]), simple("Background saving started"));
    // While that one runs, SCHEDULE queues another (it may have ended already).
    let scheduled = r.cmd(&["BGSAVE", "SCHEDULE"]);
    assert!(
        scheduled == simple("Background saving scheduled")
            || scheduled == simple("Background saving started"),
        "{scheduled:?}"
    );
    assert_eq!(r.cmd(&["BGSAVE", "x"]), err("ERR syntax error"));
    // SWAPDB moves whole databases (the selected index stays), and touches WATCHed keys.
    r.cmd(&["DEBUG", "POPULATE", "3"]);
    r.cmd(&["SELECT", "5"]);
    r.cmd(&["DEBUG", "POPULATE", "5", "five"]);
    let mut w = Raw::connect(node.port);
    w.cmd(&["SELECT", "5"]);
    w.cmd(&["WATCH", "five:0"]);
    assert_eq!(r.cmd(&["SWAPDB", "0", "5"]), simple("OK"));
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(3));
    assert!(!r.cmd(&["DEBUG", "OBJECT", "key:2"]).is_error());
    r.cmd(&["SELECT", "0"]);
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(5));
    w.cmd(&["MULTI"]);
    w.cmd(&["PING"]);
    assert_eq!(w.cmd(&["EXEC"]), Frame::Null);
    assert_eq!(
        r.cmd(&["SWAPDB", "0", "99"]),
        err("ERR DB index is out of range")
    );
}

#[test]
fn config_get_set_rewrite_resetstat() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    // Several patterns (Redis 7.0); a directive matched twice is listed once.
    let got = items(r.cmd(&["CONFIG", "GET", "maxmemory", "port", "maxmemory"]));
    assert_eq!(got.len(), 4);
    let pairs: Vec<(Frame, Frame)> = got
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    assert!(pairs.contains(&(bulk("maxmemory"), bulk("0"))));
    assert!(pairs.contains(&(bulk("port"), bulk(&node.port.to_string()))));
    let slow = items(r.cmd(&["CONFIG", "GET", "slowlog-*"]));
    assert_eq!(slow.len(), 4);
    assert_eq!(items(r.cmd(&["CONFIG", "GET", "nosuch"])), vec![]);
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "slowlog-max-len", "5", "hz", "20"]),
        simple("OK")
    );
    assert_eq!(
        items(r.cmd(&["CONFIG", "GET", "slowlog-max-len"])),
        vec![bulk("slowlog-max-len"), bulk("5")]
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "foo", "bar"]),
        err("ERR Unknown option or number of arguments for CONFIG SET - 'foo'")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "maxmemory", "abc"]),
        err("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "hz", "1", "hz", "2"]),
        err("ERR CONFIG SET failed (possibly related to argument 'hz') - duplicate parameter")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "daemonize", "yes"]),
        err("ERR CONFIG SET failed (possibly related to argument 'daemonize') - can't set immutable config")
    );
    // A failing pair leaves the others unapplied.
    r.cmd(&["CONFIG", "SET", "hz", "30", "maxmemory", "x"]);
    assert_eq!(
        items(r.cmd(&["CONFIG", "GET", "hz"])),
        vec![bulk("hz"), bulk("20")]
    );
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "hz", "1", "x"]),
        err("ERR wrong number of arguments for 'config|set' command")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "REWRITE"]),
        err("ERR The server is running without a config file")
    );
    assert_eq!(
        r.cmd(&["CONFIG", "FOO"]),
        err("ERR unknown subcommand 'FOO'. Try CONFIG HELP.")
    );
    assert_eq!(items(r.cmd(&["CONFIG", "HELP"])).len(), 11);
    // RESP3: a map.
    r.cmd(&["HELLO", "3"]);
    assert_eq!(
        r.cmd(&["CONFIG", "GET", "maxmemory"]),
        Frame::Map(vec![(bulk("maxmemory"), bulk("0"))])
    );
    // RESETSTAT.
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]), simple("OK"));
    let info = match r.cmd(&["INFO", "stats", "commandstats"]) {
        Frame::Verbatim(_, d) => String::from_utf8_lossy(&d).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        info_field(&info, "total_commands_processed").as_deref(),
        Some("1")
    );
    assert!(!info.contains("cmdstat_ping"));
    // requirepass takes effect for new connections (and AUTH), loglevel is accepted.
    assert_eq!(
        r.cmd(&[
            "CONFIG",
            "SET",
            "requirepass",
            "s3cret",
            "loglevel",
            "verbose"
        ]),
        simple("OK")
    );
    let mut other = Raw::connect(node.port);
    assert_eq!(
        other.cmd(&["DBSIZE"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(other.cmd(&["AUTH", "s3cret"]), simple("OK"));
    assert_eq!(other.cmd(&["DBSIZE"]), Frame::Integer(0));
    assert_eq!(
        other.cmd(&["CONFIG", "SET", "requirepass", ""]),
        simple("OK")
    );
    let mut third = Raw::connect(node.port);
    assert_eq!(third.cmd(&["DBSIZE"]), Frame::Integer(0));
}

#[test]
fn config_rewrite_with_file() {
    let dir = std::env::temp_dir().join(format!("sg-server-rw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("node.conf");
    std::fs::write(&conf, "# my config\nhz 10\n").unwrap();
    let port = free_port();
    let child = node_cmd(Some(&conf), port)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node = Proc {
        child,
        port,
        dir: dir.clone(),
    };
    let t = Instant::now();
    let mut r = loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            break Raw::connect(port);
        }
        assert!(t.elapsed() < Duration::from_secs(10), "node did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        r.cmd(&["CONFIG", "SET", "hz", "15", "maxmemory", "1mb"]),
        simple("OK")
    );
    assert_eq!(r.cmd(&["CONFIG", "REWRITE"]), simple("OK"));
    let written = std::fs::read_to_string(&conf).unwrap();
    assert!(written.starts_with("# my config\nhz 15\n"), "{written}");
    assert!(written.contains("maxmemory 1048576"), "{written}");
    drop(node);
}

#[test]
fn command_introspection() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    let all = items(r.cmd(&["COMMAND"]));
    let count = match r.cmd(&["COMMAND", "COUNT"]) {
        Frame::Integer(n) => n as usize,
        other => panic!("{other:?}"),
    };
    assert_eq!(all.len(), count);
    assert!(count >= 20);
    for c in &all {
        let c = items(c.clone());
        assert_eq!(c.len(), 10, "{c:?}");
    }
    let names: Vec<String> = all.iter().map(|c| text(&items(c.clone())[0])).collect();
    for n in ["info", "config", "command", "subscribe", "ping", "multi"] {
        assert!(names.iter().any(|x| x == n), "COMMAND lacks {n}");
    }
    let info = items(r.cmd(&["COMMAND", "INFO", "dbsize", "nosuchcmd", "config|get"]));
    assert_eq!(info.len(), 3);
    let dbsize = items(info[0].clone());
    assert_eq!(dbsize[0], bulk("dbsize"));
    assert_eq!(dbsize[1], Frame::Integer(1));
    assert_eq!(info[1], Frame::Null);
    assert_eq!(items(info[2].clone())[0], bulk("config|get"));
    assert!(items(r.cmd(&["COMMAND", "INFO"])).len() == count);
    let docs = items(r.cmd(&["COMMAND", "DOCS", "dbsize", "nosuchcmd"]));
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0], bulk("dbsize"));
    let list = items(r.cmd(&["COMMAND", "LIST"]));
    assert!(list.contains(&bulk("config|get")) && list.contains(&bulk("ping")));
    let mut flush: Vec<String> =
        items(r.cmd(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "flush*"]))
            .iter()
            .map(text)
            .collect();
    flush.sort();
    assert_eq!(flush, ["flushall", "flushdb"]);
    let ps: Vec<String> = items(r.cmd(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "pubsub"]))
        .iter()
        .map(text)
        .collect();
    assert!(ps.contains(&"publish".to_string()) && !ps.contains(&"ping".to_string()));
    assert!(items(r.cmd(&["COMMAND", "LIST", "FILTERBY", "MODULE", "x"])).is_empty());
    assert_eq!(
        r.cmd(&["COMMAND", "LIST", "FILTERBY", "FOO", "x"]),
        err("ERR syntax error")
    );
    assert_eq!(
        items(r.cmd(&["COMMAND", "GETKEYS", "mset", "a", "1", "b", "2"])),
        vec![bulk("a"), bulk("b")]
    );
    assert_eq!(
        r.cmd(&["COMMAND", "GETKEYS", "ping", "x"]),
        err("ERR The command has no key arguments")
    );
    assert_eq!(
        r.cmd(&["COMMAND", "GETKEYS", "nosuch", "x"]),
        err("ERR Invalid command specified")
    );
    assert_eq!(
        r.cmd(&[
            "COMMAND",
            "GETKEYSANDFLAGS",
            "lmove",
            "a",
            "b",
            "left",
            "right"
        ]),
        Frame::Array(vec![
            Frame::Array(vec![
                bulk("a"),
                Frame::Array(vec![simple("RW"), simple("access"), simple("delete")])
            ]),
            Frame::Array(vec![
                bulk("b"),
                Frame::Array(vec![simple("RW"), simple("insert")])
            ]),
        ])
    );
    assert_eq!(
        r.cmd(&["COMMAND", "FOO"]),
        err("ERR unknown subcommand 'FOO'. Try COMMAND HELP.")
    );
    // RESP3: COMMAND DOCS is a map, key specs flags are sets.
    r.cmd(&["HELLO", "3"]);
    match r.cmd(&["COMMAND", "DOCS", "dbsize"]) {
        Frame::Map(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].0, bulk("dbsize"));
            assert!(matches!(m[0].1, Frame::Map(_)));
        }
        other => panic!("{other:?}"),
    }
    match r.cmd(&["COMMAND", "GETKEYSANDFLAGS", "set", "k", "v"]) {
        Frame::Array(v) => assert_eq!(
            v,
            vec![Frame::Array(vec![
                bulk("k"),
                Frame::Set(vec![simple("OW"), simple("update")])
            ])]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn time_role_wait() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    let t = items(r.cmd(&["TIME"]));
    let secs: u64 = text(&t[0]).parse().unwrap();
    let micros: u64 = text(&t[1]).parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 2 && micros < 1_000_000);
    assert_eq!(
        r.cmd(&["ROLE"]),
        Frame::Array(vec![
            bulk("master"),
            Frame::Integer(0),
            Frame::Array(vec![])
        ])
    );
    assert_eq!(r.cmd(&["WAIT", "0", "0"]), Frame::Integer(0));
    assert_eq!(r.cmd(&["WAIT", "1", "100"]), Frame::Integer(0));
    assert_eq!(r.cmd(&["WAIT", "1", "-1"]), err("ERR timeout is negative"));
    assert_eq!(
        r.cmd(&["WAIT", "x", "0"]),
        err("ERR value is not an integer or out of range")
    );
}

#[test]
fn slowlog_entries() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    let port = r.s.local_addr().unwrap().port();
    r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    r.cmd(&["CLIENT", "SETNAME", "me"]);
    r.cmd(&["ECHO", "hello"]);
    let got = items(r.cmd(&["SLOWLOG", "GET", "1"]));
    assert_eq!(got.len(), 1);
    let e = items(got[0].clone());
    assert_eq!(e.len(), 6);
    assert!(matches!(e[0], Frame::Integer(_)));
    assert!(matches!(e[1], Frame::Integer(t) if t > 1_600_000_000));
    assert!(matches!(e[2], Frame::Integer(_)));
    assert_eq!(e[3], Frame::Array(vec![bulk("ECHO"), bulk("hello")]));
    assert_eq!(e[4], bulk(&format!("127.0.0.1:{port}")));
    assert_eq!(e[5], bulk("me"));
    assert!(matches!(r.cmd(&["SLOWLOG", "LEN"]), Frame::Integer(n) if n >= 3));
    assert_eq!(r.cmd(&["SLOWLOG", "RESET"]), simple("OK"));
    // The RESET itself is logged afterwards, as in Redis.
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Frame::Integer(1));
    assert_eq!(items(r.cmd(&["SLOWLOG", "GET", "0"])), vec![]);
    assert_eq!(
        r.cmd(&["SLOWLOG", "GET", "-2"]),
        err("ERR count should be greater than or equal to -1")
    );
    // Long arguments are trimmed, slowlog-max-len bounds the log.
    let long = "x".repeat(200);
    r.cmd(&["ECHO", &long]);
    let e = items(items(r.cmd(&["SLOWLOG", "GET", "1"]))[0].clone());
    assert_eq!(
        items(e[3].clone())[1],
        bulk(&format!("{}... (72 more bytes)", "x".repeat(128)))
    );
    r.cmd(&["CONFIG", "SET", "slowlog-max-len", "3"]);
    for _ in 0..10 {
        r.cmd(&["PING"]);
    }
    assert_eq!(r.cmd(&["SLOWLOG", "LEN"]), Frame::Integer(3));
    assert_eq!(items(r.cmd(&["SLOWLOG", "GET", "-1"])).len(), 3);
    assert_eq!(items(r.cmd(&["SLOWLOG", "HELP"])).len(), 12);
}

#[test]
fn monitor_sees_other_clients() {
    let node = start_node(&[]);
    let mut mon = Raw::connect(node.port);
    assert_eq!(mon.cmd(&["MONITOR"]), simple("OK"));
    let mut other = Raw::connect(node.port);
    let port = other.s.local_addr().unwrap().port();
    let _ = other.cmd(&["set", "k", "v"]);
    let line = text(&mon.read().expect("monitor line"));
    let (ts, rest) = line.split_once(' ').unwrap();
    let (secs, micros) = ts.split_once('.').unwrap();
    assert!(secs.parse::<u64>().is_ok() && micros.len() == 6, "{line}");
    assert_eq!(rest, format!("[0 127.0.0.1:{port}] \"set\" \"k\" \"v\""));
    other.cmd(&["SELECT", "2"]);
    let _ = mon.read();
    other.cmd(&["ECHO", "a\"b\n"]);
    let line = text(&mon.read().expect("monitor line"));
    assert!(
        line.ends_with(&format!("[2 127.0.0.1:{port}] \"ECHO\" \"a\\\"b\\n\"")),
        "{line}"
    );
    let list = text(&other.cmd(&["CLIENT", "LIST"]));
    assert!(list.contains("flags=O"), "{list}");
    // CLIENT LIST is an admin command: Redis 7.0 does not show it to monitors.
    other.cmd(&["PING"]);
    let line = text(&mon.read().expect("monitor line"));
    assert!(line.ends_with("\"PING\""), "{line}");
    // RESET ends monitoring.
    assert_eq!(mon.cmd(&["RESET"]), simple("RESET"));
    other.cmd(&["PING"]);
    assert_eq!(mon.cmd(&["ECHO", "after"]), bulk("after"));
}

#[test]
fn shutdown_closes_and_exits() {
    let mut node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    assert_eq!(
        r.cmd(&["SHUTDOWN", "ABORT"]),
        err("ERR No shutdown in progress.")
    );
    assert_eq!(r.cmd(&["SHUTDOWN", "FOO"]), err("ERR syntax error"));
    assert_eq!(
        r.cmd(&["SHUTDOWN", "SAVE", "NOSAVE"]),
        err("ERR syntax error")
    );
    r.send(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n");
    assert!(r.read().is_none(), "SHUTDOWN must not reply");
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = node.child.try_wait() {
            assert!(st.success(), "{st}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "node still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The kernel timer kinds ("tr" in /proc/net/tcp*) of the established sockets whose local
/// port is `port` (the server's side of its client connections): 2 = keepalive armed.
fn server_side_timers(port: u16) -> Vec<u32> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[3] != "01" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Some(tr) = f[5]
                    .split(':')
                    .next()
                    .and_then(|t| u32::from_str_radix(t, 16).ok())
                {
                    out.push(tr);
                }
            }
        }
    }
    out
}

/// `tcp-keepalive N` arms TCP keepalive on client sockets (redis-server's default is 300);
/// `tcp-keepalive 0` leaves it off. `tcp-backlog` is accepted as a listen backlog.
#[test]
fn tcp_keepalive_on_client_sockets() {
    for (value, armed) in [("60", true), ("0", false)] {
        let node = start_node(&["--tcp-keepalive", value, "--tcp-backlog", "128"]);
        let mut r = Raw::connect(node.port);
        assert_eq!(r.cmd(&["PING"]), simple("PONG"));
        assert_eq!(
            items(r.cmd(&["CONFIG", "GET", "tcp-keepalive"])),
            vec![bulk("tcp-keepalive"), bulk(value)]
        );
        // Wait out transient timers (1: the reply's retransmit timer until it is acked).
        let t = Instant::now();
        let mut timers = server_side_timers(node.port);
        while timers.iter().any(|&k| k != 0 && k != 2) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
            timers = server_side_timers(node.port);
        }
        assert!(
            !timers.is_empty(),
            "no server-side socket found for port {}",
            node.port
        );
        assert_eq!(
            timers.iter().all(|&t| t == 2),
            armed,
            "tcp-keepalive {value}: timers {timers:?}"
        );
    }
}

/// True while `pid` runs (a zombie left to an init that does not reap counts as gone).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// `--daemonize yes`, as redis-server: the command returns at once with status 0, the server
/// goes on in its own session writing its pid to `pidfile`, and removes the file on SHUTDOWN.
#[test]
fn daemonize_detaches_and_writes_pidfile() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("slotgate-daemonize-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("node.pid");
    let logfile = dir.join("node.log");
    let t = Instant::now();
    let mut launcher = node_cmd(None, port)
        .args(["--daemonize", "yes", "--dir"])
        .arg(&dir)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg("--logfile")
        .arg(&logfile)
        .spawn()
        .unwrap();
    // The command returns at once with status 0 (bounded: a server that stays in the
    // foreground is killed and fails the test instead of hanging it).
    let st = loop {
        if let Ok(Some(st)) = launcher.try_wait() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = launcher.kill();
            let _ = launcher.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let st = st.expect("slotgate-node --daemonize yes stayed in the foreground");
    assert!(st.success(), "{st}");
    // The daemon: its pid in the file, serving, in a session of its own.
    let mut pid = 0i32;
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = s.trim().parse::<i32>() {
                if slotgate_tests::repl::try_cmd(port, &["PING"]).is_ok() {
                    pid = p;
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pid > 0,
        "no pidfile / no answer; log:\n{}",
        std::fs::read_to_string(&logfile).unwrap_or_default()
    );
    // SAFETY: getsid only queries the process we started.
    let sid = unsafe { libc::getsid(pid) };
    assert!(running(pid));
    assert_eq!(sid, pid, "the daemon leads its own session");
    let info = slotgate_tests::repl::info(port, "server");
    assert_eq!(
        info.get("process_id").map(String::as_str),
        Some(pid.to_string().as_str())
    );
    assert!(std::fs::read_to_string(&logfile)
        .unwrap_or_default()
        .contains("Ready to accept connections"));
    // SHUTDOWN: the daemon exits and removes its pidfile.
    let _ = slotgate_tests::repl::try_cmd(port, &["SHUTDOWN", "NOSAVE"]);
    let t = Instant::now();
    while running(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let still = running(pid);
    if still {
        // SAFETY: ends the daemon this test started (it failed to stop; the test fails below).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(!still, "daemon did not exit on SHUTDOWN");
    assert!(!pidfile.exists(), "pidfile left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[allow(clippy::approx_constant)] // DEBUG PROTOCOL double is Redis's literal 3.141
fn debug_subcommands() {
    let plain = start_node(&[]);
    let mut p = Raw::connect(plain.port);
    assert_eq!(
        p.cmd(&["DEBUG", "SLEEP", "0"]),
        err("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.")
    );
    let local = start_node(&["--enable-debug-command", "local"]);
    assert_eq!(
        Raw::connect(local.port).cmd(&["DEBUG", "SLEEP", "0"]),
        simple("OK")
    );

    let node = debug_node();
    let mut r = Raw::connect(node.port);
    let t = Instant::now();
    assert_eq!(r.cmd(&["DEBUG", "SLEEP", "0.2"]), simple("OK"));
    assert!(t.elapsed() >= Duration::from_millis(190));
    assert_eq!(r.cmd(&["DEBUG", "SLEEP", "abc"]), simple("OK"));
    let zero = "0".repeat(40);
    assert_eq!(r.cmd(&["DEBUG", "DIGEST"]), simple(&zero));
    assert_eq!(r.cmd(&["DEBUG", "POPULATE", "3", "k", "10"]), simple("OK"));
    assert_eq!(r.cmd(&["DBSIZE"]), Frame::Integer(3));
    let d1 = text(&r.cmd(&["DEBUG", "DIGEST"]));
    assert_ne!(d1, zero);
    assert_eq!(text(&r.cmd(&["DEBUG", "DIGEST"])), d1);
    let vals = items(r.cmd(&["DEBUG", "DIGEST-VALUE", "k:0", "k:1", "nokey"]));
    assert_eq!(vals.len(), 3);
    assert_ne!(vals[0], vals[1]);
    assert_eq!(vals[2], simple(&zero));
    let obj = text(&r.cmd(&["DEBUG", "OBJECT", "k:0"]));
    assert!(
        obj.starts_with("Value at:") && obj.contains(" encoding:embstr "),
        "{obj}"
    );
    assert_eq!(r.cmd(&["DEBUG", "OBJECT", "nokey"]), err("ERR no such key"));
    assert_eq!(r.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]), simple("OK"));
    assert_eq!(r.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]), simple("OK"));
    assert_eq!(r.cmd(&["DEBUG", "ERROR", "MYERR oops"]), err("MYERR oops"));
    assert_eq!(r.cmd(&["DEBUG", "LOG", "hello"]), simple("OK"));
    assert_eq!(
        r.cmd(&["DEBUG", "JMAP"]),
        err("ERR unknown subcommand or wrong number of arguments for 'JMAP'. Try DEBUG HELP.")
    );
    assert_eq!(
        r.cmd(&["DEBUG"]),
        err("ERR wrong number of arguments for 'debug' command")
    );
    assert_eq!(r.cmd(&["FLUSHALL"]), simple("OK"));
    assert_eq!(r.cmd(&["DEBUG", "DIGEST"]), simple(&zero));
    // DEBUG PROTOCOL in RESP2 and RESP3.
    assert_eq!(r.cmd(&["DEBUG", "PROTOCOL", "double"]), bulk("3.141"));
    assert_eq!(r.cmd(&["DEBUG", "PROTOCOL", "true"]), Frame::Integer(1));
    r.cmd(&["HELLO", "3"]);
    assert_eq!(
        r.cmd(&["DEBUG", "PROTOCOL", "double"]),
        Frame::Double(3.141)
    );
    assert_eq!(r.cmd(&["DEBUG", "PROTOCOL", "true"]), Frame::Boolean(true));
    assert_eq!(r.cmd(&["DEBUG", "PROTOCOL", "null"]), Frame::Null);
    assert_eq!(
        r.cmd(&["DEBUG", "PROTOCOL", "set"]),
        Frame::Set(vec![
            Frame::Integer(0),
            Frame::Integer(1),
            Frame::Integer(2)
        ])
    );
}

#[test]
fn function_memory_latency() {
    let node = debug_node();
    let mut r = Raw::connect(node.port);
    let dump = r.cmd(&["FUNCTION", "DUMP"]);
    let payload = dump.as_bytes().unwrap().to_vec();
    assert_eq!(
        cmd_bytes(&mut r, &[b"FUNCTION", b"RESTORE", &payload]),
        simple("OK")
    );
    assert_eq!(
        cmd_bytes(&mut r, &[b"FUNCTION", b"RESTORE", b"garbage"]),
        err("ERR DUMP payload version or checksum are wrong")
    );
    assert_eq!(r.cmd(&["FUNCTION", "FLUSH"]), simple("OK"));
    assert_eq!(r.cmd(&["FUNCTION", "FLUSH", "SYNC"]), simple("OK"));
    assert_eq!(items(r.cmd(&["FUNCTION", "LIST"])), vec![]);
    r.cmd(&["DEBUG", "POPULATE", "1"]);
    match r.cmd(&["MEMORY", "USAGE", "key:0"]) {
        Frame::Integer(n) => assert!(n > 40 && n < 1000, "{n}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.cmd(&["MEMORY", "USAGE", "key:0", "SAMPLES", "0"]),
        Frame::Integer(_)
    ));
    assert_eq!(r.cmd(&["MEMORY", "USAGE", "nokey"]), Frame::Null);
    assert_eq!(
        r.cmd(&["MEMORY", "USAGE", "key:0", "FOO"]),
        err("ERR syntax error")
    );
    let stats = items(r.cmd(&["MEMORY", "STATS"]));
    assert!(stats.contains(&bulk("keys.count")) && stats.contains(&bulk("db.0")));
    assert!(matches!(r.cmd(&["MEMORY", "DOCTOR"]), Frame::Bulk(_)));
    assert_eq!(items(r.cmd(&["LATENCY", "LATEST"])), vec![]);
    assert_eq!(r.cmd(&["LATENCY", "RESET"]), Frame::Integer(0));
    let hist = items(r.cmd(&["LATENCY", "HISTOGRAM", "dbsize", "memory|usage"]));
    assert_eq!(hist[0], bulk("memory|usage"));
    r.cmd(&["HELLO", "3"]);
    match r.cmd(&["FUNCTION", "STATS"]) {
        Frame::Map(m) => {
            assert_eq!(m[0], (bulk("running_script"), Frame::Null));
            assert_eq!(m[1].0, bulk("engines"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(r.cmd(&["MEMORY", "STATS"]), Frame::Map(_)));
    assert!(matches!(r.cmd(&["MEMORY", "DOCTOR"]), Frame::Verbatim(..)));
}

/// Replies that must be byte-for-byte those of redis-server 7.0.
#[test]
fn differential_against_redis() {
    let Some(redis) = start_redis(&["--enable-debug-command", "yes"]) else {
        eprintln!("SKIPPED differential part: redis-server is not installed");
        return;
    };
    let node = debug_node();
    let script: &[&[&str]] = &[
        &["FLUSHALL"],
        &["DEBUG", "DIGEST"],
        &["DEBUG", "POPULATE", "10"],
        &["DBSIZE"],
        &["DEBUG", "POPULATE", "10"],
        &["DBSIZE"],
        &["DEBUG", "OBJECT", "nokey"],
        &["DEBUG", "DIGEST-VALUE", "nokey"],
        &["DEBUG", "SET-ACTIVE-EXPIRE", "1"],
        &["DEBUG", "SLEEP", "0"],
        &["DEBUG", "FOO"],
        &["DEBUG", "PROTOCOL", "string"],
        &["DEBUG", "PROTOCOL", "integer"],
        &["DEBUG", "PROTOCOL", "double"],
        &["DEBUG", "PROTOCOL", "bignum"],
        &["DEBUG", "PROTOCOL", "null"],
        &["DEBUG", "PROTOCOL", "array"],
        &["DEBUG", "PROTOCOL", "set"],
        &["DEBUG", "PROTOCOL", "map"],
        &["DEBUG", "PROTOCOL", "true"],
        &["DEBUG", "PROTOCOL", "false"],
        &["DEBUG", "PROTOCOL", "verbatim"],
        &["DEBUG", "PROTOCOL", "nosuch"],
        &["DEBUG", "ERROR", "CUSTOM message"],
        &["MEMORY", "USAGE", "nokey"],
        &["MEMORY", "USAGE", "key:1", "FOO"],
        &["MEMORY", "FOO"],
        &["MEMORY", "HELP"],
        &["MEMORY", "PURGE"],
        &["FLUSHDB"],
        &["DBSIZE"],
        &["FLUSHDB", "ASYNC"],
        &["FLUSHDB", "FOO"],
        &["FLUSHALL", "a", "b"],
        &["CONFIG", "GET", "maxmemory"],
        &["CONFIG", "GET", "nonexistent-x"],
        &["CONFIG", "SET", "foo", "bar"],
        &["CONFIG", "SET", "maxmemory", "abc"],
        &["CONFIG", "SET", "hz", "10", "hz", "11"],
        &["CONFIG", "SET", "daemonize", "yes"],
        &["CONFIG", "SET", "hz", "abc"],
        &["CONFIG", "SET", "appendonly", "maybe"],
        &["CONFIG", "SET", "hz", "12", "maxmemory", "0"],
        &["CONFIG", "GET", "hz"],
        &["CONFIG", "SET", "a"],
        &["CONFIG", "GET"],
        &["CONFIG", "REWRITE"],
        &["CONFIG", "FOO"],
        &["CONFIG", "HELP"],
        &["CONFIG", "RESETSTAT"],
        &["COMMAND", "FOO"],
        &["COMMAND", "HELP"],
        &["COMMAND", "GETKEYS", "get"],
        &["COMMAND", "GETKEYS", "set", "a", "b"],
        &["COMMAND", "GETKEYS", "ping"],
        &["COMMAND", "GETKEYS", "nosuch", "a"],
        &["COMMAND", "GETKEYS", "zunionstore", "d", "2", "a", "b"],
        &["COMMAND", "GETKEYSANDFLAGS", "set", "a", "b"],
        &["COMMAND", "GETKEYSANDFLAGS", "set", "a", "b", "GET"],
        &[
            "COMMAND",
            "GETKEYSANDFLAGS",
            "lmove",
            "a",
            "b",
            "left",
            "right",
        ],
        &[
            "COMMAND",
            "GETKEYSANDFLAGS",
            "bitfield",
            "a",
            "GET",
            "u8",
            "0",
        ],
        &["COMMAND", "INFO", "dbsize", "nosuch"],
        &["COMMAND", "DOCS", "dbsize", "nosuch"],
        &["COMMAND", "DOCS", "time"],
        &["COMMAND", "LIST", "FOO"],
        &["COMMAND", "LIST", "FILTERBY", "MODULE", "x"],
        &["COMMAND", "LIST", "FILTERBY", "bad", "x"],
        &["ROLE"],
        &["WAIT", "0", "0"],
        &["WAIT", "x", "0"],
        &["WAIT", "1", "-1"],
        &["SHUTDOWN", "ABORT"],
        &["SHUTDOWN", "FOO"],
        &["SLOWLOG", "GET", "x"],
        &["SLOWLOG", "GET", "-2"],
        &["SLOWLOG", "FOO"],
        &["SLOWLOG", "HELP"],
        &["SLOWLOG", "RESET"],
        &["FUNCTION", "DUMP"],
        &["FUNCTION", "FLUSH"],
        &["FUNCTION", "FLUSH", "ASYNC"],
        &["FUNCTION", "FLUSH", "X"],
        &["FUNCTION", "LIST"],
        &["FUNCTION", "LIST", "FOO"],
        &["FUNCTION", "LIST", "WITHCODE"],
        &["FUNCTION", "STATS"],
        &["FUNCTION", "FOO"],
        &["FUNCTION", "RESTORE", "x"],
        &["FUNCTION", "DELETE", "x"],
        &["FUNCTION", "KILL"],
        &["FUNCTION", "LOAD", "x"],
        &["LATENCY", "LATEST"],
        &["LATENCY", "HISTORY", "command"],
        &["LATENCY", "RESET"],
        &["LATENCY", "DOCTOR"],
        &["LATENCY", "FOO"],
        &["LATENCY", "HELP"],
        &["INFO", "nosuch"],
        &["BGSAVE", "FOO"],
        &["SWAPDB", "x", "1"],
        &["SWAPDB", "0", "x"],
        &["SWAPDB", "-1", "0"],
        &["SWAPDB", "0", "0"],
        &["SWAPDB", "1", "16"],
        &["FLUSHALL"],
        &["DEBUG", "POPULATE", "3"],
        &["SELECT", "1"],
        &["DEBUG", "POPULATE", "5", "x"],
        &["SWAPDB", "0", "1"],
        &["DBSIZE"],
        &["MEMORY", "USAGE", "x:1"],
        &["SELECT", "0"],
        &["DBSIZE"],
        &["MEMORY", "USAGE", "key:1"],
        &["SWAPDB", "1", "0"],
        &["DBSIZE"],
        &["FLUSHALL"],
        &["TIME", "x"],
        &["LASTSAVE", "x"],
    ];
    for resp3 in [false, true] {
        let mut a = Raw::connect(redis.port);
        let mut b = Raw::connect(node.port);
        if resp3 {
            a.cmd(&["HELLO", "3"]);
            b.cmd(&["HELLO", "3"]);
        }
        for c in script {
            let (x, y) = (a.cmd(c), b.cmd(c));
            assert_eq!(y, x, "{c:?} (resp3: {resp3})");
        }
    }
}

/// `maxclients`: the client over the limit gets redis-server's error and is closed, the others
/// are unaffected, INFO counts the rejection, and a slot freed by a client that leaves can be
/// taken again. Run against slotgate-node and, when installed, redis-server (the reference).
fn check_maxclients(p: &Proc, who: &str) {
    let mut a = Raw::connect(p.port);
    let mut b = Raw::connect(p.port);
    assert_eq!(a.cmd(&["PING"]), simple("PONG"), "{who}");
    assert_eq!(b.cmd(&["PING"]), simple("PONG"), "{who}");
    let mut c = Raw::connect(p.port);
    assert_eq!(
        c.read(),
        Some(err("ERR max number of clients reached")),
        "{who}"
    );
    assert!(c.closed(), "{who}: the refused client must be closed");
    assert_eq!(a.cmd(&["PING"]), simple("PONG"), "{who}");
    let info = text(&a.cmd(&["INFO", "stats"]));
    let rejected: u64 = info_field(&info, "rejected_connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rejected >= 1, "{who}: rejected_connections {rejected}");
    // A client leaves: its place can be taken (the server notices the close shortly).
    drop(b);
    let t = Instant::now();
    loop {
        let mut d = Raw::connect(p.port);
        d.send(b"*1\r\n$4\r\nPING\r\n");
        match d.read() {
            Some(f) if f == simple("PONG") => break,
            other => assert!(
                t.elapsed() < Duration::from_secs(5),
                "{who}: freed place not taken: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn maxclients_refuses_extra_clients_like_redis() {
    let node = start_node(&["--maxclients", "2"]);
    check_maxclients(&node, "slotgate-node");
    if let Some(redis) = start_redis(&["--maxclients", "2"]) {
        check_maxclients(&redis, "redis-server");
    }
}

#[test]
fn a_server_whose_port_was_taken_is_started_on_another() {
    // The fixture's own race, forced: the first start gets a port something else holds.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr").port();
    let mut ports = Vec::new();
    let p = start_on_free_port(|port| {
        let port = if ports.is_empty() { taken } else { port };
        ports.push(port);
        let dir =
            std::env::temp_dir().join(format!("slotgate-fixture-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let log = std::fs::File::create(dir.join("stdout.log")).expect("log");
        let child = node_cmd(None, port)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(log.try_clone().expect("log")))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .expect("spawn");
        Proc { child, port, dir }
    });
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(ports[0], taken);
    assert_ne!(p.port, taken);
    let mut c = Raw::connect(p.port);
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
    drop(blocker);
}

/// A connection to 127.0.0.1:`port` from the loopback address `src` (127.0.0.2 is a
/// non-local client to redis-server, which treats only 127.0.0.1 and ::1 as local).
fn connect_from(src: &str, port: u16) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(format!("{src}:0").parse().expect("address"))?;
            sock.connect(([127, 0, 0, 1], port).into())
                .await?
                .into_std()
        })
        .expect("connect");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends PING from `src` and returns everything the server sends until it closes or goes
/// quiet for a moment.
fn ping_from(src: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = connect_from(src, port);
    let _ = s.write_all(b"PING\r\n");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.ends_with(b"\r\n") {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `protected-mode yes` (the default) without a password: a client not on 127.0.0.1/::1 gets
/// redis-server's DENIED text and is disconnected (counted in `rejected_connections`); local
/// clients, `protected-mode no`, or a password let it in. Same replies as redis-server.
#[test]
fn protected_mode_refuses_non_local_clients_like_redis() {
    let mut runs = Vec::new();
    let mut servers = vec![("slotgate-node", start_node(&[]))];
    if let Some(r) = start_redis(&[]) {
        servers.push(("redis-server", r));
    }
    for (name, s) in &servers {
        let port = s.port;
        let mut seen = vec![ping_from("127.0.0.2", port), ping_from("127.0.0.1", port)];
        let rejected = slotgate_tests::repl::info(port, "stats")
            .get("rejected_connections")
            .cloned()
            .unwrap_or_default();
        seen.push(rejected);
        let mut r = Raw::connect(port);
        assert_eq!(
            r.cmd(&["CONFIG", "SET", "protected-mode", "no"]),
            simple("OK")
        );
        seen.push(ping_from("127.0.0.2", port));
        assert_eq!(
            r.cmd(&["CONFIG", "SET", "protected-mode", "yes"]),
            simple("OK")
        );
        assert_eq!(r.cmd(&["CONFIG", "SET", "requirepass", "pw"]), simple("OK"));
        seen.push(ping_from("127.0.0.2", port));
        runs.push((*name, seen));
    }
    let node = &runs[0].1;
    assert!(
        node[0].starts_with("-DENIED Redis is running in protected mode")
            && node[0].ends_with("\r\n"),
        "{}",
        node[0]
    );
    assert_eq!(node[1], "+PONG\r\n");
    assert_eq!(node[2], "1", "rejected_connections");
    assert_eq!(node[3], "+PONG\r\n", "protected-mode no");
    assert!(
        node[4].starts_with("-NOAUTH"),
        "with a password: {}",
        node[4]
    );
    if let Some((name, redis)) = runs.get(1) {
        assert_eq!(node, redis, "slotgate-node vs {name}");
    }
}

/// `supervised systemd` (or `auto` under systemd): the node sends systemd's notification
/// socket what redis-server 7.0 sends (a loading status, then ready and `READY=1`, for
/// `Type=notify` units),
/// and `daemonize yes` then does not fork (systemd tracks the process it started).
/// `supervised no` sends nothing.
#[test]
fn supervised_systemd_notifies_ready() {
    use std::os::unix::net::UnixDatagram;
    for (mode, expect) in [("systemd", true), ("auto", true), ("no", false)] {
        let dir = std::env::temp_dir().join(format!(
            "slotgate-notify-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock_path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = free_port();
        let mut child = node_cmd(None, port)
            .args(["--supervised", mode, "--daemonize", "yes", "--dir"])
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("node.log"))
            .env("NOTIFY_SOCKET", &sock_path)
            .spawn()
            .unwrap();
        let t = Instant::now();
        let mut got = Vec::new();
        if expect {
            let mut buf = [0u8; 256];
            while got.len() < 3 && t.elapsed() < Duration::from_secs(10) {
                match sock.recv(&mut buf) {
                    Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) => break,
                }
            }
            assert_eq!(
                got,
                vec![
                    "STATUS=Redis is loading...\n",
                    "STATUS=Ready to accept connections\n",
                    "READY=1\n"
                ],
                "supervised {mode}"
            );
            // Not daemonized: the process we started is the server, still running.
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "supervised {mode} forked"
            );
            assert!(slotgate_tests::repl::try_cmd(port, &["PING"]).is_ok());
            let _ = child.kill();
            let _ = child.wait();
        } else {
            // Daemonized (the launcher exits at once); nothing reaches the socket.
            let mut pid = None;
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(f) = slotgate_tests::repl::try_cmd(port, &["INFO", "server"]) {
                    pid = slotgate_tests::repl::text(&f)
                        .lines()
                        .find_map(|l| l.strip_prefix("process_id:").map(|p| p.trim().to_string()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 256];
            let quiet = sock.recv(&mut buf).is_err();
            let pid = pid.and_then(|p| p.parse::<i32>().ok());
            if let Some(pid) = pid {
                // SAFETY: ends the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            assert!(pid.is_some(), "the daemonized node did not answer");
            assert!(quiet, "supervised no must not notify systemd");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One RESP command over a Unix socket; the reply frame.
fn unix_cmd(
    s: &mut std::os::unix::net::UnixStream,
    buf: &mut bytes::BytesMut,
    args: &[&str],
) -> Frame {
    use std::io::{Read, Write};
    let mut out = bytes::BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    s.write_all(&out).unwrap();
    loop {
        if let Ok(Some(f)) = slotgate_protocol::decode_frame(buf) {
            return f;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// `unixsocket` / `unixsocketperm`: clients served over the socket as over TCP, shown in
/// CLIENT LIST as redis-server shows them, the file's mode set, the file removed at shutdown.
/// Compared with redis-server when it is installed.
#[test]
fn unixsocket_serves_clients_like_redis() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("slotgate-unixsock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut servers: Vec<(&str, Proc, std::path::PathBuf)> = Vec::new();
    let ours = dir.join("node.sock");
    // A stale file at the path is replaced, as redis-server does.
    std::fs::write(&ours, b"stale").unwrap();
    let node = start_node(&[
        "--save",
        "",
        "--unixsocket",
        ours.to_str().unwrap(),
        "--unixsocketperm",
        "700",
    ]);
    servers.push(("slotgate-node", node, ours));
    let theirs = dir.join("redis.sock");
    if let Some(redis) = start_redis(&[
        "--save",
        "",
        "--unixsocket",
        theirs.to_str().unwrap(),
        "--unixsocketperm",
        "700",
    ]) {
        servers.push(("redis-server", redis, theirs));
    }
    let mut infos = Vec::new();
    for (name, mut proc_, path) in servers {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{name}");
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = bytes::BytesMut::new();
        assert_eq!(
            unix_cmd(&mut s, &mut buf, &["SET", "k", "v"]),
            Frame::Simple("OK".into())
        );
        assert_eq!(
            unix_cmd(&mut s, &mut buf, &["GET", "k"]),
            Frame::Bulk("v".into())
        );
        // The same data over TCP.
        assert_eq!(
            slotgate_tests::repl::cmd(proc_.port, &["GET", "k"]),
            Frame::Bulk("v".into())
        );
        let info = text(&unix_cmd(&mut s, &mut buf, &["CLIENT", "INFO"]));
        let field = |f: &str| {
            info.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
                .unwrap_or_default()
                .to_string()
        };
        let p = path.to_str().unwrap();
        assert_eq!(field("addr"), format!("{p}:0"), "{name}: {info}");
        assert_eq!(field("laddr"), format!("{p}:0"), "{name}: {info}");
        infos.push((name, field("flags")));
        let got = unix_cmd(&mut s, &mut buf, &["CONFIG", "GET", "unixsocketperm"]);
        assert_eq!(
            got,
            Frame::Array(vec![
                Frame::Bulk("unixsocketperm".into()),
                Frame::Bulk("700".into())
            ]),
            "{name}"
        );
        // SHUTDOWN over the socket; the file goes with the server.
        let _ = unix_cmd_closed(&mut s, &["SHUTDOWN", "NOSAVE"]);
        let t = Instant::now();
        while path.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!path.exists(), "{name} left its socket file behind");
        proc_.terminate(Duration::from_secs(5));
    }
    for (name, flags) in &infos {
        assert_eq!(flags, "U", "{name}");
    }
    // A bad mode is a fatal config error, in redis-server's words.
    let out = node_cmd(None, free_port())
        .args(["--unixsocket", "/tmp/x.sock", "--unixsocketperm", "999"])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("argument couldn't be parsed as an octal number"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends a command whose reply may never come (SHUTDOWN closes the connection).
fn unix_cmd_closed(s: &mut std::os::unix::net::UnixStream, args: &[&str]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = bytes::BytesMut::new();
    slotgate_protocol::resp::write_command(&mut out, args);
    s.write_all(&out)
}

/// Every directive redis-server 7.0 knows is known here (CONFIG GET * lists the same names),
/// and the redis.conf Debian's package installs loads as it is.
#[test]
fn every_redis_directive_is_known_and_debian_redis_conf_loads() {
    let Some(redis) = start_redis(&["--save", ""]) else {
        return;
    };
    let node = start_node(&["--save", ""]);
    let names = |port: u16| -> std::collections::BTreeSet<String> {
        let Frame::Array(v) = Raw::connect(port).cmd(&["CONFIG", "GET", "*"]) else {
            panic!("CONFIG GET *")
        };
        v.chunks(2).map(|kv| text(&kv[0])).collect()
    };
    let ours = names(node.port);
    let missing: Vec<String> = names(redis.port).difference(&ours).cloned().collect();
    assert!(missing.is_empty(), "unknown here: {missing:?}");
    let conf = std::path::Path::new("/etc/redis/redis.conf");
    if !conf.exists() {
        assert!(
            !in_ci(),
            "redis-server's package installs {}",
            conf.display()
        );
        println!("skipped: no {}", conf.display());
        return;
    }
    let p = start_on_free_port(|port| {
        let dir =
            std::env::temp_dir().join(format!("slotgate-debconf-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("stdout.log")).unwrap();
        let log2 = log.try_clone().unwrap();
        // Only what must differ on a test machine is overridden (supervised: no systemd here).
        let child = node_cmd(Some(conf), port)
            .args([
                "--daemonize",
                "no",
                "--supervised",
                "no",
                "--logfile",
                "",
                "--pidfile",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap();
        Proc { child, port, dir }
    });
    assert_eq!(
        Raw::connect(p.port).cmd(&["PING"]),
        Frame::Simple("PONG".into())
    );
    assert!(
        p.log().contains("Ready to accept connections"),
        "{}",
        p.log()
    );
}

/// OBJECT ENCODING and the SCAN family follow redis-server 7.0's compact-encoding limits
/// (`hash-max-listpack-entries` 512, `zset-max-listpack-entries` 128,
/// `set-max-intset-entries` 512, and the values' sizes), also after CONFIG SET.
#[test]
fn compact_encoding_limits_match_redis() {
    let Some(redis) = start_redis(&["--save", ""]) else {
        return;
    };
    let node = start_node(&["--save", ""]);
    let run = |port: u16| -> Vec<String> {
        let mut c = Raw::connect(port);
        let mut out = Vec::new();
        for (cfg, val) in [
            ("", ""),
            ("hash-max-listpack-entries", "10"),
            ("zset-max-listpack-value", "3"),
        ] {
            if !cfg.is_empty() {
                c.cmd(&["CONFIG", "SET", cfg, val]);
            }
            let tag = format!("{cfg}{val}");
            for n in [5usize, 100, 200, 600] {
                let (h, s, z) = (
                    format!("h{tag}:{n}"),
                    format!("s{tag}:{n}"),
                    format!("z{tag}:{n}"),
                );
                for i in 0..n {
                    c.cmd(&["HSET", &h, &format!("f{i}"), "v"]);
                    c.cmd(&["SADD", &s, &i.to_string()]);
                    c.cmd(&["ZADD", &z, &i.to_string(), &format!("m{i}")]);
                }
                for k in [&h, &s, &z] {
                    out.push(format!("{k} {}", text(&c.cmd(&["OBJECT", "ENCODING", k]))));
                }
                // A compact collection comes back whole from the first SCAN call.
                for (cmd, k) in [("HSCAN", &h), ("SSCAN", &s), ("ZSCAN", &z)] {
                    let Frame::Array(v) = c.cmd(&[cmd, k, "0"]) else {
                        panic!("{cmd}")
                    };
                    let whole = text(&v[0]) == "0";
                    out.push(format!("{cmd} {k} whole={whole}"));
                }
            }
        }
        c.cmd(&["CONFIG", "SET", "hash-max-listpack-entries", "512"]);
        c.cmd(&["CONFIG", "SET", "zset-max-listpack-value", "64"]);
        out
    };
    let (a, b) = (run(node.port), run(redis.port));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert!(
        a.iter().any(|l| l.ends_with(" listpack")) && a.iter().any(|l| l.ends_with(" hashtable"))
    );
}

/// Starts `bin` with the config file `conf` first and `--port`/`--dir` after it.
fn start_with_conf(bin: &std::path::Path, conf: &std::path::Path, dir: &std::path::Path) -> Proc {
    start_on_free_port(|port| {
        let d = dir.join(format!("run-{port}"));
        std::fs::create_dir_all(&d).unwrap();
        let log = std::fs::File::create(d.join("stdout.log")).unwrap();
        let log2 = log.try_clone().unwrap();
        let child = std::process::Command::new(bin)
            .arg(conf)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&d)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap();
        Proc {
            child,
            port,
            dir: d,
        }
    })
}

/// `include` (with a glob, in name order), `rename-command` (renamed and disabled commands)
/// and the `default` user's password given as an ACL `user` line work as in redis-server, and
/// what redis-server refuses to start with (a missing include, a module, renaming an unknown
/// command) stops slotgate-node too.
#[test]
fn include_rename_command_and_default_user_like_redis() {
    let dir = std::env::temp_dir().join(format!("slotgate-include-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("conf.d/10-a.conf"),
        "maxclients 77\nuser default on >frominclude ~* &* +@all\n",
    )
    .unwrap();
    // Later files win: name order.
    std::fs::write(dir.join("conf.d/20-b.conf"), "maxclients 88\n").unwrap();
    let conf = dir.join("main.conf");
    std::fs::write(
        &conf,
        format!(
            "include {}/conf.d/*.conf\nrename-command CONFIG myconfig\nrename-command FLUSHALL \"\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut bins = vec![("slotgate-node", our_bin("slotgate-node"))];
    if let Some(redis) = require_peer("redis-server") {
        bins.push(("redis-server", redis));
    }
    let mut transcripts = Vec::new();
    for (name, bin) in &bins {
        let p = start_with_conf(bin, &conf, &dir);
        let mut c = Raw::connect(p.port);
        let mut t = Vec::new();
        for cmd in [
            vec!["PING"],
            vec!["AUTH", "frominclude"],
            vec!["MYCONFIG", "GET", "maxclients"],
            vec!["CONFIG", "GET", "maxclients"],
            vec!["FLUSHALL"],
            vec!["MULTI"],
            vec!["FLUSHALL"],
            vec!["EXEC"],
            vec!["myconfig", "get", "maxclients"],
        ] {
            t.push(format!("{:?} -> {:?}", cmd, c.cmd(&cmd)));
        }
        transcripts.push((name, t));
    }
    let (_, ours) = &transcripts[0];
    assert!(ours[1].ends_with("Simple(b\"OK\")"), "{ours:?}");
    assert!(ours[2].contains("88"), "{ours:?}");
    for (name, theirs) in &transcripts[1..] {
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(a, b, "differs from {name}");
        }
    }
    // Refused at start, as redis-server refuses.
    for (text, expect) in [
        (
            "include /nonexistent/x.conf\n",
            "can't open config file '/nonexistent/x.conf'",
        ),
        (
            "loadmodule /nonexistent/m.so\n",
            "Module /nonexistent/m.so failed to load",
        ),
        (
            "rename-command NOSUCHCMD x\n",
            "No such command in rename-command",
        ),
    ] {
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, text).unwrap();
        let out = std::process::Command::new(our_bin("slotgate-node"))
            .arg(&bad)
            .args(["--port", &free_port().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let all = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(all.contains(expect), "{text}: {all}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
