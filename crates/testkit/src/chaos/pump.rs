//! The proxy's machinery: its shared state, the accepting thread, and the
//! two pumps of each connection, which carry out the faults ordered.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Counts;
use crate::DEADLINE;

/// How long a pump blocks in a read or write before it looks for orders:
/// the longest a fault waits to take effect.
pub(super) const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) port: u16,
    pub(super) target: u16,
    pub(super) state: Mutex<State>,
    /// Notified on every change of `state`.
    pub(super) changed: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) stop: bool,
    pub(super) stalled: bool,
    pub(super) refusing: bool,
    /// Whether the acceptor has its listener open.
    pub(super) listening: bool,
    pub(super) half_open: bool,
    /// For connections opened from now on: only so many of the target's
    /// bytes reach the client ([`Proxy::replies_only`](super::Proxy::replies_only)).
    pub(super) replies_only: Option<usize>,
    pub(super) next_id: u64,
    pub(super) conns: HashMap<u64, Conn>,
    pub(super) counts: Counts,
    pub(super) threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) fate: Fate,
    /// Black-holed: bytes both ways are swallowed.
    pub(super) half_open: bool,
    /// The next chunk, either way, is cut in two.
    pub(super) cut: bool,
    /// Some of the client's bytes reached the target: it holds a session
    /// there, which a NAT's lost mapping leaves behind.
    pub(super) sent_up: bool,
    /// How many more of the target's bytes may reach the client (`None`:
    /// all); the rest are swallowed.
    pub(super) down_budget: Option<usize>,
    /// Pumps still running, and still holding the client's socket.
    pub(super) pumps: u8,
    pub(super) client_held: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Live,
    /// RST both sides.
    Reset,
    /// Closed (FIN) by the pump that cut it.
    Cut,
    /// The client's side reset; the target's side is left open and drained
    /// until the target closes it (a NAT that lost its mapping).
    ClientGone,
}

/// Which way a pump copies: `Up` from the client to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Up,
    Down,
}

/// What a pump does with a chunk it read, or instead of reading.
#[derive(Debug)]
pub(super) enum Verdict {
    Forward,
    /// Forward this many of the bytes read, swallow the rest.
    Part(usize),
    Swallow,
    /// Forward this many bytes, then close both sides.
    Cut(usize),
    /// Leave, resetting the client's side, or both.
    Exit {
        client: bool,
        target: bool,
    },
    /// The client's side is gone: drop it and go on draining the target.
    DropClient,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to our own port, to wake an acceptor blocked in accept.
    pub(super) fn wake(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }

    /// Waits until each of `ids` is closed (or its client's side is, for a
    /// connection left stale), at most [`DEADLINE`].
    pub(super) fn settle(&self, st: MutexGuard<'_, State>, ids: &[u64]) {
        let open = |st: &mut State| {
            ids.iter().any(|id| {
                st.conns
                    .get(id)
                    .is_some_and(|c| c.fate != Fate::ClientGone || c.client_held > 0)
            })
        };
        let (st, _) = self
            .changed
            .wait_timeout_while(st, DEADLINE, |st| open(st) && !st.stop)
            .unwrap();
        drop(st);
    }

    pub(super) fn accept_loop(self: Arc<Self>, mut listener: Option<TcpListener>) {
        loop {
            {
                let mut st = self.lock();
                if st.stop {
                    return;
                }
                if st.refusing {
                    if listener.take().is_some() {
                        st.listening = false;
                        self.changed.notify_all();
                    }
                    drop(self.changed.wait_while(st, |st| st.refusing && !st.stop));
                    continue;
                }
            }
            let Some(l) = &listener else {
                // Back on the same port (std sets SO_REUSEADDR); retried
                // while another socket holds it, which `refuse` reports.
                match TcpListener::bind(("127.0.0.1", self.port)) {
                    Ok(l) => {
                        listener = Some(l);
                        self.lock().listening = true;
                        self.changed.notify_all();
                    }
                    Err(_) => {
                        let st = self.lock();
                        drop(self.changed.wait_timeout(st, TICK));
                    }
                }
                continue;
            };
            let Ok((client, _)) = l.accept() else {
                continue;
            };
            let st = self.lock();
            if st.stop || st.refusing {
                // Our own wake-up, or one that came as the port closed.
                linger_zero(&client);
                continue;
            }
            drop(st);
            self.open(client);
        }
    }

