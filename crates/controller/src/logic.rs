//! The controller's decisions as a pure state machine: messages and the
//! clock go in, commands and alarms come out. No MQTT here, and time is
//! passed in, so every rule is tested without a broker or a sleep.
//!
//! Rules (SPEC, controller):
//! - level below `low` and the pump not reported `on` → command `on`;
//!   level at or above `high` and the pump not reported `off` → command
//!   `off`; in between nothing (hysteresis). A command already sent and not
//!   yet confirmed is not sent again on every level.
//! - a command the pump has not confirmed within `command_timeout` is sent
//!   again. Nothing is sent while the pump is known to be offline (it would
//!   wait at the broker and reach the pump stale): once the pump is back
//!   and has reported its state, what is wanted then (from the last level)
//!   is sent once, if it differs.
//! - alarms, raised and cleared: `pump-offline` (status `offline`, or no
//!   state for `pump_timeout`), `sensor-stale` (no level for
//!   `sensor_timeout`; the pump is then commanded off), `overflow` (level
//!   100 while the pump reports on although it was commanded off: one
//!   report of 100 with the pump on is the normal end of a fill), `dry`
//!   (level 0).
//!
//! Timeouts count from the last message, or from the moment an id was first
//! seen, so a pump that never reported is noticed too.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// The alarms with their wire names live with the payloads; the decisions
/// here (and the dashboard) name them through this module too.
pub use pimqtt::payload::AlarmKind;
use pimqtt::payload::{Availability, PumpState};

/// The thresholds and timeouts (`--low`, `--high`, `--*-timeout`).
#[derive(Debug, Clone)]
pub struct Config {
    pub low: f64,
    pub high: f64,
    pub command_timeout: Duration,
    pub pump_timeout: Duration,
    pub sensor_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            low: 50.0,
            high: 100.0,
            command_timeout: Duration::from_secs(5),
            pump_timeout: Duration::from_secs(15),
            sensor_timeout: Duration::from_secs(10),
        }
    }
}

/// What a message tells the controller about one id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Level(f64),
    PumpState(PumpState),
    PumpStatus(Availability),
    TankStatus(Availability),
    /// A retained `alarm/<id>` found at start-up: an alarm raised before a
    /// restart, adopted so that it is cleared once its cause is gone.
    RetainedAlarm(AlarmKind),
}

/// What the controller decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Command {
        id: String,
        state: PumpState,
        resend: bool,
        why: String,
    },
    Alarm {
        id: String,
        kind: AlarmKind,
        active: bool,
        detail: String,
    },
}

/// Everything known about one tank and its pump.
#[derive(Debug, Clone)]
pub struct Tank {
    pub id: String,
    pub level: Option<f64>,
    pub level_at: Option<Instant>,
    pub pump: Option<PumpState>,
    pub pump_at: Option<Instant>,
    pub pump_status: Option<Availability>,
    pub tank_status: Option<Availability>,
    /// A command sent and not yet confirmed, and when it was last sent.
    pub pending: Option<(PumpState, Instant)>,
    /// Active alarms and their details.
    pub alarms: BTreeMap<AlarmKind, String>,
    /// When the id was first seen: the start of its timeouts.
    pub first_seen: Instant,
    /// The last message of any kind about this id.
    pub last_seen: Instant,
    /// The earliest entry of this tank in the timer queue.
    scheduled: Option<Instant>,
    /// The pump was offline; once it is back and has reported its state,
    /// it is told once what is wanted then ([`returned`]).
    away: bool,
    /// `pump` was reported since the pump last said `offline` or `online`:
    /// what it said before an outage says nothing of what it does after one
    /// (a pump that lost power restarts off).
    pump_fresh: bool,
}

impl Tank {
    fn new(id: &str, now: Instant) -> Tank {
        Tank {
            id: id.to_string(),
            level: None,
            level_at: None,
            pump: None,
            pump_at: None,
            pump_status: None,
            tank_status: None,
            pending: None,
            alarms: BTreeMap::new(),
            first_seen: now,
            last_seen: now,
            scheduled: None,
            away: false,
            pump_fresh: false,
        }
    }

