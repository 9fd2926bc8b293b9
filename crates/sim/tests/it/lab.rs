//! The MIT 6.824 (6.5840) Raft lab's test scenarios, parts 3A to 3D, ported onto the
//! simulator one `#[test]` each.
//!
//! [`Lab`] plays the lab's `config` over the [`Cluster`], which keeps the lab's notion of
//! which servers are connected (a link works only when both ends are connected): it
//! crashes and restarts servers the way `crash1` / `start1` do, runs `cfg.one` and `cfg.wait` as polled
//! state machines (so that the lab's concurrent `go cfg.one(..)` clients run side by side
//! on the one simulated clock), and takes a snapshot every [`SNAPSHOT_INTERVAL`] applied
//! entries when asked to, like the lab's `applierSnap`. Every checker of the
//! [`Cluster`] runs throughout; the first violation fails the test at once.
//!
//! Time: the lab's `RaftElectionTimeout` (one second, its bound on electing a leader) is
//! [`LAB_SECOND_INSTANTS`], the longest election timeout a node can draw; every other
//! wall-clock duration of the lab scales from it ([`ms`]). Two differences from the
//! lab's Raft matter when reading the index arithmetic: our founding members start
//! from a bootstrap snapshot at index 1, and every new leader opens its term with a
//! no-op entry (Raft paper §8), so a command the lab expects at index `k` sits a few
//! indexes later here; the tests compute the expected index from the log instead.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_raft::{Index, LogPosition, NodeId, Role, Storage, Term};
use concord_sim::cluster::{Cluster, ClusterOptions};
use concord_sim::network::{NetworkConfig, Time, TICK_INSTANTS};
use concord_sim::rng::Rng;
use concord_sim::trace::Trace;

/// The seed of every single-seed scenario.
const SEED: u64 = 6824;

/// The minimum election timeout of every lab cluster, in ticks: each node draws its
/// timeout from `[ELECTION_TIMEOUT_TICKS, 2 * ELECTION_TIMEOUT_TICKS)`.
const ELECTION_TIMEOUT_TICKS: u32 = 10;

/// How often a leader sends heartbeats, in ticks: ten per lab second, the rate the lab
/// allows.
const HEARTBEAT_INTERVAL_TICKS: u32 = 2;

/// The lab's `RaftElectionTimeout` (one second), in instants: the longest election
/// timeout a node can draw.
const LAB_SECOND_INSTANTS: u64 = 2 * ELECTION_TIMEOUT_TICKS as u64 * TICK_INSTANTS;

/// The lab's `SnapShotInterval`: the `applierSnap` clusters snapshot every this many
/// applied entries.
const SNAPSHOT_INTERVAL: u64 = 10;

/// Most entries a node may keep in its log in the snapshot scenarios. The lab caps the
/// persisted raft state at `MAXLOGSIZE` = 2000 bytes, a few dozen of its gob-encoded
/// entries; a node that never compacts passes 50 within a few of the 30 iterations
/// (each appends 7 to 17 entries).
const LOG_ENTRIES_MAX: u64 = 50;

/// The instants in `millis` lab milliseconds (rounded to the nearest instant).
const fn ms(millis: u64) -> u64 {
    (millis * LAB_SECOND_INSTANTS + 500) / 1000
}

