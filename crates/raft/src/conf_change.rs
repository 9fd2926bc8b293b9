//! Membership change requests and their wire encoding inside log entries.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::types::NodeId;

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Make `node` a voter (promotes a learner).
    AddVoter,
    /// Make `node` a learner (demotes a voter, through a joint configuration).
    AddLearner,
    /// Remove `node` from the group.
    Remove,
}

/// A single node's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    /// What happens to the node.
    pub kind: ConfChangeKind,
    /// The node changed.
    pub node: NodeId,
}

/// How a change is carried out (Raft thesis §4.1 single-server vs §4.3 joint consensus).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// Single-step when the change touches at most one voter, else joint with
    /// automatic leave.
    #[default]
    Auto,
    /// Enter a joint configuration and leave it automatically once it commits.
    JointAutoLeave,
    /// Enter a joint configuration and stay until an empty change (`leave_joint`) is
    /// proposed.
    JointExplicit,
}

/// A membership change request. An empty `changes` list leaves a joint configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// How to carry it out.
    pub transition: ConfChangeTransition,
    /// The node changes, applied together.
    pub changes: Vec<ConfChangeSingle>,
}

/// Why an encoded conf change could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed conf change entry: {0}")]
pub struct DecodeError(pub &'static str);

const FORMAT_VERSION: u8 = 1;

impl ConfChange {
    /// A change that adds `node` as a voter.
    pub fn add_voter(node: NodeId) -> Self {
        Self::single(ConfChangeKind::AddVoter, node)
    }

    /// A change that adds `node` as a learner.
    pub fn add_learner(node: NodeId) -> Self {
        Self::single(ConfChangeKind::AddLearner, node)
    }

    /// A change that removes `node`.
    pub fn remove(node: NodeId) -> Self {
        Self::single(ConfChangeKind::Remove, node)
    }

    /// The empty change that leaves a joint configuration.
    pub fn leave_joint() -> Self {
        ConfChange::default()
    }

    fn single(kind: ConfChangeKind, node: NodeId) -> Self {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle { kind, node }],
        }
    }

    /// True for the change that leaves a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Encodes as: version u8, transition u8, count u32, then (kind u8, node u64) each.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(6 + 9 * self.changes.len());
        buf.put_u8(FORMAT_VERSION);
        buf.put_u8(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointAutoLeave => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        buf.put_u32(self.changes.len() as u32);
        for change in &self.changes {
            buf.put_u8(match change.kind {
                ConfChangeKind::AddVoter => 0,
                ConfChangeKind::AddLearner => 1,
                ConfChangeKind::Remove => 2,
            });
            buf.put_u64(change.node);
        }
        buf.freeze()
    }

    /// Decodes what [`ConfChange::encode`] wrote, rejecting anything else.
    pub fn decode(mut data: &[u8]) -> Result<Self, DecodeError> {
        if data.remaining() < 6 {
            return Err(DecodeError("shorter than its 6-byte header"));
        }
        if data.get_u8() != FORMAT_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let transition = match data.get_u8() {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointAutoLeave,
            2 => ConfChangeTransition::JointExplicit,
            _ => return Err(DecodeError("unknown transition")),
        };
        let count = data.get_u32() as usize;
        if data.remaining() != count * 9 {
            return Err(DecodeError("length does not match the change count"));
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match data.get_u8() {
                0 => ConfChangeKind::AddVoter,
                1 => ConfChangeKind::AddLearner,
                2 => ConfChangeKind::Remove,
                _ => return Err(DecodeError("unknown change kind")),
            };
            changes.push(ConfChangeSingle {
                kind,
                node: data.get_u64(),
            });
        }
        Ok(ConfChange {
            transition,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Encoding then decoding gives back the same change, and any strict prefix
        /// of an encoding is rejected rather than misread.
        #[test]
        fn encode_decode_round_trip(nodes in proptest::collection::vec((0u8..3, 1u64..100), 0..8), transition in 0u8..3) {
            let change = ConfChange {
                transition: match transition { 0 => ConfChangeTransition::Auto, 1 => ConfChangeTransition::JointAutoLeave, _ => ConfChangeTransition::JointExplicit },
                changes: nodes.iter().map(|&(kind, node)| ConfChangeSingle {
                    kind: match kind { 0 => ConfChangeKind::AddVoter, 1 => ConfChangeKind::AddLearner, _ => ConfChangeKind::Remove },
                    node,
                }).collect(),
            };
            let encoded = change.encode();
            prop_assert_eq!(ConfChange::decode(&encoded).unwrap(), change);
            for cut in 0..encoded.len() {
                prop_assert!(ConfChange::decode(&encoded[..cut]).is_err());
            }
        }
    }
}
