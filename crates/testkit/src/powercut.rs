//! Power cuts of the program's machine, simulated: the program is killed
//! (`kill -9`), then every state file is put back to what the disk would
//! hold after a power cut at that moment: its content cut to what was last
//! synced, a file never synced (or whose name was never synced) removed, a
//! rename or a truncation not yet synced undone.
//!
//! What was synced comes from the trace the programs write when
//! `PIMQTT_POWERCUT_TRACE` names a file (pimqtt's `store.rs`, module
//! `trace`, documents its lines). [`Seeded`] goes further than "everything
//! unsynced is lost": each file keeps, at random, anything from its synced
//! length to all it had (a torn record included), as a disk that wrote some
//! of the unsynced pages back by itself, in another order per file.
//!
//! What it does not simulate: the network. Packets the program wrote to its
//! socket before the kill still reach the broker; after a real power cut
//! the last of them may not.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::audit::journaled_by;
use crate::{wait_until, Audit, DrainReport, Proc, DEADLINE};

/// The environment variable that makes the programs write the trace.
pub const TRACE_ENV: &str = "PIMQTT_POWERCUT_TRACE";

/// What one cut did to the state directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced bytes dropped, over all files.
    pub bytes_dropped: u64,
    /// Files removed: created, never made durable.
    pub files_removed: usize,
    /// Renames undone: the file replaced is back.
    pub renames_undone: usize,
    /// In-place truncations undone: the old content is back.
    pub truncations_undone: usize,
    /// One line per file changed.
    pub notes: Vec<String>,
}

