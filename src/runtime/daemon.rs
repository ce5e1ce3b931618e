//! Keeps a helper daemon running beside us: the adb server for the Android phones,
//! usbmuxd for the iPhones. Each is a supervised child that does the USB work while we
//! speak its socket.
//!
//! If something already answers on the daemon's socket, we use it and start nothing;
//! that is checked again before every (re)start, so a daemon someone else started (an
//! adb client of another version, the host's usbmuxd behind a mounted socket) is never
//! fought over. When our child dies it is started again after a capped exponential
//! backoff. Its stdout and stderr go to our log, one line per line, with its prefix
//! (`adb: `, `usbmuxd: `). On shutdown it gets SIGTERM, then SIGKILL.
//!
//! This module never talks the daemon's protocol and never waits on a child itself:
//! the exit status comes from the `Reaper`.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use crate::runtime::reaper::{Exit, Reaper};
use crate::runtime::shutdown::Shutdown;

/// First delay before a restart; doubled after each quick death up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long was healthy: the next restart starts from [`MIN_BACKOFF`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often to look again while someone else's daemon owns the socket.
const FOREIGN_POLL: Duration = Duration::from_secs(5);
/// Longest line kept whole; a longer one is logged in pieces.
const MAX_LINE: u64 = 16 * 1024;

/// Where a daemon answers once it runs.
#[derive(Debug, Clone)]
pub enum Socket {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Socket::Tcp(a) => write!(f, "{a}"),
            Socket::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One daemon to keep running.
pub struct Spec {
    /// The target of every log line about it (the caller's `module_path!()`), so that
    /// `RUST_LOG=adb::server=debug` and the like keep selecting them.
    pub target: &'static str,
    /// For log lines: `the adb server`, `usbmuxd`.
    pub name: &'static str,
    /// Starts each of its output lines in our log: `adb`, `usbmuxd`.
    pub prefix: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub socket: Socket,
    /// Our level for one of its output lines.
    pub level_of: fn(&str) -> log::Level,
    /// Runs before each restart (not before the first start).
    pub on_restart: Box<dyn Fn() + Send>,
}

/// The next delay after a daemon that ran for `ran`, given the previous delay.
fn next_backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_RUN {
        MIN_BACKOFF
    } else {
        (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
    }
}

async fn answering(socket: &Socket) -> bool {
    let wait = Duration::from_secs(1);
    match socket {
        Socket::Tcp(a) => matches!(
            tokio::time::timeout(wait, TcpStream::connect(a)).await,
            Ok(Ok(_))
        ),
        Socket::Unix(p) => matches!(
            tokio::time::timeout(wait, UnixStream::connect(p)).await,
            Ok(Ok(_))
        ),
    }
}

/// Logs every line of one of the child's pipes until it closes. Bytes, not `str`: adb
/// prints USB descriptor strings as the phone gives them, and one line of invalid UTF-8
/// must not end the draining (the daemon would then block on a full pipe).
async fn forward_lines(
    pipe: impl AsyncRead + Unpin,
    target: &'static str,
    prefix: &'static str,
    level_of: fn(&str) -> log::Level,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                log::warn!(target: target, "reading the output of {prefix}: {e}");
                return;
            }
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        log::log!(target: target, level_of(&line), "{prefix}: {line}");
    }
}

fn forward(fd: Option<impl Into<OwnedFd>>, spec: &Spec) {
    let Some(fd) = fd else { return };
    match tokio::net::unix::pipe::Receiver::from_owned_fd(fd.into()) {
        Ok(pipe) => {
            tokio::spawn(forward_lines(pipe, spec.target, spec.prefix, spec.level_of));
        }
        Err(e) => log::warn!(target: spec.target, "cannot read the output of {}: {e}", spec.name),
    }
}

/// Runs until shutdown: keeps `spec`'s daemon answering on its socket.
pub async fn run(spec: Spec, reaper: Reaper, mut shutdown: Shutdown) {
    let (target, name) = (spec.target, spec.name);
    let (program, args) = (&spec.program, &spec.args);
    let mut backoff = MIN_BACKOFF;
    let mut started_once = false;
    let mut foreign_logged = false;
    loop {
        if shutdown.is_requested() {
            return;
        }
        if answering(&spec.socket).await {
            if !foreign_logged {
                log::info!(
                    target: target,
                    "{name} already listens on {}: using it, not starting ours",
                    spec.socket
                );
                foreign_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOREIGN_POLL) => continue,
                _ = shutdown.requested() => return,
            }
        }
        foreign_logged = false;
        if started_once {
            (spec.on_restart)();
        }
        started_once = true;
        let spawned = reaper.spawn(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let began = Instant::now();
        let exit = match spawned {
            Err(e) => {
                log::error!(
                    target: target,
                    "cannot start {name}: {} {}: {e}",
                    program.display(),
                    args.join(" ")
                );
                None
            }
            Ok(mut child) => {
                log::info!(
                    target: target,
                    "started {name}: {} {} (pid {})",
                    program.display(),
                    args.join(" "),
                    child.pid
                );
                forward(child.stdout.take(), &spec);
                forward(child.stderr.take(), &spec);
                let exited = tokio::select! {
                    exit = &mut child.exit => Some(exit.ok()),
                    _ = shutdown.requested() => None,
                };
                match exited {
                    Some(exit) => exit,
                    None => {
                        stop(target, name, child.pid, child.exit).await;
                        return;
                    }
                }
            }
        };
        let ran = began.elapsed();
        backoff = next_backoff(backoff, ran);
        let how = exit.map_or("an unknown status".to_string(), |e: Exit| e.to_string());
        log::warn!(
            target: target,
            "{name} exited with {how} after {:.1}s; starting it again in {}s",
            ran.as_secs_f64(),
            backoff.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// SIGTERM, up to 3 s for the daemon to go, then SIGKILL.
async fn stop(target: &str, name: &str, pid: i32, mut exit: tokio::sync::oneshot::Receiver<Exit>) {
    // SAFETY: kill has no memory preconditions; pid is our child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    match tokio::time::timeout(Duration::from_secs(3), &mut exit).await {
        Ok(status) => log::info!(
            target: target,
            "{name} stopped ({})",
            status.map_or("unknown status".into(), |e| e.to_string())
        ),
        Err(_) => {
            log::warn!(target: target, "{name} ignored SIGTERM for 3s; killing it");
            // SAFETY: as above; the reap loop has not seen it exit.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = tokio::time::timeout(Duration::from_secs(2), exit).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let quick = Duration::from_secs(1);
        let mut b = MIN_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..7 {
            b = next_backoff(b, quick);
            seen.push(b.as_secs());
        }
        assert_eq!(seen, vec![2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_backoff(b, HEALTHY_RUN), MIN_BACKOFF);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_unix_socket_answers_only_while_someone_listens() {
        let dir = std::env::temp_dir().join(format!("tmm-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let socket = Socket::Unix(path.clone());
        assert!(!answering(&socket).await);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert!(answering(&socket).await);
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
