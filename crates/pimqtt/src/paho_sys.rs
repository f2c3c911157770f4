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
    /// Patch 11: acknowledgements held until this returns 0.
    fn pimqtt_set_commit_hook(hook: Option<extern "C" fn() -> c_int>);
}

/// From now on Paho holds PUBACK, PUBREC and PUBCOMP until `hook` says
/// that what they stand for is on the disk (commit.rs).
pub(crate) fn set_commit_hook(hook: extern "C" fn() -> c_int) {
    #[allow(unsafe_code)]
    // SAFETY: stores a function pointer in a global of Paho C, read under
    // Paho's lock; the function is a plain `extern "C"` one that lives as
    // long as the program and never unwinds (it catches panics).
    unsafe {
        pimqtt_set_commit_hook(Some(hook));
    }
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
