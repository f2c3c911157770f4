//! Test support shared by every crate's integration tests and the
//! benchmarks (a dev-only crate, never published or shipped): a private
//! Mosquitto on a free loopback port with its own data directory, a Paho
//! client to publish and watch, and a handle on a running binary whose
//! stdout and stderr lines can be waited for with a deadline.
//!
//! Nothing here sleeps for a fixed time to "let things settle": every wait is
//! for a condition, with a deadline that fails the test with what was seen.
//!
//! `PIMQTT_MOSQUITTO` names the Mosquitto binary to run (default: the
//! `mosquitto` on `PATH`), to test against another build of the broker.
//! `PIMQTT_TARGET_BIN_DIR` and `PIMQTT_TARGET_RUNNER` run the programs
//! under test from another build, as the ARM builds under qemu-user
//! ([`Proc::spawn`]).

#![allow(clippy::unwrap_used)] // test support: a failed setup should fail the test loudly

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;

/// The default deadline for a wait; generous for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Asks the OS for a free loopback port, never one this process was given
/// before: a broker stopped for a restart leaves its port free for a while,
/// and a test running beside it must not start its own broker there.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether process `pid` itself listens on loopback `port` (Linux's /proc):
/// a port that merely accepts connections may be another program's.
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // local address, state (0A: listening), inode
            (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
                .then(|| cols.get(9).map(|s| format!("socket:[{s}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// A Mosquitto of the test's own: killed and reaped on drop, data deleted.
#[derive(Debug)]
pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts Mosquitto with persistence and the queue limits and autosave
    /// of mosquitto/pi-mqtt.conf (the reasons are there): a durable backlog
    /// is not cut at the default 1000, and never `max_queued_messages 0`,
    /// which Mosquitto 2.0.16 and 2.0.21 mishandle.
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// Same, with extra configuration lines.
    pub fn start_with(extra: &str) -> Broker {
        Broker::start_conf(&format!(
            "listener @PORT@ 127.0.0.1\nallow_anonymous true\npersistence true\n\
             autosave_interval 10\nmax_queued_messages 1000000\n\
             max_queued_bytes 104857600\nset_tcp_nodelay true\n{extra}"
        ))
    }

    /// Starts Mosquitto from a whole configuration of the test's own, such
    /// as a project file (mosquitto/secure.conf) with its placeholders filled
    /// in. `@PORT@` becomes a free port: the one waited for, and `.port`.
    /// Persistence and logging are set as in [`Broker::start_with`].
    pub fn start_conf(text: &str) -> Broker {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut text = text.replace("@PORT@", &port.to_string());
        text.push_str(&format!(
            "\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            data.display()
        ));
        // Started as root, Mosquitto switches to the `mosquitto` user, which
        // cannot read a test's private files (keys, password file).
        if std::fs::metadata(dir.path()).unwrap().uid() == 0 {
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).unwrap();
        let mut b = Broker {
            port,
            dir,
            conf,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let bin = mosquitto_bin();
        static VERSION: std::sync::Once = std::sync::Once::new();
        VERSION.call_once(|| eprintln!("testing: {}", mosquitto_version(&bin)));
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}): scripts/setup --test installs Mosquitto")
            });
        let pid = child.id();
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", DEADLINE, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mosquitto ended ({status}) instead of listening on port {port}: taken?");
            }
            listens(pid, port)
        });
    }

    /// Stops it the way a service manager does (SIGTERM: persistence is
    /// saved) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if !poll(DEADLINE, || child.try_wait().ok().flatten().is_some()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Starts it again after a [`stop`](Broker::stop), on the same port
    /// with the same data.
    pub fn resume(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn host_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }

    /// The flags that point one of our programs at this broker with its
    /// own Paho state directory, followed by `extra`.
    pub fn args(&self, state: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = self.host_args();
        a.push("--state-dir".into());
        a.push(state.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Runs the program `exe` against this broker: [`Broker::args`] with
    /// `state` and `extra`.
    pub fn run(&self, exe: impl AsRef<Path>, state: &Path, extra: &[&str]) -> Proc {
        Proc::spawn(exe, &self.args(state, extra))
    }

    /// A peer called `watcher`, subscribed to `filters`.
    pub fn watcher(&self, filters: &[&str]) -> Peer {
        Peer::watching(self, "watcher", filters)
    }

    /// The running Mosquitto's process id (it changes with `restart`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

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

/// Another package's binary (tank-sensor, pump-sim), which cargo does not
/// build for this package's tests: built once per test process (a no-op
/// when `cargo test --workspace` already has) and found beside the test,
/// in the same profile. Called through [`sibling!`], which fills in the
/// calling package's cargo and manifest directory.
pub fn sibling_of(cargo: &str, manifest_dir: &str, name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", name])
            .current_dir(manifest_dir);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let ok = cmd.status().is_ok_and(|s| s.success());
        assert!(ok, "cannot build {name}");
        built.push(name.to_string());
    }
    dir.join(name)
}

/// [`sibling_of`] for the calling package: `sibling!("pump-sim")`.
#[macro_export]
macro_rules! sibling {
    ($name:expr) => {
        $crate::sibling_of(env!("CARGO"), env!("CARGO_MANIFEST_DIR"), $name)
    };
}

/// Issue 11: a program's `--help` lists its own flags (`own` is one of
/// them) before the broker flags it shares with the others.
pub fn assert_own_flags_first(mut cmd: clap::Command, own: &str) {
    let help = cmd.render_long_help().to_string();
    let own_at = help
        .find(own)
        .unwrap_or_else(|| panic!("{own} in help:\n{help}"));
    let host_at = help
        .find("--host")
        .unwrap_or_else(|| panic!("--host in help:\n{help}"));
    assert!(
        own_at < host_at,
        "own flags before the broker flags:\n{help}"
    );
}

/// The Mosquitto that [`Broker`] runs: `$PIMQTT_MOSQUITTO` (a command or a
/// path, such as the 2.0.21 that `scripts/setup --test` unpacks; scripts/test
/// runs the tests once more with it), else `mosquitto`.
pub fn mosquitto_bin() -> String {
    std::env::var("PIMQTT_MOSQUITTO")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "mosquitto".into())
}

