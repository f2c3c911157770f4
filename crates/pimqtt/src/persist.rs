//! Paho client persistence: what makes in-flight messages survive a stop,
//! a crash and (with `--sync`) a power cut.
//!
//! Every record Paho keeps (outgoing QoS 1/2 state: `c-` queued commands,
//! `s-` sent, `sc-` released, `q-`; inbound QoS 2 state: `r-`, messages
//! received but not yet released by the broker) is appended to one log file
//! per client under `--state-dir` before Paho goes on. Paho writes `r-`
//! before it answers PUBREC and removes it only after the program applied the
//! message, so a process killed at any moment finds, on restart, every
//! message the broker still counts as ours, and the broker's PUBREL brings
//! each to the program. A put or a remove is one `write` system call; the
//! log is emptied whenever nothing is in flight, and compacted if it still
//! grows.
//!
//! `--sync` says when the log reaches the disk (a process crash never needs
//! it: the kernel has the writes; a power cut does): `never` leaves it to
//! the kernel (about 30 s), `batched` syncs whatever was written within
//! [`BATCH`] on a background thread, `always` syncs every record before Paho
//! goes on. The README gives the measured cost of each.
//!
//! Why not Paho's own file persistence: it creates, writes and deletes a
//! file per key, several per message. Draining a 10,000-message backlog took
//! 20 times as long as `mosquitto_sub`, and a controller commanding 1000
//! tanks spent a fifth of its CPU on files (and a Pi's SD card on wear).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use paho_mqtt as mqtt;

/// The log is emptied when nothing is in flight and it is at least this
/// big (emptying it on every message would cost a truncate each time).
const EMPTY_AT: u64 = 64 * 1024;
/// A log this big with something still in flight is rewritten with only
/// the live records.
const COMPACT_AT: u64 = 8 * 1024 * 1024;
/// With `--sync batched`, the most a power cut can lose of the log.
pub const BATCH: Duration = Duration::from_millis(100);

const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// When the persistence log reaches the disk (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// When the kernel gets to it: survives a crash of the program, not a
    /// power cut.
    Never,
    /// Within 100 ms, on a background thread: a power cut loses at most
    /// the last 100 ms of records; the program never waits for the disk.
    #[default]
    Batched,
    /// Every record before going on: nothing is lost to a power cut, at the
    /// price of a disk flush per step of every QoS 1/2 message.
    Always,
}

/// The persistence store of one client.
#[derive(Debug)]
pub struct StatePersistence {
    root: PathBuf,
    sync: SyncMode,
    log: Option<Log>,
    /// The live records, also in the log.
    live: HashMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: Arc<Dirty>,
    len: u64,
}

/// A log file and whether it has writes not yet synced.
#[derive(Debug)]
struct Dirty {
    file: File,
    dirty: AtomicBool,
}

impl StatePersistence {
    pub fn new(root: impl Into<PathBuf>, sync: SyncMode) -> Self {
        StatePersistence {
            root: root.into(),
            sync,
            log: None,
            live: HashMap::new(),
        }
    }

    fn log(&mut self) -> mqtt::Result<&mut Log> {
        self.log.as_mut().ok_or(mqtt::Error::PersistenceError)
    }

    /// Appends one record with a single write.
    fn append(&mut self, op: u8, key: &str, data: &[u8]) -> mqtt::Result<()> {
        let record = encode(op, key, data);
        let sync = self.sync;
        let log = self.log()?;
        (&log.file.file).write_all(&record).map_err(io_err)?;
        log.len += record.len() as u64;
        match sync {
            SyncMode::Never => {}
            SyncMode::Batched => log.file.dirty.store(true, Ordering::Release),
            SyncMode::Always => log.file.file.sync_data().map_err(io_err)?,
        }
        Ok(())
    }