/// A command as the lab's tests write them: an integer (decimal, so failures read well
/// and the key-value state machine applies it as an opaque entry).
fn command(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

/// The lab's `randstring(n)`: `n` random lowercase letters.
fn random_string(rng: &mut Rng, n: usize) -> Bytes {
    (0..n)
        .map(|_| b'a' + rng.below(26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The node `k` places after `id` in a cluster of `servers` (the lab's
/// `(id + k) % servers`, with ids from 1).
fn after(id: NodeId, k: u64, servers: usize) -> NodeId {
    (id - 1 + k) % servers as u64 + 1
}

/// The lab's `config`: a [`Cluster`] plus the lab's random numbers, its snapshotting
/// applier and its background `one` calls.
struct Lab {
    cluster: Cluster,
    seed: u64,
    servers: usize,
    /// The test's own randomness (the lab's `rand.Int()`).
    rng: Rng,
    /// Snapshot every this many applied entries (the lab's `applierSnap`).
    snapshot_interval: Option<u64>,
    /// `cfg.one` calls running in the background (the lab's `go cfg.one(..)`).
    background: Vec<OneCall>,
}

impl Lab {
    /// The lab's `make_config(t, servers, unreliable, snapshot)`, with `seed`.
    fn new(servers: usize, unreliable: bool, snapshot: bool, seed: u64) -> Lab {
        let network = if unreliable {
            NetworkConfig::unreliable()
        } else {
            NetworkConfig::reliable()
        };
        Lab::with_network(servers, network, snapshot, seed, Trace::quiet())
    }

    /// A lab cluster over `network`, tracing into `trace`.
    fn with_network(
        servers: usize,
        network: NetworkConfig,
        snapshot: bool,
        seed: u64,
        trace: Trace,
    ) -> Lab {
        let mut options = ClusterOptions::new(servers, seed);
        options.config.election_timeout_ticks = ELECTION_TIMEOUT_TICKS;
        options.config.heartbeat_interval_ticks = HEARTBEAT_INTERVAL_TICKS;
        options.network = network;
        let cluster = Cluster::with_options(options, trace);
        Lab {
            cluster,
            seed,
            servers,
            rng: Rng::stream(seed, "lab"),
            snapshot_interval: snapshot.then_some(SNAPSHOT_INTERVAL),
            background: Vec::new(),
        }
    }

    /// Fails the test with the seed and every node's state.
    fn fatal(&self, why: impl std::fmt::Display) -> ! {
        panic!(
            "seed {}, tick {}: {why}\n{}",
            self.seed,
            self.cluster.ticks(),
            self.cluster.describe()
        )
    }

    fn now(&self) -> Time {
        self.cluster.now()
    }

    fn ids(&self) -> Vec<NodeId> {
        self.cluster.node_ids()
    }

    fn random_node(&mut self) -> NodeId {
        self.rng.below(self.servers as u64) + 1
    }

    fn random_command(&mut self) -> Bytes {
        command(self.rng.next_u64())
    }

    // ---------------------------------------------------------------------------------
    // Time.

    /// One instant: the cluster's, then the lab's applier snapshots and background
    /// `one` calls. Fails the test on the first violation.
    fn step(&mut self) {
        self.cluster.run_instant();
        if let Some(violation) = self.cluster.failure() {
            self.fatal(violation);
        }
        if let Some(interval) = self.snapshot_interval {
            for id in self.ids() {
                let (Some(applied), Some(snapshot)) = (
                    self.cluster.applied_index(id),
                    self.cluster.snapshot_index(id),
                ) else {
                    continue;
                };
                if applied >= snapshot + interval {
                    self.cluster.snapshot(id, 0);
                }
            }
        }
        if !self.background.is_empty() {
            let mut background = std::mem::take(&mut self.background);
            background.retain_mut(|call| match call.poll(self) {
                OnePoll::Pending => true,
                OnePoll::Done(_) => false,
                OnePoll::Failed(why) => self.fatal(why),
            });
            background.append(&mut self.background);
            self.background = background;
        }
    }

    /// The lab's `time.Sleep`.
    fn sleep(&mut self, instants: u64) {
        for _ in 0..instants {
            self.step();
        }
    }

    /// Runs until `done` holds, for at most `instants`; returns whether it held.
    fn sleep_until(&mut self, instants: u64, mut done: impl FnMut(&Lab) -> bool) -> bool {
        for _ in 0..instants {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    // ---------------------------------------------------------------------------------
    // Faults.

    /// The lab's `disconnect(i)`.
    fn disconnect(&mut self, id: NodeId) {
        self.cluster.disconnect(id);
    }

    /// The lab's `connect(i)`.
    fn connect(&mut self, id: NodeId) {
        self.cluster.connect(id);
    }

    /// The lab's `connected[i]`.
    fn is_connected(&self, id: NodeId) -> bool {
        self.cluster.is_connected(id)
    }

    /// The servers the lab counts as connected, in id order.
    fn connected(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_connected(id))
            .collect()
    }

    /// The lab's `rafts[i] != nil`.
    fn is_up(&self, id: NodeId) -> bool {
        self.cluster.is_up(id)
    }

    /// The lab's `crash1(i)`: disconnects, then keeps only the node's storage.
    fn crash1(&mut self, id: NodeId) {
        self.disconnect(id);
        self.cluster.crash(id);
    }

    /// The lab's `start1(i)`: crashes the node if it runs, then restarts it from its
    /// storage, still disconnected.
    fn start1(&mut self, id: NodeId) {
        self.crash1(id);
        self.cluster.restart(id);
        if let Some(violation) = self.cluster.failure() {
            self.fatal(violation);
        }
    }

    /// The lab's `setunreliable`.
    fn set_unreliable(&mut self, unreliable: bool) {
        self.cluster.set_unreliable(unreliable);
    }

    // ---------------------------------------------------------------------------------
    // Observing.

    /// The lab's `rafts[i].Start(cmd)`: the position if node `id` runs and leads.
    fn start(&mut self, id: NodeId, command: Bytes) -> Option<LogPosition> {
        self.cluster.propose_on(id, command).ok()
    }

    /// The lab's `GetState`: term and whether it leads, if node `id` runs.
    fn state(&self, id: NodeId) -> Option<(Term, bool)> {
        let raw = self.cluster.raw_node(id)?;
        Some((raw.term(), raw.role() == Role::Leader))
    }

    fn last_index(&self, id: NodeId) -> Index {
        self.cluster
            .view(id)
            .unwrap_or_else(|| self.fatal(format!("no node {id}")))
            .last_index
    }

    /// The lab's `checkOneLeader`: up to ten times, sleep about half a second, then
    /// return the connected leader of the highest term; at most one leader per term.
    fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..10 {
            let pause = ms(450 + self.rng.below(100));
            self.sleep(pause);
            let mut leaders: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
            for id in self.connected() {
                if let Some((term, true)) = self.state(id) {
                    leaders.entry(term).or_default().push(id);
                }
            }
            for (term, ids) in &leaders {
                if ids.len() > 1 {
                    self.fatal(format!("term {term} has {} (>1) leaders", ids.len()));
                }
            }
            if let Some((_, ids)) = leaders.last_key_value() {
                return ids[0];
            }
        }
        self.fatal("expected one leader, got none")
    }

    /// The lab's `checkTerms`: every connected server is in the same term.
    fn check_terms(&self) -> Term {
        let mut agreed: Option<Term> = None;
        for id in self.connected() {
            let Some((term, _)) = self.state(id) else {
                continue;
            };
            match agreed {
                None => agreed = Some(term),
                Some(agreed) if agreed != term => self.fatal("servers disagree on term"),
                Some(_) => {}
            }
        }
        agreed.unwrap_or_else(|| self.fatal("no connected server"))
    }

    /// The lab's `checkNoLeader`: no connected server thinks it leads.
    fn check_no_leader(&self) {
        for id in self.connected() {
            if let Some((_, true)) = self.state(id) {
                self.fatal(format!(
                    "expected no leader among connected servers, but {id} claims to be leader"
                ));
            }
        }
    }

    /// The lab's `nCommitted(index)`: how many servers applied `index`, and what.
    fn n_committed(&self, index: Index) -> (usize, Option<Bytes>) {
        self.cluster.committed_count(index)
    }

    /// The lab's `cfg.one(cmd, expectedServers, retry)`.
    fn one(&mut self, command: Bytes, expected_servers: usize, retry: bool) -> Index {
        let mut call = OneCall::new(self, command, expected_servers, retry);
        loop {
            match call.poll(self) {
                OnePoll::Done(index) => return index,
                OnePoll::Failed(why) => self.fatal(why),
                OnePoll::Pending => self.step(),
            }
        }
    }

    /// The lab's `go cfg.one(cmd, expectedServers, retry)`: runs alongside whatever the
    /// test does next; failing it fails the test.
    fn one_in_background(&mut self, command: Bytes, expected_servers: usize, retry: bool) {
        let call = OneCall::new(self, command, expected_servers, retry);
        self.background.push(call);
    }

    /// The lab's `cfg.wait(index, n, startTerm)`: waits (as long as the lab's doubling
    /// back-off does, about 24 lab seconds) for `n` servers to apply `index`. Returns
    /// `None`, the lab's -1, as soon as a server is past `start_term`.
    fn wait(&mut self, index: Index, n: usize, start_term: Option<Term>) -> Option<Bytes> {
        let deadline = self.now() + 24 * LAB_SECOND_INSTANTS;
        while self.now() < deadline && self.n_committed(index).0 < n {
            self.step();
            if let Some(start_term) = start_term {
                let moved_on = self
                    .ids()
                    .into_iter()
                    .any(|id| self.state(id).is_some_and(|(term, _)| term > start_term));
                if moved_on {
                    return None;
                }
            }
        }
        let (count, data) = self.n_committed(index);
        if count < n {
            self.fatal(format!(
                "only {count} decided for index {index}; wanted {n}"
            ));
        }
        data
    }

    /// Messages handed to the network so far (the lab's `rpcCount` summed over servers
    /// counts RPCs; each of ours is a request and a response).
    fn messages_sent(&self) -> u64 {
        self.cluster.network_stats().sent
    }

    /// The lab's `bytesTotal`: bytes handed to the network so far.
    fn bytes_sent(&self) -> u64 {
        self.cluster.network_stats().bytes_sent
    }

    /// The lab's `LogSize`: the most entries any running server keeps in its log.
    fn log_size(&self) -> u64 {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                let storage = self.cluster.raw_node(id)?.storage();
                let first = storage.first_index().ok()?;
                let last = storage.last_index().ok()?;
                Some((last + 1).saturating_sub(first))
            })
            .max()
            .unwrap_or(0)
    }

    /// The lab's `cfg.end()`: no checker complained, and the whole logs still pass
    /// log matching and leader completeness.
    fn end(mut self) {
        if let Err(violation) = self.cluster.check_all_logs() {
            self.fatal(violation);
        }
        assert!(
            self.cluster.failure().is_none(),
            "seed {}: {:?}",
            self.seed,
            self.cluster.failure()
        );
    }
}

/// Where a `cfg.one` call is.
enum OneState {
    /// Looking for a connected server that accepts the command, from `not_before`.
    Propose { not_before: Time },
    /// Accepted at `index`; waiting for agreement until `until`.
    Wait { index: Index, until: Time },
}

/// What polling a `cfg.one` call found.
enum OnePoll {
    Pending,
    Done(Index),
    Failed(String),
}

/// The lab's `cfg.one(cmd, expectedServers, retry)` as a state machine polled once per
/// instant: for ten lab seconds, offer the command to each connected server in turn
/// (pausing 50 ms when none accepts); once one does, wait two lab seconds for
/// `expected_servers` to apply it at that index; with `retry`, offer it again.
struct OneCall {
    command: Bytes,
    expected_servers: usize,
    retry: bool,
    /// No new offer after this.
    deadline: Time,
    /// The lab's `starts`: the server offered the command last.
    starts: NodeId,
    state: OneState,
}

impl OneCall {
    fn new(lab: &Lab, command: Bytes, expected_servers: usize, retry: bool) -> OneCall {
        OneCall {
            command,
            expected_servers,
            retry,
            deadline: lab.now() + 10 * LAB_SECOND_INSTANTS,
            starts: 0,
            state: OneState::Propose {
                not_before: lab.now(),
            },
        }
    }

    fn poll(&mut self, lab: &mut Lab) -> OnePoll {
        let now = lab.now();
        match self.state {
            OneState::Propose { not_before } => {
                if now < not_before {
                    return OnePoll::Pending;
                }
                if now >= self.deadline {
                    return self.failed();
                }
                for _ in 0..lab.servers {
                    self.starts = self.starts % lab.servers as u64 + 1;
                    if !lab.is_connected(self.starts) {
                        continue;
                    }
                    if let Some(position) = lab.start(self.starts, self.command.clone()) {
                        self.state = OneState::Wait {
                            index: position.index,
                            until: now + 2 * LAB_SECOND_INSTANTS,
                        };
                        return OnePoll::Pending;
                    }
                }
                self.state = OneState::Propose {
                    not_before: now + ms(50),
                };
                OnePoll::Pending
            }
            OneState::Wait { index, until } => {
                let (count, data) = lab.n_committed(index);
                if count > 0 && count >= self.expected_servers && data == Some(self.command.clone())
                {
                    return OnePoll::Done(index);
                }
                if now >= until {
                    if !self.retry {
                        return self.failed();
                    }
                    self.state = OneState::Propose { not_before: now };
                }
                OnePoll::Pending
            }
        }
    }

    fn failed(&self) -> OnePoll {
        OnePoll::Failed(format!(
            "one({:?}) failed to reach agreement on {} servers",
            self.command, self.expected_servers
        ))
    }
}

// =====================================================================================
// 3A: leader election.

// 6.824 lab scenario TestInitialElection: three servers elect one leader, agree on its
// term, and keep leader and term while nothing fails (Raft paper §5.2).
#[test]
fn initial_election() {
    let mut lab = Lab::new(3, false, false, SEED);
    lab.check_one_leader();
    // Let the followers hear of the election, then check they agree on the term.
    lab.sleep(ms(50));
    let term1 = lab.check_terms();
    assert!(term1 >= 1, "term is {term1}, but should be at least 1");
    // The lab only warns when the term moves without failures; in a reliable,
    // deterministic run with pre-vote and check-quorum it must not.
    lab.sleep(2 * LAB_SECOND_INSTANTS);
    let term2 = lab.check_terms();
    assert_eq!(
        term1, term2,
        "term changed even though there were no failures"
    );
    lab.check_one_leader();
    lab.end();
}

// 6.824 lab scenario TestReElection: a new leader replaces a disconnected one, the old
// leader rejoins without disturbing it, and no leader is elected without a quorum
// (Raft paper §5.2).
#[test]
fn re_election() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    let leader1 = lab.check_one_leader();
    // If the leader disconnects, a new one should be elected.
    lab.disconnect(leader1);
    lab.check_one_leader();
    // The old leader rejoining should not disturb the new leader.
    lab.connect(leader1);
    let leader2 = lab.check_one_leader();
    // With no quorum, no leader should be elected.
    lab.disconnect(leader2);
    lab.disconnect(after(leader2, 1, servers));
    lab.sleep(2 * LAB_SECOND_INSTANTS);
    lab.check_no_leader();
    // A quorum should elect a leader.
    lab.connect(after(leader2, 1, servers));
    lab.check_one_leader();
    // The last node rejoining should not prevent a leader from existing.
    lab.connect(leader2);
    lab.check_one_leader();
    lab.end();
}

// 6.824 lab scenario TestManyElections: seven servers keep (or re-elect) a leader while
// random sets of up to three are disconnected again and again (Raft paper §5.2).
#[test]
fn many_elections() {
    let mut lab = Lab::new(7, false, false, SEED);
    lab.check_one_leader();
    for _ in 1..10 {
        let victims = [lab.random_node(), lab.random_node(), lab.random_node()];
        for victim in victims {
            lab.disconnect(victim);
        }
        // Either the current leader is still alive, or the remaining four elect one.
        lab.check_one_leader();
        for victim in victims {
            lab.connect(victim);
        }
    }
    lab.check_one_leader();
    lab.end();
}

// =====================================================================================
// 3B: log replication.

// 6.824 lab scenario TestBasicAgree: commands commit on every server at consecutive
// indexes, none before it is proposed (Raft paper §5.3).
#[test]
fn basic_agree() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    // Our leader opens its term with a no-op; commands follow it.
    let leader = lab.check_one_leader();
    let base = lab.last_index(leader);
    for k in 1..=3 {
        let index = base + k;
        let (count, _) = lab.n_committed(index);
        assert_eq!(count, 0, "some have committed index {index} before Start()");
        let xindex = lab.one(command(k * 100), servers, false);
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
    }
    lab.end();
}

// 6.824 lab scenario TestRPCBytes: replicating ten 5000-byte commands sends each about
// once to each follower, within the lab's bound of servers × payload + 50000 bytes
// (Raft paper §5.3). The network counts every message's bytes (`Message::size_bytes`),
// responses and heartbeats included, where the lab counts requests only.
#[test]
fn rpc_bytes() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    let first = lab.one(command(99), servers, false);
    let bytes0 = lab.bytes_sent();
    let mut sent = 0;
    for k in 1..=10 {
        let payload = random_string(&mut lab.rng, 5000);
        let xindex = lab.one(payload.clone(), servers, false);
        assert_eq!(
            xindex,
            first + k,
            "got index {xindex} but expected {}",
            first + k
        );
        sent += payload.len() as u64;
    }
    let got = lab.bytes_sent() - bytes0;
    let expected = servers as u64 * sent;
    assert!(
        got <= expected + 50_000,
        "too many RPC bytes; got {got}, expected {expected}"
    );
    // Every follower must have been sent every payload at least once.
    let floor = (servers as u64 - 1) * sent;
    assert!(
        got >= floor,
        "too few RPC bytes; got {got}, at least {floor}"
    );
    lab.end();
}

