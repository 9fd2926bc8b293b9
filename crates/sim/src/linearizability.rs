//! Linearizability checking of key-value histories.
//!
//! A history is linearizable if every operation can be given one instant inside its
//! interval, between invocation and response, such that running the operations one by
//! one in the order of those instants against a plain map gives every recorded
//! response. An operation whose outcome is unknown may take effect at any instant after
//! its invocation, or never; one the simulator saw take effect by some time
//! ([`crate::history::Outcome::TookEffect`]) must take effect by then, with any
//! response.
//!
//! Linearizability is compositional (Herlihy & Wing 1990, "Linearizability: a
//! correctness condition for concurrent objects", §3.3): a history is linearizable iff
//! the sub-history of each object is. Each key is an object, so [`check`] splits the
//! history by key and searches each key alone, which turns one search exponential in
//! the number of operations into many small ones.
//!
//! For each key, the search is Wing & Gong's (1993, "Testing and verifying concurrent
//! objects") with the improvements of Lowe (2017, "Testing for linearizability"):
//!
//! 1. Every operation that must take effect is a call event at its invocation and a
//!    return event at its response, kept in one doubly linked list sorted by time. At
//!    equal times calls come first, so touching intervals count as concurrent.
//!    Operations with unknown outcomes have no return event; they sit in a second list
//!    sorted by invocation.
//! 2. The candidates to linearize next are the calls before the first return, and the
//!    unknown operations invoked by then: an operation whose response is already due
//!    must come before any operation invoked after that response. Unknown operations
//!    are tried first, as invocation order would put them.
//! 3. Linearizing a candidate checks its response against the model, then unlinks its
//!    events (relinked in reverse order on backtracking, as in Knuth's dancing links).
//!    When no candidate can go next, the search undoes the latest one and tries the
//!    candidate after it.
//! 4. A cache of the configurations visited (linearized operations, value reached)
//!    prunes every revisit: two search paths that linearized the same operations and
//!    reached the same value have the same future. A configuration is also pruned if
//!    one with the same value and the same operations that must take effect, but only
//!    a subset of its unknown operations, was visited: that one can do all it can.
//! 5. A read (or a compare-and-swap that did not swap) whose response fits the current
//!    value is linearized at once, with no alternative tried: moving it earlier never
//!    breaks a linearization. This spares the search every order of concurrent reads.
//!
//! The search succeeds once every operation that must take effect is linearized: the
//! remaining unknown writes can go last, where nothing observes them.
//!
//! # Cost and limits
//!
//! The search is exponential in the worst case, in the number of operations concurrent
//! on one key and above all in the number of unknown outcomes: every unknown write
//! stays a candidate from its invocation to the end of the history, so disproving a
//! history explores the subsets and orders of those that might have taken effect. In
//! measurements on 2,000 operations on one key, a correct history with 5 concurrent
//! clients is decided in milliseconds even with one unknown outcome in ten; a wrong
//! one is disproved in milliseconds with no unknown outcomes and up to a handful, but
//! runs out of the default budget with dozens. So: spread the load over many keys,
//! give writes unique values, and settle unknown outcomes where the simulator can see
//! them ([`crate::history::History::took_effect`], [`crate::history::History::fail`]).
//!
//! The search is bounded by [`SearchLimits`]; one that runs out returns
//! [`CheckError::Inconclusive`], which says nothing about the history either way.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use crate::history::{History, Op, OpId, Operation, Outcome, Response, ShowBytes, ShowValue};

/// Default for [`SearchLimits::search_steps_max`]. A step takes a fraction of a
/// microsecond on small values, so this bounds one key's check to well under a second.
pub const SEARCH_STEPS_MAX_DEFAULT: u64 = 2_000_000;

/// Default for [`SearchLimits::cache_bytes_max`]: 256 MiB.
pub const CACHE_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// At most this many operations of the longest linearizable prefix are printed in a
/// [`Violation`]'s explanation: the ones just before the search got stuck.
pub const REPORT_PREFIX_OPERATIONS_MAX: usize = 20;