    /// Keeps the log small: empty when nothing is in flight, compacted when
    /// something stays in flight while traffic goes on.
    fn tidy(&mut self) -> mqtt::Result<()> {
        let empty = self.live.is_empty();
        let len = self.log()?.len;
        if empty && len >= EMPTY_AT {
            let log = self.log()?;
            log.file.file.set_len(0).map_err(io_err)?;
            log.len = 0;
        } else if len >= COMPACT_AT {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the log with the live records, written aside and renamed
    /// over it so a crash leaves one or the other, never half of each.
    fn rewrite(&mut self) -> mqtt::Result<()> {
        let path = self.log()?.path.clone();
        let tmp = path.with_extension("tmp");
        let mut body = Vec::new();
        for (key, data) in &self.live {
            body.extend_from_slice(&encode(PUT, key, data));
        }
        {
            let mut f = File::create(&tmp).map_err(io_err)?;
            f.write_all(&body).map_err(io_err)?;
            if self.sync != SyncMode::Never {
                f.sync_data().map_err(io_err)?;
            }
        }
        fs::rename(&tmp, &path).map_err(io_err)?;
        if self.sync != SyncMode::Never {
            sync_dir(&path);
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        self.log = Some(Log {
            path,
            file: self.watched(file),
            len: body.len() as u64,
        });
        Ok(())
    }

    /// Wraps a log file, handing it to the background syncer when batched.
    fn watched(&self, file: File) -> Arc<Dirty> {
        let dirty = Arc::new(Dirty {
            file,
            dirty: AtomicBool::new(false),
        });
        if self.sync == SyncMode::Batched {
            syncer().watch(&dirty);
        }
        dirty
    }
}

/// Makes a rename durable: the directory entry is data too.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The background thread of `--sync batched`: every [`BATCH`], syncs the
/// logs written since the last turn.
struct Syncer {
    logs: Mutex<Vec<Weak<Dirty>>>,
}

fn syncer() -> &'static Syncer {
    static SYNCER: OnceLock<Syncer> = OnceLock::new();
    SYNCER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(|| loop {
                std::thread::sleep(BATCH);
                syncer().turn();
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the log sync thread ({e}): --sync batched syncs nothing");
        }
        Syncer {
            logs: Mutex::new(Vec::new()),
        }
    })
}

impl Syncer {
    fn watch(&self, log: &Arc<Dirty>) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(Arc::downgrade(log));
        }
    }

    fn turn(&self) {
        let live: Vec<Arc<Dirty>> = match self.logs.lock() {
            Ok(mut logs) => {
                logs.retain(|w| w.strong_count() > 0);
                logs.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return,
        };
        for log in live {
            if log.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = log.file.sync_data() {
                    log::warn!("client persistence: cannot sync the log: {e}");
                }
            }
        }
    }
}

/// One log per client and broker, named like Paho's own directories.
fn log_name(client_id: &str, server_uri: &str) -> String {
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
    format!("{name}.log")
}

fn io_err(e: std::io::Error) -> mqtt::Error {
    log::warn!("client persistence: {e}");
    mqtt::Error::PersistenceError
}

