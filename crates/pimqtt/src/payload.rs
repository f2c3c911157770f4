//! The payloads of SPEC's topic table. Parsing never panics and says what is
//! wrong in words a user can act on; every program logs that as one line
//! naming the topic and drops the message.
//!
//! Each payload type converts both ways: [`TryFrom<&[u8]>`] reads what
//! arrives, and [`Payload::to_bytes`] (or the type's `to_json`/`as_str`)
//! writes what is published; a round trip gives the same value back. JSON is
//! written one way, serde on a derived `Serialize`, and read one way too: into
//! a `serde_json::Value` first, then checked field by field, so that an
//! array is never taken for an object (serde's derive accepts `[1]` for a
//! one-field struct) and no error message quotes a whole payload.
//!
//! Error texts quote the input only through [`quote`]: at most
//! [`PREVIEW_CHARS`] characters and the size, so a 60 KB bad payload is
//! still a one-line warning of normal length.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// Payloads above this size are refused before parsing (SPEC: "oversized").
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// How many characters of a payload a warning quotes.
pub const PREVIEW_CHARS: usize = 60;

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

/// A payload type of the topic table: parsed from the bytes that arrive,
/// written as the bytes to publish. `T::try_from(&t.to_bytes()) == Ok(t)`.
pub trait Payload: for<'a> TryFrom<&'a [u8], Error = BadPayload> {
    /// The payload as published.
    fn to_bytes(&self) -> Vec<u8>;
}

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

/// The first [`PREVIEW_CHARS`] characters, control characters shown as `.`,
/// and whether anything was left out.
fn head(bytes: &[u8]) -> (String, bool) {
    // A character is at most 4 bytes (an invalid byte becomes one U+FFFD),
    // so this slice holds enough characters without decoding a large payload.
    let slice = &bytes[..bytes.len().min(PREVIEW_CHARS * 4)];
    let text = String::from_utf8_lossy(slice);
    let mut chars = text.chars();
    let out: String = chars
        .by_ref()
        .take(PREVIEW_CHARS)
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    let cut = chars.next().is_some() || slice.len() < bytes.len();
    (out, cut)
}

/// Shows a payload in a log line: short, printable, never multi-line; `…`
/// marks a cut.
pub fn preview(bytes: &[u8]) -> String {
    let (mut out, cut) = head(bytes);
    if cut {
        out.push('…');
    }
    out
}

/// How every warning quotes a payload (or a piece of one): the
/// [`preview`] in quotes, and the total size when it was cut, e.g.
/// `"xxxx…" (61440 bytes)`.
pub fn quote(bytes: &[u8]) -> String {
    let (out, cut) = head(bytes);
    // Quotes and backslashes escaped, so the quote's end is unambiguous; not
    // `{:?}`, which may turn one character into ten (`\u{200b}`).
    let out = out.replace('\\', "\\\\").replace('"', "\\\"");
    if cut {
        format!("\"{out}…\" ({} bytes)", bytes.len())
    } else {
        format!("\"{out}\"")
    }
}

/// Writes a payload type as JSON: the one way every JSON payload is written.
fn to_json<T: Serialize>(value: &T) -> String {
    // Cannot fail for the types here (string keys, no custom serializers,
    // a non-finite f64 becomes null). Should it ever, "null" is refused by
    // every parser here, where an empty payload would clear a retained topic.
    serde_json::to_string(value).unwrap_or_else(|e| {
        log::error!("cannot write a payload as JSON ({e}); sending null");
        "null".to_string()
    })
}

/// What a JSON value is, for messages: never its content.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a JSON array",
        Value::Object(_) => "a JSON object",
    }
}

/// A number for messages: exponent notation when plain digits would be long
/// (`1e300` is 301 digits in plain notation, `-1e-300` 303).
fn number(n: f64) -> String {
    let plain = n.to_string();
    if plain.len() <= 16 {
        plain
    } else {
        format!("{n:e}")
    }
}

/// Parses JSON text whose top level must be an object; `shape` names what
/// the topic carries, for the message.
fn object(text: &str, shape: &str) -> Result<Map<String, Value>, BadPayload> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(BadPayload::Invalid(format!(
            "payload is {}, not a JSON object {shape}",
            kind(&other)
        ))),
        // serde_json's syntax errors name a line and column, never the input.
        Err(e) => Err(BadPayload::NotJson(e.to_string())),
    }
}

/// The field `name` of an object, or a message saying it is missing.
fn field<'m>(map: &'m Map<String, Value>, name: &str) -> Result<&'m Value, BadPayload> {
    map.get(name)
        .ok_or_else(|| BadPayload::Invalid(format!("JSON object has no \"{name}\"")))
}

