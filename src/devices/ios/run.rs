//! Runs one libimobiledevice tool under a deadline and hands back what it printed.
//!
//! The tool is started by `runtime::child`, in its own process group, so that on timeout
//! (or when the caller gives up and drops the future) SIGKILL to the group takes its
//! helpers down with it: a stuck `ideviceinfo` must not pile up across rounds on a Pi.
//! Its pipes are read on the runtime, both at once, so neither a chatty stderr nor a
//! phone that never answers blocks the other phones' rounds; what is kept of each is
//! bounded. The exit status comes from the [`Reaper`], never from `Child::wait`.
//!
//! Must not: know about phones or parse values (the caller does, in `ios::parse`).

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::runtime::child;
use crate::runtime::reaper::{Exit, Reaper};

/// At most this much of each pipe is kept; the rest is read and dropped so that the tool
/// never blocks on a full pipe.
const KEEP_BYTES: usize = 64 * 1024;

/// What a tool that exited 0 printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
}

/// Why a run gave no [`Output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// There is no file at the path.
    Missing,
    /// The tool could not be started or read (permissions, no more pids, a pipe error).
    Io(String),
    /// The deadline passed; the tool's process group was killed.
    Timeout(Duration),
    /// The tool ended other than with exit code 0. `message` is the first non-empty line
    /// of its stderr, or of its stdout when stderr is empty (libimobiledevice prints
    /// some of its errors, such as `ERROR: Device <udid> not found!`, on stdout).
    Failed { exit: Exit, message: String },
}

/// Runs `path args...` with stdin closed and waits at most `deadline` for it to exit and
/// close its pipes.
pub async fn run(
    reaper: &Reaper,
    path: &Path,
    args: &[&str],
    deadline: Duration,
) -> Result<Output, RunError> {
    let mut cmd = Command::new(path);
    cmd.args(args);
    let spawned = child::spawn(reaper, &mut cmd).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RunError::Missing,
        _ => RunError::Io(format!("cannot start: {e}")),
    })?;
    // From here on, leaving early for any reason (timeout, error, the caller dropping
    // us) kills the whole group.
    let mut group = GroupKill {
        pgid: spawned.pid,
        armed: true,
    };
    let (Some(stdout), Some(stderr)) = (spawned.stdout, spawned.stderr) else {
        return Err(RunError::Io("the tool's pipes were not created".into()));
    };
    let exit = spawned.exit;

    let finished = tokio::time::timeout(deadline, async {
        let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
        (out, err, exit.await)
    })
    .await;
    let (out, err, exit) = finished.map_err(|_| RunError::Timeout(deadline))?;
    let exit = exit.map_err(|_| RunError::Io("the exit status was lost".into()))?;
    // The leader has been reaped: its pid may be reused, so the group must not be
    // signalled any more.
    group.armed = false;
    let stdout = String::from_utf8_lossy(&out.map_err(|e| RunError::Io(format!("stdout: {e}")))?)
        .into_owned();
    let stderr = String::from_utf8_lossy(&err.map_err(|e| RunError::Io(format!("stderr: {e}")))?)
        .into_owned();
    match exit {
        Exit::Code(0) => Ok(Output { stdout }),
        _ => Err(RunError::Failed {
            exit,
            message: first_line(&stderr)
                .or_else(|| first_line(&stdout))
                .unwrap_or_default()
                .to_string(),
        }),
    }
}

/// The first line with something on it, trimmed.
fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Kills a process group when dropped, unless disarmed.
struct GroupKill {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if self.armed {
            child::signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// Reads until end of file, keeping the first [`KEEP_BYTES`].
async fn read_bounded(mut pipe: impl AsyncRead + Unpin) -> io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = KEEP_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n  \nERROR: x\nmore\n"), Some("ERROR: x"));
        assert_eq!(first_line(" \n"), None);
    }
}
