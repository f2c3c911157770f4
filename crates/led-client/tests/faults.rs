//! led-client's delivery promise under faults: a durable backlog of QoS 2
//! levels drained while the client is stopped (SIGTERM) or killed (SIGKILL)
//! again and again. Every level must be applied once, in order (a kill may
//! repeat the one being applied), or when its machine loses power (the
//! testkit's `powercut`: killed, and every state file cut back to what was
//! on the disk). Broker restarts: will-demo's fault tests, whose payloads
//! can be told apart.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::path::Path;

use pimqtt_testkit::powercut::{self, Seeded, TRACE_ENV};
use pimqtt_testkit::{drain_with_stops, Broker, DrainReport, Peer, Proc, DEADLINE};

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

/// A durable session for `drain`, then `BACKLOG` levels queued for it at
/// the broker; returns the levels sent. `env`: for every run.
fn backlog(broker: &Broker, args: &[String], env: &[(&str, &str)]) -> Vec<u8> {
    let watcher = Peer::connect(broker, "watcher");
    watcher.subscribe("led/status");
    let mut first = Proc::spawn_env(EXE, args, env);
    watcher.expect("led/status", "online");
    first.signal("TERM");
    assert_eq!(first.wait_exit(DEADLINE), Some(0));

    let user = Peer::connect(broker, "user");
    let sent: Vec<u8> = (0..BACKLOG).map(level).collect();
    for l in &sent {
        user.publish("led", format!(r#"{{"level": {l}}}"#), 2, false);
    }
    sent
}

fn led_args(broker: &Broker, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--led".to_string(), "sim".into()];
    args.extend(broker.args(state, &[&["-i", "drain"][..], extra].concat()));
    args
}

/// `BACKLOG` levels drained with `runs` stops by `signal`.
fn drain(signal: &str) -> DrainReport {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let args = led_args(&broker, state.path(), &[]);
    let sent = backlog(&broker, &args, &[]);
    drain_with_stops(&sent, 10, signal, || Proc::spawn(EXE, &args), applied)
}

/// `BACKLOG` levels drained through 10 power cuts (seeded: each file keeps
/// a random part of what it had not synced), with `extra` flags.
fn drain_through_power_cuts(what: &str, extra: &[&str]) -> (DrainReport, String) {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("trace");
    let env = [(TRACE_ENV, trace.to_str().unwrap())];
    let args = led_args(&broker, state.path(), extra);
    let sent = backlog(&broker, &args, &env);
    let mut dice = Seeded::from_env(what);
    let (report, cuts) = powercut::drain_with_cuts(
        &sent,
        10,
        (state.path(), &trace),
        Some(&mut dice),
        || Proc::spawn_env(EXE, &args, &env),
        applied,
    );
    (report, powercut::summary(&cuts))
}

#[test]
fn sigterm_during_a_drain_loses_and_repeats_nothing() {
    drain("TERM").assert_stops_lose_nothing("led-client, SIGTERM x10, 5000 levels");
}

#[test]
fn kill_9_during_a_drain_loses_nothing() {
    drain("KILL").assert_kills_lose_nothing("led-client, kill -9 x10, 5000 levels");
}

#[test]
fn power_cut_during_a_drain_loses_nothing() {
    let what = "led-client, power cut x10, 5000 levels";
    let (report, cuts) = drain_through_power_cuts(what, &[]);
    eprintln!("{what}: {cuts}");
    report.assert_kills_lose_nothing(what);
}
