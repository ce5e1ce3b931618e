//! Keeps the Swarming bot running: bootstrap (token, zip), launch, output, restart with
//! backoff, crash-loop detection, host-reboot requests, and the graceful drain at shutdown.
//!
//! Like tini: the bot runs in its own process group, its exit status comes from the one
//! reap loop ([`Reaper::spawn`], never `Child::wait`), both output pipes are drained line
//! by line on threads of their own (a noisy bot can never block on a full pipe, and the
//! runtime never blocks on a read), and restarts back off exponentially with jitter.
//! The restart rules ([`RestartPolicy`]) are pure and tested without processes.
//!
//! It must not kill anything but the bot's process group: the remaining descendants are
//! killed by `app` through [`crate::runtime::procs`] once every component has stopped.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::bot::bot_zip;
use crate::bot::shim;
use crate::bot::token_fetch::{sleep_or_shutdown, TokenWatch};
use crate::runtime::backoff::Backoff;
use crate::runtime::reaper::{Exit, Reaper, Spawned};
use crate::runtime::shutdown::Shutdown;
use crate::state::Shared;

/// A bot that runs this long has its restart backoff reset.
const STABLE_RUN: Duration = Duration::from_secs(600);
/// This many deaths within [`CRASH_WINDOW`] is a crash loop.
const CRASH_DEATHS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long to wait after an exit for the output threads to reach end of file; an orphan
/// holding the pipes open must not stall the restart.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// After SIGKILL, the kernel needs only a moment; this bounds a pathological wait.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Longest line forwarded as one log line; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

/// Counts deaths and says when the bot is crash-looping. Pure.
#[derive(Debug, Default)]
pub struct CrashLoop {
    deaths: VecDeque<Instant>,
    pub active: bool,
}

impl CrashLoop {
    /// Records a death; true when this death STARTS a crash loop (log it once).
    pub fn death(&mut self, now: Instant) -> bool {
        self.deaths.push_back(now);
        while self.deaths.len() > CRASH_DEATHS {
            self.deaths.pop_front();
        }
        let looping = self.deaths.len() == CRASH_DEATHS
            && self
                .deaths
                .front()
                .is_some_and(|first| now.duration_since(*first) <= CRASH_WINDOW);
        let started = looping && !self.active;
        self.active |= looping;
        started
    }

    /// The bot has stayed up for a whole window: the loop is over.
    pub fn recovered(&mut self) {
        self.active = false;
        self.deaths.clear();
    }
}

/// What to do after an exit. Pure apart from the jitter source inside [`Backoff`].
pub struct RestartPolicy {
    backoff: Backoff,
    pub crash: CrashLoop,
}

/// The policy's answer to one exit.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub delay: Duration,
    pub crashloop_started: bool,
}

impl RestartPolicy {
    pub fn new(backoff: Backoff) -> RestartPolicy {
        RestartPolicy {
            backoff,
            crash: CrashLoop::default(),
        }
    }

    pub fn on_exit(&mut self, ran_for: Duration, now: Instant) -> Decision {
        if ran_for >= STABLE_RUN {
            self.backoff.reset();
        }
        Decision {
            crashloop_started: self.crash.death(now),
            delay: self.backoff.next_delay(),
        }
    }
}

/// The arguments of a `sudo shim:` line, if `line` is one.
pub fn reboot_request(line: &str) -> Option<&str> {
    let prefix = shim::message(&[]);
    line.strip_prefix(prefix.trim_end()).map(str::trim)
}

/// The bot's PATH: our shim directory first, then what we inherited.
pub fn bot_path(shim_dir: &Path, inherited: Option<OsString>) -> OsString {
    let mut path = OsString::from(shim_dir);
    path.push(":");
    path.push(inherited.unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin")));
    path
}

/// Where the `sudo` shim lives: next to the bot directory, never inside it (the bot
/// deletes what it does not know there).
pub fn shim_dir(bot_dir: &Path) -> PathBuf {
    bot_dir
        .parent()
        .unwrap_or(Path::new("/"))
        .join(".test_machine_monitor")
        .join("bin")
}

/// Makes `<shim dir>/sudo` a symlink to our own executable.
fn install_shim(bot_dir: &Path) -> io::Result<PathBuf> {
    let dir = shim_dir(bot_dir);
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let link = dir.join("sudo");
    if std::fs::read_link(&link).ok().as_deref() == Some(exe.as_path()) {
        return Ok(dir);
    }
    // Build the link aside and rename it over: never a moment without a shim.
    let temp = dir.join(format!("sudo.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(&exe, &temp)?;
    std::fs::rename(&temp, &link)?;
    Ok(dir)
}

/// Forwards one pipe to the log, line by line. Lines from the shim are remembered.
fn forward_output<R: Read>(pipe: R, stream: &'static str, shim_seen: Arc<Mutex<Option<String>>>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                log::warn!("reading the bot's {stream}: {e}");
                return;
            }
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(args) = reboot_request(&line) {
            *shim_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(args.to_string());
        }
        log::info!(target: "test_machine_monitor::bot", "{line}");
    }
}

/// Starts a thread forwarding `pipe`; the receiver resolves at end of file.
fn spawn_forwarder<R: Read + Send + 'static>(
    pipe: Option<R>,
    stream: &'static str,
    shim_seen: Arc<Mutex<Option<String>>>,
) -> Option<oneshot::Receiver<()>> {
    let pipe = pipe?;
    let (tx, rx) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name(format!("bot-{stream}"))
        .spawn(move || {
            forward_output(pipe, stream, shim_seen);
            let _ = tx.send(());
        });
    match started {
        Ok(_) => Some(rx),
        Err(e) => {
            log::error!("cannot start a thread for the bot's {stream}: {e}; its output is lost");
            None
        }
    }
}

