//! The `meta` namespace's state: the cluster's nodes and where every namespace
//! lives, kept consistently by its own raft group (no gossip). Pure: the server's
//! reconciler reads it, decides with [`Meta::plan_repairs`], and proposes commands;
//! time enters only as values in commands.
//!
//! A namespace is one raft group, created on chosen nodes or, by default, on the
//! `replicas` up nodes hosting the fewest namespaces (ties by id, so every replica
//! chooses alike). When a node leaves or stays down past the configured time, each
//! namespace it hosted is given a replacement on another up node (the server adds it
//! as a learner, promotes it once caught up, then removes the lost one, and records
//! the new members here).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;
use concord_group::{
    ApplyContext, ClientTable, ClientTableLimits, StateMachine, StateMachineError,
};
use concord_raft::NodeId;
use serde::{Deserialize, Serialize};

use crate::command::{decode, encode};
use crate::limits::Limits;

/// The reserved namespace that holds this state.
pub const META: &str = "meta";
/// The namespace every cluster has from bootstrap.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The raft group of `meta`.
pub const META_GROUP: u64 = 1;
/// The raft group of `default`.
pub const DEFAULT_GROUP: u64 = 2;
/// Longest namespace name, in bytes.
pub const NAMESPACE_NAME_BYTES_MAX: usize = 64;
/// Most replicas a namespace may ask for.
pub const REPLICAS_MAX: u32 = 7;

/// What a node is to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name (for people; unique).
    pub name: String,
    /// Where its API listens (host:port).
    pub address: String,
    /// Up, or down since when.
    pub health: Health,
}

/// Whether a node is reachable, as the meta leader last recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Reachable.
    Up,
    /// Unreachable since this time (milliseconds since the Unix epoch, the leader's
    /// clock when it noticed).
    DownSince(u64),
}

/// A namespace and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Its raft group.
    pub group: u64,
    /// The nodes hosting it (its voters).
    pub members: Vec<NodeId>,
    /// Its limits, fixed at creation.
    pub limits: Limits,
    /// Membership changes recorded since creation ([`MetaCommand::SetMembers`]).
    /// While 0 the members are the founders, who start the group by bootstrapping
    /// it together; once a member was replaced, a node new to the group joins it
    /// (learner, caught up, promoted) instead, so no second group is ever founded.
    pub changes: u64,
}

/// A change to the meta state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A node joined (or came back with a new address).
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its name.
        name: String,
        /// Where its API listens.
        address: String,
    },
    /// A node became reachable, or stopped being at `at` (ms since the epoch).
    SetHealth {
        /// The node.
        id: NodeId,
        /// Up, or down since when.
        health: Health,
    },
    /// A node left the cluster for good.
    RemoveNode {
        /// The node.
        id: NodeId,
    },
    /// Creates a namespace.
    CreateNamespace {
        /// Its name.
        name: String,
        /// The nodes to host it; empty: `replicas` nodes chosen by load.
        nodes: Vec<NodeId>,
        /// How many nodes, when none are named.
        replicas: u32,
        /// Its limits.
        limits: Limits,
    },
    /// Deletes a namespace.
    DeleteNamespace {
        /// Its name.
        name: String,
    },
    /// Records a namespace's new members (after a replacement), if it is still the
    /// same namespace (`group`) with the members the change started from (`from`):
    /// a namespace deleted and created again, or a change another reconciler made
    /// first, refuses it.
    SetMembers {
        /// The namespace.
        name: String,
        /// Its raft group.
        group: u64,
        /// Its members as the change found them.
        from: Vec<NodeId>,
        /// Its members now.
        members: Vec<NodeId>,
    },
}

/// Why a meta command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    /// The namespace name is not allowed.
    #[error("namespace name {name:?}: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is allowed.
        why: String,
    },
    /// A namespace of that name exists.
    #[error("namespace {0:?} exists already")]
    NamespaceExists(String),
    /// No namespace of that name.
    #[error("no namespace {0:?}")]
    NoSuchNamespace(String),
    /// `meta` cannot be deleted or recreated.
    #[error("the meta namespace cannot be created or deleted")]
    Meta,
    /// A node named is unknown.
    #[error("node {0} is not a member of the cluster")]
    NoSuchNode(NodeId),
    /// A node named is down.
    #[error("node {0} is down; a namespace can only be placed on up nodes")]
    NodeDown(NodeId),
    /// Not enough up nodes for the replicas asked.
    #[error("{wanted} replicas asked but only {up} nodes are up")]
    NotEnoughNodes {
        /// Replicas asked.
        wanted: u32,
        /// Nodes up.
        up: u32,
    },
    /// Replicas out of range, or a node named twice.
    #[error("invalid placement: {0}")]
    InvalidPlacement(String),
    /// Another node has that name.
    #[error("node name {name:?} is taken by node {by}")]
    NameTaken {
        /// The name.
        name: String,
        /// The node that has it.
        by: NodeId,
    },
}

