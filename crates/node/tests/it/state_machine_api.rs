//! What a state machine gets from the runtime: entries with their index and term,
//! leader notices in apply order and the commands it proposes from them, events to
//! local subscribers that outlive snapshot installs, reads with the index and term
//! they were served at, its group's kind and description at creation and restart, a
//! visible stop when it fails, and, for a state machine that keeps its own state
//! durably, a restart that replays the log from its own index.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_node::metrics::NodeMetrics;
use concord_node::{
    ApiError, ApplyContext, GroupEvent, GroupHealth, GroupId, GroupSpec, Index, LeaderNotice,
    NodeId, StateMachine, StateMachineError, StateMachineFactory,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use concord_raft::Storage as _;
use concord_storage::Log;

use crate::node_support::{bounded, test_config, Network, SharedFactory, TestCluster};

const GROUP: GroupId = 21;
const BOUND: Duration = Duration::from_secs(15);

/// What the probes of one test saw, across nodes and restarts.
#[derive(Default)]
struct Seen {
    /// Every (node, group, spec) a factory was asked for.
    specs: Vec<(NodeId, GroupId, GroupSpec)>,
    /// Each node's leader notices, in the order heard.
    notices: BTreeMap<NodeId, Vec<LeaderNotice>>,
    /// Nodes whose state machines refuse snapshots.
    refuse_restore: BTreeMap<NodeId, bool>,
}

/// A state machine that records what it applies as `index:term:command` lines,
/// emits `emit:` commands' payloads as events, fails on `fail:<its node>`, and proposes
/// `elected:<term>` when told it leads.
struct Probe {
    node: NodeId,
    seen: Arc<Mutex<Seen>>,
    lines: Vec<String>,
}

impl StateMachine for Probe {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let command = String::from_utf8(command.to_vec()).expect("utf-8 command");
        if let Some(on) = command.strip_prefix("fail:") {
            if on == self.node.to_string() {
                return Err(StateMachineError("the probe fails on purpose".into()));
            }
        }
        if let Some(event) = command.strip_prefix("emit:") {
            context.emit(Bytes::from(event.to_string()));
        }
        self.lines
            .push(format!("{}:{}:{command}", context.index(), context.term()));
        Ok(Bytes::from(format!("{}", context.index())))
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.lines.join("\n")))
    }

    fn snapshot(&self, sink: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        Ok(sink.write_all(self.lines.join("\n").as_bytes())?)
    }

    fn restore(&mut self, source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        let refuse = self.seen.lock().unwrap().refuse_restore.get(&self.node) == Some(&true);
        if refuse {
            return Err(StateMachineError("the probe refuses snapshots".into()));
        }
        let mut text = String::new();
        source.read_to_string(&mut text)?;
        self.lines = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        Ok(())
    }

    fn on_leader_change(&mut self, notice: LeaderNotice) -> Vec<Bytes> {
        let mut seen = self.seen.lock().unwrap();
        seen.notices.entry(self.node).or_default().push(notice);
        match notice {
            LeaderNotice::Elected { term } => vec![Bytes::from(format!("elected:{term}"))],
            LeaderNotice::SteppedDown { .. } => Vec::new(),
        }
    }
}

struct ProbeFactory {
    node: NodeId,
    seen: Arc<Mutex<Seen>>,
}

impl StateMachineFactory for ProbeFactory {
    fn create(
        &self,
        group: GroupId,
        spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        self.seen
            .lock()
            .unwrap()
            .specs
            .push((self.node, group, spec.clone()));
        Ok(Box::new(Probe {
            node: self.node,
            seen: self.seen.clone(),
            lines: Vec::new(),
        }))
    }
}

fn probe_cluster(seen: &Arc<Mutex<Seen>>) -> TestCluster {
    let mut cluster = TestCluster::new(Network::Memory);
    let seen = seen.clone();
    cluster.factory = Arc::new(move |node| {
        SharedFactory(Arc::new(ProbeFactory {
            node,
            seen: seen.clone(),
        }))
    });
    cluster
}

