//! Benchmark of led-client against `mosquitto_sub -c -q 2` (libmosquitto, C:
//! our floor), side by side in the same run on the same private Mosquitto
//! (persistence on, the queue limits of `mosquitto/pi-mqtt.conf`), on the
//! Mosquitto `PIMQTT_MOSQUITTO` names. Run by `scripts/bench`.
//!
//! Measures, for each of the two subscribers:
//! (a) draining a durable backlog of N QoS 2 messages queued while it was
//!     offline, from process start to the last output line (led-client
//!     with each `--sync` mode, with the disk syncs and bytes it wrote to
//!     its state files per message, from `PIMQTT_STORE_STATS`);
//! (b) ping-pong latency of single QoS 2 messages (publish to output line),
//!     the two subscribers' pings alternating (led-client with the default
//!     `--sync always`, then with `--sync batched`);
//! (c) resident memory idle and at peak while draining;
//! (d) time from process start to the first (retained) message;
//! (e) after a broker restart, time from the broker accepting connections
//!     again to the next message being output.
//!
//! Usage: led-bench LED_CLIENT [--messages N] [--pings M] [--runs R] [--only PARTS]
//! (`--only ae` runs parts (a) and (e) alone, e.g. while tuning one.)

#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{client, kill_all_on_panic, max, median, percentile, track, Sub, Table};
use paho_mqtt as mqtt;
use pimqtt_testkit::{signal, Broker, Peer};

struct Opts {
    led: PathBuf,
    messages: usize,
    pings: usize,
    runs: usize,
    /// Letters of the parts to run; empty for all.
    only: String,
}

impl Opts {
    fn part(&self, letter: char) -> bool {
        self.only.is_empty() || self.only.contains(letter)
    }
}

const USAGE: &str =
    "usage: led-bench LED_CLIENT [--messages N] [--pings M] [--runs R] [--only PARTS]
  LED_CLIENT     the led-client binary to measure (beside mosquitto_sub)
  --messages N   backlog size for (a), default 10000
  --pings M      round trips for (b), default 1000
  --runs R       runs of each part (medians are printed), default 5
  --only PARTS   letters of the parts to run, e.g. ab (default: all, a to e)";

/// The command line; a bad one prints the usage and exits (a tool run by
/// hand and by scripts/bench, not a test).
fn opts() -> Opts {
    let usage = |code: i32| -> ! {
        if code == 0 {
            println!("{USAGE}");
        } else {
            eprintln!("{USAGE}");
        }
        std::process::exit(code)
    };
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        led: PathBuf::new(),
        messages: 10_000,
        pings: 1000,
        runs: 5,
        only: String::new(),
    };
    while let Some(a) = args.next() {
        let mut num = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(|| usage(2))
        };
        match a.as_str() {
            "-h" | "--help" => usage(0),
            "--messages" => o.messages = num(),
            "--pings" => o.pings = num(),
            "--runs" => o.runs = num(),
            "--only" => o.only = args.next().unwrap_or_else(|| usage(2)),
            s if s.starts_with('-') => usage(2),
            _ => o.led = PathBuf::from(a),
        }
    }
    if !o.led.is_file() {
        eprintln!("led-bench: no led-client at {:?}", o.led);
        usage(2);
    }
    o
}

struct Bench {
    broker: Broker,
    led: PathBuf,
    state: tempfile::TempDir,
    o: Opts,
}

