//! Topic names of SPEC's topic table and the ids that fill them.

use std::fmt;

/// Why an id cannot be used as a topic level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadId(pub String);

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "id {:?} is not a single topic level: it must be non-empty and contain no '/', '+' or '#'",
            self.0
        )
    }
}

impl std::error::Error for BadId {}

/// Checks that `id` is one topic level, so `tank/<id>/level` cannot escape
/// its subtree or turn into a wildcard.
pub fn check_id(id: &str) -> Result<String, BadId> {
    if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
        Err(BadId(id.to_string()))
    } else {
        Ok(id.to_string())
    }
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

pub const LED: &str = "led";
pub const LED_STATUS: &str = "led/status";
pub const CONTROLLER_STATUS: &str = "controller/status";

pub fn tank_level(id: &str) -> String {
    format!("tank/{id}/level")
}
pub fn tank_status(id: &str) -> String {
    format!("tank/{id}/status")
}
pub fn pump_command(id: &str) -> String {
    format!("pump/{id}/command")
}
pub fn pump_state(id: &str) -> String {
    format!("pump/{id}/state")
}
pub fn pump_status(id: &str) -> String {
    format!("pump/{id}/status")
}
pub fn alarm(id: &str) -> String {
    format!("alarm/{id}")
}

/// Splits `prefix/<id>/suffix` (as matched by a `prefix/+/suffix`
/// subscription) into its id, or `None` for any other topic.
pub fn id_in<'a>(topic: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let id = rest.strip_suffix(suffix)?.strip_suffix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
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