// 6.824 lab scenario TestFollowerFailure: a leader commits with one follower gone, and
// commits nothing once both are gone (Raft paper §5.3, §5.5).
#[test]
fn follower_failure() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(101), servers, false);
    // Disconnect one follower; the leader and the other follower agree on.
    let leader1 = lab.check_one_leader();
    lab.disconnect(after(leader1, 1, servers));
    lab.one(command(102), servers - 1, false);
    lab.sleep(LAB_SECOND_INSTANTS);
    let index103 = lab.one(command(103), servers - 1, false);
    // Disconnect the remaining follower.
    let leader2 = lab.check_one_leader();
    lab.disconnect(after(leader2, 1, servers));
    lab.disconnect(after(leader2, 2, servers));
    let Some(position) = lab.start(leader2, command(104)) else {
        lab.fatal("leader rejected Start()");
    };
    assert_eq!(
        position.index,
        index103 + 1,
        "expected index {}, got {}",
        index103 + 1,
        position.index
    );
    lab.sleep(2 * LAB_SECOND_INSTANTS);
    // Command 104 must not commit.
    let (count, _) = lab.n_committed(position.index);
    assert_eq!(count, 0, "{count} committed but no majority");
    lab.end();
}

// 6.824 lab scenario TestLeaderFailure: the followers of a lost leader elect a new one
// and commit; once it is lost too, nothing commits (Raft paper §5.2, §5.3).
#[test]
fn leader_failure() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(101), servers, false);
    // Disconnect the first leader; the remaining followers elect a new one.
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    lab.one(command(102), servers - 1, false);
    lab.sleep(LAB_SECOND_INSTANTS);
    let index103 = lab.one(command(103), servers - 1, false);
    // Disconnect the new leader too, and offer a command to every server.
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    for id in lab.ids() {
        lab.start(id, command(104));
    }
    lab.sleep(2 * LAB_SECOND_INSTANTS);
    // Command 104 must not commit.
    let (count, _) = lab.n_committed(index103 + 1);
    assert_eq!(count, 0, "{count} committed but no majority");
    lab.end();
}

