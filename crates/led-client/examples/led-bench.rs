//! Benchmark of led-client against `mosquitto_sub -c -q 2` (libmosquitto, C:
//! our floor), side by side in the same run on the same private Mosquitto
//! (persistence on, `max_queued_messages 0`). Run by `scripts/bench`.
//!
//! Measures, for each of the two subscribers:
//! (a) draining a durable backlog of N QoS 2 messages queued while it was
//!     offline, from process start to the last output line;
//! (b) ping-pong latency of single QoS 2 messages (publish to output line);
//! (c) resident memory idle and at peak while draining;
//! (d) time from process start to the first (retained) message;
//! (e) after a broker restart, time from the broker accepting connections
//!     again to the next message being output.
//!
//! Usage: led-bench LED_CLIENT [--messages N] [--pings M] [--runs R]

#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use pimqtt_testkit::{signal, Broker, Peer, DEADLINE};

/// Every process the benchmark started. The release profile aborts on a
/// panic, so no destructor would stop them: the panic hook does.
static STARTED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn track(pid: u32) {
    if let Ok(mut v) = STARTED.lock() {
        v.push(pid);
    }
}

fn kill_all_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(pids) = STARTED.lock() {
            for pid in pids.iter() {
                if *pid > 0 {
                    signal(*pid, "KILL");
                }
            }
        }
        default(info);
    }));
}

struct Opts {
    led: PathBuf,
    messages: usize,
    pings: usize,
    runs: usize,
}

fn opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        led: PathBuf::new(),
        messages: 10_000,
        pings: 1000,
        runs: 5,
    };
    while let Some(a) = args.next() {
        let mut num = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match a.as_str() {
            "--messages" => o.messages = num(),
            "--pings" => o.pings = num(),
            "--runs" => o.runs = num(),
            _ => o.led = PathBuf::from(a),
        }
    }
    assert!(
        o.led.exists(),
        "usage: led-bench LED_CLIENT [--messages N] [--pings M] [--runs R]"
    );
    o
}

/// One subscriber process whose stdout lines are timestamped as they come.
struct Sub {
    child: Child,
    started: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
    peak_kib: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
}

