//! The client service end to end: `RaftClient` → gRPC → `RaftService` → a fake
//! `RaftApi`, served by `service::serve` next to the peer transport.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_node::client::{ClientConfig, RaftClient};
use concord_node::service::{serve, RaftApi, RaftService};
use concord_node::transport::grpc::TransportServer;
use concord_node::transport::{inbox, TransportConfig, TransportMetrics};
use concord_node::{
    ApiError, ClientId, GroupHealth, GroupStatus, JoinTicket, Member, MemberRole, ProposeResponse,
    ReadMode, ReadResponse, RequestId,
};
use concord_raft::{NodeId, Role};

use crate::support::{bind, within, RunningServer};

/// A client that sends each call once, without exactly-once: these tests look at the
/// calls themselves (routing, batching, errors).
fn single_attempt() -> ClientConfig {
    ClientConfig {
        exactly_once: false,
        retry_deadline_ms: 0,
        ..ClientConfig::default()
    }
}

/// The group every fake serves.
const GROUP: u64 = 1;
/// A group whose every call takes longer than any client waits.
const SLOW_GROUP: u64 = 13;
/// How long a batch holding the proposal `slow` takes.
const SLOW_PROPOSAL: Duration = Duration::from_millis(300);

/// A node that answers from memory. It leads `GROUP` unless `redirect` names another
/// node, in which case it answers `NotLeader` pointing there.
struct FakeNode {
    id: NodeId,
    address: String,
    redirect: Mutex<Option<(NodeId, Option<String>)>>,
    log: Mutex<Vec<Bytes>>,
    calls: Mutex<Vec<String>>,
    /// The size of every `propose_batch` call, in order.
    batches: Mutex<Vec<usize>>,
    /// Clients registered, and the request ids proposals came with.
    clients: Mutex<Vec<ClientId>>,
    requests: Mutex<Vec<RequestId>>,
    /// A minimal exactly-once table: the first answer of each request.
    answered: Mutex<std::collections::HashMap<(ClientId, u64), ProposeResponse>>,
    /// Clients the table has forgotten (evicted).
    forgotten: Mutex<std::collections::HashSet<ClientId>>,
    /// The next this many proposals apply, but their answers are lost on the way
    /// back (the client sees the connection reset).
    lose_replies: Mutex<u32>,
    /// Losing an answer also makes the table forget the client.
    forget_when_losing: Mutex<bool>,
}

impl FakeNode {
    fn member(&self) -> Member {
        Member {
            id: self.id,
            address: self.address.clone(),
            role: MemberRole::Voter,
        }
    }

