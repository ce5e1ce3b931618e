//! The one way a child is run: the bot, the daemons (the adb server, usbmuxd) and the
//! iOS tools.
//!
//! A child starts in a process group of its own, with stdin closed and both output pipes
//! read on the runtime through non-blocking pipes, so a noisy child never blocks on a full
//! pipe and the runtime never blocks on a read. Its exit status comes from the
//! [`Reaper`], never from `Child::wait`. Its output is forwarded line by line with a
//! bound on the line ([`MAX_LINE`]); it is stopped with SIGTERM to its group, a drain
//! for a bot that runs a task, a grace period, then SIGKILL to the group and to every
//! descendant (see [`stop`]).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::runtime::procs::Tree;
use crate::runtime::reaper::{signal_name, Exit, Reaper};
use crate::runtime::shutdown::Shutdown;

/// Longest line forwarded as one log line. The container runtime splits log lines at
/// 16 KiB itself, silently; cutting here first means an operator sees where a line was
/// cut. Nothing a child of ours prints in one line comes near it (adb's USB
/// descriptors, the bot's tracebacks are a few hundred bytes a line).
pub const MAX_LINE: usize = 16 * 1024;
/// After SIGKILL the kernel needs only a moment; this bounds a pathological wait.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// A started child: its pid (also its process group), its output pipes and its exit.
pub struct Child {
    pub pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub exit: oneshot::Receiver<Exit>,
}

/// Starts `cmd` in a group of its own with stdin closed and both outputs piped. Must be
/// called on the runtime (the pipes are registered with it).
pub fn spawn(reaper: &Reaper, cmd: &mut Command) -> io::Result<Child> {
    // Its own group: a signal reaches it and what it runs in its group, and a terminal's
    // ^C (when run by hand) reaches only us.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = reaper.spawn(cmd)?;
    let pid = spawned.pid;
    let pipes = (|| {
        let stdout = spawned
            .stdout
            .map(|p| pipe::Receiver::from_owned_fd(p.into()));
        let stderr = spawned
            .stderr
            .map(|p| pipe::Receiver::from_owned_fd(p.into()));
        io::Result::Ok((stdout.transpose()?, stderr.transpose()?))
    })();
    match pipes {
        Ok((stdout, stderr)) => Ok(Child {
            pid,
            stdout,
            stderr,
            exit: spawned.exit,
        }),
        Err(e) => {
            // Nobody could read it: it must not live on unseen.
            signal_group(pid, libc::SIGKILL);
            Err(io::Error::new(e.kind(), format!("its output pipes: {e}")))
        }
    }
}

/// Sends `sig` to the group `pgid`; a group already gone is what was wanted.
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; pgid is a child's pid (> 1).
    if unsafe { libc::kill(-pgid, sig) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::warn!(
                "cannot send {} to process group {pgid}: {e}",
                signal_name(sig)
            );
        }
    }
}

/// Why [`stop`] went on to SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The grace period passed.
    Grace,
    /// A termination signal after the grace began asked us not to wait.
    Hurried,
}

/// Why a drain (a [`stop`] with a limit) went on to the grace without the child's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The drain limit passed.
    Limit,
    /// A termination signal after the drain began.
    Signal,
}

/// A step of [`stop`] that its caller logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The drain ended without the child's exit: SIGTERM to it and every descendant,
    /// and the grace, follow.
    Cut(Cut),
    /// The grace was cut short: SIGKILL follows.
    Kill(Kill),
}