/// "mosquitto version 2.0.11 (path)" from `BIN -h`, for the test log.
pub fn mosquitto_version(bin: &str) -> String {
    let out = Command::new(bin).arg("-h").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let line = text.unwrap_or_default();
    let first = line.lines().next().unwrap_or("mosquitto version unknown");
    format!("{first} ({bin})")
}

/// Sends a signal by name with kill(1): tests need SIGINT/SIGTERM, which std
/// cannot send.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `cond` every 10 ms until it holds (true) or `limit` passes (false).
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds, or panics naming `what`.
pub fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(poll(limit, cond), "timed out waiting for {what}");
}

/// A plain Paho client for the test's side of the conversation.
pub struct Peer {
    pub client: mqtt::Client,
    rx: mqtt::SyncReceiver<Option<mqtt::Message>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peer")
    }
}

impl Peer {
    /// A peer on `broker` with a clean session.
    pub fn connect(broker: &Broker, id: &str) -> Peer {
        let opts = mqtt::ConnectOptionsBuilder::new_v3()
            .clean_session(true)
            .finalize();
        Peer::connect_with(&broker.uri(), id, opts).unwrap()
    }

    /// A peer that logs in at `uri` with `opts` (TLS, user name,
    /// password); a refusal is returned, for tests of refused logins.
    pub fn connect_with(
        uri: &str,
        id: &str,
        opts: mqtt::ConnectOptions,
    ) -> Result<Peer, mqtt::Error> {
        let create = mqtt::CreateOptionsBuilder::new_v3()
            .server_uri(uri)
            .client_id(id)
            .persistence(None)
            .finalize();
        let mut client = mqtt::Client::new(create)?;
        client.set_timeout(Duration::from_secs(10));
        let rx = client.start_consuming();
        if let Err(e) = client.connect(opts) {
            // Paho's callback thread may still hold a reference to a client
            // whose connect just failed; if its drop there is the last one,
            // MQTTAsync_destroy takes Paho's global lock inside a callback that
            // already holds it, and every client in the process hangs. A test
            // can afford to leak the refused client instead.
            std::mem::forget(client);
            return Err(e);
        }
        Ok(Peer { client, rx })
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: i32, retained: bool) {
        let msg = mqtt::MessageBuilder::new()
            .topic(topic)
            .payload(payload.into())
            .qos(qos)
            .retained(retained)
            .finalize();
        self.client.publish(msg).unwrap();
    }

