//! What the integration tests share. One way to start the real binary ([`Tmm`], in
//! `tmm.rs`: a builder with the defaults a test needs, and the running [`Monitor`] with
//! its log and `/metrics` readers), one HTTP client (`http.rs`, ureq), the stand-ins
//! (`swarming.rs`, `android.rs`, `ios.rs`), the fault campaign's line (`faults.rs`), and
//! here: deadlines, free ports, temp dirs, and the guard that stops a child with
//! everything it started.
#![allow(dead_code)] // each test crate uses its own subset of these helpers

pub mod android;
pub mod faults;
pub mod http;
pub mod ios;
pub mod kube;
pub mod swarming;
pub mod tmm;

#[allow(unused_imports)] // as for dead code: each test crate uses its own subset
pub use tmm::{Monitor, Tmm, BOT_ID};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_test_machine_monitor");

/// How long a command that ends by itself may run before the test calls it hung.
pub const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// `f`'s result, or a panic naming `what` after `limit`: a blocking read that never
/// ends (a pipe a grandchild holds open, a child that never prints) fails the test
/// instead of hanging it. `f` runs on a thread of its own, left behind blocked when it
/// overstays, and its panic is the caller's.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("gave up after {limit:?} waiting for {what}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_showing(limit, what, f, String::new)
}

/// [`wait_for`], whose panic also shows what `context` gives then (a monitor's log).
pub fn wait_showing<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("gave up after {limit:?} waiting for {what}{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Child::wait_with_output` with a deadline: still running after `limit`, the child
/// is SIGKILLed and the test fails naming `what`, with what it printed.
pub fn output_of(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill(2) on our child, which the thread has not reaped: it is
            // still waiting for it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let printed = rx.recv_timeout(Duration::from_secs(5));
            panic!("gave up after {limit:?} waiting for {what}; killed it; it printed {printed:?}");
        }
    };
    out.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `Command::output` with a deadline (see [`output_of`]).
pub trait OutputWithin {
    fn output_within(&mut self, limit: Duration) -> Output;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> Output {
        let what = format!("{self:?} to exit");
        // The same stdio as `output()`: nothing in, both outputs captured.
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {self:?}: {e}"));
        output_of(child, limit, &what)
    }
}

/// A number field of `/proc/<pid>/status` (`Threads`, `VmRSS` and `VmHWM` in KiB);
/// `None` once the process is gone.
pub fn proc_status(pid: i32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The state letter of `/proc/<pid>/stat` (`S`, `R`, `Z`...); `None` once it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting for its parent).
pub fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// The pids of `pid`'s direct children now (from `/proc/<pid>/task/*/children`).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
    }
    out
}

/// The pids of `pid`'s descendants now, children first.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for child in children(p) {
            out.push(child);
            todo.push(child);
        }
    }
    out
}

/// The pids of `pids` still running (zombies included: not yet reaped by anyone).
pub fn still_there(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect()
}

/// Sends `sig` to `pid`, which must exist.
pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let sent = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        sent,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A loopback port nothing listens on right now, for a server the test starts next.
///
/// Ports come from 20000-31999, below Linux's ephemeral range (32768 and up), so no
/// outgoing connection of a stand-in can take one between this check and the server's
/// bind; each call in a test binary gets a different port, so parallel tests never get
/// the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test binaries run one after another; start each at a place of its own.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 97 % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A fresh directory under the system temp dir, removed on drop, unless the test is
/// failing: then it is kept (and named) for the logs in it.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tmm-test-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for the failing test", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes the hook script the Swarming server would serve (`test_machine_monitor
/// bot-config`) as `dir/bot_config.py`.
pub fn hook_script(dir: &Path) -> PathBuf {
    let out = Tmm::bare().arg("bot-config").run();
    assert!(out.status.success(), "{out:?}");
    let path = dir.join("bot_config.py");
    std::fs::write(&path, out.stdout).unwrap();
    path
}

/// Starts the stand-in `tests/support/<script>` with real Python and `args`, and reads
/// its stdout line by line, within 60 s, until `announced` has what it prints at
/// start (its ports). A line it does not expect, or its exit, fails the test. Its
/// stdin is a pipe that closes when the test ends, however it ends: a stand-in that
/// reads it goes then.
pub fn stand_in<T: Send + 'static>(
    script: &str,
    args: &[&str],
    stderr: Stdio,
    mut announced: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> (Child, T) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    let mut child = Command::new("python3")
        .arg(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting python3 {script}: {e}"));
    let stdout = child.stdout.take().expect("its stdout is piped");
    let what = format!("{script} to print its ports");
    let script = script.to_string();
    let got = within(Duration::from_secs(60), &what, move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap_or_else(|e| panic!("{script}'s output: {e}"));
            if let Some(got) = announced(&line) {
                return got;
            }
        }
        panic!("{script} exited before it printed its ports")
    });
    (child, got)
}

/// Python interpreters on this machine, as (version, path), one per minor version,
/// oldest first: `python3.*` on PATH, in /usr/bin and in /root/.pyenv/versions/*/bin.
pub fn pythons() -> Vec<((u32, u32), PathBuf)> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/bin"));
    if let Ok(entries) = std::fs::read_dir("/root/.pyenv/versions") {
        for e in entries.flatten() {
            dirs.push(e.path().join("bin"));
        }
    }
    let mut found: std::collections::BTreeMap<(u32, u32), PathBuf> = Default::default();
    for dir in dirs {
        // pyenv's shims answer for versions that are not selected, then fail.
        if dir.ends_with("shims") {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("python3.") else {
                continue;
            };
            let Ok(minor) = rest.parse::<u32>() else {
                continue;
            };
            found.entry((3, minor)).or_insert_with(|| e.path());
        }
    }
    found.into_iter().collect()
}

/// A child process that is stopped with everything it started ([`stop_tree`]) if the
/// test ends, or panics, before it does.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// The exit status, waiting up to `limit`; `None` if it still runs then.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        stop_tree(&mut self.0, Duration::from_secs(10));
    }
}

/// Stops a process a test started and everything it started, also when the test has
/// failed: SIGTERM (a monitor then stops its bot and adb server itself), up to `grace`
/// for it to exit, then SIGKILL of it and of every descendant it left, which were listed
/// before the kill (once it is gone, init adopts them and they can no longer be found).
/// Descendants are in process groups and sessions of their own (the monitor's children,
/// the simulator's shells), so a kill of its group would not reach them.
pub fn stop_tree(child: &mut Child, grace: Duration) {
    let pid = child.id() as i32;
    if matches!(child.try_wait(), Ok(None)) {
        let mut family = descendants(pid);
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            family.extend(descendants(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        family.extend(descendants(pid));
        let _ = child.kill();
        for p in family {
            // SAFETY: kill(2) has no memory-safety preconditions; a pid that has ended
            // meanwhile answers ESRCH.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    let _ = child.wait();
}
