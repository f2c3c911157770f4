//! pump-sim's logic, kept out of `main.rs` so tests can reason about it.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{debug, info, warn};

use pimqtt::cli::parse_seconds;
use pimqtt::discovery::{Discovery, Entity, HaArgs};
use pimqtt::fleet::{self, Ticker};
use pimqtt::payload::{self, BadPayload, PumpState};
use pimqtt::session::close_all;
use pimqtt::{topics, CommonArgs, Delivery, Event, Inbox, Next, Session, SessionConfig};

/// A simulated pump: obeys `pump/<id>/command` (`{"state": "on"}` or a bare
/// `on`/`off`, any case) and reports `pump/<id>/state` (retained) on every
/// change, in answer to every valid command, and every --heartbeat, so the
/// controller knows it really switched and is still there. Starts off.
/// Prints `pump <id> on|off` on stdout when its state changes (and once at
/// start).
///
/// Try it:  mosquitto_pub -q 2 -t pump/1/command -m on
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pump-sim",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Args {
    /// Id of the pump (a single topic level); the tank it fills has the same id.
    #[arg(long, value_name = "ID", default_value = "1")]
    pub pump: String,

    /// Seconds between two reports of an unchanged state.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub heartbeat: Duration,

    /// Simulate N pumps, ids <ID>, <ID>+1, … (or <ID>-1 … <ID>-N when the
    /// id is not a number), each on its own connection.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub ha: HaArgs,
}

#[derive(Debug)]
struct Pump {
    id: String,
    command_topic: String,
    state_topic: String,
    state: PumpState,
}

/// What a command does to a pump in `state`: the new state, or why it is
/// ignored.
pub fn obey(bytes: &[u8]) -> Result<PumpState, BadPayload> {
    PumpState::try_from(bytes)
}

/// Runs until a stop is requested: connects every pump, obeys commands,
/// reports states, then says `offline` and disconnects.
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    let ids = fleet::ids(&args.pump, args.count).map_err(|e| anyhow::anyhow!("--pump: {e}"))?;
    let ha = args.ha.discovery()?;
    let sessions = fleet::sessions(&args.common, &ids, inbox, |id| SessionConfig {
        default_client_id: format!("pump-sim-{id}"),
        status_topic: Some(topics::pump_status(id)),
        subscriptions: [topics::pump_command(id)]
            .into_iter()
            .chain(ha.iter().flat_map(Discovery::subscriptions))
            .collect(),
        ..SessionConfig::default()
    })?;
    if let Some(ha) = &ha {
        sessions.iter().for_each(|s| ha.subscribe(s));
    }
    let mut pumps: Vec<Pump> = ids
        .iter()
        .map(|id| Pump {
            id: id.clone(),
            command_topic: topics::pump_command(id),
            state_topic: topics::pump_state(id),
            state: PumpState::Off,
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for p in &pumps {
        let _ = writeln!(out, "pump {} {}", p.id, p.state);
    }
    let _ = out.flush();
    fleet::start(&sessions);

    // Every (re)connect reports the state at once (see Event::Connected), so
    // the first heartbeat is one period away.
    let mut ticker = Ticker::new(pumps.len(), args.heartbeat, Instant::now() + args.heartbeat);
    let result = loop {
        let now = Instant::now();
        while let Some(i) = ticker.due(now) {
            report(&sessions[i], &pumps[i]);
        }
        let _ = out.flush();
        match inbox.next(ticker.next_deadline()) {
            Next::Event(Event::Message(d)) => match &ha {
                Some(ha) if sessions.get(d.session).is_some_and(|s| ha.is_ours(s, &d)) => {
                    if ha.heard(&sessions[d.session], &d) {
                        announce(ha, &sessions, &pumps, d.session);
                    }
                }
                _ => command(&sessions, &mut pumps, &d, &mut out),
            },
            Next::Event(Event::Connected { session }) => {
                if let (Some(pump), Some(s)) = (pumps.get(session), sessions.get(session)) {
                    report(s, pump);
                }
                if let (Some(ha), Some(s)) = (&ha, sessions.get(session)) {
                    ha.connected(s);
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) | Next::Timeout => {}
            Next::Stopped => break Ok(()),
        }
    };
    close_all(&sessions, inbox, |d| {
        command(&sessions, &mut pumps, &d, &mut out)
    });
    let _ = out.flush();
    result
}

/// Obeys one command (a switch is printed before the broker hears the
/// command was received).
fn command(sessions: &[Session], pumps: &mut [Pump], d: &Delivery, out: &mut impl Write) {
    let (Some(pump), Some(s)) = (pumps.get_mut(d.session), sessions.get(d.session)) else {
        return;
    };
    if d.topic() != pump.command_topic {
        return;
    }
    match obey(d.payload()) {
        Ok(state) => {
            if state != pump.state {
                pump.state = state;
                info!("pump {} switched {state}", pump.id);
                let _ = writeln!(out, "pump {} {state}", pump.id);
                let _ = out.flush();
            }
            // Confirm even an unchanged state: the controller re-sends until
            // it hears one.
            report(s, pump);
        }
        Err(e) => warn!(
            "{}: {e}: {}; pump {} stays {}",
            d.topic(),
            payload::quote(d.payload()),
            pump.id,
            pump.state
        ),
    }
}

/// Pump `i`'s switch, to Home Assistant.
fn announce(ha: &Discovery, sessions: &[Session], pumps: &[Pump], i: usize) {
    if let (Some(pump), Some(s)) = (pumps.get(i), sessions.get(i)) {
        ha.announce(s, &[Entity::pump_switch(&pump.id, s.qos())]);
    }
}

fn report(session: &Session, pump: &Pump) {
    debug!("pump {} reports {}", pump.id, pump.state);
    session.publish(&pump.state_topic, pump.state.to_json(), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_own_flags_before_the_broker_flags() {
        let cmd = <Args as clap::CommandFactory>::command();
        pimqtt_testkit::assert_own_flags_first(cmd, "--pump");
    }

    #[test]
    fn commands_in_both_forms() {
        assert_eq!(obey(br#"{"state": "on"}"#), Ok(PumpState::On));
        assert_eq!(obey(b"OFF"), Ok(PumpState::Off));
        for bad in [&b""[..], b"maybe", br#"{"state": true}"#, b"{", &[0xff]] {
            assert!(obey(bad).is_err(), "{bad:?} obeyed");
        }
    }
}
