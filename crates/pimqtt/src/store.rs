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
//! it: the kernel has the writes; a power cut does); see [`SyncMode`]. In
//! the default mode, `always`, each write says when it must be on the disk
//! ([`When`]): before going on (what is acknowledged to the broker next),
//! or later, when something that depends on it is about to become durable.
//! One sync covers everything written to the file before it, by any thread
//! (group commit), and a sync is skipped when an earlier one already covered
//! the write. Renames (the start-up rewrite and compaction) are synced, file
//! and directory, in every mode.
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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// The file is emptied when nothing is live and it is at least this big
/// (emptying it on every record would cost a truncate each time).
const EMPTY_AT: u64 = 64 * 1024;
/// A file this big with something still live is rewritten with only the
/// live records.
const COMPACT_AT: u64 = 8 * 1024 * 1024;
/// A file this big whose live records take less than a quarter of this is
/// rewritten too: the journal is rarely empty (it keeps its newest
/// tombstone), and a start reads the whole file. (Not when much is live: a
/// rewrite holds the live records in memory once more.)
const COMPACT_SPARSE_AT: u64 = 64 * 1024;
/// With `--sync batched`, how often the background thread syncs.
pub const BATCH: Duration = Duration::from_millis(100);

const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// When the state directory's files reach the disk (`--sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SyncMode {
    /// Nothing is acknowledged before it is on the disk (the default): a
    /// power cut loses nothing and repeats at most the one message being
    /// applied, never an older one after a newer. About one disk sync per
    /// message received.
    // Paho's acknowledgements of a burst share one commit (commit.rs); the
    // "applied" marks cannot (a drain measured 1.02 to 1.15 syncs a message:
    // docs/reliability.md, "--sync").
    #[default]
    Always,
    /// Opt-in, faster: synced every 100 ms on a background thread, the
    /// program never waits for the disk. A power cut can lose the messages
    /// received in the last 100 ms and apply again, out of order, messages
    /// already applied (measured: docs/reliability.md, "--sync").
    Batched,
    /// Opt-in: when the kernel gets to it (about 30 s). Survives a crash of
    /// the program, not a power cut (it loses what batched loses, and more).
    Never,
}

/// When a write must be on the disk (with `--sync always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// Before the call returns: what comes next acknowledges it.
    Now,
    /// With the file's next sync, or when [`settle_lazy`] is called: a
    /// removal whose loss alone is harmless, but which must be on the disk
    /// before something else can be (Paho's `r-` removals, before the
    /// journal forgets the message: journal.rs).
    Lazy,
    /// With the file's next sync, or when the caller asks with
    /// [`Durability::to`] and the position returned (the journal's
    /// "applied" marks), or never (what is harmless to lose).
    Later,
}

/// One store: the live records in memory, every change in the file.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    sync: SyncMode,
    file: Arc<Log>,
    live: HashMap<String, Vec<u8>>,
    /// What the live records take in the file.
    live_bytes: u64,
    /// Records removed in memory only, until [`Store::write_held`] writes
    /// their removals ([`Store::hold_removal`]); a rewrite keeps them.
    held: Vec<(String, Vec<u8>)>,
}

/// An open store file, and how much of what was written to it is on the
/// disk. Positions count bytes written (and truncations, one each); they
/// only grow, and a file that replaces another (a rewrite) goes on from
/// the old one's.
#[derive(Debug)]
struct Log {
    file: File,
    /// The position after the last completed write.
    written: AtomicU64,
    /// The position the last completed sync covered.
    synced: AtomicU64,
    /// The file's length now.
    len: AtomicU64,
    /// One sync at a time (the others wait and usually find their write
    /// covered); a truncation holds it too.
    lock: Mutex<()>,
    /// Listed for [`settle_lazy`].
    lazy: AtomicBool,
}

/// A handle on a store's file for syncing outside the store's own lock.
#[derive(Debug, Clone)]
pub(crate) struct Durability {
    log: Arc<Log>,
    sync: SyncMode,
}

impl Durability {
    /// Whether everything written up to `pos` is on the disk, or need not
    /// be made so by the caller (other modes).
    #[cfg(test)]
    pub(crate) fn covers(&self, pos: u64) -> bool {
        self.sync != SyncMode::Always || self.log.synced.load(Ordering::Acquire) >= pos
    }