// 6.824 lab scenario TestFailAgree: a disconnected follower misses commits, then
// catches up on rejoining, and the full set agrees on new commands (Raft paper §5.3).
#[test]
fn fail_agree() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(101), servers, false);
    // Disconnect one follower; the leader and the other follower agree on.
    let leader = lab.check_one_leader();
    lab.disconnect(after(leader, 1, servers));
    lab.one(command(102), servers - 1, false);
    lab.one(command(103), servers - 1, false);
    lab.sleep(LAB_SECOND_INSTANTS);
    lab.one(command(104), servers - 1, false);
    lab.one(command(105), servers - 1, false);
    // Reconnect: the full set keeps the earlier agreements and agrees on new commands.
    lab.connect(after(leader, 1, servers));
    lab.one(command(106), servers, true);
    lab.sleep(LAB_SECOND_INSTANTS);
    lab.one(command(107), servers, true);
    lab.end();
}

// 6.824 lab scenario TestFailNoAgree: a leader with two of five servers cannot commit,
// and after repair the majority's log wins (Raft paper §5.3, §5.4.1).
#[test]
fn fail_no_agree() {
    let servers = 5;
    let mut lab = Lab::new(servers, false, false, SEED);
    let index10 = lab.one(command(10), servers, false);
    // Three of five followers disconnect.
    let leader = lab.check_one_leader();
    for k in 1..=3 {
        lab.disconnect(after(leader, k, servers));
    }
    let Some(position) = lab.start(leader, command(20)) else {
        lab.fatal("leader rejected Start()");
    };
    assert_eq!(
        position.index,
        index10 + 1,
        "expected index {}, got {}",
        index10 + 1,
        position.index
    );
    lab.sleep(2 * LAB_SECOND_INSTANTS);
    let (count, _) = lab.n_committed(position.index);
    assert_eq!(count, 0, "{count} committed but no majority");
    // Repair. The disconnected majority may have elected a leader of its own and
    // forgotten command 20.
    for k in 1..=3 {
        lab.connect(after(leader, k, servers));
    }
    let leader2 = lab.check_one_leader();
    let Some(position2) = lab.start(leader2, command(30)) else {
        lab.fatal("leader2 rejected Start()");
    };
    // The lab allows index 2 (command 20 forgotten) or 3 (kept); our new leader's
    // no-op moves both one index on.
    assert!(
        (index10 + 2..=index10 + 3).contains(&position2.index),
        "unexpected index {} (command 10 at {index10})",
        position2.index
    );
    lab.one(command(1000), servers, true);
    lab.end();
}

