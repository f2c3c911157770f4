//! A stop is quick even with a publication in flight (vendored Paho C,
//! `vendor/patches/0002-disconnect-now.patch`): the Rust binding turns our
//! "disconnect now" (a timeout of 0) into 1 ms, and Paho C 1.3.16 looks at
//! a disconnect whose timeout is not over only every 3 s, so a stop took up
//! to 3 s whenever one of our QoS 1/2 publications was still unanswered.

#![allow(clippy::unwrap_used)] // a failed test setup should fail loudly

use std::time::{Duration, Instant};

use pimqtt_testkit::{signal, Broker, DEADLINE};

const EXE: &str = env!("CARGO_BIN_EXE_tank-sensor");

/// A frozen broker (SIGSTOP): it keeps its connections open and answers
/// nothing, so a publication sent now stays in flight. Thawed on drop,
/// also when the test fails.
struct Frozen(u32);

impl Frozen {
    fn new(broker: &Broker) -> Frozen {
        let pid = broker.pid().unwrap();
        signal(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// SIGTERM with a QoS 2 level unanswered: the program exits 0 well within
/// a second, three times over (the 3 s check runs at a phase of its own,
/// so one stop could be quick by luck; three in a row seldom are).
#[test]
fn a_stop_with_a_publication_in_flight_is_quick() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let w = broker.watcher(&["tank/1/status"]);
    for round in 1..=3 {
        let mut s = broker.run(EXE, state.path(), &["--source", "stdin", "-q", "2"]);
        w.expect("tank/1/status", "online");
        let frozen = Frozen::new(&broker);
        s.write_stdin(&format!("{}\n", 40 + round));
        s.wait_stdout(&format!("tank 1 {}.0", 40 + round));
        let t0 = Instant::now();
        s.signal("TERM");
        assert_eq!(s.wait_exit(DEADLINE), Some(0), "round {round}");
        let took = t0.elapsed();
        drop(frozen);
        assert!(
            took < Duration::from_secs(1),
            "round {round}: the stop took {took:?} with a publication in flight (Paho's 3 s \
             disconnect check: vendor/patches/0002); stderr: {:#?}",
            s.stderr()
        );
    }
}
