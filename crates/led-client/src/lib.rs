//! led-client's logic, kept out of `main.rs` so tests and the benchmark can
//! reason about it. `led` holds the two outputs (`led::sim` and `led::gpio`).

use anyhow::Context;
use clap::Parser;
use log::{info, warn};

use pimqtt::payload::{self, BadPayload, LedRequest};
use pimqtt::{topics, CommonArgs, Event, Inbox, Next, Session, SessionConfig};

pub mod led;

use led::{Led, LedKind};

/// Subscribes to `led` and sets a PWM LED's brightness from
/// `{"level": 0..100}` messages, like the book's mqtt_led.py.
///
/// Try it:  mosquitto_pub -r -q 2 -t led -m '{"level": 100}'
#[derive(Debug, Clone, Parser)]
#[command(name = "led-client", version, disable_help_flag = true)]
pub struct Args {
    /// Where the brightness goes: the Pi's GPIO, a simulated LED that prints
    /// `brightness <N>` lines on stdout, or auto (GPIO when the Pi's GPIO is
    /// present, else simulated).
    #[arg(long, value_enum, default_value_t = LedKind::Auto)]
    pub led: LedKind,

    /// BCM number of the GPIO pin the LED is wired to (the book uses 21).
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u8).range(0..=27))]
    pub pin: u8,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs until a stop is requested: connects (retrying while the broker is
/// away), applies every `led` message before the broker hears it was
/// received, then publishes `offline`, disconnects and turns the LED off.
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    let mut out = led::open(args.led, args.pin)?;
    let session = Session::new(
        &args.common,
        SessionConfig {
            default_client_id: "LEDClient".into(),
            status_topic: Some(topics::LED_STATUS.into()),
            subscriptions: vec![topics::LED.into()],
            ..SessionConfig::default()
        },
        inbox,
    )?;
    info!(
        "LED client: broker {}, topic {:?}; Ctrl+C to stop",
        session.uri(),
        topics::LED
    );
    session.start();

    let result = loop {
        match inbox.next(None) {
            Next::Event(Event::Message(d)) => {
                if let Err(e) = apply(&mut *out, d.topic(), d.payload(), d.msg.retained()) {
                    break Err(e);
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) | Next::Timeout => {}
            Next::Stopped => break Ok(()),
        }
    };
    // Messages the broker hands over while we say goodbye are applied too:
    // it already counts them as ours.
    let mut late = Ok(());
    session.close(inbox, |d| {
        if late.is_ok() {
            late = apply(&mut *out, d.topic(), d.payload(), d.msg.retained());
        }
    });
    info!("stopping: LED off");
    let off = out.set(0).context("could not turn the LED off");
    result.and(late).and(off)
}

/// Applies one `led` message per SPEC's rules; bad input is one log line.
/// Each applied level is logged at info (`LED at brightness N %`), marked
/// when it is the retained level the broker hands over on subscribing.
pub fn apply(out: &mut dyn Led, topic: &str, bytes: &[u8], retained: bool) -> anyhow::Result<()> {
    match payload::parse_led(bytes) {
        Ok(LedRequest::Level(level)) => {
            info!("{}", applied_line(topic, level, retained));
            out.set(level)?;
        }
        Ok(LedRequest::Off) => {
            warn!(
                "{topic}: request for unknown LED level in {}; turning the LED off",
                payload::quote(bytes)
            );
            out.set(0)?;
        }
        Err(BadPayload::Empty) => {
            info!("{topic}: empty payload (retained level cleared); LED unchanged");
        }
        Err(e) => warn!("{topic}: {e}: {}; LED unchanged", payload::quote(bytes)),
    }
    Ok(())
}

/// The info line for an applied level.
pub fn applied_line(topic: &str, level: u8, retained: bool) -> String {
    format!(
        "{topic}: LED at brightness {level} %{}",
        if retained {
            " (retained: the last level set)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn applied_levels_are_one_info_line_each() {
        assert_eq!(
            applied_line("led", 40, false),
            "led: LED at brightness 40 %"
        );
        assert_eq!(
            applied_line("led", 75, true),
            "led: LED at brightness 75 % (retained: the last level set)"
        );
    }
}