// 6.824 lab scenario TestConcurrentStarts: five commands proposed to a leader while
// earlier ones are still in flight all commit (Raft paper §5.3).
#[test]
fn concurrent_starts() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            // Give the cluster time to settle.
            lab.sleep(3 * LAB_SECOND_INSTANTS);
        }
        let leader = lab.check_one_leader();
        let Some(LogPosition { term, .. }) = lab.start(leader, command(1)) else {
            // The leader moved on quickly.
            continue;
        };
        // Five Starts, one an instant, so each lands while the ones before are in
        // flight.
        let mut indexes = Vec::new();
        for i in 0..5 {
            if let Some(position) = lab.start(leader, command(100 + i)) {
                if position.term == term {
                    indexes.push(position.index);
                }
            }
            lab.step();
        }
        for id in lab.ids() {
            if lab.state(id).map(|(node_term, _)| node_term) != Some(term) {
                continue 'tries;
            }
        }
        let mut commands = Vec::new();
        for index in indexes {
            match lab.wait(index, servers, Some(term)) {
                Some(data) => commands.push(data),
                // Peers moved to a later term: not every Start can have succeeded.
                None => continue 'tries,
            }
        }
        for i in 0..5 {
            let expected = command(100 + i);
            assert!(
                commands.contains(&expected),
                "cmd {expected:?} missing in {commands:?}"
            );
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    lab.end();
}

// 6.824 lab scenario TestRejoin: a partitioned leader's uncommitted entries are
// overwritten when it rejoins a group that moved on (Raft paper §5.3, §5.4.1).
#[test]
fn rejoin() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(101), servers, true);
    // The leader is partitioned and tries to agree on some entries alone.
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    for value in [102, 103, 104] {
        lab.start(leader1, command(value));
    }
    // The new leader commits, also at the index the old one used.
    lab.one(command(103), 2, true);
    // The new leader is partitioned; the old one comes back.
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    lab.connect(leader1);
    lab.one(command(104), 2, true);
    // All together now.
    lab.connect(leader2);
    lab.one(command(105), servers, true);
    lab.end();
}

// 6.824 lab scenario TestBackup: leaders quickly back up over long runs of conflicting
// uncommitted entries left by partitioned leaders (Raft paper §5.3, its closing
// optimisation).
#[test]
fn backup() {
    let servers = 5;
    let mut lab = Lab::new(servers, false, false, SEED);
    let first = lab.random_command();
    lab.one(first, servers, true);
    // Put the leader and one follower in a partition.
    let leader1 = lab.check_one_leader();
    for k in 2..=4 {
        lab.disconnect(after(leader1, k, servers));
    }
    // Lots of commands that will not commit.
    for _ in 0..50 {
        let value = lab.random_command();
        lab.start(leader1, value);
    }
    lab.sleep(LAB_SECOND_INSTANTS / 2);
    lab.disconnect(after(leader1, 0, servers));
    lab.disconnect(after(leader1, 1, servers));
    // Let the other partition recover, and commit lots of commands in it.
    for k in 2..=4 {
        lab.connect(after(leader1, k, servers));
    }
    for _ in 0..50 {
        let value = lab.random_command();
        lab.one(value, 3, true);
    }
    // Now another partitioned leader and one follower.
    let leader2 = lab.check_one_leader();
    let mut other = after(leader1, 2, servers);
    if leader2 == other {
        other = after(leader2, 1, servers);
    }
    lab.disconnect(other);
    // Lots more commands that will not commit.
    for _ in 0..50 {
        let value = lab.random_command();
        lab.start(leader2, value);
    }
    lab.sleep(LAB_SECOND_INSTANTS / 2);
    // Bring the original leader back to life.
    for id in lab.ids() {
        lab.disconnect(id);
    }
    lab.connect(after(leader1, 0, servers));
    lab.connect(after(leader1, 1, servers));
    lab.connect(other);
    // Lots of successful commands to the new group.
    for _ in 0..50 {
        let value = lab.random_command();
        lab.one(value, 3, true);
    }
    // Now everyone.
    for id in lab.ids() {
        lab.connect(id);
    }
    let last = lab.random_command();
    lab.one(last, servers, true);
    lab.end();
}

// 6.824 lab scenario TestCount: an election, agreeing on a batch of commands and an idle
// second each take a bounded number of messages (Raft paper §5.2, §5.3).
//
// The lab counts RPCs; we count messages, and an RPC is two of them (request and
// response). Our leader heartbeats every HEARTBEAT_INTERVAL_TICKS = 2 ticks, ten times
// a lab second, the most the lab allows.
#[test]
fn count() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    // An election: a clean one is a pre-vote round and a vote round (2 requests and 2
    // responses each) and the new leader's first appends, 10 messages. The lab allows
    // 30 RPCs; we allow 30 messages, room for two split votes.
    let elected = lab.sleep_until(10 * LAB_SECOND_INSTANTS, |lab| {
        lab.cluster.leader().is_some()
    });
    assert!(elected, "no leader elected");
    let total1 = lab.messages_sent();
    assert!(
        (1..30).contains(&total1),
        "too many or few messages ({total1}) to elect initial leader"
    );

    let iters: u64 = 10;
    let mut total2 = 0;
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            // Give the cluster time to settle.
            lab.sleep(3 * LAB_SECOND_INSTANTS);
        }
        let leader = lab.check_one_leader();
        let total1 = lab.messages_sent();
        let Some(LogPosition {
            index: start_index,
            term,
        }) = lab.start(leader, command(1))
        else {
            // The leader moved on quickly.
            continue;
        };
        let mut commands = Vec::new();
        for i in 1..iters + 2 {
            let value = lab.random_command();
            commands.push(value.clone());
            let Some(position) = lab.start(leader, value) else {
                // No longer the leader, so the term changed.
                continue 'tries;
            };
            if position.term != term {
                continue 'tries;
            }
            assert_eq!(position.index, start_index + i, "Start() failed");
        }
        for i in 1..iters + 1 {
            let expected = &commands[i as usize - 1];
            match lab.wait(start_index + i, servers, Some(term)) {
                Some(data) if data == *expected => {}
                None => continue 'tries,
                Some(data) => lab.fatal(format!(
                    "wrong value {data:?} committed for index {}; expected {expected:?}",
                    start_index + i
                )),
            }
        }
        total2 = lab.messages_sent();
        let term_changed = lab
            .ids()
            .into_iter()
            .any(|id| lab.state(id).map(|(node_term, _)| node_term) != Some(term));
        if term_changed {
            continue;
        }
        // The lab allows (iters + 1 + 3) * servers RPCs: about one append per command
        // per follower, and slack. Each RPC is two messages. We send one append per
        // command to each follower and get one response back, 4 messages per command
        // (48 for these 12), plus a heartbeat round (4) every 2 ticks, plus an empty
        // append and its response to each follower whenever the leader's commit index
        // moves, plus a rejection and a resend for each append the network delivers
        // out of order. (Over a network that keeps each link in order every
        // acknowledgement moves the commit index on its own, and those empty appends
        // alone take the total to about 100, over this bound.)
        let bound = (iters + 1 + 3) * servers as u64 * 2;
        assert!(
            total2 - total1 <= bound,
            "too many messages ({}) for {iters} entries (bound {bound})",
            total2 - total1
        );
        success = true;
        break;
    }
    assert!(success, "term changed too often");

    // An idle lab second: ten heartbeat rounds, each a heartbeat to each of two
    // followers and its response, 40 messages. The lab allows servers * 20 RPCs; we
    // allow as many messages, which a heartbeat every tick (80) would break.
    lab.sleep(LAB_SECOND_INSTANTS);
    let total3 = lab.messages_sent();
    let bound = servers as u64 * 20;
    assert!(
        total3 - total2 <= bound,
        "too many messages ({}) for 1 second of idleness (bound {bound})",
        total3 - total2
    );
    lab.end();
}