/// FNV-1a: enough to tell a record torn by a crash from a whole one.
fn checksum(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for part in parts {
        for b in *part {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// `op, key length (u16), data length (u32), key, data, checksum (u32)`,
/// little-endian.
fn encode(op: u8, key: &str, data: &[u8]) -> Vec<u8> {
    let key = key.as_bytes();
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..usize::from(key_len)];
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(11 + key.len() + data.len());
    out.push(op);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(data);
    out.extend_from_slice(&checksum(&[&[op], key, data]).to_le_bytes());
    out
}

/// Replays a log into the live records; returns how many bytes were whole
/// records (anything after that was torn by a crash and is dropped).
fn replay(bytes: &[u8], live: &mut HashMap<String, Vec<u8>>) -> usize {
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        if rest.len() < 7 {
            return at;
        }
        let op = rest[0];
        let key_len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let data_len = u32::from_le_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
        let end = 7 + key_len + data_len;
        if rest.len() < end + 4 {
            return at;
        }
        let key = &rest[7..7 + key_len];
        let data = &rest[7 + key_len..end];
        let sum = u32::from_le_bytes([rest[end], rest[end + 1], rest[end + 2], rest[end + 3]]);
        if sum != checksum(&[&[op], key, data]) || op > PUT {
            return at;
        }
        let key = String::from_utf8_lossy(key).into_owned();
        if op == PUT {
            live.insert(key, data.to_vec());
        } else {
            live.remove(&key);
        }
        at += end + 4;
    }
}

impl mqtt::ClientPersistence for StatePersistence {
    fn open(&mut self, client_id: &str, server_uri: &str) -> mqtt::Result<()> {
        fs::create_dir_all(&self.root).map_err(io_err)?;
        let path = self.root.join(log_name(client_id, server_uri));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let mut live = HashMap::new();
        let whole = replay(&bytes, &mut live);
        if whole < bytes.len() {
            log::warn!(
                "client persistence: dropped {} bytes torn by a crash at the end of {}",
                bytes.len() - whole,
                path.display()
            );
        }
        self.live = live;
        self.log = Some(Log {
            path,
            file: self.watched(file),
            len: bytes.len() as u64,
        });
        // Start from the live records only.
        self.rewrite()
    }

    fn close(&mut self) -> mqtt::Result<()> {
        if let Some(log) = &self.log {
            if self.sync != SyncMode::Never {
                log.file.file.sync_data().map_err(io_err)?;
            }
        }
        self.log = None;
        self.live.clear();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let data = buffers.concat();
        self.append(PUT, key, &data)?;
        self.live.insert(key.to_string(), data);
        Ok(())
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        self.live
            .get(key)
            .cloned()
            .ok_or(mqtt::Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        // Paho removes every key in all its forms (v3 and v5, sent and
        // released) whether it exists or not: only real ones cost a write.
        if self.live.remove(key).is_some() {
            self.append(REMOVE, key, &[])?;
            self.tidy()?;
        }
        Ok(())
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.log()?;
        Ok(self.live.keys().cloned().collect())
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        self.live.clear();
        let log = self.log()?;
        log.file.file.set_len(0).map_err(io_err)?;
        log.len = 0;
        Ok(())
    }

    fn contains_key(&mut self, key: &str) -> bool {
        self.live.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::ClientPersistence;

    const URI: &str = "tcp://localhost:1883";

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn every_record_survives_a_crash() {
        for sync in [SyncMode::Never, SyncMode::Batched, SyncMode::Always] {
            let root = tempfile::tempdir().expect("temp dir");
            let mut p = StatePersistence::new(root.path(), sync);
            p.open("LEDClient", URI).expect("open");
            p.put("c-1", vec![b"ab", b"c"]).expect("put");
            p.put("s-2", vec![b"sent"]).expect("put");
            p.put("r-3", vec![b"in"]).expect("put");
            p.remove("s-2").expect("remove");
            p.remove("s5-2").expect("remove of a key that never was");
            assert_eq!(p.get("c-1").expect("get"), b"abc");
            assert_eq!(sorted(p.keys().expect("keys")), ["c-1", "r-3"]);

            // A crash: no close. Outgoing and inbound state are both back.
            let mut after_crash = StatePersistence::new(root.path(), sync);
            after_crash.open("LEDClient", URI).expect("open");
            assert_eq!(sorted(after_crash.keys().expect("keys")), ["c-1", "r-3"]);
            assert_eq!(after_crash.get("r-3").expect("get"), b"in");

            // Released inbound state is gone after the next crash.
            after_crash.remove("r-3").expect("remove");
            after_crash.close().expect("close");
            let mut again = StatePersistence::new(root.path(), sync);
            again.open("LEDClient", URI).expect("open");
            assert_eq!(again.keys().expect("keys"), ["c-1"]);
            assert!(again.contains_key("c-1") && !again.contains_key("r-3"));
        }
    }

    #[test]
    fn a_torn_record_at_the_end_is_dropped() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path(), SyncMode::Never);
        p.open("c", URI).expect("open");
        p.put("c-1", vec![b"whole"]).expect("put");
        p.put("c-2", vec![b"torn by a crash"]).expect("put");
        let path = root.path().join(log_name("c", URI));
        let len = fs::metadata(&path).expect("log").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("log")
            .set_len(len - 3)
            .expect("cut");

        let mut after = StatePersistence::new(root.path(), SyncMode::Never);
        after.open("c", URI).expect("open");
        assert_eq!(after.keys().expect("keys"), ["c-1"]);
    }

    #[test]
    fn the_log_is_emptied_when_nothing_is_in_flight() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path(), SyncMode::Batched);
        p.open("c", URI).expect("open");
        let payload = vec![7u8; 1000];
        for i in 0..200 {
            let key = format!("r-{i}");
            p.put(&key, vec![&payload]).expect("put");
            p.remove(&key).expect("remove");
        }
        let len = fs::metadata(root.path().join(log_name("c", URI)))
            .expect("log")
            .len();
        assert!(len < EMPTY_AT, "log of {len} bytes");
    }
}
