//! The replicated state machine the simulator runs on every node: a small key-value map
//! with exactly-once commands, and its snapshot format.
//!
//! A command carries `(client id, request number)`. Each client has one operation in
//! flight at a time and numbers its requests upwards, so a session table keeping each
//! client's latest request number and response is enough to apply every command at most
//! once: a command at or below the latest number is a retry and is not applied again
//! (the same number answers with the cached response). Reads go through
//! `read_index`, not the log.
//!
//! Every applied entry (commands, no-ops, membership changes) is folded into a running
//! digest, so two nodes that applied the same log prefix hold the same digest: the
//! state-machine-safety checker compares digests instead of whole maps.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_raft::{Entry, EntryKind, Index, Term};

use crate::history::{ClientId, Op, Response};
use crate::rng::{hash_bytes, hash_words};

/// The first byte of an encoded [`Command`].
const COMMAND_TAG: u8 = b'K';
/// The first byte of an encoded snapshot.
const SNAPSHOT_TAG: u8 = b'S';
/// The version byte that follows [`SNAPSHOT_TAG`].
const SNAPSHOT_VERSION: u8 = 1;

/// A client's write as it travels in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client that sent it.
    pub client: ClientId,
    /// The client's request number: unique per client, increasing.
    pub request: u64,
    /// The write (`Op::Get` never goes through the log).
    pub op: Op,
}

impl Command {
    /// Encodes as: tag, client u64, request u64, op kind u8, key (u16 length), then the
    /// op's values (u32 length each; a `Cas` expectation is preceded by a presence byte).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.op.key().len());
        buf.put_u8(COMMAND_TAG);
        buf.put_u64(self.client);
        buf.put_u64(self.request);
        let put_key = |buf: &mut BytesMut, key: &Bytes| {
            buf.put_u16(key.len() as u16);
            buf.put_slice(key);
        };
        let put_value = |buf: &mut BytesMut, value: &Bytes| {
            buf.put_u32(value.len() as u32);
            buf.put_slice(value);
        };
        match &self.op {
            Op::Put { key, value } => {
                buf.put_u8(0);
                put_key(&mut buf, key);
                put_value(&mut buf, value);
            }
            Op::Append { key, suffix } => {
                buf.put_u8(1);
                put_key(&mut buf, key);
                put_value(&mut buf, suffix);
            }
            Op::Cas { key, expected, new } => {
                buf.put_u8(2);
                put_key(&mut buf, key);
                match expected {
                    Some(expected) => {
                        buf.put_u8(1);
                        put_value(&mut buf, expected);
                    }
                    None => buf.put_u8(0),
                }
                put_value(&mut buf, new);
            }
            Op::Get { key } => {
                buf.put_u8(3);
                put_key(&mut buf, key);
            }
        }
        buf.freeze()
    }

    /// Decodes what [`Command::encode`] wrote; `None` for anything else (an opaque
    /// entry proposed by a test, say).
    pub fn decode(data: &Bytes) -> Option<Command> {
        let mut reader = Reader { data: data.clone() };
        if reader.u8()? != COMMAND_TAG {
            return None;
        }
        let client = reader.u64()?;
        let request = reader.u64()?;
        let kind = reader.u8()?;
        let key = reader.bytes16()?;
        let op = match kind {
            0 => Op::Put {
                key,
                value: reader.bytes32()?,
            },
            1 => Op::Append {
                key,
                suffix: reader.bytes32()?,
            },
            2 => {
                let expected = match reader.u8()? {
                    0 => None,
                    1 => Some(reader.bytes32()?),
                    _ => return None,
                };
                Op::Cas {
                    key,
                    expected,
                    new: reader.bytes32()?,
                }
            }
            3 => Op::Get { key },
            _ => return None,
        };
        if !reader.data.is_empty() {
            return None;
        }
        Some(Command {
            client,
            request,
            op,
        })
    }
}

/// A bounds-checked reader over encoded bytes.
struct Reader {
    data: Bytes,
}

impl Reader {
    fn u8(&mut self) -> Option<u8> {
        (self.data.remaining() >= 1).then(|| self.data.get_u8())
    }
    fn u16(&mut self) -> Option<u16> {
        (self.data.remaining() >= 2).then(|| self.data.get_u16())
    }
    fn u32(&mut self) -> Option<u32> {
        (self.data.remaining() >= 4).then(|| self.data.get_u32())
    }
    fn u64(&mut self) -> Option<u64> {
        (self.data.remaining() >= 8).then(|| self.data.get_u64())
    }
    fn bytes(&mut self, length: usize) -> Option<Bytes> {
        (self.data.remaining() >= length).then(|| self.data.split_to(length))
    }
    fn bytes16(&mut self) -> Option<Bytes> {
        let length = self.u16()? as usize;
        self.bytes(length)
    }
    fn bytes32(&mut self) -> Option<Bytes> {
        let length = self.u32()? as usize;
        self.bytes(length)
    }
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A leader's empty no-op.
    NoOp,
    /// A membership change (applied to raft by the driver, not to the map).
    ConfChange,
    /// An entry that is not a [`Command`] (a test's opaque payload).
    Opaque,
    /// A client command.
    Command {
        /// Who sent it.
        client: ClientId,
        /// Its request number.
        request: u64,
        /// Its response: computed now, or the cached one for a retry of the latest
        /// request. `None` for a retry of an older request, which nobody waits for.
        response: Option<Response>,
        /// True when this was a retry and changed nothing.
        duplicate: bool,
    },
}

