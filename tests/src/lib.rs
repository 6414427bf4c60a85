//! Shared helpers for the end-to-end tests: finding our binaries, spawning real processes
//! (slotgate-node, redis-server) on free loopback ports, and killing them when dropped.

pub mod cluster;
pub mod repl;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

/// Path of one of our binaries (`slotgate-node`, `slotgate`, `slotgate-bench`).
pub fn our_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build --workspace`) first",
        p.display()
    );
    p
}

/// Finds an external program on PATH (`redis-server`, `redis-cli`...).
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

/// True when running under CI (`CI=true`): missing peers are failures, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns the path of a peer program, or prints why the test is skipped and returns None.
/// Under CI a missing peer panics instead.
pub fn require_peer(prog: &str) -> Option<PathBuf> {
    match which(prog) {
        Some(p) => Some(p),
        None if in_ci() => panic!("{prog} is required under CI=true but is not installed"),
        None => {
            eprintln!(
                "SKIPPED: {prog} is not installed (apt-get install redis-server redis-tools)"
            );
            None
        }
    }
}

/// A free TCP port on 127.0.0.1 (and, for cluster nodes, port+10000 free too).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = l.local_addr().map(|a| a.port()).unwrap_or(0);
        drop(l);
        if p > 1024 && p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// A process we started; killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its client port.
    pub port: u16,
    /// Its working directory (removed on drop).
    pub dir: PathBuf,
}

impl Proc {
    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous redis-crate connection.
    pub fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).expect("client");
        c.get_connection().expect("connect")
    }

    /// Sends SIGTERM and waits up to `wait` for exit; returns true if it exited.
    pub fn terminate(&mut self, wait: Duration) -> bool {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < wait {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process's stdout+stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "slotgate-test-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Starts `bin` with redis-server style arguments on a free port, waits until it answers PING.
pub fn spawn_server(bin: &Path, extra: &[&str]) -> Proc {
    start_on_free_port(|port| {
        let dir = temp_dir("srv");
        let log = std::fs::File::create(dir.join("stdout.log")).expect("log file");
        let log2 = log.try_clone().expect("log clone");
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no");
        for a in extra {
            cmd.arg(a);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .expect("spawn server");
        Proc { child, port, dir }
    })
}

/// Starts a server with `spawn(port)` on a port from [`free_port`] and waits until it answers.
/// Such a port can be taken again before the server binds it (another test, an outgoing
/// connection): a server that exits because its port is in use is started again on another.
pub fn start_on_free_port(mut spawn: impl FnMut(u16) -> Proc) -> Proc {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let mut p = spawn(port);
        match try_wait_ready(&mut p) {
            Ok(()) => return p,
            Err(Exited(log)) if attempt < 5 && log.contains("in use") => {
                eprintln!("port {port} was taken before the server bound it; trying another");
            }
            Err(Exited(log)) => panic!("server exited early: {log}"),
            Err(NotReady(log)) => panic!("server on port {port} not ready: {log}"),
        }
    }
}

/// Why a server did not come up.
enum NotUp {
    /// It exited (its log).
    Exited(String),
    /// It did not answer in time (its log).
    NotReady(String),
}
use NotUp::{Exited, NotReady};

/// Starts slotgate-node with extra arguments.
pub fn start_node(extra: &[&str]) -> Proc {
    spawn_server(&our_bin("slotgate-node"), extra)
}

/// Starts a real redis-server (None + skip message when not installed; panics under CI).
pub fn start_redis(extra: &[&str]) -> Option<Proc> {
    let bin = require_peer("redis-server")?;
    Some(spawn_server(&bin, extra))
}

/// Waits until the process answers PING (or NOAUTH); panics with its log otherwise.
pub fn wait_ready_pub(p: &mut Proc) {
    wait_ready(p)
}

fn wait_ready(p: &mut Proc) {
    match try_wait_ready(p) {
        Ok(()) => {}
        Err(Exited(log)) => panic!("server exited early: {log}"),
        Err(NotReady(log)) => panic!("server on port {} not ready: {log}", p.port),
    }
}

fn try_wait_ready(p: &mut Proc) -> Result<(), NotUp> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(Exited(format!("({st}) {}", p.log())));
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", p.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if n > 0 && (buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH")) {
                        // The answer may have come from another process on this port: ours
                        // must still be running.
                        std::thread::sleep(Duration::from_millis(20));
                        if let Ok(Some(st)) = p.child.try_wait() {
                            return Err(Exited(format!("({st}) {}", p.log())));
                        }
                        return Ok(());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(NotReady(p.log()))
}

/// A raw RESP connection for byte-level tests (bad input, exact error texts).
pub struct Raw {
    /// The socket.
    pub s: TcpStream,
    buf: bytes::BytesMut,
}

impl Raw {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            s,
            buf: bytes::BytesMut::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write");
    }

    /// Sends a command as a RESP array.
    pub fn cmd(&mut self, args: &[&str]) -> slotgate_protocol::Frame {
        let mut out = bytes::BytesMut::new();
        slotgate_protocol::resp::write_command(&mut out, args);
        self.send(&out);
        self.read().expect("reply")
    }

    /// Reads one reply frame; None on EOF.
    pub fn read(&mut self) -> Option<slotgate_protocol::Frame> {
        loop {
            if let Ok(Some(f)) = slotgate_protocol::decode_frame(&mut self.buf) {
                return Some(f);
            }
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// True when the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 1024];
        matches!(self.s.read(&mut tmp), Ok(0))
    }
}
