//! The replicated state: a sorted map of strings, its commands and queries, and how
//! each travels as bytes.
//!
//! Every value has one encoding, strict in both directions: lengths are big-endian
//! `u32`s, strings are UTF-8, and decoding refuses unknown tags, short input and
//! trailing bytes. The snapshot is the map itself in the same encoding.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use std::io::{Read, Write};

use concord_node::{ApplyContext, DecodeError, LogEntry, StateMachineError, TypedStateMachine};

/// A change to the map: what a proposal carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Removes `key` (a no-op when it is absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// What applying a [`Command`] answers: the value the key held before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous(pub Option<String>);

/// A read of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The value of `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Keys starting with `prefix` and their values, in key order, at most `limit`.
    List {
        /// Only keys that start with this (empty: every key).
        prefix: String,
        /// Most entries answered.
        limit: u32,
    },
}

/// What a [`Query`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResponse {
    /// The value of the key asked for, if it is set.
    Value(Option<String>),
    /// Keys and values, in key order.
    Entries(Vec<(String, String)>),
}

/// The state machine: a `BTreeMap<String, String>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    entries: BTreeMap<String, String>,
}

impl Store {
    /// The map as it is.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }
}

impl TypedStateMachine for Store {
    type Command = Command;
    type Response = Previous;
    type Query = Query;
    type QueryResponse = QueryResponse;

    fn apply(&mut self, _context: &mut ApplyContext<'_>, command: Command) -> Previous {
        match command {
            Command::Put { key, value } => Previous(self.entries.insert(key, value)),
            Command::Delete { key } => Previous(self.entries.remove(&key)),
        }
    }

    fn query(&self, query: Query) -> QueryResponse {
        match query {
            Query::Get { key } => QueryResponse::Value(self.entries.get(&key).cloned()),
            Query::List { prefix, limit } => QueryResponse::Entries(
                self.entries
                    .range(prefix.clone()..)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .take(limit as usize)
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ),
        }
    }

    fn snapshot(&self, sink: &mut dyn Write) -> std::io::Result<()> {
        let mut writer = Writer::default();
        writer.u32(SNAPSHOT_VERSION);
        writer.u64(self.entries.len() as u64);
        sink.write_all(&writer.finish())?;
        // One entry at a time: the sink never sees the whole map in one buffer.
        for (key, value) in &self.entries {
            let mut writer = Writer::default();
            writer.string(key);
            writer.string(value);
            sink.write_all(&writer.finish())?;
        }
        Ok(())
    }

    fn restore(&mut self, source: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut snapshot = Vec::new();
        source
            .read_to_end(&mut snapshot)
            .map_err(|error| StateMachineError(format!("reading the snapshot: {error}")))?;
        let decode = || -> Result<BTreeMap<String, String>, DecodeError> {
            let mut reader = Reader::new(&snapshot);
            let version = reader.u32()?;
            if version != SNAPSHOT_VERSION {
                return Err(DecodeError(format!(
                    "snapshot version {version}, expected {SNAPSHOT_VERSION}"
                )));
            }
            let count = reader.u64()?;
            let mut entries = BTreeMap::new();
            for _ in 0..count {
                let key = reader.string()?;
                let value = reader.string()?;
                if let Some((last, _)) = entries.last_key_value() {
                    if *last >= key {
                        return Err(DecodeError(format!("key {key:?} out of order")));
                    }
                }
                entries.insert(key, value);
            }
            reader.end()?;
            Ok(entries)
        };
        self.entries = decode().map_err(|error| StateMachineError(format!("snapshot: {error}")))?;
        Ok(())
    }
}

/// The snapshot format's version (its first four bytes).
const SNAPSHOT_VERSION: u32 = 1;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_GET: u8 = 1;
const TAG_LIST: u8 = 2;
const TAG_VALUE: u8 = 1;
const TAG_ENTRIES: u8 = 2;
const TAG_NONE: u8 = 0;
const TAG_SOME: u8 = 1;

impl LogEntry for Command {
    fn encode(&self) -> Bytes {
        let mut writer = Writer::default();
        match self {
            Command::Put { key, value } => {
                writer.u8(TAG_PUT);
                writer.string(key);
                writer.string(value);
            }
            Command::Delete { key } => {
                writer.u8(TAG_DELETE);
                writer.string(key);
            }
        }
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let command = match reader.u8()? {
            TAG_PUT => Command::Put {
                key: reader.string()?,
                value: reader.string()?,
            },
            TAG_DELETE => Command::Delete {
                key: reader.string()?,
            },
            tag => return Err(DecodeError(format!("unknown command tag {tag}"))),
        };
        reader.end()?;
        Ok(command)
    }
}

