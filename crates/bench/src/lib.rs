//! What the benchmarks share: spawning a subscriber whose output lines are
//! timestamped, reading a process's memory and CPU from `/proc`, a plain
//! Paho client, percentiles, and the table of "ours vs reference" rows.
//!
//! The binaries (`src/bin/led-bench.rs`, `src/bin/tank-bench.rs`) are run
//! by `scripts/bench` and `scripts/bench.d/tank`; their mains only put the
//! measurements in order.

#![allow(clippy::unwrap_used)] // a benchmark harness: a failed setup should stop it loudly

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use paho_mqtt as mqtt;
use pimqtt_testkit::{signal, DEADLINE};

/// Every process a benchmark started. The release profile aborts on a
/// panic, so no destructor would stop them: the panic hook does.
static STARTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers `pid` for [`kill_all_on_panic`].
pub fn track(pid: u32) {
    if let Ok(mut v) = STARTED.lock() {
        v.push(pid);
    }
}

/// Installs a panic hook that kills every [`track`]ed process first.
pub fn kill_all_on_panic() {
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

/// One subscriber process whose stdout lines are timestamped as they come,
/// and whose peak memory is sampled while it runs.
#[derive(Debug)]
pub struct Sub {
    child: Child,
    /// When the process was spawned.
    pub started: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
    peak_kib: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
}

impl Sub {
    pub fn spawn(cmd: &mut Command) -> Sub {
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

    /// The next stdout line and when it came.
    pub fn next_line(&self) -> (Instant, String) {
        self.lines
            .recv_timeout(DEADLINE * 4)
            .expect("subscriber output")
    }

    /// Milliseconds from the spawn to the next line.
    pub fn ms_to_next_line(&self) -> f64 {
        let (t, _) = self.next_line();
        (t - self.started).as_secs_f64() * 1000.0
    }

    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:").unwrap_or(0)
    }

    /// The highest VmHWM sampled so far.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// SIGINT, and waits for the exit.
    pub fn stop(mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        signal(self.child.id(), "INT");
        let _ = self.child.wait();
    }
}

/// A `VmRSS:`-style field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of `pid` in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// Clock ticks per second (`getconf CLK_TCK`, usually 100).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A connected Paho client on 127.0.0.1 with a clean session, no
/// persistence, up to `buffered` messages queued and 20 in flight.
pub fn client(uri: &str, id: &str, buffered: usize) -> mqtt::AsyncClient {
    let create = mqtt::CreateOptionsBuilder::new_v3()
        .server_uri(uri)
        .client_id(id)
        .persistence(None)
        .max_buffered_messages(i32::try_from(buffered).unwrap_or(i32::MAX))
        .finalize();
    let c = mqtt::AsyncClient::new(create).unwrap();
    let opts = mqtt::ConnectOptionsBuilder::new_v3()
        .clean_session(true)
        .max_inflight(20)
        .finalize();
    c.connect(opts).wait().unwrap();
    c
}

/// The `p` quantile (0..1) of `v`, which it sorts; NaN when empty.
/// The median time, in seconds, of appending a 200-byte record to a file
/// in `dir` and syncing it (`fdatasync`), what one state-file sync costs on
/// that disk: with `--sync always` a drain costs about one per message, so
/// `n` times this is the floor of its time (and ping-pong pays one per
/// round trip).
pub fn sync_latency(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("bench-sync-latency");
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(_) => return f64::NAN,
    };
    let mut times: Vec<f64> = (0..500)
        .map(|_| {
            let start = Instant::now();
            let _ = file.write_all(&[7u8; 200]);
            let _ = file.sync_data();
            start.elapsed().as_secs_f64()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    median(&mut times)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

/// The largest value of `v` (0 when empty).
pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// The table of "ours vs reference" rows, counting missed targets.
#[derive(Debug, Default)]
pub struct Table {
    pub fails: usize,
}

impl Table {
    pub fn row(
        &mut self,
        name: &str,
        ours: f64,
        reference: f64,
        unit: &str,
        ok: bool,
        target: &str,
    ) {
        println!(
            "{name:<34} ours {ours:>9.3} {unit:<4} ref {reference:>9.3} {unit:<4} ratio {:>5.2}  target {target:<18} {}",
            ours / reference,
            if ok { "PASS" } else { "FAIL" }
        );
        if !ok {
            self.fails += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_round_to_the_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&mut v), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }
}