/// Bounds on the search for one key, so that a pathological history returns
/// [`CheckError::Inconclusive`] instead of running for hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchLimits {
    /// Most search steps per key. A step is one attempt to linearize an operation or
    /// one backtrack.
    pub search_steps_max: u64,
    /// Most bytes per key held by the cache of explored configurations (bit sets of
    /// linearized operations and the values reached), counted approximately.
    pub cache_bytes_max: u64,
}

impl Default for SearchLimits {
    fn default() -> SearchLimits {
        SearchLimits {
            search_steps_max: SEARCH_STEPS_MAX_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why [`check`] could not show a history linearizable.
#[derive(Clone, Debug)]
pub enum CheckError {
    /// The history of one key has no linearization: the store, or the recording of its
    /// history, has a bug.
    Violation(Box<Violation>),
    /// The search for one key ran out of its [`SearchLimits`] before deciding. This is
    /// not evidence of a bug; the history is too concurrent to check within the limits.
    Inconclusive(Inconclusive),
}

impl CheckError {
    /// Whether this is a real violation rather than a search that gave up.
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckError::Violation(_))
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(violation) => violation.fmt(f),
            CheckError::Inconclusive(inconclusive) => inconclusive.fmt(f),
        }
    }
}

impl std::error::Error for CheckError {}

/// The history of one key is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history has no linearization.
    pub key: Bytes,
    /// The longest sequence of the key's operations the search could linearize,
    /// respecting both real time and every response, in linearization order.
    pub longest_prefix: Vec<OpId>,
    /// The key's value after `longest_prefix` (`None`: absent).
    pub value_after_prefix: Option<Bytes>,
    /// The operations that real time allows to go next after `longest_prefix`, each
    /// with why it cannot: none of them can, which is the violation.
    pub stuck: Vec<StuckOperation>,
    /// A readable account of all the above for a failing run's report, printing every
    /// operation in full. `Display` prints this.
    pub explanation: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

impl std::error::Error for Violation {}

/// An operation that could go next by real time but not by the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckOperation {
    /// The operation.
    pub id: OpId,
    /// Why its response contradicts the value it would see.
    pub reason: String,
}

/// The search for one key gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive {
    /// The key whose search gave up (the first such key, by key order).
    pub key: Bytes,
    /// How many of the history's operations the key's search covered.
    pub operations: usize,
    /// Search steps taken when it gave up.
    pub search_steps: u64,
    /// Bytes the cache held when it gave up.
    pub cache_bytes: u64,
    /// The limits it ran out of.
    pub limits: SearchLimits,
    /// How many keys in all gave up.
    pub keys_inconclusive: usize,
}

impl fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {}: linearizability undecided: the search over {} operations stopped after \
             {} steps (limit {}) with {} cache bytes (limit {}); {} key(s) undecided in all",
            ShowBytes(&self.key),
            self.operations,
            self.search_steps,
            self.limits.search_steps_max,
            self.cache_bytes,
            self.limits.cache_bytes_max,
            self.keys_inconclusive,
        )
    }
}

impl std::error::Error for Inconclusive {}

/// Checks that `history` is linearizable with the default [`SearchLimits`].
///
/// Pending operations count as unknown. Returns the first violating key's
/// [`Violation`] (in key order) if any key has one, else [`CheckError::Inconclusive`]
/// if any key's search gave up.
pub fn check(history: &History) -> Result<(), CheckError> {
    check_with_limits(history, &SearchLimits::default())
}

/// Checks that `history` is linearizable, searching each key within `limits`.
/// See [`check`].
pub fn check_with_limits(history: &History, limits: &SearchLimits) -> Result<(), CheckError> {
    let mut operations_by_key: BTreeMap<&Bytes, Vec<KeyOperation>> = BTreeMap::new();
    for operation in history.operations() {
        // An operation on two keys is an append in each key's history.
        for key in operation.op.keys() {
            let Some(key_operation) = KeyOperation::from_operation(operation) else {
                continue;
            };
            operations_by_key
                .entry(key)
                .or_default()
                .push(key_operation);
        }
    }

    let mut inconclusive: Option<Inconclusive> = None;
    let mut keys_inconclusive = 0;
    for (key, operations) in operations_by_key {
        match search(&operations, limits) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::NotLinearizable { longest_prefix } => {
                let violation = explain_violation(history, key, &operations, &longest_prefix);
                return Err(CheckError::Violation(Box::new(violation)));
            }
            SearchOutcome::Inconclusive {
                search_steps,
                cache_bytes,
            } => {
                keys_inconclusive += 1;
                inconclusive.get_or_insert(Inconclusive {
                    key: key.clone(),
                    operations: operations.len(),
                    search_steps,
                    cache_bytes,
                    limits: *limits,
                    keys_inconclusive: 0,
                });
            }
        }
    }
    match inconclusive {
        None => Ok(()),
        Some(inconclusive) => Err(CheckError::Inconclusive(Inconclusive {
            keys_inconclusive,
            ..inconclusive
        })),
    }
}

