//! Home Assistant MQTT discovery (`--ha-discovery[=PREFIX]`, `--ha-remove`,
//! `--ha-per-entity`): each program announces its entities with retained
//! configs, so they appear in Home Assistant without YAML, as Tasmota's and
//! Zigbee2MQTT's do.
//!
//! By default one config per device (`<prefix>/device/<node>/config`, with
//! `dev`, `o` and the entities as `cmps`): Home Assistant reads this form
//! since 2024.11, and the device, origin and availability are sent once,
//! not once per entity. `--ha-per-entity` announces the older form, one
//! config per entity (`<prefix>/<component>/<node>/<object>/config`), for
//! Home Assistant before 2024.11 and for openHAB, which reads only that.
//! The controller, which learns its tanks while it runs, sends its whole
//! device again for each new tank: a device config lists all its
//! components, and one left out is deleted.
//!
//! `<node>` is the client id made topic-safe, so two programs never write
//! each other's configs; `unique_id` is `pimqtt_<node>_<object>` in both
//! forms, and a component's id in the device config is the per-entity
//! `<object>`: Home Assistant's discovery id of an entity (`<node>
//! <object>`) is then the same in both forms too.
//!
//! Moving between the forms keeps the entities (their entity ids, history
//! and settings): each program subscribes to the other form's topics of its
//! own node, and for a config it finds there (retained, from an earlier
//! run) it publishes Home Assistant's `{"migrate_discovery": true}` on that
//! topic (the entity is unloaded, its registry entry kept), then an empty
//! retained payload (the old config is gone from the broker), then its
//! config in the new form, which loads the entity again under its unique
//! id. With `--ha-remove` it only empties them. So that Home Assistant never
//! gets the new form while the old one still holds an entity (it would log
//! a conflict and ignore it), a program announces after a connect only
//! once its own sync message, published after subscribing, came back: the
//! broker sends the retained old configs before it.
//!
//! Availability is the program's own status topic (retained `online`, will
//! `offline`), so entities go unavailable when the program does. The
//! program re-announces on every connect and whenever Home Assistant says
//! `online` on `<prefix>/status` (its birth message), as Home Assistant's
//! documentation asks: a Home Assistant that started after the retained
//! configs were lost (a broker without persistence) gets them again. With
//! `--ha-remove` the same topics get empty retained payloads, which delete
//! the entities.

mod entity;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::cli::BadSetting;
use crate::events::Delivery;
use crate::payload::quote;
use crate::session::Session;
use crate::topics;
pub use entity::{origin, Entity};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

/// What Home Assistant takes as "unload this entity, keep its registry
/// entry: its config moves to another topic".
pub const MIGRATE: &str = r#"{"migrate_discovery":true}"#;

/// The discovery flags of led-client, pump-sim, tank-sensor and controller.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Home Assistant")]
pub struct HaArgs {
    /// Announce this program's devices to Home Assistant through MQTT
    /// discovery (retained configs under PREFIX, default homeassistant):
    /// one config per device, which Home Assistant reads since 2024.11.
    /// Entities announced per entity by an earlier run are moved to it,
    /// keeping their entity ids and history.
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_PREFIX, conflicts_with = "ha_remove")]
    pub ha_discovery: Option<String>,

    /// With --ha-discovery: one config per entity instead, for Home
    /// Assistant before 2024.11 and for openHAB (which read only that
    /// form); a device config of an earlier run is moved back.
    #[arg(long)]
    pub ha_per_entity: bool,

    /// Delete this program's entities from Home Assistant (empty retained
    /// configs under PREFIX, in either form); the program otherwise runs
    /// as usual. Run it once so, then without.
    #[arg(long, value_name = "PREFIX", num_args = 0..=1, require_equals = true,
          default_missing_value = DEFAULT_PREFIX)]
    pub ha_remove: Option<String>,
}

impl HaArgs {
    /// What the flags ask for: nothing, announcing, or removing. A prefix
    /// that is not a plain topic name is refused (bad configuration), and
    /// so is --ha-per-entity alone.
    pub fn discovery(&self) -> Result<Option<Discovery>, BadSetting> {
        let (prefix, remove) = match (&self.ha_discovery, &self.ha_remove) {
            (Some(p), _) => (p, false),
            (None, Some(p)) => (p, true),
            (None, None) if self.ha_per_entity => {
                return Err(BadSetting(
                    "--ha-per-entity says in which form --ha-discovery announces: give both, \
                     --ha-discovery --ha-per-entity"
                        .into(),
                ))
            }
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
            per_entity: self.ha_per_entity,
        }))
    }
}

/// A program's discovery settings: where, whether to announce or remove,
/// and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub prefix: String,
    pub remove: bool,
    pub per_entity: bool,
}

