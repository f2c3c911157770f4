//! When to connect again, to which broker, and what to tell the user: the
//! reconnect policy of one session, as a state machine with no I/O and no
//! clock of its own (facts and durations in, decisions out), so every fault
//! class is a unit test. `worker.rs` is the Paho glue around it.
//!
//! The rule it keeps (SPEC, "No fault costs a durable session"): a cause is
//! taken from facts only, never from timing. Facts are the broker's MQTT 5
//! reason codes, refusals (CONNACK codes, told apart in `client::diagnose`),
//! and the session's instance mark read back from the broker (another
//! process wrote it since we did: the id is in use twice). A loss whose
//! cause is unknown (a reset, a cut, a stall, a restart, a proxy or a NAT in
//! between: on 3.1.1 every loss) gets the ordinary schedule. Nothing here
//! ever starts a clean session or drops what is queued.

use std::time::Duration;

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Failed attempts retried every second before the waits grow.
const ORDINARY_ATTEMPTS: u32 = 10;
/// MQTT 5 "session taken over".
const TAKEN_OVER: u8 = 0x8E;

/// Why a connection ended, as far as facts tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// MQTT 5: the reason code of the broker's DISCONNECT.
    Reason(u8),
    /// Nothing said why: MQTT 3.1.1, or a socket reset, cut or timed out.
    Unknown,
}

/// What happened to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    /// A connect attempt succeeded.
    Connected,
    /// A connect attempt failed in a way worth retrying (not a refusal to
    /// fix: those stop the session before they reach the policy).
    AttemptFailed,
    /// The connection was lost.
    Lost(Loss),
    /// The instance mark read back at connect was written by another
    /// process after ours: the client id is in use twice.
    OtherInstance,
    /// The mark read back was ours: nobody took the id since.
    OwnInstance,
    /// Another session of this process has just connected to broker
    /// `server` of our list: it is reachable now, whatever our own failed
    /// attempts said while it was not.
    Reachable(usize),
}

/// What the worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing now (connected, or a fact that changes only later waits).
    Stay,
    /// Connect to broker `server` of the list after `after`.
    Connect { server: usize, after: Duration },
    /// Say once that another client uses our id; the schedule slows down.
    TellSameId,
}

/// The reconnect state of one session.
#[derive(Debug)]
pub(crate) struct Policy {
    servers: usize,
    /// The broker of the list connected to, or to try next.
    server: usize,
    /// Brokers of the list tried, one after the other, in this round.
    tried: usize,
    /// Failed rounds (every broker of the list tried) since the last success.
    attempt: u32,
    /// Facts of another client with our id, with none of the contrary since.
    takeovers: u32,
    told: bool,
    /// The jitter's random state (splitmix64).
    rng: u64,
}

impl Policy {
    /// `servers`: the length of the `-h` list; `seed` makes the jitter of
    /// each session of a fleet differ.
    pub(crate) fn new(servers: usize, seed: u64) -> Policy {
        Policy {
            servers: servers.max(1),
            server: 0,
            tried: 0,
            attempt: 0,
            takeovers: 0,
            told: false,
            rng: seed,
        }
    }

    /// The broker to connect to first.
    pub(crate) fn first(&self) -> usize {
        self.server
    }

    pub(crate) fn on(&mut self, fact: Fact) -> Decision {
        match fact {
            Fact::Connected => {
                self.tried = 0;
                self.attempt = 0;
                Decision::Stay
            }
            Fact::AttemptFailed => {
                // The next broker of the list at once; the schedule's wait
                // only once every one of them has been tried.
                self.server = (self.server + 1) % self.servers;
                self.tried += 1;
                if self.tried < self.servers {
                    return Decision::Connect {
                        server: self.server,
                        after: Duration::ZERO,
                    };
                }
                self.tried = 0;
                let base = self.base(retry_delay(self.attempt));
                self.attempt = self.attempt.saturating_add(1);
                self.connect(base)
            }
            Fact::Lost(loss) => {
                match loss {
                    // The worker gives the advice with it, once
                    // (`tell_on_takeover`): the loss line names the reason.
                    Loss::Reason(TAKEN_OVER) => {
                        self.takeovers = self.takeovers.saturating_add(1);
                    }
                    // Another reason given by the broker: not a sibling.
                    Loss::Reason(_) => self.takeovers = 0,
                    Loss::Unknown => {}
                }
                // With a list of brokers (a cluster), the next one first:
                // the one lost is likely down.
                self.server = (self.server + 1) % self.servers;
                self.tried = 0;
                self.connect(self.base(RETRY_FIRST))
            }
            Fact::Reachable(server) => self.reachable(server),
            Fact::OtherInstance => self.taken_over(),
            Fact::OwnInstance => {
                self.takeovers = 0;
                Decision::Stay
            }
        }
    }

    /// Whether failed attempts have made the waits grow past a second
    /// (the probe then watches a broker that did not answer).
    pub(crate) fn backing_off(&self) -> bool {
        self.attempt >= ORDINARY_ATTEMPTS
    }