/// Proposes `command` through the leader, retrying refusals, and returns the index
/// it applied at.
async fn propose(cluster: &TestCluster, command: &str) -> Index {
    let deadline = Instant::now() + BOUND;
    loop {
        let leader = cluster.leader(GROUP, BOUND).await;
        match cluster
            .node(leader)
            .propose(GROUP, Bytes::from(command.to_string()))
            .await
        {
            Ok(response) => return response.index,
            Err(error) => {
                assert!(Instant::now() < deadline, "{command} not applied: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Makes the leader's state machine fail on a command of its own; its proposer hears
/// the outcome is unknown (the entry is committed; other replicas apply it). Returns
/// the stopped node.
async fn stop_the_leader(cluster: &TestCluster) -> NodeId {
    let leader = cluster.leader(GROUP, BOUND).await;
    let failed = cluster
        .node(leader)
        .propose(GROUP, Bytes::from(format!("fail:{leader}")))
        .await;
    assert!(
        matches!(failed, Err(ApiError::OutcomeUnknown(_))),
        "{failed:?}"
    );
    leader
}

/// The probe's lines on node `id`, read linearizably there.
async fn lines_on(cluster: &TestCluster, id: NodeId) -> Vec<String> {
    let read = cluster
        .node(id)
        .read(GROUP, Bytes::new())
        .await
        .expect("read");
    String::from_utf8(read.response.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Snapshots every 8 entries, compacting the log right up to each.
fn compact_eagerly(cluster: &mut TestCluster) {
    cluster.tweak = Arc::new(|config| {
        config.snapshot_interval_entries = 8;
        config.snapshot_trailing_entries = 0;
    });
}

/// Stops node `id` while 30 commands commit, so that (with [`compact_eagerly`]) it
/// can catch up only through a snapshot once restarted.
async fn leave_behind_a_snapshot(cluster: &mut TestCluster, id: NodeId) {
    cluster.stop(id).await;
    for n in 0..30 {
        propose(cluster, &format!("meanwhile-{n}")).await;
    }
}

/// The next event on `events`, within the bound.
async fn next_event(events: &mut broadcast::Receiver<GroupEvent>) -> GroupEvent {
    tokio::time::timeout(BOUND, events.recv())
        .await
        .expect("an event within the bound")
        .expect("no events missed")
}

/// Each leader's state machine hears `Elected` once the term's first entry is
/// applied, and the command it proposes from it commits in that same term; the
/// deposed leader hears `SteppedDown` for its term. Every entry reaches `apply` with
/// its own index and term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_hear_of_their_term_in_apply_order_and_propose_from_it() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let first = cluster.leader(GROUP, BOUND).await;
        let written = propose(&cluster, "after-first-election").await;
        let first_term = cluster.node(first).status(GROUP).await.unwrap().term;

        let second = if first == 1 { 2 } else { 1 };
        cluster
            .node(first)
            .transfer_leader(GROUP, second)
            .await
            .expect("transfer");
        let deadline = Instant::now() + BOUND;
        while cluster.leader(GROUP, BOUND).await != second {
            assert!(Instant::now() < deadline, "leadership did not move");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        propose(&cluster, "after-transfer").await;
        let second_term = cluster.node(second).status(GROUP).await.unwrap().term;
        assert!(second_term > first_term);

        let lines = lines_on(&cluster, 3).await;
        let parsed: Vec<(Index, u64, String)> = lines
            .iter()
            .map(|line| {
                let mut parts = line.splitn(3, ':');
                let index = parts.next().unwrap().parse().unwrap();
                let term = parts.next().unwrap().parse().unwrap();
                (index, term, parts.next().unwrap().to_string())
            })
            .collect();
        // Indexes increase; each leader's `elected:<term>` is an entry of that term.
        assert!(
            parsed.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{lines:?}"
        );
        for term in [first_term, second_term] {
            let elected = format!("elected:{term}");
            let entry = parsed.iter().find(|(_, _, command)| *command == elected);
            let Some((_, entry_term, _)) = entry else {
                panic!("no {elected} in {lines:?}");
            };
            assert_eq!(*entry_term, term, "{lines:?}");
        }
        assert!(parsed.iter().any(|(index, term, command)| *index == written
            && *term == first_term
            && command == "after-first-election"));

        let notices = seen.lock().unwrap().notices.clone();
        let first_notices = &notices[&first];
        assert!(first_notices.contains(&LeaderNotice::Elected { term: first_term }));
        assert!(
            first_notices.contains(&LeaderNotice::SteppedDown { term: first_term }),
            "{first_notices:?}"
        );
        assert!(notices[&second].contains(&LeaderNotice::Elected { term: second_term }));
        cluster.shutdown().await;
    })
    .await;
}

/// A subscriber hears each emitted event with its entry's index and term, in apply
/// order. A follower that falls behind the compacted log is sent a snapshot: its
/// subscriber hears `Restored` at the snapshot's index and then the events after it,
/// on the same channel. (Events are delivery only: a restarted node replaying its
/// own log emits those entries' events again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_subscribers_in_order_across_a_snapshot_install() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        compact_eagerly(&mut cluster);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let leader = cluster.leader(GROUP, BOUND).await;
        let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
        let mut events = cluster.node(follower).subscribe(GROUP);
        let mut indexes = Vec::new();
        for n in 0..3 {
            indexes.push(propose(&cluster, &format!("emit:e{n}")).await);
        }
        for (n, &index) in indexes.iter().enumerate() {
            match next_event(&mut events).await {
                GroupEvent::Applied {
                    index: got,
                    event,
                    term,
                } => {
                    assert_eq!((got, event), (index, Bytes::from(format!("e{n}"))));
                    assert!(term > 0);
                }
                other => panic!("expected event e{n}, got {other:?}"),
            }
        }

        leave_behind_a_snapshot(&mut cluster, follower).await;
        let node = cluster.start(follower).await;
        let mut events = node.subscribe(GROUP);
        let after = propose(&cluster, "emit:after").await;
        // The restarted node first replays its own log from its own snapshot, which
        // may emit the early events again; then the leader's snapshot replaces it.
        let restored_at = loop {
            match next_event(&mut events).await {
                GroupEvent::Restored { index } => break index,
                GroupEvent::Applied { index, .. } if index <= indexes[2] => {}
                other => panic!("expected a snapshot install, got {other:?}"),
            }
        };
        assert!(restored_at > indexes[2] && restored_at < after);
        match next_event(&mut events).await {
            GroupEvent::Applied { index, event, .. } => {
                assert_eq!((index, event), (after, Bytes::from_static(b"after")))
            }
            other => panic!("expected the event after the snapshot, got {other:?}"),
        }
        cluster.shutdown().await;
    })
    .await;
}

/// A linearizable read answers with the index it was served at (at least the last
/// acknowledged write's) and the leader's term; a stale read with the local applied
/// index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_say_the_index_and_term_they_were_served_at() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let written = propose(&cluster, "x").await;
        let leader = cluster.leader(GROUP, BOUND).await;
        let term = cluster.node(leader).status(GROUP).await.unwrap().term;
        for id in [1, 2, 3] {
            let read = cluster
                .node(id)
                .read(GROUP, Bytes::new())
                .await
                .expect("read");
            assert!(
                read.index >= written,
                "node {id}: {} < {written}",
                read.index
            );
            assert_eq!(read.term, term, "node {id}");
            let lines = String::from_utf8(read.response.to_vec()).unwrap();
            assert!(lines.contains(&format!("{written}:{term}:x")), "{lines}");
        }
        cluster.applied_everywhere(GROUP, written, BOUND).await;
        let stale = cluster
            .node(leader)
            .read_stale(GROUP, Bytes::new())
            .await
            .unwrap();
        let applied = cluster.node(leader).status(GROUP).await.unwrap().applied;
        assert!(stale.index >= written && stale.index <= applied);
        cluster.shutdown().await;
    })
    .await;
}

