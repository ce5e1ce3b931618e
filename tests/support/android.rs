//! Helpers for the Android tests: the phone simulator (`adb_sim.py`), a minimal
//! synchronous adb host-protocol request (to `connect` simulated phones the way
//! `adb connect` does), the real binary with its stderr captured, and `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADB: &str = "/usr/bin/adb";

pub use super::free_port;
use super::OutputWithin;

/// A fresh directory under the target dir, used as `$HOME` (the adb key goes there).
pub fn temp_home(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "android-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// A generous deadline for what a monitor with 2 s rounds does within a few rounds.
const ROUNDS_LIMIT: Duration = Duration::from_secs(30);

/// The `device_up` series of an Android phone.
pub fn up(serial: &str, device_type: &str) -> String {
    format!("device_up{{serial=\"{serial}\",kind=\"android\",device_type=\"{device_type}\"}}")
}

/// Waits until `n` more device rounds have finished.
pub fn wait_rounds(tmm: &Monitor, n: u32) {
    let rounds = || {
        tmm.sample("interrogation_duration_seconds_count")
            .unwrap_or(0.0)
    };
    let before = rounds();
    wait_for(ROUNDS_LIMIT, &format!("{n} more rounds"), || {
        (rounds() >= before + f64::from(n)).then_some(())
    });
}

/// The get_state answer's reasons of one kind, as one string.
pub fn reasons(tmm: &Monitor, kind: &str) -> String {
    tmm.hook("/get_state")[kind]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the get_state reasons of `kind` contain `needle`; returns them.
pub fn wait_reason(tmm: &Monitor, kind: &str, needle: &str) -> String {
    wait_for(ROUNDS_LIMIT, &format!("{kind} reason {needle:?}"), || {
        let r = reasons(tmm, kind);
        r.contains(needle).then_some(r)
    })
}

/// One host request to the adb server; returns the status and the rest of the reply.
pub fn adb_request(server_port: u16, request: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", server_port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("{:04x}{request}", request.len()).as_bytes())?;
    let mut out = Vec::new();
    // Host requests close after their reply; a timeout leaves what arrived.
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What the adb server forwards of `service` (`shell,v2,raw:echo hi`) on `serial`:
/// every byte after the two `OKAY`s of the transport switch and the service, until the
/// stream closes or `timeout` passes between reads.
pub fn device_service(
    server_port: u16,
    serial: &str,
    service: &str,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", server_port))?;
    s.set_read_timeout(Some(timeout))?;
    for request in [format!("host:transport:{serial}"), service.to_string()] {
        s.write_all(format!("{:04x}{request}", request.len()).as_bytes())?;
        let mut status = [0u8; 4];
        s.read_exact(&mut status)?;
        if &status != b"OKAY" {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            return Err(std::io::Error::other(format!(
                "{request}: {}{}",
                String::from_utf8_lossy(&status),
                String::from_utf8_lossy(&rest)
            )));
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

/// `adb connect` without the adb client (which would also start a server of its own).
/// Returns at once: a phone that never finishes its handshake keeps the request open.
pub fn connect_phone(server_port: u16, phone_port: u16) {
    std::thread::spawn(move || {
        let _ = adb_request(
            server_port,
            &format!("host:connect:127.0.0.1:{phone_port}"),
            Duration::from_secs(15),
        );
    });
}

pub fn disconnect_phone(server_port: u16, phone_port: u16) -> String {
    adb_request(
        server_port,
        &format!("host:disconnect:127.0.0.1:{phone_port}"),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// The simulator process and its phones.
pub struct Sim {
    child: Child,
    /// (name, port) in the order given.
    pub phones: Vec<(String, u16)>,
    control: u16,
}

impl Sim {
    /// `specs` are `profile:name`.
    pub fn start(specs: &[&str], extra: &[&str]) -> Sim {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/adb_sim.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script);
        for s in specs {
            cmd.args(["--phone", s]);
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child
            .stdout
            .take()
            .expect("the simulator's stdout is piped");
        let (phones, control) = super::within(
            Duration::from_secs(30),
            "the simulator to print its ports",
            move || {
                let mut lines = BufReader::new(stdout).lines();
                let mut phones = Vec::new();
                let control = loop {
                    let line = lines.next().expect("simulator exited").unwrap();
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["PORT", port, name] => {
                            phones.push((name.to_string(), port.parse().unwrap()))
                        }
                        ["CONTROL", port] => break port.parse().unwrap(),
                        _ => panic!("unexpected simulator line {line:?}"),
                    }
                };
                (phones, control)
            },
        );
        Sim {
            child,
            phones,
            control,
        }
    }

    pub fn port(&self, name: &str) -> u16 {
        self.phones.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// The serial the adb server lists for `name`.
    pub fn serial(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.port(name))
    }

    pub fn control(&self, command: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.control)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("the simulator's answer to {command:?}: {e}"));
        assert!(reply.starts_with("OK"), "{command}: {reply}");
        reply.trim().to_string()
    }

    pub fn connect_all(&self, server_port: u16) {
        for (_, port) in &self.phones {
            connect_phone(server_port, *port);
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Its shells run in sessions of their own: a hung command must go too.
        super::stop_tree(&mut self.child, Duration::from_secs(2));
    }
}

/// The real binary, watching Android phones through the adb server on `adb_port`.
pub struct Monitor {
    child: Child,
    pub metrics_port: u16,
    pub hook_port: u16,
    pub adb_port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    pub fn start(name: &str, extra: &[&str]) -> Monitor {
        Monitor::start_on(name, free_port(), extra)
    }

    /// As [`Monitor::start`], with the adb server on `adb_port`.
    pub fn start_on(name: &str, adb_port: u16, extra: &[&str]) -> Monitor {
        Monitor::start_every(name, adb_port, 2, extra)
    }

    /// As [`Monitor::start_on`], with rounds every `interval_secs`.
    pub fn start_every(name: &str, adb_port: u16, interval_secs: u32, extra: &[&str]) -> Monitor {
        Monitor::start_with_env(name, adb_port, interval_secs, extra, &[])
    }

    /// As [`Monitor::start_every`], with these environment variables (a pod's).
    pub fn start_with_env(
        name: &str,
        adb_port: u16,
        interval_secs: u32,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Monitor {
        let m = Monitor::spawn(name, adb_port, interval_secs, &[], extra, env);
        wait_for(Duration::from_secs(20), "the adb server to listen", || {
            TcpStream::connect(("127.0.0.1", adb_port)).ok()
        });
        m
    }

    /// Without phones (`--devices none`), with these environment variables (a pod's):
    /// only the metrics server to wait for.
    pub fn start_without_phones(name: &str, env: &[(&str, &str)], extra: &[&str]) -> Monitor {
        let mut args = vec!["--devices", "none"];
        args.extend(extra);
        let m = Monitor::spawn(name, free_port(), 2, &[], &args, env);
        wait_for(Duration::from_secs(20), "the metrics server", || {
            (!m.metrics().is_empty()).then_some(())
        });
        m
    }

    /// Without Android (`extra` has `--devices ios`): there is no adb server to wait
    /// for, only the metrics server.
    pub fn start_without_adb(name: &str, interval_secs: u32, extra: &[&str]) -> Monitor {
        Monitor::start_without_adb_under(name, interval_secs, &[], extra)
    }

    /// As [`Monitor::start_without_adb`], run through `wrapper` (a command that ends by
    /// exec'ing its arguments, so that the pid is the monitor's).
    pub fn start_without_adb_under(
        name: &str,
        interval_secs: u32,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Monitor {
        let m = Monitor::spawn(name, free_port(), interval_secs, wrapper, extra, &[]);
        wait_for(Duration::from_secs(20), "the metrics server", || {
            (!m.metrics().is_empty()).then_some(())
        });
        m
    }

    fn spawn(
        name: &str,
        adb_port: u16,
        interval_secs: u32,
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Monitor {
        let home = temp_home(name);
        let (metrics_port, hook_port) = (free_port(), free_port());
        let bin = env!("CARGO_BIN_EXE_test_machine_monitor");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args([
                "--no-bot",
                "--adb",
                ADB,
                "--adb-server",
                &format!("127.0.0.1:{adb_port}"),
                "--interrogate-every",
                &interval_secs.to_string(),
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
                "--hook-addr",
                &format!("127.0.0.1:{hook_port}"),
                "--bot-dir",
                home.join("b").to_str().unwrap(),
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("HOME", &home)
            .env(
                "RUST_LOG",
                std::env::var("TMM_TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("TMM_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Monitor {
            child,
            metrics_port,
            hook_port,
            adb_port,
            log,
        }
    }

    /// Runs `test_machine_monitor devices` against this monitor's adb server and status
    /// port.
    pub fn devices_command(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_test_machine_monitor"))
            .args([
                "devices",
                "--no-bot",
                "--adb-server",
                &format!("127.0.0.1:{}", self.adb_port),
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .output_within(super::EXIT_LIMIT)
    }

    /// POSTs `{}` to a hook and returns its JSON answer.
    pub fn hook(&self, path: &str) -> serde_json::Value {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.hook_port));
        let reply = super::request(addr, "POST", path, "{}");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The value of the sample line starting with `series` (name and labels).
    pub fn sample(&self, series: &str) -> Option<f64> {
        let name = format!("test_machine_monitor_{series} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&name).map(|v| v.trim().parse().unwrap()))
    }

    pub fn wait_sample(&self, series: &str, want: f64, limit: Duration) {
        wait_showing(
            limit,
            &format!("{series} == {want}"),
            || (self.sample(series) == Some(want)).then_some(()),
            || self.log_tail(),
        );
    }

    /// The monitor's last log lines, for a failed wait: a CI log then says why.
    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let tail = &log[log.len().saturating_sub(60)..];
        format!("; the monitor's last log lines:\n{}", tail.join("\n"))
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The first log line containing `needle`.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Every log line containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn wait_log(&self, needle: &str, limit: Duration) {
        wait_showing(
            limit,
            &format!("a log line with {needle:?}"),
            || self.log_has(needle).then_some(()),
            || self.log_tail(),
        );
    }

    /// The pids of this process's direct children (the adb server).
    pub fn children(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let tasks = format!("/proc/{}/task", self.pid());
        for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
        out
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // SIGTERM, so that it stops its adb server; then make sure, and stop a server
        // that it did not start but found on its port.
        super::stop_tree(&mut self.child, Duration::from_secs(8));
        let _ = adb_request(self.adb_port, "host:kill", Duration::from_secs(2));
    }
}

pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, sig) };
}
