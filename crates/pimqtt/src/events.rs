//! What a program's loop receives, and the one stop signal it checks.
//!
//! Paho calls us on its receive thread; [`Inbox::next`] hands each of those
//! calls to the program's own thread, so a program's state lives on one
//! thread. A message is handed over as a [`Delivery`]: Paho calls us on
//! PUBREL, before it forgets the message and sends PUBCOMP, and the message
//! is in the program's [journal](crate::journal) before we return, so the
//! broker hears "done" only once the message is safe with us; dropping the
//! `Delivery` marks it applied (SPEC: "a message is delivered when the
//! program has acted on it"). Paho's thread waits while too many are
//! pending, so memory stays bounded however fast the broker sends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use paho_mqtt as mqtt;

use crate::error::ConnectError;
use crate::journal::{Entry, Journal};
use crate::store::SyncMode;

/// One message, handed to the program. Dropping it marks it applied, so
/// drop it once the message has been acted on; the program's loop never
/// keeps one. Not dropped (a crash), it is handed over again at the next
/// start.
#[derive(Debug)]
pub struct Delivery {
    /// Which of the program's sessions it came from (its `tag`).
    pub session: usize,
    pub msg: mqtt::Message,
    applied: Option<(u64, Arc<Journal>)>,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some((seq, journal)) = &self.applied {
            journal.applied(*seq);
        }
    }
}

impl Delivery {
    pub fn topic(&self) -> &str {
        self.msg.topic()
    }

    pub fn payload(&self) -> &[u8] {
        self.msg.payload()
    }
}

/// What happened to one of the program's sessions.
#[derive(Debug)]
pub enum Event {
    Message(Delivery),
    /// Connected (or reconnected); subscriptions and `online` are already
    /// on their way.
    Connected {
        session: usize,
    },
    ConnectionLost {
        session: usize,
    },
    /// The broker refused us or the settings cannot work: retrying would not
    /// help, so the program should end with this error.
    Failed {
        session: usize,
        error: ConnectError,
    },
    /// A [`close`](crate::Session::close) has finished for this session.
    Closed {
        session: usize,
    },
}

/// What [`Inbox::next`] yields.
#[derive(Debug)]
pub enum Next {
    Event(Event),
    /// The deadline passed with nothing to do.
    Timeout,
    /// A stop was asked for (SIGINT/SIGTERM, end of input, a test).
    Stopped,
}

enum Item {
    Event(Event),
    /// Only wakes the loop; the stop flag says why.
    Wake,
}

/// The program's end of the event channel, with the stop signal folded in:
/// a loop checks one thing, [`Inbox::next`].
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Item>,
    tx: EventSender,
    stop: Stop,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Event(e) => e.fmt(f),
            Item::Wake => f.write_str("Wake"),
        }
    }
}

/// Where Paho's callbacks (and the connection worker) send events.
#[derive(Debug, Clone)]
pub(crate) struct EventSender {
    tx: Sender<Item>,
    journal: Arc<OnceLock<Arc<Journal>>>,
    stopping: Arc<AtomicBool>,
}

impl EventSender {
    pub(crate) fn send(&self, ev: Event) {
        let _ = self.tx.send(Item::Event(ev));
    }

    /// Writes a message to the journal and hands it to the program. Waits
    /// (back-pressure) while the program has too many pending, unless it is
    /// stopping.
    /// `release`: the packet id and record stamp of a QoS 2 message Paho
    /// hands over on PUBREL (see [`Entry::release`]).
    pub(crate) fn deliver(
        &self,
        session: usize,
        client_id: &str,
        msg: mqtt::Message,
        release: Option<(u16, u64)>,
    ) {
        let applied = self.journal.get().and_then(|journal| {
            let entry = Entry {
                client_id: client_id.to_string(),
                topic: msg.topic().to_string(),
                payload: msg.payload().to_vec(),
                qos: msg.qos() as i32,
                retained: msg.retained(),
                release,
            };
            let seq = journal.record(&entry, || self.stopping.load(Ordering::SeqCst))?;
            Some((seq, journal.clone()))
        });
        let _ = self.tx.send(Item::Event(Event::Message(Delivery {
            session,
            msg,
            applied,
        })));
    }

    /// The program's journal, opened by the first session (the others share
    /// it), and told which client id is which session.
    pub(crate) fn open_journal(
        &self,
        path: PathBuf,
        sync: SyncMode,
        client_id: &str,
        tag: usize,
    ) -> std::io::Result<()> {
        let journal = match self.journal.get() {
            Some(j) => j,
            None => {
                let j = Arc::new(Journal::open(path, sync)?);
                let watcher: Arc<dyn crate::commit::Watcher> = j.clone();
                crate::commit::watch(Arc::downgrade(&watcher));
                self.journal.get_or_init(|| j)
            }
        };
        journal.register(client_id, tag);
        Ok(())
    }