impl LogEntry for Previous {
    fn encode(&self) -> Bytes {
        let mut writer = Writer::default();
        writer.optional_string(self.0.as_deref());
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let previous = reader.optional_string()?;
        reader.end()?;
        Ok(Previous(previous))
    }
}

impl LogEntry for Query {
    fn encode(&self) -> Bytes {
        let mut writer = Writer::default();
        match self {
            Query::Get { key } => {
                writer.u8(TAG_GET);
                writer.string(key);
            }
            Query::List { prefix, limit } => {
                writer.u8(TAG_LIST);
                writer.string(prefix);
                writer.u32(*limit);
            }
        }
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let query = match reader.u8()? {
            TAG_GET => Query::Get {
                key: reader.string()?,
            },
            TAG_LIST => Query::List {
                prefix: reader.string()?,
                limit: reader.u32()?,
            },
            tag => return Err(DecodeError(format!("unknown query tag {tag}"))),
        };
        reader.end()?;
        Ok(query)
    }
}

impl LogEntry for QueryResponse {
    fn encode(&self) -> Bytes {
        let mut writer = Writer::default();
        match self {
            QueryResponse::Value(value) => {
                writer.u8(TAG_VALUE);
                writer.optional_string(value.as_deref());
            }
            QueryResponse::Entries(entries) => {
                writer.u8(TAG_ENTRIES);
                writer.u32(entries.len() as u32);
                for (key, value) in entries {
                    writer.string(key);
                    writer.string(value);
                }
            }
        }
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let response = match reader.u8()? {
            TAG_VALUE => QueryResponse::Value(reader.optional_string()?),
            TAG_ENTRIES => {
                let count = reader.u32()?;
                // Each entry takes at least 8 bytes: refuse counts the input cannot hold
                // before allocating for them.
                if count as usize > reader.remaining() / 8 {
                    return Err(DecodeError(format!(
                        "{count} entries in {} bytes",
                        reader.remaining()
                    )));
                }
                let mut entries = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    entries.push((reader.string()?, reader.string()?));
                }
                QueryResponse::Entries(entries)
            }
            tag => return Err(DecodeError(format!("unknown response tag {tag}"))),
        };
        reader.end()?;
        Ok(response)
    }
}

/// Builds an encoding.
#[derive(Default)]
struct Writer(BytesMut);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.put_u8(value);
    }

    fn u32(&mut self, value: u32) {
        self.0.put_u32(value);
    }

    fn u64(&mut self, value: u64) {
        self.0.put_u64(value);
    }

    fn string(&mut self, value: &str) {
        let length = u32::try_from(value.len()).expect("strings are under 4 GiB");
        self.0.put_u32(length);
        self.0.put_slice(value.as_bytes());
    }

    fn optional_string(&mut self, value: Option<&str>) {
        match value {
            None => self.u8(TAG_NONE),
            Some(value) => {
                self.u8(TAG_SOME);
                self.string(value);
            }
        }
    }

    fn finish(self) -> Bytes {
        self.0.freeze()
    }
}

