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

//!
//! Each inbound QoS 2 record carries a stamp unique to its write (a packet
//! id alone is reused), so the program's journal can name the exact record
//! a message it holds makes redundant: see [`forget_journaled`].

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use paho_mqtt as mqtt;

use crate::commit;
use crate::store::{Store, SyncMode, When};

/// The persistence of one client.
#[derive(Debug)]
pub struct StatePersistence {
    root: PathBuf,
    sync: SyncMode,
    store: Stamps,
}

/// The client's store, shared between its persistence and its message
/// callback, which reads the stamp of the record being released to copy it
/// into the journal. (Read from the record itself: a map of stamps by
/// packet id cost 0.8 MiB of peak memory while a 10,000-message backlog was
/// all in flight on Mosquitto 2.0.11.)
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamps(Arc<Mutex<Option<Store>>>);

impl Stamps {
    /// The stamp of the live inbound record of packet `msgid`.
    pub(crate) fn get(&self, msgid: u16) -> Option<u64> {
        let guard = self.0.lock().ok()?;
        let live = guard.as_ref()?.live();
        let data = live
            .get(&format!("r-{msgid}"))
            .or_else(|| live.get(&format!("r5-{msgid}")))?;
        stamp_of(data)
    }
}

impl commit::HeldRemovals for Mutex<Option<Store>> {
    /// The removals held by `remove` (commit.rs, step 2).
    fn write_held(&self) -> std::io::Result<()> {
        let mut guard = self.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(store) => store.write_held(When::Lazy),
            None => Ok(()),
        }
    }
}

/// What a stamped record starts with. Paho's own records start with an MQTT
/// fixed-header byte, never 0xff, so records written before stamps existed
/// are still read as they are.
const STAMPED: [u8; 4] = [0xff, b'p', b'm', 1];

/// Whether a key is an inbound QoS 2 record's (`r-7`, `r5-7`).
fn is_received(key: &str) -> bool {
    key.starts_with("r-") || key.starts_with("r5-")
}

/// Whether a key is a record of a message Paho received and queued for the
/// program (`q-`, `q5-`): only when a callback refused it, which ours never
/// does, but acknowledged like the others.
fn is_queued(key: &str) -> bool {
    key.starts_with("q-") || key.starts_with("q5-")
}

fn stamp_of(data: &[u8]) -> Option<u64> {
    let rest = data.strip_prefix(&STAMPED)?;
    Some(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?))
}

/// A stamp no other write has: a random start per process, then counting.
fn next_stamp() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    base.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed))
}

impl StatePersistence {
    pub(crate) fn new(root: impl Into<PathBuf>, sync: SyncMode, store: Stamps) -> Self {
        StatePersistence {
            root: root.into(),
            sync,
            store,
        }
    }