/// A client's latest applied request and its response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    request: u64,
    response: Response,
}

/// The key-value state machine of one node. Volatile: a crash loses it, and a restart
/// rebuilds it from the snapshot in storage plus the committed entries after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Bytes, Bytes>,
    sessions: BTreeMap<ClientId, Session>,
    // Invariant: applied_index grows by exactly one per applied entry, or jumps to a
    // snapshot's index on restore.
    applied_index: Index,
    applied_term: Term,
    digest: u64,
}

impl Kv {
    /// An empty map that has applied nothing.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// The index of the last entry applied (or of the snapshot restored).
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// The running digest of every entry applied so far.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Applies one committed entry. `conf_outcome` is a hash of what applying a
    /// membership change did (its resulting membership, or that it was ignored); it is
    /// folded into the digest so nodes that disagree on membership disagree on digests.
    ///
    /// Panics if `entry` is not the next index: the driver must apply in order.
    pub fn apply(&mut self, entry: &Entry, conf_outcome: u64) -> Applied {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "applying entry {} after {}",
            entry.index,
            self.applied_index
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        let kind = match entry.kind {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        };
        self.digest = hash_words(
            self.digest,
            &[
                entry.index,
                entry.term,
                kind,
                hash_bytes(&entry.data),
                conf_outcome,
            ],
        );
        if entry.kind == EntryKind::ConfChange {
            return Applied::ConfChange;
        }
        if entry.data.is_empty() {
            return Applied::NoOp;
        }
        let Some(command) = Command::decode(&entry.data) else {
            return Applied::Opaque;
        };
        let Command {
            client,
            request,
            op,
        } = command;
        if let Some(session) = self.sessions.get(&client) {
            if request <= session.request {
                let response = (request == session.request).then(|| session.response.clone());
                return Applied::Command {
                    client,
                    request,
                    response,
                    duplicate: true,
                };
            }
        }
        let response = match op {
            Op::Put { key, value } => {
                self.map.insert(key, value);
                Response::Ok
            }
            Op::Append { key, suffix } => {
                let mut value = BytesMut::new();
                if let Some(old) = self.map.get(&key) {
                    value.extend_from_slice(old);
                }
                value.extend_from_slice(&suffix);
                self.map.insert(key, value.freeze());
                Response::Ok
            }
            Op::Cas { key, expected, new } => {
                let swapped = self.map.get(&key) == expected.as_ref();
                if swapped {
                    self.map.insert(key, new);
                }
                Response::Cas(swapped)
            }
            Op::Get { key } => Response::Value(self.map.get(&key).cloned()),
        };
        self.sessions.insert(
            client,
            Session {
                request,
                response: response.clone(),
            },
        );
        Applied::Command {
            client,
            request,
            response: Some(response),
            duplicate: false,
        }
    }

