//! How a node makes the service's state machines for the groups it hosts: the
//! group's spec (kind and description, persisted with the group and handed to every
//! replica, joiners included) says which and with what, so every replica of a
//! namespace runs it with the same limits from its first entry.

use concord_group::{
    ClientTableLimits, GroupSpec, StateMachine, StateMachineError, StateMachineFactory,
};

use crate::command::{decode, encode};
use crate::limits::Limits;
use crate::meta::{Meta, MetaMachine};
use crate::namespace::Namespace;

/// The kind of a namespace's group; its description is the namespace's encoded
/// [`Limits`].
pub const NAMESPACE_KIND: &str = "concord.namespace";
/// The kind of the `meta` group; its description is the encoded bootstrap [`Meta`].
pub const META_KIND: &str = "concord.meta";

/// The spec of a namespace's group.
pub fn namespace_spec(limits: &Limits) -> GroupSpec {
    GroupSpec {
        kind: NAMESPACE_KIND.to_string(),
        description: encode(limits),
    }
}

/// The spec of the `meta` group, starting from `meta`.
pub fn meta_spec(meta: &Meta) -> GroupSpec {
    GroupSpec {
        kind: META_KIND.to_string(),
        description: encode(meta),
    }
}

/// Makes namespaces and the meta group from their specs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceFactory {
    /// Bounds of every group's exactly-once table.
    pub table_limits: ClientTableLimits,
}

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
                let limits: Limits =
                    decode(&spec.description).map_err(|e| unreadable("limits", e))?;
                Ok(Box::new(Namespace::new(limits, self.table_limits)))
            }
            META_KIND => {
                let meta: Meta =
                    decode(&spec.description).map_err(|e| unreadable("bootstrap state", e))?;
                Ok(Box::new(MetaMachine::new(meta, self.table_limits)))
            }
            // A node added to a group starts with no kind until a snapshot comes; the
            // snapshot replaces this empty namespace, limits included.
            "" => Ok(Box::new(Namespace::new(
                Limits::default(),
                self.table_limits,
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
        let factory = ServiceFactory::default();
        let limits = Limits {
            value_bytes_max: 7,
            ..Limits::default()
        };
        let namespace = factory.create(5, &namespace_spec(&limits)).unwrap();
        let mut snapshot = Vec::new();
        namespace.snapshot(&mut snapshot).unwrap();
        let mut restored = Namespace::new(Limits::default(), ClientTableLimits::default());
        restored.restore(&mut snapshot.as_slice()).unwrap();
        assert_eq!(restored.tree().limits(), &limits);
        let meta = Meta::bootstrap(vec![(1, "n1".into(), "a:1".into())], 3);
        let machine = factory.create(1, &meta_spec(&meta)).unwrap();
        let queried: Meta = decode(&machine.query(bytes::Bytes::new()).unwrap()).unwrap();
        assert_eq!(queried, meta);
        let error = factory.create(9, &GroupSpec::new("other")).err().unwrap();
        assert!(
            error.to_string().contains("unknown kind \"other\""),
            "{error}"
        );
        assert!(namespace_spec(&limits).validate().is_ok());
    }
}
