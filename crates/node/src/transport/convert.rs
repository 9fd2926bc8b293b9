//! Conversions between concord_raft's message types and their wire form in
//! `concord_proto::transport`.
//!
//! Encoding cannot fail. Decoding is strict: a peer's bytes are untrusted, so unknown
//! enum values, missing required fields, fields that do not belong to the message's
//! kind, and structurally impossible values (entries that do not follow the append's
//! index, a snapshot chunk past its snapshot's end) are refused with a
//! [`ConvertError`] naming the field. Nothing here panics on any input.

use concord_proto::transport as proto;
use concord_raft::{
    ConfState, Entry, EntryKind, Message, MessageKind, SnapshotChunk, SnapshotMetadata,
};

/// Why a wire message could not be turned into a raft message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An enum field holds a value this node does not know.
    #[error("unknown value {value} in field `{field}`")]
    UnknownEnum {
        /// The field, as a path from the message (`entries.kind`).
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A required field is absent (or an enum field is `UNSPECIFIED`).
    #[error("missing required field `{field}`")]
    Missing {
        /// The field, as a path from the message.
        field: &'static str,
    },
    /// A field is set that the message's kind does not allow.
    #[error("field `{field}` not allowed in a {kind:?} message")]
    Unexpected {
        /// The field, as a path from the message.
        field: &'static str,
        /// The message's kind.
        kind: MessageKind,
    },
    /// A field's value is impossible.
    #[error("invalid field `{field}`: {reason}")]
    Invalid {
        /// The field, as a path from the message.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Encodes a raft message for the wire. Payloads are shared, not copied.
pub fn message_to_proto(message: Message) -> proto::RaftMessage {
    proto::RaftMessage {
        kind: message_kind_to_proto(message.kind) as i32,
        from: message.from,
        to: message.to,
        term: message.term,
        log_term: message.log_term,
        index: message.index,
        entries: message.entries.into_iter().map(entry_to_proto).collect(),
        commit: message.commit,
        reject: message.reject,
        reject_hint: message.reject_hint,
        context: message.context,
        snapshot: message
            .snapshot
            .map(|chunk| snapshot_chunk_to_proto(*chunk)),
    }
}

/// Decodes a wire message, refusing anything malformed.
pub fn message_from_proto(message: proto::RaftMessage) -> Result<Message, ConvertError> {
    let kind = message_kind_from_proto(message.kind)?;
    let snapshot = match (kind, message.snapshot) {
        (MessageKind::Snapshot, Some(chunk)) => Some(Box::new(snapshot_chunk_from_proto(chunk)?)),
        (MessageKind::Snapshot, None) => return Err(ConvertError::Missing { field: "snapshot" }),
        (_, Some(_)) => {
            return Err(ConvertError::Unexpected {
                field: "snapshot",
                kind,
            })
        }
        (_, None) => None,
    };
    if !message.entries.is_empty() && kind != MessageKind::Append {
        return Err(ConvertError::Unexpected {
            field: "entries",
            kind,
        });
    }
    let entries = message
        .entries
        .into_iter()
        .map(entry_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    // Raft paper §5.3: an append carries the entries that directly follow `index`.
    let mut expected_index = message.index;
    for entry in &entries {
        expected_index = expected_index.checked_add(1).ok_or(ConvertError::Invalid {
            field: "entries.index",
            reason: "log index overflows",
        })?;
        if entry.index != expected_index {
            return Err(ConvertError::Invalid {
                field: "entries.index",
                reason: "entries must be consecutive and follow the message's index",
            });
        }
    }
    Ok(Message {
        kind,
        from: message.from,
        to: message.to,
        term: message.term,
        log_term: message.log_term,
        index: message.index,
        entries,
        commit: message.commit,
        reject: message.reject,
        reject_hint: message.reject_hint,
        context: message.context,
        snapshot,
    })
}

/// Encodes a log entry.
pub fn entry_to_proto(entry: Entry) -> proto::Entry {
    proto::Entry {
        term: entry.term,
        index: entry.index,
        kind: match entry.kind {
            EntryKind::Normal => proto::EntryKind::Normal,
            EntryKind::ConfChange => proto::EntryKind::ConfChange,
        } as i32,
        data: entry.data,
    }
}

/// Decodes a log entry, refusing an unknown or missing kind.
pub fn entry_from_proto(entry: proto::Entry) -> Result<Entry, ConvertError> {
    let kind = match proto::EntryKind::try_from(entry.kind) {
        Ok(proto::EntryKind::Normal) => EntryKind::Normal,
        Ok(proto::EntryKind::ConfChange) => EntryKind::ConfChange,
        Ok(proto::EntryKind::Unspecified) => {
            return Err(ConvertError::Missing {
                field: "entries.kind",
            })
        }
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                field: "entries.kind",
                value: entry.kind,
            })
        }
    };
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.data,
    })
}