    /// Whether both are of the same open file.
    pub(crate) fn same_file(&self, other: &Durability) -> bool {
        Arc::ptr_eq(&self.log, &other.log)
    }

    /// With `--sync always`, returns once everything written up to `pos`
    /// is on the disk (at once if an earlier sync covered it).
    pub(crate) fn to(&self, pos: u64) -> io::Result<()> {
        match self.sync {
            SyncMode::Always => self.log.durable_to(pos),
            _ => Ok(()),
        }
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// A file whose `len` bytes are durable, positions starting at `start`.
    fn new(file: File, len: u64, start: u64) -> Log {
        Log {
            file,
            written: AtomicU64::new(start),
            synced: AtomicU64::new(start),
            len: AtomicU64::new(len),
            lock: Mutex::new(()),
            lazy: AtomicBool::new(false),
        }
    }

    /// Appends with one write; returns the position after it.
    fn write(&self, bytes: &[u8]) -> io::Result<u64> {
        (&self.file).write_all(bytes)?;
        let n = bytes.len() as u64;
        BYTES.fetch_add(n, Ordering::Relaxed);
        self.len.fetch_add(n, Ordering::AcqRel);
        Ok(self.written.fetch_add(n, Ordering::AcqRel) + n)
    }

    fn dirty(&self) -> bool {
        self.synced.load(Ordering::Acquire) < self.written.load(Ordering::Acquire)
    }

    /// Everything written up to `pos` on the disk.
    fn durable_to(&self, pos: u64) -> io::Result<()> {
        if self.synced.load(Ordering::Acquire) >= pos {
            return Ok(());
        }
        let _one = lock(&self.lock);
        if self.synced.load(Ordering::Acquire) >= pos {
            return Ok(()); // the sync we waited for covered it
        }
        let upto = self.written.load(Ordering::Acquire);
        let len = self.len.load(Ordering::Acquire);
        self.file.sync_data()?;
        count_sync();
        trace::durable(&self.file, len);
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Empties the file; returns the position after it (a change that
    /// needs a sync like any write).
    fn truncate(&self, path: &Path) -> io::Result<u64> {
        let _one = lock(&self.lock);
        trace::before_truncating(&self.file, path);
        self.file.set_len(0)?;
        self.len.store(0, Ordering::Release);
        Ok(self.written.fetch_add(1, Ordering::AcqRel) + 1)
    }
}

/// The files with [`When::Lazy`] writes since [`settle_lazy`] last ran.
fn lazy_logs() -> &'static Mutex<Vec<Weak<Log>>> {
    static LAZY: OnceLock<Mutex<Vec<Weak<Log>>>> = OnceLock::new();
    LAZY.get_or_init(Mutex::default)
}

/// Puts on the disk every [`When::Lazy`] write made so far (a no-op for the
/// files a later sync already covered). The journal calls it before each of
/// its syncs, so that an "applied" mark is never on the disk before the
/// removal of Paho's record of that message (which would let a power cut
/// bring the record back, and the message with it after newer ones).
pub(crate) fn settle_lazy() -> io::Result<()> {
    let logs = {
        let mut list = lazy_logs().lock().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            return Ok(());
        }
        std::mem::take(&mut *list)
    };
    let mut result = Ok(());
    for log in logs.iter().filter_map(Weak::upgrade) {
        log.lazy.store(false, Ordering::Release);
        if let Err(e) = log.durable_to(log.written.load(Ordering::Acquire)) {
            // Listed again: the next settle tries again.
            if !log.lazy.swap(true, Ordering::AcqRel) {
                if let Ok(mut list) = lazy_logs().lock() {
                    list.push(Arc::downgrade(&log));
                }
            }
            result = Err(e);
        }
    }
    result
}

fn list_lazy(log: &Arc<Log>) {
    if !log.lazy.swap(true, Ordering::AcqRel) {
        if let Ok(mut list) = lazy_logs().lock() {
            list.push(Arc::downgrade(log));
        }
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
    (SYNCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
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
        let live_bytes = live.iter().map(|(k, v)| record_len(k, v)).sum();
        let mut store = Store {
            file: watched(file, bytes.len() as u64, 0, sync),
            path,
            sync,
            live,
            live_bytes,
            held: Vec::new(),
        };
        // Start from the live records only.
        store.rewrite()?;
        Ok(store)
    }

    pub(crate) fn live(&self) -> &HashMap<String, Vec<u8>> {
        &self.live
    }

    /// Writes a record, on the disk before this returns (`--sync always`).
    pub(crate) fn put(&mut self, key: &str, data: Vec<u8>) -> io::Result<()> {
        self.put_when(key, data, When::Now).map(drop)
    }

    /// Writes a record; returns the position after it.
    pub(crate) fn put_when(&mut self, key: &str, data: Vec<u8>, when: When) -> io::Result<u64> {
        // A held removal of the key is older than this put: written after
        // it, it would remove the new record.
        self.held.retain(|(k, _)| k != key);
        let pos = self.append(PUT, key, &data, when)?;
        self.live_bytes += record_len(key, &data);
        if let Some(old) = self.live.insert(key.to_string(), data) {
            self.live_bytes -= record_len(key, &old);
        }
        Ok(pos)
    }

    /// Removes a live record, on the disk before this returns; a key that
    /// is not live costs nothing.
    pub(crate) fn remove(&mut self, key: &str) -> io::Result<()> {
        self.remove_when(key, When::Now).map(drop)
    }

    /// Removes a live record; returns the position after it (None: the key
    /// was not live, nothing written).
    pub(crate) fn remove_when(&mut self, key: &str, when: When) -> io::Result<Option<u64>> {
        let Some(old) = self.live.remove(key) else {
            return Ok(None);
        };
        self.live_bytes -= record_len(key, &old);
        let pos = self.append(REMOVE, key, &[], when)?;
        Ok(Some(self.tidy(when)?.unwrap_or(pos)))
    }

    /// Removes a live record from memory only (whether the key is live,
    /// and what it holds, change now); the removal is written by the next
    /// [`Store::write_held`]. For a removal that must not reach the disk
    /// before something else does (commit.rs). Returns whether the key was
    /// live.
    pub(crate) fn hold_removal(&mut self, key: &str) -> bool {
        let Some(old) = self.live.remove(key) else {
            return false;
        };
        self.live_bytes -= record_len(key, &old);
        self.held.push((key.to_string(), old));
        true
    }

    /// Writes the held removals, each [`When`] says.
    pub(crate) fn write_held(&mut self, when: When) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (key, _) in &self.held {
            bytes.extend_from_slice(&encode(REMOVE, key, &[]));
        }
        let pos = self.file.write(&bytes)?;
        self.held.clear();
        self.after(pos, when)?;
        self.tidy(when).map(drop)
    }

    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.held.clear();
        self.live.clear();
        self.live_bytes = 0;
        let pos = self.file.truncate(&self.path)?;
        self.after(pos, When::Now)
    }

