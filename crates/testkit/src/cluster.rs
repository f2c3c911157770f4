//! A private MQTT cluster of aedes nodes, as `scripts/cluster` runs them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_until, DEADLINE};

/// A private MQTT cluster (issue 14): one Redis and `n` aedes nodes
/// (`mosquitto/cluster/node.mjs`, what `scripts/cluster` runs), each on a
/// free loopback port, the data in a temporary directory. Nodes can be
/// killed and started again; everything is killed and reaped on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Each node's MQTT port.
    pub ports: Vec<u16>,
    pub redis_port: u16,
    nodes: Vec<Option<Child>>,
    redis: Option<Child>,
    /// Each node's stderr, in `dir`: what a failed test shows.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts Redis, then `n` nodes, and waits until every one listens.
    pub fn start(n: usize) -> Cluster {
        let node = cluster_dir().join("node_modules/.pi-mqtt-patched");
        assert!(
            node.exists(),
            "the cluster is not installed ({} missing): run scripts/setup --test",
            node.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let redis_port = free_port();
        let redis = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): scripts/setup --test installs it")
            });
        wait_until("redis-server to listen", DEADLINE, || {
            TcpStream::connect(("127.0.0.1", redis_port)).is_ok()
        });
        let mut c = Cluster {
            ports: (0..n).map(|_| free_port()).collect(),
            redis_port,
            nodes: (0..n).map(|_| None).collect(),
            redis: Some(redis),
            dir,
        };
        for i in 0..n {
            c.resume(i);
        }
        c
    }

    /// Starts node `i` (again), on its port, and waits until it listens.
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].is_some() {
            return;
        }
        let name = Cluster::name(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{name}.log")))
            .unwrap();
        let child = Command::new("node")
            .arg(cluster_dir().join("node.mjs"))
            .args(["--id", &name, "--port", &self.ports[i].to_string()])
            .args(["--redis-port", &self.redis_port.to_string()])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): scripts/setup --test installs it"));
        self.nodes[i] = Some(child);
        let port = self.ports[i];
        wait_until(&format!("node {name} to listen"), DEADLINE, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills node `i` at once (SIGKILL: a crash, or the machine gone).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// "A", "B", …: the node's id in the cluster and in the logs.
    pub fn name(i: usize) -> String {
        char::from(b'A' + i as u8).to_string()
    }

    /// The process ids of the nodes that run (for CPU figures).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|n| n.as_ref().map(Child::id))
            .collect()
    }

    pub fn uri(&self, i: usize) -> String {
        format!("tcp://127.0.0.1:{}", self.ports[i])
    }

    /// `127.0.0.1:P1,127.0.0.1:P2`: every node, for `-h`.
    pub fn host_list(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The flags that point one of our programs at node `i` alone, with
    /// its own Paho state directory, followed by `extra`.
    pub fn node_args(&self, i: usize, state: &Path, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["-h".into(), format!("127.0.0.1:{}", self.ports[i])];
        a.push("--state-dir".into());
        a.push(state.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// The flags that point one of our programs at every node (`-h` with
    /// the list, node A first), with its own Paho state directory,
    /// followed by `extra`.
    pub fn args(&self, state: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = self.node_args(0, state, extra);
        a[1] = self.host_list();
        a
    }

    /// What the nodes logged so far, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let name = Cluster::name(i);
                let path = self.dir.path().join(format!("node-{name}.log"));
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test shows what the nodes said (their logs go with `dir`).
        if std::thread::panicking() {
            eprintln!("cluster nodes' logs:\n{}", self.logs());
        }
        for child in self.nodes.iter_mut().chain([&mut self.redis]) {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The nodes' heartbeat in the tests: a node silent for three of them is
/// taken for dead and its clients' wills are published by the others,
/// checked every four, so a test sees them within seconds (scripts/cluster:
/// 5 s). Long enough that a node slowed down by a busy machine is not taken
/// for dead.
const HEARTBEAT_MS: u64 = 500;

/// `mosquitto/cluster` of this repository.
fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mosquitto/cluster")
}
