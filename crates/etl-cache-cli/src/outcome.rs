//! How a command ends: [`Status`] when it ran, [`Failure`] when it could not,
//! and the exit code each maps to.

use std::fmt;
use std::io;

use etl_cache::Error;

/// How a command ended, when it did not fail. Maps to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Found / done: exit 0.
    Ok,
    /// No entry for the key: exit 1.
    Miss,
    /// The command ran but found problems it reported (verify): exit 2.
    Problems,
}

/// Why a command failed (exit 2): a message and, where we know one, what to do.
#[derive(Debug)]
pub enum Failure {
    /// An error to print.
    Error {
        /// What went wrong.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// Standard output was closed by its reader (`etl-cache get k | head`): quit quietly.
    BrokenPipe,
}

/// The result of a command.
pub type CmdResult = Result<Status, Failure>;

/// Prints a failure on stderr and returns the exit code of a command's result:
/// 0 found / done, 1 miss, 2 error or problems found. A reader that closed
/// the pipe early is no error.
pub fn report(result: CmdResult) -> u8 {
    match result {
        Ok(Status::Ok) => 0,
        Ok(Status::Miss) => 1,
        Ok(Status::Problems) => 2,
        Err(Failure::BrokenPipe) => 0,
        Err(f) => {
            eprintln!("etl-cache: {f}");
            2
        }
    }
}

impl Failure {
    /// A failure with a hint.
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure::Error {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A failure writing standard output.
    pub fn stdout(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Failure::BrokenPipe;
        }
        Failure::Error {
            message: format!("cannot write to standard output: {e}"),
            hint: None,
        }
    }
}

/// Writes `text` to standard output in one piece (a closed pipe is
/// [`Failure::BrokenPipe`]).
pub fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(Failure::stdout)
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let hint = match &e {
            Error::InvalidKey { .. } => {
                Some("keys are non-empty UTF-8 of at most 1024 bytes, without NUL".to_owned())
            }
            Error::LockTimeout { .. } => {
                Some("another process is writing this key; retry when it is done".to_owned())
            }
            Error::Corrupt { .. } => Some(
                "the entry failed its checksum and is gone; store it again with `etl-cache set`"
                    .to_owned(),
            ),
            Error::TooLarge { .. } => {
                Some("raise the cache's max_bytes, or store the value compressed".to_owned())
            }
            Error::Io { .. } => Some(
                "check that the cache directory exists, is writable and its disk is not full"
                    .to_owned(),
            ),
            Error::Open { .. } => Some(
                "pass another location with --cache URL or the ETL_CACHE_URL variable".to_owned(),
            ),
            _ => None,
        };
        Failure::Error {
            message: e.to_string(),
            hint,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error { message, hint } => {
                write!(f, "error: {message}")?;
                if let Some(hint) = hint {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
            Failure::BrokenPipe => f.write_str("standard output closed"),
        }
    }
}
