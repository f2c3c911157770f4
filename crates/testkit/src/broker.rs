//! A private Mosquitto per test ([`Broker`]) on a port of its own
//! ([`free_port`], [`listens`]), and which Mosquitto that is
//! ([`mosquitto_bin`], [`mosquitto_version`]).

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::{poll, signal, wait_until, Peer, Proc, DEADLINE};

/// A free loopback port, below the kernel's range of ephemeral ports and
/// never one this process was given before.
///
/// Why not the OS's pick (`bind` to port 0): that comes from the ephemeral
/// range, the same ports the kernel gives outgoing connections. While a
/// test's broker is down for a restart, a client reconnecting to it could
/// be given the broker's own port as its local port and connect to itself
/// (TCP's simultaneous open): Mosquitto then found its port taken ("the
/// soak failed: mosquitto ended instead of listening"). Outside that range
/// only another `bind` can take it, and a test running beside it never
/// asks for a port it was given before.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, _) = ephemeral_ports();
    let floor = 10_000u16.min(low.saturating_sub(1024));
    let span = u64::from(low.saturating_sub(floor).max(1));
    let mut dice = std::collections::hash_map::RandomState::new().build_hasher();
    for n in 0u64.. {
        dice.write_u64(n);
        let port = if span > 1000 {
            floor + (dice.finish() % span) as u16
        } else {
            // A machine whose ephemeral range starts low: the OS's pick.
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    unreachable!("the loop above only ends by returning")
}

/// The kernel's ephemeral ports (Linux: `net.ipv4.ip_local_port_range`).
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u16>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
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
        host_args(self.port)
    }

    /// The flags that point one of our programs at this broker with its
    /// own Paho state directory, followed by `extra`.
    pub fn args(&self, state: &Path, extra: &[&str]) -> Vec<String> {
        program_args(self.port, state, extra)
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

/// `-h 127.0.0.1 -p PORT`: a program pointed at a loopback port (a
/// [`Broker`]'s, or a [`Proxy`](crate::Proxy)'s in front of one).
pub(crate) fn host_args(port: u16) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
    ]
}

/// [`host_args`], then `--state-dir STATE`, then `extra`. `-V 5` is added
/// by [`Proc::spawn`] when `PIMQTT_PROTOCOL=5` ([`crate::protocol_5`]).
pub(crate) fn program_args(port: u16, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = host_args(port);
    a.push("--state-dir".into());
    a.push(state.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
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
