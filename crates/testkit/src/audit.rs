//! Audits of what a program applied against what was sent, and the drain
//! under repeated stops or kills that the fault tests share.

use std::time::{Duration, Instant};

use crate::{wait_until, Proc, DEADLINE};

/// What a fault test found when it compared what a program applied with
/// what was sent, both in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Sent but never applied.
    pub lost: usize,
    /// Applied again right after itself (a crash repeats the message being
    /// applied).
    pub duplicated: usize,
    /// Applied again later, after others (only a sequence of unique values
    /// tells these from losses: a broker re-sending old messages).
    pub replayed: usize,
    /// Applied where it does not belong: out of order, or never sent.
    pub misplaced: usize,
    /// The most times one message was repeated (a kill repeats at most the
    /// message in hand, once).
    pub most_repeats: usize,
}

impl Audit {
    /// Walks `applied` along `sent`. `sent` must never hold the same value
    /// twice in a row, so that a repeat is told from the next message.
    pub fn of<T: PartialEq>(sent: &[T], applied: &[T]) -> Audit {
        let mut audit = Audit::default();
        let mut next = 0;
        let mut repeats = 0;
        for v in applied {
            if next < sent.len() && *v == sent[next] {
                next += 1;
                repeats = 0;
            } else if next > 0 && *v == sent[next - 1] {
                audit.duplicated += 1;
                repeats += 1;
                audit.most_repeats = audit.most_repeats.max(repeats);
            } else if sent[..next.saturating_sub(1)].contains(v) {
                audit.replayed += 1;
            } else if let Some(k) = (next..sent.len()).find(|&k| sent[k] == *v) {
                audit.lost += k - next;
                next = k + 1;
            } else {
                audit.misplaced += 1;
            }
        }
        audit.lost += sent.len() - next;
        audit
    }
}

/// What [`drain_with_stops`] measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub audit: Audit,
    /// Stops that came while part of the backlog was still to be applied.
    pub mid_drain: usize,
    /// Messages a kill left both in the journal and in Paho's records,
    /// taken from the journal only (pimqtt's persist.rs, `forget_journaled`).
    pub journaled: usize,
}

impl DrainReport {
    /// After stops (SIGTERM): nothing lost, nothing repeated, in order.
    pub fn assert_stops_lose_nothing(&self, what: &str) {
        eprintln!(
            "{what}: {} of the stops during the drain; {:?}; {} taken from the journal only",
            self.mid_drain, self.audit, self.journaled
        );
        assert_eq!(self.audit, Audit::default(), "{what}");
        self.assert_mid_drain(what);
    }

    /// After kills: nothing lost or out of order; at most the message in
    /// hand repeated per kill.
    pub fn assert_kills_lose_nothing(&self, what: &str) {
        eprintln!(
            "{what}: {} of the kills during the drain; {:?}; {} taken from the journal only",
            self.mid_drain, self.audit, self.journaled
        );
        let a = &self.audit;
        assert_eq!(
            (a.lost, a.misplaced, a.replayed),
            (0, 0, 0),
            "{what}: {a:?}"
        );
        assert!(
            a.duplicated <= self.mid_drain && a.most_repeats <= 1,
            "{what}: more than one repeat per kill: {self:?}"
        );
        self.assert_mid_drain(what);
    }

    /// The faults must have come during the drain to prove anything.
    fn assert_mid_drain(&self, what: &str) {
        assert!(
            self.mid_drain >= 3,
            "{what}: too few faults during the drain: {self:?}"
        );
    }
}

/// A program started `runs` times on a queued backlog (`sent`), each run
/// sent `signal` ("TERM" or "KILL") once it has applied a few more, then
/// a last run that applies the rest. `seen` reads what a run applied.
pub fn drain_with_stops<T: PartialEq + Clone>(
    sent: &[T],
    runs: usize,
    signal: &str,
    spawn: impl Fn() -> Proc,
    seen: impl Fn(&Proc) -> Vec<T>,
) -> DrainReport {
    let mut applied: Vec<T> = Vec::new();
    let mut mid_drain = 0;
    let mut journaled = 0;
    // Counting is cheap enough to poll; the audit is done once, at the end.
    let left =
        |applied: &[T], proc: &Proc| sent.len().saturating_sub(applied.len() + seen(proc).len());
    for k in 0..runs {
        let mut proc = spawn();
        // A different point of the drain each time.
        let want = 20 + (k * 131) % 200;
        wait_until("the drain to go on", Duration::from_secs(60), || {
            seen(&proc).len() >= want || left(&applied, &proc) == 0
        });
        if left(&applied, &proc) > 0 {
            mid_drain += 1;
        }
        // A signal before the program set up its handler would kill it.
        proc.wait_stderr("connected to");
        proc.signal(signal);
        let code = proc.wait_exit(DEADLINE);
        assert_eq!(
            code,
            if signal == "KILL" { None } else { Some(0) },
            "run {k} ended badly: {:?}",
            proc.stderr()
        );
        applied.extend(seen(&proc));
        journaled += journaled_by(&proc);
    }
    let mut proc = spawn();
    // Until nothing is missing, or a deadline: the audit then says what is.
    let complete = |applied: &[T], proc: &Proc| {
        left(applied, proc) == 0 && {
            let mut all = applied.to_vec();
            all.extend(seen(proc));
            Audit::of(sent, &all).lost == 0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !complete(&applied, &proc) {
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.wait_stderr("connected to");
    proc.signal("TERM");
    assert_eq!(proc.wait_exit(DEADLINE), Some(0));
    applied.extend(seen(&proc));
    journaled += journaled_by(&proc);
    DrainReport {
        audit: Audit::of(sent, &applied),
        mid_drain,
        journaled,
    }
}

/// Messages a program said it took from the journal only: its "<id>: <n>
/// message(s) released just before the last crash are …" lines, summed.
pub(crate) fn journaled_by(proc: &Proc) -> usize {
    proc.stderr()
        .iter()
        .filter_map(|l| {
            let (head, _) = l.split_once(" message(s) released just before")?;
            head.rsplit(' ').next()?.parse::<usize>().ok()
        })
        .sum()
}