/// The replacement of one lost member of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The namespace.
    pub namespace: String,
    /// Its raft group.
    pub group: u64,
    /// The member lost (left, or down too long).
    pub lost: NodeId,
    /// The up node to take its place.
    pub replacement: NodeId,
}

/// The meta state. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    nodes: BTreeMap<NodeId, NodeRecord>,
    namespaces: BTreeMap<String, NamespaceRecord>,
    /// The group the next namespace gets.
    // Invariant: above every namespace's group, and above META_GROUP and DEFAULT_GROUP.
    next_group: u64,
}

/// Checks a namespace name: 1 to 64 of a-z, 0-9, `-` and `_`, starting with a
/// letter.
pub fn check_namespace_name(name: &str) -> Result<(), MetaError> {
    let invalid = |why: &str| MetaError::InvalidName {
        name: name.chars().take(100).collect(),
        why: why.to_string(),
    };
    if name.is_empty() || name.len() > NAMESPACE_NAME_BYTES_MAX {
        return Err(invalid("a name is 1 to 64 bytes"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(invalid("a name starts with a letter a-z"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(invalid("a name holds only a-z, 0-9, '-' and '_'"));
    }
    Ok(())
}

impl Meta {
    /// The state a cluster bootstraps with: its founding nodes, and `default` on the
    /// first `replicas` of them (by load, as any namespace).
    pub fn bootstrap(founders: Vec<(NodeId, String, String)>, replicas: u32) -> Meta {
        let mut meta = Meta {
            next_group: DEFAULT_GROUP + 1,
            ..Meta::default()
        };
        for (id, name, address) in founders {
            meta.nodes.insert(
                id,
                NodeRecord {
                    name,
                    address,
                    health: Health::Up,
                },
            );
        }
        let members = meta.choose(replicas.min(meta.nodes.len() as u32), &[]);
        meta.namespaces.insert(
            DEFAULT_NAMESPACE.to_string(),
            NamespaceRecord {
                group: DEFAULT_GROUP,
                members,
                limits: Limits::default(),
                changes: 0,
            },
        );
        meta
    }

    /// The nodes.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeRecord> {
        &self.nodes
    }

    /// The group the next namespace gets: every group a namespace ever had is below
    /// it.
    pub fn next_group(&self) -> u64 {
        self.next_group
    }

    /// The namespaces (not `meta`).
    pub fn namespaces(&self) -> &BTreeMap<String, NamespaceRecord> {
        &self.namespaces
    }

    /// The namespace hosted by raft group `group`.
    pub fn namespace_of_group(&self, group: u64) -> Option<(&str, &NamespaceRecord)> {
        self.namespaces
            .iter()
            .find(|(_, record)| record.group == group)
            .map(|(name, record)| (name.as_str(), record))
    }

    /// Namespaces each node hosts.
    fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|&id| (id, 0)).collect();
        for record in self.namespaces.values() {
            for member in &record.members {
                *load.entry(*member).or_default() += 1;
            }
        }
        load
    }

    /// `count` up nodes not in `excluded`, least loaded first, ties by id.
    fn choose(&self, count: u32, excluded: &[NodeId]) -> Vec<NodeId> {
        let load = self.load();
        let mut candidates: Vec<(usize, NodeId)> = self
            .nodes
            .iter()
            .filter(|(id, record)| record.health == Health::Up && !excluded.contains(id))
            .map(|(&id, _)| (load[&id], id))
            .collect();
        candidates.sort();
        candidates
            .into_iter()
            .take(count as usize)
            .map(|(_, id)| id)
            .collect()
    }

    /// Applies a command: what it changed (the namespace created, say), or why not.
    pub fn apply(&mut self, command: &MetaCommand) -> Result<Option<NamespaceRecord>, MetaError> {
        match command {
            MetaCommand::AddNode { id, name, address } => {
                if let Some((&by, _)) = self
                    .nodes
                    .iter()
                    .find(|(other, record)| **other != *id && record.name == *name)
                {
                    return Err(MetaError::NameTaken {
                        name: name.clone(),
                        by,
                    });
                }
                self.nodes.insert(
                    *id,
                    NodeRecord {
                        name: name.clone(),
                        address: address.clone(),
                        health: Health::Up,
                    },
                );
                Ok(None)
            }
            MetaCommand::SetHealth { id, health } => {
                let record = self.nodes.get_mut(id).ok_or(MetaError::NoSuchNode(*id))?;
                // A node already down keeps the time it went down.
                if !(matches!(health, Health::DownSince(_))
                    && matches!(record.health, Health::DownSince(_)))
                {
                    record.health = *health;
                }
                Ok(None)
            }
            MetaCommand::RemoveNode { id } => {
                self.nodes.remove(id).ok_or(MetaError::NoSuchNode(*id))?;
                Ok(None)
            }
            MetaCommand::CreateNamespace {
                name,
                nodes,
                replicas,
                limits,
            } => {
                if name == META {
                    return Err(MetaError::Meta);
                }
                check_namespace_name(name)?;
                if self.namespaces.contains_key(name) {
                    return Err(MetaError::NamespaceExists(name.clone()));
                }
                let members = if nodes.is_empty() {
                    if *replicas == 0 || *replicas > REPLICAS_MAX {
                        return Err(MetaError::InvalidPlacement(format!(
                            "replicas is 1 to {REPLICAS_MAX}, not {replicas}"
                        )));
                    }
                    let members = self.choose(*replicas, &[]);
                    if members.len() < *replicas as usize {
                        return Err(MetaError::NotEnoughNodes {
                            wanted: *replicas,
                            up: members.len() as u32,
                        });
                    }
                    members
                } else {
                    let mut members = nodes.clone();
                    members.sort();
                    members.dedup();
                    if members.len() != nodes.len() || members.len() > REPLICAS_MAX as usize {
                        return Err(MetaError::InvalidPlacement(format!(
                            "name 1 to {REPLICAS_MAX} distinct nodes, not {nodes:?}"
                        )));
                    }
                    for id in &members {
                        match self.nodes.get(id) {
                            None => return Err(MetaError::NoSuchNode(*id)),
                            Some(record) if record.health != Health::Up => {
                                return Err(MetaError::NodeDown(*id))
                            }
                            Some(_) => {}
                        }
                    }
                    members
                };
                let record = NamespaceRecord {
                    group: self.next_group,
                    members,
                    limits: *limits,
                    changes: 0,
                };
                self.next_group += 1;
                self.namespaces.insert(name.clone(), record.clone());
                Ok(Some(record))
            }
            MetaCommand::DeleteNamespace { name } => {
                if name == META {
                    return Err(MetaError::Meta);
                }
                self.namespaces
                    .remove(name)
                    .map(Some)
                    .ok_or_else(|| MetaError::NoSuchNamespace(name.clone()))
            }
            MetaCommand::SetMembers {
                name,
                group,
                from,
                members,
            } => {
                let record = self
                    .namespaces
                    .get(name)
                    .filter(|record| record.group == *group)
                    .ok_or_else(|| MetaError::NoSuchNamespace(name.clone()))?;
                if record.members != *from {
                    return Err(MetaError::InvalidPlacement(format!(
                        "namespace {name:?} has members {:?}, not {from:?}: changed since",
                        record.members
                    )));
                }
                let mut sorted = members.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != members.len()
                    || members.is_empty()
                    || members.len() > REPLICAS_MAX as usize
                {
                    return Err(MetaError::InvalidPlacement(format!(
                        "name 1 to {REPLICAS_MAX} distinct nodes, not {members:?}"
                    )));
                }
                if let Some(unknown) = members.iter().find(|id| !self.nodes.contains_key(id)) {
                    return Err(MetaError::NoSuchNode(*unknown));
                }
                let record = self.namespaces.get_mut(name).expect("found above");
                record.members = members.clone();
                record.changes += 1;
                Ok(Some(record.clone()))
            }
        }
    }

    /// The replacements due at `now_ms` (milliseconds since the epoch): for every
    /// namespace member that left the cluster or has been down for `down_after_ms`
    /// or more, an up node not already a member, least loaded first. A member with no
    /// possible replacement is left alone (the namespace runs short until a node
    /// comes back or joins). At most one repair per namespace per plan; the caller
    /// checks that the last change was carried out before proposing the next.
    ///
    /// A namespace whose members are mostly down (one of one, two of three) is
    /// left alone: its group cannot change its membership without a majority, and
    /// a replacement could only ever reach the few, so it waits for its nodes to
    /// come back (or for an operator's forced recovery).
    pub fn plan_repairs(&self, now_ms: u64, down_after_ms: u64) -> Vec<Repair> {
        let up = |id: &NodeId| {
            self.nodes
                .get(id)
                .is_some_and(|record| record.health == Health::Up)
        };
        let lost = |id: &NodeId| match self.nodes.get(id) {
            None => true,
            Some(record) => match record.health {
                Health::Up => false,
                Health::DownSince(since) => now_ms.saturating_sub(since) >= down_after_ms,
            },
        };
        let mut planned = self.clone();
        let mut repairs = Vec::new();
        for (name, record) in &self.namespaces {
            let Some(&gone) = record.members.iter().find(|id| lost(id)) else {
                continue;
            };
            let up_members = record.members.iter().filter(|id| up(id)).count();
            if up_members <= record.members.len() / 2 {
                continue;
            }
            let Some(&replacement) = planned.choose(1, &record.members).first() else {
                continue;
            };
            // Count the planned member against the next choices.
            let entry = planned.namespaces.get_mut(name).expect("same namespaces");
            entry.members.push(replacement);
            repairs.push(Repair {
                namespace: name.clone(),
                group: record.group,
                lost: gone,
                replacement,
            });
        }
        repairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: u64) -> Meta {
        Meta::bootstrap(
            (1..=nodes)
                .map(|id| (id, format!("n{id}"), format!("127.0.0.1:{}", 7000 + id)))
                .collect(),
            3,
        )
    }

    fn create(name: &str, nodes: Vec<NodeId>) -> MetaCommand {
        MetaCommand::CreateNamespace {
            name: name.into(),
            nodes,
            replicas: 3,
            limits: Limits::default(),
        }
    }

    // Proves default placement spreads namespaces over the least loaded up nodes,
    // deterministically, and named placement is checked node by node.
    #[test]
    fn namespaces_are_placed_on_the_least_loaded_up_nodes() {
        let mut meta = cluster(5);
        assert_eq!(meta.namespaces()[DEFAULT_NAMESPACE].members, [1, 2, 3]);
        let a = meta.apply(&create("a", vec![])).unwrap().unwrap();
        assert_eq!((a.group, a.members), (DEFAULT_GROUP + 1, vec![4, 5, 1]));
        meta.apply(&MetaCommand::SetHealth {
            id: 2,
            health: Health::DownSince(1000),
        })
        .unwrap();
        let b = meta.apply(&create("b", vec![])).unwrap().unwrap();
        assert_eq!(b.members, [3, 4, 5]);
        assert_eq!(
            meta.apply(&create("c", vec![1, 2])),
            Err(MetaError::NodeDown(2))
        );
        assert_eq!(
            meta.apply(&create("c", vec![1, 9])),
            Err(MetaError::NoSuchNode(9))
        );
        assert!(matches!(
            meta.apply(&create("c", vec![1, 1])),
            Err(MetaError::InvalidPlacement(_))
        ));
        assert_eq!(
            meta.apply(&MetaCommand::CreateNamespace {
                name: "c".into(),
                nodes: vec![],
                replicas: 5,
                limits: Limits::default()
            }),
            Err(MetaError::NotEnoughNodes { wanted: 5, up: 4 })
        );
        assert_eq!(
            meta.apply(&create("a", vec![])),
            Err(MetaError::NamespaceExists("a".into()))
        );
        assert_eq!(meta.apply(&create("meta", vec![])), Err(MetaError::Meta));
        assert_eq!(
            meta.apply(&MetaCommand::DeleteNamespace {
                name: "meta".into()
            }),
            Err(MetaError::Meta)
        );
        for (bad, why) in [
            ("", "1 to 64"),
            ("9a", "starts with a letter"),
            ("a.b", "only a-z"),
            ("A", "starts with a letter"),
        ] {
            let error = meta.apply(&create(bad, vec![])).unwrap_err().to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    // Proves a member down past the limit, or gone, gets one replacement per
    // namespace on an up non-member, spread by load; one down briefly does not.
    #[test]
    fn lost_members_are_replaced_on_other_up_nodes() {
        let mut meta = cluster(5);
        meta.apply(&create("a", vec![1, 2, 3])).unwrap();
        meta.apply(&MetaCommand::SetHealth {
            id: 2,
            health: Health::DownSince(10_000),
        })
        .unwrap();
        assert_eq!(meta.plan_repairs(10_500, 1000), vec![]);
        let repairs = meta.plan_repairs(11_000, 1000);
        assert_eq!(
            repairs,
            vec![
                Repair {
                    namespace: "a".into(),
                    group: DEFAULT_GROUP + 1,
                    lost: 2,
                    replacement: 4,
                },
                Repair {
                    namespace: "default".into(),
                    group: DEFAULT_GROUP,
                    lost: 2,
                    replacement: 5,
                },
            ]
        );
        // Down again later keeps the first time; up again cancels.
        meta.apply(&MetaCommand::SetHealth {
            id: 2,
            health: Health::DownSince(10_900),
        })
        .unwrap();
        assert_eq!(meta.plan_repairs(11_000, 1000).len(), 2);
        meta.apply(&MetaCommand::SetHealth {
            id: 2,
            health: Health::Up,
        })
        .unwrap();
        assert_eq!(meta.plan_repairs(99_000, 1000), vec![]);
        // A node that left is replaced at once; with no spare node, nothing is planned.
        meta.apply(&MetaCommand::RemoveNode { id: 3 }).unwrap();
        assert_eq!(meta.plan_repairs(0, 1000).len(), 2);
        let mut small = cluster(3);
        small.apply(&MetaCommand::RemoveNode { id: 3 }).unwrap();
        assert_eq!(small.plan_repairs(0, 1000), vec![]);
    }

    // Proves a namespace that lost its majority, or its only replica, is not
    // repaired: its group could not carry the change out, and the replacement
    // could never reach the data.
    #[test]
    fn a_namespace_without_a_majority_up_is_left_to_wait() {
        let mut meta = cluster(6);
        meta.apply(&create("a", vec![1, 2, 3])).unwrap();
        meta.apply(&MetaCommand::CreateNamespace {
            name: "solo".into(),
            nodes: vec![4],
            replicas: 1,
            limits: Limits::default(),
        })
        .unwrap();
        for id in [2, 3, 4] {
            meta.apply(&MetaCommand::SetHealth {
                id,
                health: Health::DownSince(0),
            })
            .unwrap();
        }
        // `a` has 1 of 3 up, `solo` 0 of 1, `default` (1, 2, 3) 1 of 3.
        assert_eq!(meta.plan_repairs(60_000, 1000), vec![]);
        meta.apply(&MetaCommand::SetHealth {
            id: 3,
            health: Health::Up,
        })
        .unwrap();
        let planned: Vec<(String, NodeId)> = meta
            .plan_repairs(60_000, 1000)
            .into_iter()
            .map(|repair| (repair.namespace, repair.lost))
            .collect();
        assert_eq!(planned, [("a".to_string(), 2), ("default".to_string(), 2)]);
    }

    // Proves a membership record applies only to the namespace and members it was
    // planned from, and only with known, distinct nodes.
    #[test]
    fn set_members_is_a_compare_and_set() {
        let mut meta = cluster(4);
        let group = meta.namespaces()[DEFAULT_NAMESPACE].group;
        let set = |group, from: Vec<NodeId>, members: Vec<NodeId>| MetaCommand::SetMembers {
            name: DEFAULT_NAMESPACE.into(),
            group,
            from,
            members,
        };
        assert_eq!(
            meta.apply(&set(group + 9, vec![1, 2, 3], vec![1, 2, 4])),
            Err(MetaError::NoSuchNamespace(DEFAULT_NAMESPACE.into()))
        );
        assert!(meta.apply(&set(group, vec![1, 2], vec![1, 2, 4])).is_err());
        assert!(meta
            .apply(&set(group, vec![1, 2, 3], vec![1, 1, 4]))
            .is_err());
        assert_eq!(
            meta.apply(&set(group, vec![1, 2, 3], vec![1, 2, 9])),
            Err(MetaError::NoSuchNode(9))
        );
        let record = meta
            .apply(&set(group, vec![1, 2, 3], vec![1, 2, 4]))
            .unwrap()
            .unwrap();
        assert_eq!(record.members, [1, 2, 4]);
        // Refusals changed nothing; the change is counted (no more founding).
        assert_eq!(record.changes, 1);
        // The same change planned twice applies once.
        assert!(meta
            .apply(&set(group, vec![1, 2, 3], vec![1, 2, 4]))
            .is_err());
    }

    // Proves node names stay unique and a returning node may keep its own.
    #[test]
    fn node_names_are_unique() {
        let mut meta = cluster(2);
        assert_eq!(
            meta.apply(&MetaCommand::AddNode {
                id: 3,
                name: "n1".into(),
                address: "x:1".into()
            }),
            Err(MetaError::NameTaken {
                name: "n1".into(),
                by: 1
            })
        );
        meta.apply(&MetaCommand::AddNode {
            id: 1,
            name: "n1".into(),
            address: "y:2".into(),
        })
        .unwrap();
        assert_eq!(meta.nodes()[&1].address, "y:2");
    }
}

/// The `meta` namespace as a raft group's state machine: [`Meta`] with the
/// exactly-once table. Commands are encoded [`MetaCommand`]s answering an encoded
/// `Result<Option<NamespaceRecord>, MetaError>`; any query answers the whole encoded
/// [`Meta`] (it is small: nodes and namespaces, not data).
#[derive(Debug)]
pub struct MetaMachine {
    meta: Meta,
    table: ClientTable,
}

impl MetaMachine {
    /// A meta group starting from `meta` (its bootstrap state).
    pub fn new(meta: Meta, table_limits: ClientTableLimits) -> MetaMachine {
        MetaMachine {
            meta,
            table: ClientTable::new(table_limits),
        }
    }

    /// The state.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl StateMachine for MetaMachine {
    fn apply(
        &mut self,
        _context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let result: Result<Option<NamespaceRecord>, MetaError> = match decode(&command) {
            Ok(command) => self.meta.apply(&command),
            Err(error) => Err(MetaError::InvalidPlacement(format!(
                "not a meta command: {error}"
            ))),
        };
        Ok(encode(&result))
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(encode(&self.meta))
    }

    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        self.table.write_to(sink)?;
        sink.write_all(&encode(&self.meta))?;
        Ok(())
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let table = ClientTable::read_from(source)
            .map_err(|error| StateMachineError(format!("reading the client table: {error}")))?;
        let mut bytes = Vec::new();
        source.read_to_end(&mut bytes)?;
        let meta = decode(&bytes)
            .map_err(|error| StateMachineError(format!("reading the meta state: {error}")))?;
        self.table = table;
        self.meta = meta;
        Ok(())
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        Some(&mut self.table)
    }
}

#[cfg(test)]
mod machine_tests {
    use concord_group::{apply_payload, EntryPayload};

    use super::*;

    // Proves the meta group applies encoded commands, refuses bytes that are not
    // one identically, and round-trips its state through a snapshot.
    #[test]
    fn the_meta_group_applies_commands_and_snapshots() {
        let founders = vec![(1, "n1".to_string(), "a:1".to_string())];
        let mut machine = MetaMachine::new(Meta::bootstrap(founders, 3), Default::default());
        let mut events = Vec::new();
        let command = encode(&MetaCommand::CreateNamespace {
            name: "x".into(),
            nodes: vec![],
            replicas: 1,
            limits: Limits::default(),
        });
        let answer = apply_payload(
            &mut machine,
            META_GROUP,
            (5, 1),
            EntryPayload::Command(command),
            &mut events,
        )
        .unwrap()
        .unwrap()
        .unwrap();
        let created: Result<Option<NamespaceRecord>, MetaError> = decode(&answer).unwrap();
        assert_eq!(created.unwrap().unwrap().members, [1]);
        let answer = apply_payload(
            &mut machine,
            META_GROUP,
            (6, 1),
            EntryPayload::Command(Bytes::from_static(b"junk")),
            &mut events,
        )
        .unwrap()
        .unwrap()
        .unwrap();
        let refused: Result<Option<NamespaceRecord>, MetaError> = decode(&answer).unwrap();
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("not a meta command"));
        let mut snapshot = Vec::new();
        machine.snapshot(&mut snapshot).unwrap();
        let mut restored = MetaMachine::new(Meta::default(), Default::default());
        restored.restore(&mut snapshot.as_slice()).unwrap();
        assert_eq!(restored.meta(), machine.meta());
        let queried: Meta = decode(&restored.query(Bytes::new()).unwrap()).unwrap();
        assert_eq!(&queried, machine.meta());
        assert!(queried.namespaces().contains_key("x"));
    }
}
