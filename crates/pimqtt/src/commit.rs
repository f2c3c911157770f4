//! Group commit (`--sync always`): what the broker is told waits for one
//! sync of everything it stands for, and one sync covers a whole burst.
//!
//! Why: an acknowledgement (PUBACK, PUBREC, PUBCOMP) tells the broker to
//! forget a message, so what it stands for must be on the disk first: for a
//! PUBREC, Paho's `r-` record of the message; for a PUBCOMP or a PUBACK, the
//! message in the program's journal. Syncing each record before its own
//! acknowledgement cost 2.5 syncs per message of a drain. Paho (patch 11,
//! vendor/README.md) now holds these acknowledgements while packets keep
//! coming, and before it sends them calls [`commit`] once:
//!
//! 1. every write an acknowledgement waits for ([`gate`]) is made durable,
//!    one sync per file, however many records;
//! 2. then the removals of the `r-` records of released messages, held in
//!    memory meanwhile ([`hold`]), are written: on the disk before the
//!    journal entries that make them redundant, a power cut could keep the
//!    removal and lose the entry, and the message with it;
//! 3. then the journal learns that the removals of every entry it had
//!    before the commit are written, so it may clear their tombstones.
//!
//! Only Paho calls it: on its receive thread between packets, or when it
//! closes a connection, always under its lock, as it calls the message
//! callback: so no entry is half done (recorded, its removal not yet held)
//! while a commit runs. What a clean stop leaves held is not lost: the
//! journal names those records, and the next start drops them
//! (`persist::forget_journaled`).

use std::io;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::store::Durability;

/// A Paho store whose `r-` removals wait for a commit (persist.rs).
pub(crate) trait HeldRemovals: Send + Sync {
    /// Writes the removals held so far (step 2).
    fn write_held(&self) -> io::Result<()>;
}

/// The program's journal, told how far its tombstones may go (step 3).
pub(crate) trait Watcher: Send + Sync {
    /// The number the next entry gets.
    fn next_seq(&self) -> u64;
    /// The `r-` removals of the entries below `below` are written.
    fn removals_written(&self, below: u64);
}

#[derive(Default)]
struct Pending {
    /// Writes to be durable, the furthest position per file.
    gates: Vec<(Durability, u64)>,
    /// Paho stores with held removals.
    held: Vec<Arc<dyn HeldRemovals>>,
    journals: Vec<Weak<dyn Watcher>>,
}

/// What the next commit must do, and the commits themselves (one per
/// process: [`COMMITS`]; unit tests make their own).
struct Commits {
    /// `None` until installed: then nothing is gated or held.
    pending: Mutex<Option<Pending>>,
    on: AtomicBool,
    /// One commit at a time: a second one must not write held removals
    /// before the first one's syncs are done.
    one: Mutex<()>,
}

static COMMITS: Commits = Commits::new();

/// Whether acknowledgements wait for [`commit`] (the hook is installed).
pub(crate) fn on() -> bool {
    COMMITS.on.load(Ordering::Acquire)
}

/// From now on, Paho holds its acknowledgements for [`commit`]. Once per
/// process, before the first client connects; only with `--sync always`.
pub(crate) fn install() {
    if COMMITS.start() {
        crate::paho_sys::set_commit_hook(hook);
    }
}

/// The next commit makes the file of `disk` durable up to `pos` before any
/// acknowledgement goes out.
pub(crate) fn gate(disk: Durability, pos: u64) {
    COMMITS.gate(disk, pos);
}

/// The next commit writes the held removals of this Paho store.
pub(crate) fn hold(store: Arc<dyn HeldRemovals>) {
    COMMITS.hold(store);
}

/// Tells the journal, after each commit, how far its tombstones may go.
pub(crate) fn watch(journal: Weak<dyn Watcher>) {
    COMMITS.watch(journal);
}

/// Steps 1 to 3 of the module's doc.
pub(crate) fn commit() -> io::Result<()> {
    COMMITS.commit()
}

/// What Paho calls before it sends the acknowledgements it holds: 0 once
/// everything they stand for is durable; else they stay held.
extern "C" fn hook() -> c_int {
    match std::panic::catch_unwind(commit) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log::warn!("cannot sync the state files ({e}): the broker is not told yet");
            1
        }
        Err(_) => 1,
    }
}

