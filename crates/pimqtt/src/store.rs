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
//!
//! Power-cut testing: with `PIMQTT_POWERCUT_TRACE=<file>` in the
//! environment, every point at which something became durable (a file
//! synced up to a length, a directory entry synced, a file about to be
//! replaced or truncated) is appended to that file, one `write` a line, so it
//! survives `kill -9`; the testkit's `powercut` module then turns the state
//! directory into what a power cut at that moment would have left (see
//! [`trace`]). Unset, it costs one branch per sync.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Held while syncing and while truncating, so a traced sync names the
    /// length it covered.
    lock: Mutex<()>,
}

impl Dirty {
    /// Syncs the file's data (and its length).
    fn sync(&self) -> io::Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let len = trace::on()
            .then(|| self.file.metadata().map(|m| m.len()).ok())
            .flatten();
        self.file.sync_data()?;
        count_sync();
        if let Some(len) = len {
            trace::durable(&self.file, len);
        }
        Ok(())
    }

    /// Empties the file (a change that needs a sync like any write).
    fn truncate(&self, path: &Path) -> io::Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        trace::before_truncating(&self.file, path);
        self.file.set_len(0)
    }
}

/// State-file system calls since the start: syncs (files and directories)
/// and bytes written, for the benchmarks (`store_stats`).
static SYNCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count_sync() {
    SYNCS.fetch_add(1, Ordering::Relaxed);
}