    /// Runs `f` on the open store.
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> mqtt::Result<T>) -> mqtt::Result<T> {
        let mut guard = self
            .store
            .0
            .lock()
            .map_err(|_| mqtt::Error::PersistenceError)?;
        f(guard.as_mut().ok_or(mqtt::Error::PersistenceError)?)
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
        let store = Store::open(path, self.sync).map_err(io_err)?;
        let mut guard = self
            .store
            .0
            .lock()
            .map_err(|_| mqtt::Error::PersistenceError)?;
        *guard = Some(store);
        Ok(())
    }

    fn close(&mut self) -> mqtt::Result<()> {
        let store = match self.store.0.lock() {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        if let Some(store) = store {
            store.flush().map_err(io_err)?;
        }
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let data = if is_received(key) {
            // Exactly sized: a backlog of them can all be in flight at once.
            let len = buffers.iter().map(|b| b.len()).sum::<usize>();
            let mut data = Vec::with_capacity(STAMPED.len() + 8 + len);
            data.extend_from_slice(&STAMPED);
            data.extend_from_slice(&next_stamp().to_le_bytes());
            for b in buffers {
                data.extend_from_slice(b);
            }
            data
        } else {
            buffers.concat()
        };
        if commit::on() && (is_received(key) || is_queued(key)) {
            // Durable before its acknowledgement, with the others of the
            // burst (commit.rs).
            let (disk, pos) = self.with(|s| {
                let pos = s.put_when(key, data, When::Later).map_err(io_err)?;
                Ok((s.durability(), pos))
            })?;
            commit::gate(disk, pos);
            return Ok(());
        }
        self.with(|s| s.put(key, data).map_err(io_err))
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.with(|s| {
            let data = s.live().get(key).ok_or(mqtt::Error::PersistenceError)?;
            let paho = match stamp_of(data) {
                Some(_) => &data[STAMPED.len() + 8..],
                None => &data[..],
            };
            Ok(paho.to_vec())
        })
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
        // No removal is synced at once (`--sync always`), unlike every put:
        // lost alone, none does harm, and the next put's sync (a put comes
        // before anything new goes out) takes it along. An `r-` removal:
        // until it is known durable, the journal keeps naming the record
        // (tombstones, journal.rs), and the next start drops it. A sent
        // record's (`s-`, `sc-`): Paho would resend the PUBREL of a
        // completed exchange (answered with PUBCOMP), or at QoS 1 the last
        // publication once more, never one older than another it sent. A
        // queued command's (`c-`): the PUBLISH record that follows it is
        // synced.
        // With group commit (`--sync always`), an `r-` removal is held in
        // memory until the journal entry of its message is durable
        // (commit.rs): the entry is not synced before the callback returns
        // any more, and a removal on the disk without its entry loses the
        // message.
        if commit::on() && is_received(key) {
            if self.with(|s| Ok(s.hold_removal(key)))? {
                commit::hold(self.store.0.clone());
            }
            return Ok(());
        }
        let when = if is_received(key) {
            When::Lazy
        } else {
            When::Later
        };
        self.with(|s| s.remove_when(key, when).map(drop).map_err(io_err))
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.with(|s| Ok(s.live().keys().cloned().collect()))
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        self.with(|s| s.clear().map_err(io_err))
    }

    /// Answers `false` for a key it holds: the paho-mqtt crate (0.14) hands
    /// this `bool` to Paho C as its `pcontainskey` result, 1 for `true`, but
    /// Paho's contract (MQTTClientPersistence.h) is "0 if the key was found".
    /// Answered the crate's way, a restart took every sent QoS 2 message
    /// whose PUBREL was out (its `sc-` record beside its `s-`) for one whose
    /// PUBREL was not: it removed the `sc-` record and sent the PUBLISH
    /// again, which the broker, done with it, delivered a second time (the
    /// power-cut test of tank-sensor saw the last messages before each cut
    /// delivered twice, some after newer ones). Only Paho calls it, while it
    /// restores a client's records at start.
    fn contains_key(&mut self, key: &str) -> bool {
        !self
            .with(|s| Ok(s.live().contains_key(key)))
            .unwrap_or(false)
    }
}

