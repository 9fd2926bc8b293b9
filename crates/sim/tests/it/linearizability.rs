//! Tests of the linearizability checker: known-good and known-bad histories, a property
//! test against a sequential model, and a performance sanity check.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_sim::history::{ClientId, History, Op, OpId, Response};
use concord_sim::linearizability::{check, check_with_limits, CheckError, SearchLimits, Violation};
use proptest::prelude::*;

/// Records an operation of `client` that ran from `invoke_time` to `complete_time`.
fn completed(
    history: &mut History,
    client: ClientId,
    op: Op,
    (invoke_time, complete_time): (u64, u64),
    response: Response,
) -> OpId {
    let id = history.invoke(client, op, invoke_time);
    history.complete(id, response, complete_time);
    id
}

/// Records an operation of `client` invoked at `invoke_time` whose outcome is unknown.
fn unknown(history: &mut History, client: ClientId, op: Op, invoke_time: u64) -> OpId {
    let id = history.invoke(client, op, invoke_time);
    history.unknown(id);
    id
}

fn read(value: &'static str) -> Response {
    Response::value(Some(value))
}

fn absent() -> Response {
    Response::Value(None)
}

fn expect_violation(history: &History) -> Violation {
    match check(history) {
        Err(CheckError::Violation(violation)) => *violation,
        other => panic!("expected a violation, got {other:?} for\n{history}"),
    }
}

fn expect_linearizable(history: &History) {
    if let Err(error) = check(history) {
        panic!("{error}\nhistory:\n{history}");
    }
}

// Proves an append to two keys is checked in each key's history: seen on both, it
// passes; acknowledged but missing from the second key's read, it is a violation of
// that key.
#[test]
fn an_append_to_two_keys_is_checked_on_each() {
    let both = || Op::AppendBoth {
        key: Bytes::from("a"),
        other: Bytes::from("b"),
        suffix: Bytes::from("x;"),
    };
    let mut history = History::new();
    completed(&mut history, 1, both(), (0, 1), Response::Ok);
    completed(&mut history, 2, Op::get("a"), (2, 3), read("x;"));
    completed(&mut history, 2, Op::get("b"), (4, 5), read("x;"));
    expect_linearizable(&history);
    completed(&mut history, 3, Op::get("b"), (6, 7), absent());
    let violation = expect_violation(&history);
    assert_eq!(violation.key, Bytes::from("b"), "{violation}");
}

// Proves that a sequential history of every kind of operation, including reads of an
// absent key and of an empty append, passes.
#[test]
fn sequential_history_passes() {
    let mut history = History::new();
    completed(&mut history, 1, Op::get("k"), (0, 1), absent());
    completed(&mut history, 1, Op::append("k", ""), (2, 3), Response::Ok);
    completed(&mut history, 2, Op::get("k"), (4, 5), read(""));
    completed(&mut history, 1, Op::put("k", "a"), (6, 7), Response::Ok);
    completed(&mut history, 2, Op::append("k", "b"), (8, 9), Response::Ok);
    completed(
        &mut history,
        3,
        Op::cas("k", Some("ab"), "c"),
        (10, 11),
        Response::Cas(true),
    );
    completed(
        &mut history,
        3,
        Op::cas("k", Some("ab"), "d"),
        (12, 13),
        Response::Cas(false),
    );
    completed(
        &mut history,
        1,
        Op::cas("j", None::<Bytes>, "x"),
        (14, 15),
        Response::Cas(true),
    );
    completed(&mut history, 2, Op::get("k"), (16, 17), read("c"));
    completed(&mut history, 2, Op::get("j"), (18, 19), read("x"));
    expect_linearizable(&history);
}

// Proves that overlapping writes and reads pass when some order inside their intervals
// explains every response, even one that differs from invocation order.
#[test]
fn concurrent_writes_and_reads_with_a_valid_order_pass() {
    let mut history = History::new();
    // Invoked in the order a, b, but b takes effect first; the reads see b then a.
    completed(&mut history, 1, Op::put("k", "a"), (0, 100), Response::Ok);
    completed(&mut history, 2, Op::put("k", "b"), (10, 100), Response::Ok);
    completed(&mut history, 3, Op::get("k"), (20, 30), read("b"));
    completed(&mut history, 3, Op::get("k"), (40, 50), read("a"));
    // Concurrent appends: a read sees them in one order, and later reads agree.
    completed(&mut history, 4, Op::append("l", "x"), (0, 50), Response::Ok);
    completed(&mut history, 5, Op::append("l", "y"), (0, 50), Response::Ok);
    completed(&mut history, 6, Op::get("l"), (0, 50), read("yx"));
    completed(&mut history, 6, Op::get("l"), (60, 70), read("yx"));
    expect_linearizable(&history);
}