    /// The inbound records of `client_id` (packet id, stamp) whose messages
    /// the journal holds from a previous run.
    pub(crate) fn journaled(&self, client_id: &str) -> Vec<(u16, u64)> {
        self.journal
            .get()
            .map(|j| j.left_released(client_id))
            .unwrap_or_default()
    }

    /// Hands over, once, what a previous run left unapplied.
    pub(crate) fn replay(&self) {
        let Some(journal) = self.journal.get() else {
            return;
        };
        let old = journal.take_replay();
        if !old.is_empty() {
            log::info!(
                "{} message(s) received before the last stop or crash come first",
                old.len()
            );
        }
        for (seq, session, entry) in old {
            let _ = self.tx.send(Item::Event(Event::Message(Delivery {
                session,
                msg: entry.message(),
                applied: Some((seq, journal.clone())),
            })));
        }
    }

    /// Before a message is handed to the program: the previous one's
    /// "applied" mark on the disk (journal.rs).
    fn settle(&self) {
        if let Some(j) = self.journal.get() {
            j.settle();
        }
    }

    pub(crate) fn flush_journal(&self) {
        if let Some(j) = self.journal.get() {
            j.flush();
        }
    }
}

/// Asks a program's loop to stop; cheap to clone, usable from any thread
/// (a signal handler, a stdin reader, a test).
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    tx: Sender<Item>,
}

/// A delivery with no journal behind it (tests of the loop's plumbing).
#[cfg(test)]
fn bare(session: usize, msg: mqtt::Message) -> Delivery {
    Delivery {
        session,
        msg,
        applied: None,
    }
}

impl Stop {
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Item::Wake);
    }

    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

impl Inbox {
    pub fn new() -> Inbox {
        let (tx, rx) = mpsc::channel();
        let flag = Arc::new(AtomicBool::new(false));
        let stop = Stop {
            flag: flag.clone(),
            tx: tx.clone(),
        };
        Inbox {
            rx,
            tx: EventSender {
                tx,
                journal: Arc::new(OnceLock::new()),
                stopping: flag,
            },
            stop,
        }
    }

    /// The stop handle of this inbox.
    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    pub(crate) fn sender(&self) -> EventSender {
        self.tx.clone()
    }

    /// The next event, or `Timeout` at `deadline` (`None`: wait as long as it
    /// takes), or `Stopped` once a stop was asked for.
    pub fn next(&self, deadline: Option<Instant>) -> Next {
        loop {
            if self.stop.is_requested() {
                return Next::Stopped;
            }
            let item = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match item {
                Ok(Item::Event(ev)) => {
                    if matches!(ev, Event::Message(_)) {
                        self.tx.settle();
                    }
                    return Next::Event(ev);
                }
                Ok(Item::Wake) => {}
                Err(RecvTimeoutError::Timeout) => return Next::Timeout,
                // Cannot happen while we hold a sender; treat as a stop.
                Err(RecvTimeoutError::Disconnected) => return Next::Stopped,
            }
        }
    }

    /// The next event whatever the stop flag says: used while closing, when
    /// messages still arriving must be applied and `Closed` awaited.
    pub(crate) fn next_event(&self, deadline: Instant) -> Option<Event> {
        loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Item::Event(ev)) => {
                    if matches!(ev, Event::Message(_)) {
                        self.tx.settle();
                    }
                    return Some(ev);
                }
                Ok(Item::Wake) => {}
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn after(d: Duration) -> Option<Instant> {
        Some(Instant::now() + d)
    }

    #[test]
    fn a_stop_ends_the_wait_and_stays() {
        let inbox = Inbox::new();
        let stop = inbox.stop().clone();
        let t = std::thread::spawn(move || stop.request());
        assert!(matches!(inbox.next(None), Next::Stopped));
        t.join().expect("stopper");
        assert!(matches!(inbox.next(after(Duration::ZERO)), Next::Stopped));
    }

    #[test]
    fn events_arrive_in_order_and_a_timeout_says_so() {
        let inbox = Inbox::new();
        let tx = inbox.sender();
        tx.send(Event::Message(bare(3, mqtt::Message::new("led", "1", 2))));
        tx.send(Event::Connected { session: 3 });
        match inbox.next(after(Duration::from_secs(10))) {
            Next::Event(Event::Message(d)) => assert_eq!((d.session, d.topic()), (3, "led")),
            other => panic!("expected a message, got {other:?}"),
        }
        assert!(matches!(
            inbox.next(None),
            Next::Event(Event::Connected { session: 3 })
        ));
        assert!(matches!(
            inbox.next(after(Duration::from_millis(10))),
            Next::Timeout
        ));
    }
}
