//! The namespace as a group applies it (`concord_group::apply_payload`, the
//! applier's own code): exactly-once requests with retries, transactions included,
//! through snapshots; and commands that are not well formed.

use bytes::Bytes;
use concord_group::exactly_once::ClientTableLimits;
use concord_group::{apply_payload, EntryPayload, StateMachine};
use concord_service::command::{decode, encode, Command, Op, Txn, TxnResponse};
use concord_service::{Limit, Limits, Namespace, NodeValue, Path, ServiceError};
use concord_types::RequestId;
use proptest::prelude::*;

use crate::model::{normalized, small_limits, txn, Model};

/// Applies `payload` at `index` (term 1) as the applier does; the answer's bytes.
fn apply(namespace: &mut Namespace, index: u64, payload: EntryPayload) -> Bytes {
    let mut events = Vec::new();
    apply_payload(namespace, 1, (index, 1), payload, &mut events)
        .unwrap()
        .unwrap()
        .unwrap()
}

fn register(namespace: &mut Namespace, index: u64) -> u64 {
    let answer = apply(namespace, index, EntryPayload::Register);
    u64::from_be_bytes(answer.as_ref().try_into().unwrap())
}

fn answer(bytes: &Bytes) -> Result<TxnResponse, ServiceError> {
    decode::<Result<TxnResponse, ServiceError>>(bytes).unwrap()
}

fn round_trip(namespace: &Namespace) -> Namespace {
    let mut bytes = Vec::new();
    namespace.snapshot(&mut bytes).unwrap();
    let mut restored = Namespace::new(Limits::default(), ClientTableLimits::default());
    restored.restore(&mut bytes.as_slice()).unwrap();
    restored
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // Proves a request sent again (as a client retries after a lost answer, even
    // after a snapshot install) is answered with its first answer and applies once:
    // the namespace ends as a model that applied each transaction once.
    #[test]
    fn retried_requests_apply_once(
        txns in prop::collection::vec(txn(), 1..30),
        repeats in prop::collection::vec(0usize..3, 30),
        snapshot_at in 0usize..30,
    ) {
        let mut namespace = Namespace::new(small_limits(), ClientTableLimits::default());
        let mut model = Model::new(small_limits());
        let mut index = 1;
        let client = register(&mut namespace, index);
        for (number, txn) in txns.iter().enumerate() {
            if number == snapshot_at {
                namespace = round_trip(&namespace);
            }
            let id = RequestId {
                client,
                sequence: number as u64 + 1,
                first_unanswered: number as u64 + 1,
            };
            let command = encode(&Command::Txn(txn.clone()));
            index += 1;
            let first = apply(&mut namespace, index, EntryPayload::Request { id, command: command.clone() });
            let want = normalized(model.apply(txn));
            let got = normalized(answer(&first).map(|response| (response.succeeded, response.results)));
            prop_assert_eq!(got, want);
            for _ in 0..repeats[number] {
                index += 1;
                let again = apply(&mut namespace, index, EntryPayload::Request { id, command: command.clone() });
                prop_assert_eq!(&again, &first);
            }
            model.assert_same(namespace.tree());
        }
    }
}

// Proves the answer carries the entry's index and term and the revision, and that
// a restored namespace equals the original, table included.
#[test]
fn answers_carry_index_term_and_revision_and_snapshots_round_trip() {
    let mut namespace = Namespace::new(Limits::default(), ClientTableLimits::default());
    let client = register(&mut namespace, 1);
    let put = Command::Txn(Txn::single(Op::BlobPut {
        path: Path::parse("/k", 100).unwrap(),
        value: Bytes::from("v"),
    }));
    let id = RequestId {
        client,
        sequence: 1,
        first_unanswered: 1,
    };
    let first = apply(
        &mut namespace,
        7,
        EntryPayload::Request {
            id,
            command: encode(&put),
        },
    );
    let response = answer(&first).unwrap();
    assert_eq!(
        (response.index, response.term, response.revision),
        (7, 1, 1)
    );
    let restored = round_trip(&namespace);
    assert_eq!(restored.tree(), namespace.tree());
    assert_eq!(restored.table(), namespace.table());
}

