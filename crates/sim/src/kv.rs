//! The replicated state machine the simulator runs in every group: a small key-value
//! map, run by concord-group's `Applier` exactly as the runtime runs a state machine.
//!
//! Exactly-once is the shipping code's: the map embeds concord-group's
//! [`ClientTable`] (clients register through the log and send each request with a
//! `RequestId`; the applier answers repeats from the table). Reads are queries served
//! through ReadIndex, not the log.
//!
//! Every command applied is folded into a running digest with its index and term, so
//! two nodes that applied the same commands at the same indexes hold the same digest:
//! the state-machine-safety checker compares digests instead of whole maps. The digest
//! travels in the snapshot.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_group::{
    ApplyContext, ClientTable, ClientTableLimits, StateMachine, StateMachineError,
};

use crate::history::{Op, Response};
use crate::rng::{hash_bytes, hash_words};

/// The first byte of an encoded snapshot.
const SNAPSHOT_TAG: u8 = b'S';
/// The version byte that follows [`SNAPSHOT_TAG`].
const SNAPSHOT_VERSION: u8 = 2;

/// A query: the value of a key.
pub(crate) const QUERY_GET: u8 = 0;
/// A query: the state's digest (for the checkers).
pub(crate) const QUERY_DIGEST: u8 = 1;

/// Folds the command at `context`'s index and term into `digest` and decodes it; an
/// opaque command (a test's payload) decodes to nothing and changes nothing but the
/// digest.
pub(crate) fn fold_and_decode(
    digest: &mut u64,
    context: &ApplyContext<'_>,
    command: &Bytes,
) -> Option<Op> {
    *digest = hash_words(
        *digest,
        &[context.index(), context.term(), hash_bytes(command)],
    );
    decode_op(command)
}

/// Encodes a write as: op kind u8, key (u16 length), then the op's values (u32 length
/// each; a `Cas` expectation is preceded by a presence byte).
pub fn encode_op(op: &Op) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + op.key().len());
    let put_key = |buf: &mut BytesMut, key: &Bytes| {
        buf.put_u16(key.len() as u16);
        buf.put_slice(key);
    };
    let put_value = |buf: &mut BytesMut, value: &Bytes| {
        buf.put_u32(value.len() as u32);
        buf.put_slice(value);
    };
    match op {
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
        Op::AppendBoth { key, other, suffix } => {
            buf.put_u8(4);
            put_key(&mut buf, key);
            put_key(&mut buf, other);
            put_value(&mut buf, suffix);
        }
    }
    buf.freeze()
}

/// Decodes what [`encode_op`] wrote; `None` for anything else (an opaque command
/// proposed by a test, say).
pub fn decode_op(data: &Bytes) -> Option<Op> {
    let mut reader = Reader { data: data.clone() };
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
        4 => Op::AppendBoth {
            key,
            other: reader.bytes16()?,
            suffix: reader.bytes32()?,
        },
        _ => return None,
    };
    reader.data.is_empty().then_some(op)
}

/// A response as the state machine answers it.
pub fn encode_response(response: &Response) -> Bytes {
    let mut buf = BytesMut::new();
    match response {
        Response::Ok => buf.put_u8(0),
        Response::Value(None) => buf.put_u8(1),
        Response::Value(Some(value)) => {
            buf.put_u8(2);
            buf.put_slice(value);
        }
        Response::Cas(swapped) => {
            buf.put_u8(3);
            buf.put_u8(u8::from(*swapped));
        }
    }
    buf.freeze()
}

/// Reads what [`encode_response`] wrote.
pub fn decode_response(data: &Bytes) -> Option<Response> {
    match data.first()? {
        0 if data.len() == 1 => Some(Response::Ok),
        1 if data.len() == 1 => Some(Response::Value(None)),
        2 => Some(Response::Value(Some(data.slice(1..)))),
        3 if data.len() == 2 => Some(Response::Cas(data[1] != 0)),
        _ => None,
    }
}

/// The query reading `key`.
pub fn get_query(key: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(key.len() + 1);
    buf.put_u8(QUERY_GET);
    buf.put_slice(key);
    buf.freeze()
}

/// The query reading the digest.
pub fn digest_query() -> Bytes {
    Bytes::from_static(&[QUERY_DIGEST])
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

/// The key-value state machine of one group on one node. Volatile: a crash loses it,
/// and a restart rebuilds it from the snapshot in storage plus the log after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Bytes, Bytes>,
    table: ClientTable,
    digest: u64,
}

impl Kv {
    /// An empty map whose exactly-once table has `limits`.
    pub fn new(limits: ClientTableLimits) -> Kv {
        Kv {
            map: BTreeMap::new(),
            table: ClientTable::new(limits),
            digest: 0,
        }
    }

    /// The running digest of every command applied so far.
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

    fn append(&mut self, key: Bytes, suffix: &[u8]) {
        let mut value = BytesMut::new();
        if let Some(old) = self.map.get(&key) {
            value.extend_from_slice(old);
        }
        value.extend_from_slice(suffix);
        self.map.insert(key, value.freeze());
    }

