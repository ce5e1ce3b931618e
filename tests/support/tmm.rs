//! The real binary, started the one way the tests start it: [`Tmm`] builds the command
//! line from the defaults a test needs (free ports for the hooks and `/metrics`, a temp
//! dir holding the bot directory and the log, `RUST_LOG=info`, `--no-bot` and
//! `--devices none`), each of which a flag the test gives replaces, and adds what the
//! test asks for: phones (the real adb server on a port of its own, and simulated
//! phones plugged in once it listens), a bot (the stand-in Swarming server and a token
//! config), iPhones (the stand-in tools), a wrapper command. A new test starts from
//! one line: `let tmm = Tmm::new("name").plugged(&["modern:A"]).arg("--x").start();`. The running [`Monitor`] reads its log (a file, readable while it
//! runs) and its `/metrics`, and is stopped with everything it started when dropped,
//! also when the test panics.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::android::{adb_request, Sim, ADB};
use super::kube::FakeKube;
use super::swarming::FakeSwarming;
use super::{free_port, http, ios, stop_tree, wait_showing, KillOnDrop, OutputWithin, TempDir};
use super::{BIN, EXIT_LIMIT};

/// The bot id every monitor is given unless the test names another.
pub const BOT_ID: &str = "pi-test";

/// How long a started monitor may take to listen on its ports (and to start its adb
/// server), and to exit after SIGTERM before it and what it started are killed.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(15);

/// The monitor to start: see the module's doc. Cheap to clone; the clones share the
/// temp dir and the stand-ins, which go once the last clone and the last monitor
/// started from them are gone.
#[derive(Clone)]
pub struct Tmm {
    dir: Arc<TempDir>,
    /// No defaults at all: the binary as a command line tool.
    bare: bool,
    server: Option<Arc<FakeSwarming>>,
    adb_port: Option<u16>,
    sim: Option<Arc<Sim>>,
    wrapper: Vec<String>,
    args: Vec<String>,
    /// Set (`Some`) or removed (`None`), after the defaults.
    env: Vec<(String, Option<String>)>,
}

