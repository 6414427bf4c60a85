//! End-to-end tests of the connection commands (PING, ECHO, AUTH, HELLO, SELECT, QUIT, RESET,
//! CLIENT ...) and transactions (MULTI, EXEC, DISCARD, WATCH, UNWATCH), plus a differential
//! run against a real redis-server (skipped when it is not installed).
//!
//! Keys are created with DEBUG POPULATE and modified with FLUSHDB so the tests do not depend
//! on the data-type families.

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

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

fn arr(v: Vec<Frame>) -> Frame {
    Frame::Array(v)
}

fn text(f: &Frame) -> String {
    String::from_utf8_lossy(
        f.as_bytes()
            .unwrap_or_else(|| panic!("not a string: {f:?}")),
    )
    .into_owned()
}

fn map_get(f: &Frame, key: &str) -> Option<Frame> {
    match f {
        Frame::Map(m) => m
            .iter()
            .find(|(k, _)| *k == bulk(key))
            .map(|(_, v)| v.clone()),
        Frame::Array(v) => v
            .chunks(2)
            .find(|c| c[0] == bulk(key))
            .map(|c| c[1].clone()),
        _ => None,
    }
}

#[test]
fn ping_echo_select_quit() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    assert_eq!(r.cmd(&["PING", "hi"]), bulk("hi"));
    assert_eq!(
        r.cmd(&["PING", "a", "b"]),
        err("ERR wrong number of arguments for 'ping' command")
    );
    assert_eq!(r.cmd(&["ECHO", "x y"]), bulk("x y"));
    assert_eq!(
        r.cmd(&["ECHO"]),
        err("ERR wrong number of arguments for 'echo' command")
    );
    assert_eq!(r.cmd(&["SELECT", "15"]), simple("OK"));
    assert_eq!(
        r.cmd(&["SELECT", "16"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(
        r.cmd(&["SELECT", "-1"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(
        r.cmd(&["SELECT", "x"]),
        err("ERR value is not an integer or out of range")
    );
    let info = text(&r.cmd(&["CLIENT", "INFO"]));
    assert!(info.contains(" db=15 "), "{info}");
    assert_eq!(r.cmd(&["QUIT"]), simple("OK"));
    assert!(r.read().is_none(), "QUIT must close the connection");
}

#[test]
fn auth_and_hello() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    assert_eq!(
        r.cmd(&["AUTH", "x"]),
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    assert_eq!(r.cmd(&["AUTH", "default", "anything"]), simple("OK"));
    let h = r.cmd(&["HELLO"]);
    assert_eq!(map_get(&h, "proto"), Some(int(2)));
    assert_eq!(map_get(&h, "server"), Some(bulk("redis")));
    assert_eq!(map_get(&h, "version"), Some(bulk("7.0.15")));
    assert_eq!(map_get(&h, "mode"), Some(bulk("standalone")));
    assert_eq!(map_get(&h, "role"), Some(bulk("master")));
    assert_eq!(map_get(&h, "modules"), Some(arr(vec![])));
    let id = r.cmd(&["CLIENT", "ID"]);
    assert_eq!(map_get(&h, "id"), Some(id));
    assert_eq!(
        r.cmd(&["HELLO", "4"]),
        err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        r.cmd(&["HELLO", "x"]),
        err("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        r.cmd(&["HELLO", "3", "FOO"]),
        err("ERR Syntax error in HELLO option 'FOO'")
    );
    let h3 = r.cmd(&["HELLO", "3", "SETNAME", "conn1"]);
    assert!(matches!(h3, Frame::Map(_)), "{h3:?}");
    assert_eq!(map_get(&h3, "proto"), Some(int(3)));
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), bulk("conn1"));
    // RESP3 null.
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", ""]), simple("OK"));
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Frame::Null);
    assert!(matches!(r.cmd(&["HELLO", "2"]), Frame::Array(_)));

    let secured = start_node(&["--requirepass", "pw"]);
    let mut s = Raw::connect(secured.port);
    assert_eq!(
        s.cmd(&["ECHO", "x"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(
        s.cmd(&["HELLO", "3"]),
        err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
    );
    assert_eq!(
        s.cmd(&["AUTH", "nope"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        s.cmd(&["HELLO", "3", "AUTH", "default", "nope"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    let h = s.cmd(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"]);
    assert_eq!(map_get(&h, "proto"), Some(int(3)));
    assert_eq!(s.cmd(&["CLIENT", "GETNAME"]), bulk("me"));
    assert_eq!(s.cmd(&["ECHO", "x"]), bulk("x"));
    let mut t = Raw::connect(secured.port);
    assert_eq!(t.cmd(&["AUTH", "pw"]), simple("OK"));
    assert_eq!(t.cmd(&["PING"]), simple("PONG"));
    // RESET de-authenticates when a password is set.
    assert_eq!(t.cmd(&["RESET"]), simple("RESET"));
    assert_eq!(
        t.cmd(&["ECHO", "x"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(t.cmd(&["AUTH", "default", "pw"]), simple("OK"));
}

#[test]
fn reset_restores_defaults() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    r.cmd(&["HELLO", "3", "SETNAME", "x"]);
    r.cmd(&["SELECT", "4"]);
    r.cmd(&["MULTI"]);
    assert_eq!(r.cmd(&["RESET"]), simple("RESET"));
    let info = text(&r.cmd(&["CLIENT", "INFO"]));
    assert!(
        info.contains(" name= ") && info.contains(" db=0 ") && info.contains(" resp=2 "),
        "{info}"
    );
    assert!(info.contains(" multi=-1 "), "{info}");
    assert_eq!(r.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
}

#[test]
fn client_subcommands() {
    let node = start_node(&[]);
    let mut a = Raw::connect(node.port);
    let mut b = Raw::connect(node.port);
    let id_a = match a.cmd(&["CLIENT", "ID"]) {
        Frame::Integer(n) => n,
        other => panic!("{other:?}"),
    };
    let id_b = match b.cmd(&["CLIENT", "ID"]) {
        Frame::Integer(n) => n,
        other => panic!("{other:?}"),
    };
    assert_ne!(id_a, id_b);
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]), Frame::Null);
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]), simple("OK"));
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]), bulk("alpha"));
    assert_eq!(
        a.cmd(&["CLIENT", "SETNAME", "has space"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "lib-name", "mylib"]),
        simple("OK")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "lib-ver", "1.2"]),
        simple("OK")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "SETINFO", "foo", "x"]),
        err("ERR Unrecognized option 'foo'")
    );
    let info = text(&a.cmd(&["CLIENT", "INFO"]));
    assert!(
        info.starts_with(&format!("id={id_a} addr=127.0.0.1:")),
        "{info}"
    );
    assert!(info.contains(" name=alpha ") && info.contains("lib-name=mylib lib-ver=1.2"));
    // The running command, as Redis shows it.
    assert!(info.contains(" cmd=client|info "), "{info}");
    assert!(info.ends_with('\n'));
    // The start-up probe's connection may still be closing on the server: wait for it to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = text(&a.cmd(&["CLIENT", "LIST"]));
        if list.lines().count() == 2 || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&format!("id={id_b} ")));
    // Each line carries its own socket's descriptor.
    let fds: std::collections::HashSet<&str> = list
        .lines()
        .filter_map(|l| l.split(' ').find(|f| f.starts_with("fd=")))
        .collect();
    assert_eq!(fds.len(), 2, "{list}");
    let only = text(&a.cmd(&["CLIENT", "LIST", "ID", &id_b.to_string()]));
    assert_eq!(only.lines().count(), 1);
    assert!(only.starts_with(&format!("id={id_b} ")));
    assert_eq!(
        a.cmd(&["CLIENT", "LIST", "TYPE", "bogus"]),
        err("ERR Unknown client type 'bogus'")
    );
    assert_eq!(a.cmd(&["CLIENT", "NO-EVICT", "on"]), simple("OK"));
    assert_eq!(
        a.cmd(&["CLIENT", "NO-EVICT", "maybe"]),
        err("ERR syntax error")
    );
    assert_eq!(
        a.cmd(&["CLIENT", "FOO"]),
        err("ERR unknown subcommand 'FOO'. Try CLIENT HELP.")
    );
    // CLIENT REPLY OFF / SKIP / ON.
    a.send(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n*2\r\n$4\r\nECHO\r\n$1\r\n1\r\n");
    a.send(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n");
    assert_eq!(a.read(), Some(simple("OK")));
    a.send(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n*2\r\n$4\r\nECHO\r\n$1\r\n2\r\n");
    assert_eq!(a.cmd(&["ECHO", "3"]), bulk("3"));
    // CLIENT KILL: new and old forms.
    let addr_b = format!("127.0.0.1:{}", b.s.local_addr().unwrap().port());
    assert_eq!(a.cmd(&["CLIENT", "KILL", "ID", &id_b.to_string()]), int(1));
    assert!(b.read().is_none(), "killed client still connected");
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", &addr_b]),
        err("ERR No such client")
    );
    let mut c = Raw::connect(node.port);
    let addr_c = format!("127.0.0.1:{}", c.s.local_addr().unwrap().port());
    c.cmd(&["PING"]);
    assert_eq!(a.cmd(&["CLIENT", "KILL", &addr_c]), simple("OK"));
    assert!(c.read().is_none());
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "ID", &id_a.to_string()]),
        int(0),
        "SKIPME yes by default"
    );
    assert_eq!(
        a.cmd(&["CLIENT", "KILL", "ID", "0"]),
        err("ERR client-id should be greater than 0")
    );
    // SKIPME no: a client may kill itself (it gets the reply, then the connection closes).
    let mut out = bytes::BytesMut::new();
    let id = id_a.to_string();
    slotgate_protocol::resp::write_command(
        &mut out,
        &["CLIENT", "KILL", "ID", &id, "SKIPME", "no"],
    );
    a.send(&out);
    assert_eq!(a.read(), Some(int(1)));
    let killed = a.read().is_none();
    assert!(killed);
}

