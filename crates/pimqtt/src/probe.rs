//! Knocks at the TCP port of a broker that did not answer, so that sessions
//! whose waits have grown towards 30 s come back within about a second of
//! the broker (or the network to it) being there again, however long it
//! was away (SPEC: "every program is back within seconds").
//!
//! Why a probe and not shorter waits: the back-off exists so that a fleet
//! does not hammer a broker that is down; a bare TCP connect once a second
//! per broker (not per session) costs a refused SYN. And it is a fact, not
//! a guess: something accepted a connection on that port.
//!
//! Only a port that did not answer is watched, and only until it first
//! answers. A broker that accepts TCP and still fails our connects (busy,
//! still starting, a proxy in front of it) is left to the back-off, and its
//! log shows at most one bare connection per outage.
//!
//! The knocks run on a thread of their own: a host that has gone from the
//! network makes a connect hang until its timeout, and the worker must not
//! hang with it.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::client::tcp_reachable;

/// How often a silent port is knocked at.
const EVERY: Duration = Duration::from_secs(1);
/// How long one knock may wait for an answer.
const KNOCK: Duration = Duration::from_secs(1);

/// A broker's port to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    /// The URI the sessions know the broker by, handed back when it answers.
    pub(crate) uri: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

#[derive(Default)]
struct Shared {
    watched: Mutex<Vec<Port>>,
    changed: Condvar,
}

/// The handle the worker keeps; the thread starts at the first
/// [`Probe::watch`].
pub(crate) struct Probe {
    shared: Arc<Shared>,
    notify: Option<Box<dyn Fn(String) + Send>>,
}

impl Probe {
    /// `notify` is called, on the probe's thread, with the URI of each
    /// watched broker that answers.
    pub(crate) fn new(notify: impl Fn(String) + Send + 'static) -> Probe {
        Probe {
            shared: Arc::default(),
            notify: Some(Box::new(notify)),
        }
    }

    /// Watches `port` until it answers (once, however often it is asked).
    pub(crate) fn watch(&mut self, port: Port) {
        if let Some(notify) = self.notify.take() {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("mqtt-probe".into())
                .spawn(move || knock(&shared, &*notify));
            if let Err(e) = started {
                // The back-off alone then brings the sessions back.
                log::warn!("cannot start the broker probe thread: {e}");
            }
        }
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !watched.contains(&port) {
            log::debug!("watching {}:{} until it answers", port.host, port.port);
            watched.push(port);
            self.shared.changed.notify_all();
        }
    }
}

fn knock(shared: &Shared, notify: &dyn Fn(String)) {
    loop {
        let ports = {
            let watched = shared
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let watched = shared
                .changed
                .wait_while(watched, |w| w.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            watched.clone()
        };
        std::thread::sleep(EVERY);
        for p in ports {
            if tcp_reachable(&p.host, p.port, KNOCK) {
                shared
                    .watched
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|w| *w != p);
                log::debug!("{}:{} answers again", p.host, p.port);
                notify(p.uri);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    #[test]
    fn tells_once_when_a_silent_port_answers() {
        // A port that refuses: bound, then closed.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (tx, rx) = mpsc::channel();
        let mut probe = Probe::new(move |uri| tx.send(uri).unwrap());
        let watched = Port {
            uri: "tcp://here".into(),
            host: "127.0.0.1".into(),
            port,
        };
        probe.watch(watched.clone());
        probe.watch(watched);
        assert!(
            rx.recv_timeout(Duration::from_millis(2500)).is_err(),
            "nothing listens yet"
        );
        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "tcp://here"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(2500)).is_err(),
            "told once"
        );
    }
}
