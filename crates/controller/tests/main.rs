//! Every integration test of the controller (with tank-sensor and pump-sim for the closed loop), in one binary (as ripgrep does:
//! one link of Paho C and OpenSSL instead of one per file). Each module is
//! one former `tests/<name>.rs`; they share the `pimqtt-testkit` crate.

mod mqtt5;
mod tank_system;
