//! A small request/reply connection for control traffic (PING, CLUSTER SLOTS, DBSIZE,
//! verification), with timeouts on every step. The load path does not use it.

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use slotgate_protocol::resp::write_command;
use slotgate_protocol::{decode_frame, Frame};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Timeout for connecting and for each control command.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that sends one command and waits for its reply.
pub struct SimpleConn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl SimpleConn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<SimpleConn> {
        let stream = tokio::time::timeout(CONTROL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(SimpleConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
        })
    }

    /// Sends one command and returns its reply (error replies are returned, not raised).
    pub async fn call<T: AsRef<[u8]>>(&mut self, args: &[T]) -> Result<Frame> {
        tokio::time::timeout(CONTROL_TIMEOUT, self.call_inner(args))
            .await
            .map_err(|_| anyhow!("no reply within {CONTROL_TIMEOUT:?}"))?
    }

    async fn call_inner<T: AsRef<[u8]>>(&mut self, args: &[T]) -> Result<Frame> {
        self.wbuf.clear();
        write_command(&mut self.wbuf, args);
        self.stream.write_all(&self.wbuf).await?;
        loop {
            if let Some(f) = decode_frame(&mut self.rbuf)? {
                return Ok(f);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("connection closed by peer");
            }
        }
    }
}

/// Waits until `addr` answers PING with PONG, retrying every 50 ms for at most `timeout`.
pub async fn wait_for_ping(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = anyhow!("no attempt made");
    // Bounded in time by `deadline` and in count by the attempt cap.
    for _ in 0..10_000 {
        if Instant::now() >= deadline {
            break;
        }
        match ping_once(addr).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.context(format!("{addr} did not answer PING within {timeout:?}")))
}

async fn ping_once(addr: &str) -> Result<()> {
    let mut c = tokio::time::timeout(Duration::from_secs(1), SimpleConn::connect(addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    let reply = tokio::time::timeout(Duration::from_secs(1), c.call(&["PING"]))
        .await
        .map_err(|_| anyhow!("PING timed out"))??;
    match reply {
        Frame::Simple(s) if &s[..] == b"PONG" => Ok(()),
        other => bail!("unexpected PING reply: {other}"),
    }
}