// Proves that an operation completing at the same instant another is invoked counts as
// concurrent with it, so the later one may still take effect first.
#[test]
fn touching_intervals_are_concurrent() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 10), Response::Ok);
    completed(&mut history, 2, Op::get("k"), (10, 20), absent());
    expect_linearizable(&history);
}

// Proves that a write with an unknown outcome that did take effect passes, however
// long after its invocation a read first sees it.
#[test]
fn unknown_write_that_took_effect_passes() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 10), Response::Ok);
    unknown(&mut history, 2, Op::append("k", "b"), 20);
    completed(&mut history, 3, Op::get("k"), (30, 40), read("a"));
    completed(&mut history, 3, Op::get("k"), (1000, 1010), read("ab"));
    completed(&mut history, 1, Op::get("k"), (2000, 2010), read("ab"));
    expect_linearizable(&history);
}

// Proves that a write with an unknown outcome that never took effect passes, and that
// pending operations and unknown reads, whatever they were, change nothing.
#[test]
fn unknown_write_that_never_took_effect_passes() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 10), Response::Ok);
    unknown(&mut history, 2, Op::put("k", "b"), 20);
    unknown(&mut history, 2, Op::get("k"), 25);
    unknown(&mut history, 4, Op::cas("k", Some("a"), "c"), 26);
    completed(&mut history, 3, Op::get("k"), (30, 40), read("a"));
    history.invoke(3, Op::append("k", "z"), 50);
    completed(&mut history, 1, Op::get("k"), (60, 70), read("a"));
    expect_linearizable(&history);
}

// Proves that an unknown write the simulator settled as taken effect by some time must
// be seen by every read invoked after that time, and one settled as failed by none.
#[test]
fn settled_unknown_writes_are_checked_as_settled() {
    let mut history = History::new();
    let put = unknown(&mut history, 1, Op::put("k", "a"), 0);
    let append = unknown(&mut history, 2, Op::append("k", "b"), 0);
    completed(&mut history, 3, Op::get("k"), (30, 40), read("a"));
    history.took_effect(put, 20);
    history.fail(append, 50);
    expect_linearizable(&history);
    completed(&mut history, 3, Op::get("k"), (60, 70), read("ab"));
    expect_violation(&history);

    let mut history = History::new();
    let put = unknown(&mut history, 1, Op::put("k", "a"), 0);
    history.took_effect(put, 20);
    completed(&mut history, 2, Op::get("k"), (30, 40), absent());
    expect_violation(&history);
}

// Proves that a history with only unknown operations, or none at all, passes.
#[test]
fn history_without_completed_operations_passes() {
    expect_linearizable(&History::new());
    let mut history = History::new();
    unknown(&mut history, 1, Op::put("k", "a"), 0);
    expect_linearizable(&history);
}

// Proves that a read returning an old value after a later put completed before the
// read was invoked fails, and that the report names the stuck read, the prefix and the
// value it ends with, exactly.
#[test]
fn stale_read_after_completed_write_fails() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 10), Response::Ok);
    completed(&mut history, 2, Op::put("k", "b"), (20, 30), Response::Ok);
    let stale = completed(&mut history, 3, Op::get("k"), (40, 50), read("a"));

    let violation = expect_violation(&history);
    assert_eq!(violation.key, Bytes::from("k"));
    assert_eq!(
        violation.longest_prefix,
        vec![history.operations()[0].id, history.operations()[1].id]
    );
    assert_eq!(violation.value_after_prefix, Some(Bytes::from("b")));
    assert_eq!(violation.stuck.len(), 1);
    assert_eq!(violation.stuck[0].id, stale);
    assert_eq!(
        violation.to_string(),
        "key \"k\": not linearizable: 2 of its 3 operations form the longest linearizable prefix\n\
         \x20 op 0  client 1  [0, 10]  put \"k\" \"a\" -> ok    => \"a\"\n\
         \x20 op 1  client 2  [20, 30]  put \"k\" \"b\" -> ok    => \"b\"\n\
         value after the prefix: \"b\"\n\
         no operation can go next:\n\
         \x20 op 2  client 3  [40, 50]  get \"k\" -> \"a\"    : read \"a\" but the value is \"b\"\n"
    );
}

