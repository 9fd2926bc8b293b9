//! Exactly-once application of client requests (Raft thesis §6.3).
//!
//! A client registers through the log and is given an id (the index of its
//! registration entry). Each of its requests then carries a [`RequestId`]: the id, a
//! request number, and the lowest number whose answer the client has not yet seen.
//! The [`ClientTable`] keeps, per client, the results of requests not yet known to be
//! answered: a request seen again is answered from the table without being applied a
//! second time, however many copies reach the log and whichever node proposed them.
//!
//! The table is bounded ([`ClientTableLimits`]); when full, registering a client
//! evicts the one least recently active. A request from a client the table does not
//! know (evicted, expired, or never registered) is refused and never applied: the
//! client cannot know whether its earlier unanswered requests applied, and must say
//! so rather than retry blindly.
//!
//! Everything here is deterministic and driven by log indexes, so every replica's
//! table is the same at the same index. The table is a value a state machine embeds
//! (and writes into its snapshot); [`crate::ExactlyOnce`] does that for a plain state
//! machine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use bytes::Bytes;
use concord_raft::Index;
use concord_types::{ApiError, ClientId, RequestId};

/// Bounds of a [`ClientTable`]. They decide what is applied, so every replica of a
/// group must use the same; a table restored from a snapshot keeps the snapshot's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTableLimits {
    /// Most clients registered at once; registering one more evicts the least
    /// recently active.
    pub clients_max: u32,
    /// Most results kept per client for requests it has not acknowledged; a request
    /// beyond it is refused (not applied).
    pub unanswered_per_client_max: u32,
}

impl Default for ClientTableLimits {
    fn default() -> Self {
        ClientTableLimits {
            clients_max: 10_000,
            unanswered_per_client_max: 1024,
        }
    }
}

/// Why a request was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The table does not know the client (evicted, expired, or never registered).
    UnknownClient,
    /// The client said it had the answer already (its number is below the client's
    /// first unanswered): a copy delayed past its own answer.
    AlreadyAnswered {
        /// The client's first unanswered request number, as the table knows it.
        first_unanswered: u64,
    },
    /// The client has too many requests whose answers it has not acknowledged.
    TooManyUnanswered {
        /// The limit.
        limit: u32,
    },
}

