//! Home Assistant MQTT discovery (`--ha-discovery[=PREFIX]`, `--ha-remove`):
//! each program announces its entities with retained configs, so they
//! appear in Home Assistant without YAML, as Tasmota's and Zigbee2MQTT's do.
//!
//! One config per entity (`<prefix>/<component>/<node>/<object>/config`),
//! not one device config holding them all: the controller learns its tanks
//! while it runs, and a per-entity config lets it add one tank's alarms
//! without re-sending (and Home Assistant re-parsing) every other; a fleet
//! of pumps is one config per pump, each on its own connection; and every
//! Home Assistant since 2021 reads this form (device configs came in
//! 2024.12). The entities of one program are still grouped into a device
//! through the `device` block.
//!
//! `<node>` is the client id made topic-safe, so two programs never write
//! each other's configs; `unique_id` is `pimqtt_<node>_<object>`.
//! Availability is the program's own status topic (retained `online`, will
//! `offline`), so entities go unavailable when the program does.
//!
//! The program re-announces on every connect and whenever Home Assistant
//! says `online` on `<prefix>/status` (its birth message), as Home
//! Assistant's documentation asks: a Home Assistant that started after the
//! retained configs were lost (a broker without persistence) gets them
//! again. With `--ha-remove` the same topics get empty retained payloads,
//! which delete the entities.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::cli::BadSetting;
use crate::events::Delivery;
use crate::payload::{quote, AlarmKind, PumpState};
use crate::session::Session;
use crate::topics;

/// Home Assistant's default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

/// The discovery flags of led-client, pump-sim, tank-sensor and controller.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Home Assistant")]
pub struct HaArgs {
    /// Announce this program's devices to Home Assistant through MQTT
    /// discovery (retained configs under PREFIX, default homeassistant).
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_PREFIX, conflicts_with = "ha_remove")]
    pub ha_discovery: Option<String>,

    /// Delete this program's entities from Home Assistant (empty retained
    /// configs under PREFIX); the program otherwise runs as usual. Run it
    /// once so, then without.
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_PREFIX)]
    pub ha_remove: Option<String>,
}

impl HaArgs {
    /// What the flags ask for: nothing, announcing, or removing. A prefix
    /// that is not a plain topic name is refused (bad configuration).
    pub fn discovery(&self) -> Result<Option<Discovery>, BadSetting> {
        let (prefix, remove) = match (&self.ha_discovery, &self.ha_remove) {
            (Some(p), _) => (p, false),
            (None, Some(p)) => (p, true),
            (None, None) => return Ok(None),
        };
        let flag = if remove {
            "--ha-remove"
        } else {
            "--ha-discovery"
        };
        if prefix.is_empty()
            || prefix.contains(['+', '#'])
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || topics::check_name(prefix).is_err()
        {
            return Err(BadSetting(format!(
                "{flag}={} is not a discovery prefix: give a topic without wildcards or \
                 leading/trailing '/', e.g. {flag}={DEFAULT_PREFIX} (Home Assistant's default)",
                quote(prefix.as_bytes())
            )));
        }
        Ok(Some(Discovery {
            prefix: prefix.clone(),
            remove,
        }))
    }
}

/// A program's discovery settings: where, and whether to announce or
/// remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub prefix: String,
    pub remove: bool,
}

impl Discovery {
    /// Home Assistant's status topic (`<prefix>/status`): add it to the
    /// session's subscriptions, so the program hears Home Assistant start.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Subscriptions to add to the session's.
    pub fn subscriptions(&self) -> Vec<String> {
        vec![self.status_topic()]
    }

    /// True if `d` is Home Assistant's birth message: time to re-announce.
    /// (Also true for any message on the status topic other than
    /// `offline`: announcing too often costs nothing, missing one leaves
    /// ghosts.)
    pub fn is_status(&self, d: &Delivery) -> bool {
        d.topic() == self.status_topic()
    }

    /// True if `d` is Home Assistant saying it is (back) online.
    pub fn wants_announce(&self, d: &Delivery) -> bool {
        self.is_status(d)
            && std::str::from_utf8(d.payload()).map_or(true, |s| s.trim() != "offline")
    }

    /// The discovery topic of `entity` announced by `session`'s client.
    pub fn topic(&self, node: &str, entity: &Entity) -> String {
        format!(
            "{}/{}/{}/{}/config",
            self.prefix,
            entity.component,
            object_id(node),
            entity.object
        )
    }

    /// The retained config of `entity` for the client `node`, or an empty
    /// payload when removing.
    pub fn payload(&self, node: &str, entity: &Entity) -> Vec<u8> {
        if self.remove {
            return Vec::new();
        }
        entity.config(node).to_string().into_bytes()
    }