// Proves that an acknowledged append that a later read does not show fails.
#[test]
fn lost_acknowledged_append_fails() {
    let mut history = History::new();
    completed(&mut history, 1, Op::append("k", "x"), (0, 10), Response::Ok);
    completed(
        &mut history,
        2,
        Op::append("k", "y"),
        (20, 30),
        Response::Ok,
    );
    completed(
        &mut history,
        3,
        Op::append("k", "z"),
        (25, 35),
        Response::Ok,
    );
    let read_after = completed(&mut history, 1, Op::get("k"), (40, 50), read("xz"));
    let violation = expect_violation(&history);
    assert!(violation.stuck.iter().any(|stuck| stuck.id == read_after));
}

// Proves that two readers seeing two concurrent writes in opposite orders fails: there
// is one order of writes, and both readers must agree with it.
#[test]
fn reads_seeing_writes_in_opposite_orders_fail() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 100), Response::Ok);
    completed(&mut history, 2, Op::put("k", "b"), (0, 100), Response::Ok);
    completed(&mut history, 3, Op::get("k"), (10, 20), read("a"));
    completed(&mut history, 3, Op::get("k"), (30, 40), read("b"));
    completed(&mut history, 4, Op::get("k"), (10, 20), read("b"));
    completed(&mut history, 4, Op::get("k"), (30, 40), read("a"));
    expect_violation(&history);
}

// Proves that a write with an unknown outcome cannot be seen and then unseen: it takes
// effect once or never.
#[test]
fn unknown_write_seen_then_unseen_fails() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "a"), (0, 10), Response::Ok);
    unknown(&mut history, 2, Op::append("k", "b"), 20);
    completed(&mut history, 3, Op::get("k"), (30, 40), read("ab"));
    completed(&mut history, 3, Op::get("k"), (50, 60), read("a"));
    expect_violation(&history);
}

// Proves that a write that certainly failed is left out of the check, so a read that
// sees it fails.
#[test]
fn failed_write_seen_by_a_read_fails() {
    let mut history = History::new();
    let put = history.invoke(1, Op::put("k", "a"), 0);
    history.fail(put, 10);
    completed(&mut history, 2, Op::get("k"), (20, 30), absent());
    expect_linearizable(&history);
    completed(&mut history, 2, Op::get("k"), (40, 50), read("a"));
    expect_violation(&history);
}

// Proves that two compare-and-swaps from the same expected value cannot both succeed,
// while one success and one failure pass.
#[test]
fn double_successful_cas_fails() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "0"), (0, 10), Response::Ok);
    completed(
        &mut history,
        2,
        Op::cas("k", Some("0"), "1"),
        (20, 40),
        Response::Cas(true),
    );
    completed(
        &mut history,
        3,
        Op::cas("k", Some("0"), "2"),
        (20, 40),
        Response::Cas(false),
    );
    expect_linearizable(&history);

    let mut history = History::new();
    completed(&mut history, 1, Op::put("k", "0"), (0, 10), Response::Ok);
    completed(
        &mut history,
        2,
        Op::cas("k", Some("0"), "1"),
        (20, 40),
        Response::Cas(true),
    );
    completed(
        &mut history,
        3,
        Op::cas("k", Some("0"), "2"),
        (20, 40),
        Response::Cas(true),
    );
    expect_violation(&history);
}

// Proves that keys are checked independently: a violation names the key it is on,
// even when other keys, checked first, are fine.
#[test]
fn violation_names_its_key() {
    let mut history = History::new();
    completed(&mut history, 1, Op::put("a", "1"), (0, 10), Response::Ok);
    completed(&mut history, 1, Op::get("a"), (20, 30), read("1"));
    completed(&mut history, 2, Op::put("b", "1"), (0, 10), Response::Ok);
    completed(&mut history, 2, Op::get("b"), (20, 30), absent());
    let violation = expect_violation(&history);
    assert_eq!(violation.key, Bytes::from("b"));
}