impl Refusal {
    /// The error the proposer of the refused request gets.
    pub fn to_api_error(&self, id: &RequestId) -> ApiError {
        match self {
            Refusal::UnknownClient => ApiError::ClientUnknown { client: id.client },
            Refusal::AlreadyAnswered { first_unanswered } => ApiError::InvalidRequest(format!(
                "request {} of client {} was already answered (the client acknowledged \
                 every request below {first_unanswered})",
                id.sequence, id.client
            )),
            Refusal::TooManyUnanswered { limit } => ApiError::Busy(format!(
                "client {} has {limit} requests whose answers it has not acknowledged \
                 (unanswered_per_client_max)",
                id.client
            )),
        }
    }
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new request: apply it, then [`ClientTable::record`] its result.
    Apply,
    /// A repeat of a request that applied: here is its result. Do not apply it.
    Answered(Bytes),
    /// Not applied, and not to be.
    Refused(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ClientRecord {
    /// Index of the latest entry of this client (its registration at first).
    last_active: Index,
    /// Every request numbered below this was answered: its result is forgotten.
    // Invariant: every key of `results` is >= first_unanswered.
    first_unanswered: u64,
    /// Results of applied requests not yet acknowledged, by request number.
    results: BTreeMap<u64, Bytes>,
}

/// The exactly-once table of one group (or one bucket). See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTable {
    limits: ClientTableLimits,
    clients: BTreeMap<ClientId, ClientRecord>,
    /// (last active index, client) of every client: the eviction order.
    // Invariant: holds exactly one pair per client, with its `last_active`.
    by_activity: BTreeSet<(Index, ClientId)>,
}

/// The version of [`ClientTable::write_to`]'s format.
const TABLE_FORMAT_VERSION: u8 = 1;

impl ClientTable {
    /// An empty table with these limits.
    pub fn new(limits: ClientTableLimits) -> ClientTable {
        ClientTable {
            limits,
            clients: BTreeMap::new(),
            by_activity: BTreeSet::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ClientTableLimits {
        self.limits
    }

    /// Clients registered.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no client is registered.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// True when `client` is registered.
    pub fn contains(&self, client: ClientId) -> bool {
        self.clients.contains_key(&client)
    }

    /// Registers a client with the registration entry at `index`; returns its id (the
    /// index) and the client evicted to make room, if any.
    pub fn register(&mut self, index: Index) -> (ClientId, Option<ClientId>) {
        assert!(index > 0, "a registration entry has an index");
        let mut evicted = None;
        if self.clients.len() >= self.limits.clients_max.max(1) as usize {
            if let Some(&(_, oldest)) = self.by_activity.first() {
                self.expire(oldest);
                evicted = Some(oldest);
            }
        }
        let client = index;
        if let Some(old) = self.clients.insert(
            client,
            ClientRecord {
                last_active: index,
                first_unanswered: 1,
                results: BTreeMap::new(),
            },
        ) {
            // Entries are applied once each, so an index registers at most once.
            self.by_activity.remove(&(old.last_active, client));
        }
        self.by_activity.insert((index, client));
        (client, evicted)
    }

    /// Forgets `client` (its session ended); returns whether it was registered.
    pub fn expire(&mut self, client: ClientId) -> bool {
        match self.clients.remove(&client) {
            Some(record) => {
                self.by_activity.remove(&(record.last_active, client));
                true
            }
            None => false,
        }
    }

    /// Decides what to do with request `id`, carried by the entry at `index`.
    pub fn admit(&mut self, id: &RequestId, index: Index) -> Admission {
        let Some(record) = self.clients.get_mut(&id.client) else {
            return Admission::Refused(Refusal::UnknownClient);
        };
        if index > record.last_active {
            self.by_activity.remove(&(record.last_active, id.client));
            record.last_active = index;
            self.by_activity.insert((index, id.client));
        }
        if id.first_unanswered > record.first_unanswered {
            record.first_unanswered = id.first_unanswered;
            record.results = record.results.split_off(&id.first_unanswered);
        }
        if id.sequence < record.first_unanswered {
            return Admission::Refused(Refusal::AlreadyAnswered {
                first_unanswered: record.first_unanswered,
            });
        }
        if let Some(result) = record.results.get(&id.sequence) {
            return Admission::Answered(result.clone());
        }
        if record.results.len() >= self.limits.unanswered_per_client_max.max(1) as usize {
            return Admission::Refused(Refusal::TooManyUnanswered {
                limit: self.limits.unanswered_per_client_max,
            });
        }
        Admission::Apply
    }

    /// Keeps the result of request `id`, which [`ClientTable::admit`] said to apply
    /// and which was applied.
    pub fn record(&mut self, id: &RequestId, result: Bytes) {
        let record = self
            .clients
            .get_mut(&id.client)
            .expect("record follows admit, which found the client");
        debug_assert!(id.sequence >= record.first_unanswered);
        let previous = record.results.insert(id.sequence, result);
        debug_assert!(previous.is_none(), "request {id:?} applied twice");
    }

    /// Writes the table (limits included) in a versioned binary format.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&[TABLE_FORMAT_VERSION])?;
        out.write_all(&self.limits.clients_max.to_be_bytes())?;
        out.write_all(&self.limits.unanswered_per_client_max.to_be_bytes())?;
        out.write_all(&(self.clients.len() as u64).to_be_bytes())?;
        for (&client, record) in &self.clients {
            out.write_all(&client.to_be_bytes())?;
            out.write_all(&record.last_active.to_be_bytes())?;
            out.write_all(&record.first_unanswered.to_be_bytes())?;
            out.write_all(&(record.results.len() as u32).to_be_bytes())?;
            for (&sequence, result) in &record.results {
                out.write_all(&sequence.to_be_bytes())?;
                out.write_all(&(result.len() as u32).to_be_bytes())?;
                out.write_all(result)?;
            }
        }
        Ok(())
    }

    /// Reads a table written by [`ClientTable::write_to`].
    pub fn read_from(input: &mut dyn Read) -> io::Result<ClientTable> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let version = read_u8(input)?;
        if version != TABLE_FORMAT_VERSION {
            return Err(invalid(format!(
                "client table format version {version} is unknown (this version reads \
                 {TABLE_FORMAT_VERSION})"
            )));
        }
        let limits = ClientTableLimits {
            clients_max: read_u32(input)?,
            unanswered_per_client_max: read_u32(input)?,
        };
        let mut table = ClientTable::new(limits);
        let count = read_u64(input)?;
        for _ in 0..count {
            let client = read_u64(input)?;
            let last_active = read_u64(input)?;
            let first_unanswered = read_u64(input)?;
            let results_count = read_u32(input)?;
            let mut results = BTreeMap::new();
            for _ in 0..results_count {
                let sequence = read_u64(input)?;
                if sequence < first_unanswered {
                    return Err(invalid(format!(
                        "client {client} keeps a result for request {sequence}, below its \
                         first unanswered {first_unanswered}"
                    )));
                }
                let length = read_u32(input)? as usize;
                let mut result = vec![0; length];
                input.read_exact(&mut result)?;
                results.insert(sequence, Bytes::from(result));
            }
            if table
                .clients
                .insert(
                    client,
                    ClientRecord {
                        last_active,
                        first_unanswered,
                        results,
                    },
                )
                .is_some()
            {
                return Err(invalid(format!("client {client} appears twice")));
            }
            table.by_activity.insert((last_active, client));
        }
        Ok(table)
    }
}

fn read_u8(input: &mut dyn Read) -> io::Result<u8> {
    let mut buf = [0; 1];
    input.read_exact(&mut buf)?;
    Ok(buf[0])
}

fn read_u32(input: &mut dyn Read) -> io::Result<u32> {
    let mut buf = [0; 4];
    input.read_exact(&mut buf)?;
    Ok(u32::from_be_bytes(buf))
}

fn read_u64(input: &mut dyn Read) -> io::Result<u64> {
    let mut buf = [0; 8];
    input.read_exact(&mut buf)?;
    Ok(u64::from_be_bytes(buf))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn id(client: ClientId, sequence: u64, first_unanswered: u64) -> RequestId {
        RequestId {
            client,
            sequence,
            first_unanswered,
        }
    }

    /// Raft thesis §6.3: a repeated request is answered from the table, not applied
    /// again; results are forgotten once acknowledged; a copy delayed past its own
    /// acknowledgement is refused.
    #[test]
    fn repeats_are_answered_from_the_table() {
        let mut table = ClientTable::new(ClientTableLimits::default());
        let (client, evicted) = table.register(5);
        assert_eq!((client, evicted), (5, None));
        assert_eq!(table.admit(&id(5, 1, 1), 6), Admission::Apply);
        table.record(&id(5, 1, 1), Bytes::from_static(b"one"));
        assert_eq!(
            table.admit(&id(5, 1, 1), 7),
            Admission::Answered(Bytes::from_static(b"one"))
        );
        assert_eq!(table.admit(&id(5, 2, 2), 8), Admission::Apply);
        table.record(&id(5, 2, 2), Bytes::from_static(b"two"));
        assert_eq!(
            table.admit(&id(5, 1, 1), 9),
            Admission::Refused(Refusal::AlreadyAnswered {
                first_unanswered: 2
            })
        );
        assert_eq!(
            table.admit(&id(5, 2, 1), 10),
            Admission::Answered(Bytes::from_static(b"two"))
        );
        assert_eq!(
            table.admit(&id(6, 1, 1), 11),
            Admission::Refused(Refusal::UnknownClient)
        );
    }

    /// The table is bounded: the least recently active client is evicted, and its
    /// next request is refused, never applied.
    #[test]
    fn the_least_recently_active_client_is_evicted() {
        let mut table = ClientTable::new(ClientTableLimits {
            clients_max: 2,
            unanswered_per_client_max: 2,
        });
        table.register(1);
        table.register(2);
        assert_eq!(table.admit(&id(1, 1, 1), 3), Admission::Apply);
        table.record(&id(1, 1, 1), Bytes::new());
        // Client 2 is now the least recently active.
        assert_eq!(table.register(4), (4, Some(2)));
        assert_eq!(
            table.admit(&id(2, 1, 1), 5),
            Admission::Refused(Refusal::UnknownClient)
        );
        assert!(table.contains(1) && table.contains(4) && table.len() == 2);
        // Per-client bound on unacknowledged results.
        assert_eq!(table.admit(&id(1, 2, 1), 6), Admission::Apply);
        table.record(&id(1, 2, 1), Bytes::new());
        assert_eq!(
            table.admit(&id(1, 3, 1), 7),
            Admission::Refused(Refusal::TooManyUnanswered { limit: 2 })
        );
        assert_eq!(table.admit(&id(1, 3, 2), 8), Admission::Apply);
        assert!(table.expire(1));
        assert!(!table.expire(1));
    }

    #[test]
    fn tables_round_trip_and_refuse_damage() {
        let mut table = ClientTable::new(ClientTableLimits {
            clients_max: 7,
            unanswered_per_client_max: 3,
        });
        table.register(1);
        table.register(2);
        table.admit(&id(2, 1, 1), 3);
        table.record(&id(2, 1, 1), Bytes::from_static(b"r"));
        let mut bytes = Vec::new();
        table.write_to(&mut bytes).unwrap();
        let read = ClientTable::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(read, table);
        for cut in 0..bytes.len() {
            assert!(
                ClientTable::read_from(&mut &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut newer = bytes.clone();
        newer[0] = 2;
        let error = ClientTable::read_from(&mut &newer[..]).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }

    #[derive(Clone, Debug)]
    enum Step {
        Register,
        /// A request of the nth registered client (modulo), numbered `sequence`, with
        /// the client's acknowledgement moved forward by `ack`.
        Request {
            client: usize,
            sequence: u64,
            ack: u64,
        },
        Expire {
            client: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => Just(Step::Register),
            6 => (0..4usize, 1..12u64, 0..3u64)
                .prop_map(|(client, sequence, ack)| Step::Request { client, sequence, ack }),
            1 => (0..4usize).prop_map(|client| Step::Expire { client }),
        ]
    }

    proptest! {
        /// Against a model that remembers every result forever: a request is applied
        /// at most once; a repeat gets the first result; nothing is applied for a
        /// client the table refused as unknown; the table never holds more clients
        /// than allowed; and a snapshot reads back equal.
        #[test]
        fn applies_each_request_at_most_once(steps in proptest::collection::vec(step(), 1..120)) {
            let limits = ClientTableLimits { clients_max: 3, unanswered_per_client_max: 4 };
            let mut table = ClientTable::new(limits);
            let mut registered: Vec<ClientId> = Vec::new();
            let mut acked: BTreeMap<ClientId, u64> = BTreeMap::new();
            let mut applied: BTreeMap<(ClientId, u64), Bytes> = BTreeMap::new();
            for (offset, step) in steps.into_iter().enumerate() {
                let index = offset as u64 + 1;
                match step {
                    Step::Register => {
                        let (client, evicted) = table.register(index);
                        registered.push(client);
                        if let Some(evicted) = evicted {
                            prop_assert!(!table.contains(evicted));
                        }
                    }
                    Step::Request { client, sequence, ack } if !registered.is_empty() => {
                        let client = registered[client % registered.len()];
                        let first = acked.entry(client).or_insert(1);
                        *first = (*first + ack).min(sequence);
                        let request = id(client, sequence, *first);
                        let known = table.contains(client);
                        match table.admit(&request, index) {
                            Admission::Apply => {
                                prop_assert!(known);
                                prop_assert!(!applied.contains_key(&(client, sequence)),
                                    "request {request:?} applied twice");
                                let result = Bytes::from(format!("{client}.{sequence}@{index}"));
                                applied.insert((client, sequence), result.clone());
                                table.record(&request, result);
                            }
                            Admission::Answered(result) => {
                                prop_assert_eq!(Some(&result), applied.get(&(client, sequence)));
                            }
                            Admission::Refused(Refusal::UnknownClient) => prop_assert!(!known),
                            Admission::Refused(_) => prop_assert!(known),
                        }
                    }
                    Step::Request { .. } => {}
                    Step::Expire { client } if !registered.is_empty() => {
                        table.expire(registered[client % registered.len()]);
                    }
                    Step::Expire { .. } => {}
                }
                prop_assert!(table.len() <= limits.clients_max as usize);
                prop_assert_eq!(table.by_activity.len(), table.clients.len());
            }
            let mut bytes = Vec::new();
            table.write_to(&mut bytes).unwrap();
            prop_assert_eq!(ClientTable::read_from(&mut &bytes[..]).unwrap(), table);
        }
    }
}
