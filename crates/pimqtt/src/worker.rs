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

use crate::client::{diagnose, Core, Diagnosis};
use crate::events::Event;
use crate::handoff::HANDOFF;
use crate::options::OP_TIMEOUT;
use crate::probe::{Port, Probe};
use crate::reconnect::{Decision, Fact, Loss, Policy};

/// How often pending connects are looked at.
const POLL: Duration = Duration::from_millis(10);
/// How long queued jobs may keep the timers waiting.
const DRAIN: Duration = Duration::from_millis(50);
/// How often a connection we hold is checked with Paho (see [`watch`]).
const WATCH: Duration = Duration::from_secs(2);

pub(crate) enum Job {
    /// A new session: connect it now, and again whenever it is lost.
    Add(Arc<Core>),
    /// A connection was lost (when Paho said so); with MQTT 5, the reason
    /// the broker gave.
    Lost(usize, Option<mqtt::ReasonCode>),
    /// Something the session learnt while connected (its instance mark).
    Fact(usize, Fact),
    Publish(usize, mqtt::Message),
    /// `offline`, DISCONNECT, then [`Event::Closed`] for each.
    Close(Vec<usize>),
    /// A broker that did not answer at TCP does now (`probe.rs`).
    Reachable(String),
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
                let to_self = tx.clone();
                let probe = Probe::new(move |uri| {
                    let _ = to_self.send(Job::Reachable(uri));
                });
                // A thread that cannot start leaves jobs unread: the
                // program then sees no connection and says so.
                if let Err(e) = std::thread::Builder::new()
                    .name("mqtt-worker".into())
                    .spawn(move || run(&rx, probe))
                {
                    warn!("cannot start the MQTT worker thread: {e}");
                }
                Worker { tx }
            })
            .clone()
    }

    pub(crate) fn send(&self, job: Job) {
        if matches!(job, Job::Publish(..)) {
            HANDOFF.queued();
        }
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
        /// When to check next that Paho still has the connection.
        check: Instant,
    },
    /// Refused for good; nothing more is tried.
    Failed,
}

struct Link {
    core: Arc<Core>,
    state: State,
    /// The broker of `core.uris` connected to, or to try next.
    server: usize,
    policy: Policy,
}

fn run(rx: &Receiver<Job>, mut probe: Probe) {
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
        take_queued(rx, DRAIN, |job| handle(job, &mut links));
        step(&mut links, &mut probe, Instant::now());
    }
}

/// Hands `f` what `rx` holds, but for at most `budget`: when jobs come
/// faster than they are done, the timers must still run. (A restarted
/// fleet of 50 tanks on a loaded machine kept its worker busy handing over
/// the publications queued while the broker was away, each one synced to
/// the disk and, before Paho patch 12, costing a scan of every client's
/// queued commands; for minutes not one connect was tried: the soak's "no
/// level from any tank" failures.)
fn take_queued<T>(rx: &Receiver<T>, budget: Duration, mut f: impl FnMut(T)) {
    let until = Instant::now() + budget;
    while let Ok(job) = rx.try_recv() {
        f(job);
        if Instant::now() >= until {
            break;
        }
    }
}

fn next_wake(links: &HashMap<usize, Link>) -> Option<Instant> {
    links
        .values()
        .filter_map(|l| match l.state {
            State::Waiting { at } => Some(at),
            State::Connecting { .. } => Some(Instant::now() + POLL),
            State::Connected { check, .. } => Some(check),
            State::Failed => None,
        })
        .min()
}

fn handle(job: Job, links: &mut HashMap<usize, Link>) {
    match job {
        Job::Add(core) => {
            let policy = Policy::new(core.uris.len(), crate::instance::random() ^ core.key as u64);
            links.insert(
                core.key,
                Link {
                    server: policy.first(),
                    core,
                    state: State::Waiting { at: Instant::now() },
                    policy,
                },
            );
        }
        Job::Lost(key, reason) => {
            if let Some(link) = links.get_mut(&key) {
                lost(link, reason, Instant::now());
            }
        }
        Job::Fact(key, fact) => {
            if let Some(link) = links.get_mut(&key) {
                let decision = link.policy.on(fact);
                act(link, decision, Instant::now());
            }
        }
        Job::Publish(key, msg) => {
            if let Some(link) = links.get(&key) {
                let topic = msg.topic().to_string();
                if let Err(e) = link.core.client.try_publish(msg) {
                    warn!("could not queue a message for {topic}: {e}");
                }
            }
            HANDOFF.handed();
        }
        Job::Close(keys) => close(&keys, links),
        Job::Reachable(uri) => wake(links, &[uri], Instant::now()),
    }
}

/// A connection went away: the policy (`reconnect.rs`) says when to try
/// again and where, from what is known of the cause: with MQTT 5 the
/// broker's reason code, otherwise nothing, which gets the ordinary
/// schedule. The session is never started afresh.
fn lost(link: &mut Link, reason: Option<mqtt::ReasonCode>, now: Instant) {
    if !matches!(
        link.state,
        State::Connected { .. } | State::Connecting { .. }
    ) {
        return;
    }
    let loss = match reason {
        Some(r) => Loss::Reason(r as u8),
        None => Loss::Unknown,
    };
    let decision = link.policy.on(Fact::Lost(loss));
    if loss == Loss::Reason(mqtt::ReasonCode::SessionTakenOver as u8)
        && link.policy.tell_on_takeover()
    {
        tell_same_id(&link.core.client_id);
    }
    act(link, decision, now);
}

