//! Tests of the client history recorder.

use concord_sim::history::{History, Op, Outcome, Response};

// Proves that a history prints one operation a line, ordered by invocation time, with
// every kind of outcome spelled out, including an unknown one settled later.
#[test]
fn display_lists_operations_by_invocation_time() {
    let mut history = History::new();
    let put = history.invoke(1, Op::put("k", "v"), 20);
    let get = history.invoke(2, Op::get("k"), 10);
    let cas = history.invoke(3, Op::cas("k", None::<&'static str>, "w"), 30);
    let append = history.invoke(4, Op::append("k", "\n"), 40);
    let read_absent = history.invoke(5, Op::get("other"), 50);
    history.complete(get, Response::value(Some("v")), 25);
    history.complete(put, Response::Ok, 35);
    history.fail(cas, 45);
    history.unknown(append);
    history.complete(read_absent, Response::Value(None), 55);
    history.invoke(1, Op::get("k"), 60);
    let settled = history.invoke(6, Op::put("k", "z"), 70);
    history.unknown(settled);
    history.took_effect(settled, 80);

    assert_eq!(
        history.to_string(),
        "op 1  client 2  [10, 25]  get \"k\" -> \"v\"\n\
         op 0  client 1  [20, 35]  put \"k\" \"v\" -> ok\n\
         op 2  client 3  [30, 45]  cas \"k\" none => \"w\" -> failed, no effect\n\
         op 3  client 4  [40, ?]  append \"k\" \"\\n\" -> unknown\n\
         op 4  client 5  [50, 55]  get \"other\" -> none\n\
         op 5  client 1  [60, ?]  get \"k\" -> pending\n\
         op 6  client 6  [70, 80]  put \"k\" \"z\" -> took effect, response unknown\n"
    );
    assert_eq!(
        history.operation(put).outcome,
        Outcome::Completed {
            time: 35,
            response: Response::Ok
        }
    );
}

// Proves that the recorder refuses a second operation from a client whose first one
// is still pending: a client's operations are sequential.
#[test]
#[should_panic(expected = "client 1 invoked `get \"k\"` while op 0 is pending")]
fn invoking_while_pending_panics() {
    let mut history = History::new();
    history.invoke(1, Op::put("k", "v"), 0);
    history.invoke(1, Op::get("k"), 5);
}

// Proves that the recorder refuses a response of the wrong kind for the operation.
#[test]
#[should_panic(expected = "cannot respond")]
fn completing_with_wrong_response_kind_panics() {
    let mut history = History::new();
    let put = history.invoke(1, Op::put("k", "v"), 0);
    history.complete(put, Response::Cas(true), 5);
}

// Proves that the recorder refuses a completion earlier than the invocation.
#[test]
#[should_panic(expected = "before its invocation")]
fn completing_before_invocation_panics() {
    let mut history = History::new();
    let put = history.invoke(1, Op::put("k", "v"), 10);
    history.complete(put, Response::Ok, 5);
}

// Proves that after an unknown outcome the client may move on to a new operation.
#[test]
fn client_moves_on_after_unknown_outcome() {
    let mut history = History::new();
    let put = history.invoke(1, Op::put("k", "v"), 0);
    history.unknown(put);
    let get = history.invoke(1, Op::get("k"), 5);
    history.complete(get, Response::Value(None), 6);
    assert_eq!(history.len(), 2);
}
