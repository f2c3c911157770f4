//! A chaos proxy (issue 20): the faults a Raspberry Pi's network really
//! meets (Wi-Fi dropping out, a NAT that forgets its mapping, a load
//! balancer in front of the broker), put between our programs and a real
//! Mosquitto, all on 127.0.0.1. [`Proxy`] forwards and injects the faults;
//! [`Chaos`] (chaos/schedule.rs) drives a seeded random schedule of them.
//!
//! Plain threads: one accepts, two pump each connection (one each way).
//! A pump (chaos/pump.rs) looks up from a blocked read or write every
//! whether a fault was ordered; each fault call returns once it took effect
//! (a reset connection is closed, a refusing port refuses).

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::broker::{host_args, program_args};
use crate::{free_port, Proc, DEADLINE};

mod pump;
mod schedule;
pub use schedule::*;

use pump::{Fate, Shared, State};

#[cfg(test)]
mod tests;

/// What the proxy did so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted and forwarded to the target.
    pub accepted: usize,
    /// Connections accepted while the target did not answer, reset at once
    /// (as a load balancer does when its broker is down).
    pub target_down: usize,
    /// Connections reset on order ([`Proxy::reset_all`], [`Proxy::reset_some`]).
    pub reset: usize,
    /// Connections cut in the middle of a chunk ([`Proxy::cut_mid_packet`]).
    pub cut: usize,
    /// Stalls, refusals and half-open spells begun.
    pub stalls: usize,
    pub refusals: usize,
    pub half_opens: usize,
    /// Connections whose client a half-open spell's end answered with RST.
    pub half_open_reset: usize,
}