/// A small deterministic random source (xorshift64*), so a cut can be
/// repeated from its printed seed.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    /// `PIMQTT_POWERCUT_SEED` if set, else one from the clock; printed.
    pub fn from_env(what: &str) -> Seeded {
        let seed = std::env::var("PIMQTT_POWERCUT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: power-cut seed {seed} (PIMQTT_POWERCUT_SEED={seed} repeats it)");
        Seeded::new(seed)
    }

    pub fn new(seed: u64) -> Seeded {
        Seeded(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Half the time `lo` (the worst case), else anything in `lo..=hi`.
    fn keep(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo || self.next() % 2 == 0 {
            lo
        } else {
            lo + self.next() % (hi - lo + 1)
        }
    }
}

/// Kills `proc` and applies a power cut to `state_dir`: everything not
/// synced is lost.
pub fn cut(proc: &mut Proc, state_dir: &Path, trace: &Path) -> CutReport {
    kill(proc);
    apply(state_dir, trace, None)
}

/// The same, each file keeping a random part of what it had not synced.
pub fn cut_seeded(proc: &mut Proc, state_dir: &Path, trace: &Path, dice: &mut Seeded) -> CutReport {
    kill(proc);
    apply(state_dir, trace, Some(dice))
}

fn kill(proc: &mut Proc) {
    proc.signal("KILL");
    assert_eq!(proc.wait_exit(DEADLINE), None, "killed by SIGKILL");
}

/// One content of a file (an inode): its durable length, and where that
/// content is when the file itself has moved on (truncated since).
#[derive(Debug, Clone, Default)]
struct Version {
    durable: u64,
    synced: bool,
    copy: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Model {
    /// Inode → its contents, oldest first.
    inodes: HashMap<u64, Vec<Version>>,
    /// Path → the inode its name durably points to.
    entries: HashMap<PathBuf, u64>,
    /// Inode → where it was kept (hard link) while a rename over it was
    /// not yet durable.
    links: HashMap<u64, PathBuf>,
    /// Every path the trace named, in order.
    paths: Vec<PathBuf>,
}

impl Model {
    fn read(trace: &Path) -> Model {
        let text = fs::read_to_string(trace).unwrap_or_default();
        let mut m = Model::default();
        let mut named = HashSet::new();
        let mut name = |m: &mut Model, p: &Path| {
            if named.insert(p.to_path_buf()) {
                m.paths.push(p.to_path_buf());
            }
        };
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            let (Some(what), Some(ino), rest) = (w.next(), w.next(), w.next()) else {
                continue; // torn by the kill: the last line, never whole
            };
            let Ok(ino) = ino.parse::<u64>() else {
                continue;
            };
            let rest = rest.unwrap_or_default();
            match what {
                "create" => {
                    // A new file (the inode may be an old one's number).
                    m.inodes.insert(ino, vec![Version::default()]);
                    name(&mut m, Path::new(rest));
                }
                "durable" => {
                    let Ok(len) = rest.parse() else { continue };
                    // Synced: older contents no longer matter.
                    m.inodes.insert(
                        ino,
                        vec![Version {
                            durable: len,
                            synced: true,
                            copy: None,
                        }],
                    );
                }
                "entry" => {
                    m.entries.insert(PathBuf::from(rest), ino);
                    name(&mut m, Path::new(rest));
                }
                "link" => {
                    m.links.insert(ino, PathBuf::from(rest));
                }
                "saved" => {
                    let versions = m.inodes.entry(ino).or_default();
                    if versions.is_empty() {
                        versions.push(Version::default());
                    }
                    if let Some(last) = versions.last_mut() {
                        last.copy = Some(PathBuf::from(rest));
                    }
                    versions.push(Version::default());
                }
                _ => {}
            }
        }
        m
    }
}

/// Puts `state_dir` back to what a power cut would have left, from the
/// trace; `dice` keeps random parts of unsynced data, else none survives.
/// Then rewrites the trace to the state after the cut (all of it durable).
pub fn apply(state_dir: &Path, trace: &Path, mut dice: Option<&mut Seeded>) -> CutReport {
    let m = Model::read(trace);
    let mut report = CutReport::default();
    let mut keep = |lo: u64, hi: u64| match dice.as_deref_mut() {
        Some(d) => d.keep(lo, hi),
        None => lo,
    };
    for path in &m.paths {
        let now = fs::metadata(path).ok().map(|md| md.ino());
        let Some(&ino) = m.entries.get(path) else {
            if now.is_some() {
                fs::remove_file(path).unwrap();
                report.files_removed += 1;
                report
                    .notes
                    .push(format!("{}: never durable, removed", path.display()));
            }
            continue;
        };
        if now != Some(ino) {
            // A rename over `path` that was not yet durable: the file it
            // replaced comes back.
            let kept = m.links.get(&ino).unwrap_or_else(|| {
                panic!(
                    "power cut: {} durably names inode {ino}, which was not kept",
                    path.display()
                )
            });
            fs::rename(kept, path).unwrap();
            report.renames_undone += 1;
            report
                .notes
                .push(format!("{}: rename undone", path.display()));
        }
        let versions = m.inodes.get(&ino).cloned().unwrap_or_default();
        // The newest content something of which is on the disk.
        let at = versions.iter().rposition(|v| v.synced).unwrap_or(0);
        let version = versions.get(at).cloned().unwrap_or_default();
        let newest = versions.len().saturating_sub(1);
        let len = fs::metadata(path).unwrap().len();
        if at < newest {
            // Truncated in place since: the old content comes back.
            let copy = version.copy.as_ref().unwrap_or_else(|| {
                panic!("power cut: no copy of {}'s old content", path.display())
            });
            let old = fs::read(copy).unwrap();
            let n = keep(version.durable.min(old.len() as u64), old.len() as u64);
            fs::write(path, &old[..n as usize]).unwrap();
            report.truncations_undone += 1;
            report.bytes_dropped += old.len() as u64 - n;
            report.notes.push(format!(
                "{}: truncation undone, {n} of {} bytes",
                path.display(),
                old.len()
            ));
        } else {
            let n = keep(version.durable.min(len), len);
            if n < len {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(n)
                    .unwrap();
                report.bytes_dropped += len - n;
                report
                    .notes
                    .push(format!("{}: {n} of {len} bytes", path.display()));
            }
        }
    }
    // What the program kept aside for this, and files it was writing.
    for entry in fs::read_dir(state_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains(".powercut-") {
            let _ = fs::remove_file(&p);
        }
    }
    // After the cut, what is there is what the disk has.
    let mut base = String::new();
    for path in &m.paths {
        if let Ok(md) = fs::metadata(path) {
            base.push_str(&format!("entry {} {}\n", md.ino(), path.display()));
            base.push_str(&format!("durable {} {}\n", md.ino(), md.len()));
        }
    }
    fs::write(trace, base).unwrap();
    report
}

/// [`drain_with_stops`](crate::drain_with_stops) with power cuts: a
/// program started `runs` times on a queued backlog (`sent`), each run
/// killed once it has applied a few more and its state directory cut as
/// above (`dice`: random surviving parts), then a last run that applies the
/// rest. `spawn` must run the program with [`TRACE_ENV`] set to `trace`.
pub fn drain_with_cuts<T: PartialEq + Clone>(
    sent: &[T],
    runs: usize,
    (state_dir, trace): (&Path, &Path),
    mut dice: Option<&mut Seeded>,
    spawn: impl Fn() -> Proc,
    seen: impl Fn(&Proc) -> Vec<T>,
) -> (DrainReport, Vec<CutReport>) {
    let mut applied: Vec<T> = Vec::new();
    let mut mid_drain = 0;
    let mut journaled = 0;
    let mut cuts = Vec::new();
    let left =
        |applied: &[T], proc: &Proc| sent.len().saturating_sub(applied.len() + seen(proc).len());
    for k in 0..runs {
        let mut proc = spawn();
        let want = 20 + (k * 131) % 200;
        // A mode that loses messages (batched, never) may leave fewer than
        // `want` to apply: cut once nothing more comes.
        let mut idle = Idle::new(IDLE);
        wait_until("the drain to go on", Duration::from_secs(60), || {
            let n = seen(&proc).len();
            n >= want || left(&applied, &proc) == 0 || idle.since(n)
        });
        if left(&applied, &proc) > 0 {
            mid_drain += 1;
        }
        proc.wait_stderr("connected to");
        let report = match dice.as_deref_mut() {
            Some(d) => cut_seeded(&mut proc, state_dir, trace, d),
            None => cut(&mut proc, state_dir, trace),
        };
        cuts.push(report);
        applied.extend(seen(&proc));
        journaled += journaled_by(&proc);
    }
    let mut proc = spawn();
    let complete = |applied: &[T], proc: &Proc| {
        left(applied, proc) == 0 && {
            let mut all = applied.to_vec();
            all.extend(seen(proc));
            Audit::of(sent, &all).lost == 0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle = Idle::new(IDLE);
    while Instant::now() < deadline && !complete(&applied, &proc) && !idle.since(seen(&proc).len())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.wait_stderr("connected to");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit(DEADLINE), Some(0));
    applied.extend(seen(&proc));
    journaled += journaled_by(&proc);
    let report = DrainReport {
        audit: Audit::of(sent, &applied),
        mid_drain,
        journaled,
    };
    (report, cuts)
}

/// How long a drain may apply nothing before it counts as done (a drain
/// applies a message every millisecond or so).
const IDLE: Duration = Duration::from_secs(5);

/// Whether a count has stayed the same for a while.
struct Idle {
    limit: Duration,
    last: Option<(usize, Instant)>,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        Idle { limit, last: None }
    }

    /// Whether `n` has not changed for `limit`.
    fn since(&mut self, n: usize) -> bool {
        match self.last {
            Some((m, at)) if m == n => at.elapsed() >= self.limit,
            _ => {
                self.last = Some((n, Instant::now()));
                false
            }
        }
    }
}

/// One line saying what `cuts` dropped, for a test's output.
pub fn summary(cuts: &[CutReport]) -> String {
    let sum = |f: fn(&CutReport) -> u64| cuts.iter().map(f).sum::<u64>();
    format!(
        "{} cuts: {} unsynced bytes dropped, {} files removed, {} renames and {} truncations undone",
        cuts.len(),
        sum(|c| c.bytes_dropped),
        sum(|c| c.files_removed as u64),
        sum(|c| c.renames_undone as u64),
        sum(|c| c.truncations_undone as u64),
    )
}
