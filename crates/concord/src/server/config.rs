//! `concord server`'s configuration: a TOML file (every field below, all optional but
//! the node's id), then the flags. `server.example.toml` shows every field with its
//! default.

use std::path::Path;

use concord_node::NodeConfig;
use concord_service::meta::{check_namespace_name, REPLICAS_MAX};
use concord_service::Limits;
use serde::{Deserialize, Serialize};

/// Most voters the `meta` namespace has; further nodes follow it from outside.
pub const META_VOTERS_MAX: u32 = 5;

/// A founding member of the cluster, as `initial_cluster` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Founder {
    /// Its node id (1 or more).
    pub id: u64,
    /// Its name (unique in the cluster).
    pub name: String,
    /// Where it listens for peers and clients (host:port).
    pub address: String,
}

impl Founder {
    /// Parses `name=id@host:port`, the flag's form.
    pub fn parse(text: &str) -> Result<Founder, String> {
        let form = "expected NAME=ID@HOST:PORT, e.g. n1=1@127.0.0.1:7001";
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: {form}"))?;
        let (id, address) = rest
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: {form}"))?;
        let id = id
            .parse()
            .map_err(|_| format!("{text:?}: the id {id:?} is not a whole number; {form}"))?;
        Ok(Founder {
            id,
            name: name.to_string(),
            address: address.to_string(),
        })
    }
}