/// The kind and description a group is founded with reach the factory on every
/// founder, and again when a node restarts and reloads the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_spec_reaches_the_factory_at_creation_and_restart() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        let spec = GroupSpec {
            kind: "probe".into(),
            description: Bytes::from_static(b"owner=tests"),
        };
        cluster.spec = spec.clone();
        cluster.start_group(&[1, 2], &[GROUP]).await;
        propose(&cluster, "x").await;
        cluster.stop(2).await;
        cluster.start(2).await;
        let created: Vec<(NodeId, GroupId, GroupSpec)> = seen.lock().unwrap().specs.clone();
        let on = |node: NodeId| {
            created
                .iter()
                .filter(|(id, group, _)| *id == node && *group == GROUP)
                .map(|(_, _, spec)| spec.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(on(1), vec![spec.clone()]);
        assert_eq!(on(2), vec![spec.clone(), spec]);
        cluster.shutdown().await;
    })
    .await;
}

/// A state machine that fails in `apply` stops its group on that node: its proposer
/// hears the outcome is unknown (the entry is committed; other replicas apply it),
/// status says why, the stopped metric is 1, proposals and reads there are refused
/// with `GroupStopped`, and the node steps down and never seeks leadership again, so
/// a voter that works is elected and writes go on. A follower whose state machine
/// refuses the leader's snapshot stops the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_state_machine_stops_its_group_visibly() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        compact_eagerly(&mut cluster);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;

        // The leader's state machine fails applying a command: the group stops there.
        let leader = stop_the_leader(&cluster).await;
        let leader_node = cluster.node(leader).clone();
        let status = leader_node.status(GROUP).await.unwrap();
        assert!(
            matches!(&status.health, GroupHealth::Stopped { reason } if reason.contains("fails on purpose")),
            "{:?}",
            status.health
        );
        let stopped = NodeMetrics::read(&leader_node.metrics().group(GROUP).stopped);
        assert_eq!(stopped, 1);
        // Once the node's loop hears of the stop, proposals there are refused; one
        // it accepted before is committed and its outcome unknown here.
        let deadline = Instant::now() + BOUND;
        loop {
            match leader_node.propose(GROUP, Bytes::from_static(b"y")).await {
                Err(ApiError::GroupStopped { .. }) => break,
                Err(ApiError::OutcomeUnknown(_)) | Err(ApiError::NotLeader { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => panic!("a proposal to a stopped group: {other:?}"),
            }
        }
        // Another voter leads now, and the failed command applied there.
        let index = propose(&cluster, "after-the-stop").await;
        let new_leader = cluster.leader(GROUP, BOUND).await;
        assert_ne!(new_leader, leader);
        let lines = lines_on(&cluster, new_leader).await;
        assert!(
            lines.iter().any(|line| line.ends_with(&format!(":fail:{leader}"))),
            "{lines:?}"
        );
        // (The new leader's own `elected:` command may follow it.)
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with(&format!("{index}:")) && line.ends_with(":after-the-stop")),
            "{lines:?}"
        );

        // A follower refuses the leader's snapshot: it stops too.
        let refusing = [1, 2, 3]
            .into_iter()
            .find(|&id| id != leader && id != new_leader)
            .unwrap();
        leave_behind_a_snapshot(&mut cluster, refusing).await;
        seen.lock().unwrap().refuse_restore.insert(refusing, true);
        let node = cluster.start(refusing).await;
        let deadline = Instant::now() + BOUND;
        let reason = loop {
            let status = node.status(GROUP).await.unwrap();
            if let GroupHealth::Stopped { reason } = status.health {
                break reason;
            }
            assert!(Instant::now() < deadline, "the refusing follower did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(reason.contains("refuses snapshots"), "{reason}");
        match node.read(GROUP, Bytes::new()).await {
            Err(ApiError::GroupStopped { group, .. }) => assert_eq!(group, GROUP),
            other => panic!("a read on a stopped group: {other:?}"),
        }
        cluster.shutdown().await;
    })
    .await;
}

