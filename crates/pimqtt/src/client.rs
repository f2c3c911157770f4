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
    /// The topic filters subscribed to on every connect: the session
    /// config's, and those added before the start
    /// ([`Session::subscribe_too`](crate::Session::subscribe_too)).
    pub(crate) subscriptions: std::sync::Mutex<Vec<String>>,
    pub(crate) qos: i32,
    pub(crate) events: EventSender,
    pub(crate) target: Target,
    /// The version spoken (`-V`): MQTT 5 adds message expiry and reasons.
    pub(crate) protocol: crate::cli::Protocol,
    /// Connected, and the loss not yet reported: set by Paho's "connected"
    /// callback, cleared by the first of "disconnected" (MQTT 5, the broker
    /// said why) and "connection lost" to report the loss.
    pub(crate) up: std::sync::atomic::AtomicBool,
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
    /// Why, and whether anything answered at the broker's TCP port when we
    /// looked: if nothing did, the probe (`probe.rs`) may watch for it.
    Retry {
        why: String,
        listening: bool,
    },
}

/// `server` is the broker of the list that was tried.
pub(crate) fn diagnose(core: &Core, err: &mqtt::Error, server: usize) -> Diagnosis {
    let t = &core.target;
    if let mqtt::Error::ReasonCode(code, props) = err {
        let (why, fatal) = connack_reason(*code, t.has_user);
        let said = props
            .get_string(mqtt::PropertyCode::ReasonString)
            .map(|s| {
                format!(
                    " (the broker adds: {})",
                    crate::payload::quote(s.as_bytes())
                )
            })
            .unwrap_or_default();
        let moved = props
            .get_string(mqtt::PropertyCode::ServerReference)
            .map(|s| format!(" (it names {})", crate::payload::quote(s.as_bytes())))
            .unwrap_or_default();
        let text = format!(
            "the broker at {} refused the connection: {why}{moved}{said}",
            tried(core, server)
        );
        return if fatal {
            Diagnosis::Fatal(ConnectError::Refused(text))
        } else {
            Diagnosis::Retry {
                why: text,
                listening: true,
            }
        };
    }
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
    let listening = reachable.is_some();
    let why = if let Some(s) = reachable {
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
    };
    Diagnosis::Retry { why, listening }
}

/// What an MQTT 5 CONNACK reason code means for the user, with its name
/// and code (so it can be looked up), and whether it is fatal: something
/// only the user can fix ends the program (as a 3.1.1 refusal does);
/// a broker that is busy or full may take us later, so that is retried.
pub(crate) fn connack_reason(code: mqtt::ReasonCode, has_user: bool) -> (String, bool) {
    use mqtt::ReasonCode::*;
    let (what, todo, fatal) = match code {
        UnsupportedProtocolVersion => (
            "unsupported protocol version",
            "this broker does not speak MQTT 5: leave out -V 5 (or give -V 311)",
            true,
        ),
        ClientIdentifierNotValid => (
            "client id not valid (rejected)",
            "choose another with -i (a broker may require a prefix: Mosquitto's \
             clientid_prefixes)",
            true,
        ),
        // The same words as for MQTT 3.1.1, so a user (and a test) reads
        // one message whatever the version.
        BadUserNameOrPassword => (
            "bad user name or password",
            "the user name or password is wrong (check -u and -P/--pw-file/MQTT_PASSWORD)",
            true,
        ),
        NotAuthorized if has_user => (
            "not authorised",
            "the user name or password is wrong, or this user may not connect (check -u \
             and -P/--pw-file/MQTT_PASSWORD)",
            true,
        ),
        NotAuthorized => (
            "not authorised",
            "the broker needs a user name and password: -u/-P",
            true,
        ),
        Banned => (
            "banned",
            "the broker's administrator has banned this client: ask them, or use another \
             -i/-u",
            true,
        ),
        BadAuthenticationMethod => (
            "bad authentication method",
            "the broker wants an authentication we do not offer: use a user name and \
             password (-u/-P) or TLS certificates (--cert/--key)",
            true,
        ),
        UseAnotherServer | ServerMoved => (
            "use another server",
            "point -h at the broker it names",
            true,
        ),
        PacketTooLarge => (
            "packet too large",
            "the will or user name is larger than the broker accepts (message_size_limit)",
            true,
        ),
        MalformedPacket | ProtocolError => (
            "protocol error",
            "the broker did not accept our CONNECT: try -V 311",
            true,
        ),
        QuotaExceeded => (
            "quota exceeded",
            "the broker has as many clients (or sessions) as it allows \
             (Mosquitto: max_connections); retrying, but ask its administrator",
            false,
        ),
        ServerUnavailable | ServerBusy => (
            "server unavailable or busy",
            "retrying; if it lasts, check the broker's log",
            false,
        ),
        ConnectionRateExceeded => ("connection rate exceeded", "retrying more slowly", false),
        _ => ("", "retrying; if it lasts, check the broker's log", false),
    };
    let name = if what.is_empty() {
        code.to_string().to_lowercase()
    } else {
        what.to_string()
    };
    (
        format!("{name} (MQTT 5 reason code 0x{:02X}): {todo}", code as u32),
        fatal,
    )
}

