//! What the controller shows on stdout.
//!
//! On a terminal: a table redrawn in place (at most five times a second,
//! and once a second for the "last seen" ages), with the latest commands
//! and alarms under it. Piped: one line per event, for scripts and tests:
//!
//! ```text
//! level <id> <percent>            a level arrived (tank/<id>/level)
//! pump <id> on|off                the pump reported its state (pump/<id>/state)
//! pump-status <id> online|offline pump availability (pump/<id>/status)
//! tank-status <id> online|offline sensor availability (tank/<id>/status)
//! command <id> on|off             the controller commanded the pump
//! resend <id> on|off              ... again, as it was not confirmed
//! alarm <id> <kind> raised <detail>
//! alarm <id> <kind> cleared
//! ```

use std::collections::VecDeque;
use std::io::{BufWriter, Stdout, Write};
use std::time::{Duration, Instant};

use pimqtt::payload::{Availability, PumpState};

use crate::logic::{Controller, Input, Output, Tank};

/// The piped format, for `--help` (the module doc above says the same).
pub const LINE_FORMAT: &str = "\
When stdout is not a terminal, one line per event:
  level <id> <percent>               a level arrived (tank/<id>/level), e.g. level 1 49.5
  pump <id> on|off                   the pump reported its state (pump/<id>/state)
  pump-status <id> online|offline    the pump's availability (pump/<id>/status)
  tank-status <id> online|offline    the sensor's availability (tank/<id>/status)
  command <id> on|off                the controller commanded the pump
  resend <id> on|off                 ... again, as it was not confirmed in time
  alarm <id> <kind> raised <detail>  kind: pump-offline, sensor-stale, overflow, dry
  alarm <id> <kind> cleared

Example, three terminals:  pump-sim    tank-sensor    controller
Watch everything:          mosquitto_sub -v -t '#'";

/// Redraws at most this often, however fast messages come.
const MIN_REDRAW: Duration = Duration::from_millis(200);
/// Redraws at least this often, so ages keep counting.
const MAX_REDRAW: Duration = Duration::from_secs(1);
/// Commands and alarms kept under the table.
const RECENT: usize = 6;
const BAR: usize = 20;

/// `--dashboard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The table on a terminal, lines otherwise.
    Auto,
    Table,
    Lines,
}

/// The line for a message (see the module's doc for the format).
pub fn input_line(id: &str, input: &Input) -> Option<String> {
    Some(match input {
        Input::Level(l) => format!("level {id} {l:.1}"),
        Input::PumpState(s) => format!("pump {id} {s}"),
        Input::PumpStatus(a) => format!("pump-status {id} {a}"),
        Input::TankStatus(a) => format!("tank-status {id} {a}"),
        Input::RetainedAlarm(_) => return None,
    })
}

/// The line for a decision.
pub fn output_line(output: &Output) -> String {
    match output {
        Output::Command {
            id,
            state,
            resend: false,
            ..
        } => format!("command {id} {state}"),
        Output::Command {
            id,
            state,
            resend: true,
            ..
        } => format!("resend {id} {state}"),
        Output::Alarm {
            id,
            kind,
            active: true,
            detail,
        } => format!("alarm {id} {kind} raised {detail}"),
        Output::Alarm {
            id,
            kind,
            active: false,
            ..
        } => format!("alarm {id} {kind} cleared"),
    }
}

/// The dashboard in one of its two forms.
#[derive(Debug)]
pub struct Dashboard {
    table: bool,
    out: BufWriter<Stdout>,
    title: String,
    dirty: bool,
    drawn: Option<Instant>,
    recent: VecDeque<String>,
    started: Instant,
}

impl Dashboard {
    /// `table`: redraw a table in place; otherwise one line per event.
    pub fn new(table: bool, title: String) -> Dashboard {
        let mut d = Dashboard {
            table,
            out: BufWriter::new(std::io::stdout()),
            title,
            dirty: true,
            drawn: None,
            recent: VecDeque::new(),
            started: Instant::now(),
        };
        if table {
            // Clear the screen once; each redraw then starts at the top left.
            // (The cursor stays visible: a second Ctrl+C exits at once and
            // would leave it hidden.)
            let _ = write!(d.out, "\x1b[2J");
        }
        d
    }