    fn execute(&mut self, op: Op) -> Response {
        match op {
            Op::Put { key, value } => {
                self.map.insert(key, value);
                Response::Ok
            }
            Op::Append { key, suffix } => {
                self.append(key, &suffix);
                Response::Ok
            }
            Op::AppendBoth { key, other, suffix } => {
                for key in [key, other] {
                    self.append(key, &suffix);
                }
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
        }
    }
}

impl StateMachine for Kv {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let Some(op) = fold_and_decode(&mut self.digest, context, &command) else {
            return Ok(Bytes::new());
        };
        Ok(encode_response(&self.execute(op)))
    }

    fn query(&self, query: Bytes) -> Result<Bytes, StateMachineError> {
        match query.first() {
            Some(&QUERY_GET) => Ok(encode_response(&Response::Value(self.get(&query[1..])))),
            Some(&QUERY_DIGEST) => Ok(Bytes::copy_from_slice(&self.digest.to_be_bytes())),
            _ => Err(StateMachineError(format!("unknown query {query:?}"))),
        }
    }

    /// Tag, version, digest, the map, then the client table.
    fn snapshot(&self, sink: &mut dyn Write) -> Result<(), StateMachineError> {
        let mut buf = BytesMut::new();
        buf.put_u8(SNAPSHOT_TAG);
        buf.put_u8(SNAPSHOT_VERSION);
        buf.put_u64(self.digest);
        buf.put_u32(self.map.len() as u32);
        for (key, value) in &self.map {
            buf.put_u16(key.len() as u16);
            buf.put_slice(key);
            buf.put_u32(value.len() as u32);
            buf.put_slice(value);
        }
        sink.write_all(&buf)?;
        self.table.write_to(sink)?;
        Ok(())
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let malformed =
            |what: &str| StateMachineError(format!("malformed key-value snapshot: {what}"));
        let mut data = Vec::new();
        source.read_to_end(&mut data)?;
        let mut reader = Reader {
            data: Bytes::from(data),
        };
        if reader.u8() != Some(SNAPSHOT_TAG) || reader.u8() != Some(SNAPSHOT_VERSION) {
            return Err(malformed("bad tag or version"));
        }
        let digest = reader.u64().ok_or_else(|| malformed("short header"))?;
        let keys = reader.u32().ok_or_else(|| malformed("no key count"))?;
        let mut map = BTreeMap::new();
        for _ in 0..keys {
            let key = reader.bytes16().ok_or_else(|| malformed("short key"))?;
            let value = reader.bytes32().ok_or_else(|| malformed("short value"))?;
            map.insert(key, value);
        }
        let table = ClientTable::read_from(&mut &reader.data[..])
            .map_err(|error| malformed(&format!("client table: {error}")))?;
        *self = Kv { map, table, digest };
        Ok(())
    }

    fn client_table(&mut self) -> Option<&mut ClientTable> {
        Some(&mut self.table)
    }
}

#[cfg(test)]
mod tests {
    use concord_types::RequestId;

    use super::*;

    fn apply(kv: &mut Kv, index: u64, op: Op) -> Response {
        let mut events = Vec::new();
        let mut context = ApplyContext::new(index, 1, None, &mut events);
        decode_response(&kv.apply(&mut context, encode_op(&op)).unwrap()).unwrap()
    }

    // Ops and responses round-trip through their encoding, and foreign payloads are not
    // misread.
    #[test]
    fn encodings_round_trip() {
        let ops = [
            Op::put("k", "v"),
            Op::append("k", "x"),
            Op::cas("k", Some("v"), "w"),
            Op::cas("k", None::<Bytes>, "w"),
            Op::get("k"),
        ];
        for op in ops {
            let encoded = encode_op(&op);
            assert_eq!(decode_op(&encoded), Some(op));
            for cut in 0..encoded.len() {
                assert_eq!(decode_op(&encoded.slice(..cut)), None);
            }
        }
        assert_eq!(decode_op(&Bytes::from_static(b"hello")), None);
        for response in [
            Response::Ok,
            Response::Value(None),
            Response::value(Some("v")),
            Response::Cas(true),
            Response::Cas(false),
        ] {
            assert_eq!(decode_response(&encode_response(&response)), Some(response));
        }
    }

    // A snapshot restores the map, the client table (so retries stay deduplicated)
    // and the digest.
    #[test]
    fn snapshot_round_trips() {
        let mut kv = Kv::new(ClientTableLimits::default());
        assert_eq!(apply(&mut kv, 1, Op::put("a", "1")), Response::Ok);
        assert_eq!(
            apply(&mut kv, 2, Op::cas("b", None::<Bytes>, "2")),
            Response::Cas(true)
        );
        let table = kv.client_table().unwrap();
        table.register(3);
        let id = RequestId {
            client: 3,
            sequence: 1,
            first_unanswered: 1,
        };
        table.admit(&id, 4);
        table.record(&id, Bytes::from_static(b"x"));
        let mut data = Vec::new();
        kv.snapshot(&mut data).unwrap();
        let mut restored = Kv::new(ClientTableLimits::default());
        restored.restore(&mut &data[..]).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(
            restored.client_table().unwrap().admit(&id, 5),
            concord_group::Admission::Answered(Bytes::from_static(b"x"))
        );
        let mut bad = Kv::new(ClientTableLimits::default());
        assert!(bad.restore(&mut &b"S\x02"[..]).is_err());
    }
}
