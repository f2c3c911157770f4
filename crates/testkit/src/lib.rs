//! Test support shared by every crate's integration tests and the
//! benchmarks (a dev-only crate, never published or shipped): a private
//! Mosquitto on a free loopback port with its own data directory, a Paho
//! client to publish and watch, and a handle on a running binary whose
//! stdout and stderr lines can be waited for with a deadline.
//!
//! Nothing here sleeps for a fixed time to "let things settle": every wait is
//! for a condition, with a deadline that fails the test with what was seen.
//!
//! `PIMQTT_MOSQUITTO` names the Mosquitto binary to run (default: the
//! `mosquitto` on `PATH`), to test against another build of the broker.
//! `PIMQTT_TARGET_BIN_DIR` and `PIMQTT_TARGET_RUNNER` run the programs
//! under test from another build, as the ARM builds under qemu-user
//! ([`Proc::spawn`]).
//!
//! What lives where, each re-exported here: `broker.rs` (a private
//! Mosquitto, free ports), `cluster.rs` (the aedes cluster), `peer.rs`
//! (Paho peers), `proc.rs` (a running binary, signals, other packages'
//! binaries), `audit.rs` (what a fault test applied against what was
//! sent), `chaos.rs` (a proxy that injects network faults; a seeded
//! schedule of them in chaos/schedule.rs); waiting ([`poll`],
//! [`wait_until`]) and the `--help` check are here.

#![allow(clippy::unwrap_used)] // test support: a failed setup should fail the test loudly

use std::time::{Duration, Instant};

mod audit;
mod broker;
mod chaos;
mod cluster;
mod peer;
pub mod powercut;
mod proc;

pub use audit::*;
pub use broker::*;
pub use chaos::*;
pub use cluster::*;
pub use peer::*;
pub use proc::*;

/// The default deadline for a wait; generous for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `cond` every 10 ms until it holds (true) or `limit` passes (false).
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds, or panics naming `what`.
pub fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(poll(limit, cond), "timed out waiting for {what}");
}

/// Issue 11: a program's `--help` lists its own flags (`own` is one of
/// them) before the broker flags it shares with the others.
pub fn assert_own_flags_first(mut cmd: clap::Command, own: &str) {
    let help = cmd.render_long_help().to_string();
    let own_at = help
        .find(own)
        .unwrap_or_else(|| panic!("{own} in help:\n{help}"));
    let host_at = help
        .find("--host")
        .unwrap_or_else(|| panic!("--host in help:\n{help}"));
    assert!(
        own_at < host_at,
        "own flags before the broker flags:\n{help}"
    );
}
