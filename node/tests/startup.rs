//! Starting slotgate-node like redis-server: arguments, config errors, readiness log.
//! (Also makes `cargo test` build the `slotgate-node` binary the e2e tests in tests/ use.)

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_slotgate-node")
}

#[test]
fn unknown_directive_is_fatal_with_line() {
    let dir = std::env::temp_dir().join(format!("sg-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "port 7000\n# comment\nbogus-directive yes\n").unwrap();
    let out = Command::new(bin()).arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("*** FATAL CONFIG FILE ERROR"), "{err}");
    assert!(err.contains("at line 3"), "{err}");
    assert!(err.contains(">>> 'bogus-directive yes'"), "{err}");
    assert!(
        err.contains("Bad directive or wrong number of arguments"),
        "{err}"
    );

    std::fs::write(&conf, "cluster-enabled yes\nslaveof 127.0.0.1 6379\n").unwrap();
    let out = Command::new(bin()).arg(&conf).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replicaof directive not allowed in cluster mode"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn starts_from_args_and_logs_ready() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let child = Command::new(bin())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut ok = false;
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"PING\r\n").unwrap();
            let mut b = [0u8; 7];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"+PONG\r\n");
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc_kill(child.id() as i32) };
    let out = child.wait_with_output().unwrap();
    assert!(ok, "node did not answer PING");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("Ready to accept connections"), "{log}");
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

unsafe fn libc_kill(pid: i32) {
    kill(pid, 15);
}