/// What a `led` message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedRequest {
    /// A brightness 0..=100.
    Level(u8),
    /// `level` was there but not a number (bool, null, object, array,
    /// `"abc"`): the book's client turns the LED off. Written as
    /// `{"level":null}`.
    Off,
}

/// `{"level": …}`, as `led`, `led/state` and `tank/<id>/level` write it.
#[derive(Serialize)]
struct LevelMsg<T> {
    level: T,
}

impl LedRequest {
    /// `{"level":42}`, or `{"level":null}` for [`LedRequest::Off`].
    pub fn to_json(self) -> String {
        match self {
            LedRequest::Level(n) => to_json(&LevelMsg { level: n }),
            LedRequest::Off => to_json(&LevelMsg { level: () }),
        }
    }
}

impl TryFrom<&[u8]> for LedRequest {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        parse_led(bytes)
    }
}

impl Payload for LedRequest {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }
}

/// Parses a `led` payload per SPEC: `{"level": N}` with N a number or a
/// string holding a number, truncated toward zero and clamped to 0..100.
pub fn parse_led(bytes: &[u8]) -> Result<LedRequest, BadPayload> {
    let map = object(text(bytes)?, r#"{"level": 0..100}"#)?;
    let number = match field(&map, "level")? {
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

/// `{"level": 63.5}` on `tank/<id>/level`: a JSON number 0..100 in an
/// object. A bare number (`63.5`), a string (`{"level": "63.5"}`) or an
/// array (`[63.5]`) is refused, as the web dashboard refuses them: SPEC has
/// one form, and only `led` takes strings (for the book's web page).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TankLevel {
    pub level: f64,
}

impl TankLevel {
    /// Clamps to 0..100 and rounds to one decimal, as SPEC's payload shows.
    /// NaN (no level) becomes 0: never publish what no reader accepts.
    pub fn new(level: f64) -> TankLevel {
        let level = if level.is_nan() { 0.0 } else { level };
        TankLevel {
            level: (level.clamp(0.0, 100.0) * 10.0).round() / 10.0,
        }
    }

    pub fn to_json(self) -> String {
        to_json(&self)
    }
}

impl TryFrom<&[u8]> for TankLevel {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        let map = object(text(bytes)?, r#"{"level": 0..100}"#)?;
        let level = match field(&map, "level")? {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => {
                return Err(BadPayload::Invalid(format!(
                    "\"level\" is {}, not a number",
                    kind(other)
                )))
            }
        };
        if !(0.0..=100.0).contains(&level) {
            return Err(BadPayload::Invalid(format!(
                "level {} is outside 0..100",
                number(level)
            )));
        }
        Ok(TankLevel { level })
    }
}

impl Payload for TankLevel {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }
}

/// A pump's state, in commands and in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PumpState {
    On,
    Off,
}

/// `{"state": …}` on `pump/<id>/command` and `pump/<id>/state`.
#[derive(Serialize)]
struct StateMsg {
    state: PumpState,
}

impl PumpState {
    pub fn as_str(self) -> &'static str {
        match self {
            PumpState::On => "on",
            PumpState::Off => "off",
        }
    }

    /// `{"state":"on"}`.
    pub fn to_json(self) -> String {
        to_json(&StateMsg { state: self })
    }
}

impl fmt::Display for PumpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&[u8]> for PumpState {
    type Error = BadPayload;
    /// `{"state": "on"|"off"}` or a bare `on`/`off`, in any case.
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        let text = text(bytes)?.trim();
        let map;
        let word = if text.starts_with('{') {
            map = object(text, r#"{"state": "on"|"off"}"#)?;
            match field(&map, "state")? {
                Value::String(s) => s.as_str(),
                other => {
                    return Err(BadPayload::Invalid(format!(
                        "\"state\" is {}, not \"on\" or \"off\"",
                        kind(other)
                    )))
                }
            }
        } else {
            text
        };
        match word.to_ascii_lowercase().as_str() {
            "on" => Ok(PumpState::On),
            "off" => Ok(PumpState::Off),
            _ => Err(BadPayload::Invalid(format!(
                "state {} is neither \"on\" nor \"off\"",
                quote(word.as_bytes())
            ))),
        }
    }
}

impl Payload for PumpState {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }
}

/// `online`/`offline` on the status topics (plain text, not JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Online,
    Offline,
}

