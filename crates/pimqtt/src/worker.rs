//! One thread per process that makes every call into Paho that is not made
//! from Paho's own callbacks: connecting and reconnecting on our schedule,
//! publishing, closing.
//!
//! Why one thread and not "call Paho from wherever":
//! - Paho runs our message callback on its receive thread while holding its
//!   global lock, and that callback waits for the program to apply the
//!   message (see [`events`](crate::events)). A program thread that called
//!   into Paho at that moment would wait for the same lock: a deadlock. So a
//!   program only *queues* work here and never blocks on Paho.
//! - Every session of a fleet (`--count 1000`) shares this thread instead of
//!   having a reconnect thread each.
//! - Calls into one client come from one thread of ours, never from two at
//!   once (Paho C has had crashes from concurrent calls during reconnects,
//!   eclipse-paho/paho.mqtt.c#1459 and others).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use paho_mqtt as mqtt;

use crate::client::{diagnose, tcp_reachable, Core, Diagnosis};
use crate::events::Event;
use crate::options::OP_TIMEOUT;

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often pending connects are looked at.
const POLL: Duration = Duration::from_millis(10);
/// A connection dropped sooner than this after it was made, by a broker
/// that is still there, counts as a "kick" (another client with our id
/// took the session over).
const SHORT_LIVED: Duration = Duration::from_secs(10);
/// How long "is the broker still there?" may take.
const PROBE: Duration = Duration::from_millis(200);
/// A connection closed this soon after it was made, by a broker still up,
/// was closed for something we sent at once: not another client (that
/// takes the other's reconnect delay, a second or more).
const REFUSED_WITHIN: Duration = Duration::from_millis(300);
/// Such closings in a row before the session is started afresh.
const REFUSALS: u32 = 3;
/// Kicks in a row before we say so and back off.
const KICKS: u32 = 3;
/// How often a connection we hold is checked with Paho (see [`watch`]).
const WATCH: Duration = Duration::from_secs(2);

/// The wait before reconnect attempt `n` (from 0): 1 s for the first ten, so
/// a device is back within about a second of a broker restart or a network
/// blip, then doubling up to 30 s so a long outage costs little. (Paho's own
/// automatic reconnect doubles from the first failure: 1, 2, 4 s… which left
/// clients away for seconds after a broker that restarted in a fraction of one.)
pub fn retry_delay(attempt: u32) -> Duration {
    if attempt < 10 {
        RETRY_FIRST
    } else {
        (RETRY_FIRST * (1u32 << (attempt - 9).min(5))).min(RETRY_MAX)
    }
}

pub(crate) enum Job {
    /// A new session: connect it now, and again whenever it is lost.
    Add(Arc<Core>),
    /// A connection was lost (when Paho said so); with MQTT 5, the reason
    /// the broker gave.
    Lost(usize, Instant, Option<mqtt::ReasonCode>),
    Publish(usize, mqtt::Message),
    /// `offline`, DISCONNECT, then [`Event::Closed`] for each.
    Close(Vec<usize>),
}

/// The handle programs' sessions use to queue work.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    tx: Sender<Job>,
}

impl Worker {
    /// The process's worker, started on first use.
    pub(crate) fn get() -> Worker {
        static WORKER: OnceLock<Worker> = OnceLock::new();
        WORKER
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel();
                // A thread that cannot start leaves jobs unread: the
                // program then sees no connection and says so.
                if let Err(e) = std::thread::Builder::new()
                    .name("mqtt-worker".into())
                    .spawn(move || run(&rx))
                {
                    warn!("cannot start the MQTT worker thread: {e}");
                }
                Worker { tx }
            })
            .clone()
    }

    pub(crate) fn send(&self, job: Job) {
        let _ = self.tx.send(job);
    }

    /// A key for a new session, unique in the process.
    pub(crate) fn key() -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

enum State {
    /// Next attempt at `at`.
    Waiting {
        at: Instant,
    },
    Connecting {
        token: mqtt::Token,
    },
    Connected {
        since: Instant,
        /// When to check next that Paho still has the connection.
        check: Instant,
    },
    /// Connected with a clean session, which is being closed so that the
    /// next connect makes a durable one again.
    Renewing {
        token: mqtt::Token,
        since: Instant,
    },
    /// Refused for good; nothing more is tried.
    Failed,
}

