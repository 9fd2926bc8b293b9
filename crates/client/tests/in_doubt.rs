//! What a proposal reports when an attempt's outcome is unknown, against a scripted
//! server: once an attempt may have applied, no later refusal is reported as a
//! definite failure, and a gRPC failure without concord's error detail is in doubt.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use concord_client::{ClientConfig, RaftClient};
use concord_proto::api::{self as proto, raft_server};
use concord_proto::convert::{error_to_detail, error_to_status};
use concord_types::ApiError;
use tonic::{Request, Response, Status};

/// What the server does with the next proposal.
enum Step {
    /// Refuses it with a concord error (in the batch's result for it).
    Refuse(ApiError),
    /// Fails the whole call with a gRPC status (as a broken transport does).
    Fail(Status),
    /// Answers that it applied at index 7.
    Apply,
}

/// Answers `RegisterClient` with client 5 and each proposal (alone or in a batch)
/// with the next scripted step; every other call is unimplemented.
#[derive(Clone)]
struct Scripted {
    proposals: Arc<Mutex<VecDeque<Step>>>,
    attempts: Arc<Mutex<usize>>,
}

impl Scripted {
    fn next(&self) -> Step {
        *self.attempts.lock().unwrap() += 1;
        let next = self.proposals.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Step::Fail(Status::internal("the script ran out")))
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn applied() -> proto::ProposeResponse {
    proto::ProposeResponse {
        response: Bytes::from_static(b"done"),
        index: 7,
        term: 2,
    }
}

#[tonic::async_trait]
impl raft_server::Raft for Scripted {
    async fn propose(&self, _: Request<proto::ProposeRequest>) -> Reply<proto::ProposeResponse> {
        Err(match self.next() {
            Step::Refuse(error) => error_to_status(&error),
            Step::Fail(status) => status,
            Step::Apply => return Ok(Response::new(applied())),
        })
    }
    async fn register_client(
        &self,
        _: Request<proto::RegisterClientRequest>,
    ) -> Reply<proto::RegisterClientResponse> {
        Ok(Response::new(proto::RegisterClientResponse {
            client_id: 5,
        }))
    }
    async fn propose_batch(
        &self,
        request: Request<proto::ProposeBatchRequest>,
    ) -> Reply<proto::ProposeBatchResponse> {
        let mut results = Vec::new();
        for _ in &request.get_ref().proposals {
            match self.next() {
                Step::Refuse(error) => results.push(proto::ProposeResult {
                    outcome: Some(proto::propose_result::Outcome::Error(error_to_detail(
                        &error,
                    ))),
                }),
                Step::Fail(status) => return Err(status),
                Step::Apply => results.push(proto::ProposeResult {
                    outcome: Some(proto::propose_result::Outcome::Applied(applied())),
                }),
            }
        }
        Ok(Response::new(proto::ProposeBatchResponse { results }))
    }
    async fn read(&self, _: Request<proto::ReadRequest>) -> Reply<proto::ReadResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn read_batch(
        &self,
        _: Request<proto::ReadBatchRequest>,
    ) -> Reply<proto::ReadBatchResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn status(&self, _: Request<proto::StatusRequest>) -> Reply<proto::StatusResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn members(&self, _: Request<proto::MembersRequest>) -> Reply<proto::MembersResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn request_join(
        &self,
        _: Request<proto::RequestJoinRequest>,
    ) -> Reply<proto::JoinTicket> {
        Err(Status::unimplemented("scripted"))
    }
    async fn leave(&self, _: Request<proto::LeaveRequest>) -> Reply<proto::LeaveResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn add_learner(
        &self,
        _: Request<proto::AddLearnerRequest>,
    ) -> Reply<proto::AddLearnerResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn promote(&self, _: Request<proto::PromoteRequest>) -> Reply<proto::PromoteResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn remove(&self, _: Request<proto::RemoveRequest>) -> Reply<proto::RemoveResponse> {
        Err(Status::unimplemented("scripted"))
    }
    async fn transfer_leader(
        &self,
        _: Request<proto::TransferLeaderRequest>,
    ) -> Reply<proto::TransferLeaderResponse> {
        Err(Status::unimplemented("scripted"))
    }
}

/// Serves `script` on a loopback port; returns a client of it and the attempt count.
async fn client_of(script: Vec<Step>) -> (RaftClient, Arc<Mutex<usize>>) {
    let server = Scripted {
        proposals: Arc::new(Mutex::new(script.into())),
        attempts: Arc::new(Mutex::new(0)),
    };
    let attempts = server.attempts.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(raft_server::RaftServer::new(server))
            .serve_with_incoming(incoming),
    );
    let config = ClientConfig {
        retry_deadline_ms: 5_000,
        retry_pause_ms: 1,
        ..ClientConfig::default()
    };
    (
        RaftClient::connect_with(address, config).await.unwrap(),
        attempts,
    )
}

/// An attempt lost in transport, then a refusal: the first may have applied, so the
/// caller hears the outcome is unknown, not the refusal.
#[tokio::test]
async fn a_refusal_after_an_attempt_in_doubt_is_not_definite() {
    let (client, attempts) = client_of(vec![
        Step::Refuse(ApiError::Unavailable("the connection dropped".into())),
        Step::Refuse(ApiError::InvalidRequest("refused".into())),
    ])
    .await;
    let result = client.propose(1, Bytes::from_static(b"x")).await;
    match result {
        Err(ApiError::OutcomeUnknown(reason)) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*attempts.lock().unwrap(), 2);
}

/// A refusal on the first attempt is definite: nothing applied.
#[tokio::test]
async fn a_refusal_of_the_only_attempt_is_definite() {
    let (client, _) = client_of(vec![Step::Refuse(ApiError::InvalidRequest(
        "refused".into(),
    ))])
    .await;
    let result = client.propose(1, Bytes::from_static(b"x")).await;
    assert!(
        matches!(&result, Err(ApiError::InvalidRequest(reason)) if reason == "refused"),
        "{result:?}"
    );
}

/// A gRPC failure that carries no concord error (here: `internal` made by the
/// transport) says nothing of whether the write applied: the request is retried
/// under its id, and a refusal after it is not definite.
#[tokio::test]
async fn a_grpc_failure_without_concord_detail_is_in_doubt() {
    let (client, attempts) = client_of(vec![
        Step::Fail(Status::internal("h2 protocol error")),
        Step::Apply,
    ])
    .await;
    let result = client.propose(1, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!((result.index, &result.response[..]), (7, &b"done"[..]));
    assert_eq!(*attempts.lock().unwrap(), 2);

    let (client, _) = client_of(vec![
        Step::Fail(Status::internal("h2 protocol error")),
        Step::Refuse(ApiError::InvalidRequest("refused".into())),
    ])
    .await;
    let result = client.propose(1, Bytes::from_static(b"x")).await;
    assert!(
        matches!(&result, Err(ApiError::OutcomeUnknown(_))),
        "{result:?}"
    );
}

/// A call the server does not implement, or refuses to this client, ran nothing: a
/// definite error, not an unknown outcome.
#[tokio::test]
async fn a_call_refused_before_it_ran_is_definite() {
    let (client, _) = client_of(vec![Step::Fail(Status::unimplemented("no such call"))]).await;
    let result = client.propose(1, Bytes::from_static(b"x")).await;
    assert!(
        matches!(&result, Err(ApiError::InvalidRequest(reason)) if reason.contains("Unimplemented")),
        "{result:?}"
    );
}
