//! pump-sim against a real Mosquitto: both command forms, bad commands
//! ignored, state reports (change, confirmation, heartbeat), availability
//! and a fleet of pumps in one process.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{Broker, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_pump-sim");
const ON: &str = r#"{"state":"on"}"#;
const OFF: &str = r#"{"state":"off"}"#;

#[test]
fn obeys_both_command_forms_and_ignores_bad_ones() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["pump/1/state", "pump/1/status"]);
    let pump = broker.run(EXE, state.path(), &["--heartbeat", "600"]);
    w.expect("pump/1/status", "online");
    w.expect("pump/1/state", OFF); // starts off
    pump.wait_stdout("pump 1 off");

    w.publish("pump/1/command", "ON", 2, false);
    w.expect("pump/1/state", ON);
    pump.wait_stdout("pump 1 on");

    let bad: [&[u8]; 6] = [
        b"maybe",
        br#"{"state": 1}"#,
        br#"{"state": "dim"}"#,
        b"",
        b"{",
        &[0xff, 0xfe],
    ];
    for b in bad {
        w.publish("pump/1/command", b.to_vec(), 2, false);
    }
    w.publish("pump/1/command", r#"{"state": "off"}"#, 2, false);
    w.expect("pump/1/state", OFF);
    pump.wait_stdout("pump 1 off");

    let warnings = pump.stderr_with("pump/1/command", bad.len()).len();
    assert_eq!(warnings, bad.len(), "{:#?}", pump.stderr());
    assert_eq!(
        pump.stdout(),
        ["pump 1 off", "pump 1 on", "pump 1 off"],
        "bad commands changed nothing"
    );
}

#[test]
fn confirms_commands_and_repeats_its_state() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["pump/1/state"]);
    let _pump = broker.run(EXE, state.path(), &["--heartbeat", "0.2"]);
    w.expect("pump/1/state", OFF);
    for _ in 0..3 {
        w.expect("pump/1/state", OFF); // heartbeats
    }
    w.publish("pump/1/command", "off", 2, false);
    w.expect("pump/1/state", OFF); // an unchanged state is confirmed too
}

#[test]
fn a_fleet_has_one_connection_per_pump() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["pump/+/status"]);
    let pump = broker.run(EXE, state.path(), &["--pump", "7", "--count", "3"]);
    let want: Vec<String> = [7, 8, 9]
        .iter()
        .map(|id| format!("pump/{id}/status"))
        .collect();
    w.expect_all(&want, "online");
    w.publish("pump/8/command", "on", 2, false);
    pump.wait_stdout("pump 8 on");
    assert!(!pump
        .stdout()
        .iter()
        .any(|l| l == "pump 7 on" || l == "pump 9 on"));
}

#[test]
fn sigterm_says_offline_and_exits_0() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["pump/1/status"]);
    let mut pump = broker.run(EXE, state.path(), &[]);
    w.expect("pump/1/status", "online");
    pump.signal("TERM");
    assert_eq!(pump.wait_exit(DEADLINE), Some(0));
    w.expect("pump/1/status", "offline");
    assert!(
        w.drain(Duration::from_millis(300)).is_empty(),
        "offline once, no will after it"
    );
}

#[test]
fn a_bad_id_is_a_clear_error() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let mut pump = broker.run(EXE, state.path(), &["--pump", "a/b"]);
    assert_eq!(pump.wait_exit(DEADLINE), Some(2));
    assert!(pump
        .stderr()
        .iter()
        .any(|l| l.contains("--pump") && l.contains("single topic level")));
}

/// Issue 10: a 60 KB bad command is one warning line of normal length
/// (a short preview and the size), and changes nothing.
#[test]
fn a_huge_bad_command_is_one_short_warning() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["pump/1/state"]);
    let pump = broker.run(EXE, state.path(), &["--heartbeat", "600"]);
    w.expect("pump/1/state", OFF);
    let word = "x".repeat(60 * 1024);
    let bad = [word.clone(), format!(r#"{{"state": "{word}"}}"#)];
    for b in &bad {
        w.publish("pump/1/command", b.clone(), 2, false);
    }
    w.publish("pump/1/command", "on", 2, false);
    w.expect("pump/1/state", ON);
    pump.wait_stdout("pump 1 on");
    let warnings = pump.stderr_with("pump/1/command", bad.len());
    assert_eq!(warnings.len(), bad.len(), "{warnings:#?}");
    for (w, b) in warnings.iter().zip(&bad) {
        assert!(w.len() < 400, "{} bytes: {w}", w.len());
        assert!(w.contains(&format!("({} bytes)", b.len())), "{w}");
        assert!(w.contains("stays off"), "{w}");
    }
    assert_eq!(pump.stdout(), ["pump 1 off", "pump 1 on"]);
}