/// One operation of one key's sub-history, as the search sees it.
struct KeyOperation<'h> {
    id: OpId,
    op: &'h Op,
    /// `None`: unknown response, any response is fine.
    response: Option<&'h Response>,
    invoke_time: u64,
    /// The latest instant the operation can take effect. `None`: unknown outcome,
    /// returns after every finite time and may never take effect at all.
    return_time: Option<u64>,
}

impl<'h> KeyOperation<'h> {
    /// The operation as the search sees it, or `None` if it constrains nothing:
    /// it certainly had no effect, or it is a read with an unknown response.
    fn from_operation(operation: &'h Operation) -> Option<KeyOperation<'h>> {
        let (response, return_time) = match &operation.outcome {
            Outcome::Completed { time, response } => (Some(response), Some(*time)),
            Outcome::Failed { .. } => return None,
            Outcome::Pending | Outcome::Unknown | Outcome::TookEffect { .. }
                if operation.op.is_read() =>
            {
                return None
            }
            Outcome::Pending | Outcome::Unknown => (None, None),
            Outcome::TookEffect { by_time } => (None, Some(*by_time)),
        };
        Some(KeyOperation {
            id: operation.id,
            op: &operation.op,
            response,
            invoke_time: operation.invoke_time,
            return_time,
        })
    }

    /// Whether every linearization must include the operation: all but unknown
    /// outcomes.
    fn must_take_effect(&self) -> bool {
        self.return_time.is_some()
    }

    /// Whether the operation, with its recorded response, never changes the state: a
    /// read, or a compare-and-swap that did not swap.
    fn preserves_state(&self) -> bool {
        matches!(
            (self.op, self.response),
            (Op::Get { .. }, Some(Response::Value(_)))
                | (Op::Cas { .. }, Some(Response::Cas(false)))
        )
    }

    /// Where the call event sorts among all events.
    fn call_order(&self) -> u128 {
        u128::from(self.invoke_time)
    }

    /// Where the return event sorts among all events: after every finite time if the
    /// outcome is unknown.
    fn return_order(&self) -> u128 {
        self.return_time.map_or(u128::MAX, u128::from)
    }
}

/// The value of one key, with a hash kept up to date as appends extend it.
#[derive(Clone, Debug)]
struct State {
    value: Option<Bytes>,
    /// FNV-1a over the value's bytes; a distinct constant for an absent key.
    hash: u64,
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const ABSENT_HASH: u64 = 0x5bd1_e995_0b7c_0ffe;

fn fnv_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    hash
}

impl State {
    fn absent() -> State {
        State {
            value: None,
            hash: ABSENT_HASH,
        }
    }

    fn present(value: Bytes) -> State {
        let hash = fnv_extend(FNV_OFFSET_BASIS, &value);
        State {
            value: Some(value),
            hash,
        }
    }

    fn appended(&self, suffix: &[u8]) -> State {
        let (old, old_hash) = match &self.value {
            Some(old) => (&old[..], self.hash),
            None => (&[][..], FNV_OFFSET_BASIS),
        };
        let mut value = Vec::with_capacity(old.len() + suffix.len());
        value.extend_from_slice(old);
        value.extend_from_slice(suffix);
        State {
            value: Some(Bytes::from(value)),
            hash: fnv_extend(old_hash, suffix),
        }
    }

    fn bytes_held(&self) -> u64 {
        self.value.as_ref().map_or(0, |value| value.len() as u64)
    }
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.hash == other.hash && self.value == other.value
    }
}