// Proves that a search that runs out of steps reports itself inconclusive, never a
// violation, and names its key.
#[test]
fn exhausted_search_is_inconclusive_not_a_violation() {
    let history = stretched_history(&performance_plan(200, 0), None, usize::MAX);
    let limits = SearchLimits {
        search_steps_max: 10,
        ..SearchLimits::default()
    };
    match check_with_limits(&history, &limits) {
        Err(error @ CheckError::Inconclusive(_)) => {
            assert!(!error.is_violation());
            let CheckError::Inconclusive(inconclusive) = &error else {
                unreachable!()
            };
            assert_eq!(inconclusive.key, Bytes::from("k"));
            assert_eq!(inconclusive.keys_inconclusive, 1);
            assert!(error.to_string().contains("undecided"), "{error}");
        }
        other => panic!("expected an inconclusive check, got {other:?}"),
    }
    // A tiny cache runs out the same way.
    let limits = SearchLimits {
        cache_bytes_max: 1,
        ..SearchLimits::default()
    };
    let result = check_with_limits(&history, &limits);
    assert!(
        matches!(result, Err(CheckError::Inconclusive(_))),
        "{result:?}"
    );
}

// Proves the checker is fast enough for the simulator: 2,000 overlapping operations by
// 5 clients on one key, some with unknown outcomes, decide within the default budget.
#[test]
fn two_thousand_overlapping_operations_on_one_key_pass() {
    let history = stretched_history(&performance_plan(2000, 0), None, usize::MAX);
    expect_linearizable(&history);
    // One unknown outcome in fifty, half of which never take effect.
    let history = stretched_history(&performance_plan(2000, 50), None, usize::MAX);
    expect_linearizable(&history);
}

/// One operation of a sequential execution, and how to stretch it into an interval.
#[derive(Clone, Debug)]
struct PlannedOp {
    client: ClientId,
    op: Op,
    fate: Fate,
    /// How far before its linearization point the operation is invoked, at most.
    stretch_before: u64,
    /// How far after its linearization point the operation completes, at most.
    stretch_after: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Takes effect at its point and completes.
    Completed,
    /// Takes effect at its point; its client never learns the outcome.
    UnknownApplied,
    /// Never takes effect; invoked by a client that then vanishes.
    UnknownLost,
}

