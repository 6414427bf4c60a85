//! Cluster creation (`slotgate create HOST:PORT... --replicas N`, and `--launch` for new
//! nodes): the steps `redis-cli --cluster create` takes, done by us.
//!
//! 1. check every node is in cluster mode and empty — or that the given nodes already form
//!    one cluster, in which case creation is a no-op that waits for `cluster_state:ok`;
//! 2. plan: `n / (replicas + 1)` masters (at least 3), slots split evenly in ranges
//!    (0-5460 / 5461-10922 / 10923-16383 for three), each replica on a master on another host
//!    when there is one;
//! 3. CLUSTER ADDSLOTSRANGE on the masters, CLUSTER SET-CONFIG-EPOCH 1..n (distinct epochs, so
//!    no collision has to be resolved), CLUSTER MEET of every node with the first;
//! 4. wait until every node knows every other (no handshake) with the same slot layout;
//! 5. CLUSTER REPLICATE on the replicas; wait until every node sees the same roles and
//!    reports `cluster_state:ok`.

use crate::admin::{info_field, parse_nodes, Admin, Auth, NodeLine};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What [`create`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The nodes were empty; they now form a new cluster.
    New,
    /// The nodes already formed one cluster (nothing was changed).
    Existing,
}

/// Options of one creation.
pub struct CreateOpts {
    /// The nodes, `host:port` (names are resolved; CLUSTER MEET needs IPs).
    pub nodes: Vec<String>,
    /// Replicas per master.
    pub replicas: usize,
    /// Overall deadline (connecting, joining, waiting for ok).
    pub timeout: Duration,
    /// Node credentials.
    pub auth: Auth,
}

/// The plan: masters with their slot ranges, replicas with their master (indexes into the
/// node list).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// (node index, first slot, last slot)
    pub masters: Vec<(usize, u16, u16)>,
    /// (node index, master node index)
    pub replicas: Vec<(usize, usize)>,
}

/// Slot ranges for `m` masters, as redis-cli splits them.
pub fn slot_ranges(m: usize) -> Vec<(u16, u16)> {
    let per = 16384.0 / m as f64;
    let mut out = Vec::with_capacity(m);
    let mut first = 0i64;
    let mut cursor = 0.0f64;
    for i in 0..m {
        let mut last = (cursor + per - 1.0).round() as i64;
        if last > 16383 || i == m - 1 {
            last = 16383;
        }
        if last < first {
            last = first;
        }
        out.push((first as u16, last as u16));
        first = last + 1;
        cursor += per;
    }
    out
}

/// Chooses masters and replicas for nodes on `hosts` (one entry per node, its IP).
/// Masters are taken round-robin over the hosts; each replica goes to the master with the
/// fewest replicas so far, preferring masters on another host.
pub fn plan(hosts: &[String], replicas: usize) -> anyhow::Result<Plan> {
    let n = hosts.len();
    let m = n / (replicas + 1);
    if m < 3 {
        anyhow::bail!(
            "{n} nodes with {replicas} replica(s) per master give {m} master(s); a Redis Cluster needs at least 3 masters, so at least {} nodes",
            3 * (replicas + 1)
        );
    }
    // Interleave the hosts: first node of each host, then the second of each...
    let mut by_host: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut host_order: Vec<&str> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if !by_host.contains_key(h.as_str()) {
            host_order.push(h);
        }
        by_host.entry(h).or_default().push(i);
    }
    let mut interleaved = Vec::with_capacity(n);
    let mut round = 0;
    while interleaved.len() < n {
        for h in &host_order {
            if let Some(&i) = by_host[h].get(round) {
                interleaved.push(i);
            }
        }
        round += 1;
    }
    let ranges = slot_ranges(m);
    let masters: Vec<(usize, u16, u16)> = interleaved[..m]
        .iter()
        .zip(ranges)
        .map(|(&i, (a, b))| (i, a, b))
        .collect();
    let mut count = vec![0usize; m];
    let mut reps = Vec::new();
    for &r in &interleaved[m..] {
        let best = (0..m)
            .min_by_key(|&k| {
                let same_host = hosts[masters[k].0] == hosts[r];
                (count[k], same_host, k)
            })
            .unwrap_or(0);
        count[best] += 1;
        reps.push((r, masters[best].0));
    }
    reps.sort();
    Ok(Plan {
        masters,
        replicas: reps,
    })
}

/// Resolves `host:port` to one socket address (IPv4 first).
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {addr}"))
}

