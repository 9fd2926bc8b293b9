//! The node's configuration: a TOML file (every field optional except `node_id`),
//! overridden by environment variables (`apply_env`), then by flags (the binary sets
//! fields directly), and checked by [`NodeConfig::validate`] before the node starts.
//!
//! Every field carries its unit in its name. `node.example.toml` in this crate lists
//! them all with their defaults.

use std::path::{Path, PathBuf};

use concord_group::ClientTableLimits;
use serde::{Deserialize, Serialize};

use crate::transport::TransportConfig;

/// A configuration that cannot be used, naming the field and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of its allowed range.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// The field, as named in the TOML file.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The TOML text could not be read.
    #[error("config: {0}")]
    Parse(String),
    /// An environment variable could not be read as the field's type.
    #[error("config: environment variable {variable}: {message}")]
    Environment {
        /// The variable.
        variable: String,
        /// Why it was refused.
        message: String,
    },
    /// The config file could not be read.
    #[error("config: reading {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The IO error.
        message: String,
    },
}

/// The cluster id a node has unless configured otherwise.
pub const DEFAULT_CLUSTER_ID: &str = "concord";

/// The longest cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Checks a cluster id: 1 to [`CLUSTER_ID_BYTES_MAX`] bytes of ASCII letters,
/// digits, `.`, `_` and `-`.
pub fn check_cluster_id(cluster_id: &str) -> Result<(), String> {
    if cluster_id.is_empty() || cluster_id.len() > CLUSTER_ID_BYTES_MAX {
        return Err(format!(
            "{cluster_id:?} must be 1 to {CLUSTER_ID_BYTES_MAX} bytes long"
        ));
    }
    if let Some(bad) = cluster_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{cluster_id:?} has {bad:?}; allowed are ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A node's configuration. See `node.example.toml` for a commented example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in every group it joins. Required; 1 or more.
    pub node_id: u64,
    /// The cluster this node belongs to: peers of another cluster are refused, and so
    /// is a data directory written by a node of another cluster. 1 to
    /// [`CLUSTER_ID_BYTES_MAX`] bytes of letters, digits, `.`, `_` and `-`.
    pub cluster_id: String,
    /// Directory holding the node's durable log and snapshots. The node locks it while
    /// running.
    pub data_dir: PathBuf,
    /// Address (host:port) the node's gRPC server binds, serving both peers and
    /// clients. Port 0 picks a free port.
    pub listen_address: String,
    /// Address peers and clients should use to reach this node; empty means the
    /// address the server actually bound.
    pub advertise_address: String,
    /// Address (host:port) of the Prometheus metrics endpoint (`GET /metrics`); empty
    /// turns it off.
    pub metrics_address: String,

    /// Interval of the node's one raft timer, in milliseconds. Every group ticks on it.
    pub tick_interval_ms: u64,
    /// Minimum election timeout, in ticks; each election waits a random time in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub election_timeout_ticks: u32,
    /// Leader heartbeat interval, in ticks; below `election_timeout_ticks`.
    pub heartbeat_interval_ticks: u32,
    /// Run a pre-vote before each election (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down.
    pub check_quorum: bool,
    /// Most bytes of entries in one append message.
    pub append_bytes_max: u64,
    /// Most append messages in flight to one follower.
    pub inflight_messages_max: u32,
    /// Most payload bytes in a leader's uncommitted tail; 0 for no limit.
    pub uncommitted_bytes_max: u64,
    /// Most snapshot bytes in one InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Most bytes of committed entries handed to a group's apply task at once.
    pub apply_batch_bytes_max: u64,

    /// A group's state machine is snapshotted every this many applied entries.
    pub snapshot_interval_entries: u64,
    /// ... or once this many bytes of entries were applied since the last snapshot
    /// (0: by count only).
    pub snapshot_interval_bytes: u64,
    /// Entries kept in the log behind a snapshot, so followers slightly behind catch up
    /// from the log instead of a snapshot.
    pub snapshot_trailing_entries: u64,

    /// On a follower, `propose` (and admin calls) are forwarded to the leader; when
    /// false they fail with `NotLeader { leader, address }`.
    pub forward_proposals: bool,
    /// How long a proposal may wait for its entry to commit, in milliseconds (checked
    /// on each tick); then it fails with `Timeout` (it may still apply later).
    pub proposal_timeout_ms: u64,
    /// How long a linearizable read may wait for its read index, in milliseconds
    /// (checked on each tick).
    pub read_timeout_ms: u64,
    /// How long a membership change, join or leadership transfer may take, in
    /// milliseconds.
    pub admin_timeout_ms: u64,
    /// Most requests (proposals, reads, admin) queued for the raft loop; callers wait
    /// beyond it.
    pub request_queue_max: u32,
    /// Most requests the raft loop takes from its queue in one turn (and most peer
    /// messages), so one turn stays short.
    pub turn_inputs_max: u32,
    /// Largest encoded client request the gRPC service accepts, in bytes.
    pub request_bytes_max: u64,
    /// Most proposals one `ProposeBatch` call may carry (clients batch concurrent
    /// proposals into such calls).
    pub propose_batch_max: u32,
    /// Most events a group keeps for its slowest local subscriber; one further
    /// behind misses events (it is told how many).
    pub group_events_max: u32,

    /// Most clients a group's exactly-once table keeps; registering one more evicts
    /// the least recently active (its next request is refused, never applied twice).
    /// Decides what applies: every node of a cluster must use the same value.
    pub exactly_once_clients_max: u32,
    /// Most results a group keeps per client for requests the client has not
    /// acknowledged; a request beyond it is refused. Every node must use the same
    /// value.
    pub exactly_once_unanswered_max: u32,

    /// Largest encoded raft message sent or accepted, in bytes. Must exceed
    /// `append_bytes_max` and `snapshot_chunk_bytes_max` (plus headers).
    pub message_bytes_max: u64,
    /// Most messages in one batch on a peer stream.
    pub batch_messages_max: u32,
    /// Most bytes in one batch on a peer stream.
    pub batch_bytes_max: u64,
    /// Most messages queued per peer while its stream is busy or down.
    pub peer_queue_messages_max: u32,
    /// Capacity of the node's inbox of peer messages.
    pub inbox_messages_max: u32,
    /// First reconnection delay to a lost peer, in milliseconds (doubles per attempt).
    pub reconnect_backoff_min_ms: u64,
    /// Longest reconnection delay, in milliseconds.
    pub reconnect_backoff_max_ms: u64,
    /// How long connecting to a peer may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval on peer links, in milliseconds.
    pub keepalive_interval_ms: u64,
    /// How long a keep-alive ping may go unanswered, in milliseconds.
    pub keepalive_timeout_ms: u64,

    /// A new log segment file is started past this size, in bytes.
    pub segment_bytes_max: u64,
    /// Recent entries cached in memory per group, in bytes.
    pub entry_cache_bytes_max: u64,
    /// Zeros written ahead of the log's end, in bytes per step (0: none, the
    /// default), so a write's fdatasync need not also commit a new file length. See
    /// `concord_storage::LogConfig::preallocate_bytes` for why it is off by default.
    pub preallocate_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let transport = TransportConfig::default();
        NodeConfig {
            node_id: 0,
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            data_dir: PathBuf::from("concord-data"),
            listen_address: "127.0.0.1:7001".into(),
            advertise_address: String::new(),
            metrics_address: String::new(),
            tick_interval_ms: 100,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            append_bytes_max: 1024 * 1024,
            inflight_messages_max: 256,
            uncommitted_bytes_max: 64 * 1024 * 1024,
            snapshot_chunk_bytes_max: 1024 * 1024,
            apply_batch_bytes_max: 16 * 1024 * 1024,
            snapshot_interval_entries: 10_000,
            snapshot_interval_bytes: 64 << 20,
            snapshot_trailing_entries: 1_000,
            forward_proposals: true,
            proposal_timeout_ms: 10_000,
            read_timeout_ms: 10_000,
            admin_timeout_ms: 30_000,
            request_queue_max: 65_536,
            turn_inputs_max: 8_192,
            request_bytes_max: 4 * 1024 * 1024,
            propose_batch_max: 4096,
            group_events_max: 4096,
            exactly_once_clients_max: ClientTableLimits::default().clients_max,
            exactly_once_unanswered_max: ClientTableLimits::default().unanswered_per_client_max,
            message_bytes_max: transport.message_bytes_max,
            batch_messages_max: transport.batch_messages_max as u32,
            batch_bytes_max: transport.batch_bytes_max,
            peer_queue_messages_max: transport.peer_queue_messages_max as u32,
            inbox_messages_max: transport.inbox_messages_max as u32,
            reconnect_backoff_min_ms: transport.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: transport.reconnect_backoff_max_ms,
            connect_timeout_ms: transport.connect_timeout_ms,
            keepalive_interval_ms: transport.keepalive_interval_ms,
            keepalive_timeout_ms: transport.keepalive_timeout_ms,
            segment_bytes_max: 64 << 20,
            preallocate_bytes: 0,
            entry_cache_bytes_max: 4 << 20,
        }
    }
}