fn level(i: usize) -> String {
    format!(r#"{{"level": {}}}"#, i % 101)
}

impl Bench {
    fn port(&self) -> String {
        self.broker.port.to_string()
    }

    /// led-client with the simulated LED, as client `id`.
    fn ours(&self, id: &str) -> Command {
        let mut c = Command::new(&self.led);
        let port = self.port();
        c.args(["--led", "sim", "-h", "127.0.0.1", "-p", &port, "-i", id])
            .arg("--state-dir")
            .arg(self.state.path());
        c
    }

    /// The same with `--sync mode`.
    fn ours_syncing(&self, id: &str, mode: &str) -> Command {
        let mut c = self.ours(id);
        c.args(["--sync", mode]);
        c
    }

    /// `mosquitto_sub -q 2 -t led` as client `id`, with `extra` flags.
    fn reference(&self, id: &str, extra: &[&str]) -> Command {
        self.reference_on("led", id, extra)
    }

    /// The same on another topic.
    fn reference_on(&self, topic: &str, id: &str, extra: &[&str]) -> Command {
        let mut c = Command::new("mosquitto_sub");
        let port = self.port();
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "2",
            "-t",
            topic,
            "-i",
            id,
        ]);
        c.args(extra);
        c
    }

    /// Publishes `n` QoS 2 level messages (not retained), all acknowledged.
    fn publish_levels(&self, n: usize) {
        let cli = client(&self.broker.uri(), "bench-pub", n + 10);
        let mut toks = Vec::new();
        for i in 0..n {
            toks.push(cli.publish(mqtt::Message::new("led", level(i), 2)));
            if toks.len() >= 20 {
                for t in toks.drain(..) {
                    t.wait().unwrap();
                }
            }
        }
        for t in toks {
            t.wait().unwrap();
        }
        cli.disconnect(None).wait().unwrap();
    }

    /// Creates (or keeps) the durable sessions of both subscribers.
    fn make_sessions(&self) {
        let st = self.reference("bench-ref", &["-c", "-E"]).status().unwrap();
        assert!(st.success());
        let w = Peer::watching(&self.broker, "bench-watch", &["led/status"]);
        let mut p = self
            .ours("bench-led")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        track(p.id());
        w.expect("led/status", "online");
        signal(p.id(), "INT");
        p.wait().unwrap();
    }

    /// Drains the backlog; returns (seconds, peak KiB).
    fn drain(&self, mut cmd: Command, n: usize, prefix: &str) -> (f64, u64) {
        let sub = Sub::spawn(&mut cmd);
        let mut last = sub.started;
        for _ in 0..n {
            let (t, line) = sub.next_line();
            assert!(line.starts_with(prefix), "unexpected output {line:?}");
            last = t;
        }
        let secs = (last - sub.started).as_secs_f64();
        std::thread::sleep(Duration::from_millis(5));
        let peak = sub.peak_kib();
        sub.stop();
        (secs, peak)
    }

    /// One message on `topic`, publish to `sub`'s output line, in ms.
    fn ping(sub: &Sub, pubr: &mqtt::AsyncClient, topic: &str, i: usize) -> f64 {
        let t0 = Instant::now();
        let tok = pubr.publish(mqtt::Message::new(topic, level(i), 2));
        let (t1, _) = sub.next_line();
        tok.wait().unwrap();
        (t1 - t0).as_secs_f64() * 1000.0
    }

    /// (a) + (c peak): a durable backlog, drained by led-client with each
    /// `--sync` mode, each beside a drain of the same size by mosquitto_sub.
    fn backlog(&self, table: &mut Table) {
        let n = self.o.messages;
        self.make_sessions();
        let modes = ["always", "batched", "never"];
        let mut ours_t = vec![Vec::new(); modes.len()];
        let mut ref_t = vec![Vec::new(); modes.len()];
        // Per mode: syncs and bytes, summed over the runs.
        let mut disk = vec![(0u64, 0u64); modes.len()];
        let (mut ours_peak, mut ref_peak) = (0u64, 0u64);
        let stats_dir = tempfile::tempdir().unwrap();
        let stats = stats_dir.path().join("stats");
        for _ in 0..self.o.runs {
            for (m, mode) in modes.iter().enumerate() {
                self.publish_levels(n);
                let count = n.to_string();
                let reference = self.reference("bench-ref", &["-c", "-C", &count]);
                let (t, p) = self.drain(reference, n, "{");
                ref_t[m].push(t);
                ref_peak = ref_peak.max(p);
                let _ = std::fs::remove_file(&stats);
                let mut ours = self.ours_syncing("bench-led", mode);
                // Its state-file statistics (syncs, bytes), written at the stop.
                ours.env("PIMQTT_STORE_STATS", &stats);
                let (t, p) = self.drain(ours, n, "brightness");
                ours_t[m].push(t);
                ours_peak = ours_peak.max(p);
                let (syncs, bytes) = read_stats(&stats);
                disk[m].0 += syncs;
                disk[m].1 += bytes;
            }
        }
        for (m, mode) in modes.iter().enumerate() {
            let (ot, rt) = (median(&mut ours_t[m]), median(&mut ref_t[m]));
            let name = format!("(a) drain {n} queued QoS 2, --sync {mode}");
            if m == 0 {
                // The default, safe against a power cut: issue 20's target,
                // and below it the floor this disk sets.
                table.row(&name, ot, rt, "s", ot <= rt * 2.0, "<= 2x");
                let sync = bench::sync_latency(self.state.path());
                println!(
                    "    floor of --sync always on this disk: {n} x one sync ({:.3} ms) = {:.3} s = {:.2}x the reference",
                    sync * 1e3,
                    sync * n as f64,
                    sync * n as f64 / rt
                );
            } else if *mode == "batched" {
                table.row(&name, ot, rt, "s", ot <= rt * 1.3, "<= 1.3x");
            } else {
                table.row(&name, ot, rt, "s", true, "(cost of the choice)");
            }
        }
        for (m, mode) in modes.iter().enumerate() {
            let msgs = (n * self.o.runs) as f64;
            println!(
                "    --sync {mode:<8} state files: {:.2} syncs and {:.0} bytes written per message",
                disk[m].0 as f64 / msgs,
                disk[m].1 as f64 / msgs
            );
        }
        let (op, rp) = (ours_peak as f64 / 1024.0, ref_peak as f64 / 1024.0);
        table.row(
            "(c) peak RSS while draining",
            op,
            rp,
            "MiB",
            op < 10.0,
            "< 10 MiB",
        );
    }

    /// (b) latency and (c idle). Both subscribers run together, the
    /// reference on a topic of its own (`ref`, as long as `led`, so the
    /// packets are the same size), and the pings alternate between them, so
    /// each pair of samples is taken in the same moment of a shared machine.
    /// Measured one after the other, the p50 ratio of one build ranged from
    /// 1.02 to 1.16 over six runs; paired, from 1.07 to 1.08. Run for the
    /// default `--sync always` (a round trip waits for one disk sync; issue
    /// 20's target of 1.3x) and for `--sync batched`; idle memory is the
    /// default's.
    fn ping_pong(&self, table: &mut Table, pubr: &mqtt::AsyncClient, mode: &str) {
        let w = Peer::watching(&self.broker, "bench-watch2", &["led/status"]);
        let (mut ol, mut rl, mut o_idle, mut r_idle) = (vec![], vec![], 0u64, 0u64);
        let m = self.o.pings;
        for _ in 0..self.o.runs {
            let ours = Sub::spawn(
                self.ours_syncing(&format!("bench-led-ping-{mode}"), mode)
                    .arg("--clean"),
            );
            w.expect("led/status", "online");
            std::thread::sleep(Duration::from_millis(1000));
            o_idle = o_idle.max(ours.rss_kib());

            let refr = Sub::spawn(&mut self.reference_on("ref", "bench-ref-ping", &[]));
            // Subscribed once a probe comes through.
            std::thread::sleep(Duration::from_millis(300));
            let _ = Self::ping(&refr, pubr, "ref", 0);
            std::thread::sleep(Duration::from_millis(700));
            r_idle = r_idle.max(refr.rss_kib());

            for i in 0..m {
                // Which goes first alternates too.
                if i % 2 == 0 {
                    ol.push(Self::ping(&ours, pubr, "led", i));
                    rl.push(Self::ping(&refr, pubr, "ref", i));
                } else {
                    rl.push(Self::ping(&refr, pubr, "ref", i));
                    ol.push(Self::ping(&ours, pubr, "led", i));
                }
            }
            refr.stop();
            ours.stop();
            w.expect("led/status", "offline");
        }
        let (o50, r50) = (percentile(&mut ol, 0.5), percentile(&mut rl, 0.5));
        let (o99, r99) = (percentile(&mut ol, 0.99), percentile(&mut rl, 0.99));
        let safe = mode == "always";
        let (p50, p99) = (
            format!("(b) ping-pong QoS 2 p50, {mode}"),
            format!("(b) ping-pong QoS 2 p99, {mode}"),
        );
        if safe {
            // Issue 20's target; a round trip waits for at least one sync
            // (the PUBREC's), which the reference never makes.
            table.row(&p50, o50, r50, "ms", o50 <= r50 * 1.3, "<= 1.3x");
            table.row(&p99, o99, r99, "ms", true, "(none)");
            let (oi, ri) = (o_idle as f64 / 1024.0, r_idle as f64 / 1024.0);
            table.row("(c) idle RSS", oi, ri, "MiB", oi < 5.0, "< 5 MiB");
        } else {
            table.row(&p50, o50, r50, "ms", o50 <= r50 * 1.15, "<= 1.15x");
            table.row(&p99, o99, r99, "ms", o99 <= r99 * 1.5, "<= 1.5x");
        }
    }

    /// (d) first (retained) message from process start.
    fn first_message(&self, table: &mut Table, pubr: &mqtt::AsyncClient) {
        pubr.publish(mqtt::Message::new_retained("led", r#"{"level": 7}"#, 2))
            .wait()
            .unwrap();
        let (mut of, mut rf) = (vec![], vec![]);
        for i in 0..self.o.runs.max(5) {
            let id = format!("bench-first-ref-{i}");
            let sub = Sub::spawn(&mut self.reference(&id, &["-C", "1"]));
            rf.push(sub.ms_to_next_line());
            sub.stop();
            let sub = Sub::spawn(&mut self.ours(&format!("bench-first-{i}")));
            of.push(sub.ms_to_next_line());
            sub.stop();
        }
        let (ofm, rfm) = (median(&mut of), median(&mut rf));
        table.row(
            "(d) first message from start",
            ofm,
            rfm,
            "ms",
            ofm < 30.0,
            "< 30 ms",
        );
        pubr.publish(mqtt::Message::new_retained("led", "", 2))
            .wait()
            .unwrap();
    }

    /// (e) broker restart: both subscribers connected, durable.
    fn restarts(&mut self, table: &mut Table) {
        let ours = Sub::spawn(&mut self.ours("bench-led-restart"));
        let reference = Sub::spawn(&mut self.reference("bench-ref-restart", &["-c"]));
        let (mut orr, mut rrr) = (vec![], vec![]);
        Peer::watching(&self.broker, "bench-watch3", &["led/status"])
            .expect("led/status", "online");
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..self.o.runs {
            self.broker.restart();
            let back = Instant::now();
            track(self.broker.pid().unwrap_or(0));
            let p = Peer::connect(&self.broker, "bench-restart-pub");
            p.publish("led", level(i), 2, false);
            let (to, _) = ours.next_line();
            let (tr, _) = reference.next_line();
            orr.push((to - back).as_secs_f64());
            rrr.push((tr - back).as_secs_f64());
        }
        let (om, rm) = (max(&orr), max(&rrr));
        table.row(
            "(e) next message after restart",
            om,
            rm,
            "s",
            om < 1.5,
            "< 1.5 s (worst)",
        );
        ours.stop();
        reference.stop();
    }
}

/// The `syncs N` and `bytes N` lines led-client writes at a clean stop
/// (pimqtt's store.rs, `report_stats`); zeros if it wrote none.
fn read_stats(path: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syncs "), field("bytes "))
}

fn main() {
    kill_all_on_panic();
    let o = opts();
    let mut b = Bench {
        broker: Broker::start(),
        led: o.led.clone(),
        state: tempfile::tempdir().unwrap(),
        o,
    };
    track(b.broker.pid().unwrap_or(0));
    let mut table = Table::default();
    println!(
        "led-client vs mosquitto_sub -c -q 2, {} on 127.0.0.1:{} ({} runs)",
        pimqtt_testkit::mosquitto_version(&pimqtt_testkit::mosquitto_bin()),
        b.broker.port,
        b.o.runs
    );
    if b.o.part('a') || b.o.part('c') {
        b.backlog(&mut table);
    }
    let pubr = mqtt::AsyncClient::new(
        mqtt::CreateOptionsBuilder::new_v3()
            .server_uri(b.broker.uri())
            .client_id("bench-ping")
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    pubr.connect(None).wait().unwrap();
    if b.o.part('b') || b.o.part('c') {
        b.ping_pong(&mut table, &pubr, "always");
        b.ping_pong(&mut table, &pubr, "batched");
    }
    if b.o.part('d') {
        b.first_message(&mut table, &pubr);
    }
    pubr.disconnect(None).wait().unwrap();
    if b.o.part('e') {
        b.restarts(&mut table);
    }
    println!("{} target(s) missed", table.fails);
}
