//! What a [`Session`](crate::Session) and the worker (`worker.rs`) share
//! of one connection: the Paho client with what it was built from
//! ([`Core`]), and [`diagnose`], which tells a refusal to fix from a broker
//! that is not there yet. Both `session` and `worker` use this module; it
//! uses neither, so the dependency goes one way.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use paho_mqtt as mqtt;

use crate::error::ConnectError;
use crate::events::EventSender;

/// What the worker and Paho's callbacks need of a session.
pub(crate) struct Core {
    pub(crate) key: usize,
    pub(crate) client: mqtt::AsyncClient,
    /// Connect options for each broker of `uris`, in order.
    pub(crate) connect: Vec<mqtt::ConnectOptions>,
    /// The same with a clean session (see `worker::lost`).
    pub(crate) fresh: Vec<mqtt::ConnectOptions>,
    pub(crate) client_id: String,
    /// The brokers (one, unless `-h` lists a cluster).
    pub(crate) uris: Vec<String>,
    /// How they are named in messages: the URI, or the list.
    pub(crate) uri: String,
    /// The broker of the list last connected to, for saying which one was
    /// lost (set by the worker, read in Paho's callback).
    pub(crate) server: std::sync::Mutex<String>,
    pub(crate) tag: usize,
    pub(crate) status_topic: Option<String>,
    pub(crate) qos: i32,
    pub(crate) events: EventSender,
    pub(crate) target: Target,
}

/// What [`diagnose`] needs to explain a failed connect.
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Every broker of the `-h` list (one, unless a cluster).
    pub(crate) servers: Vec<crate::cli::Server>,
    /// Whether -u was given: turns "not authorised" into a hint about the
    /// password rather than about a missing one.
    pub(crate) has_user: bool,
}

/// What a failed connect means: something to fix (fatal), or a broker not
/// there yet (retry).
pub(crate) enum Diagnosis {
    Fatal(ConnectError),
    Retry(String),
}

/// `server` is the broker of the list that was tried.
pub(crate) fn diagnose(core: &Core, err: &mqtt::Error, server: usize) -> Diagnosis {
    let t = &core.target;
    if let mqtt::Error::ConnectReturn(code) = err {
        use mqtt::ConnectReturnCode::*;
        let why = match code {
            BadUserNameOrPassword => {
                "the user name or password is wrong (check -u and -P/--pw-file/MQTT_PASSWORD)"
            }
            // Mosquitto 2.x answers a wrong password with this code too.
            NotAuthorized if t.has_user => {
                "the user name or password is wrong, or this user may not connect (check -u \
                 and -P/--pw-file/MQTT_PASSWORD)"
            }
            NotAuthorized => {
                "this client is not authorised (the broker needs a user name and password: -u/-P)"
            }
            IdentifierRejected => "the client id was rejected (choose another with -i)",
            UnacceptableProtocolVersion => "the broker does not speak MQTT 3.1.1",
            _ => "",
        };
        if !why.is_empty() {
            return Diagnosis::Fatal(ConnectError::Refused(format!(
                "the broker at {} refused the connection: {why}",
                tried(core, server)
            )));
        }
    }
    let reachable = t
        .servers
        .get(server)
        .filter(|s| tcp_reachable(&s.host, s.port, Duration::from_secs(2)));
    if let (true, Some(s)) = (t.tls, reachable) {
        return Diagnosis::Fatal(ConnectError::Refused(format!(
            "TLS connection to {} failed ({err}): the broker's certificate is not signed by \
             --cafile or does not name host {:?}, or port {} is not a TLS listener",
            tried(core, server),
            s.host,
            s.port
        )));
    }
    Diagnosis::Retry(if let Some(s) = reachable {
        // Something listens but dropped us: a broker still starting, or a
        // TLS listener spoken to in plain MQTT.
        format!(
            "broker at {} closed the connection ({err}); if port {} is a TLS listener, add \
             --cafile",
            tried(core, server),
            s.port
        )
    } else {
        format!("broker at {} not reachable ({err})", tried(core, server))
    })
}

/// The URI of the broker tried.
fn tried(core: &Core, server: usize) -> &str {
    core.uris.get(server).unwrap_or(&core.uri)
}

/// Is anything listening at host:port? Tells a TLS refusal from a broker
/// that is simply not running, and a broker that closed our connection
/// while staying up from one that went away.
pub(crate) fn tcp_reachable(host: &str, port: u16, timeout: Duration) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, timeout).is_ok())
}