/// Checks that `value` of `field` lies in `range`.
fn in_range<T>(
    field: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field,
            message: format!(
                "{value} is out of range; allowed {}..={}",
                range.start(),
                range.end()
            ),
        })
    }
}

const KIB: u64 = 1024;
const GIB: u64 = 1024 * 1024 * 1024;
const HOUR_MS: u64 = 3_600_000;

impl NodeConfig {
    /// The default configuration for node `node_id` with data in `data_dir`.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            node_id,
            data_dir: data_dir.into(),
            ..NodeConfig::default()
        }
    }

    /// Reads a configuration from TOML text; missing fields take their defaults,
    /// unknown fields are refused. Not validated yet: see [`NodeConfig::validate`].
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse(error.to_string()))
    }

    /// Reads a configuration from a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::File {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        Self::from_toml_str(&text)
    }

    /// The configuration as TOML text.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a NodeConfig always serializes")
    }

    /// Overrides fields from environment variables named `{prefix}_{FIELD}` (the field
    /// name in upper case), e.g. `CONCORD_NODE_ID=3` with prefix `CONCORD`.
    pub fn apply_env(&mut self, prefix: &str) -> Result<(), ConfigError> {
        self.apply_variables(prefix, |name| std::env::var(name).ok())
    }

    /// [`NodeConfig::apply_env`] reading variables through `lookup` (for tests).
    pub fn apply_variables(
        &mut self,
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let toml::Value::Table(mut table) =
            toml::Value::try_from(&*self).expect("a NodeConfig always serializes")
        else {
            unreachable!("a struct serializes as a table");
        };
        let mut changed = false;
        for (field, value) in table.iter_mut() {
            let variable = format!("{prefix}_{}", field.to_uppercase());
            let Some(text) = lookup(&variable) else {
                continue;
            };
            let parsed = match value {
                toml::Value::String(_) => Ok(toml::Value::String(text.clone())),
                toml::Value::Integer(_) => text
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| format!("{text:?} is not a whole number")),
                toml::Value::Boolean(_) => match text.trim() {
                    "true" | "1" => Ok(toml::Value::Boolean(true)),
                    "false" | "0" => Ok(toml::Value::Boolean(false)),
                    _ => Err(format!("{text:?} is not true or false")),
                },
                _ => Err("this field cannot be set from the environment".to_string()),
            };
            *value = parsed.map_err(|message| ConfigError::Environment {
                variable: variable.clone(),
                message,
            })?;
            changed = true;
        }
        if changed {
            *self = toml::Value::Table(table)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Environment {
                    variable: format!("{prefix}_*"),
                    message: error.to_string(),
                })?;
        }
        Ok(())
    }

    /// Checks every field, naming the first that is wrong and what it allows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, message: String| Err(ConfigError::Invalid { field, message });
        in_range("node_id", self.node_id, 1..=u64::MAX)?;
        if let Err(message) = check_cluster_id(&self.cluster_id) {
            return invalid("cluster_id", message);
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty".into());
        }
        if self.listen_address.is_empty() {
            return invalid("listen_address", "must be host:port".into());
        }
        in_range("tick_interval_ms", self.tick_interval_ms, 1..=60_000)?;
        in_range(
            "heartbeat_interval_ticks",
            self.heartbeat_interval_ticks,
            1..=1_000,
        )?;
        in_range(
            "election_timeout_ticks",
            self.election_timeout_ticks,
            (self.heartbeat_interval_ticks + 1)..=10_000,
        )
        .map_err(|_| ConfigError::Invalid {
            field: "election_timeout_ticks",
            message: format!(
                "{} is out of range; allowed {}..=10000 (above heartbeat_interval_ticks, usually 5 to 10 times it)",
                self.election_timeout_ticks,
                self.heartbeat_interval_ticks + 1
            ),
        })?;
        in_range("append_bytes_max", self.append_bytes_max, 1..=GIB)?;
        in_range(
            "inflight_messages_max",
            self.inflight_messages_max,
            1..=65_536,
        )?;
        in_range(
            "uncommitted_bytes_max",
            self.uncommitted_bytes_max,
            0..=64 * GIB,
        )?;
        in_range(
            "snapshot_chunk_bytes_max",
            self.snapshot_chunk_bytes_max,
            1..=GIB,
        )?;
        in_range(
            "apply_batch_bytes_max",
            self.apply_batch_bytes_max,
            1..=64 * GIB,
        )?;
        in_range(
            "snapshot_interval_entries",
            self.snapshot_interval_entries,
            1..=u64::MAX / 2,
        )?;
        in_range(
            "snapshot_interval_bytes",
            self.snapshot_interval_bytes,
            0..=u64::MAX / 2,
        )?;
        in_range(
            "snapshot_trailing_entries",
            self.snapshot_trailing_entries,
            0..=u64::MAX / 2,
        )?;
        in_range("proposal_timeout_ms", self.proposal_timeout_ms, 1..=HOUR_MS)?;
        in_range("read_timeout_ms", self.read_timeout_ms, 1..=HOUR_MS)?;
        in_range("admin_timeout_ms", self.admin_timeout_ms, 1..=HOUR_MS)?;
        in_range("request_queue_max", self.request_queue_max, 1..=16_777_216)?;
        in_range("turn_inputs_max", self.turn_inputs_max, 1..=16_777_216)?;
        in_range("request_bytes_max", self.request_bytes_max, KIB..=GIB)?;
        in_range("propose_batch_max", self.propose_batch_max, 1..=1_048_576)?;
        in_range("group_events_max", self.group_events_max, 1..=16_777_216)?;
        in_range(
            "exactly_once_clients_max",
            self.exactly_once_clients_max,
            1..=100_000_000,
        )?;
        in_range(
            "exactly_once_unanswered_max",
            self.exactly_once_unanswered_max,
            1..=1_000_000,
        )?;
        in_range("message_bytes_max", self.message_bytes_max, KIB..=GIB)?;
        let needed = self.append_bytes_max.max(self.snapshot_chunk_bytes_max) + 64 * KIB;
        if self.message_bytes_max < needed {
            return invalid(
                "message_bytes_max",
                format!(
                    "{} is too small: it must be at least the larger of append_bytes_max and \
                     snapshot_chunk_bytes_max plus 64 KiB of headers ({needed})",
                    self.message_bytes_max
                ),
            );
        }
        in_range("batch_messages_max", self.batch_messages_max, 1..=1_000_000)?;
        in_range("batch_bytes_max", self.batch_bytes_max, KIB..=GIB)?;
        in_range(
            "peer_queue_messages_max",
            self.peer_queue_messages_max,
            1..=16_777_216,
        )?;
        in_range(
            "inbox_messages_max",
            self.inbox_messages_max,
            1..=16_777_216,
        )?;
        in_range(
            "reconnect_backoff_min_ms",
            self.reconnect_backoff_min_ms,
            1..=HOUR_MS,
        )?;
        in_range(
            "reconnect_backoff_max_ms",
            self.reconnect_backoff_max_ms,
            self.reconnect_backoff_min_ms..=HOUR_MS,
        )?;
        in_range("connect_timeout_ms", self.connect_timeout_ms, 1..=HOUR_MS)?;
        in_range(
            "keepalive_interval_ms",
            self.keepalive_interval_ms,
            1..=HOUR_MS,
        )?;
        in_range(
            "keepalive_timeout_ms",
            self.keepalive_timeout_ms,
            1..=HOUR_MS,
        )?;
        in_range(
            "segment_bytes_max",
            self.segment_bytes_max,
            4 * KIB..=64 * GIB,
        )?;
        in_range(
            "entry_cache_bytes_max",
            self.entry_cache_bytes_max,
            0..=64 * GIB,
        )?;
        in_range("preallocate_bytes", self.preallocate_bytes, 0..=GIB)?;
        self.transport_config()
            .validate()
            .map_err(|message| ConfigError::Invalid {
                field: "transport",
                message,
            })?;
        Ok(())
    }

    /// The raft core's configuration for one group of this node.
    pub fn raft_config(&self, applied: u64, seed: u64) -> concord_raft::Config {
        concord_raft::Config {
            id: self.node_id,
            election_timeout_ticks: self.election_timeout_ticks,
            heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            append_bytes_max: self.append_bytes_max,
            inflight_messages_max: self.inflight_messages_max as usize,
            inflight_bytes_max: 0,
            uncommitted_bytes_max: self.uncommitted_bytes_max,
            snapshot_chunk_bytes_max: self.snapshot_chunk_bytes_max,
            apply_batch_bytes_max: self.apply_batch_bytes_max,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            applied,
            seed,
            ..concord_raft::Config::new(self.node_id)
        }
    }

    /// The transport's configuration.
    pub fn transport_config(&self) -> TransportConfig {
        TransportConfig {
            batch_messages_max: self.batch_messages_max as usize,
            batch_bytes_max: self.batch_bytes_max,
            message_bytes_max: self.message_bytes_max,
            peer_queue_messages_max: self.peer_queue_messages_max as usize,
            inbox_messages_max: self.inbox_messages_max as usize,
            reconnect_backoff_min_ms: self.reconnect_backoff_min_ms,
            reconnect_backoff_max_ms: self.reconnect_backoff_max_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            keepalive_interval_ms: self.keepalive_interval_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            cluster_id: self.cluster_id.clone(),
        }
    }

    /// The durable log's configuration.
    pub fn log_config(&self) -> concord_storage::LogConfig {
        concord_storage::LogConfig {
            segment_bytes_max: self.segment_bytes_max,
            entry_cache_bytes_max: self.entry_cache_bytes_max,
            preallocate_bytes: self.preallocate_bytes,
            ..concord_storage::LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file in the crate parses, validates, and lists every field with
    /// its default value, so it cannot drift from the code.
    #[test]
    fn example_file_matches_the_defaults() {
        let text = include_str!("../node.example.toml");
        let uncommented: String = text
            .lines()
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|rest| rest.contains(" = "))
                    .unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let example = NodeConfig::from_toml_str(&uncommented).expect("example parses");
        example.validate().expect("example validates");
        let defaults = NodeConfig {
            node_id: example.node_id,
            data_dir: example.data_dir.clone(),
            ..NodeConfig::default()
        };
        assert_eq!(example, defaults);
        let toml::Value::Table(fields) = toml::Value::try_from(&defaults).unwrap() else {
            unreachable!()
        };
        for field in fields.keys() {
            assert!(
                text.contains(&format!("{field} = ")),
                "node.example.toml does not document {field}"
            );
        }
    }

    /// Every range check names its field; unknown fields and bad types are refused.
    #[test]
    fn invalid_fields_are_named() {
        let base = NodeConfig::new(1, "/tmp/x");
        base.validate().unwrap();
        let cases: Vec<(NodeConfig, &str)> = vec![
            (
                NodeConfig {
                    node_id: 0,
                    ..base.clone()
                },
                "node_id",
            ),
            (
                NodeConfig {
                    tick_interval_ms: 0,
                    ..base.clone()
                },
                "tick_interval_ms",
            ),
            (
                NodeConfig {
                    election_timeout_ticks: 2,
                    ..base.clone()
                },
                "election_timeout_ticks",
            ),
            (
                NodeConfig {
                    snapshot_interval_entries: 0,
                    ..base.clone()
                },
                "snapshot_interval_entries",
            ),
            (
                NodeConfig {
                    message_bytes_max: 2 * KIB,
                    ..base.clone()
                },
                "message_bytes_max",
            ),
            (
                NodeConfig {
                    reconnect_backoff_max_ms: 1,
                    ..base.clone()
                },
                "reconnect_backoff_max_ms",
            ),
        ];
        for (config, field) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(field), "{message:?} should name {field}");
            assert!(
                message.contains("allowed") || message.contains("at least"),
                "{message}"
            );
        }
        let error = NodeConfig::from_toml_str("node_id = 1\ntick_interval = 5\n").unwrap_err();
        assert!(error.to_string().contains("tick_interval"), "{error}");
        assert!(NodeConfig::from_toml_str("node_id = \"one\"").is_err());
    }

    /// Environment variables override the file, typed by the field; a bad value names
    /// its variable.
    #[test]
    fn environment_overrides() {
        let mut config = NodeConfig::from_toml_str("node_id = 1\ntick_interval_ms = 50\n").unwrap();
        let variables = |name: &str| match name {
            "CONCORD_NODE_ID" => Some("7".to_string()),
            "CONCORD_FORWARD_PROPOSALS" => Some("false".to_string()),
            "CONCORD_LISTEN_ADDRESS" => Some("0.0.0.0:9000".to_string()),
            _ => None,
        };
        config.apply_variables("CONCORD", variables).unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.tick_interval_ms, 50);
        assert!(!config.forward_proposals);
        assert_eq!(config.listen_address, "0.0.0.0:9000");
        let error = config
            .apply_variables("CONCORD", |name| {
                (name == "CONCORD_TICK_INTERVAL_MS").then(|| "soon".to_string())
            })
            .unwrap_err();
        assert!(
            error.to_string().contains("CONCORD_TICK_INTERVAL_MS"),
            "{error}"
        );
        let round_trip = NodeConfig::from_toml_str(&config.to_toml_string()).unwrap();
        assert_eq!(round_trip, config);
    }
}
