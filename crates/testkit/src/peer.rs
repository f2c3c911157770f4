//! A plain Paho client for the test's side of the conversation.

use std::time::{Duration, Instant};

use paho_mqtt as mqtt;

use crate::{Broker, DEADLINE};

/// A plain Paho client for the test's side of the conversation.
pub struct Peer {
    pub client: mqtt::Client,
    rx: mqtt::SyncReceiver<Option<mqtt::Message>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peer")
    }
}

impl Peer {
    /// A peer on `broker` with a clean session.
    pub fn connect(broker: &Broker, id: &str) -> Peer {
        let opts = mqtt::ConnectOptionsBuilder::new_v3()
            .clean_session(true)
            .finalize();
        Peer::connect_with(&broker.uri(), id, opts).unwrap()
    }

    /// A peer that logs in at `uri` with `opts` (TLS, user name,
    /// password); a refusal is returned, for tests of refused logins.
    pub fn connect_with(
        uri: &str,
        id: &str,
        opts: mqtt::ConnectOptions,
    ) -> Result<Peer, mqtt::Error> {
        let create = mqtt::CreateOptionsBuilder::new_v3()
            .server_uri(uri)
            .client_id(id)
            .persistence(None)
            .finalize();
        let mut client = mqtt::Client::new(create)?;
        client.set_timeout(Duration::from_secs(10));
        let rx = client.start_consuming();
        if let Err(e) = client.connect(opts) {
            // Paho's callback thread may still hold a reference to a client
            // whose connect just failed; if its drop there is the last one,
            // MQTTAsync_destroy takes Paho's global lock inside a callback that
            // already holds it, and every client in the process hangs. A test
            // can afford to leak the refused client instead.
            std::mem::forget(client);
            return Err(e);
        }
        Ok(Peer { client, rx })
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: i32, retained: bool) {
        let msg = mqtt::MessageBuilder::new()
            .topic(topic)
            .payload(payload.into())
            .qos(qos)
            .retained(retained)
            .finalize();
        self.client.publish(msg).unwrap();
    }

    pub fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, 2).unwrap();
    }

    /// A peer with a clean session at `uri` (a node of a [`Cluster`]).
    pub fn at(uri: &str, id: &str) -> Peer {
        let opts = mqtt::ConnectOptionsBuilder::new_v3()
            .clean_session(true)
            .finalize();
        Peer::connect_with(uri, id, opts).unwrap()
    }

    /// A peer already subscribed to `filters`.
    pub fn watching(broker: &Broker, id: &str, filters: &[&str]) -> Peer {
        let p = Peer::connect(broker, id);
        for f in filters {
            p.subscribe(f);
        }
        p
    }

    /// The one receive loop: hands each message to `f` until `f` returns
    /// something, or gives up (None) once `limit` passes. Paho's "connection
    /// lost" markers (`None` messages) are skipped.
    pub fn watch<T>(
        &self,
        limit: Duration,
        mut f: impl FnMut(mqtt::Message) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(msg) = self.rx.recv_timeout(left) else {
                return None;
            };
            if let Some(out) = msg.and_then(&mut f) {
                return Some(out);
            }
        }
    }

    /// Waits until every one of `topics` has carried `payload`, in any
    /// order (a fleet connects several devices at once).
    pub fn expect_all(&self, topics: &[String], payload: &str) {
        let mut missing: std::collections::HashSet<&str> =
            topics.iter().map(String::as_str).collect();
        if missing.is_empty() {
            return;
        }
        let found = self.watch(DEADLINE, |m| {
            if m.payload_str() == payload {
                missing.remove(m.topic());
            }
            missing.is_empty().then_some(())
        });
        if found.is_none() {
            panic!("no {payload:?} within {DEADLINE:?} on {missing:?}");
        }
    }

    /// The next message, or panics after `limit`.
    pub fn recv(&self, limit: Duration) -> mqtt::Message {
        self.watch(limit, Some)
            .unwrap_or_else(|| panic!("no message within {limit:?}"))
    }

    /// Waits for a message on `topic` whose payload is `payload`.
    pub fn expect(&self, topic: &str, payload: &str) -> mqtt::Message {
        let mut seen = Vec::new();
        let found = self.watch(DEADLINE, |m| {
            if m.topic() == topic && m.payload_str() == payload {
                return Some(m);
            }
            seen.push(format!("{} {}", m.topic(), m.payload_str()));
            None
        });
        found.unwrap_or_else(|| panic!("no {topic} {payload:?} within {DEADLINE:?}; saw {seen:?}"))
    }

    /// Whatever arrives within `window`: for asserting that nothing does.
    pub fn drain(&self, window: Duration) -> Vec<mqtt::Message> {
        let mut out = Vec::new();
        let _ = self.watch(window, |m| -> Option<()> {
            out.push(m);
            None
        });
        out
    }
}
