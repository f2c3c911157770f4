//! led-client's logic, kept out of `main.rs` so tests and the benchmark can
//! reason about it. `led` holds the two outputs (`led::sim` and `led::gpio`).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use log::{info, warn};

use pimqtt::discovery::{Discovery, Entity, HaArgs};
use pimqtt::payload::{self, BadPayload, LedRequest};
use pimqtt::{topics, CommonArgs, Delivery, Event, Inbox, Next, Session, SessionConfig};

pub mod led;

use led::{Led, LedKind};

/// Subscribes to `led` and sets a PWM LED's brightness from
/// `{"level": 0..100}` messages, like the book's mqtt_led.py.
///
/// Try it:  mosquitto_pub -r -q 2 -t led -m '{"level": 100}'
#[derive(Debug, Clone, Parser)]
#[command(
    name = "led-client",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
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

    #[command(flatten)]
    pub ha: HaArgs,
}

/// `led/state` goes out at most this often (Home Assistant and the pages
/// follow it within this).
const STATE_EVERY: Duration = Duration::from_millis(200);

/// Runs until a stop is requested: connects (retrying while the broker is
/// away), applies every `led` message before the broker hears it was
/// received, publishes what the LED does on `led/state`, then publishes
/// `offline`, disconnects and turns the LED off.
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    let ha = args.ha.discovery()?;
    let mut out = led::open(args.led, args.pin)?;
    let mut subscriptions = vec![topics::LED.to_string()];
    subscriptions.extend(ha.iter().flat_map(Discovery::subscriptions));
    let session = Session::new(
        &args.common,
        SessionConfig {
            default_client_id: "LEDClient".into(),
            status_topic: Some(topics::LED_STATUS.into()),
            subscriptions,
            ..SessionConfig::default()
        },
        inbox,
    )?;
    if let Some(ha) = &ha {
        ha.subscribe(&session);
    }
    let entities = [Entity::led_light(session.qos())];
    // The level the LED has: off until a message sets one.
    let mut level = 0;
    info!(
        "LED client: broker {}, topic {:?}; Ctrl+C to stop",
        session.uri(),
        topics::LED
    );
    session.start();

    // led/state says what the LED does now, at most every STATE_EVERY and
    // only when that changed: not every level of a backlog (a drain of
    // thousands of queued levels must not queue thousands of QoS 2
    // publications in front of a stop, nor double the work per message).
    let mut unreported = false;
    // The level last published, and when.
    let mut said: Option<(u8, Instant)> = None;
    let result = loop {
        let deadline =
            unreported.then(|| said.map_or_else(Instant::now, |(_, at)| at + STATE_EVERY));
        match inbox.next(deadline) {
            Next::Event(Event::Message(d)) => {
                match handle(&mut *out, &session, ha.as_ref(), &entities, &d) {
                    Ok(Some(now)) => {
                        level = now;
                        unreported |= said.map(|(l, _)| l) != Some(now);
                    }
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            Next::Timeout => {
                session.publish(topics::LED_STATE, LedRequest::Level(level).to_json(), true);
                said = Some((level, Instant::now()));
                unreported = false;
            }
            Next::Event(Event::Connected { .. }) => {
                // What the LED does now (off at start), before any level
                // the broker hands over: led/state is never stale.
                unreported = true;
                if let Some(ha) = &ha {
                    ha.connected(&session);
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) => {}
            Next::Stopped => break Ok(()),
        }
    };
    // The LED goes off at the end: say so before saying goodbye, so the
    // retained led/state left behind is what the LED does ({"level":0}),
    // not the last level it had (issue 23). It goes out ahead of
    // `offline` and the DISCONNECT, on the same connection.
    if level != 0 || said.map(|(l, _)| l) != Some(0) {
        session.publish(topics::LED_STATE, LedRequest::Level(0).to_json(), true);
    }
    // Messages the broker hands over while we say goodbye are applied too:
    // it already counts them as ours.
    let mut late = Ok(());
    session.close(inbox, |d| {
        if late.is_ok() {
            late = handle(&mut *out, &session, ha.as_ref(), &entities, &d).map(drop);
        }
    });
    info!("stopping: LED off");
    let off = out.set(0).context("could not turn the LED off");
    result.and(late).and(off)
}

/// One message: Home Assistant's (its status, or a config to move), or a
/// level to apply.
/// Returns the level applied, for `led/state` (retained, so Home Assistant
/// and the pages show what the LED does, not what was asked).
fn handle(
    out: &mut dyn Led,
    session: &Session,
    ha: Option<&Discovery>,
    entities: &[Entity],
    d: &Delivery,
) -> anyhow::Result<Option<u8>> {
    if let Some(ha) = ha.filter(|ha| ha.is_ours(session, d)) {
        if ha.heard(session, d) {
            ha.announce(session, entities);
        }
        return Ok(None);
    }
    apply(out, d.topic(), d.payload(), d.msg.retained())
}

/// Applies one `led` message per SPEC's rules; bad input is one log line.
/// Returns the level the LED now has, if the message set one.
/// Each applied level is logged at info (`LED at brightness N %`), marked
/// when it is the retained level the broker hands over on subscribing.
pub fn apply(
    out: &mut dyn Led,
    topic: &str,
    bytes: &[u8],
    retained: bool,
) -> anyhow::Result<Option<u8>> {
    match payload::parse_led(bytes) {
        Ok(LedRequest::Level(level)) => {
            // The LED first, then the line saying it is so.
            out.set(level)?;
            info!("{}", applied_line(topic, level, retained));
            Ok(Some(level))
        }
        Ok(LedRequest::Off) => {
            warn!(
                "{topic}: request for unknown LED level in {}; turning the LED off",
                payload::quote(bytes)
            );
            out.set(0)?;
            Ok(Some(0))
        }
        Err(BadPayload::Empty) => {
            info!("{topic}: empty payload (retained level cleared); LED unchanged");
            Ok(None)
        }
        Err(e) => {
            warn!("{topic}: {e}: {}; LED unchanged", payload::quote(bytes));
            Ok(None)
        }
    }
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
