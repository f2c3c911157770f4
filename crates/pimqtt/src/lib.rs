//! Everything the pi-mqtt programs share, written once.
//!
//! # Layout
//! - [`cli`]: the flags common to every binary (`mosquitto_sub`-style), flattened
//!   into each program's own clap parser.
//! - [`connect`]: a [`Session`](connect::Session) over Paho: durable session, QoS 2,
//!   client persistence, TLS, automatic reconnect, availability (online / will),
//!   subscriptions re-made on every connect, and the receive loop's [`Event`]s.
//! - [`fleet`]: for `--count N` programs: connecting many sessions at once and
//!   staggered periodic timers.
//! - [`shutdown`]: SIGINT/SIGTERM handling (first asks to stop, second exits).
//! - [`logging`]: env_logger on stderr, `-d` for the Paho protocol trace.
//! - [`persist`]: Paho client persistence (outgoing on disk, inbound in memory).
//! - [`payload`]: the JSON payloads of the topic table, fallible both ways.
//! - [`topics`]: topic names and ids.
//! - [`testing`] (feature `testing`): a private Mosquitto per test and helpers
//!   to drive the binaries, shared by every crate's integration tests.

pub mod cli;
pub mod connect;
pub mod fleet;
pub mod logging;
pub mod payload;
pub mod persist;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topics;

pub use cli::CommonArgs;
pub use connect::{ConnectError, Event, Session, SessionConfig};
pub use shutdown::Stop;

pub use payload::MAX_PAYLOAD;

/// Exit code for bad configuration or a refused connection, as `mosquitto_sub`
/// uses a non-zero code for both.
pub const EXIT_CONFIG: i32 = 2;

/// The body of every binary's `main`: turns `run`'s result into an exit code
/// and prints the error chain on one line, as ripgrep and fd do.
pub fn exit_with(result: anyhow::Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            log::error!("{err:#}");
            // Logging may be off (or not yet initialised): the user must
            // still see why we stopped.
            if !log::log_enabled!(log::Level::Error) {
                eprintln!("error: {err:#}");
            }
            std::process::exit(EXIT_CONFIG);
        }
    }
}
