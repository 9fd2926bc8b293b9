//! How a group frames what it puts in its log and in its snapshots.
//!
//! **Entries** (format version 1). A normal entry's data starts with a tag byte:
//!
//! | tag | payload |
//! |---|---|
//! | (empty data) | a leader's no-op |
//! | [`TAG_COMMAND`] 1 | a command for the state machine |
//! | [`TAG_ADDRESS`] 2 | a member's address: node id u64 big-endian, then UTF-8 |
//! | [`TAG_REQUEST`] 3 | an exactly-once command: client u64, sequence u64, first unanswered u64 (big-endian), then the command |
//! | [`TAG_REGISTER`] 4 | registers a client with the exactly-once table; nothing follows |
//!
//! An entry with any other tag was written by a newer version: a replica that cannot
//! read it stops the group rather than apply it differently from the others.
//!
//! **Snapshots.** A snapshot's data is a header, then the state machine's own bytes:
//! `[format version u8 = 2][has_state u8][kind length u16][kind UTF-8]
//! [description length u32][description][address count u32]` then per address
//! `[node u64][length u32][UTF-8]`, then (when `has_state` is 1) the state machine's
//! snapshot to the end. Version 1 (written before groups had a kind) has no kind and
//! description. Empty data is a bootstrap snapshot made by `Log::bootstrap_group`: no
//! addresses, the group's initial state.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_raft::NodeId;
use concord_types::RequestId;

/// Tag of an entry carrying a command.
pub const TAG_COMMAND: u8 = 1;
/// Tag of an entry carrying a member's address.
pub const TAG_ADDRESS: u8 = 2;
/// Tag of an entry carrying an exactly-once command.
pub const TAG_REQUEST: u8 = 3;
/// Tag of an entry registering a client.
pub const TAG_REGISTER: u8 = 4;

/// The snapshot header version this code writes.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;
/// Longest address accepted, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 1024;
/// Longest group kind, in bytes.
pub const KIND_BYTES_MAX: usize = 64;
/// Longest group description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 64 * 1024;

/// Members' addresses, by node id.
pub type Addresses = BTreeMap<NodeId, String>;

/// What a group is: a kind (which state machine runs it) and a small description
/// the state machine is built from. Fixed when the group is created, kept in every
/// snapshot, and handed to the state machine factory at creation and at restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupSpec {
    /// Which state machine runs the group, e.g. `"memstore"`; at most
    /// [`KIND_BYTES_MAX`] bytes.
    pub kind: String,
    /// Anything the state machine needs to know from birth; at most
    /// [`DESCRIPTION_BYTES_MAX`] bytes.
    pub description: Bytes,
}

impl GroupSpec {
    /// A group of `kind` with no description.
    pub fn new(kind: impl Into<String>) -> GroupSpec {
        GroupSpec {
            kind: kind.into(),
            description: Bytes::new(),
        }
    }

    /// Checks the limits, saying what is too long.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.len() > KIND_BYTES_MAX {
            return Err(format!(
                "group kind is {} bytes; at most {KIND_BYTES_MAX} are allowed",
                self.kind.len()
            ));
        }
        if self.description.len() > DESCRIPTION_BYTES_MAX {
            return Err(format!(
                "group description is {} bytes; at most {DESCRIPTION_BYTES_MAX} are allowed",
                self.description.len()
            ));
        }
        Ok(())
    }
}

/// What a normal entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A leader's no-op.
    Noop,
    /// A command.
    Command(Bytes),
    /// An exactly-once command.
    Request {
        /// Who sent it, and its number.
        id: RequestId,
        /// The command.
        command: Bytes,
    },
    /// A client registering for exactly-once requests.
    Register,
    /// A member's address.
    Address {
        /// The member.
        node: NodeId,
        /// Where it listens.
        address: String,
    },
    /// Something this version cannot read (a newer tag, or a damaged payload).
    Unreadable(String),
}