    /// Records the call and answers whether this node may serve it.
    async fn admit(&self, group: u64, call: String) -> Result<(), ApiError> {
        self.calls.lock().unwrap().push(call);
        if group == SLOW_GROUP {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if group != GROUP {
            return Err(ApiError::GroupNotFound { group });
        }
        match self.redirect.lock().unwrap().clone() {
            Some((leader, address)) => Err(ApiError::NotLeader {
                leader: Some(leader),
                address,
            }),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl RaftApi for FakeNode {
    async fn propose(
        &self,
        group: u64,
        data: Bytes,
        request: Option<RequestId>,
    ) -> Result<ProposeResponse, ApiError> {
        self.admit(group, format!("propose {data:?}")).await?;
        if let Some(request) = request {
            self.requests.lock().unwrap().push(request);
            if self.forgotten.lock().unwrap().contains(&request.client) {
                return Err(ApiError::ClientUnknown {
                    client: request.client,
                });
            }
        }
        let key = request.map(|request| (request.client, request.sequence));
        let cached = key.and_then(|key| self.answered.lock().unwrap().get(&key).cloned());
        let applied = match cached {
            Some(applied) => applied,
            None => {
                let mut log = self.log.lock().unwrap();
                log.push(data.clone());
                let mut response = data.to_vec();
                response.reverse();
                let applied = ProposeResponse {
                    response: response.into(),
                    index: log.len() as u64,
                    term: 3,
                };
                if let Some(key) = key {
                    self.answered.lock().unwrap().insert(key, applied.clone());
                }
                applied
            }
        };
        let mut lose = self.lose_replies.lock().unwrap();
        if *lose > 0 {
            *lose -= 1;
            if let (Some(request), true) = (request, *self.forget_when_losing.lock().unwrap()) {
                self.forgotten.lock().unwrap().insert(request.client);
            }
            return Err(ApiError::Unavailable("connection reset by peer".into()));
        }
        Ok(applied)
    }

    async fn propose_batch(
        &self,
        proposals: Vec<(u64, Bytes, Option<RequestId>)>,
    ) -> Vec<Result<ProposeResponse, ApiError>> {
        self.batches.lock().unwrap().push(proposals.len());
        if proposals
            .iter()
            .any(|(_, data, _)| data.as_ref() == b"slow")
        {
            tokio::time::sleep(SLOW_PROPOSAL).await;
        }
        let mut results = Vec::new();
        for (group, data, request) in proposals {
            results.push(self.propose(group, data, request).await);
        }
        results
    }

    async fn register_client(&self, group: u64) -> Result<ClientId, ApiError> {
        self.admit(group, "register_client".into()).await?;
        let mut clients = self.clients.lock().unwrap();
        let client = 100 + clients.len() as u64;
        clients.push(client);
        Ok(client)
    }

    async fn read(
        &self,
        group: u64,
        query: Bytes,
        mode: ReadMode,
    ) -> Result<ReadResponse, ApiError> {
        self.admit(group, format!("read {query:?} {mode:?}"))
            .await?;
        let log = self.log.lock().unwrap();
        Ok(ReadResponse {
            response: Bytes::from(format!("{} entries", log.len())),
            index: log.len() as u64,
            term: 3,
        })
    }

    async fn status(&self, group: u64) -> Result<GroupStatus, ApiError> {
        self.admit(group, "status".into()).await?;
        Ok(GroupStatus {
            group,
            node_id: self.id,
            role: Role::Leader,
            term: 3,
            leader: Some(self.member()),
            commit: 5,
            applied: 4,
            members: vec![self.member()],
            health: GroupHealth::Running,
        })
    }

    async fn request_join(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> Result<JoinTicket, ApiError> {
        self.admit(group, format!("request_join {node_id} {address}"))
            .await?;
        Ok(JoinTicket {
            group,
            node_id,
            members: vec![
                self.member(),
                Member {
                    id: node_id,
                    address,
                    role: MemberRole::Learner,
                },
            ],
            leader: Some(self.member()),
        })
    }

    async fn leave(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admit(group, format!("leave {node_id}")).await
    }

    async fn add_learner(
        &self,
        group: u64,
        node_id: NodeId,
        address: String,
    ) -> Result<(), ApiError> {
        self.admit(group, format!("add_learner {node_id} {address}"))
            .await
    }

    async fn promote(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admit(group, format!("promote {node_id}")).await
    }

    async fn remove(&self, group: u64, node_id: NodeId) -> Result<(), ApiError> {
        self.admit(group, format!("remove {node_id}")).await
    }

    async fn transfer_leader(&self, group: u64, target: NodeId) -> Result<(), ApiError> {
        self.admit(group, format!("transfer_leader {target}")).await
    }
}

/// A fake node served over gRPC on a loopback port.
struct Served {
    node: Arc<FakeNode>,
    server: RunningServer,
}

impl Served {
    async fn start(id: NodeId) -> Served {
        Self::start_with(id, |service| service).await
    }

    /// As `start`, with the service adjusted by `adjust` (its limits).
    async fn start_with(
        id: NodeId,
        adjust: impl FnOnce(RaftService<FakeNode>) -> RaftService<FakeNode>,
    ) -> Served {
        let (listener, address) = bind().await;
        let node = Arc::new(FakeNode {
            id,
            address: address.to_string(),
            redirect: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
            clients: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            answered: Mutex::new(std::collections::HashMap::new()),
            forgotten: Mutex::new(std::collections::HashSet::new()),
            lose_replies: Mutex::new(0),
            forget_when_losing: Mutex::new(false),
        });
        let config = TransportConfig::default();
        let (sender, _receiver) = inbox(&config);
        let transport =
            TransportServer::new(id, config, sender, Arc::new(TransportMetrics::default()));
        let service = adjust(RaftService::from_arc(node.clone()));
        let server = RunningServer::spawn(move |stopped| {
            serve(
                listener,
                transport,
                service,
                Default::default(),
                async move {
                    let _ = stopped.await;
                },
            )
        });
        Served { node, server }
    }

    fn address(&self) -> String {
        self.node.address.clone()
    }

    fn redirect_to(&self, other: &Served) {
        *self.node.redirect.lock().unwrap() = Some((other.node.id, Some(other.address())));
    }
}

/// Every call of the client reaches the node with its arguments intact and every
/// answer comes back intact: propose, read in both modes, status, members, join,
/// leave, learners, promotion, removal, leader transfer.
#[tokio::test]
async fn client_round_trips_every_call() {
    let leader = Served::start(1).await;
    let client = within(
        "connect",
        RaftClient::connect_with(leader.address(), single_attempt()),
    )
    .await
    .unwrap();

    let applied = within("propose", client.propose(GROUP, Bytes::from_static(b"abc")))
        .await
        .unwrap();
    assert_eq!(
        applied,
        ProposeResponse {
            response: Bytes::from_static(b"cba"),
            index: 1,
            term: 3
        }
    );
    let read = within(
        "read",
        client.read(GROUP, Bytes::from_static(b"q"), ReadMode::Linearizable),
    )
    .await
    .unwrap();
    assert_eq!(read.response, Bytes::from_static(b"1 entries"));
    within(
        "stale read",
        client.read(GROUP, Bytes::from_static(b"s"), ReadMode::Stale),
    )
    .await
    .unwrap();

    let status = within("status", client.status(GROUP)).await.unwrap();
    assert_eq!(
        (status.node_id, status.role, status.commit, status.applied),
        (1, Role::Leader, 5, 4)
    );
    assert_eq!(status.leader, Some(leader.node.member()));
    let members = within("members", client.members(GROUP)).await.unwrap();
    assert_eq!(members, vec![leader.node.member()]);

    let ticket = within("join", client.request_join(GROUP, 4, "127.0.0.1:7004"))
        .await
        .unwrap();
    assert_eq!(ticket.node_id, 4);
    assert_eq!(ticket.members[1].role, MemberRole::Learner);
    assert_eq!(ticket.leader, Some(leader.node.member()));

    within(
        "add_learner",
        client.add_learner(GROUP, 5, "127.0.0.1:7005"),
    )
    .await
    .unwrap();
    within("promote", client.promote(GROUP, 5)).await.unwrap();
    within("transfer", client.transfer_leader(GROUP, 5))
        .await
        .unwrap();
    within("remove", client.remove(GROUP, 5)).await.unwrap();
    within("leave", client.leave(GROUP, 4)).await.unwrap();

    assert_eq!(
        leader.node.calls(),
        vec![
            "propose b\"abc\"",
            "read b\"q\" Linearizable",
            "read b\"s\" Stale",
            "status",
            "status",
            "request_join 4 127.0.0.1:7004",
            "add_learner 5 127.0.0.1:7005",
            "promote 5",
            "transfer_leader 5",
            "remove 5",
            "leave 4",
        ]
    );
    leader.server.stop().await;
}

/// A client connected to a follower follows its `NotLeader` answer to the leader's
/// address, and sends the group's next calls straight to the leader.
#[tokio::test]
async fn client_follows_not_leader_redirects() {
    let follower = Served::start(1).await;
    let leader = Served::start(2).await;
    follower.redirect_to(&leader);
    let client = within(
        "connect",
        RaftClient::connect_with(follower.address(), single_attempt()),
    )
    .await
    .unwrap();

    let applied = within("propose", client.propose(GROUP, Bytes::from_static(b"x")))
        .await
        .unwrap();
    assert_eq!(applied.index, 1);
    assert_eq!(client.address_for(GROUP), leader.address());
    within(
        "second propose",
        client.propose(GROUP, Bytes::from_static(b"y")),
    )
    .await
    .unwrap();
    assert_eq!(
        follower.node.calls().len(),
        1,
        "the second call went straight to the leader"
    );
    assert_eq!(leader.node.calls().len(), 2);

    // A group the client knows no leader for still starts at the seed address.
    assert_eq!(client.address_for(GROUP + 1), follower.address());
    follower.server.stop().await;
    leader.server.stop().await;
}

/// Two nodes that each name the other as leader cannot trap the client: it gives up
/// after `redirects_max` redirects with the last `NotLeader`.
#[tokio::test]
async fn redirects_are_bounded() {
    let one = Served::start(1).await;
    let two = Served::start(2).await;
    one.redirect_to(&two);
    two.redirect_to(&one);
    let config = ClientConfig {
        redirects_max: 3,
        ..single_attempt()
    };
    let client = within("connect", RaftClient::connect_with(one.address(), config))
        .await
        .unwrap();
    let error = within("propose", client.propose(GROUP, Bytes::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ApiError::NotLeader {
                leader: Some(_),
                address: Some(_)
            }
        ),
        "{error}"
    );
    assert_eq!(
        one.node.calls().len() + two.node.calls().len(),
        4,
        "one call plus three redirects"
    );
    one.server.stop().await;
    two.server.stop().await;
}

/// Errors reach the client as the same `ApiError`: an unknown group, a `NotLeader`
/// without an address (nothing to follow), a request the service refuses before the
/// node sees it, a call that outlives the request timeout, an unreachable node.
#[tokio::test]
async fn errors_reach_the_client_intact() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        request_timeout_ms: 200,
        ..single_attempt()
    };
    let client = within("connect", RaftClient::connect_with(node.address(), config))
        .await
        .unwrap();

    assert_eq!(
        within("unknown group", client.status(99)).await,
        Err(ApiError::GroupNotFound { group: 99 })
    );

    *node.node.redirect.lock().unwrap() = Some((7, None));
    assert_eq!(
        within("no address", client.promote(GROUP, 3)).await,
        Err(ApiError::NotLeader {
            leader: Some(7),
            address: None
        })
    );
    *node.node.redirect.lock().unwrap() = None;

    let calls_before = node.node.calls().len();
    let refused = within("node id 0", client.add_learner(GROUP, 0, "127.0.0.1:1")).await;
    assert!(
        matches!(refused, Err(ApiError::InvalidRequest(_))),
        "{refused:?}"
    );
    let refused = within("no address", client.request_join(GROUP, 4, "")).await;
    assert!(
        matches!(refused, Err(ApiError::InvalidRequest(_))),
        "{refused:?}"
    );
    assert_eq!(
        node.node.calls().len(),
        calls_before,
        "refused before reaching the node"
    );

    let start = Instant::now();
    assert_eq!(
        within("slow call", client.propose(SLOW_GROUP, Bytes::new())).await,
        Err(ApiError::Timeout)
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    let (listener, dead) = bind().await;
    drop(listener);
    let unreachable = within(
        "dead address",
        RaftClient::connect_with(dead.to_string(), single_attempt()),
    )
    .await;
    assert!(matches!(unreachable, Err(ApiError::Unavailable(_))));
    node.server.stop().await;
}

/// Proposes `data` to `group` on a task of its own.
fn spawn_propose(
    client: &RaftClient,
    group: u64,
    data: &'static [u8],
) -> tokio::task::JoinHandle<Result<ProposeResponse, ApiError>> {
    let client = client.clone();
    tokio::spawn(async move { client.propose(group, Bytes::from_static(data)).await })
}

/// A client of `node` with one call slot, already taken by a `ProposeBatch` holding
/// the proposal `slow` (answered after `SLOW_PROPOSAL`): whatever it proposes next
/// queues. Returns the client and the slow proposal's task.
async fn behind_a_slow_call(
    node: &Served,
    config: ClientConfig,
) -> (
    RaftClient,
    tokio::task::JoinHandle<Result<ProposeResponse, ApiError>>,
) {
    let config = ClientConfig {
        propose_batches_in_flight_max: 1,
        ..config
    };
    let client = within("connect", RaftClient::connect_with(node.address(), config))
        .await
        .unwrap();
    let slow = spawn_propose(&client, GROUP, b"slow");
    tokio::time::sleep(SLOW_PROPOSAL / 3).await;
    (client, slow)
}

/// Concurrent proposals through one client travel together: while a `ProposeBatch`
/// call is out (its one slot taken), the others queue and go in the next calls, at
/// most `propose_batch_max` each; every proposal gets its own answer.
#[tokio::test]
async fn concurrent_proposals_share_batch_calls() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        propose_batch_max: 16,
        ..single_attempt()
    };
    let (client, slow) = behind_a_slow_call(&node, config).await;
    let proposals: Vec<_> = (0..40u32)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(
                async move { client.propose(GROUP, Bytes::from(format!("p{n:02}"))).await },
            )
        })
        .collect();
    for (n, proposal) in proposals.into_iter().enumerate() {
        let applied = within("a batched proposal", proposal)
            .await
            .unwrap()
            .unwrap();
        let mut expected = format!("p{n:02}").into_bytes();
        expected.reverse();
        assert_eq!(applied.response, Bytes::from(expected), "proposal {n}");
    }
    within("the slow proposal", slow).await.unwrap().unwrap();
    assert_eq!(*node.node.batches.lock().unwrap(), vec![1, 16, 16, 8]);
    assert_eq!(node.node.log.lock().unwrap().len(), 41);
    node.server.stop().await;
}