    /// Connects `client` to the target and starts its two pumps.
    fn open(self: &Arc<Self>, client: TcpStream) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.target));
        let Ok(target) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            self.lock().counts.target_down += 1;
            linger_zero(&client);
            return;
        };
        for s in [&client, &target] {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(TICK));
            let _ = s.set_write_timeout(Some(TICK));
        }
        let (Ok(client2), Ok(target2)) = (client.try_clone(), target.try_clone()) else {
            linger_zero(&client);
            return;
        };
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let half_open = st.half_open;
        let down_budget = st.replies_only;
        st.conns.insert(
            id,
            Conn {
                fate: Fate::Live,
                half_open,
                down_budget,
                cut: false,
                sent_up: false,
                pumps: 2,
                client_held: 2,
            },
        );
        st.counts.accepted += 1;
        st.threads.retain(|t| !t.is_finished());
        for (dir, client, target) in [(Dir::Up, client, target), (Dir::Down, client2, target2)] {
            let sh = self.clone();
            let t = std::thread::Builder::new()
                .name(format!("proxy-{}-{id}", self.port))
                .spawn(move || sh.pump(id, dir, Some(client), Some(target)))
                .unwrap();
            st.threads.push(t);
        }
    }

    /// Copies one way until the connection ends or a fault ends it.
    fn pump(&self, id: u64, dir: Dir, mut client: Option<TcpStream>, target: Option<TcpStream>) {
        let mut buf = vec![0u8; 16 * 1024];
        let (rst_client, rst_target) = loop {
            let from = if dir == Dir::Up { &client } else { &target };
            let Some(mut from) = from.as_ref() else {
                break (false, false);
            };
            let got = match from.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => Some(Ok(n)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    Some(Err(()))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Reset by the peer: reset the other side too.
                Err(_) => {
                    if self.fail(id) {
                        break (true, true);
                    }
                    None
                }
            };
            let n = match got {
                Some(Ok(n)) => n,
                // Nothing yet: look for orders.
                Some(Err(())) => 0,
                // Closed by the sender: pass the FIN on, unless swallowed.
                None => {
                    let to = if dir == Dir::Up { &target } else { &client };
                    if self.passes(id) {
                        if let Some(to) = to {
                            let _ = to.shutdown(Shutdown::Write);
                        }
                    }
                    break (false, false);
                }
            };
            match self.admit(id, dir, n) {
                Verdict::Forward if n > 0 => {
                    let to = if dir == Dir::Up { &target } else { &client };
                    if let Some(to) = to {
                        if !self.write(id, to, &buf[..n], false) && self.fail(id) {
                            break (true, true);
                        }
                    }
                }
                Verdict::Part(k) => {
                    let to = if dir == Dir::Up { &target } else { &client };
                    if let Some(to) = to {
                        if k > 0 && !self.write(id, to, &buf[..k], false) && self.fail(id) {
                            break (true, true);
                        }
                    }
                }
                Verdict::Forward | Verdict::Swallow => {}
                Verdict::Cut(k) => {
                    let to = if dir == Dir::Up { &target } else { &client };
                    if let Some(to) = to {
                        self.write(id, to, &buf[..k], true);
                        let _ = to.shutdown(Shutdown::Both);
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    break (false, false);
                }
                Verdict::Exit { client, target } => break (client, target),
                Verdict::DropClient => {
                    if let Some(c) = client.take() {
                        linger_zero(&c);
                        drop(c);
                        if let Some(c) = self.lock().conns.get_mut(&id) {
                            c.client_held -= 1;
                        }
                        self.changed.notify_all();
                    }
                }
            }
        };
        if let (true, Some(c)) = (rst_client, &client) {
            linger_zero(c);
        }
        if let (true, Some(t)) = (rst_target, &target) {
            linger_zero(t);
        }
        let held = client.is_some();
        drop((client, target));
        let mut st = self.lock();
        if let Some(c) = st.conns.get_mut(&id) {
            c.pumps -= 1;
            c.client_held -= u8::from(held);
            if c.pumps == 0 {
                st.conns.remove(&id);
            }
        }
        self.changed.notify_all();
    }

    /// What to do with `n` bytes just read (0: none, orders only); waits
    /// while stalled.
    fn admit(&self, id: u64, dir: Dir, n: usize) -> Verdict {
        let mut st = self.lock();
        loop {
            let stop = st.stop;
            let stalled = st.stalled;
            let Some(c) = st.conns.get_mut(&id) else {
                return Verdict::Exit {
                    client: true,
                    target: true,
                };
            };
            match c.fate {
                _ if stop => {
                    return Verdict::Exit {
                        client: true,
                        target: true,
                    }
                }
                Fate::Reset => {
                    return Verdict::Exit {
                        client: true,
                        target: true,
                    }
                }
                Fate::Cut => {
                    return Verdict::Exit {
                        client: false,
                        target: false,
                    }
                }
                Fate::ClientGone if dir == Dir::Up => {
                    return Verdict::Exit {
                        client: true,
                        target: false,
                    }
                }
                Fate::ClientGone => {
                    // The chunk, if any, goes nowhere either way.
                    return if c.client_held > 0 {
                        Verdict::DropClient
                    } else {
                        Verdict::Swallow
                    };
                }
                Fate::Live => {}
            }
            if c.half_open || n == 0 {
                return Verdict::Swallow;
            }
            if stalled {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if c.cut {
                c.cut = false;
                c.fate = Fate::Cut;
                st.counts.cut += 1;
                self.changed.notify_all();
                return Verdict::Cut(n / 2);
            }
            if dir == Dir::Up {
                c.sent_up = true;
            } else if let Some(left) = c.down_budget {
                let k = left.min(n);
                c.down_budget = Some(left - k);
                return Verdict::Part(k);
            }
            return Verdict::Forward;
        }
    }

    /// Whether a FIN or a reset from one side may pass to the other: not
    /// into a black hole, nor after another fault took the connection.
    fn passes(&self, id: u64) -> bool {
        let st = self.lock();
        st.conns
            .get(&id)
            .is_some_and(|c| c.fate == Fate::Live && !c.half_open)
    }

    /// A side failed (reset, or a write refused): the connection is reset,
    /// both sides, if it is still a plain live one. Returns whether it was.
    fn fail(&self, id: u64) -> bool {
        let mut st = self.lock();
        match st.conns.get_mut(&id) {
            Some(c) if c.fate == Fate::Live && !c.half_open => {
                c.fate = Fate::Reset;
                self.changed.notify_all();
                true
            }
            _ => false,
        }
    }

    /// Writes all of `bytes`, looking for orders whenever the socket is
    /// full; gives up when the connection is taken by a fault (unless
    /// `cutting`: the cut itself) or fails. Returns whether all went.
    fn write(&self, id: u64, to: &TcpStream, mut bytes: &[u8], cutting: bool) -> bool {
        let deadline = Instant::now() + DEADLINE;
        let mut to = to;
        while !bytes.is_empty() {
            match to.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let st = self.lock();
                    let taken = st.conns.get(&id).is_none_or(|c| c.fate != Fate::Live);
                    if st.stop || (taken && !cutting) || Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Makes the socket's close send RST instead of FIN (SO_LINGER with a zero
/// timeout). std's `set_linger` is unstable (`tcp_linger`), and one call
/// is not worth a dependency: this is the testkit's one FFI call.
#[allow(unsafe_code)]
pub(super) fn linger_zero(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    /// C's `struct linger`.
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    // Linux's values (asm-generic, x86 and ARM alike).
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let value = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: the descriptor is open for the borrow's life, and `value` is
    // a `struct linger` of the size passed, read during the call only.
    let _ = unsafe {
        setsockopt(
            sock.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &value,
            std::mem::size_of::<Linger>() as u32,
        )
    };
}
