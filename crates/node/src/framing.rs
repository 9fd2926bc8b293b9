//! How the node frames what it puts in the log and in snapshots.
//!
//! A normal entry's data starts with a tag byte: [`TAG_COMMAND`] (the user's command
//! follows) or [`TAG_ADDRESS`] (a member's address: node id u64 big-endian, then the
//! address as UTF-8). Empty data is a leader's no-op. Addresses travel through the log
//! so every member, and every node that later receives a snapshot, knows where the
//! others listen.
//!
//! A snapshot's data is `[version u8 = 1][has_state u8][address count u32]`, then per
//! address `[node u64][length u32][UTF-8]`, then the state machine's snapshot (when
//! `has_state` is 1). Empty data (a bootstrap snapshot) means no addresses and the
//! initial state.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_raft::NodeId;

/// Tag of an entry carrying a user command.
pub(crate) const TAG_COMMAND: u8 = 1;
/// Tag of an entry carrying a member's address.
pub(crate) const TAG_ADDRESS: u8 = 2;

const SNAPSHOT_FORMAT_VERSION: u8 = 1;
/// Longest address accepted, in bytes.
pub(crate) const ADDRESS_BYTES_MAX: usize = 1024;

/// Members' addresses, by node id.
pub(crate) type Addresses = BTreeMap<NodeId, String>;

/// What a normal entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A leader's no-op.
    Noop,
    /// A user command.
    Command(Bytes),
    /// A member's address.
    Address { node: NodeId, address: String },
    /// Anything else (never written by this version): applied as a no-op.
    Unknown,
}

pub(crate) fn encode_command(command: &[u8]) -> Bytes {
    let mut data = BytesMut::with_capacity(command.len() + 1);
    data.put_u8(TAG_COMMAND);
    data.put_slice(command);
    data.freeze()
}

pub(crate) fn encode_address(node: NodeId, address: &str) -> Bytes {
    let mut data = BytesMut::with_capacity(address.len() + 9);
    data.put_u8(TAG_ADDRESS);
    data.put_u64(node);
    data.put_slice(address.as_bytes());
    data.freeze()
}

pub(crate) fn decode_payload(data: &Bytes) -> Payload {
    match data.first() {
        None => Payload::Noop,
        Some(&TAG_COMMAND) => Payload::Command(data.slice(1..)),
        Some(&TAG_ADDRESS) if data.len() >= 9 => {
            let mut rest = &data[1..];
            let node = rest.get_u64();
            match std::str::from_utf8(rest) {
                Ok(address) => Payload::Address {
                    node,
                    address: address.to_string(),
                },
                Err(_) => Payload::Unknown,
            }
        }
        Some(_) => Payload::Unknown,
    }
}

/// A snapshot's data: addresses and (unless it is the initial state) the state
/// machine's snapshot.
pub(crate) fn encode_snapshot(addresses: &Addresses, state: Option<&Bytes>) -> Bytes {
    let addresses_bytes: usize = addresses.values().map(|address| address.len() + 12).sum();
    let state_bytes = state.map_or(0, Bytes::len);
    let mut data = BytesMut::with_capacity(6 + addresses_bytes + state_bytes);
    data.put_u8(SNAPSHOT_FORMAT_VERSION);
    data.put_u8(u8::from(state.is_some()));
    data.put_u32(addresses.len() as u32);
    for (&node, address) in addresses {
        data.put_u64(node);
        data.put_u32(address.len() as u32);
        data.put_slice(address.as_bytes());
    }
    if let Some(state) = state {
        data.put_slice(state);
    }
    data.freeze()
}

/// Reads what [`encode_snapshot`] wrote. Empty data is the bootstrap snapshot.
pub(crate) fn decode_snapshot(data: &Bytes) -> Result<(Addresses, Option<Bytes>), String> {
    if data.is_empty() {
        return Ok((Addresses::new(), None));
    }
    let mut rest = &data[..];
    if rest.remaining() < 6 {
        return Err("snapshot data shorter than its header".into());
    }
    if rest.get_u8() != SNAPSHOT_FORMAT_VERSION {
        return Err("unknown snapshot format version".into());
    }
    let has_state = match rest.get_u8() {
        0 => false,
        1 => true,
        _ => return Err("bad has_state flag in snapshot".into()),
    };
    let count = rest.get_u32();
    let mut addresses = Addresses::new();
    for _ in 0..count {
        if rest.remaining() < 12 {
            return Err("snapshot address list cut short".into());
        }
        let node = rest.get_u64();
        let length = rest.get_u32() as usize;
        if length > ADDRESS_BYTES_MAX || rest.remaining() < length {
            return Err("snapshot address cut short or too long".into());
        }
        let address = std::str::from_utf8(&rest[..length])
            .map_err(|_| "snapshot address is not UTF-8".to_string())?
            .to_string();
        rest.advance(length);
        addresses.insert(node, address);
    }
    let consumed = data.len() - rest.remaining();
    let state = if has_state {
        Some(data.slice(consumed..))
    } else if rest.has_remaining() {
        return Err("trailing bytes after a snapshot without state".into());
    } else {
        None
    };
    Ok((addresses, state))
}

/// True when `address` (host:port) has an unspecified host, `0.0.0.0` or `[::]`: a
/// listening address, not one anybody can connect to.
pub(crate) fn is_unspecified_address(address: &str) -> bool {
    address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|socket| socket.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unspecified_hosts_are_not_addresses_to_dial() {
        assert!(super::is_unspecified_address("0.0.0.0:9000"));
        assert!(super::is_unspecified_address("[::]:9000"));
        assert!(!super::is_unspecified_address("127.0.0.1:9000"));
        assert!(!super::is_unspecified_address("10.0.0.7:9000"));
        assert!(!super::is_unspecified_address("node-1.concord:9000"));
    }

    use super::*;

    /// Entries and snapshots decode to what was encoded; cut or foreign data is never
    /// misread as something else.
    #[test]
    fn round_trips() {
        assert_eq!(decode_payload(&Bytes::new()), Payload::Noop);
        assert_eq!(
            decode_payload(&encode_command(b"set x")),
            Payload::Command(Bytes::from_static(b"set x"))
        );
        assert_eq!(
            decode_payload(&encode_address(7, "127.0.0.1:7007")),
            Payload::Address {
                node: 7,
                address: "127.0.0.1:7007".into()
            }
        );
        assert_eq!(
            decode_payload(&Bytes::from_static(&[9, 1])),
            Payload::Unknown
        );
        assert_eq!(
            decode_payload(&Bytes::from_static(&[TAG_ADDRESS, 1])),
            Payload::Unknown
        );

        let addresses = Addresses::from([(1, "a:1".to_string()), (2, "b:2".to_string())]);
        let state = Bytes::from_static(b"state");
        for state in [None, Some(&state)] {
            let encoded = encode_snapshot(&addresses, state);
            let (decoded, decoded_state) = decode_snapshot(&encoded).unwrap();
            assert_eq!(decoded, addresses);
            assert_eq!(decoded_state.as_ref(), state);
            for cut in 1..encoded.len().min(30) {
                if state.is_none() {
                    assert!(
                        decode_snapshot(&encoded.slice(..cut)).is_err(),
                        "cut at {cut}"
                    );
                }
            }
        }
        assert_eq!(
            decode_snapshot(&Bytes::new()).unwrap(),
            (Addresses::new(), None)
        );
    }
}
