//! tank-sensor's logic, kept out of `main.rs` so tests can reason about it.
//!
//! # Layout
//! - [`sim`]: the simulated tank (pure arithmetic, no MQTT).
//! - [`stdin`]: parsing the levels a real sensor script writes to stdin.
//! - this file: the flags and the loop that publishes `tank/<id>/level`.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{info, warn};

use pimqtt::cli::{parse_percent, parse_seconds};
use pimqtt::discovery::{Discovery, Entity, HaArgs};
use pimqtt::fleet::{self, Ticker};
use pimqtt::payload::{self, PumpState, TankLevel};
use pimqtt::session::close_all;
use pimqtt::{topics, CommonArgs, Delivery, Event, Inbox, Next, Session, SessionConfig, Stop};

pub mod sim;
pub mod stdin;

/// Where the levels come from (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// A simulated tank that drains, and fills while its pump reports `on`.
    Sim,
    /// One level per line on stdin, published at once.
    Stdin,
}

/// Publishes the water level of a tank on `tank/<id>/level` (retained,
/// `{"level": 63.5}`), with its availability on `tank/<id>/status`.
///
/// With `--source sim` the tank drains by --drain %/s all the time and the
/// pump (pump/<id>/state = on) adds --fill %/s. With `--source stdin` each
/// line is a level (`63.5`) published at once; with --count, a line
/// `<id> <level>` sets one tank and a bare level sets them all. End of input
/// ends the program cleanly. Prints `tank <id> <level>` on stdout for every
/// level it publishes.
///
/// Try it:  tank-sensor --tank 1   and   mosquitto_sub -v -t 'tank/#'
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tank-sensor",
    version,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Args {
    /// Id of the tank (a single topic level); its pump has the same id.
    #[arg(long, value_name = "ID", default_value = "1")]
    pub tank: String,

    /// Where the levels come from.
    #[arg(long, value_enum, default_value_t = Source::Sim)]
    pub source: Source,

    /// Seconds between two publications of the simulated level.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Simulated level at start, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 75.0, value_parser = parse_percent)]
    pub initial: f64,

    /// Percent per second the simulated tank loses, pump on or off.
    #[arg(long, value_name = "PERCENT_PER_S", default_value_t = 2.0, value_parser = parse_percent)]
    pub drain: f64,

    /// Percent per second the pump adds while it reports `on`.
    #[arg(long, value_name = "PERCENT_PER_S", default_value_t = 5.0, value_parser = parse_percent)]
    pub fill: f64,

    /// Simulate N tanks, ids <ID>, <ID>+1, … (or <ID>-1 … <ID>-N when the
    /// id is not a number), each on its own connection.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// With --ha-discovery: how long Home Assistant shows a level after it
    /// came before it shows the tank's level as unavailable (its
    /// expire_after); give the controller's --sensor-timeout.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub sensor_timeout: Duration,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub ha: HaArgs,
}

/// One simulated or fed tank and its connection.
struct Tank {
    id: String,
    level_topic: String,
    state_topic: String,
    sim: sim::Tank,
}

