//! The leader's tracking of every member: membership configuration, per-node
//! progress, votes; and applying membership changes to them (thesis §4.1 and §4.3).

use std::collections::{BTreeMap, BTreeSet};

use crate::conf_change::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition};
use crate::progress::Progress;
use crate::quorum::{JointConfig, MajorityConfig, VoteResult};
use crate::types::{ConfState, Index, NodeId, NO_NODE};

/// The membership as the tracker holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Voters (joint while `voters.outgoing` is non-empty).
    pub voters: JointConfig,
    /// Learners. A voter being demoted while joint waits in `learners_next` instead,
    /// so no node is ever a voter and a learner at once.
    // Invariant: disjoint from voters.incoming and voters.outgoing.
    pub learners: BTreeSet<NodeId>,
    /// Voters of the outgoing half being demoted to learners; they become learners on
    /// leaving the joint config.
    // Invariant: each is in voters.outgoing, not in voters.incoming, not in learners
    // (so it is empty when not joint).
    pub learners_next: BTreeSet<NodeId>,
    /// Leave joint automatically.
    // Invariant: false when not joint.
    pub auto_leave: bool,
}

/// Membership, progress and votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    /// The membership.
    pub config: TrackerConfig,
    /// Progress of every member (voters of both halves and learners).
    // Invariant: keys == config's voters ∪ learners ∪ learners_next; a progress has
    // is_learner exactly when its node is in config.learners.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current election.
    pub votes: BTreeMap<NodeId, bool>,
    /// In-flight window for new progresses.
    pub inflight_messages_max: usize,
    /// In-flight byte limit for new progresses (0 = none).
    pub inflight_bytes_max: u64,
}