    /// The snapshot of this state: tag, version, applied index and term, digest, the
    /// map, and the session table.
    pub fn encode_snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(SNAPSHOT_TAG);
        buf.put_u8(SNAPSHOT_VERSION);
        buf.put_u64(self.applied_index);
        buf.put_u64(self.applied_term);
        buf.put_u64(self.digest);
        buf.put_u32(self.map.len() as u32);
        for (key, value) in &self.map {
            buf.put_u16(key.len() as u16);
            buf.put_slice(key);
            buf.put_u32(value.len() as u32);
            buf.put_slice(value);
        }
        buf.put_u32(self.sessions.len() as u32);
        for (client, session) in &self.sessions {
            buf.put_u64(*client);
            buf.put_u64(session.request);
            match &session.response {
                Response::Ok => buf.put_u8(0),
                Response::Value(None) => buf.put_u8(1),
                Response::Value(Some(value)) => {
                    buf.put_u8(2);
                    buf.put_u32(value.len() as u32);
                    buf.put_slice(value);
                }
                Response::Cas(swapped) => {
                    buf.put_u8(3);
                    buf.put_u8(u8::from(*swapped));
                }
            }
        }
        buf.freeze()
    }

    /// The state a snapshot at `index` stands for. Empty `data` is the initial state of
    /// a group (its bootstrap snapshot holds only membership); anything else must be
    /// [`Kv::encode_snapshot`]'s output at that same index.
    pub fn restore(index: Index, data: &Bytes) -> Result<Kv, String> {
        if data.is_empty() {
            return Ok(Kv {
                applied_index: index,
                ..Kv::default()
            });
        }
        let kv = Kv::decode_snapshot(data)?;
        if kv.applied_index != index {
            return Err(format!(
                "the snapshot at index {index} holds a state machine at index {}",
                kv.applied_index
            ));
        }
        Ok(kv)
    }

    /// Rebuilds the state from [`Kv::encode_snapshot`]'s output.
    pub fn decode_snapshot(data: &Bytes) -> Result<Kv, String> {
        let malformed = |what: &str| format!("malformed key-value snapshot: {what}");
        let mut reader = Reader { data: data.clone() };
        if reader.u8() != Some(SNAPSHOT_TAG) || reader.u8() != Some(SNAPSHOT_VERSION) {
            return Err(malformed("bad tag or version"));
        }
        let header = (reader.u64(), reader.u64(), reader.u64());
        let (Some(applied_index), Some(applied_term), Some(digest)) = header else {
            return Err(malformed("short header"));
        };
        let mut kv = Kv {
            applied_index,
            applied_term,
            digest,
            ..Kv::default()
        };
        let keys = reader.u32().ok_or_else(|| malformed("no key count"))?;
        for _ in 0..keys {
            let key = reader.bytes16().ok_or_else(|| malformed("short key"))?;
            let value = reader.bytes32().ok_or_else(|| malformed("short value"))?;
            kv.map.insert(key, value);
        }
        let sessions = reader.u32().ok_or_else(|| malformed("no session count"))?;
        for _ in 0..sessions {
            let (Some(client), Some(request)) = (reader.u64(), reader.u64()) else {
                return Err(malformed("short session"));
            };
            let response = match reader.u8() {
                Some(0) => Response::Ok,
                Some(1) => Response::Value(None),
                Some(2) => Response::Value(Some(
                    reader
                        .bytes32()
                        .ok_or_else(|| malformed("short response"))?,
                )),
                Some(3) => Response::Cas(reader.u8().ok_or_else(|| malformed("short cas"))? != 0),
                _ => return Err(malformed("bad response tag")),
            };
            kv.sessions.insert(client, Session { request, response });
        }
        if !reader.data.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        Ok(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, data: Bytes) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    fn command(client: ClientId, request: u64, op: Op) -> Bytes {
        Command {
            client,
            request,
            op,
        }
        .encode()
    }

    // Commands round-trip through their encoding, and foreign payloads are not misread.
    #[test]
    fn command_encoding_round_trips() {
        let ops = [
            Op::put("k", "v"),
            Op::append("k", "x"),
            Op::cas("k", Some("v"), "w"),
            Op::cas("k", None::<Bytes>, "w"),
            Op::get("k"),
        ];
        for op in ops {
            let original = Command {
                client: 3,
                request: 9,
                op,
            };
            let encoded = original.encode();
            assert_eq!(Command::decode(&encoded), Some(original));
            for cut in 0..encoded.len() {
                assert_eq!(Command::decode(&encoded.slice(..cut)), None);
            }
        }
        assert_eq!(Command::decode(&Bytes::from_static(b"hello")), None);
    }

    // A retried request is applied once and answers with the first response; an older
    // request arriving late changes nothing and answers nothing.
    #[test]
    fn commands_apply_exactly_once() {
        let mut kv = Kv::new();
        let first = kv.apply(&entry(1, command(1, 1, Op::append("k", "a"))), 0);
        assert!(matches!(
            first,
            Applied::Command {
                duplicate: false,
                ..
            }
        ));
        let retry = kv.apply(&entry(2, command(1, 1, Op::append("k", "a"))), 0);
        assert_eq!(
            retry,
            Applied::Command {
                client: 1,
                request: 1,
                response: Some(Response::Ok),
                duplicate: true
            }
        );
        kv.apply(&entry(3, command(1, 2, Op::cas("k", Some("a"), "b"))), 0);
        let late = kv.apply(&entry(4, command(1, 1, Op::append("k", "a"))), 0);
        assert!(matches!(
            late,
            Applied::Command {
                response: None,
                duplicate: true,
                ..
            }
        ));
        assert_eq!(kv.get(b"k"), Some(Bytes::from_static(b"b")));
        assert_eq!(kv.applied_index(), 4);
    }

    // A snapshot restores the map, the sessions (so retries stay deduplicated) and the
    // digest.
    #[test]
    fn snapshot_round_trips() {
        let mut kv = Kv::new();
        kv.apply(&entry(1, command(1, 1, Op::put("a", "1"))), 0);
        kv.apply(
            &entry(2, command(2, 1, Op::cas("b", None::<Bytes>, "2"))),
            0,
        );
        kv.apply(&entry(3, Bytes::new()), 0);
        let restored = Kv::decode_snapshot(&kv.encode_snapshot()).unwrap();
        assert_eq!(restored, kv);
        let mut copy = restored.clone();
        let retry = copy.apply(
            &entry(4, command(2, 1, Op::cas("b", None::<Bytes>, "2"))),
            0,
        );
        assert!(matches!(
            retry,
            Applied::Command {
                duplicate: true,
                ..
            }
        ));
        assert!(Kv::decode_snapshot(&Bytes::from_static(b"S\x01")).is_err());
    }
}
