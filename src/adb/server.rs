//! Owns the adb server: the vendored `adb` run as `adb -P <port> nodaemon server`, a
//! supervised child that does the USB work while we speak its TCP protocol.
//!
//! If something already listens on `--adb-server`, we use it and start nothing; that is
//! checked again before every (re)start, so an adb client of another version that kills
//! our server and starts its own does not make us fight it for the port. When our child
//! dies it is started again after a capped exponential backoff, and each restart bumps
//! `adb_server_restarts_total`. Its stdout and stderr go to our log, one line per line,
//! prefixed `adb: `. On shutdown it gets SIGTERM, then SIGKILL.
//!
//! Keys: the server signs the USB handshake with `$HOME/.android/adbkey`, creating it on
//! first start. That file must persist (in the manifests it comes from a Secret):
//! with a new key every phone shows `unauthorized` until someone taps "allow" again.
//!
//! This module never talks the adb protocol (that is `client`) and never waits on a
//! child itself: the exit status comes from the `Reaper`.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

use crate::reaper::{Exit, Reaper};
use crate::shutdown::Shutdown;
use crate::state::Shared;

/// First delay before a restart; doubled after each quick death up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long was healthy: the next restart starts from [`MIN_BACKOFF`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often to look again while someone else's server owns the port.
const FOREIGN_POLL: Duration = Duration::from_secs(5);

/// The next delay after a server that ran for `ran`, given the previous delay.
fn next_backoff(previous: Duration, ran: Duration) -> Duration {
    if ran >= HEALTHY_RUN {
        MIN_BACKOFF
    } else {
        (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
    }
}

/// The command line that runs the server in the foreground on `addr`'s port.
fn server_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-P".into(),
        addr.port().to_string(),
        "nodaemon".into(),
        "server".into(),
    ]
}

async fn listening(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Our level for one of the server's log lines (`adb I 11-26 17:40:33 ... auth.cpp:437] ...`):
/// its own level letter, mapped; lines without one are info. adb's own `I` lines narrate
/// every transport's threads and keys: at our `info` they would bury the events an
/// operator acts on, so they go to `debug` (`RUST_LOG=adb::server=debug` shows them).
fn level_of(line: &str) -> log::Level {
    match line.split_whitespace().nth(1) {
        Some("E") | Some("F") => log::Level::Error,
        Some("W") => log::Level::Warn,
        Some("I") | Some("D") | Some("V") => log::Level::Debug,
        _ => log::Level::Info,
    }
}

/// Longest line kept whole; a longer one is logged in pieces.
const MAX_LINE: u64 = 16 * 1024;

/// Logs every line of one of the child's pipes until it closes. Bytes, not `str`: adb
/// prints USB descriptor strings as the phone gives them, and one line of invalid UTF-8
/// must not end the draining (the server would then block on a full pipe).
async fn forward_lines(pipe: impl AsyncRead + Unpin) {
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
                log::warn!("reading the adb server's output: {e}");
                return;
            }
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        log::log!(level_of(&line), "adb: {line}");
    }
}

fn forward(fd: Option<impl Into<OwnedFd>>) {
    let Some(fd) = fd else { return };
    match tokio::net::unix::pipe::Receiver::from_owned_fd(fd.into()) {
        Ok(pipe) => {
            tokio::spawn(forward_lines(pipe));
        }
        Err(e) => log::warn!("cannot read the adb server's output: {e}"),
    }
}

/// Runs until shutdown: keeps an adb server listening on `shared.config.adb_server`.
pub async fn run(shared: Arc<Shared>, reaper: Reaper, mut shutdown: Shutdown) {
    let adb: PathBuf = shared.config.adb.clone();
    let addr = shared.config.adb_server;
    let mut backoff = MIN_BACKOFF;
    let mut started_once = false;
    let mut foreign_logged = false;
    loop {
        if shutdown.is_requested() {
            return;
        }
        if listening(addr).await {
            if !foreign_logged {
                log::info!("an adb server already listens on {addr}: using it, not starting ours");
                foreign_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOREIGN_POLL) => continue,
                _ = shutdown.requested() => return,
            }
        }
        foreign_logged = false;
        if started_once {
            shared.metrics.adb_server_restarts_total.inc();
        }
        started_once = true;
        let args = server_args(addr);
        let spawned = reaper.spawn(
            Command::new(&adb)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let began = Instant::now();
        let exit = match spawned {
            Err(e) => {
                log::error!(
                    "cannot start the adb server {} {}: {e}",
                    adb.display(),
                    args.join(" ")
                );
                None
            }
            Ok(mut child) => {
                log::info!(
                    "started the adb server: {} {} (pid {})",
                    adb.display(),
                    args.join(" "),
                    child.pid
                );
                forward(child.stdout.take());
                forward(child.stderr.take());
                let exited = tokio::select! {
                    exit = &mut child.exit => Some(exit.ok()),
                    _ = shutdown.requested() => None,
                };
                match exited {
                    Some(exit) => exit,
                    None => {
                        stop(child.pid, child.exit).await;
                        return;
                    }
                }
            }
        };
        let ran = began.elapsed();
        backoff = next_backoff(backoff, ran);
        let how = exit.map_or("an unknown status".to_string(), |e: Exit| e.to_string());
        log::warn!(
            "the adb server exited with {how} after {:.1}s; starting it again in {}s",
            ran.as_secs_f64(),
            backoff.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// SIGTERM, up to 3 s for the server to go, then SIGKILL.
async fn stop(pid: i32, mut exit: tokio::sync::oneshot::Receiver<Exit>) {
    // SAFETY: kill has no memory preconditions; pid is our child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    match tokio::time::timeout(Duration::from_secs(3), &mut exit).await {
        Ok(status) => log::info!(
            "the adb server stopped ({})",
            status.map_or("unknown status".into(), |e| e.to_string())
        ),
        Err(_) => {
            log::warn!("the adb server ignored SIGTERM for 3s; killing it");
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

    #[test]
    fn server_log_levels_follow_adbs_own() {
        let line = "adb W 11-26 17:40:35 15575 15575 usb_linux.cpp:1] cannot open /dev/bus/usb";
        assert_eq!(level_of(line), log::Level::Warn);
        assert_eq!(level_of("adb E 11-26 x"), log::Level::Error);
        assert_eq!(level_of("adb I 11-26 x"), log::Level::Debug);
        assert_eq!(level_of("adb V 11-26 x"), log::Level::Debug);
        assert_eq!(level_of("* daemon started successfully"), log::Level::Info);
    }

    #[test]
    fn server_runs_in_the_foreground_on_our_port() {
        let addr: SocketAddr = "127.0.0.1:15037".parse().unwrap();
        assert_eq!(server_args(addr), ["-P", "15037", "nodaemon", "server"]);
    }
}