/// Connects, retrying until `deadline` (nodes may still be starting).
async fn connect_retry(addr: &str, auth: &Auth, deadline: Instant) -> anyhow::Result<Admin> {
    loop {
        match Admin::connect(addr, auth, Duration::from_secs(2)).await {
            Ok(a) => return Ok(a),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What one node says about itself.
struct NodeView {
    id: String,
    table: Vec<NodeLine>,
    assigned: usize,
    keys: i64,
}

async fn view(a: &mut Admin) -> anyhow::Result<NodeView> {
    let info = match a.text(&["CLUSTER", "INFO"]).await {
        Ok(t) => t,
        Err(e) if e.to_string().contains("cluster support disabled") => anyhow::bail!(
            "{} is not in cluster mode (start it with cluster-enabled yes)",
            a.addr
        ),
        Err(e) => return Err(e),
    };
    let table = parse_nodes(&a.text(&["CLUSTER", "NODES"]).await?);
    let id = table
        .iter()
        .find(|n| n.has("myself"))
        .map(|n| n.id.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: CLUSTER NODES has no myself line", a.addr))?;
    let keys = a.int(&["DBSIZE"]).await?;
    let assigned = info_field(&info, "cluster_slots_assigned")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(NodeView {
        id,
        table,
        assigned,
        keys,
    })
}

/// Per node id: (is master, its master, slot ranges).
type Layout = BTreeMap<String, (bool, Option<String>, String)>;

/// A node's view of the cluster layout, comparable across nodes: per known node, its role,
/// master and slots (handshake/noaddr entries make it inconsistent).
fn signature(table: &[NodeLine]) -> Option<Layout> {
    let mut out = BTreeMap::new();
    for n in table {
        if n.has("handshake") || n.has("noaddr") {
            return None;
        }
        out.insert(
            n.id.clone(),
            (
                n.is_master(),
                n.master.clone(),
                crate::admin::format_ranges(&n.slots),
            ),
        );
    }
    Some(out)
}

/// Polls every node until `pred` holds for all their views, or the deadline passes.
async fn wait_all(
    conns: &mut [Admin],
    deadline: Instant,
    what: &str,
    mut pred: impl FnMut(&[(String, Vec<NodeLine>)]) -> bool,
) -> anyhow::Result<()> {
    loop {
        let mut views = Vec::with_capacity(conns.len());
        for a in conns.iter_mut() {
            let info = a.text(&["CLUSTER", "INFO"]).await?;
            views.push((info, parse_nodes(&a.text(&["CLUSTER", "NODES"]).await?)));
        }
        if pred(&views) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// True when every view has the same layout with `n` nodes.
fn consistent(views: &[(String, Vec<NodeLine>)], n: usize) -> bool {
    let mut first = None;
    for (_, table) in views {
        let Some(sig) = signature(table) else {
            return false;
        };
        if sig.len() != n {
            return false;
        }
        match &first {
            None => first = Some(sig),
            Some(f) if *f == sig => {}
            Some(_) => return false,
        }
    }
    true
}

fn all_ok(views: &[(String, Vec<NodeLine>)]) -> bool {
    views
        .iter()
        .all(|(info, _)| info_field(info, "cluster_state") == Some("ok"))
}

/// Creates the cluster (or finds it already created) and waits for `cluster_state:ok`.
pub async fn create(opts: &CreateOpts, progress: &dyn Fn(&str)) -> anyhow::Result<Created> {
    let deadline = Instant::now() + opts.timeout;
    let n = opts.nodes.len();
    let mut addrs = Vec::with_capacity(n);
    for a in &opts.nodes {
        addrs.push(resolve(a).await?);
    }
    let distinct: BTreeSet<SocketAddr> = addrs.iter().copied().collect();
    if distinct.len() != n {
        anyhow::bail!("the same node is listed twice");
    }
    let mut conns = Vec::with_capacity(n);
    for a in &addrs {
        conns.push(connect_retry(&a.to_string(), &opts.auth, deadline).await?);
    }
    let mut views = Vec::with_capacity(n);
    for c in conns.iter_mut() {
        views.push(view(c).await?);
    }
    let ids: BTreeSet<&str> = views.iter().map(|v| v.id.as_str()).collect();
    let fresh = |v: &NodeView| v.table.len() == 1 && v.assigned == 0 && v.keys == 0;
    if !views.iter().all(fresh) {
        // Already one cluster of exactly these nodes (every node knows all of them, and no
        // other)?
        let formed = views.iter().all(|v| {
            let known: BTreeSet<&str> = v.table.iter().map(|l| l.id.as_str()).collect();
            known == ids
        }) && views.iter().any(|v| v.assigned == 16384);
        if formed {
            progress(
                "the nodes already form a cluster: nothing to create; waiting for cluster_state:ok",
            );
            wait_all(&mut conns, deadline, "cluster_state:ok", all_ok).await?;
            return Ok(Created::Existing);
        }
        let busy: Vec<String> = views
            .iter()
            .zip(&opts.nodes)
            .filter(|(v, _)| !fresh(v))
            .map(|(v, a)| {
                format!(
                    "{a} (knows {} node(s), {} slot(s) assigned, {} key(s))",
                    v.table.len(),
                    v.assigned,
                    v.keys
                )
            })
            .collect();
        anyhow::bail!(
            "cannot create: these nodes are not empty and the given nodes are not one existing cluster: {}. Reset them (CLUSTER RESET HARD, or delete their nodes.conf) or leave them out",
            busy.join(", ")
        );
    }
    let hosts: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    let p = plan(&hosts, opts.replicas)?;
    progress(&format!(
        "creating a cluster of {} masters and {} replicas",
        p.masters.len(),
        p.replicas.len()
    ));
    for &(i, a, b) in &p.masters {
        progress(&format!("  master {}  slots {a}-{b}", opts.nodes[i]));
        conns[i]
            .ok(&["CLUSTER", "ADDSLOTSRANGE", &a.to_string(), &b.to_string()])
            .await?;
    }
    for &(r, m) in &p.replicas {
        progress(&format!(
            "  replica {}  of {}",
            opts.nodes[r], opts.nodes[m]
        ));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.ok(&["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])
            .await?;
    }
    // MEET everybody with the first node, on its bus port as it reports it.
    let first_cport = views[0]
        .table
        .iter()
        .find(|l| l.has("myself"))
        .map(|l| l.cport)
        .filter(|&p| p != 0)
        .unwrap_or(addrs[0].port().wrapping_add(10000));
    progress("joining the nodes (CLUSTER MEET)");
    let ip0 = addrs[0].ip().to_string();
    let port0 = addrs[0].port().to_string();
    let cport0 = first_cport.to_string();
    for c in conns.iter_mut().skip(1) {
        c.ok(&["CLUSTER", "MEET", &ip0, &port0, &cport0]).await?;
    }
    wait_all(
        &mut conns,
        deadline,
        "every node to know every other",
        |v| consistent(v, n),
    )
    .await?;
    if !p.replicas.is_empty() {
        progress("attaching the replicas (CLUSTER REPLICATE)");
    }
    for &(r, m) in &p.replicas {
        let master_id = views[m].id.clone();
        loop {
            match conns[r].ok(&["CLUSTER", "REPLICATE", &master_id]).await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    progress("waiting for cluster_state:ok on every node");
    let want_replicas: BTreeMap<String, String> = p
        .replicas
        .iter()
        .map(|&(r, m)| (views[r].id.clone(), views[m].id.clone()))
        .collect();
    wait_all(&mut conns, deadline, "cluster_state:ok", |v| {
        all_ok(v)
            && consistent(v, n)
            && v.iter().all(|(_, table)| {
                want_replicas.iter().all(|(r, m)| {
                    table
                        .iter()
                        .any(|l| &l.id == r && l.master.as_deref() == Some(m.as_str()))
                })
            })
    })
    .await?;
    Ok(Created::New)
}

/// `slotgate create`: prints progress; exit code 0 when the cluster is (or already was) ok.
pub async fn main(args: &crate::config::CreateArgs) -> i32 {
    let opts = CreateOpts {
        nodes: args.nodes.clone(),
        replicas: args.replicas,
        timeout: Duration::from_secs(args.timeout_secs),
        auth: args.password.clone().map(|p| (args.user.clone(), p)),
    };
    let started = Instant::now();
    let progress = |m: &str| println!("[{:>5.1}s] {m}", started.elapsed().as_secs_f64());
    match create(&opts, &progress).await {
        Ok(Created::New) => {
            progress("cluster created: cluster_state:ok");
            0
        }
        Ok(Created::Existing) => {
            progress("cluster already exists and is ok: nothing to do");
            0
        }
        Err(e) => {
            eprintln!("slotgate create: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_like_redis_cli() {
        assert_eq!(
            slot_ranges(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
        let r = slot_ranges(7);
        assert_eq!(r.first().map(|r| r.0), Some(0));
        assert_eq!(r.last().map(|r| r.1), Some(16383));
        for w in r.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
    }

    #[test]
    fn plan_one_host() {
        let hosts = vec!["127.0.0.1".to_string(); 6];
        let p = plan(&hosts, 1).unwrap();
        assert_eq!(
            p.masters,
            vec![(0, 0, 5460), (1, 5461, 10922), (2, 10923, 16383)]
        );
        assert_eq!(p.replicas, vec![(3, 0), (4, 1), (5, 2)]);
        assert!(plan(&hosts[..5], 1).is_err());
        let p = plan(&hosts[..3], 0).unwrap();
        assert!(p.replicas.is_empty());
    }

    #[test]
    fn plan_prefers_replicas_on_other_hosts() {
        // Two hosts, three nodes each: masters interleave, replicas cross hosts.
        let hosts: Vec<String> = ["a", "a", "a", "b", "b", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = plan(&hosts, 1).unwrap();
        for &(r, m) in &p.replicas {
            assert_ne!(
                hosts[r], hosts[m],
                "replica {r} on the host of its master {m}"
            );
        }
        assert_eq!(p.masters.len(), 3);
    }
}
