//! `memstore serve`: one node of the cluster, from start to graceful stop.

use std::io::Write;
use std::time::Duration;

use concord_node::{
    FaultHooks, GroupSpec, Node, NodeConfig, NodeError, NodeHandle, Typed, DEFAULT_GROUP,
};
use tokio::time::Instant;

use crate::cli::ServeArgs;
use crate::output::emit;
use crate::store::Store;
use crate::{Error, Exit};

/// The prefix of the environment variables that override the config file
/// (`MEMSTORE_SNAPSHOT_INTERVAL_ENTRIES=64`).
pub const ENV_PREFIX: &str = "MEMSTORE";

/// The kind of memstore's group (kept in its snapshots).
pub const KIND: &str = "memstore";

/// How the node became a member this time.
enum Membership {
    Bootstrapped,
    Joined(String),
    Resumed,
}

/// Runs a node until SIGTERM or ctrl-c, then stops it gracefully (the data directory
/// stays, so the same command resumes).
pub async fn serve(args: ServeArgs, out: &mut dyn Write) -> Result<(), Error> {
    // Handle the signals from now on, so one that comes while the node starts or joins
    // stops it gracefully too.
    let mut stop = Box::pin(
        concord_cli::stop_signal().map_err(|error| Error::failure("handling SIGTERM", error))?,
    );
    let config = node_config(&args)?;
    let id = config.node_id;
    let data_dir = config.data_dir.display().to_string();
    let hooks = FaultHooks {
        lose_replies: args.fault_lose_replies.into(),
        lost_reply_delay_ms: args.fault_lost_reply_delay_ms,
    };
    let node = Node::builder(config, |_group| Typed(Store::default()))
        .fault_hooks(std::sync::Arc::new(hooks))
        .start()
        .await
        .map_err(|error| {
            let exit = match error {
                NodeError::DataDirInUse { .. } => Exit::DataDirInUse,
                _ => Exit::Failure,
            };
            Error::new(exit, format!("starting node {id} in {data_dir}"), error)
        })?;
    let bound = node
        .local_address()
        .map_or_else(|| node.address().to_string(), |address| address.to_string());
    emit(out, &format!("listening {bound}"))?;
    if let Some(metrics) = node.metrics_address() {
        emit(out, &format!("metrics {metrics}"))?;
    }

    let membership = tokio::select! {
        membership = become_member(&node, &args) => membership,
        () = &mut stop => {
            node.shutdown().await;
            return Ok(());
        }
    };
    let membership = match membership {
        Ok(membership) => membership,
        Err(error) => {
            node.shutdown().await;
            return Err(error);
        }
    };
    match membership {
        Membership::Bootstrapped => emit(out, "bootstrapped")?,
        Membership::Joined(peer) => emit(out, &format!("joined {peer}"))?,
        Membership::Resumed => emit(out, "resumed")?,
    }
    emit(out, "ready")?;

    stop.await;
    tracing::info!(node = id, "stopping");
    node.shutdown().await;
    Ok(())
}

/// The node's config: the file (or the defaults), then the environment, then flags.
fn node_config(args: &ServeArgs) -> Result<NodeConfig, Error> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)
            .map_err(|error| Error::failure("reading the config", error))?,
        None => NodeConfig::default(),
    };
    config
        .apply_env(ENV_PREFIX)
        .map_err(|error| Error::new(Exit::Usage, "reading the environment", error))?;
    if let Some(id) = args.id {
        config.node_id = id;
    }
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen_address = listen.clone();
    }
    if let Some(advertise) = &args.advertise {
        config.advertise_address = advertise.clone();
    }
    if let Some(metrics) = &args.metrics {
        config.metrics_address = metrics.clone();
    }
    config
        .validate()
        .map_err(|error| Error::new(Exit::Usage, "checking the config", error))?;
    Ok(config)
}

/// Resumes the cluster in the data directory, or founds one, or joins one.
async fn become_member(node: &NodeHandle, args: &ServeArgs) -> Result<Membership, Error> {
    if node.groups().contains(&DEFAULT_GROUP) {
        if args.bootstrap || args.join.is_some() {
            tracing::info!(
                "the data directory holds the cluster already: resuming (--bootstrap and --join ignored)"
            );
        }
        return Ok(Membership::Resumed);
    }
    if args.bootstrap {
        node.bootstrap_group(DEFAULT_GROUP, GroupSpec::new(KIND), &[])
            .await
            .map_err(|error| Error::failure("bootstrapping a new cluster", error))?;
        return Ok(Membership::Bootstrapped);
    }
    let Some(peer) = &args.join else {
        return Err(Error::new(
            Exit::Usage,
            "starting",
            format!(
                "{} holds no cluster: give --bootstrap to found one or --join PEER_ADDR to join one",
                node.config().data_dir.display()
            ),
        ));
    };
    let what = format!("joining the cluster through {peer}");
    let deadline = Instant::now() + Duration::from_millis(node.config().admin_timeout_ms);
    let ticket = concord_node::retry_until(deadline, || node.request_join(peer, DEFAULT_GROUP))
        .await
        .map_err(|error| Error::failure(what.clone(), error))?;
    node.join(ticket)
        .await
        .map_err(|error| Error::failure(what, error))?;
    Ok(Membership::Joined(peer.clone()))
}
