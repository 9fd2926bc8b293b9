//! The node's metrics, and a tiny HTTP/1.1 responder that serves them in the
//! Prometheus text format at `GET /metrics`.
//!
//! Counters and gauges are atomics updated by the raft loop and the apply tasks;
//! latencies go to fixed-bucket histograms (Prometheus `le` buckets from 50 µs to
//! 10 s). Reading never blocks the raft loop beyond a short mutex on the group list.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_raft::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::lock;
use crate::transport::{TransportMetrics, TransportMetricsSnapshot};
use crate::GroupId;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKET_BOUNDS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Most bytes of an HTTP request head the metrics responder reads.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a metrics client may take to send its request.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last counts those above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS_SECONDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKET_BOUNDS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKET_BOUNDS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bucket, bound) in BUCKET_BOUNDS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[bucket].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKET_BOUNDS_SECONDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One group's counters and gauges.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    /// Current term.
    pub term: AtomicU64,
    /// Role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub role: AtomicU64,
    /// Known leader (0 for none).
    pub leader: AtomicU64,
    /// Commit index.
    pub commit: AtomicU64,
    /// Index the state machine has applied.
    pub applied: AtomicU64,
    /// Times the known leader changed.
    pub leader_changes: AtomicU64,
    /// Proposals accepted into the log by this node as leader.
    pub proposals: AtomicU64,
    /// Proposals refused or lost (not leader, overwritten, timed out in the loop).
    pub dropped_proposals: AtomicU64,
    /// Snapshots taken of the state machine.
    pub snapshots_taken: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
    /// 1 when the group's state machine failed and the group stopped on this node.
    pub stopped: AtomicU64,
    /// What the application calls the group (the service's namespace), shown as a
    /// `namespace` label beside `group` when set.
    name: Mutex<Option<String>>,
}

impl GroupMetrics {
    /// Names the group on the metrics page (a `namespace` label). Label values are
    /// escaped as the exposition format asks.
    pub fn set_name(&self, name: &str) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        *lock(&self.name) = Some(escaped);
    }

    fn labels(&self, node: &str, group: GroupId) -> String {
        match lock(&self.name).as_deref() {
            Some(name) => format!("{node},group=\"{group}\",namespace=\"{name}\""),
            None => format!("{node},group=\"{group}\""),
        }
    }

    pub(crate) fn set_role(&self, role: Role) {
        let value = match role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        self.role.store(value, Ordering::Relaxed);
    }
}

/// Node-wide counters, the groups' metrics, and latency histograms.
#[derive(Debug)]
pub struct NodeMetrics {
    node_id: u64,
    /// Raft loop turns (each drains its inputs, persists once, sends, hands out).
    pub turns: AtomicU64,
    /// Raft messages received from peers and stepped into a group.
    pub messages_received: AtomicU64,
    /// Raft messages handed to the transport.
    pub messages_sent: AtomicU64,
    /// Messages dropped because they name a group this node does not host.
    pub unknown_group_messages: AtomicU64,
    /// Messages the core refused (errors from `step`).
    pub refused_messages: AtomicU64,
    /// Write batches made durable (one fsync each with the durable log).
    pub batches_persisted: AtomicU64,
    /// Time from submitting a write batch to its being durable.
    pub fsync_latency: Histogram,
    /// Time from the raft loop turn that took a proposal to its answer from the apply
    /// task (commit and apply). Time queued before the loop took it is not counted.
    pub commit_latency: Histogram,
    /// Time a batch of committed entries took to apply.
    pub apply_latency: Histogram,
    groups: Mutex<BTreeMap<GroupId, Arc<GroupMetrics>>>,
    transport: Mutex<Vec<Arc<TransportMetrics>>>,
}

impl NodeMetrics {
    pub(crate) fn new(node_id: u64) -> Self {
        NodeMetrics {
            node_id,
            turns: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            unknown_group_messages: AtomicU64::new(0),
            refused_messages: AtomicU64::new(0),
            batches_persisted: AtomicU64::new(0),
            fsync_latency: Histogram::default(),
            commit_latency: Histogram::default(),
            apply_latency: Histogram::default(),
            groups: Mutex::new(BTreeMap::new()),
            transport: Mutex::new(Vec::new()),
        }
    }

    /// The metrics of `group`, created on first use.
    pub fn group(&self, group: GroupId) -> Arc<GroupMetrics> {
        lock(&self.groups).entry(group).or_default().clone()
    }

    pub(crate) fn remove_group(&self, group: GroupId) {
        lock(&self.groups).remove(&group);
    }

    pub(crate) fn add_transport(&self, metrics: Arc<TransportMetrics>) {
        lock(&self.transport).push(metrics);
    }