impl ProgressTracker {
    /// An empty tracker.
    pub fn new(inflight_messages_max: usize, inflight_bytes_max: u64) -> Self {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            inflight_messages_max,
            inflight_bytes_max,
        }
    }

    /// Replaces the membership with `conf_state`, creating fresh progress for every
    /// member with `next_index` (matched 0), and dropping progress of non-members.
    /// Panics if `conf_state` breaks the membership invariants (a voter that is also a
    /// learner, learners_next outside the outgoing voters, auto_leave when not joint):
    /// such a state was never produced by `apply_conf_change`, so storage is corrupt.
    pub fn restore(&mut self, conf_state: &ConfState, next_index: Index) {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
        self.config = TrackerConfig {
            voters: JointConfig {
                incoming: MajorityConfig {
                    voters: set(&conf_state.voters),
                },
                outgoing: MajorityConfig {
                    voters: set(&conf_state.voters_outgoing),
                },
            },
            learners: set(&conf_state.learners),
            learners_next: set(&conf_state.learners_next),
            auto_leave: conf_state.auto_leave,
        };
        self.progress.clear();
        self.sync_progress(next_index);
        self.check_invariants();
    }

    /// Applies a membership change (validated: see errors) and returns the new ConfState.
    /// New members get progress with `next_index`. Rules:
    /// - empty `changes` (leave joint): only valid while joint; outgoing dropped,
    ///   learners_next become learners, nodes in neither half nor learners are removed.
    /// - `Auto` with at most one voter added/removed (learner changes free): single step,
    ///   only valid when not joint. From a config with no voters at all (bootstrap)
    ///   `Auto` is always single step: there is no old majority to overlap with.
    /// - otherwise (or `Joint*`): enter joint: outgoing = current incoming, then apply
    ///   the changes to incoming; auto_leave = transition != JointExplicit. Only valid
    ///   when not joint and when the current config has voters.
    /// - AddVoter on a learner promotes it; AddLearner on a voter demotes it (in joint,
    ///   it goes to learners_next if it is an outgoing voter); Remove drops it.
    /// - Errors (Err(message)): changing while joint (other than leave), leave when not
    ///   joint, a result with no voters in incoming, node id 0, a node listed twice.
    ///
    /// On error nothing changes.
    pub fn apply_conf_change(
        &mut self,
        change: &ConfChange,
        next_index: Index,
    ) -> Result<ConfState, String> {
        let config = self.config.changed(change)?;
        self.config = config;
        self.sync_progress(next_index);
        self.check_invariants();
        Ok(self.conf_state())
    }

    /// The current membership as a ConfState (sorted ids).
    pub fn conf_state(&self) -> ConfState {
        let sorted = |ids: &BTreeSet<NodeId>| ids.iter().copied().collect::<Vec<NodeId>>();
        ConfState {
            voters: sorted(&self.config.voters.incoming.voters),
            learners: sorted(&self.config.learners),
            voters_outgoing: sorted(&self.config.voters.outgoing.voters),
            learners_next: sorted(&self.config.learners_next),
            auto_leave: self.config.auto_leave,
        }
    }

    /// The largest index a quorum has matched (joint: both halves). `Index::MAX` when
    /// there are no voters at all.
    pub fn committed(&self) -> Index {
        self.config
            .voters
            .committed_index(|id| self.progress.get(&id).map(|progress| progress.matched))
    }

    /// True if `id` votes (either half).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    /// True if exactly one node votes (in whichever halves there are), so it alone
    /// decides every election and commit.
    pub fn is_singleton(&self) -> bool {
        let voters = &self.config.voters;
        let mut ids = voters.incoming.voters.iter().chain(&voters.outgoing.voters);
        match ids.next() {
            Some(first) => ids.all(|id| id == first),
            None => false,
        }
    }

    /// Clears votes.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s vote (first vote from a node wins; later ones are ignored).
    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// (granted count, rejected count, result) over voters.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (&id, &vote) in &self.votes {
            if !self.is_voter(id) {
                continue;
            }
            if vote {
                granted += 1;
            } else {
                rejected += 1;
            }
        }
        let result = self
            .config
            .voters
            .vote_result(|id| self.votes.get(&id).copied());
        (granted, rejected, result)
    }

    /// True if the voters marked `recent_active` form a quorum (the leader counts itself
    /// via its own entry, which the caller keeps active).
    pub fn quorum_active(&self) -> bool {
        let active = |id| {
            self.progress
                .get(&id)
                .map(|progress| progress.recent_active)
        };
        self.config.voters.vote_result(active) == VoteResult::Won
    }

    /// Quorum over an arbitrary set of acknowledging ids (for ReadIndex).
    pub fn quorum_reached(&self, acks: &BTreeSet<NodeId>) -> bool {
        self.config
            .voters
            .vote_result(|id| Some(acks.contains(&id)))
            == VoteResult::Won
    }

    /// Every member id (voters, learners, learners_next), sorted.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.config.member_ids().into_iter().collect()
    }

    /// Checks invariants (progress keys match members, learners disjoint from voters,
    /// each progress matched < next_index), panicking with details on a breach.
    pub fn check_invariants(&self) {
        let config = &self.config;
        let incoming = &config.voters.incoming.voters;
        let outgoing = &config.voters.outgoing.voters;
        for id in &config.learners {
            assert!(
                !incoming.contains(id) && !outgoing.contains(id),
                "node {id} is both a learner and a voter in {config:?}"
            );
        }
        for id in &config.learners_next {
            assert!(
                outgoing.contains(id),
                "node {id} waits to become a learner but is not an outgoing voter in {config:?}"
            );
            assert!(
                !incoming.contains(id) && !config.learners.contains(id),
                "node {id} waits to become a learner but is already an incoming voter or learner in {config:?}"
            );
        }
        assert!(
            config.voters.is_joint() || !config.auto_leave,
            "auto_leave is set but the configuration is not joint: {config:?}"
        );
        assert!(
            !config.voters.is_joint() || !incoming.is_empty(),
            "joint configuration with no incoming voters: {config:?}"
        );
        let members = config.member_ids();
        let tracked: BTreeSet<NodeId> = self.progress.keys().copied().collect();
        assert_eq!(
            tracked, members,
            "progress is tracked for exactly the members of {config:?}"
        );
        assert!(
            !members.contains(&NO_NODE),
            "node id 0 is a member of {config:?}"
        );
        for (id, progress) in &self.progress {
            assert_eq!(
                progress.is_learner,
                config.learners.contains(id),
                "node {id}'s progress has is_learner {} in {config:?}",
                progress.is_learner
            );
            progress.check_invariants();
        }
    }

    /// Makes the progress map follow the config: drops non-members, creates progress
    /// at `next_index` for new members, and marks learners.
    fn sync_progress(&mut self, next_index: Index) {
        let members = self.config.member_ids();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            let progress = self.progress.entry(id).or_insert_with(|| {
                let mut progress = Progress::new(
                    next_index,
                    self.inflight_messages_max,
                    self.inflight_bytes_max,
                );
                // A new member has had no chance to answer yet; count it as active so
                // that adding it cannot make the leader step down at the next
                // check-quorum round (thesis §6.2).
                progress.recent_active = true;
                progress
            });
            // A node in learners_next still votes in the outgoing half until the joint
            // configuration is left.
            progress.is_learner = self.config.learners.contains(&id);
        }
    }
}