impl Payload {
    /// True for entries whose proposer waits for the state machine's answer.
    pub fn is_answered(&self) -> bool {
        matches!(
            self,
            Payload::Command(_) | Payload::Request { .. } | Payload::Register
        )
    }
}

/// A command entry's data.
pub fn encode_command(command: &[u8]) -> Bytes {
    let mut data = BytesMut::with_capacity(command.len() + 1);
    data.put_u8(TAG_COMMAND);
    data.put_slice(command);
    data.freeze()
}

/// An exactly-once command entry's data.
pub fn encode_request(id: RequestId, command: &[u8]) -> Bytes {
    let mut data = BytesMut::with_capacity(command.len() + 25);
    data.put_u8(TAG_REQUEST);
    data.put_u64(id.client);
    data.put_u64(id.sequence);
    data.put_u64(id.first_unanswered);
    data.put_slice(command);
    data.freeze()
}

/// A registration entry's data.
pub fn encode_register() -> Bytes {
    Bytes::from_static(&[TAG_REGISTER])
}

/// An address entry's data.
pub fn encode_address(node: NodeId, address: &str) -> Bytes {
    let mut data = BytesMut::with_capacity(address.len() + 9);
    data.put_u8(TAG_ADDRESS);
    data.put_u64(node);
    data.put_slice(address.as_bytes());
    data.freeze()
}

/// Reads a normal entry's data. Never panics; what it cannot read is
/// [`Payload::Unreadable`] with the reason.
pub fn decode_payload(data: &Bytes) -> Payload {
    let Some(&tag) = data.first() else {
        return Payload::Noop;
    };
    match tag {
        TAG_COMMAND => Payload::Command(data.slice(1..)),
        TAG_REGISTER if data.len() == 1 => Payload::Register,
        TAG_REGISTER => Payload::Unreadable("a registration entry with trailing bytes".into()),
        TAG_REQUEST if data.len() >= 25 => {
            let mut header = &data[1..25];
            let id = RequestId {
                client: header.get_u64(),
                sequence: header.get_u64(),
                first_unanswered: header.get_u64(),
            };
            if !id.is_valid() {
                return Payload::Unreadable(format!("a request entry with an invalid id {id:?}"));
            }
            Payload::Request {
                id,
                command: data.slice(25..),
            }
        }
        TAG_REQUEST => Payload::Unreadable("a request entry cut short".into()),
        TAG_ADDRESS if data.len() >= 9 => {
            let mut rest = &data[1..];
            let node = rest.get_u64();
            match std::str::from_utf8(rest) {
                Ok(address) if address.len() <= ADDRESS_BYTES_MAX => Payload::Address {
                    node,
                    address: address.to_string(),
                },
                Ok(_) => Payload::Unreadable("an address entry over the length limit".into()),
                Err(_) => Payload::Unreadable("an address entry that is not UTF-8".into()),
            }
        }
        TAG_ADDRESS => Payload::Unreadable("an address entry cut short".into()),
        other => Payload::Unreadable(format!(
            "unknown entry tag {other} (written by a newer version of concord?)"
        )),
    }
}

/// A snapshot's header: what the group is and where its members listen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The group's kind and description.
    pub spec: GroupSpec,
    /// Members' addresses.
    pub addresses: Addresses,
    /// The state machine's bytes follow the header (false: the initial state).
    pub has_state: bool,
}

impl SnapshotHeader {
    /// The header's bytes (the state machine's follow them when `has_state`).
    pub fn encode(&self) -> Bytes {
        let addresses_bytes: usize = self.addresses.values().map(|a| a.len() + 12).sum();
        let mut data = BytesMut::with_capacity(
            12 + self.spec.kind.len() + self.spec.description.len() + addresses_bytes,
        );
        data.put_u8(SNAPSHOT_FORMAT_VERSION);
        data.put_u8(u8::from(self.has_state));
        data.put_u16(self.spec.kind.len() as u16);
        data.put_slice(self.spec.kind.as_bytes());
        data.put_u32(self.spec.description.len() as u32);
        data.put_slice(&self.spec.description);
        data.put_u32(self.addresses.len() as u32);
        for (&node, address) in &self.addresses {
            data.put_u64(node);
            data.put_u32(address.len() as u32);
            data.put_slice(address.as_bytes());
        }
        data.freeze()
    }