/// Two of three voters' state machines stop, each while it leads: each steps down
/// and never campaigns again, so the one that works is elected with their votes and
/// writes go on there (leadership never bounces between the stopped two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_working_voter_leads_when_two_have_stopped() {
    bounded(async {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cluster = probe_cluster(&seen);
        cluster.start_group(&[1, 2, 3], &[GROUP]).await;
        let mut stopped = Vec::new();
        for _ in 0..2 {
            let leader = stop_the_leader(&cluster).await;
            assert!(!stopped.contains(&leader), "stopped node {leader} led");
            stopped.push(leader);
            // Writes go on under another leader.
            propose(&cluster, &format!("after-stopping-{leader}")).await;
        }
        let working = [1, 2, 3]
            .into_iter()
            .find(|id| !stopped.contains(id))
            .unwrap();
        assert_eq!(cluster.leader(GROUP, BOUND).await, working);
        let lines = lines_on(&cluster, working).await;
        for id in &stopped {
            assert!(
                lines
                    .iter()
                    .any(|line| line.ends_with(&format!(":fail:{id}"))),
                "{lines:?}"
            );
        }
        cluster.shutdown().await;
    })
    .await;
}

/// A counter that keeps its total and applied index in a file of its own, written
/// every `persist_every` commands, and reports the index it wrote as durable.
struct DurableCounter {
    path: PathBuf,
    total: i64,
    applied: Index,
    durable: Index,
    persist_every: u64,
    unpersisted: u64,
    /// Indexes handed to `apply`, one list per life of the state machine.
    journal: Arc<Mutex<Vec<Vec<Index>>>>,
    restores: Arc<AtomicUsize>,
}

