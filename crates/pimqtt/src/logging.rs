//! Logging to stderr, so stdout carries only program output.

/// Starts env_logger. `RUST_LOG` wins when set; otherwise `info`, and with
/// `debug` (`-d`) our own debug lines plus Paho C's protocol trace.
///
/// Paho C's trace is routed through `log` under the target `paho_mqtt_c`; it
/// is turned off unless asked for, because Paho enables its (costly) tracing
/// whenever that target is enabled at all.
pub fn init(debug: bool) {
    let default = if debug {
        "debug,paho_mqtt_c=debug"
    } else {
        "info,paho_mqtt=warn,paho_mqtt_c=off"
    };
    let env = env_logger::Env::default().default_filter_or(default);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .try_init();
}