    /// Publishes (retained) the configs of `entities` on `session`, or
    /// deletes them with `--ha-remove`.
    pub fn announce(&self, session: &Session, entities: &[Entity]) {
        let node = session.client_id();
        for e in entities {
            session.publish(&self.topic(node, e), self.payload(node, e), true);
        }
        log::info!(
            "Home Assistant: {} {} entit{} under {}/",
            if self.remove { "removed" } else { "announced" },
            entities.len(),
            if entities.len() == 1 { "y" } else { "ies" },
            self.prefix
        );
    }
}

/// One Home Assistant entity: its platform, its object id (unique within
/// the program), the device it belongs to, and its platform options.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub component: &'static str,
    pub object: String,
    pub device_name: String,
    pub model: &'static str,
    pub availability_topic: String,
    pub options: Map<String, Value>,
}

impl Entity {
    /// The full discovery config for the client `node`.
    pub fn config(&self, node: &str) -> Value {
        let node = object_id(node);
        let mut c = self.options.clone();
        c.insert(
            "unique_id".into(),
            json!(format!("pimqtt_{node}_{}", self.object)),
        );
        c.insert("availability_topic".into(), json!(self.availability_topic));
        c.insert("payload_available".into(), json!("online"));
        c.insert("payload_not_available".into(), json!("offline"));
        c.insert(
            "device".into(),
            json!({
                "identifiers": [format!("pimqtt_{node}")],
                "name": self.device_name,
                "manufacturer": "pi-mqtt",
                "model": self.model,
                "sw_version": env!("CARGO_PKG_VERSION"),
            }),
        );
        c.insert(
            "origin".into(),
            json!({ "name": "pi-mqtt", "sw_version": env!("CARGO_PKG_VERSION") }),
        );
        Value::Object(c)
    }

    /// led-client's LED: a `light` commanded on `led` (retained, as the
    /// web page publishes) with brightness 0..100 (`brightness_scale`), its
    /// state from `led/state`, what the LED really does. Turning it on
    /// without a brightness restores the last one (`on_command_type`).
    pub fn led_light(qos: i32) -> Entity {
        let level = |n: u8| crate::payload::LedRequest::Level(n).to_json();
        let (on, off) = (level(100), level(0));
        Entity {
            component: "light",
            object: "led".into(),
            device_name: "LED".into(),
            model: "led-client",
            availability_topic: topics::LED_STATUS.into(),
            options: obj(json!({
                "name": null,
                "command_topic": topics::LED,
                "brightness_command_topic": topics::LED,
                "brightness_command_template": "{\"level\":{{ value }}}",
                "brightness_scale": 100,
                "on_command_type": "brightness",
                "payload_on": on,
                "payload_off": off,
                "state_topic": topics::LED_STATE,
                // Home Assistant compares the template's output with
                // payload_on/payload_off: normalise any level to them.
                "state_value_template": format!(
                    "{{{{ '{off}' if (value_json.level | int(0)) == 0 else '{on}' }}}}"
                ),
                "brightness_state_topic": topics::LED_STATE,
                "brightness_value_template": "{{ value_json.level }}",
                "retain": true,
                "qos": qos,
            })),
        }
    }

    /// pump-sim's pump `id`: a `switch` on `pump/<id>/command` and
    /// `pump/<id>/state`.
    pub fn pump_switch(id: &str, qos: i32) -> Entity {
        Entity {
            component: "switch",
            object: "pump".into(),
            device_name: format!("Pump {id}"),
            model: "pump-sim",
            availability_topic: topics::pump_status(id),
            options: obj(json!({
                "name": null,
                "command_topic": topics::pump_command(id),
                "payload_on": PumpState::On.to_json(),
                "payload_off": PumpState::Off.to_json(),
                "state_topic": topics::pump_state(id),
                "value_template": "{{ value_json.state }}",
                "state_on": "on",
                "state_off": "off",
                "qos": qos,
            })),
        }
    }

    /// tank-sensor's tank `id`: a level `sensor` in %, unknown again when no
    /// level came for `expire_after` (as the controller's sensor-stale).
    pub fn tank_level(id: &str, expire_after: Duration) -> Entity {
        Entity {
            component: "sensor",
            object: "level".into(),
            device_name: format!("Tank {id}"),
            model: "tank-sensor",
            availability_topic: topics::tank_status(id),
            options: obj(json!({
                "name": "Level",
                "state_topic": topics::tank_level(id),
                "value_template": "{{ value_json.level }}",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "icon": "mdi:water-percent",
                "suggested_display_precision": 1,
                "expire_after": expire_after.as_secs_f64().ceil().max(1.0) as u64,
            })),
        }
    }