/// Runs until a stop is requested (or stdin ends with `--source stdin`):
/// connects every tank, publishes levels, then says `offline` and
/// disconnects.
pub fn run(args: &Args, inbox: &Inbox) -> anyhow::Result<()> {
    let ids = fleet::ids(&args.tank, args.count).map_err(|e| anyhow::anyhow!("--tank: {e}"))?;
    let ha = args.ha.discovery()?;
    let sessions = fleet::sessions(&args.common, &ids, inbox, |id| SessionConfig {
        default_client_id: format!("tank-sensor-{id}"),
        status_topic: Some(topics::tank_status(id)),
        subscriptions: match args.source {
            Source::Sim => vec![topics::pump_state(id)],
            Source::Stdin => vec![],
        }
        .into_iter()
        .chain(ha.iter().flat_map(Discovery::subscriptions))
        .collect(),
        ..SessionConfig::default()
    })?;
    if let Some(ha) = &ha {
        sessions.iter().for_each(|s| ha.subscribe(s));
    }
    let sessions = Arc::new(sessions);
    info!(
        "{} from {}",
        if ids.len() == 1 {
            "one tank".to_string()
        } else {
            format!("{} tanks", ids.len())
        },
        match args.source {
            Source::Sim => "the simulation",
            Source::Stdin => "stdin",
        }
    );
    fleet::start(&sessions);

    let now = Instant::now();
    let mut tanks: Vec<Tank> = ids
        .iter()
        .map(|id| Tank {
            id: id.clone(),
            level_topic: topics::tank_level(id),
            state_topic: topics::pump_state(id),
            sim: sim::Tank::new(args.initial, args.drain, args.fill, now),
        })
        .collect();

    let mut ticker = match args.source {
        Source::Sim => Some(Ticker::new(tanks.len(), args.interval, Instant::now())),
        Source::Stdin => {
            feed_from_stdin(&sessions, &tanks, inbox.stop());
            None
        }
    };
    // Buffered so a fleet does not make one write per line; flushed whenever
    // the loop is about to wait, so a reader sees every line at once.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let result = loop {
        if let Some(ticker) = &mut ticker {
            let now = Instant::now();
            while let Some(i) = ticker.due(now) {
                let tank = &mut tanks[i];
                let level = TankLevel::new(tank.sim.advance(now));
                sessions[i].publish(&tank.level_topic, level.to_json(), true);
                let _ = writeln!(out, "tank {} {:.1}", tank.id, level.level);
            }
        }
        let _ = out.flush();
        match inbox.next(ticker.as_ref().and_then(Ticker::next_deadline)) {
            Next::Event(Event::Message(d)) => match &ha {
                Some(ha) if sessions.get(d.session).is_some_and(|s| ha.is_ours(s, &d)) => {
                    if ha.heard(&sessions[d.session], &d) {
                        announce(ha, &sessions, &ids, args.sensor_timeout, d.session);
                    }
                }
                _ => pump_state(&mut tanks, &d),
            },
            Next::Event(Event::Connected { session }) => {
                if let (Some(ha), Some(s)) = (&ha, sessions.get(session)) {
                    ha.connected(s);
                }
            }
            Next::Event(Event::Failed { error, .. }) => break Err(error.into()),
            Next::Event(_) | Next::Timeout => {}
            Next::Stopped => break Ok(()),
        }
    };
    close_all(&sessions, inbox, |d| pump_state(&mut tanks, &d));
    result
}

/// Tank `i`'s level sensor, to Home Assistant.
fn announce(ha: &Discovery, sessions: &[Session], ids: &[String], expire: Duration, i: usize) {
    if let (Some(id), Some(s)) = (ids.get(i), sessions.get(i)) {
        ha.announce(s, &[Entity::tank_level(id, expire)]);
    }
}

/// The pump's reported state, folded into its simulated tank.
fn pump_state(tanks: &mut [Tank], d: &Delivery) {
    let Some(tank) = tanks.get_mut(d.session) else {
        return;
    };
    if d.topic() != tank.state_topic {
        return;
    }
    match PumpState::try_from(d.payload()) {
        Ok(state) => tank.sim.set_pump(state == PumpState::On, Instant::now()),
        Err(e) => warn!(
            "{}: {e}: {}; the simulated tank keeps the pump's last state",
            d.topic(),
            payload::quote(d.payload())
        ),
    }
}

/// Reads stdin on a thread of its own (a read cannot be interrupted), and
/// publishes each valid line at once. End of input asks the program to stop.
fn feed_from_stdin(sessions: &Arc<Vec<Session>>, tanks: &[Tank], stop: &Stop) {
    let sessions = Arc::clone(sessions);
    let ids: Vec<String> = tanks.iter().map(|t| t.id.clone()).collect();
    let topics: Vec<String> = tanks.iter().map(|t| t.level_topic.clone()).collect();
    let stop = stop.clone();
    std::thread::spawn(move || {
        let input = std::io::stdin().lock();
        for (n, line) in input.lines().enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    warn!("stdin: cannot read line {} ({e}); stopping", n + 1);
                    break;
                }
            };
            match stdin::parse_line(&line, &ids) {
                Ok(None) => {}
                Ok(Some((target, level))) => {
                    let level = TankLevel::new(level);
                    let mut out = std::io::stdout().lock();
                    for i in target.indices(ids.len()) {
                        sessions[i].publish(&topics[i], level.to_json(), true);
                        let _ = writeln!(out, "tank {} {:.1}", ids[i], level.level);
                    }
                    let _ = out.flush();
                }
                Err(e) => warn!("stdin line {}: {e}; ignored", n + 1),
            }
        }
        info!("end of stdin: stopping");
        stop.request();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_own_flags_before_the_broker_flags() {
        let cmd = <Args as clap::CommandFactory>::command();
        pimqtt_testkit::assert_own_flags_first(cmd, "--tank");
    }
}
