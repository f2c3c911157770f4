//! One MQTT connection with the behaviour SPEC asks of every program:
//! durable session and QoS 2 by default, Paho file persistence, TLS and
//! passwords, automatic reconnect with back-off, availability (`online` on
//! connect, retained `offline` will, explicit `offline` before a clean
//! disconnect) and subscriptions re-made on every connect.
//!
//! Paho delivers messages and connection changes on its own thread; a
//! [`Session`] turns them into [`Event`]s on a bounded channel that the
//! program's loop reads, so each program's state lives on one thread and a
//! slow consumer pushes back on the socket instead of growing a queue.

use std::fmt;
use std::fs::File;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use paho_mqtt as mqtt;

use crate::cli::CommonArgs;
use crate::shutdown::Stop;

/// How long one connect attempt, publish or disconnect may take before we
/// give up on it (Paho's synchronous default is five minutes).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// QoS 1/2 publications in flight at once on one connection. Mosquitto
/// (`max_inflight_messages`, default 20) drops an MQTT 3.1.1 client that
/// has more unacknowledged QoS 2 messages than that, so a burst (the
/// controller commanding a fleet) must wait in Paho's queue instead.
const MAX_INFLIGHT: i32 = 20;
/// Outgoing messages Paho may hold while the broker is away.
const MAX_BUFFERED: i32 = 100_000;

/// What a program's loop receives. `session` says which connection it came
/// from, for programs that run a fleet of devices in one process.
#[derive(Debug)]
pub enum Event {
    Message {
        session: usize,
        msg: mqtt::Message,
    },
    Connected {
        session: usize,
    },
    ConnectionLost {
        session: usize,
    },
    /// SIGINT/SIGTERM (or a test) asked the program to stop.
    Stop,
}

/// The sending side of the event channel; every session of a program and
/// its [`Stop`] handle share it.
#[derive(Debug, Clone)]
pub struct Events {
    tx: SyncSender<Event>,
    stopping: Arc<AtomicBool>,
}

