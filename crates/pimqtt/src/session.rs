//! One MQTT connection with the behaviour SPEC asks of every program:
//! durable session and QoS 2 by default, our persistence log, TLS and
//! passwords, reconnects on our schedule, availability (`online` on connect,
//! retained `offline` will, `offline` before a clean disconnect),
//! subscriptions re-made on every connect, and messages handed to the
//! program one at a time, each completed with the broker only once applied.
//!
//! A [`Session`] never calls into Paho from the program's thread: it queues
//! work for the process's [worker](crate::worker) (why: see there), and
//! Paho's callbacks turn into [`Event`]s in the program's [`Inbox`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use paho_mqtt as mqtt;

use crate::cli::CommonArgs;
use crate::client::{Core, Target};
use crate::error::ConnectError;
use crate::events::{Delivery, Event, Inbox};
use crate::options::{self, SessionConfig};
use crate::worker::{Job, Worker};

/// A program's handle on one connection. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    core: Arc<Core>,
    worker: Worker,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.core.uri)
            .field("client_id", &self.core.client_id)
            .finish()
    }
}

impl Session {
    /// Builds the client (nothing is sent yet). Files named by flags and the
    /// state directory are checked here, so a typo is reported before any
    /// network activity.
    pub fn new(
        common: &CommonArgs,
        config: SessionConfig,
        inbox: &Inbox,
    ) -> Result<Session, ConnectError> {
        common
            .check()
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let client_id = common
            .client_id
            .clone()
            .unwrap_or_else(|| config.default_client_id.clone());
        let opts = options::build(common, &config, client_id)?;
        writable_state_dir(common)?;
        // Named after the first broker, as Paho's persistence is (options.rs).
        let first = opts.uris.first().map_or(opts.uri.as_str(), String::as_str);
        // Paho names its persistence after the URI without the scheme.
        let paho_uri = first.split_once("://").map_or(first, |(_, rest)| rest);
        let paho_log =
            common
                .state_dir()
                .join(crate::persist::file_name(&opts.client_id, paho_uri, "log"));
        in_flight_state_fits(&paho_log, common.protocol, &opts.client_id)?;
        let journal =
            common
                .state_dir()
                .join(crate::persist::file_name(&opts.client_id, first, "inbox"));
        if common.sync == crate::SyncMode::Always {
            crate::commit::install();
        }
        inbox
            .sender()
            .open_journal(journal.clone(), common.sync, &opts.client_id, config.tag)
            .map_err(|e| {
                ConnectError::Config(format!(
                    "cannot open {} ({e}): give a writable --state-dir",
                    journal.display()
                ))
            })?;
        let journaled = inbox.sender().journaled(&opts.client_id);
        match crate::persist::forget_journaled(&paho_log, common.sync, &journaled) {
            Ok(0) => {}
            Ok(n) => info!(
                "{}: {n} message(s) released just before the last crash are already in the \
                 journal: not taken again",
                opts.client_id
            ),
            Err(e) => {
                return Err(ConnectError::Config(format!(
                    "cannot read {} ({e}): give a writable --state-dir",
                    paho_log.display()
                )))
            }
        }
        crate::paho_sys::skip_openssl_init();
        let client = mqtt::AsyncClient::new(opts.create).map_err(|e| {
            ConnectError::Config(format!(
                "cannot create an MQTT client for {}: {e}",
                opts.uri
            ))
        })?;
        crate::paho_sys::protocol_trace_only();
        let servers = common
            .servers()
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let core = Arc::new(Core {
            key: Worker::key(),
            client,
            connect: opts.connect,
            client_id: opts.client_id,
            server: std::sync::Mutex::new(opts.uri.clone()),
            uris: opts.uris,
            uri: opts.uri,
            tag: config.tag,
            status_topic: config.status_topic,
            subscriptions: std::sync::Mutex::new(config.subscriptions),
            qos: common.qos,
            events: inbox.sender(),
            target: Target {
                tls: common.tls(),
                servers,
                has_user: common.username.is_some(),
            },
            protocol: common.protocol,
            up: std::sync::atomic::AtomicBool::new(false),
        });
        let worker = Worker::get();
        install_callbacks(&core, worker.clone(), opts.stamps);
        Ok(Session { core, worker })
    }

