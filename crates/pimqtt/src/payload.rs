//! The payloads of SPEC's topic table. Parsing never panics and says what is
//! wrong in words a user can act on; every program logs that as one line
//! naming the topic and drops the message.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::MAX_PAYLOAD;

/// Why a payload was dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum BadPayload {
    /// A zero-length payload: how a retained message is cleared.
    Empty,
    TooLarge(usize),
    NotUtf8,
    NotJson(String),
    /// Valid JSON, but not what this topic carries.
    Invalid(String),
}

impl fmt::Display for BadPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadPayload::Empty => f.write_str("empty payload"),
            BadPayload::TooLarge(n) => {
                write!(
                    f,
                    "payload of {n} bytes is larger than the {MAX_PAYLOAD} byte limit"
                )
            }
            BadPayload::NotUtf8 => f.write_str("payload is not UTF-8 text"),
            BadPayload::NotJson(e) => write!(f, "payload is not JSON ({e})"),
            BadPayload::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for BadPayload {}

/// The checks every payload goes through first: size, emptiness, UTF-8.
pub fn text(bytes: &[u8]) -> Result<&str, BadPayload> {
    if bytes.is_empty() {
        return Err(BadPayload::Empty);
    }
    if bytes.len() > MAX_PAYLOAD {
        return Err(BadPayload::TooLarge(bytes.len()));
    }
    std::str::from_utf8(bytes).map_err(|_| BadPayload::NotUtf8)
}

/// Shows a payload in a log line: short, printable, never multi-line.
pub fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if bytes.len() > 60 {
        out.push('…');
    }
    out
}

/// What a `led` message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedRequest {
    /// A brightness 0..=100.
    Level(u8),
    /// `level` was there but not a number: the book's client turns the LED
    /// off. The payload is kept for the warning.
    Off,
}

/// Parses a `led` payload per SPEC: `{"level": N}` with N a number or a
/// string holding a number, truncated toward zero and clamped to 0..100.
pub fn parse_led(bytes: &[u8]) -> Result<LedRequest, BadPayload> {
    let text = text(bytes)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| BadPayload::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(BadPayload::Invalid("payload is not a JSON object".into()));
    };
    let Some(level) = map.get("level") else {
        return Err(BadPayload::Invalid("JSON object has no \"level\"".into()));
    };
    let number = match level {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => number_in_string(s),
        _ => None,
    };
    Ok(match number {
        Some(n) => LedRequest::Level(clamp_percent(n)),
        None => LedRequest::Off,
    })
}

/// The book's web page sends levels as strings. Only plain decimal numbers
/// count: Rust would also parse "NaN" and "inf", which are not levels.
fn number_in_string(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Truncates toward zero, as Python's `int()` does, then clamps.
fn clamp_percent(n: f64) -> u8 {
    n.trunc().clamp(0.0, 100.0) as u8
}

/// `{"level": 63.5}` on `tank/<id>/level`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TankLevel {
    pub level: f64,
}

impl TankLevel {
    /// Rounds to one decimal, as SPEC's payload shows.
    pub fn new(level: f64) -> TankLevel {
        TankLevel {
            level: (level.clamp(0.0, 100.0) * 10.0).round() / 10.0,
        }
    }

    pub fn to_json(self) -> String {
        // Formatting a finite f64 struct cannot fail.
        serde_json::to_string(&self).unwrap_or_else(|_| format!("{{\"level\":{}}}", self.level))
    }
}

impl TryFrom<&[u8]> for TankLevel {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        let t: TankLevel = serde_json::from_str(text(bytes)?).map_err(|e| {
            BadPayload::Invalid(format!("not a {{\"level\": number}} object ({e})"))
        })?;
        if !(0.0..=100.0).contains(&t.level) {
            return Err(BadPayload::Invalid(format!(
                "level {} is outside 0..100",
                t.level
            )));
        }
        Ok(t)
    }
}

/// A pump's state, in commands and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PumpState {
    On,
    Off,
}

impl PumpState {
    pub fn as_str(self) -> &'static str {
        match self {
            PumpState::On => "on",
            PumpState::Off => "off",
        }
    }

    /// `{"state": "on"}`.
    pub fn to_json(self) -> String {
        format!("{{\"state\":\"{}\"}}", self.as_str())
    }
}

impl fmt::Display for PumpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct StateMsg {
    state: String,
}