    fn sensor_deadline(&self, cfg: &Config) -> Instant {
        self.level_at.unwrap_or(self.first_seen) + cfg.sensor_timeout
    }

    fn pump_deadline(&self, cfg: &Config) -> Instant {
        self.pump_at.unwrap_or(self.first_seen) + cfg.pump_timeout
    }

    /// The next moment something may change without a message.
    fn next_deadline(&self, cfg: &Config, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.sensor_deadline(cfg));
        consider(self.pump_deadline(cfg));
        if let Some((_, at)) = self.pending {
            if !self.alarms.contains_key(&AlarmKind::PumpOffline) {
                consider((at + cfg.command_timeout).max(now + Duration::from_millis(1)));
            }
        }
        next
    }

    /// The alarms that should be active now, with their details.
    fn wanted_alarms(&self, cfg: &Config, now: Instant) -> BTreeMap<AlarmKind, String> {
        let mut want = BTreeMap::new();
        if self.pump_status == Some(Availability::Offline) {
            want.insert(
                AlarmKind::PumpOffline,
                format!("pump {} reported offline", self.id),
            );
        } else if now >= self.pump_deadline(cfg) {
            want.insert(
                AlarmKind::PumpOffline,
                format!(
                    "no state from pump {} for {}",
                    self.id,
                    secs(cfg.pump_timeout)
                ),
            );
        }
        if now >= self.sensor_deadline(cfg) {
            want.insert(
                AlarmKind::SensorStale,
                format!(
                    "no level from tank {} for {}; pump commanded off",
                    self.id,
                    secs(cfg.sensor_timeout)
                ),
            );
        }
        if let Some(level) = self.level {
            // Full with the pump on is normal for one report (the off goes
            // out as the level reaches 100); it is an alarm once the pump
            // has been told to stop and still reports on.
            let told_off = self.pending.is_some_and(|(p, _)| p == PumpState::Off);
            if level >= 100.0 && self.pump == Some(PumpState::On) && told_off {
                want.insert(
                    AlarmKind::Overflow,
                    format!("tank {} is full and its pump still reports on", self.id),
                );
            }
            if level <= 0.0 {
                want.insert(AlarmKind::Dry, format!("tank {} is empty", self.id));
            }
        }
        want
    }
}

