//! What the program published, counted until the worker has handed it to
//! Paho, so a message's "applied" mark can wait for what was published in
//! answer to it.
//!
//! Why: the program publishes from its own thread through the worker
//! (worker.rs), and Paho writes (and with `--sync always` syncs) a QoS 1/2
//! publication's record only when the worker hands it over. The journal's
//! "applied" mark is synced as soon as the program is done with a message
//! (journal.rs). Without this wait the mark could reach the disk while the
//! controller's pump command for that level was still in the worker's
//! queue: a power cut then lost the command for good, since the level that
//! caused it is never applied again. With it, the mark follows every
//! publication queued before it: a cut repeats the level and its command,
//! or keeps both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counts of one program's publications (one per process, as the worker).
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    queued: AtomicU64,
    handed: AtomicU64,
    lock: Mutex<()>,
    done: Condvar,
}

pub(crate) static HANDOFF: Handoff = Handoff::new();

impl Handoff {
    pub(crate) const fn new() -> Self {
        Handoff {
            queued: AtomicU64::new(0),
            handed: AtomicU64::new(0),
            lock: Mutex::new(()),
            done: Condvar::new(),
        }
    }

    /// A publication is about to be queued for the worker.
    pub(crate) fn queued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// The worker is done with one (handed to Paho, or dropped because its
    /// session is closed): in queue order, so a count is enough.
    pub(crate) fn handed(&self) {
        self.handed.fetch_add(1, Ordering::SeqCst);
        // Under the lock, so a waiter between its check and its wait
        // cannot miss it.
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.done.notify_all();
    }

    /// Whether some publication is still waiting for the worker. The
    /// journal then lets Paho's thread record past its room: that thread
    /// holds Paho's lock while it waits for room, the worker needs that
    /// lock to hand the publication over, and the program, which frees
    /// room, waits for the worker.
    pub(crate) fn outstanding(&self) -> bool {
        self.handed.load(Ordering::SeqCst) < self.queued.load(Ordering::SeqCst)
    }

    /// Waits until every publication queued before this call is handed
    /// over, for at most `limit`; false if it was not. Costs nothing when
    /// nothing is queued (a led-client never publishes in answer).
    pub(crate) fn wait(&self, limit: Duration) -> bool {
        let target = self.queued.load(Ordering::SeqCst);
        if self.handed.load(Ordering::SeqCst) >= target {
            return true;
        }
        let until = Instant::now() + limit;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.handed.load(Ordering::SeqCst) < target {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .done
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn nothing_queued_is_no_wait() {
        let h = Handoff::new();
        assert!(h.wait(Duration::ZERO));
    }

    #[test]
    fn waits_for_what_was_queued_before_it_only() {
        let h = Arc::new(Handoff::new());
        h.queued();
        h.queued();
        h.handed();
        assert!(
            !h.wait(Duration::from_millis(1)),
            "one of two is not handed"
        );
        let worker = {
            let h = h.clone();
            std::thread::spawn(move || h.handed())
        };
        assert!(
            h.wait(Duration::from_secs(10)),
            "handed by the other thread"
        );
        worker.join().unwrap();
        // Queued after a wait began: that wait does not cover it, the next
        // one does.
        h.queued();
        assert!(!h.wait(Duration::from_millis(1)));
        h.handed();
        assert!(h.wait(Duration::ZERO));
    }
}