/// One running bot process.
struct Running {
    spawned: Spawned,
    started: Instant,
    outputs: Vec<oneshot::Receiver<()>>,
    shim_seen: Arc<Mutex<Option<String>>>,
}

/// Everything a launch needs, fixed after bootstrap.
struct Launch {
    python: PathBuf,
    dir: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

impl Launch {
    fn start(&self, reaper: &Reaper) -> io::Result<Running> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join(bot_zip::ZIP_NAME))
            .arg("start_bot")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Its own group: signals reach the bot and what it runs in its group, and a
        // terminal's ^C (when run by hand) reaches only us.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut spawned = reaper.spawn(&mut cmd)?;
        let shim_seen = Arc::new(Mutex::new(None));
        let outputs = [
            spawn_forwarder(spawned.stdout.take(), "stdout", shim_seen.clone()),
            spawn_forwarder(spawned.stderr.take(), "stderr", shim_seen.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Running {
            spawned,
            started: Instant::now(),
            outputs,
            shim_seen,
        })
    }
}

fn killpg(pgid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; pgid is the bot's pid (> 1).
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // ESRCH: the group is already gone, which is what we wanted.
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::warn!(
                "cannot send {} to the bot's group {pgid}: {e}",
                crate::runtime::reaper::signal_name(sig)
            );
        }
    }
}

/// Bootstrap, then run and restart the bot until shutdown; returns once the bot is gone.
pub async fn run(
    shared: Arc<Shared>,
    reaper: Reaper,
    mut tokens: TokenWatch,
    mut shutdown: Shutdown,
) {
    let Some(server) = shared.config.swarming_server.clone() else {
        return;
    };
    let Some(launch) = prepare(&shared, &mut shutdown).await else {
        return;
    };
    log::info!("waiting for an access token before the first bot launch");
    if tokens.current(&mut shutdown).await.is_none() {
        return;
    }
    let mut policy = RestartPolicy::new(Backoff::with_entropy(
        Duration::from_secs(1),
        Duration::from_secs(300),
    ));
    let mut launches: u64 = 0;
    loop {
        if !bot_zip::ensure(&shared, &server, &launch.dir, &mut tokens, &mut shutdown).await {
            return;
        }
        let (exit, ran_for, shim_args) = match launch.start(&reaper) {
            Ok(running) => {
                launches += 1;
                let pid = running.spawned.pid;
                log::info!(
                    "started the bot (pid {pid}): {} {} start_bot",
                    launch.python.display(),
                    launch.dir.join(bot_zip::ZIP_NAME).display()
                );
                shared.metrics.bot_up.set(1);
                shared.record_event(format!("bot started (pid {pid})"));
                shared.update_bot_status(|s| {
                    s.running = true;
                    s.started_at_unix = Some(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64(),
                    );
                    s.restarts = launches - 1;
                });
                match supervise(&shared, running, &mut policy, &mut shutdown).await {
                    Some(ended) => ended,
                    None => {
                        shared.metrics.bot_up.set(0);
                        shared.update_bot_status(|s| s.running = false);
                        return;
                    }
                }
            }
            Err(e) => {
                log::error!("cannot start the bot with {}: {e}", launch.python.display());
                // The shell's convention for a command that cannot be run.
                let code = if e.kind() == io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                (Exit::Code(code), Duration::ZERO, None)
            }
        };
        shared.metrics.bot_up.set(0);
        shared
            .metrics
            .bot_last_exit_code
            .set(i64::from(exit.as_code()));
        shared.update_bot_status(|s| {
            s.running = false;
            s.started_at_unix = None;
            s.last_exit = Some(exit.to_string());
        });
        shared.record_event(format!(
            "bot exited with {exit} after {:.1}s",
            ran_for.as_secs_f64()
        ));
        let decision = policy.on_exit(ran_for, Instant::now());
        match (&shim_args, exit) {
            (Some(args), Exit::Signal(libc::SIGKILL)) => log::warn!(
                "bot requested a host reboot (sudo {args}); it was killed by the shim after {:.1}s; restarting it in {:.1}s",
                ran_for.as_secs_f64(),
                decision.delay.as_secs_f64()
            ),
            _ => log::warn!(
                "bot exited with {exit} after {:.1}s; restarting it in {:.1}s",
                ran_for.as_secs_f64(),
                decision.delay.as_secs_f64()
            ),
        }
        if decision.crashloop_started {
            log::error!(
                "bot is crash-looping: {CRASH_DEATHS} exits within {}s (last: {exit}); restarts back off up to 5 minutes",
                CRASH_WINDOW.as_secs()
            );
            shared.metrics.bot_crashloop.set(1);
            shared.update_bot_status(|s| s.crashlooping = true);
        }
        if sleep_or_shutdown(decision.delay, &mut shutdown).await {
            return;
        }
    }
}