/// The key-value model: applies `op` to `state` if `response` (`None`: unknown) is
/// what it would return, giving the next state.
fn step(state: &State, op: &Op, response: Option<&Response>) -> Option<State> {
    match (op, response) {
        (Op::Put { value, .. }, None | Some(Response::Ok)) => Some(State::present(value.clone())),
        (Op::Append { suffix, .. } | Op::AppendBoth { suffix, .. }, None | Some(Response::Ok)) => {
            Some(state.appended(suffix))
        }
        (Op::Get { .. }, None) => Some(state.clone()),
        (Op::Get { .. }, Some(Response::Value(read))) => {
            (*read == state.value).then(|| state.clone())
        }
        (Op::Cas { expected, new, .. }, response) => {
            let swapped = state.value == *expected;
            match response {
                None => {}
                Some(Response::Cas(responded)) if *responded == swapped => {}
                Some(_) => return None,
            }
            Some(if swapped {
                State::present(new.clone())
            } else {
                state.clone()
            })
        }
        (Op::Put { .. } | Op::Append { .. } | Op::AppendBoth { .. } | Op::Get { .. }, Some(_)) => {
            None
        }
    }
}

/// Why [`step`] refused `op` with `response` on `state`, for a report.
fn refusal_reason(state: &State, op: &Op, response: Option<&Response>) -> String {
    let value = ShowValue(state.value.as_ref());
    match (op, response) {
        (Op::Get { .. }, Some(Response::Value(read))) => {
            format!("read {} but the value is {value}", ShowValue(read.as_ref()))
        }
        (Op::Cas { expected, .. }, Some(Response::Cas(true))) => format!(
            "swapped, but the value is {value}, not the expected {}",
            ShowValue(expected.as_ref())
        ),
        (Op::Cas { .. }, Some(Response::Cas(false))) => {
            format!("did not swap, but the value is {value}, which is the expected one")
        }
        _ if step(state, op, response).is_some() => {
            format!("fits the value {value}, but every order after it fails")
        }
        _ => format!("its response does not fit the value {value}"),
    }
}

/// What the search for one key found.
enum SearchOutcome {
    Linearizable,
    /// `longest_prefix` holds indexes into the key's operations.
    NotLinearizable {
        longest_prefix: Vec<usize>,
    },
    Inconclusive {
        search_steps: u64,
        cache_bytes: u64,
    },
}

/// The list node before every other node of a [`Links`].
const HEAD: usize = 0;
/// The list node after every other node of a [`Links`].
const TAIL: usize = 1;

/// A doubly linked list over nodes `2..`, between the `HEAD` and `TAIL` sentinels.
/// Unlinking a node leaves its own pointers alone, so relinking nodes in the reverse
/// order of their unlinking restores the list exactly (Knuth's dancing links).
struct Links {
    next: Vec<usize>,
    previous: Vec<usize>,
}

impl Links {
    /// A list of `nodes` nodes (sentinels included) linked in order.
    fn in_order(nodes: usize) -> Links {
        let mut links = Links {
            next: vec![TAIL; nodes],
            previous: vec![HEAD; nodes],
        };
        let mut last = HEAD;
        for node in 2..nodes {
            links.next[last] = node;
            links.previous[node] = last;
            last = node;
        }
        links.next[last] = TAIL;
        links.previous[TAIL] = last;
        links
    }

    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        self.previous[next] = node;
    }
}

/// The call and return events of one key's operations that must take effect, sorted
/// by time.
/// Linearizing an operation unlinks both its events; backtracking relinks them.
struct EventList {
    links: Links,
    /// For an event node: the index of its operation.
    operation: Vec<usize>,
    /// For an event node: where it sorts in time.
    order: Vec<u128>,
    /// For a call node: its operation's return node. `usize::MAX` for return nodes.
    return_node: Vec<usize>,
}