/// Runs `plan` in order against a map, giving operation `i` the linearization point
/// `100 * (i + 1)`, then stretches each operation's interval around its point by up to
/// its stretches, never past the neighbouring operations of the same client, so the
/// point stays inside the interval and each client stays sequential. Records the
/// history in time order, as the simulator would. If `corrupted` names a completed
/// read, its response becomes the value "#", which no planned write produces. Unknown
/// outcomes past the first `unknowns_max` are settled at the end, as the simulator can
/// by looking at what the replicas applied: `took_effect` by the time the client would
/// have had its answer, or `fail` if never applied.
fn stretched_history(plan: &[PlannedOp], corrupted: Option<usize>, unknowns_max: usize) -> History {
    let point = |index: usize| 100 * (index as u64 + 1);
    // The next linearization point of each operation's client.
    let mut next_point_of_client: BTreeMap<ClientId, u64> = BTreeMap::new();
    let mut next_point = vec![u64::MAX; plan.len()];
    for (index, planned) in plan.iter().enumerate().rev() {
        if planned.fate == Fate::UnknownLost {
            continue;
        }
        if let Some(&next) = next_point_of_client.get(&planned.client) {
            next_point[index] = next;
        }
        next_point_of_client.insert(planned.client, point(index));
    }

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        Invoke,
        Complete,
        Unknown,
    }
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut clients: Vec<ClientId> = Vec::with_capacity(plan.len());
    let mut responses: Vec<Option<Response>> = Vec::with_capacity(plan.len());
    // (time, sequence, event, plan index): the sequence keeps an operation's invocation
    // before its own unknown outcome at the same instant.
    let mut events: Vec<(u64, usize, Event, usize)> = Vec::new();
    let mut earliest_invoke_of_client: BTreeMap<ClientId, u64> = BTreeMap::new();
    // Unknown outcomes settled at the end: plan index, and when it took effect by, if
    // it did.
    let mut settlements: Vec<(usize, Option<u64>)> = Vec::new();
    let mut unknowns = 0;
    let mut settles = || {
        unknowns += 1;
        unknowns > unknowns_max
    };
    for (index, planned) in plan.iter().enumerate() {
        let point = point(index);
        if planned.fate == Fate::UnknownLost {
            // A client of its own that vanishes, so it blocks nobody.
            clients.push(1_000_000 + index as ClientId);
            responses.push(None);
            let invoke_time = point.saturating_sub(planned.stretch_before);
            events.push((invoke_time, events.len(), Event::Invoke, index));
            events.push((invoke_time, events.len(), Event::Unknown, index));
            if settles() {
                settlements.push((index, None));
            }
            continue;
        }
        let mut response = apply(&mut model, &planned.op);
        if corrupted == Some(index) {
            response = read("#");
        }
        clients.push(planned.client);
        responses.push(Some(response));
        let earliest = earliest_invoke_of_client
            .get(&planned.client)
            .copied()
            .unwrap_or(0);
        let invoke_time = point.saturating_sub(planned.stretch_before).max(earliest);
        let complete_time = (point + planned.stretch_after).min(next_point[index] - 1);
        assert!(invoke_time <= point && point <= complete_time);
        earliest_invoke_of_client.insert(planned.client, complete_time + 1);
        events.push((invoke_time, events.len(), Event::Invoke, index));
        let end = match planned.fate {
            Fate::Completed => Event::Complete,
            Fate::UnknownApplied | Fate::UnknownLost => Event::Unknown,
        };
        events.push((complete_time, events.len(), end, index));
        if planned.fate == Fate::UnknownApplied && settles() {
            settlements.push((index, Some(complete_time)));
        }
    }
    events.sort_unstable();

    let mut history = History::new();
    let mut ids: Vec<Option<OpId>> = vec![None; plan.len()];
    for &(time, _, event, index) in &events {
        match event {
            Event::Invoke => {
                ids[index] = Some(history.invoke(clients[index], plan[index].op.clone(), time));
            }
            Event::Complete => {
                let response = responses[index]
                    .clone()
                    .expect("applied operations respond");
                history.complete(ids[index].expect("invoked"), response, time);
            }
            Event::Unknown => history.unknown(ids[index].expect("invoked")),
        }
    }
    let end_time = events.last().map_or(0, |&(time, ..)| time);
    for (index, took_effect_by) in settlements {
        let id = ids[index].expect("invoked");
        match took_effect_by {
            Some(by_time) => history.took_effect(id, by_time),
            None => history.fail(id, end_time),
        }
    }
    history
}

fn append(model: &mut BTreeMap<Bytes, Bytes>, key: &Bytes, suffix: &[u8]) {
    let mut value = model
        .get(key)
        .map(|value| value.to_vec())
        .unwrap_or_default();
    value.extend_from_slice(suffix);
    model.insert(key.clone(), Bytes::from(value));
}

/// Applies `op` to a plain map: the sequential specification.
fn apply(model: &mut BTreeMap<Bytes, Bytes>, op: &Op) -> Response {
    match op {
        Op::Put { key, value } => {
            model.insert(key.clone(), value.clone());
            Response::Ok
        }
        Op::Get { key } => Response::Value(model.get(key).cloned()),
        Op::Append { key, suffix } => {
            append(model, key, suffix);
            Response::Ok
        }
        Op::AppendBoth { key, other, suffix } => {
            append(model, key, suffix);
            append(model, other, suffix);
            Response::Ok
        }
        Op::Cas { key, expected, new } => {
            let swapped = model.get(key) == expected.as_ref();
            if swapped {
                model.insert(key.clone(), new.clone());
            }
            Response::Cas(swapped)
        }
    }
}

/// A deterministic mix of `count` operations by 5 clients on key "k": 40% gets, 35%
/// appends, 15% puts, 10% compare-and-swaps. One in `unknown_one_in` has an unknown
/// outcome (0: none), alternately applied and lost.
fn performance_plan(count: usize, unknown_one_in: u64) -> Vec<PlannedOp> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut unknowns = 0;
    (0..count)
        .map(|_| {
            let letter = |r: u64| Bytes::from(vec![b'a' + (r % 26) as u8]);
            let op = match next() % 100 {
                0..=39 => Op::get("k"),
                40..=74 => Op::append("k", letter(next())),
                75..=89 => Op::put("k", letter(next())),
                _ => Op::cas("k", Some(letter(next())), letter(next())),
            };
            let fate = if unknown_one_in != 0 && next() % unknown_one_in == 0 {
                unknowns += 1;
                if unknowns % 2 == 0 {
                    Fate::UnknownApplied
                } else {
                    Fate::UnknownLost
                }
            } else {
                Fate::Completed
            };
            PlannedOp {
                client: next() % 5,
                op,
                fate,
                stretch_before: next() % 300,
                stretch_after: next() % 300,
            }
        })
        .collect()
}

