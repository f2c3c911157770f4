//! The proxy's faults, seen from raw sockets on both sides (exact: RST or
//! FIN, how many bytes) and from Paho peers through a real Mosquitto.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use paho_mqtt as mqtt;

use super::*;
use crate::{wait_until, Broker, Peer};

/// A proxy in front of a plain listener, and one connection through it:
/// (client's end, server's end).
fn raw_pair() -> (Proxy, TcpListener, TcpStream, TcpStream) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(server.local_addr().unwrap().port());
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    let (mut far, _) = server.accept().unwrap();
    for s in [&client, &far] {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    // Both ways pass.
    client.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    far.read_exact(&mut buf).unwrap();
    far.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    (proxy, server, client, far)
}

fn read_err(mut s: &TcpStream) -> ErrorKind {
    let mut buf = [0; 64];
    match s.read(&mut buf) {
        Ok(n) => panic!("read {n} bytes, not an error"),
        Err(e) => e.kind(),
    }
}

#[test]
fn reset_all_sends_rst_both_ways() {
    let (proxy, _server, client, far) = raw_pair();
    assert_eq!(proxy.reset_all(), 1);
    assert_eq!(read_err(&client), ErrorKind::ConnectionReset);
    assert_eq!(read_err(&far), ErrorKind::ConnectionReset);
    assert_eq!(proxy.connections(), 0);
    assert_eq!(proxy.counts().reset, 1);
}

#[test]
fn reset_some_picks_by_the_seed() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(server.local_addr().unwrap().port());
    let _clients: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.port())).unwrap())
        .collect();
    let _fars: Vec<TcpStream> = (0..10).map(|_| server.accept().unwrap().0).collect();
    wait_until("10 connections", DEADLINE, || proxy.connections() == 10);
    assert_eq!(proxy.reset_some(0.25, &mut Rng::new(1)), 3);
    assert_eq!(proxy.connections(), 7);
}

#[test]
fn a_cut_forwards_half_a_chunk_then_closes() {
    let (proxy, _server, mut client, mut far) = raw_pair();
    assert_eq!(proxy.cut_mid_packet(), 1);
    client.write_all(b"0123456789").unwrap();
    let mut got = Vec::new();
    far.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"01234", "half, then FIN");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "FIN to the client too");
    assert_eq!(proxy.counts().cut, 1);
}

#[test]
fn refusing_closes_the_port_and_reopens_the_same_one() {
    let (proxy, server, _client, _far) = raw_pair();
    proxy.refuse(true);
    let e = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    proxy.refuse(false);
    let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    let (mut f, _) = server.accept().unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0; 1];
    f.read_exact(&mut b).unwrap();
    assert_eq!(proxy.counts().refusals, 1);
}

#[test]
fn a_dead_target_is_a_reset_at_once() {
    let port = crate::free_port();
    let proxy = Proxy::start(port);
    let c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(read_err(&c), ErrorKind::ConnectionReset);
    assert_eq!(proxy.counts().target_down, 1);
}

#[test]
fn dropping_the_proxy_resets_its_connections_and_closes_its_port() {
    let (proxy, _server, client, far) = raw_pair();
    let port = proxy.port();
    drop(proxy);
    assert_eq!(read_err(&client), ErrorKind::ConnectionReset);
    assert_eq!(read_err(&far), ErrorKind::ConnectionReset);
    let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn a_stalled_connection_delivers_nothing_until_resumed() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port);
    let through = Peer::at(&proxy.uri(), "through");
    through.subscribe("t");
    let direct = Peer::connect(&broker, "direct");
    proxy.stall(true);
    direct.publish("t", "held", 1, false);
    assert!(through.drain(Duration::from_millis(500)).is_empty());
    proxy.stall(false);
    through.expect("t", "held");
}

#[test]
fn a_peer_reset_reconnects_once_the_port_takes_connections_again() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port);
    let peer = Peer::at(&proxy.uri(), "p");
    assert_eq!(proxy.reset_all(), 1);
    wait_until("the peer to see the reset", DEADLINE, || {
        !peer.client.is_connected()
    });
    proxy.refuse(true);
    assert!(peer.client.reconnect().is_err());
    proxy.refuse(false);
    peer.client.reconnect().unwrap();
    peer.subscribe("back");
    peer.publish("back", "yes", 1, false);
    peer.expect("back", "yes");
}

#[test]
fn half_open_swallows_and_its_end_resets_the_client_only() {
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port);
    let watcher = broker.watcher(&["h"]);
    let opts = mqtt::ConnectOptionsBuilder::new_v3()
        .clean_session(false)
        .finalize();
    let peer = Peer::connect_with(&proxy.uri(), "nat", opts).unwrap();
    proxy.half_open(true);
    peer.publish("h", "lost", 0, false);
    assert!(watcher.drain(Duration::from_millis(500)).is_empty());
    assert!(peer.client.is_connected(), "the client cannot tell");
    proxy.half_open(false);
    wait_until("the client to get RST", DEADLINE, || {
        !peer.client.is_connected()
    });
    // The broker still holds the old connection until the client's return
    // takes its session over.
    assert_eq!(proxy.connections(), 1);
    let rsp = peer.client.reconnect().unwrap();
    assert!(rsp.connect_response().unwrap().session_present);
    // A round trip: Paho's callback thread is done with the reconnect
    // (dropping a client it still holds there deadlocks every client).
    peer.subscribe("h");
    wait_until("the stale connection to be closed", DEADLINE, || {
        proxy.connections() == 1 && proxy.counts().accepted == 2
    });
    let c = proxy.counts();
    assert_eq!((c.half_opens, c.half_open_reset), (1, 1), "{c:?}");
}

#[test]
fn a_schedule_replays_from_its_seed_and_uses_every_fault() {
    let steps = |seed| {
        let mut c = Chaos::with_seed(seed).restarting(|| {});
        (0..200).map(|_| c.next_step()).collect::<Vec<_>>()
    };
    assert_eq!(steps(42), steps(42));
    assert_ne!(steps(42), steps(43));
    let kinds: std::collections::HashSet<String> = steps(42)
        .iter()
        .map(|(f, _)| format!("{f:?}").split('(').next().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    let mut plain = Chaos::with_seed(42);
    assert!((0..200).all(|_| plain.next_step().0 != Fault::RestartBroker));
}

#[test]
fn a_short_chaos_run_ends_healed() {
    let mut broker = Broker::start();
    let proxy = Proxy::start(broker.port);
    let _peers: Vec<Peer> = (0..3)
        .map(|i| Peer::at(&proxy.uri(), &format!("c{i}")))
        .collect();
    let mut restarts = 0;
    let steps = Chaos::with_seed(5)
        .restarting(|| {
            restarts += 1;
            broker.restart();
        })
        .run(&proxy, Duration::from_secs(3));
    assert!(!steps.is_empty());
    assert_eq!(
        restarts,
        steps
            .iter()
            .filter(|(_, f)| *f == Fault::RestartBroker)
            .count()
    );
    // Everything passes again.
    let after = Peer::at(&proxy.uri(), "after");
    after.subscribe("ok");
    after.publish("ok", "1", 1, false);
    after.expect("ok", "1");
}