impl EventList {
    fn new(operations: &[KeyOperation]) -> EventList {
        // (time order, 0 for calls and 1 for returns, operation): calls sort before
        // returns at equal times; the operation index makes the order deterministic.
        let mut events: Vec<(u128, u8, usize)> = Vec::new();
        for (index, operation) in operations.iter().enumerate() {
            if operation.must_take_effect() {
                events.push((operation.call_order(), 0, index));
                events.push((operation.return_order(), 1, index));
            }
        }
        events.sort_unstable();

        let nodes = 2 + events.len();
        let mut list = EventList {
            links: Links::in_order(nodes),
            operation: vec![usize::MAX; nodes],
            order: vec![0; nodes],
            return_node: vec![usize::MAX; nodes],
        };
        let mut call_node_of_operation = vec![usize::MAX; operations.len()];
        for (position, &(order, kind, index)) in events.iter().enumerate() {
            let node = 2 + position;
            list.operation[node] = index;
            list.order[node] = order;
            if kind == 0 {
                call_node_of_operation[index] = node;
            } else {
                list.return_node[call_node_of_operation[index]] = node;
            }
        }
        list
    }

    fn is_call(&self, node: usize) -> bool {
        self.return_node[node] != usize::MAX
    }

    /// Unlinks a call node and its return node.
    fn lift(&mut self, call_node: usize) {
        self.links.unlink(call_node);
        self.links.unlink(self.return_node[call_node]);
    }

    /// Undoes the latest `lift`, which must have been of `call_node`.
    fn unlift(&mut self, call_node: usize) {
        self.links.relink(self.return_node[call_node]);
        self.links.relink(call_node);
    }
}

/// The operations of one key with unknown outcomes, sorted by invocation time. They
/// have no return event; linearizing one unlinks it.
struct UnknownList {
    links: Links,
    /// For a node: the index of its operation.
    operation: Vec<usize>,
    /// For a node: where its invocation sorts in time.
    order: Vec<u128>,
}

impl UnknownList {
    fn new(operations: &[KeyOperation]) -> UnknownList {
        let mut unknowns: Vec<(u128, usize)> = operations
            .iter()
            .enumerate()
            .filter(|(_, operation)| !operation.must_take_effect())
            .map(|(index, operation)| (operation.call_order(), index))
            .collect();
        unknowns.sort_unstable();
        let nodes = 2 + unknowns.len();
        let mut operation = vec![usize::MAX; nodes];
        let mut order = vec![u128::MAX; nodes];
        for (position, &(call_order, index)) in unknowns.iter().enumerate() {
            operation[2 + position] = index;
            order[2 + position] = call_order;
        }
        UnknownList {
            links: Links::in_order(nodes),
            operation,
            order,
        }
    }

    /// How many unknown operations there are.
    fn len(&self) -> usize {
        self.operation.len() - 2
    }
}

/// A pass-through hasher for keys that are already good 64-bit hashes.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv_extend(self.0 ^ FNV_OFFSET_BASIS, bytes);
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// No next entry in a cache chain.
const CHAIN_END: usize = usize::MAX;

/// The configurations the search has visited: the set of linearized operations that
/// must take effect, the set of linearized unknown operations, and the state reached.
///
/// A configuration is pruned if one with the same first set and state, and a subset of
/// its unknown operations, was visited: every continuation of the new one is
/// a continuation of the old one, whose unlinearized unknown operations include all
/// the new one's (unknown operations never have to go before anything). With no
/// unknown operations this is Lowe's cache of exact revisits.
struct Cache {
    /// Hash of (set of operations that must take effect, state) to the newest entry
    /// with that hash.
    chain_head_by_hash: HashMap<u64, usize, BuildHasherDefault<PrehashedHasher>>,
    entries: Vec<CacheEntry>,
    /// Approximate bytes held; bounded by `SearchLimits::cache_bytes_max`.
    bytes: u64,
}

struct CacheEntry {
    required: Box<[u64]>,
    unknown: Box<[u64]>,
    state: State,
    /// The next older entry with the same hash, or `CHAIN_END`.
    next: usize,
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .zip(large)
        .all(|(small, large)| small & !large == 0)
}