    /// A counter's current value.
    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let node = format!("node=\"{}\"", self.node_id);
        let counters = [
            (
                "concord_raft_loop_turns_total",
                "Raft loop turns.",
                &self.turns,
            ),
            (
                "concord_raft_messages_received_total",
                "Raft messages received and stepped.",
                &self.messages_received,
            ),
            (
                "concord_raft_messages_sent_total",
                "Raft messages handed to the transport.",
                &self.messages_sent,
            ),
            (
                "concord_raft_unknown_group_messages_total",
                "Raft messages dropped for naming a group this node does not host.",
                &self.unknown_group_messages,
            ),
            (
                "concord_raft_refused_messages_total",
                "Raft messages the core refused.",
                &self.refused_messages,
            ),
            (
                "concord_storage_batches_persisted_total",
                "Write batches made durable.",
                &self.batches_persisted,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{node}}} {}", Self::read(counter));
        }
        self.fsync_latency.render(
            &mut out,
            "concord_storage_fsync_seconds",
            "Time from submitting a write batch to its being durable.",
            &node,
        );
        self.commit_latency.render(
            &mut out,
            "concord_raft_commit_seconds",
            "Time from the raft loop taking a proposal to its applied answer (queueing before the loop not counted).",
            &node,
        );
        self.apply_latency.render(
            &mut out,
            "concord_raft_apply_seconds",
            "Time to apply a batch of committed entries.",
            &node,
        );
        let groups: Vec<(GroupId, Arc<GroupMetrics>)> = lock(&self.groups)
            .iter()
            .map(|(&group, metrics)| (group, metrics.clone()))
            .collect();
        type Field = fn(&GroupMetrics) -> &AtomicU64;
        let group_fields: [(&str, &str, &str, Field); 11] = [
            ("concord_group_term", "gauge", "Current term.", |m| &m.term),
            (
                "concord_group_role",
                "gauge",
                "Role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
                |m| &m.role,
            ),
            (
                "concord_group_leader",
                "gauge",
                "Known leader (0: none).",
                |m| &m.leader,
            ),
            (
                "concord_group_commit_index",
                "gauge",
                "Commit index.",
                |m| &m.commit,
            ),
            (
                "concord_group_applied_index",
                "gauge",
                "Index the state machine applied.",
                |m| &m.applied,
            ),
            (
                "concord_group_leader_changes_total",
                "counter",
                "Times the known leader changed.",
                |m| &m.leader_changes,
            ),
            (
                "concord_group_proposals_total",
                "counter",
                "Proposals accepted into the log as leader.",
                |m| &m.proposals,
            ),
            (
                "concord_group_dropped_proposals_total",
                "counter",
                "Proposals refused or lost.",
                |m| &m.dropped_proposals,
            ),
            (
                "concord_group_snapshots_taken_total",
                "counter",
                "State machine snapshots taken.",
                |m| &m.snapshots_taken,
            ),
            (
                "concord_group_snapshots_installed_total",
                "counter",
                "Snapshots received and installed.",
                |m| &m.snapshots_installed,
            ),
            (
                "concord_group_stopped",
                "gauge",
                "1 when the group's state machine failed and the group stopped here.",
                |m| &m.stopped,
            ),
        ];
        for (name, kind, help, field) in group_fields {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (group, metrics) in &groups {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    metrics.labels(&node, *group),
                    Self::read(field(metrics))
                );
            }
        }
        let transports = lock(&self.transport).clone();
        let mut totals = [0u64; TransportMetricsSnapshot::FIELDS];
        let mut names = [""; TransportMetricsSnapshot::FIELDS];
        for transport in &transports {
            for (position, (name, value)) in transport.snapshot().fields().into_iter().enumerate() {
                totals[position] += value;
                names[position] = name;
            }
        }
        if !transports.is_empty() {
            for (name, total) in names.iter().zip(totals) {
                let name = format!("concord_transport_{name}_total");
                let _ = writeln!(
                    out,
                    "# HELP {name} Transport counter.\n# TYPE {name} counter"
                );
                let _ = writeln!(out, "{name}{{{node}}} {total}");
            }
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true. Anything else
/// gets 404 (unknown path) or 400 (not a request line); a client that sends garbage
/// or nothing gets an answer or a closed connection, never a stuck responder.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<NodeMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_READ_TIMEOUT, answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: &NodeMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            break;
        }
    }
    let request_line = head
        .split(|&byte| byte == b'\n')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .unwrap_or("");
    let mut parts = request_line.trim_end().split(' ');
    let (status, body) = match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(path), Some(version)) if version.starts_with("HTTP/1.") => {
            if path == "/metrics" {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_string())
            }
        }
        _ => ("400 Bad Request", "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    // A named group's samples carry its name as a `namespace` label, escaped; an
    // unnamed group's carry the group id alone.
    #[test]
    fn named_groups_carry_a_namespace_label() {
        let metrics = NodeMetrics::new(7);
        metrics.group(3).set_name("orders");
        metrics.group(4).set_name("a\"b");
        metrics.group(5).commit.store(9, Ordering::Relaxed);
        let page = metrics.render();
        assert!(
            page.contains("concord_group_term{node=\"7\",group=\"3\",namespace=\"orders\"} 0"),
            "{page}"
        );
        assert!(page.contains("group=\"4\",namespace=\"a\\\"b\"}"), "{page}");
        assert!(
            page.contains("concord_group_commit_index{node=\"7\",group=\"5\"} 9"),
            "{page}"
        );
    }
}
