//! End-to-end RESP protocol handling of the real slotgate-node binary: deep pipelines, requests
//! split into single bytes, inline commands, malformed input (byte-exact error texts compared
//! with a real redis-server 7.0), the unauthenticated limits under `requirepass`, abrupt
//! disconnects, connection churn and redis-benchmark.

use bytes::BytesMut;
use slotgate_protocol::resp::write_command;
use slotgate_protocol::Frame;
use slotgate_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a server gets to answer (or to close) before a case counts as "no reply yet".
const SETTLE: Duration = Duration::from_millis(400);

/// Sends each case on its own connection, lets the server settle once, then collects what came
/// back: the reply bytes followed by `<EOF>` when the server closed the connection.
fn exchange_all(port: u16, cases: &[Vec<u8>]) -> Vec<String> {
    let socks: Vec<TcpStream> = cases
        .iter()
        .map(|c| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(2))).ok();
            // The server may close before reading everything (a protocol error); ignore that.
            let _ = s.write_all(c);
            s
        })
        .collect();
    std::thread::sleep(SETTLE);
    socks
        .into_iter()
        .map(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(30))).ok();
            let mut got = Vec::new();
            let mut tmp = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match s.read(&mut tmp) {
                    Ok(0) => {
                        got.extend_from_slice(b"<EOF>");
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&tmp[..n]),
                    // A reset after the reply (unread input at close) is a close too.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        got.extend_from_slice(b"<EOF>");
                        break;
                    }
                    Err(_) => break,
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        })
        .collect()
}

fn cmd_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_command(&mut out, args);
    out.to_vec()
}

/// Malformed (and oddly formed) requests whose answers must match redis-server byte for byte.
fn malformed_cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = [
        &b"*abc\r\n"[..],
        b"*1\r\n+x\r\n",
        b"*1\r\n$-3\r\n",
        b"*3000000000\r\n",
        b"*2147483648\r\n",
        b"$5\r\n",
        b"*1\r\n$600000000\r\n",
        b"*1\r\n$536870913\r\n",
        b"set \"a\r\n",
        b"set 'a\r\n",
        b"ECHO \"a\"b\r\n",
        b"*1 \r\n",
        b"* 1\r\n",
        b"*\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*-0\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$+4\r\nPING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*1\r\n$-0\r\n",
        b"*1\r\n\nx\r\n",
        b"*2\r\n$4\r\nECHO\r\n:1\r\n",
        // Not errors, but easy to get subtly different.
        b"*-5\r\nPING\r\n",
        b"*0\r\nPING\r\n",
        b"\r\n\n PING\n",
        b"PING\r\r\n",
        b"*1\rX$4\r\nPING\r\n",
        b"*1\r\n$4\rXPING\r\n",
        b"*1\r\n$4\r\nPINGXY*1\r\n$4\r\nPING\r\n",
        b"\x0bPING\r\n",
        b"ECHO \"a\"\x0b\r\n",
        b"ECHO 'a\\'b'\r\n",
        b"ECHO \"\\x41\\x4\\n\"\r\n",
        // Incomplete or NUL-blocked requests: no answer, connection stays open.
        b"*1\r\n+x",
        b"*1\r\n$4\r\nPI",
        b"*1\r\n\x00x\r\n",
        b"ECHO a\x00b\r\n",
        b"*1\r\n$536870912\r\n",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    // Lines beyond the 64 KiB limits.
    cases.push(vec![b'P'; 200_000]);
    let mut line = vec![b'P'; 200_000];
    line.extend_from_slice(b"\r\n");
    cases.push(line);
    let mut mb = b"*".to_vec();
    mb.extend_from_slice(&[b'1'; 70_000]);
    cases.push(mb);
    let mut bc = b"*1\r\n$".to_vec();
    bc.extend_from_slice(&[b'1'; 70_000]);
    cases.push(bc);
    // A NUL hides the header's CR until the buffer outgrows the limit.
    let mut nul = b"*1\r\n\x00".to_vec();
    nul.extend_from_slice(&[b'1'; 70_000]);
    cases.push(nul);
    // Commands before the bad one still run, in order.
    cases.push(b"PING\r\n*1\r\n$4\r\nPING\r\n*x\r\nPING\r\n".to_vec());
    cases
}

fn auth_cases() -> Vec<Vec<u8>> {
    let auth = cmd_bytes(&[b"AUTH", b"pw"]);
    let with_auth = |tail: &[u8]| [&auth[..], tail].concat();
    vec![
        b"*11\r\n".to_vec(),
        b"*10\r\n".to_vec(),
        b"*1\r\n$16385\r\n".to_vec(),
        b"*1\r\n$16384\r\n".to_vec(),
        b"*2\r\n$4\r\nECHO\r\n$16385\r\n".to_vec(),
        b"PING\r\n".to_vec(),
        cmd_bytes(&[b"ECHO", b"k"]),
        b"NOSUCHCOMMAND x\r\n".to_vec(),
        cmd_bytes(&[b"AUTH", b"nope"]),
        with_auth(b"*11\r\n"),
        with_auth(b"*1\r\n$16385\r\n"),
        with_auth(b"PING\r\n"),
    ]
}