impl Sub {
    fn spawn(cmd: &mut Command) -> Sub {
        let started = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        track(child.id());
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        // VmHWM is the kernel's own peak; polling it catches the peak even
        // for a process that exits right after its last line.
        let peak_kib = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let (pid, p, s) = (child.id(), peak_kib.clone(), sampling.clone());
        std::thread::spawn(move || {
            while s.load(Ordering::Relaxed) {
                if let Some(hwm) = status_kib(pid, "VmHWM:") {
                    p.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Sub {
            child,
            started,
            lines,
            peak_kib,
            sampling,
        }
    }

    fn next_line(&self) -> (Instant, String) {
        self.lines
            .recv_timeout(DEADLINE * 4)
            .expect("subscriber output")
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:").unwrap_or(0)
    }

    fn stop(mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        signal(self.child.id(), "INT");
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Bench {
    broker: Broker,
    led: PathBuf,
    state: tempfile::TempDir,
}

impl Bench {
    fn port(&self) -> String {
        self.broker.port.to_string()
    }

    fn ours(&self, id: &str) -> Command {
        let mut c = Command::new(&self.led);
        c.args([
            "--led",
            "sim",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port(),
            "-i",
            id,
            "--state-dir",
        ])
        .arg(self.state.path());
        c
    }

    fn reference(&self, id: &str, extra: &[&str]) -> Command {
        let mut c = Command::new("mosquitto_sub");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port(),
            "-q",
            "2",
            "-t",
            "led",
            "-i",
            id,
        ]);
        c.args(extra);
        c
    }

    /// Publishes `n` QoS 2 level messages (not retained), all acknowledged.
    fn publish_levels(&self, n: usize) {
        let cli = mqtt::AsyncClient::new(
            mqtt::CreateOptionsBuilder::new_v3()
                .server_uri(self.broker.uri())
                .client_id("bench-pub")
                .persistence(None)
                .max_buffered_messages(n as i32 + 10)
                .finalize(),
        )
        .unwrap();
        cli.connect(
            mqtt::ConnectOptionsBuilder::new_v3()
                .max_inflight(20)
                .finalize(),
        )
        .wait()
        .unwrap();
        let mut toks = Vec::new();
        for i in 0..n {
            let payload = format!(r#"{{"level": {}}}"#, i % 101);
            toks.push(cli.publish(mqtt::Message::new("led", payload, 2)));
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
        let w = Peer::connect(&self.broker, "bench-watch");
        w.subscribe("led/status");
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
        let peak = sub.peak_kib.load(Ordering::Relaxed);
        sub.stop();
        (secs, peak)
    }

    /// Single messages, one at a time: publish to output line.
    fn pings(&self, sub: &Sub, pubr: &mqtt::AsyncClient, m: usize) -> Vec<f64> {
        let mut v = Vec::with_capacity(m);
        for i in 0..m {
            let t0 = Instant::now();
            let tok = pubr.publish(mqtt::Message::new(
                "led",
                format!(r#"{{"level": {}}}"#, i % 101),
                2,
            ));
            let (t1, _) = sub.next_line();
            tok.wait().unwrap();
            v.push((t1 - t0).as_secs_f64() * 1000.0);
        }
        v
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn median(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() {
    kill_all_on_panic();
    let o = opts();
    let b = Bench {
        broker: Broker::start(),
        led: o.led.clone(),
        state: tempfile::tempdir().unwrap(),
    };
    track(b.broker.pid().unwrap_or(0));
    let mut fails = 0;
    let mut report = |name: &str, ours: f64, reference: f64, unit: &str, ok: bool, target: &str| {
        println!(
            "{name:<34} ours {ours:>9.3} {unit:<4} ref {reference:>9.3} {unit:<4} ratio {:>5.2}  target {target:<18} {}",
            ours / reference,
            verdict(ok)
        );
        if !ok {
            fails += 1;
        }
    };
    println!(
        "led-client vs mosquitto_sub -c -q 2, Mosquitto on 127.0.0.1:{} ({} runs)",
        b.broker.port, o.runs
    );

    // (a) + (c peak): durable backlog.
    b.make_sessions();
    let (mut ours_t, mut ref_t, mut ours_peak, mut ref_peak) = (vec![], vec![], 0u64, 0u64);
    for _ in 0..o.runs {
        b.publish_levels(o.messages);
        let (t, p) = b.drain(
            b.reference("bench-ref", &["-c", "-C", &o.messages.to_string()]),
            o.messages,
            "{",
        );
        ref_t.push(t);
        ref_peak = ref_peak.max(p);
        let (t, p) = b.drain(b.ours("bench-led"), o.messages, "brightness");
        ours_t.push(t);
        ours_peak = ours_peak.max(p);
    }
    let (ot, rt) = (median(&mut ours_t), median(&mut ref_t));
    report(
        &format!("(a) drain {} queued QoS 2", o.messages),
        ot,
        rt,
        "s",
        ot <= rt * 1.2,
        "<= 1.2x",
    );
    let (op, rp) = (ours_peak as f64 / 1024.0, ref_peak as f64 / 1024.0);
    report(
        "(c) peak RSS while draining",
        op,
        rp,
        "MiB",
        op < 10.0,
        "< 10 MiB",
    );

    // (b) latency and (c idle), subscribers one at a time.
    let pubr = mqtt::AsyncClient::new(
        mqtt::CreateOptionsBuilder::new_v3()
            .server_uri(b.broker.uri())
            .client_id("bench-ping")
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    pubr.connect(None).wait().unwrap();
    let w = Peer::connect(&b.broker, "bench-watch2");
    w.subscribe("led/status");
    let (mut ol, mut rl, mut o_idle, mut r_idle) = (vec![], vec![], 0u64, 0u64);
    for _ in 0..o.runs {
        let sub = Sub::spawn(&mut b.reference("bench-ref-ping", &[]));
        // Subscribed once a probe comes through.
        std::thread::sleep(Duration::from_millis(300));
        let _ = b.pings(&sub, &pubr, 1);
        std::thread::sleep(Duration::from_millis(700));
        r_idle = r_idle.max(sub.rss_kib());
        rl.extend(b.pings(&sub, &pubr, o.pings));
        sub.stop();

        let sub = Sub::spawn(b.ours("bench-led-ping").arg("--clean"));
        w.expect("led/status", "online");
        std::thread::sleep(Duration::from_millis(1000));
        o_idle = o_idle.max(sub.rss_kib());
        ol.extend(b.pings(&sub, &pubr, o.pings));
        sub.stop();
        w.expect("led/status", "offline");
    }
    let (o50, r50) = (pct(&mut ol, 0.5), pct(&mut rl, 0.5));
    let (o99, r99) = (pct(&mut ol, 0.99), pct(&mut rl, 0.99));
    report(
        "(b) ping-pong QoS 2 p50",
        o50,
        r50,
        "ms",
        o50 <= r50 * 1.15,
        "<= 1.15x",
    );
    report(
        "(b) ping-pong QoS 2 p99",
        o99,
        r99,
        "ms",
        o99 <= r99 * 1.5,
        "<= 1.5x",
    );
    let (oi, ri) = (o_idle as f64 / 1024.0, r_idle as f64 / 1024.0);
    report("(c) idle RSS", oi, ri, "MiB", oi < 5.0, "< 5 MiB");

    // (d) first (retained) message from process start.
    pubr.publish(mqtt::Message::new_retained("led", r#"{"level": 7}"#, 2))
        .wait()
        .unwrap();
    let (mut of, mut rf) = (vec![], vec![]);
    for i in 0..o.runs.max(5) {
        let sub = Sub::spawn(&mut b.reference(&format!("bench-first-ref-{i}"), &["-C", "1"]));
        let (t, _) = sub.next_line();
        rf.push((t - sub.started).as_secs_f64() * 1000.0);
        sub.stop();
        let sub = Sub::spawn(&mut b.ours(&format!("bench-first-{i}")));
        let (t, _) = sub.next_line();
        of.push((t - sub.started).as_secs_f64() * 1000.0);
        sub.stop();
    }
    let (ofm, rfm) = (median(&mut of), median(&mut rf));
    report(
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
    pubr.disconnect(None).wait().unwrap();
    drop(w);

    // (e) broker restart: both subscribers connected, durable.
    let mut b = b;
    let ours = Sub::spawn(&mut b.ours("bench-led-restart"));
    let reference = Sub::spawn(&mut b.reference("bench-ref-restart", &["-c"]));
    let (mut orr, mut rrr) = (vec![], vec![]);
    {
        let w = Peer::connect(&b.broker, "bench-watch3");
        w.subscribe("led/status");
        w.expect("led/status", "online");
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..o.runs {
        b.broker.restart();
        let back = Instant::now();
        track(b.broker.pid().unwrap_or(0));
        let p = Peer::connect(&b.broker, "bench-restart-pub");
        p.publish("led", format!(r#"{{"level": {i}}}"#), 2, false);
        let (to, _) = ours.next_line();
        let (tr, _) = reference.next_line();
        orr.push((to - back).as_secs_f64());
        rrr.push((tr - back).as_secs_f64());
    }
    let (om, rm) = (
        orr.iter().cloned().fold(0.0, f64::max),
        rrr.iter().cloned().fold(0.0, f64::max),
    );
    report(
        "(e) next message after restart",
        om,
        rm,
        "s",
        om < 1.5,
        "< 1.5 s (worst)",
    );
    ours.stop();
    reference.stop();
    println!("{} target(s) missed", fails);
}
