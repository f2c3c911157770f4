//! Every topic of SPEC's topic table, in one place: [`Topic`] builds a
//! topic name and parses one back, [`every_id`] and [`controller_filters`]
//! give the wildcard filters, and the checks say which ids, names and
//! filters MQTT (and Mosquitto) accept.

use std::fmt;

use crate::payload::quote;

/// Why an id cannot be used as a topic level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId(pub String);

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id {} is not a single topic level: it must be non-empty and contain no '/', '+', \
             '#' or control characters",
            quote(self.0.as_bytes())
        )
    }
}

impl std::error::Error for BadId {}

/// The first character MQTT's UTF-8 strings may not hold, as Mosquitto
/// checks them (`mosquitto_validate_utf8`): control characters (U+0000 to
/// U+001F, U+007F to U+009F) and the Unicode non-characters. Mosquitto
/// drops a client that sends one as a protocol error, in a client id as in
/// a topic.
pub fn forbidden_char(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        let n = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
    })
}

/// Checks that `id` is one topic level, so `tank/<id>/level` cannot escape
/// its subtree or turn into a wildcard, and that a broker will accept it.
pub fn check_id(id: &str) -> Result<String, BadId> {
    if is_id(id) {
        Ok(id.to_string())
    } else {
        Err(BadId(id.to_string()))
    }
}

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TOPIC
        && !id.contains(['/', '+', '#'])
        && forbidden_char(id).is_none()
}

/// The ids of a fleet of `count` devices starting at `first`: numeric ids
/// count up (`7`, `8`, …), others get a suffix (`a-1`, `a-2`, …), as SPEC says.
pub fn fleet_ids(first: &str, count: u32) -> Vec<String> {
    if count <= 1 {
        return vec![first.to_string()];
    }
    match first.parse::<u64>() {
        Ok(n) => (0..u64::from(count)).map(|i| (n + i).to_string()).collect(),
        Err(_) => (1..=count).map(|i| format!("{first}-{i}")).collect(),
    }
}