/// Stops the child `pid`: SIGTERM to its group; with `drain`, up to that long for it to
/// finish its work and exit (its task runs in a group of its own, which that SIGTERM
/// does not reach), then, or at the next termination signal, SIGTERM to it and every
/// descendant; up to `grace` (cut short by a further signal); then SIGKILL to its group
/// and to every descendant seen along the way, so that its task goes with it.
/// `on_step` hears each step taken. The exit, or `None` if the child outlived SIGKILL by
/// [`KILL_WAIT`].
pub async fn stop(
    pid: i32,
    exit: &mut oneshot::Receiver<Exit>,
    drain: Option<Duration>,
    grace: Duration,
    shutdown: &mut Shutdown,
    mut on_step: impl FnMut(Step),
) -> Option<Exit> {
    signal_group(pid, libc::SIGTERM);
    let mut tree = Tree::default();
    if let Some(limit) = drain {
        let seen = shutdown.count();
        let cut = tokio::select! {
            e = &mut *exit => return Some(e.unwrap_or(Exit::Code(-1))),
            _ = tokio::time::sleep(limit) => Cut::Limit,
            _ = shutdown.beyond(seen) => Cut::Signal,
        };
        on_step(Step::Cut(cut));
        tree = Tree::of(pid);
        signal_group(pid, libc::SIGTERM);
        tree.signal(libc::SIGTERM);
    }
    // The first signal began this stop: a second one hurries it, as does any one after
    // the grace began.
    let seen = shutdown.count().max(1);
    let exited = tokio::select! {
        e = &mut *exit => Some(e.unwrap_or(Exit::Code(-1))),
        _ = tokio::time::sleep(grace) => None,
        _ = shutdown.beyond(seen) => {
            on_step(Step::Kill(Kill::Hurried));
            kill_all(pid, tree);
            return wait_killed(exit).await;
        }
    };
    if exited.is_none() {
        on_step(Step::Kill(Kill::Grace));
    }
    kill_all(pid, tree);
    match exited {
        Some(e) => Some(e),
        None => wait_killed(exit).await,
    }
}

/// SIGKILL to the group `pid`, to `seen` (its tree when its drain was cut) and to what
/// is below it now.
fn kill_all(pid: i32, seen: Tree) {
    // Before the group's SIGKILL: once `pid` is dead, its orphans are no longer below it.
    let tree = seen.merge(Tree::of(pid));
    signal_group(pid, libc::SIGKILL);
    tree.signal(libc::SIGKILL);
}

async fn wait_killed(exit: &mut oneshot::Receiver<Exit>) -> Option<Exit> {
    tokio::time::timeout(KILL_WAIT, exit)
        .await
        .ok()
        .map(|r| r.unwrap_or(Exit::Code(-1)))
}

/// Splits a byte stream into lines without their `\n` (and trailing `\r`), none longer
/// than its cap: a longer line is handed over in pieces of the cap, each flagged as cut.
/// Pure, so that it is tested on input split at every boundary.
pub struct Lines {
    cap: usize,
    line: Vec<u8>,
}

impl Lines {
    pub fn new(cap: usize) -> Lines {
        Lines {
            cap,
            line: Vec::new(),
        }
    }

    /// Feeds `chunk`; `emit(line, cut)` for every line (or piece) it completes.
    pub fn push(&mut self, chunk: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        for &b in chunk {
            if b == b'\n' {
                self.flush(false, emit);
            } else {
                // A full line is cut only when more of it comes: one of exactly the cap
                // followed by its newline stays whole.
                if self.line.len() == self.cap {
                    self.flush(true, emit);
                }
                self.line.push(b);
            }
        }
    }

    /// End of the stream: hands over a last line that had no newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.line.is_empty() {
            self.flush(false, emit);
        }
    }

    fn flush(&mut self, cut: bool, emit: &mut impl FnMut(&[u8], bool)) {
        let mut end = self.line.len();
        while end > 0 && self.line[end - 1] == b'\r' {
            end -= 1;
        }
        emit(&self.line[..end], cut);
        self.line.clear();
    }
}

/// What is done with each forwarded line (usually: logged, with the child's prefix).
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// The text a line is forwarded as. Bytes, not `str`, come in: adb prints USB descriptor
/// strings as the phone gives them, and invalid UTF-8 must not end the draining (the
/// child would then block on a full pipe).
fn line_text(line: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(line);
    if cut {
        format!("{text} [cut at {MAX_LINE} bytes; the line goes on below]")
    } else {
        text.into_owned()
    }
}

