//! How a node makes the service's state machines for the groups it hosts: the
//! group's spec (kind and description, persisted with the group and handed to every
//! replica, joiners included) says which and with what, so every replica of a
//! namespace runs it with the same limits and exactly-once table bounds from its
//! first entry.

use concord_group::{
    ClientTableLimits, GroupSpec, StateMachine, StateMachineError, StateMachineFactory,
};

use serde::{Deserialize, Serialize};

use crate::command::{decode, encode};
use crate::limits::Limits;
use crate::meta::{Meta, MetaMachine};
use crate::namespace::Namespace;

/// The kind of a namespace's group; its description is a [`NamespaceSpec`].
pub const NAMESPACE_KIND: &str = "concord.namespace";
/// The kind of the `meta` group; its description is a [`MetaSpec`].
pub const META_KIND: &str = "concord.meta";

/// The bounds of a group's exactly-once table, as a spec carries them: they decide
/// what applies, so every replica takes them from the spec, not from its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// [`ClientTableLimits::clients_max`].
    pub clients_max: u32,
    /// [`ClientTableLimits::unanswered_per_client_max`].
    pub unanswered_per_client_max: u32,
}

impl From<ClientTableLimits> for TableSpec {
    fn from(limits: ClientTableLimits) -> TableSpec {
        TableSpec {
            clients_max: limits.clients_max,
            unanswered_per_client_max: limits.unanswered_per_client_max,
        }
    }
}

impl From<TableSpec> for ClientTableLimits {
    fn from(spec: TableSpec) -> ClientTableLimits {
        ClientTableLimits {
            clients_max: spec.clients_max,
            unanswered_per_client_max: spec.unanswered_per_client_max,
        }
    }
}

/// What a namespace's group is born with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSpec {
    /// The namespace's limits.
    pub limits: Limits,
    /// Its exactly-once table's bounds.
    pub table: TableSpec,
}

/// What the `meta` group is born with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaSpec {
    /// The bootstrap state.
    pub meta: Meta,
    /// Its exactly-once table's bounds.
    pub table: TableSpec,
}

/// The spec of a namespace's group.
pub fn namespace_spec(limits: Limits, table: ClientTableLimits) -> GroupSpec {
    GroupSpec {
        kind: NAMESPACE_KIND.to_string(),
        description: encode(&NamespaceSpec {
            limits,
            table: table.into(),
        }),
    }
}

/// The spec of the `meta` group, starting from `meta`.
pub fn meta_spec(meta: Meta, table: ClientTableLimits) -> GroupSpec {
    GroupSpec {
        kind: META_KIND.to_string(),
        description: encode(&MetaSpec {
            meta,
            table: table.into(),
        }),
    }
}

/// Makes namespaces and the meta group from their specs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceFactory;

impl StateMachineFactory for ServiceFactory {
    fn create(
        &self,
        group: u64,
        spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        let unreadable = |what: &str, error: crate::ServiceError| {
            StateMachineError(format!(
                "group {group}: its {what} does not decode: {error}"
            ))
        };
        match spec.kind.as_str() {
            NAMESPACE_KIND => {
                let spec: NamespaceSpec =
                    decode(&spec.description).map_err(|e| unreadable("spec", e))?;
                Ok(Box::new(Namespace::new(spec.limits, spec.table.into())))
            }
            META_KIND => {
                let spec: MetaSpec =
                    decode(&spec.description).map_err(|e| unreadable("spec", e))?;
                Ok(Box::new(MetaMachine::new(spec.meta, spec.table.into())))
            }
            // A node added to a group starts with no kind until a snapshot comes; the
            // snapshot replaces this empty namespace, limits and table included.
            "" => Ok(Box::new(Namespace::new(
                Limits::default(),
                ClientTableLimits::default(),
            ))),
            other => Err(StateMachineError(format!(
                "group {group}: unknown kind {other:?}; this server runs {NAMESPACE_KIND:?} \
                 and {META_KIND:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a namespace made from its spec carries the spec's limits, a meta group
    // its bootstrap state, and an unknown kind is refused by name.
    #[test]
    fn specs_make_the_state_machines_they_describe() {
        let factory = ServiceFactory;
        let limits = Limits {
            value_bytes_max: 7,
            ..Limits::default()
        };
        let table = ClientTableLimits {
            clients_max: 3,
            unanswered_per_client_max: 2,
        };
        let namespace = factory.create(5, &namespace_spec(limits, table)).unwrap();
        let mut snapshot = Vec::new();
        namespace.snapshot(&mut snapshot).unwrap();
        let mut restored = Namespace::new(Limits::default(), ClientTableLimits::default());
        restored.restore(&mut snapshot.as_slice()).unwrap();
        assert_eq!(restored.tree().limits(), &limits);
        assert_eq!(restored.table().limits(), table);
        let meta = Meta::bootstrap(vec![(1, "n1".into(), "a:1".into())], 3);
        let machine = factory.create(1, &meta_spec(meta.clone(), table)).unwrap();
        let queried: Meta = decode(&machine.query(bytes::Bytes::new()).unwrap()).unwrap();
        assert_eq!(queried, meta);
        let error = factory.create(9, &GroupSpec::new("other")).err().unwrap();
        assert!(
            error.to_string().contains("unknown kind \"other\""),
            "{error}"
        );
        assert!(namespace_spec(limits, table).validate().is_ok());
    }
}