    pub fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, 2).unwrap();
    }

    /// A peer with a clean session at `uri` (a node of a [`Cluster`]).
    pub fn at(uri: &str, id: &str) -> Peer {
        let opts = mqtt::ConnectOptionsBuilder::new_v3()
            .clean_session(true)
            .finalize();
        Peer::connect_with(uri, id, opts).unwrap()
    }

    /// A peer already subscribed to `filters`.
    pub fn watching(broker: &Broker, id: &str, filters: &[&str]) -> Peer {
        let p = Peer::connect(broker, id);
        for f in filters {
            p.subscribe(f);
        }
        p
    }

    /// The one receive loop: hands each message to `f` until `f` returns
    /// something, or gives up (None) once `limit` passes. Paho's "connection
    /// lost" markers (`None` messages) are skipped.
    pub fn watch<T>(
        &self,
        limit: Duration,
        mut f: impl FnMut(mqtt::Message) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(msg) = self.rx.recv_timeout(left) else {
                return None;
            };
            if let Some(out) = msg.and_then(&mut f) {
                return Some(out);
            }
        }
    }

    /// Waits until every one of `topics` has carried `payload`, in any
    /// order (a fleet connects several devices at once).
    pub fn expect_all(&self, topics: &[String], payload: &str) {
        let mut missing: std::collections::HashSet<&str> =
            topics.iter().map(String::as_str).collect();
        if missing.is_empty() {
            return;
        }
        let found = self.watch(DEADLINE, |m| {
            if m.payload_str() == payload {
                missing.remove(m.topic());
            }
            missing.is_empty().then_some(())
        });
        if found.is_none() {
            panic!("no {payload:?} within {DEADLINE:?} on {missing:?}");
        }
    }

    /// The next message, or panics after `limit`.
    pub fn recv(&self, limit: Duration) -> mqtt::Message {
        self.watch(limit, Some)
            .unwrap_or_else(|| panic!("no message within {limit:?}"))
    }

    /// Waits for a message on `topic` whose payload is `payload`.
    pub fn expect(&self, topic: &str, payload: &str) -> mqtt::Message {
        let mut seen = Vec::new();
        let found = self.watch(DEADLINE, |m| {
            if m.topic() == topic && m.payload_str() == payload {
                return Some(m);
            }
            seen.push(format!("{} {}", m.topic(), m.payload_str()));
            None
        });
        found.unwrap_or_else(|| panic!("no {topic} {payload:?} within {DEADLINE:?}; saw {seen:?}"))
    }

    /// Whatever arrives within `window`: for asserting that nothing does.
    pub fn drain(&self, window: Duration) -> Vec<mqtt::Message> {
        let mut out = Vec::new();
        let _ = self.watch(window, |m| -> Option<()> {
            out.push(m);
            None
        });
        out
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The command that runs `exe`: `exe` itself, or, for the ARM builds under
/// emulation (scripts/test.d/60-arm), the binary of the same name in
/// `$PIMQTT_TARGET_BIN_DIR` run by `$PIMQTT_TARGET_RUNNER` (a command and
/// its arguments, split on spaces, as `qemu-aarch64 -L SYSROOT`). A binary
/// missing from that directory is a setup error, not a silent fallback.
fn target_command(exe: &Path) -> Command {
    let Some(dir) = std::env::var_os("PIMQTT_TARGET_BIN_DIR") else {
        return Command::new(exe);
    };
    let name = exe.file_name().unwrap();
    let target = Path::new(&dir).join(name);
    assert!(
        target.is_file(),
        "PIMQTT_TARGET_BIN_DIR has no {}",
        target.display()
    );
    let runner = std::env::var("PIMQTT_TARGET_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut cmd = Command::new(prog);
            cmd.args(words).arg(target);
            cmd
        }
        None => Command::new(target),
    }
}