/// Encodes a membership.
pub fn conf_state_to_proto(conf_state: ConfState) -> proto::ConfState {
    proto::ConfState {
        voters: conf_state.voters,
        learners: conf_state.learners,
        voters_outgoing: conf_state.voters_outgoing,
        learners_next: conf_state.learners_next,
        auto_leave: conf_state.auto_leave,
    }
}

/// Decodes a membership. Every wire value is a valid `ConfState`.
pub fn conf_state_from_proto(conf_state: proto::ConfState) -> ConfState {
    ConfState {
        voters: conf_state.voters,
        learners: conf_state.learners,
        voters_outgoing: conf_state.voters_outgoing,
        learners_next: conf_state.learners_next,
        auto_leave: conf_state.auto_leave,
    }
}

/// Encodes one InstallSnapshot chunk.
pub fn snapshot_chunk_to_proto(chunk: SnapshotChunk) -> proto::SnapshotChunk {
    proto::SnapshotChunk {
        metadata: Some(proto::SnapshotMetadata {
            index: chunk.metadata.index,
            term: chunk.metadata.term,
            conf_state: Some(conf_state_to_proto(chunk.metadata.conf_state)),
        }),
        offset: chunk.offset,
        total_bytes: chunk.total_bytes,
        data: chunk.data,
    }
}

/// Decodes one InstallSnapshot chunk, refusing missing metadata or membership and a
/// chunk that reaches past the snapshot's end.
pub fn snapshot_chunk_from_proto(
    chunk: proto::SnapshotChunk,
) -> Result<SnapshotChunk, ConvertError> {
    let metadata = chunk.metadata.ok_or(ConvertError::Missing {
        field: "snapshot.metadata",
    })?;
    let conf_state = metadata.conf_state.ok_or(ConvertError::Missing {
        field: "snapshot.metadata.conf_state",
    })?;
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    if end.is_none_or(|end| end > chunk.total_bytes) {
        return Err(ConvertError::Invalid {
            field: "snapshot.offset",
            reason: "chunk reaches past the snapshot's total_bytes",
        });
    }
    Ok(SnapshotChunk {
        metadata: SnapshotMetadata {
            index: metadata.index,
            term: metadata.term,
            conf_state: conf_state_from_proto(conf_state),
        },
        offset: chunk.offset,
        total_bytes: chunk.total_bytes,
        data: chunk.data,
    })
}

/// The wire value of a message kind.
pub fn message_kind_to_proto(kind: MessageKind) -> proto::MessageKind {
    use proto::MessageKind as Wire;
    match kind {
        MessageKind::Append => Wire::Append,
        MessageKind::AppendResponse => Wire::AppendResponse,
        MessageKind::RequestVote => Wire::RequestVote,
        MessageKind::RequestVoteResponse => Wire::RequestVoteResponse,
        MessageKind::RequestPreVote => Wire::RequestPreVote,
        MessageKind::RequestPreVoteResponse => Wire::RequestPreVoteResponse,
        MessageKind::Heartbeat => Wire::Heartbeat,
        MessageKind::HeartbeatResponse => Wire::HeartbeatResponse,
        MessageKind::Snapshot => Wire::Snapshot,
        MessageKind::SnapshotResponse => Wire::SnapshotResponse,
        MessageKind::TransferLeader => Wire::TransferLeader,
        MessageKind::TimeoutNow => Wire::TimeoutNow,
        MessageKind::ReadIndex => Wire::ReadIndex,
        MessageKind::ReadIndexResponse => Wire::ReadIndexResponse,
    }
}