/// A TCP proxy on a free loopback port in front of `127.0.0.1:target`,
/// with faults to order. Dropping it resets every connection, stops its
/// threads and closes its port.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let shared = Arc::new(Shared {
            port,
            target: target_port,
            state: Mutex::new(State {
                listening: true,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || sh.accept_loop(Some(listener)))
            .unwrap();
        Proxy {
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The port it forwards to.
    pub fn target(&self) -> u16 {
        self.shared.target
    }

    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port())
    }

    /// `-h 127.0.0.1 -p PORT`, as [`Broker::host_args`](crate::Broker::host_args).
    pub fn host_args(&self) -> Vec<String> {
        host_args(self.port())
    }

    /// The flags that point one of our programs at the broker through this
    /// proxy, as [`Broker::args`](crate::Broker::args) (and `-V 5` comes the
    /// same way, from [`Proc::spawn`] under `PIMQTT_PROTOCOL=5`).
    pub fn args(&self, state: &Path, extra: &[&str]) -> Vec<String> {
        program_args(self.port(), state, extra)
    }

    /// Runs the program `exe` through this proxy, as [`Broker::run`](crate::Broker::run).
    pub fn run(&self, exe: impl AsRef<Path>, state: &Path, extra: &[&str]) -> Proc {
        Proc::spawn(exe, &self.args(state, extra))
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }

    /// Connections open on the target's side (stale ones included).
    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Resets every connection, both sides (SO_LINGER 0, then close: RST),
    /// and returns how many once they are closed.
    pub fn reset_all(&self) -> usize {
        self.reset_where(|ids, _| ids)
    }

    /// Resets `fraction` (0 to 1, rounded up) of the connections, picked
    /// with `rng`; returns how many.
    pub fn reset_some(&self, fraction: f64, rng: &mut Rng) -> usize {
        self.reset_where(|mut ids, n| {
            let k = ((n as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize).min(n);
            for i in 0..k {
                let j = i + rng.below((n - i) as u64) as usize;
                ids.swap(i, j);
            }
            ids.truncate(k);
            ids
        })
    }

    fn reset_where(&self, pick: impl FnOnce(Vec<u64>, usize) -> Vec<u64>) -> usize {
        let mut st = self.shared.lock();
        let mut ids: Vec<u64> = st
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.fate, Fate::Live | Fate::ClientGone))
            .map(|(id, _)| *id)
            .collect();
        // In order, so that a seed picks the same ones again.
        ids.sort_unstable();
        let n = ids.len();
        let ids = pick(ids, n);
        for id in &ids {
            if let Some(c) = st.conns.get_mut(id) {
                c.fate = Fate::Reset;
            }
        }
        st.counts.reset += ids.len();
        self.shared.changed.notify_all();
        self.shared.settle(st, &ids);
        ids.len()
    }

    /// Cuts each live connection in the middle of its next chunk of bytes
    /// (whichever way it goes): half of it is forwarded, then both sides
    /// are closed, as by a link that died mid-packet. Returns how many
    /// connections wait for their cut.
    pub fn cut_mid_packet(&self) -> usize {
        let mut st = self.shared.lock();
        let mut n = 0;
        for c in st.conns.values_mut() {
            if c.fate == Fate::Live && !c.half_open {
                c.cut = true;
                n += 1;
            }
        }
        n
    }

    /// Stops forwarding both ways (sockets left open, bytes left waiting),
    /// or resumes.
    pub fn stall(&self, on: bool) {
        let mut st = self.shared.lock();
        if on && !st.stalled {
            st.counts.stalls += 1;
        }
        st.stalled = on;
        self.shared.changed.notify_all();
    }

    /// Refuses new connections (the port is closed, so a connect gets RST:
    /// what a stopped broker or a firewall's REJECT answers), or takes them
    /// again on the same port. Live connections are left alone. Returns
    /// once the port refuses or listens.
    pub fn refuse(&self, on: bool) {
        let mut st = self.shared.lock();
        if on && !st.refusing {
            st.counts.refusals += 1;
        }
        st.refusing = on;
        self.shared.changed.notify_all();
        drop(st);
        if on {
            // The acceptor may be blocked in accept: a connection wakes it.
            self.shared.wake();
        }
        let st = self.shared.lock();
        let port = self.port();
        let (st, _) = self
            .shared
            .changed
            .wait_timeout_while(st, DEADLINE, |st| st.listening == on && !st.stop)
            .unwrap();
        assert!(
            st.listening != on || st.stop,
            "proxy: port {port} still {} after {DEADLINE:?}",
            if on { "listens" } else { "refuses (taken?)" }
        );
    }

    /// A black hole, while on, for every connection (live and new): the
    /// client's bytes are swallowed and nothing comes back, yet the client
    /// believes it is connected. Turned off, each of those clients is
    /// answered with RST, as a NAT that lost the mapping answers the
    /// client's next packet; the broker's side stays open, as behind a real
    /// NAT, until the broker closes it (keepalive, or the client's return
    /// taking its session over).
    pub fn half_open(&self, on: bool) {
        let mut st = self.shared.lock();
        if on {
            if !st.half_open {
                st.counts.half_opens += 1;
            }
            st.half_open = true;
            for c in st.conns.values_mut() {
                if c.fate == Fate::Live {
                    c.half_open = true;
                }
            }
            self.shared.changed.notify_all();
            return;
        }
        st.half_open = false;
        let mut ids = Vec::new();
        for (id, c) in st.conns.iter_mut() {
            if c.half_open && c.fate == Fate::Live {
                c.half_open = false;
                // No session there to leave behind: close both sides.
                c.fate = if c.sent_up {
                    Fate::ClientGone
                } else {
                    Fate::Reset
                };
                ids.push(*id);
            }
        }
        st.counts.half_open_reset += ids.len();
        self.shared.changed.notify_all();
        self.shared.settle(st, &ids);
    }

    /// For connections opened from now on, lets only the first `bytes` of
    /// the broker's replies through and swallows the rest (`None`: all
    /// again, for new connections; live ones keep what they had, since a
    /// client would read the rest from the middle of a packet). With the
    /// length of a CONNACK, the client connects and then hears nothing:
    /// its QoS 2 PUBLISHes reach the broker, every PUBREC is lost, as on a
    /// link that fails one way.
    pub fn replies_only(&self, bytes: Option<usize>) {
        self.shared.lock().replies_only = bytes;
    }

    /// Everything passing again: no stall, no refusal, no black hole (its
    /// clients reset, as [`Proxy::half_open`] says), no cut waiting.
    pub fn heal(&self) {
        self.stall(false);
        self.refuse(false);
        self.half_open(false);
        for c in self.shared.lock().conns.values_mut() {
            c.cut = false;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        self.shared.wake();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }
}
