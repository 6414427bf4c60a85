//! The proxy's worker balancer (slotgate_iopool, proxy/src/client.rs): clients move between
//! worker threads with their state (name, RESP3, a half-received request; a transaction's
//! pinned connection keeps its client in place until EXEC), over a slotgate-node cluster.
//! `CONFIG SET workers-active` pins the count, `auto` hands it back to the balancer.

use slotgate_protocol::Frame;
use slotgate_tests::cluster::{start_proxy, Cluster};
use slotgate_tests::*;
use std::time::{Duration, Instant};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec().into())
}

fn simple(s: &str) -> Frame {
    Frame::Simple(s.as_bytes().to_vec().into())
}

fn info_field(c: &mut Raw, name: &str) -> String {
    let f = c.cmd(&["INFO", "server"]);
    let text = String::from_utf8_lossy(f.as_bytes().expect("bulk")).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO: {text}"))
        .trim()
        .to_string()
}

/// Clients per worker, from INFO.
fn per_worker(c: &mut Raw) -> Vec<usize> {
    info_field(c, "slotgate_workers_clients")
        .split(',')
        .map(|n| n.parse().expect("count"))
        .collect()
}

fn wait_clients(c: &mut Raw, what: &str, ok: impl Fn(&[usize]) -> bool) -> Vec<usize> {
    let mut seen = Vec::new();
    slotgate_tests::repl::wait_until(
        &format!("{what} (clients per worker)"),
        Duration::from_secs(10),
        || {
            let n = per_worker(c);
            if n != seen {
                eprintln!("{what}: clients per worker {n:?}");
            }
            seen = n;
            ok(&seen)
        },
    );
    seen
}

struct Clients {
    named: Raw,
    resp3: Raw,
    plain: Vec<Raw>,
}

impl Clients {
    /// One request each (a client moves after answering one) and its state checked.
    fn poke(&mut self, round: usize) {
        assert_eq!(self.named.cmd(&["CLIENT", "GETNAME"]), bulk("mover"));
        let r = self.resp3.cmd(&["HGETALL", "h"]);
        assert!(
            matches!(&r, Frame::Map(m) if m.len() == 1),
            "RESP3 kept: {r:?}"
        );
        for (i, p) in self.plain.iter_mut().enumerate() {
            let key = format!("key:{i}");
            if round > 0 {
                assert_eq!(p.cmd(&["GET", &key]), bulk(&(round - 1).to_string()));
            }
            assert_eq!(p.cmd(&["SET", &key, &round.to_string()]), simple("OK"));
        }
    }
}

#[test]
fn proxy_clients_keep_their_state_when_they_move_between_workers() {
    if require_peer("redis-cli").is_none() {
        return;
    }
    let cluster = Cluster::start(&our_bin("slotgate-node"), 3, 0, 3000);
    let proxy = start_proxy(&cluster.seed(), &["--threads", "2"]);
    let mut ctl = Raw::connect(proxy.port);
    assert_eq!(info_field(&mut ctl, "slotgate_workers"), "2");
    assert_eq!(
        ctl.cmd(&["CONFIG", "SET", "workers-active", "2"]),
        simple("OK")
    );
    assert_eq!(
        ctl.cmd(&["CONFIG", "GET", "workers-active"]),
        Frame::Array(vec![bulk("workers-active"), bulk("2")])
    );

    let mut c = Clients {
        named: Raw::connect(proxy.port),
        resp3: Raw::connect(proxy.port),
        plain: (0..8).map(|_| Raw::connect(proxy.port)).collect(),
    };
    assert_eq!(c.named.cmd(&["CLIENT", "SETNAME", "mover"]), simple("OK"));
    assert!(matches!(c.resp3.cmd(&["HELLO", "3"]), Frame::Map(_)));
    assert_eq!(c.resp3.cmd(&["HSET", "h", "f", "v"]), Frame::Integer(1));
    let mut tx = Raw::connect(proxy.port);
    assert_eq!(tx.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(tx.cmd(&["SET", "{t}a", "1"]), simple("QUEUED"));
    let mut half = Raw::connect(proxy.port);
    assert_eq!(half.cmd(&["PING"]), simple("PONG"));
    let total = 13; // ctl, named, resp3, 8 plain, tx, half
    wait_clients(&mut ctl, "all connected", |n| {
        n.iter().sum::<usize>() == total
    });
    c.poke(0);

    // Pack onto worker 0. The transaction's client stays where its pinned connection is.
    assert_eq!(
        ctl.cmd(&["CONFIG", "SET", "workers-active", "1"]),
        simple("OK")
    );
    c.poke(1);
    half.send(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel");
    wait_clients(&mut ctl, "packed but the transaction", |n| {
        n[0] >= total - 1
    });
    assert_eq!(tx.cmd(&["EXEC"]), Frame::Array(vec![simple("OK")]));
    assert_eq!(tx.cmd(&["GET", "{t}a"]), bulk("1"));
    wait_clients(&mut ctl, "packed", |n| n == [total, 0]);
    assert_eq!(info_field(&mut ctl, "io_threads_active"), "0");
    half.send(b"lo\r\n");
    assert_eq!(half.read(), Some(bulk("hello")));
    c.poke(2);
    // New clients accepted by the idle worker are served by the active one.
    let mut late: Vec<Raw> = (0..6).map(|_| Raw::connect(proxy.port)).collect();
    for l in &mut late {
        assert_eq!(l.cmd(&["PING"]), simple("PONG"));
    }
    wait_clients(&mut ctl, "new clients packed", |n| {
        n[0] == total + late.len() && n[1] == 0
    });
    drop(late);
    wait_clients(&mut ctl, "late clients gone", |n| {
        n.iter().sum::<usize>() == total
    });

    // Spread over both again: worker 0 gives about half of its clients away.
    assert_eq!(
        ctl.cmd(&["CONFIG", "SET", "workers-active", "2"]),
        simple("OK")
    );
    for round in 3..6 {
        c.poke(round);
        assert_eq!(half.cmd(&["PING"]), simple("PONG"));
        assert_eq!(tx.cmd(&["PING"]), simple("PONG"));
    }
    let n = wait_clients(&mut ctl, "spread", |n| {
        n.iter().sum::<usize>() == total && n[1] >= 4
    });
    assert!(n[0] >= 4, "{n:?}");
    assert_eq!(info_field(&mut ctl, "io_threads_active"), "1");
    c.poke(6);

    // Bad values are refused; auto hands the count back, and an idle proxy packs itself.
    let r = ctl.cmd(&["CONFIG", "SET", "workers-active", "3"]);
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR CONFIG SET failed (possibly related to argument 'workers-active')")),
        "{r:?}"
    );
    assert_eq!(
        ctl.cmd(&["CONFIG", "SET", "workers-active", "auto"]),
        simple("OK")
    );
    assert_eq!(
        ctl.cmd(&["CONFIG", "GET", "workers-active"]),
        Frame::Array(vec![bulk("workers-active"), bulk("auto")])
    );
    let t = Instant::now();
    while info_field(&mut ctl, "slotgate_workers_active") != "1" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "an idle proxy kept both workers active"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.poke(7);
    assert_eq!(half.cmd(&["PING"]), simple("PONG"));
    assert_eq!(tx.cmd(&["PING"]), simple("PONG"));
    wait_clients(&mut ctl, "idle-packed", |n| n[1] == 0 && n[0] == total);
}
