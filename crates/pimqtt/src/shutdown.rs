//! Stopping on SIGINT/SIGTERM. The first signal asks the program's loop to
//! stop (so it can publish `offline`, disconnect and release hardware); a
//! second one exits at once, for a program stuck on an unreachable broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::connect::Events;

/// Asks a program's loop to stop; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Stop {
    events: Events,
}

impl Stop {
    pub(crate) fn new(events: Events) -> Stop {
        Stop { events }
    }

    /// Wakes the loop with [`Event::Stop`](crate::Event::Stop) and raises the
    /// flag that retry loops poll.
    pub fn request(&self) {
        self.events.try_send_stop();
    }

    pub fn is_requested(&self) -> bool {
        self.events.is_stopping()
    }
}

/// Exit code of a second Ctrl+C, as a shell reports death by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Routes SIGINT and SIGTERM to `on_first`; a second signal exits at once.
pub fn on_signals(on_first: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let seen = Arc::new(AtomicBool::new(false));
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
        on_first();
    })?;
    Ok(())
}

/// The usual handler: a signal requests `stop`.
pub fn stop_on_signals(stop: &Stop) -> anyhow::Result<()> {
    let stop = stop.clone();
    on_signals(move || stop.request())
}
