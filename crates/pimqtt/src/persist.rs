//! Paho client persistence: what makes in-flight messages survive a restart
//! of the client.
//!
//! Outgoing QoS 1/2 state (`s-`, `sc-`, queued commands `c-`, `q-`) goes to
//! one file per key under `--state-dir`, as Paho's own file persistence
//! does, so a publication accepted from the program is delivered even if the
//! process dies before the broker acknowledged it (SPEC's requirement).
//!
//! Inbound QoS 2 state (`r-`: messages received but not yet released by the
//! broker) is kept in memory and written out when the client is closed.
//! With Paho's file persistence every inbound QoS 2 message cost a file
//! create and delete: draining a 10,000-message backlog took 20 times as
//! long as `mosquitto_sub`. The price: a *crash* (not a clean stop) loses
//! the few messages (at most Mosquitto's in-flight window, 20) that were
//! acknowledged with PUBREC but not yet released.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use paho_mqtt as mqtt;

/// The persistence store of one client.
#[derive(Debug)]
pub struct StatePersistence {
    root: PathBuf,
    dir: Option<PathBuf>,
    inbound: HashMap<String, Vec<u8>>,
    /// The outgoing keys that have a file: Paho removes every key in all its
    /// forms (v3 and v5, sent and released) whether it exists or not, and
    /// knowing spares an unlink system call each.
    on_disk: HashSet<String>,
}

impl StatePersistence {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StatePersistence {
            root: root.into(),
            dir: None,
            inbound: HashMap::new(),
            on_disk: HashSet::new(),
        }
    }

    fn dir(&self) -> mqtt::Result<&Path> {
        self.dir.as_deref().ok_or(mqtt::Error::PersistenceError)
    }

    fn file(&self, key: &str) -> mqtt::Result<PathBuf> {
        Ok(self.dir()?.join(key))
    }
}

fn is_inbound(key: &str) -> bool {
    key.starts_with("r-") || key.starts_with("r5-")
}

/// One directory per client and broker, named like Paho's own.
fn dir_name(client_id: &str, server_uri: &str) -> String {
    format!("{client_id}-{server_uri}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn io_err(e: std::io::Error) -> mqtt::Error {
    log::warn!("client persistence: {e}");
    mqtt::Error::PersistenceError
}

impl mqtt::ClientPersistence for StatePersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        let dir = self.root.join(dir_name(client_id, server_uri));
        fs::create_dir_all(&dir).map_err(io_err)?;
        // Inbound state written at the last close comes back into memory.
        for entry in fs::read_dir(&dir).map_err(io_err)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_inbound(&name) {
                let data = fs::read(entry.path()).map_err(io_err)?;
                let _ = fs::remove_file(entry.path());
                self.inbound.insert(name, data);
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path()); // torn by a crash
            } else {
                self.on_disk.insert(name);
            }
        }
        self.dir = Some(dir);
        Ok(())
    }

    fn close(&mut self) -> mqtt::Result<()> {
        if let Some(dir) = &self.dir {
            for (key, data) in self.inbound.drain() {
                fs::write(dir.join(key), data).map_err(io_err)?;
            }
        }
        self.dir = None;
        self.on_disk.clear();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let data = buffers.concat();
        if is_inbound(key) {
            self.inbound.insert(key.to_string(), data);
            return Ok(());
        }
        // Write then rename, so a crash never leaves a torn record that
        // would make the next start fail to restore.
        let path = self.file(key)?;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, data).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)?;
        self.on_disk.insert(key.to_string());
        Ok(())
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        if is_inbound(key) {
            return self
                .inbound
                .get(key)
                .cloned()
                .ok_or(mqtt::Error::PersistenceError);
        }
        fs::read(self.file(key)?).map_err(|_| mqtt::Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        // Inbound keys never touch the disk while open (Paho also removes
        // the v5 twin of every key, which would cost a syscall each).
        if is_inbound(key) {
            self.inbound.remove(key);
            return Ok(());
        }
        if !self.on_disk.remove(key) {
            return Ok(());
        }
        match fs::remove_file(self.file(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.dir()?;
        Ok(self
            .inbound
            .keys()
            .chain(self.on_disk.iter())
            .cloned()
            .collect())
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        self.inbound.clear();
        self.on_disk.clear();
        for entry in fs::read_dir(self.dir()?).map_err(io_err)?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }

    fn contains_key(&mut self, key: &str) -> bool {
        if is_inbound(key) {
            return self.inbound.contains_key(key);
        }
        self.on_disk.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::ClientPersistence;

    #[test]
    fn outgoing_on_disk_inbound_in_memory_until_close() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path());
        p.open("LEDClient", "tcp://localhost:1883").expect("open");
        p.put("s-1", vec![b"ab", b"c"]).expect("put");
        p.put("r-2", vec![b"in"]).expect("put");
        let dir = root.path().join("LEDClient-tcp___localhost_1883");
        assert!(dir.join("s-1").exists());
        assert!(!dir.join("r-2").exists(), "inbound state stays in memory");
        assert_eq!(p.get("s-1").expect("get"), b"abc");
        let mut keys = p.keys().expect("keys");
        keys.sort();
        assert_eq!(keys, ["r-2", "s-1"]);
        p.close().expect("close");
        assert!(dir.join("r-2").exists(), "written out on close");

        let mut again = StatePersistence::new(root.path());
        again
            .open("LEDClient", "tcp://localhost:1883")
            .expect("open");
        assert!(again.contains_key("r-2") && again.contains_key("s-1"));
        again.remove("s-1").expect("remove");
        again.remove("r-2").expect("remove");
        assert!(again.keys().expect("keys").is_empty());
    }
}