/// A server's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's name in the cluster (for people: `concord admin`, logs); unique.
    /// Empty: `n<node_id>`.
    pub name: String,
    /// The founding members, when this node founds a new cluster with them: every
    /// founder is started with the same list (this node among them). `meta` gets the
    /// first five by id as voters and `default` is placed on `namespace_replicas` of
    /// them. Ignored once the data directory holds the cluster.
    pub initial_cluster: Vec<Founder>,
    /// Address (host:port) of a member of an existing cluster to join through, when
    /// this node is new. Ignored once the data directory holds the cluster.
    pub join: String,
    /// Replicas a namespace gets when its nodes are not named (and `default` at
    /// founding), 1 to 7.
    pub namespace_replicas: u32,
    /// How often this node compares the namespaces it hosts with `meta` (creating
    /// the groups of namespaces placed on it, dropping those deleted), in
    /// milliseconds.
    pub reconcile_interval_ms: u64,
    /// How long a node may stay unreachable before the namespaces it hosts get a
    /// replacement replica on another node, in milliseconds (100..=86400000).
    pub replica_down_after_ms: u64,
    /// How often the `meta` leader checks that every node answers, in
    /// milliseconds (10..=60000).
    pub health_check_interval_ms: u64,
    /// How long a node may take to answer a health check, in milliseconds
    /// (10..=60000).
    pub health_check_timeout_ms: u64,
    /// The limits a namespace gets when its creator names none. Fixed per namespace
    /// at creation (every replica applies the same).
    pub limits: Limits,
    /// The node: id, addresses, data directory, raft timings, storage
    /// (`concord_node::NodeConfig`).
    pub node: NodeConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: String::new(),
            initial_cluster: Vec::new(),
            join: String::new(),
            namespace_replicas: 3,
            reconcile_interval_ms: 100,
            replica_down_after_ms: 30_000,
            health_check_interval_ms: 1_000,
            health_check_timeout_ms: 500,
            limits: Limits::default(),
            node: NodeConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a configuration from a TOML file; missing fields take their defaults,
    /// unknown ones are refused.
    pub fn from_file(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("reading {}: {error}", path.display()))?;
        Self::from_toml_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Reads a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// This node's name: `name`, else `n<node_id>`.
    pub fn node_name(&self) -> String {
        if self.name.is_empty() {
            format!("n{}", self.node.node_id)
        } else {
            self.name.clone()
        }
    }

    /// Checks every field, naming the first that is wrong and what it allows.
    pub fn validate(&self) -> Result<(), String> {
        self.node.validate().map_err(|error| error.to_string())?;
        if !(1..=REPLICAS_MAX).contains(&self.namespace_replicas) {
            return Err(format!(
                "namespace_replicas: {} is out of range; allowed 1..={REPLICAS_MAX}",
                self.namespace_replicas
            ));
        }
        if !(10..=60_000).contains(&self.reconcile_interval_ms) {
            return Err(format!(
                "reconcile_interval_ms: {} is out of range; allowed 10..=60000",
                self.reconcile_interval_ms
            ));
        }
        for (field, value, range) in [
            (
                "replica_down_after_ms",
                self.replica_down_after_ms,
                100..=86_400_000,
            ),
            (
                "health_check_interval_ms",
                self.health_check_interval_ms,
                10..=60_000,
            ),
            (
                "health_check_timeout_ms",
                self.health_check_timeout_ms,
                10..=60_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(format!(
                    "{field}: {value} is out of range; allowed {}..={}",
                    range.start(),
                    range.end()
                ));
            }
        }
        // A node name follows the namespace name rules (it is typed in commands).
        check_namespace_name(&self.node_name())
            .map_err(|error| format!("name: {}", error.to_string().replace("namespace ", "")))?;
        if !self.initial_cluster.is_empty() && !self.join.is_empty() {
            return Err(
                "initial_cluster and join are both set: a node either founds a cluster or \
                 joins one"
                    .into(),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for founder in &self.initial_cluster {
            if founder.id == 0 || !ids.insert(founder.id) {
                return Err(format!(
                    "initial_cluster: node id {} is 0 or named twice",
                    founder.id
                ));
            }
            check_namespace_name(&founder.name)
                .map_err(|error| format!("initial_cluster: {error}"))?;
            if !names.insert(founder.name.clone()) {
                return Err(format!(
                    "initial_cluster: the name {:?} is given twice",
                    founder.name
                ));
            }
            if founder.address.ends_with(":0") && self.initial_cluster.len() > 1 {
                return Err(format!(
                    "initial_cluster: {:?} has port 0; founders must know each other's \
                     addresses (port 0 is for a cluster founded by one node, which others join)",
                    founder.name
                ));
            }
            if founder.address.is_empty() || !founder.address.contains(':') {
                return Err(format!(
                    "initial_cluster: {:?} needs an address host:port",
                    founder.name
                ));
            }
        }
        if !self.initial_cluster.is_empty() {
            let me = self
                .initial_cluster
                .iter()
                .find(|founder| founder.id == self.node.node_id)
                .ok_or_else(|| {
                    format!(
                        "initial_cluster does not name this node (node_id {})",
                        self.node.node_id
                    )
                })?;
            if me.name != self.node_name() {
                return Err(format!(
                    "initial_cluster names node {} {:?} but this node's name is {:?}",
                    me.id,
                    me.name,
                    self.node_name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example file parses, names every field, and holds the defaults.
    #[test]
    fn the_example_config_is_the_defaults() {
        let text = include_str!("../../server.example.toml");
        let uncommented: String = text
            .lines()
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|rest| {
                        !rest.ends_with('[')
                            && rest
                                .split_once(" = ")
                                .is_some_and(|(key, _)| !key.contains(' '))
                    })
                    .unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = ServerConfig::from_toml_str(&uncommented).unwrap();
        let mut expected = ServerConfig::default();
        expected.node.node_id = 1;
        assert_eq!(parsed, expected);
        assert_eq!(parsed.validate(), Ok(()));
    }

    // Bad configs name the field and what is allowed.
    #[test]
    fn bad_configs_are_refused_with_the_field() {
        let base = || {
            let mut config = ServerConfig::default();
            config.node.node_id = 1;
            config
        };
        assert_eq!(base().validate(), Ok(()));
        let mut config = base();
        config.namespace_replicas = 9;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("namespace_replicas"));
        let mut config = base();
        config.initial_cluster = vec![Founder::parse("n2=2@a:1").unwrap()];
        assert!(config
            .validate()
            .unwrap_err()
            .contains("does not name this node"));
        let mut config = base();
        config.initial_cluster = vec![Founder::parse("n1=1@a:1").unwrap()];
        config.join = "b:2".into();
        assert!(config.validate().unwrap_err().contains("both set"));
        let mut config = base();
        config.initial_cluster = vec![
            Founder::parse("n1=1@a:0").unwrap(),
            Founder::parse("n2=2@b:1").unwrap(),
        ];
        assert!(config.validate().unwrap_err().contains("port 0"));
        let mut config = base();
        config.name = "Bad Name".into();
        assert!(config.validate().unwrap_err().starts_with("name:"));
        assert!(ServerConfig::from_toml_str("nmae = \"x\"")
            .unwrap_err()
            .contains("unknown field"));
        assert!(Founder::parse("n1@a:1")
            .unwrap_err()
            .contains("NAME=ID@HOST:PORT"));
        assert!(Founder::parse("n1=x@a:1")
            .unwrap_err()
            .contains("not a whole number"));
    }
}
