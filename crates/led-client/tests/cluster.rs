//! led-client on the aedes cluster of `scripts/cluster` (issue 14), with
//! every node in `-h`: a level published on another node arrives; the node
//! in use is killed and led-client is on the other within 2 s, and every
//! level published during and after the failover is applied once, in order.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::{Duration, Instant};

use pimqtt_testkit::{wait_until, Audit, Cluster, Peer, Proc, Stream, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_led-client");

/// The levels applied so far (the simulated LED's stdout).
fn applied(p: &Proc) -> Vec<u8> {
    p.stdout()
        .iter()
        .filter_map(|l| l.strip_prefix("brightness ")?.parse().ok())
        .collect()
}

fn level(n: u8) -> String {
    format!(r#"{{"level": {n}}}"#)
}

#[test]
fn cluster_failover_keeps_every_level_in_order() {
    let mut cluster = Cluster::start(2);
    let state = tempfile::tempdir().unwrap();
    // Node A first: led-client connects there.
    let mut args = vec!["--led".to_string(), "sim".into()];
    args.extend(cluster.args(state.path(), &[]));
    let led = Proc::spawn(EXE, &args);
    let on_a = format!("connected to {}", cluster.uri(0));
    led.wait_stderr(&on_a);

    // Published on node B, as the web page does (retained, QoS 2).
    let user = Peer::at(&cluster.uri(1), "user");
    user.publish("led", level(10), 2, true);
    led.wait_stdout("brightness 10");

    cluster.kill(0);
    let killed = Instant::now();
    // During the failover: led-client has no connection; its durable
    // session (in Redis) queues these for it.
    let during: Vec<u8> = (11..=40).collect();
    for &n in &during {
        user.publish("led", level(n), 2, true);
    }
    let published = killed.elapsed();
    let on_b = format!("connected to {}", cluster.uri(1));
    led.wait_line(Stream::Stderr, DEADLINE, |l| l.contains(&on_b));
    let moved = killed.elapsed();
    // Re-subscribing, led-client gets the retained level again (MQTT 3.1.1
    // 3.3.1.3; Mosquitto does the same), after the queued ones: once that
    // repeat of 40 is in, the subscription is made again and what follows
    // is "after".
    wait_until(
        "the queued levels and the retained repeat",
        DEADLINE,
        || applied(&led).iter().filter(|&&n| n == 40).count() == 2,
    );
    let after: Vec<u8> = (41..=70).collect();
    for &n in &after {
        user.publish("led", level(n), 2, true);
    }
    wait_until("the last level", DEADLINE, || {
        applied(&led).last() == Some(&70)
    });
    // From the failover on (the first level may come twice: live, and as
    // the retained message of a subscription made at that moment).
    let mut sent = during.clone();
    sent.extend(&after);
    let got: Vec<u8> = applied(&led).into_iter().skip_while(|&n| n == 10).collect();
    let audit = Audit::of(&sent, &got);
    eprintln!(
        "failover: on node B {moved:?} after node A was killed (levels during it \
         published within {published:?}); {audit:?}"
    );
    assert!(
        moved < Duration::from_secs(2),
        "led-client took {moved:?} to move to node B"
    );
    assert_eq!(
        (audit.lost, audit.misplaced, audit.replayed),
        (0, 0, 0),
        "{audit:?}: applied {got:?}; nodes: {}; led-client: {:#?}",
        cluster.logs(),
        led.stderr()
    );
    assert_eq!(audit.duplicated, 1, "only the retained repeat: {got:?}");
}