impl TrackerConfig {
    /// Every member: voters of either half, learners, and learners to be.
    fn member_ids(&self) -> BTreeSet<NodeId> {
        let mut members = self.voters.ids();
        members.extend(&self.learners);
        members.extend(&self.learners_next);
        members
    }

    /// The config after `change`, or why it may not be applied. Leaves `self` alone.
    fn changed(&self, change: &ConfChange) -> Result<TrackerConfig, String> {
        if change.is_leave_joint() {
            return self.left_joint();
        }
        let mut listed = BTreeSet::new();
        for single in &change.changes {
            if single.node == NO_NODE {
                return Err("node id 0 is reserved for \"no node\" and cannot be a member".into());
            }
            if !listed.insert(single.node) {
                return Err(format!(
                    "node {} is listed more than once in one membership change",
                    single.node
                ));
            }
        }
        if self.voters.is_joint() {
            return Err(
                "cannot change membership while the configuration is joint: \
                 leave the joint configuration first (an empty change)"
                    .into(),
            );
        }
        match change.transition {
            ConfChangeTransition::Auto => {
                let single_step = self.with_changes(&change.changes)?;
                let old_voters = &self.voters.incoming.voters;
                let new_voters = &single_step.voters.incoming.voters;
                // Thesis §4.1: adding or removing one voter at a time keeps every
                // majority of the old config overlapping every majority of the new.
                // With no old voters there is no old majority to overlap.
                let voters_changed = old_voters.symmetric_difference(new_voters).count();
                if voters_changed <= 1 || old_voters.is_empty() {
                    Ok(single_step)
                } else {
                    self.entered_joint(&change.changes, true)
                }
            }
            ConfChangeTransition::JointAutoLeave => self.entered_joint(&change.changes, true),
            ConfChangeTransition::JointExplicit => self.entered_joint(&change.changes, false),
        }
    }

    /// Thesis §4.3: the joint config C_old,new, with the old voters as the outgoing
    /// half and `changes` applied to the incoming half.
    fn entered_joint(
        &self,
        changes: &[ConfChangeSingle],
        auto_leave: bool,
    ) -> Result<TrackerConfig, String> {
        if self.voters.incoming.voters.is_empty() {
            return Err(
                "cannot enter a joint configuration from a configuration with no voters".into(),
            );
        }
        let mut joint = self.clone();
        joint.voters.outgoing = joint.voters.incoming.clone();
        let mut joint = joint.with_changes(changes)?;
        joint.auto_leave = auto_leave;
        Ok(joint)
    }

    /// Thesis §4.3: the new config C_new once the joint config is left.
    fn left_joint(&self) -> Result<TrackerConfig, String> {
        if !self.voters.is_joint() {
            return Err(
                "cannot leave a joint configuration: the configuration is not joint".into(),
            );
        }
        let mut config = self.clone();
        let learners_next = std::mem::take(&mut config.learners_next);
        config.learners.extend(learners_next);
        config.voters.outgoing = MajorityConfig::default();
        config.auto_leave = false;
        Ok(config)
    }

    /// `self` with `changes` applied in order, failing if no incoming voter is left.
    fn with_changes(&self, changes: &[ConfChangeSingle]) -> Result<TrackerConfig, String> {
        let mut config = self.clone();
        for single in changes {
            match single.kind {
                ConfChangeKind::AddVoter => config.make_voter(single.node),
                ConfChangeKind::AddLearner => config.make_learner(single.node),
                ConfChangeKind::Remove => config.remove(single.node),
            }
        }
        if config.voters.incoming.voters.is_empty() {
            return Err("the change would leave the configuration with no voters".into());
        }
        Ok(config)
    }

