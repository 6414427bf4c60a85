//! `slotgate status --seed HOST:PORT`: the cluster as one table (node, address, role, slots,
//! keys, link state, config epoch), read from the seed's CLUSTER NODES plus a DBSIZE on every
//! node; and `slotgate probe`, the one-shot health check the Docker healthchecks use.

use crate::admin::{format_ranges, info_field, parse_nodes, table, Admin, Auth, NodeLine};
use std::time::Duration;

/// The status table of the cluster `seed` belongs to, and whether its state is ok.
pub async fn report(seed: &str, auth: &Auth) -> anyhow::Result<(String, bool)> {
    let mut a = Admin::connect(seed, auth, Duration::from_secs(3)).await?;
    let info = a.text(&["CLUSTER", "INFO"]).await?;
    let mut nodes = parse_nodes(&a.text(&["CLUSTER", "NODES"]).await?);
    nodes.sort_by(|x, y| {
        let key = |n: &NodeLine| {
            let (host, _) = n.addr.rsplit_once(':').unwrap_or((&n.addr, ""));
            (host.to_string(), n.port())
        };
        key(x).cmp(&key(y))
    });
    let state = info_field(&info, "cluster_state")
        .unwrap_or("?")
        .to_string();
    let masters = nodes
        .iter()
        .filter(|n| n.is_master() && !n.slots.is_empty())
        .count();
    let mut out = format!(
        "cluster_state:{state}  nodes:{}  masters with slots:{masters}  slots assigned:{}  current epoch:{}\n\n",
        nodes.len(),
        info_field(&info, "cluster_slots_assigned").unwrap_or("?"),
        info_field(&info, "cluster_current_epoch").unwrap_or("?"),
    );
    let mut rows = vec![vec![
        "NODE".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "SLOTS".into(),
        "KEYS".into(),
        "LINK".into(),
        "EPOCH".into(),
    ]];
    for n in &nodes {
        let keys = match Admin::connect(&n.addr, auth, Duration::from_secs(1)).await {
            Ok(mut c) => c
                .int(&["DBSIZE"])
                .await
                .map(|k| k.to_string())
                .unwrap_or_else(|_| "?".into()),
            Err(_) => "unreachable".into(),
        };
        rows.push(vec![
            n.short_id().to_string(),
            n.addr.clone(),
            role_text(n, &nodes),
            if n.slots.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", format_ranges(&n.slots), n.slot_count())
            },
            keys,
            if n.has("myself") {
                "myself".into()
            } else {
                n.link.clone()
            },
            n.epoch.to_string(),
        ]);
    }
    out.push_str(&table(&rows));
    Ok((out, state == "ok"))
}

/// `master`, `replica of <short id>`, plus `fail`/`fail?`/`handshake` when flagged.
pub fn role_text(n: &NodeLine, all: &[NodeLine]) -> String {
    let mut role = if n.is_master() {
        "master".to_string()
    } else {
        match &n.master {
            Some(m) => {
                let who = all
                    .iter()
                    .find(|x| &x.id == m)
                    .map(|x| x.addr.clone())
                    .unwrap_or_else(|| m.get(..8).unwrap_or(m).to_string());
                format!("replica of {who}")
            }
            None => "replica".into(),
        }
    };
    for f in ["fail", "fail?", "handshake", "noaddr"] {
        if n.has(f) {
            role.push_str(&format!(" ({f})"));
        }
    }
    role
}

/// `slotgate status`: exit 0 when cluster_state is ok, 1 otherwise or when unreachable.
pub async fn main(args: &crate::config::StatusArgs) -> i32 {
    let auth = args.password.clone().map(|p| (args.user.clone(), p));
    match report(&args.seed, &auth).await {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("slotgate status: {e:#}");
            1
        }
    }
}

/// `slotgate probe TARGET [COMMAND...]`: `http://host:port/path` must answer 2xx;
/// `host:port` must answer the command (default PING) without an error, and contain
/// `--expect TEXT` when given. Exit 0 healthy, 1 not.
pub async fn probe(args: &crate::config::ProbeArgs) -> i32 {
    let timeout = Duration::from_millis(args.timeout_ms);
    let r = match args.target.strip_prefix("http://") {
        Some(rest) => tokio::time::timeout(timeout, http_get(rest))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
        None => tokio::time::timeout(timeout, resp_probe(args))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
    };
    match r {
        Ok(text) => {
            if !args.quiet {
                println!("{}", text.trim_end());
            }
            0
        }
        Err(e) => {
            eprintln!("slotgate probe {}: {e:#}", args.target);
            1
        }
    }
}

async fn resp_probe(args: &crate::config::ProbeArgs) -> anyhow::Result<String> {
    let auth = args.password.clone().map(|p| (None, p));
    let mut a = Admin::connect(&args.target, &auth, Duration::from_millis(args.timeout_ms)).await?;
    let cmd: Vec<&str> = if args.command.is_empty() {
        vec!["PING"]
    } else {
        args.command.iter().map(String::as_str).collect()
    };
    let reply = match a.cmd(&cmd).await? {
        slotgate_protocol::Frame::Error(e) => {
            anyhow::bail!("{}", String::from_utf8_lossy(&e))
        }
        slotgate_protocol::Frame::Bulk(b)
        | slotgate_protocol::Frame::Simple(b)
        | slotgate_protocol::Frame::Verbatim(_, b) => String::from_utf8_lossy(&b).into_owned(),
        slotgate_protocol::Frame::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    if let Some(want) = &args.expect {
        if !reply.contains(want.as_str()) {
            anyhow::bail!("reply does not contain {want:?}");
        }
    }
    Ok(reply)
}

/// A plain HTTP/1.0 GET; Ok with the status line on 2xx.
async fn http_get(rest: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = tokio::net::TcpStream::connect(hostport).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') && buf.len() < 65536 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = String::from_utf8_lossy(&buf);
    let status = status.lines().next().unwrap_or("").to_string();
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(status)
    } else {
        anyhow::bail!("HTTP status {status:?}")
    }
}
