//! Batching of concurrent calls to one node: a batcher task per address and kind
//! (proposals, reads) sends whatever is queued as one `ProposeBatch` or `ReadBatch`
//! call, with a bounded number of calls outstanding. A lone request goes at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_proto::api::{self as proto, raft_client::RaftClient as ProtoClient};
use concord_proto::convert;
use concord_types::ApiError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;
use tonic::Request;

/// A kind of call that travels in batches.
pub(crate) trait Kind: Send + Sync + 'static {
    /// One request of a batch.
    type Request: Clone + Send + 'static;
    /// Its answer.
    type Response: Send + 'static;
    /// Bytes it adds to a batch call, counted against `propose_batch_bytes_max`.
    fn bytes(request: &Self::Request) -> usize;
    /// One batch call: one result per request, in order, or why the call failed.
    /// The deadline travels with the call (`grpc-timeout`), so the server stops
    /// waiting too.
    fn call(
        client: ProtoClient<Channel>,
        requests: Vec<Self::Request>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Result<Self::Response, ApiError>>, tonic::Status>> + Send;
}

/// Per address, the queue of its `K` batcher task.
pub(crate) type Batchers<K> = Mutex<HashMap<String, mpsc::UnboundedSender<Queued<K>>>>;

/// A request waiting for its batch.
pub(crate) struct Queued<K: Kind> {
    pub(crate) request: K::Request,
    pub(crate) reply: oneshot::Sender<Result<K::Response, ApiError>>,
}

/// A batcher's bounds.
pub(crate) struct Limits {
    /// Most requests in one call.
    pub(crate) batch_max: usize,
    /// Most bytes of requests in one call (a bigger request goes alone).
    pub(crate) batch_bytes_max: usize,
    /// Most calls outstanding.
    pub(crate) in_flight_max: usize,
    /// How long one call may take.
    pub(crate) timeout: Duration,
}

/// Bytes a proposal adds to a `ProposeBatch` call besides its data (group, tags and
/// lengths).
const PROPOSAL_OVERHEAD_BYTES: usize = 24;
/// Bytes a request id adds to a proposal (three varints and their tags, at most).
const REQUEST_ID_BYTES: usize = 32;
/// Bytes a read adds to a `ReadBatch` call besides its query.
const READ_OVERHEAD_BYTES: usize = 24;

/// Proposals, as `ProposeBatch` calls.
pub(crate) struct Proposals;

impl Kind for Proposals {
    type Request = proto::ProposeRequest;
    type Response = proto::ProposeResponse;

    fn bytes(request: &proto::ProposeRequest) -> usize {
        request.data.len()
            + PROPOSAL_OVERHEAD_BYTES
            + request.request.as_ref().map_or(0, |_| REQUEST_ID_BYTES)
    }

    async fn call(
        mut client: ProtoClient<Channel>,
        proposals: Vec<proto::ProposeRequest>,
        timeout: Duration,
    ) -> Result<Vec<Result<proto::ProposeResponse, ApiError>>, tonic::Status> {
        use proto::propose_result::Outcome;
        let mut request = Request::new(proto::ProposeBatchRequest { proposals });
        request.set_timeout(timeout);
        let results = client.propose_batch(request).await?.into_inner().results;
        Ok(results
            .into_iter()
            .map(|result| match result.outcome {
                Some(Outcome::Applied(response)) => Ok(response),
                Some(Outcome::Error(detail)) => Err(error_of(detail)),
                None => Err(convert::malformed("a result with no outcome".into())),
            })
            .collect())
    }
}

/// Reads, as `ReadBatch` calls.
pub(crate) struct Reads;

impl Kind for Reads {
    type Request = proto::ReadRequest;
    type Response = proto::ReadResponse;

    fn bytes(request: &proto::ReadRequest) -> usize {
        request.query.len() + READ_OVERHEAD_BYTES
    }

    async fn call(
        mut client: ProtoClient<Channel>,
        reads: Vec<proto::ReadRequest>,
        timeout: Duration,
    ) -> Result<Vec<Result<proto::ReadResponse, ApiError>>, tonic::Status> {
        use proto::read_result::Outcome;
        let mut request = Request::new(proto::ReadBatchRequest { reads });
        request.set_timeout(timeout);
        let results = client.read_batch(request).await?.into_inner().results;
        Ok(results
            .into_iter()
            .map(|result| match result.outcome {
                Some(Outcome::Answered(response)) => Ok(response),
                Some(Outcome::Error(detail)) => Err(error_of(detail)),
                None => Err(convert::malformed("a result with no outcome".into())),
            })
            .collect())
    }
}

fn error_of(detail: proto::ErrorDetail) -> ApiError {
    convert::error_from_detail(detail)
        .unwrap_or_else(|| convert::malformed("a result with an empty error".into()))
}

/// Sends the requests queued for one node as batch calls: waits for a request and a
/// free call slot, takes every request queued by then (up to the limits) and sends
/// them in one call. Ends when the client is dropped.
pub(crate) async fn run<K: Kind>(
    client: ProtoClient<Channel>,
    mut queued: mpsc::UnboundedReceiver<Queued<K>>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight_max));
    // A request taken from the queue that did not fit the last batch.
    let mut carried: Option<Queued<K>> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Requests whose caller gave up (timed out, dropped) while they waited for a
        // slot are not sent: the caller may already be retrying them.
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if !item.reply.is_closed() {
                let bytes = K::bytes(&item.request);
                // One call stays under the byte limit; a request over it goes alone.
                if !batch.is_empty() && batch_bytes + bytes > limits.batch_bytes_max {
                    carried = Some(item);
                    break;
                }
                batch_bytes += bytes;
                batch.push(item);
            }
            if batch.len() < limits.batch_max {
                next = queued.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let client = client.clone();
        let timeout = limits.timeout;
        tokio::spawn(async move {
            send::<K>(client, batch, timeout).await;
            drop(slot);
        });
    }
}

/// One batch call; answers every request in `batch`.
async fn send<K: Kind>(client: ProtoClient<Channel>, batch: Vec<Queued<K>>, timeout: Duration) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.request, queued.reply))
        .unzip();
    let count = requests.len();
    let results = match tokio::time::timeout(timeout, K::call(client, requests, timeout)).await {
        Ok(Ok(results)) => results,
        Ok(Err(status)) => {
            let error = convert::error_from_status(&status);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Err(ApiError::Timeout));
            }
            return;
        }
    };
    if results.len() != count {
        let error = convert::malformed(format!(
            "{} results for a batch of {count} requests",
            results.len()
        ));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
        return;
    }
    for (result, reply) in results.into_iter().zip(replies) {
        let _ = reply.send(result);
    }
}