// =====================================================================================
// 3C: persistence.

// 6.824 lab scenario TestPersist1: servers restarted from their durable state, one at a
// time and all at once, keep every commit and agree on new ones (Raft paper Figure 2's
// persistent state, §5.5).
#[test]
fn persist_1() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(11), servers, true);
    // Crash and restart all.
    for id in lab.ids() {
        lab.start1(id);
    }
    for id in lab.ids() {
        lab.disconnect(id);
        lab.connect(id);
    }
    lab.one(command(12), servers, true);
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    lab.start1(leader1);
    lab.connect(leader1);
    lab.one(command(13), servers, true);
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    let index14 = lab.one(command(14), servers - 1, true);
    lab.start1(leader2);
    lab.connect(leader2);
    // Wait for leader2 to catch up before taking down another.
    lab.wait(index14, servers, None);
    let i3 = after(lab.check_one_leader(), 1, servers);
    lab.disconnect(i3);
    lab.one(command(15), servers - 1, true);
    lab.start1(i3);
    lab.connect(i3);
    lab.one(command(16), servers, true);
    lab.end();
}

// 6.824 lab scenario TestPersist2: five servers survive repeated rounds of partitions
// and restarts in which a majority is rebuilt from restarted servers (Raft paper
// Figure 2's persistent state, §5.5).
#[test]
fn persist_2() {
    let servers = 5;
    let mut lab = Lab::new(servers, false, false, SEED);
    let mut index = 1;
    for _ in 0..5 {
        lab.one(command(10 + index), servers, true);
        index += 1;
        let leader1 = lab.check_one_leader();
        lab.disconnect(after(leader1, 1, servers));
        lab.disconnect(after(leader1, 2, servers));
        lab.one(command(10 + index), servers - 2, true);
        index += 1;
        for k in [0, 3, 4] {
            lab.disconnect(after(leader1, k, servers));
        }
        lab.start1(after(leader1, 1, servers));
        lab.start1(after(leader1, 2, servers));
        lab.connect(after(leader1, 1, servers));
        lab.connect(after(leader1, 2, servers));
        lab.sleep(LAB_SECOND_INSTANTS);
        lab.start1(after(leader1, 3, servers));
        lab.connect(after(leader1, 3, servers));
        lab.one(command(10 + index), servers - 2, true);
        index += 1;
        lab.connect(after(leader1, 4, servers));
        lab.connect(after(leader1, 0, servers));
    }
    lab.one(command(1000), servers, true);
    lab.end();
}

// 6.824 lab scenario TestPersist3: a restarted majority, joined by a server that missed
// a commit, keeps that commit and moves on (Raft paper Figure 2's persistent state,
// §5.4, §5.5).
#[test]
fn persist_3() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, false, SEED);
    lab.one(command(101), 3, true);
    let leader = lab.check_one_leader();
    lab.disconnect(after(leader, 2, servers));
    lab.one(command(102), 2, true);
    lab.crash1(after(leader, 0, servers));
    lab.crash1(after(leader, 1, servers));
    lab.connect(after(leader, 2, servers));
    lab.start1(after(leader, 0, servers));
    lab.connect(after(leader, 0, servers));
    lab.one(command(103), 2, true);
    lab.start1(after(leader, 1, servers));
    lab.connect(after(leader, 1, servers));
    lab.one(command(104), servers, true);
    lab.end();
}

/// The lab's Figure 8 pause: one time in ten up to half a lab second, otherwise up
/// to 13 ms.
fn figure_8_pause(lab: &mut Lab) -> u64 {
    if lab.rng.below(1000) < 100 {
        lab.rng.below(ms(500))
    } else {
        ms(lab.rng.below(13))
    }
}

// 6.824 lab scenario TestFigure8: leaders crash right after taking a command, a
// thousand times, and no committed entry is lost to a later leader (Raft paper §5.4.2,
// Figure 8).
#[test]
fn figure_8() {
    let servers = 5;
    for seed in SEED..SEED + 20 {
        let mut lab = Lab::new(servers, false, false, seed);
        let first = lab.random_command();
        lab.one(first, 1, true);
        let mut up = servers;
        for _ in 0..1000 {
            let mut leader = None;
            for id in lab.ids() {
                if lab.is_up(id) {
                    let value = lab.random_command();
                    if lab.start(id, value).is_some() {
                        leader = Some(id);
                    }
                }
            }
            let pause = figure_8_pause(&mut lab);
            lab.sleep(pause);
            if let Some(leader) = leader {
                lab.crash1(leader);
                up -= 1;
            }
            if up < 3 {
                let id = lab.random_node();
                if !lab.is_up(id) {
                    lab.start1(id);
                    lab.connect(id);
                    up += 1;
                }
            }
        }
        for id in lab.ids() {
            if !lab.is_up(id) {
                lab.start1(id);
                lab.connect(id);
            }
        }
        let last = lab.random_command();
        lab.one(last, servers, true);
        lab.end();
    }
}

// 6.824 lab scenario TestUnreliableAgree: over a network that loses, duplicates and
// reorders messages, concurrent clients' commands all commit (Raft paper §5.3, §5.5).
#[test]
fn unreliable_agree() {
    let servers = 5;
    let mut lab = Lab::new(servers, true, false, SEED);
    for iteration in 1..50 {
        for j in 0..4 {
            lab.one_in_background(command(100 * iteration + j), 1, true);
        }
        lab.one(command(iteration), 1, true);
    }
    lab.set_unreliable(false);
    // The lab's wg.Wait(): every background call must succeed.
    while !lab.background.is_empty() {
        lab.step();
    }
    lab.one(command(100), servers, true);
    lab.end();
}