/// Forwards every line of `pipe` to `sink` until end of file.
pub async fn forward_lines(mut pipe: impl AsyncRead + Unpin, sink: &Sink) -> io::Result<()> {
    let mut lines = Lines::new(MAX_LINE);
    let mut buf = vec![0u8; 8192];
    let mut emit = |line: &[u8], cut: bool| sink(&line_text(line, cut));
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            lines.finish(&mut emit);
            return Ok(());
        }
        lines.push(&buf[..n], &mut emit);
    }
}

/// The forwarding of a child's stdout and stderr, each on a task of its own.
pub struct Output(Vec<JoinHandle<()>>);

impl Output {
    /// Takes `child`'s pipes; a read error is logged under `target` naming `name`.
    pub fn start(child: &mut Child, target: &'static str, name: &str, sink: Sink) -> Output {
        let pipes = [
            ("stdout", child.stdout.take()),
            ("stderr", child.stderr.take()),
        ];
        let tasks = pipes
            .into_iter()
            .filter_map(|(stream, pipe)| {
                let (pipe, sink, name) = (pipe?, sink.clone(), name.to_string());
                Some(tokio::spawn(async move {
                    if let Err(e) = forward_lines(pipe, &sink).await {
                        log::warn!(target: target, "reading the {stream} of {name}: {e}");
                    }
                }))
            })
            .collect();
        Output(tasks)
    }

    /// Waits up to `within` for both pipes to reach end of file: an orphan holding them
    /// open must not stall the caller.
    pub async fn drained(self, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            for task in self.0 {
                let _ = task.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], cap: usize, at: &[usize]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut emit =
            |l: &[u8], cut: bool| out.push((String::from_utf8_lossy(l).into_owned(), cut));
        let mut lines = Lines::new(cap);
        let mut from = 0;
        for &to in at.iter().chain([input.len()].iter()) {
            lines.push(&input[from..to], &mut emit);
            from = to;
        }
        lines.finish(&mut emit);
        out
    }

