//! Per-node raft configuration. Every limit is a field with its unit in the name.

use crate::errors::Error;
use crate::types::{Index, NodeId, NO_NODE};

/// How `read_index` confirms leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// Confirm with a heartbeat round to a quorum (Raft thesis §6.4). Always safe.
    #[default]
    Safe,
    /// Trust the leader lease (thesis §6.4.1): answer at once while a quorum was heard
    /// within the election timeout. Relies on bounded clock drift; needs `check_quorum`.
    LeaseBased,
}

/// Deliberately wrong behaviour, planted to show a checker catches it. Only the
/// `planted-bugs` feature can switch one on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Commit by counting replicas of an entry from an earlier term (breaks §5.4.2,
    /// the Figure 8 scenario).
    CommitOldTermByCount,
    /// Grant votes without checking that the candidate's log is up to date (§5.4.1).
    VoteWithoutLogCheck,
    /// Serve lease reads without check-quorum, so a deposed leader keeps answering.
    LeaseReadWithoutCheckQuorum,
    /// Do not record the vote in the hard state handed to the driver (§5.2: a restarted
    /// node may vote twice in one term).
    ForgetVote,
}

/// Configuration of one raft node.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must not be 0.
    pub id: NodeId,
    /// The minimum election timeout, in ticks. Each election timeout is drawn at random
    /// from `[election_timeout_ticks, election_timeout_max_ticks)` (§5.2). It is also
    /// the leader's check-quorum period and the length of a leader lease.
    pub election_timeout_ticks: u32,
    /// The end (exclusive) of the range election timeouts are drawn from, in ticks;
    /// `None` means `2 * election_timeout_ticks`. Must be above
    /// `election_timeout_ticks`.
    pub election_timeout_max_ticks: Option<u32>,
    /// How often a leader sends heartbeats, in ticks. Must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Most bytes of entries in one append message.
    pub append_bytes_max: u64,
    /// Most append messages in flight to one follower in replicate state.
    pub inflight_messages_max: usize,
    /// Most entry bytes in flight to one follower; 0 means no byte limit.
    pub inflight_bytes_max: u64,
    /// Most payload bytes in the leader's uncommitted tail; proposals over it are refused.
    /// 0 means no limit.
    pub uncommitted_bytes_max: u64,
    /// Most snapshot bytes in one InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Most bytes of committed entries handed to the driver in one Ready.
    pub apply_batch_bytes_max: u64,
    /// Use pre-vote before elections (thesis §9.6), so a partitioned node rejoining does
    /// not depose a working leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down
    /// (thesis §6.2); followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// How `read_index` confirms leadership.
    pub read_only: ReadOnlyOption,
    /// The index already applied to the state machine when the node starts.
    pub applied: Index,
    /// Seed for the node's own random number generator (election timeouts).
    pub seed: u64,
    /// A planted bug, for checker tests only.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NO_NODE,
            election_timeout_ticks: 10,
            election_timeout_max_ticks: None,
            heartbeat_interval_ticks: 2,
            append_bytes_max: 1024 * 1024,
            inflight_messages_max: 256,
            inflight_bytes_max: 0,
            uncommitted_bytes_max: 0,
            snapshot_chunk_bytes_max: 1024 * 1024,
            apply_batch_bytes_max: 16 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            read_only: ReadOnlyOption::Safe,
            applied: 0,
            seed: 0,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

impl Config {
    /// The end (exclusive) of the election timeout range, in ticks.
    pub fn election_timeout_end_ticks(&self) -> u32 {
        self.election_timeout_max_ticks
            .unwrap_or(self.election_timeout_ticks.saturating_mul(2))
    }

    /// The default configuration for node `id`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            seed: id,
            ..Default::default()
        }
    }

    /// Checks the configuration, naming the field that is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |message: String| Err(Error::Config(message));
        if self.id == NO_NODE {
            return fail("id must be a non-zero node id (0 means \"no node\")".into());
        }
        if self.heartbeat_interval_ticks == 0 {
            return fail("heartbeat_interval_ticks must be at least 1".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return fail(format!(
                "election_timeout_ticks ({}) must be greater than heartbeat_interval_ticks ({}); \
                 usually 5 to 10 times it",
                self.election_timeout_ticks, self.heartbeat_interval_ticks
            ));
        }
        if let Some(max) = self.election_timeout_max_ticks {
            if max <= self.election_timeout_ticks {
                return fail(format!(
                    "election_timeout_max_ticks ({max}) must be greater than \
                     election_timeout_ticks ({}): timeouts are drawn from [min, max)",
                    self.election_timeout_ticks
                ));
            }
        }
        if self.inflight_messages_max == 0 {
            return fail("inflight_messages_max must be at least 1".into());
        }
        if self.append_bytes_max == 0 {
            return fail("append_bytes_max must be at least 1 byte".into());
        }
        if self.snapshot_chunk_bytes_max == 0 {
            return fail("snapshot_chunk_bytes_max must be at least 1 byte".into());
        }
        if self.apply_batch_bytes_max == 0 {
            return fail("apply_batch_bytes_max must be at least 1 byte".into());
        }
        if self.inflight_bytes_max != 0 && self.inflight_bytes_max < self.append_bytes_max {
            return fail(format!(
                "inflight_bytes_max ({}) must be 0 (no limit) or at least append_bytes_max ({})",
                self.inflight_bytes_max, self.append_bytes_max
            ));
        }
        if self.read_only == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return fail(
                "read_only = LeaseBased needs check_quorum = true: without it a deposed leader \
                 could serve stale reads"
                    .into(),
            );
        }
        Ok(())
    }

    /// True when `bug` is planted. Always false without the `planted-bugs` feature.
    #[inline(always)]
    pub(crate) fn has_bug(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted_bug == Some(bug);
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each invalid field is rejected with a message that names it.
    #[test]
    fn validate_names_the_bad_field() {
        assert!(Config::new(1).validate().is_ok());
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    id: 0,
                    ..Config::new(1)
                },
                "id",
            ),
            (
                Config {
                    heartbeat_interval_ticks: 0,
                    ..Config::new(1)
                },
                "heartbeat_interval_ticks",
            ),
            (
                Config {
                    election_timeout_ticks: 2,
                    ..Config::new(1)
                },
                "election_timeout_ticks",
            ),
            (
                Config {
                    election_timeout_max_ticks: Some(10),
                    ..Config::new(1)
                },
                "election_timeout_max_ticks",
            ),
            (
                Config {
                    inflight_messages_max: 0,
                    ..Config::new(1)
                },
                "inflight_messages_max",
            ),
            (
                Config {
                    append_bytes_max: 0,
                    ..Config::new(1)
                },
                "append_bytes_max",
            ),
            (
                Config {
                    snapshot_chunk_bytes_max: 0,
                    ..Config::new(1)
                },
                "snapshot_chunk_bytes_max",
            ),
            (
                Config {
                    inflight_bytes_max: 10,
                    ..Config::new(1)
                },
                "inflight_bytes_max",
            ),
            (
                Config {
                    read_only: ReadOnlyOption::LeaseBased,
                    check_quorum: false,
                    ..Config::new(1)
                },
                "check_quorum",
            ),
        ];
        for (config, field) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(field), "{message:?} should name {field}");
        }
    }
}