impl TryFrom<&[u8]> for PumpState {
    type Error = BadPayload;
    /// `{"state": "on"|"off"}` or a bare `on`/`off`, in any case.
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        let text = text(bytes)?.trim();
        let word = if text.starts_with('{') {
            serde_json::from_str::<StateMsg>(text)
                .map_err(|e| {
                    BadPayload::Invalid(format!("not a {{\"state\": \"on\"|\"off\"}} object ({e})"))
                })?
                .state
        } else {
            text.to_string()
        };
        match word.to_ascii_lowercase().as_str() {
            "on" => Ok(PumpState::On),
            "off" => Ok(PumpState::Off),
            _ => Err(BadPayload::Invalid(format!(
                "state {word:?} is neither \"on\" nor \"off\""
            ))),
        }
    }
}

/// `online`/`offline` on the status topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Online,
    Offline,
}

impl TryFrom<&[u8]> for Availability {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        match text(bytes)?.trim() {
            "online" => Ok(Availability::Online),
            "offline" => Ok(Availability::Offline),
            other => Err(BadPayload::Invalid(format!(
                "{other:?} is neither online nor offline"
            ))),
        }
    }
}

/// `{"alarm": "<kind>", "active": true/false, "detail": "..."}` on `alarm/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub alarm: String,
    pub active: bool,
    pub detail: String,
}

impl Alarm {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LedRequest::*;

    fn led(s: &str) -> Result<LedRequest, BadPayload> {
        parse_led(s.as_bytes())
    }

    #[test]
    fn led_numbers_truncate_and_clamp() {
        assert_eq!(led(r#"{"level": 42}"#), Ok(Level(42)));
        assert_eq!(led(r#"{"level": 42.9}"#), Ok(Level(42)));
        assert_eq!(led(r#"{"level": -0.5}"#), Ok(Level(0)));
        assert_eq!(led(r#"{"level": 250}"#), Ok(Level(100)));
        assert_eq!(led(r#"{"level": -7}"#), Ok(Level(0)));
        assert_eq!(led(r#"{"level": 1e300}"#), Ok(Level(100)));
    }

    #[test]
    fn led_strings_holding_numbers_count() {
        assert_eq!(led(r#"{"level": "55"}"#), Ok(Level(55)));
        assert_eq!(led(r#"{"level": " 99.99 "}"#), Ok(Level(99)));
        assert_eq!(led(r#"{"level": "101"}"#), Ok(Level(100)));
    }

    #[test]
    fn led_non_numbers_turn_it_off() {
        for s in [
            r#"{"level": "abc"}"#,
            r#"{"level": "NaN"}"#,
            r#"{"level": "inf"}"#,
            r#"{"level": ""}"#,
            r#"{"level": true}"#,
            r#"{"level": null}"#,
            r#"{"level": {}}"#,
            r#"{"level": [1]}"#,
        ] {
            assert_eq!(led(s), Ok(Off), "{s}");
        }
    }

    #[test]
    fn led_garbage_is_refused() {
        assert_eq!(led(""), Err(BadPayload::Empty));
        assert!(matches!(led("{"), Err(BadPayload::NotJson(_))));
        assert!(matches!(led("[1]"), Err(BadPayload::Invalid(_))));
        assert!(matches!(led("42"), Err(BadPayload::Invalid(_))));
        assert!(matches!(
            led(r#"{"brightness": 1}"#),
            Err(BadPayload::Invalid(_))
        ));
        assert_eq!(parse_led(&[0xff, 0xfe]), Err(BadPayload::NotUtf8));
        let big = format!(r#"{{"level": 1, "pad": "{}"}}"#, "x".repeat(MAX_PAYLOAD));
        assert!(matches!(led(&big), Err(BadPayload::TooLarge(_))));
    }

    #[test]
    fn pump_states_in_both_forms() {
        let p = |s: &str| PumpState::try_from(s.as_bytes());
        assert_eq!(p(r#"{"state": "on"}"#), Ok(PumpState::On));
        assert_eq!(p("OFF"), Ok(PumpState::Off));
        assert_eq!(p(" On\n"), Ok(PumpState::On));
        assert!(p("maybe").is_err());
        assert!(p(r#"{"state": 1}"#).is_err());
        assert_eq!(PumpState::On.to_json(), r#"{"state":"on"}"#);
    }

    #[test]
    fn tank_levels_round_and_check_range() {
        assert_eq!(TankLevel::new(63.46).to_json(), r#"{"level":63.5}"#);
        assert!(TankLevel::try_from(&br#"{"level": 101}"#[..]).is_err());
        assert_eq!(
            TankLevel::try_from(&br#"{"level": 49.5}"#[..]),
            Ok(TankLevel { level: 49.5 })
        );
    }

    #[test]
    fn previews_stay_on_one_line() {
        assert_eq!(preview(b"a\nb"), "a.b");
        assert!(preview(&[b'x'; 100]).ends_with('…'));
    }
}
