//! Time: running instants and ticks, the periodic and final checks, and the 6.824
//! lab's helpers (`checkOneLeader`, `one`, `wait`).

use bytes::Bytes;
use concord_raft::{Index, NodeId};

use super::{Cluster, NodeState, ELECTION_WAIT_ELECTION_TIMEOUTS, LEADER_CHECK_INTERVAL_TICKS};
use crate::checkers::Violation;
use crate::network::TICK_INSTANTS;

impl Cluster {
    /// Runs `ticks` ticks. Stops early, returning the violation, once a check fails.
    pub fn run_ticks(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks * TICK_INSTANTS {
            self.run_instant();
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
        }
        Ok(())
    }

    /// Runs until `done` holds (checked after every instant) or `ticks_max` ticks pass.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        ticks_max: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool, Violation> {
        if done(self) {
            return Ok(true);
        }
        for _ in 0..ticks_max * TICK_INSTANTS {
            self.run_instant();
            if let Some(failure) = &self.failure {
                return Err(failure.clone());
            }
            if done(self) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs one instant: deliveries due, disk writes due, ticks due.
    pub fn run_instant(&mut self) {
        if self.failure.is_some() {
            return;
        }
        self.now += 1;
        let now = self.now;
        while let Some((group, message)) = self.network.pop_due(now) {
            self.deliver(group, message);
            if self.failure.is_some() {
                return;
            }
        }
        while let Some((&(at, _), _)) = self.persists.first_key_value() {
            if at > now {
                break;
            }
            let (_, (id, incarnation)) = self.persists.pop_first().expect("peeked");
            self.finish_write(id, incarnation);
            if self.failure.is_some() {
                return;
            }
        }
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, node)| (now + node.tick_phase).is_multiple_of(TICK_INSTANTS))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.tick_node(id);
        }
        if now.is_multiple_of(LEADER_CHECK_INTERVAL_TICKS * TICK_INSTANTS) {
            self.check_leaders();
        }
    }

    /// Runs the periodic checks now: every leader holds every committed entry of its
    /// group.
    pub fn check_leaders(&mut self) {
        for (&group, record) in &self.groups {
            let rafts = self.nodes.values().filter_map(|node| match &node.state {
                NodeState::Up(up) => up
                    .groups
                    .get(&group)
                    .map(|running| running.driver.raw().raft()),
                _ => None,
            });
            if let Err(violation) = record.checkers.check_leaders(rafts, self.now) {
                self.failure.get_or_insert(violation);
                return;
            }
        }
    }

    /// Runs every check that looks at whole logs: each durable log against the
    /// log-matching table, and each leader against the committed record. Called at the
    /// end of a run.
    pub fn check_all_logs(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut result = Ok(());
        'nodes: for (&id, node) in &self.nodes {
            if node.recovery_refusal.is_some() {
                // Its disk is damaged and nothing reads it any more.
                continue;
            }
            for (&group, record) in self.groups.iter_mut() {
                result = match &node.state {
                    NodeState::Up(up) => match up.groups.get(&group) {
                        Some(running) => {
                            record
                                .checkers
                                .on_persist(id, running.driver.raw().storage(), 0, now)
                        }
                        None => match up.disk.group_view(group) {
                            Some(store) => record.checkers.on_persist(id, &store, 0, now),
                            None => Ok(()),
                        },
                    },
                    NodeState::Down(disk) => match disk.group_view(group) {
                        Some(store) => record.checkers.on_persist(id, &store, 0, now),
                        None => Ok(()),
                    },
                    NodeState::Taken => Ok(()),
                };
                if result.is_err() {
                    break 'nodes;
                }
            }
        }
        if let Err(violation) = result {
            self.set_failure(violation);
        }
        self.check_leaders();
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// 6.824 `checkOneLeader`: runs up to [`ELECTION_WAIT_ELECTION_TIMEOUTS`] election
    /// timeouts until some connected running node leads, and returns it (the one of
    /// the highest term: [`Cluster::leader`]).
    pub fn check_one_leader(&mut self) -> Result<NodeId, String> {
        let ticks =
            ELECTION_WAIT_ELECTION_TIMEOUTS * u64::from(self.options.config.election_timeout_ticks);
        match self.run_until(ticks, |cluster| cluster.leader().is_some()) {
            Ok(true) => Ok(self.leader().expect("checked")),
            Ok(false) => Err(format!(
                "no leader after {ticks} ticks:\n{}",
                self.describe()
            )),
            Err(violation) => Err(violation.to_string()),
        }
    }

    /// [`Cluster::check_one_leader`] among `ids` only: a node cut off may still think it
    /// leads.
    pub fn check_one_leader_among(&mut self, ids: &[NodeId]) -> Result<NodeId, String> {
        let ticks =
            ELECTION_WAIT_ELECTION_TIMEOUTS * u64::from(self.options.config.election_timeout_ticks);
        match self.run_until(ticks, |cluster| cluster.leader_among(ids).is_some()) {
            Ok(true) => Ok(self.leader_among(ids).expect("checked")),
            Ok(false) => Err(format!(
                "no leader among {ids:?} after {ticks} ticks:\n{}",
                self.describe()
            )),
            Err(violation) => Err(violation.to_string()),
        }
    }

    /// 6.824 `wait`: runs until at least `count` nodes applied `index`, for up to
    /// `ticks_max` ticks. Returns the data there if they did.
    pub fn wait_commit(
        &mut self,
        index: Index,
        count: usize,
        ticks_max: u64,
    ) -> Result<Option<Bytes>, Violation> {
        self.run_until(ticks_max, |cluster| {
            cluster.committed_count(index).0 >= count
        })?;
        let (applied_by, data) = self.committed_count(index);
        Ok(if applied_by >= count { data } else { None })
    }

    /// 6.824 `one`: offers `data` to each connected running node in turn until one
    /// accepts it (as leader) and `expected_nodes` nodes applied it, trying for up to
    /// 10 election-timeout rounds, each waiting 2 election timeouts. With `retry`
    /// false, gives up after the first accepted proposal fails. Returns the index it
    /// was applied at.
    pub fn one(
        &mut self,
        data: Bytes,
        expected_nodes: usize,
        retry: bool,
    ) -> Result<Index, String> {
        let election_timeout = u64::from(self.options.config.election_timeout_ticks);
        for _ in 0..10 {
            if let Some(failure) = &self.failure {
                return Err(failure.to_string());
            }
            let connected: Vec<NodeId> = self
                .node_ids()
                .into_iter()
                .filter(|&id| self.is_connected(id))
                .collect();
            let proposed = connected.into_iter().find_map(|id| {
                let accepted = self.propose_on(id, data.clone()).ok()?;
                Some(accepted)
            });
            let Some(position) = proposed else {
                self.run_ticks(election_timeout)
                    .map_err(|violation| violation.to_string())?;
                continue;
            };
            let applied = self
                .wait_commit(position.index, expected_nodes, 2 * election_timeout)
                .map_err(|violation| violation.to_string())?;
            if applied.as_ref() == Some(&data) {
                return Ok(position.index);
            }
            if !retry {
                return Err(format!(
                    "one({:?}) failed to reach agreement on {expected_nodes} nodes at index {}:\n{}",
                    data,
                    position.index,
                    self.describe()
                ));
            }
        }
        Err(format!(
            "one({data:?}) failed to reach agreement on {expected_nodes} nodes:\n{}",
            self.describe()
        ))
    }
}