/// (syncs, bytes written) to the state files since the process started.
pub fn store_stats() -> (u64, u64) {
    (
        SYNCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// With `PIMQTT_STORE_STATS=<file>`, writes [`store_stats`] there
/// (`syncs N` and `bytes N` lines): a clean close calls it, for
/// `scripts/bench`.
pub(crate) fn report_stats() {
    if let Some(path) = std::env::var_os("PIMQTT_STORE_STATS") {
        let (syncs, bytes) = store_stats();
        if let Err(e) = fs::write(&path, format!("syncs {syncs}\nbytes {bytes}\n")) {
            log::warn!("cannot write {}: {e}", Path::new(&path).display());
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and replays it.
    pub(crate) fn open(path: PathBuf, sync: SyncMode) -> io::Result<Store> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let existed = trace::on() && path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if trace::on() && !existed {
            trace::created(&file, &path);
        }
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
        self.file.truncate(&self.path)?;
        self.len = 0;
        Ok(())
    }

    /// Whatever the mode, what was written is on the disk when this returns
    /// (a clean close), unless the mode is `never`.
    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.sync != SyncMode::Never {
            self.file.sync()?;
        }
        Ok(())
    }

    /// Appends one record with a single write.
    fn append(&mut self, op: u8, key: &str, data: &[u8]) -> io::Result<()> {
        let record = encode(op, key, data);
        (&self.file.file).write_all(&record)?;
        BYTES.fetch_add(record.len() as u64, Ordering::Relaxed);
        self.len += record.len() as u64;
        match self.sync {
            SyncMode::Never => {}
            SyncMode::Batched => self.file.dirty.store(true, Ordering::Release),
            SyncMode::Always => self.file.sync()?,
        }
        Ok(())
    }

    /// Keeps the file small: empty when nothing is live, compacted when
    /// something stays live while traffic goes on.
    fn tidy(&mut self) -> io::Result<()> {
        if self.live.is_empty() && self.len >= EMPTY_AT {
            self.file.truncate(&self.path)?;
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
            trace::created(&f, &tmp);
            f.write_all(&body)?;
            BYTES.fetch_add(body.len() as u64, Ordering::Relaxed);
            if self.sync != SyncMode::Never {
                f.sync_data()?;
                count_sync();
                trace::durable(&f, body.len() as u64);
            }
        }
        let kept = trace::before_replacing(&self.path);
        fs::rename(&tmp, &self.path)?;
        if self.sync != SyncMode::Never {
            sync_dir(&self.path);
            trace::entry(&self.path, kept);
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
        lock: Mutex::new(()),
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
            count_sync();
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
                if let Err(e) = log.sync() {
                    log::warn!("cannot sync a state file: {e}");
                }
            }
        }
    }
}

/// The power-cut trace (`PIMQTT_POWERCUT_TRACE`): what a power cut at any
/// moment would leave of the state files, written down as it happens.
///
/// One line per event, each one `write` to a file opened `O_APPEND` (so
/// whole lines survive `kill -9`), the path last:
///
/// - `create INO PATH`: a new, empty file; none of it is durable yet, nor
///   its name.
/// - `durable INO LEN`: the file's first `LEN` bytes are on the disk.
/// - `entry INO PATH`: `PATH` names that file on the disk (its directory was
///   synced after a rename).
/// - `link INO PATH`: before a rename over it, the file being replaced is
///   kept under `PATH` (a hard link) until the rename is durable.
/// - `saved INO PATH`: before an in-place truncation, the file's content was
///   copied to `PATH`; until the next `durable INO`, a power cut brings the
///   old content back (as far as it was durable).
///
/// The testkit's `powercut` module reads it after killing the program.
pub(crate) mod trace {
    use std::collections::HashMap;
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    fn file() -> Option<&'static File> {
        #[cfg(test)]
        if let Some(f) = TEST.with(std::cell::Cell::get) {
            return Some(f);
        }
        static TRACE: OnceLock<Option<File>> = OnceLock::new();
        TRACE
            .get_or_init(|| {
                let path = std::env::var_os("PIMQTT_POWERCUT_TRACE")?;
                OpenOptions::new().create(true).append(true).open(path).ok()
            })
            .as_ref()
    }

    // Unit tests trace the stores of their own thread only (tests run side
    // by side in one process).
    #[cfg(test)]
    thread_local! {
        static TEST: std::cell::Cell<Option<&'static File>> = const { std::cell::Cell::new(None) };
    }

    /// Traces this thread's stores to `path` (unit tests).
    #[cfg(test)]
    pub(crate) fn this_thread_to(path: &Path) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("trace file");
        TEST.with(|t| t.set(Some(Box::leak(Box::new(f)))));
    }

    /// Whether the trace is on.
    pub(crate) fn on() -> bool {
        file().is_some()
    }

    fn line(text: String) {
        if let Some(mut f) = file() {
            let _ = f.write_all(text.as_bytes());
        }
    }

    fn ino(file: &File) -> Option<u64> {
        file.metadata().ok().map(|m| m.ino())
    }

    /// Copies kept for `saved` lines, by inode: obsolete once it is synced.
    fn saved() -> &'static Mutex<HashMap<u64, Vec<PathBuf>>> {
        static SAVED: OnceLock<Mutex<HashMap<u64, Vec<PathBuf>>>> = OnceLock::new();
        SAVED.get_or_init(Mutex::default)
    }

    pub(crate) fn created(file: &File, path: &Path) {
        if let (true, Some(ino)) = (on(), ino(file)) {
            line(format!("create {ino} {}\n", path.display()));
        }
    }

    pub(crate) fn durable(file: &File, len: u64) {
        if let (true, Some(ino)) = (on(), ino(file)) {
            line(format!("durable {ino} {len}\n"));
            let copies = saved()
                .lock()
                .map(|mut s| s.remove(&ino))
                .unwrap_or_default();
            for copy in copies.unwrap_or_default() {
                let _ = fs::remove_file(copy);
            }
        }
    }

    pub(crate) fn before_truncating(file: &File, path: &Path) {
        static N: AtomicU64 = AtomicU64::new(0);
        let Some(ino) = on().then(|| ino(file)).flatten() else {
            return;
        };
        let n = N.fetch_add(1, Ordering::Relaxed);
        let copy = PathBuf::from(format!(
            "{}.powercut-saved-{}-{n}",
            path.display(),
            std::process::id()
        ));
        if fs::copy(path, &copy).is_ok() {
            line(format!("saved {ino} {}\n", copy.display()));
            if let Ok(mut s) = saved().lock() {
                s.entry(ino).or_default().push(copy);
            }
        }
    }

    /// Keeps the file at `path` (if any) under another name until the
    /// rename over it is durable; returns that name.
    pub(crate) fn before_replacing(path: &Path) -> Option<PathBuf> {
        if !on() {
            return None;
        }
        let ino = fs::metadata(path).ok()?.ino();
        let link = PathBuf::from(format!("{}.powercut-prev-{ino}", path.display()));
        let _ = fs::remove_file(&link);
        fs::hard_link(path, &link).ok()?;
        line(format!("link {ino} {}\n", link.display()));
        Some(link)
    }

    /// `path`'s directory entry is durable.
    pub(crate) fn entry(path: &Path, kept: Option<PathBuf>) {
        if !on() {
            return;
        }
        if let Ok(m) = fs::metadata(path) {
            line(format!("entry {} {}\n", m.ino(), path.display()));
        }
        if let Some(link) = kept {
            let _ = fs::remove_file(link);
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

    /// A traced temp dir for power-cut tests: (root, state dir, trace).
    fn traced() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().expect("temp dir");
        let state = root.path().join("state");
        fs::create_dir_all(&state).expect("state dir");
        let trace = root.path().join("trace");
        trace::this_thread_to(&trace);
        (root, state, trace)
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_only() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        s.put("c-1", b"synced".to_vec()).expect("put");
        s.put("r-2", b"synced too".to_vec()).expect("put");
        // From here on, written but not synced.
        s.sync = SyncMode::Never;
        s.put("c-3", b"lost".to_vec()).expect("put");
        s.remove("c-1").expect("remove");
        drop(s); // killed
        let cut = pimqtt_testkit::powercut::apply(&state, &trace, None);
        assert!(cut.bytes_dropped > 0, "{cut:?}");
        let after = Store::open(path, SyncMode::Always).expect("open");
        assert_eq!(sorted(&after), ["c-1", "r-2"]);
    }

    #[test]
    fn a_file_never_synced_is_gone_after_a_power_cut() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        s.put("c-1", b"synced".to_vec()).expect("put");
        let other = state.join("t.log");
        let f = File::create(&other).expect("create");
        trace::created(&f, &other);
        (&f).write_all(b"never synced").expect("write");
        let cut = pimqtt_testkit::powercut::apply(&state, &trace, None);
        assert_eq!(cut.files_removed, 1, "{cut:?}");
        assert!(!other.exists() && path.exists());
    }

    #[test]
    fn a_rename_whose_directory_was_not_synced_is_undone() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        s.put("c-1", b"old".to_vec()).expect("put");
        // Replaced by a synced file, but the directory is not synced.
        let tmp = state.join("s.tmp");
        let mut f = File::create(&tmp).expect("create");
        trace::created(&f, &tmp);
        let record = encode(PUT, "c-9", b"new");
        f.write_all(&record).expect("write");
        f.sync_data().expect("sync");
        trace::durable(&f, record.len() as u64);
        let kept = trace::before_replacing(&path);
        assert!(kept.is_some());
        fs::rename(&tmp, &path).expect("rename");
        drop(s);
        let cut = pimqtt_testkit::powercut::apply(&state, &trace, None);
        assert_eq!(cut.renames_undone, 1, "{cut:?}");
        let after = Store::open(path, SyncMode::Always).expect("open");
        assert_eq!(sorted(&after), ["c-1"]);
        let leftovers: Vec<_> = fs::read_dir(&state)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().contains("powercut"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_truncation_not_synced_is_undone() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        s.put("r-1", b"kept".to_vec()).expect("put");
        s.sync = SyncMode::Never;
        s.clear().expect("clear");
        s.put("r-2", b"after".to_vec()).expect("put");
        drop(s);
        let cut = pimqtt_testkit::powercut::apply(&state, &trace, None);
        assert_eq!(cut.truncations_undone, 1, "{cut:?}");
        let after = Store::open(path, SyncMode::Always).expect("open");
        assert_eq!(sorted(&after), ["r-1"]);
    }

    #[test]
    fn a_seeded_cut_keeps_a_prefix_of_what_was_written() {
        for seed in 1..40 {
            let (_root, state, trace) = traced();
            let path = state.join("s.log");
            let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
            s.put("k-0", b"synced".to_vec()).expect("put");
            s.sync = SyncMode::Never;
            for i in 1..6 {
                s.put(&format!("k-{i}"), vec![b'x'; 40]).expect("put");
            }
            drop(s);
            let mut dice = pimqtt_testkit::powercut::Seeded::new(seed);
            pimqtt_testkit::powercut::apply(&state, &trace, Some(&mut dice));
            let after = Store::open(path, SyncMode::Always).expect("open");
            let n = after.live().len();
            let want: Vec<String> = (0..n).map(|i| format!("k-{i}")).collect();
            assert_eq!(sorted(&after), want, "seed {seed}");
        }
    }
}