impl DurableCounter {
    fn persist(&mut self) -> Result<(), StateMachineError> {
        std::fs::write(&self.path, format!("{} {}", self.applied, self.total))?;
        self.durable = self.applied;
        self.unpersisted = 0;
        Ok(())
    }
}

impl StateMachine for DurableCounter {
    fn apply(
        &mut self,
        context: &mut ApplyContext<'_>,
        command: Bytes,
    ) -> Result<Bytes, StateMachineError> {
        let index = context.index();
        assert!(
            index > self.applied,
            "{index} applied after {}",
            self.applied
        );
        self.journal.lock().unwrap().last_mut().unwrap().push(index);
        let amount: i64 = std::str::from_utf8(&command).unwrap().parse().unwrap();
        self.total += amount;
        self.applied = index;
        self.unpersisted += 1;
        if self.unpersisted >= self.persist_every {
            self.persist()?;
        }
        Ok(Bytes::new())
    }

    fn query(&self, _query: Bytes) -> Result<Bytes, StateMachineError> {
        Ok(Bytes::from(self.total.to_string()))
    }

    fn snapshot(&self, sink: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        Ok(sink.write_all(format!("{} {}", self.applied, self.total).as_bytes())?)
    }

    fn restore(&mut self, source: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        let mut text = String::new();
        source.read_to_string(&mut text)?;
        let (applied, total) = text.split_once(' ').expect("applied and total");
        self.applied = applied.parse().unwrap();
        self.total = total.parse().unwrap();
        self.restores.fetch_add(1, Ordering::SeqCst);
        self.persist()
    }

    fn durable_index(&self) -> Option<Index> {
        Some(self.durable)
    }
}

/// Opens the counter's file, as a durable state machine does at start.
struct DurableFactory {
    path: PathBuf,
    persist_every: u64,
    journal: Arc<Mutex<Vec<Vec<Index>>>>,
    restores: Arc<AtomicUsize>,
}

