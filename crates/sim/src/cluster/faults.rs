//! What goes wrong: the network (disconnections, partitions, one-way cuts, loss and
//! delay), crashes and restarts, disk faults and damaged disks, and groups a node
//! leaves for good.

use concord_group::{Applier, ApplierStart, DriverConfig, GroupDriver, SnapshotPolicy};
use concord_raft::{NodeId, RawNode};
use concord_storage::GroupId;

use super::{BeforeWrite, Cluster, ClusterEvent, NodeState, SimFault, UpGroup, UpNode};
use crate::checkers::CheckerKind;
use crate::network::NetworkConfig;
use crate::rng::mix64;
use crate::storage::{DiskFault, StorageFailure, StorageMode};

impl Cluster {
    /// Cuts every link to and from `id` and marks it disconnected (6.824
    /// `disconnect`).
    pub fn disconnect(&mut self, id: NodeId) {
        let all = self.node_ids();
        self.network.isolate(id, &all);
        self.disconnected.insert(id);
        self.trace_event(&[10, id], || format!("network: node {id} disconnected"));
    }

    /// Marks `id` connected and restores its links, both ways, to every peer that is
    /// connected (6.824 `connect`: a link works when both its ends are connected).
    /// Links to disconnected peers stay cut until those are connected in turn.
    pub fn connect(&mut self, id: NodeId) {
        self.disconnected.remove(&id);
        let peers: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|&peer| peer != id && self.is_connected(peer))
            .collect();
        self.network.reconnect(id, &peers);
        self.trace_event(&[11, id], || format!("network: node {id} connected"));
    }

    /// Only nodes in the same group can talk; nodes in no group are isolated, and
    /// count as disconnected until connected or healed.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let all = self.node_ids();
        self.network.partition(groups, &all);
        self.disconnected = all
            .into_iter()
            .filter(|id| !groups.iter().any(|group| group.contains(id)))
            .collect();
        let mut words = vec![12];
        for group in groups {
            words.push(u64::MAX);
            words.extend(group);
        }
        self.trace_event(&words, || format!("network: partition {groups:?}"));
    }

    /// Drops messages from `from` to `to` (a one-way partition).
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.network.cut(from, to);
        self.trace_event(&[13, from, to], || {
            format!("network: link {from} -> {to} cut")
        });
    }

    /// Restores the link from `from` to `to`.
    pub fn restore_link(&mut self, from: NodeId, to: NodeId) {
        self.network.restore(from, to);
        self.trace_event(&[14, from, to], || {
            format!("network: link {from} -> {to} restored")
        });
    }

    /// Restores every link; every node is connected.
    pub fn heal(&mut self) {
        self.network.heal();
        self.disconnected.clear();
        self.trace_event(&[15], || "network: healed".to_string());
    }

    /// The cut links.
    pub fn cut_links(&self) -> Vec<(NodeId, NodeId)> {
        self.network.cut_links()
    }

    /// 6.824 `setunreliable`: [`NetworkConfig::unreliable`] or
    /// [`NetworkConfig::reliable`].
    pub fn set_unreliable(&mut self, unreliable: bool) {
        let config = if unreliable {
            NetworkConfig::unreliable()
        } else {
            NetworkConfig::reliable()
        };
        self.set_network(config);
    }

    /// How the network treats messages sent from now on.
    pub fn set_network(&mut self, config: NetworkConfig) {
        self.network.set_config(config);
        self.trace_event(
            &[
                16,
                u64::from(config.loss_ppm),
                u64::from(config.duplicate_ppm),
                config.delay_max_instants,
            ],
            || format!("network: {config}"),
        );
    }

    /// The chance of crashing at a crash point from now on, in ppm (see
    /// [`ClusterOptions::crash_point_ppm`]).
    pub fn set_crash_point_ppm(&mut self, ppm: u32) {
        self.options.crash_point_ppm = ppm;
    }

    /// The chance that a write hits a disk fault from now on, in ppm (see
    /// [`ClusterOptions::disk_fault_ppm`]).
    pub fn set_disk_fault_ppm(&mut self, ppm: u32) {
        self.options.disk_fault_ppm = ppm;
    }

    /// Most instants a disk write takes from now on (0: writes are instant).
    pub fn set_persist_delay_max(&mut self, instants: u64) {
        self.options.persist_delay_max_instants = instants;
        self.trace_event(&[17, instants], || {
            format!("disks: writes take 0..={instants} instants")
        });
    }

    /// How the network treats messages now.
    pub fn network_config(&self) -> NetworkConfig {
        self.network.config()
    }

    /// Crashes `id`: only its storage survives (see the module docs).
    pub fn crash(&mut self, id: NodeId) {
        let Some(up) = self.take_up(id) else {
            return;
        };
        let UpNode {
            mut disk,
            groups,
            in_flight,
            before_last_write,
        } = *up;
        for (group, running) in groups {
            disk.close_group(group, running.driver.into_raw().into_storage());
        }
        let is_disk = disk.mode() == StorageMode::Disk;
        let torn = is_disk && self.disk_fault_rng.chance(self.options.torn_crash_ppm);
        let mut problem: Option<(CheckerKind, String)> = None;
        if let (true, Some(writes)) = (is_disk, in_flight) {
            // Power fails in the middle of the write in progress: some of it may reach
            // the disk, and recovery decides what counts.
            self.stats.writes_interrupted += 1;
            disk.arm(DiskFault::PowerLoss {
                torn,
                syncs_before: 0,
            });
            match super::driver::write_batch(&disk, &writes) {
                Err(StorageFailure::Stopped(_)) => {}
                Ok(()) => {
                    problem = Some((
                        CheckerKind::Storage,
                        format!("node {id}: power failed during a write, but the write completed"),
                    ))
                }
                Err(error) => {
                    problem = Some((
                        CheckerKind::DriverContract,
                        format!("node {id}: writing the batch in progress at a crash: {error}"),
                    ))
                }
            }
        }
        if self.options.sim_fault == Some(SimFault::CrashLosesLastWrite) {
            match before_last_write {
                Some(BeforeWrite::Disk(before)) => disk = before,
                Some(BeforeWrite::Mem(stores)) => {
                    for (group, store) in stores {
                        disk.close_group(group, store);
                    }
                }
                None => {}
            }
        }
        let disk = match disk.crash(torn) {
            Ok(recovered) => recovered,
            Err((disk, error)) => {
                let how = if torn { "torn" } else { "clean" };
                problem = problem.or(Some((
                    CheckerKind::Storage,
                    format!("node {id}: recovery after a {how} crash failed: {error}"),
                )));
                disk
            }
        };
        let now = self.now;
        if problem.is_none() && is_disk {
            // What recovery kept must agree with every durable log seen so far.
            for group in self.group_ids() {
                let Some(store) = disk.group_view(group) else {
                    continue;
                };
                let checkers = &mut self.groups.get_mut(&group).expect("known").checkers;
                if let Err(violation) = checkers.on_persist(id, &store, 0, now) {
                    self.set_failure(violation);
                    break;
                }
            }
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        node.state = NodeState::Down(Box::new(disk));
        node.incarnation += 1;
        node.armed_fault = None;
        self.stats.crashes += 1;
        if torn {
            self.stats.torn_crashes += 1;
        }
        if self.options.collect_events {
            self.events.push(ClusterEvent::Crashed {
                node: id,
                time: now,
            });
        }
        self.trace_event(&[20, id, u64::from(torn)], || {
            if torn {
                format!("node {id}: crashed (torn)")
            } else {
                format!("node {id}: crashed")
            }
        });
        if let Some((checker, message)) = problem {
            self.fail(checker, message);
        }
    }

    /// Restarts crashed node `id` from its storage (unless recovery refused its disk).
    pub fn restart(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if matches!(node.state, NodeState::Down(_)) && node.recovery_refusal.is_none() {
            self.start(id);
        }
    }

    /// Makes node `id`'s disk inject `fault` into the node's next write (a turn's
    /// batch or a snapshot), which stops the node: it crashes, to be restarted later.
    /// Returns false, doing nothing, unless the node runs on the durable log.
    pub fn arm_disk_fault(&mut self, id: NodeId, fault: DiskFault) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        let NodeState::Up(up) = &node.state else {
            return false;
        };
        if up.disk.mode() != StorageMode::Disk {
            return false;
        }
        node.armed_fault = Some(fault);
        self.trace_event(&[24, id], || {
            format!("node {id}: disk set to inject {fault} into the next write")
        });
        true
    }

    /// Flips bit `bit` of byte `offset` of file `path` on crashed node `id`'s disk
    /// ([`concord_storage::SimFs::flip_bit`]). Its restart recovers the disk again, and
    /// must refuse damage it cannot tell from a torn write: the node then stays down
    /// ([`Cluster::recovery_refusal`]).
    pub fn flip_bit(
        &mut self,
        id: NodeId,
        path: &std::path::Path,
        offset: u64,
        bit: u8,
    ) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        let NodeState::Down(disk) = &node.state else {
            return Err(format!("node {id} is running: crash it first"));
        };
        let fs = disk
            .fs()
            .ok_or_else(|| format!("node {id} keeps its log in memory: there is no disk"))?;
        fs.flip_bit(path, offset, bit)
            .map_err(|error| format!("node {id}: {error}"))?;
        node.disk_damaged = true;
        let path = path.display().to_string();
        self.trace_event(&[25, id, offset, u64::from(bit)], || {
            format!("node {id}: disk damaged: bit {bit} of byte {offset} of {path} flipped")
        });
        Ok(())
    }

    /// Shuts `group` down on node `id` for good (it was removed from the group), as an
    /// operator drops a group a node left; its log stays on the node's disk. A group
    /// retired on a node that a later change adds back is loaded again with
    /// [`Cluster::unretire`].
    pub fn retire(&mut self, id: NodeId, group: GroupId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.retired.contains(&group) {
            return;
        }
        if let NodeState::Up(up) = &mut node.state {
            if up.in_flight.is_some() {
                // Its Ready is being written: try again once the write is done.
                return;
            }
            if let Some(running) = up.groups.remove(&group) {
                up.disk
                    .close_group(group, running.driver.into_raw().into_storage());
            }
        }
        node.retired.insert(group);
        self.trace_event(&[28, id, group], || {
            format!("node {id}: group {group} shut down (removed)")
        });
    }

    /// Loads a group retired on node `id` again (the node was added back).
    pub fn unretire(&mut self, id: NodeId, group: GroupId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.retired.remove(&group) {
            return;
        }
        self.trace_event(&[29, id, group], || {
            format!("node {id}: group {group} started again (added back)")
        });
        if let Some(mut up) = self.take_up(id) {
            if !up.groups.contains_key(&group) {
                if let Err(message) = self.start_group(id, &mut up, group) {
                    self.put_up(id, up);
                    return self.fail(CheckerKind::DriverContract, message);
                }
            }
            self.put_up(id, up);
            self.after_input(id);
        }
    }

    /// True when `group` is retired on node `id`.
    pub fn is_retired(&self, id: NodeId, group: GroupId) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|node| node.retired.contains(&group))
    }

    pub(super) fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let NodeState::Down(disk) = std::mem::replace(&mut node.state, NodeState::Taken) else {
            panic!("node {id} started while not down");
        };
        let mut disk = *disk;
        let incarnation = node.incarnation;
        let retired = node.retired.clone();
        if std::mem::take(&mut node.disk_damaged) {
            // The disk changed while the node was down: recover from it again.
            match disk.reopen() {
                Ok(recovered) => disk = recovered,
                Err((disk, StorageFailure::Corrupt(why))) => {
                    let node = self.nodes.get_mut(&id).expect("known node");
                    node.state = NodeState::Down(Box::new(disk));
                    node.recovery_refusal = Some(why.clone());
                    self.trace_event(&[26, id], || format!("node {id}: refuses to start: {why}"));
                    return;
                }
                Err((disk, error)) => {
                    let node = self.nodes.get_mut(&id).expect("known node");
                    node.state = NodeState::Down(Box::new(disk));
                    return self.fail(
                        CheckerKind::Storage,
                        format!("node {id}: recovering its damaged disk: {error}"),
                    );
                }
            }
        }
        let mut up = Box::new(UpNode {
            disk,
            groups: Default::default(),
            in_flight: None,
            before_last_write: None,
        });
        for group in self.group_ids() {
            if retired.contains(&group) {
                continue;
            }
            if let Err(message) = self.start_group(id, &mut up, group) {
                self.nodes.get_mut(&id).expect("known node").state = NodeState::Up(up);
                return self.fail(CheckerKind::DriverContract, message);
            }
        }
        let snapshots: Vec<(GroupId, u64)> = up
            .groups
            .iter()
            .map(|(&group, running)| (group, running.snapshot_index))
            .collect();
        self.nodes.get_mut(&id).expect("known node").state = NodeState::Up(up);
        self.trace_event(&[21, id, incarnation], || {
            let snapshots: Vec<String> = snapshots
                .iter()
                .map(|(group, index)| format!("group {group} from snapshot at {index}"))
                .collect();
            format!(
                "node {id}: started (incarnation {incarnation}, {})",
                snapshots.join(", ")
            )
        });
        self.after_input(id);
    }

    /// Loads `group` on node `id` from its storage, as the runtime loads a group: the
    /// state machine from the latest snapshot, raft with `applied` there.
    pub(super) fn start_group(
        &mut self,
        id: NodeId,
        up: &mut UpNode,
        group: GroupId,
    ) -> Result<(), String> {
        let store = up
            .disk
            .open_group(group)
            .map_err(|error| format!("node {id}: opening group {group}: {error}"))?;
        let snapshot = concord_raft::Storage::snapshot(&store, 0)
            .map_err(|error| format!("node {id}: reading group {group}'s snapshot: {error}"))?;
        let (header, state) = concord_group::SnapshotHeader::decode(&snapshot.data)
            .map_err(|error| format!("node {id}: group {group}'s snapshot: {error}"))?;
        let mut state_machine = self
            .factory
            .create(group, &header.spec)
            .map_err(|error| format!("node {id}: group {group}: {error}"))?;
        if let Some(state) = state {
            state_machine
                .restore(&mut &state[..])
                .map_err(|error| format!("node {id}: restoring group {group}: {error}"))?;
        }
        let digest = super::driver::digest_of(&*state_machine);
        let incarnation = self.incarnation(id);
        let mut config = self.options.config.clone();
        config.id = id;
        config.seed = mix64(
            self.options.seed ^ mix64(id ^ (incarnation << 32) ^ group.wrapping_mul(0x9E37_79B9)),
        );
        config.applied = snapshot.metadata.index;
        let raw = RawNode::new(&config, store).map_err(|error| {
            format!("node {id}: restart of group {group} from its own storage failed: {error}")
        })?;
        let mut driver_config = DriverConfig {
            read_timeout_ticks: self.options.request_timeout_ticks,
            proposal_timeout_ticks: self.options.request_timeout_ticks,
            // Reads of each life numbered apart, as the runtime's random start does,
            // but from the seed.
            read_context_start: mix64(config.seed ^ 0x7EAD_C0DE),
            ..DriverConfig::new(group, self.options.config.election_timeout_ticks)
        };
        driver_config.planted_bug = match self.options.sim_fault {
            Some(SimFault::SendBeforePersist) => Some(concord_group::DriverBug::SendPersistedEarly),
            Some(SimFault::ReadBeforeApply) => {
                Some(concord_group::DriverBug::ServeReadsBeforeApply)
            }
            _ => None,
        };
        let conf_state = snapshot.metadata.conf_state.clone();
        let last_seen = (raw.role(), raw.term(), raw.leader());
        let driver = GroupDriver::new(
            driver_config,
            raw,
            snapshot.metadata.index,
            conf_state.clone(),
            header.addresses.clone(),
        );
        let applier = Applier::new(ApplierStart {
            group,
            spec: header.spec,
            state_machine,
            applied: snapshot.metadata.index,
            applied_term: snapshot.metadata.term,
            conf_state,
            addresses: header.addresses,
            // The fault scheduler decides when to snapshot.
            policy: SnapshotPolicy {
                interval_entries: 0,
                interval_bytes: 0,
            },
            factory: self.factory.clone(),
        });
        up.groups.insert(
            group,
            UpGroup {
                driver,
                applier,
                snapshot_index: snapshot.metadata.index,
                digest,
                last_seen,
            },
        );
        Ok(())
    }
}
