//! controller: the controller of the book's Figure 4.2.
//!
//! - Subscribes (QoS 2 by default, durable session, client id `controller`)
//!   to `tank/+/level`, `pump/+/state`, `pump/+/status`, `tank/+/status`,
//!   and `alarm/+` for the retained alarms of a previous run.
//! - Publishes `pump/<id>/command` = `{"state":"on"|"off"}` (not retained)
//!   and `alarm/<id>` = `{"alarm":…,"active":…,"detail":…}` (retained).
//! - Availability on `controller/status`: retained `online`, will `offline`.
//! - A dashboard on stdout: a table on a terminal, one line per event when piped.

use clap::Parser;

fn main() {
    let args = controller::Args::parse();
    pimqtt::serve(args.common.debug, |inbox| controller::run(&args, inbox))
}
