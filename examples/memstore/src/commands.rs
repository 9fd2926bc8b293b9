//! The client commands: each connects to one node with [`RaftClient`] and makes one
//! call (a write goes to the leader, following the node's redirect).

use std::io::Write;
use std::time::Duration;

use concord_node::client::{ClientConfig, RaftClient};
use concord_node::{ApiError, LogEntry, MemberRole, ReadMode, DEFAULT_GROUP};
use concord_raft::Role;
use tokio::time::Instant;

use crate::cli::{GetArgs, KeyArgs, ListArgs, NodeArgs, PeerArgs, PutArgs};
use crate::output::emit;
use crate::store::{Command, Previous, Query, QueryResponse};
use crate::{Error, Exit};

/// Longest one attempt of a call may take: the node it went to may have died, and the
/// client then tries another.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts while the cluster cannot answer yet.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A client of the cluster through the addresses of `peer` (comma-separated), whose
/// attempts last at most [`ATTEMPT_TIMEOUT`] and whose calls are retried until
/// `--timeout-ms`: writes under one request id, so a retry never applies twice; and
/// the deadline of the whole command.
async fn connect(peer: &PeerArgs) -> Result<(RaftClient, Instant), Error> {
    let deadline = Instant::now() + Duration::from_millis(peer.timeout_ms);
    let attempt_timeout_ms = (ATTEMPT_TIMEOUT.as_millis() as u64).min(peer.timeout_ms);
    let config = ClientConfig {
        connect_timeout_ms: attempt_timeout_ms.min(ClientConfig::default().connect_timeout_ms),
        request_timeout_ms: attempt_timeout_ms,
        retry_deadline_ms: peer.timeout_ms,
        retry_pause_ms: RETRY_PAUSE.as_millis() as u64,
        ..ClientConfig::default()
    };
    let addresses: Vec<String> = peer
        .peer
        .split(',')
        .map(|address| address.trim().to_string())
        .filter(|address| !address.is_empty())
        .collect();
    let client = RaftClient::connect_many(addresses, config)
        .await
        .map_err(|error| Error::failure(format!("connecting to {}", peer.peer), error))?;
    Ok((client, deadline))
}

