//! SIGINT and SIGTERM. The first signal asks the program's loop to stop (so
//! it can publish `offline`, disconnect and release hardware); a second one
//! exits at once, for a program stuck on an unreachable broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::ExitCode;
use crate::events::Stop;

/// Routes SIGINT and SIGTERM to `on_first`; a second signal exits at once.
pub fn on_signals(on_first: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let seen = Arc::new(AtomicBool::new(false));
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting now");
            ExitCode::Interrupted.exit();
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