    pub fn input(&mut self, id: &str, input: &Input) {
        self.dirty = true;
        if !self.table {
            if let Some(line) = input_line(id, input) {
                let _ = writeln!(self.out, "{line}");
            }
        }
    }

    pub fn output(&mut self, output: &Output, now: Instant) {
        self.dirty = true;
        let line = output_line(output);
        if self.table {
            let t = now.saturating_duration_since(self.started).as_secs_f64();
            self.recent.push_back(format!("{t:>8.1}s  {line}"));
            if self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        } else {
            let _ = writeln!(self.out, "{line}");
        }
    }

    /// When [`Dashboard::refresh`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.table {
            return None;
        }
        let drawn = self.drawn?;
        Some(drawn + if self.dirty { MIN_REDRAW } else { MAX_REDRAW })
    }

    /// Called before the loop waits: writes out what is pending (lines), or
    /// redraws the table when it is due.
    pub fn refresh(&mut self, ctl: &Controller, now: Instant) {
        if self.table && self.next_deadline().is_none_or(|t| t <= now) {
            let (w, h) = terminal_size::terminal_size()
                .map(|(w, h)| (usize::from(w.0), usize::from(h.0)))
                .unwrap_or((100, 30));
            let lines = render(ctl, now, &self.title, &self.recent, w, h);
            let _ = write!(self.out, "\x1b[H");
            for line in lines {
                let _ = write!(self.out, "{line}\x1b[K\r\n");
            }
            let _ = write!(self.out, "\x1b[J");
            self.drawn = Some(now);
            self.dirty = false;
        }
        let _ = self.out.flush();
    }

    /// Leaves the last table on screen, with the prompt below it.
    pub fn finish(&mut self) {
        if self.table {
            let _ = write!(self.out, "\r\n");
        }
        let _ = self.out.flush();
    }
}

/// The table as lines of at most `width` characters, fitting `height`.
pub fn render(
    ctl: &Controller,
    now: Instant,
    title: &str,
    recent: &VecDeque<String>,
    width: usize,
    height: usize,
) -> Vec<String> {
    let cfg = ctl.config();
    let tanks = ctl.tanks();
    let on = tanks
        .iter()
        .filter(|t| t.pump == Some(PumpState::On))
        .count();
    let alarmed = tanks.iter().filter(|t| !t.alarms.is_empty()).count();
    let mut lines = vec![
        format!(
            "{title}   tanks {}  pumps on {on}  with alarms {alarmed}   (on below {} %, off at {} %)",
            tanks.len(),
            cfg.low,
            cfg.high
        ),
        String::new(),
        format!(
            "{:<8} {:<w$} {:>6}  {:<5} {:<8} {:<8} {:>9}  {}",
            "TANK",
            "LEVEL",
            "",
            "PUMP",
            "SENSOR",
            "PUMP-LINK",
            "LAST SEEN",
            "ALARMS",
            w = BAR + 2
        ),
    ];
    let reserved = lines.len() + 2 + recent.len();
    let room = height.saturating_sub(reserved).max(1);
    let mut order: Vec<&Tank> = tanks.iter().collect();
    // Tanks with alarms first when they do not all fit.
    let key = |t: &Tank| {
        (
            t.id.parse::<u64>().map_or(1, |_| 0),
            t.id.parse::<u64>().unwrap_or(0),
            t.id.clone(),
        )
    };
    if order.len() > room {
        order.sort_by_key(|t| (t.alarms.is_empty(), key(t)));
    } else {
        order.sort_by_key(|t| key(t));
    }
    for t in order.iter().take(room) {
        lines.push(row(t, now));
    }
    if order.len() > room {
        lines.push(format!("… and {} more", order.len() - room));
    }
    lines.push(String::new());
    lines.extend(recent.iter().cloned());
    lines.into_iter().map(|l| cut(l, width)).collect()
}

