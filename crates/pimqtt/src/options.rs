//! Flags and a program's session config turned into Paho's options. Pure
//! apart from reading the files the flags name (so a typo is reported before
//! any network activity): unit-tested without a broker.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use paho_mqtt as mqtt;

use crate::cli::{CommonArgs, Protocol};
use crate::error::ConnectError;
use crate::persist::{Stamps, StatePersistence};

/// How long one connect attempt, publish or disconnect may take before we
/// give up on it (Paho's synchronous default is five minutes).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// QoS 1/2 publications in flight at once on one connection. Mosquitto
/// (`max_inflight_messages`, default 20) drops an MQTT 3.1.1 client that
/// has more unacknowledged QoS 2 messages than that, so a burst (the
/// controller commanding a fleet) must wait in Paho's queue instead.
const MAX_INFLIGHT: i32 = 20;
/// Outgoing messages Paho may hold while the broker is away.
const MAX_BUFFERED: i32 = 100_000;

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
    /// The client id when `-i/--id` is not given.
    pub default_client_id: String,
    /// Availability topic: retained `online` on connect, `offline` as will
    /// and before a clean disconnect.
    pub status_topic: Option<String>,
    /// Topic filters, subscribed with `--qos` on every connect.
    pub subscriptions: Vec<String>,
    /// A will that replaces the availability will.
    pub will: Option<Will>,
    /// Tag carried by this session's events (the device's index in a fleet).
    pub tag: usize,
}

/// Everything Paho needs to make and connect one client.
#[derive(Debug)]
pub struct Options {
    pub client_id: String,
    /// The brokers, in the order Paho tries them (`-h a,b`).
    pub uris: Vec<String>,
    /// How they are named in messages: the URI, or the list.
    pub uri: String,
    /// Connect options for each of `uris`, in the same order.
    pub connect: Vec<mqtt::ConnectOptions>,
    pub create: mqtt::CreateOptions,
    /// Shared with the client's persistence (see [`Stamps`]).
    pub(crate) stamps: Stamps,
}

/// Builds the options. `client_id` is the one to use (a fleet adds its
/// suffix before calling).
pub fn build(
    common: &CommonArgs,
    config: &SessionConfig,
    client_id: String,
) -> Result<Options, ConnectError> {
    if client_id.is_empty() || client_id.len() > 65535 {
        return Err(ConnectError::Config(
            "the client id (-i) must be 1 to 65535 bytes".into(),
        ));
    }
    let uris = common
        .server_uris()
        .map_err(|e| ConnectError::Config(e.to_string()))?;
    // One set of connect options per broker, each naming only its own as
    // Paho's server list: the worker moves along the list on its reconnect
    // schedule. Given the whole list, Paho C would move on by itself when
    // the connection to any but the last is lost (`nextOrClose` in
    // MQTTAsyncUtils.c re-queues a CONNECT and calls the "connected"
    // callback again), behind the worker's back and racing its own connect.
    let connect = uris
        .iter()
        .map(|uri| {
            let mut conn = connect_options(common, config)?;
            if uris.len() > 1 {
                conn.server_uris(&[uri]);
            }
            Ok(conn.finalize())
        })
        .collect::<Result<Vec<_>, ConnectError>>()?;
    let uri = uris.join(", ");
    // The first is the client's "own" URI: Paho names the persistence after
    // it, so a single host keeps the files it had before lists existed.
    let first = uris.first().cloned().unwrap_or_default();
    // Paho C refuses an MQTT 5 connect from a client not created for 5.
    let version = match common.protocol {
        Protocol::V311 => mqtt::MQTT_VERSION_3_1_1,
        Protocol::V5 => mqtt::MQTT_VERSION_5,
    };
    let stamps = Stamps::default();
    let create = mqtt::CreateOptionsBuilder::new_v3()
        .mqtt_version(version)
        .server_uri(&first)
        .client_id(&client_id)
        .user_persistence(StatePersistence::new(
            common.state_dir(),
            common.sync,
            stamps.clone(),
        ))
        .send_while_disconnected(true)
        // Also before the worker's first connect: a program may publish the
        // moment it starts (a level read from stdin), and Paho refuses
        // "Client disconnected" until a connect has been asked for.
        .allow_disconnected_send_at_anytime(true)
        .max_buffered_messages(MAX_BUFFERED)
        .finalize();
    Ok(Options {
        client_id,
        uris,
        uri,
        connect,
        create,
        stamps,
    })
}

