//! A write whose answer is lost must not apply twice. Before exactly-once, `memstore
//! put` sent a write again after `unavailable`, and the copy landed after another
//! client's later write: a value read, overwritten and read, then back (V, W, V).
//!
//! Two ways to make it happen. The deterministic one, for every CI run: the node's
//! fault hook loses the answer to an applied write and holds the error for a while,
//! so another client writes in between, every time. The random one: several clients
//! on few keys while the leader is frozen (SIGSTOP, so committed writes die
//! unanswered) and killed (SIGKILL) again and again; it runs `CHAOS_SECONDS` (default
//! 20; set `MEMSTORE_CHAOS_SECONDS` for longer). Both record every operation as the
//! clients saw it and check the whole history with concord-sim's linearizability
//! checker.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_memstore::store::Command;
use concord_node::client::{ClientConfig, RaftClient};
use concord_node::{ApiError, LogEntry, DEFAULT_GROUP};
use concord_sim::history::{History, Op, OpId, Response};
use concord_sim::linearizability::{self, CheckError};

use crate::support::{client, test_dir, Output, Server};

/// A history shared by the clients of a test, its times in microseconds since start.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Arc::new(Mutex::new(History::new())),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn invoke(&self, client: u64, op: Op) -> OpId {
        let time = self.now();
        self.history.lock().unwrap().invoke(client, op, time)
    }

    fn complete(&self, id: OpId, response: Response) {
        let time = self.now();
        self.history.lock().unwrap().complete(id, response, time);
    }

    fn fail(&self, id: OpId) {
        let time = self.now();
        self.history.lock().unwrap().fail(id, time);
    }

    fn unknown(&self, id: OpId) {
        self.history.lock().unwrap().unknown(id);
    }

    /// Records a `memstore put` that ran, taking its exit code at its word: 0 it
    /// applied, 5 its outcome is unknown, 1 it failed and did not apply (a put that
    /// exits 1 yet applied is a violation the check finds). Any other exit fails the
    /// test.
    fn put(&self, client_id: u64, peer: &str, key: &str, value: &str) -> Output {
        let id = self.invoke(client_id, Op::put(key.to_string(), value.to_string()));
        let output = client("put", peer, &[key, value]);
        match output.code {
            Some(0) => self.complete(id, Response::Ok),
            Some(5) => self.unknown(id),
            Some(1) => self.fail(id),
            _ => panic!("memstore put exited unexpectedly: {output:?}"),
        }
        output
    }

    /// Records a `memstore get` that ran: its value, none (exit 3), or nothing known.
    fn get(&self, client_id: u64, peer: &str, key: &str) -> Output {
        let id = self.invoke(client_id, Op::get(key.to_string()));
        let output = client("get", peer, &[key]);
        match output.code {
            Some(0) => self.complete(
                id,
                Response::Value(Some(Bytes::from(output.stdout.trim_end().to_string()))),
            ),
            Some(3) => self.complete(id, Response::Value(None)),
            _ => self.unknown(id),
        }
        output
    }

    fn check(&self) -> Result<(), CheckError> {
        linearizability::check(&self.history.lock().unwrap())
    }

    fn history(&self) -> String {
        self.history.lock().unwrap().to_string()
    }
}

/// The scenario, with the first write made by `first_write` (given the node's
/// address): V's answer is lost for 3 s; meanwhile V is read, W written and read;
/// then V's writer finishes, and the key is read once more.
fn lost_answer_scenario(first_write: impl FnOnce(&Recorder, String) + Send + 'static) -> Recorder {
    let dir = test_dir();
    let node = Server::start(
        dir.path(),
        1,
        "127.0.0.1:0",
        &[
            "--bootstrap",
            "--fault-lose-replies",
            "1",
            "--fault-lost-reply-delay-ms",
            "3000",
        ],
    );
    let peer = node.address.clone();
    let recorder = Recorder::new();
    let writer = {
        let recorder = recorder.clone();
        let peer = peer.clone();
        thread::spawn(move || first_write(&recorder, peer))
    };
    // V is in the store while its writer still waits (for 3 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = recorder.get(2, &peer, "k");
        if read.code == Some(0) {
            assert_eq!(read.stdout, "V\n");
            break;
        }
        assert!(Instant::now() < deadline, "V never applied: {read:?}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !writer.is_finished(),
        "the first write's answer came before the others wrote: raise the hook's delay"
    );
    assert!(recorder
        .put(2, &peer, "k", "W")
        .ok()
        .starts_with("ok index "));
    assert_eq!(recorder.get(2, &peer, "k").ok(), "W\n");
    writer.join().unwrap();
    recorder.get(2, &peer, "k");
    recorder
}

