//! tank-sensor: the level sensor of the book's Figure 4.2.
//!
//! - Publishes `tank/<id>/level` = `{"level": 63.5}` (retained, QoS 2 by
//!   default) every `--interval`, from a simulated tank or from stdin.
//! - The simulated tank follows `pump/<id>/state` (fills while `on`).
//! - Availability on `tank/<id>/status`: retained `online`, will `offline`.
//! - Client id `tank-sensor-<id>`; `--count N` runs N tanks, one connection each.

use clap::Parser;

fn main() {
    let args = tank_sensor::Args::parse();
    pimqtt::serve(args.common.debug, |inbox| tank_sensor::run(&args, inbox))
}
