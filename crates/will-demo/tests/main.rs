//! will-demo's integration tests against a real Mosquitto, in one binary.
//! `faults.rs` is a binary of its own: see Cargo.toml.

mod will;
