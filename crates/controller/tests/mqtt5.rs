//! MQTT 5's message expiry on pump commands (`--command-expiry`): a pump
//! that comes back from an outage the controller did not notice gets only
//! the commands that are still fresh, not everything decided meanwhile.
//! (Every other test of this binary runs on MQTT 5 too under
//! `PIMQTT_PROTOCOL=5`.)

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{sibling, Broker, Peer, Proc, DEADLINE};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_controller");
const ON: &str = r#"{"state":"on"}"#;
const OFF: &str = r#"{"state":"off"}"#;

/// The pump's session exists at the broker but the pump is away, and the
/// controller does not know (no retained status or state: a pump that lost
/// power before its keepalive ran out looks the same). The controller
/// wants the pump on, then off, re-sending every second; the pump comes
/// back after `away`. Returns whether the pump ever switched on.
fn pump_back_switched_on(version: &str, extra: &[&str], away: Duration) -> bool {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let peer = Peer::connect(&broker, "watcher");
    peer.subscribe("pump/1/#");
    let pump_args = broker.args(state.path(), &["-V", version, "--heartbeat", "300"]);
    let mut pump = Proc::spawn(sibling!("pump-sim"), &pump_args);
    peer.expect("pump/1/status", "online");
    pump.signal("TERM");
    assert_eq!(pump.wait_exit(DEADLINE), Some(0));
    peer.expect("pump/1/status", "offline");
    for topic in ["pump/1/status", "pump/1/state"] {
        peer.publish(topic, "", 2, true); // forgotten
    }

    let mut a = vec![
        "-V",
        version,
        "--dashboard",
        "lines",
        "--command-timeout",
        "1",
        "--pump-timeout",
        "300",
        "--sensor-timeout",
        "300",
    ];
    a.extend_from_slice(extra);
    let _ctl = Proc::spawn(CONTROLLER, &broker.args(state.path(), &a));
    peer.publish("tank/1/level", r#"{"level": 30}"#, 2, true);
    peer.expect("pump/1/command", ON);
    peer.publish("tank/1/level", r#"{"level": 100}"#, 2, true);
    peer.expect("pump/1/command", OFF);
    std::thread::sleep(away); // the expiry is measured in time

    let pump = Proc::spawn(sibling!("pump-sim"), &pump_args);
    peer.expect("pump/1/status", "online");
    // Whatever the broker kept for the pump comes first; a second more
    // for it to act on it.
    pump.wait_stderr("connected to");
    std::thread::sleep(Duration::from_millis(1500));
    let on = pump
        .stderr()
        .iter()
        .any(|l| l.contains("pump 1 switched on"));
    on
}

#[test]
fn a_pump_back_from_an_outage_gets_no_stale_command() {
    assert!(
        !pump_back_switched_on("5", &["--command-expiry", "1"], Duration::from_secs(3)),
        "MQTT 5: the stale 'on' expired at the broker"
    );
    assert!(
        !pump_back_switched_on("5", &[], Duration::from_secs(8)),
        "MQTT 5, default expiry (--command-timeout + 5 s = 6 s)"
    );
    // What MQTT 5 fixes: with 3.1.1 the broker keeps every command for the
    // pump however old, and it obeys the stale 'on' before the fresh 'off'.
    assert!(
        pump_back_switched_on("311", &[], Duration::from_secs(3)),
        "MQTT 3.1.1 delivers the stale command"
    );
}

#[test]
fn command_expiry_needs_mqtt_5() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let mut ctl = Proc::spawn(
        CONTROLLER,
        &broker.args(state.path(), &["-V", "311", "--command-expiry", "5"]),
    );
    assert_eq!(ctl.wait_exit(DEADLINE), Some(pimqtt::EXIT_CONFIG));
    let err = ctl.stderr().join("\n");
    assert!(
        err.contains("--command-expiry needs MQTT 5 (-V 5)"),
        "{err}"
    );
}
