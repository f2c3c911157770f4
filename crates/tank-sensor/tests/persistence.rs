//! SPEC, "Client-side persistence": an outgoing QoS 2 message accepted while
//! the broker was away survives a crash of the client and is delivered by
//! the next run (Paho persistence under --state-dir).

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::path::Path;

use pimqtt::testing::{wait_until, Broker, Peer, Proc, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");

/// Paho's queued-command records ("c-…") somewhere under the state dir.
fn queued_commands(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += queued_commands(&path);
        } else if entry.file_name().to_string_lossy().starts_with("c-") {
            n += 1;
        }
    }
    n
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
        queued_commands(state.path()) > 0
    });
    sensor.kill(); // SIGKILL: no chance to send or clean up anything

    broker.restart();
    let w = Peer::watching(&broker, "watcher2", &["tank/1/level"]);
    let _next = Proc::spawn(EXE, &args);
    // Nothing else ever published 42: it can only be the restored message.
    w.expect("tank/1/level", r#"{"level":42.0}"#);
}
