//! SPEC, "Client-side persistence": an outgoing QoS 2 message accepted while
//! the broker was away survives a crash of the client and is delivered by
//! the next run (Paho persistence under --state-dir).

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::path::Path;

use pimqtt_testkit::{wait_until, Broker, Peer, Proc, DEADLINE};

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
