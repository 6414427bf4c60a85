//! Command-line flags (clap) and the TOML config file (`--config`): every flag may also be
//! set in the file under the same name; flags given on the command line win. The lab
//! subcommands (`create`, `status`, `probe`) and the `--launch` flags live here too.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// slotgate: a Redis Cluster proxy for non-cluster clients.
#[derive(Debug, Clone, Parser)]
#[command(name = "slotgate", version, args_override_self = true)]
pub struct Cli {
    /// Lab subcommands; without one, slotgate is the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Start a local cluster of N slotgate-node processes (default 6: 3 masters + 3
    /// replicas), form it (or resume the one in --data-dir) and serve it as the proxy.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "6")]
    pub launch: Option<usize>,
    /// --launch: replicas per master.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// --launch: client port of the first node (node i uses base+i, its bus base+i+10000).
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// --launch: where node configs, cluster state and logs live (one directory per port).
    #[arg(long, default_value = "slotgate-lab")]
    pub data_dir: PathBuf,
    /// --launch: the slotgate-node binary (default: beside slotgate, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,
    /// --launch: cluster-node-timeout of the nodes in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub node_timeout_ms: u64,
    /// --launch: metrics port of the first node (node i serves /metrics on this + i; 0 = off).
    #[arg(long, default_value_t = 9122)]
    pub node_metrics_port: u16,
    /// TOML file with any of these settings (`listen = "127.0.0.1:6380"`, `seed = ["h:p"]`).
    #[arg(long)]
    pub config: Option<String>,
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub listen: SocketAddr,
    /// A cluster node to discover the cluster from (repeatable).
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub seeds: Vec<String>,
    /// Serve Prometheus metrics on this address (`/metrics`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Password clients must AUTH with.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Password for the cluster nodes (their requirepass / masterauth).
    #[arg(long)]
    pub backend_password: Option<String>,
    /// ACL user for the cluster nodes.
    #[arg(long)]
    pub backend_user: Option<String>,
    /// Multiplexed connections per cluster node, per worker thread.
    #[arg(long, default_value_t = 1)]
    pub conns_per_node: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Backend connect timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// Backend reply timeout in milliseconds (a backend connection whose oldest request has
    /// waited this long is dropped and its requests fail).
    #[arg(long, default_value_t = 5000)]
    pub read_timeout_ms: u64,
    /// Deadline of one client request, retries included, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// How long a node that refused a connection is marked down, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub down_ms: u64,
    /// Periodic slot-map refresh in seconds (0 = only on MOVED/errors).
    #[arg(long, default_value_t = 10)]
    pub refresh_interval_secs: u64,
    /// Minimum time between two slot-map refreshes in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub min_refresh_interval_ms: u64,
    /// Most client connections.
    #[arg(long, default_value_t = 10000)]
    pub maxclients: usize,
    /// Close clients idle for this many seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub idle_timeout_secs: u64,
    /// Most pipelined requests of one client in flight (backpressure beyond).
    #[arg(long, default_value_t = 1024)]
    pub max_pipeline: usize,
    /// Largest query buffer of one client in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_query_buffer: usize,
    /// Where read-only commands go: master, prefer-replica or replica (READONLY replicas).
    #[arg(long, default_value = "master", value_parser = ["master", "prefer-replica", "replica"])]
    pub read_from: String,
    /// SLOWLOG threshold in microseconds (negative: off).
    #[arg(long, default_value_t = 10000, allow_hyphen_values = true)]
    pub slowlog_log_slower_than: i64,
    /// SLOWLOG length.
    #[arg(long, default_value_t = 128)]
    pub slowlog_max_len: usize,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The lab subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Form a new cluster from empty cluster-mode nodes (as `redis-cli --cluster create`);
    /// does nothing and exits 0 when they already form one cluster that is ok.
    Create(CreateArgs),
    /// Print the cluster's nodes: role, slots, keys, link state, epoch.
    Status(StatusArgs),
    /// Health check: `HOST:PORT [COMMAND...]` must answer without an error (default PING),
    /// `http://HOST:PORT/PATH` must answer 2xx. Exit 0 healthy, 1 not.
    Probe(ProbeArgs),
}

/// `slotgate create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The nodes (`host:port`), masters first as redis-cli takes them.
    #[arg(required = true, value_name = "HOST:PORT")]
    pub nodes: Vec<String>,
    /// Replicas per master.
    #[arg(long, default_value_t = 0)]
    pub replicas: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Password of the nodes.
    #[arg(long)]
    pub password: Option<String>,
    /// ACL user of the nodes.
    #[arg(long)]
    pub user: Option<String>,
}

/// `slotgate status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Any node of the cluster.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000")]
    pub seed: String,
    /// Password of the nodes.
    #[arg(long)]
    pub password: Option<String>,
    /// ACL user of the nodes.
    #[arg(long)]
    pub user: Option<String>,
}

