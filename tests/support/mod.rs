//! Helpers shared by the integration tests: free ports, temp dirs, the real binary as
//! a child process, and a raw HTTP/1.1 client (so requests can be malformed on purpose).
#![allow(dead_code)] // each test crate uses its own subset of these helpers

pub mod android;
pub mod bot_lab;
pub mod faults;
pub mod ios;
pub mod kube;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_test_machine_monitor");

/// How long a command that ends by itself may run before the test calls it hung.
pub const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// `f`'s result, or `None` once `limit` has passed; `f` runs on a thread of its own,
/// left behind blocked when it overstays, and its panic is the caller's.
fn finish_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => Some(v),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// `f`'s result, or a panic naming `what` after `limit`: a blocking read that never
/// ends (a pipe a grandchild holds open, a child that never prints) fails the test
/// instead of hanging it.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    finish_within(limit, f).unwrap_or_else(|| panic!("gave up after {limit:?} waiting for {what}"))
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
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
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

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("tmm-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real binary running with `--no-bot --devices none`; SIGTERMed and reaped on drop.
pub struct Monitor {
    pub child: Child,
    pub hook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub dir: TempDir,
    pub bot_id: String,
}

impl Monitor {
    /// Starts the monitor and waits until its hook server answers. A port picked by
    /// [`free_port`] can be taken by someone else before the monitor binds it; that one
    /// failure is retried with new ports.
    pub fn start(name: &str, extra: &[&str]) -> Monitor {
        for _ in 0..3 {
            match Monitor::try_start(name, extra) {
                Ok(m) => return m,
                Err(log) if log.contains("cannot listen on") => continue,
                Err(log) => panic!("monitor exited early:\n{log}"),
            }
        }
        panic!("monitor could not bind free ports three times")
    }

    fn try_start(name: &str, extra: &[&str]) -> Result<Monitor, String> {
        let dir = TempDir::new(name);
        let hook_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let bot_dir = dir.path().join("b").join("s");
        std::fs::create_dir_all(&bot_dir).unwrap();
        let bot_id = "pi-test".to_string();
        let mut cmd = Command::new(BIN);
        cmd.args(["--no-bot", "--devices", "none", "--bot-id", &bot_id])
            .arg("--hook-addr")
            .arg(hook_addr.to_string())
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--bot-dir")
            .arg(&bot_dir)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let mut m = Monitor {
            child,
            hook_addr,
            metrics_addr,
            dir,
            bot_id,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = try_request(hook_addr, "GET", "/get_settings", &[], b"") {
                if r.status == 200 {
                    return Ok(m);
                }
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                let log = match m.child.stderr.take() {
                    Some(e) => read_all_within(e, "the exited monitor's stderr to end"),
                    None => String::new(),
                };
                return Err(format!("{status}\n{log}"));
            }
            assert!(Instant::now() < deadline, "hook server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The force-quarantine file the monitor watches by default.
    pub fn force_quarantine_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("b")
            .join(format!("{}.force_quarantine", self.bot_id))
    }

    /// Stops the monitor and returns what it logged.
    pub fn stop(mut self) -> String {
        self.terminate();
        match self.child.stderr.take() {
            Some(e) => read_all_within(e, "the stopped monitor's stderr to end"),
            None => String::new(),
        }
    }

    fn terminate(&mut self) {
        stop_tree(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Everything left to read from a child's pipe, within [`EXIT_LIMIT`]: a descendant
/// that inherited the pipe would keep it open past the child's exit.
fn read_all_within(mut pipe: impl Read + Send + 'static, what: &str) -> String {
    within(EXIT_LIMIT, what, move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs the binary to completion with `args`.
pub fn run_bin(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output_within(EXIT_LIMIT)
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Parses a full `Connection: close` response.
pub fn parse_reply(raw: &[u8]) -> std::io::Result<HttpReply> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no header end: {text:?}"),
        )
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status: {head:?}"),
            )
        })?;
    Ok(HttpReply {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    })
}

/// One request on a fresh connection, with a generous deadline against hangs.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_reply(&raw)
}

pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpReply {
    try_request(addr, method, path, &[], body.as_bytes()).unwrap()
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

pub fn bin() -> &'static str {
    BIN
}

/// One HTTP/1.0 request; returns the status code and the body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path, b"").unwrap_or_else(|e| panic!("GET {path} on {port}: {e}"))
}

/// Polls until `path` answers `code`, for up to 30 s (slow machines, qemu).
pub fn wait_for_http(port: u16, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((c, body)) = http_request(port, "GET", path, b"") {
            if c == code {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} on port {port} never answered {code}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is stopped with everything it started ([`stop_tree`]) if the
/// test ends, or panics, before it does.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    /// SIGTERM, then wait up to 60 s for the exit.
    pub fn terminate_and_wait(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_timeout(Duration::from_secs(60))
            .expect("did not exit after SIGTERM")
    }

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

/// The pids of `pid`'s descendants now, children first (from `/proc/<pid>/task/*/children`).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for child in text
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                out.push(child);
                todo.push(child);
            }
        }
    }
    out
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