/// Each proposal of a batch gets its own outcome: one for an unknown group fails
/// alone, with the same error `Propose` gives, while the others apply.
#[tokio::test]
async fn a_batch_answers_each_proposal_on_its_own() {
    let node = Served::start(1).await;
    let (client, slow) = behind_a_slow_call(&node, single_attempt()).await;
    let good = spawn_propose(&client, GROUP, b"ok");
    let unknown = spawn_propose(&client, 99, b"lost");
    within("slow", slow).await.unwrap().unwrap();
    let good = within("good", good).await.unwrap().unwrap();
    assert_eq!(good.response, Bytes::from_static(b"ko"));
    assert_eq!(
        within("unknown", unknown).await.unwrap(),
        Err(ApiError::GroupNotFound { group: 99 })
    );
    assert_eq!(*node.node.batches.lock().unwrap(), vec![1, 2]);
    node.server.stop().await;
}

/// With `propose_batch_max` 1 the client sends each proposal in its own `Propose`
/// call, and a client config that allows no batch at all is refused.
#[tokio::test]
async fn batching_can_be_turned_off() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        propose_batch_max: 1,
        ..single_attempt()
    };
    let client = within("connect", RaftClient::connect_with(node.address(), config))
        .await
        .unwrap();
    within("propose", client.propose(GROUP, Bytes::from_static(b"one")))
        .await
        .unwrap();
    assert!(node.node.batches.lock().unwrap().is_empty());
    assert_eq!(node.node.calls(), vec!["propose b\"one\""]);

    let config = ClientConfig {
        propose_batch_max: 0,
        ..single_attempt()
    };
    let refused = within("connect", RaftClient::connect_with(node.address(), config)).await;
    assert!(
        matches!(&refused, Err(ApiError::InvalidRequest(reason)) if reason.contains("propose_batch_max")),
        "{:?}",
        refused.err()
    );
    node.server.stop().await;
}