/// The reason of a DISCONNECT the broker sent (MQTT 5), for the line that
/// says the connection was lost: its name, its code, and what it means
/// where that is not obvious.
pub(crate) fn disconnect_reason(code: mqtt::ReasonCode, client_id: &str) -> String {
    use mqtt::ReasonCode::*;
    let hint = match code {
        SessionTakenOver => format!(
            ": another client connected with the client id {client_id:?} (a service and a \
             manual run?); stop the other one, or give this one its own id with -i"
        ),
        ServerShuttingDown => ": the broker is stopping or restarting".into(),
        KeepAliveTimeout => ": the broker heard nothing from us within -k's keepalive".into(),
        AdministrativeAction => ": the broker's administrator disconnected us".into(),
        UseAnotherServer | ServerMoved => ": point -h at the broker it names".into(),
        NotAuthorized => ": this client may no longer use the broker (ACL changed?)".into(),
        _ => String::new(),
    };
    format!(
        "{} (MQTT 5 reason code 0x{:02X}){hint}",
        code.to_string().to_lowercase(),
        code as u32
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::ReasonCode::*;

    #[test]
    fn connack_reasons_say_what_and_what_to_do() {
        for (code, user, part, fatal) in [
            (
                BadUserNameOrPassword,
                true,
                "bad user name or password (MQTT 5 reason code 0x86): the user name or password is wrong (check -u",
                true,
            ),
            (
                NotAuthorized,
                false,
                "not authorised (MQTT 5 reason code 0x87): the broker needs a user name",
                true,
            ),
            (
                NotAuthorized,
                true,
                "not authorised (MQTT 5 reason code 0x87): the user name or password is wrong, or this user",
                true,
            ),
            (
                ClientIdentifierNotValid,
                false,
                "client id not valid (rejected) (MQTT 5 reason code 0x85): choose another with -i",
                true,
            ),
            (Banned, false, "banned (MQTT 5 reason code 0x8A)", true),
            (UnsupportedProtocolVersion, false, "-V 311", true),
            (
                QuotaExceeded,
                false,
                "quota exceeded (MQTT 5 reason code 0x97): the broker has as many",
                false,
            ),
            (
                ServerUnavailable,
                false,
                "server unavailable or busy (MQTT 5 reason code 0x88)",
                false,
            ),
            (ServerBusy, false, "(MQTT 5 reason code 0x89)", false),
        ] {
            let (text, f) = connack_reason(code, user);
            assert!(text.contains(part), "{code:?}: {text}");
            assert_eq!(f, fatal, "{code:?}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn a_takeover_names_the_client_id() {
        let t = disconnect_reason(SessionTakenOver, "LEDClient");
        assert!(
            t.starts_with("session taken over (MQTT 5 reason code 0x8E): another client")
                && t.contains("\"LEDClient\""),
            "{t}"
        );
        let t = disconnect_reason(ServerShuttingDown, "x");
        assert!(t.contains("0x8B") && t.contains("stopping"), "{t}");
    }
}