    /// Whether the same-id advice is still to be given (MQTT 5's 0x8E is
    /// told by the loss line; the advice comes with it once).
    pub(crate) fn tell_on_takeover(&mut self) -> bool {
        !std::mem::replace(&mut self.told, true)
    }

    /// A session backing off after a run of failed attempts comes back
    /// within about a second of a sibling's success instead of at the end
    /// of a wait of up to 30 s. (In a fleet chaos run one tank, unlucky
    /// with ten refusals in a row, slept 25 s past the network's healing
    /// while its 49 siblings were back.) The back-off kept for a fact of a
    /// second client with our id is not cut short.
    fn reachable(&mut self, server: usize) -> Decision {
        if self.attempt < ORDINARY_ATTEMPTS || self.takeovers > 0 || server >= self.servers {
            return Decision::Stay;
        }
        self.attempt = 0;
        self.tried = 0;
        self.server = server;
        self.connect(RETRY_FIRST)
    }

    fn taken_over(&mut self) -> Decision {
        self.takeovers = self.takeovers.saturating_add(1);
        if self.told {
            Decision::Stay
        } else {
            self.told = true;
            Decision::TellSameId
        }
    }

    /// The wait before the next attempt: two clients with one id take the
    /// session from each other at every connect, so while that is a fact
    /// they slow down (2, 4, 8, 16, then 30 s) instead of taking turns
    /// every second for ever.
    fn base(&self, ordinary: Duration) -> Duration {
        if self.takeovers == 0 {
            return ordinary;
        }
        (RETRY_FIRST * (1u32 << self.takeovers.min(5))).min(RETRY_MAX)
    }

    fn connect(&mut self, base: Duration) -> Decision {
        let after = jitter(base, self.next_random());
        Decision::Connect {
            server: self.server,
            after,
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: tiny, and good enough to spread a fleet's reconnects.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The ordinary wait before reconnect attempt `n` (from 0): 1 s for the
/// first ten, so a device is back within about a second of a broker restart
/// or a network blip, then doubling up to 30 s so a long outage costs
/// little. (Paho's own automatic reconnect doubles from the first failure:
/// 1, 2, 4 s… which left clients away for seconds after a broker that
/// restarted in a fraction of one.)
pub fn retry_delay(attempt: u32) -> Duration {
    if attempt < ORDINARY_ATTEMPTS {
        RETRY_FIRST
    } else {
        (RETRY_FIRST * (1u32 << (attempt - ORDINARY_ATTEMPTS + 1).min(5))).min(RETRY_MAX)
    }
}

/// `base` spread over 75–125 %, never above [`RETRY_MAX`]: a fleet that lost
/// its broker together does not come back in lockstep (a thousand CONNECTs
/// in the same millisecond, every second).
fn jitter(base: Duration, random: u64) -> Duration {
    let permille = 750 + random % 501;
    (base * u32::try_from(permille).unwrap_or(1000) / 1000).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(d: Decision) -> Duration {
        match d {
            Decision::Connect { after, .. } => after,
            other => panic!("expected a connect, got {other:?}"),
        }
    }

    fn about(d: Duration, secs: f64) -> bool {
        let s = d.as_secs_f64();
        s >= secs * 0.75 - 1e-9 && s <= (secs * 1.25).min(30.0) + 1e-9
    }

    #[test]
    fn retries_every_second_then_back_off_to_30s() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(9), Duration::from_secs(1));
        assert_eq!(retry_delay(10), Duration::from_secs(2));
        assert_eq!(retry_delay(13), Duration::from_secs(16));
        assert_eq!(retry_delay(14), Duration::from_secs(30));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn an_unknown_loss_gets_the_ordinary_schedule_however_often() {
        // A reset, a mid-packet cut, a stall ended by the keepalive, a
        // broker restart: on 3.1.1 they all look like this. A hundred in a
        // row, however quick, never slow the session down or warn.
        let mut p = Policy::new(1, 7);
        for _ in 0..100 {
            assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 1.0));
            assert_eq!(p.on(Fact::Connected), Decision::Stay);
        }
    }

