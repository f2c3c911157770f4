//! The controller under a fleet's load (run by `scripts/bench.d/tank`).
//!
//! The script starts the broker and a `controller` (whose pid it passes);
//! this program waits for the controller to be online, then plays a fleet
//! of N tanks and their pumps. With several ports (the nodes of a cluster,
//! `scripts/bench.d/tank --cluster`) the tanks' connections take the nodes
//! in turn, and pump i is answered on node i mod nodes, subscribed to its
//! own `pump/<i>/command` as pump-sim is (on one broker, one connection
//! takes `pump/+/command`):
//! - the tanks publish `tank/<id>/level` once a second each (QoS 2,
//!   retained), spread evenly over the second, on a few connections; each
//!   tank cycles through ten levels, 40 → 50 … 100 → 85 → 70 → 55 %, so two
//!   levels in ten call for a command (`on` at 40, `off` at 100): 200
//!   commands a second for 1000 tanks, several times what a real fleet
//!   sends (a real fill-and-drain cycle takes tens of seconds);
//! - the pumps answer every command with `pump/<id>/state` (QoS 2,
//!   retained), as pump-sim does.
//!
//! The decision latency is measured outside the controller, with one clock:
//! from just before a level that calls for a command is handed to Paho, to
//! the moment the command arrives at the pump's client. Payloads are those
//! of SPEC, unchanged. The controller's CPU comes from /proc/<pid>/stat
//! (utime + stime over the measuring window) and its memory from VmRSS in
//! /proc/<pid>/status (the highest value sampled); the broker's or each
//! node's (`--cpu-of`) the same way.

#![allow(clippy::unwrap_used)] // a benchmark: a failed setup should stop it loudly

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bench::{clk_tck, cpu_ticks, percentile, status_kib};
use clap::Parser;
use paho_mqtt as mqtt;

#[derive(Debug, Parser)]
struct Args {
    /// Port of the broker on 127.0.0.1; for a cluster every node's,
    /// comma-separated (the controller is on the first).
    #[arg(long, value_delimiter = ',', required = true)]
    port: Vec<u16>,
    /// The pid of the running controller.
    #[arg(long)]
    controller_pid: u32,
    /// Tanks (and pumps) in the fleet.
    #[arg(long, default_value_t = 1000)]
    tanks: usize,
    /// Seconds of load before measuring (connections, first commands).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Connections the tanks share.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Also report the CPU of process PID as NAME (the broker, each node,
    /// Redis); repeatable.
    #[arg(long, value_name = "NAME=PID")]
    cpu_of: Vec<String>,
    /// Append one tab-separated line of the results to FILE, headed LABEL
    /// (for the side-by-side table of scripts/bench.d/tank).
    #[arg(long, value_name = "FILE")]
    summary: Option<std::path::PathBuf>,
    /// The first field of the --summary line.
    #[arg(long, default_value = "")]
    label: String,
}

const NONE: u8 = 0;
const WANT_ON: u8 = 1;
const WANT_OFF: u8 = 2;
const CYCLE: [f64; 10] = [40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 85.0, 70.0, 55.0];

/// What the pumps' side needs to know about each tank.
struct Shared {
    start: Instant,
    /// Nanoseconds since `start` of the last level that called for a command.
    sent_at: Vec<AtomicU64>,
    want: Vec<AtomicU8>,
    /// (seconds since start, latency in ms) of every expected command.
    latencies: Mutex<Vec<(f64, f64)>>,
    /// Seconds since start of every level that called for a command.
    expected: Mutex<Vec<f64>>,
    /// What each pump last reported (WANT_ON / WANT_OFF).
    pump: Vec<AtomicU8>,
    unexpected: AtomicU64,
}

/// What the measuring window saw of the controller (and the broker).
struct Usage {
    from: f64,
    to: f64,
    wall: f64,
    cpu: f64,
    rss_max_kib: u64,
    /// (NAME, % of one core) of each `--cpu-of` process.
    others: Vec<(String, f64)>,
}

fn client(port: u16, id: &str) -> mqtt::AsyncClient {
    bench::client(&format!("tcp://127.0.0.1:{port}"), id, 100_000)
}

