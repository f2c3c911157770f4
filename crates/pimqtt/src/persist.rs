//! Paho client persistence: what makes in-flight messages survive a restart
//! of the client.
//!
//! Outgoing QoS 1/2 state (Paho's keys `c-` for queued commands, `s-` sent,
//! `sc-` released, `q-`) is appended to one log file per client under
//! `--state-dir` before Paho goes on, so a publication accepted from the
//! program is delivered even if the process is killed before the broker
//! acknowledged it (SPEC's requirement). A put or a remove is one `write`
//! system call; the log is emptied whenever nothing is in flight, and
//! compacted if it still grows.
//!
//! Inbound QoS 2 state (`r-`: messages received but not yet released by the
//! broker) is kept in memory and written to the log when the client is
//! closed.
//!
//! Why not Paho's own file persistence: it creates, writes and deletes a
//! file per key, several per message. Draining a 10,000-message backlog took
//! 20 times as long as `mosquitto_sub`, and a controller commanding 1000
//! tanks spent a fifth of its CPU on files (and a Pi's SD card on wear).
//! The price of keeping inbound state in memory: a *crash* (not a clean stop)
//! loses the few messages (at most Mosquitto's in-flight window, 20) that
//! were acknowledged with PUBREC but not yet released. Like Paho's, the log
//! is not fsync'ed: it survives the process dying, not the power failing.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

use paho_mqtt as mqtt;

/// The log is emptied when nothing is in flight and it is at least this
/// big (emptying it on every message would cost a truncate each time).
const EMPTY_AT: u64 = 64 * 1024;
/// A log this big with something still in flight is rewritten with only
/// the live records.
const COMPACT_AT: u64 = 8 * 1024 * 1024;

const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// The persistence store of one client.
#[derive(Debug)]
pub struct StatePersistence {
    root: PathBuf,
    log: Option<Log>,
    /// Live outgoing records, also in the log.
    outgoing: HashMap<String, Vec<u8>>,
    /// Inbound QoS 2 state, in memory until close.
    inbound: HashMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    len: u64,
}