/// A bounded event channel and the [`Stop`] handle that feeds it.
pub fn channel(capacity: usize) -> (Events, Stop, Receiver<Event>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let events = Events {
        tx,
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let stop = Stop::new(events.clone());
    (events, stop, rx)
}

impl Events {
    /// Blocks Paho's thread while the channel is full (back-pressure), but
    /// gives up once the program is stopping so a disconnect cannot deadlock
    /// against a loop that no longer reads.
    fn send(&self, mut ev: Event) {
        loop {
            match self.tx.try_send(ev) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    ev = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    pub(crate) fn try_send_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Event::Stop);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// A last will other than the availability one (will-demo sets its own).
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: i32,
    pub retained: bool,
}

/// What differs between the programs' connections.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Used when `-i/--id` is not given.
    pub default_client_id: String,
    /// Availability topic: retained `online` on connect, `offline` as will
    /// and before a clean disconnect.
    pub status_topic: Option<String>,
    /// Topic filters, subscribed with `--qos` on every connect.
    pub subscriptions: Vec<String>,
    /// A will that replaces the availability will.
    pub will: Option<Will>,
    /// Tag carried by this session's events.
    pub tag: usize,
}

/// Why a program could not get connected. Everything but `Stopped` is a
/// configuration problem the user must fix, so it ends the program.
#[derive(Debug)]
pub enum ConnectError {
    /// A flag or file is wrong; the text says which and what to do.
    Config(String),
    /// The broker answered and said no.
    Refused(String),
    /// A stop was asked for while still trying to connect.
    Stopped,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Config(s) | ConnectError::Refused(s) => f.write_str(s),
            ConnectError::Stopped => f.write_str("stopped before the broker could be reached"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A Paho client set up the way SPEC says every program connects.
pub struct Session {
    client: mqtt::AsyncClient,
    opts: mqtt::ConnectOptions,
    uri: String,
    client_id: String,
    status_topic: Option<String>,
    qos: i32,
    tls: bool,
    host: String,
    port: u16,
    /// Whether -u was given: turns "not authorised" into a hint about the
    /// password rather than about a missing one.
    has_user: bool,
}

fn readable(flag: &str, path: &Path) -> Result<(), ConnectError> {
    File::open(path).map(drop).map_err(|e| {
        ConnectError::Config(format!(
            "cannot read {flag} {}: {e}; check the path and its permissions",
            path.display()
        ))
    })
}

fn password(common: &CommonArgs) -> Result<Option<String>, ConnectError> {
    let env = std::env::var("MQTT_PASSWORD").ok();
    resolve_password(common.pw_file.as_deref(), common.password.as_deref(), env)
}

/// The flags beat the environment: --pw-file, then -P (clap refuses both
/// at once), then MQTT_PASSWORD unless it is empty (`MQTT_PASSWORD=` in an
/// environment file means no password, as an unset one does).
fn resolve_password(
    pw_file: Option<&Path>,
    flag: Option<&str>,
    env: Option<String>,
) -> Result<Option<String>, ConnectError> {
    if let Some(file) = pw_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConnectError::Config(format!(
                "cannot read --pw-file {}: {e}; check the path and its permissions",
                file.display()
            ))
        })?;
        let line = text.lines().next().unwrap_or_default().to_string();
        return Ok(Some(line));
    }
    if let Some(pw) = flag {
        return Ok(Some(pw.to_string()));
    }
    Ok(env.filter(|pw| !pw.is_empty()))
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("uri", &self.uri)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Session {
    /// Builds the client (nothing is sent yet). Files named by flags are
    /// checked here so that a typo is reported before any network activity.
    pub fn new(
        common: &CommonArgs,
        config: SessionConfig,
        events: &Events,
    ) -> Result<Session, ConnectError> {
        let client_id = common
            .client_id
            .clone()
            .unwrap_or_else(|| config.default_client_id.clone());
        let client_id = if config.tag > 0 && common.client_id.is_some() {
            // A fleet sharing one -i would kick each other off the broker.
            format!("{client_id}-{}", config.tag)
        } else {
            client_id
        };
        if client_id.is_empty() || client_id.len() > 65535 {
            return Err(ConnectError::Config(
                "the client id (-i) must be 1 to 65535 bytes".into(),
            ));
        }

        let mut conn = mqtt::ConnectOptionsBuilder::new_v3();
        conn.keep_alive_interval(Duration::from_secs(common.keepalive))
            .clean_session(common.clean)
            .connect_timeout(OP_TIMEOUT)
            .max_inflight(MAX_INFLIGHT);

        if let Some(user) = &common.username {
            conn.user_name(user);
        }
        if let Some(pw) = password(common)? {
            if common.username.is_none() {
                return Err(ConnectError::Config(
                    "a password was given without a user name: add -u USER".into(),
                ));
            }
            conn.password(pw);
        }

        if common.tls() {
            let mut ssl = mqtt::SslOptionsBuilder::new();
            if let Some(ca) = &common.cafile {
                readable("--cafile", ca)?;
                ssl.trust_store(ca)
                    .map_err(|e| tls_error("--cafile", ca, e))?;
            }
            if let (Some(cert), Some(key)) = (&common.cert, &common.key) {
                readable("--cert", cert)?;
                readable("--key", key)?;
                ssl.key_store(cert)
                    .map_err(|e| tls_error("--cert", cert, e))?;
                ssl.private_key(key)
                    .map_err(|e| tls_error("--key", key, e))?;
            }
            ssl.verify(!common.insecure).enable_server_cert_auth(true);
            conn.ssl_options(ssl.finalize());
        }

        let will = config.will.clone().or_else(|| {
            config.status_topic.as_ref().map(|t| Will {
                topic: t.clone(),
                payload: b"offline".to_vec(),
                qos: common.qos,
                retained: true,
            })
        });
        if let Some(w) = will {
            let msg = mqtt::MessageBuilder::new()
                .topic(w.topic)
                .payload(w.payload)
                .qos(w.qos)
                .retained(w.retained)
                .finalize();
            conn.will_message(msg);
        }

        let state_dir = common.state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            ConnectError::Config(format!(
                "cannot create the state directory {}: {e}; choose another with --state-dir",
                state_dir.display()
            ))
        })?;

        let uri = common.server_uri();
        let create = mqtt::CreateOptionsBuilder::new_v3()
            .server_uri(&uri)
            .client_id(&client_id)
            .user_persistence(crate::persist::StatePersistence::new(&state_dir))
            .send_while_disconnected(true)
            .max_buffered_messages(MAX_BUFFERED)
            .finalize();
        init_paho();
        let client = mqtt::AsyncClient::new(create).map_err(|e| {
            ConnectError::Config(format!("cannot create an MQTT client for {uri}: {e}"))
        })?;

        protocol_trace_only();
        install_callbacks(&client, &config, common.qos, events.clone());

        Ok(Session {
            client,
            opts: conn.finalize(),
            uri,
            client_id,
            status_topic: config.status_topic,
            qos: common.qos,
            tls: common.tls(),
            host: common.host.clone(),
            port: common.port(),
            has_user: common.username.is_some(),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn qos(&self) -> i32 {
        self.qos
    }

    /// A single-connection program's start: says where it connects, then
    /// [`connect`](Session::connect)s. `Ok(false)` when a stop came first
    /// (the program should end cleanly).
    pub fn start(&self, stop: &Stop) -> Result<bool, ConnectError> {
        info!("{} connecting to {}", self.client_id, self.uri);
        match self.connect(stop) {
            Ok(()) => Ok(true),
            Err(ConnectError::Stopped) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Connects, retrying with back-off while the broker is not there
    /// (a broker still starting at boot is normal), and failing at once when
    /// the broker refuses us, since retrying cannot fix a wrong password.
    pub fn connect(&self, stop: &Stop) -> Result<(), ConnectError> {
        let mut attempt = 0;
        loop {
            if stop.is_requested() {
                return Err(ConnectError::Stopped);
            }
            let delay = retry_delay(attempt);
            attempt += 1;
            let err = match self
                .client
                .connect(self.opts.clone())
                .wait_for(OP_TIMEOUT + Duration::from_secs(2))
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if let mqtt::Error::ConnectReturn(code) = &err {
                use mqtt::ConnectReturnCode::*;
                let why = match code {
                    BadUserNameOrPassword => "the user name or password is wrong (check -u and -P/--pw-file/MQTT_PASSWORD)",
                    // Mosquitto 2.x answers a wrong password with this code
                    // too, not with BadUserNameOrPassword.
                    NotAuthorized if self.has_user => "the user name or password is wrong, or this user may not connect (check -u and -P/--pw-file/MQTT_PASSWORD)",
                    NotAuthorized => "this client is not authorised (the broker needs a user name and password: -u/-P)",
                    IdentifierRejected => "the client id was rejected (choose another with -i)",
                    UnacceptableProtocolVersion => "the broker does not speak MQTT 3.1.1",
                    _ => "",
                };
                if !why.is_empty() {
                    return Err(ConnectError::Refused(format!(
                        "the broker at {} refused the connection: {why}",
                        self.uri
                    )));
                }
            }
            let reachable = self.tcp_reachable();
            if self.tls && reachable {
                return Err(ConnectError::Refused(format!(
                    "TLS connection to {} failed ({err}): the broker's certificate is not \
                     signed by --cafile or does not name host {:?}, or port {} is not a TLS \
                     listener",
                    self.uri, self.host, self.port
                )));
            }
            if reachable {
                // Something listens but dropped us: a broker still starting,
                // or a TLS listener spoken to in plain MQTT.
                warn!(
                    "broker at {} closed the connection ({err}); if port {} is a TLS \
                     listener, add --cafile; retrying in {}s",
                    self.uri,
                    self.port,
                    delay.as_secs()
                );
            } else {
                warn!(
                    "broker at {} not reachable ({err}); retrying in {}s",
                    self.uri,
                    delay.as_secs()
                );
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if stop.is_requested() {
                    return Err(ConnectError::Stopped);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Is anything listening at host:port? Tells a TLS refusal from a broker
    /// that is simply not running.
    fn tcp_reachable(&self) -> bool {
        let Ok(addrs) = (self.host.as_str(), self.port).to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    }

    /// Queues a publication; Paho delivers it (and keeps it across restarts
    /// when QoS > 0) without blocking the caller.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retained: bool) {
        let msg = mqtt::MessageBuilder::new()
            .topic(topic)
            .payload(payload.into())
            .qos(self.qos)
            .retained(retained)
            .finalize();
        debug!("publish {topic} (q{}, r{})", self.qos, u8::from(retained));
        if let Err(e) = self.client.try_publish(msg) {
            warn!("could not queue a message for {topic}: {e}");
        }
    }

    /// Publishes and waits until the broker has it (used at shutdown).
    pub fn publish_wait(&self, topic: &str, payload: &[u8], retained: bool) -> bool {
        let msg = mqtt::MessageBuilder::new()
            .topic(topic)
            .payload(payload)
            .qos(self.qos)
            .retained(retained)
            .finalize();
        self.client
            .publish(msg)
            .wait_for(Duration::from_secs(3))
            .is_ok()
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The graceful end: `offline` on the status topic, then DISCONNECT, so
    /// the broker drops the will.
    pub fn close(&self) {
        self.client.stop_consuming();
        if self.client.is_connected() {
            if let Some(topic) = &self.status_topic {
                if !self.publish_wait(topic, b"offline", true) {
                    warn!("could not publish offline to {topic} before disconnecting");
                }
            }
            let opts = mqtt::DisconnectOptionsBuilder::new()
                .timeout(Duration::from_secs(2))
                .finalize();
            if let Err(e) = self
                .client
                .disconnect(opts)
                .wait_for(Duration::from_secs(5))
            {
                warn!("disconnect from {} did not complete: {e}", self.uri);
            }
        }
        info!("{} disconnected", self.client_id);
    }
}

/// Paho C initialises all of OpenSSL (every algorithm, every error string)
/// when the first client is created, TLS or not: about 3 MiB resident on a
/// Pi for nothing when the broker is plain MQTT. OpenSSL 1.1 and later
/// initialise themselves on first use, so we tell Paho to leave it alone.
fn init_paho() {
    use std::os::raw::c_char;
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let id = [
            b'M' as c_char,
            b'Q' as c_char,
            b'T' as c_char,
            b'G' as c_char,
        ];
        let mut opts = paho_mqtt_sys::MQTTAsync_init_options {
            struct_id: id,
            struct_version: 0,
            do_openssl_init: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: runs once, before any client exists; Paho only reads the
        // struct, which is valid for the duration of the call.
        unsafe {
            paho_mqtt_sys::MQTTAsync_global_init(&mut opts);
        }
    });
}

/// With `-d`, Paho C traces at its MEDIUM level (every loop turn); drop it
/// to PROTOCOL: one line per packet sent or received, like `mosquitto_sub -d`.
fn protocol_trace_only() {
    if log::log_enabled!(target: "paho_mqtt_c", log::Level::Debug) {
        #[allow(unsafe_code)]
        // SAFETY: sets a global integer in Paho C; no pointers involved.
        unsafe {
            paho_mqtt_sys::MQTTAsync_setTraceLevel(
                paho_mqtt_sys::MQTTASYNC_TRACE_LEVELS_MQTTASYNC_TRACE_PROTOCOL,
            );
        }
    }
}

fn tls_error(flag: &str, path: &Path, e: mqtt::Error) -> ConnectError {
    ConnectError::Config(format!("unusable {flag} {}: {e}", path.display()))
}

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

/// Sleeps `delay` in small steps; false if the program is stopping.
fn pause(delay: Duration, events: &Events) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if events.is_stopping() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !events.is_stopping()
}

/// Brings the connection back after it was lost, on its own thread (Paho's
/// callbacks must not block), with [`retry_delay`]'s schedule. The broker
/// keeps the durable session; the connected callback re-subscribes.
fn spawn_reconnector(client: mqtt::AsyncClient, events: Events) -> SyncSender<()> {
    let (lost_tx, lost_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("reconnect".into())
        .spawn(move || {
            while lost_rx.recv().is_ok() {
                let mut attempt = 0;
                while !client.is_connected() && pause(retry_delay(attempt), &events) {
                    match client
                        .reconnect()
                        .wait_for(OP_TIMEOUT + Duration::from_secs(2))
                    {
                        Ok(_) => break,
                        Err(e) => warn!(
                            "reconnecting to {} failed ({e}); retrying in {}s",
                            client.server_uri(),
                            retry_delay(attempt + 1).as_secs()
                        ),
                    }
                    attempt += 1;
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the reconnect thread ({e}): a lost connection will not come back");
    }
    lost_tx
}

fn install_callbacks(client: &mqtt::AsyncClient, config: &SessionConfig, qos: i32, events: Events) {
    let lost = spawn_reconnector(client.clone(), events.clone());
    let tag = config.tag;
    let subs = config.subscriptions.clone();
    let status = config.status_topic.clone();
    let ev = events.clone();
    client.set_connected_callback(move |cli| {
        info!("{} connected to {}", cli.client_id(), cli.server_uri());
        // Paho does not restore subscriptions after a reconnect, and does
        // not tell whether the broker kept the session: subscribe every time.
        if !subs.is_empty() {
            let qoss = vec![qos; subs.len()];
            drop(cli.subscribe_many(&subs, &qoss));
            debug!("subscribe {subs:?} (q{qos})");
        }
        if let Some(topic) = &status {
            let msg = mqtt::Message::new_retained(topic.as_str(), "online", qos);
            if let Err(e) = cli.try_publish(msg) {
                warn!("could not publish online to {topic}: {e}");
            }
        }
        ev.send(Event::Connected { session: tag });
    });
    let ev = events.clone();
    client.set_connection_lost_callback(move |cli| {
        if !ev.is_stopping() {
            warn!(
                "{} lost the connection to {}; reconnecting",
                cli.client_id(),
                cli.server_uri()
            );
        }
        let _ = lost.try_send(());
        ev.send(Event::ConnectionLost { session: tag });
    });
    client.set_message_callback(move |_, msg| {
        if let Some(msg) = msg {
            events.send(Event::Message { session: tag, msg });
        }
    });
}

#[cfg(test)]
mod retry_tests {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_environment_for_the_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\nsecond line\n").expect("write");
        let env = || Some("from-env".to_string());
        let pw =
            |f: Option<&Path>, p: Option<&str>, e| resolve_password(f, p, e).expect("readable");
        assert_eq!(pw(Some(&file), None, env()).as_deref(), Some("from-file"));
        assert_eq!(
            pw(None, Some("from-flag"), env()).as_deref(),
            Some("from-flag")
        );
        assert_eq!(pw(None, None, env()).as_deref(), Some("from-env"));
        assert_eq!(
            pw(None, None, Some(String::new())),
            None,
            "MQTT_PASSWORD= means none"
        );
        assert_eq!(pw(None, None, None), None);
        let missing = resolve_password(Some(&dir.path().join("nope")), None, None);
        assert!(
            matches!(missing, Err(ConnectError::Config(m)) if m.contains("cannot read --pw-file"))
        );
    }
}
