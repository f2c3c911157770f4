//! The program's inbox journal: every message Paho hands us is written
//! here before Paho completes it with the broker, and marked applied once
//! the program has acted on it.
//!
//! Why, rather than keeping Paho's thread waiting until the program applied
//! the message: Paho calls us holding its one global lock, so a waiting
//! callback holds it too, and then nothing else reaches the broker (no
//! `offline`, no DISCONNECT, no publication of the program's) until the
//! broker stops sending. With the journal the callback costs one write, a
//! stop takes effect at once, and what the broker already handed over is
//! safe on disk: a crash (or a stop before it was applied) loses nothing,
//! since the next start applies what is left, in order, before anything new.
//! A crash while a message is being applied repeats that one message.
//!
//! On the disk (`--sync always`): an entry is durable before Paho tells the
//! broker "done" (PUBCOMP, PUBACK): one sync for a whole burst of them,
//! made by Paho's commit (commit.rs) before it sends the acknowledgements.
//! The "applied" mark is written and synced when the message has been
//! applied, and must be on the disk before the next message is handed over
//! ([`Journal::settle`]), so a power cut repeats at most the one message in
//! hand. That is the one sync per message a drain costs: the program
//! applies one message at a time, and no sync may cover two of them. The
//! mark also waits until what the program published in answer to the
//! message is in Paho's persistence (handoff.rs): a cut then repeats a
//! level with its pump command, or keeps both, never the level alone.
//!
//! The mark of a message released by the broker (QoS 2) is a tombstone,
//! not a removal: it keeps naming Paho's `r-` record of that message until
//! the removal of that record is known to be on the disk (Paho's removal is
//! not synced at once: persist.rs). Else a power cut could keep the mark but
//! lose the removal, and the broker's PUBREL (its PUBCOMP lost with the
//! power) would deliver the message again after newer ones. The next start
//! drops the records that tombstones name, as it does for unapplied
//! entries; while running, tombstones are cleared in batches, after one
//! [`settle_lazy`] made every removal so far durable.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use log::warn;
use paho_mqtt as mqtt;

use crate::handoff::HANDOFF;
use crate::options::OP_TIMEOUT;
use crate::store::{settle_lazy, Store, SyncMode, When};

/// Messages handed over but not yet applied before Paho's thread waits
/// (back-pressure: a slow program slows the broker down; memory stays
/// bounded). Not applied while stopping: a stop must not wait.
pub(crate) const ROOM: usize = 256;

/// Tombstones cleared together (one [`settle_lazy`] for them all).
const CLEAR_AT: usize = 64;

/// One journal per program (every session of a fleet shares it).
#[derive(Debug)]
pub(crate) struct Journal {
    state: Mutex<State>,
    room: Condvar,
}

#[derive(Debug)]
struct State {
    store: Store,
    next: u64,
    /// Handed over, not yet applied.
    pending: usize,
    /// Client id → session tag, for replay.
    sessions: HashMap<String, usize>,
    replayed: bool,
    /// The inbound QoS 2 records (client id, packet id, stamp) that the
    /// entries a previous run left name as released.
    left_released: HashSet<(String, u16, u64)>,
    /// Where the last "applied" mark ends in the file.
    marked: u64,
    /// Tombstones written by this run, oldest first (numbers).
    tombstones: Vec<u64>,
    /// Tombstones a previous run left (numbers): dropped once replayed.
    left_tombstones: Vec<u64>,
    /// With group commit: the entries below this number have their `r-`
    /// removals written (commit.rs), so their tombstones may be cleared.
    /// `None` without it: Paho writes a removal right after the callback.
    removals_below: Option<u64>,
}

/// What a tombstone starts with: no entry does (an entry starts with its
/// client id's length, and no client id is 4 GiB long).
const TOMBSTONE: [u8; 4] = [0xff; 4];