    /// Reads the header at the start of `data`; returns it with the state machine's
    /// bytes (None for the initial state). Empty data is a bootstrap snapshot.
    pub fn decode(data: &Bytes) -> Result<(SnapshotHeader, Option<Bytes>), String> {
        if data.is_empty() {
            return Ok((SnapshotHeader::default(), None));
        }
        let mut rest = &data[..];
        let version = rest.get_u8();
        if version != 1 && version != SNAPSHOT_FORMAT_VERSION {
            return Err(format!(
                "snapshot format version {version} is unknown (this version reads 1 and \
                 {SNAPSHOT_FORMAT_VERSION}); was it written by a newer concord?"
            ));
        }
        let need = |rest: &[u8], bytes: usize, what: &str| {
            if rest.remaining() < bytes {
                Err(format!("snapshot header cut short in its {what}"))
            } else {
                Ok(())
            }
        };
        need(rest, 1, "flags")?;
        let has_state = match rest.get_u8() {
            0 => false,
            1 => true,
            other => return Err(format!("snapshot header has a bad has_state flag {other}")),
        };
        let mut spec = GroupSpec::default();
        if version >= 2 {
            need(rest, 2, "kind")?;
            let length = rest.get_u16() as usize;
            need(rest, length, "kind")?;
            if length > KIND_BYTES_MAX {
                return Err(format!("snapshot header has a {length}-byte group kind"));
            }
            spec.kind = std::str::from_utf8(&rest[..length])
                .map_err(|_| "snapshot header's group kind is not UTF-8".to_string())?
                .to_string();
            rest.advance(length);
            need(rest, 4, "description")?;
            let length = rest.get_u32() as usize;
            need(rest, length, "description")?;
            if length > DESCRIPTION_BYTES_MAX {
                return Err(format!(
                    "snapshot header has a {length}-byte group description"
                ));
            }
            let start = data.len() - rest.remaining();
            spec.description = data.slice(start..start + length);
            rest.advance(length);
        }
        need(rest, 4, "address count")?;
        let count = rest.get_u32();
        let mut addresses = Addresses::new();
        for _ in 0..count {
            need(rest, 12, "addresses")?;
            let node = rest.get_u64();
            let length = rest.get_u32() as usize;
            if length > ADDRESS_BYTES_MAX {
                return Err(format!("snapshot header has a {length}-byte address"));
            }
            need(rest, length, "addresses")?;
            let address = std::str::from_utf8(&rest[..length])
                .map_err(|_| "snapshot header has an address that is not UTF-8".to_string())?
                .to_string();
            rest.advance(length);
            addresses.insert(node, address);
        }
        let consumed = data.len() - rest.remaining();
        let state = if has_state {
            Some(data.slice(consumed..))
        } else if rest.has_remaining() {
            return Err("trailing bytes after a snapshot header without state".into());
        } else {
            None
        };
        Ok((
            SnapshotHeader {
                spec,
                addresses,
                has_state,
            },
            state,
        ))
    }
}

