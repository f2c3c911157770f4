//! led-client: the book's `mqtt_led.py` in Rust.
//!
//! - Subscribes to `led` (QoS 2 by default) on a durable session, client id
//!   `LEDClient`; the retained level sets the LED at start-up and messages
//!   queued while it was away are replayed in order.
//! - Payload `{"level": 0..100}` (a number or a string holding one).
//! - Availability on `led/status`: retained `online`, will `offline`.
//! - Drives a PWM LED on BCM 21 through rppal, or prints `brightness <N>`.

use clap::Parser;

fn main() {
    let args = led_client::Args::parse();
    pimqtt::serve(args.common.debug, |inbox| led_client::run(&args, inbox))
}
