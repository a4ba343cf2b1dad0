//! Exec check (keepalived's MISC_CHECK): run a command; exit status 0 is success.
//!
//! The command runs without a shell, with `SPRAY_BACKEND_ADDR` and `SPRAY_BACKEND_PORT` in
//! its environment, stdin/stdout closed and stderr inherited (so its complaints reach the
//! log). A command still running at the timeout is killed and counts as a failure.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ProbeError;

/// Runs `command` for backend `addr`, killing it after `timeout`.
///
/// # Errors
/// The command cannot be started, exits non-zero, is killed by a signal, or times out.
pub fn probe(command: &[String], addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| ProbeError("empty command".into()))?;
    let mut child = Command::new(prog)
        .args(args)
        .env("SPRAY_BACKEND_ADDR", addr.ip().to_string())
        .env("SPRAY_BACKEND_PORT", addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| ProbeError::io(format_args!("cannot run {prog:?}"), &e))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(ProbeError(match status.code() {
                    Some(code) => format!("{prog:?} exited with status {code}"),
                    None => format!("{prog:?} was killed by a signal"),
                }))
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError(format!(
                    "{prog:?} did not finish within {} ms",
                    timeout.as_millis()
                )));
            }
            // Polling keeps this simple and cheap enough at health-check rates.
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(ProbeError::io(format_args!("waiting for {prog:?}"), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    const A: &str = "127.0.0.1:514";
    const T: Duration = Duration::from_millis(2000);

    #[test]
    fn true_false_and_timeout() {
        let a = A.parse().unwrap();
        probe(&cmd(&["true"]), a, T).unwrap();
        let e = probe(&cmd(&["false"]), a, T).unwrap_err();
        assert_eq!(e.0, "\"false\" exited with status 1");
        let t0 = Instant::now();
        let e = probe(&cmd(&["sleep", "5"]), a, Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.0, "\"sleep\" did not finish within 100 ms");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn backend_is_in_the_environment() {
        let a = A.parse().unwrap();
        let script =
            "test \"$SPRAY_BACKEND_ADDR\" = 127.0.0.1 && test \"$SPRAY_BACKEND_PORT\" = 514";
        probe(&cmd(&["sh", "-c", script]), a, T).unwrap();
    }

    #[test]
    fn missing_program_is_named() {
        let e = probe(&cmd(&["/nonexistent/check"]), A.parse().unwrap(), T).unwrap_err();
        assert!(
            e.0.starts_with("cannot run \"/nonexistent/check\": "),
            "{e}"
        );
    }
}