fn publish(c: &mqtt::AsyncClient, topic: String, payload: &str, retained: bool) {
    let msg = mqtt::MessageBuilder::new()
        .topic(topic)
        .payload(payload)
        .qos(2)
        .retained(retained)
        .finalize();
    while let Err(e) = c.try_publish(msg.clone()) {
        eprintln!("publish failed ({e}); retrying");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (30 s at most) for the controller's retained `online`.
fn wait_online(rx: &mqtt::SyncReceiver<Option<mqtt::Message>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the controller did not come online");
        if let Ok(Some(m)) = rx.recv_timeout(left) {
            if m.topic() == "controller/status" && m.payload_str() == "online" {
                return;
            }
        }
    }
}

/// The pumps: one connection per node answering every command for its
/// pumps (i mod nodes), as pump-sim does.
fn start_pumps(ports: &[u16], shared: &Arc<Shared>) -> Vec<mqtt::AsyncClient> {
    let nodes = ports.len();
    ports
        .iter()
        .enumerate()
        .map(|(j, &port)| {
            let ids: Vec<usize> = (j..shared.want.len()).step_by(nodes).collect();
            start_pumps_on(port, j, &ids, nodes > 1, shared)
        })
        .collect()
}

/// The pumps `ids` on one connection to `port`: each subscribed to its own
/// command topic if `own`, else all through `pump/+/command`.
fn start_pumps_on(
    port: u16,
    j: usize,
    ids: &[usize],
    own: bool,
    shared: &Arc<Shared>,
) -> mqtt::AsyncClient {
    let n = shared.want.len();
    let pumps = client(port, &format!("bench-pumps-{n}-{j}"));
    for &i in ids {
        publish(&pumps, format!("pump/{i}/status"), "online", true);
        publish(
            &pumps,
            format!("pump/{i}/state"),
            r#"{"state":"off"}"#,
            true,
        );
    }
    let sh = Arc::clone(shared);
    let answer = pumps.clone();
    pumps.set_message_callback(move |_, msg| {
        let Some(msg) = msg else { return };
        let now = sh.start.elapsed();
        let Some(i) = msg
            .topic()
            .split('/')
            .nth(1)
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return;
        };
        if i >= sh.want.len() {
            return;
        }
        let payload = msg.payload_str();
        let got = if payload.contains("\"on\"") {
            WANT_ON
        } else {
            WANT_OFF
        };
        let want = sh.want[i].swap(NONE, Ordering::SeqCst);
        if want == got {
            let sent = Duration::from_nanos(sh.sent_at[i].load(Ordering::SeqCst));
            let ms = now.saturating_sub(sent).as_secs_f64() * 1000.0;
            sh.latencies.lock().unwrap().push((now.as_secs_f64(), ms));
        } else {
            sh.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        sh.pump[i].store(got, Ordering::SeqCst);
        publish(&answer, format!("pump/{i}/state"), &payload, true);
    });
    if own {
        for chunk in ids.chunks(100) {
            let topics: Vec<String> = chunk.iter().map(|i| format!("pump/{i}/command")).collect();
            pumps
                .subscribe_many(&topics, &vec![2; topics.len()])
                .wait()
                .unwrap();
        }
    } else {
        pumps.subscribe("pump/+/command", 2).wait().unwrap();
    }
    pumps
}

/// The tanks: levels once a second each, spread over the second, for
/// `total`; the thread returns its connections.
fn start_tanks(
    args: &Args,
    shared: &Arc<Shared>,
    total: Duration,
) -> JoinHandle<Vec<mqtt::AsyncClient>> {
    let n = args.tanks;
    let conns: Vec<mqtt::AsyncClient> = (0..args.connections.max(1))
        .map(|c| {
            client(
                args.port[c % args.port.len()],
                &format!("bench-tanks-{n}-{c}"),
            )
        })
        .collect();
    let sh = Arc::clone(shared);
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut k = 0u64;
        'run: loop {
            for i in 0..n {
                let due = t0
                    + Duration::from_secs(k)
                    + Duration::from_secs(1).mul_f64(i as f64 / n as f64);
                if due > t0 + total {
                    break 'run;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let step = (k as usize + i) % CYCLE.len();
                let level = CYCLE[step];
                // What SPEC's controller must do, given what the pump reported.
                let pump = sh.pump[i].load(Ordering::SeqCst);
                let want = match level {
                    l if l < 50.0 && pump != WANT_ON => WANT_ON,
                    l if l >= 100.0 && pump != WANT_OFF => WANT_OFF,
                    _ => NONE,
                };
                if want != NONE {
                    let now = sh.start.elapsed();
                    sh.sent_at[i].store(now.as_nanos() as u64, Ordering::SeqCst);
                    sh.want[i].store(want, Ordering::SeqCst);
                    sh.expected.lock().unwrap().push(now.as_secs_f64());
                }
                let c = &conns[i % conns.len()];
                publish(
                    c,
                    format!("tank/{i}/level"),
                    &format!("{{\"level\":{level:.1}}}"),
                    true,
                );
            }
            k += 1;
        }
        conns
    })
}

