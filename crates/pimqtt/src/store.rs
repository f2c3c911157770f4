//! An append-only store of keyed records on disk: what both Paho's client
//! persistence (`persist.rs`) and the program's inbox journal
//! (`journal.rs`) are made of.
//!
//! A put or a remove is one `write` system call of one checksummed record,
//! so a process killed at any moment leaves whole records and at most one
//! torn one at the end, which the next open drops. The file is emptied
//! whenever nothing is live, and compacted if it still grows.
//!
//! `--sync` says when records reach the disk (a process crash never needs
//! it: the kernel has the writes; a power cut does): `never` leaves it to the
//! kernel (about 30 s), `batched` syncs whatever was written within [`BATCH`]
//! on a background thread, `always` syncs every record before going on.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// The file is emptied when nothing is live and it is at least this big
/// (emptying it on every record would cost a truncate each time).
const EMPTY_AT: u64 = 64 * 1024;
/// A file this big with something still live is rewritten with only the
/// live records.
const COMPACT_AT: u64 = 8 * 1024 * 1024;
/// With `--sync batched`, the most a power cut can lose.
pub const BATCH: Duration = Duration::from_millis(100);

const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// When the state directory's files reach the disk (`--sync`).
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

/// One store: the live records in memory, every change in the file.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    sync: SyncMode,
    file: Arc<Dirty>,
    len: u64,
    live: HashMap<String, Vec<u8>>,
}

/// A file and whether it has writes not yet synced.
#[derive(Debug)]
struct Dirty {
    file: File,
    dirty: AtomicBool,
}

impl Store {
    /// Opens (or creates) the store at `path` and replays it.
    pub(crate) fn open(path: PathBuf, sync: SyncMode) -> io::Result<Store> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut live = HashMap::new();
        let whole = replay(&bytes, &mut live);
        if whole < bytes.len() {
            log::warn!(
                "dropped {} bytes torn by a crash at the end of {}",
                bytes.len() - whole,
                path.display()
            );
        }
        let mut store = Store {
            file: watched(file, sync),
            len: bytes.len() as u64,
            path,
            sync,
            live,
        };
        // Start from the live records only.
        store.rewrite()?;
        Ok(store)
    }

    pub(crate) fn live(&self) -> &HashMap<String, Vec<u8>> {
        &self.live
    }

    pub(crate) fn put(&mut self, key: &str, data: Vec<u8>) -> io::Result<()> {
        self.append(PUT, key, &data)?;
        self.live.insert(key.to_string(), data);
        Ok(())
    }

    /// Removes a live record; a key that is not live costs nothing.
    pub(crate) fn remove(&mut self, key: &str) -> io::Result<()> {
        if self.live.remove(key).is_some() {
            self.append(REMOVE, key, &[])?;
            self.tidy()?;
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.live.clear();
        self.file.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    /// Whatever the mode, what was written is on the disk when this returns
    /// (a clean close), unless the mode is `never`.
    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.sync != SyncMode::Never {
            self.file.file.sync_data()?;
        }
        Ok(())
    }

    /// Appends one record with a single write.
    fn append(&mut self, op: u8, key: &str, data: &[u8]) -> io::Result<()> {
        let record = encode(op, key, data);
        (&self.file.file).write_all(&record)?;
        self.len += record.len() as u64;
        match self.sync {
            SyncMode::Never => {}
            SyncMode::Batched => self.file.dirty.store(true, Ordering::Release),
            SyncMode::Always => self.file.file.sync_data()?,
        }
        Ok(())
    }

    /// Keeps the file small: empty when nothing is live, compacted when
    /// something stays live while traffic goes on.
    fn tidy(&mut self) -> io::Result<()> {
        if self.live.is_empty() && self.len >= EMPTY_AT {
            self.file.file.set_len(0)?;
            self.len = 0;
        } else if self.len >= COMPACT_AT {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the file with the live records, written aside and renamed
    /// over it so a crash leaves one or the other, never half of each.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut body = Vec::new();
        for (key, data) in &self.live {
            body.extend_from_slice(&encode(PUT, key, data));
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            if self.sync != SyncMode::Never {
                f.sync_data()?;
            }
        }
        fs::rename(&tmp, &self.path)?;
        if self.sync != SyncMode::Never {
            sync_dir(&self.path);
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.file = watched(file, self.sync);
        self.len = body.len() as u64;
        Ok(())
    }
}

/// Wraps a file, handing it to the background syncer when batched.
fn watched(file: File, sync: SyncMode) -> Arc<Dirty> {
    let dirty = Arc::new(Dirty {
        file,
        dirty: AtomicBool::new(false),
    });
    if sync == SyncMode::Batched {
        syncer().watch(&dirty);
    }
    dirty
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
                    log::warn!("cannot sync a state file: {e}");
                }
            }
        }
    }
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
pub(crate) fn replay(bytes: &[u8], live: &mut HashMap<String, Vec<u8>>) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store.live().keys().cloned().collect();
        v.sort();
        v
    }

    #[test]
    fn every_record_survives_a_crash() {
        for sync in [SyncMode::Never, SyncMode::Batched, SyncMode::Always] {
            let root = tempfile::tempdir().expect("temp dir");
            let path = root.path().join("s.log");
            let mut s = Store::open(path.clone(), sync).expect("open");
            s.put("c-1", b"abc".to_vec()).expect("put");
            s.put("s-2", b"sent".to_vec()).expect("put");
            s.put("r-3", b"in".to_vec()).expect("put");
            s.remove("s-2").expect("remove");
            s.remove("s5-2").expect("remove of a key that never was");
            assert_eq!(sorted(&s), ["c-1", "r-3"]);
            // A crash: no close.
            let mut again = Store::open(path.clone(), sync).expect("open");
            assert_eq!(sorted(&again), ["c-1", "r-3"]);
            assert_eq!(again.live()["r-3"], b"in");
            again.remove("r-3").expect("remove");
            again.flush().expect("flush");
            let last = Store::open(path, sync).expect("open");
            assert_eq!(sorted(&last), ["c-1"]);
        }
    }

    #[test]
    fn a_torn_record_at_the_end_is_dropped() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Never).expect("open");
        s.put("c-1", b"whole".to_vec()).expect("put");
        s.put("c-2", b"torn by a crash".to_vec()).expect("put");
        let len = fs::metadata(&path).expect("file").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("file")
            .set_len(len - 3)
            .expect("cut");
        let after = Store::open(path, SyncMode::Never).expect("open");
        assert_eq!(sorted(&after), ["c-1"]);
    }

    #[test]
    fn the_file_is_emptied_when_nothing_is_live() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Batched).expect("open");
        for i in 0..200 {
            let key = format!("r-{i}");
            s.put(&key, vec![7u8; 1000]).expect("put");
            s.remove(&key).expect("remove");
        }
        let len = fs::metadata(path).expect("file").len();
        assert!(len < EMPTY_AT, "file of {len} bytes");
    }
}
