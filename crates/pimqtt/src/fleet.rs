//! What the `--count N` programs (tank-sensor, pump-sim) share: one session
//! per device, and staggered periodic timers for a loop that waits on its
//! [`Inbox`](crate::Inbox) with a deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::cli::CommonArgs;
use crate::error::ConnectError;
use crate::events::Inbox;
use crate::options::SessionConfig;
use crate::session::Session;
use crate::topics::{self, BadId};

/// The ids of `--count` devices from the first one, each checked to be a
/// single topic level.
pub fn ids(first: &str, count: u32) -> Result<Vec<String>, BadId> {
    topics::fleet_ids(first, count)
        .into_iter()
        .map(|id| topics::check_id(&id))
        .collect()
}

/// One session per device, tagged with its index so that events say which
/// device they are for; `config` gives what differs per id. A `-i` given
/// for a fleet gets `-<index>` after the first device: devices sharing one
/// id would take the session from each other.
pub fn sessions(
    common: &CommonArgs,
    ids: &[String],
    inbox: &Inbox,
    config: impl Fn(&str) -> SessionConfig,
) -> Result<Vec<Session>, ConnectError> {
    ids.iter()
        .enumerate()
        .map(|(tag, id)| {
            let mut own = common.clone();
            if tag > 0 {
                own.client_id = common.client_id.as_ref().map(|c| format!("{c}-{tag}"));
            }
            Session::new(&own, SessionConfig { tag, ..config(id) }, inbox)
        })
        .collect()
}

/// Starts connecting every session, saying where once.
pub fn start(sessions: &[Session]) {
    if let Some(first) = sessions.first() {
        log::info!("{} device(s) connecting to {}", sessions.len(), first.uri());
    }
    sessions.iter().for_each(Session::connect);
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
}