    #[test]
    fn refused_connects_back_off_from_one_second_to_thirty() {
        let mut p = Policy::new(1, 1);
        let waits: Vec<Duration> = (0..20).map(|_| wait(p.on(Fact::AttemptFailed))).collect();
        assert!(waits[..10].iter().all(|w| about(*w, 1.0)), "{waits:?}");
        assert!(about(waits[10], 2.0) && about(waits[13], 16.0), "{waits:?}");
        assert!(waits[14..].iter().all(|w| about(*w, 30.0)), "{waits:?}");
        // Back: the next loss starts from a second again.
        p.on(Fact::Connected);
        assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 1.0));
    }

    #[test]
    fn a_fleet_does_not_reconnect_in_lockstep() {
        let waits: Vec<Duration> = (0..50u64)
            .map(|key| wait(Policy::new(1, key * 7919).on(Fact::Lost(Loss::Unknown))))
            .collect();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 40, "{waits:?}");
        assert!(waits.iter().all(|w| about(*w, 1.0)), "{waits:?}");
        let spread = waits.iter().max().unwrap_or(&Duration::ZERO).as_secs_f64()
            - waits.iter().min().unwrap_or(&Duration::ZERO).as_secs_f64();
        assert!(spread > 0.3, "spread {spread}");
    }

    #[test]
    fn a_list_of_brokers_is_tried_in_turn_before_waiting() {
        let mut p = Policy::new(3, 5);
        assert_eq!(p.first(), 0);
        assert_eq!(
            p.on(Fact::AttemptFailed),
            Decision::Connect {
                server: 1,
                after: Duration::ZERO
            }
        );
        assert_eq!(
            p.on(Fact::AttemptFailed),
            Decision::Connect {
                server: 2,
                after: Duration::ZERO
            }
        );
        let Decision::Connect { server, after } = p.on(Fact::AttemptFailed) else {
            panic!("a connect")
        };
        assert_eq!(server, 0);
        assert!(about(after, 1.0));
        p.on(Fact::Connected);
        // Lost on node 0: node 1 next.
        let Decision::Connect { server, .. } = p.on(Fact::Lost(Loss::Unknown)) else {
            panic!("a connect")
        };
        assert_eq!(server, 1);
    }

    #[test]
    fn another_instance_is_told_once_and_slows_reconnects() {
        let mut p = Policy::new(1, 3);
        assert_eq!(p.on(Fact::OtherInstance), Decision::TellSameId);
        assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 2.0));
        assert_eq!(p.on(Fact::Connected), Decision::Stay);
        assert_eq!(p.on(Fact::OtherInstance), Decision::Stay, "said once");
        assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 4.0));
        for _ in 0..10 {
            p.on(Fact::OtherInstance);
        }
        assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 30.0));
        // The other one has gone: our own mark comes back.
        assert_eq!(p.on(Fact::OwnInstance), Decision::Stay);
        assert!(about(wait(p.on(Fact::Lost(Loss::Unknown))), 1.0));
    }

    #[test]
    fn mqtt5_session_taken_over_is_a_fact_other_reasons_are_not() {
        let mut p = Policy::new(1, 9);
        assert!(about(wait(p.on(Fact::Lost(Loss::Reason(TAKEN_OVER)))), 2.0));
        assert!(p.tell_on_takeover(), "the advice, once");
        assert!(!p.tell_on_takeover());
        assert!(about(wait(p.on(Fact::Lost(Loss::Reason(TAKEN_OVER)))), 4.0));
        // "Server shutting down" (0x8B): a broker restart, not a sibling.
        assert!(about(wait(p.on(Fact::Lost(Loss::Reason(0x8B)))), 1.0));
        // A protocol error (0x82): not a sibling either, and no clean
        // session: the ordinary schedule.
        assert!(about(wait(p.on(Fact::Lost(Loss::Reason(0x82)))), 1.0));
    }

    #[test]
    fn a_sibling_back_on_the_broker_ends_a_long_back_off() {
        let mut p = Policy::new(1, 11);
        // Still on the one-second schedule: nothing to cut short.
        p.on(Fact::AttemptFailed);
        assert_eq!(p.on(Fact::Reachable(0)), Decision::Stay);
        for _ in 0..13 {
            p.on(Fact::AttemptFailed);
        }
        assert!(about(wait(p.on(Fact::AttemptFailed)), 30.0));
        assert!(about(wait(p.on(Fact::Reachable(0))), 1.0));
        // And the schedule starts again from a second.
        assert!(about(wait(p.on(Fact::AttemptFailed)), 1.0));
        // A broker not in our list says nothing about ours.
        assert_eq!(Policy::new(1, 2).on(Fact::Reachable(3)), Decision::Stay);
    }

    #[test]
    fn a_sibling_back_does_not_cut_a_same_id_back_off() {
        let mut p = Policy::new(1, 13);
        p.on(Fact::OtherInstance);
        for _ in 0..12 {
            p.on(Fact::AttemptFailed);
        }
        assert_eq!(p.on(Fact::Reachable(0)), Decision::Stay);
    }

    #[test]
    fn a_sibling_on_another_broker_of_the_list_is_tried_next() {
        let mut p = Policy::new(3, 17);
        for _ in 0..33 {
            p.on(Fact::AttemptFailed);
        }
        let Decision::Connect { server, after } = p.on(Fact::Reachable(2)) else {
            panic!("a connect")
        };
        assert_eq!(server, 2);
        assert!(about(after, 1.0));
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_the_cap() {
        for r in [0, 1, 250, 500, 501, u64::MAX] {
            let j = jitter(Duration::from_secs(1), r);
            assert!(j >= Duration::from_millis(750) && j <= Duration::from_millis(1250));
            assert!(jitter(Duration::from_secs(30), r) <= RETRY_MAX);
        }
    }
}
