//! The simulated network: messages in flight with delivery times, loss, duplication,
//! delay (and so reordering), and directed link blocking for partitions.
//!
//! Loss, duplication and delay are drawn when a message is sent; partitions are applied
//! when it is delivered (a message sent before a partition heals is still dropped if
//! the link is cut at its delivery time, as on a real network).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use concord_raft::{Message, NodeId};
use concord_storage::GroupId;

use crate::rng::{Rng, PPM};

/// A simulated instant. The unit is arbitrary; nodes tick every [`TICK_INSTANTS`].
pub type Time = u64;

/// Instants per raft tick: messages can be delayed by fractions of a tick, so they
/// reorder among themselves and against ticks.
pub const TICK_INSTANTS: u64 = 8;

/// How the network treats each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Chance that a message is lost, in parts per million.
    pub loss_ppm: u32,
    /// Chance that a message is delivered twice, in parts per million.
    pub duplicate_ppm: u32,
    /// Least delivery delay, in instants (at least 1).
    pub delay_min_instants: u64,
    /// Most delivery delay of an ordinary message, in instants.
    pub delay_max_instants: u64,
    /// Chance that a message (each copy of it) is slow, in parts per million: it takes
    /// from `delay_max_instants` to `slow_delay_max_instants` (long enough to arrive
    /// terms later, stale).
    pub slow_ppm: u32,
    /// Most delivery delay of a slow message, in instants (at least
    /// `delay_max_instants`).
    pub slow_delay_max_instants: u64,
}

impl NetworkConfig {
    /// No loss, no duplication, delivery within one tick.
    pub fn reliable() -> NetworkConfig {
        NetworkConfig {
            loss_ppm: 0,
            duplicate_ppm: 0,
            delay_min_instants: 1,
            delay_max_instants: TICK_INSTANTS,
            slow_ppm: 0,
            slow_delay_max_instants: TICK_INSTANTS,
        }
    }

    /// The 6.824 "unreliable" network: 10% loss, some duplication, delays up to two
    /// ticks, and one message in fifty delayed up to 30 ticks (so messages reorder and
    /// some arrive long stale).
    pub fn unreliable() -> NetworkConfig {
        NetworkConfig {
            loss_ppm: 100_000,
            duplicate_ppm: 50_000,
            delay_min_instants: 1,
            delay_max_instants: 2 * TICK_INSTANTS,
            slow_ppm: 20_000,
            slow_delay_max_instants: 30 * TICK_INSTANTS,
        }
    }
}

impl NetworkConfig {
    /// Panics unless the delays are usable: at least one instant, ordinary within
    /// slow.
    pub fn validate(&self) {
        assert!(
            self.delay_min_instants >= 1,
            "delivery takes at least one instant"
        );
        assert!(
            self.delay_min_instants <= self.delay_max_instants,
            "delay_min_instants {} above delay_max_instants {}",
            self.delay_min_instants,
            self.delay_max_instants
        );
        assert!(
            self.delay_max_instants <= self.slow_delay_max_instants,
            "slow_delay_max_instants {} below delay_max_instants {}",
            self.slow_delay_max_instants,
            self.delay_max_instants
        );
    }
}

impl fmt::Display for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss {:.1}%, duplication {:.1}%, delay {}..={} instants, {:.1}% slow up to {} instants",
            f64::from(self.loss_ppm) * 100.0 / f64::from(PPM),
            f64::from(self.duplicate_ppm) * 100.0 / f64::from(PPM),
            self.delay_min_instants,
            self.delay_max_instants,
            f64::from(self.slow_ppm) * 100.0 / f64::from(PPM),
            self.slow_delay_max_instants,
        )
    }
}

/// Counts of what happened to messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Lost when sent.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Dropped at delivery by a cut link.
    pub cut: u64,
    /// Delivered to their node.
    pub delivered: u64,
    /// Bytes handed to the network, as [`Message::size_bytes`] counts them (each
    /// message once, however many copies the network makes).
    pub bytes_sent: u64,
    /// Copies delayed as slow (up to [`NetworkConfig::slow_delay_max_instants`]).
    pub slowed: u64,
}

/// What became of a message handed to [`Network::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Lost at once.
    Lost,
    /// Will arrive at these instants (two for a duplicated message).
    Queued(Time, Option<Time>),
}

/// Messages in flight and the state of every link.
#[derive(Debug)]
pub struct Network {
    config: NetworkConfig,
    /// Directed links that drop everything: `(from, to)`.
    cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Messages (with their group) by (delivery time, send sequence): delivery order
    /// is deterministic.
    in_flight: BTreeMap<(Time, u64), (GroupId, Message)>,
    next_sequence: u64,
    rng: Rng,
    stats: NetworkStats,
}

impl Network {
    /// A network drawing its loss, duplication and delays from `rng`.
    pub fn new(config: NetworkConfig, rng: Rng) -> Network {
        config.validate();
        Network {
            config,
            cut_links: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            next_sequence: 0,
            rng,
            stats: NetworkStats::default(),
        }
    }

    /// How messages are treated now.
    pub fn config(&self) -> NetworkConfig {
        self.config
    }

    /// Changes how messages sent from now on are treated.
    pub fn set_config(&mut self, config: NetworkConfig) {
        config.validate();
        self.config = config;
    }