fn row(t: &Tank, now: Instant) -> String {
    let (bar, level) = match t.level {
        Some(l) => {
            let filled = ((l / 100.0) * BAR as f64).round() as usize;
            let bar: String = "█".repeat(filled.min(BAR)) + &"·".repeat(BAR - filled.min(BAR));
            (format!("[{bar}]"), format!("{l:.1}%"))
        }
        None => (format!("[{}]", " ".repeat(BAR)), "?".to_string()),
    };
    // Offline in capitals: the one state the eye must find in the table.
    let avail = |a: Option<Availability>| match a {
        Some(Availability::Offline) => "OFFLINE",
        Some(a) => a.as_str(),
        None => "?",
    };
    let pump = match (t.pump, t.pending) {
        (_, Some((want, _))) => format!("→{want}"),
        (Some(s), None) => s.to_string(),
        (None, None) => "?".into(),
    };
    let alarms: Vec<&str> = t.alarms.keys().map(|k| k.as_str()).collect();
    format!(
        "{:<8} {bar} {level:>6}  {pump:<5} {:<8} {:<9} {:>9}  {}",
        t.id,
        avail(t.tank_status),
        avail(t.pump_status),
        age(now.saturating_duration_since(t.last_seen)),
        if alarms.is_empty() {
            "-".to_string()
        } else {
            alarms.join(",")
        }
    )
}

/// `0.4s`, `12s`, `3m`, `2h`.
fn age(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}s")
    } else if s < 120.0 {
        format!("{}s", s as u64)
    } else if s < 7200.0 {
        format!("{}m", (s / 60.0) as u64)
    } else {
        format!("{}h", (s / 3600.0) as u64)
    }
}

fn cut(line: String, width: usize) -> String {
    if line.chars().count() <= width {
        line
    } else {
        line.chars().take(width).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::{AlarmKind, Config};

    #[test]
    fn lines_have_the_documented_format() {
        assert_eq!(
            input_line("1", &Input::Level(49.5)).as_deref(),
            Some("level 1 49.5")
        );
        assert_eq!(
            input_line("7", &Input::PumpState(PumpState::On)).as_deref(),
            Some("pump 7 on")
        );
        assert_eq!(
            input_line("7", &Input::PumpStatus(Availability::Offline)).as_deref(),
            Some("pump-status 7 offline")
        );
        let cmd = Output::Command {
            id: "1".into(),
            state: PumpState::Off,
            resend: false,
            why: String::new(),
        };
        assert_eq!(output_line(&cmd), "command 1 off");
        let cmd = Output::Command {
            id: "1".into(),
            state: PumpState::On,
            resend: true,
            why: String::new(),
        };
        assert_eq!(output_line(&cmd), "resend 1 on");
        let alarm = Output::Alarm {
            id: "2".into(),
            kind: AlarmKind::Dry,
            active: true,
            detail: "tank 2 is empty".into(),
        };
        assert_eq!(output_line(&alarm), "alarm 2 dry raised tank 2 is empty");
    }

    #[test]
    fn the_table_fits_the_terminal() {
        let mut c = Controller::new(Config::default());
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..50 {
            c.handle(
                now,
                &i.to_string(),
                Input::Level(f64::from(i) * 2.0 + 1.0),
                &mut out,
            );
        }
        c.handle(
            now,
            "49",
            Input::PumpStatus(Availability::Offline),
            &mut out,
        );
        let lines = render(&c, now, "controller", &VecDeque::new(), 80, 20);
        assert!(lines.len() <= 20, "{} lines", lines.len());
        assert!(lines.iter().all(|l| l.chars().count() <= 80));
        assert!(
            lines[3].starts_with("49 "),
            "alarmed tanks first: {lines:#?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("… and")));
        let small = render(&c, now, "controller", &VecDeque::new(), 200, 100);
        assert!(
            small[3].starts_with("0 ") && small[4].starts_with("1 "),
            "numeric order"
        );
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(Duration::from_millis(400)), "0.4s");
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(600)), "10m");
    }
}
