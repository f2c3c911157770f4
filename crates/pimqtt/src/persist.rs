//! Paho client persistence: what makes in-flight messages survive a stop,
//! a crash and (with `--sync`) a power cut.
//!
//! Every record Paho keeps goes to one [`Store`] per client under
//! `--state-dir`: outgoing QoS 1/2 state (`c-` queued commands, `s-` sent,
//! `sc-` released, `q-`) and inbound QoS 2 state (`r-`: received, not yet
//! released by the broker). Paho writes `r-` before it answers PUBREC, so a
//! process killed at any moment finds on restart every message the broker
//! still counts as in flight, and the broker's PUBREL then delivers it.
//!
//! Why not Paho's own file persistence: it creates, writes and deletes a
//! file per key, several per message. Draining a 10,000-message backlog took
//! 20 times as long as `mosquitto_sub`, and a controller commanding 1000
//! tanks spent a fifth of its CPU on files (and a Pi's SD card on wear).

use std::path::PathBuf;

use paho_mqtt as mqtt;

use crate::store::{Store, SyncMode};

/// The persistence of one client.
#[derive(Debug)]
pub struct StatePersistence {
    root: PathBuf,
    sync: SyncMode,
    store: Option<Store>,
}

impl StatePersistence {
    pub fn new(root: impl Into<PathBuf>, sync: SyncMode) -> Self {
        StatePersistence {
            root: root.into(),
            sync,
            store: None,
        }
    }

    fn store(&mut self) -> mqtt::Result<&mut Store> {
        self.store.as_mut().ok_or(mqtt::Error::PersistenceError)
    }
}

/// One file per client and broker, named like Paho's own directories.
pub(crate) fn file_name(client_id: &str, server_uri: &str, ext: &str) -> String {
    let name: String = format!("{client_id}-{server_uri}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}.{ext}")
}

fn io_err(e: std::io::Error) -> mqtt::Error {
    log::warn!("client persistence: {e}");
    mqtt::Error::PersistenceError
}

impl mqtt::ClientPersistence for StatePersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        let path = self.root.join(file_name(client_id, server_uri, "log"));
        self.store = Some(Store::open(path, self.sync).map_err(io_err)?);
        Ok(())
    }

    fn close(&mut self) -> mqtt::Result<()> {
        if let Some(store) = self.store.take() {
            store.flush().map_err(io_err)?;
        }
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let data = buffers.concat();
        self.store()?.put(key, data).map_err(io_err)
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.store()?
            .live()
            .get(key)
            .cloned()
            .ok_or(mqtt::Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        // Paho removes every key in all its forms (v3 and v5, sent and
        // released) whether it exists or not: only live ones cost a write.
        // An `r-` removal is written at once, although writing it with the
        // next record would save a system call per message: Paho may queue
        // the PUBCOMP behind a full socket, and a crash then leaves the
        // broker to release that packet id again, which a stale `r-` record
        // turns into a second delivery (the kill -9 fault test saw 857
        // messages applied twice on Mosquitto 2.0.11 when it was tried).
        self.store()?.remove(key).map_err(io_err)
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        Ok(self.store()?.live().keys().cloned().collect())
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        self.store()?.clear().map_err(io_err)
    }

    fn contains_key(&mut self, key: &str) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| s.live().contains_key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::ClientPersistence;

    const URI: &str = "tcp://localhost:1883";

    #[test]
    fn inbound_and_outgoing_state_survive_a_crash() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path(), SyncMode::Batched);
        p.open("LEDClient", URI).expect("open");
        p.put("c-1", vec![b"ab", b"c"]).expect("put");
        p.put("r-3", vec![b"in"]).expect("put");
        assert_eq!(p.get("c-1").expect("get"), b"abc");
        // A crash: no close.
        let mut after = StatePersistence::new(root.path(), SyncMode::Batched);
        after.open("LEDClient", URI).expect("open");
        let mut keys = after.keys().expect("keys");
        keys.sort();
        assert_eq!(keys, ["c-1", "r-3"]);
        assert!(after.contains_key("r-3") && !after.contains_key("s-2"));
        assert!(root
            .path()
            .join("LEDClient-tcp___localhost_1883.log")
            .exists());
    }
}
