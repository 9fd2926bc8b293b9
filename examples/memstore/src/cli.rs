//! The command line, defined once: these types produce the parser, `--help` and the
//! usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Exit;

/// The `memstore` command line.
#[derive(Debug, Parser)]
#[command(
    name = "memstore",
    version,
    about = "memstore: a small replicated key-value store on concord",
    long_about = "memstore: a small replicated key-value store on concord.\n\n\
        `memstore serve` runs one node of a cluster; the other commands are clients \
        that talk to any node over gRPC (writes reach the leader wherever they are \
        sent).",
    after_help = Exit::help(),
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `memstore` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: bootstrap a new cluster, join one, or resume from the data directory
    #[command(
        long_about = "Run a node until SIGTERM or ctrl-c, then stop gracefully.\n\n\
            A data directory that already holds the cluster resumes it (--bootstrap and \
            --join are then ignored), so the same command restarts a node. Otherwise \
            --bootstrap founds a new one-node cluster and --join asks a member to admit \
            this node.\n\n\
            Prints one line per step on stdout: `listening ADDR`, `metrics ADDR` (with \
            --metrics), one of `bootstrapped`, `joined PEER`, `resumed`, then `ready`.\n\n\
            Settings come from --config (every field is in concord-node's \
            node.example.toml), then MEMSTORE_<FIELD> environment variables, then these \
            flags. MEMSTORE_LOG sets the log level on stderr (error, warn, info, debug, \
            trace, off; default info).",
        after_long_help = "Examples:\n  \
            memstore serve --id 1 --data-dir n1 --listen 127.0.0.1:7001 --bootstrap\n  \
            memstore serve --id 2 --data-dir n2 --listen 127.0.0.1:7002 --join 127.0.0.1:7001"
    )]
    Serve(ServeArgs),
    /// Set KEY to VALUE
    Put(PutArgs),
    /// Print the value of KEY (exit 3 if it is not set)
    Get(GetArgs),
    /// Remove KEY
    Delete(KeyArgs),
    /// Print keys and values (tab-separated), in key order
    List(ListArgs),
    /// Print a node's view of the cluster: role, term, leader, indexes, members
    Status(PeerArgs),
    /// Print the cluster's members: id, role, address
    Members(PeerArgs),
    /// Remove node ID from the cluster
    Remove(NodeArgs),
    /// Make node ID the leader
    Transfer(NodeArgs),
}

/// Arguments of `memstore serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id, unique in the cluster (1 or more)
    #[arg(long, value_name = "N", required_unless_present = "config")]
    pub id: Option<u64>,
    /// Directory of the node's log and snapshots (created if missing; kept on exit)
    #[arg(long, value_name = "DIR", required_unless_present = "config")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for peers and clients; port 0 picks a free port
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address others reach this node at, when not the listen address
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Found a new cluster of this node alone
    #[arg(long, conflicts_with = "join")]
    pub bootstrap: bool,
    /// Join the cluster of the node at PEER_ADDR
    #[arg(long, value_name = "PEER_ADDR")]
    pub join: Option<String>,
    /// Serve Prometheus metrics at ADDR (GET /metrics); port 0 picks a free port
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// A node configuration file (TOML, the fields of concord-node's node.example.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tests only: the answers to the next COUNT writes served are lost after they
    /// apply (the client sees the connection reset)
    #[arg(long, value_name = "COUNT", default_value_t = 0, hide = true)]
    pub fault_lose_replies: u64,
    /// Tests only: how long a lost answer is held before the client hears of it
    #[arg(long, value_name = "MS", default_value_t = 0, hide = true)]
    pub fault_lost_reply_delay_ms: u64,
}

/// How a client reaches the cluster.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Address of any node of the cluster, or several, comma-separated (tried in turn
    /// when one cannot be reached)
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = "127.0.0.1:7001")]
    pub peer: String,
    /// Give up after this many milliseconds
    #[arg(long, value_name = "MS", default_value = "10000")]
    pub timeout_ms: u64,
}

/// Arguments of `memstore put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub peer: PeerArgs,
    /// The key
    pub key: String,
    /// Its new value
    pub value: String,
}

/// Arguments of `memstore get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub peer: PeerArgs,
    /// The key
    pub key: String,
    /// Read the contacted node's state as it is (no round trip to the leader; may be
    /// stale) instead of a linearizable read
    #[arg(long)]
    pub stale: bool,
}

/// Arguments of a command on one key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub peer: PeerArgs,
    /// The key
    pub key: String,
}

/// Arguments of `memstore list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Only keys starting with this
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// Most entries printed
    #[arg(long, value_name = "N", default_value = "1000")]
    pub limit: u32,
    /// Read the contacted node's state as it is (may be stale)
    #[arg(long)]
    pub stale: bool,
}

/// Arguments of a command on one node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Where the cluster is.
    #[command(flatten)]
    pub peer: PeerArgs,
    /// The node's id
    #[arg(value_name = "ID")]
    pub id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    // The clap definition is consistent (no clashing names, valid defaults).
    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    // serve needs an id and a data directory unless a config file may give them, and
    // refuses --bootstrap with --join.
    #[test]
    fn serve_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["memstore", "serve", "--data-dir", "d"]).is_err());
        assert!(parse(&["memstore", "serve", "--id", "1"]).is_err());
        assert!(parse(&["memstore", "serve", "--config", "c.toml"]).is_ok());
        assert!(parse(&[
            "memstore",
            "serve",
            "--id",
            "1",
            "--data-dir",
            "d",
            "--bootstrap",
            "--join",
            "127.0.0.1:7001"
        ])
        .is_err());
        let Command::Serve(serve) = parse(&[
            "memstore",
            "serve",
            "--id",
            "2",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:0",
            "--join",
            "127.0.0.1:7001",
        ])
        .unwrap()
        .command
        else {
            panic!("not serve");
        };
        assert_eq!(serve.id, Some(2));
        assert_eq!(serve.join.as_deref(), Some("127.0.0.1:7001"));
        assert!(!serve.bootstrap);
    }
}
