//! What changes with `-V 5` (every other test of this binary runs on
//! MQTT 5 too under `PIMQTT_PROTOCOL=5`): the session expiry replaces the
//! clean/durable switch, refusals carry a reason code, and a takeover is
//! named by the broker (0x8E) instead of guessed.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{mosquitto_bin, mosquitto_version, Broker, Peer, Proc, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_led-client");

use crate::led::args;

/// Runs led-client with `extra` until subscribed, then stops it cleanly;
/// returns its stderr.
fn run_once(
    broker: &Broker,
    state: &std::path::Path,
    watcher: &Peer,
    extra: &[&str],
) -> Vec<String> {
    let mut led = Proc::spawn(EXE, &args(broker, state, extra));
    watcher.expect("led/status", "online");
    led.signal("TERM");
    assert_eq!(led.wait_exit(DEADLINE), Some(0));
    watcher.expect("led/status", "offline");
    led.stderr()
}

/// A level published (not retained) while led-client is away, then
/// led-client started again with `extra`, after `away`: returns whether
/// that level was applied, and whether the broker had kept the session.
fn queued_while_away(extra: &[&str], away: Duration) -> (bool, bool) {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let watcher = Peer::connect(&broker, "watcher");
    watcher.subscribe("led/status");
    run_once(&broker, state.path(), &watcher, extra);
    watcher.publish("led", r#"{"level": 33}"#, 2, false);
    std::thread::sleep(away); // the session expiry is measured in time
    let mut led = Proc::spawn(EXE, &args(&broker, state.path(), extra));
    watcher.expect("led/status", "online");
    // The marker comes after anything the broker kept for us.
    watcher.publish("led", r#"{"level": 44}"#, 2, false);
    led.wait_stdout("brightness 44");
    led.signal("TERM");
    assert_eq!(led.wait_exit(DEADLINE), Some(0));
    let applied = led.stdout().iter().any(|l| l == "brightness 33");
    let kept = led
        .stderr()
        .iter()
        .any(|l| l.contains("the broker kept our session"));
    (applied, kept)
}

#[test]
fn the_session_is_kept_for_ever_by_default_and_for_session_expiry_seconds() {
    assert_eq!(
        queued_while_away(&["-V", "5"], Duration::from_secs(3)),
        (true, true),
        "default: durable, as with 3.1.1"
    );
    assert_eq!(
        queued_while_away(
            &["-V", "5", "--session-expiry", "1"],
            Duration::from_secs(3)
        ),
        (false, false),
        "expired after 1 s: a new session, the queued level gone"
    );
    assert_eq!(
        queued_while_away(
            &["-V", "5", "--session-expiry", "60"],
            Duration::from_secs(3)
        ),
        (true, true),
        "not yet expired"
    );
    assert_eq!(
        queued_while_away(&["-V", "5", "--clean"], Duration::ZERO),
        (false, false),
        "--clean: clean start and expiry 0"
    );
}

/// Mosquitto refuses a client id without one of its `clientid_prefixes`
/// as "not authorised" (0x87; 3.1.1: return code 5); the line says which,
/// with the code. (0x85, "client id not valid", is what Mosquitto answers
/// an empty id, which `check()` refuses before connecting: unit-tested.)
#[test]
fn a_refused_client_id_names_the_reason_code() {
    let broker = Broker::start_with("clientid_prefixes pi-\n");
    let state = tempfile::tempdir().unwrap();
    let mut led = Proc::spawn(EXE, &args(&broker, state.path(), &["-V", "5"]));
    assert_eq!(led.wait_exit(DEADLINE), Some(pimqtt::EXIT_CONFIG));
    let err = led.stderr().join("\n");
    assert!(
        err.contains("refused the connection: not authorised (MQTT 5 reason code 0x87): "),
        "{err}"
    );
    let mut led = Proc::spawn(EXE, &args(&broker, state.path(), &["-V", "311"]));
    assert_eq!(led.wait_exit(DEADLINE), Some(pimqtt::EXIT_CONFIG));
    let err = led.stderr().join("\n");
    assert!(
        err.contains("refused the connection: this client is not authorised"),
        "{err}"
    );
    // With the prefix it gets in.
    let watcher = Peer::connect(&broker, "pi-watcher");
    watcher.subscribe("led/status");
    run_once(
        &broker,
        state.path(),
        &watcher,
        &["-V", "5", "-i", "pi-led"],
    );
}

#[test]
fn a_bad_password_names_the_reason_code() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    std::fs::write(&pw, "").unwrap();
    let ok = std::process::Command::new("mosquitto_passwd")
        .args(["-b", &pw.display().to_string(), "led", "right"])
        .status()
        .unwrap();
    assert!(ok.success(), "mosquitto_passwd");
    let broker = Broker::start_conf(&format!(
        "listener @PORT@ 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let state = tempfile::tempdir().unwrap();
    for (extra, part) in [
        (
            &["-V", "5"][..],
            "(MQTT 5 reason code 0x87): the broker needs a user name and password: -u/-P",
        ),
        (
            &["-V", "5", "-u", "led", "-P", "wrong"],
            "(MQTT 5 reason code 0x8",
        ),
    ] {
        let mut led = Proc::spawn(EXE, &args(&broker, state.path(), extra));
        assert_eq!(
            led.wait_exit(DEADLINE),
            Some(pimqtt::EXIT_CONFIG),
            "{extra:?}"
        );
        let err = led.stderr().join("\n");
        assert!(
            err.contains("refused the connection") && err.contains(part),
            "{extra:?}: {err}"
        );
        if extra.len() > 2 {
            assert!(err.contains("password is wrong"), "{err}");
        }
    }
}

/// Mosquitto 2.0.21 tells an MQTT 5 client it was taken over (DISCONNECT
/// 0x8E); 2.0.11 closes the socket without a word, and the instance mark
/// (led.rs, `a_sibling_with_the_same_id…`) tells it there.
#[test]
fn a_takeover_is_named_by_the_broker() {
    let broker = Broker::start();
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let watcher = Peer::connect(&broker, "watcher");
    watcher.subscribe("led/status");
    let a = Proc::spawn(EXE, &args(&broker, s1.path(), &["-V", "5", "-i", "twin"]));
    watcher.expect("led/status", "online");
    let b = Proc::spawn(EXE, &args(&broker, s2.path(), &["-V", "5", "-i", "twin"]));
    let said = |p: &Proc| {
        p.stderr().iter().any(|l| {
            l.contains("session taken over (MQTT 5 reason code 0x8E): another client connected with the client id \"twin\"")
        })
    };
    let version = mosquitto_version(&mosquitto_bin());
    let number: Vec<u32> = version
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    if number < vec![2, 0, 21] {
        eprintln!("Mosquitto {version} sends no DISCONNECT on a takeover: nothing to check");
        return;
    }
    pimqtt_testkit::wait_until(
        "a takeover named with 0x8E",
        Duration::from_secs(20),
        || said(&a) || said(&b),
    );
}