/// A `ProposeBatch` call over the service's `propose_batch_max` is refused whole,
/// with a message naming the limit, before any proposal reaches the node.
#[tokio::test]
async fn an_oversized_batch_is_refused() {
    let served = Served::start_with(1, |service| service.propose_batch_max(4)).await;
    let mut raw = within(
        "connect",
        concord_proto::api::raft_client::RaftClient::connect(format!(
            "http://{}",
            served.address()
        )),
    )
    .await
    .unwrap();
    let proposal = |data: &'static [u8]| concord_proto::api::ProposeRequest {
        group: GROUP,
        data: Bytes::from_static(data),
        request: None,
    };
    let status = within(
        "five proposals",
        raw.propose_batch(concord_proto::api::ProposeBatchRequest {
            proposals: vec![proposal(b"1"); 5],
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("5 proposals") && status.message().contains("at most 4"),
        "{}",
        status.message()
    );
    assert!(served.node.calls().is_empty());
    let answered = within(
        "four proposals",
        raw.propose_batch(concord_proto::api::ProposeBatchRequest {
            proposals: vec![proposal(b"1"); 4],
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(answered.results.len(), 4);
    served.server.stop().await;
}

/// A call stays under `propose_batch_bytes_max`: queued proposals that would pass it
/// wait for the next call, and one bigger than the limit goes alone.
#[tokio::test]
async fn batches_stay_under_their_byte_limit() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        // 40 B of data plus framing: three fit, a fourth does not.
        propose_batch_bytes_max: 200,
        ..single_attempt()
    };
    let (client, slow) = behind_a_slow_call(&node, config).await;
    let mut proposals: Vec<_> = (0..7)
        .map(|_| spawn_propose(&client, GROUP, &[b'x'; 40]))
        .collect();
    proposals.push(spawn_propose(&client, GROUP, &[b'y'; 500]));
    within("slow", slow).await.unwrap().unwrap();
    for proposal in proposals {
        within("a proposal", proposal).await.unwrap().unwrap();
    }
    assert_eq!(*node.node.batches.lock().unwrap(), vec![1, 3, 3, 1, 1]);
    node.server.stop().await;
}

/// A proposal whose caller gave up while it waited for a call slot is never sent:
/// the caller may be retrying it, and it must not apply behind their back.
#[tokio::test]
async fn abandoned_proposals_are_not_sent() {
    let node = Served::start(1).await;
    let (client, slow) = behind_a_slow_call(&node, single_attempt()).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(20),
        client.propose(GROUP, Bytes::from_static(b"abandoned")),
    )
    .await;
    assert!(abandoned.is_err(), "the caller gave up");
    let kept = spawn_propose(&client, GROUP, b"kept");
    within("slow", slow).await.unwrap().unwrap();
    within("kept", kept).await.unwrap().unwrap();
    let log = node.node.log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![Bytes::from_static(b"slow"), Bytes::from_static(b"kept")]
    );
    node.server.stop().await;
}

