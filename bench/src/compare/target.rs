//! Benchmark targets: what `compare` starts, measures and stops.
//!
//! A [`Target`] owns its processes through [`ChildGuard`]s, which kill them on drop, so every
//! exit path (error, panic, Ctrl-C) ends what was started. The front suite's targets (slotgate
//! proxy over a cluster, twemproxy over standalone servers, a direct cluster client) live in
//! [`super::front`] and implement the same trait.

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use slotgate_protocol::frame_len;
use slotgate_protocol::resp::write_command;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to answer PING after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Something the runner benchmarks.
pub trait Target {
    /// Label in reports (`redis-server`, `slotgate-node`, ...).
    fn name(&self) -> &str;
    /// One line about what runs (binary, version, topology).
    fn describe(&self) -> String;
    /// Starts the processes and waits until the entry point answers PING.
    fn start(&mut self) -> Result<()>;
    /// The address clients connect to (`host:port`); `None` when not started.
    fn addr(&self) -> Option<String>;
    /// True when clients must route by slot (`--cluster`).
    fn is_cluster(&self) -> bool {
        false
    }
    /// The processes whose CPU and memory are measured: the server, or the proxy of a
    /// front (empty for a direct cluster client, which has no process in between).
    fn pids(&self) -> Vec<u32>;
    /// The backend servers behind a front (their CPU is reported separately).
    fn backend_pids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// True when the runner must write the keyspace through `addr()` before measuring
    /// (false when it is filled some other way, e.g. a shared cluster filled once).
    fn needs_preload(&self) -> bool {
        !self.is_cluster()
    }
    /// Stops every process (also done on drop).
    fn stop(&mut self);
}

/// A child process that is terminated (SIGTERM, then SIGKILL) when dropped.
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd`. The child also gets SIGKILL should this process die first.
    pub fn spawn(mut cmd: Command, what: &str) -> Result<ChildGuard> {
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(ChildGuard {
            child,
            what: what.to_string(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Access to the child (e.g. to take its stdout).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the process to end, at most `timeout`; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        // Polls every 10 ms; bounded by the deadline and by the iteration cap.
        for _ in 0..1_000_000 {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Terminates the process: SIGTERM, up to 3 s grace, then SIGKILL; reaps it.
    pub fn terminate(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid; it is not reaped yet, so the pid is ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if self.wait_timeout(Duration::from_secs(3)).is_none() {
            eprintln!("{} (pid {pid}) ignored SIGTERM; killing it", self.what);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A free loopback TCP port (bound then released; the OS does not hand it out again at once).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Sends one command over a fresh blocking connection and returns the raw reply frame.
pub fn blocking_call(addr: &str, args: &[&str], timeout: Duration) -> Result<Vec<u8>> {
    let sock = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut out = BytesMut::new();
    write_command(&mut out, args);
    s.write_all(&out)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    // Bounded by the socket timeout per read and by the reply size cap.
    while buf.len() < 64 * 1024 * 1024 {
        if let Some(n) = frame_len(&buf)? {
            buf.truncate(n);
            return Ok(buf);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("{addr} closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    bail!("reply from {addr} too large")
}

/// Waits until `addr` answers PING, while `alive` says the server process still runs.
pub fn wait_ready(addr: &str, mut alive: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no attempt");
    // Bounded by START_TIMEOUT and by the attempt cap.
    for _ in 0..100_000 {
        if !alive() {
            bail!("the server exited before answering PING");
        }
        match blocking_call(addr, &["PING"], Duration::from_millis(500)) {
            Ok(r) if r.starts_with(b"+PONG") => return Ok(()),
            Ok(r) => last = String::from_utf8_lossy(&r).trim().to_string(),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(anyhow!(
        "{addr} did not answer PING within {START_TIMEOUT:?} (last: {last})"
    ))
}

/// `bin` itself when it names a path, else its location on `PATH` (when found).
pub fn resolve_bin(bin: &Path) -> PathBuf {
    if bin.components().count() > 1 {
        return bin.to_path_buf();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| bin.to_path_buf())
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One standalone server started as `<bin> --port N --bind 127.0.0.1 --save "" --appendonly no`
/// (redis-server, or slotgate-node, which takes redis-server style arguments).
pub struct ServerTarget {
    label: String,
    bin: PathBuf,
    extra_args: Vec<String>,
    log_dir: PathBuf,
    port: u16,
    child: Option<ChildGuard>,
}

impl ServerTarget {
    /// A server target; logs go to `<log_dir>/<label>-<port>.log`.
    pub fn new(
        label: &str,
        bin: PathBuf,
        extra_args: Vec<String>,
        log_dir: PathBuf,
    ) -> ServerTarget {
        ServerTarget {
            label: label.to_string(),
            bin,
            extra_args,
            log_dir,
            port: 0,
            child: None,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir
            .join(format!("{}-{}.log", self.label, self.port))
    }
}

impl Target for ServerTarget {
    fn name(&self) -> &str {
        &self.label
    }

    fn describe(&self) -> String {
        let version = Command::new(&self.bin)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "version unknown".to_string());
        format!(
            "`{}` — standalone, `{}` ({version})",
            self.label,
            resolve_bin(&self.bin).display()
        )
    }

    fn start(&mut self) -> Result<()> {
        self.stop();
        self.port = free_port()?;
        std::fs::create_dir_all(&self.log_dir)?;
        let log = std::fs::File::create(self.log_path())
            .with_context(|| format!("creating {}", self.log_path().display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child =
            ChildGuard::spawn(cmd, &format!("{} ({})", self.label, self.bin.display()))?;
        let addr = format!("127.0.0.1:{}", self.port);
        if let Err(e) = wait_ready(&addr, || child.try_wait().is_none()) {
            drop(child);
            bail!(
                "{} did not start: {e:#}\n--- {} ---\n{}",
                self.label,
                self.log_path().display(),
                log_tail(&self.log_path(), 15)
            );
        }
        self.child = Some(child);
        Ok(())
    }

    fn addr(&self) -> Option<String> {
        self.child
            .as_ref()
            .map(|_| format!("127.0.0.1:{}", self.port))
    }

    fn pids(&self) -> Vec<u32> {
        self.child.iter().map(|c| c.pid()).collect()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate();
        }
    }
}

impl Drop for ServerTarget {
    fn drop(&mut self) {
        self.stop();
    }
}
