//! `concord server`: one node of a cluster, from start to graceful stop. It runs the
//! `meta` namespace's replica (on the first five nodes) and the namespaces `meta`
//! places on it, serves `concord.v1` (`Tree`, `Namespaces`) and the runtime's `Raft`
//! service on its port, and metrics on `/metrics`.

pub mod api;
pub mod cluster;
pub mod config;

use std::io::Write;
use std::sync::{Arc, OnceLock};

use concord_cli::{Error, Exit};
use concord_node::{Node, NodeError};
use concord_service::factory::ServiceFactory;

use crate::cli::ServerArgs;
use cluster::{Cluster, Membership};
use config::{Founder, ServerConfig};

/// How long `ready` waits for the first comparison with `meta`.
const FIRST_RECONCILE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs a server until SIGTERM or ctrl-c, then stops it gracefully (the data
/// directory stays, so the same command resumes). Prints `listening ADDRESS`,
/// `metrics ADDRESS`, how it became a member, then `ready`.
pub async fn run(args: &ServerArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut stop = Box::pin(
        concord_cli::stop_signal().map_err(|error| Error::failure("handling SIGTERM", error))?,
    );
    let config = server_config(args)?;
    let id = config.node.node_id;
    let data_dir = config.node.data_dir.display().to_string();
    let request_bytes_max = config.node.request_bytes_max as usize;
    // The cluster view is made with the node's handle, before its port accepts calls.
    let made: Arc<OnceLock<Arc<Cluster>>> = Arc::default();
    let node = Node::builder(config.node.clone(), ServiceFactory)
        .services({
            let made = made.clone();
            move |node| {
                let cluster = Arc::new(Cluster::new(node.clone(), config));
                let _ = made.set(cluster.clone());
                api::routes(cluster, request_bytes_max)
            }
        })
        .start()
        .await
        .map_err(|error| {
            let exit = match error {
                NodeError::DataDirInUse { .. } => Exit::DataDirInUse,
                _ => Exit::Failure,
            };
            Error::new(exit, format!("starting node {id} in {data_dir}"), error)
        })?;
    let cluster = made
        .get()
        .cloned()
        .expect("a node with a server makes its services");
    let bound = node
        .local_address()
        .map_or_else(|| node.address().to_string(), |address| address.to_string());
    emit(out, &format!("listening {bound}"))?;
    if let Some(metrics) = node.metrics_address() {
        emit(out, &format!("metrics {metrics}"))?;
    }
    let membership = tokio::select! {
        membership = cluster.become_member() => membership,
        () = &mut stop => {
            node.shutdown().await;
            return Ok(());
        }
    };
    let membership = match membership {
        Ok(membership) => membership,
        Err(error) => {
            node.shutdown().await;
            return Err(Error::failure("starting", error));
        }
    };
    emit(
        out,
        match membership {
            Membership::Founded => "founded",
            Membership::Joined => "joined",
            Membership::Resumed => "resumed",
        },
    )?;
    // The first round now, so `ready` means the namespaces placed here are up, when
    // `meta` answers soon (after a full stop it waits for a majority of its nodes).
    // A task of its own: waiting less than it takes never cuts a round (a group
    // half founded) short.
    let first = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.reconcile().await }
    });
    match tokio::time::timeout(FIRST_RECONCILE_WAIT, first).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::info!(%error, "first reconcile: meta not readable yet"),
        Ok(Err(error)) => tracing::warn!(%error, "first reconcile failed"),
        Err(_) => tracing::info!("first reconcile: meta did not answer yet; carrying on"),
    }
    let reconciler = tokio::spawn(cluster.clone().run_reconciler());
    emit(out, "ready")?;
    stop.await;
    tracing::info!(node = id, "stopping");
    reconciler.abort();
    node.shutdown().await;
    Ok(())
}

/// The config: the file (or the defaults), then the flags.
fn server_config(args: &ServerArgs) -> Result<ServerConfig, Error> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)
            .map_err(|error| Error::new(Exit::Usage, "reading the config", error))?,
        None => ServerConfig::default(),
    };
    if let Some(id) = args.id {
        config.node.node_id = id;
    }
    if let Some(name) = &args.name {
        config.name = name.clone();
    }
    if let Some(data_dir) = &args.data_dir {
        config.node.data_dir = data_dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.node.listen_address = listen.clone();
    }
    if let Some(advertise) = &args.advertise {
        config.node.advertise_address = advertise.clone();
    }
    if let Some(metrics) = &args.metrics {
        config.node.metrics_address = metrics.clone();
    }
    if !args.initial_cluster.is_empty() {
        config.initial_cluster = args
            .initial_cluster
            .iter()
            .map(|text| Founder::parse(text))
            .collect::<Result<_, _>>()
            .map_err(|error| Error::new(Exit::Usage, "reading --initial-cluster", error))?;
    }
    if let Some(join) = &args.join {
        config.join = join.clone();
    }
    config
        .validate()
        .map_err(|error| Error::new(Exit::Usage, "checking the config", error))?;
    Ok(config)
}

/// Writes one line of the server's progress to `out` and flushes it.
fn emit(out: &mut dyn Write, line: &str) -> Result<(), Error> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|error| Error::failure("writing to stdout", error))
}
