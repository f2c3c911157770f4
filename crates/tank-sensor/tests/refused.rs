//! A fleet's reconnects never send one publication twice on a connection
//! (issue 20). Upstream Paho C, on every connect, sent the unacknowledged
//! messages of *every* connected session of the process again on their live
//! connections, and a pass cut short made later passes start over from the
//! first message. So a fleet coming back from a broker restart or a flaky
//! network sent the same QoS 2 PUBLISH three times and more on one
//! connection, which Mosquitto 2.0.21 answers by closing it ("protocol
//! error", eclipse-mosquitto#3602), at every connect. Our vendored Paho
//! sends a message again once per connection, at its own connect
//! (vendor/README.md, patch 8). Here the PUBRECs are lost (the proxy lets
//! the broker's replies through only up to the CONNACK), so every level stays
//! in flight while the sessions reconnect one after the other.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::collections::HashMap;
use std::path::Path;

use pimqtt_testkit::{protocol_5, wait_until, Broker, Proc, Proxy, Rng, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");
/// An MQTT 3.1.1 CONNACK: fixed header, length, flags, return code.
const CONNACK_3_1_1: usize = 4;
const TANKS: usize = 3;

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The client id and packet id of a "Received PUBLISH from ID (dN, q2, rN,
/// mID, …" line of Mosquitto's log.
fn received_qos2(line: &str) -> Option<(&str, &str)> {
    let rest = line.split("Received PUBLISH from ").nth(1)?;
    let (id, rest) = rest.split_once(" (")?;
    let mut fields = rest.split(", ");
    let _dup = fields.next()?;
    (fields.next()? == "q2").then_some(())?;
    let _retain = fields.next()?;
    let mid = fields.next()?.strip_prefix('m')?;
    Some((id, mid))
}

/// For each connection of each client (a CONNACK starts one), the packet
/// ids of QoS 2 PUBLISHes the broker received more than once on it.
fn sent_twice_on_one_connection(lines: &[String]) -> Vec<String> {
    let mut conn: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<(String, usize, String), usize> = HashMap::new();
    for line in lines {
        if let Some(rest) = line.split("Sending CONNACK to ").nth(1) {
            let id = rest.split(' ').next().unwrap_or_default().to_string();
            *conn.entry(id).or_default() += 1;
        } else if let Some((id, mid)) = received_qos2(line) {
            let n = conn.get(id).copied().unwrap_or_default();
            *seen.entry((id.into(), n, mid.into())).or_default() += 1;
        }
    }
    let mut twice: Vec<String> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, c, mid), n)| format!("{id} connection {c}: m{mid} {n} times"))
        .collect();
    twice.sort();
    twice
}

fn connects(p: &Proc) -> usize {
    p.stderr()
        .iter()
        .filter(|l| l.contains(" connected to "))
        .count()
}

#[test]
fn a_fleets_reconnects_never_send_a_publication_twice_on_one_connection() {
    if protocol_5() {
        // The proxy counts the 3.1.1 CONNACK's bytes; MQTT 5's varies. The
        // resend logic is the same on both versions.
        eprintln!("MQTT 5: the proxy cannot tell the CONNACK's length; nothing to check");
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("mosquitto.log");
    let broker = Broker::start_with(&format!("log_dest file {}\nlog_type all\n", log.display()));
    let proxy = Proxy::start(broker.port);
    let state = tempfile::tempdir().unwrap();
    let count = TANKS.to_string();
    let mut tanks = proxy.run(EXE, state.path(), &["--count", &count, "--interval", "0.2"]);
    wait_until("every tank connected", DEADLINE, || {
        connects(&tanks) >= TANKS
    });

    // From now on the broker's replies stop after the CONNACK: every
    // PUBREC is lost, every level stays in flight.
    proxy.replies_only(Some(CONNACK_3_1_1));
    proxy.reset_all();
    wait_until("every tank connected again", DEADLINE, || {
        connects(&tanks) >= 2 * TANKS
    });
    let levels = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("'tank/") && received_qos2(l).is_some())
            .count()
    };
    let before = levels(&log_lines(&log));
    wait_until("levels in flight on every connection", DEADLINE, || {
        levels(&log_lines(&log)) >= before + 3 * TANKS
    });
    // The sessions reconnect one after the other, each with levels in
    // flight, while the others stay connected.
    let mut rng = Rng::new(7);
    for round in 1..=6 {
        let seen = connects(&tanks);
        assert_eq!(proxy.reset_some(0.01, &mut rng), 1, "round {round}");
        wait_until("a tank back", DEADLINE, || connects(&tanks) > seen);
    }
    // The network heals: everything in flight completes.
    proxy.replies_only(None);
    proxy.reset_all();
    let watcher = broker.watcher(&["tank/+/level"]);
    for t in 1..=TANKS {
        wait_until("every tank's levels flowing again", DEADLINE, || {
            watcher
                .drain(std::time::Duration::from_millis(200))
                .iter()
                .any(|m| m.topic() == format!("tank/{t}/level"))
        });
    }

    let lines = log_lines(&log);
    let twice = sent_twice_on_one_connection(&lines);
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("protocol error"))
        .collect();
    assert!(
        twice.is_empty() && refused.is_empty(),
        "sent more than once on one connection: {twice:#?}; closed for it: {refused:#?}"
    );
    let err = tanks.stderr();
    let fresh = err.iter().filter(|l| l.contains("(new session)")).count();
    assert_eq!(fresh, TANKS, "a session was dropped: {err:#?}");
    tanks.signal("TERM");
    assert_eq!(tanks.wait_exit(DEADLINE), Some(0));
}
