//! A small one-connection RESP client for the admin paths (`slotgate create`, `status`,
//! `probe`, `--launch`), plus the CLUSTER NODES / INFO text parsers they share. Not used on
//! the request path (that is `pool.rs`).

use bytes::BytesMut;
use slotgate_protocol::Frame;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one admin command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(5);

/// Credentials for the nodes: (user, password).
pub type Auth = Option<(Option<String>, String)>;

/// One connection to a node.
pub struct Admin {
    /// `host:port` as given.
    pub addr: String,
    sock: TcpStream,
    buf: BytesMut,
}

impl Admin {
    /// Connects (within `timeout`) and authenticates when `auth` is set.
    pub async fn connect(addr: &str, auth: &Auth, timeout: Duration) -> anyhow::Result<Admin> {
        let sock = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("{addr}: connect timed out"))?
            .map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
        let _ = sock.set_nodelay(true);
        let mut a = Admin {
            addr: addr.to_string(),
            sock,
            buf: BytesMut::with_capacity(16 * 1024),
        };
        if let Some((user, pw)) = auth {
            match user {
                Some(u) => a.ok(&["AUTH", u, pw]).await?,
                None => a.ok(&["AUTH", pw]).await?,
            }
        }
        Ok(a)
    }

    /// Sends one command and reads its reply (an error reply is returned as `Frame::Error`).
    pub async fn cmd(&mut self, args: &[&str]) -> anyhow::Result<Frame> {
        let mut out = BytesMut::new();
        slotgate_protocol::resp::write_command(&mut out, args);
        let addr = self.addr.clone();
        tokio::time::timeout(CMD_TIMEOUT, async {
            self.sock.write_all(&out).await?;
            loop {
                match slotgate_protocol::decode_frame(&mut self.buf) {
                    Ok(Some(f)) => return Ok(f),
                    Ok(None) => {}
                    Err(e) => anyhow::bail!("bad reply: {e:?}"),
                }
                let n = self.sock.read_buf(&mut self.buf).await?;
                if n == 0 {
                    anyhow::bail!("connection closed");
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: {} timed out", args.join(" ")))?
        .map_err(|e| anyhow::anyhow!("{addr}: {}: {e}", args.first().unwrap_or(&"")))
    }

    /// Runs a command that must not answer an error.
    pub async fn ok(&mut self, args: &[&str]) -> anyhow::Result<()> {
        match self.cmd(args).await? {
            Frame::Error(e) => anyhow::bail!(
                "{}: {}: {}",
                self.addr,
                args.join(" "),
                String::from_utf8_lossy(&e)
            ),
            _ => Ok(()),
        }
    }

    /// Runs a command whose reply is text (bulk, simple or verbatim string).
    pub async fn text(&mut self, args: &[&str]) -> anyhow::Result<String> {
        match self.cmd(args).await? {
            Frame::Bulk(b) | Frame::Simple(b) | Frame::Verbatim(_, b) => {
                Ok(String::from_utf8_lossy(&b).into_owned())
            }
            Frame::Error(e) => anyhow::bail!(
                "{}: {}: {}",
                self.addr,
                args.join(" "),
                String::from_utf8_lossy(&e)
            ),
            other => anyhow::bail!("{}: unexpected reply {other:?}", self.addr),
        }
    }

    /// Runs a command whose reply is an integer.
    pub async fn int(&mut self, args: &[&str]) -> anyhow::Result<i64> {
        match self.cmd(args).await? {
            Frame::Integer(n) => Ok(n),
            Frame::Error(e) => anyhow::bail!(
                "{}: {}: {}",
                self.addr,
                args.join(" "),
                String::from_utf8_lossy(&e)
            ),
            other => anyhow::bail!("{}: unexpected reply {other:?}", self.addr),
        }
    }
}

/// The value of `key` in `key:value` lines (INFO, CLUSTER INFO).
pub fn info_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim_end_matches('\r').split_once(':')?;
        (k == key).then_some(v)
    })
}

/// One line of CLUSTER NODES.
#[derive(Debug, Clone)]
pub struct NodeLine {
    /// 40-hex node id.
    pub id: String,
    /// Client address `ip:port`.
    pub addr: String,
    /// Cluster bus port (0 when not shown).
    pub cport: u16,
    /// Flags (`myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`...).
    pub flags: Vec<String>,
    /// The master's id for a replica.
    pub master: Option<String>,
    /// Config epoch.
    pub epoch: u64,
    /// `connected` or `disconnected`.
    pub link: String,
    /// Slot ranges served (inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    /// True when the line carries `flag`.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// True for a master (the `master` flag).
    pub fn is_master(&self) -> bool {
        self.has("master")
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|(a, b)| (*b as usize + 1).saturating_sub(*a as usize))
            .sum()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }

    /// First 8 characters of the id.
    pub fn short_id(&self) -> &str {
        self.id.get(..8).unwrap_or(&self.id)
    }
}

/// Parses CLUSTER NODES text (importing/migrating `[...]` entries are skipped).
pub fn parse_nodes(text: &str) -> Vec<NodeLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let endpoint = f[1].split(',').next().unwrap_or("");
        let (addr, cport) = match endpoint.split_once('@') {
            Some((a, c)) => (a.to_string(), c.parse().unwrap_or(0)),
            None => (endpoint.to_string(), 0),
        };
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                continue;
            }
            let r = match s.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => s.parse().ok().map(|a| (a, a)),
            };
            if let Some(r) = r {
                slots.push(r);
            }
        }
        out.push(NodeLine {
            id: f[0].to_string(),
            addr,
            cport,
            flags: f[2].split(',').map(str::to_string).collect(),
            master: (f[3] != "-").then(|| f[3].to_string()),
            epoch: f[6].parse().unwrap_or(0),
            link: f[7].to_string(),
            slots,
        });
    }
    out
}

/// `0-5460,5462` style text for slot ranges (`-` for none).
pub fn format_ranges(r: &[(u16, u16)]) -> String {
    if r.is_empty() {
        return "-".into();
    }
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]\n\
                    292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:7003@17003,host slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n";
        let n = parse_nodes(text);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].addr, "127.0.0.1:7000");
        assert_eq!(n[0].cport, 17000);
        assert!(n[0].is_master() && n[0].has("myself"));
        assert_eq!(n[0].slots, vec![(0, 5460)]);
        assert_eq!(n[0].slot_count(), 5461);
        assert_eq!(n[1].master.as_deref(), Some(n[0].id.as_str()));
        assert_eq!(n[1].port(), 7003);
        assert_eq!(n[1].epoch, 4);
        assert_eq!(format_ranges(&[(0, 5460), (7, 7)]), "0-5460,7");
    }

    #[test]
    fn info_fields_and_tables() {
        assert_eq!(
            info_field("cluster_state:ok\r\ncluster_size:3\r\n", "cluster_size"),
            Some("3")
        );
        let t = table(&[
            vec!["a".into(), "bb".into(), "c".into()],
            vec!["ddd".into(), "e".into(), "f".into()],
        ]);
        assert_eq!(t, "a    bb  c\nddd  e   f\n");
    }
}