/// A running binary; killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    lines: Receiver<(Stream, String)>,
    /// Every line seen so far, for assertions and failure messages.
    pub seen: Arc<Mutex<Vec<(Stream, String)>>>,
    stdin: Option<std::process::ChildStdin>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// The MQTT version the programs under test speak: `PIMQTT_PROTOCOL=5`
/// (or `mqttv5`) runs every test on MQTT 5, unchanged (scripts/test's third
/// pass), anything else or nothing on 3.1.1. Peers stay on 3.1.1: the
/// programs must work with whatever the other clients of a broker speak.
pub fn protocol_5() -> bool {
    matches!(
        std::env::var("PIMQTT_PROTOCOL").as_deref(),
        Ok("5" | "mqttv5")
    )
}

/// `args` with `-V 5` in front when `v5` ([`protocol_5`]) and `exe` is one of
/// our programs, unless the test chose a version itself or only asks
/// for `--help`/`--version`.
fn with_protocol(exe: &Path, args: &[String], v5: bool) -> Vec<String> {
    const OURS: [&str; 5] = [
        "led-client",
        "tank-sensor",
        "pump-sim",
        "controller",
        "will-demo",
    ];
    let ours = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| OURS.contains(&n));
    let chosen = args.iter().any(|a| {
        a == "-V" || a.starts_with("--protocol-version") || a == "--help" || a == "--version"
    });
    let mut out = Vec::new();
    if ours && !chosen && v5 {
        out.extend(["-V".to_string(), "5".to_string()]);
    }
    out.extend(args.iter().cloned());
    out
}

impl Proc {
    /// Runs `exe` with `args`; stdin is piped so tests can feed it.
    pub fn spawn(exe: impl AsRef<Path>, args: &[String]) -> Proc {
        Proc::spawn_env(exe, args, &[])
    }

