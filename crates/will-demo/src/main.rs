//! will-demo: the book's "Saying goodbye with a Will" exercise as one program.
//!
//! - Subscribes to `-t` (default `pyiot`) with `--qos` (default 2) on a
//!   clean session (as mosquitto_sub; `-c` for a durable one), client id
//!   `will-demo`, and prints every payload.
//! - Registers a last will: `--will-payload` (default `Good Bye`) on
//!   `--will-topic` (default: `-t`), QoS `--will-qos` (2), retained with
//!   `--will-retain`. No availability topic: the will is the point.
//! - Ctrl+C / SIGTERM drop the connection without a DISCONNECT, so the
//!   broker publishes the will (as Ctrl+C on the book's mosquitto_sub 1.5
//!   did); `--graceful` disconnects cleanly instead, and so does `-C N`.

use clap::Parser;

fn main() {
    let args = will_demo::Args::parse();
    pimqtt::logging::init(args.common.debug);
    let inbox = pimqtt::Inbox::new();
    let signals = if args.graceful {
        pimqtt::shutdown::stop_on_signals(inbox.stop())
    } else {
        pimqtt::shutdown::on_signals(will_demo::drop_connection)
    };
    let result = signals.and_then(|()| will_demo::run(&args, &inbox));
    pimqtt::exit_with(result)
}