/// The connect options every broker of the list shares.
fn connect_options(
    common: &CommonArgs,
    config: &SessionConfig,
) -> Result<mqtt::ConnectOptionsBuilder, ConnectError> {
    let mut conn = match common.session_expiry() {
        None => {
            let mut conn = mqtt::ConnectOptionsBuilder::new_v3();
            conn.clean_session(common.clean);
            conn
        }
        // MQTT 5 splits 3.1.1's clean session in two: clean start (drop
        // what the broker kept) and the session expiry (how long it keeps
        // the session after we go). `--clean` asks for both, as 3.1.1's
        // clean session did; the default keeps the session for ever.
        Some(expiry) => {
            let mut conn = mqtt::ConnectOptionsBuilder::new_v5();
            conn.clean_start(common.clean).properties(int_property(
                mqtt::PropertyCode::SessionExpiryInterval,
                expiry,
            )?);
            conn
        }
    };
    conn.keep_alive_interval(Duration::from_secs(common.keepalive))
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
        conn.ssl_options(ssl(common)?);
    }
    if let Some(w) = will(common, config) {
        conn.will_message(message(&w.topic, w.payload, w.qos, w.retained));
    }

    Ok(conn)
}

/// The one way every publication is built.
pub fn message(
    topic: &str,
    payload: impl Into<Vec<u8>>,
    qos: i32,
    retained: bool,
) -> mqtt::Message {
    mqtt::MessageBuilder::new()
        .topic(topic)
        .payload(payload.into())
        .qos(qos)
        .retained(retained)
        .finalize()
}

/// A publication the broker drops once it has waited `expiry_secs` for its
/// subscriber (MQTT 5's message expiry interval; 3.1.1 has none, so the
/// caller sends a plain [`message`] there). Used for pump commands: a pump
/// back from an outage must not obey a command decided minutes ago.
pub fn expiring_message(
    topic: &str,
    payload: impl Into<Vec<u8>>,
    qos: i32,
    retained: bool,
    expiry_secs: u32,
) -> mqtt::Message {
    let mut props = mqtt::Properties::new();
    // Only fails for a property that is not an integer; this one is.
    let _ = props.push_u32(mqtt::PropertyCode::MessageExpiryInterval, expiry_secs);
    mqtt::MessageBuilder::new()
        .topic(topic)
        .payload(payload.into())
        .qos(qos)
        .retained(retained)
        .properties(props)
        .finalize()
}

fn int_property(code: mqtt::PropertyCode, value: u32) -> Result<mqtt::Properties, ConnectError> {
    let mut props = mqtt::Properties::new();
    props
        .push_u32(code, value)
        .map_err(|e| ConnectError::Config(format!("cannot set MQTT 5 property {code:?}: {e}")))?;
    Ok(props)
}

/// The program's own will, or else `offline` on its status topic.
fn will(common: &CommonArgs, config: &SessionConfig) -> Option<Will> {
    config.will.clone().or_else(|| {
        config.status_topic.as_ref().map(|t| Will {
            topic: t.clone(),
            payload: b"offline".to_vec(),
            qos: common.qos,
            retained: true,
        })
    })
}

fn ssl(common: &CommonArgs) -> Result<mqtt::SslOptions, ConnectError> {
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
    Ok(ssl.finalize())
}

fn readable(flag: &str, path: &Path) -> Result<(), ConnectError> {
    File::open(path).map(drop).map_err(|e| {
        ConnectError::Config(format!(
            "cannot read {flag} {}: {e}; check the path and its permissions",
            path.display()
        ))
    })
}

