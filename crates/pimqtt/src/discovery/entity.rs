//! The entities each program announces: what Home Assistant needs to show
//! and command them, in the options of its MQTT platforms.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::object_id;
use crate::payload::{AlarmKind, PumpState};
use crate::topics;

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
    /// The full per-entity discovery config for the client `node`.
    pub fn config(&self, node: &str) -> Value {
        let node = object_id(node);
        let mut c = self.options.clone();
        c.insert(
            "unique_id".into(),
            json!(format!("pimqtt_{node}_{}", self.object)),
        );
        for (k, v) in self.availability() {
            c.insert(k, v);
        }
        c.insert("device".into(), self.device(&node));
        c.insert("origin".into(), origin());
        Value::Object(c)
    }

    /// This entity as a component of a device config: its platform, its
    /// unique id (the same as in its per-entity config, so a migrated
    /// entity keeps its entity id and history) and its options.
    pub fn component(&self, node: &str) -> Value {
        let node = object_id(node);
        let mut c = self.options.clone();
        c.insert("p".into(), json!(self.component));
        c.insert(
            "unique_id".into(),
            json!(format!("pimqtt_{node}_{}", self.object)),
        );
        Value::Object(c)
    }

    /// The device block: one device per client id.
    pub fn device(&self, node: &str) -> Value {
        json!({
            "identifiers": [format!("pimqtt_{}", object_id(node))],
            "name": self.device_name,
            "manufacturer": "pi-mqtt",
            "model": self.model,
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Availability: the program's own status topic, so the entities go
    /// unavailable when the program does.
    pub fn availability(&self) -> Map<String, Value> {
        obj(json!({
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
        }))
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

/// Who announced it, shown in Home Assistant's MQTT device info and logs.
pub fn origin() -> Value {
    json!({ "name": "pi-mqtt", "sw_version": env!("CARGO_PKG_VERSION") })
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
