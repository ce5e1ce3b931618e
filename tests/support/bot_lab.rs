//! A small lab for the bot tests: the stand-in Swarming server (fake_swarming.py), a
//! token config pointing at it, a bot directory, and the real binary running against
//! them with its log captured to a file.
//!

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::OutputWithin;
pub use super::{free_port, TempDir, BIN};

pub const BOT_ID: &str = "test-bot";

/// Deadline of one request to the stand-in server, whose answers are all immediate.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// fake_swarming.py on a free port; killed on drop.
pub struct FakeSwarming {
    child: Child,
    /// Its plain-HTTP address, for the test's own calls.
    pub url: String,
    /// The address the monitor is given: `url`, or the HTTPS port's with `--tls`.
    pub served: String,
}

impl FakeSwarming {
    pub fn start(extra: &[&str]) -> FakeSwarming {
        let mut child = Command::new("python3")
            .arg(support_dir().join("fake_swarming.py"))
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child
            .stdout
            .take()
            .expect("fake_swarming's stdout is piped");
        let tls = extra.contains(&"--tls");
        let lines = super::within(
            Duration::from_secs(30),
            "fake_swarming to print its port",
            move || {
                let mut stdout = BufReader::new(stdout);
                let mut lines = String::new();
                for _ in 0..1 + usize::from(tls) {
                    stdout.read_line(&mut lines).unwrap();
                }
                lines
            },
        );
        let port = |prefix: &str| -> u16 {
            lines
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("fake_swarming said {lines:?}"))
                .parse()
                .unwrap()
        };
        let url = format!("http://127.0.0.1:{}", port("PORT "));
        let served = if tls {
            format!("https://127.0.0.1:{}", port("TLSPORT "))
        } else {
            url.clone()
        };
        FakeSwarming { child, url, served }
    }

    pub fn control(&self, body: serde_json::Value) {
        ureq::post(&format!("{}/_control", self.url))
            .config()
            .timeout_global(Some(REQUEST_LIMIT))
            .build()
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
    }

    pub fn state(&self) -> serde_json::Value {
        let text = ureq::get(&format!("{}/_state", self.url))
            .config()
            .timeout_global(Some(REQUEST_LIMIT))
            .build()
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The zip this server hands out, fetched from its versioned URL.
    pub fn zip_bytes(&self) -> Vec<u8> {
        let digest = self.state()["digest"].as_str().unwrap().to_string();
        ureq::get(&format!(
            "{}/swarming/api/v1/bot/bot_code/{digest}",
            self.url
        ))
        .config()
        .timeout_global(Some(REQUEST_LIMIT))
        .build()
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(100 << 20)
        .read_to_vec()
        .unwrap()
    }
}

