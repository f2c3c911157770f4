//! The controller's MQTT glue, kept thin: messages become [`logic::Input`]s,
//! decisions become publications, and the dashboard shows both.
//!
//! # Layout
//! - [`logic`]: the decisions, a pure state machine (no MQTT, time passed in).
//! - [`dashboard`]: the table on a terminal, or one line per event.
//! - this file: the flags and the loop.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use log::{debug, info, warn};

use std::collections::BTreeSet;

use pimqtt::cli::{parse_percent, parse_seconds};
use pimqtt::discovery::{Discovery, Entity, HaArgs};
use pimqtt::payload::{self, Alarm, Availability, BadPayload, PumpState, TankLevel};
use pimqtt::topics::{self, Topic};
use pimqtt::{CommonArgs, Delivery, Event, Inbox, Next, Session, SessionConfig};

pub mod dashboard;
pub mod logic;

use dashboard::{Dashboard, Mode};
use logic::{Controller, Input, Output};
#[cfg(test)]
use pimqtt::payload::AlarmKind; // named by the tests below

/// Closes the water-tank loop for any number of tanks: pump on when a
/// tank's level falls below --low, off when it reaches --high, nothing in
/// between. Watches tank/+/level, pump/+/state, pump/+/status and
/// tank/+/status; sends pump/<id>/command; raises and clears alarms on
/// alarm/<id> (retained): pump-offline, sensor-stale (the pump is then
/// commanded off), overflow (level 100 while the pump still reports on after
/// it was commanded off), dry (level 0).
///
/// On a terminal it shows a table redrawn in place (tank, level bar, pump,
/// availability, last seen, alarms). When stdout is not a terminal it prints
/// one line per event instead (see the format below).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "controller",
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    after_help = dashboard::LINE_FORMAT
)]
pub struct Args {
    /// Turn a tank's pump on when its level falls below this percentage.
    #[arg(long, value_name = "PERCENT", default_value_t = 50.0, value_parser = parse_percent)]
    pub low: f64,

    /// Turn the pump off when the level reaches this percentage.
    #[arg(long, value_name = "PERCENT", default_value_t = 100.0, value_parser = parse_percent)]
    pub high: f64,

    /// Send a command again (with a warning) when the pump has not reported
    /// the commanded state within this many seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub command_timeout: Duration,

    /// MQTT 5 only (-V 5): the broker drops a pump command that has waited
    /// this long for its pump, so a pump back from an outage never obeys a
    /// stale one (the controller sends what is needed again) [default:
    /// --command-timeout + 5 s, rounded up to whole seconds].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub command_expiry: Option<Duration>,

    /// Raise pump-offline when a pump has reported no state for this long
    /// (pumps report every few seconds).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_seconds)]
    pub pump_timeout: Duration,

    /// Raise sensor-stale, and command the pump off, when a tank has
    /// published no level for this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub sensor_timeout: Duration,

    /// How to show the tanks: a table redrawn in place, one line per event,
    /// or auto (the table on a terminal, lines when piped).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub dashboard: Mode,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub ha: HaArgs,
}

impl Args {
    /// The message expiry of pump commands (`--command-expiry`). The
    /// default leaves a command alive a little longer than the controller
    /// waits before sending it again: long enough for a pump that is merely
    /// slow to still get it, short enough that a pump away for longer gets
    /// only what the controller decides once it is back.
    pub fn command_expiry(&self) -> Duration {
        self.command_expiry.unwrap_or_else(|| {
            Duration::from_secs(
                (self.command_timeout + Duration::from_secs(5))
                    .as_secs_f64()
                    .ceil() as u64,
            )
        })
    }

    fn config(&self) -> anyhow::Result<logic::Config> {
        if self.command_expiry.is_some() && self.common.protocol != pimqtt::cli::Protocol::V5 {
            bail!(
                "--command-expiry needs MQTT 5 (-V 5): MQTT 3.1.1 cannot make a broker drop \
                 a stale command"
            );
        }
        if self.low > self.high {
            bail!(
                "--low {} is above --high {}: the pump would never stop",
                self.low,
                self.high
            );
        }
        Ok(logic::Config {
            low: self.low,
            high: self.high,
            command_timeout: self.command_timeout,
            pump_timeout: self.pump_timeout,
            sensor_timeout: self.sensor_timeout,
        })
    }
}

/// The topic filters, in this order: retained alarms come last, after the
/// retained levels and states that may clear them.
pub fn subscriptions() -> Vec<String> {
    topics::controller_filters()
}