struct Link {
    core: Arc<Core>,
    state: State,
    /// The broker of `core.uris` connected to, or to try next.
    server: usize,
    /// Brokers of the list tried, one after the other, in this round.
    tried: usize,
    /// Failed rounds (every broker of the list tried) since the last success.
    attempt: u32,
    /// Short-lived connections in a row.
    kicks: u32,
    told_kicks: bool,
    /// Connections closed as soon as made, in a row.
    refusals: u32,
    /// Connect next with a clean session, then again with a durable one.
    fresh: bool,
}

fn run(rx: &Receiver<Job>) {
    let mut links: HashMap<usize, Link> = HashMap::new();
    loop {
        let wake = next_wake(&links);
        let job = match wake {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match job {
            Ok(job) => handle(job, &mut links),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Take what else is queued before looking at timers, so a burst of
        // publications does not wait for a poll each.
        while let Ok(job) = rx.try_recv() {
            handle(job, &mut links);
        }
        step(&mut links, Instant::now());
    }
}

fn next_wake(links: &HashMap<usize, Link>) -> Option<Instant> {
    links
        .values()
        .filter_map(|l| match l.state {
            State::Waiting { at } => Some(at),
            State::Connecting { .. } | State::Renewing { .. } => Some(Instant::now() + POLL),
            State::Connected { check, .. } => Some(check),
            State::Failed => None,
        })
        .min()
}

fn handle(job: Job, links: &mut HashMap<usize, Link>) {
    match job {
        Job::Add(core) => {
            links.insert(
                core.key,
                Link {
                    core,
                    state: State::Waiting { at: Instant::now() },
                    server: 0,
                    tried: 0,
                    attempt: 0,
                    kicks: 0,
                    told_kicks: false,
                    refusals: 0,
                    fresh: false,
                },
            );
        }
        Job::Lost(key, at, reason) => {
            if let Some(link) = links.get_mut(&key) {
                lost(link, reason, at, Instant::now());
            }
        }
        Job::Publish(key, msg) => {
            if let Some(link) = links.get(&key) {
                let topic = msg.topic().to_string();
                if let Err(e) = link.core.client.try_publish(msg) {
                    warn!("could not queue a message for {topic}: {e}");
                }
            }
        }
        Job::Close(keys) => close(&keys, links),
    }
}

/// A connection went away: back on [`retry_delay`]'s schedule, unless it keeps
/// being taken over, which is said once and slowed down. With a list of
/// brokers (a cluster), the next one is tried first: the one lost is likely
/// down.
///
/// With MQTT 5 the broker says why it closed the connection: "session
/// taken over" (0x8E) is a kick, any other reason is not, and nothing needs
/// guessing. With MQTT 3.1.1 (or a socket that just closed) a takeover and
/// a broker restart look alike from here, so a short-lived connection
/// counts as a kick only if the broker still accepts connections right
/// after: a restarting Mosquitto closes its listeners before its clients'
/// connections. Without that check, a few quick restarts in a row were
/// taken for a sibling and slowed reconnecting to 2 s and more.
///
/// A connection closed *as soon as* it is made, again and again, is another
/// matter: Mosquitto 2.0.21 closes one ("protocol error") whenever a client
/// sends a QoS 2 PUBLISH it already holds a second time, which Paho does at
/// each reconnect until it gets the PUBREC that the closing prevents
/// (eclipse-mosquitto/mosquitto#3602, open): the session is stuck for good.
/// Only a clean session gets out of it, so the next connect asks for one
/// (dropping what was in flight either way, and what the broker had queued
/// for us) and the one after that makes a durable session again.
fn lost(link: &mut Link, reason: Option<mqtt::ReasonCode>, at: Instant, now: Instant) {
    // Lost while the clean session's DISCONNECT is under way: the next
    // CONNECT waits until Paho has finished with it (`step`), so that no
    // connection is made while Paho may still be closing the last one.
    if matches!(link.state, State::Renewing { .. }) {
        return;
    }
    let lifetime = match link.state {
        State::Connected { since, .. } => Some(now - since),
        // Connected a moment ago, not yet polled.
        State::Connecting { .. } => Some(Duration::ZERO),
        State::Waiting { .. } | State::Renewing { .. } | State::Failed => None,
    };
    let short = lifetime.is_some_and(|l| l < SHORT_LIVED);
    let in_use = link.core.target.servers.get(link.server);
    let quick = lifetime.is_some_and(|l| l < REFUSED_WITHIN);
    // `None`: cannot tell; the counts in a row stay as they are.
    let (kicked, refused) = match reason {
        Some(r) => (
            Some(r == mqtt::ReasonCode::SessionTakenOver),
            Some(quick && r == mqtt::ReasonCode::ProtocolError),
        ),
        None => {
            // Only a prompt look tells: a loss taken up late (a fleet's
            // fifty at once on a loaded machine) may find a broker that
            // restarted meanwhile. Quick restarts were then taken for #3602
            // refusals (below), even on Mosquitto 2.0.11: a clean session
            // each time, dropping what was in flight (57 in one soak run).
            let prompt = now.saturating_duration_since(at) < PROBE;
            if short && !prompt {
                (None, None)
            } else {
                let up = short && in_use.is_some_and(|s| tcp_reachable(&s.host, s.port, PROBE));
                (Some(up && !quick), Some(up && quick))
            }
        }
    };
    let count = |n: u32, seen: Option<bool>| match seen {
        Some(true) => n + 1,
        Some(false) => 0,
        None => n,
    };
    link.refusals = count(link.refusals, refused);
    if link.refusals >= REFUSALS {
        link.refusals = 0;
        link.fresh = true;
        warn!(
            "{}: the broker closes this connection as soon as it is made ({REFUSALS} times in a \
             row): Mosquitto 2.0.21 does so to a session with a QoS 2 message it refuses to \
             take again (eclipse-mosquitto#3602). Starting a clean session: messages in flight \
             and queued for it are dropped",
            link.core.client_id
        );
    }
    link.kicks = count(link.kicks, kicked);
    link.server = (link.server + 1) % link.core.uris.len().max(1);
    link.tried = 0;
    let delay = if link.kicks >= KICKS {
        if !link.told_kicks {
            link.told_kicks = true;
            let id = &link.core.client_id;
            warn!(
                "{id}: the broker keeps closing this connection right after it is made; \
                 another client is probably using the client id {id:?} (a service and a \
                 manual run?). Stop the other one, or give this one its own id with -i. \
                 Retrying less often meanwhile"
            );
        }
        retry_delay(9 + link.kicks - KICKS + 1)
    } else {
        retry_delay(0)
    };
    link.state = State::Waiting { at: now + delay };
}

fn step(links: &mut HashMap<usize, Link>, now: Instant) {
    for link in links.values_mut() {
        match &mut link.state {
            State::Waiting { at } if *at <= now => {
                let all = if link.fresh {
                    &link.core.fresh
                } else {
                    &link.core.connect
                };
                let Some(opts) = all.get(link.server) else {
                    link.server = 0;
                    continue;
                };
                let token = link.core.client.connect(opts.clone());
                link.state = State::Connecting { token };
            }
            State::Renewing { token, since } => {
                // Paho never completes a DISCONNECT it takes up after the
                // connection was already lost: do not wait on it for ever.
                let closed = token.try_wait().is_some() || now - *since >= OP_TIMEOUT;
                if closed {
                    link.state = State::Waiting { at: now };
                }
            }
            State::Connecting { token } => {
                let Some(result) = token.try_wait() else {
                    continue;
                };
                attempted(link, result, now);
            }
            State::Connected { check, .. } if *check <= now => {
                *check = now + WATCH;
                watch(link, now);
            }
            _ => {}
        }
    }
}

/// A connection Paho no longer has, although it never called "connection
/// lost", is taken as lost, so a session cannot stay silent for good with
/// its publications buffered. Why: in one soak run two sessions went quiet
/// that way right after [`lost`]'s #3602 recovery (a clean session, closed
/// again at once) met a broker restart. `Core::up` says whether the loss
/// was already reported, so it is reported once either way.
fn watch(link: &mut Link, now: Instant) {
    let core = &link.core;
    if core.client.is_connected() || !core.up.swap(false, Ordering::SeqCst) {
        return;
    }
    warn!(
        "{}: Paho closed the connection without reporting it lost; reconnecting",
        core.client_id
    );
    core.events
        .send(Event::ConnectionLost { session: core.tag });
    lost(link, None, now, now);
}

fn attempted(link: &mut Link, result: mqtt::Result<mqtt::ServerResponse>, now: Instant) {
    let core = &link.core;
    match result {
        Ok(rsp) => {
            let kept = rsp.connect_response().is_some_and(|r| r.session_present);
            let server = core.uris.get(link.server).unwrap_or(&core.uri).clone();
            info!(
                "{} connected to {} ({})",
                core.client_id,
                server,
                if kept {
                    "the broker kept our session"
                } else {
                    "new session"
                }
            );
            if let Ok(mut s) = core.server.lock() {
                *s = server;
            }
            link.tried = 0;
            link.attempt = 0;
            link.state = if std::mem::take(&mut link.fresh) {
                // The stuck session is gone; now a durable one again.
                let opts = mqtt::DisconnectOptionsBuilder::new()
                    .timeout(Duration::ZERO)
                    .finalize();
                State::Renewing {
                    token: core.client.disconnect(opts),
                    since: now,
                }
            } else {
                State::Connected {
                    since: now,
                    check: now + WATCH,
                }
            };
        }
        Err(e) => match diagnose(core, &e, link.server) {
            Diagnosis::Fatal(error) => {
                core.events.send(Event::Failed {
                    session: core.tag,
                    error,
                });
                link.state = State::Failed;
            }
            Diagnosis::Retry(why) => {
                // The next broker of the list at once; the schedule's
                // wait only once every one of them has been tried.
                let n = core.uris.len().max(1);
                link.server = (link.server + 1) % n;
                link.tried += 1;
                if link.tried < n {
                    log::debug!(
                        "{why}; trying {} next",
                        core.uris.get(link.server).map_or("", String::as_str)
                    );
                    link.state = State::Waiting { at: now };
                    return;
                }
                link.tried = 0;
                let delay = if link.kicks >= KICKS {
                    retry_delay(9 + link.kicks - KICKS + 1)
                } else {
                    retry_delay(link.attempt)
                };
                link.attempt += 1;
                let all = if n > 1 {
                    " (nor any other broker of the list)"
                } else {
                    ""
                };
                warn!("{why}{all}; retrying in {}s", delay.as_secs());
                link.state = State::Waiting { at: now + delay };
            }
        },
    }
}

/// Closes sessions together: every `offline` first, then every DISCONNECT,
/// each step waiting at most a few seconds for all of them, so closing a
/// fleet of a thousand takes about as long as closing one.
fn close(keys: &[usize], links: &mut HashMap<usize, Link>) {
    let t0 = Instant::now();
    let closing: Vec<Link> = keys.iter().filter_map(|k| links.remove(k)).collect();
    let connected: Vec<&Link> = closing
        .iter()
        // Paho's word, not our state: a connection made a moment ago may
        // not have been polled yet.
        .filter(|l| l.core.client.is_connected())
        .collect();
    for l in &connected {
        if let Some(topic) = &l.core.status_topic {
            // QoS 0, not waited for, DISCONNECT right behind it: a broker
            // streaming a backlog at us answers only after what it has
            // already queued (hundreds of milliseconds or more), and a stop
            // must take effect now. The broker reads both in order on this
            // connection; were it lost first, the will says the same.
            let msg = crate::options::message(topic, "offline", 0, true);
            if let Err(e) = l.core.client.try_publish(msg) {
                warn!("{}: could not publish offline: {e}", l.core.client_id);
            }
        }
    }
    // No grace period: our own publications still in flight are in the
    // persistence log and go out again at the next connect.
    let opts = mqtt::DisconnectOptionsBuilder::new()
        .timeout(Duration::ZERO)
        .finalize();
    let t1 = Instant::now();
    let tokens: Vec<(&Link, mqtt::Token)> = connected
        .iter()
        .map(|l| (*l, l.core.client.disconnect(opts.clone())))
        .collect();
    let t2 = Instant::now();
    let until = Instant::now() + OP_TIMEOUT / 2;
    for (l, token) in tokens {
        if let Err(e) = token.wait_for(until.saturating_duration_since(Instant::now())) {
            warn!("disconnect from {} did not complete: {e}", l.core.uri);
        }
    }
    log::debug!(
        "closed {} session(s): offline queued in {:?}, DISCONNECT queued in {:?}, done in {:?}",
        closing.len(),
        t1 - t0,
        t2 - t1,
        t2.elapsed()
    );
    for l in &closing {
        info!("{} disconnected", l.core.client_id);
        l.core.events.send(Event::Closed {
            session: l.core.tag,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_every_second_then_back_off_to_30s() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(9), Duration::from_secs(1));
        assert_eq!(retry_delay(10), Duration::from_secs(2));
        assert_eq!(retry_delay(13), Duration::from_secs(16));
        assert_eq!(retry_delay(14), Duration::from_secs(30));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