impl Commits {
    const fn new() -> Commits {
        Commits {
            pending: Mutex::new(None),
            on: AtomicBool::new(false),
            one: Mutex::new(()),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns gating on; whether it was off.
    fn start(&self) -> bool {
        let mut p = self.pending();
        if p.is_some() {
            return false;
        }
        *p = Some(Pending::default());
        self.on.store(true, Ordering::Release);
        true
    }

    fn gate(&self, disk: Durability, pos: u64) {
        if let Some(p) = self.pending().as_mut() {
            match p.gates.iter_mut().find(|(d, _)| d.same_file(&disk)) {
                Some((_, at)) => *at = (*at).max(pos),
                None => p.gates.push((disk, pos)),
            }
        }
    }

    fn hold(&self, store: Arc<dyn HeldRemovals>) {
        if let Some(p) = self.pending().as_mut() {
            if !p.held.iter().any(|s| Arc::ptr_eq(s, &store)) {
                p.held.push(store);
            }
        }
    }

    fn watch(&self, journal: Weak<dyn Watcher>) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        if let Some(j) = journal.upgrade() {
            // Nothing is written before the first commit.
            j.removals_written(0);
        }
        if let Some(p) = self.pending().as_mut() {
            p.journals.retain(|j| j.strong_count() > 0);
            p.journals.push(journal);
        }
    }

    fn commit(&self) -> io::Result<()> {
        let _one = self.one.lock().unwrap_or_else(|e| e.into_inner());
        let (gates, held, journals) = match self.pending().as_mut() {
            Some(p) => (
                std::mem::take(&mut p.gates),
                std::mem::take(&mut p.held),
                p.journals
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect::<Vec<_>>(),
            ),
            None => return Ok(()),
        };
        // Every entry before this point has its removal held by now: Paho
        // removes a record right after our callback returns, and commits
        // between packets.
        let below: Vec<u64> = journals.iter().map(|j| j.next_seq()).collect();
        for (i, (disk, pos)) in gates.iter().enumerate() {
            if let Err(e) = disk.to(*pos) {
                self.give_back(gates[i..].to_vec(), held);
                return Err(e);
            }
        }
        for (i, store) in held.iter().enumerate() {
            if let Err(e) = store.write_held() {
                self.give_back(Vec::new(), held[i..].to_vec());
                return Err(e);
            }
        }
        for (journal, below) in journals.iter().zip(below) {
            journal.removals_written(below);
        }
        Ok(())
    }

    /// What a failed commit did not do, for the next one.
    fn give_back(&self, gates: Vec<(Durability, u64)>, held: Vec<Arc<dyn HeldRemovals>>) {
        for (disk, pos) in gates {
            self.gate(disk, pos);
        }
        for store in held {
            self.hold(store);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, SyncMode, When};

    /// Records, when its removals are written, whether the gated write was
    /// durable by then.
    struct Probe {
        disk: Durability,
        pos: u64,
        seen: Mutex<Vec<bool>>,
    }

    impl HeldRemovals for Probe {
        fn write_held(&self) -> io::Result<()> {
            self.seen.lock().unwrap().push(self.disk.covers(self.pos));
            Ok(())
        }
    }

    struct Entries {
        next: u64,
        below: Mutex<Vec<u64>>,
    }

    impl Watcher for Entries {
        fn next_seq(&self) -> u64 {
            self.next
        }
        fn removals_written(&self, below: u64) {
            self.below.lock().unwrap().push(below);
        }
    }

    #[test]
    fn nothing_is_gated_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("j"), SyncMode::Always).unwrap();
        let pos = store.put_when("1", b"x".to_vec(), When::Later).unwrap();
        let c = Commits::new();
        c.gate(store.durability(), pos);
        c.commit().unwrap();
        assert!(!store.durability().covers(pos), "off: nothing synced");
        assert!(c.start() && !c.start(), "started once");
    }

    #[test]
    fn removals_are_written_after_the_gated_writes_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Store::open(dir.path().join("j"), SyncMode::Always).unwrap();
        let mut paho = Store::open(dir.path().join("p"), SyncMode::Always).unwrap();
        let c = Commits::new();
        c.start();
        let entries = Arc::new(Entries {
            next: 7,
            below: Mutex::new(Vec::new()),
        });
        let watcher: Arc<dyn Watcher> = entries.clone();
        c.watch(Arc::downgrade(&watcher));
        let a = journal.put_when("1", b"a".to_vec(), When::Later).unwrap();
        let b = journal.put_when("2", b"b".to_vec(), When::Later).unwrap();
        let r = paho.put_when("r-1", b"r".to_vec(), When::Later).unwrap();
        c.gate(journal.durability(), a);
        c.gate(journal.durability(), b);
        c.gate(paho.durability(), r);
        let probe = Arc::new(Probe {
            disk: journal.durability(),
            pos: b,
            seen: Mutex::new(Vec::new()),
        });
        c.hold(probe.clone());
        c.hold(probe.clone());
        assert!(!journal.durability().covers(b));
        c.commit().unwrap();
        assert!(journal.durability().covers(b) && paho.durability().covers(r));
        assert_eq!(*probe.seen.lock().unwrap(), [true], "once, after the sync");
        c.commit().unwrap();
        assert_eq!(probe.seen.lock().unwrap().len(), 1, "nothing held any more");
        // 0 when watched (nothing written yet), then after each commit.
        assert_eq!(*entries.below.lock().unwrap(), [0, 7, 7]);
    }
}
