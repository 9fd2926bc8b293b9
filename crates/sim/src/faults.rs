//! The fault scheduler of a randomized run: each tick it may change the partition,
//! crash a node (and restart it later), ask a group's leader for a membership change
//! or a leader transfer, make a node campaign, and let nodes snapshot and compact
//! their groups. At the end of the safety phase it heals everything for the liveness
//! phase.

use std::collections::BTreeMap;

use concord_raft::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, NodeId};
use concord_storage::GroupId;

use crate::cluster::Cluster;
use crate::network::TICK_INSTANTS;
use crate::params::Params;
use crate::rng::Rng;

/// Decides, tick by tick, what goes wrong.
#[derive(Debug)]
pub struct FaultScheduler {
    params: Params,
    rng: Rng,
    /// Crashed nodes and the tick at which they come back.
    restarts: BTreeMap<NodeId, u64>,
}

impl FaultScheduler {
    /// A scheduler for the faults `params` asks for, drawing from `rng`.
    pub fn new(params: &Params, rng: Rng) -> FaultScheduler {
        FaultScheduler {
            params: params.clone(),
            rng,
            restarts: BTreeMap::new(),
        }
    }

    /// One tick of faults.
    pub fn tick(&mut self, cluster: &mut Cluster) {
        let tick = cluster.ticks();
        let due: Vec<NodeId> = self
            .restarts
            .iter()
            .filter(|&(_, &at)| at <= tick)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.restarts.remove(&id);
            cluster.restart(id);
        }
        // Nodes that crashed at a crash point come back later too.
        for id in cluster.node_ids() {
            if !cluster.is_up(id) && !self.restarts.contains_key(&id) {
                let down_ticks = self.rng.between(1, self.params.down_ticks_max);
                self.restarts.insert(id, tick + down_ticks);
            }
        }
        if self.rng.chance(self.params.crash_ppm) {
            let up: Vec<NodeId> = cluster
                .node_ids()
                .into_iter()
                .filter(|&id| cluster.is_up(id))
                .collect();
            if let Some(&id) = self.rng.pick(&up) {
                cluster.crash(id);
                let down_ticks = self.rng.between(1, self.params.down_ticks_max);
                self.restarts.insert(id, tick + down_ticks);
            }
        }
        if self.rng.chance(self.params.partition_change_ppm) {
            self.change_partition(cluster);
        }
        if self.rng.chance(self.params.membership_change_ppm) {
            let group = self.pick_group(cluster);
            self.change_membership(cluster, group);
        }
        for group in cluster.group_ids() {
            self.finish_explicit_joint(cluster, group);
        }
        if self.rng.chance(self.params.leader_transfer_ppm) {
            let group = self.pick_group(cluster);
            if let Some(leader) = cluster.leader_in(group) {
                let voters = cluster
                    .view_in(group, leader)
                    .map(|view| view.conf_state.voters)
                    .unwrap_or_default();
                if let Some(&target) = self.rng.pick(&voters) {
                    cluster.transfer_leader_in(group, leader, target);
                }
            }
        }
        if self.rng.chance(self.params.campaign_ppm) {
            let group = self.pick_group(cluster);
            let ids = cluster.node_ids();
            if let Some(&id) = self.rng.pick(&ids) {
                cluster.campaign_in(group, id);
            }
        }
        if self.params.snapshot_interval_entries > 0 {
            for group in cluster.group_ids() {
                for id in cluster.node_ids() {
                    let (Some(applied), Some(snapshot)) = (
                        cluster.applied_index_in(group, id),
                        cluster.snapshot_index_in(group, id),
                    ) else {
                        continue;
                    };
                    if applied >= snapshot + self.params.snapshot_interval_entries {
                        let keep = self.rng.between(0, self.params.snapshot_keep_entries_max);
                        cluster.snapshot_in(group, id, keep);
                    }
                }
            }
        }
    }

    fn pick_group(&mut self, cluster: &Cluster) -> GroupId {
        let groups = cluster.group_ids();
        *self.rng.pick(&groups).expect("at least one group")
    }

    fn change_partition(&mut self, cluster: &mut Cluster) {
        let mut ids = cluster.node_ids();
        match self.rng.below(100) {
            0..=39 => cluster.heal(),
            40..=69 => {
                self.rng.shuffle(&mut ids);
                let group_count = self.rng.between(2, 3) as usize;
                let mut groups: Vec<Vec<NodeId>> = vec![Vec::new(); group_count];
                for id in ids {
                    let group = self.rng.below(group_count as u64) as usize;
                    groups[group].push(id);
                }
                for group in &mut groups {
                    group.sort_unstable();
                }
                cluster.partition(&groups);
            }
            70..=84 => {
                cluster.heal();
                let target = match cluster.leader() {
                    Some(leader) if self.rng.coin() => Some(leader),
                    _ => self.rng.pick(&ids).copied(),
                };
                if let Some(id) = target {
                    cluster.disconnect(id);
                }
            }
            _ if self.params.one_way_partitions => {
                cluster.heal();
                let cuts = self.rng.between(1, ids.len() as u64);
                for _ in 0..cuts {
                    let from = *self.rng.pick(&ids).expect("non-empty");
                    let to = *self.rng.pick(&ids).expect("non-empty");
                    cluster.cut_link(from, to);
                }
            }
            _ => cluster.heal(),
        }
    }

    /// Asks `group`'s leader for a random membership change within the pool of node
    /// ids.
    fn change_membership(&mut self, cluster: &mut Cluster, group: GroupId) {
        let Some(leader) = cluster.leader_in(group) else {
            return;
        };
        let Some(view) = cluster.view_in(group, leader) else {
            return;
        };
        let conf = view.conf_state;
        if conf.is_joint() {
            return;
        }
        let pool = cluster.node_ids();
        let outsiders: Vec<NodeId> = pool
            .iter()
            .copied()
            .filter(|id| !conf.voters.contains(id) && !conf.learners.contains(id))
            .collect();
        let single = |kind, node| ConfChangeSingle { kind, node };
        let change = match self.rng.below(6) {
            0 => self
                .rng
                .pick(&outsiders)
                .map(|&node| ConfChange::add_learner(node)),
            1 => {
                let candidates: Vec<NodeId> =
                    outsiders.iter().chain(&conf.learners).copied().collect();
                self.rng
                    .pick(&candidates)
                    .map(|&node| ConfChange::add_voter(node))
            }
            2 => {
                let members: Vec<NodeId> =
                    conf.voters.iter().chain(&conf.learners).copied().collect();
                self.rng
                    .pick(&members)
                    .map(|&node| ConfChange::remove(node))
            }
            3 => self
                .rng
                .pick(&conf.voters)
                .map(|&node| ConfChange::add_learner(node)),
            4 => self
                .rng
                .pick(&conf.learners)
                .map(|&node| ConfChange::add_voter(node)),
            _ => {
                // Replace a voter: two voter changes at once, so joint consensus.
                let (Some(&out), Some(&new)) =
                    (self.rng.pick(&conf.voters), self.rng.pick(&outsiders))
                else {
                    return;
                };
                let transition = match self.rng.below(3) {
                    0 => ConfChangeTransition::Auto,
                    1 => ConfChangeTransition::JointAutoLeave,
                    _ => ConfChangeTransition::JointExplicit,
                };
                Some(ConfChange {
                    transition,
                    changes: vec![
                        single(ConfChangeKind::Remove, out),
                        single(ConfChangeKind::AddVoter, new),
                    ],
                })
            }
        };
        if let Some(change) = change {
            let _ = cluster.propose_conf_change_in(group, leader, &change);
        }
    }

    /// A joint configuration entered with `JointExplicit` stays until someone proposes
    /// leaving it: the leader is asked now and then.
    fn finish_explicit_joint(&mut self, cluster: &mut Cluster, group: GroupId) {
        let Some(leader) = cluster.leader_in(group) else {
            return;
        };
        let Some(view) = cluster.view_in(group, leader) else {
            return;
        };
        if view.conf_state.is_joint() && !view.conf_state.auto_leave && self.rng.chance(100_000) {
            let _ = cluster.propose_conf_change_in(group, leader, &ConfChange::leave_joint());
        }
    }

    /// Ends the faults for the liveness phase: the network becomes reliable and whole,
    /// disks stop failing and writes take at most an eighth of an election timeout,
    /// and every node runs.
    pub fn heal_all(&mut self, cluster: &mut Cluster) {
        self.restarts.clear();
        cluster.set_crash_point_ppm(0);
        cluster.set_disk_fault_ppm(0);
        cluster.heal();
        let mut network = cluster.network_config();
        network.loss_ppm = 0;
        network.duplicate_ppm = 0;
        network.delay_max_instants = network.delay_min_instants.max(1);
        network.slow_ppm = 0;
        cluster.set_network(network);
        // Raft's timing requirement (paper §5.6): broadcast time, disk write included,
        // well below the election timeout.
        let election_timeout_instants =
            u64::from(self.params.election_timeout_ticks) * TICK_INSTANTS;
        let persist_delay = cluster.options().persist_delay_max_instants;
        cluster.set_persist_delay_max(persist_delay.min(election_timeout_instants / 8));
        for id in cluster.node_ids() {
            cluster.restart(id);
        }
    }

    /// Shuts down, for good, each group on every node outside the group's latest
    /// membership once a majority of each of its voter sets has applied it, as an
    /// operator would (Raft thesis §4.2.2: removed servers are shut down once the
    /// change is in force). A removed node that never learnt of its removal could
    /// otherwise disrupt elections forever without pre-vote or check-quorum (thesis
    /// §4.2.3) — and waiting for every voter to apply the change can wait forever when
    /// that disruption keeps a lagging voter from catching up. A group retired on a
    /// node that a later change adds back is started again.
    pub fn retire_removed(&mut self, cluster: &mut Cluster) {
        for id in cluster.node_ids() {
            cluster.restart(id);
        }
        for group in cluster.group_ids() {
            let (index, conf) = cluster.latest_conf_state_in(group);
            let members = conf.all_nodes();
            for &id in &members {
                cluster.unretire(id, group);
            }
            let majority_applied = |voters: &[NodeId]| {
                let applied = voters
                    .iter()
                    .filter(|&&id| {
                        cluster
                            .applied_index_in(group, id)
                            .is_some_and(|applied| applied >= index)
                    })
                    .count();
                voters.is_empty() || applied > voters.len() / 2
            };
            if !majority_applied(&conf.voters) || !majority_applied(&conf.voters_outgoing) {
                continue;
            }
            for id in cluster.node_ids() {
                if !members.contains(&id) && !cluster.is_retired(id, group) {
                    cluster.retire(id, group);
                }
            }
        }
    }
}