/// The message kind of a wire value, refusing unknown values and `UNSPECIFIED`.
pub fn message_kind_from_proto(value: i32) -> Result<MessageKind, ConvertError> {
    use proto::MessageKind as Wire;
    let wire = Wire::try_from(value).map_err(|_| ConvertError::UnknownEnum {
        field: "kind",
        value,
    })?;
    Ok(match wire {
        Wire::Unspecified => return Err(ConvertError::Missing { field: "kind" }),
        Wire::Append => MessageKind::Append,
        Wire::AppendResponse => MessageKind::AppendResponse,
        Wire::RequestVote => MessageKind::RequestVote,
        Wire::RequestVoteResponse => MessageKind::RequestVoteResponse,
        Wire::RequestPreVote => MessageKind::RequestPreVote,
        Wire::RequestPreVoteResponse => MessageKind::RequestPreVoteResponse,
        Wire::Heartbeat => MessageKind::Heartbeat,
        Wire::HeartbeatResponse => MessageKind::HeartbeatResponse,
        Wire::Snapshot => MessageKind::Snapshot,
        Wire::SnapshotResponse => MessageKind::SnapshotResponse,
        Wire::TransferLeader => MessageKind::TransferLeader,
        Wire::TimeoutNow => MessageKind::TimeoutNow,
        Wire::ReadIndex => MessageKind::ReadIndex,
        Wire::ReadIndexResponse => MessageKind::ReadIndexResponse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message as _;

    const KINDS: [MessageKind; 14] = [
        MessageKind::Append,
        MessageKind::AppendResponse,
        MessageKind::RequestVote,
        MessageKind::RequestVoteResponse,
        MessageKind::RequestPreVote,
        MessageKind::RequestPreVoteResponse,
        MessageKind::Heartbeat,
        MessageKind::HeartbeatResponse,
        MessageKind::Snapshot,
        MessageKind::SnapshotResponse,
        MessageKind::TransferLeader,
        MessageKind::TimeoutNow,
        MessageKind::ReadIndex,
        MessageKind::ReadIndexResponse,
    ];

    fn payload() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn ids() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(1u64..1000, 0..5)
    }

    fn conf_state() -> impl Strategy<Value = ConfState> {
        (ids(), ids(), ids(), ids(), any::<bool>()).prop_map(
            |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfState {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
            },
        )
    }

    fn chunk() -> impl Strategy<Value = SnapshotChunk> {
        (
            any::<u64>(),
            any::<u64>(),
            conf_state(),
            0u64..1 << 40,
            payload(),
            0u64..1 << 20,
        )
            .prop_map(
                |(index, term, conf_state, offset, data, extra)| SnapshotChunk {
                    metadata: SnapshotMetadata {
                        index,
                        term,
                        conf_state,
                    },
                    offset,
                    total_bytes: offset + data.len() as u64 + extra,
                    data,
                },
            )
    }

    /// Any message the core could produce: entries only on appends, following `index`;
    /// a chunk exactly on snapshot messages.
    fn message() -> impl Strategy<Value = Message> {
        (
            proptest::sample::select(KINDS.to_vec()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            0u64..u64::MAX / 2,
            proptest::collection::vec((any::<u64>(), any::<bool>(), payload()), 0..4),
            (any::<u64>(), any::<bool>(), any::<u64>(), payload()),
            chunk(),
        )
            .prop_map(
                |(kind, (from, to, term, log_term), index, entries, rest, chunk)| {
                    let (commit, reject, reject_hint, context) = rest;
                    let entries = if kind == MessageKind::Append {
                        entries
                            .into_iter()
                            .zip(index + 1..)
                            .map(|((term, conf_change, data), index)| Entry {
                                term,
                                index,
                                kind: if conf_change {
                                    EntryKind::ConfChange
                                } else {
                                    EntryKind::Normal
                                },
                                data,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Message {
                        kind,
                        from,
                        to,
                        term,
                        log_term,
                        index,
                        entries,
                        commit,
                        reject,
                        reject_hint,
                        context,
                        snapshot: (kind == MessageKind::Snapshot).then(|| Box::new(chunk)),
                    }
                },
            )
    }

    fn decode_wire(bytes: &[u8]) -> Result<Message, String> {
        let wire = proto::RaftMessage::decode(bytes).map_err(|error| error.to_string())?;
        message_from_proto(wire).map_err(|error| error.to_string())
    }

    proptest! {
        /// Every message the core can produce survives encoding to the wire, protobuf
        /// serialization, and decoding, unchanged.
        #[test]
        fn message_round_trips(message in message()) {
            let wire = message_to_proto(message.clone()).encode_to_vec();
            prop_assert_eq!(decode_wire(&wire), Ok(message));
        }

        /// Arbitrary bytes never panic the decoder: they either decode to a message
        /// that re-encodes identically or are refused with an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(message) = decode_wire(&bytes) {
                let again = message_to_proto(message.clone()).encode_to_vec();
                prop_assert_eq!(decode_wire(&again), Ok(message));
            }
        }

        /// A kind outside the known range is refused by name and value.
        #[test]
        fn unknown_kind_is_refused(message in message(), value in 15i32..i32::MAX) {
            let mut wire = message_to_proto(message);
            wire.kind = value;
            prop_assert_eq!(
                message_from_proto(wire),
                Err(ConvertError::UnknownEnum { field: "kind", value })
            );
        }
    }

    fn heartbeat() -> proto::RaftMessage {
        message_to_proto(Message::new(MessageKind::Heartbeat, 1, 2, 3))
    }

    fn snapshot_message() -> proto::RaftMessage {
        let mut message = Message::new(MessageKind::Snapshot, 1, 2, 3);
        message.snapshot = Some(Box::new(SnapshotChunk {
            metadata: SnapshotMetadata {
                index: 10,
                term: 2,
                conf_state: ConfState::with_voters([1, 2, 3]),
            },
            offset: 0,
            total_bytes: 4,
            data: Bytes::from_static(b"data"),
        }));
        message_to_proto(message)
    }

    /// An unspecified kind reads as a missing field, not as some default kind.
    #[test]
    fn unspecified_kind_is_missing() {
        let mut wire = heartbeat();
        wire.kind = 0;
        assert_eq!(
            message_from_proto(wire),
            Err(ConvertError::Missing { field: "kind" })
        );
        assert_eq!(
            message_from_proto(proto::RaftMessage::default())
                .unwrap_err()
                .to_string(),
            "missing required field `kind`"
        );
    }

    /// Entry kinds are checked like message kinds: unknown and unspecified refused.
    #[test]
    fn bad_entry_kinds_are_refused() {
        let mut append = Message::new(MessageKind::Append, 1, 2, 3);
        append.index = 4;
        append.entries.push(Entry {
            term: 3,
            index: 5,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        });
        let mut wire = message_to_proto(append);
        wire.entries[0].kind = 7;
        assert_eq!(
            message_from_proto(wire.clone()),
            Err(ConvertError::UnknownEnum {
                field: "entries.kind",
                value: 7
            })
        );
        wire.entries[0].kind = 0;
        assert_eq!(
            message_from_proto(wire),
            Err(ConvertError::Missing {
                field: "entries.kind"
            })
        );
    }

    /// Entries that skip an index, entries on a non-append message, and index
    /// overflow are refused: the core may rely on appends being contiguous.
    #[test]
    fn misplaced_entries_are_refused() {
        let entry = |index| proto::Entry {
            term: 1,
            index,
            kind: proto::EntryKind::Normal as i32,
            data: Bytes::new(),
        };
        let mut append = heartbeat();
        append.kind = proto::MessageKind::Append as i32;
        append.index = 4;
        append.entries = vec![entry(5), entry(7)];
        assert!(matches!(
            message_from_proto(append.clone()),
            Err(ConvertError::Invalid {
                field: "entries.index",
                ..
            })
        ));
        append.index = u64::MAX;
        append.entries = vec![entry(0)];
        assert!(matches!(
            message_from_proto(append),
            Err(ConvertError::Invalid {
                field: "entries.index",
                ..
            })
        ));
        let mut heartbeat_with_entries = heartbeat();
        heartbeat_with_entries.entries = vec![entry(1)];
        assert_eq!(
            message_from_proto(heartbeat_with_entries),
            Err(ConvertError::Unexpected {
                field: "entries",
                kind: MessageKind::Heartbeat
            })
        );
    }

    /// A snapshot message needs its chunk, the chunk its metadata, the metadata its
    /// membership; a chunk past its snapshot's end and a chunk on another kind are
    /// refused.
    #[test]
    fn snapshot_fields_are_checked() {
        assert!(message_from_proto(snapshot_message()).is_ok());

        let mut no_chunk = snapshot_message();
        no_chunk.snapshot = None;
        assert_eq!(
            message_from_proto(no_chunk),
            Err(ConvertError::Missing { field: "snapshot" })
        );

        let mut no_metadata = snapshot_message();
        no_metadata.snapshot.as_mut().unwrap().metadata = None;
        assert_eq!(
            message_from_proto(no_metadata),
            Err(ConvertError::Missing {
                field: "snapshot.metadata"
            })
        );

        let mut no_conf_state = snapshot_message();
        no_conf_state
            .snapshot
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .conf_state = None;
        assert_eq!(
            message_from_proto(no_conf_state),
            Err(ConvertError::Missing {
                field: "snapshot.metadata.conf_state"
            })
        );

        let mut past_end = snapshot_message();
        past_end.snapshot.as_mut().unwrap().offset = u64::MAX - 1;
        assert!(matches!(
            message_from_proto(past_end),
            Err(ConvertError::Invalid {
                field: "snapshot.offset",
                ..
            })
        ));

        let mut stray_chunk = heartbeat();
        stray_chunk.snapshot = snapshot_message().snapshot;
        assert_eq!(
            message_from_proto(stray_chunk),
            Err(ConvertError::Unexpected {
                field: "snapshot",
                kind: MessageKind::Heartbeat
            })
        );
    }
}
