//! End-to-end tests of slotgate-node's I/O worker balancer (node/src/workers.rs): clients move
//! between worker threads with all their state (database, name, MULTI queue, subscriptions,
//! a half-received request, a blocked pop), and the balancer packs an idle server onto one
//! worker and adds the second under a load that saturates the first.

use slotgate_protocol::Frame;
use slotgate_tests::*;
use std::time::{Duration, Instant};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec().into())
}

fn simple(s: &str) -> Frame {
    Frame::Simple(s.as_bytes().to_vec().into())
}

fn arr(v: Vec<Frame>) -> Frame {
    Frame::Array(v)
}

/// `DEBUG IO-WORKERS` as `(active, mode, conns per worker)`.
fn workers(c: &mut Raw) -> (usize, String, Vec<usize>) {
    let f = c.cmd(&["DEBUG", "IO-WORKERS"]);
    let line = String::from_utf8_lossy(f.as_bytes().expect("bulk reply")).into_owned();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    let active = field("active:").parse().expect("active count");
    let conns = field("conns:")
        .split(',')
        .map(|n| n.parse().expect("conn count"))
        .collect();
    (active, field("mode:"), conns)
}

/// Polls `DEBUG IO-WORKERS` until `ok` holds for the per-worker connection counts.
fn wait_conns(c: &mut Raw, what: &str, ok: impl Fn(&[usize]) -> bool) -> Vec<usize> {
    let mut seen = Vec::new();
    slotgate_tests::repl::wait_until(
        &format!("{what} (connections per worker)"),
        Duration::from_secs(10),
        || {
            let n = workers(c).2;
            if n != seen {
                eprintln!("{what}: connections per worker {n:?}");
            }
            seen = n;
            ok(&seen)
        },
    );
    seen
}

/// Every stateful client gets a request, so it reaches the point where it may move, and its
/// state is checked afterwards.
struct Clients {
    db3: Raw,
    named: Raw,
    multi: Raw,
    sub: Raw,
    plain: Vec<Raw>,
}

impl Clients {
    fn poke(&mut self) {
        assert_eq!(self.db3.cmd(&["GET", "k"]), bulk("in-db-3"));
        assert_eq!(self.named.cmd(&["CLIENT", "GETNAME"]), bulk("mover"));
        assert_eq!(self.multi.cmd(&["INCR", "tx"]), simple("QUEUED"));
        assert_eq!(self.sub.cmd(&["PING"]), arr(vec![bulk("pong"), bulk("")]));
        for p in &mut self.plain {
            assert_eq!(p.cmd(&["PING"]), simple("PONG"));
        }
    }

    fn check_pubsub(&mut self, ctl: &mut Raw, msg: &str) {
        assert_eq!(ctl.cmd(&["PUBLISH", "ch", msg]), Frame::Integer(1));
        assert_eq!(
            self.sub.read(),
            Some(arr(vec![bulk("message"), bulk("ch"), bulk(msg)]))
        );
    }
}