impl Discovery {
    /// Home Assistant's status topic (`<prefix>/status`): add it to the
    /// session's subscriptions, so the program hears Home Assistant start.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Subscriptions to add to the session's config.
    pub fn subscriptions(&self) -> Vec<String> {
        vec![self.status_topic()]
    }

    /// Subscribes `session` (before its start) to the configs its node may
    /// have left in the other form (device configs with --ha-per-entity,
    /// else per-entity ones): found, they are moved. With --ha-remove, to
    /// both forms: found, they are deleted (so a device config is emptied
    /// only if there is one: Home Assistant warns about emptying none).
    pub fn subscribe(&self, session: &Session) {
        let node = object_id(session.client_id());
        if self.remove || self.per_entity {
            session.subscribe_too(self.device_topic(&node));
        }
        if self.remove || !self.per_entity {
            session.subscribe_too(format!("{}/+/{node}/+/config", self.prefix));
        } else {
            session.subscribe_too(self.sync_topic(&node));
        }
    }

    /// True if `d` came on one of the discovery subscriptions: Home
    /// Assistant's status, or a config of `session`'s node. The program
    /// hands it to [`heard`](Self::heard), not to its own logic.
    pub fn is_ours(&self, session: &Session, d: &Delivery) -> bool {
        d.topic() == self.status_topic()
            || d.topic() == self.sync_topic(session.client_id())
            || self.other_form(session, d.topic())
    }

    /// True if `d` is Home Assistant saying it is (back) online: time to
    /// re-announce. (Any message on the status topic but `offline`:
    /// announcing too often costs nothing, missing one leaves ghosts.)
    pub fn wants_announce(&self, d: &Delivery) -> bool {
        d.topic() == self.status_topic()
            && std::str::from_utf8(d.payload()).map_or(true, |s| s.trim() != "offline")
    }

    /// Called on every connect, instead of announcing at once: publishes
    /// the sync message ([`sync_topic`](Self::sync_topic)) that
    /// [`heard`](Self::heard) answers with the announcement. The broker
    /// sends the retained configs of the other form (on subscribing) before
    /// it, so they are moved out of the way first, and Home Assistant never
    /// sees one entity on two topics (it would log a conflict).
    pub fn connected(&self, session: &Session) {
        session.publish(&self.sync_topic(session.client_id()), "sync", false);
    }

    /// Handles a message for which [`is_ours`](Self::is_ours) holds; true
    /// if the program should announce its entities (again) now: Home
    /// Assistant came online, or the sync message came back.
    pub fn heard(&self, session: &Session, d: &Delivery) -> bool {
        if d.topic() == self.status_topic() {
            return self.wants_announce(d);
        }
        if d.topic() == self.sync_topic(session.client_id()) {
            return true;
        }
        let payload = d.payload();
        // Our own migration request and emptying come back to us: nothing
        // left to move.
        if payload.is_empty() || is_migrate(payload) {
            return false;
        }
        if self.remove {
            log::info!("Home Assistant: deleting {}", d.topic());
        } else {
            log::info!(
                "Home Assistant: moving {} to {} discovery (the entities keep their ids)",
                d.topic(),
                if self.per_entity {
                    "per-entity"
                } else {
                    "device"
                }
            );
            session.publish(d.topic(), MIGRATE, false);
        }
        session.publish(d.topic(), Vec::new(), true);
        // A retained config came on subscribing, before the sync message,
        // which will announce; one published later needs a sync of its own.
        if !d.msg.retained() {
            self.connected(session);
        }
        false
    }

    /// Where a program talks to itself: `<prefix>/pimqtt/<node>/sync/config`,
    /// matched by the per-entity subscription (and by a secured broker's
    /// `<prefix>/+/+/+/config` grant), and not a topic Home Assistant reads
    /// (`pimqtt` is none of its platforms).
    pub fn sync_topic(&self, node: &str) -> String {
        format!("{}/pimqtt/{}/sync/config", self.prefix, object_id(node))
    }

    /// True if `topic` is a config topic of `session`'s node that
    /// [`subscribe`](Self::subscribe) asked for.
    fn other_form(&self, session: &Session, topic: &str) -> bool {
        let node = object_id(session.client_id());
        if topic == self.device_topic(&node) {
            return self.remove || self.per_entity;
        }
        let Some(rest) = topic.strip_prefix(&format!("{}/", self.prefix)) else {
            return false;
        };
        let levels: Vec<&str> = rest.split('/').collect();
        (self.remove || !self.per_entity)
            && matches!(levels.as_slice(), [c, n, _, "config"] if *c != "device" && *n == node)
    }

    /// The device config topic of the client `node`.
    pub fn device_topic(&self, node: &str) -> String {
        format!("{}/device/{}/config", self.prefix, object_id(node))
    }

