//! Killing a namespace's leader (SIGKILL) while several clients write the same keys:
//! no acknowledged write lost, none applied twice, the clients carry on by
//! themselves. Every operation is recorded as its client saw it and the whole history
//! is checked with concord-sim's linearizability checker; a counter every client adds
//! to must end between the adds acknowledged and those plus the ones in doubt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_client::service::{Error, ServiceClient};
use concord_client::{ApiError, ClientConfig};
use concord_service::command::{Op as TreeOp, OpResult, Txn};
use concord_service::{Limits, NodeValue, ServiceError};
use concord_sim::history::{History, Op, OpId, Response};
use concord_sim::linearizability;

use crate::cluster::Cluster;

/// Clients writing and reading through the failover.
const CLIENTS: u64 = 4;
/// Keys they share.
const KEYS: u64 = 2;
/// How long they run before the leader is killed, and after.
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_KILL: Duration = Duration::from_secs(5);

/// A history shared by the clients, its times in microseconds since the start.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
    /// When each acknowledged write completed, in microseconds.
    acks: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn invoke(&self, client: u64, op: Op) -> OpId {
        let time = self.now();
        self.history.lock().unwrap().invoke(client, op, time)
    }

    fn settle<T>(
        &self,
        id: OpId,
        result: &Result<T, Error>,
        response: impl FnOnce(&T) -> Response,
    ) {
        let time = self.now();
        let mut history = self.history.lock().unwrap();
        match result {
            Ok(value) => history.complete(id, response(value), time),
            // The namespace refused it: nothing applied.
            Err(Error::Service(_)) => history.fail(id, time),
            Err(Error::Api(error)) if !error.outcome_unknown() && !error.is_retryable() => {
                history.fail(id, time)
            }
            Err(_) => history.unknown(id),
        }
    }
}

fn key(index: u64) -> String {
    format!("/k{index}")
}

