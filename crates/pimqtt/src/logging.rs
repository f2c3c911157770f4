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
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "[{} {:<5} {}] {}",
                Utc(std::time::SystemTime::now()),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// A time as env_logger's own millisecond timestamps print it
/// (`2026-11-26T15:28:44.594Z`), without a date library.
struct Utc(std::time::SystemTime);

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            since.subsec_millis()
        )
    }
}

/// Year, month and day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
    use super::{civil_from_days, paho_trace_stays_off, Utc};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_as_env_logger_printed_them() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        let t = UNIX_EPOCH + Duration::from_millis(20_783 * 86_400_000 + 55_724_594);
        assert_eq!(Utc(t).to_string(), "2026-11-26T15:28:44.594Z");
    }

    #[test]
    fn paho_trace_only_when_asked_for() {
        assert!(paho_trace_stays_off(false, Some("warn")));
        assert!(!paho_trace_stays_off(false, Some("warn,paho_mqtt_c=trace")));
        assert!(!paho_trace_stays_off(true, Some("warn")));
        assert!(!paho_trace_stays_off(false, None));
        assert!(!paho_trace_stays_off(false, Some("")));
    }
}