/// CPU and memory of the controller over `seconds`.
fn measure(args: &Args, shared: &Shared) -> Usage {
    let pid = args.controller_pid;
    let tck = clk_tck();
    let (w0, c0) = (Instant::now(), cpu_ticks(pid));
    let others: Vec<(String, u32)> = args
        .cpu_of
        .iter()
        .map(|s| {
            let (name, pid) = s.rsplit_once('=').expect("--cpu-of NAME=PID");
            (name.to_string(), pid.parse().expect("--cpu-of NAME=PID"))
        })
        .collect();
    let o0: Vec<u64> = others.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let from = shared.start.elapsed().as_secs_f64();
    let mut rss_max_kib = 0;
    while w0.elapsed() < Duration::from_secs(args.seconds) {
        rss_max_kib = rss_max_kib.max(status_kib(pid, "VmRSS:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - c0) as f64 / tck / wall * 100.0;
    let others = others
        .into_iter()
        .zip(o0)
        .map(|((name, p), t0)| (name, (cpu_ticks(p) - t0) as f64 / tck / wall * 100.0))
        .collect();
    let to = shared.start.elapsed().as_secs_f64();
    Usage {
        from,
        to,
        wall,
        cpu,
        rss_max_kib,
        others,
    }
}

fn report(args: &Args, shared: &Shared, u: &Usage) {
    let n = args.tanks;
    let lat = shared.latencies.lock().unwrap().clone();
    let window: Vec<(f64, f64)> = lat
        .iter()
        .copied()
        .filter(|(t, _)| *t >= u.from && *t <= u.to)
        .collect();
    let mid = (u.from + u.to) / 2.0;
    let mut all: Vec<f64> = window.iter().map(|x| x.1).collect();
    let mut first: Vec<f64> = window.iter().filter(|x| x.0 < mid).map(|x| x.1).collect();
    let mut second: Vec<f64> = window.iter().filter(|x| x.0 >= mid).map(|x| x.1).collect();
    let per_second = n as f64 * 2.0 / CYCLE.len() as f64;
    let expected = shared
        .expected
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t >= u.from && **t <= u.to)
        .count() as f64;
    let unanswered = shared
        .want
        .iter()
        .filter(|w| w.load(Ordering::SeqCst) != NONE)
        .count();
    let wall = u.wall;
    println!(
        "tanks {n}: levels {n}/s in, about {:.0} commands/s out; {} received in {wall:.0} s ({} outstanding at the end, {} unexpected)",
        per_second,
        all.len(),
        unanswered,
        shared.unexpected.load(Ordering::Relaxed)
    );
    let (p50, p99) = (percentile(&mut all, 0.5), percentile(&mut all, 0.99));
    let received = all.len() as f64 / expected * 100.0;
    println!(
        "  decision latency (level published -> command received): p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        all.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  backlog check: p99 {:.2} ms in the first half, {:.2} ms in the second; {:.0}% of expected commands",
        percentile(&mut first, 0.99),
        percentile(&mut second, 0.99),
        received
    );
    print!(
        "  controller: CPU {:.1} % of one core, RSS {:.1} MiB (peak sampled)",
        u.cpu,
        u.rss_max_kib as f64 / 1024.0
    );
    let others: Vec<String> = u
        .others
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.1} %"))
        .collect();
    if others.is_empty() {
        println!();
    } else {
        println!("; CPU of {}", others.join(", "));
    }
    if let Some(path) = &args.summary {
        use std::io::Write;
        let line = format!(
            "{}\t{p50:.2} ms\t{p99:.2} ms\t{received:.0} %\t{:.1} %\t{}\n",
            args.label,
            u.cpu,
            others.join(", ")
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }
}

fn main() {
    let args = Args::parse();
    let n = args.tanks;
    let watch = client(args.port[0], &format!("bench-watch-{n}"));
    let rx = watch.start_consuming();
    watch.subscribe("controller/status", 1).wait().unwrap();
    wait_online(&rx);

    let shared = Arc::new(Shared {
        start: Instant::now(),
        sent_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        want: (0..n).map(|_| AtomicU8::new(NONE)).collect(),
        latencies: Mutex::new(Vec::new()),
        expected: Mutex::new(Vec::new()),
        pump: (0..n).map(|_| AtomicU8::new(WANT_OFF)).collect(),
        unexpected: AtomicU64::new(0),
    });
    let pumps = start_pumps(&args.port, &shared);
    let total = Duration::from_secs(args.warmup + args.seconds);
    let publisher = start_tanks(&args, &shared, total);

    std::thread::sleep(Duration::from_secs(args.warmup));
    let usage = measure(&args, &shared);
    let conns = publisher.join().unwrap();
    // Let the last commands arrive before reading the latencies.
    std::thread::sleep(Duration::from_millis(500));
    report(&args, &shared, &usage);
    for c in conns.iter().chain(&pumps).chain([&watch]) {
        let _ = c.disconnect(None).wait_for(Duration::from_secs(2));
    }
}
