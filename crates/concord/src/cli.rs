//! The command line, defined once: these types produce the parser, `--help` and the
//! usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::Exit;

/// The `concord` command line.
#[derive(Debug, Parser)]
#[command(
    name = "concord",
    version,
    about = "concord: a strongly consistent coordination and storage system",
    long_about = "concord: a strongly consistent coordination and storage system.\n\n\
        `server` runs a node of a cluster; `inspect` shows what a stopped node has on \
        disk. `dev`, `admin`, `shell` and `bench` are coming.",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 3 not found, 4 data \
        directory in use, 5 outcome unknown (more with '--help')",
    after_long_help = Exit::help(),
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `concord` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node of a concord cluster
    #[command(
        long_about = "Run a node of a concord cluster: it founds the cluster with the \
            other founders (--initial-cluster), joins one through a member (--join), or \
            resumes the cluster its data directory holds. It hosts the meta namespace \
            (on the first five nodes) and the namespaces placed on it, and serves the \
            concord.v1 API (Tree, Namespaces) and the Raft API on its listen address.\n\n\
            Prints `listening ADDRESS`, `metrics ADDRESS` (when on), how it became a \
            member (founded, joined, resumed), then `ready`. Stops gracefully on \
            SIGTERM or ctrl-c; the same command resumes it.",
        after_long_help = "Examples:\n  \
            concord server --id 1 --data-dir n1 --listen 127.0.0.1:7001 \\\n    \
            --initial-cluster n1=1@127.0.0.1:7001,n2=2@127.0.0.1:7002,n3=3@127.0.0.1:7003\n  \
            concord server --id 4 --data-dir n4 --listen 127.0.0.1:7004 --join 127.0.0.1:7001\n  \
            concord server --config node.toml"
    )]
    Server(ServerArgs),
    /// Show what a stopped node has on disk: groups, hard state, membership, log
    /// bounds, snapshots and entries
    #[command(
        long_about = "Show what a stopped node has on disk: for each raft group its hard \
            state (term, vote, commit), membership, first and last log index, snapshot, \
            and its most recent entries (index, term, kind, size, summary), as a table or \
            as JSON.\n\n\
            Reads without changing anything. Refuses (exit 3) a directory a running node \
            holds: stop the node or inspect a copy. Corruption does not stop it: the \
            report shows the log up to the damage and says where it is.",
        after_long_help = "Examples:\n  \
            concord inspect /var/lib/concord/n1\n  \
            concord inspect /var/lib/concord/n1 --group 1 --entries all\n  \
            concord inspect /var/lib/concord/n1 --no-entries --json"
    )]
    Inspect(InspectArgs),
}

/// Arguments of `concord server`. Flags override the config file.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The config file (TOML; crates/concord/server.example.toml lists every field)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (node.node_id), 1 or more
    #[arg(long, value_name = "ID")]
    pub id: Option<u64>,
    /// This node's name (name); default n<ID>
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Data directory (node.data_dir)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for peers and clients, host:port (node.listen_address)
    #[arg(long, value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// Address others reach this node at (node.advertise_address)
    #[arg(long, value_name = "ADDRESS")]
    pub advertise: Option<String>,
    /// Address of the metrics endpoint, host:port (node.metrics_address)
    #[arg(long, value_name = "ADDRESS")]
    pub metrics: Option<String>,
    /// Found a new cluster with these members: NAME=ID@HOST:PORT, comma-separated
    /// (initial_cluster)
    #[arg(long, value_name = "MEMBERS", value_delimiter = ',')]
    pub initial_cluster: Vec<String>,
    /// Join the cluster through the member at this address (join)
    #[arg(long, value_name = "ADDRESS", conflicts_with = "initial_cluster")]
    pub join: Option<String>,
}

/// Arguments of `concord inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The node's data directory (it holds segment-*.log files and LOCK)
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Show only this group; repeat the flag or separate ids with commas
    #[arg(long = "group", value_name = "ID", value_delimiter = ',')]
    pub groups: Vec<u64>,
    /// Entries to list per group, the most recent: a number, or `all`
    #[arg(
        long,
        value_name = "N|all",
        default_value = "20",
        value_parser = parse_entries_limit
    )]
    pub entries: EntriesLimit,
    /// List no entries (the same as `--entries 0`)
    #[arg(long, conflicts_with = "entries")]
    pub no_entries: bool,
}

impl InspectArgs {
    /// The most entries to list per group; None lists all.
    pub fn entries_per_group_max(&self) -> Option<u64> {
        match (self.no_entries, self.entries) {
            (true, _) => Some(0),
            (false, EntriesLimit::All) => None,
            (false, EntriesLimit::MostRecent(count)) => Some(count),
        }
    }
}

/// How many entries `--entries` lists per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntriesLimit {
    /// Every entry in the log.
    All,
    /// At most this many, the most recent.
    MostRecent(u64),
}

fn parse_entries_limit(text: &str) -> Result<EntriesLimit, String> {
    if text == "all" {
        return Ok(EntriesLimit::All);
    }
    text.parse()
        .map(EntriesLimit::MostRecent)
        .map_err(|_| "expected a number of entries or `all`".to_owned())
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

    // `--entries` takes a count or `all` and rejects anything else; `--no-entries`
    // means zero.
    #[test]
    fn entries_limit() {
        assert_eq!(parse_entries_limit("all"), Ok(EntriesLimit::All));
        assert_eq!(parse_entries_limit("7"), Ok(EntriesLimit::MostRecent(7)));
        assert!(parse_entries_limit("-1").is_err());
        assert!(parse_entries_limit("some").is_err());
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Inspect(inspect) = cli.command else {
                panic!("not inspect")
            };
            inspect.entries_per_group_max()
        };
        assert_eq!(parse(&["concord", "inspect", "d"]), Some(20));
        assert_eq!(
            parse(&["concord", "inspect", "d", "--entries", "all"]),
            None
        );
        assert_eq!(parse(&["concord", "inspect", "d", "--no-entries"]), Some(0));
        assert!(
            Cli::try_parse_from(["concord", "inspect", "d", "--no-entries", "--entries", "3"])
                .is_err()
        );
    }
}