// Proves commands that are not well formed (bytes that do not decode, trailing
// bytes, another format version, over request_bytes_max) are answered with an error
// saying so on every replica alike, and change nothing.
#[test]
fn malformed_commands_are_refused_and_change_nothing() {
    let mut namespace = Namespace::new(
        Limits {
            request_bytes_max: 64,
            ..Limits::default()
        },
        ClientTableLimits::default(),
    );
    let good = encode(&Command::Txn(Txn::single(Op::Create {
        path: Path::parse("/d", 100).unwrap(),
        value: NodeValue::Dir,
        parents: false,
    })));
    let mut trailing = good.to_vec();
    trailing.push(0);
    let mut other_version = good.to_vec();
    other_version[0] = 9;
    let cases: Vec<(Bytes, &str)> = vec![
        (Bytes::new(), "empty message"),
        (Bytes::from_static(&[1, 200, 200, 200]), "malformed message"),
        (Bytes::from(trailing), "1 bytes after its end"),
        (Bytes::from(other_version), "format version 9"),
        (
            Bytes::from(vec![1; 65]),
            "request_bytes_max exceeded: 65 is over the limit of 64",
        ),
    ];
    for (index, (command, message)) in cases.into_iter().enumerate() {
        let bytes = apply(
            &mut namespace,
            index as u64 + 1,
            EntryPayload::Command(command),
        );
        let error = answer(&bytes).unwrap_err();
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(namespace.tree().revision(), 0);
        assert!(namespace.tree().is_empty());
    }
    let error = answer(&apply(
        &mut namespace,
        10,
        EntryPayload::Command(Bytes::from(vec![1; 65])),
    ))
    .unwrap_err();
    assert!(matches!(
        error,
        ServiceError::LimitExceeded {
            limit: Limit::RequestBytes,
            ..
        }
    ));
    // A well-formed one still applies.
    let response = answer(&apply(&mut namespace, 11, EntryPayload::Command(good))).unwrap();
    assert_eq!(response.revision, 1);
}

// Proves a sealed namespace refuses every later command and query (so nothing is
// acknowledged after its deletion), applies nothing more, and stays sealed through a
// snapshot.
#[test]
fn a_sealed_namespace_refuses_everything_and_stays_sealed() {
    let mut namespace = Namespace::new(Limits::default(), ClientTableLimits::default());
    let put = |value: &'static str| {
        encode(&Command::Txn(Txn::single(Op::BlobPut {
            path: Path::parse("/a", 100).unwrap(),
            value: Bytes::from_static(value.as_bytes()),
        })))
    };
    let query = encode(&concord_service::command::Query {
        revision: None,
        ops: vec![concord_service::command::ReadOp::Get {
            path: Path::parse("/a", 100).unwrap(),
        }],
    });
    assert!(answer(&apply(&mut namespace, 1, EntryPayload::Command(put("one")))).is_ok());
    let sealed = answer(&apply(
        &mut namespace,
        2,
        EntryPayload::Command(encode(&Command::Seal)),
    ));
    assert!(sealed.unwrap().succeeded);
    for round_trips in [1, 2] {
        let mut namespace = if round_trips == 1 {
            round_trip(&namespace)
        } else {
            round_trip(&round_trip(&namespace))
        };
        assert_eq!(
            answer(&apply(&mut namespace, 3, EntryPayload::Command(put("two")))),
            Err(ServiceError::NamespaceDeleted)
        );
        assert_eq!(namespace.tree().revision(), 1);
        let read: Result<concord_service::command::QueryResponse, ServiceError> =
            decode(&namespace.query(query.clone()).unwrap()).unwrap();
        assert_eq!(read, Err(ServiceError::NamespaceDeleted));
    }
    // An unsealed namespace answers the same query.
    let fresh = Namespace::new(Limits::default(), ClientTableLimits::default());
    let read: Result<concord_service::command::QueryResponse, ServiceError> =
        decode(&fresh.query(query).unwrap()).unwrap();
    assert!(matches!(read, Err(ServiceError::NotFound { .. })));
}