/// With exactly-once (what `memstore put` does) the writer's retry is answered from
/// the group's table: V applied once, before W, and the history is linearizable.
#[test]
fn a_write_whose_answer_is_lost_applies_once() {
    let recorder = lost_answer_scenario(|recorder, peer| {
        // The retry is answered with the first application's outcome.
        assert!(recorder
            .put(1, &peer, "k", "V")
            .ok()
            .starts_with("ok index "));
    });
    let history = recorder.history();
    assert!(history.ends_with("get \"k\" -> \"W\"\n"), "{history}");
    if let Err(error) = recorder.check() {
        panic!("{error}\n{history}");
    }
}

/// A client that sends the write again blindly after `unavailable` (as `memstore put`
/// did before exactly-once) applies V twice, after W: the checker catches the history
/// (so the test above could fail).
#[test]
fn a_blind_retry_of_a_lost_answer_is_caught() {
    let recorder = lost_answer_scenario(|recorder, peer| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let id = recorder.invoke(1, Op::put("k", "V"));
        let config = ClientConfig {
            exactly_once: false,
            retry_deadline_ms: 0,
            ..ClientConfig::default()
        };
        let command = Command::Put {
            key: "k".into(),
            value: "V".into(),
        }
        .encode();
        let result = runtime.block_on(async {
            let client = RaftClient::connect_with(peer, config).await?;
            loop {
                match client.propose(DEFAULT_GROUP, command.clone()).await {
                    Err(ApiError::Unavailable(_) | ApiError::NotLeader { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    other => return other,
                }
            }
        });
        result.expect("the blind retry applies");
        recorder.complete(id, Response::Ok);
    });
    let history = recorder.history();
    assert!(history.ends_with("get \"k\" -> \"V\"\n"), "{history}");
    match recorder.check() {
        Err(CheckError::Violation(_)) => {}
        other => panic!("expected a violation, got {other:?}\n{history}"),
    }
}

/// How long the random run lasts unless `MEMSTORE_CHAOS_SECONDS` says otherwise.
const CHAOS_SECONDS: u64 = 20;
/// Clients writing and reading at once.
const CHAOS_CLIENTS: u64 = 4;
/// Keys they share.
const CHAOS_KEYS: u64 = 2;

/// Several clients write and read two keys through `memstore` commands while the
/// leader is frozen for a moment (committed writes die unanswered) and killed, then
/// restarted, over and over. No acknowledged write may be lost or repeated: the whole
/// history must be linearizable.
#[test]
fn killing_the_leader_under_concurrent_writers_keeps_the_history_linearizable() {
    let seconds = std::env::var("MEMSTORE_CHAOS_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(CHAOS_SECONDS);
    let dir = test_dir();
    let mut nodes = vec![Server::start(
        dir.path(),
        1,
        "127.0.0.1:0",
        &["--bootstrap"],
    )];
    let first = nodes[0].address.clone();
    for id in [2, 3] {
        nodes.push(Server::start(
            dir.path(),
            id,
            "127.0.0.1:0",
            &["--join", &first],
        ));
    }
    let peers: String = nodes
        .iter()
        .map(|node| node.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let recorder = Recorder::new();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (1..=CHAOS_CLIENTS)
        .map(|client_id| {
            let recorder = recorder.clone();
            let peers = peers.clone();
            thread::spawn(move || {
                let mut sequence = 0u64;
                let mut written = 0;
                while Instant::now() < stop_at {
                    sequence += 1;
                    let key = format!("k{}", (client_id + sequence) % CHAOS_KEYS);
                    if sequence.is_multiple_of(3) {
                        recorder.get(client_id, &peers, &key);
                    } else {
                        let value = format!("{client_id}.{sequence}");
                        if recorder.put(client_id, &peers, &key, &value).code == Some(0) {
                            written += 1;
                        }
                    }
                }
                written
            })
        })
        .collect();
    let mut kills = 0;
    let mut pause = 0u64;
    while Instant::now() + Duration::from_secs(3) < stop_at {
        thread::sleep(Duration::from_millis(1_500 + pause % 1_000));
        pause += 617;
        let Some(leader) = nodes.iter().position(|node| {
            client("status", &node.address, &[])
                .stdout
                .lines()
                .any(|line| line == "role leader")
        }) else {
            continue;
        };
        let pid = nodes[leader].pid().expect("the leader runs") as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        thread::sleep(Duration::from_millis(200 + pause % 300));
        nodes[leader].kill();
        kills += 1;
        thread::sleep(Duration::from_millis(500));
        assert_eq!(nodes[leader].restart(), "resumed");
    }
    let written: u64 = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    let history = recorder.history();
    let operations = history.lines().count();
    let result = recorder.check();
    eprintln!(
        "chaos: {seconds} s, {kills} leader kills, {operations} operations, {written} writes \
         acknowledged, check: {}",
        match &result {
            Ok(()) => "linearizable".to_string(),
            Err(error) => error.to_string(),
        }
    );
    assert!(kills >= 2, "the leader was killed only {kills} times");
    assert!(written > 0, "no write was acknowledged");
    // An inconclusive check proves nothing: the run must be small enough to decide.
    if let Err(error) = result {
        panic!("{error}\n{history}");
    }
}
