//! Broker restarts during a durable QoS 2 drain, measured on will-demo (which
//! prints each payload whole, so every message can be told apart) beside
//! `mosquitto_sub -c` under the same restarts: nothing may be lost; what the
//! broker itself sends twice shows in both.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pimqtt_testkit::{wait_until, Audit, Broker, Peer, Proc, DEADLINE};

const BACKLOG: usize = 10_000;

/// Numbers printed by a subscriber (lines of a sequence number each).
fn numbers(lines: &[String]) -> Vec<usize> {
    lines.iter().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn broker_restarts_during_a_drain_lose_nothing() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let demo_args = broker.args(
        state.path(),
        &["-c", "-i", "drain", "-t", "drain", "--graceful"],
    );
    let reference = [
        "-h".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        broker.port.to_string(),
        "-c".into(),
        "-q".into(),
        "2".into(),
        "-i".into(),
        "reference".into(),
        "-t".into(),
        "drain".into(),
    ];
    // Both sessions exist, then the backlog is queued for both.
    let peer = Peer::connect(&broker, "user");
    let mut first = Proc::spawn(env!("CARGO_BIN_EXE_will-demo"), &demo_args);
    wait_until("will-demo's session", DEADLINE, || {
        peer.publish("drain", "ready", 2, false);
        first.stdout().iter().any(|l| l == "ready")
    });
    first.signal("TERM");
    assert_eq!(first.wait_exit(DEADLINE), Some(0));
    let mut sub = Command::new("mosquitto_sub")
        .args(&reference)
        .args(["-C", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the reference session", DEADLINE, || {
        peer.publish("drain", "ready", 2, false);
        sub.try_wait().ok().flatten().is_some()
    });
    let sent: Vec<usize> = (0..BACKLOG).collect();
    for n in &sent {
        peer.publish("drain", n.to_string(), 2, false);
    }
    drop(peer);

    let demo = Proc::spawn(env!("CARGO_BIN_EXE_will-demo"), &demo_args);
    let mosq = Proc::spawn("mosquitto_sub", &reference);
    let both = || (numbers(&demo.stdout()).len(), numbers(&mosq.stdout()).len());
    for k in 1..=4 {
        let at = k * BACKLOG / 6;
        wait_until("the drain to go on", Duration::from_secs(60), || {
            let (a, b) = both();
            a.min(b) >= at
        });
        broker.restart();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let (a, b) = both();
        let done = |got: Vec<usize>| Audit::of(&sent, &got).lost == 0;
        if a >= BACKLOG
            && b >= BACKLOG
            && done(numbers(&demo.stdout()))
            && done(numbers(&mosq.stdout()))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = Audit::of(&sent, &numbers(&demo.stdout()));
    let theirs = Audit::of(&sent, &numbers(&mosq.stdout()));
    eprintln!("broker SIGTERM x4 during a {BACKLOG}-message drain: will-demo {ours:?}; mosquitto_sub -c {theirs:?}");
    assert_eq!((ours.lost, ours.misplaced), (0, 0), "will-demo: {ours:?}");
    assert_eq!(
        (theirs.lost, theirs.misplaced),
        (0, 0),
        "the broker lost: {theirs:?}"
    );
    // Replays are the broker's (Mosquitto 2.0.11 re-sends what was completed
    // since its last save, to every client alike); a repeat right after
    // itself is ours, at most the one message in hand per restart.
    assert!(ours.duplicated <= 8, "{ours:?}");
}