impl Tmm {
    /// The monitor with the defaults, its files in a temp dir named after `name`.
    pub fn new(name: &str) -> Tmm {
        Tmm {
            dir: Arc::new(TempDir::new(name)),
            bare: false,
            server: None,
            adb_port: None,
            sim: None,
            wrapper: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The binary with the test's arguments only, for its subcommands and the command
    /// line's own errors; see [`Tmm::run`].
    pub fn bare() -> Tmm {
        Tmm {
            bare: true,
            ..Tmm::new("bare")
        }
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Tmm {
        self.args.push(arg.as_ref().to_string());
        self
    }

    /// More flags; one that has a default replaces it.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Tmm {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Tmm {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Tmm {
        self.env.push((key.to_string(), None));
        self
    }

    /// Watches the phones: the real adb server (`/usr/bin/adb`, started by the monitor)
    /// on a free port, rounds every 2 s, `$HOME` in the temp dir for the adb key.
    pub fn phones(self) -> Tmm {
        self.adb_port(free_port())
    }

    /// As [`Tmm::phones`], with the adb server on `port` (one the test started).
    pub fn adb_port(mut self, port: u16) -> Tmm {
        self.adb_port = Some(port);
        self
    }

    /// As [`Tmm::phones`], with the simulated phones `specs` (`profile:name`), every
    /// one plugged in (`adb connect`) once the adb server listens; see [`Monitor::sim`].
    pub fn plugged(mut self, specs: &[&str]) -> Tmm {
        self.sim = Some(Arc::new(Sim::start(specs, &[])));
        self.phones()
    }

    /// Runs a bot from `server` (the stand-in), with a token config for its token
    /// endpoint in the temp dir, `python3` and a grace of 10 s.
    pub fn bot(mut self, server: FakeSwarming) -> Tmm {
        server.write_token_config(self.dir.path());
        self.server = Some(Arc::new(server));
        self
    }

    /// Runs as in a pod of the stand-in's cluster: its environment (the API server, the
    /// node) and its service account directory.
    pub fn kube(self, kube: &FakeKube) -> Tmm {
        let sa = kube.sa_dir();
        kube.env()
            .into_iter()
            .fold(self, |tmm, (key, value)| tmm.env(key, &value))
            .arg("--kube-service-account-dir")
            .arg(sa.to_str().unwrap())
    }

    /// Reads the iPhones through the stand-in tools of `lab` (`--idevice-dir`, and its
    /// `usbmuxd`).
    pub fn iphones(self, lab: &ios::Lab) -> Tmm {
        let usbmuxd = lab.dir.join("usbmuxd");
        self.arg("--idevice-dir")
            .arg(lab.dir.to_str().unwrap())
            .arg("--usbmuxd")
            .arg(usbmuxd.to_str().unwrap())
    }

    /// Runs the monitor through `wrapper`, a command that ends by exec'ing its
    /// arguments (the binary and its flags), so that the child's pid is the monitor's
    /// unless the wrapper forks.
    pub fn wrapper<S: AsRef<str>>(mut self, wrapper: impl IntoIterator<Item = S>) -> Tmm {
        self.wrapper = wrapper
            .into_iter()
            .map(|a| a.as_ref().to_string())
            .collect();
        self
    }

    /// Runs the monitor in a private mount namespace of its own where `script` (`sh`,
    /// with the bot directory, which it creates, as `$0`) has run first: what the
    /// monitor sees of the bot directory, the test sees through [`Monitor::seen`].
    pub fn mount_first(self, script: &str) -> Tmm {
        let bot_dir = self.bot_dir();
        fs::create_dir_all(&bot_dir).unwrap();
        let script = format!("{script} && exec \"$@\"");
        self.wrapper([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            bot_dir.to_str().unwrap(),
        ])
    }

    /// The temp dir: the bot directory's parent's parent, the token config, the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--bot-dir`.
    pub fn bot_dir(&self) -> PathBuf {
        self.dir().join("b").join("s")
    }

    /// The `--token-config` of a monitor with a bot.
    pub fn token_config(&self) -> PathBuf {
        self.dir().join("token.json")
    }

    /// The stand-in server of a monitor with a bot.
    pub fn server(&self) -> &FakeSwarming {
        self.server.as_deref().expect("a monitor without a bot")
    }

    /// The value the test gave `flag`, if it gave one.
    fn given(&self, flag: &str) -> Option<&str> {
        let eq = format!("{flag}=");
        self.args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                Some(self.args.get(i + 1).map_or("", String::as_str))
            } else {
                a.strip_prefix(&eq)
            }
        })
    }

    /// The flags the test did not give itself, with their values.
    fn defaults(&self, hook_port: u16, metrics_port: u16) -> Vec<(&'static str, Option<String>)> {
        if self.bare {
            return Vec::new();
        }
        let mut all = vec![
            ("--bot-id", Some(BOT_ID.to_string())),
            ("--bot-dir", Some(self.bot_dir().display().to_string())),
            ("--hook-addr", Some(format!("127.0.0.1:{hook_port}"))),
            ("--metrics-addr", Some(format!("127.0.0.1:{metrics_port}"))),
        ];
        match &self.server {
            None => all.push(("--no-bot", None)),
            Some(server) => all.extend([
                ("--swarming-server", Some(server.served.clone())),
                (
                    "--token-config",
                    Some(self.token_config().display().to_string()),
                ),
                ("--python", Some("python3".to_string())),
                ("--grace", Some("10".to_string())),
            ]),
        }
        match self.adb_port {
            None => all.push(("--devices", Some("none".to_string()))),
            Some(port) => all.extend([
                ("--adb", Some(ADB.to_string())),
                ("--adb-server", Some(format!("127.0.0.1:{port}"))),
                ("--interrogate-every", Some("2".to_string())),
            ]),
        }
        all.retain(|(flag, _)| self.given(flag).is_none());
        all
    }

    fn command(&self, hook_port: u16, metrics_port: u16) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        for (flag, value) in self.defaults(hook_port, metrics_port) {
            cmd.arg(flag).args(value);
        }
        cmd.args(&self.args);
        if !self.bare {
            cmd.env("RUST_LOG", "info");
        }
        if self.adb_port.is_some() {
            cmd.env("HOME", self.dir());
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Runs it to its end (within [`EXIT_LIMIT`]): what it printed and its status.
    pub fn run(&self) -> Output {
        self.command(free_port(), free_port())
            .output_within(EXIT_LIMIT)
    }

    /// Starts it without waiting for anything, for a test that watches the start.
    pub fn spawn(&self) -> Monitor {
        static LOGS: AtomicU32 = AtomicU32::new(0);
        let (hook_port, metrics_port) = (free_port(), free_port());
        let log_path = self.dir().join(format!(
            "monitor-{}.log",
            LOGS.fetch_add(1, Ordering::Relaxed)
        ));
        // As a pod's volume is: there before the monitor starts.
        fs::create_dir_all(self.bot_dir()).unwrap();
        let mut cmd = self.command(hook_port, metrics_port);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let watches_android = self
            .given("--devices")
            .unwrap_or("android")
            .contains("android");
        Monitor {
            proc: KillOnDrop(child),
            hook_port,
            metrics_port,
            adb_port: self.adb_port,
            adb_server_expected: self.adb_port.is_some() && watches_android,
            bot_dir: self.bot_dir(),
            log_path,
            server: self.server.clone(),
            sim: self.sim.clone(),
            _dir: self.dir.clone(),
        }
    }

    /// Starts it and waits until it listens on its ports (and, watching Android
    /// phones, until the adb server does). A free port can be taken by someone else
    /// before the monitor binds it: that one failure is retried with new ports.
    pub fn start(&self) -> Monitor {
        for _ in 0..3 {
            let mut m = self.spawn();
            match m.wait_serving() {
                Ok(()) => {
                    if let Some(sim) = &m.sim {
                        sim.connect_all(m.adb_port());
                    }
                    return m;
                }
                Err(log) if log.contains("cannot listen on") => continue,
                Err(log) => panic!("the monitor exited early: {log}"),
            }
        }
        panic!("the monitor could not bind free ports three times")
    }
}

