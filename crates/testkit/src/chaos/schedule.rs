//! A seeded random schedule of a [`Proxy`]'s faults, replayable from its
//! seed, and the tiny random source it draws from.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Proxy;

/// A tiny seeded random source (splitmix64): no crate, and a run replays
/// from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// In `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In `lo..=hi`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// The seed of a chaos run: `PIMQTT_CHAOS_SEED` (decimal, or hex with
/// `0x`) when set, else from the clock.
pub fn chaos_seed() -> u64 {
    if let Ok(text) = std::env::var("PIMQTT_CHAOS_SEED") {
        let t = text.trim();
        let parsed = match t.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse(),
        };
        return parsed.unwrap_or_else(|e| panic!("PIMQTT_CHAOS_SEED={text:?}: {e}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Mixed once, so that runs a second apart differ in every bit.
    Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64()
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    ResetAll,
    /// Reset this fraction of the connections.
    ResetSome(f64),
    /// Cut each connection in the middle of its next chunk.
    Cut,
    Stall(Duration),
    /// Refuse new connections for a while, after resetting this fraction
    /// of the live ones (so that some reconnect into the refusal).
    Refuse(Duration, f64),
    HalfOpen(Duration),
    /// Restart the broker behind the proxy (the hook of
    /// [`Chaos::restarting`]).
    RestartBroker,
}

impl Fault {
    /// One fault at random; a broker restart only if `restarts`.
    pub fn pick(rng: &mut Rng, restarts: bool) -> Fault {
        let ms = Duration::from_millis;
        // Weights: reset all 2, reset some 3, cut 2, stall 3, refuse 2,
        // half-open 2, restart 1.
        let total = if restarts { 15 } else { 14 };
        match rng.below(total) {
            0..=1 => Fault::ResetAll,
            2..=4 => Fault::ResetSome(0.1 + 0.4 * rng.unit()),
            5..=6 => Fault::Cut,
            7..=9 => Fault::Stall(rng.between(ms(200), ms(3000))),
            10..=11 => Fault::Refuse(rng.between(ms(500), ms(5000)), 0.5 * rng.unit()),
            12..=13 => Fault::HalfOpen(rng.between(ms(1000), ms(5000))),
            _ => Fault::RestartBroker,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pc = |x: f64| (x * 100.0).round();
        match self {
            Fault::ResetAll => write!(f, "reset every connection"),
            Fault::ResetSome(x) => write!(f, "reset {}% of the connections", pc(*x)),
            Fault::Cut => write!(f, "cut each connection mid-packet"),
            Fault::Stall(d) => write!(f, "stall for {d:.1?}"),
            Fault::Refuse(d, x) => write!(f, "reset {}%, then refuse for {d:.1?}", pc(*x)),
            Fault::HalfOpen(d) => write!(f, "half-open for {d:.1?}, then reset its clients"),
            Fault::RestartBroker => write!(f, "restart the broker"),
        }
    }
}

/// A seeded random schedule of faults on a [`Proxy`]: one every few
/// hundred milliseconds, each logged to stderr with its time, and healed
/// at the end.
pub struct Chaos<'a> {
    pub seed: u64,
    rng: Rng,
    /// Picks the connections of the current step's resets.
    picks: Rng,
    restart: Option<Box<dyn FnMut() + 'a>>,
}

impl fmt::Debug for Chaos<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("seed", &self.seed)
            .field("restarts", &self.restart.is_some())
            .finish()
    }
}

impl<'a> Chaos<'a> {
    /// Seeded by [`chaos_seed`]; the seed is printed, to replay the run.
    pub fn from_env() -> Chaos<'a> {
        Chaos::with_seed(chaos_seed())
    }

    pub fn with_seed(seed: u64) -> Chaos<'a> {
        eprintln!("chaos: seed {seed} (PIMQTT_CHAOS_SEED={seed} replays this schedule)");
        Chaos {
            seed,
            rng: Rng::new(seed),
            picks: Rng::new(!seed),
            restart: None,
        }
    }

    /// Sometimes restarts the broker behind the proxy with `hook`.
    pub fn restarting(mut self, hook: impl FnMut() + 'a) -> Chaos<'a> {
        self.restart = Some(Box::new(hook));
        self
    }

    /// The next step and the pause after it: what [`Chaos::run`] does next.
    pub fn next_step(&mut self) -> (Fault, Duration) {
        let fault = Fault::pick(&mut self.rng, self.restart.is_some());
        let pause = self
            .rng
            .between(Duration::from_millis(100), Duration::from_millis(600));
        // Which connections a reset picks depends on how many there are:
        // drawn from a source of the step's own, so that the schedule
        // replays all the same.
        self.picks = Rng::new(self.rng.next_u64());
        (fault, pause)
    }

    /// Faults on `proxy` for `duration` (the last one cut short at its
    /// end), then everything healed ([`Proxy::heal`]). Returns each step
    /// with its time from the start.
    pub fn run(&mut self, proxy: &Proxy, duration: Duration) -> Vec<(Duration, Fault)> {
        let start = Instant::now();
        let end = start + duration;
        let left = || end.saturating_duration_since(Instant::now());
        let mut steps = Vec::new();
        while !left().is_zero() {
            let (fault, pause) = self.next_step();
            let at = start.elapsed();
            eprintln!("chaos {:>8.3}s ({}): {fault}", at.as_secs_f64(), utc_now());
            match &fault {
                Fault::ResetAll => {
                    proxy.reset_all();
                }
                Fault::ResetSome(x) => {
                    proxy.reset_some(*x, &mut self.picks);
                }
                Fault::Cut => {
                    proxy.cut_mid_packet();
                }
                Fault::Stall(d) => {
                    proxy.stall(true);
                    std::thread::sleep((*d).min(left()));
                    proxy.stall(false);
                }
                Fault::Refuse(d, x) => {
                    proxy.refuse(true);
                    proxy.reset_some(*x, &mut self.picks);
                    std::thread::sleep((*d).min(left()));
                    proxy.refuse(false);
                }
                Fault::HalfOpen(d) => {
                    proxy.half_open(true);
                    std::thread::sleep((*d).min(left()));
                    proxy.half_open(false);
                }
                Fault::RestartBroker => {
                    if let Some(hook) = self.restart.as_mut() {
                        hook();
                    }
                }
            }
            steps.push((at, fault));
            std::thread::sleep(pause.min(left()));
        }
        proxy.heal();
        eprintln!(
            "chaos {:>8.3}s ({}): healed after {} faults (seed {}); {:?}",
            start.elapsed().as_secs_f64(),
            utc_now(),
            steps.len(),
            self.seed,
            proxy.counts()
        );
        steps
    }
}

/// The time of day, UTC, as the programs' log lines give it (`12:34:56.789`),
/// to match a step with what the programs and the broker said.
fn utc_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}
