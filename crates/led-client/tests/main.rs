//! led-client's integration tests against a real Mosquitto, in one binary
//! (as ripgrep does: one link of Paho C and OpenSSL instead of one per file).
//! `secure.rs` and `faults.rs` are binaries of their own: see Cargo.toml.

mod discovery;
mod led;
mod mqtt5;