/// Exactly-once from the client's side. A proposal whose answer is lost is sent
/// again with the same request id until answered, and the group (here a fake keeping
/// first answers) applies it once; the client numbers its requests and acknowledges
/// the ones answered. When the answer never comes, the client says the outcome is
/// unknown, never success.
#[tokio::test]
async fn lost_answers_are_retried_under_one_request_id() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        retry_pause_ms: 10,
        retry_deadline_ms: 2_000,
        ..ClientConfig::default()
    };
    let client = within("connect", RaftClient::connect_with(node.address(), config))
        .await
        .unwrap();
    *node.node.lose_replies.lock().unwrap() = 2;
    let applied = within("propose", client.propose(GROUP, Bytes::from_static(b"ab")))
        .await
        .unwrap();
    assert_eq!((&applied.response[..], applied.index), (&b"ba"[..], 1));
    let second = within("propose", client.propose(GROUP, Bytes::from_static(b"c")))
        .await
        .unwrap();
    assert_eq!(second.index, 2);
    assert_eq!(
        node.node.log.lock().unwrap().clone(),
        vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
        "each proposal applied once"
    );
    let id = |sequence, first_unanswered| RequestId {
        client: 100,
        sequence,
        first_unanswered,
    };
    assert_eq!(
        node.node.requests.lock().unwrap().clone(),
        vec![id(1, 1), id(1, 1), id(1, 1), id(2, 2)]
    );
    assert_eq!(node.node.clients.lock().unwrap().clone(), vec![100]);

    *node.node.lose_replies.lock().unwrap() = u32::MAX;
    let short = ClientConfig {
        retry_pause_ms: 10,
        retry_deadline_ms: 200,
        ..ClientConfig::default()
    };
    let client = within("connect", RaftClient::connect_with(node.address(), short))
        .await
        .unwrap();
    let error = within("propose", client.propose(GROUP, Bytes::from_static(b"d")))
        .await
        .unwrap_err();
    assert!(matches!(error, ApiError::OutcomeUnknown(_)), "{error}");
    assert_eq!(node.node.log.lock().unwrap().len(), 3, "applied once");
    node.server.stop().await;
}