#[test]
fn multi_exec_discard() {
    let node = start_node(&["--enable-debug-command", "yes"]);
    let mut r = Raw::connect(node.port);
    assert_eq!(r.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(r.cmd(&["MULTI"]), err("ERR MULTI calls can not be nested"));
    assert_eq!(r.cmd(&["PING"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["ECHO", "x"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["SELECT", "2"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["DEBUG", "POPULATE", "3"]), simple("QUEUED"));
    assert_eq!(r.cmd(&["DBSIZE"]), simple("QUEUED"));
    assert_eq!(
        r.cmd(&["EXEC"]),
        arr(vec![
            simple("PONG"),
            bulk("x"),
            simple("OK"),
            simple("OK"),
            int(3)
        ])
    );
    // SELECT inside the transaction stays in effect.
    assert_eq!(r.cmd(&["DBSIZE"]), int(3));
    assert_eq!(r.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(r.cmd(&["DISCARD"]), err("ERR DISCARD without MULTI"));
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["DISCARD"]), simple("OK"));
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    // Errors while queueing abort the transaction.
    r.cmd(&["MULTI"]);
    assert_eq!(
        r.cmd(&["ECHO"]),
        err("ERR wrong number of arguments for 'echo' command")
    );
    assert_eq!(
        r.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    // Runtime errors do not abort the others.
    r.cmd(&["MULTI"]);
    r.cmd(&["SELECT", "99"]);
    r.cmd(&["PING"]);
    assert_eq!(
        r.cmd(&["EXEC"]),
        arr(vec![err("ERR DB index is out of range"), simple("PONG")])
    );
    // Commands flagged no-multi are refused while queueing.
    r.cmd(&["MULTI"]);
    assert_eq!(
        r.cmd(&["WATCH", "k"]),
        err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![]));
    // RESP3: EXEC is an array of RESP3 replies.
    r.cmd(&["HELLO", "3"]);
    r.cmd(&["MULTI"]);
    r.cmd(&["CONFIG", "GET", "maxmemory"]);
    assert_eq!(
        r.cmd(&["EXEC"]),
        arr(vec![Frame::Map(vec![(bulk("maxmemory"), bulk("0"))])])
    );
}

/// Redis flags the transaction when an unknown command is queued (EXECABORT at EXEC).
#[test]
fn unknown_command_aborts_transaction() {
    let node = start_node(&[]);
    let mut r = Raw::connect(node.port);
    r.cmd(&["MULTI"]);
    assert_eq!(
        r.cmd(&["NOSUCHCMD"]),
        err("ERR unknown command 'NOSUCHCMD', with args beginning with: ")
    );
    assert_eq!(r.cmd(&["PING"]), simple("QUEUED"));
    assert_eq!(
        r.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
}

#[test]
fn watch_touched_and_untouched() {
    let node = start_node(&["--enable-debug-command", "yes"]);
    let mut r = Raw::connect(node.port);
    let mut other = Raw::connect(node.port);
    r.cmd(&["DEBUG", "POPULATE", "2"]);
    // Untouched WATCH: EXEC runs.
    assert_eq!(r.cmd(&["WATCH", "key:0", "key:1"]), simple("OK"));
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![simple("PONG")]));
    // Touched by another client (FLUSHDB deletes the key): EXEC answers nil.
    assert_eq!(r.cmd(&["WATCH", "key:0"]), simple("OK"));
    assert_eq!(other.cmd(&["FLUSHDB"]), simple("OK"));
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), Frame::Null);
    // EXEC cleared the WATCH: the next transaction runs.
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![simple("PONG")]));
    // UNWATCH forgets a touched key.
    r.cmd(&["DEBUG", "POPULATE", "1"]);
    r.cmd(&["WATCH", "key:0"]);
    other.cmd(&["FLUSHALL"]);
    assert_eq!(r.cmd(&["UNWATCH"]), simple("OK"));
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![simple("PONG")]));
    // DISCARD also unwatches.
    r.cmd(&["DEBUG", "POPULATE", "1"]);
    r.cmd(&["WATCH", "key:0"]);
    other.cmd(&["FLUSHALL"]);
    r.cmd(&["MULTI"]);
    r.cmd(&["DISCARD"]);
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), arr(vec![simple("PONG")]));
    // RESP3 nil for a touched WATCH.
    r.cmd(&["HELLO", "3"]);
    r.cmd(&["DEBUG", "POPULATE", "1"]);
    r.cmd(&["WATCH", "key:0"]);
    other.cmd(&["FLUSHALL"]);
    r.cmd(&["MULTI"]);
    r.cmd(&["PING"]);
    assert_eq!(r.cmd(&["EXEC"]), Frame::Null);
}