impl Cache {
    fn new() -> Cache {
        Cache {
            chain_head_by_hash: HashMap::default(),
            entries: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds the configuration unless a visited one prunes it; returns whether it was
    /// added.
    fn insert(&mut self, hash: u64, required: &[u64], unknown: &[u64], state: &State) -> bool {
        let head = self
            .chain_head_by_hash
            .get(&hash)
            .copied()
            .unwrap_or(CHAIN_END);
        let mut entry = head;
        while entry != CHAIN_END {
            let cached = &self.entries[entry];
            if cached.state == *state
                && *cached.required == *required
                && is_subset(&cached.unknown, unknown)
            {
                return false;
            }
            entry = cached.next;
        }
        self.bytes += (std::mem::size_of::<CacheEntry>()
            + std::mem::size_of::<(u64, usize)>()
            + std::mem::size_of_val(required)
            + std::mem::size_of_val(unknown)) as u64
            + state.bytes_held();
        self.chain_head_by_hash.insert(hash, self.entries.len());
        self.entries.push(CacheEntry {
            required: required.into(),
            unknown: unknown.into(),
            state: state.clone(),
            next: head,
        });
        true
    }
}

/// A fixed pseudo-random 64-bit value per operation (splitmix64), XORed together into
/// the hash of a set of operations so that adding or removing one costs O(1)
/// (Zobrist hashing).
fn operation_hash(index: usize) -> u64 {
    let mut z = (index as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn set_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

fn clear_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] &= !(1 << (index % 64));
}

/// The stack of linearized operations with the most operations that must take effect,
/// kept in step with the search's stack so that recording a new best copies only what
/// changed since the two diverged.
struct LongestPrefix {
    operations: Vec<usize>,
    /// How many of `operations` must take effect.
    required: usize,
    /// Invariant: `operations[..shared] == stack[..shared]` for the search's stack.
    shared: usize,
}

impl LongestPrefix {
    /// The search pushed onto `stack`, which now ends with the new operation and holds
    /// `required` operations that must take effect.
    fn pushed(&mut self, stack: &[usize], required: usize) {
        let top = stack.len() - 1;
        if self.shared == top && self.operations.get(top) == Some(&stack[top]) {
            self.shared = stack.len();
        }
        if required > self.required {
            self.operations.truncate(self.shared);
            self.operations.extend_from_slice(&stack[self.shared..]);
            self.shared = stack.len();
            self.required = required;
        }
    }

    /// The search popped its stack down to `depth` operations.
    fn popped(&mut self, depth: usize) {
        self.shared = self.shared.min(depth);
    }
}

/// Where a candidate is: in the unknown list, or in the event list.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// A node of the unknown list: a candidate if invoked no later than `limit`, the
    /// time order of the first return event. Past the candidates, the search goes on
    /// to the event list.
    Unknown { node: usize, limit: u128 },
    /// A node of the event list: a call is a candidate; the first return ends the
    /// candidates.
    Event(usize),
}

/// Where the search is among the candidates of its configuration.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At a configuration just reached: first look for a candidate to take greedily
    /// (see [`scan_window`]), else go through them all, unknown operations first.
    Fresh,
    /// At a place in one of the lists.
    At(Place),
    /// No candidate is left at this configuration: backtrack.
    Exhausted,
}

/// One linearized operation on the search's stack.
struct Frame {
    /// Where the operation was found; the search resumes after it on backtracking.
    place: Place,
    /// Whether it was taken greedily, so its configuration has no other candidate
    /// worth trying.
    greedy: bool,
    /// The state before it.
    state: State,
}

/// What [`scan_window`] found among the calls before the first return event.
enum Window {
    /// The call node of a candidate to take greedily.
    Greedy(usize),
    /// No such candidate; the first return node.
    FirstReturn(usize),
}

/// Looks among the calls before the first return event for a candidate that leaves
/// the state as it is and whose response fits `state`.
///
/// Linearizing such an operation now is never worse than later: moving it earlier in
/// any linearization breaks no real-time order, as it can go now, and no response, as
/// the state it sees now is the one it recorded and it changes nothing for the others.
/// So the search tries it alone at this configuration, which spares it every order of
/// concurrent reads.
fn scan_window(events: &EventList, operations: &[KeyOperation], state: &State) -> Window {
    let mut node = events.links.next[HEAD];
    while events.is_call(node) {
        let operation = &operations[events.operation[node]];
        if operation.preserves_state() && step(state, operation.op, operation.response).is_some() {
            return Window::Greedy(node);
        }
        node = events.links.next[node];
    }
    // Some operation that must take effect is not linearized, and its return event is
    // listed after every call still listed before it.
    debug_assert!(node != TAIL, "walked past every return event");
    Window::FirstReturn(node)
}