fn tls_error(flag: &str, path: &Path, e: mqtt::Error) -> ConnectError {
    ConnectError::Config(format!("unusable {flag} {}: {e}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(
        version = "test",
        disable_help_flag = true,
        disable_version_flag = true
    )]
    struct Flags {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn common(args: &[&str]) -> CommonArgs {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags").common
    }

    fn config() -> SessionConfig {
        SessionConfig {
            default_client_id: "LEDClient".into(),
            status_topic: Some("led/status".into()),
            ..SessionConfig::default()
        }
    }

    #[test]
    fn durable_by_default_clean_on_request() {
        let o = build(&common(&[]), &config(), "LEDClient".into()).expect("options");
        assert_eq!(o.uri, "tcp://localhost:1883");
        assert!(!o.connect[0].clean_session());
        let o = build(&common(&["--clean"]), &config(), "x".into()).expect("options");
        assert!(o.connect[0].clean_session());
    }

    #[test]
    fn mqtt_5_sessions_are_durable_too() {
        let o = build(&common(&["-V", "5"]), &config(), "x".into()).expect("options");
        assert!(!o.connect[0].clean_start() && !o.connect[0].clean_session());
    }

    #[test]
    fn mqtt_5_on_request_with_clean_start_only_for_clean() {
        let o = build(&common(&[]), &config(), "x".into()).expect("options");
        assert_eq!(o.create.mqtt_version(), mqtt::MqttVersion::V3_1_1);
        assert_ne!(o.connect[0].mqtt_version(), mqtt::MqttVersion::V5);
        for v in ["5", "mqttv5"] {
            let o = build(&common(&["-V", v]), &config(), "x".into()).expect("options");
            assert_eq!(o.create.mqtt_version(), mqtt::MqttVersion::V5, "-V {v}");
            assert_eq!(o.connect[0].mqtt_version(), mqtt::MqttVersion::V5, "-V {v}");
            assert!(!o.connect[0].clean_start() && !o.connect[0].clean_session());
        }
        let o = build(&common(&["-V", "5", "--clean"]), &config(), "x".into()).expect("options");
        assert!(o.connect[0].clean_start() && !o.connect[0].clean_session());
        let o = build(&common(&["-V", "5", "-h", "a,b"]), &config(), "x".into()).expect("options");
        assert!(o
            .connect
            .iter()
            .all(|c| c.mqtt_version() == mqtt::MqttVersion::V5));
    }

    #[test]
    fn an_expiring_message_carries_its_expiry() {
        let m = expiring_message("pump/1/command", "on", 2, false, 8);
        assert_eq!(
            m.properties()
                .get_int(mqtt::PropertyCode::MessageExpiryInterval),
            Some(8)
        );
        assert_eq!(
            (m.topic(), m.qos() as i32, m.retained()),
            ("pump/1/command", 2, false)
        );
    }

    #[test]
    fn a_host_list_is_paho_s_server_list() {
        let o = build(&common(&["-h", "n1:1884,n2:1885"]), &config(), "x".into()).expect("options");
        assert_eq!(o.uris, ["tcp://n1:1884", "tcp://n2:1885"]);
        assert_eq!(o.uri, "tcp://n1:1884, tcp://n2:1885");
        assert_eq!(o.connect.len(), 2, "one set of options per broker");
        let e = build(&common(&["-h", "n1,n2:0"]), &config(), "x".into()).expect_err("bad port");
        assert!(e.to_string().contains("\"n2:0\""), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_are_errors() {
        let c = common(&["-P", "secret"]);
        let e = build(&c, &config(), "x".into()).expect_err("password without user");
        assert!(e.to_string().contains("-u USER"), "{e}");
        let e = build(&common(&[]), &config(), String::new()).expect_err("empty id");
        assert!(e.to_string().contains("client id"), "{e}");
        let c = common(&["--cafile", "/nonexistent/ca.pem"]);
        let e = build(&c, &config(), "x".into()).expect_err("missing CA");
        assert!(e.to_string().contains("cannot read --cafile"), "{e}");
    }

    #[test]
    fn the_status_topic_is_the_will_unless_the_program_has_its_own() {
        let c = common(&["-q", "1"]);
        let w = will(&c, &config()).expect("availability will");
        assert_eq!(
            (w.topic.as_str(), &w.payload[..], w.qos, w.retained),
            ("led/status", &b"offline"[..], 1, true)
        );
        let own = SessionConfig {
            will: Some(Will {
                topic: "pyiot".into(),
                payload: b"Good Bye".to_vec(),
                qos: 2,
                retained: false,
            }),
            ..config()
        };
        assert_eq!(will(&c, &own).expect("own will").topic, "pyiot");
    }

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