/// Replies that must equal redis-server 7.0's byte for byte.
#[test]
fn differential_against_redis() {
    let Some(redis) = start_redis(&["--enable-debug-command", "yes"]) else {
        eprintln!("SKIPPED differential part: redis-server is not installed");
        return;
    };
    let node = start_node(&["--enable-debug-command", "yes"]);
    let script: &[&[&str]] = &[
        &["PING"],
        &["PING", "x"],
        &["PING", "a", "b"],
        &["ECHO", "e"],
        &["AUTH", "x"],
        &["AUTH", "a", "b", "c"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["HELLO", "2", "FOO"],
        &["HELLO", "2", "AUTH", "default"],
        &["HELLO", "2", "SETNAME", "bad name"],
        &["SELECT", "15"],
        &["SELECT", "16"],
        &["SELECT", "x"],
        &["SELECT", "0"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "ok-name"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "bad name"],
        &["CLIENT", "SETNAME", ""],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "NO-EVICT", "on"],
        &["CLIENT", "NO-EVICT", "x"],
        &["CLIENT", "REPLY", "x"],
        &["CLIENT", "KILL", "1.2.3.4:5"],
        &["CLIENT", "KILL", "ID", "999999"],
        &["CLIENT", "KILL", "ID", "x"],
        &["CLIENT", "KILL", "FOO", "x"],
        &["CLIENT", "KILL", "ID"],
        &["CLIENT", "LIST", "TYPE", "x"],
        &["CLIENT", "LIST", "FOO"],
        &["CLIENT", "LIST", "ID", "x"],
        &["CLIENT", "FOO"],
        &["CLIENT"],
        &["MULTI"],
        &["MULTI"],
        &["PING"],
        &["DEBUG", "POPULATE", "2"],
        &["DBSIZE"],
        &["EXEC"],
        &["EXEC"],
        &["DISCARD"],
        &["MULTI"],
        &["ECHO"],
        &["PING"],
        &["EXEC"],
        &["MULTI"],
        &["WATCH", "a"],
        &["SELECT", "99"],
        &["EXEC"],
        &["WATCH", "key:0"],
        &["FLUSHDB"],
        &["MULTI"],
        &["PING"],
        &["EXEC"],
        &["UNWATCH"],
        &["MULTI"],
        &["DISCARD"],
        &["WATCH"],
        &["RESET"],
        &["CLIENT", "GETNAME"],
        &["QUIT"],
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

/// An EXEC refused for what its queue holds aborts the transaction with the reason, as in
/// redis-server: writes queued before `min-replicas-to-write` could no longer be met. The same
/// steps run against both servers and their replies must match.
#[test]
fn exec_refused_for_its_queued_writes_aborts_like_redis() {
    let node = start_node(&[]);
    let redis = start_redis(&[]);
    let mut transcripts = Vec::new();
    for (name, port) in [
        ("slotgate-node", Some(node.port)),
        ("redis-server", redis.as_ref().map(|r| r.port)),
    ] {
        let Some(port) = port else {
            eprintln!("note: redis-server not installed; checking slotgate-node alone");
            continue;
        };
        let (mut a, mut b) = (Raw::connect(port), Raw::connect(port));
        let mut t = Vec::new();
        for (who, line) in [
            (0, "MULTI"),
            (0, "SET k v"),
            (1, "CONFIG SET min-replicas-to-write 1"),
            (0, "EXEC"),
            (0, "EXISTS k"),
            // Reads only: the transaction runs.
            (0, "MULTI"),
            (0, "GET k"),
            (0, "EXEC"),
            // A write queued now is refused at once, and EXEC reports the earlier error.
            (0, "MULTI"),
            (0, "SET k v"),
            (0, "EXEC"),
            (1, "CONFIG SET min-replicas-to-write 0"),
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            let r = if who == 0 { &mut a } else { &mut b };
            t.push((line, r.cmd(&args)));
        }
        assert_eq!(
            t[3].1,
            err("EXECABORT Transaction discarded because of: NOREPLICAS Not enough good replicas to write."),
            "{name}"
        );
        assert_eq!(t[4].1, int(0), "{name}: the aborted SET did not run");
        assert_eq!(t[7].1, arr(vec![Frame::Null]), "{name}");
        assert_eq!(
            t[9].1,
            err("NOREPLICAS Not enough good replicas to write."),
            "{name}"
        );
        assert_eq!(
            t[10].1,
            err("EXECABORT Transaction discarded because of previous errors."),
            "{name}"
        );
        transcripts.push(t);
    }
    if let [ours, theirs] = &transcripts[..] {
        assert_eq!(ours, theirs, "slotgate-node vs redis-server");
    }
}
