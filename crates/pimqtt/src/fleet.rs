//! What the `--count N` programs (tank-sensor, pump-sim) share: connecting
//! many sessions at once, and staggered periodic timers for a loop that
//! waits on its event channel with `recv_timeout`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::cli::CommonArgs;
use crate::connect::{ConnectError, Events, Session, SessionConfig};
use crate::shutdown::Stop;
use crate::topics::{self, BadId};

/// Connections made at the same time. Each connect waits for the broker's
/// CONNACK, so a fleet of a thousand made one by one would take a while;
/// a few threads hide the round trips without hammering the broker.
const CONNECT_THREADS: usize = 8;

/// The ids of `--count` devices from the first one, each checked to be a
/// single topic level.
pub fn ids(first: &str, count: u32) -> Result<Vec<String>, BadId> {
    topics::fleet_ids(first, count)
        .into_iter()
        .map(|id| topics::check_id(&id))
        .collect()
}

/// One session per device, tagged with its index so that events say which
/// device they are for; `config` gives what differs per id.
pub fn sessions(
    common: &CommonArgs,
    ids: &[String],
    events: &Events,
    config: impl Fn(&str) -> SessionConfig,
) -> Result<Vec<Session>, ConnectError> {
    ids.iter()
        .enumerate()
        .map(|(tag, id)| Session::new(common, SessionConfig { tag, ..config(id) }, events))
        .collect()
}

/// [`connect_all`] for a program's start: `Ok(false)` when a stop came
/// first (the sessions are then closed and the program should end).
pub fn start(sessions: &[Session], stop: &Stop) -> Result<bool, ConnectError> {
    match connect_all(sessions, stop) {
        Ok(()) => Ok(true),
        Err(ConnectError::Stopped) => {
            close_all(sessions);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Connects every session (retrying while the broker is away, as
/// [`Session::connect`] does), several at a time. The first error wins:
/// a refused password is refused for the whole fleet.
pub fn connect_all(sessions: &[Session], stop: &Stop) -> Result<(), ConnectError> {
    if sessions.len() <= 1 {
        return sessions.iter().try_for_each(|s| s.connect(stop));
    }
    let chunk = sessions.len().div_ceil(CONNECT_THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(|s| s.connect(stop))))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(ConnectError::Config("a connecting thread panicked".into()))
            });
            if result.is_ok() {
                if let Err(e) = r {
                    // Stop the other threads' retry loops too.
                    if !matches!(e, ConnectError::Stopped) {
                        stop.request();
                    }
                    result = Err(e);
                }
            }
        }
        result
    })
}

/// Closes every session gracefully (`offline`, then DISCONNECT), several
/// at a time for the same reason as [`connect_all`].
pub fn close_all(sessions: &[Session]) {
    if sessions.is_empty() {
        return;
    }
    let chunk = sessions.len().div_ceil(CONNECT_THREADS);
    std::thread::scope(|scope| {
        for part in sessions.chunks(chunk) {
            scope.spawn(move || part.iter().for_each(Session::close));
        }
    });
}

/// One periodic timer per device, spread evenly over the period so a fleet
/// does not publish in bursts (device `i` of `n` is offset by `i/n` of it).
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    queue: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Ticker {
    /// Device 0 is due at `start`, the others within the first period.
    pub fn new(n: usize, period: Duration, start: Instant) -> Ticker {
        let queue = (0..n)
            .map(|i| {
                let offset = period.mul_f64(i as f64 / n as f64);
                Reverse((start + offset, i))
            })
            .collect();
        Ticker { period, queue }
    }

    /// When the next device is due (None for an empty fleet).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The next device whose time has come, rescheduled one period later
    /// (or a period from `now` when the loop fell behind, so a stalled
    /// program does not fire a burst of catch-up ticks).
    pub fn due(&mut self, now: Instant) -> Option<usize> {
        let &Reverse((at, i)) = self.queue.peek()?;
        if at > now {
            return None;
        }
        self.queue.pop();
        let mut next = at + self.period;
        if next <= now {
            next = now + self.period;
        }
        self.queue.push(Reverse((next, i)));
        Some(i)
    }
}

/// How long to wait for the next event before `deadline` (at least a
/// millisecond, so a loop never spins on a zero timeout).
pub fn wait_for(deadline: Option<Instant>, now: Instant) -> Duration {
    match deadline {
        Some(at) => at
            .saturating_duration_since(now)
            .max(Duration::from_millis(1)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_staggered_and_periodic() {
        let t0 = Instant::now();
        let p = Duration::from_secs(1);
        let mut t = Ticker::new(4, p, t0);
        assert_eq!(t.due(t0), Some(0));
        assert_eq!(t.due(t0), None, "device 1 is due a quarter period later");
        assert_eq!(t.next_deadline(), Some(t0 + p / 4));
        let later = t0 + p / 2;
        assert_eq!(t.due(later), Some(1));
        assert_eq!(t.due(later), Some(2));
        assert_eq!(t.due(later), None);
        assert_eq!(t.due(t0 + p), Some(3));
        assert_eq!(t.due(t0 + p), Some(0), "device 0 again one period on");
    }

    #[test]
    fn a_stalled_loop_does_not_burst() {
        let t0 = Instant::now();
        let p = Duration::from_secs(1);
        let mut t = Ticker::new(1, p, t0);
        let late = t0 + p * 10;
        assert_eq!(t.due(late), Some(0));
        assert_eq!(t.due(late), None);
        assert_eq!(t.next_deadline(), Some(late + p));
    }

    #[test]
    fn waits_are_never_zero() {
        let now = Instant::now();
        assert_eq!(wait_for(Some(now), now), Duration::from_millis(1));
        assert!(wait_for(None, now) >= Duration::from_secs(60));
    }
}