/// Carries out what the policy decided.
fn act(link: &mut Link, decision: Decision, now: Instant) {
    match decision {
        Decision::Stay => {}
        Decision::Connect { server, after } => {
            link.server = server;
            link.state = State::Waiting { at: now + after };
        }
        Decision::TellSameId => tell_same_id(&link.core.client_id),
    }
}

fn tell_same_id(id: &str) {
    warn!(
        "{id}: another client is using the client id {id:?} (a service and a manual run?): \
         the broker gives the session to whichever connected last. Stop the other one, or \
         give this one its own id with -i. Retrying less often meanwhile"
    );
}

fn step(links: &mut HashMap<usize, Link>, probe: &mut Probe, now: Instant) {
    // Brokers a session has just connected to.
    let mut reached: Vec<String> = Vec::new();
    for link in links.values_mut() {
        match &mut link.state {
            State::Waiting { at } if *at <= now => {
                let Some(opts) = link.core.connect.get(link.server) else {
                    link.server = 0;
                    continue;
                };
                let token = link.core.client.connect(opts.clone());
                link.state = State::Connecting { token };
            }
            State::Connecting { token } => {
                let Some(result) = token.try_wait() else {
                    continue;
                };
                if attempted(link, result, probe, now) {
                    let uri = link.core.uris.get(link.server).unwrap_or(&link.core.uri);
                    if !reached.contains(uri) {
                        reached.push(uri.clone());
                    }
                }
            }
            State::Connected { check } if *check <= now => {
                *check = now + WATCH;
                watch(link, now);
            }
            _ => {}
        }
    }
    if !reached.is_empty() {
        wake(links, &reached, now);
    }
}

/// Sessions waiting to retry a broker that is reachable again (another
/// session has just connected to it, or the probe found its port
/// answering) are told so (the policy decides whether that cuts
/// their wait short).
fn wake(links: &mut HashMap<usize, Link>, reached: &[String], now: Instant) {
    for link in links.values_mut() {
        if !matches!(link.state, State::Waiting { .. }) {
            continue;
        }
        let Some(server) = link.core.uris.iter().position(|u| reached.contains(u)) else {
            continue;
        };
        let decision = link.policy.on(Fact::Reachable(server));
        if decision != Decision::Stay {
            log::debug!(
                "{}: {} is reachable again; retrying now",
                link.core.client_id,
                reached.join(", ")
            );
        }
        act(link, decision, now);
    }
}

/// A connection Paho no longer has, although it never called "connection
/// lost", is taken as lost (Paho's own word, `is_connected`: a fact), so a
/// session cannot stay silent for good with its publications buffered. Why:
/// in one soak run two sessions went quiet that way after a clean session
/// (an old #3602 recovery, since removed) met a broker restart. `Core::up`
/// says whether the loss was already reported, so it is reported once
/// either way.
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
    lost(link, None, now);
}

/// Whether the attempt connected.
fn attempted(
    link: &mut Link,
    result: mqtt::Result<mqtt::ServerResponse>,
    probe: &mut Probe,
    now: Instant,
) -> bool {
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
            link.policy.on(Fact::Connected);
            link.state = State::Connected { check: now + WATCH };
            true
        }
        Err(e) => match diagnose(core, &e, link.server) {
            Diagnosis::Fatal(error) => {
                core.events.send(Event::Failed {
                    session: core.tag,
                    error,
                });
                link.state = State::Failed;
                false
            }
            Diagnosis::Retry { why, listening } => {
                let tried = link.server;
                let decision = link.policy.on(Fact::AttemptFailed);
                if !listening && link.policy.backing_off() {
                    if let (Some(uri), Some(s)) =
                        (core.uris.get(tried), core.target.servers.get(tried))
                    {
                        probe.watch(Port {
                            uri: uri.clone(),
                            host: s.host.clone(),
                            port: s.port,
                        });
                    }
                }
                if let Decision::Connect { server, after } = decision {
                    let n = core.uris.len().max(1);
                    if after.is_zero() && n > 1 {
                        log::debug!(
                            "{why}; trying {} next",
                            core.uris.get(server).map_or("", String::as_str)
                        );
                    } else {
                        let all = if n > 1 {
                            " (nor any other broker of the list)"
                        } else {
                            ""
                        };
                        warn!(
                            "{}: {why}{all}; retrying in {:.1}s",
                            core.client_id,
                            after.as_secs_f64()
                        );
                    }
                }
                act(link, decision, now);
                false
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
    fn a_flood_of_jobs_leaves_time_for_the_timers() {
        let (tx, rx) = mpsc::channel();
        for n in 0..1000 {
            tx.send(n).unwrap();
        }
        let start = Instant::now();
        let mut done = 0;
        take_queued(&rx, Duration::from_millis(20), |_| {
            std::thread::sleep(Duration::from_millis(2));
            done += 1;
        });
        assert!(done < 1000, "stopped before the queue was empty");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        // A short queue is taken whole.
        let (tx, rx) = mpsc::channel();
        (0..5).for_each(|n| tx.send(n).unwrap());
        let mut seen = Vec::new();
        take_queued(&rx, Duration::from_secs(1), |n| seen.push(n));
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }
}