    /// Every way of cutting `input` in two, and byte by byte, gives `expected`.
    fn check(input: &[u8], cap: usize, expected: &[(&str, bool)]) {
        let expected: Vec<(String, bool)> =
            expected.iter().map(|(l, c)| (l.to_string(), *c)).collect();
        for at in 0..=input.len() {
            assert_eq!(split(input, cap, &[at]), expected, "split at {at}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(split(input, cap, &every), expected, "byte by byte");
    }

    #[test]
    fn lines_lose_their_newline_and_carriage_returns() {
        check(
            b"one\r\ntwo\n\nthree\r\r\n",
            64,
            &[
                ("one", false),
                ("two", false),
                ("", false),
                ("three", false),
            ],
        );
    }

    #[test]
    fn a_last_line_without_newline_is_kept() {
        check(b"a\nb", 64, &[("a", false), ("b", false)]);
        check(b"", 64, &[]);
    }

    #[test]
    fn long_lines_are_cut_at_the_cap_and_said_so() {
        check(
            b"abcdefghij\nxy\n",
            4,
            &[("abcd", true), ("efgh", true), ("ij", false), ("xy", false)],
        );
    }

    #[test]
    fn a_line_of_exactly_the_cap_stays_whole() {
        check(b"abcd\nabcd", 4, &[("abcd", false), ("abcd", false)]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_cut_lines_are_marked() {
        assert_eq!(line_text(b"a\xffb", false), "a\u{fffd}b");
        assert!(line_text(b"abc", true).starts_with("abc [cut at 16384 bytes"));
    }

    #[test]
    fn a_child_in_its_own_group_is_forwarded_and_stopped() {
        crate::runtime::reaper::with_reap_loop(|reaper| async move {
            let mut child = spawn(
                &reaper,
                Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exec sleep 30"]),
            )
            .unwrap();
            // SAFETY: getpgid has no preconditions.
            assert_eq!(unsafe { libc::getpgid(child.pid) }, child.pid);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let sink: Sink = Arc::new(move |l: &str| {
                let _ = tx.send(l.to_string());
            });
            let output = Output::start(&mut child, module_path!(), "sh", sink);
            let mut seen = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
            seen.sort();
            assert_eq!(seen, ["err", "out"]);
            let (_trigger, mut shutdown) = crate::runtime::shutdown::channel();
            let mut killed = None;
            let exit = stop(
                child.pid,
                &mut child.exit,
                None,
                Duration::from_secs(5),
                &mut shutdown,
                |k| killed = Some(k),
            )
            .await;
            output.drained(Duration::from_secs(5)).await;
            assert_eq!(exit, Some(Exit::Signal(libc::SIGTERM)));
            assert_eq!(killed, None);
            assert_eq!(rx.recv().await, None, "both pipes reached end of file");
        });
    }

    #[test]
    fn a_drain_cut_at_its_limit_takes_the_task_in_its_own_group_too() {
        crate::runtime::reaper::with_reap_loop(|reaper| async move {
            // A "bot" deaf to SIGTERM whose "task" has a process group of its own and
            // is deaf to SIGTERM too: only the final SIGKILL of the tree ends it.
            let mut child = spawn(
                &reaper,
                Command::new("/bin/sh").args([
                    "-c",
                    "trap '' TERM; setsid sh -c 'trap \"\" TERM; echo $$; exec sleep 30' & wait",
                ]),
            )
            .unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let sink: Sink = Arc::new(move |l: &str| {
                let _ = tx.send(l.to_string());
            });
            let output = Output::start(&mut child, module_path!(), "sh", sink);
            let task: i32 = rx.recv().await.unwrap().parse().unwrap();
            // SAFETY: getpgid has no preconditions.
            assert_eq!(
                unsafe { libc::getpgid(task) },
                task,
                "the task leads its group"
            );
            let (_trigger, mut shutdown) = crate::runtime::shutdown::channel();
            let mut steps = Vec::new();
            let exit = stop(
                child.pid,
                &mut child.exit,
                Some(Duration::from_millis(300)),
                Duration::from_millis(300),
                &mut shutdown,
                |s| steps.push(s),
            )
            .await;
            output.drained(Duration::from_secs(5)).await;
            assert_eq!(exit, Some(Exit::Signal(libc::SIGKILL)));
            assert_eq!(steps, [Step::Cut(Cut::Limit), Step::Kill(Kill::Grace)]);
            // The task was our child's child; SIGKILLed, it is soon a zombie or gone.
            let dead = || {
                let stat = std::fs::read_to_string(format!("/proc/{task}/stat"));
                stat.ok()
                    .and_then(|s| crate::runtime::procs::parse_stat(&s))
                    .is_none_or(|p| p.state == 'Z')
            };
            for _ in 0..100 {
                if dead() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(dead(), "task {task} outlived the stop");
        });
    }

    #[test]
    fn a_drain_ends_with_the_childs_own_exit() {
        crate::runtime::reaper::with_reap_loop(|reaper| async move {
            let mut child = spawn(
                &reaper,
                Command::new("/bin/sh").args([
                    "-c",
                    "trap 'sleep 0.2; exit 7' TERM; echo ready; sleep 30 & wait",
                ]),
            )
            .unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let sink: Sink = Arc::new(move |l: &str| {
                let _ = tx.send(l.to_string());
            });
            let _output = Output::start(&mut child, module_path!(), "sh", sink);
            // Its trap is set.
            assert_eq!(rx.recv().await.unwrap(), "ready");
            let (_trigger, mut shutdown) = crate::runtime::shutdown::channel();
            let mut steps = Vec::new();
            let exit = stop(
                child.pid,
                &mut child.exit,
                Some(Duration::from_secs(30)),
                Duration::from_secs(30),
                &mut shutdown,
                |s| steps.push(s),
            )
            .await;
            assert_eq!(exit, Some(Exit::Code(7)));
            assert_eq!(steps, []);
        });
    }
}