/// A topic of SPEC's table; the ids are single topic levels.
///
/// `Topic::TankLevel("3").to_string()` is `tank/3/level`, and
/// `Topic::parse("tank/3/level")` gives it back. Parsing is exact: any
/// other string (an extra level, an empty or invalid id) is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic<'a> {
    /// `led`: the requested LED level.
    Led,
    /// `led/status`: led-client's availability.
    LedStatus,
    /// `led/state`: the level led-client applied.
    LedState,
    /// `tank/<id>/level`
    TankLevel(&'a str),
    /// `tank/<id>/status`
    TankStatus(&'a str),
    /// `pump/<id>/command`
    PumpCommand(&'a str),
    /// `pump/<id>/state`
    PumpState(&'a str),
    /// `pump/<id>/status`
    PumpStatus(&'a str),
    /// `controller/status`
    ControllerStatus,
    /// `alarm/<id>`
    Alarm(&'a str),
}

impl<'a> Topic<'a> {
    /// The topic `name` is, or `None` when it is none of SPEC's.
    pub fn parse(name: &'a str) -> Option<Topic<'a>> {
        let mut levels = name.splitn(4, '/');
        let first = levels.next()?;
        let second = levels.next();
        let third = levels.next();
        if levels.next().is_some() {
            return None;
        }
        let topic = match (first, second, third) {
            ("led", None, None) => Topic::Led,
            ("led", Some("status"), None) => Topic::LedStatus,
            ("led", Some("state"), None) => Topic::LedState,
            ("controller", Some("status"), None) => Topic::ControllerStatus,
            ("alarm", Some(id), None) => Topic::Alarm(id),
            ("tank", Some(id), Some("level")) => Topic::TankLevel(id),
            ("tank", Some(id), Some("status")) => Topic::TankStatus(id),
            ("pump", Some(id), Some("command")) => Topic::PumpCommand(id),
            ("pump", Some(id), Some("state")) => Topic::PumpState(id),
            ("pump", Some(id), Some("status")) => Topic::PumpStatus(id),
            _ => return None,
        };
        match topic.id() {
            Some(id) if !is_id(id) => None,
            _ => Some(topic),
        }
    }

    /// The tank, pump or alarm id, for the topics that have one.
    pub fn id(self) -> Option<&'a str> {
        match self {
            Topic::TankLevel(id)
            | Topic::TankStatus(id)
            | Topic::PumpCommand(id)
            | Topic::PumpState(id)
            | Topic::PumpStatus(id)
            | Topic::Alarm(id) => Some(id),
            Topic::Led | Topic::LedStatus | Topic::LedState | Topic::ControllerStatus => None,
        }
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Led => f.write_str(LED),
            Topic::LedStatus => f.write_str(LED_STATUS),
            Topic::LedState => f.write_str(LED_STATE),
            Topic::TankLevel(id) => write!(f, "tank/{id}/level"),
            Topic::TankStatus(id) => write!(f, "tank/{id}/status"),
            Topic::PumpCommand(id) => write!(f, "pump/{id}/command"),
            Topic::PumpState(id) => write!(f, "pump/{id}/state"),
            Topic::PumpStatus(id) => write!(f, "pump/{id}/status"),
            Topic::ControllerStatus => f.write_str(CONTROLLER_STATUS),
            Topic::Alarm(id) => write!(f, "alarm/{id}"),
        }
    }
}

/// The filter that matches one kind of topic for every id, with `+` in
/// place of the id: `every_id(Topic::TankLevel)` is `tank/+/level`.
pub fn every_id(kind: fn(&'static str) -> Topic<'static>) -> String {
    kind("+").to_string()
}

/// The controller's subscriptions, in this order: retained alarms come
/// last, after the retained levels and states that may clear them.
pub fn controller_filters() -> Vec<String> {
    [
        Topic::TankLevel,
        Topic::PumpState,
        Topic::PumpStatus,
        Topic::TankStatus,
        Topic::Alarm,
    ]
    .map(every_id)
    .to_vec()
}

pub const LED: &str = "led";
pub const LED_STATUS: &str = "led/status";
pub const LED_STATE: &str = "led/state";
pub const CONTROLLER_STATUS: &str = "controller/status";

pub fn tank_level(id: &str) -> String {
    Topic::TankLevel(id).to_string()
}
pub fn tank_status(id: &str) -> String {
    Topic::TankStatus(id).to_string()
}
pub fn pump_command(id: &str) -> String {
    Topic::PumpCommand(id).to_string()
}
pub fn pump_state(id: &str) -> String {
    Topic::PumpState(id).to_string()
}
pub fn pump_status(id: &str) -> String {
    Topic::PumpStatus(id).to_string()
}
pub fn alarm(id: &str) -> String {
    Topic::Alarm(id).to_string()
}

/// Splits `prefix/<id>/suffix` (as matched by a `prefix/+/suffix`
/// subscription) into its id, or `None` for any other topic.
pub fn id_in<'a>(topic: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let id = rest.strip_suffix(suffix)?.strip_suffix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The longest topic MQTT can carry (a two-byte length).
pub const MAX_TOPIC: usize = 65535;

/// Why a topic name or filter cannot be used (given by a user: `-t`,
/// `--will-topic`); checked before connecting, because Paho would only fail
/// later, and quietly, and Mosquitto drops the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTopic {
    /// Empty, or longer than [`MAX_TOPIC`] bytes.
    Length,
    /// A character MQTT strings may not hold (see [`forbidden_char`]).
    Char(String, char),
    /// A wildcard in a topic name (one publishes to).
    Wildcard(String),
    /// A `+` or `#` that is not a whole level, or a `#` not last.
    Filter(String),
}

impl fmt::Display for BadTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadTopic::Length => write!(f, "must be 1 to {MAX_TOPIC} bytes long"),
            BadTopic::Char(t, c) if *c == '\0' => {
                write!(f, "{} contains a NUL character", quote(t.as_bytes()))
            }
            BadTopic::Char(t, c) => write!(
                f,
                "{} contains the character U+{:04X}, which MQTT does not allow in a topic",
                quote(t.as_bytes()),
                u32::from(*c)
            ),
            BadTopic::Wildcard(t) => write!(
                f,
                "{} contains a wildcard ('+' or '#'); a message is published to one topic",
                quote(t.as_bytes())
            ),
            BadTopic::Filter(t) => write!(
                f,
                "{} is not a valid topic filter: '+' must be a whole level and '#' a whole \
                 last level (e.g. 'level1/+/temperature/#')",
                quote(t.as_bytes())
            ),
        }
    }
}

impl std::error::Error for BadTopic {}

fn check_text(topic: &str) -> Result<(), BadTopic> {
    if topic.is_empty() || topic.len() > MAX_TOPIC {
        return Err(BadTopic::Length);
    }
    match forbidden_char(topic) {
        Some(c) => Err(BadTopic::Char(topic.to_string(), c)),
        None => Ok(()),
    }
}

/// A topic name one can publish to (a will topic): no wildcards.
pub fn check_name(topic: &str) -> Result<(), BadTopic> {
    check_text(topic)?;
    if topic.contains(['+', '#']) {
        return Err(BadTopic::Wildcard(topic.to_string()));
    }
    Ok(())
}

/// A topic filter one can subscribe to: `+` a whole level, `#` a whole
/// last level.
pub fn check_filter(filter: &str) -> Result<(), BadTopic> {
    check_text(filter)?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad_hash = level.contains('#') && (*level != "#" || i + 1 != levels.len());
        let bad_plus = level.contains('+') && *level != "+";
        if bad_hash || bad_plus {
            return Err(BadTopic::Filter(filter.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_levels() {
        assert!(check_id("1").is_ok());
        assert!(check_id("north-tank").is_ok());
        for bad in ["", "a/b", "+", "#", "a#"] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fleets_count_up_or_take_suffixes() {
        assert_eq!(fleet_ids("7", 3), ["7", "8", "9"]);
        assert_eq!(fleet_ids("a", 2), ["a-1", "a-2"]);
        assert_eq!(fleet_ids("a", 1), ["a"]);
    }

    #[test]
    fn ids_come_back_out_of_topics() {
        assert_eq!(id_in("tank/12/level", "tank", "level"), Some("12"));
        assert_eq!(id_in("tank/12/status", "tank", "level"), None);
        assert_eq!(id_in("tank//level", "tank", "level"), None);
        assert_eq!(id_in("tank/a/b/level", "tank", "level"), None);
    }
}

/// Every topic of SPEC's table, for `id` (the tests go through all of them).
#[cfg(test)]
fn every_topic(id: &str) -> [Topic<'_>; 10] {
    [
        Topic::Led,
        Topic::LedStatus,
        Topic::LedState,
        Topic::TankLevel(id),
        Topic::TankStatus(id),
        Topic::PumpCommand(id),
        Topic::PumpState(id),
        Topic::PumpStatus(id),
        Topic::ControllerStatus,
        Topic::Alarm(id),
    ]
}

/// The one `Topic` type, the filters and the checks.
#[cfg(test)]
mod rules {
    use super::*;

    fn all(id: &str) -> Vec<Topic<'_>> {
        every_topic(id).to_vec()
    }

    #[test]
    fn every_topic_of_the_table() {
        let names: Vec<String> = all("7").iter().map(Topic::to_string).collect();
        assert_eq!(
            names,
            [
                "led",
                "led/status",
                "led/state",
                "tank/7/level",
                "tank/7/status",
                "pump/7/command",
                "pump/7/state",
                "pump/7/status",
                "controller/status",
                "alarm/7",
            ]
        );
        for (t, name) in all("7").into_iter().zip(&names) {
            assert_eq!(Topic::parse(name), Some(t));
        }
        assert_eq!(Topic::Alarm("north").id(), Some("north"));
        assert_eq!(Topic::Led.id(), None);
        assert_eq!(tank_level("2"), "tank/2/level");
        assert_eq!(alarm("2"), "alarm/2");
    }

    #[test]
    fn other_topics_are_not_ours() {
        for other in [
            "",
            "/",
            "led/",
            "led/x",
            "Led",
            "tank/1",
            "tank//level",
            "tank/1/level/x",
            "tank/a/b/level",
            "alarm/",
            "alarm/1/x",
            "pump/1/commands",
            "controller",
            "tank/+/level",
            "alarm/#",
            "tank/a\u{7}/level",
        ] {
            assert_eq!(Topic::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn filters_have_a_plus_for_the_id() {
        assert_eq!(every_id(Topic::PumpState), "pump/+/state");
        assert_eq!(
            controller_filters(),
            [
                "tank/+/level",
                "pump/+/state",
                "pump/+/status",
                "tank/+/status",
                "alarm/+"
            ]
        );
        for f in controller_filters() {
            assert_eq!(check_filter(&f), Ok(()));
        }
    }

    #[test]
    fn ids_hold_no_control_characters() {
        for bad in [
            "a\u{7}", "\n", "a\u{7f}", "a\u{85}", "\u{fdd0}", "\u{ffff}", "\0",
        ] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_id("bébé-1").is_ok());
        let e = check_id("a\u{7}b").unwrap_err().to_string();
        assert!(
            e.contains("control characters") && e.contains("\"a.b\""),
            "{e}"
        );
    }

    #[test]
    fn names_and_filters() {
        for ok in [
            "pyiot",
            "#",
            "level1/#",
            "+/+/lighting/sensor1",
            "a//b",
            "/",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "#/sensor1", "a/b#", "a+/b", "a/#/b", "a\u{1}"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(matches!(check_name("a/+"), Err(BadTopic::Wildcard(_))));
        assert!(matches!(check_name("a\0"), Err(BadTopic::Char(_, '\0'))));
        assert_eq!(
            check_name(&"x".repeat(MAX_TOPIC + 1)),
            Err(BadTopic::Length)
        );
        assert_eq!(check_name("a/b"), Ok(()));
    }
}

/// Property tests: parsing never panics, and names and topics map one to one.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Valid ids, with the characters most likely to confuse a parser.
    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{1,12}",
            "[^/+#\\p{Cc}]{1,12}",
            Just("level".to_string()),
            Just("status".to_string()),
        ]
        .prop_filter("a valid id", |s| check_id(s).is_ok())
    }

    fn kind() -> impl Strategy<Value = usize> {
        0usize..10
    }

    fn make(kind: usize, id: &str) -> Topic<'_> {
        every_topic(id)[kind]
    }

    proptest! {
        #[test]
        fn topics_round_trip(kind in kind(), id in id()) {
            let topic = make(kind, &id);
            let name = topic.to_string();
            prop_assert_eq!(Topic::parse(&name), Some(topic));
            prop_assert_eq!(check_name(&name), Ok(()));
        }

        #[test]
        fn parse_never_panics_and_is_exact(name in "(led|tank|pump|alarm|controller|[a-z]{0,3}|/|\\+|#|.){0,8}") {
            if let Some(topic) = Topic::parse(&name) {
                prop_assert_eq!(topic.to_string(), name);
            }
        }

        #[test]
        fn parse_never_panics_on_any_string(name in any::<String>()) {
            if let Some(topic) = Topic::parse(&name) {
                prop_assert_eq!(topic.to_string(), name.clone());
            }
            let _ = check_filter(&name);
            let _ = check_name(&name);
            let _ = check_id(&name);
        }

        #[test]
        fn filters_match_what_they_should(kind in 3usize..10, id in id()) {
            // Every topic with an id matches exactly its kind's `+` filter.
            let topic = make(kind, &id);
            let filter = topic_filter(make(kind, "+"));
            let name = topic.to_string();
            prop_assert!(matches(&filter, &name), "{} {}", filter, name);
        }
    }

    fn topic_filter(t: Topic<'_>) -> String {
        t.to_string()
    }

    /// A plain MQTT `+` matcher, enough for the table's filters.
    fn matches(filter: &str, name: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let n: Vec<&str> = name.split('/').collect();
        f.len() == n.len() && f.iter().zip(&n).all(|(f, n)| *f == "+" || f == n)
    }
}