    pub fn client_id(&self) -> &str {
        &self.core.client_id
    }

    pub fn uri(&self) -> &str {
        &self.core.uri
    }

    pub fn qos(&self) -> i32 {
        self.core.qos
    }

    /// Starts connecting, in the background: the program's loop hears
    /// [`Event::Connected`], or [`Event::Failed`] when the broker refuses us
    /// (retrying cannot fix a wrong password). A broker that is not there
    /// is retried on the reconnect schedule (one still starting at boot is
    /// normal).
    pub fn connect(&self) {
        // What a previous run left unapplied comes before anything new.
        self.core.events.replay();
        self.worker.send(Job::Add(self.core.clone()));
    }

    /// [`connect`](Session::connect), saying where to first.
    pub fn start(&self) {
        info!("{} connecting to {}", self.core.client_id, self.core.uri);
        self.connect();
    }

    /// Adds a topic filter to those subscribed to on every connect, for a
    /// filter that names the session's own client id (Home Assistant
    /// discovery's `<prefix>/+/<client id>/+/config`): the id is known only
    /// once the session is built. Call it before [`start`](Self::start).
    pub fn subscribe_too(&self, filter: String) {
        self.core
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(filter);
    }

    /// Queues a publication with the session's QoS; Paho delivers it (and
    /// keeps it across restarts when QoS > 0). Never blocks.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retained: bool) {
        debug!(
            "publish {topic} (q{}, r{})",
            self.core.qos,
            u8::from(retained)
        );
        let msg = options::message(topic, payload, self.core.qos, retained);
        self.worker.send(Job::Publish(self.core.key, msg));
    }

    /// Like [`publish`](Session::publish), for a message that is worthless
    /// after `expiry`: with MQTT 5 the broker drops it once it has waited
    /// that long for a subscriber that is away (a pump command must not be
    /// obeyed when the pump comes back minutes later). MQTT 3.1.1 has no
    /// such thing: there it is an ordinary publication.
    pub fn publish_expiring(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retained: bool,
        expiry: Duration,
    ) {
        if self.core.protocol != crate::cli::Protocol::V5 {
            return self.publish(topic, payload, retained);
        }
        // Whole seconds, at least one: 0 would mean "no expiry" to nobody
        // and "already expired" to some brokers.
        let secs = u32::try_from(expiry.as_secs().max(1)).unwrap_or(u32::MAX);
        debug!(
            "publish {topic} (q{}, r{}, expires in {secs}s)",
            self.core.qos,
            u8::from(retained)
        );
        let msg = options::expiring_message(topic, payload, self.core.qos, retained, secs);
        self.worker.send(Job::Publish(self.core.key, msg));
    }

    /// The graceful end of one session; see [`close_all`].
    pub fn close(&self, inbox: &Inbox, apply: impl FnMut(Delivery)) {
        close_all(std::slice::from_ref(self), inbox, apply);
    }
}

/// The graceful end: `offline` on each status topic, then DISCONNECT, so
/// the broker drops the wills. Messages that arrive meanwhile, and those
/// still waiting in the inbox, are handed to `apply`: the broker already
/// counts them as ours (they are in the journal, so a program that does not
/// get this far applies them at its next start).
pub fn close_all(sessions: &[Session], inbox: &Inbox, mut apply: impl FnMut(Delivery)) {
    let Some(first) = sessions.first() else {
        return;
    };
    first
        .worker
        .send(Job::Close(sessions.iter().map(|s| s.core.key).collect()));
    let mut open = sessions.len();
    // The worker gives up on the broker within seconds; this only guards
    // against a worker that is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open > 0 {
        match inbox.next_event(deadline) {
            Some(Event::Message(d)) => apply(d),
            Some(Event::Closed { .. }) => open -= 1,
            Some(_) => {}
            None => {
                warn!("closing the connection took too long; leaving anyway");
                break;
            }
        }
    }
    while let Some(ev) = inbox.next_event(Instant::now()) {
        if let Event::Message(d) = ev {
            apply(d);
        }
    }
    first.core.events.flush_journal();
}