// 6.824 lab scenario TestFigure8Unreliable: over an unreliable, reordering network,
// leaders are cut off right after taking commands, and later terms never lose committed
// entries (Raft paper §5.4.2, Figure 8).
#[test]
fn figure_8_unreliable() {
    let servers = 5;
    for seed in SEED..SEED + 20 {
        let mut lab = Lab::new(servers, true, false, seed);
        let first = command(lab.rng.below(10_000));
        lab.one(first, 1, true);
        let mut up = servers;
        for iteration in 0..1000 {
            if iteration == 200 {
                // The lab's setlongreordering(true): two replies in three arrive up to
                // 2.2 lab seconds late. Our network delays any message, not only
                // replies, so a smaller share is delayed as long.
                lab.cluster.set_network(NetworkConfig {
                    slow_ppm: 200_000,
                    slow_delay_max_instants: ms(2200),
                    ..NetworkConfig::unreliable()
                });
            }
            let mut leader = None;
            for id in lab.ids() {
                let value = command(lab.rng.below(10_000));
                if lab.start(id, value).is_some() && lab.is_connected(id) {
                    leader = Some(id);
                }
            }
            let pause = figure_8_pause(&mut lab);
            lab.sleep(pause);
            if let Some(leader) = leader {
                if lab.rng.below(1000) < 500 {
                    lab.disconnect(leader);
                    up -= 1;
                }
            }
            if up < 3 {
                let id = lab.random_node();
                if !lab.is_connected(id) {
                    lab.connect(id);
                    up += 1;
                }
            }
        }
        for id in lab.ids() {
            if !lab.is_connected(id) {
                lab.connect(id);
            }
        }
        let last = command(lab.rng.below(10_000));
        lab.one(last, servers, true);
        lab.end();
    }
}

/// Where a churn client is.
enum ChurnState {
    /// Will offer a new command at `at`.
    Idle { at: Time },
    /// Offered `value`, accepted at `index`; will look at it again at `at`, after
    /// `checks` looks.
    Waiting {
        value: Bytes,
        index: Index,
        checks: usize,
        at: Time,
    },
}

/// One of the lab's churn clients: offers a random command to every running server,
/// and if one accepts, looks a few times over 380 ms whether it committed there,
/// remembering the commands it saw committed.
struct ChurnClient {
    me: u64,
    state: ChurnState,
    /// Commands this client saw committed.
    values: Vec<Bytes>,
}

impl ChurnClient {
    /// The lab's pauses between looks, in ms.
    const BACKOFF_MS: [u64; 5] = [10, 20, 50, 100, 200];

    fn new(me: u64) -> ChurnClient {
        ChurnClient {
            me,
            state: ChurnState::Idle { at: 0 },
            values: Vec::new(),
        }
    }

    fn poll(&mut self, lab: &mut Lab) {
        let now = lab.now();
        match &mut self.state {
            ChurnState::Idle { at } if now >= *at => {
                let value = lab.random_command();
                let mut accepted = None;
                for id in lab.ids() {
                    if let Some(position) = lab.start(id, value.clone()) {
                        accepted = Some(position.index);
                    }
                }
                self.state = match accepted {
                    Some(index) => ChurnState::Waiting {
                        value,
                        index,
                        checks: 0,
                        at: now,
                    },
                    None => ChurnState::Idle {
                        at: now + ms(79 + self.me * 17),
                    },
                };
            }
            ChurnState::Waiting {
                value,
                index,
                checks,
                at,
            } if now >= *at => {
                let (count, data) = lab.n_committed(*index);
                if count > 0 {
                    if data.as_ref() == Some(value) {
                        self.values.push(value.clone());
                    }
                    self.state = ChurnState::Idle { at: now };
                    return;
                }
                *at = now + ms(Self::BACKOFF_MS[*checks]);
                *checks += 1;
                if *checks == Self::BACKOFF_MS.len() {
                    let at = *at;
                    self.state = ChurnState::Idle { at };
                }
            }
            _ => {}
        }
    }
}

/// Runs `instants` with the churn clients polled every instant.
fn sleep_with_clients(lab: &mut Lab, clients: &mut [ChurnClient], instants: u64) {
    for _ in 0..instants {
        lab.step();
        for client in clients.iter_mut() {
            client.poll(lab);
        }
    }
}

/// The lab's `internalChurn`: three clients keep offering commands while servers are
/// disconnected, crashed and restarted at random; afterwards every command a client saw
/// committed is applied on every server. Returns how many commands the clients saw
/// committed.
fn churn(unreliable: bool, seed: u64) -> usize {
    let servers = 5;
    let mut lab = Lab::new(servers, unreliable, false, seed);
    let mut clients: Vec<ChurnClient> = (0..3).map(ChurnClient::new).collect();
    for _ in 0..20 {
        if lab.rng.below(1000) < 200 {
            let id = lab.random_node();
            lab.disconnect(id);
        }
        if lab.rng.below(1000) < 500 {
            let id = lab.random_node();
            if !lab.is_up(id) {
                lab.start1(id);
            }
            lab.connect(id);
        }
        if lab.rng.below(1000) < 200 {
            let id = lab.random_node();
            if lab.is_up(id) {
                lab.crash1(id);
            }
        }
        // Shorter than an election timeout, so the group rarely settles between
        // changes, but not hugely shorter.
        sleep_with_clients(&mut lab, &mut clients, LAB_SECOND_INSTANTS * 7 / 10);
    }
    sleep_with_clients(&mut lab, &mut clients, LAB_SECOND_INSTANTS);
    lab.set_unreliable(false);
    for id in lab.ids() {
        if !lab.is_up(id) {
            lab.start1(id);
        }
        lab.connect(id);
    }
    // The clients stop.
    let values: Vec<Bytes> = clients
        .iter()
        .flat_map(|client| client.values.iter().cloned())
        .collect();
    lab.sleep(LAB_SECOND_INSTANTS);
    let last = lab.random_command();
    let last_index = lab.one(last, servers, true);
    // Index 1 is the bootstrap snapshot; every later entry is applied everywhere.
    let mut really = Vec::new();
    for index in 2..=last_index {
        let Some(data) = lab.wait(index, servers, None) else {
            lab.fatal(format!("index {index} not applied"));
        };
        really.push(data);
    }
    for value in &values {
        assert!(
            really.contains(value),
            "seed {seed}: didn't find committed value {value:?} in the final log"
        );
    }
    lab.end();
    values.len()
}

// 6.824 lab scenario TestReliableChurn: under random disconnects, crashes and restarts,
// every command clients saw committed survives on every server (Raft paper §5.4, §5.5).
#[test]
fn reliable_churn() {
    // The lab does not ask for progress under churn, and one seed may leave a quorum
    // too briefly to elect a leader; over all seeds, though, clients must have seen
    // commits, or the final check would prove nothing.
    let seen: usize = (SEED..SEED + 20).map(|seed| churn(false, seed)).sum();
    assert!(seen > 0, "no client saw a commit under any seed");
}