    pub fn spawn_env(exe: impl AsRef<Path>, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut cmd = target_command(exe.as_ref());
        cmd.args(with_protocol(exe.as_ref(), args, protocol_5()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("MQTT_HOST")
            .env_remove("MQTT_PORT")
            .env_remove("MQTT_USERNAME")
            .env_remove("MQTT_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut readers = Vec::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, reader) in [
            (
                Stream::Stdout,
                Box::new(out) as Box<dyn std::io::Read + Send>,
            ),
            (Stream::Stderr, Box::new(err)),
        ] {
            let tx = tx.clone();
            let seen = seen.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    seen.lock().unwrap().push((stream, line.clone()));
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            }));
        }
        let stdin = child.stdin.take();
        Proc {
            child,
            lines,
            seen,
            stdin,
            readers,
        }
    }

    /// Waits for a line on `stream` matching `pred`; returns it.
    pub fn wait_line(
        &self,
        stream: Stream,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, line)) if s == stream && pred(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no matching {stream:?} line within {limit:?}; seen: {:#?}",
                    self.seen.lock().unwrap()
                ),
            }
        }
    }

    pub fn wait_stdout(&self, line: &str) {
        self.wait_line(Stream::Stdout, DEADLINE, |l| l == line);
    }

    pub fn wait_stderr(&self, part: &str) -> String {
        self.wait_line(Stream::Stderr, DEADLINE, |l| l.contains(part))
    }

    /// Every line seen so far on `stream`.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Every stdout line seen so far.
    pub fn stdout(&self) -> Vec<String> {
        self.lines(Stream::Stdout)
    }

    /// Every stderr line seen so far.
    /// The stderr lines containing `text`, once there are at least `n` (or
    /// at the deadline): lines written before one on stdout may still be on
    /// their way, since each pipe has its own reader thread.
    pub fn stderr_with(&self, text: &str, n: usize) -> Vec<String> {
        let read = || -> Vec<String> {
            self.stderr()
                .into_iter()
                .filter(|l| l.contains(text))
                .collect()
        };
        poll(DEADLINE, || read().len() >= n);
        read()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines(Stream::Stderr)
    }

    pub fn write_stdin(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the exit and returns its code (None: killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut status = None;
        let child = &mut self.child;
        let exited = poll(limit, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "process did not exit within {limit:?}; seen: {:#?}",
            self.seen.lock().unwrap()
        );
        // The pipes close with the process: collect the last lines.
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status.and_then(|s| s.code())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a fault test found when it compared what a program applied with
/// what was sent, both in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Sent but never applied.
    pub lost: usize,
    /// Applied again right after itself (a crash repeats the message being
    /// applied).
    pub duplicated: usize,
    /// Applied again later, after others (only a sequence of unique values
    /// tells these from losses: a broker re-sending old messages).
    pub replayed: usize,
    /// Applied where it does not belong: out of order, or never sent.
    pub misplaced: usize,
    /// The most times one message was repeated (a kill repeats at most the
    /// message in hand, once).
    pub most_repeats: usize,
}

impl Audit {
    /// Walks `applied` along `sent`. `sent` must never hold the same value
    /// twice in a row, so that a repeat is told from the next message.
    pub fn of<T: PartialEq>(sent: &[T], applied: &[T]) -> Audit {
        let mut audit = Audit::default();
        let mut next = 0;
        let mut repeats = 0;
        for v in applied {
            if next < sent.len() && *v == sent[next] {
                next += 1;
                repeats = 0;
            } else if next > 0 && *v == sent[next - 1] {
                audit.duplicated += 1;
                repeats += 1;
                audit.most_repeats = audit.most_repeats.max(repeats);
            } else if sent[..next.saturating_sub(1)].contains(v) {
                audit.replayed += 1;
            } else if let Some(k) = (next..sent.len()).find(|&k| sent[k] == *v) {
                audit.lost += k - next;
                next = k + 1;
            } else {
                audit.misplaced += 1;
            }
        }
        audit.lost += sent.len() - next;
        audit
    }
}

/// What [`drain_with_stops`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub audit: Audit,
    /// Stops that came while part of the backlog was still to be applied.
    pub mid_drain: usize,
    /// Messages a kill left both in the journal and in Paho's records,
    /// taken from the journal only (pimqtt's persist.rs, `forget_journaled`).
    pub journaled: usize,
}

impl DrainReport {
    /// After stops (SIGTERM): nothing lost, nothing repeated, in order.
    pub fn assert_stops_lose_nothing(&self, what: &str) {
        eprintln!(
            "{what}: {} of the stops during the drain; {:?}; {} taken from the journal only",
            self.mid_drain, self.audit, self.journaled
        );
        assert_eq!(self.audit, Audit::default(), "{what}");
        self.assert_mid_drain(what);
    }

