//! Running the binary with bytes piped into its stdin: shared by the
//! command-line test files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `cmd` to its end with `stdin` fed to it, its stdout and stderr
/// captured.
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // The command may not read its stdin at all.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}
