//! The water-tank system on the aedes cluster of `scripts/cluster` (issue
//! 14): the controller on node A, sensors and pumps on node B, each with
//! both nodes in `-h`. The loop works; a node is killed, then the other,
//! and each time every loop recovers and no alarm stays raised. Then
//! availability and wills as on Mosquitto, across nodes.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::collections::HashSet;
use std::time::Duration;

use pimqtt_testkit::{sibling, wait_until, Cluster, Peer, Proc, DEADLINE};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_controller");
const TANKS: usize = 3;
/// More than a will sweep: a node looks every four heartbeats (2 s in the
/// tests) for the wills of clients of a node silent for three.
const WILL_SWEEP: Duration = Duration::from_secs(6);

/// `-h B,A`: the sensors' and pumps' list, node B first.
fn b_first(cluster: &Cluster, state: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = cluster.args(state, extra);
    a[1] = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        cluster.ports[1], cluster.ports[0]
    );
    a
}

/// Alarms raised and not cleared, from the controller's event lines.
fn raised(ctl: &Proc) -> HashSet<(String, String)> {
    let mut raised = HashSet::new();
    for l in ctl.stdout() {
        let words: Vec<&str> = l.split(' ').collect();
        if let ["alarm", id, kind, state, ..] = words[..] {
            if state == "raised" {
                raised.insert((id.to_string(), kind.to_string()));
            } else {
                raised.remove(&(id.to_string(), kind.to_string()));
            }
        }
    }
    raised
}

/// Every pump goes on and then off again, as seen from `since` on in
/// pump-sim's output: the loops work.
fn every_loop_cycles(pumps: &Proc, since: usize, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        let out = pumps.stdout();
        let fresh = &out[since.min(out.len())..];
        (1..=TANKS).all(|id| {
            let on = fresh.iter().position(|l| *l == format!("pump {id} on"));
            on.is_some_and(|k| fresh[k..].iter().any(|l| *l == format!("pump {id} off")))
        })
    });
}