    /// After kills: nothing lost or out of order; at most the message in
    /// hand repeated per kill.
    pub fn assert_kills_lose_nothing(&self, what: &str) {
        eprintln!(
            "{what}: {} of the kills during the drain; {:?}; {} taken from the journal only",
            self.mid_drain, self.audit, self.journaled
        );
        let a = &self.audit;
        assert_eq!(
            (a.lost, a.misplaced, a.replayed),
            (0, 0, 0),
            "{what}: {a:?}"
        );
        assert!(
            a.duplicated <= self.mid_drain && a.most_repeats <= 1,
            "{what}: more than one repeat per kill: {self:?}"
        );
        self.assert_mid_drain(what);
    }

    /// The faults must have come during the drain to prove anything.
    fn assert_mid_drain(&self, what: &str) {
        assert!(
            self.mid_drain >= 3,
            "{what}: too few faults during the drain: {self:?}"
        );
    }
}

/// A program started `runs` times on a queued backlog (`sent`), each run
/// sent `signal` ("TERM" or "KILL") once it has applied a few more, then
/// a last run that applies the rest. `seen` reads what a run applied.
pub fn drain_with_stops<T: PartialEq + Clone>(
    sent: &[T],
    runs: usize,
    signal: &str,
    spawn: impl Fn() -> Proc,
    seen: impl Fn(&Proc) -> Vec<T>,
) -> DrainReport {
    let mut applied: Vec<T> = Vec::new();
    let mut mid_drain = 0;
    let mut journaled = 0;
    // "<id>: <n> message(s) released just before the last crash are …"
    let journaled_by = |proc: &Proc| -> usize {
        proc.stderr()
            .iter()
            .filter_map(|l| {
                let (head, _) = l.split_once(" message(s) released just before")?;
                head.rsplit(' ').next()?.parse::<usize>().ok()
            })
            .sum()
    };
    // Counting is cheap enough to poll; the audit is done once, at the end.
    let left =
        |applied: &[T], proc: &Proc| sent.len().saturating_sub(applied.len() + seen(proc).len());
    for k in 0..runs {
        let mut proc = spawn();
        // A different point of the drain each time.
        let want = 20 + (k * 131) % 200;
        wait_until("the drain to go on", Duration::from_secs(60), || {
            seen(&proc).len() >= want || left(&applied, &proc) == 0
        });
        if left(&applied, &proc) > 0 {
            mid_drain += 1;
        }
        // A signal before the program set up its handler would kill it.
        proc.wait_stderr("connected to");
        proc.signal(signal);
        let code = proc.wait_exit(DEADLINE);
        assert_eq!(
            code,
            if signal == "KILL" { None } else { Some(0) },
            "run {k} ended badly: {:?}",
            proc.stderr()
        );
        applied.extend(seen(&proc));
        journaled += journaled_by(&proc);
    }
    let mut proc = spawn();
    // Until nothing is missing, or a deadline: the audit then says what is.
    let complete = |applied: &[T], proc: &Proc| {
        left(applied, proc) == 0 && {
            let mut all = applied.to_vec();
            all.extend(seen(proc));
            Audit::of(sent, &all).lost == 0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !complete(&applied, &proc) {
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.wait_stderr("connected to");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit(DEADLINE), Some(0));
    applied.extend(seen(&proc));
    journaled += journaled_by(&proc);
    DrainReport {
        audit: Audit::of(sent, &applied),
        mid_drain,
        journaled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pimqtt_protocol_5_adds_v5_to_our_programs_only() {
        let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let exe = Path::new("/t/debug/led-client");
        assert_eq!(
            with_protocol(exe, &s(&["-p", "1"]), true),
            s(&["-V", "5", "-p", "1"])
        );
        assert_eq!(with_protocol(exe, &s(&["-p", "1"]), false), s(&["-p", "1"]));
        for chosen in [&["-V", "311"][..], &["--protocol-version=5"], &["--help"]] {
            assert_eq!(with_protocol(exe, &s(chosen), true), s(chosen));
        }
        let other = Path::new("/usr/bin/mosquitto_sub");
        assert_eq!(
            with_protocol(other, &s(&["-t", "x"]), true),
            s(&["-t", "x"])
        );
    }
}
