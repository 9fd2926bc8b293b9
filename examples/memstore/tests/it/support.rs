//! Real `memstore` processes on loopback for the tests: spawning `serve` with ports
//! chosen by the OS, reading what it prints, running the client commands, and a guard
//! that kills (SIGKILL) and reaps every process it started when dropped — when a test
//! passes, fails or panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const MEMSTORE: &str = env!("CARGO_BIN_EXE_memstore");

/// How long a node may take to print a line it is about to print (start, join).
pub const STARTUP_BOUND: Duration = Duration::from_secs(20);
/// How long one client command may run before the test gives up on it.
pub const COMMAND_BOUND: Duration = Duration::from_secs(20);
/// The `--timeout-ms` every client command gets.
pub const COMMAND_TIMEOUT_MS: &str = "10000";

/// A running (or stopped) `memstore serve`. Dropping it kills and reaps the process.
pub struct Server {
    /// Its node id.
    pub id: u64,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where it listens (the address it printed).
    pub address: String,
    /// Where it serves metrics, when it does.
    pub metrics: Option<String>,
    /// The arguments it was started with, less `--listen` (for restarts).
    args: Vec<String>,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Server {
    /// Starts `memstore serve --id ID --data-dir DIR/nID --listen LISTEN` plus `extra`
    /// (metrics on a port of the OS's choosing), and waits until it printed its
    /// address and `ready`.
    pub fn start(dir: &Path, id: u64, listen: &str, extra: &[&str]) -> Server {
        let data_dir = dir.join(format!("n{id}"));
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let log = dir.join(format!("n{id}.log"));
        let mut server = Server {
            id,
            data_dir,
            address: String::new(),
            metrics: None,
            args,
            child: None,
            lines: mpsc::channel().1,
            log,
        };
        let membership = server.spawn(listen);
        let expected = if extra.contains(&"--bootstrap") {
            "bootstrapped"
        } else {
            "joined "
        };
        assert!(
            membership.starts_with(expected),
            "node {id} printed {membership:?}"
        );
        server
    }

    fn spawn(&mut self, listen: &str) -> String {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node's log");
        let mut child = Command::new(MEMSTORE)
            .args(&self.args)
            .args(["--listen", listen])
            .env("MEMSTORE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning memstore serve");
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
        let metrics = self.expect_line("metrics ");
        self.metrics = Some(metrics["metrics ".len()..].to_string());
        let membership = self.expect_line("");
        assert_eq!(self.expect_line(""), "ready", "node {}", self.id);
        membership
    }

    /// Waits for the next line printed that starts with `prefix` (skipping others).
    pub fn expect_line(&mut self, prefix: &str) -> String {
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

    /// The process id, while it runs.
    #[allow(dead_code)] // The benchmark's.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit by itself.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends SIGINT, as ctrl-c in its terminal would, and waits (bounded) for the
    /// process to exit by itself.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.stop_with(libc::SIGINT)
    }

    fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        let child = self.child.as_mut().expect("the node runs");
        let pid = child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped, so the id is still ours.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "sending signal {signal}"
        );
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the node") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not stop on signal {signal}; its log:\n{}",
                self.id,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again with the same arguments on the same address (its peers
    /// know it there) and waits until it printed `ready`; answers how it became a
    /// member (`resumed`, the line before `ready`).
    pub fn restart(&mut self) -> String {
        assert!(self.child.is_none(), "node {} still runs", self.id);
        let address = self.address.clone();
        self.spawn(&address)
    }

    /// The value of a group metric of group 1, from the node's metrics endpoint.
    pub fn group_metric(&self, name: &str) -> u64 {
        self.metric_where(name, "group=\"1\"") as u64
    }

    /// The value of a node-wide metric (its first sample).
    #[allow(dead_code)] // The benchmark's.
    pub fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, "")
    }

    /// The value of the first sample of `name` whose labels contain `labels`.
    fn metric_where(&self, name: &str, labels: &str) -> f64 {
        let address = self.metrics.as_ref().expect("metrics on");
        let mut stream = TcpStream::connect(address).expect("connecting to metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let prefix = format!("{name}{{");
        response
            .lines()
            .find(|line| line.starts_with(&prefix) && line.contains(labels))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} with {labels:?} in:\n{response}"))
    }

    /// The last lines of the node's log (stderr).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- node {} ({}) log tail ---\n{}",
                self.id,
                self.address,
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// The outcome of one client command.
#[derive(Debug)]
pub struct Output {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Output {
    /// Stdout, asserting the command succeeded.
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        self.stdout
    }
}

/// Runs `memstore ARGS` to completion (killed past [`COMMAND_BOUND`]).
pub fn memstore(args: &[&str]) -> Output {
    let mut child = Command::new(MEMSTORE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning memstore");
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for memstore") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("memstore {args:?} ran past {COMMAND_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `memstore COMMAND --peer PEER --timeout-ms T ARGS`.
pub fn client(command: &str, peer: &str, args: &[&str]) -> Output {
    let mut all = vec![command, "--peer", peer, "--timeout-ms", COMMAND_TIMEOUT_MS];
    all.extend_from_slice(args);
    memstore(&all)
}

/// `memstore status` of `peer` as `field -> value` (`member` lines under
/// `member <id>`).
pub fn status(peer: &str) -> BTreeMap<String, String> {
    client("status", peer, &[])
        .ok()
        .lines()
        .filter_map(|line| {
            let (field, value) = line.split_once(' ')?;
            if field == "member" {
                let (id, rest) = value.split_once(' ')?;
                Some((format!("member {id}"), rest.to_string()))
            } else {
                Some((field.to_string(), value.to_string()))
            }
        })
        .collect()
}

/// The voters' ids as `memstore members` through `peer` prints them.
pub fn voters(peer: &str) -> Vec<u64> {
    client("members", peer, &[])
        .ok()
        .lines()
        .filter(|line| line.split(' ').nth(1) == Some("voter"))
        .map(|line| line.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Polls `condition` every 50 ms until it holds; panics with `what` past `bound`.
pub fn eventually(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A temporary directory for a test's nodes (removed on drop, after the nodes).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("memstore-test-")
        .tempdir()
        .expect("a temporary directory")
}