/// Reports a lost connection, once per connection, from whichever of
/// Paho's callbacks hears of it first.
#[derive(Clone)]
struct Lost {
    core: std::sync::Weak<Core>,
    worker: Worker,
    events: crate::events::EventSender,
    key: usize,
    tag: usize,
}

impl Lost {
    fn report(&self, cli: &mqtt::AsyncClient, reason: Option<mqtt::ReasonCode>) {
        let core = self.core.upgrade();
        if let Some(c) = &core {
            if !c.up.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return; // already reported, or never connected
            }
        }
        let server = core
            .as_ref()
            .and_then(|c| c.server.lock().ok().map(|s| s.clone()))
            .unwrap_or_else(|| cli.server_uri());
        match reason {
            Some(r) => warn!(
                "{} lost the connection to {server}: the broker closed it with {}; reconnecting",
                cli.client_id(),
                crate::client::disconnect_reason(r, &cli.client_id())
            ),
            None => warn!(
                "{} lost the connection to {server}; reconnecting",
                cli.client_id()
            ),
        }
        self.worker.send(Job::Lost(self.key, reason));
        self.events
            .send(Event::ConnectionLost { session: self.tag });
    }
}

/// Refuses, at start and saying what to do, to run MQTT 3.1.1 over the
/// in-flight messages an MQTT 5 run left (`-V 5`, then `-V 311` with the
/// same id and `--state-dir`): Paho C cannot restore them and would only
/// say "Persistence error". (Paho refuses only this: `r5-`, `s5-` and
/// `sc5-` records under a 3.1.1 client.)
fn in_flight_state_fits(
    log: &std::path::Path,
    protocol: crate::cli::Protocol,
    client_id: &str,
) -> Result<(), ConnectError> {
    if protocol == crate::cli::Protocol::V5 {
        return Ok(());
    }
    let Ok(bytes) = std::fs::read(log) else {
        return Ok(()); // nothing yet
    };
    let mut live = std::collections::HashMap::new();
    crate::store::replay(&bytes, &mut live);
    let v5 = live
        .keys()
        .filter(|k| ["r5-", "s5-", "sc5-"].iter().any(|p| k.starts_with(p)))
        .count();
    if v5 == 0 {
        return Ok(());
    }
    Err(ConnectError::Config(format!(
        "{log} holds {v5} MQTT 5 message(s) of client {client_id:?} still in flight (a run \
         with -V 5): run with -V 5 to finish them, or delete {log} to drop them",
        log = log.display()
    )))
}