impl Availability {
    /// The payload: `online` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "online",
            Availability::Offline => "offline",
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&[u8]> for Availability {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        match text(bytes)?.trim() {
            "online" => Ok(Availability::Online),
            "offline" => Ok(Availability::Offline),
            other => Err(BadPayload::Invalid(format!(
                "{} is neither online nor offline",
                quote(other.as_bytes())
            ))),
        }
    }
}

impl Payload for Availability {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_str().as_bytes().to_vec()
    }
}

/// The four alarms of SPEC, in the order the dashboard lists them; the
/// wire name is the `alarm` field of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmKind {
    PumpOffline,
    SensorStale,
    Overflow,
    Dry,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 4] = [
        AlarmKind::PumpOffline,
        AlarmKind::SensorStale,
        AlarmKind::Overflow,
        AlarmKind::Dry,
    ];

    /// The name in the `alarm` field of the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::PumpOffline => "pump-offline",
            AlarmKind::SensorStale => "sensor-stale",
            AlarmKind::Overflow => "overflow",
            AlarmKind::Dry => "dry",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"alarm": "<kind>", "active": true/false, "detail": "..."}` on `alarm/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    pub alarm: AlarmKind,
    pub active: bool,
    pub detail: String,
}

impl Alarm {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl TryFrom<&[u8]> for Alarm {
    type Error = BadPayload;
    fn try_from(bytes: &[u8]) -> Result<Self, BadPayload> {
        let map = object(
            text(bytes)?,
            r#"{"alarm": "<kind>", "active": true/false, "detail": "..."}"#,
        )?;
        let wrong = |name: &str, v: &Value, want: &str| {
            BadPayload::Invalid(format!("\"{name}\" is {}, not {want}", kind(v)))
        };
        let alarm = match field(&map, "alarm")? {
            Value::String(s) => AlarmKind::parse(s).ok_or_else(|| {
                BadPayload::Invalid(format!(
                    "unknown alarm {} (known: pump-offline, sensor-stale, overflow, dry)",
                    quote(s.as_bytes())
                ))
            })?,
            other => return Err(wrong("alarm", other, "a string")),
        };
        let active = match field(&map, "active")? {
            Value::Bool(b) => *b,
            other => return Err(wrong("active", other, "true/false")),
        };
        let detail = match field(&map, "detail")? {
            Value::String(s) => s.clone(),
            other => return Err(wrong("detail", other, "a string")),
        };
        Ok(Alarm {
            alarm,
            active,
            detail,
        })
    }
}

impl Payload for Alarm {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    /// The table the LED page is tested against too (web/tests/led.test.mjs).
    #[test]
    fn led_payloads_agree_with_the_page() {
        let doc: Value =
            serde_json::from_str(include_str!("../../../web/tests/led-payloads.json")).unwrap();
        for row in doc["rows"].as_array().unwrap() {
            let payload = row["payload"].as_str().unwrap();
            let got = match parse_led(payload.as_bytes()) {
                Ok(LedRequest::Level(n)) => Value::from(n),
                Ok(LedRequest::Off) => Value::from("off"),
                Err(_) => Value::from("unchanged"),
            };
            assert_eq!(got, row["expect"], "{payload:?}");
        }
    }

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

/// The rules of issue 10 (bad input) and issue 9 (conversions both ways).
#[cfg(test)]
mod rules {
    use super::*;

    fn tank(s: &str) -> Result<TankLevel, BadPayload> {
        TankLevel::try_from(s.as_bytes())
    }