/// The mark of an applied message that named Paho's record `(msgid,
/// stamp)` of client `client_id`.
fn tombstone(client_id: &str, msgid: u16, stamp: u64) -> Vec<u8> {
    let mut out = TOMBSTONE.to_vec();
    out.extend_from_slice(&(client_id.len() as u32).to_le_bytes());
    out.extend_from_slice(client_id.as_bytes());
    out.extend_from_slice(&msgid.to_le_bytes());
    out.extend_from_slice(&stamp.to_le_bytes());
    out
}

/// (client id, packet id, stamp) of a tombstone.
fn tombstone_of(bytes: &[u8]) -> Option<(String, u16, u64)> {
    let rest = bytes.strip_prefix(&TOMBSTONE)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let client = String::from_utf8(rest.get(4..4 + len)?.to_vec()).ok()?;
    let rest = rest.get(4 + len..)?;
    let msgid = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?);
    let stamp = u64::from_le_bytes(rest.get(2..10)?.try_into().ok()?);
    Some((client, msgid, stamp))
}

/// A message as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) client_id: String,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: i32,
    pub(crate) retained: bool,
    /// For a QoS 2 message handed over on the broker's PUBREL: its packet
    /// id and the stamp of Paho's record of it, which this entry makes
    /// redundant (persist.rs, `forget_journaled`).
    pub(crate) release: Option<(u16, u64)>,
}

/// Set on the QoS byte of an entry that names a released record.
const RELEASE: u8 = 0x80;