fn compare(what: &str, cases: &[Vec<u8>], ours: &[String], theirs: &[String]) {
    let mut diffs = Vec::new();
    for ((case, a), b) in cases.iter().zip(ours).zip(theirs) {
        if a != b {
            let shown = String::from_utf8_lossy(&case[..case.len().min(60)]).into_owned();
            diffs.push(format!("{shown:?}\n  slotgate: {a:?}\n  redis:    {b:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: differs from redis-server:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn malformed_input_matches_redis() {
    let cases = malformed_cases();
    let node = start_node(&[]);
    let ours = exchange_all(node.port, &cases);
    // These hold whether or not redis-server is around.
    assert_eq!(
        ours[0],
        "-ERR Protocol error: invalid multibulk length\r\n<EOF>"
    );
    assert_eq!(
        ours[1],
        "-ERR Protocol error: expected '$', got '+'\r\n<EOF>"
    );
    assert_eq!(ours[7], "-ERR Protocol error: invalid bulk length\r\n<EOF>");
    assert_eq!(
        ours[8],
        "-ERR Protocol error: unbalanced quotes in request\r\n<EOF>"
    );
    assert_eq!(ours[ours.len() - 7], "");
    assert_eq!(
        ours[ours.len() - 6],
        "-ERR Protocol error: too big inline request\r\n<EOF>"
    );
    assert_eq!(
        ours[ours.len() - 1],
        "+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n<EOF>"
    );
    // The node survived all of it.
    assert_eq!(
        Raw::connect(node.port).cmd(&["PING"]),
        Frame::Simple("PONG".into())
    );
    let Some(redis) = start_redis(&[]) else {
        return;
    };
    let theirs = exchange_all(redis.port, &cases);
    compare("malformed input", &cases, &ours, &theirs);
}

#[test]
fn unauthenticated_limits_match_redis() {
    let cases = auth_cases();
    let node = start_node(&["--requirepass", "pw"]);
    let ours = exchange_all(node.port, &cases);
    assert_eq!(
        ours[0],
        "-ERR Protocol error: unauthenticated multibulk length\r\n<EOF>"
    );
    assert_eq!(ours[1], "");
    assert_eq!(
        ours[2],
        "-ERR Protocol error: unauthenticated bulk length\r\n<EOF>"
    );
    assert_eq!(ours[3], "");
    assert_eq!(ours[5], "-NOAUTH Authentication required.\r\n");
    assert_eq!(ours[6], "-NOAUTH Authentication required.\r\n");
    assert_eq!(ours[9], "+OK\r\n");
    assert_eq!(ours[10], "+OK\r\n");
    assert_eq!(ours[11], "+OK\r\n+PONG\r\n");
    let Some(redis) = start_redis(&["--requirepass", "pw"]) else {
        return;
    };
    let theirs = exchange_all(redis.port, &cases);
    compare("unauthenticated limits", &cases, &ours, &theirs);
}

#[test]
fn limits_lift_after_auth() {
    let node = start_node(&["--requirepass", "pw"]);
    let mut c = Raw::connect(node.port);
    assert_eq!(
        c.cmd(&["ECHO", "x"]),
        Frame::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(c.cmd(&["AUTH", "pw"]), Frame::Simple("OK".into()));
    let big = "v".repeat(100_000);
    assert_eq!(c.cmd(&["ECHO", &big]), Frame::Bulk(big.clone().into()));
    let many: Vec<&str> = std::iter::once("ECHO").chain(["a"; 11]).collect();
    assert_eq!(
        c.cmd(&many),
        Frame::Error("ERR wrong number of arguments for 'echo' command".into())
    );
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn deep_pipeline_in_one_write() {
    let node = start_node(&[]);
    const N: usize = 10_000;
    let mut req = BytesMut::new();
    for i in 0..N {
        if i % 2 == 0 {
            write_command(&mut req, &["PING"]);
        } else {
            write_command(&mut req, &["ECHO", &format!("m{i}")]);
        }
    }
    let mut c = Raw::connect(node.port);
    let mut w = c.s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(&req).is_ok());
    for i in 0..N {
        let f = c.read().unwrap_or_else(|| panic!("EOF after {i} replies"));
        let want = if i % 2 == 0 {
            Frame::Simple("PONG".into())
        } else {
            Frame::Bulk(format!("m{i}").into())
        };
        assert_eq!(f, want, "reply {i}");
    }
    assert!(writer.join().unwrap_or(false));
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn one_byte_writes() {
    let node = start_node(&[]);
    let mut c = Raw::connect(node.port);
    c.s.set_nodelay(true).ok();
    let mut req = cmd_bytes(&[b"ECHO", b"hello world"]);
    req.extend_from_slice(b"ECHO \"a b\"\r\n");
    req.extend_from_slice(&cmd_bytes(&[b"PING"]));
    for b in &req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(c.read(), Some(Frame::Bulk("hello world".into())));
    assert_eq!(c.read(), Some(Frame::Bulk("a b".into())));
    assert_eq!(c.read(), Some(Frame::Simple("PONG".into())));
}

#[test]
fn inline_commands() {
    let node = start_node(&[]);
    let mut c = Raw::connect(node.port);
    c.send(b"PING\r\n");
    assert_eq!(c.read(), Some(Frame::Simple("PONG".into())));
    c.send(b"ECHO \"a b\"\r\n");
    assert_eq!(c.read(), Some(Frame::Bulk("a b".into())));
    c.send(b"ECHO 'it''s'\r\n");
    assert_eq!(
        c.read(),
        Some(Frame::Error(
            "ERR Protocol error: unbalanced quotes in request".into()
        ))
    );
    assert!(c.closed());
    let mut c = Raw::connect(node.port);
    // LF-only line ends, blank lines, hex escapes and a mixed pipeline.
    c.send(b"\n\r\nECHO \"\\x41\\tb\"\nPING hi\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read(), Some(Frame::Bulk("A\tb".into())));
    assert_eq!(c.read(), Some(Frame::Bulk("hi".into())));
    assert_eq!(c.read(), Some(Frame::Simple("PONG".into())));
}

#[test]
fn garbage_closes_only_that_connection() {
    let node = start_node(&[]);
    let mut good = Raw::connect(node.port);
    assert_eq!(good.cmd(&["PING"]), Frame::Simple("PONG".into()));
    let mut bad = Raw::connect(node.port);
    bad.send(b"*1\r\n\x01\x02garbage\r\n");
    assert_eq!(
        bad.read(),
        Some(Frame::Error(
            "ERR Protocol error: expected '$', got '\x01'".into()
        ))
    );
    assert!(bad.closed());
    let mut bad = Raw::connect(node.port);
    bad.send(b"*zz\r\n");
    assert_eq!(
        bad.read(),
        Some(Frame::Error(
            "ERR Protocol error: invalid multibulk length".into()
        ))
    );
    assert!(bad.closed());
    assert_eq!(
        good.cmd(&["ECHO", "still here"]),
        Frame::Bulk("still here".into())
    );
}

#[test]
fn huge_declared_bulk_is_refused() {
    let node = start_node(&[]);
    let mut c = Raw::connect(node.port);
    c.send(b"*1\r\n$536870913\r\n");
    assert_eq!(
        c.read(),
        Some(Frame::Error(
            "ERR Protocol error: invalid bulk length".into()
        ))
    );
    assert!(c.closed());
    // Declaring the largest allowed bulk and going away costs nothing lasting.
    for _ in 0..20 {
        let mut c = Raw::connect(node.port);
        c.send(b"*2\r\n$4\r\nECHO\r\n$536870912\r\nabc");
    }
    assert_eq!(
        Raw::connect(node.port).cmd(&["PING"]),
        Frame::Simple("PONG".into())
    );
}

#[test]
fn half_frames_and_connection_churn() {
    let node = start_node(&[]);
    let halves: [&[u8]; 6] = [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk",
        b"*2\r\n$4\r\nECHO\r\n$10\r\nabc",
        b"*2\r",
        b"PIN",
        b"ECHO \"unterminated",
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4",
    ];
    for h in halves {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        s.write_all(h).expect("write");
        drop(s);
    }
    let t = Instant::now();
    for i in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        match i % 4 {
            0 => {}
            1 => {
                let _ = s.write_all(b"PING\r\n");
            }
            2 => {
                let _ = s.write_all(b"*1\r\n$4\r\nPI");
            }
            _ => {
                // Abortive close (RST) instead of FIN.
                let _ = s.write_all(b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n");
                let _ = socket_linger_zero(&s);
            }
        }
        drop(s);
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    let mut c = Raw::connect(node.port);
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ECHO", "alive"]), Frame::Bulk("alive".into()));
}

/// SO_LINGER {on, 0}: closing sends RST.
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a correctly sized, initialized option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn redis_benchmark_ping() {
    let Some(bench) = require_peer("redis-benchmark") else {
        return;
    };
    let node = start_node(&[]);
    let out = Command::new(bench)
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(["-t", "ping", "-n", "20000", "-q"])
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {stdout}{stderr}"
    );
    for test in ["PING_INLINE", "PING_MBULK"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(test) && l.contains("requests per second")),
            "{test} missing: {stdout}{stderr}"
        );
    }
    let lower = format!("{stdout}{stderr}").to_lowercase();
    assert!(!lower.contains("error"), "{stdout}{stderr}");
    assert_eq!(
        Raw::connect(node.port).cmd(&["PING"]),
        Frame::Simple("PONG".into())
    );
}
