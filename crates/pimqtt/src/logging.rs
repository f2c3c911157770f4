//! Logging to stderr, so stdout carries only program output.

/// Starts env_logger. `RUST_LOG` wins when set; otherwise `info`, and with
/// `debug` (`-d`) our own debug lines plus Paho C's protocol trace.
///
/// Paho C's trace is routed through `log` under the target `paho_mqtt_c`; it
/// is turned off unless asked for, because Paho enables its (costly) tracing
/// whenever that target is enabled at all. That holds with `RUST_LOG` too:
/// `RUST_LOG=warn` alone would enable it (and doubled the controller's CPU
/// in the tank benchmark), so it stays off unless `RUST_LOG` names it or
/// `-d` is given.
pub fn init(debug: bool) {
    let default = if debug {
        "debug,paho_mqtt=info,paho_mqtt_c=debug"
    } else {
        "info,paho_mqtt=error,paho_mqtt_c=off"
    };
    let env = env_logger::Env::default().default_filter_or(default);
    let mut builder = env_logger::Builder::from_env(env);
    if paho_trace_stays_off(debug, std::env::var("RUST_LOG").ok().as_deref()) {
        builder.filter_module("paho_mqtt_c", log::LevelFilter::Off);
    }
    let _ = builder
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// Whether to switch Paho C's trace off on top of a user's `RUST_LOG`.
fn paho_trace_stays_off(debug: bool, rust_log: Option<&str>) -> bool {
    match rust_log {
        Some(filter) if !filter.trim().is_empty() => !debug && !filter.contains("paho_mqtt_c"),
        _ => false, // the defaults above already decide
    }
}

#[cfg(test)]
mod tests {
    use super::paho_trace_stays_off;

    #[test]
    fn paho_trace_only_when_asked_for() {
        assert!(paho_trace_stays_off(false, Some("warn")));
        assert!(!paho_trace_stays_off(false, Some("warn,paho_mqtt_c=trace")));
        assert!(!paho_trace_stays_off(true, Some("warn")));
        assert!(!paho_trace_stays_off(false, None));
        assert!(!paho_trace_stays_off(false, Some("")));
    }
}