impl Entry {
    pub(crate) fn message(&self) -> mqtt::Message {
        crate::options::message(&self.topic, self.payload.clone(), self.qos, self.retained)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [self.client_id.as_bytes(), self.topic.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        let flag = if self.release.is_some() { RELEASE } else { 0 };
        out.push(self.qos as u8 | flag);
        out.push(u8::from(self.retained));
        if let Some((msgid, stamp)) = self.release {
            out.extend_from_slice(&msgid.to_le_bytes());
            out.extend_from_slice(&stamp.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut at = 0;
        let mut text = || -> Option<String> {
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let s = String::from_utf8(bytes.get(at + 4..at + 4 + len)?.to_vec()).ok()?;
            at += 4 + len;
            Some(s)
        };
        let client_id = text()?;
        let topic = text()?;
        let flags = *bytes.get(at)?;
        let retained = *bytes.get(at + 1)? != 0;
        at += 2;
        let release = if flags & RELEASE != 0 {
            let msgid = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
            let stamp = u64::from_le_bytes(bytes.get(at + 2..at + 10)?.try_into().ok()?);
            at += 10;
            Some((msgid, stamp))
        } else {
            None
        };
        Some(Entry {
            client_id,
            topic,
            payload: bytes.get(at..)?.to_vec(),
            qos: i32::from(flags & !RELEASE),
            retained,
            release,
        })
    }
}

impl Journal {
    pub(crate) fn open(path: PathBuf, sync: SyncMode) -> std::io::Result<Journal> {
        let store = Store::open(path, sync)?;
        let next = store
            .live()
            .keys()
            .filter_map(|k| k.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let mut left_released = HashSet::new();
        let (mut pending, mut left_tombstones) = (0, Vec::new());
        for (key, value) in store.live() {
            if let Some(named) = tombstone_of(value) {
                left_released.insert(named);
                left_tombstones.extend(key.parse::<u64>().ok());
                continue;
            }
            pending += 1;
            if let Some(e) = Entry::decode(value) {
                if let Some((msgid, stamp)) = e.release {
                    left_released.insert((e.client_id, msgid, stamp));
                }
            }
        }
        Ok(Journal {
            state: Mutex::new(State {
                pending,
                store,
                next,
                sessions: HashMap::new(),
                replayed: false,
                left_released,
                marked: 0,
                tombstones: Vec::new(),
                left_tombstones,
                removals_below: None,
            }),
            room: Condvar::new(),
        })
    }

    pub(crate) fn register(&self, client_id: &str, tag: usize) {
        if let Ok(mut st) = self.state.lock() {
            st.sessions.insert(client_id.to_string(), tag);
        }
    }

    /// The records of `client_id` (packet id, stamp) that released messages
    /// a previous run left here: they are redundant now.
    pub(crate) fn left_released(&self, client_id: &str) -> Vec<(u16, u64)> {
        let Ok(st) = self.state.lock() else {
            return Vec::new();
        };
        st.left_released
            .iter()
            .filter(|(id, _, _)| id == client_id)
            .map(|&(_, msgid, stamp)| (msgid, stamp))
            .collect()
    }

    /// The messages a previous run left unapplied, oldest first, with their
    /// session tags; once per journal. Those of sessions this run does not
    /// have (another `--count`) are dropped with a warning.
    pub(crate) fn take_replay(&self) -> Vec<(u64, usize, Entry)> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        if st.replayed {
            return Vec::new();
        }
        st.replayed = true;
        // Every session is made by now (a fleet makes them all before it
        // connects), and each made its log durable without the records the
        // tombstones name (`forget_journaled`): they have done their part.
        for seq in std::mem::take(&mut st.left_tombstones) {
            let _ = st.store.remove_when(&seq.to_string(), When::Later);
        }
        let mut old: Vec<(u64, Entry)> = st
            .store
            .live()
            .iter()
            .filter(|(_, v)| tombstone_of(v).is_none())
            .filter_map(|(k, v)| Some((k.parse().ok()?, Entry::decode(v)?)))
            .collect();
        old.sort_by_key(|(seq, _)| *seq);
        let mut out = Vec::new();
        for (seq, entry) in old {
            match st.sessions.get(&entry.client_id) {
                Some(&tag) => out.push((seq, tag, entry)),
                None => {
                    warn!(
                        "dropping a message on {} kept for client {:?}, which this run does not have",
                        entry.topic, entry.client_id
                    );
                    let _ = st.store.remove(&seq.to_string());
                    st.pending = st.pending.saturating_sub(1);
                }
            }
        }
        out
    }

    /// Writes a message down; returns its number. Waits while [`ROOM`]
    /// messages are pending, unless `stopping` says a stop is under way.
    pub(crate) fn record(&self, entry: &Entry, stopping: impl Fn() -> bool) -> Option<u64> {
        let mut st = self.state.lock().ok()?;
        // Past the room while a publication waits for the worker
        // (handoff.rs): else the three would wait for one another.
        while st.pending >= ROOM && !stopping() && !HANDOFF.outstanding() {
            st = self
                .room
                .wait_timeout(st, std::time::Duration::from_millis(50))
                .ok()?
                .0;
        }
        let seq = st.next;
        st.next += 1;
        let written = st
            .store
            .put_when(&seq.to_string(), entry.encode(), When::Later);
        st.pending += 1;
        let disk = st.store.durability();
        // Synced without the lock: the program's thread may mark meanwhile,
        // and one sync covers both.
        drop(st);
        match written {
            // With group commit, before Paho acknowledges it, with the
            // others of the burst.
            Ok(pos) if crate::commit::on() => crate::commit::gate(disk, pos),
            Ok(pos) => {
                if let Err(e) = disk.to(pos) {
                    warn!("cannot sync the inbox journal: {e}");
                }
            }
            Err(e) => warn!("cannot write the inbox journal: {e}"),
        }
        Some(seq)
    }

    /// The program has acted on message `seq`.
    pub(crate) fn applied(&self, seq: u64) {
        // Room first: Paho's thread may be waiting for it while holding
        // Paho's lock, which the worker needs to hand over what we wait
        // for next. Only a full journal has a waiter: waking nobody still
        // costs a system call, once per message.
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let was_full = st.pending >= ROOM;
        st.pending = st.pending.saturating_sub(1);
        drop(st);
        if was_full || HANDOFF.outstanding() {
            self.room.notify_all();
        }
        // What the program published in answer to the message goes to
        // Paho's persistence before the mark (handoff.rs).
        if !HANDOFF.wait(OP_TIMEOUT) {
            warn!(
                "publications still queued after {}s; marking the message applied anyway",
                OP_TIMEOUT.as_secs()
            );
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let key = seq.to_string();
        let released = st.store.live().get(&key).and_then(|v| {
            let e = Entry::decode(v)?;
            let (msgid, stamp) = e.release?;
            Some(tombstone(&e.client_id, msgid, stamp))
        });
        let written = match released {
            Some(mark) => {
                st.tombstones.push(seq);
                st.store.put_when(&key, mark, When::Later).map(Some)
            }
            None => st.store.remove_when(&key, When::Later),
        };
        match written {
            Ok(Some(pos)) => st.marked = st.marked.max(pos),
            Ok(None) => {}
            Err(e) => warn!("cannot write the inbox journal: {e}"),
        }
        // Those whose records' removals are written. Without group commit,
        // all but the newest: Paho removes a record after our callback
        // returns, so the newest one's removal may not be written yet; every
        // older one's was, before the callback of the message after it.
        let clear: Vec<u64> = if st.tombstones.len() < CLEAR_AT {
            Vec::new()
        } else if let Some(below) = st.removals_below {
            let (clear, keep) = st.tombstones.iter().partition(|&&t| t < below);
            st.tombstones = keep;
            clear
        } else {
            let n = st.tombstones.len() - 1;
            st.tombstones.drain(..n).collect()
        };
        drop(st);
        if !clear.is_empty() {
            self.clear_tombstones(clear);
        }
        // On the disk now rather than when the next message comes: the
        // program waits for the sync either way while messages queue, but
        // when they come one by one it is done before the next arrives
        // (ping-pong latency: one sync fewer on its path).
        self.settle();
    }

    /// Removes tombstones once the removals of the records they name are on
    /// the disk. Their own removal need not be synced: lost, they name
    /// records that are gone.
    fn clear_tombstones(&self, seqs: Vec<u64>) {
        if let Err(e) = settle_lazy() {
            warn!("cannot sync the client persistence: {e}");
            if let Ok(mut st) = self.state.lock() {
                // Tried again with the next batch.
                let newer = std::mem::replace(&mut st.tombstones, seqs);
                st.tombstones.extend(newer);
            }
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for seq in seqs {
            if let Err(e) = st.store.remove_when(&seq.to_string(), When::Later) {
                warn!("cannot write the inbox journal: {e}");
            }
        }
    }

    /// Before the next message is handed over: the last "applied" mark on
    /// the disk (usually [`Journal::applied`] did it already).
    pub(crate) fn settle(&self) {
        let Ok(st) = self.state.lock() else {
            return;
        };
        let (pos, disk) = (st.marked, st.store.durability());
        drop(st);
        if let Err(e) = disk.to(pos) {
            warn!("cannot sync the inbox journal: {e}");
        }
    }

    /// At a clean close: everything on the disk.
    pub(crate) fn flush(&self) {
        let _ = settle_lazy();
        if let Ok(st) = self.state.lock() {
            let _ = st.store.flush();
        }
        crate::store::report_stats();
    }
}

impl crate::commit::Watcher for Journal {
    fn next_seq(&self) -> u64 {
        self.state.lock().map_or(0, |st| st.next)
    }

    fn removals_written(&self, below: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.removals_below = Some(st.removals_below.map_or(below, |b| b.max(below)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str) -> Entry {
        Entry {
            client_id: "LEDClient".into(),
            topic: topic.into(),
            payload: br#"{"level": 5}"#.to_vec(),
            qos: 2,
            retained: true,
            release: None,
        }
    }

    #[test]
    fn unapplied_messages_come_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let j = Journal::open(path.clone(), SyncMode::Never).expect("open");
        let seqs: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|t| j.record(&entry(t), || false).expect("recorded"))
            .collect();
        j.applied(seqs[0]);
        drop(j); // a crash

        let j = Journal::open(path, SyncMode::Never).expect("open");
        j.register("LEDClient", 7);
        let back: Vec<(usize, String)> = j
            .take_replay()
            .into_iter()
            .map(|(_, tag, e)| (tag, e.topic))
            .collect();
        assert_eq!(back, [(7, "b".to_string()), (7, "c".to_string())]);
        assert!(j.take_replay().is_empty(), "replayed once");
        let next = j.record(&entry("d"), || false).expect("recorded");
        assert!(next > seqs[2], "numbers keep growing");
    }

    #[test]
    fn entries_round_trip() {
        let e = entry("tank/1/level");
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        let released = Entry {
            release: Some((65535, u64::MAX - 1)),
            ..e
        };
        assert_eq!(Entry::decode(&released.encode()), Some(released));
        assert_eq!(Entry::decode(b"\x01"), None);
    }

    #[test]
    fn the_records_left_entries_released_are_known_at_the_next_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let j = Journal::open(path.clone(), SyncMode::Never).expect("open");
        let released = |id| Entry {
            release: Some((id, 77)),
            ..entry("led")
        };
        let applied = j.record(&released(1), || false).expect("recorded");
        j.record(&released(2), || false).expect("recorded");
        j.record(&entry("led"), || false).expect("recorded");
        j.applied(applied);
        assert!(j.left_released("LEDClient").is_empty(), "this run's own");
        drop(j); // a crash

        let j = Journal::open(path, SyncMode::Never).expect("open");
        // The applied one too (its tombstone), not the one that released
        // nothing.
        let mut named = j.left_released("LEDClient");
        named.sort_unstable();
        assert_eq!(named, [(1, 77), (2, 77)]);
        assert!(j.left_released("other").is_empty());
        j.register("LEDClient", 0);
        let replayed: Vec<Option<(u16, u64)>> = j
            .take_replay()
            .into_iter()
            .map(|(_, _, e)| e.release)
            .collect();
        assert_eq!(replayed, [Some((2, 77)), None], "not the applied one");
    }

    #[test]
    fn tombstones_are_cleared_in_batches_but_the_newest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let j = Journal::open(path.clone(), SyncMode::Always).expect("open");
        let released = |id: u16| Entry {
            release: Some((id, u64::from(id) + 1000)),
            ..entry("led")
        };
        for id in 0..CLEAR_AT as u16 {
            let seq = j.record(&released(id), || false).expect("recorded");
            j.applied(seq);
        }
        j.flush();
        drop(j);
        let j = Journal::open(path.clone(), SyncMode::Always).expect("open");
        let last = CLEAR_AT as u16 - 1;
        assert_eq!(
            j.left_released("LEDClient"),
            [(last, u64::from(last) + 1000)]
        );
        j.register("LEDClient", 0);
        assert!(j.take_replay().is_empty(), "a tombstone is not replayed");
        j.flush();
        drop(j);
        let j = Journal::open(path, SyncMode::Always).expect("open");
        assert!(
            j.left_released("LEDClient").is_empty(),
            "dropped once replayed"
        );
    }

    #[test]
    fn with_group_commit_only_tombstones_whose_removals_are_written_go() {
        use crate::commit::Watcher;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j");
        let j = Journal::open(path.clone(), SyncMode::Always).expect("open");
        j.removals_written(0); // as commit::watch does
        let released = |id: u16| Entry {
            release: Some((id, u64::from(id) + 1000)),
            ..entry("led")
        };
        let n = 2 * CLEAR_AT as u16;
        for id in 0..n {
            let seq = j.record(&released(id), || false).expect("recorded");
            if id == CLEAR_AT as u16 {
                // A commit wrote the removals of the entries so far.
                j.removals_written(seq);
            }
            j.applied(seq);
        }
        j.flush();
        drop(j);
        let j = Journal::open(path, SyncMode::Always).expect("open");
        let mut left = j.left_released("LEDClient");
        left.sort_unstable();
        let kept: Vec<(u16, u64)> = (CLEAR_AT as u16..n)
            .map(|id| (id, u64::from(id) + 1000))
            .collect();
        assert_eq!(left, kept, "those a commit had not written stay");
    }

    #[test]
    fn a_tombstone_round_trips() {
        assert_eq!(
            tombstone_of(&tombstone("LEDClient", 7, u64::MAX)),
            Some(("LEDClient".to_string(), 7, u64::MAX))
        );
        assert_eq!(Entry::decode(&tombstone("LEDClient", 7, 1)), None);
        assert_eq!(tombstone_of(&entry("led").encode()), None);
    }
}
