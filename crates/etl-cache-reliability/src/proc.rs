//! Child processes: the test binary re-executed in a role.
//!
//! A suite's role function is an ordinary `#[test]` that returns at once
//! unless [`ROLE_VAR`] names its role; the parent starts the same binary with
//! `--exact <test> --nocapture` and the variable set.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable that selects a child's role.
pub const ROLE_VAR: &str = "ETL_CACHE_RELIABILITY_ROLE";

/// The role this process was started in, if any.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Whether this process was started in `role`.
pub fn is_role(role: &str) -> bool {
    self::role().as_deref() == Some(role)
}

/// In a child started in `role`, the path the parent passed in the
/// environment variable `var`; `None` in any other process.
pub fn role_path(role: &str, var: &str) -> Option<std::path::PathBuf> {
    if !is_role(role) {
        return None;
    }
    let path = std::env::var(var).unwrap_or_else(|_| panic!("{var} is set by the parent"));
    Some(path.into())
}

/// The path of the running test binary.
pub fn exe() -> std::path::PathBuf {
    std::env::current_exe().expect("the path of the test binary")
}

/// The libtest arguments that run exactly `test` and show its output.
pub fn test_args(test: &str) -> Vec<String> {
    ["--exact", test, "--nocapture", "--test-threads=1", "-q"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// A command that re-runs this test binary as `role`, running only `test`.
/// Its stdout is piped (read it with [`Lines`]); stderr is inherited.
pub fn child(test: &str, role: &str) -> Command {
    let mut c = Command::new(exe());
    c.args(test_args(test))
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// The lines a child prints, read on a thread so waiting can time out.
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    /// Starts reading `out`.
    pub fn new(out: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// Takes the stdout of `child` and reads it.
    pub fn of(child: &mut Child) -> Lines {
        Lines::new(child.stdout.take().expect("stdout was piped"))
    }

    /// Waits at most `within` for a line starting with `prefix`; returns it.
    /// Other lines are skipped.
    ///
    /// # Panics
    ///
    /// When no such line comes in time or the child closes its stdout.
    pub fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no line starting with {prefix:?} from the child within {within:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the child closed its output before printing {prefix:?}")
                }
            }
        }
    }

    /// Every line printed until the child closed its output.
    pub fn rest(&self) -> Vec<String> {
        self.rx.iter().collect()
    }
}

/// Kills `child` with SIGKILL and reaps it; checks it died of that signal
/// (not of something else before).
///
/// # Panics
///
/// When the child had already exited on its own.
pub fn kill9(child: &mut Child) -> ExitStatus {
    let _ = child.kill(); // SIGKILL on Unix
    let status = child.wait().expect("reap the child");
    assert!(
        status.signal() == Some(9),
        "the child was expected to be killed by SIGKILL but ended with {status:?}"
    );
    status
}

/// Waits at most `within` for `child` to exit.
///
/// # Panics
///
/// When it does not (it is then killed).
pub fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {within:?}; it was killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
