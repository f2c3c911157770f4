//! pump-sim: the pump of the book's Figure 4.2, simulated.
//!
//! - Subscribes to `pump/<id>/command`: `{"state": "on"|"off"}` or a bare
//!   `on`/`off` (any case); anything else is a warning and changes nothing.
//! - Publishes `pump/<id>/state` = `{"state":"on"}` (retained, QoS 2 by
//!   default) on every change, in answer to every valid command, and every
//!   `--heartbeat`. Starts `off`.
//! - Availability on `pump/<id>/status`: retained `online`, will `offline`.
//! - Client id `pump-sim-<id>`; `--count N` runs N pumps, one connection each.

use clap::Parser;

fn main() {
    let args = pump_sim::Args::parse();
    pimqtt::serve(args.common.debug, |inbox| pump_sim::run(&args, inbox))
}
