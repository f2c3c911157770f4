//! `--ha-discovery` against a real Mosquitto, what Home Assistant receives:
//! the device config, and the move of a config left by an earlier run in
//! the other form, in the order Home Assistant's `migrate_discovery` needs.
//! (A real Home Assistant reads them in scripts/test.d/50-home-assistant.)

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{Broker, Peer, Proc, DEADLINE};

use crate::led::args;

const EXE: &str = env!("CARGO_BIN_EXE_led-client");
const ENTITY: &str = "homeassistant/light/LEDClient/led/config";
const DEVICE: &str = "homeassistant/device/LEDClient/config";
const MIGRATE: &str = r#"{"migrate_discovery":true}"#;

/// What `w` sees under homeassistant/ until a message on `until` (a
/// config: not empty, not a migration request), as "topic payload" lines.
fn seen_until(w: &Peer, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let found = w.watch(DEADLINE, |m| {
        let p = m.payload_str().to_string();
        seen.push(format!("{} {p}", m.topic()));
        (m.topic() == until && !p.is_empty() && p != MIGRATE).then_some(())
    });
    assert!(found.is_some(), "no config on {until}; saw {seen:?}");
    seen
}

/// The topics holding a retained message under homeassistant/ now.
fn retained(broker: &Broker) -> Vec<String> {
    let fresh = Peer::watching(broker, "fresh", &["homeassistant/#"]);
    let mut topics: Vec<String> = fresh
        .drain(Duration::from_millis(500))
        .iter()
        .filter(|m| m.retained())
        .map(|m| m.topic().to_string())
        .collect();
    topics.sort();
    topics
}

/// Where `line` ("topic payload") is in `seen`.
fn at(seen: &[String], line: &str) -> usize {
    seen.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no {line:?} in {seen:?}"))
}

#[test]
fn per_entity_configs_move_to_the_device_config_and_back() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = Peer::watching(&broker, "watcher", &["homeassistant/#"]);

    // An earlier run, per entity.
    let mut led = Proc::spawn(
        EXE,
        &args(
            &broker,
            state.path(),
            &["--ha-discovery", "--ha-per-entity"],
        ),
    );
    let seen = seen_until(&w, ENTITY);
    assert!(
        seen.last()
            .unwrap()
            .contains(r#""unique_id":"pimqtt_LEDClient_led""#),
        "{seen:?}"
    );
    led.signal("TERM");
    led.wait_exit(DEADLINE).unwrap();
    assert_eq!(retained(&broker), [ENTITY]);

    // Device discovery: the old config is asked to migrate, emptied, and
    // only then the device config comes, holding the same entity.
    let mut led = Proc::spawn(EXE, &args(&broker, state.path(), &["--ha-discovery"]));
    let seen = seen_until(&w, DEVICE);
    let (migrate, empty) = (
        at(&seen, &format!("{ENTITY} {MIGRATE}")),
        at(&seen, &format!("{ENTITY} ")),
    );
    assert!(migrate < empty && empty < seen.len() - 1, "{seen:?}");
    let device: serde_json::Value = serde_json::from_str(
        seen.last()
            .unwrap()
            .strip_prefix(&format!("{DEVICE} "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(device["cmps"]["led"]["p"], "light");
    assert_eq!(device["cmps"]["led"]["unique_id"], "pimqtt_LEDClient_led");
    assert_eq!(device["dev"]["identifiers"][0], "pimqtt_LEDClient");
    assert_eq!(device["availability_topic"], "led/status");
    led.signal("TERM");
    led.wait_exit(DEADLINE).unwrap();
    assert_eq!(retained(&broker), [DEVICE]);

    // And back with --ha-per-entity (Home Assistant's rollback).
    let mut led = Proc::spawn(
        EXE,
        &args(
            &broker,
            state.path(),
            &["--ha-discovery", "--ha-per-entity"],
        ),
    );
    let seen = seen_until(&w, ENTITY);
    let (migrate, empty) = (
        at(&seen, &format!("{DEVICE} {MIGRATE}")),
        at(&seen, &format!("{DEVICE} ")),
    );
    assert!(migrate < empty && empty < seen.len() - 1, "{seen:?}");
    led.signal("TERM");
    led.wait_exit(DEADLINE).unwrap();
    assert_eq!(retained(&broker), [ENTITY]);

    // --ha-remove deletes whichever form it finds.
    let mut led = Proc::spawn(EXE, &args(&broker, state.path(), &["--ha-remove"]));
    let found = w.watch(DEADLINE, |m| {
        (m.topic() == ENTITY && m.payload().is_empty()).then_some(())
    });
    assert!(found.is_some(), "--ha-remove did not empty {ENTITY}");
    led.signal("TERM");
    led.wait_exit(DEADLINE).unwrap();
    assert_eq!(retained(&broker), Vec::<String>::new());
}
