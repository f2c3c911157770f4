//! The errors a user can cause, and the exit codes they end a program with
//! (one enum, converted once in `main`, as fd's `exit_codes.rs`).

use std::fmt;

/// Why a program could not get (or stay) connected. Each is something the
/// user must fix, so it ends the program rather than being retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// A flag or file is wrong; the text says which and what to do.
    Config(String),
    /// The broker answered and said no.
    Refused(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Config(s) | ConnectError::Refused(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ConnectError {}

/// How a program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    /// Bad configuration or a refused connection (`mosquitto_sub` also
    /// exits non-zero for both).
    Config,
    /// A second Ctrl+C: exit at once, as a shell reports death by SIGINT.
    Interrupted,
}

impl ExitCode {
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Config => 2,
            ExitCode::Interrupted => 130,
        }
    }

    pub fn exit(self) -> ! {
        std::process::exit(self.code())
    }
}
