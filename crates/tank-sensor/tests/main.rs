//! Every integration test of tank-sensor, in one binary (as ripgrep does:
//! one link of Paho C and OpenSSL instead of one per file). Each module is
//! one former `tests/<name>.rs`; they share the `pimqtt-testkit` crate.

mod backoff;
mod persistence;
mod refused;
mod stop;
mod tank_sensor;
