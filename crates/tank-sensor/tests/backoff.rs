//! A long outage makes the reconnect waits grow (towards 30 s, so a fleet
//! does not hammer a broker that is down), yet once the broker's port
//! answers again every session is back within seconds (SPEC, "Automatic
//! reconnect"): the probe (`pimqtt/src/probe.rs`) knocks at a port that
//! refused, and the first answer ends every wait.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::{Duration, Instant};

use pimqtt_testkit::{wait_until, Broker, Proc, Proxy, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");
const TANKS: usize = 10;
/// How soon after the port answers every session must be back: the probe's
/// second, a wake-up's jittered second, and the connect, with room.
const BACK_WITHIN: Duration = Duration::from_secs(5);

fn connects(p: &Proc) -> usize {
    p.stderr()
        .iter()
        .filter(|l| l.contains(" connected to "))
        .count()
}

/// The sessions whose last failed attempt set a wait of at least `secs`.
fn waiting_at_least(p: &Proc, secs: f64) -> usize {
    let mut last = std::collections::HashMap::new();
    for l in p.stderr() {
        let Some((head, wait)) = l.split_once("; retrying in ") else {
            continue;
        };
        let Some(id) = head
            .split_whitespace()
            .find(|w| w.starts_with("tank-sensor-"))
        else {
            continue;
        };
        let wait: f64 = wait.trim_end_matches('s').parse().unwrap_or(0.0);
        last.insert(id.trim_end_matches(':').to_string(), wait);
    }
    last.values().filter(|w| **w >= secs).count()
}

#[test]
fn after_a_long_refusal_every_session_is_back_within_seconds() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port);
    let state = tempfile::tempdir().unwrap();
    let count = TANKS.to_string();
    let mut tanks = proxy.run(EXE, state.path(), &["--count", &count]);
    wait_until("every tank connected", DEADLINE, || {
        connects(&tanks) >= TANKS
    });

    // The broker's port refuses, long enough for every session's wait to
    // have grown past the one-second schedule (ten tries, then 2, 4, 8 s…).
    proxy.refuse(true);
    proxy.reset_all();
    wait_until(
        "every session waiting 6 s or more",
        Duration::from_secs(60),
        || waiting_at_least(&tanks, 6.0) >= TANKS,
    );
    let before = connects(&tanks);
    proxy.refuse(false);
    let healed = Instant::now();
    wait_until(
        "every tank connected again",
        Duration::from_secs(40),
        || connects(&tanks) >= before + TANKS,
    );
    let took = healed.elapsed();
    eprintln!("back {took:.1?} after the port answered again");
    assert!(
        took <= BACK_WITHIN,
        "the last session was back {took:.1?} after the port answered (allowed {BACK_WITHIN:?}): \
         {:#?}",
        tanks
            .stderr()
            .iter()
            .filter(|l| l.contains("retrying in") || l.contains(" connected to "))
            .rev()
            .take(30)
            .collect::<Vec<_>>()
    );
    let err = tanks.stderr();
    let fresh = err.iter().filter(|l| l.contains("(new session)")).count();
    assert_eq!(fresh, TANKS, "a session was dropped: {err:#?}");
    tanks.signal("TERM");
    assert_eq!(tanks.wait_exit(DEADLINE), Some(0));
}