/// Creates the bot directory and the shim, retrying until they exist or shutdown.
async fn prepare(shared: &Shared, shutdown: &mut Shutdown) -> Option<Launch> {
    let mut backoff = Backoff::with_entropy(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let result = bot_zip::prepare_dir(&shared.config.bot_dir)
            .map_err(|e| {
                format!(
                    "cannot create the bot directory {}: {e}",
                    shared.config.bot_dir.display()
                )
            })
            .and_then(|dir| {
                install_shim(&dir)
                    .map(|shim| (dir.clone(), shim))
                    .map_err(|e| {
                        format!(
                            "cannot install the sudo shim in {}: {e}",
                            shim_dir(&dir).display()
                        )
                    })
            });
        match result {
            Ok((dir, shim)) => {
                log::info!(
                    "bot directory {}; sudo shim in {}",
                    dir.display(),
                    shim.display()
                );
                let c = &shared.config;
                // The one place we read our own environment: the bot inherits it, and its
                // PATH only gains the shim directory in front.
                let path = bot_path(&shim, std::env::var_os("PATH"));
                return Some(Launch {
                    python: c.python.clone(),
                    dir,
                    env: vec![
                        ("SWARMING_BOT_ID", c.bot_id.clone().into()),
                        ("SWARMING_EXTERNAL_BOT_SETUP", "1".into()),
                        (
                            "TEST_MACHINE_MONITOR_HOOK_ADDR",
                            c.hook_addr.to_string().into(),
                        ),
                        // stdout through a pipe is block-buffered by Python: lines must reach
                        // the log when they are written.
                        ("PYTHONUNBUFFERED", "1".into()),
                        ("PATH", path),
                    ],
                });
            }
            Err(e) => {
                let delay = backoff.next_delay();
                log::error!("{e}; retrying in {:.1}s", delay.as_secs_f64());
                if sleep_or_shutdown(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Waits for the bot to exit; `None` when shutdown drained it instead.
async fn supervise(
    shared: &Shared,
    mut running: Running,
    policy: &mut RestartPolicy,
    shutdown: &mut Shutdown,
) -> Option<(Exit, Duration, Option<String>)> {
    let pid = running.spawned.pid;
    let exit = loop {
        let recover_in = CRASH_WINDOW.saturating_sub(running.started.elapsed());
        let crashlooping = policy.crash.active;
        tokio::select! {
            exit = &mut running.spawned.exit => {
                break exit.unwrap_or(Exit::Code(-1));
            }
            _ = tokio::time::sleep(recover_in), if crashlooping => {
                policy.crash.recovered();
                shared.metrics.bot_crashloop.set(0);
                shared.update_bot_status(|s| s.crashlooping = false);
                log::info!("bot has run for {}s: no longer crash-looping", CRASH_WINDOW.as_secs());
            }
            _ = shutdown.requested() => {
                drain(shared, &mut running, shutdown).await;
                return None;
            }
        }
    };
    let ran_for = running.started.elapsed();
    // The shim's line is written before the kill; make sure it has been read.
    let outputs = std::mem::take(&mut running.outputs);
    let _ = tokio::time::timeout(OUTPUT_DRAIN, async {
        for o in outputs {
            let _ = o.await;
        }
    })
    .await;
    let shim_args = running
        .shim_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    log::debug!("bot pid {pid} ended: {exit}");
    Some((exit, ran_for, shim_args))
}

/// SIGTERM the bot's group, wait up to `--grace` (or a second signal), then SIGKILL.
async fn drain(shared: &Shared, running: &mut Running, shutdown: &mut Shutdown) {
    let pid = running.spawned.pid;
    let grace = shared.config.grace;
    log::info!(
        "stopping the bot (pid {pid}): SIGTERM, then SIGKILL after {}s",
        grace.as_secs()
    );
    killpg(pid, libc::SIGTERM);
    let exited = tokio::select! {
        exit = &mut running.spawned.exit => Some(exit.unwrap_or(Exit::Code(-1))),
        _ = tokio::time::sleep(grace) => {
            log::warn!("bot (pid {pid}) still running {}s after SIGTERM: SIGKILL", grace.as_secs());
            None
        }
        _ = shutdown.hurried() => {
            log::warn!("second termination signal: SIGKILL the bot (pid {pid}) now");
            None
        }
    };
    let exit = match exited {
        Some(exit) => {
            // Its group may still hold processes it started.
            killpg(pid, libc::SIGKILL);
            Some(exit)
        }
        None => {
            killpg(pid, libc::SIGKILL);
            tokio::time::timeout(KILL_WAIT, &mut running.spawned.exit)
                .await
                .ok()
                .map(|r| r.unwrap_or(Exit::Code(-1)))
        }
    };
    match exit {
        Some(exit) => {
            log::info!("bot (pid {pid}) stopped: {exit}");
            shared
                .metrics
                .bot_last_exit_code
                .set(i64::from(exit.as_code()));
            shared.update_bot_status(|s| s.last_exit = Some(exit.to_string()));
        }
        None => log::error!(
            "bot (pid {pid}) did not die within {}s of SIGKILL",
            KILL_WAIT.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
            99,
        ))
    }

    #[test]
    fn first_restart_within_a_second_then_doubling_to_five_minutes() {
        let mut p = policy();
        let t = Instant::now();
        let mut cap = 1.0;
        for i in 0..15 {
            let d = p.on_exit(Duration::from_secs(1), t + Duration::from_secs(600 * i));
            assert!(d.delay.as_secs_f64() <= cap && d.delay.as_secs_f64() >= cap / 2.0);
            cap = (cap * 2.0_f64).min(300.0);
        }
    }

    #[test]
    fn a_ten_minute_run_resets_the_backoff() {
        let mut p = policy();
        let t = Instant::now();
        for _ in 0..6 {
            p.on_exit(Duration::from_secs(1), t);
        }
        let d = p.on_exit(STABLE_RUN, t);
        assert!(d.delay <= Duration::from_secs(1));
    }

    #[test]
    fn five_deaths_in_a_minute_is_a_crash_loop_reported_once() {
        let mut c = CrashLoop::default();
        let t = Instant::now();
        let started: Vec<bool> = (0..8)
            .map(|i| c.death(t + Duration::from_secs(i * 10)))
            .collect();
        assert_eq!(
            started,
            [false, false, false, false, true, false, false, false]
        );
        assert!(c.active);
        c.recovered();
        assert!(!c.active);
        assert!(!c.death(t + Duration::from_secs(100)));
    }

    #[test]
    fn slow_deaths_are_not_a_crash_loop() {
        let mut c = CrashLoop::default();
        let t = Instant::now();
        for i in 0..10 {
            assert!(!c.death(t + Duration::from_secs(i * 16)));
        }
        assert!(!c.active);
    }

    #[test]
    fn shim_lines_carry_the_arguments() {
        assert_eq!(
            reboot_request("sudo shim: -n /sbin/shutdown -r now"),
            Some("-n /sbin/shutdown -r now")
        );
        assert_eq!(reboot_request("INFO sudo shim: x"), None);
        assert_eq!(reboot_request("hello"), None);
    }

    #[test]
    fn path_puts_the_shim_first() {
        let p = bot_path(
            Path::new("/b/.test_machine_monitor/bin"),
            Some("/usr/bin:/bin".into()),
        );
        assert_eq!(
            p,
            OsString::from("/b/.test_machine_monitor/bin:/usr/bin:/bin")
        );
        let p = bot_path(Path::new("/x"), None);
        assert_eq!(p, OsString::from("/x:/usr/local/bin:/usr/bin:/bin"));
    }

    #[test]
    fn the_shim_lives_outside_the_bot_dir() {
        assert_eq!(
            shim_dir(Path::new("/b/s")),
            PathBuf::from("/b/.test_machine_monitor/bin")
        );
        assert!(!shim_dir(Path::new("/b/s")).starts_with("/b/s"));
    }
}