    #[test]
    fn only_objects_with_a_numeric_level_are_tank_levels() {
        assert_eq!(tank(r#"{"level": 63.5}"#), Ok(TankLevel { level: 63.5 }));
        assert_eq!(tank(r#"{"level": 0}"#), Ok(TankLevel { level: 0.0 }));
        assert_eq!(
            tank(r#"{"level": 100, "unit": "%"}"#).map(|t| t.level),
            Ok(100.0)
        );
        for bad in [
            "[1]",
            r#"[{"level": 1}]"#,
            "1",
            "63.5",
            "true",
            "null",
            r#""50""#,
            "{}",
            r#"{"lvl": 1}"#,
            r#"{"level": [1]}"#,
            r#"{"level": "50"}"#,
            r#"{"level": true}"#,
            r#"{"level": null}"#,
            r#"{"level": {"v": 1}}"#,
            r#"{"level": -0.1}"#,
            r#"{"level": 1e300}"#,
        ] {
            assert!(
                matches!(tank(bad), Err(BadPayload::Invalid(_))),
                "{bad} read as {:?}",
                tank(bad)
            );
        }
        let e = tank("[1]").unwrap_err().to_string();
        assert!(
            e.contains("JSON array") && e.contains("not a JSON object"),
            "{e}"
        );
        let e = tank(r#"{"level": 1e300}"#).unwrap_err().to_string();
        assert!(e.len() < 60, "{e}");
    }

    #[test]
    fn warnings_quote_a_short_preview_and_the_size() {
        assert_eq!(quote(b"abc"), r#""abc""#);
        assert_eq!(quote(b"a\nb"), r#""a.b""#);
        let big = vec![b'x'; 60_000];
        let q = quote(&big);
        assert!(
            q.starts_with(&format!("\"{}…\"", "x".repeat(PREVIEW_CHARS))),
            "{q}"
        );
        assert!(q.ends_with("(60000 bytes)"), "{q}");
        // Characters, not bytes: a multi-byte character is never cut in two.
        let wide = "é".repeat(100);
        assert_eq!(
            preview(wide.as_bytes()),
            format!("{}…", "é".repeat(PREVIEW_CHARS))
        );
        assert_eq!(preview(&[0xff; 3]), "\u{fffd}\u{fffd}\u{fffd}");
    }

    #[test]
    fn long_bad_payloads_give_short_errors() {
        let word = "y".repeat(60_000);
        type Parse = fn(&[u8]) -> Option<BadPayload>;
        let cases: [(String, Parse); 6] = [
            (word.clone(), |b| PumpState::try_from(b).err()),
            (format!(r#"{{"state": "{word}"}}"#), |b| {
                PumpState::try_from(b).err()
            }),
            (word.clone(), |b| Availability::try_from(b).err()),
            (format!(r#"{{"level": "{word}"}}"#), |b| {
                TankLevel::try_from(b).err()
            }),
            (
                format!(r#"{{"alarm": "{word}", "active": true, "detail": ""}}"#),
                |b| Alarm::try_from(b).err(),
            ),
            (format!(r#"{{"{word}": 1}}"#), |b| parse_led(b).err()),
        ];
        for (payload, parse) in cases {
            let e = parse(payload.as_bytes()).expect("refused").to_string();
            assert!(e.len() < 200, "{} bytes: {e}", e.len());
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn alarms_convert_both_ways() {
        let a = Alarm {
            alarm: AlarmKind::SensorStale,
            active: true,
            detail: "no level \"for\" 10s".into(),
        };
        assert_eq!(
            a.to_json(),
            r#"{"alarm":"sensor-stale","active":true,"detail":"no level \"for\" 10s"}"#
        );
        assert_eq!(Alarm::try_from(a.to_json().as_bytes()), Ok(a));
        for bad in [
            "[1]",
            r#"{"alarm": "fire", "active": true, "detail": ""}"#,
            r#"{"alarm": "dry", "active": "yes", "detail": ""}"#,
            r#"{"alarm": "dry", "detail": ""}"#,
            r#"{"alarm": 1, "active": true, "detail": ""}"#,
        ] {
            assert!(Alarm::try_from(bad.as_bytes()).is_err(), "{bad}");
        }
        let e = Alarm::try_from(&br#"{"alarm":"fire","active":true,"detail":""}"#[..]).unwrap_err();
        assert!(e.to_string().contains("unknown alarm \"fire\""), "{e}");
    }

    #[test]
    fn alarm_kinds_have_one_wire_name() {
        for k in AlarmKind::ALL {
            assert_eq!(AlarmKind::parse(k.as_str()), Some(k));
            assert_eq!(to_json(&k), format!("\"{k}\""), "serde and as_str agree");
        }
        assert_eq!(AlarmKind::parse("Dry"), None);
    }

    #[test]
    fn availability_is_plain_text() {
        assert_eq!(Availability::Online.as_str(), "online");
        assert_eq!(Availability::Offline.to_string(), "offline");
        assert_eq!(Availability::Offline.to_bytes(), b"offline");
        assert!(Availability::try_from(&b"[1]"[..]).is_err());
    }

    #[test]
    fn led_requests_write_back() {
        assert_eq!(LedRequest::Level(42).to_json(), r#"{"level":42}"#);
        assert_eq!(LedRequest::Off.to_json(), r#"{"level":null}"#);
        assert_eq!(
            LedRequest::try_from(&b"[1]"[..]).unwrap_err().to_string(),
            r#"payload is a JSON array, not a JSON object {"level": 0..100}"#
        );
    }

    #[test]
    fn tank_level_never_writes_what_it_cannot_read() {
        assert_eq!(TankLevel::new(f64::NAN).to_json(), r#"{"level":0.0}"#);
        assert_eq!(
            TankLevel::new(f64::INFINITY).to_json(),
            r#"{"level":100.0}"#
        );
        assert_eq!(TankLevel::new(-3.0).to_json(), r#"{"level":0.0}"#);
    }
}

/// Property tests: no parser panics on any input, every payload type
/// survives a round trip, the led level rules hold for every number.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: Payload + PartialEq + fmt::Debug>(value: T) -> Result<(), TestCaseError> {
        let bytes = value.to_bytes();
        prop_assert_eq!(
            T::try_from(&bytes),
            Ok(value),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(())
    }

    fn pump_state() -> impl Strategy<Value = PumpState> {
        prop_oneof![Just(PumpState::On), Just(PumpState::Off)]
    }

    fn alarm_kind() -> impl Strategy<Value = AlarmKind> {
        proptest::sample::select(AlarmKind::ALL.to_vec())
    }

    /// Bytes that look like JSON often enough to reach past the first checks.
    fn payloads() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<String>().prop_map(String::into_bytes),
            "[ \\[\\]{}\":,a-z0-9.eE+-]{0,40}".prop_map(String::into_bytes),
            (any::<String>(), any::<f64>(), any::<bool>()).prop_map(|(s, n, b)| {
                serde_json::json!({"level": n, "state": s, "alarm": s, "active": b, "detail": s})
                    .to_string()
                    .into_bytes()
            }),
        ]
    }

    /// Every parser on `bytes`: never a panic, errors one short line.
    fn parse_all(bytes: &[u8]) -> Result<(), TestCaseError> {
        let errors = [
            parse_led(bytes).err(),
            TankLevel::try_from(bytes).err(),
            PumpState::try_from(bytes).err(),
            Availability::try_from(bytes).err(),
            Alarm::try_from(bytes).err(),
        ];
        for e in errors.into_iter().flatten() {
            let e = e.to_string();
            prop_assert!(e.chars().count() < 300 && !e.contains('\n'), "{}", e);
        }
        let q = quote(bytes);
        prop_assert!(
            q.chars().count() <= 2 * PREVIEW_CHARS + 30 && !q.contains('\n'),
            "{}",
            q
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in payloads()) {
            parse_all(&bytes)?;
        }

        #[test]
        fn led_requests_round_trip(n in 0u8..=100) {
            round_trip(LedRequest::Level(n))?;
            round_trip(LedRequest::Off)?;
        }

        #[test]
        fn tank_levels_round_trip(x in any::<f64>()) {
            let t = TankLevel::new(x);
            prop_assert!((0.0..=100.0).contains(&t.level));
            round_trip(t)?;
        }

        #[test]
        fn pump_states_round_trip(s in pump_state()) {
            round_trip(s)?;
            // The bare form too, in any case.
            prop_assert_eq!(PumpState::try_from(s.as_str().to_uppercase().as_bytes()), Ok(s));
        }

        #[test]
        fn availability_round_trips(online in any::<bool>()) {
            round_trip(if online { Availability::Online } else { Availability::Offline })?;
        }

        #[test]
        fn alarms_round_trip(alarm in alarm_kind(), active in any::<bool>(), detail in any::<String>()) {
            round_trip(Alarm { alarm, active, detail })?;
        }

        #[test]
        // Decimals with three places: JSON reads them back exactly, so the
        // expected level is not off by one at a boundary (42.999 vs 43).
        fn led_numbers_truncate_and_clamp(k in -10_000_000i64..10_000_000) {
            let n = k as f64 / 1000.0;
            let want = LedRequest::Level(n.trunc().clamp(0.0, 100.0) as u8);
            let number = serde_json::json!({"level": n}).to_string();
            prop_assert_eq!(parse_led(number.as_bytes()), Ok(want));
            let string = serde_json::json!({"level": n.to_string()}).to_string();
            prop_assert_eq!(parse_led(string.as_bytes()), Ok(want));
        }

        #[test]
        fn led_integers_in_range_are_exact(n in -1000i64..1000) {
            let want = LedRequest::Level(n.clamp(0, 100) as u8);
            prop_assert_eq!(parse_led(format!(r#"{{"level": {n}}}"#).as_bytes()), Ok(want));
            prop_assert_eq!(parse_led(format!(r#"{{"level": " {n} "}}"#).as_bytes()), Ok(want));
        }

        #[test]
        fn led_non_numeric_strings_turn_it_off(s in "[^0-9]*") {
            let payload = serde_json::json!({"level": s}).to_string();
            prop_assert_eq!(parse_led(payload.as_bytes()), Ok(LedRequest::Off));
        }
    }
}