/// `5s`, `0.5s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The state machine for any number of tanks.
#[derive(Debug)]
pub struct Controller {
    cfg: Config,
    tanks: Vec<Tank>,
    index: HashMap<String, usize>,
    /// Deadlines of tanks, earliest first; stale entries (a tank whose
    /// `scheduled` no longer matches) are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Controller {
    pub fn new(cfg: Config) -> Controller {
        Controller {
            cfg,
            tanks: Vec::new(),
            index: HashMap::new(),
            timers: BinaryHeap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn tanks(&self) -> &[Tank] {
        &self.tanks
    }

    pub fn tank(&self, id: &str) -> Option<&Tank> {
        self.index.get(id).map(|&i| &self.tanks[i])
    }

    /// When [`Controller::tick`] should next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Applies one message about `id` and appends the decisions to `out`.
    pub fn handle(&mut self, now: Instant, id: &str, input: Input, out: &mut Vec<Output>) {
        let i = match self.index.get(id) {
            Some(&i) => i,
            None => {
                self.tanks.push(Tank::new(id, now));
                self.index.insert(id.to_string(), self.tanks.len() - 1);
                self.tanks.len() - 1
            }
        };
        let cfg = &self.cfg;
        let tank = &mut self.tanks[i];
        tank.last_seen = now;
        match input {
            Input::Level(level) => {
                tank.level = Some(level);
                tank.level_at = Some(now);
                update_alarms(cfg, tank, now, out);
                decide(cfg, tank, level, now, out);
            }
            Input::PumpState(state) => {
                tank.pump = Some(state);
                tank.pump_at = Some(now);
                tank.pump_fresh = true;
                if tank.pending.is_some_and(|(p, _)| p == state) {
                    tank.pending = None;
                }
                tank.away |= tank.alarms.contains_key(&AlarmKind::PumpOffline);
                update_alarms(cfg, tank, now, out);
                returned(cfg, tank, now, out);
            }
            Input::PumpStatus(status) => {
                tank.pump_status = Some(status);
                // A state that came before the pump said online again is
                // from before (a QoS 2 report its last run had in flight,
                // which Paho sends again first thing on reconnecting).
                tank.pump_fresh = false;
                tank.away |= tank.alarms.contains_key(&AlarmKind::PumpOffline);
                update_alarms(cfg, tank, now, out);
                returned(cfg, tank, now, out);
            }
            Input::TankStatus(status) => tank.tank_status = Some(status),
            Input::RetainedAlarm(kind) => {
                tank.alarms
                    .entry(kind)
                    .or_insert_with(|| "raised before the controller started".to_string());
            }
        }
        self.schedule(i, now);
    }

    /// Handles every deadline that has passed: timeouts become alarms,
    /// unconfirmed commands are sent again.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.tanks[i].scheduled != Some(at) {
                continue; // superseded by an earlier deadline
            }
            self.tanks[i].scheduled = None;
            let cfg = &self.cfg;
            let tank = &mut self.tanks[i];
            update_alarms(cfg, tank, now, out);
            if let Some((want, sent)) = tank.pending {
                let offline = tank.alarms.contains_key(&AlarmKind::PumpOffline);
                if !offline && now >= sent + cfg.command_timeout {
                    let why = format!(
                        "pump {} has not confirmed it within {}",
                        tank.id,
                        secs(cfg.command_timeout)
                    );
                    send(tank, want, true, why, now, out);
                }
            }
            self.schedule(i, now);
        }
    }

    fn schedule(&mut self, i: usize, now: Instant) {
        let tank = &mut self.tanks[i];
        if let Some(next) = tank.next_deadline(&self.cfg, now) {
            if tank.scheduled.is_none_or(|s| next < s) {
                tank.scheduled = Some(next);
                self.timers.push(Reverse((next, i)));
            }
        }
    }
}

/// What the thresholds ask for at `level`: nothing in between (hysteresis).
fn wanted(cfg: &Config, level: f64) -> Option<(PumpState, String)> {
    if level < cfg.low {
        Some((PumpState::On, format!("level {level} is below {}", cfg.low)))
    } else if level >= cfg.high {
        Some((
            PumpState::Off,
            format!("level {level} reached {}", cfg.high),
        ))
    } else {
        None
    }
}

/// The thresholds, with hysteresis.
fn decide(cfg: &Config, tank: &mut Tank, level: f64, now: Instant, out: &mut Vec<Output>) {
    let Some((want, why)) = wanted(cfg, level) else {
        return;
    };
    if tank.pump == Some(want) {
        // Already there: an opposite command still waiting is obsolete.
        tank.pending = None;
    } else if tank.pending.map(|(p, _)| p) != Some(want) {
        send(tank, want, false, why, now, out);
    }
}

/// A pump that was offline is back and has reported its state: it is told
/// once what is wanted now, worked out afresh (off without a fresh level;
/// else what the last level asks for; in between, the last decision held
/// back while it was away). The decisions made while it was away went
/// by what it did *before* the outage, so they cannot be trusted.
fn returned(cfg: &Config, tank: &mut Tank, now: Instant, out: &mut Vec<Output>) {
    if !tank.away || !tank.pump_fresh || tank.alarms.contains_key(&AlarmKind::PumpOffline) {
        return;
    }
    tank.away = false;
    let want = if tank.alarms.contains_key(&AlarmKind::SensorStale) {
        Some(PumpState::Off)
    } else {
        tank.level
            .and_then(|l| wanted(cfg, l))
            .map(|(w, _)| w)
            .or(tank.pending.map(|(p, _)| p))
    };
    match want {
        Some(want) if tank.pump != Some(want) => {
            let why = "the pump is back and reports another state".to_string();
            send(tank, want, true, why, now, out);
        }
        _ => tank.pending = None,
    }
}