/// Runs until a stop is requested: connects, decides on every message and
/// deadline, then publishes `offline` on controller/status and disconnects.
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    let mut ctl = Controller::new(args.config()?);
    let expiry = args.command_expiry();
    let mut ha = args.ha.discovery()?.map(Alarms::new);
    let session = Session::new(
        &args.common,
        SessionConfig {
            default_client_id: "controller".into(),
            status_topic: Some(topics::CONTROLLER_STATUS.into()),
            subscriptions: subscriptions()
                .into_iter()
                .chain(ha.iter().flat_map(|a| a.ha.subscriptions()))
                .collect(),
            ..SessionConfig::default()
        },
        inbox,
    )?;
    if let Some(ha) = &ha {
        ha.ha.subscribe(&session);
    }
    session.start();
    let table = match args.dashboard {
        Mode::Auto => std::io::stdout().is_terminal(),
        Mode::Table => true,
        Mode::Lines => false,
    };
    let mut dash = Dashboard::new(table, format!("pi-mqtt controller @ {}", session.uri()));
    let mut out = Vec::new();

    let result = loop {
        let now = Instant::now();
        ctl.tick(now, &mut out);
        publish(&session, expiry, &mut dash, &mut out, now);
        dash.refresh(&ctl, now);
        let next = [ctl.next_deadline(), dash.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        match inbox.next(next) {
            Next::Event(Event::Message(d)) => {
                if let Some(ha) = &mut ha {
                    if ha.heard(&session, &d) {
                        continue;
                    }
                }
                decide(&session, expiry, &mut ctl, &mut dash, &mut out, &d);
            }
            Next::Event(Event::Connected { .. }) => {
                if let Some(ha) = &mut ha {
                    ha.connected(&session);
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) | Next::Timeout => {}
            Next::Stopped => break Ok(()),
        }
    };
    session.close(inbox, |d| {
        decide(&session, expiry, &mut ctl, &mut dash, &mut out, &d)
    });
    dash.finish();
    result
}

/// The alarm binary sensors announced to Home Assistant: four per tank id,
/// announced when the controller first hears of the id (it learns its
/// tanks while it runs) and again when Home Assistant comes online.
struct Alarms {
    ha: Discovery,
    known: BTreeSet<String>,
    /// The connection's sync message came back ([`Discovery::connected`]):
    /// configs of the other form are moved, announcing is safe. Until
    /// then the tanks heard of (retained levels come first) are only
    /// noted.
    synced: bool,
}

impl Alarms {
    fn new(ha: Discovery) -> Alarms {
        Alarms {
            ha,
            known: BTreeSet::new(),
            synced: false,
        }
    }

    /// A new connection: announce once its sync message is back.
    fn connected(&mut self, session: &Session) {
        self.synced = false;
        self.ha.connected(session);
    }

    /// Handles a discovery message (true: the message was that), or
    /// announces the alarms of an id seen for the first time (false: the
    /// controller still has to decide on the message).
    fn heard(&mut self, session: &Session, d: &Delivery) -> bool {
        if self.ha.is_ours(session, d) {
            if self.ha.heard(session, d) {
                self.synced = true;
                self.announce_all(session);
            }
            return true;
        }
        let id = Topic::parse(d.topic()).and_then(Topic::id);
        if let Some(id) = id.filter(|id| !self.known.contains(*id)) {
            self.known.insert(id.to_string());
            if self.synced {
                self.announce_all(session);
            }
        }
        false
    }

    /// Every known tank's alarms: a device config lists all its entities
    /// (one left out would be deleted), so a new tank sends them all.
    fn announce_all(&self, session: &Session) {
        if !self.known.is_empty() {
            let all: Vec<Entity> = self
                .known
                .iter()
                .flat_map(|id| Entity::alarms(id))
                .collect();
            self.ha.announce(session, &all);
        }
    }
}

/// One message into the state machine, its decisions out.
fn decide(
    session: &Session,
    expiry: Duration,
    ctl: &mut Controller,
    dash: &mut Dashboard,
    out: &mut Vec<Output>,
    d: &Delivery,
) {
    if let Some((id, input)) = parse(d.topic(), d.payload(), d.msg.retained()) {
        let now = Instant::now();
        dash.input(id, &input);
        ctl.handle(now, id, input, out);
        publish(session, expiry, dash, out, now);
        // Shown before the broker hears the message was received.
        dash.refresh(ctl, now);
    }
}

/// Sends the decisions and shows them.
/// Pump commands expire after `expiry` (MQTT 5; see `--command-expiry`);
/// alarms are retained states and do not.
fn publish(
    session: &Session,
    expiry: Duration,
    dash: &mut Dashboard,
    out: &mut Vec<Output>,
    now: Instant,
) {
    for o in out.drain(..) {
        match &o {
            Output::Command {
                id,
                state,
                resend,
                why,
            } => {
                let topic = topics::pump_command(id);
                if *resend {
                    warn!("{topic}: {why}; sending {state} again");
                } else {
                    debug!("{topic}: {state} ({why})");
                }
                session.publish_expiring(&topic, state.to_json(), false, expiry);
            }
            Output::Alarm {
                id,
                kind,
                active,
                detail,
            } => {
                let topic = topics::alarm(id);
                if *active {
                    warn!("{topic}: {kind} raised: {detail}");
                } else {
                    info!("{topic}: {kind} cleared");
                }
                let alarm = Alarm {
                    alarm: *kind,
                    active: *active,
                    detail: detail.clone(),
                };
                session.publish(&topic, alarm.to_json(), true);
            }
        }
        dash.output(&o, now);
    }
}

/// Turns a message into an input for one id; bad payloads are one warning
/// naming the topic and quoting at most a short preview of the payload.
pub fn parse<'t>(topic: &'t str, bytes: &[u8], retained: bool) -> Option<(&'t str, Input)> {
    let warn_bad = |e: BadPayload| {
        warn!("{topic}: {e}: {}; ignored", payload::quote(bytes));
        None
    };
    let status = |id: &'t str, make: fn(Availability) -> Input| {
        Availability::try_from(bytes).map_or_else(warn_bad, |a| Some((id, make(a))))
    };
    match Topic::parse(topic) {
        Some(Topic::TankLevel(id)) => match TankLevel::try_from(bytes) {
            Ok(t) => Some((id, Input::Level(t.level))),
            Err(e) => warn_bad(e),
        },
        Some(Topic::PumpState(id)) => match PumpState::try_from(bytes) {
            Ok(s) => Some((id, Input::PumpState(s))),
            Err(e) => warn_bad(e),
        },
        Some(Topic::PumpStatus(id)) => status(id, Input::PumpStatus),
        Some(Topic::TankStatus(id)) => status(id, Input::TankStatus),
        Some(Topic::Alarm(id)) => {
            // Our own alarms come back to us; only the retained ones found
            // at start-up tell something new.
            if !retained || bytes.is_empty() {
                return None;
            }
            match Alarm::try_from(bytes) {
                Ok(a) if a.active => Some((id, Input::RetainedAlarm(a.alarm))),
                Ok(_) => None,
                Err(e) => {
                    warn!(
                        "{topic}: not an alarm ({e}): {}; ignored",
                        payload::quote(bytes)
                    );
                    None
                }
            }
        }
        _ => {
            debug!("{topic}: not a topic the controller follows");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_own_flags_before_the_broker_flags() {
        let cmd = <Args as clap::CommandFactory>::command();
        pimqtt_testkit::assert_own_flags_first(cmd, "--low");
    }

    #[test]
    fn messages_become_inputs() {
        assert_eq!(
            parse("tank/3/level", br#"{"level": 49.5}"#, false),
            Some(("3", Input::Level(49.5)))
        );
        assert_eq!(
            parse("pump/3/state", b"on", false),
            Some(("3", Input::PumpState(PumpState::On)))
        );
        assert_eq!(
            parse("tank/3/status", b"offline", true),
            Some(("3", Input::TankStatus(Availability::Offline)))
        );
        let retained = br#"{"alarm":"dry","active":true,"detail":"x"}"#;
        assert_eq!(
            parse("alarm/3", retained, true),
            Some(("3", Input::RetainedAlarm(AlarmKind::Dry)))
        );
        assert_eq!(parse("alarm/3", retained, false), None, "our own echo");
    }

    #[test]
    fn bad_payloads_are_dropped() {
        for (topic, bytes) in [
            ("tank/1/level", &b"{\"level\": 101}"[..]),
            ("tank/1/level", b"abc"),
            ("tank/1/level", b""),
            ("pump/1/state", b"maybe"),
            ("pump/1/status", b"dead"),
            ("alarm/1", b"{"),
        ] {
            assert_eq!(parse(topic, bytes, true), None, "{topic} {bytes:?}");
        }
    }

    #[test]
    fn low_above_high_is_a_configuration_error() {
        let args = Args::try_parse_from(["controller", "--low", "80", "--high", "60"])
            .expect("flags parse");
        assert!(args.config().is_err());
    }
}
