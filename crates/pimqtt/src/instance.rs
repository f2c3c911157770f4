//! The instance mark: how a session learns, as a fact, that another process
//! uses its client id (a service and a manual run), on MQTT 3.1.1 too.
//!
//! MQTT 5 says so in the broker's DISCONNECT (0x8E, "session taken over").
//! MQTT 3.1.1 says nothing: the connection just ends, as it does on a reset,
//! a broker restart or a NAT forgetting it. So each session writes a mark of
//! its own (random, per process) as a retained message on
//! `pimqtt/instance/<client id>` at every connect, and subscribes to it
//! first. The retained value read back at a connect is the last one
//! written: if this process has already read its own there, and now reads
//! another, some other process wrote it since, with our client id. Nothing
//! about timing or networks can produce that; only a second client can.

use std::hash::{BuildHasher, Hasher};

use crate::reconnect::Fact;

/// The retained topic of `client_id`'s mark, when the id can be a topic
/// level (an id with `/`, `+`, `#` or none at all has no mark, and the
/// same-id advice then comes only from MQTT 5's reason code).
pub(crate) fn topic(client_id: &str) -> Option<String> {
    let usable = !client_id.is_empty()
        && !client_id.starts_with('$')
        && !client_id.contains(['/', '+', '#', '\0']);
    usable.then(|| format!("pimqtt/instance/{client_id}"))
}

/// A mark no other process will write: the pid and 64 random bits (std's
/// hasher keys are random per process).
pub(crate) fn new_mark() -> String {
    format!("{}-{:016x}", std::process::id(), random())
}

/// 64 random bits, from the standard library's per-process random keys.
pub(crate) fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// What one session has read of its mark.
#[derive(Debug)]
pub(crate) struct Mark {
    pub(crate) mine: String,
    /// Read back our own mark at least once: from then on the broker held
    /// it, so anything else there was written after by someone else.
    seen_own: bool,
}

impl Mark {
    pub(crate) fn new(mine: String) -> Mark {
        Mark {
            mine,
            seen_own: false,
        }
    }

    /// A message on the mark topic: the fact it tells, if any. `retained`:
    /// sent because we subscribed (the value the broker held at the
    /// connect), rather than the echo of our own write just after. A mark
    /// read before our own was ever seen may be a previous run's: no fact.
    /// An empty payload is someone clearing the topic: no fact either.
    pub(crate) fn read(&mut self, payload: &[u8], retained: bool) -> Option<Fact> {
        if payload.is_empty() {
            return None;
        }
        if payload == self.mine.as_bytes() {
            self.seen_own = true;
            // Only the value held at the connect says nobody wrote since.
            return retained.then_some(Fact::OwnInstance);
        }
        self.seen_own.then_some(Fact::OtherInstance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_that_are_one_topic_level_have_a_mark() {
        assert_eq!(
            topic("tank-sensor-4").as_deref(),
            Some("pimqtt/instance/tank-sensor-4")
        );
        for bad in ["", "a/b", "a+", "#", "$SYS"] {
            assert_eq!(topic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn marks_differ_between_sessions() {
        assert_ne!(new_mark(), new_mark());
    }

    #[test]
    fn a_previous_runs_mark_is_no_fact_another_written_after_ours_is() {
        let mut m = Mark::new("me".into());
        // Start: the retained mark of the run before (this id's service
        // restarted), then the echo of ours as we write it.
        assert_eq!(m.read(b"old-run", true), None);
        assert_eq!(m.read(b"me", false), None);
        // Reconnects after resets, restarts, cuts: ours is still there.
        assert_eq!(m.read(b"me", true), Some(Fact::OwnInstance));
        // Someone wrote after us: a second client with our id. The echo of
        // our own write that follows says nothing against it.
        assert_eq!(m.read(b"twin", true), Some(Fact::OtherInstance));
        assert_eq!(m.read(b"me", false), None);
        assert_eq!(m.read(b"", true), None, "cleared by hand: no fact");
    }
}