/// Reads an encoding, refusing anything short or malformed.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < count {
            return Err(DecodeError(format!(
                "needed {count} more bytes, {} left",
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|error| DecodeError(format!("a string is not UTF-8: {error}")))
    }

    fn optional_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            TAG_NONE => Ok(None),
            TAG_SOME => Ok(Some(self.string()?)),
            tag => Err(DecodeError(format!("unknown option tag {tag}"))),
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(store: &mut Store, index: u64, command: Command) -> Previous {
        let mut events = Vec::new();
        let mut context = ApplyContext::new(index, 1, None, &mut events);
        store.apply(&mut context, command)
    }

    fn snapshot(store: &Store) -> Bytes {
        let mut data = Vec::new();
        store.snapshot(&mut data).unwrap();
        Bytes::from(data)
    }

    fn restore(store: &mut Store, snapshot: Bytes) -> Result<(), StateMachineError> {
        store.restore(&mut &snapshot[..])
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            ("[a-c]{0,3}", ".{0,8}").prop_map(|(key, value)| Command::Put { key, value }),
            "[a-c]{0,3}".prop_map(|key| Command::Delete { key }),
        ]
    }

    proptest! {
        // The store is a map: after any commands, it holds what a plain BTreeMap
        // holds, every response is the previous value, and list answers the keys
        // with the prefix in order. Its snapshot restores to an equal store.
        #[test]
        fn store_matches_a_map_and_survives_a_snapshot(
            commands in proptest::collection::vec(command(), 0..64),
            prefix in "[a-c]{0,2}",
            limit in 0u32..8,
        ) {
            let mut store = Store::default();
            let mut model = BTreeMap::new();
            for (index, command) in commands.into_iter().enumerate() {
                let expected = match &command {
                    Command::Put { key, value } => model.insert(key.clone(), value.clone()),
                    Command::Delete { key } => model.remove(key),
                };
                // Through the bytes, as the node applies it.
                let decoded = Command::decode(&command.encode()).unwrap();
                prop_assert_eq!(&decoded, &command);
                let previous = apply(&mut store, index as u64 + 1, decoded);
                prop_assert_eq!(previous, Previous(expected));
            }
            prop_assert_eq!(store.entries(), &model);
            let listed = store.query(Query::List { prefix: prefix.clone(), limit });
            let expected: Vec<(String, String)> = model
                .iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .take(limit as usize)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            prop_assert_eq!(listed, QueryResponse::Entries(expected));

            let mut restored = Store::default();
            restore(&mut restored, snapshot(&store)).unwrap();
            prop_assert_eq!(restored, store);
        }

        // Queries and responses decode to what was encoded; any strict prefix of an
        // encoding, and an encoding with a byte appended, are refused.
        #[test]
        fn encodings_round_trip_and_refuse_short_or_long_input(
            key in ".{0,6}",
            value in proptest::option::of(".{0,6}"),
            limit in any::<u32>(),
        ) {
            let encodings = [
                Command::Put { key: key.clone(), value: value.clone().unwrap_or_default() }.encode(),
                Command::Delete { key: key.clone() }.encode(),
                Previous(value.clone()).encode(),
                Query::Get { key: key.clone() }.encode(),
                Query::List { prefix: key.clone(), limit }.encode(),
                QueryResponse::Value(value.clone()).encode(),
                QueryResponse::Entries(vec![(key.clone(), value.clone().unwrap_or_default())]).encode(),
            ];
            prop_assert_eq!(Previous::decode(&encodings[2]).unwrap(), Previous(value.clone()));
            prop_assert_eq!(
                Query::decode(&encodings[4]).unwrap(),
                Query::List { prefix: key.clone(), limit }
            );
            prop_assert_eq!(
                QueryResponse::decode(&encodings[5]).unwrap(),
                QueryResponse::Value(value.clone())
            );
            for (position, encoding) in encodings.iter().enumerate() {
                let decodes = |bytes: &[u8]| match position {
                    0 | 1 => Command::decode(bytes).is_ok(),
                    2 => Previous::decode(bytes).is_ok(),
                    3 | 4 => Query::decode(bytes).is_ok(),
                    _ => QueryResponse::decode(bytes).is_ok(),
                };
                prop_assert!(decodes(encoding));
                for length in 0..encoding.len() {
                    prop_assert!(!decodes(&encoding[..length]), "prefix {} of {:?}", length, encoding);
                }
                let mut longer = encoding.to_vec();
                longer.push(0);
                prop_assert!(!decodes(&longer));
            }
        }
    }

    // A snapshot that is not one is refused, and the store keeps its state.
    #[test]
    fn bad_snapshots_are_refused() {
        let mut store = Store::default();
        apply(
            &mut store,
            1,
            Command::Put {
                key: "a".into(),
                value: "1".into(),
            },
        );
        let good = snapshot(&store);
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"\0\0\0\x02\0\0\0\0\0\0\0\0"),
            good.slice(..good.len() - 1),
        ] {
            let mut target = store.clone();
            assert!(restore(&mut target, bad).is_err());
            assert_eq!(target, store);
        }
        let mut out_of_order = Writer::default();
        out_of_order.u32(SNAPSHOT_VERSION);
        out_of_order.u64(2);
        for key in ["b", "a"] {
            out_of_order.string(key);
            out_of_order.string("v");
        }
        assert!(restore(&mut Store::default(), out_of_order.finish()).is_err());
    }
}
