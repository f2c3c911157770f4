//! SPEC, "Client-side persistence": an outgoing QoS 2 message accepted while
//! the broker was away survives a crash of the client and is delivered by
//! the next run (Paho persistence under --state-dir); and power cuts while
//! publishing never make the broker deliver a level twice or out of order.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::path::Path;
use std::time::Duration;

use pimqtt_testkit::powercut::{self, Seeded, TRACE_ENV};
use pimqtt_testkit::{wait_until, Audit, Broker, Peer, Proc, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");

/// Does a persistence log under the state dir hold `needle`?
fn persisted(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
}

#[test]
fn a_level_queued_while_the_broker_is_down_survives_a_crash() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let args = broker.args(state.path(), &["--source", "stdin"]);
    let w = Peer::watching(&broker, "watcher", &["tank/1/status"]);
    let mut sensor = Proc::spawn(EXE, &args);
    w.expect("tank/1/status", "online");
    drop(w);

    broker.stop();
    sensor.wait_stderr("lost the connection");
    sensor.write_stdin("42\n");
    wait_until("the level to be persisted", DEADLINE, || {
        persisted(state.path(), br#"{"level":42.0}"#)
    });
    sensor.kill(); // SIGKILL: no chance to send or clean up anything

    broker.restart();
    let w = Peer::watching(&broker, "watcher2", &["tank/1/level"]);
    let _next = Proc::spawn(EXE, &args);
    // Nothing else ever published 42: it can only be the restored message.
    w.expect("tank/1/level", r#"{"level":42.0}"#);
}

/// The level in a `{"level":N}` payload.
fn level_of(payload: &str) -> Option<f64> {
    payload
        .strip_prefix(r#"{"level":"#)?
        .strip_suffix('}')?
        .parse()
        .ok()
}

/// Levels on `tank/1/level` that reach `w` within `window` of each other.
fn levels_seen(w: &Peer, got: &mut Vec<f64>, window: Duration) {
    let _ = w.watch(window, |m| -> Option<()> {
        if m.topic() == "tank/1/level" {
            got.extend(level_of(&m.payload_str()));
        }
        None
    });
}

/// Ten power cuts (seeded: each state file keeps a random part of what it
/// had not synced) while tank-sensor publishes a rising sequence of levels
/// at QoS 2. The outgoing records (`c-`, `s-`, `sc-`: persist.rs) must make
/// the broker deliver each level at most once, in order, whatever the cut
/// left; a cut may lose only the few levels written to stdin that the
/// sensor had not yet handed to Paho (at most `IN_FLIGHT` per cut here).
#[test]
fn power_cuts_while_publishing_never_deliver_a_level_twice() {
    const IN_FLIGHT: usize = 5;
    let what = "tank-sensor, power cut x10 while publishing";
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("trace");
    let env = [(TRACE_ENV, trace.to_str().unwrap())];
    let args = broker.args(state.path(), &["--source", "stdin"]);
    let w = Peer::watching(&broker, "watcher", &["tank/1/level"]);
    let mut dice = Seeded::from_env(what);
    let (mut written, mut got) = (Vec::new(), Vec::new());
    let mut next = 0u32;
    for k in 0..10 {
        let mut sensor = Proc::spawn_env(EXE, &args, &env);
        sensor.wait_stderr("connected to");
        for _ in 0..(40 + (k * 37) % 80) {
            let line = format!("{}.{}", next / 10, next % 10);
            written.push(line.parse::<f64>().unwrap());
            sensor.write_stdin(&format!("{line}\n"));
            next += 1;
        }
        // Cut while the last few are still on their way.
        wait_until("the levels to go out", DEADLINE, || {
            levels_seen(&w, &mut got, Duration::from_millis(20));
            got.len() + IN_FLIGHT >= written.len()
        });
        powercut::cut_seeded(&mut sensor, state.path(), &trace, &mut dice);
    }
    // The last run sends what the cuts left in its records.
    let last = Proc::spawn_env(EXE, &args, &env);
    last.wait_stderr("connected to");
    levels_seen(&w, &mut got, Duration::from_secs(3));
    let audit = Audit::of(&written, &got);
    eprintln!(
        "{what}: {} levels written, {} delivered; {audit:?}",
        written.len(),
        got.len()
    );
    assert_eq!(
        (audit.duplicated, audit.replayed, audit.misplaced),
        (0, 0, 0),
        "{what}: a level delivered twice or out of order: {audit:?}"
    );
    assert!(
        audit.lost <= 10 * IN_FLIGHT,
        "{what}: more lost than was in flight at the cuts: {audit:?}"
    );
}