/// Searches for a linearization of one key's operations.
fn search(operations: &[KeyOperation], limits: &SearchLimits) -> SearchOutcome {
    let required_total = operations
        .iter()
        .filter(|operation| operation.must_take_effect())
        .count();
    if required_total == 0 {
        return SearchOutcome::Linearizable;
    }
    let mut events = EventList::new(operations);
    let mut unknowns = UnknownList::new(operations);
    let mut cache = Cache::new();
    // Linearized operations that must take effect, by operation index.
    let mut required = vec![0u64; operations.len().div_ceil(64)];
    let mut required_hash = 0u64;
    // Linearized operations with unknown outcomes, by node of `unknowns` less 2.
    let mut optional = vec![0u64; unknowns.len().div_ceil(64)];
    let mut state = State::absent();
    // Invariant: `frames` and `stack` hold, in linearization order, how each
    // linearized operation was found and its index.
    let mut frames: Vec<Frame> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut longest_prefix = LongestPrefix {
        operations: Vec::new(),
        required: 0,
        shared: 0,
    };
    // Invariant: counts the operations in `stack` that must take effect.
    let mut required_linearized = 0;
    let mut search_steps = 0u64;

    let mut cursor = Cursor::Fresh;
    loop {
        search_steps += 1;
        if search_steps > limits.search_steps_max || cache.bytes > limits.cache_bytes_max {
            return SearchOutcome::Inconclusive {
                search_steps,
                cache_bytes: cache.bytes,
            };
        }

        // The candidate under the cursor, where to look after it, and whether it is
        // taken greedily.
        let (place, after, greedy) = match cursor {
            Cursor::Fresh => match scan_window(&events, operations, &state) {
                Window::Greedy(call_node) => (Place::Event(call_node), Cursor::Exhausted, true),
                Window::FirstReturn(node) => {
                    // Unknown operations invoked before the first return go first, as
                    // invocation order would put them: an unknown write that took
                    // effect is found early, and one that did not is mostly overwritten
                    // harmlessly or refuted by the next read.
                    let limit = events.order[node];
                    let node = unknowns.links.next[HEAD];
                    cursor = Cursor::At(Place::Unknown { node, limit });
                    continue;
                }
            },
            Cursor::At(Place::Unknown { node, limit })
                if node != TAIL && unknowns.order[node] <= limit =>
            {
                let next = unknowns.links.next[node];
                let after = Cursor::At(Place::Unknown { node: next, limit });
                (Place::Unknown { node, limit }, after, false)
            }
            Cursor::At(Place::Unknown { .. }) => {
                cursor = Cursor::At(Place::Event(events.links.next[HEAD]));
                continue;
            }
            Cursor::At(Place::Event(node)) if events.is_call(node) => {
                let after = Cursor::At(Place::Event(events.links.next[node]));
                (Place::Event(node), after, false)
            }
            Cursor::At(Place::Event(_)) | Cursor::Exhausted => {
                // No candidate can go next: undo the latest linearized operation and
                // try the candidate after it.
                let Some(frame) = frames.pop() else {
                    return SearchOutcome::NotLinearizable {
                        longest_prefix: longest_prefix.operations,
                    };
                };
                let index = stack.pop().expect("frames and stack move together");
                longest_prefix.popped(stack.len());
                state = frame.state;
                cursor = match frame.place {
                    Place::Event(call_node) => {
                        clear_bit(&mut required, index);
                        required_hash ^= operation_hash(index);
                        required_linearized -= 1;
                        events.unlift(call_node);
                        if frame.greedy {
                            Cursor::Exhausted
                        } else {
                            Cursor::At(Place::Event(events.links.next[call_node]))
                        }
                    }
                    Place::Unknown { node, limit } => {
                        clear_bit(&mut optional, node - 2);
                        unknowns.links.relink(node);
                        let next = unknowns.links.next[node];
                        Cursor::At(Place::Unknown { node: next, limit })
                    }
                };
                continue;
            }
        };

        let index = match place {
            Place::Event(node) => events.operation[node],
            Place::Unknown { node, .. } => unknowns.operation[node],
        };
        let operation = &operations[index];
        let Some(next_state) = step(&state, operation.op, operation.response) else {
            cursor = after;
            continue;
        };
        let next_required_hash = match place {
            Place::Event(_) => {
                set_bit(&mut required, index);
                required_hash ^ operation_hash(index)
            }
            Place::Unknown { node, .. } => {
                set_bit(&mut optional, node - 2);
                required_hash
            }
        };
        let hash = next_required_hash ^ next_state.hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if !cache.insert(hash, &required, &optional, &next_state) {
            match place {
                Place::Event(_) => clear_bit(&mut required, index),
                Place::Unknown { node, .. } => clear_bit(&mut optional, node - 2),
            }
            cursor = after;
            continue;
        }

        required_hash = next_required_hash;
        frames.push(Frame {
            place,
            greedy,
            state: std::mem::replace(&mut state, next_state),
        });
        stack.push(index);
        match place {
            Place::Event(call_node) => {
                events.lift(call_node);
                required_linearized += 1;
            }
            Place::Unknown { node, .. } => unknowns.links.unlink(node),
        }
        longest_prefix.pushed(&stack, required_linearized);
        if required_linearized == required_total {
            return SearchOutcome::Linearizable;
        }
        cursor = Cursor::Fresh;
    }
}