impl FakeSwarming {
    /// Writes `<dir>/token.json`, a `--token-config` for this server's token endpoint.
    pub fn write_token_config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("token.json");
        fs::write(
            &path,
            format!(
                r#"{{"url": "{}/token", "headers": {{"Metadata-Flavor": "Google"}}}}"#,
                self.served
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for FakeSwarming {
    fn drop(&mut self) {
        super::stop_tree(&mut self.child, Duration::from_secs(2));
    }
}

/// Everything one test needs; the monitor is started with [`Lab::start`].
pub struct Lab {
    pub server: FakeSwarming,
    pub dir: TempDir,
    pub bot_dir: PathBuf,
    pub token_config: PathBuf,
    pub grace: u64,
    pub env: Vec<(String, String)>,
    /// Command prefix, e.g. `unshare --pid --fork --mount-proc`.
    pub wrapper: Vec<String>,
    /// More flags for the monitor.
    pub args: Vec<String>,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        Lab::with_server(name, &[])
    }

    /// A lab whose stand-in bot calls the hooks: the server injects our `bot-config`
    /// script, as the real server does.
    pub fn with_hooks(name: &str) -> Lab {
        let script =
            std::env::temp_dir().join(format!("tmm-hooks-{name}-{}.py", std::process::id()));
        let printed = Command::new(BIN)
            .arg("bot-config")
            .output_within(super::EXIT_LIMIT);
        assert!(printed.status.success(), "{printed:?}");
        fs::write(&script, &printed.stdout).unwrap();
        let lab = Lab::with_server(name, &["--hook-script", script.to_str().unwrap()]);
        // The server has read it into its zip.
        let _ = fs::remove_file(&script);
        lab
    }

    /// A lab whose stand-in server is started with `server_args`.
    pub fn with_server(name: &str, server_args: &[&str]) -> Lab {
        let server = FakeSwarming::start(server_args);
        let dir = TempDir::new(name);
        let token_config = server.write_token_config(&dir.0);
        Lab {
            server,
            bot_dir: dir.0.join("b").join("s"),
            dir,
            token_config,
            grace: 10,
            env: Vec::new(),
            wrapper: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Lab {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs the monitor in a private mount namespace of its own where `script` (`sh`,
    /// with the bot directory, which it creates, as `$0`) has run first: what the
    /// monitor sees of the bot directory, the test sees through [`Monitor::seen`].
    pub fn mount_first(&mut self, script: &str) {
        fs::create_dir_all(&self.bot_dir).unwrap();
        self.wrapper = vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            format!("{script} && exec \"$@\""),
            self.bot_dir.display().to_string(),
        ];
    }

    pub fn start(&self) -> Monitor {
        let hook_addr = format!("127.0.0.1:{}", free_port());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let log_path = self.dir.0.join(format!("monitor-{}.log", free_port()));
        let log = fs::File::create(&log_path).unwrap();
        let (program, wrapper_args) = match self.wrapper.split_first() {
            Some((p, rest)) => (p.clone(), rest.to_vec()),
            None => (BIN.to_string(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(wrapper_args);
        if !self.wrapper.is_empty() {
            cmd.arg(BIN);
        }
        cmd.args(["--swarming-server", &self.server.served, "--bot-id", BOT_ID])
            .arg("--bot-dir")
            .arg(&self.bot_dir)
            .args(["--python", "python3", "--devices", "none"])
            .arg("--token-config")
            .arg(&self.token_config)
            .arg("--hook-addr")
            .arg(&hook_addr)
            .arg("--metrics-addr")
            .arg(&metrics_addr)
            .arg("--grace")
            .arg(self.grace.to_string())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Monitor {
            child: cmd.spawn().unwrap(),
            log_path,
            hook_addr: hook_addr.parse().unwrap(),
            metrics_addr: metrics_addr.parse().unwrap(),
        }
    }
}

/// The running binary (or its wrapper). Stopped with what it started on drop if still
/// running ([`super::stop_tree`]).
pub struct Monitor {
    pub child: Child,
    pub log_path: PathBuf,
    pub hook_addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
}

impl Monitor {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds `needle` `times` times; returns the log.
    pub fn wait_for_n(&self, needle: &str, times: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            if Instant::now() > deadline {
                panic!("no {times}× {needle:?} within {timeout:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_n(needle, 1, timeout)
    }

    /// Waits until a download into `bot_dir` is under way, its temporary file holding at
    /// least `min` bytes; returns how many it holds.
    pub fn wait_partial_download(&self, bot_dir: &Path, min: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let temp = fs::read_dir(bot_dir).ok().and_then(|entries| {
                entries.flatten().find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("swarming_bot.zip.download-")
                })
            });
            if let Some(len) = temp.and_then(|e| e.metadata().ok()).map(|md| md.len()) {
                if len >= min {
                    return len;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no download under way within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `path` as the monitor sees it, in its mount namespace (see [`Lab::mount_first`]).
    pub fn seen(&self, path: &Path) -> PathBuf {
        let inside = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(inside)
    }

    /// The value of the `/metrics` sample `series` (name and labels, no prefix).
    pub fn sample(&self, series: &str) -> Option<f64> {
        let (code, body) = super::http_get(self.metrics_addr.port(), "/metrics");
        assert_eq!(code, 200, "{body}");
        let want = format!("test_machine_monitor_{series} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&want).map(|v| v.trim().parse().unwrap()))
    }

    pub fn signal(&self, pid: i32, sig: i32) {
        // SAFETY: plain kill(2) on a pid we started.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    pub fn term(&self) {
        self.signal(self.child.id() as i32, libc::SIGTERM);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "monitor still running after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        super::stop_tree(&mut self.child, Duration::from_secs(10));
    }
}

/// The lines of `log` that hold `needle`.
pub fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// The names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Seconds since the Unix epoch of a log line's leading `2026-11-26T17:31:15.123Z`.
pub fn line_time(line: &str) -> f64 {
    let ts = line.split_whitespace().next().unwrap();
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm), enough to cross a midnight.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

/// `(pid, state, ppid)` of every process, from /proc.
pub fn processes() -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let pid = stat[..stat.find('(').unwrap()].trim().parse().unwrap();
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().unwrap().chars().next().unwrap();
        let ppid = f.next().unwrap().parse().unwrap();
        out.push((pid, state, ppid));
    }
    out
}

/// Descendants of `root` as `(pid, state)`.
pub fn descendants(root: i32) -> Vec<(i32, char)> {
    let procs = processes();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for (pid, state, ppid) in &procs {
            if *ppid == p {
                out.push((*pid, *state));
                stack.push(*pid);
            }
        }
    }
    out
}