    /// The per-entity discovery topic of `entity` announced by `node`.
    pub fn topic(&self, node: &str, entity: &Entity) -> String {
        format!(
            "{}/{}/{}/{}/config",
            self.prefix,
            entity.component,
            object_id(node),
            entity.object
        )
    }

    /// The per-entity config of `entity` for the client `node`, or an
    /// empty payload when removing.
    pub fn payload(&self, node: &str, entity: &Entity) -> Vec<u8> {
        if self.remove {
            return Vec::new();
        }
        entity.config(node).to_string().into_bytes()
    }

    /// The device config of the client `node` holding `entities` (one
    /// device: the first entity's; availability shared), or an empty
    /// payload when removing.
    pub fn device_payload(&self, node: &str, entities: &[Entity]) -> Vec<u8> {
        let Some(first) = entities.first().filter(|_| !self.remove) else {
            return Vec::new();
        };
        let cmps: Map<String, Value> = entities
            .iter()
            .map(|e| (e.object.clone(), e.component(node)))
            .collect();
        let mut c = first.availability();
        c.insert("dev".into(), first.device(node));
        c.insert("o".into(), origin());
        c.insert("cmps".into(), Value::Object(cmps));
        json!(c).to_string().into_bytes()
    }

    /// Publishes (retained) the configs of `entities` on `session`, or
    /// deletes their per-entity configs with `--ha-remove` (a device config
    /// is deleted when found: [`heard`](Self::heard)). A device config
    /// lists all the device's entities: give them all.
    pub fn announce(&self, session: &Session, entities: &[Entity]) {
        let node = session.client_id();
        if self.per_entity || self.remove {
            for e in entities {
                session.publish(&self.topic(node, e), self.payload(node, e), true);
            }
        } else if !entities.is_empty() {
            let topic = self.device_topic(node);
            session.publish(&topic, self.device_payload(node, entities), true);
        }
        log::info!(
            "Home Assistant: {} {} entit{} under {}/ ({})",
            if self.remove { "removed" } else { "announced" },
            entities.len(),
            if entities.len() == 1 { "y" } else { "ies" },
            self.prefix,
            if self.per_entity || self.remove {
                "one config per entity".to_string()
            } else {
                format!("device config {}", self.device_topic(node))
            }
        );
    }
}

/// True if `payload` is a `{"migrate_discovery": true}` (or abbreviated)
/// request.
fn is_migrate(payload: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(payload).is_ok_and(|m| {
        m.get("migrate_discovery")
            .or_else(|| m.get("migr_discvry"))
            .is_some()
    })
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
    use crate::payload::AlarmKind;
    use clap::Parser;
    use std::time::Duration;

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
        assert!(!d.per_entity);
        assert!(flags(&["--ha-discovery", "--ha-remove"]).is_err());
        let d = flags(&["--ha-discovery", "--ha-per-entity"])
            .unwrap()
            .unwrap();
        assert!(d.per_entity);
        let e = flags(&["--ha-per-entity"]).unwrap_err();
        assert!(
            e.contains("give both, --ha-discovery --ha-per-entity"),
            "{e}"
        );
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
            per_entity: true,
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

    #[test]
    fn a_device_config_holds_its_entities_under_their_per_entity_ids() {
        let d = Discovery {
            prefix: "ha".into(),
            remove: false,
            per_entity: false,
        };
        assert_eq!(d.device_topic("pump-sim 2"), "ha/device/pump-sim_2/config");
        let alarms = Entity::alarms("1");
        let c: Value = serde_json::from_slice(&d.device_payload("controller", &alarms)).unwrap();
        assert_eq!(c["dev"]["identifiers"], json!(["pimqtt_controller"]));
        assert_eq!(c["o"]["name"], "pi-mqtt");
        assert_eq!(c["availability_topic"], "controller/status");
        let cmps = c["cmps"].as_object().unwrap();
        assert_eq!(cmps.len(), 4);
        // The component id is the per-entity object id, the unique id the
        // per-entity one: Home Assistant sees the same entities.
        let dry = &cmps["tank_1_dry"];
        assert_eq!(dry["p"], "binary_sensor");
        assert_eq!(dry["unique_id"], "pimqtt_controller_tank_1_dry");
        assert_eq!(dry["device_class"], "problem");
        assert!(dry.get("device").is_none() && dry.get("availability_topic").is_none());
        let r = Discovery { remove: true, ..d };
        assert!(r.device_payload("controller", &alarms).is_empty());
    }

    #[test]
    fn migration_requests_are_recognised() {
        assert!(is_migrate(MIGRATE.as_bytes()));
        assert!(is_migrate(br#"{"migr_discvry": true}"#));
        assert!(!is_migrate(br#"{"name": null}"#));
        assert!(!is_migrate(b"not json"));
    }
}
