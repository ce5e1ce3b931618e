//! The one owner of `waitpid`: every child the program starts, and every orphan the
//! kernel hands to us, is reaped here.
//!
//! In the image we are PID 1, and elsewhere we make ourselves a child subreaper, so
//! orphaned task processes of the bot become our children. A second `waitpid(-1)` loop
//! would steal the exit statuses that supervision needs, and `Child::wait` would miss
//! orphans; so children are spawned with [`Reaper::spawn`], which records the pid, and
//! the reap loop routes each status to the waiter of that pid. Statuses of pids nobody
//! registered are orphans: they are logged at debug level and dropped.
//!
//! Never call `Child::wait`/`try_wait` on a child spawned here: the status belongs to
//! the reap loop.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::process::{ChildStderr, ChildStdout, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code itself, or 128 + the signal number.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    fn from_wait_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s} ({})", signal_name(*s)),
        }
    }
}

/// The usual name of a signal number, for log lines.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "other",
    }
}

/// A started child: its pid, the output pipes that were asked for, and its future exit.
/// A piped stdin is closed at spawn: no child of ours reads input from us.
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub exit: oneshot::Receiver<Exit>,
}

type Waiters = HashMap<i32, oneshot::Sender<Exit>>;

/// Cheap to clone; every clone routes to the same reap loop.
#[derive(Clone, Default)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    pub fn new() -> Reaper {
        Reaper::default()
    }

    /// Starts `cmd` and registers its pid before the reap loop can see it exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        // Holding the lock across fork/exec keeps the reap loop from collecting this
        // child's status before its waiter exists.
        let mut waiters = self.lock();
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok(Spawned {
            pid,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit: rx,
        })
        // `child` is dropped here without waiting: the reap loop owns its status.
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps every child that has exited, without blocking. Returns how many.
    pub fn reap_now(&self) -> usize {
        let mut reaped = 0;
        let mut waiters = self.lock();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: status is a valid out-pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                // 0: children remain but none has exited; -1 (ECHILD): no children.
                break;
            }
            reaped += 1;
            let exit = Exit::from_wait_status(status);
            match waiters.remove(&pid) {
                // The waiter may have given up (dropped its receiver); that is fine.
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => log::debug!("reaped orphan pid {pid} ({exit})"),
            }
        }
        reaped
    }

    /// Reaps on every SIGCHLD, for as long as the runtime runs: the reaper must outlive
    /// every other task, so it stops only when `app` drops the runtime. No periodic
    /// sweep: the kernel coalesces SIGCHLDs but `reap_now` collects every exited child
    /// per signal, and one that exited before we listened is collected by the first
    /// sweep below. Only without the signal does a timer stand in for it.
    pub async fn run(self) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGCHLD ({e}); reaping every second instead");
                None
            }
        };
        loop {
            self.reap_now();
            match sigchld.as_mut() {
                Some(s) => {
                    if s.recv().await.is_none() {
                        log::error!("SIGCHLD is no longer delivered; reaping every second");
                        sigchld = None;
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

/// Makes orphaned descendants come to us when we are not PID 1, and says in the log
/// whether orphans will be reaped.
pub fn become_subreaper() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid == 1 {
        log::info!("running as PID 1: orphaned processes will be reaped");
        return;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        log::info!("pid {pid} is a child subreaper: orphaned processes will be reaped");
    } else {
        log::warn!(
            "cannot become a child subreaper ({}): orphans of the bot will not be reaped by us",
            io::Error::last_os_error()
        );
    }
}

/// For unit tests, which share one process: a test that runs the reap loop
/// (`waitpid(-1)`) and a test that waits on a child of its own must not overlap, or the
/// loop steals the other's exit status (`ECHILD`). Each such test holds this.
#[cfg(test)]
pub fn children_lock() -> std::sync::MutexGuard<'static, ()> {
    static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `test` on a current-thread runtime with the reap loop, holding
/// [`children_lock`].
#[cfg(test)]
pub fn with_reap_loop<F, Fut>(test: F)
where
    F: FnOnce(Reaper) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _turn = children_lock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    runtime.block_on(async {
        let reaper = Reaper::new();
        tokio::spawn(reaper.clone().run());
        test(reaper).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(Exit::Code(0).as_code(), 0);
        assert_eq!(Exit::Code(3).as_code(), 3);
        assert_eq!(Exit::Signal(9).as_code(), 137);
        assert_eq!(Exit::Signal(15).to_string(), "signal 15 (SIGTERM)");
    }

    #[test]
    fn statuses_decode_for_every_code_and_signal() {
        for code in 0..=255 {
            // A normal exit's wait status is code << 8.
            assert_eq!(Exit::from_wait_status(code << 8), Exit::Code(code));
        }
        for sig in 1..=31 {
            assert_eq!(Exit::from_wait_status(sig), Exit::Signal(sig));
        }
    }
}
