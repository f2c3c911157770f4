//! led-client's delivery promise under faults: a durable backlog of QoS 2
//! levels drained while the client is stopped (SIGTERM) or killed (SIGKILL)
//! again and again. Every level must be applied once, in order (a kill may
//! repeat the one being applied). Broker restarts: will-demo's fault tests,
//! whose payloads can be told apart.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{wait_until, Audit, Broker, Peer, Proc, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_led-client");
const BACKLOG: usize = 5000;

/// Level `i` of the backlog: 1..=100, never 0 (the level written at
/// shutdown) and never the same twice in a row (so a repeat shows).
fn level(i: usize) -> u8 {
    1 + ((i * 37) % 100) as u8
}

/// The levels a run applied, without the 0 it writes when it stops.
fn applied(proc: &Proc) -> Vec<u8> {
    proc.stdout()
        .iter()
        .filter_map(|l| l.strip_prefix("brightness ")?.parse().ok())
        .filter(|&n| n != 0)
        .collect()
}

struct Drain {
    _broker: Broker,
    args: Vec<String>,
    _state: tempfile::TempDir,
    sent: Vec<u8>,
    applied: Vec<u8>,
}

impl Drain {
    /// A durable session for `drain` with `n` levels queued at the broker.
    fn new(n: usize) -> Drain {
        let broker = Broker::start();
        let state = tempfile::tempdir().unwrap();
        let mut args = vec!["--led".to_string(), "sim".into()];
        args.extend(broker.args(state.path(), &["-i", "drain"]));
        let watcher = Peer::connect(&broker, "watcher");
        watcher.subscribe("led/status");
        let mut first = Proc::spawn(EXE, &args);
        watcher.expect("led/status", "online");
        first.signal("TERM");
        assert_eq!(first.wait_exit(DEADLINE), Some(0));

        let user = Peer::connect(&broker, "user");
        let sent: Vec<u8> = (0..n).map(level).collect();
        for l in &sent {
            user.publish("led", format!(r#"{{"level": {l}}}"#), 2, false);
        }
        Drain {
            _broker: broker,
            args,
            _state: state,
            sent,
            applied: Vec::new(),
        }
    }

    fn audit(&self) -> Audit {
        Audit::of(&self.sent, &self.applied)
    }

    /// Runs led-client until it has applied `more` levels, then sends it
    /// `signal` and keeps what it applied.
    fn run_then(&mut self, more: usize, signal: &str) {
        let mut led = Proc::spawn(EXE, &self.args);
        wait_until("levels applied", Duration::from_secs(60), || {
            applied(&led).len() >= more
        });
        led.signal(signal);
        let code = led.wait_exit(DEADLINE);
        assert_eq!(code, if signal == "KILL" { None } else { Some(0) });
        self.applied.extend(applied(&led));
    }

    /// A last run that drains the rest.
    fn finish(&mut self) {
        let mut led = Proc::spawn(EXE, &self.args);
        let before = self.applied.clone();
        let sent = self.sent.clone();
        // Until the last level shows, or a deadline: the audit then says
        // what is missing.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let mut all = before.clone();
            all.extend(applied(&led));
            if Audit::of(&sent, &all).lost == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        led.signal("TERM");
        assert_eq!(led.wait_exit(DEADLINE), Some(0));
        self.applied.extend(applied(&led));
    }
}

/// Where to stop run `k` of ten: spread over the backlog, never the same.
fn stop_after(k: usize) -> usize {
    40 + (k * 131) % 300
}

#[test]
fn sigterm_during_a_drain_loses_and_repeats_nothing() {
    let mut d = Drain::new(BACKLOG);
    for k in 0..10 {
        d.run_then(stop_after(k), "TERM");
    }
    d.finish();
    let audit = d.audit();
    eprintln!("SIGTERM x10 during a {BACKLOG}-level drain: {audit:?}");
    assert_eq!(audit, Audit::default());
}

#[test]
fn kill_9_during_a_drain_loses_nothing() {
    let mut d = Drain::new(BACKLOG);
    for k in 0..10 {
        d.run_then(stop_after(k), "KILL");
    }
    d.finish();
    let audit = d.audit();
    eprintln!("kill -9 x10 during a {BACKLOG}-level drain: {audit:?}");
    assert_eq!(
        (audit.lost, audit.misplaced, audit.replayed),
        (0, 0, 0),
        "{audit:?}"
    );
    assert!(
        audit.duplicated <= 10,
        "more than one repeat per kill: {audit:?}"
    );
}