// See the module docs. Prints the failover's numbers: time to a new leader, the
// longest pause between acknowledged writes, writes acknowledged and in doubt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_namespace_leader_keeps_every_acknowledged_write_once() {
    let mut cluster = Cluster::start(3);
    let admin = cluster.client().await;
    let namespace = admin
        .create_namespace("jobs", vec![], 3, Limits::default())
        .await
        .unwrap();
    admin
        .txn(
            "jobs",
            Txn::single(TreeOp::Create {
                path: ServiceClient::path("/count").unwrap(),
                value: NodeValue::Counter(0),
                parents: false,
            }),
        )
        .await
        .unwrap();

    let recorder = Recorder {
        start: Instant::now(),
        history: Arc::new(Mutex::new(History::new())),
        acks: Arc::default(),
    };
    let stop_at = Instant::now() + BEFORE_KILL + AFTER_KILL;
    let mut workers = Vec::new();
    for client_id in 1..=CLIENTS {
        // Each its own client: its own connections and exactly-once sessions.
        let client = ServiceClient::connect(cluster.addresses(), ClientConfig::default())
            .await
            .unwrap();
        let recorder = recorder.clone();
        workers.push(tokio::spawn(async move {
            let (mut added, mut adds_in_doubt) = (0u64, 0u64);
            let mut sequence = 0u64;
            while Instant::now() < stop_at {
                sequence += 1;
                let k = key((client_id + sequence) % KEYS);
                match sequence % 3 {
                    0 => {
                        let id = recorder.invoke(client_id, Op::get(k.clone()));
                        let result = client.get("jobs", &k).await;
                        let result = match result {
                            Err(Error::Service(ServiceError::NotFound { .. })) => Ok(None),
                            other => other.map(|(value, _)| Some(value)),
                        };
                        recorder.settle(id, &result, |value| {
                            Response::Value(value.as_ref().map(|value| match value {
                                NodeValue::Blob(bytes) => bytes.clone(),
                                other => panic!("a blob holds {other:?}"),
                            }))
                        });
                    }
                    1 => {
                        let value = format!("{client_id}.{sequence}");
                        let id = recorder.invoke(client_id, Op::put(k.clone(), value.clone()));
                        let result = client.put("jobs", &k, Bytes::from(value)).await;
                        recorder.settle(id, &result, |_| Response::Ok);
                        if result.is_ok() {
                            let now = recorder.now();
                            recorder.acks.lock().unwrap().push(now);
                        }
                    }
                    _ => {
                        let add = Txn::single(TreeOp::CounterAdd {
                            path: ServiceClient::path("/count").unwrap(),
                            delta: 1,
                        });
                        match client.txn("jobs", add).await {
                            Ok(response) => {
                                assert!(matches!(response.results[0], OpResult::Counter { .. }));
                                added += 1;
                                let now = recorder.now();
                                recorder.acks.lock().unwrap().push(now);
                            }
                            Err(Error::Api(error))
                                if error.outcome_unknown()
                                    || matches!(error, ApiError::OutcomeUnknown(_)) =>
                            {
                                adds_in_doubt += 1
                            }
                            Err(error) => panic!("client {client_id}: an add failed: {error}"),
                        }
                    }
                }
            }
            (added, adds_in_doubt)
        }));
    }

    tokio::time::sleep(BEFORE_KILL).await;
    let leader = admin
        .raft()
        .status(namespace.group)
        .await
        .unwrap()
        .leader
        .expect("the namespace has a leader")
        .id;
    let killed_at = recorder.now();
    let index = cluster
        .servers
        .iter()
        .position(|server| server.id == leader)
        .unwrap();
    cluster.servers[index].kill();
    // Time to a new leader, as a surviving node sees it.
    let survivor = cluster.servers[(index + 1) % cluster.servers.len()]
        .address
        .clone();
    let watcher = concord_client::RaftClient::connect(survivor).await.unwrap();
    let election_deadline = Instant::now() + Duration::from_secs(30);
    let elected_at = loop {
        assert!(
            Instant::now() < election_deadline,
            "no new leader within 30 s of the kill"
        );
        if let Ok(status) = watcher.status(namespace.group).await {
            if status.leader.is_some_and(|member| member.id != leader) {
                break recorder.now();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let (mut added, mut adds_in_doubt) = (0, 0);
    for worker in workers {
        let (a, d) = worker.await.unwrap();
        added += a;
        adds_in_doubt += d;
    }
    let acks = recorder.acks.lock().unwrap().clone();
    let first_after = acks.iter().copied().filter(|&t| t > killed_at).min();
    let mut sorted = acks.clone();
    sorted.sort_unstable();
    let longest_pause = sorted.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);

    // The counter: every acknowledged add once, those in doubt at most once.
    let (value, _) = admin.get("jobs", "/count").await.unwrap();
    let NodeValue::Counter(count) = value else {
        panic!("{value:?}")
    };
    let count = count as u64;
    let history = recorder.history.lock().unwrap().clone();
    let result = linearizability::check(&history);
    eprintln!(
        "failover: leader {leader} killed at {:.3} s; new leader after {:.0} ms; first \
         acknowledged write {:.0} ms after the kill; longest pause between acknowledged \
         writes {:.0} ms; {} writes acknowledged ({} counter adds, {} in doubt), counter {}; \
         {} operations: {}",
        killed_at as f64 / 1e6,
        (elapsed(killed_at, elected_at)) as f64 / 1e3,
        first_after.map_or(f64::NAN, |t| (t - killed_at) as f64 / 1e3),
        longest_pause as f64 / 1e3,
        acks.len(),
        added,
        adds_in_doubt,
        count,
        history.len(),
        match &result {
            Ok(()) => "linearizable".to_string(),
            Err(error) => error.to_string(),
        }
    );
    assert!(
        (added..=added + adds_in_doubt).contains(&count),
        "the counter is {count}: {added} adds acknowledged, {adds_in_doubt} in doubt"
    );
    assert!(
        first_after.is_some(),
        "no write was acknowledged after the kill"
    );
    if let Err(error) = result {
        panic!("{error}\n{history}");
    }
}

fn elapsed(from: u64, to: u64) -> u64 {
    to.saturating_sub(from)
}
