//! A running binary ([`Proc`]) whose stdout and stderr lines can be waited
//! for, how it is run (emulated ARM builds, `PIMQTT_PROTOCOL`), signals,
//! and other packages' binaries ([`sibling!`]).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{poll, DEADLINE};

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

    /// Every stderr line seen so far.
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

/// Sends a signal by name with kill(1): tests need SIGINT/SIGTERM, which std
/// cannot send.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
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
