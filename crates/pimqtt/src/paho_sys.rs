//! The calls into Paho C that its Rust wrapper does not offer; the only
//! `unsafe` code in the project.

use std::os::raw::{c_char, c_int};

/// Paho C initialises all of OpenSSL (every algorithm, every error string)
/// when the first client is created, TLS or not: about 1.7 MiB resident for
/// nothing when the broker is plain MQTT (README, "Measured").
/// OpenSSL 1.1 and later initialise themselves on first use, so we tell
/// Paho to leave it alone.
pub(crate) fn skip_openssl_init() {
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
pub(crate) fn protocol_trace_only() {
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

#[allow(unsafe_code)]
extern "C" {
    /// Our patch to the vendored Paho C (vendor/README.md, point 8).
    fn pimqtt_releasing_msgid() -> c_int;
    /// Our patch to the vendored Paho C (vendor/README.md, point 9).
    fn pimqtt_release_refused(
        client_id: *const c_char,
        min_resends: c_int,
        topic: *mut c_char,
        topic_len: c_int,
    ) -> c_int;
}

/// The sends a QoS 2 publication gets at reconnects before Mosquitto 2.0.21
/// closes the connection at the next one (its first re-send is answered,
/// the second is refused: eclipse-mosquitto#3602).
const REFUSED_AFTER: c_int = 2;

/// After a lost connection: the QoS 2 publication that Mosquitto 2.0.21
/// refuses for good (sent again at two reconnects in a row and never
/// answered) is moved on to its PUBREL, so the session is not closed at
/// every connect for ever. The fact used is what this client sent, not
/// timing. Returns "packet id N, topic T" when one was, for the warning.
pub(crate) fn release_refused(client: &paho_mqtt::AsyncClient) -> Option<String> {
    let id = std::ffi::CString::new(client.client_id()).ok()?;
    let mut topic = [0 as c_char; 256];
    #[allow(unsafe_code)]
    // SAFETY: `id` is a NUL-terminated string and `topic` a buffer of the
    // length given, both valid for the call; Paho copies at most
    // `topic_len - 1` bytes and a NUL into it, under its own lock.
    let msgid = unsafe {
        pimqtt_release_refused(
            id.as_ptr(),
            REFUSED_AFTER,
            topic.as_mut_ptr(),
            topic.len() as c_int,
        )
    };
    if msgid == 0 {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: Paho wrote a NUL-terminated string into `topic`.
    let topic = unsafe { std::ffi::CStr::from_ptr(topic.as_ptr()) };
    Some(format!(
        "packet id {msgid}, topic {}",
        crate::payload::quote(topic.to_bytes())
    ))
}

/// Inside the message callback: the packet id of the QoS 2 message the
/// broker's PUBREL is releasing, whose `r-` record Paho removes once the
/// callback returns. `None` for QoS 0 and 1 (no such record).
pub(crate) fn releasing_msgid() -> Option<u16> {
    #[allow(unsafe_code)]
    // SAFETY: reads a thread-local integer of Paho C; no pointers involved.
    let id = unsafe { pimqtt_releasing_msgid() };
    u16::try_from(id).ok().filter(|&id| id != 0)
}