/// Drops, before Paho reads them, the inbound QoS 2 records of a client
/// whose message the program's journal already holds; returns how many.
///
/// Why: the message callback writes the journal, and Paho removes the
/// record only after it returns. A kill in between left both, and the next
/// start applied the message from the journal and again when the broker's
/// PUBREL found the record: with a message applied just before the kill,
/// one kill repeated it twice. Without the record, Paho answers that PUBREL
/// with PUBCOMP and delivers nothing. The stamp tells the record of that
/// message from a later one that reuses its packet id.
pub(crate) fn forget_journaled(
    path: &Path,
    sync: SyncMode,
    journaled: &[(u16, u64)],
) -> std::io::Result<usize> {
    // Most starts: nothing to look for (opening rewrites the file).
    if journaled.is_empty() || !path.exists() {
        return Ok(0);
    }
    let mut store = Store::open(path.to_path_buf(), sync)?;
    let redundant: Vec<String> = store
        .live()
        .iter()
        .filter(|(key, data)| {
            let id = key
                .strip_prefix("r-")
                .or_else(|| key.strip_prefix("r5-"))
                .and_then(|id| id.parse::<u16>().ok());
            match (id, stamp_of(data)) {
                (Some(id), Some(stamp)) => journaled.contains(&(id, stamp)),
                _ => false,
            }
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in &redundant {
        store.remove(key)?;
    }
    store.flush()?;
    Ok(redundant.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::ClientPersistence;

    const URI: &str = "tcp://localhost:1883";

    #[test]
    fn inbound_and_outgoing_state_survive_a_crash() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path(), SyncMode::Batched, Stamps::default());
        p.open("LEDClient", URI).expect("open");
        p.put("c-1", vec![b"ab", b"c"]).expect("put");
        p.put("r-3", vec![b"in"]).expect("put");
        assert_eq!(p.get("c-1").expect("get"), b"abc");
        // A crash: no close.
        let mut after = StatePersistence::new(root.path(), SyncMode::Batched, Stamps::default());
        after.open("LEDClient", URI).expect("open");
        let mut keys = after.keys().expect("keys");
        keys.sort();
        assert_eq!(keys, ["c-1", "r-3"]);
        // Paho's sense (see `contains_key`): false means "found".
        assert!(!after.contains_key("r-3") && after.contains_key("s-2"));
        assert!(root
            .path()
            .join("LEDClient-tcp___localhost_1883.log")
            .exists());
    }

    #[test]
    fn a_journaled_release_drops_only_its_own_record() {
        let root = tempfile::tempdir().expect("temp dir");
        let stamps = Stamps::default();
        let mut p = StatePersistence::new(root.path(), SyncMode::Never, stamps.clone());
        p.open("LEDClient", URI).expect("open");
        p.put("r-3", vec![b"\x34", b"in"]).expect("put");
        p.put("r5-4", vec![b"\x34", b"v5"]).expect("put");
        p.put("s-5", vec![b"out"]).expect("put");
        assert_eq!(
            p.get("r-3").expect("get"),
            b"\x34in",
            "Paho reads what it wrote"
        );
        let (three, four) = (
            stamps.get(3).expect("stamped"),
            stamps.get(4).expect("stamped"),
        );
        assert_ne!(three, four);
        // Released and journaled, then a crash before the removal.
        let path = root.path().join(file_name("LEDClient", URI, "log"));
        let dropped =
            forget_journaled(&path, SyncMode::Never, &[(3, three), (4, four + 1)]).expect("read");
        assert_eq!(dropped, 1);

        let after_stamps = Stamps::default();
        let mut after = StatePersistence::new(root.path(), SyncMode::Never, after_stamps.clone());
        after.open("LEDClient", URI).expect("open");
        let mut keys = after.keys().expect("keys");
        keys.sort();
        assert_eq!(keys, ["r5-4", "s-5"]);
        assert_eq!(after_stamps.get(4), Some(four));
        assert_eq!(after.get("r5-4").expect("get"), b"\x34v5");
        after.remove("r5-4").expect("remove");
        assert_eq!(after_stamps.get(4), None);
    }

    #[test]
    fn records_written_before_stamps_are_read_as_they_were() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join(file_name("LEDClient", URI, "log"));
        let mut old = Store::open(path.clone(), SyncMode::Never).expect("open");
        old.put("r-9", b"\x34old".to_vec()).expect("put");
        drop(old);
        assert_eq!(
            forget_journaled(&path, SyncMode::Never, &[(9, 0)]).expect("read"),
            0
        );
        let stamps = Stamps::default();
        let mut p = StatePersistence::new(root.path(), SyncMode::Never, stamps.clone());
        p.open("LEDClient", URI).expect("open");
        assert_eq!(p.get("r-9").expect("get"), b"\x34old");
        assert_eq!(stamps.get(9), None);
    }
}