/// A group that forgot the client (its table entry was evicted) refuses the request
/// without applying it. With nothing in doubt the client registers again and the
/// proposal goes through; after an attempt whose outcome is unknown, the client can
/// no longer know whether it applied, and says so.
#[tokio::test]
async fn a_forgotten_client_starts_over_only_when_nothing_is_in_doubt() {
    let node = Served::start(1).await;
    let config = ClientConfig {
        retry_pause_ms: 10,
        retry_deadline_ms: 2_000,
        ..ClientConfig::default()
    };
    let client = within("connect", RaftClient::connect_with(node.address(), config))
        .await
        .unwrap();
    within("first", client.propose(GROUP, Bytes::from_static(b"a")))
        .await
        .unwrap();
    node.node.forgotten.lock().unwrap().insert(100);
    let applied = within(
        "after eviction",
        client.propose(GROUP, Bytes::from_static(b"b")),
    )
    .await
    .unwrap();
    assert_eq!(applied.index, 2);
    assert_eq!(node.node.clients.lock().unwrap().clone(), vec![100, 101]);

    *node.node.lose_replies.lock().unwrap() = 1;
    *node.node.forget_when_losing.lock().unwrap() = true;
    let error = within("in doubt", client.propose(GROUP, Bytes::from_static(b"c")))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ApiError::OutcomeUnknown(reason) if reason.contains("forgot client 101")),
        "{error}"
    );
    assert_eq!(node.node.log.lock().unwrap().len(), 3);
    node.server.stop().await;
}