#[test]
fn cluster_the_loop_survives_either_node() {
    let mut cluster = Cluster::start(2);
    let state = tempfile::tempdir().unwrap();
    let count = TANKS.to_string();
    // Fast tanks: a cycle (below 50 % to 100 % and back) takes seconds.
    let sim = [
        "--count",
        &count,
        "--initial",
        "60",
        "--drain",
        "20",
        "--fill",
        "60",
        "--interval",
        "0.2",
    ];
    let ctl = Proc::spawn(
        CONTROLLER,
        &cluster.args(state.path(), &["--dashboard", "lines"]),
    );
    ctl.wait_stderr(&format!("connected to {}", cluster.uri(0)));
    let pumps = Proc::spawn(
        sibling!("pump-sim"),
        &b_first(&cluster, state.path(), &["--count", &count]),
    );
    let _sensors = Proc::spawn(
        sibling!("tank-sensor"),
        &b_first(&cluster, state.path(), &sim),
    );
    every_loop_cycles(&pumps, 0, "every loop to cycle on the cluster");

    for (victim, name) in [(0, "A (the controller's)"), (1, "B (the devices')")] {
        cluster.resume(1 - victim);
        let since = pumps.stdout().len();
        cluster.kill(victim);
        every_loop_cycles(
            &pumps,
            since,
            &format!("every loop to cycle after node {name} was killed"),
        );
        wait_until("every alarm to clear", DEADLINE, || raised(&ctl).is_empty());
        eprintln!("cluster: node {name} killed: every loop cycled again, no alarm left");
    }

    // What the cluster keeps agrees: every retained alarm is cleared.
    let peer = Peer::at(&cluster.uri(0), "alarm-check");
    peer.subscribe("alarm/+");
    for m in peer.drain(Duration::from_millis(500)) {
        assert!(
            m.payload_str().contains(r#""active":false"#),
            "{} stays {}",
            m.topic(),
            m.payload_str()
        );
    }
    assert!(raised(&ctl).is_empty(), "{:?}", raised(&ctl));
}

#[test]
fn cluster_availability_and_wills_as_on_mosquitto() {
    let mut cluster = Cluster::start(2);
    let state = tempfile::tempdir().unwrap();
    let pump = sibling!("pump-sim");
    // The watcher is on node B; the pumps on node A.
    let watcher = Peer::at(&cluster.uri(1), "watcher");
    watcher.subscribe("pump/+/status");
    let on_a = |c: &Cluster, id: &str| c.node_args(0, state.path(), &["--pump", id]);

    // A pump killed: node A publishes its will, seen on node B.
    let mut p1 = Proc::spawn(&pump, &on_a(&cluster, "1"));
    watcher.expect("pump/1/status", "online");
    p1.kill();
    watcher.expect("pump/1/status", "offline");
    // Stopped: its own `offline`, and no will after it.
    let p1 = Proc::spawn(&pump, &on_a(&cluster, "1"));
    watcher.expect("pump/1/status", "online");
    p1.signal("TERM");
    watcher.expect("pump/1/status", "offline");
    let extra: Vec<String> = watcher
        .drain(Duration::from_secs(1))
        .iter()
        .map(|m| format!("{} {}", m.topic(), m.payload_str()))
        .collect();
    assert!(extra.is_empty(), "after a clean stop: {extra:?}");
    // The retained status, read on the other node.
    let late = Peer::at(&cluster.uri(1), "late");
    late.subscribe("pump/1/status");
    late.expect("pump/1/status", "offline");

    // Pump 2 lists both nodes, pump 3 node A alone. Node A dies and pump
    // 3 with it: node B takes node A for dead (three missed heartbeats,
    // checked every four) and publishes pump 3's will. Pump 2 moves to node
    // B, so its old will, held under node A, must not be published.
    let _p2 = Proc::spawn(&pump, &cluster.args(state.path(), &["--pump", "2"]));
    watcher.expect("pump/2/status", "online");
    let mut p3 = Proc::spawn(&pump, &on_a(&cluster, "3"));
    watcher.expect("pump/3/status", "online");
    cluster.kill(0);
    p3.kill();
    let seen = statuses_until(&watcher, "pump/3/status offline", DEADLINE);
    assert!(
        seen.last().is_some_and(|s| s == "pump/3/status offline"),
        "pump 3 died with node A and node B never said so: {seen:?}"
    );
    // Node B sweeps every 2 s: a will of pump 2 left under node A would be
    // out in the sweep that sent pump 3's or the next.
    let mut seen = seen;
    seen.extend(statuses_until(&watcher, "(none)", WILL_SWEEP));
    assert!(
        !seen.iter().any(|s| s == "pump/2/status offline"),
        "pump 2 moved to node B, yet its will was published: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s == "pump/2/status online"),
        "pump 2 did not say online on node B: {seen:?}"
    );

    // Node A crashes and is started again at once (as a service manager
    // would), before node B could take it for dead: pump 4, which died
    // with it, is reported offline all the same (by the new node A).
    cluster.resume(0);
    let mut p4 = Proc::spawn(&pump, &on_a(&cluster, "4"));
    watcher.expect("pump/4/status", "online");
    cluster.kill(0);
    p4.kill();
    cluster.resume(0);
    let seen = statuses_until(&watcher, "pump/4/status offline", DEADLINE);
    assert!(
        seen.last().is_some_and(|s| s == "pump/4/status offline"),
        "pump 4 died with node A, which came back at once, and nobody said so: {seen:?}"
    );
}

/// The `topic payload` of each message the watcher gets, up to and
/// including `last`, or all within `limit` if `last` never comes.
fn statuses_until(watcher: &Peer, last: &str, limit: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    watcher.watch(limit, |m| {
        seen.push(format!("{} {}", m.topic(), m.payload_str()));
        (seen.last().map(String::as_str) == Some(last)).then_some(())
    });
    seen
}