/// A running monitor (or its wrapper) started by [`Tmm`].
pub struct Monitor {
    proc: KillOnDrop,
    pub hook_port: u16,
    pub metrics_port: u16,
    adb_port: Option<u16>,
    adb_server_expected: bool,
    pub bot_dir: PathBuf,
    log_path: PathBuf,
    server: Option<Arc<FakeSwarming>>,
    sim: Option<Arc<Sim>>,
    _dir: Arc<TempDir>,
}

impl Monitor {
    fn wait_serving(&mut self) -> Result<(), String> {
        let mut ports = vec![self.metrics_port, self.hook_port];
        ports.extend(self.adb_port.filter(|_| self.adb_server_expected));
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.proc.0.try_wait() {
                return Err(format!("{status}\n{}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {ports:?} after {START_LIMIT:?}{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The child's pid: the monitor's, or its wrapper's.
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The pids of its direct children (the adb server, usbmuxd, a round's tools, bots).
    pub fn children(&self) -> Vec<i32> {
        super::children(self.pid())
    }

    pub fn signal(&self, sig: i32) {
        super::send_signal(self.pid(), sig);
    }

    pub fn term(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.proc.0.try_wait().unwrap()
    }

    /// Its exit status, within `limit`, or a failed test showing its log.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.proc.wait_timeout(limit) {
            Some(status) => status,
            None => panic!("the monitor still runs after {limit:?}{}", self.log_tail()),
        }
    }

    /// Stops it (SIGTERM, then [`stop_tree`]'s SIGKILL) and returns its whole log.
    pub fn stop(mut self) -> String {
        stop_tree(&mut self.proc.0, STOP_GRACE);
        self.log()
    }

    /// The adb server's port of a monitor that watches phones.
    pub fn adb_port(&self) -> u16 {
        self.adb_port.expect("a monitor without phones")
    }

    /// The stand-in server of a monitor with a bot.
    pub fn server(&self) -> &FakeSwarming {
        self.server.as_deref().expect("a monitor without a bot")
    }

    /// The simulated phones of a monitor started [`Tmm::plugged`].
    pub fn sim(&self) -> &Sim {
        self.sim
            .as_deref()
            .expect("a monitor without simulated phones")
    }

    /// The force-quarantine file it watches by default.
    pub fn force_quarantine_file(&self) -> PathBuf {
        self.bot_dir
            .parent()
            .unwrap()
            .join(format!("{BOT_ID}.force_quarantine"))
    }

    /// `path` as the monitor sees it, in its mount namespace (see [`Tmm::mount_first`]).
    pub fn seen(&self, path: &Path) -> PathBuf {
        let inside = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(inside)
    }

    /// Runs `test_machine_monitor devices` against its adb server and status port.
    pub fn devices_command(&self) -> Output {
        Tmm::bare()
            .args(["devices", "--no-bot", "--adb-server"])
            .arg(format!("127.0.0.1:{}", self.adb_port()))
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .run()
    }

    /// POSTs `{}` to a hook and returns its JSON answer, which must be a 200.
    pub fn hook(&self, path: &str) -> serde_json::Value {
        let reply = http::request(self.hook_port, "POST", path, "{}");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        reply.json()
    }

    /// `/metrics`, which must answer 200.
    pub fn metrics(&self) -> String {
        let reply = http::get(self.metrics_port, "/metrics");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    /// The value of the `/metrics` sample `series` (name and labels, no prefix).
    pub fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.metrics(), series)
    }

    pub fn wait_sample(&self, series: &str, want: f64, limit: Duration) {
        wait_showing(
            limit,
            &format!("{series} == {want}"),
            || (self.sample(series) == Some(want)).then_some(()),
            || self.log_tail(),
        );
    }

    /// Everything it has logged so far (lossy: a bot's output may not be UTF-8).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Its last log lines and where the whole log is, for a failed wait.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        format!(
            "; the monitor's last log lines ({}):\n{}",
            self.log_path.display(),
            tail.join("\n")
        )
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }

    /// The first log line containing `needle`.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        self.log_lines(needle).into_iter().next()
    }

    /// Every log line containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        lines_with(&self.log(), needle)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        lines_with(&self.log(), needle).len()
    }

    /// Waits until a log line holds `needle`; returns the log.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        self.wait_log_n(needle, 1, limit)
    }

    /// Waits until `times` log lines hold `needle`; returns the log.
    pub fn wait_log_n(&self, needle: &str, times: usize, limit: Duration) -> String {
        wait_showing(
            limit,
            &format!("{times}× a log line with {needle:?}"),
            || {
                let log = self.log();
                (lines_with(&log, needle).len() >= times).then_some(log)
            },
            || self.log_tail(),
        )
    }

    /// Waits until a download into the bot directory is under way, its temporary file
    /// holding at least `min` bytes; returns how many it holds.
    pub fn wait_partial_download(&self, min: u64, limit: Duration) -> u64 {
        wait_showing(
            limit,
            "a download under way",
            || {
                let temp = fs::read_dir(&self.bot_dir).ok()?.flatten().find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("swarming_bot.zip.download-")
                })?;
                let len = temp.metadata().ok()?.len();
                (len >= min).then_some(len)
            },
            || self.log_tail(),
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // SIGTERM, so that it stops its bot and adb server itself; then make sure, and
        // stop an adb server that it did not start but found on its port.
        stop_tree(&mut self.proc.0, STOP_GRACE);
        if let Some(port) = self.adb_port {
            let _ = adb_request(port, "host:kill", Duration::from_secs(2));
        }
    }
}

/// The value of the sample `series` (name and labels, without the
/// `test_machine_monitor_` prefix) in the Prometheus text `metrics`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    let want = format!("test_machine_monitor_{series} ");
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix(&want)?.trim();
        Some(
            value
                .parse()
                .unwrap_or_else(|e| panic!("{series}: not a number ({e}): {l:?}")),
        )
    })
}

/// The lines of `log` that hold `needle`.
pub fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
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