    /// Counts so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Number of messages in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands `message` of `group` to the network at `now`.
    pub fn send(&mut self, now: Time, group: GroupId, message: Message) -> SendOutcome {
        self.stats.sent += 1;
        self.stats.bytes_sent += message.size_bytes();
        if self.rng.chance(self.config.loss_ppm) {
            self.stats.lost += 1;
            return SendOutcome::Lost;
        }
        let first = now + self.delay();
        let second = if self.rng.chance(self.config.duplicate_ppm) {
            self.stats.duplicated += 1;
            let at = now + self.delay();
            self.enqueue(at, group, message.clone());
            Some(at)
        } else {
            None
        };
        self.enqueue(first, group, message);
        SendOutcome::Queued(first, second)
    }

    /// A copy's delivery delay: ordinary, or now and then slow.
    fn delay(&mut self) -> u64 {
        if self.rng.chance(self.config.slow_ppm) {
            self.stats.slowed += 1;
            return self.rng.between(
                self.config.delay_max_instants,
                self.config.slow_delay_max_instants,
            );
        }
        self.rng.between(
            self.config.delay_min_instants,
            self.config.delay_max_instants,
        )
    }

    fn enqueue(&mut self, at: Time, group: GroupId, message: Message) {
        self.in_flight
            .insert((at, self.next_sequence), (group, message));
        self.next_sequence += 1;
    }

    /// The next message due at or before `now`, in delivery order, with its group, if
    /// any. The caller checks [`Network::is_cut`] and whether the receiver is up.
    pub fn pop_due(&mut self, now: Time) -> Option<(GroupId, Message)> {
        let (&(at, _), _) = self.in_flight.first_key_value()?;
        if at > now {
            return None;
        }
        self.in_flight.pop_first().map(|(_, message)| message)
    }

    /// Records what became of a popped message (for the statistics).
    pub fn record_delivery(&mut self, delivered: bool) {
        if delivered {
            self.stats.delivered += 1;
        } else {
            self.stats.cut += 1;
        }
    }

    /// True when messages from `from` to `to` are dropped.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut_links.contains(&(from, to))
    }

    /// Drops messages from `from` to `to` until the link is restored.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut_links.insert((from, to));
        }
    }

    /// Restores the link from `from` to `to`.
    pub fn restore(&mut self, from: NodeId, to: NodeId) {
        self.cut_links.remove(&(from, to));
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&mut self, node: NodeId, all: &[NodeId]) {
        for &other in all {
            self.cut(node, other);
            self.cut(other, node);
        }
    }

    /// Restores the links between `node` and each of `peers`, both ways.
    pub fn reconnect(&mut self, node: NodeId, peers: &[NodeId]) {
        for &peer in peers {
            self.restore(node, peer);
            self.restore(peer, node);
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    /// Replaces the partition: nodes in different groups cannot talk; nodes in no group
    /// are isolated from everyone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>], all: &[NodeId]) {
        self.heal();
        let group_of = |node: NodeId| groups.iter().position(|group| group.contains(&node));
        for &from in all {
            for &to in all {
                if from == to {
                    continue;
                }
                match (group_of(from), group_of(to)) {
                    (Some(a), Some(b)) if a == b => {}
                    _ => self.cut(from, to),
                }
            }
        }
    }

    /// The cut links, for tracing.
    pub fn cut_links(&self) -> Vec<(NodeId, NodeId)> {
        self.cut_links.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use concord_raft::{Entry, EntryKind, MessageKind};

    use super::*;

    fn message(payload_bytes: usize) -> Message {
        let mut message = Message::new(MessageKind::Append, 1, 2, 1);
        message.entries = vec![Entry {
            term: 1,
            index: 1,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![7; payload_bytes]),
        }];
        message
    }

    // About `slow_ppm` of the messages take from `delay_max_instants` to
    // `slow_delay_max_instants`, the rest at most `delay_max_instants`; bytes are
    // counted once per message handed over, as `Message::size_bytes` says.
    #[test]
    fn slow_messages_are_late_and_bytes_are_counted() {
        let config = NetworkConfig {
            loss_ppm: 0,
            duplicate_ppm: 0,
            delay_min_instants: 1,
            delay_max_instants: 4,
            slow_ppm: 100_000,
            slow_delay_max_instants: 400,
        };
        let mut network = Network::new(config, Rng::new(3));
        let mut late = 0;
        let mut latest = 0;
        let mut bytes = 0;
        for n in 0..10_000 {
            let message = message(n % 100);
            bytes += message.size_bytes();
            let SendOutcome::Queued(at, None) = network.send(0, 1, message) else {
                panic!("a reliable network lost or duplicated a message");
            };
            assert!((1..=400).contains(&at), "delivered at {at}");
            if at > 4 {
                late += 1;
            }
            latest = latest.max(at);
        }
        let stats = network.stats();
        assert!((800..=1200).contains(&stats.slowed), "{stats:?}");
        assert!(
            late <= stats.slowed && late >= stats.slowed * 9 / 10,
            "{late} {stats:?}"
        );
        assert!(
            latest > 300,
            "slow messages reach the maximum delay: {latest}"
        );
        assert_eq!(stats.bytes_sent, bytes);
        assert_eq!(stats.sent, 10_000);
    }

    // A configuration whose slow delay is below its ordinary one is refused.
    #[test]
    #[should_panic(expected = "slow_delay_max_instants 2 below delay_max_instants 4")]
    fn slow_delay_below_ordinary_delay_is_refused() {
        let config = NetworkConfig {
            delay_max_instants: 4,
            slow_delay_max_instants: 2,
            ..NetworkConfig::reliable()
        };
        Network::new(config, Rng::new(1));
    }
}