/// `slotgate probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// `host:port` (a RESP server) or `http://host:port/path`.
    pub target: String,
    /// The command to send (default PING).
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
    /// The reply must contain this text.
    #[arg(long)]
    pub expect: Option<String>,
    /// Password for AUTH.
    #[arg(long)]
    pub password: Option<String>,
    /// Deadline in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Print nothing on success.
    #[arg(long, short)]
    pub quiet: bool,
}

fn toml_to_args(text: &str) -> anyhow::Result<Vec<String>> {
    let table: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for (k, v) in table {
        let flag = format!("--{}", k.replace('_', "-"));
        let flag = if flag == "--seeds" {
            "--seed".to_string()
        } else {
            flag
        };
        match v {
            toml::Value::Array(items) => {
                for it in items {
                    out.push(flag.clone());
                    out.push(scalar(&it)?);
                }
            }
            other => {
                out.push(flag);
                out.push(scalar(&other)?);
            }
        }
    }
    Ok(out)
}

fn scalar(v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => anyhow::bail!("unsupported value in config file: {v}"),
    })
}

impl Cli {
    /// The live-changeable proxy settings these flags describe.
    pub fn proxy_config(&self, listen: SocketAddr) -> crate::proxy::ProxyConfig {
        use std::time::Duration;
        crate::proxy::ProxyConfig {
            listen,
            requirepass: self.requirepass.clone(),
            maxclients: self.maxclients,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_pipeline: self.max_pipeline.max(1),
            max_query_buffer: self.max_query_buffer,
            read_from: crate::proxy::ReadFrom::parse(&self.read_from)
                .unwrap_or(crate::proxy::ReadFrom::Master),
            slowlog_slower_than_us: self.slowlog_log_slower_than,
            slowlog_max_len: self.slowlog_max_len,
        }
    }

    /// Parses the command line, merging in `--config FILE` (command-line flags win).
    pub fn load() -> anyhow::Result<Cli> {
        let args: Vec<String> = std::env::args().collect();
        let cfg_path = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
            });
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "slotgate".into())];
        if let Some(p) = cfg_path {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("cannot read config file {p}: {e}"))?;
            merged
                .extend(toml_to_args(&text).map_err(|e| anyhow::anyhow!("config file {p}: {e}"))?);
        }
        merged.extend(args.into_iter().skip(1));
        Ok(Cli::parse_from(merged))
    }

    /// Like [`Cli::load`] but returns parse errors instead of exiting (SIGHUP reload).
    pub fn try_load() -> anyhow::Result<Cli> {
        let args: Vec<String> = std::env::args().collect();
        let cfg_path = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1).cloned());
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "slotgate".into())];
        if let Some(p) = cfg_path {
            let text = std::fs::read_to_string(&p)?;
            merged.extend(toml_to_args(&text)?);
        }
        merged.extend(args.into_iter().skip(1));
        Ok(Cli::try_parse_from(merged)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_becomes_flags_and_cli_wins() {
        let mut a = vec!["slotgate".to_string()];
        a.extend(
            toml_to_args(
                "listen = \"127.0.0.1:7777\"\nseed = [\"a:1\", \"b:2\"]\nconns_per_node = 4\n",
            )
            .unwrap(),
        );
        a.extend(["--listen".to_string(), "127.0.0.1:8888".to_string()]);
        let c = Cli::parse_from(a);
        assert_eq!(c.listen.port(), 8888);
        assert_eq!(c.seeds, vec!["a:1", "b:2"]);
        assert_eq!(c.conns_per_node, 4);
        assert!(c.command.is_none() && c.launch.is_none());
    }

    #[test]
    fn launch_and_subcommands_parse() {
        let c = Cli::parse_from(["slotgate", "--launch"]);
        assert_eq!(c.launch, Some(6));
        assert_eq!(c.replicas, 1);
        let c = Cli::parse_from(["slotgate", "--launch", "9", "--replicas", "2"]);
        assert_eq!((c.launch, c.replicas), (Some(9), 2));
        let c = Cli::parse_from(["slotgate", "create", "a:1", "b:2", "c:3", "--replicas", "0"]);
        match c.command {
            Some(Command::Create(a)) => assert_eq!(a.nodes.len(), 3),
            other => panic!("{other:?}"),
        }
        let c = Cli::parse_from([
            "slotgate", "probe", "h:1", "cluster", "info", "--expect", "ok",
        ]);
        match c.command {
            Some(Command::Probe(a)) => {
                assert_eq!(a.command, vec!["cluster", "info", "--expect", "ok"]);
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::parse_from([
            "slotgate", "probe", "--expect", "ok", "h:1", "cluster", "info",
        ]);
        match c.command {
            Some(Command::Probe(a)) => {
                assert_eq!(a.command, vec!["cluster", "info"]);
                assert_eq!(a.expect.as_deref(), Some("ok"));
            }
            other => panic!("{other:?}"),
        }
    }
}