/// Calls `attempt` until it succeeds, fails in a way `retry` does not accept, or
/// `deadline` passes.
async fn retry_while<T, F, Fut>(
    deadline: Instant,
    retry: impl Fn(&ApiError) -> bool,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    loop {
        match attempt().await {
            Err(error) if retry(&error) && Instant::now() + RETRY_PAUSE < deadline => {
                tracing::debug!(%error, "retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Proposes `command`. The client retries it under one request id while the cluster
/// elects a leader or a node dies, so it applies once; when the client cannot learn
/// whether it applied, the command exits with [`Exit::OutcomeUnknown`].
async fn propose(
    peer: &PeerArgs,
    command: Command,
    what: String,
) -> Result<(u64, Previous), Error> {
    let (client, _) = connect(peer).await?;
    let applied = client
        .propose(DEFAULT_GROUP, command.encode())
        .await
        .map_err(|error| {
            let exit = if error.outcome_unknown() {
                Exit::OutcomeUnknown
            } else {
                Exit::Failure
            };
            Error::new(exit, what.clone(), error)
        })?;
    let previous = Previous::decode(&applied.response)
        .map_err(|error| Error::failure(what, format!("the response: {error}")))?;
    Ok((applied.index, previous))
}

/// Runs `query`, linearizable or stale; the client retries it while the cluster
/// cannot answer (a read changes nothing).
async fn read(
    peer: &PeerArgs,
    query: Query,
    stale: bool,
    what: &str,
) -> Result<QueryResponse, Error> {
    let (client, _) = connect(peer).await?;
    let mode = if stale {
        ReadMode::Stale
    } else {
        ReadMode::Linearizable
    };
    let answer = client
        .read(DEFAULT_GROUP, query.encode(), mode)
        .await
        .map_err(|error| Error::failure(what, error))?;
    QueryResponse::decode(&answer.response)
        .map_err(|error| Error::failure(what, format!("the response: {error}")))
}

/// `memstore put`.
pub async fn put(args: PutArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("putting {:?} through {}", args.key, args.peer.peer);
    let command = Command::Put {
        key: args.key,
        value: args.value,
    };
    let (index, _) = propose(&args.peer, command, what).await?;
    emit(out, &format!("ok index {index}"))
}

/// `memstore delete`.
pub async fn delete(args: KeyArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("deleting {:?} through {}", args.key, args.peer.peer);
    let command = Command::Delete { key: args.key };
    let (index, Previous(previous)) = propose(&args.peer, command, what).await?;
    let outcome = if previous.is_some() {
        "deleted"
    } else {
        "not set"
    };
    emit(out, &format!("ok index {index} ({outcome})"))
}

/// `memstore get`: prints the value; a key that is not set exits with
/// [`Exit::NotFound`].
pub async fn get(args: GetArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("getting {:?} from {}", args.key, args.peer.peer);
    let query = Query::Get {
        key: args.key.clone(),
    };
    match read(&args.peer, query, args.stale, &what).await? {
        QueryResponse::Value(Some(value)) => emit(out, &value),
        QueryResponse::Value(None) => Err(Error::new(Exit::NotFound, what, "no such key")),
        QueryResponse::Entries(_) => Err(Error::failure(what, "the node answered a list")),
    }
}

/// `memstore list`: `key<TAB>value` lines in key order.
pub async fn list(args: ListArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("listing through {}", args.peer.peer);
    let query = Query::List {
        prefix: args.prefix,
        limit: args.limit,
    };
    match read(&args.peer, query, args.stale, &what).await? {
        QueryResponse::Entries(entries) => {
            for (key, value) in entries {
                emit(out, &format!("{key}\t{value}"))?;
            }
            Ok(())
        }
        QueryResponse::Value(_) => Err(Error::failure(what, "the node answered a value")),
    }
}

/// `memstore status`: `field value` lines, one `member` line per member.
pub async fn status(args: PeerArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("asking {} for its status", args.peer);
    let (client, _) = connect(&args).await?;
    let status = client
        .status(DEFAULT_GROUP)
        .await
        .map_err(|error| Error::failure(what, error))?;
    let role = match status.role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    };
    let leader = status.leader.map_or_else(
        || "none".to_string(),
        |leader| format!("{} {}", leader.id, leader.address),
    );
    emit(out, &format!("node {}", status.node_id))?;
    emit(out, &format!("role {role}"))?;
    emit(out, &format!("term {}", status.term))?;
    emit(out, &format!("leader {leader}"))?;
    emit(out, &format!("commit {}", status.commit))?;
    emit(out, &format!("applied {}", status.applied))?;
    for member in status.members {
        emit(out, &format!("member {}", member_line(&member)))?;
    }
    Ok(())
}

/// `memstore members`: `id role address` lines.
pub async fn members(args: PeerArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("asking {} for the members", args.peer);
    let (client, _) = connect(&args).await?;
    let members = client
        .members(DEFAULT_GROUP)
        .await
        .map_err(|error| Error::failure(what, error))?;
    for member in members {
        emit(out, &member_line(&member))?;
    }
    Ok(())
}

fn member_line(member: &concord_node::Member) -> String {
    let role = match member.role {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    };
    format!("{} {role} {}", member.id, member.address)
}

/// `memstore remove`.
pub async fn remove(args: NodeArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!("removing node {} through {}", args.id, args.peer.peer);
    let (client, deadline) = connect(&args.peer).await?;
    retry_while(deadline, ApiError::is_retryable, || {
        client.remove(DEFAULT_GROUP, args.id)
    })
    .await
    .map_err(|error| Error::failure(what, error))?;
    emit(out, &format!("removed node {}", args.id))
}

/// `memstore transfer`.
pub async fn transfer(args: NodeArgs, out: &mut dyn Write) -> Result<(), Error> {
    let what = format!(
        "making node {} the leader through {}",
        args.id, args.peer.peer
    );
    let (client, deadline) = connect(&args.peer).await?;
    retry_while(deadline, ApiError::is_retryable, || {
        client.transfer_leader(DEFAULT_GROUP, args.id)
    })
    .await
    .map_err(|error| Error::failure(what, error))?;
    emit(out, &format!("node {} leads", args.id))
}