impl StateMachineFactory for DurableFactory {
    fn create(
        &self,
        _group: GroupId,
        _spec: &GroupSpec,
    ) -> Result<Box<dyn StateMachine>, StateMachineError> {
        let (applied, total) = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (applied, total) = text.split_once(' ').expect("applied and total");
                (applied.parse().unwrap(), total.parse().unwrap())
            }
            Err(_) => (0, 0),
        };
        self.journal.lock().unwrap().push(Vec::new());
        Ok(Box::new(DurableCounter {
            path: self.path.clone(),
            total,
            applied,
            durable: applied,
            persist_every: self.persist_every,
            unpersisted: 0,
            journal: self.journal.clone(),
            restores: self.restores.clone(),
        }))
    }
}

/// Runs a one-node group of [`DurableCounter`]s persisting every `persist_every`
/// commands (snapshots every 8 entries, compacting right up to them), adds 1 forty
/// times, restarts the node and checks that the state machine was never restored
/// from a snapshot, that after the restart it was handed exactly the commands its
/// file did not hold, in order, and that the total is right.
async fn durable_state_machine_restart(persist_every: u64) {
    let dir = tempfile::tempdir().unwrap();
    let factory = Arc::new(DurableFactory {
        path: dir.path().join("counter"),
        persist_every,
        journal: Arc::default(),
        restores: Arc::default(),
    });
    let mut cluster = TestCluster::new(Network::Memory);
    let shared = factory.clone();
    cluster.factory = Arc::new(move |_| SharedFactory(shared.clone()));
    compact_eagerly(&mut cluster);
    cluster.start_group(&[1], &[GROUP]).await;
    for _ in 0..40 {
        propose(&cluster, "1").await;
    }
    cluster.stop(1).await;
    let commands = factory.journal.lock().unwrap()[0].clone();
    assert_eq!(commands.len(), 40);
    let durable: Index = match std::fs::read_to_string(&factory.path) {
        Ok(text) => text.split_once(' ').unwrap().0.parse().unwrap(),
        Err(_) => 0,
    };
    let data_dir = cluster.dirs[&1].path().to_path_buf();
    let (snapshot_index, first_index) = {
        let log = Log::open(&data_dir, test_config(1, &data_dir).log_config()).unwrap();
        let storage = log.group(GROUP);
        (
            storage.snapshot(0).unwrap().metadata.index,
            storage.first_index().unwrap(),
        )
    };
    assert!(
        first_index <= durable.max(1) + 1,
        "compacted to {first_index} past the durable index {durable}"
    );
    if persist_every > 1 {
        assert!(snapshot_index > durable, "{snapshot_index} <= {durable}");
    }

    cluster.start(1).await;
    cluster.leader(GROUP, BOUND).await;
    let total = cluster.node(1).read(GROUP, Bytes::new()).await.unwrap();
    assert_eq!(total.response, Bytes::from_static(b"40"));
    let journal = factory.journal.lock().unwrap().clone();
    assert_eq!(journal.len(), 2, "one state machine per life");
    let expected: Vec<Index> = commands
        .iter()
        .copied()
        .filter(|&index| index > durable)
        .collect();
    assert_eq!(
        journal[1], expected,
        "after the restart, exactly the commands above the durable index {durable}"
    );
    assert_eq!(factory.restores.load(Ordering::SeqCst), 0);
    cluster.shutdown().await;
}

/// Persisting every command: the state machine is ahead of every snapshot and is
/// handed nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_state_machine_ahead_of_the_snapshot_is_not_applied_again() {
    bounded(durable_state_machine_restart(1)).await;
}

/// Persisting every 23 commands (once in the forty) while snapshots come every 8
/// entries: the state machine restarts well behind the latest stored snapshot (the
/// last one or two may still be in flight when the node stops), and the log from its
/// own index (kept, though the snapshot is newer) is replayed into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_state_machine_behind_the_snapshot_replays_the_log_from_its_index() {
    bounded(durable_state_machine_restart(23)).await;
}

/// Never persisting: nothing of the log may be compacted, and the whole of it is
/// replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_state_machine_that_never_persisted_replays_the_whole_log() {
    bounded(durable_state_machine_restart(1_000)).await;
}