/// At most this many unknown outcomes are left unsettled in a generated history.
const UNKNOWNS_MAX: usize = 3;

fn small_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(b'v'..=b'z', 1..=2).prop_map(Bytes::from)
}

fn planned_op() -> impl Strategy<Value = PlannedOp> {
    let key = prop::sample::select(vec!["a", "b"]).prop_map(Bytes::from);
    let op = prop_oneof![
        3 => key.clone().prop_map(|key| Op::Get { key }),
        2 => (key.clone(), small_bytes()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => (key.clone(), small_bytes()).prop_map(|(key, suffix)| Op::Append { key, suffix }),
        1 => (key, prop::option::of(small_bytes()), small_bytes())
            .prop_map(|(key, expected, new)| Op::Cas { key, expected, new }),
    ];
    let fate = prop_oneof![
        8 => Just(Fate::Completed),
        1 => Just(Fate::UnknownApplied),
        1 => Just(Fate::UnknownLost),
    ];
    (0..4 as ClientId, op, fate, 0..400u64, 0..400u64).prop_map(
        |(client, op, fate, stretch_before, stretch_after)| PlannedOp {
            client,
            op,
            fate,
            stretch_before,
            stretch_after,
        },
    )
}

proptest! {
    // Proves that any sequential execution of the map, stretched into overlapping
    // intervals that keep each operation's linearization point inside its interval,
    // passes, with some unknown outcomes left unknown or all settled; and that once one
    // completed read is corrupted to a value no write ever produced (values use only
    // the letters v to z), the history fails.
    #[test]
    fn stretched_sequential_executions_pass_and_corrupted_reads_fail(
        plan in prop::collection::vec(planned_op(), 1..60),
        corrupted in any::<prop::sample::Index>(),
    ) {
        // The search costs time exponential in unknown outcomes: keep up to three and
        // settle the rest, as the simulator should, or settle them all.
        for unknowns_max in [UNKNOWNS_MAX, 0] {
            let history = stretched_history(&plan, None, unknowns_max);
            let result = check(&history);
            prop_assert!(result.is_ok(), "{}\nhistory:\n{}", result.unwrap_err(), history);
        }

        let reads: Vec<usize> = (0..plan.len())
            .filter(|&index| plan[index].fate == Fate::Completed && plan[index].op.is_read())
            .collect();
        if reads.is_empty() {
            return Ok(());
        }
        let corrupted_index = reads[corrupted.index(reads.len())];
        let history = stretched_history(&plan, Some(corrupted_index), UNKNOWNS_MAX);
        match check(&history) {
            Err(CheckError::Violation(_)) => {}
            other => prop_assert!(false, "expected a violation, got {:?}\nhistory:\n{}", other, history),
        }
    }
}

/// One operation of a small random history, for comparison against brute force.
#[derive(Clone, Debug)]
struct SmallOperation {
    op: Op,
    invoke_time: u64,
    /// `None`: unknown outcome.
    end: Option<SmallEnd>,
}

#[derive(Clone, Debug)]
struct SmallEnd {
    time: u64,
    /// `None`: the simulator saw it take effect by `time`, response unknown.
    response: Option<Response>,
}

fn small_operation() -> impl Strategy<Value = SmallOperation> {
    let value = prop::sample::select(vec!["a", "b"]).prop_map(Bytes::from);
    let read = prop::sample::select(vec![
        None,
        Some(""),
        Some("a"),
        Some("b"),
        Some("ab"),
        Some("ba"),
    ])
    .prop_map(|read| Response::Value(read.map(Bytes::from)));
    let op_and_response = prop_oneof![
        (value.clone()).prop_map(|value| (
            Op::Put {
                key: Bytes::from("k"),
                value
            },
            Response::Ok
        )),
        (value.clone()).prop_map(|suffix| (
            Op::Append {
                key: Bytes::from("k"),
                suffix
            },
            Response::Ok
        )),
        read.prop_map(|read| (Op::get("k"), read)),
        (prop::option::of(value.clone()), value, any::<bool>()).prop_map(
            |(expected, new, swapped)| {
                (
                    Op::Cas {
                        key: Bytes::from("k"),
                        expected,
                        new,
                    },
                    Response::Cas(swapped),
                )
            }
        ),
    ];
    (op_and_response, 0..20u64, 0..10u64, 0..10u8).prop_map(
        |((op, response), invoke_time, duration, fate)| {
            let time = invoke_time + duration;
            let end = match fate {
                0 | 1 => None,
                2 => Some(SmallEnd {
                    time,
                    response: None,
                }),
                _ => Some(SmallEnd {
                    time,
                    response: Some(response),
                }),
            };
            SmallOperation {
                op,
                invoke_time,
                end,
            }
        },
    )
}

/// Whether `operations` are linearizable, by trying every order real time allows.
fn brute_force_linearizable(operations: &[SmallOperation]) -> bool {
    fn step(value: &Option<Vec<u8>>, operation: &SmallOperation) -> Option<Option<Vec<u8>>> {
        let response = operation.end.as_ref().and_then(|end| end.response.as_ref());
        match (&operation.op, response) {
            (Op::Put { value: new, .. }, _) => Some(Some(new.to_vec())),
            // One key's view of an append to two keys is an append.
            (Op::Append { suffix, .. } | Op::AppendBoth { suffix, .. }, _) => {
                let mut appended = value.clone().unwrap_or_default();
                appended.extend_from_slice(suffix);
                Some(Some(appended))
            }
            (Op::Get { .. }, Some(Response::Value(read))) => {
                (read.as_ref().map(|read| read.to_vec()) == *value).then(|| value.clone())
            }
            (Op::Get { .. }, _) => Some(value.clone()),
            (Op::Cas { expected, new, .. }, response) => {
                let swapped = expected.as_ref().map(|expected| expected.to_vec()) == *value;
                if matches!(response, Some(Response::Cas(recorded)) if *recorded != swapped) {
                    return None;
                }
                Some(if swapped {
                    Some(new.to_vec())
                } else {
                    value.clone()
                })
            }
        }
    }
    fn search(
        operations: &[SmallOperation],
        placed: &mut Vec<bool>,
        value: &Option<Vec<u8>>,
    ) -> bool {
        let required_left =
            (0..operations.len()).any(|index| !placed[index] && operations[index].end.is_some());
        if !required_left {
            return true;
        }
        for index in 0..operations.len() {
            if placed[index] {
                continue;
            }
            // Real time: nothing left may have returned before this one was invoked.
            let blocked = (0..operations.len()).any(|other| {
                !placed[other]
                    && other != index
                    && operations[other]
                        .end
                        .as_ref()
                        .is_some_and(|end| end.time < operations[index].invoke_time)
            });
            if blocked {
                continue;
            }
            if let Some(next) = step(value, &operations[index]) {
                placed[index] = true;
                let found = search(operations, placed, &next);
                placed[index] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(operations, &mut vec![false; operations.len()], &None)
}

proptest! {
    // Proves the checker agrees with a brute-force search over every real-time order on
    // small random histories of one key, linearizable or not, with completed, unknown
    // and seen-to-take-effect outcomes: no false violation and no missed one.
    #[test]
    fn agrees_with_brute_force_on_small_histories(
        operations in prop::collection::vec(small_operation(), 1..8),
    ) {
        let mut history = History::new();
        for (client, operation) in operations.iter().enumerate() {
            let id = history.invoke(client as ClientId, operation.op.clone(), operation.invoke_time);
            match &operation.end {
                None => history.unknown(id),
                Some(SmallEnd { time, response: None }) => history.took_effect(id, *time),
                Some(SmallEnd { time, response: Some(response) }) => {
                    history.complete(id, response.clone(), *time)
                }
            }
        }
        let expected = brute_force_linearizable(&operations);
        match check(&history) {
            Ok(()) => prop_assert!(expected, "checker passed a non-linearizable history:\n{}", history),
            Err(CheckError::Violation(violation)) => {
                prop_assert!(!expected, "checker failed a linearizable history:\n{}\n{}", history, violation)
            }
            Err(error) => prop_assert!(false, "{}", error),
        }
    }
}