    /// The controller's alarm `kind` for tank `id`: a `binary_sensor` of
    /// device class `problem`. `alarm/<id>` carries one kind at a time, so
    /// each sensor's template answers only to its own kind (empty output:
    /// Home Assistant keeps the state).
    pub fn alarm(id: &str, kind: AlarmKind) -> Entity {
        let k = kind.as_str();
        Entity {
            component: "binary_sensor",
            object: format!("tank_{}_{}", object_id(id), object_id(k)),
            device_name: "Controller".into(),
            model: "controller",
            availability_topic: topics::CONTROLLER_STATUS.into(),
            options: obj(json!({
                "name": format!("Tank {id} {}", k.replace('-', " ")),
                "device_class": "problem",
                "state_topic": topics::alarm(id),
                "value_template": format!(
                    "{{% if value_json is defined and value_json.alarm == '{k}' %}}\
                     {{{{ 'ON' if value_json.active else 'OFF' }}}}{{% endif %}}"
                ),
            })),
        }
    }

    /// Every alarm kind of tank `id`.
    pub fn alarms(id: &str) -> Vec<Entity> {
        AlarmKind::ALL
            .iter()
            .map(|&k| Entity::alarm(id, k))
            .collect()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `s` as a discovery topic level: Home Assistant takes only
/// `[A-Za-z0-9_-]` in node and object ids; other characters become `_`
/// (ids that differ only there share an entity: give such devices plain
/// ids).
pub fn object_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        ha: HaArgs,
    }

    fn flags(args: &[&str]) -> Result<Option<Discovery>, String> {
        let mut all = vec!["prog"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .ha
            .discovery()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_prefix_optional() {
        assert_eq!(flags(&[]), Ok(None));
        let d = flags(&["--ha-discovery"]).unwrap().unwrap();
        assert_eq!((d.prefix.as_str(), d.remove), ("homeassistant", false));
        let d = flags(&["--ha-discovery=ha2"]).unwrap().unwrap();
        assert_eq!(d.status_topic(), "ha2/status");
        let d = flags(&["--ha-remove"]).unwrap().unwrap();
        assert!(d.remove);
        assert!(flags(&["--ha-discovery", "--ha-remove"]).is_err());
        for bad in ["--ha-discovery=", "--ha-discovery=a/#", "--ha-remove=/x"] {
            let e = flags(&[bad]).expect_err(bad);
            assert!(e.contains("discovery prefix") || e.contains("value"), "{e}");
        }
    }

    #[test]
    fn topics_are_per_client_and_removal_is_empty() {
        let d = Discovery {
            prefix: "homeassistant".into(),
            remove: false,
        };
        let e = Entity::pump_switch("1", 2);
        assert_eq!(
            d.topic("pump-sim-1", &e),
            "homeassistant/switch/pump-sim-1/pump/config"
        );
        let c: Value = serde_json::from_slice(&d.payload("pump-sim-1", &e)).unwrap();
        assert_eq!(c["unique_id"], "pimqtt_pump-sim-1_pump");
        assert_eq!(c["availability_topic"], "pump/1/status");
        assert_eq!(c["command_topic"], "pump/1/command");
        let r = Discovery {
            remove: true,
            ..d.clone()
        };
        assert!(r.payload("pump-sim-1", &e).is_empty());
        assert_eq!(object_id("a b/c+é"), "a_b_c__");
    }

    #[test]
    fn entities_carry_what_home_assistant_needs() {
        let led = Entity::led_light(1).config("LEDClient");
        assert_eq!(led["brightness_scale"], 100);
        assert_eq!(led["state_topic"], "led/state");
        assert_eq!(led["payload_off"], r#"{"level":0}"#);
        assert_eq!(
            led["state_value_template"],
            r#"{{ '{"level":0}' if (value_json.level | int(0)) == 0 else '{"level":100}' }}"#
        );
        let t = Entity::tank_level("3", Duration::from_millis(9500)).config("tank-sensor-3");
        assert_eq!(
            (&t["unit_of_measurement"], &t["expire_after"]),
            (&json!("%"), &json!(10))
        );
        let a = Entity::alarm("3", AlarmKind::SensorStale).config("controller");
        assert_eq!(a["device_class"], "problem");
        assert_eq!(a["state_topic"], "alarm/3");
        assert_eq!(a["unique_id"], "pimqtt_controller_tank_3_sensor-stale");
        assert!(a["value_template"]
            .as_str()
            .unwrap()
            .contains("value_json.alarm == 'sensor-stale' %}{{ 'ON'"));
        assert_eq!(Entity::alarms("3").len(), 4);
    }
}