#[test]
fn clients_keep_their_state_when_they_move_between_workers() {
    let node = start_node(&["--io-threads", "2", "--enable-debug-command", "yes"]);
    let mut ctl = Raw::connect(node.port);
    assert_eq!(ctl.cmd(&["DEBUG", "IO-WORKERS", "2"]), simple("OK"));
    assert_eq!(workers(&mut ctl).1, "pinned");

    let mut c = Clients {
        db3: Raw::connect(node.port),
        named: Raw::connect(node.port),
        multi: Raw::connect(node.port),
        sub: Raw::connect(node.port),
        plain: (0..8).map(|_| Raw::connect(node.port)).collect(),
    };
    assert_eq!(c.db3.cmd(&["SELECT", "3"]), simple("OK"));
    assert_eq!(c.db3.cmd(&["SET", "k", "in-db-3"]), simple("OK"));
    assert_eq!(c.named.cmd(&["CLIENT", "SETNAME", "mover"]), simple("OK"));
    assert_eq!(c.multi.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(
        c.sub.cmd(&["SUBSCRIBE", "ch"]),
        arr(vec![bulk("subscribe"), bulk("ch"), Frame::Integer(1)])
    );
    let mut blocked = Raw::connect(node.port);
    blocked.send(b"*3\r\n$5\r\nBLPOP\r\n$4\r\nlist\r\n$1\r\n0\r\n");
    let mut half = Raw::connect(node.port);
    assert_eq!(half.cmd(&["PING"]), simple("PONG"));
    let total = 15; // ctl + 4 stateful + 8 plain + blocked + half
    wait_conns(&mut ctl, "all connected", |n| {
        n.iter().sum::<usize>() == total
    });

    // Pack onto worker 0: each client moves once it has answered a request.
    assert_eq!(ctl.cmd(&["DEBUG", "IO-WORKERS", "1"]), simple("OK"));
    c.poke();
    // A request cut in the middle moves with its first half.
    half.send(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel");
    // The blocked pop is served, then moves.
    assert_eq!(ctl.cmd(&["LPUSH", "list", "x"]), Frame::Integer(1));
    assert_eq!(blocked.read(), Some(arr(vec![bulk("list"), bulk("x")])));
    assert_eq!(blocked.cmd(&["PING"]), simple("PONG"));
    let conns = wait_conns(&mut ctl, "packed", |n| n[0] == total && n[1] == 0);
    assert_eq!(workers(&mut ctl).0, 1, "{conns:?}");
    half.send(b"lo\r\n");
    assert_eq!(half.read(), Some(bulk("hello")));
    c.check_pubsub(&mut ctl, "one");
    // New clients accepted by the idle worker are served by the active one.
    let mut late: Vec<Raw> = (0..6).map(|_| Raw::connect(node.port)).collect();
    for l in &mut late {
        assert_eq!(l.cmd(&["PING"]), simple("PONG"));
    }
    wait_conns(&mut ctl, "new clients packed", |n| {
        n[0] == total + late.len() && n[1] == 0
    });
    drop(late);
    wait_conns(&mut ctl, "late clients gone", |n| {
        n.iter().sum::<usize>() == total
    });
    assert_eq!(
        info_server(&mut ctl)
            .get("io_threads_active")
            .map(String::as_str),
        Some("0")
    );

    // Spread over both: the first worker gives half of its clients away as they make requests.
    assert_eq!(ctl.cmd(&["DEBUG", "IO-WORKERS", "2"]), simple("OK"));
    for _ in 0..3 {
        c.poke();
        assert_eq!(half.cmd(&["PING"]), simple("PONG"));
        assert_eq!(blocked.cmd(&["PING"]), simple("PONG"));
    }
    let conns = wait_conns(&mut ctl, "spread", |n| {
        n.iter().sum::<usize>() == total && n[1] >= 5
    });
    assert!(conns[0] >= 5, "{conns:?}");
    assert_eq!(
        info_server(&mut ctl)
            .get("io_threads_active")
            .map(String::as_str),
        Some("1")
    );
    c.check_pubsub(&mut ctl, "two");
    assert_eq!(
        c.multi.cmd(&["EXEC"]),
        arr(vec![
            Frame::Integer(1),
            Frame::Integer(2),
            Frame::Integer(3),
            Frame::Integer(4)
        ])
    );
    assert_eq!(c.db3.cmd(&["DBSIZE"]), Frame::Integer(1));
    assert_eq!(ctl.cmd(&["GET", "tx"]), bulk("4"));

    // A killed client is killed wherever it went.
    assert_eq!(
        ctl.cmd(&["CLIENT", "KILL", "SKIPME", "yes", "TYPE", "pubsub"]),
        Frame::Integer(1)
    );
    assert!(c.sub.closed());
    wait_conns(&mut ctl, "after kill", |n| {
        n.iter().sum::<usize>() == total - 1
    });

    // Bad arguments are errors, and the connection stays usable.
    for bad in ["0", "3", "x"] {
        let r = ctl.cmd(&["DEBUG", "IO-WORKERS", bad]);
        assert!(
            matches!(&r, Frame::Error(e) if e.starts_with(b"ERR IO-WORKERS takes AUTO")),
            "{bad}: {r:?}"
        );
    }
    assert_eq!(ctl.cmd(&["PING"]), simple("PONG"));
}

fn info_server(c: &mut Raw) -> std::collections::BTreeMap<String, String> {
    let f = c.cmd(&["INFO", "server"]);
    String::from_utf8_lossy(f.as_bytes().expect("bulk"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_balancer_packs_an_idle_server_and_spreads_a_saturating_load() {
    let node = start_node(&["--io-threads", "2", "--enable-debug-command", "yes"]);
    let mut ctl = Raw::connect(node.port);
    // Idle: the balancer packs every client onto one worker.
    let t = Instant::now();
    loop {
        let (active, mode, _) = workers(&mut ctl);
        assert_eq!(mode, "auto");
        if active == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "an idle server kept {active} workers active"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Saturating: several clients keep pipelines of server-heavy commands queued (each an
    // intersection of two 3000-member sets answered by one integer), so one worker never idles
    // however slow the clients are; the balancer adds the second. Bounded in time and requests.
    for key in ["{s}a", "{s}b"] {
        let mut args = vec!["SADD".to_string(), key.to_string()];
        args.extend((0..3000).map(|m| format!("m{m}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(ctl.cmd(&args), Frame::Integer(3000));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = node.port;
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(port);
                let mut batch = bytes::BytesMut::new();
                for _ in 0..16 {
                    slotgate_protocol::resp::write_command(
                        &mut batch,
                        &["SINTERCARD", "2", "{s}a", "{s}b"],
                    );
                }
                let t = Instant::now();
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t.elapsed() < Duration::from_secs(20)
                    && rounds < 1_000_000
                {
                    c.send(&batch);
                    for _ in 0..16 {
                        assert_eq!(c.read(), Some(Frame::Integer(3000)));
                    }
                    rounds += 1;
                }
            })
        })
        .collect();
    let t = Instant::now();
    let mut spread = false;
    while t.elapsed() < Duration::from_secs(20) {
        if workers(&mut ctl).0 == 2 {
            spread = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.join().expect("load thread");
    }
    assert!(spread, "a saturating load never got the second worker");
}

#[test]
fn a_second_worker_that_does_not_help_is_given_back() {
    // One connection is served by one worker, however busy: a second worker cannot raise the
    // work done, so the balancer's trial gives it back while the load goes on.
    let node = start_node(&["--io-threads", "2", "--enable-debug-command", "yes"]);
    let mut ctl = Raw::connect(node.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sock = std::net::TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
    let mut reader = sock.try_clone().expect("clone");
    let closer = sock.try_clone().expect("clone");
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    // The reader drains replies as raw bytes until the node closes; the writer keeps the
    // pipeline full. Both are bounded in time and bytes.
    let read = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    });
    let w_stop = stop.clone();
    let write = std::thread::spawn(move || {
        use std::io::Write;
        let mut sock = sock;
        let mut batch = bytes::BytesMut::new();
        for j in 0..256 {
            slotgate_protocol::resp::write_command(&mut batch, &["INCR", &format!("w{}", j % 8)]);
        }
        let t = Instant::now();
        let mut sent = 0u64;
        while !w_stop.load(std::sync::atomic::Ordering::Relaxed)
            && t.elapsed() < Duration::from_secs(30)
            && sent < 100_000_000
        {
            if sock.write_all(&batch).is_err() {
                break;
            }
            sent += 256;
        }
        sent
    });
    let t = Instant::now();
    let (mut grew, mut given_back) = (false, false);
    while t.elapsed() < Duration::from_secs(25) {
        let active = workers(&mut ctl).0;
        if active == 2 {
            grew = true;
        } else if grew && active == 1 {
            given_back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = write.join().expect("writer");
    let _ = closer.shutdown(std::net::Shutdown::Write);
    let got = read.join().expect("reader");
    assert!(
        sent > 0 && got > 0,
        "no load ran: sent {sent}, read {got} bytes"
    );
    assert!(
        grew,
        "one saturating connection never got a trial second worker"
    );
    assert!(given_back, "a second worker that did not help was kept");
}