/// Refuses a state directory we cannot write at start, naming it: Paho would
/// only say "Persistence error" at the first message.
fn writable_state_dir(common: &CommonArgs) -> Result<(), ConnectError> {
    let dir = common.state_dir();
    let fail = |e: std::io::Error| {
        ConnectError::Config(format!(
            "cannot write the state directory {} ({e}): give a writable one with \
             --state-dir, or fix its permissions",
            dir.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Paho's callbacks run on its receive thread, holding its lock: they may
/// call the client (Paho allows that from a callback) but must not wait for
/// anything that waits for Paho; delivering a message waits (when too many
/// are pending) only for the program's loop, which never calls Paho.
fn install_callbacks(core: &Arc<Core>, worker: Worker, stamps: crate::persist::Stamps) {
    let client = &core.client;
    let (tag, qos, key) = (core.tag, core.qos, core.key);
    let status = core.status_topic.clone();
    let events = core.events.clone();
    let up = Arc::downgrade(core);
    let mark_topic = crate::instance::topic(&core.client_id);
    let mark = crate::instance::new_mark();
    let (on_connect_topic, on_connect_mark) = (mark_topic.clone(), mark.clone());
    client.set_connected_callback(move |cli| {
        // The instance mark (`instance.rs`): read back first, then written,
        // at QoS 0: it costs no persistence, and a lost one only means one
        // fact less.
        if let Some(topic) = &on_connect_topic {
            drop(cli.subscribe(topic, 0));
            let msg = options::message(topic, on_connect_mark.as_str(), 0, true);
            if let Err(e) = cli.try_publish(msg) {
                debug!("could not publish the instance mark to {topic}: {e}");
            }
        }
        // Paho does not restore subscriptions after a reconnect, and a
        // clean session has none: subscribe every time.
        let subs = up.upgrade().map_or_else(Vec::new, |c| {
            c.subscriptions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        // One SUBSCRIBE per filter: aedes 1.2.0 with Redis persistence
        // (the cluster of scripts/cluster) delivers nothing to a durable
        // session that subscribed to several filters in one SUBSCRIBE.
        for sub in &subs {
            drop(cli.subscribe(sub, qos));
        }
        if !subs.is_empty() {
            debug!("subscribe {subs:?} (q{qos})");
        }
        if let Some(topic) = &status {
            let msg = options::message(topic, "online", qos, true);
            if let Err(e) = cli.try_publish(msg) {
                warn!("could not publish online to {topic}: {e}");
            }
        }
        if let Some(c) = up.upgrade() {
            c.up.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        events.send(Event::Connected { session: tag });
    });
    // MQTT 5: a broker that closes our connection says why, in a
    // DISCONNECT. Paho C 1.3.16 then calls this "disconnected" callback but
    // not "connection lost" (it marks the client disconnected before asking
    // whether it was connected), so the loss is reported from here too;
    // `Core::up` makes sure each connection is reported lost only once.
    let lost = Lost {
        core: Arc::downgrade(core),
        worker,
        events: core.events.clone(),
        key,
        tag,
    };
    let on_disconnect = lost.clone();
    client.set_disconnected_callback(move |cli, _, reason| {
        on_disconnect.report(cli, Some(reason));
    });
    client.set_connection_lost_callback(move |cli| lost.report(cli, None));
    let events = core.events.clone();
    let client_id = core.client_id.clone();
    let facts = Worker::get();
    let mut mark = crate::instance::Mark::new(mark);
    client.set_message_callback(move |_, msg| {
        if let Some(msg) = msg {
            if mark_topic.as_deref() == Some(msg.topic()) {
                if let Some(fact) = mark.read(msg.payload(), msg.retained()) {
                    facts.send(Job::Fact(key, fact));
                }
                return;
            }
            let release = crate::paho_sys::releasing_msgid()
                .and_then(|msgid| Some((msgid, stamps.get(msgid)?)));
            events.deliver(tag, &client_id, msg, release);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Protocol;
    use crate::store::{Store, SyncMode};

    #[test]
    fn mqtt_5_in_flight_state_is_refused_to_a_3_1_1_run_with_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("LEDClient-tcp___localhost_1883.log");
        assert!(in_flight_state_fits(&log, Protocol::V311, "LEDClient").is_ok());
        let mut store = Store::open(log.clone(), SyncMode::Never).expect("open");
        store.put("r-7", b"3.1.1".to_vec()).expect("put");
        assert!(in_flight_state_fits(&log, Protocol::V311, "LEDClient").is_ok());
        store.put("s5-8", b"5".to_vec()).expect("put");
        let err = in_flight_state_fits(&log, Protocol::V311, "LEDClient")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("1 MQTT 5 message(s)") && err.contains("-V 5") && err.contains("delete"),
            "{err}"
        );
        assert!(in_flight_state_fits(&log, Protocol::V5, "LEDClient").is_ok());
        store.remove("s5-8").expect("remove");
        assert!(in_flight_state_fits(&log, Protocol::V311, "LEDClient").is_ok());
    }
}