impl StatePersistence {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StatePersistence {
            root: root.into(),
            log: None,
            outgoing: HashMap::new(),
            inbound: HashMap::new(),
        }
    }

    fn log(&mut self) -> mqtt::Result<&mut Log> {
        self.log.as_mut().ok_or(mqtt::Error::PersistenceError)
    }

    /// Appends one record with a single write.
    fn append(&mut self, op: u8, key: &str, data: &[u8]) -> mqtt::Result<()> {
        let record = encode(op, key, data);
        let log = self.log()?;
        log.file.write_all(&record).map_err(io_err)?;
        log.len += record.len() as u64;
        Ok(())
    }

    /// Keeps the log small: empty when nothing is in flight, compacted when
    /// something stays in flight while traffic goes on.
    fn tidy(&mut self) -> mqtt::Result<()> {
        let empty = self.outgoing.is_empty();
        let len = self.log()?.len;
        if empty && len >= EMPTY_AT {
            let log = self.log()?;
            log.file.set_len(0).map_err(io_err)?;
            log.len = 0;
        } else if len >= COMPACT_AT {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the log with the live records (outgoing, plus inbound when
    /// closing), written aside and renamed over it so a crash leaves one or
    /// the other, never half of each.
    fn rewrite(&mut self) -> mqtt::Result<()> {
        let path = self.log()?.path.clone();
        let tmp = path.with_extension("tmp");
        let mut body = Vec::new();
        for (key, data) in &self.outgoing {
            body.extend_from_slice(&encode(PUT, key, data));
        }
        fs::write(&tmp, &body).map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        self.log = Some(Log {
            path,
            file,
            len: body.len() as u64,
        });
        Ok(())
    }
}

fn is_inbound(key: &str) -> bool {
    key.starts_with("r-") || key.starts_with("r5-")
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
        self.outgoing.clear();
        self.inbound.clear();
        for (key, data) in live {
            if is_inbound(&key) {
                self.inbound.insert(key, data);
            } else {
                self.outgoing.insert(key, data);
            }
        }
        self.log = Some(Log {
            path,
            file,
            len: bytes.len() as u64,
        });
        // Start from the live records only (inbound state now lives in
        // memory again until the next close).
        self.rewrite()
    }

    fn close(&mut self) -> mqtt::Result<()> {
        if self.log.is_some() {
            let inbound: Vec<(String, Vec<u8>)> = self.inbound.drain().collect();
            for (key, data) in inbound {
                self.append(PUT, &key, &data)?;
            }
        }
        self.log = None;
        self.outgoing.clear();
        Ok(())
    }

    fn put(&mut self, key: &str, buffers: Vec<&[u8]>) -> mqtt::Result<()> {
        let data = buffers.concat();
        if is_inbound(key) {
            self.inbound.insert(key.to_string(), data);
            return Ok(());
        }
        self.append(PUT, key, &data)?;
        self.outgoing.insert(key.to_string(), data);
        Ok(())
    }

    fn get(&mut self, key: &str) -> mqtt::Result<Vec<u8>> {
        let map = if is_inbound(key) {
            &self.inbound
        } else {
            &self.outgoing
        };
        map.get(key).cloned().ok_or(mqtt::Error::PersistenceError)
    }

    fn remove(&mut self, key: &str) -> mqtt::Result<()> {
        if is_inbound(key) {
            self.inbound.remove(key);
            return Ok(());
        }
        // Paho removes every key in all its forms (v3 and v5, sent and
        // released) whether it exists or not: only real ones cost a write.
        if self.outgoing.remove(key).is_some() {
            self.append(REMOVE, key, &[])?;
            self.tidy()?;
        }
        Ok(())
    }

    fn keys(&mut self) -> mqtt::Result<Vec<String>> {
        self.log()?;
        Ok(self
            .inbound
            .keys()
            .chain(self.outgoing.keys())
            .cloned()
            .collect())
    }

    fn clear(&mut self) -> mqtt::Result<()> {
        self.inbound.clear();
        self.outgoing.clear();
        let log = self.log()?;
        log.file.set_len(0).map_err(io_err)?;
        log.len = 0;
        Ok(())
    }

    fn contains_key(&mut self, key: &str) -> bool {
        if is_inbound(key) {
            self.inbound.contains_key(key)
        } else {
            self.outgoing.contains_key(key)
        }
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
    fn outgoing_survives_a_crash_inbound_survives_a_close() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path());
        p.open("LEDClient", URI).expect("open");
        p.put("c-1", vec![b"ab", b"c"]).expect("put");
        p.put("s-2", vec![b"sent"]).expect("put");
        p.put("r-3", vec![b"in"]).expect("put");
        p.remove("s-2").expect("remove");
        p.remove("s5-2").expect("remove of a key that never was");
        assert_eq!(p.get("c-1").expect("get"), b"abc");
        assert_eq!(sorted(p.keys().expect("keys")), ["c-1", "r-3"]);

        // A crash: no close. Outgoing state is back, inbound is not.
        let mut after_crash = StatePersistence::new(root.path());
        after_crash.open("LEDClient", URI).expect("open");
        assert_eq!(sorted(after_crash.keys().expect("keys")), ["c-1"]);
        assert_eq!(after_crash.get("c-1").expect("get"), b"abc");

        // A clean close keeps the inbound state too.
        after_crash.put("r-4", vec![b"x"]).expect("put");
        after_crash.close().expect("close");
        let mut again = StatePersistence::new(root.path());
        again.open("LEDClient", URI).expect("open");
        assert_eq!(sorted(again.keys().expect("keys")), ["c-1", "r-4"]);
        assert!(again.contains_key("r-4") && !again.contains_key("s-2"));
    }

    #[test]
    fn a_torn_record_at_the_end_is_dropped() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path());
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

        let mut after = StatePersistence::new(root.path());
        after.open("c", URI).expect("open");
        assert_eq!(after.keys().expect("keys"), ["c-1"]);
    }

    #[test]
    fn the_log_is_emptied_when_nothing_is_in_flight() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut p = StatePersistence::new(root.path());
        p.open("c", URI).expect("open");
        let payload = vec![7u8; 1000];
        for i in 0..200 {
            let key = format!("s-{i}");
            p.put(&key, vec![&payload]).expect("put");
            p.remove(&key).expect("remove");
        }
        let len = fs::metadata(root.path().join(log_name("c", URI)))
            .expect("log")
            .len();
        assert!(len < EMPTY_AT, "log of {len} bytes");
    }
}
