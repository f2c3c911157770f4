//! What a program's loop receives, and the one stop signal it checks.
//!
//! Paho calls us on its receive thread; [`Inbox::next`] hands each of those
//! calls to the program's own thread, so a program's state lives on one
//! thread. A message is handed over as a [`Delivery`], and Paho's thread
//! waits until the program has dropped it: Paho calls us on PUBREL, before it
//! forgets the message and sends PUBCOMP, so waiting there means the broker
//! hears "done" only once the program has acted on the message (SPEC: "a
//! message is delivered when the program has acted on it"). The same wait is
//! the back-pressure: Paho reads no further while the program is busy, so
//! memory stays bounded however fast the broker sends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;

use crate::error::ConnectError;

/// One message, handed to the program. Paho's thread is released (and the
/// broker told PUBCOMP) when this is dropped, so drop it once the message
/// has been applied; the program's loop never keeps one.
#[derive(Debug)]
pub struct Delivery {
    /// Which of the program's sessions it came from (its `tag`).
    pub session: usize,
    pub msg: mqtt::Message,
    _done: SyncSender<()>,
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
}

impl EventSender {
    pub(crate) fn send(&self, ev: Event) {
        let _ = self.tx.send(Item::Event(ev));
    }

    /// Hands a message to the program and waits until it has been applied
    /// (the [`Delivery`] dropped). Returns at once if the program's loop is
    /// gone (the process is ending).
    pub(crate) fn deliver(&self, session: usize, msg: mqtt::Message) {
        let (done, applied) = mpsc::sync_channel(0);
        let delivery = Delivery {
            session,
            msg,
            _done: done,
        };
        if self.tx.send(Item::Event(Event::Message(delivery))).is_ok() {
            // Err (the sender dropped) is the signal: nothing is ever sent.
            let _ = applied.recv();
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
        let stop = Stop {
            flag: Arc::new(AtomicBool::new(false)),
            tx: tx.clone(),
        };
        Inbox {
            rx,
            tx: EventSender { tx },
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
                Ok(Item::Event(ev)) => return Next::Event(ev),
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
                Ok(Item::Event(ev)) => return Some(ev),
                Ok(Item::Wake) => {}
                Err(_) => return None,
            }
        }
    }
}

/// A deadline `after` from now, for loops that wait a fixed time.
pub fn after(after: Duration) -> Option<Instant> {
    Some(Instant::now() + after)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_delivery_holds_the_sender_until_dropped() {
        let inbox = Inbox::new();
        let tx = inbox.sender();
        let applied = Arc::new(AtomicBool::new(false));
        let seen = applied.clone();
        let paho = std::thread::spawn(move || {
            tx.deliver(3, mqtt::Message::new("led", "1", 2));
            // Returns only after the program dropped the delivery.
            assert!(seen.load(Ordering::SeqCst), "released before applied");
        });
        match inbox.next(after(Duration::from_secs(10))) {
            Next::Event(Event::Message(d)) => {
                assert_eq!((d.session, d.topic()), (3, "led"));
                applied.store(true, Ordering::SeqCst);
                drop(d);
            }
            other => panic!("expected a message, got {other:?}"),
        }
        paho.join().expect("paho thread");
        assert!(matches!(
            inbox.next(after(Duration::from_millis(10))),
            Next::Timeout
        ));
    }
}
