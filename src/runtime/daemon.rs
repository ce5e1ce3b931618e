//! Keeps a helper daemon running beside us: the adb server for the Android phones,
//! usbmuxd for the iPhones. Each is a supervised child that does the USB work while we
//! speak its socket.
//!
//! If something already answers on the daemon's socket, we use it and start nothing;
//! that is checked again before every (re)start, so a daemon someone else started (an
//! adb client of another version, the host's usbmuxd behind a mounted socket) is never
//! fought over. Our child runs in the supervised loop (`supervise`): when it dies it is
//! started again after a capped, jittered exponential backoff; its stdout and stderr go
//! to our log, one line per line, with its prefix (`adb: `, `usbmuxd: `); on shutdown
//! its process group gets SIGTERM, then SIGKILL.
//!
//! This module never talks the daemon's protocol; what is particular to daemons (the
//! socket check, the restart hook, the log lines) is its [`Hooks`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use crate::runtime::backoff::Backoff;
use crate::runtime::child::{Kill, Sink};
use crate::runtime::reaper::{Exit, Reaper};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::supervise::{self, Decision, Hooks, RestartPolicy};

/// The first restart comes after about this; the next ones double up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A daemon that ran this long was healthy: the next restart starts from [`MIN_BACKOFF`].
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How often to look again while someone else's daemon owns the socket.
const FOREIGN_POLL: Duration = Duration::from_secs(5);
/// Between SIGTERM and SIGKILL at shutdown.
const GRACE: Duration = Duration::from_secs(3);

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
    /// Requests to kill our daemon so that it starts again, each with why: its socket
    /// accepts but it no longer answers (only its protocol's speaker can tell).
    pub kill: Option<mpsc::UnboundedReceiver<String>>,
}

/// The restart rules of a daemon: 2 s doubling to 30 s, jittered, reset by a healthy run.
fn policy() -> RestartPolicy {
    RestartPolicy::new(Backoff::with_entropy(MIN_BACKOFF, MAX_BACKOFF), HEALTHY_RUN)
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

/// A daemon's part in the supervised loop.
struct Daemon {
    spec: Spec,
    started_once: bool,
}

impl Daemon {
    fn command_line(&self) -> String {
        format!(
            "{} {}",
            self.spec.program.display(),
            self.spec.args.join(" ")
        )
    }
}

impl Hooks for Daemon {
    fn target(&self) -> &'static str {
        self.spec.target
    }

    fn name(&self) -> &str {
        self.spec.name
    }

    fn grace(&self) -> Duration {
        GRACE
    }

    /// Waits while someone else's daemon answers on the socket.
    async fn before_start(&mut self, shutdown: &mut Shutdown) -> bool {
        let (target, name) = (self.spec.target, self.spec.name);
        let mut foreign_logged = false;
        loop {
            if shutdown.is_requested() {
                return false;
            }
            if !answering(&self.spec.socket).await {
                break;
            }
            if !foreign_logged {
                log::info!(
                    target: target,
                    "{name} already listens on {}: using it, not starting ours",
                    self.spec.socket
                );
                foreign_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOREIGN_POLL) => {}
                _ = shutdown.requested() => return false,
            }
        }
        // A request made while none of ours ran is about a daemon that is gone.
        while let Some(why) = self.spec.kill.as_mut().and_then(|k| k.try_recv().ok()) {
            log::info!(
                target: target,
                "not killing {name}: none of ours runs (asked because it {why})"
            );
        }
        if self.started_once {
            (self.spec.on_restart)();
        }
        self.started_once = true;
        true
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args);
        cmd
    }

    fn spawn_failed(&mut self, e: &io::Error) -> Option<Exit> {
        log::error!(
            target: self.spec.target,
            "cannot start {}: {}: {e}",
            self.spec.name,
            self.command_line()
        );
        None
    }

    fn started(&mut self, pid: i32) -> Sink {
        log::info!(
            target: self.spec.target,
            "started {}: {} (pid {pid})",
            self.spec.name,
            self.command_line()
        );
        let (target, prefix, level_of) = (self.spec.target, self.spec.prefix, self.spec.level_of);
        Arc::new(move |line: &str| log::log!(target: target, level_of(line), "{prefix}: {line}"))
    }

    fn exited(&mut self, exit: Option<Exit>, ran_for: Duration, decision: &Decision) {
        let how = exit.map_or("an unknown status".to_string(), |e| e.to_string());
        log::warn!(
            target: self.spec.target,
            "{} exited with {how} after {:.1}s; starting it again in {:.1}s",
            self.spec.name,
            ran_for.as_secs_f64(),
            decision.delay.as_secs_f64()
        );
    }

    fn stopping(&mut self, pid: i32, _drain: Option<Duration>) {
        log::debug!(target: self.spec.target, "stopping {} (pid {pid})", self.spec.name);
    }

    fn killing(&mut self, _pid: i32, why: Kill) {
        let name = self.spec.name;
        match why {
            Kill::Grace => log::warn!(
                target: self.spec.target,
                "{name} ignored SIGTERM for {}s; killing it",
                GRACE.as_secs()
            ),
            Kill::Hurried => log::warn!(
                target: self.spec.target,
                "second termination signal: killing {name} now"
            ),
        }
    }

    async fn kill_requested(&mut self) -> String {
        match self.spec.kill.as_mut() {
            Some(requests) => match requests.recv().await {
                Some(why) => why,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    fn killing_on_request(&mut self, pid: i32, why: &str) {
        log::warn!(
            target: self.spec.target,
            "{} (pid {pid}) {why}: killing it (SIGKILL) to start it again",
            self.spec.name
        );
    }

    fn stopped(&mut self, pid: i32, exit: Option<Exit>) {
        match exit {
            Some(exit) => {
                log::info!(target: self.spec.target, "{} stopped ({exit})", self.spec.name)
            }
            None => log::error!(
                target: self.spec.target,
                "{} (pid {pid}) did not die after SIGKILL",
                self.spec.name
            ),
        }
    }
}

/// Runs until shutdown: keeps `spec`'s daemon answering on its socket.
pub async fn run(spec: Spec, reaper: Reaper, mut shutdown: Shutdown) {
    let mut daemon = Daemon {
        spec,
        started_once: false,
    };
    supervise::run(&mut daemon, &reaper, &mut policy(), &mut shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let quick = Duration::from_secs(1);
        let mut p = policy();
        let t = std::time::Instant::now();
        // Each delay is drawn from the upper half of its nominal value.
        for nominal in [2, 4, 8, 16, 30, 30, 30] {
            let d = p.on_exit(quick, t + HEALTHY_RUN * 10).delay.as_secs_f64();
            let n = f64::from(nominal);
            assert!(d >= n / 2.0 && d <= n, "{d} vs {nominal}");
        }
        let d = p.on_exit(HEALTHY_RUN, t + HEALTHY_RUN * 20).delay;
        assert!(d <= MIN_BACKOFF && d >= MIN_BACKOFF / 2, "{d:?}");
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
