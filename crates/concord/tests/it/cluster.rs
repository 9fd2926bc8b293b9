//! Real `concord server` processes on loopback for the tests: ports chosen by the OS
//! (the first node founds the cluster alone on port 0, the others join it), what
//! they print read line by line, and a guard that kills (SIGKILL) and reaps every
//! process when dropped — when a test passes, fails or panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concord_client::service::ServiceClient;
use concord_client::ClientConfig;

/// The binary under test.
pub const CONCORD: &str = env!("CARGO_BIN_EXE_concord");

/// How long a node may take to print a line it is about to print (start, join).
const STARTUP_BOUND: Duration = Duration::from_secs(30);

/// A running (or stopped) `concord server`. Dropping it kills and reaps the process.
pub struct Server {
    /// Its node id.
    pub id: u64,
    /// Where it listens (the address it printed).
    pub address: String,
    /// Where it serves metrics, when it does (the address it printed).
    pub metrics: Option<String>,
    program: String,
    environment: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Server {
    /// Starts `concord server --id ID --data-dir DIR/nID` plus `extra`, listening
    /// on `listen`, and waits until it printed `ready`; returns it and how it became
    /// a member.
    pub fn start(dir: &Path, id: u64, listen: &str, extra: &[String]) -> (Server, String) {
        let environment = vec![("CONCORD_LOG".to_string(), "info".to_string())];
        let mut extra = extra.to_vec();
        extra.extend(["--metrics".to_string(), "127.0.0.1:0".to_string()]);
        Server::start_program(CONCORD, "server", environment, dir, id, listen, &extra)
    }

    /// Starts `program SUBCOMMAND --id ID --data-dir DIR/nID` plus `extra` with
    /// `environment`, listening on `listen` (a server that prints as `concord server`
    /// does: `listening`, how it became a member, `ready`).
    pub fn start_program(
        program: &str,
        subcommand: &str,
        environment: Vec<(String, String)>,
        dir: &Path,
        id: u64,
        listen: &str,
        extra: &[String],
    ) -> (Server, String) {
        let mut args: Vec<String> = vec![
            subcommand.into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.join(format!("{subcommand}-n{id}"))
                .display()
                .to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut server = Server {
            id,
            address: String::new(),
            metrics: None,
            program: program.to_string(),
            environment,
            args,
            child: None,
            lines: mpsc::channel().1,
            log: dir.join(format!("{subcommand}-n{id}.log")),
        };
        let membership = server.spawn(listen);
        (server, membership)
    }

    fn spawn(&mut self, listen: &str) -> String {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node's log");
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .args(["--listen", listen])
            .envs(self.environment.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning the server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.lines = receiver;
        let listening = self.expect_line("listening ");
        self.address = listening["listening ".len()..].to_string();
        let mut membership = self.expect_line("");
        if let Some(metrics) = membership.strip_prefix("metrics ") {
            self.metrics = Some(metrics.to_string());
            membership = self.expect_line("");
        }
        assert_eq!(self.expect_line(""), "ready", "node {}", self.id);
        membership
    }

    /// Waits for the next line printed that starts with `prefix` (skipping others).
    fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(error) => panic!(
                    "node {}: no line starting with {prefix:?} ({error:?}); its log:\n{}",
                    self.id,
                    self.log_tail()
                ),
            }
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit by itself.
    pub fn terminate(&mut self) {
        let child = self.child.as_mut().expect("the node runs");
        // SAFETY: our own child, not yet reaped, so the id is still ours.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + STARTUP_BOUND;
        while child.try_wait().expect("waiting for the node").is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} did not stop on SIGTERM; its log:\n{}",
                self.id,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
    }

    /// Starts the node again on the same address; answers how it became a member.
    pub fn restart(&mut self) -> String {
        assert!(self.child.is_none(), "node {} still runs", self.id);
        let address = self.address.clone();
        self.spawn(&address)
    }

    /// The node's metrics page (`GET /metrics`).
    pub fn metrics_page(&self) -> String {
        use std::io::{Read, Write};
        let address = self.metrics.as_ref().expect("the node serves metrics");
        let mut stream = std::net::TcpStream::connect(address).expect("connecting to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("asking for metrics");
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("reading metrics");
        page
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `size` servers: node 1 founds it alone, the others join through it.
pub struct Cluster {
    /// The servers, node 1 first.
    pub servers: Vec<Server>,
    /// Their data directories' parent, removed with the cluster.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the cluster and waits until every node is ready.
    pub fn start(size: u64) -> Cluster {
        Cluster::start_with(size, "")
    }

    /// Starts the cluster with `config` (TOML) as every node's config file.
    pub fn start_with(size: u64, config: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("server.toml");
        std::fs::write(&file, config).expect("writing the config");
        let with_config = |mut args: Vec<String>| {
            args.extend(["--config".to_string(), file.display().to_string()]);
            args
        };
        let (first, membership) = Server::start(
            dir.path(),
            1,
            "127.0.0.1:0",
            &with_config(vec!["--initial-cluster".into(), "n1=1@127.0.0.1:0".into()]),
        );
        assert_eq!(membership, "founded");
        let join = first.address.clone();
        let mut servers = vec![first];
        for id in 2..=size {
            let (server, membership) = Server::start(
                dir.path(),
                id,
                "127.0.0.1:0",
                &with_config(vec!["--join".into(), join.clone()]),
            );
            assert_eq!(membership, "joined");
            servers.push(server);
        }
        Cluster { servers, _dir: dir }
    }

    /// Every node's address.
    pub fn addresses(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.address.clone()).collect()
    }

    /// A client knowing every node, retrying for up to 30 s.
    pub async fn client(&self) -> ServiceClient {
        ServiceClient::connect(self.addresses(), ClientConfig::default())
            .await
            .expect("connecting to the cluster")
    }
}