/// Builds the report of a key whose search found no linearization.
fn explain_violation(
    history: &History,
    key: &Bytes,
    operations: &[KeyOperation],
    longest_prefix: &[usize],
) -> Violation {
    let mut linearized = vec![false; operations.len()];
    let mut state = State::absent();
    let mut values_after: Vec<State> = Vec::with_capacity(longest_prefix.len());
    for &index in longest_prefix {
        let operation = &operations[index];
        state = step(&state, operation.op, operation.response).expect("the prefix was linearized");
        linearized[index] = true;
        values_after.push(state.clone());
    }

    // The candidates to go next: what the search tried at the end of the prefix.
    let first_return = (0..operations.len())
        .filter(|&index| !linearized[index])
        .map(|index| operations[index].return_order())
        .min()
        .expect("a violation leaves some operation out");
    let mut candidates: Vec<usize> = (0..operations.len())
        .filter(|&index| !linearized[index] && operations[index].call_order() <= first_return)
        .collect();
    candidates.sort_by_key(|&index| (operations[index].invoke_time, operations[index].id));
    let stuck: Vec<StuckOperation> = candidates
        .iter()
        .map(|&index| StuckOperation {
            id: operations[index].id,
            reason: refusal_reason(&state, operations[index].op, operations[index].response),
        })
        .collect();

    let mut explanation = String::new();
    let _ = writeln!(
        explanation,
        "key {}: not linearizable: {} of its {} operations form the longest linearizable prefix",
        ShowBytes(key),
        longest_prefix.len(),
        operations.len()
    );
    let shown_from = longest_prefix
        .len()
        .saturating_sub(REPORT_PREFIX_OPERATIONS_MAX);
    if shown_from > 0 {
        let _ = writeln!(
            explanation,
            "  ({shown_from} earlier operations of the prefix not shown)"
        );
    }
    for (position, &index) in longest_prefix.iter().enumerate().skip(shown_from) {
        let _ = writeln!(
            explanation,
            "  {}    => {}",
            history.operation(operations[index].id),
            ShowValue(values_after[position].value.as_ref())
        );
    }
    let _ = writeln!(
        explanation,
        "value after the prefix: {}",
        ShowValue(state.value.as_ref())
    );
    let _ = writeln!(explanation, "no operation can go next:");
    for stuck_operation in &stuck {
        let _ = writeln!(
            explanation,
            "  {}    : {}",
            history.operation(stuck_operation.id),
            stuck_operation.reason
        );
    }

    Violation {
        key: key.clone(),
        longest_prefix: longest_prefix
            .iter()
            .map(|&index| operations[index].id)
            .collect(),
        value_after_prefix: state.value,
        stuck,
        explanation,
    }
}