    /// Adds `id` as an incoming voter, promoting it if it was a learner.
    fn make_voter(&mut self, id: NodeId) {
        self.learners.remove(&id);
        self.learners_next.remove(&id);
        self.voters.incoming.voters.insert(id);
    }

    /// Adds `id` as a learner, demoting it if it was a voter. An outgoing voter cannot
    /// be a learner until the joint config is left, so it waits in learners_next.
    fn make_learner(&mut self, id: NodeId) {
        if self.learners.contains(&id) {
            return;
        }
        self.remove(id);
        if self.voters.outgoing.voters.contains(&id) {
            self.learners_next.insert(id);
        } else {
            self.learners.insert(id);
        }
    }

    /// Removes `id` from the incoming voters and the learners. An outgoing voter stays
    /// one until the joint config is left.
    fn remove(&mut self, id: NodeId) {
        self.voters.incoming.voters.remove(&id);
        self.learners.remove(&id);
        self.learners_next.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NEXT_INDEX: Index = 11;

    fn tracker_with(conf_state: &ConfState) -> ProgressTracker {
        let mut tracker = ProgressTracker::new(8, 0);
        tracker.restore(conf_state, NEXT_INDEX);
        tracker
    }

    fn conf_state(
        voters: &[NodeId],
        learners: &[NodeId],
        voters_outgoing: &[NodeId],
        learners_next: &[NodeId],
        auto_leave: bool,
    ) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            voters_outgoing: voters_outgoing.to_vec(),
            learners_next: learners_next.to_vec(),
            auto_leave,
        }
    }

    fn change(
        transition: ConfChangeTransition,
        changes: &[(ConfChangeKind, NodeId)],
    ) -> ConfChange {
        ConfChange {
            transition,
            changes: changes
                .iter()
                .map(|&(kind, node)| ConfChangeSingle { kind, node })
                .collect(),
        }
    }

    use ConfChangeKind::{AddLearner, AddVoter, Remove};
    use ConfChangeTransition::{Auto, JointAutoLeave, JointExplicit};

    #[test]
    fn restore_creates_fresh_progress_for_every_member() {
        // Thesis §4.3: a snapshot's membership, joint or not, is taken whole.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2]));
        tracker.progress.get_mut(&1).unwrap().matched = 5;
        let joint = conf_state(&[1, 3], &[4], &[1, 2, 5], &[5], true);
        tracker.restore(&joint, 20);
        assert_eq!(tracker.conf_state(), joint);
        assert_eq!(tracker.member_ids(), [1, 2, 3, 4, 5]);
        for (id, progress) in &tracker.progress {
            assert_eq!(
                (progress.matched, progress.next_index),
                (0, 20),
                "node {id}"
            );
            assert_eq!(progress.is_learner, *id == 4, "node {id}");
        }
    }

    #[test]
    #[should_panic(expected = "both a learner and a voter")]
    fn restore_rejects_a_voter_that_is_also_a_learner() {
        // Thesis §4.1: a node either votes or does not; a state saying both is corrupt.
        tracker_with(&conf_state(&[1, 2], &[2], &[], &[], false));
    }

    #[test]
    fn add_voter_single_step() {
        // Thesis §4.1: one voter added at a time needs no joint config.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(&ConfChange::add_voter(4), 30);
        assert_eq!(result, Ok(ConfState::with_voters([1, 2, 3, 4])));
        let progress = &tracker.progress[&4];
        assert_eq!(
            (
                progress.matched,
                progress.next_index,
                progress.is_learner,
                progress.recent_active
            ),
            (0, 30, false, true)
        );
        assert_eq!(
            tracker.progress[&1].next_index, NEXT_INDEX,
            "existing progress is kept"
        );
    }

    #[test]
    fn add_voter_promotes_a_learner_and_keeps_its_progress() {
        // Thesis §4.2.1: a new server catches up as a non-voter, then is promoted.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[4], &[], &[], false));
        tracker.progress.get_mut(&4).unwrap().maybe_update(9);
        let result = tracker.apply_conf_change(&ConfChange::add_voter(4), 30);
        assert_eq!(result, Ok(ConfState::with_voters([1, 2, 3, 4])));
        let progress = &tracker.progress[&4];
        assert_eq!((progress.matched, progress.is_learner), (9, false));
    }

    #[test]
    fn add_learner_on_a_voter_demotes_it_in_one_step() {
        // Thesis §4.1: demoting one voter changes the voter set by one, so no joint
        // config is needed.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(&ConfChange::add_learner(3), 30);
        assert_eq!(result, Ok(conf_state(&[1, 2], &[3], &[], &[], false)));
        assert!(tracker.progress[&3].is_learner);
        assert!(!tracker.is_voter(3));
    }

    #[test]
    fn remove_drops_the_node_and_its_progress() {
        // Thesis §4.1: a removed server no longer counts toward any majority.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[4], &[], &[], false));
        assert_eq!(
            tracker.apply_conf_change(&ConfChange::remove(3), 30),
            Ok(conf_state(&[1, 2], &[4], &[], &[], false))
        );
        assert_eq!(
            tracker.apply_conf_change(&ConfChange::remove(4), 30),
            Ok(ConfState::with_voters([1, 2]))
        );
        assert_eq!(tracker.member_ids(), [1, 2]);
        assert_eq!(
            tracker.apply_conf_change(&ConfChange::remove(9), 30),
            Ok(ConfState::with_voters([1, 2])),
            "removing a stranger is a no-op"
        );
    }

    #[test]
    fn learner_changes_are_free_in_a_single_step() {
        // Thesis §4.1: learners are outside every majority, so any number may change
        // alongside one voter.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(
            &change(Auto, &[(AddLearner, 5), (AddLearner, 6), (AddVoter, 4)]),
            30,
        );
        assert_eq!(
            result,
            Ok(conf_state(&[1, 2, 3, 4], &[5, 6], &[], &[], false))
        );
    }

    #[test]
    fn auto_with_two_voter_changes_enters_joint_with_auto_leave() {
        // Thesis §4.3: changing two voters at once could produce disjoint majorities,
        // so the change goes through a joint config C_old,new.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(&change(Auto, &[(AddVoter, 4), (Remove, 3)]), 30);
        assert_eq!(
            result,
            Ok(conf_state(&[1, 2, 4], &[], &[1, 2, 3], &[], true))
        );
        assert_eq!(tracker.member_ids(), [1, 2, 3, 4]);
        assert!(
            tracker.is_voter(3),
            "node 3 still votes in the outgoing half"
        );

        let result = tracker.apply_conf_change(&ConfChange::leave_joint(), 40);
        assert_eq!(result, Ok(ConfState::with_voters([1, 2, 4])));
        assert_eq!(tracker.member_ids(), [1, 2, 4]);
    }

    #[test]
    fn replacing_a_voter_by_a_promoted_learner_counts_two_changes() {
        // Thesis §4.1/§4.3: the rule counts voters that change, symmetric difference of
        // old and new voter sets: promoting 4 and demoting 3 changes two.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[4], &[], &[], false));
        let result =
            tracker.apply_conf_change(&change(Auto, &[(AddVoter, 4), (AddLearner, 3)]), 30);
        assert_eq!(
            result,
            Ok(conf_state(&[1, 2, 4], &[], &[1, 2, 3], &[3], true))
        );
        assert!(
            !tracker.progress[&3].is_learner,
            "3 votes in the outgoing half until the leave"
        );

        let result = tracker.apply_conf_change(&ConfChange::leave_joint(), 40);
        assert_eq!(result, Ok(conf_state(&[1, 2, 4], &[3], &[], &[], false)));
        assert!(tracker.progress[&3].is_learner);
    }

    #[test]
    fn joint_explicit_stays_until_left() {
        // Thesis §4.3: an explicit joint config stays until C_new is proposed, and no
        // other change is accepted meanwhile.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(&change(JointExplicit, &[(AddVoter, 4)]), 30);
        assert_eq!(
            result,
            Ok(conf_state(&[1, 2, 3, 4], &[], &[1, 2, 3], &[], false))
        );
        let before = tracker.conf_state();
        assert_eq!(
            tracker.apply_conf_change(&ConfChange::add_voter(5), 30),
            Err(
                "cannot change membership while the configuration is joint: \
                 leave the joint configuration first (an empty change)"
                    .to_string()
            )
        );
        assert_eq!(tracker.conf_state(), before);
        assert_eq!(
            tracker.apply_conf_change(&ConfChange::leave_joint(), 30),
            Ok(ConfState::with_voters([1, 2, 3, 4]))
        );
    }

    #[test]
    fn joint_auto_leave_with_one_change_is_still_joint() {
        // Thesis §4.3: a caller may ask for a joint config even where one step would do.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(&change(JointAutoLeave, &[(AddLearner, 7)]), 30);
        assert_eq!(
            result,
            Ok(conf_state(&[1, 2, 3], &[7], &[1, 2, 3], &[], true))
        );
    }

    #[test]
    fn learner_demotion_in_joint_of_a_voter_new_to_incoming_goes_straight_to_learners() {
        // Thesis §4.3: only a voter of the outgoing half must wait in learners_next;
        // one that votes only in the incoming half can become a learner at once.
        let mut tracker = tracker_with(&ConfState::with_voters([1, 2, 3]));
        let result = tracker.apply_conf_change(
            &change(
                JointExplicit,
                &[(AddVoter, 4), (AddLearner, 4), (AddLearner, 2)],
            ),
            30,
        );
        assert_eq!(
            result,
            Err("node 4 is listed more than once in one membership change".to_string())
        );
        let result = tracker.apply_conf_change(
            &change(JointExplicit, &[(AddLearner, 4), (AddLearner, 2)]),
            30,
        );
        assert_eq!(
            result,
            Ok(conf_state(&[1, 3], &[4], &[1, 2, 3], &[2], false))
        );
    }

    #[test]
    fn leave_joint_drops_removed_voters_and_keeps_learners() {
        // Thesis §4.3: once C_new is in force, servers outside it are gone.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 4], &[5], &[1, 2, 3], &[], true));
        let result = tracker.apply_conf_change(&ConfChange::leave_joint(), 30);
        assert_eq!(result, Ok(conf_state(&[1, 2, 4], &[5], &[], &[], false)));
        assert_eq!(tracker.member_ids(), [1, 2, 4, 5]);
    }

    #[test]
    fn invalid_changes_are_refused_and_change_nothing() {
        // Thesis §4.1/§4.3: a change that breaks the membership rules is refused
        // whole, with a reason a person can act on.
        let mut tracker = tracker_with(&conf_state(&[1], &[2], &[], &[], false));
        let before = tracker.clone();
        let cases = [
            (
                ConfChange::leave_joint(),
                "cannot leave a joint configuration: the configuration is not joint",
            ),
            (
                ConfChange::remove(1),
                "the change would leave the configuration with no voters",
            ),
            (
                ConfChange::add_learner(1),
                "the change would leave the configuration with no voters",
            ),
            (
                ConfChange::add_voter(0),
                "node id 0 is reserved for \"no node\" and cannot be a member",
            ),
            (
                change(Auto, &[(AddVoter, 3), (Remove, 3)]),
                "node 3 is listed more than once in one membership change",
            ),
        ];
        for (change, expected) in cases {
            assert_eq!(
                tracker.apply_conf_change(&change, 30),
                Err(expected.to_string()),
                "{change:?}"
            );
            assert_eq!(tracker.config, before.config);
            assert_eq!(tracker.member_ids(), before.member_ids());
        }
    }

    #[test]
    fn bootstrap_from_no_voters() {
        // Thesis §4.1: an empty config has no majority to preserve, so any first config
        // may be set in one step, but a joint config needs an old half.
        let mut tracker = ProgressTracker::new(8, 0);
        assert_eq!(
            tracker.apply_conf_change(&change(JointAutoLeave, &[(AddVoter, 1)]), 1),
            Err(
                "cannot enter a joint configuration from a configuration with no voters"
                    .to_string()
            )
        );
        let result = tracker.apply_conf_change(
            &change(Auto, &[(AddVoter, 1), (AddVoter, 2), (AddVoter, 3)]),
            1,
        );
        assert_eq!(result, Ok(ConfState::with_voters([1, 2, 3])));
        assert_eq!(tracker.member_ids(), [1, 2, 3]);
    }

    #[test]
    fn committed_needs_both_halves_while_joint() {
        // Thesis §4.3: while joint, an entry commits only on majorities of both halves.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[], &[3, 4, 5], &[], true));
        for (id, matched) in [(1, 9), (2, 8), (3, 7), (4, 6), (5, 2)] {
            tracker.progress.get_mut(&id).unwrap().maybe_update(matched);
        }
        assert_eq!(tracker.committed(), 6);
        tracker.restore(&ConfState::with_voters([1, 2, 3]), NEXT_INDEX);
        assert_eq!(tracker.committed(), 0);
        assert_eq!(ProgressTracker::new(8, 0).committed(), Index::MAX);
    }

    #[test]
    fn votes_first_wins_and_learners_do_not_count() {
        // Raft paper §5.2: each server votes once per term, and only voters count.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[4], &[], &[], false));
        tracker.record_vote(1, true);
        tracker.record_vote(1, false);
        tracker.record_vote(4, true);
        assert_eq!(tracker.tally_votes(), (1, 0, VoteResult::Pending));
        tracker.record_vote(2, false);
        assert_eq!(tracker.tally_votes(), (1, 1, VoteResult::Pending));
        tracker.record_vote(3, true);
        assert_eq!(tracker.tally_votes(), (2, 1, VoteResult::Won));
        tracker.reset_votes();
        assert_eq!(tracker.tally_votes(), (0, 0, VoteResult::Pending));
    }

    #[test]
    fn quorum_queries_use_both_halves() {
        // Thesis §6.2 and §6.4: check-quorum and ReadIndex need a quorum of the
        // configuration, both halves while joint.
        let mut tracker = tracker_with(&conf_state(&[1, 2, 3], &[], &[3, 4, 5], &[], true));
        for progress in tracker.progress.values_mut() {
            progress.recent_active = false;
        }
        for id in [1, 2, 3] {
            tracker.progress.get_mut(&id).unwrap().recent_active = true;
        }
        assert!(!tracker.quorum_active());
        tracker.progress.get_mut(&4).unwrap().recent_active = true;
        assert!(tracker.quorum_active());
        assert!(!tracker.quorum_reached(&BTreeSet::from([1, 2, 4])));
        assert!(tracker.quorum_reached(&BTreeSet::from([1, 3, 4])));
    }

    #[test]
    fn singleton_means_one_voter_in_every_half() {
        // Raft paper §5.2: a lone voter elects itself and commits alone.
        assert!(tracker_with(&conf_state(&[1], &[2], &[], &[], false)).is_singleton());
        assert!(tracker_with(&conf_state(&[1], &[], &[1], &[], false)).is_singleton());
        assert!(!tracker_with(&conf_state(&[1], &[], &[2], &[], false)).is_singleton());
        assert!(!tracker_with(&ConfState::with_voters([1, 2])).is_singleton());
        assert!(!ProgressTracker::new(8, 0).is_singleton());
    }

    fn single_change() -> impl Strategy<Value = ConfChangeSingle> {
        // Mostly ids 1..=6, now and then the reserved 0, to exercise the refusals.
        let node = prop_oneof![20 => 1..=6u64, 1 => Just(0u64)];
        let kind = prop_oneof![Just(AddVoter), Just(AddLearner), Just(Remove)];
        (kind, node).prop_map(|(kind, node)| ConfChangeSingle { kind, node })
    }

    fn conf_change() -> impl Strategy<Value = ConfChange> {
        let transition =
            prop_oneof![3 => Just(Auto), 1 => Just(JointAutoLeave), 1 => Just(JointExplicit)];
        prop_oneof![
            1 => Just(ConfChange::leave_joint()),
            4 => (transition, proptest::collection::vec(single_change(), 1..4))
                .prop_map(|(transition, changes)| ConfChange { transition, changes }),
        ]
    }

    fn start_state() -> impl Strategy<Value = ConfState> {
        (
            proptest::collection::btree_set(1..=6u64, 1..=5),
            proptest::collection::btree_set(1..=6u64, 0..=3),
        )
            .prop_map(|(voters, learners)| ConfState {
                voters: voters.iter().copied().collect(),
                learners: learners.difference(&voters).copied().collect(),
                ..Default::default()
            })
    }

    proptest! {
        /// Random sequences of membership changes keep every invariant, produce the
        /// roles each change asked for, enter joint exactly when more than one voter
        /// changes (thesis §4.1/§4.3), leave the tracker untouched when refused, and
        /// every resulting ConfState round-trips through restore.
        #[test]
        fn conf_change_sequences_keep_invariants(
            start in start_state(),
            changes in proptest::collection::vec(conf_change(), 1..12),
        ) {
            let mut tracker = tracker_with(&start);
            for (step, change) in changes.iter().enumerate() {
                let before = tracker.clone();
                let next_index = NEXT_INDEX + step as Index;
                match tracker.apply_conf_change(change, next_index) {
                    Err(message) => {
                        prop_assert!(!message.is_empty());
                        prop_assert_eq!(&tracker.config, &before.config);
                        prop_assert_eq!(tracker.member_ids(), before.member_ids());
                    }
                    Ok(conf_state) => {
                        tracker.check_invariants();
                        prop_assert_eq!(&conf_state, &tracker.conf_state());

                        let mut restored = ProgressTracker::new(8, 0);
                        restored.restore(&conf_state, next_index);
                        prop_assert_eq!(&restored.config, &tracker.config);
                        prop_assert_eq!(restored.conf_state(), conf_state.clone());

                        // Members that stayed keep their progress; new ones start fresh.
                        for (id, progress) in &tracker.progress {
                            match before.progress.get(id) {
                                Some(old) => prop_assert_eq!(progress.next_index, old.next_index),
                                None => prop_assert_eq!(progress.next_index, next_index),
                            }
                        }

                        let old_voters = &before.config.voters.incoming.voters;
                        let new_voters = &tracker.config.voters.incoming.voters;
                        prop_assert!(!new_voters.is_empty());
                        if change.is_leave_joint() {
                            prop_assert!(before.config.voters.is_joint());
                            prop_assert!(!tracker.config.voters.is_joint());
                            prop_assert_eq!(new_voters, old_voters);
                            let expected_learners: BTreeSet<NodeId> =
                                before.config.learners.union(&before.config.learners_next).copied().collect();
                            prop_assert_eq!(&tracker.config.learners, &expected_learners);
                            continue;
                        }
                        prop_assert!(!before.config.voters.is_joint());
                        let voters_changed = old_voters.symmetric_difference(new_voters).count();
                        let joint = tracker.config.voters.is_joint();
                        prop_assert_eq!(joint, change.transition != Auto || voters_changed > 1);
                        if joint {
                            prop_assert_eq!(&tracker.config.voters.outgoing.voters, old_voters);
                            prop_assert_eq!(tracker.config.auto_leave, change.transition != JointExplicit);
                        }
                        for single in &change.changes {
                            let id = single.node;
                            let config = &tracker.config;
                            match single.kind {
                                AddVoter => prop_assert!(config.voters.incoming.voters.contains(&id)),
                                AddLearner => {
                                    prop_assert!(!config.voters.incoming.voters.contains(&id));
                                    prop_assert!(config.learners.contains(&id) || config.learners_next.contains(&id));
                                }
                                Remove => {
                                    prop_assert!(!config.voters.incoming.voters.contains(&id));
                                    prop_assert!(!config.learners.contains(&id) && !config.learners_next.contains(&id));
                                }
                            }
                        }
                        // Nodes not named keep their incoming role.
                        let named: BTreeSet<NodeId> = change.changes.iter().map(|single| single.node).collect();
                        for id in before.config.member_ids().difference(&named) {
                            prop_assert_eq!(before.config.voters.incoming.voters.contains(id), new_voters.contains(id));
                            prop_assert_eq!(before.config.learners.contains(id), tracker.config.learners.contains(id));
                        }
                    }
                }
            }
        }
    }
}