    /// For syncing to a position outside whatever lock guards the store.
    pub(crate) fn durability(&self) -> Durability {
        Durability {
            log: self.file.clone(),
            sync: self.sync,
        }
    }

    /// Whatever the mode, what was written is on the disk when this returns
    /// (a clean close), unless the mode is `never`.
    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.sync != SyncMode::Never {
            self.file
                .durable_to(self.file.written.load(Ordering::Acquire))?;
        }
        Ok(())
    }

    /// Appends one record with a single write.
    fn append(&mut self, op: u8, key: &str, data: &[u8], when: When) -> io::Result<u64> {
        let pos = self.file.write(&encode(op, key, data))?;
        self.after(pos, when)?;
        Ok(pos)
    }

    /// What `--sync` asks of a write that ended at `pos`.
    fn after(&self, pos: u64, when: When) -> io::Result<()> {
        match (self.sync, when) {
            (SyncMode::Always, When::Now) => self.file.durable_to(pos),
            (SyncMode::Always, When::Lazy) => {
                list_lazy(&self.file);
                Ok(())
            }
            // Later: the caller's; batched: the background thread's.
            _ => Ok(()),
        }
    }

    /// Keeps the file small: empty when nothing is live, compacted when
    /// something stays live while traffic goes on. Returns the position
    /// after an emptying.
    fn tidy(&mut self, when: When) -> io::Result<Option<u64>> {
        let len = self.file.len.load(Ordering::Acquire);
        if self.live.is_empty() && self.held.is_empty() && len >= EMPTY_AT {
            let pos = self.file.truncate(&self.path)?;
            self.after(pos, when)?;
            return Ok(Some(pos));
        } else if len >= COMPACT_AT
            || (len >= COMPACT_SPARSE_AT && self.live_bytes < COMPACT_SPARSE_AT / 4)
        {
            self.rewrite()?;
        }
        Ok(None)
    }

    /// Replaces the file with the live records, written aside and renamed
    /// over it so a crash leaves one or the other, never half of each.
    /// Synced, file and directory, whatever the mode: the rename must never
    /// be on the disk before what it renames (a power cut would leave an
    /// empty file), and the old file holds records the new one no longer
    /// has a removal for.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut body = Vec::new();
        // Held records too: their removal is not to reach the disk yet.
        for (key, data) in self
            .live
            .iter()
            .chain(self.held.iter().map(|(k, d)| (k, d)))
        {
            body.extend_from_slice(&encode(PUT, key, data));
        }
        {
            let mut f = File::create(&tmp)?;
            trace::created(&f, &tmp);
            f.write_all(&body)?;
            BYTES.fetch_add(body.len() as u64, Ordering::Relaxed);
            f.sync_data()?;
            count_sync();
            trace::durable(&f, body.len() as u64);
        }
        let kept = trace::before_replacing(&self.path);
        fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)?;
        trace::entry(&self.path, kept);
        let file = OpenOptions::new().append(true).open(&self.path)?;
        // Everything in it is durable, and so is every position handed out
        // for the old file: the new one's start after them.
        let start = self.file.written.load(Ordering::Acquire) + 1;
        self.file = watched(file, body.len() as u64, start, self.sync);
        Ok(())
    }
}