// 6.824 lab scenario TestUnreliableChurn: as TestReliableChurn, over a network that
// loses, duplicates and reorders messages (Raft paper §5.4, §5.5).
#[test]
fn unreliable_churn() {
    // The lab does not ask for progress under churn, and one seed may leave a quorum
    // too briefly to elect a leader; over all seeds, though, clients must have seen
    // commits, or the final check would prove nothing.
    let seen: usize = (SEED..SEED + 20).map(|seed| churn(true, seed)).sum();
    assert!(seen > 0, "no client saw a commit under any seed");
}

// =====================================================================================
// 3D: log compaction.

/// The lab's `snapcommon`: thirty rounds in which a victim server is disconnected or
/// crashed (or neither) while commands commit and every server snapshots every
/// `SNAPSHOT_INTERVAL` entries; the victim then rejoins and must catch up. The log
/// must stay short throughout.
fn snapshot_common(disconnect: bool, reliable: bool, crash: bool) {
    let servers = 3;
    let mut lab = Lab::new(servers, !reliable, true, SEED);
    let first = lab.random_command();
    lab.one(first, servers, true);
    let mut leader1 = lab.check_one_leader();
    for i in 0..30 {
        let mut victim = after(leader1, 1, servers);
        let mut sender = leader1;
        if i % 3 == 1 {
            sender = after(leader1, 1, servers);
            victim = leader1;
        }
        if disconnect {
            lab.disconnect(victim);
            let value = lab.random_command();
            lab.one(value, servers - 1, true);
        }
        if crash {
            lab.crash1(victim);
            let value = lab.random_command();
            lab.one(value, servers - 1, true);
        }
        // Perhaps enough to get a snapshot.
        let count = SNAPSHOT_INTERVAL / 2 + lab.rng.below(SNAPSHOT_INTERVAL);
        for _ in 0..count {
            let value = lab.random_command();
            lab.start(sender, value);
        }
        // Let the appliers catch up with the Starts. Without faults, make sure every
        // follower caught up, so that no snapshot needs to be installed.
        let value = lab.random_command();
        if !disconnect && !crash {
            lab.one(value, servers, true);
        } else {
            lab.one(value, servers - 1, true);
        }
        let log_size = lab.log_size();
        assert!(
            log_size <= LOG_ENTRIES_MAX,
            "log size too large: {log_size} entries"
        );
        if disconnect {
            // Reconnect the victim, which may be behind and need a snapshot.
            lab.connect(victim);
            let value = lab.random_command();
            lab.one(value, servers, true);
            leader1 = lab.check_one_leader();
        }
        if crash {
            lab.start1(victim);
            lab.connect(victim);
            let value = lab.random_command();
            lab.one(value, servers, true);
            leader1 = lab.check_one_leader();
        }
    }
    // Beyond the lab: the scenario did compact, and the rejoining variants did need
    // a leader's snapshot at least once.
    let stats = lab.cluster.stats();
    assert!(stats.snapshots_created > 0, "no snapshot was taken");
    if disconnect {
        assert!(
            stats.snapshots_installed > 0,
            "no snapshot was ever installed from a leader"
        );
    }
    lab.end();
}

// 6.824 lab scenario TestSnapshotBasic: servers that snapshot and compact their logs
// keep agreeing, with every follower kept up to date (Raft paper §7).
#[test]
fn snapshot_basic() {
    snapshot_common(false, true, false);
}

// 6.824 lab scenario TestSnapshotInstall: a follower disconnected past the leader's
// compaction point catches up by installing the leader's snapshot (Raft paper §7,
// InstallSnapshot).
#[test]
fn snapshot_install() {
    snapshot_common(true, true, false);
}

// 6.824 lab scenario TestSnapshotInstallUnreliable: as TestSnapshotInstall, over a
// network that loses, duplicates and reorders messages (Raft paper §7).
#[test]
fn snapshot_install_unreliable() {
    snapshot_common(true, false, false);
}

// 6.824 lab scenario TestSnapshotInstallCrash: a crashed follower restarts from its own
// snapshot and catches up from the leader's log or snapshot (Raft paper §7, §5.5).
#[test]
fn snapshot_install_crash() {
    snapshot_common(false, true, true);
}

// 6.824 lab scenario TestSnapshotInstallUnCrash: as TestSnapshotInstallCrash, over a
// network that loses, duplicates and reorders messages (Raft paper §7, §5.5).
#[test]
fn snapshot_install_uncrash() {
    snapshot_common(false, false, true);
}

// 6.824 lab scenario TestSnapshotAllCrash: every server crashes and restarts from its
// snapshot and log, repeatedly, and no committed index is lost (Raft paper §7, §5.5).
#[test]
fn snapshot_all_crash() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, true, SEED);
    let first = lab.random_command();
    lab.one(first, servers, true);
    for _ in 0..5 {
        // Perhaps enough to get a snapshot.
        let count = SNAPSHOT_INTERVAL / 2 + lab.rng.below(SNAPSHOT_INTERVAL);
        for _ in 0..count {
            let value = lab.random_command();
            lab.one(value, servers, true);
        }
        let value = lab.random_command();
        let index1 = lab.one(value, servers, true);
        // Crash all, then revive all.
        for id in lab.ids() {
            lab.crash1(id);
        }
        for id in lab.ids() {
            lab.start1(id);
            lab.connect(id);
        }
        let value = lab.random_command();
        let index2 = lab.one(value, servers, true);
        assert!(index2 > index1, "index decreased from {index1} to {index2}");
    }
    assert!(
        lab.cluster.stats().snapshots_created > 0,
        "no snapshot was taken"
    );
    lab.end();
}

// 6.824 lab scenario TestSnapshotInit: servers restarted from a snapshot initialise
// their view of it, so later writes of durable state do not lose it (Raft paper §7,
// §5.5).
#[test]
fn snapshot_init() {
    let servers = 3;
    let mut lab = Lab::new(servers, false, true, SEED);
    let first = lab.random_command();
    lab.one(first, servers, true);
    // Enough commands for a snapshot.
    for _ in 0..SNAPSHOT_INTERVAL + 1 {
        let value = lab.random_command();
        lab.one(value, servers, true);
    }
    // Crash all, then revive all.
    for id in lab.ids() {
        lab.crash1(id);
    }
    for id in lab.ids() {
        lab.start1(id);
        lab.connect(id);
    }
    // A single command, to get something written back to durable state.
    let value = lab.random_command();
    lab.one(value, servers, true);
    // Crash all, then revive all.
    for id in lab.ids() {
        lab.crash1(id);
    }
    for id in lab.ids() {
        lab.start1(id);
        lab.connect(id);
    }
    // Another command, to trigger a possible bug.
    let value = lab.random_command();
    lab.one(value, servers, true);
    assert!(
        lab.cluster.stats().snapshots_created > 0,
        "no snapshot was taken"
    );
    lab.end();
}