/// Sends a command, unless the pump is known to be offline: a command
/// queued for a pump that is away would reach it whenever it comes back,
/// however stale, and a pump back from an outage must switch at most once,
/// to what is wanted then. So it is only remembered (`pending`), and
/// [`returned`] works out what to send when the pump is back.
fn send(
    tank: &mut Tank,
    state: PumpState,
    resend: bool,
    why: String,
    now: Instant,
    out: &mut Vec<Output>,
) {
    tank.pending = Some((state, now));
    if tank.alarms.contains_key(&AlarmKind::PumpOffline) {
        return;
    }
    out.push(Output::Command {
        id: tank.id.clone(),
        state,
        resend,
        why,
    });
}

/// Raises and clears alarms to match the conditions at `now`. When an alarm
/// clears while others stay active, those are published again, so the
/// retained `alarm/<id>` always shows an active alarm if there is one.
fn update_alarms(cfg: &Config, tank: &mut Tank, now: Instant, out: &mut Vec<Output>) {
    let want = tank.wanted_alarms(cfg, now);
    let mut cleared = false;
    let mut raised = false;
    let gone: Vec<AlarmKind> = tank
        .alarms
        .keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect();
    for kind in gone {
        tank.alarms.remove(&kind);
        cleared = true;
        out.push(Output::Alarm {
            id: tank.id.clone(),
            kind,
            active: false,
            detail: "cleared".into(),
        });
    }
    for (kind, detail) in want {
        if tank.alarms.contains_key(&kind) {
            continue;
        }
        raised = true;
        if kind == AlarmKind::SensorStale && tank.pump != Some(PumpState::Off) {
            // Fail-safe: without a fresh level the pump could overflow the tank.
            let why = format!("no level for {}: fail-safe", secs(cfg.sensor_timeout));
            out.push(Output::Alarm {
                id: tank.id.clone(),
                kind,
                active: true,
                detail: detail.clone(),
            });
            tank.alarms.insert(kind, detail);
            if tank.pending.map(|(p, _)| p) != Some(PumpState::Off) {
                send(tank, PumpState::Off, false, why, now, out);
            }
            continue;
        }
        out.push(Output::Alarm {
            id: tank.id.clone(),
            kind,
            active: true,
            detail: detail.clone(),
        });
        tank.alarms.insert(kind, detail);
    }
    if cleared && !raised {
        for (kind, detail) in &tank.alarms {
            out.push(Output::Alarm {
                id: tank.id.clone(),
                kind: *kind,
                active: true,
                detail: detail.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PumpState::{Off, On};

    struct Rig {
        c: Controller,
        t0: Instant,
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                c: Controller::new(Config::default()),
                t0: Instant::now(),
            }
        }
        fn at(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }
        fn feed(&mut self, secs: f64, id: &str, input: Input) -> Vec<Output> {
            let mut out = Vec::new();
            let now = self.at(secs);
            self.c.tick(now, &mut out);
            self.c.handle(now, id, input, &mut out);
            out
        }
        fn tick(&mut self, secs: f64) -> Vec<Output> {
            let mut out = Vec::new();
            self.c.tick(self.at(secs), &mut out);
            out
        }
    }

    /// What `out` holds of one kind of output, in short.
    fn pick<T>(out: &[Output], f: impl Fn(&Output) -> Option<T>) -> Vec<T> {
        out.iter().filter_map(f).collect()
    }

    fn commands(out: &[Output]) -> Vec<(String, PumpState, bool)> {
        pick(out, |o| match o {
            Output::Command {
                id, state, resend, ..
            } => Some((id.clone(), *state, *resend)),
            _ => None,
        })
    }

    fn alarms(out: &[Output]) -> Vec<(String, AlarmKind, bool)> {
        pick(out, |o| match o {
            Output::Alarm {
                id, kind, active, ..
            } => Some((id.clone(), *kind, *active)),
            _ => None,
        })
    }

    fn cmd(id: &str, s: PumpState) -> Vec<(String, PumpState, bool)> {
        vec![(id.to_string(), s, false)]
    }

    #[test]
    fn thresholds_with_hysteresis() {
        let mut r = Rig::new();
        assert_eq!(r.feed(0.0, "1", Input::PumpState(Off)), vec![]);
        assert_eq!(r.feed(0.1, "1", Input::Level(70.0)), vec![], "70: nothing");
        assert_eq!(
            commands(&r.feed(0.2, "1", Input::Level(49.5))),
            cmd("1", On),
            "49.5: on"
        );
        assert_eq!(
            r.feed(0.3, "1", Input::Level(45.0)),
            vec![],
            "already asked: not again"
        );
        assert_eq!(r.feed(0.4, "1", Input::PumpState(On)), vec![]);
        assert_eq!(
            r.feed(0.5, "1", Input::Level(80.0)),
            vec![],
            "80 while on: nothing"
        );
        assert_eq!(
            commands(&r.feed(0.6, "1", Input::Level(100.0))),
            cmd("1", Off),
            "100: off"
        );
        assert_eq!(r.feed(0.7, "1", Input::PumpState(Off)), vec![]);
        assert_eq!(
            r.feed(0.8, "1", Input::Level(80.0)),
            vec![],
            "80 while off: nothing"
        );
        assert_eq!(r.c.tank("1").and_then(|t| t.pending), None);
    }

    #[test]
    fn unknown_pump_gets_commands_both_ways() {
        let mut r = Rig::new();
        assert_eq!(
            commands(&r.feed(0.0, "a", Input::Level(10.0))),
            cmd("a", On)
        );
        let mut r = Rig::new();
        assert_eq!(
            commands(&r.feed(0.0, "a", Input::Level(100.0))),
            cmd("a", Off)
        );
    }

    #[test]
    fn thresholds_are_configurable() {
        let mut r = Rig::new();
        r.c = Controller::new(Config {
            low: 20.0,
            high: 80.0,
            ..Config::default()
        });
        r.feed(0.0, "1", Input::PumpState(Off));
        assert_eq!(r.feed(0.1, "1", Input::Level(30.0)), vec![]);
        assert_eq!(
            commands(&r.feed(0.2, "1", Input::Level(19.9))),
            cmd("1", On)
        );
        r.feed(0.3, "1", Input::PumpState(On));
        assert_eq!(
            commands(&r.feed(0.4, "1", Input::Level(80.0))),
            cmd("1", Off)
        );
    }

    #[test]
    fn unconfirmed_commands_are_sent_again() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        assert_eq!(
            commands(&r.feed(1.0, "1", Input::Level(40.0))),
            cmd("1", On)
        );
        assert_eq!(r.c.next_deadline(), Some(r.at(6.0)));
        assert_eq!(r.tick(5.9), vec![]);
        assert_eq!(commands(&r.tick(6.0)), vec![("1".to_string(), On, true)]);
        assert_eq!(
            commands(&r.tick(11.0)),
            vec![("1".to_string(), On, true)],
            "and again"
        );
        r.feed(11.5, "1", Input::PumpState(On));
        assert_eq!(commands(&r.tick(20.0)), vec![], "confirmed: no more");
    }

    #[test]
    fn an_obsolete_command_is_dropped() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        r.feed(0.1, "1", Input::Level(40.0)); // on, never confirmed
        assert_eq!(
            r.feed(1.0, "1", Input::Level(100.0)),
            vec![],
            "pump already off"
        );
        assert_eq!(r.c.tank("1").and_then(|t| t.pending), None);
        assert_eq!(commands(&r.tick(10.0)), vec![], "the old on is not re-sent");
    }

    #[test]
    fn pump_offline_raised_and_cleared() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpStatus(Availability::Online));
        r.feed(0.0, "1", Input::PumpState(Off));
        r.feed(0.0, "1", Input::Level(70.0));
        let out = r.feed(1.0, "1", Input::PumpStatus(Availability::Offline));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::PumpOffline, true)]
        );
        assert_eq!(r.feed(2.0, "1", Input::Level(70.0)), vec![], "raised once");
        let out = r.feed(3.0, "1", Input::PumpStatus(Availability::Online));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::PumpOffline, false)]
        );
    }

    #[test]
    fn a_pump_back_from_an_outage_gets_one_command_for_now() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpStatus(Availability::Online));
        r.feed(0.0, "1", Input::PumpState(Off));
        r.feed(0.0, "1", Input::Level(70.0));
        r.feed(1.0, "1", Input::PumpStatus(Availability::Offline));
        // Away: the level falls below low, rises to high, falls again, and
        // timeouts pass. Nothing is queued for the pump.
        let mut away = Vec::new();
        for (t, level) in [(2.0, 40.0), (3.0, 100.0), (4.0, 30.0), (20.0, 35.0)] {
            away.extend(commands(&r.feed(t, "1", Input::Level(level))));
            away.extend(commands(&r.tick(t)));
        }
        assert_eq!(away, vec![], "commands sent to a pump that is away");
        // Back: one command, for what is wanted now (on, at 35 %).
        let mut out = r.feed(21.0, "1", Input::PumpStatus(Availability::Online));
        out.extend(r.feed(21.0, "1", Input::PumpState(Off)));
        assert_eq!(commands(&out), vec![("1".into(), On, true)]);
        out = r.feed(22.0, "1", Input::PumpState(On));
        out.extend(r.feed(23.0, "1", Input::Level(40.0)));
        out.extend(r.tick(28.0));
        assert_eq!(commands(&out), vec![], "once");
    }

    /// Before the outage it was on; it comes back off (it lost power). The
    /// decisions made while it was away went by "on" and cancelled out;
    /// what counts is the level now.
    #[test]
    fn a_pump_that_restarts_off_is_told_what_the_level_asks_for() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpStatus(Availability::Online));
        r.feed(0.0, "1", Input::PumpState(On));
        r.feed(0.0, "1", Input::Level(30.0));
        r.feed(1.0, "1", Input::PumpStatus(Availability::Offline));
        for (t, level) in [(2.0, 100.0), (3.0, 30.0), (4.0, 100.0), (5.0, 30.0)] {
            assert_eq!(commands(&r.feed(t, "1", Input::Level(level))), vec![]);
        }
        // Online first: its old "on" is no news, nothing yet.
        let out = r.feed(6.0, "1", Input::PumpStatus(Availability::Online));
        assert_eq!(commands(&out), vec![]);
        let out = r.feed(6.0, "1", Input::PumpState(Off));
        assert_eq!(commands(&out), vec![("1".into(), On, true)]);
        let mut out = r.feed(7.0, "1", Input::PumpState(On));
        out.extend(r.tick(9.0));
        assert_eq!(commands(&out), vec![], "once");
    }

    /// Its last run's report of "on", in flight when it lost power, is sent
    /// again on reconnecting, before its `online` and its real "off".
    #[test]
    fn a_report_from_before_the_outage_is_not_taken_for_now() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpStatus(Availability::Online));
        r.feed(0.0, "1", Input::PumpState(On));
        r.feed(0.0, "1", Input::Level(30.0));
        r.feed(1.0, "1", Input::PumpStatus(Availability::Offline));
        let mut out = r.feed(2.0, "1", Input::PumpState(On));
        out.extend(r.feed(2.0, "1", Input::PumpStatus(Availability::Online)));
        assert_eq!(commands(&out), vec![], "not yet: the on is old");
        let out = r.feed(2.0, "1", Input::PumpState(Off));
        assert_eq!(commands(&out), vec![("1".into(), On, true)]);
    }

    /// Back in the state already wanted: nothing to send.
    #[test]
    fn a_pump_back_in_the_wanted_state_gets_no_command() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(On));
        r.feed(0.0, "1", Input::Level(30.0));
        r.feed(1.0, "1", Input::PumpStatus(Availability::Offline));
        r.feed(2.0, "1", Input::Level(40.0));
        let mut out = r.feed(3.0, "1", Input::PumpStatus(Availability::Online));
        out.extend(r.feed(3.0, "1", Input::PumpState(On)));
        out.extend(r.tick(9.0));
        assert_eq!(commands(&out), vec![]);
    }

    #[test]
    fn a_silent_pump_is_offline_too() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        for t in 1..14 {
            r.feed(f64::from(t), "1", Input::Level(70.0));
        }
        let out = r.feed(15.0, "1", Input::Level(70.0));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::PumpOffline, true)]
        );
        let out = r.feed(16.0, "1", Input::PumpState(Off));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::PumpOffline, false)]
        );
    }

    #[test]
    fn a_stale_sensor_turns_the_pump_off() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        r.feed(0.0, "1", Input::Level(40.0));
        r.feed(0.5, "1", Input::PumpState(On));
        // heartbeats keep the pump fresh; the sensor goes quiet
        r.feed(5.0, "1", Input::PumpState(On));
        assert_eq!(r.c.next_deadline(), Some(r.at(10.0)));
        let out = r.tick(10.0);
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::SensorStale, true)]
        );
        assert_eq!(commands(&out), cmd("1", Off));
        let out = r.feed(11.0, "1", Input::Level(60.0));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::SensorStale, false)]
        );
        assert_eq!(commands(&out), vec![], "60 is in between: nothing");
    }

    #[test]
    fn overflow_and_dry() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(On));
        let out = r.feed(0.1, "1", Input::Level(100.0));
        assert_eq!(alarms(&out), vec![], "the normal end of a fill");
        assert_eq!(commands(&out), cmd("1", Off));
        let out = r.feed(0.2, "1", Input::Level(100.0));
        assert_eq!(
            alarms(&out),
            vec![("1".into(), AlarmKind::Overflow, true)],
            "still on"
        );
        let out = r.feed(0.3, "1", Input::PumpState(Off));
        assert_eq!(alarms(&out), vec![("1".into(), AlarmKind::Overflow, false)]);
        let out = r.feed(0.4, "1", Input::Level(0.0));
        assert_eq!(alarms(&out), vec![("1".into(), AlarmKind::Dry, true)]);
        let out = r.feed(0.5, "1", Input::Level(0.5));
        assert_eq!(alarms(&out), vec![("1".into(), AlarmKind::Dry, false)]);
    }

    #[test]
    fn a_remaining_alarm_is_published_again_after_a_clear() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        r.feed(0.0, "1", Input::Level(0.0)); // dry
        r.feed(0.1, "1", Input::PumpStatus(Availability::Offline));
        let out = r.feed(0.2, "1", Input::Level(5.0));
        assert_eq!(
            alarms(&out),
            vec![
                ("1".into(), AlarmKind::Dry, false),
                ("1".into(), AlarmKind::PumpOffline, true),
            ]
        );
    }

    #[test]
    fn retained_alarms_are_cleared_when_their_cause_is_gone() {
        let mut r = Rig::new();
        r.feed(0.0, "1", Input::PumpState(Off));
        assert_eq!(
            r.feed(0.0, "1", Input::RetainedAlarm(AlarmKind::Overflow)),
            vec![]
        );
        let out = r.feed(0.5, "1", Input::Level(70.0));
        assert_eq!(alarms(&out), vec![("1".into(), AlarmKind::Overflow, false)]);
    }

    #[test]
    fn many_tanks_are_independent() {
        let mut r = Rig::new();
        let mut out = Vec::new();
        for i in 0..1000 {
            let id = i.to_string();
            out.extend(r.feed(0.0, &id, Input::PumpState(Off)));
            out.extend(r.feed(0.0, &id, Input::Level(if i % 2 == 0 { 10.0 } else { 70.0 })));
        }
        assert_eq!(commands(&out).len(), 500);
        assert_eq!(r.c.tanks().len(), 1000);
    }
}