/// Wraps a file, handing it to the background syncer when batched.
fn watched(file: File, len: u64, start: u64, sync: SyncMode) -> Arc<Log> {
    let log = Arc::new(Log::new(file, len, start));
    if sync == SyncMode::Batched {
        syncer().watch(&log);
    }
    log
}

/// Makes a rename durable: the directory entry is data too.
fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
        count_sync();
    }
    Ok(())
}

/// The background thread of `--sync batched`: every [`BATCH`], syncs the
/// logs written since the last turn.
struct Syncer {
    logs: Mutex<Vec<Weak<Log>>>,
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
    fn watch(&self, log: &Arc<Log>) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(Arc::downgrade(log));
        }
    }

    fn turn(&self) {
        let live: Vec<Arc<Log>> = match self.logs.lock() {
            Ok(mut logs) => {
                logs.retain(|w| w.strong_count() > 0);
                logs.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return,
        };
        for log in live {
            if log.dirty() {
                if let Err(e) = log.durable_to(log.written.load(Ordering::Acquire)) {
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

/// The length of a record in the file.
fn record_len(key: &str, data: &[u8]) -> u64 {
    (11 + key.len().min(usize::from(u16::MAX)) + data.len()) as u64
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

    #[test]
    fn the_start_up_rewrite_survives_a_power_cut_in_every_mode() {
        for sync in [SyncMode::Never, SyncMode::Batched, SyncMode::Always] {
            let (_root, state, trace) = traced();
            let path = state.join("s.log");
            let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
            s.put("c-1", b"in flight".to_vec()).expect("put");
            drop(s);
            // The next start rewrites the file and renames it into place.
            let again = Store::open(path.clone(), sync).expect("open");
            drop(again);
            let cut = pimqtt_testkit::powercut::apply(&state, &trace, None);
            assert_eq!(cut.renames_undone, 0, "{sync:?}: {cut:?}");
            let after = Store::open(path, SyncMode::Always).expect("open");
            assert_eq!(sorted(&after), ["c-1"], "{sync:?}");
        }
    }

    #[test]
    fn a_lazy_removal_is_durable_after_the_next_sync_or_settle_lazy() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        s.put("r-1", b"a".to_vec()).expect("put");
        s.put("r-2", b"b".to_vec()).expect("put");
        s.remove_when("r-1", When::Lazy).expect("remove");
        // Not yet on the disk...
        let disk = s.durability();
        assert!(!disk.covers(s.file.written.load(Ordering::Acquire)));
        // ...until the next synced write takes it along.
        s.put("r-3", b"c".to_vec()).expect("put");
        s.remove_when("r-2", When::Lazy).expect("remove");
        // (Global: no other unit test makes lazy writes in `always` mode.)
        settle_lazy().expect("settle");
        s.remove_when("r-3", When::Lazy).expect("remove"); // lost
        drop(s);
        pimqtt_testkit::powercut::apply(&state, &trace, None);
        let after = Store::open(path, SyncMode::Always).expect("open");
        assert_eq!(sorted(&after), ["r-3"]);
    }

    #[test]
    fn one_sync_covers_every_earlier_write() {
        let (_root, state, trace) = traced();
        let path = state.join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Always).expect("open");
        let (syncs, _) = store_stats();
        let a = s.put_when("a", b"1".to_vec(), When::Later).expect("put");
        let b = s.put_when("b", b"2".to_vec(), When::Later).expect("put");
        let disk = s.durability();
        assert!(!disk.covers(a));
        disk.to(b).expect("sync");
        assert!(disk.covers(a) && disk.covers(b));
        disk.to(a).expect("covered: no sync");
        // Other tests sync meanwhile: at least one here, and the trace says
        // both are on the disk.
        assert!(store_stats().0 > syncs);
        s.put_when("c", b"3".to_vec(), When::Later).expect("put"); // lost
        drop(s);
        pimqtt_testkit::powercut::apply(&state, &trace, None);
        let after = Store::open(path, SyncMode::Always).expect("open");
        assert_eq!(sorted(&after), ["a", "b"]);
    }

    #[test]
    fn a_file_of_mostly_dead_records_is_compacted() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Never).expect("open");
        s.put("kept", b"live".to_vec()).expect("put");
        for i in 0..2000 {
            let key = format!("r-{i}");
            s.put(&key, vec![7u8; 300]).expect("put");
            s.remove(&key).expect("remove");
        }
        let len = fs::metadata(&path).expect("file").len();
        assert!(len < COMPACT_SPARSE_AT, "file of {len} bytes");
        assert_eq!(s.live_bytes, record_len("kept", b"live"));
        drop(s);
        let after = Store::open(path, SyncMode::Never).expect("open");
        assert_eq!(sorted(&after), ["kept"]);
    }

    #[test]
    fn a_held_removal_reaches_the_file_only_when_written() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("s.log");
        let mut s = Store::open(path.clone(), SyncMode::Never).expect("open");
        s.put("r-1", b"one".to_vec()).expect("put");
        s.put("r-2", b"two".to_vec()).expect("put");
        assert!(s.hold_removal("r-1") && s.hold_removal("r-2"));
        assert!(!s.hold_removal("r-3"), "not live");
        assert!(s.live().is_empty(), "gone at once for Paho");
        // A new record under a held key: its old removal must not follow it.
        s.put("r-2", b"two again".to_vec()).expect("put");
        // Traffic enough to empty or compact the file: neither may drop the
        // record held.
        for i in 0..2000 {
            let key = format!("c-{i}");
            s.put(&key, vec![7u8; 300]).expect("put");
            s.remove(&key).expect("remove");
        }
        // A crash now (read from a copy: opening rewrites the file).
        let copy = root.path().join("copy.log");
        fs::copy(&path, &copy).expect("copy");
        let crashed = Store::open(copy, SyncMode::Never).expect("open");
        assert_eq!(sorted(&crashed), ["r-1", "r-2"], "a crash before the write");
        assert_eq!(crashed.live()["r-2"], b"two again");
        drop(crashed);
        s.write_held(When::Later).expect("write");
        assert_eq!(sorted(&s), ["r-2"]);
        let after = Store::open(path, SyncMode::Never).expect("open");
        assert_eq!(sorted(&after), ["r-2"]);
    }
}
