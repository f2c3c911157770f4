//! tank-sensor against a real Mosquitto: levels from stdin (published at
//! once, bad lines warned, end of input is a clean exit), the simulated
//! tank following its pump, and a fleet of tanks in one process.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::Duration;

use pimqtt_testkit::{Broker, Proc, Stream, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");

#[test]
fn stdin_levels_are_published_at_once() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/1/level", "tank/1/status"]);
    let mut s = broker.run(EXE, state.path(), &["--source", "stdin"]);
    w.expect("tank/1/status", "online");
    s.write_stdin("63.46\n");
    w.expect("tank/1/level", r#"{"level":63.5}"#);
    s.wait_stdout("tank 1 63.5");

    s.write_stdin("abc\n101\n\nNaN\n40\n");
    w.expect("tank/1/level", r#"{"level":40.0}"#);
    let warnings = s.stderr_with("stdin line", 3);
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(
        warnings[0].contains("line 2") && warnings[0].contains("abc"),
        "{warnings:#?}"
    );

    s.close_stdin();
    assert_eq!(s.wait_exit(DEADLINE), Some(0));
    w.expect("tank/1/status", "offline");
    // A late subscriber still gets the last level: it is retained.
    let late = broker.watcher(&["tank/1/level"]);
    late.expect("tank/1/level", r#"{"level":40.0}"#);
}

/// A level typed before the first connection (read at once at start-up,
/// before the first connect attempt as often as not) is published once
/// connected, not dropped with "Client disconnected". Five starts, as the
/// race is lost only now and then.
#[test]
fn a_level_typed_before_the_first_connection_is_published() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/1/level"]);
    for level in 51..=55 {
        let mut s = broker.run(EXE, state.path(), &["--source", "stdin"]);
        s.write_stdin(&format!("{level}\n"));
        w.expect("tank/1/level", &format!(r#"{{"level":{level}.0}}"#));
        s.close_stdin();
        assert_eq!(s.wait_exit(DEADLINE), Some(0));
        assert!(
            !s.stderr().iter().any(|l| l.contains("could not queue")),
            "{:#?}",
            s.stderr()
        );
    }
}

fn levels(p: &Proc, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let l = p.wait_line(Stream::Stdout, DEADLINE, |l| l.starts_with("tank 1 "));
            l["tank 1 ".len()..].parse().unwrap()
        })
        .collect()
}

#[test]
fn the_simulated_tank_drains_and_fills_with_its_pump() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/1/status"]);
    let s = broker.run(
        EXE,
        state.path(),
        &[
            "--initial",
            "50",
            "--drain",
            "10",
            "--fill",
            "40",
            "--interval",
            "0.1",
        ],
    );
    w.expect("tank/1/status", "online");
    let down = levels(&s, 4);
    assert!(down.windows(2).all(|p| p[1] < p[0]), "draining: {down:?}");
    w.publish("pump/1/state", r#"{"state":"on"}"#, 2, true);
    // Skip the reports already on their way, then it must rise.
    let up = loop {
        let l = levels(&s, 3);
        if l.windows(2).all(|p| p[1] > p[0]) {
            break l;
        }
    };
    assert!(up[0] < 60.0, "{up:?}");
    w.publish("pump/1/state", "garbage", 2, false);
    s.wait_stderr("pump/1/state");
}

#[test]
fn a_fleet_has_one_connection_and_topic_per_tank() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/+/status", "tank/+/level"]);
    let mut s = broker.run(
        EXE,
        state.path(),
        &["--tank", "north", "--count", "3", "--source", "stdin"],
    );
    let want: Vec<String> = ["north-1", "north-2", "north-3"]
        .iter()
        .map(|id| format!("tank/{id}/status"))
        .collect();
    w.expect_all(&want, "online");
    s.write_stdin("north-2 12\n");
    w.expect("tank/north-2/level", r#"{"level":12.0}"#);
    s.write_stdin("55\n");
    for id in ["north-1", "north-2", "north-3"] {
        s.wait_stdout(&format!("tank {id} 55.0"));
    }
    s.write_stdin("south 1\n");
    s.wait_stderr("not one of");
    s.signal("INT");
    assert_eq!(s.wait_exit(DEADLINE), Some(0));
    let mut offline = 0;
    for m in w.drain(Duration::from_secs(1)) {
        offline += usize::from(m.topic().ends_with("/status") && m.payload_str() == "offline");
    }
    assert_eq!(offline, 3, "each tank says goodbye");
}

#[test]
fn bad_flags_are_clear_errors() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    for (flags, part) in [
        (&["--interval", "0"][..], "--interval"),
        (&["--initial", "150"][..], "--initial"),
        (&["--tank", "a+b"][..], "single topic level"),
    ] {
        let mut s = broker.run(EXE, state.path(), flags);
        assert_eq!(s.wait_exit(DEADLINE), Some(2), "{flags:?}");
        assert!(
            s.stderr().iter().any(|l| l.contains(part)),
            "{flags:?}: {:#?}",
            s.stderr()
        );
    }
}

/// Issue 10: a 60 KB bad pump state is one warning line of normal length.
#[test]
fn a_huge_bad_pump_state_is_one_short_warning() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/1/status"]);
    let s = broker.run(EXE, state.path(), &["--interval", "600"]);
    w.expect("tank/1/status", "online");
    let huge = "y".repeat(60 * 1024);
    w.publish("pump/1/state", huge.clone(), 2, false);
    let line = s.wait_stderr("pump/1/state");
    assert!(line.len() < 400, "{} bytes: {line}", line.len());
    assert!(line.contains(&format!("({} bytes)", huge.len())), "{line}");
}
