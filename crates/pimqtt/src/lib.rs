//! Everything the pi-mqtt programs share, written once.
//!
//! # Layout
//! - [`cli`]: the flags common to every binary (`mosquitto_sub`-style),
//!   flattened into each program's own clap parser.
//! - [`events`]: what a program's loop receives ([`Inbox::next`]: an event,
//!   a timeout, or "stopped"), the [`Stop`] handle, and the [`Delivery`] of
//!   a message that completes with the broker once the program dropped it.
//! - [`options`]: flags and a [`SessionConfig`] turned into Paho's options
//!   (pure; unit-tested without a broker).
//! - [`session`]: a [`Session`]: new, connect, publish, close.
//! - `client` (private): what a session and the worker share of one
//!   connection (the Paho client, its options), and the diagnosis of a
//!   failed connect.
//! - `worker` (private): the one thread per process that calls Paho outside
//!   its callbacks: connects, reconnects, publishes, closes.
//! - `reconnect` (private): the reconnect policy, a pure state machine:
//!   facts in (MQTT 5 reasons, refusals, the instance mark), when and where
//!   to connect out; never a clean session, never a guess from timing.
//! - `instance` (private): the instance mark, how a session learns as a
//!   fact (on MQTT 3.1.1 too) that another process uses its client id.
//! - [`store`]: an append-only file of keyed records, and `--sync`.
//! - [`persist`]: Paho client persistence on a store, one per client.
//! - `commit` (private): group commit with `--sync always`: Paho's
//!   acknowledgements wait for one sync of everything they stand for.
//! - `journal` (private): the inbox journal on a store: messages received
//!   but not yet applied survive a stop or a crash.
//! - [`paho_sys`] (private): the `unsafe` calls into Paho C and our patch of it.
//! - [`error`]: [`ConnectError`] and the [`ExitCode`]s.
//! - [`fleet`]: for `--count N` programs: many sessions, staggered timers.
//! - [`shutdown`]: SIGINT/SIGTERM (first asks to stop, second exits).
//! - [`logging`]: env_logger on stderr, `-d` for the Paho protocol trace.
//! - [`payload`]: the JSON payloads of the topic table, fallible both ways.
//! - [`topics`]: topic names and ids.
//! - [`discovery`]: Home Assistant MQTT discovery (`--ha-discovery`).

pub mod cli;
mod client;
mod commit;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fleet;
mod handoff;
mod instance;
mod journal;
pub mod logging;
pub mod options;
mod paho_sys;
pub mod payload;
pub mod persist;
mod probe;
mod reconnect;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod topics;
mod worker;

pub use cli::CommonArgs;
pub use error::{ConnectError, ExitCode};
pub use events::{Delivery, Event, Inbox, Next, Stop};
pub use options::{SessionConfig, Will};
pub use reconnect::retry_delay;
pub use session::Session;
pub use store::SyncMode;

pub use payload::MAX_PAYLOAD;

/// The exit code of bad configuration (tests compare with it).
pub const EXIT_CONFIG: i32 = ExitCode::Config.code();

/// The whole of a usual `main`: logging, SIGINT/SIGTERM asking `run` to
/// stop, and `run`'s result turned into an exit code.
pub fn serve(debug: bool, run: impl FnOnce(&Inbox) -> anyhow::Result<()>) -> ! {
    logging::init(debug);
    let inbox = Inbox::new();
    let result = shutdown::stop_on_signals(inbox.stop()).and_then(|()| run(&inbox));
    exit_with(result)
}

/// The end of every binary's `main`: turns `run`'s result into an exit code
/// and prints the error chain on one line, as ripgrep and fd do.
pub fn exit_with(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => ExitCode::Success.exit(),
        Err(err) => {
            log::error!("{err:#}");
            // Logging may be off (or not yet initialised): the user must
            // still see why we stopped.
            if !log::log_enabled!(log::Level::Error) {
                eprintln!("error: {err:#}");
            }
            ExitCode::Config.exit()
        }
    }
}