/// True when `address` (host:port) has an unspecified host, `0.0.0.0` or `[::]`: a
/// listening address, not one anybody can connect to.
pub fn is_unspecified_address(address: &str) -> bool {
    address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|socket| socket.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_are_not_addresses_to_dial() {
        assert!(is_unspecified_address("0.0.0.0:9000"));
        assert!(is_unspecified_address("[::]:9000"));
        assert!(!is_unspecified_address("127.0.0.1:9000"));
        assert!(!is_unspecified_address("10.0.0.7:9000"));
        assert!(!is_unspecified_address("node-1.concord:9000"));
    }

    /// Entries decode to what was encoded; cut, foreign or newer data is never misread
    /// as something else.
    #[test]
    fn entries_round_trip_and_refuse_what_they_cannot_read() {
        let id = RequestId {
            client: 9,
            sequence: 4,
            first_unanswered: 2,
        };
        assert_eq!(decode_payload(&Bytes::new()), Payload::Noop);
        assert_eq!(
            decode_payload(&encode_command(b"set x")),
            Payload::Command(Bytes::from_static(b"set x"))
        );
        assert_eq!(
            decode_payload(&encode_request(id, b"set y")),
            Payload::Request {
                id,
                command: Bytes::from_static(b"set y")
            }
        );
        assert_eq!(decode_payload(&encode_register()), Payload::Register);
        assert_eq!(
            decode_payload(&encode_address(7, "127.0.0.1:7007")),
            Payload::Address {
                node: 7,
                address: "127.0.0.1:7007".into()
            }
        );
        let request = encode_request(id, b"");
        for cut in 1..request.len() {
            assert!(
                matches!(
                    decode_payload(&request.slice(..cut)),
                    Payload::Unreadable(_)
                ),
                "cut at {cut}"
            );
        }
        let invalid = encode_request(
            RequestId {
                client: 9,
                sequence: 2,
                first_unanswered: 3,
            },
            b"x",
        );
        assert!(matches!(decode_payload(&invalid), Payload::Unreadable(_)));
        assert!(matches!(
            decode_payload(&Bytes::from_static(&[9, 1])),
            Payload::Unreadable(reason) if reason.contains("unknown entry tag 9")
        ));
        assert!(matches!(
            decode_payload(&Bytes::from_static(&[TAG_REGISTER, 0])),
            Payload::Unreadable(_)
        ));
        assert!(matches!(
            decode_payload(&Bytes::from_static(&[TAG_ADDRESS, 1])),
            Payload::Unreadable(_)
        ));
    }

    /// Headers round-trip with and without state; version 1 headers (no kind) still
    /// read; cut headers and unknown versions are refused with a reason.
    #[test]
    fn snapshot_headers_round_trip() {
        let header = SnapshotHeader {
            spec: GroupSpec {
                kind: "memstore".into(),
                description: Bytes::from_static(b"{\"buckets\":4}"),
            },
            addresses: Addresses::from([(1, "a:1".to_string()), (2, "b:2".to_string())]),
            has_state: true,
        };
        let mut data = BytesMut::from(&header.encode()[..]);
        data.put_slice(b"state");
        let data = data.freeze();
        assert_eq!(
            SnapshotHeader::decode(&data).unwrap(),
            (header.clone(), Some(Bytes::from_static(b"state")))
        );
        let stateless = SnapshotHeader {
            has_state: false,
            ..header.clone()
        };
        let encoded = stateless.encode();
        assert_eq!(SnapshotHeader::decode(&encoded).unwrap(), (stateless, None));
        for cut in 1..encoded.len() {
            assert!(
                SnapshotHeader::decode(&encoded.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        // Version 1: [1][has_state][count][addresses][state].
        let mut v1 = BytesMut::new();
        v1.put_u8(1);
        v1.put_u8(1);
        v1.put_u32(1);
        v1.put_u64(3);
        v1.put_u32(3);
        v1.put_slice(b"c:3");
        v1.put_slice(b"old");
        let (decoded, state) = SnapshotHeader::decode(&v1.freeze()).unwrap();
        assert_eq!(decoded.spec, GroupSpec::default());
        assert_eq!(decoded.addresses, Addresses::from([(3, "c:3".to_string())]));
        assert_eq!(state, Some(Bytes::from_static(b"old")));
        let error = SnapshotHeader::decode(&Bytes::from_static(&[9, 0, 0, 0, 0, 0])).unwrap_err();
        assert!(error.contains("version 9"), "{error}");
        assert_eq!(
            SnapshotHeader::decode(&Bytes::new()).unwrap(),
            (SnapshotHeader::default(), None)
        );
    }
}
