//! The simulated tank: consumption drains it all the time, the pump fills it
//! while it reports `on`. Time is passed in so tests need no clock.

use std::time::Instant;

/// A tank's level, integrated over real time.
#[derive(Debug, Clone)]
pub struct Tank {
    level: f64,
    drain: f64,
    fill: f64,
    pump_on: bool,
    at: Instant,
}

impl Tank {
    /// `drain` and `fill` are in percent per second.
    pub fn new(initial: f64, drain: f64, fill: f64, now: Instant) -> Tank {
        Tank {
            level: initial.clamp(0.0, 100.0),
            drain,
            fill,
            pump_on: false,
            at: now,
        }
    }

    /// The level at `now`, clamped to 0..100.
    pub fn advance(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = if self.pump_on {
            self.fill - self.drain
        } else {
            -self.drain
        };
        self.level = (self.level + rate * dt).clamp(0.0, 100.0);
        self.at = now;
        self.level
    }

    /// The pump's reported state; the time up to `now` is counted with the
    /// old state first.
    pub fn set_pump(&mut self, on: bool, now: Instant) {
        self.advance(now);
        self.pump_on = on;
    }

    pub fn pump_on(&self) -> bool {
        self.pump_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drains_then_fills_while_the_pump_is_on() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut tank = Tank::new(75.0, 2.0, 5.0, t0);
        assert_eq!(tank.advance(t0 + s * 5), 65.0);
        tank.set_pump(true, t0 + s * 10);
        assert!(tank.pump_on());
        assert_eq!(tank.advance(t0 + s * 10), 55.0);
        assert_eq!(
            tank.advance(t0 + s * 20),
            85.0,
            "net +3 %/s: fill 5 minus drain 2"
        );
    }

    #[test]
    fn stays_within_0_and_100() {
        let t0 = Instant::now();
        let mut tank = Tank::new(10.0, 2.0, 5.0, t0);
        assert_eq!(tank.advance(t0 + Duration::from_secs(60)), 0.0);
        tank.set_pump(true, t0 + Duration::from_secs(60));
        assert_eq!(tank.advance(t0 + Duration::from_secs(600)), 100.0);
    }
}
