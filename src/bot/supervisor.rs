//! Keeps the Swarming bot running: bootstrap (token, zip), launch, output, restart with
//! backoff, crash-loop detection, host-reboot requests, and the graceful drain at shutdown.
//!
//! The bot runs in the supervised loop (`runtime::supervise`), like the daemons: its own
//! process group, its exit status from the one reap loop, its output forwarded line by
//! line, restarts backed off exponentially with jitter and reset after a ten-minute run.
//! What is the bot's own is its [`Hooks`]: the zip checked (and downloaded) before every
//! start, the sudo shim's host-reboot request read from its output, the `BotStatus`
//! that the state hook, the status page and the bot gauges are derived from, its log
//! lines, and the silence rule: a bot that hangs (stopped, deadlocked) calls no hook, so
//! one that has called none for `--bot-silence-limit` outside a task is killed and
//! started again ([`silence`] decides, from the calls the hooks note).
//!
//! At shutdown a bot that runs a task is drained: it gets SIGTERM (the real bot then takes
//! no new task, lets its task, in a process group of its own, finish, reports it and
//! exits) and up to `--drain-limit` to exit; then, or at the next signal, it and its task
//! are stopped as an idle bot is (SIGTERM, `--grace`, SIGKILL). [`task_running`] decides.
//!
//! It kills nothing but the bot and its descendants (`runtime::child::stop`: its group,
//! then every descendant seen, its task's group among them); whatever else is left, an
//! orphan reparented to us, is killed by `app` through [`crate::runtime::procs`] once
//! every component has stopped.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bot::bot_zip;
use crate::bot::shim;
use crate::bot::token_fetch::TokenWatch;
use crate::bot::Settings;
use crate::runtime::backoff::Backoff;
use crate::runtime::child::{self, Cut, Kill, Sink};
use crate::runtime::reaper::{Exit, Reaper};
use crate::runtime::retry::Retry;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::supervise::{self, Decision, Hooks, RestartPolicy, CRASH_DEATHS, CRASH_WINDOW};
use crate::state::bot_status::Drain;
use crate::state::metrics::Metrics;
use crate::state::{BotStatusCell, Calls, EventReason, Events, HookCalls, Shared};

/// A bot that runs this long has its restart backoff reset.
const STABLE_RUN: Duration = Duration::from_secs(600);
/// How often a running bot's silence is looked at: a kill comes at most this late.
const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// How long the bot started at `started` has called no hook at `now`, if that is
/// `limit` or more: since its last call, or its start before its first. Never while it
/// runs a task, when the real bot calls no hook. Calls and tasks of an earlier run of
/// the bot (before `started`) do not count. Pure.
pub fn silence(calls: Calls, started: Instant, now: Instant, limit: Duration) -> Option<Duration> {
    if calls.task_of_run(started).is_some() {
        return None;
    }
    let since = calls.last.filter(|t| *t >= started).unwrap_or(started);
    let silent = now.saturating_duration_since(since);
    (silent >= limit).then_some(silent)
}

/// How long the bot started at `started` has run a task at `now`, if it runs one: one
/// begun (`on_before_task`) in this run of the bot and not ended (`on_after_task`). Pure.
pub fn task_running(calls: Calls, started: Instant, now: Instant) -> Option<Duration> {
    let since = calls.task_of_run(started)?;
    Some(now.saturating_duration_since(since))
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

/// Everything a launch needs, fixed after bootstrap.
struct Launch {
    python: PathBuf,
    dir: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

/// What the supervisor is given: its configuration, the counters, and the events it
/// appends to.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
}

impl Context {
    /// The supervisor's handles out of `app`'s bundle.
    pub fn of(shared: &Shared, settings: Settings) -> Context {
        Context {
            settings: Arc::new(settings),
            metrics: shared.metrics.clone(),
            events: shared.events.clone(),
        }
    }
}

/// Which bot to run: `--bot-id` in `--bot-dir` (`--bots one`), or one phone's bot.
pub struct Which {
    pub id: String,
    pub dir: PathBuf,
    /// The phone's variable for a phone's bot (`ANDROID_SERIAL`, `IOS_UDID`).
    pub phone_env: Option<(&'static str, String)>,
    /// A directory whose subdirectories may hold a good zip to copy rather than
    /// download: the other bots' (`--bots per-device`).
    pub zip_seed: Option<PathBuf>,
    /// Held while this bot checks, copies or downloads its zip, shared by the bots of
    /// `--bots per-device`: bots that start together then download once, and the others
    /// copy that zip.
    pub zip_turn: Option<Arc<tokio::sync::Mutex<()>>>,
    /// The status this bot's supervisor alone writes.
    pub status: Arc<BotStatusCell>,
    /// Its hook calls, which the hooks note.
    pub calls: Arc<HookCalls>,
}

/// The bot's part in the supervised loop.
struct Bot {
    ctx: Context,
    which: Which,
    /// `bot`, or `bot <id>` when there are several: how the log names it.
    who: String,
    server: String,
    launch: Launch,
    tokens: TokenWatch,
    launches: u64,
    /// The arguments of the sudo shim's line in this run's output, if it printed one.
    shim_seen: Arc<Mutex<Option<String>>>,
    /// How its drain for shutdown went, once it began: when, and whether it was cut.
    drain: Option<(Instant, Option<Cut>)>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Hooks for Bot {
    fn target(&self) -> &'static str {
        module_path!()
    }

    fn name(&self) -> &str {
        &self.who
    }

    fn grace(&self) -> Duration {
        self.ctx.settings.grace
    }

    async fn before_start(&mut self, shutdown: &mut Shutdown) -> bool {
        let source = bot_zip::Source {
            server: &self.server,
            bot_id: &self.which.id,
            metrics: &self.ctx.metrics,
            ca_bundle: &self.ctx.settings.ca_bundle,
            seed: self.which.zip_seed.as_deref(),
        };
        let _turn = match &self.which.zip_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        bot_zip::ensure(&source, &self.launch.dir, &mut self.tokens, shutdown).await
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.launch.python);
        cmd.arg(self.launch.dir.join(bot_zip::ZIP_NAME))
            .arg("start_bot")
            .current_dir(&self.launch.dir);
        for (k, v) in &self.launch.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn_failed(&mut self, e: &io::Error) -> Option<Exit> {
        log::error!(
            "cannot start the {} with {}: {e}",
            self.who,
            self.launch.python.display()
        );
        // The shell's convention for a command that cannot be run.
        let code = if e.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        Some(Exit::Code(code))
    }

    fn started(&mut self, pid: i32) -> Sink {
        self.launches += 1;
        log::info!(
            "started the {} (pid {pid}): {} {} start_bot",
            self.who,
            self.launch.python.display(),
            self.launch.dir.join(bot_zip::ZIP_NAME).display()
        );
        self.ctx
            .events
            .record(format!("{} started (pid {pid})", self.who));
        let restarts = self.launches - 1;
        self.which.status.update(|s| {
            s.running = true;
            s.started_at_unix = Some(unix_now());
            s.started = Some(Instant::now());
            s.restarts = restarts;
        });
        let shim_seen = Arc::new(Mutex::new(None));
        self.shim_seen = shim_seen.clone();
        // With several bots each line says whose it is.
        let prefix = match self.who.strip_prefix("bot ") {
            Some(id) => format!("{id}: "),
            None => String::new(),
        };
        Arc::new(move |line: &str| {
            if let Some(args) = reboot_request(line) {
                *shim_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(args.to_string());
            }
            log::info!(target: "test_machine_monitor::bot", "{prefix}{line}");
        })
    }

    fn exited(&mut self, exit: Option<Exit>, ran_for: Duration, decision: &Decision) {
        let exit = exit.unwrap_or(Exit::Code(-1));
        self.which.status.update(|s| {
            s.running = false;
            s.started_at_unix = None;
            s.started = None;
            s.last_exit = Some(exit);
        });
        self.ctx.events.record(format!(
            "{} exited with {exit} after {:.1}s",
            self.who,
            ran_for.as_secs_f64()
        ));
        let shim_args = self
            .shim_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match (&shim_args, exit) {
            (Some(args), Exit::Signal(libc::SIGKILL)) => log::warn!(
                "{} requested a host reboot (sudo {args}); it was killed by the shim after {:.1}s; restarting it in {:.1}s",
                self.who,
                ran_for.as_secs_f64(),
                decision.delay.as_secs_f64()
            ),
            _ => log::warn!(
                "{} exited with {exit} after {:.1}s; restarting it in {:.1}s",
                self.who,
                ran_for.as_secs_f64(),
                decision.delay.as_secs_f64()
            ),
        }
        if decision.crashloop_started {
            let line = format!(
                "{} is crash-looping: {CRASH_DEATHS} exits within {}s (last: {exit}); restarts back off up to 5 minutes",
                self.who,
                CRASH_WINDOW.as_secs()
            );
            log::error!("{line}");
            self.ctx.events.report(EventReason::BotCrashLoop, line);
            self.which.status.update(|s| s.crashlooping = true);
        }
    }

    fn recovered(&mut self) {
        self.which.status.update(|s| s.crashlooping = false);
        log::info!(
            "{} has run for {}s: no longer crash-looping",
            self.who,
            CRASH_WINDOW.as_secs()
        );
    }

    fn silence_check_every(&self) -> Option<Duration> {
        Some(SILENCE_CHECK)
    }

    fn silent(&mut self, pid: i32, started: Instant, now: Instant) -> bool {
        let limit = self.ctx.settings.bot_silence_limit;
        let Some(silent) = silence(self.which.calls.get(), started, now, limit) else {
            return false;
        };
        log::warn!(
            "{} (pid {pid}) has called no hook for {:.0}s outside a task (--bot-silence-limit {}s): it hangs; killing it (SIGTERM, then SIGKILL after {}s) to start it again",
            self.who,
            silent.as_secs_f64(),
            limit.as_secs(),
            self.grace().as_secs()
        );
        self.ctx.events.record(format!(
            "{} (pid {pid}) silent for {:.0}s: killed",
            self.who,
            silent.as_secs_f64()
        ));
        self.which.status.update(|s| s.silence_kills += 1);
        true
    }

    fn drain_limit(&mut self, started: Instant) -> Option<Duration> {
        let now = Instant::now();
        let task_for = task_running(self.which.calls.get(), started, now)?;
        let now_unix = unix_now();
        self.drain = Some((now, None));
        self.which.status.update(|s| {
            s.drain = Some(Drain {
                since_unix: now_unix,
                task_started_unix: now_unix - task_for.as_secs_f64(),
            })
        });
        Some(self.ctx.settings.drain_limit)
    }

    fn stopping(&mut self, pid: i32, drain: Option<Duration>) {
        match drain {
            Some(limit) => log::info!(
                "stopping the {} (pid {pid}): it runs a task; SIGTERM, and up to {}s (--drain-limit) for it to finish the task and exit",
                self.who,
                limit.as_secs()
            ),
            None => log::info!(
                "stopping the {} (pid {pid}): SIGTERM, then SIGKILL after {}s",
                self.who,
                self.grace().as_secs()
            ),
        }
    }

    fn drain_cut(&mut self, pid: i32, why: Cut) {
        if let Some((_, cut)) = self.drain.as_mut() {
            *cut = Some(why);
        }
        let why = match why {
            Cut::Limit => format!(
                "still running its task at the drain limit ({}s)",
                self.ctx.settings.drain_limit.as_secs()
            ),
            Cut::Signal => "told to hurry by a second termination signal".to_string(),
        };
        log::warn!(
            "{} (pid {pid}) {why}: SIGTERM to it and its task, then SIGKILL after {}s",
            self.who,
            self.grace().as_secs()
        );
    }

    fn killing(&mut self, pid: i32, why: Kill) {
        match why {
            Kill::Grace => log::warn!(
                "{} (pid {pid}) still running {}s after SIGTERM: SIGKILL",
                self.who,
                self.grace().as_secs()
            ),
            Kill::Hurried => {
                log::warn!(
                    "second termination signal: SIGKILL the {} (pid {pid}) now",
                    self.who
                )
            }
        }
    }

    fn stopped(&mut self, pid: i32, exit: Option<Exit>) {
        if let Some((since, cut)) = self.drain {
            let how = match cut {
                None => "its task finished",
                Some(Cut::Limit) => "its task cut at the drain limit",
                Some(Cut::Signal) => "its task cut by a second termination signal",
            };
            log::info!(
                "{} (pid {pid}) drained after {:.1}s: {how}",
                self.who,
                since.elapsed().as_secs_f64()
            );
            self.ctx
                .events
                .record(format!("{} drained: {how}", self.who));
        }
        self.which.status.update(|s| s.drain = None);
        match exit {
            Some(exit) => {
                log::info!("{} (pid {pid}) stopped: {exit}", self.who);
                self.which.status.update(|s| {
                    s.running = false;
                    s.last_exit = Some(exit);
                });
            }
            None => {
                log::error!(
                    "{} (pid {pid}) did not die within {}s of SIGKILL",
                    self.who,
                    child::KILL_WAIT.as_secs()
                );
                self.which.status.update(|s| s.running = false);
            }
        }
    }
}

/// Bootstrap, then run and restart the bot `which` until shutdown; returns once the bot
/// is gone. `several` says whether other bots run beside it (the log then names it).
pub async fn run(
    ctx: Context,
    which: Which,
    several: bool,
    reaper: Reaper,
    mut tokens: TokenWatch,
    mut shutdown: Shutdown,
) {
    let Some(server) = ctx.settings.swarming_server.clone() else {
        return;
    };
    let Some(launch) = prepare(&ctx.settings, &which, &mut shutdown).await else {
        return;
    };
    log::info!("waiting for an access token before the first bot launch");
    if tokens.current(&mut shutdown).await.is_none() {
        return;
    }
    let mut policy = RestartPolicy::new(
        Backoff::with_entropy(Duration::from_secs(1), Duration::from_secs(300)),
        STABLE_RUN,
    );
    let who = if several {
        format!("bot {}", which.id)
    } else {
        "bot".to_string()
    };
    let mut bot = Bot {
        ctx,
        which,
        who,
        server,
        launch,
        tokens,
        launches: 0,
        shim_seen: Arc::default(),
        drain: None,
    };
    supervise::run(&mut bot, &reaper, &mut policy, &mut shutdown).await
}

/// Creates the bot directory and the shim, retrying until they exist or shutdown.
/// The shim is shared: it sits beside `--bot-dir`, which in `--bots per-device` holds
/// only the bots' directories.
async fn prepare(config: &Settings, which: &Which, shutdown: &mut Shutdown) -> Option<Launch> {
    let mut retry = Retry::slow();
    loop {
        let result = bot_zip::prepare_dir(&which.dir)
            .map_err(|e| {
                format!(
                    "cannot create the bot directory {}: {e}",
                    which.dir.display()
                )
            })
            .and_then(|dir| {
                let base = bot_zip::prepare_dir(&config.bot_dir)
                    .map_err(|e| format!("cannot create {}: {e}", config.bot_dir.display()))?;
                install_shim(&base)
                    .map(|shim| (dir.clone(), shim))
                    .map_err(|e| {
                        format!(
                            "cannot install the sudo shim in {}: {e}",
                            shim_dir(&base).display()
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
                let c = config;
                // The one place we read our own environment: the bot inherits it, and its
                // PATH only gains the shim directory in front.
                let path = bot_path(&shim, std::env::var_os("PATH"));
                let mut env: Vec<(&'static str, OsString)> = which
                    .phone_env
                    .iter()
                    .map(|(k, v)| (*k, OsString::from(v)))
                    .collect();
                env.extend([
                    ("SWARMING_BOT_ID", OsString::from(&which.id)),
                    ("SWARMING_EXTERNAL_BOT_SETUP", "1".into()),
                    (
                        "TEST_MACHINE_MONITOR_HOOK_ADDR",
                        c.hook_addr.to_string().into(),
                    ),
                    // stdout through a pipe is block-buffered by Python: lines must reach
                    // the log when they are written.
                    ("PYTHONUNBUFFERED", "1".into()),
                    ("PATH", path),
                ]);
                return Some(Launch {
                    python: c.python.clone(),
                    dir,
                    env,
                });
            }
            Err(e) => {
                if retry
                    .failed(module_path!(), log::Level::Error, e, shutdown)
                    .await
                {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(600);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn silence_counts_from_the_start_until_the_first_call() {
        let t0 = Instant::now();
        let none = Calls::default();
        assert_eq!(silence(none, t0, at(t0, 599), LIMIT), None);
        assert_eq!(
            silence(none, t0, at(t0, 600), LIMIT),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn silence_counts_from_the_last_call() {
        let t0 = Instant::now();
        let calls = Calls {
            last: Some(at(t0, 500)),
            task_since: None,
        };
        assert_eq!(silence(calls, t0, at(t0, 1099), LIMIT), None);
        assert_eq!(
            silence(calls, t0, at(t0, 1130), LIMIT),
            Some(Duration::from_secs(630))
        );
    }

    #[test]
    fn a_bot_in_a_task_is_never_silent() {
        let t0 = Instant::now();
        let calls = Calls {
            last: Some(at(t0, 10)),
            task_since: Some(at(t0, 10)),
        };
        assert_eq!(silence(calls, t0, at(t0, 100_000), LIMIT), None);
    }

    #[test]
    fn calls_and_tasks_of_an_earlier_run_do_not_count() {
        let t0 = Instant::now();
        let earlier = Calls {
            last: Some(t0),
            task_since: Some(t0),
        };
        let restarted = at(t0, 1000);
        assert_eq!(silence(earlier, restarted, at(t0, 1599), LIMIT), None);
        assert_eq!(
            silence(earlier, restarted, at(t0, 1600), LIMIT),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn a_task_runs_from_on_before_task_of_this_run_until_on_after_task() {
        let t0 = Instant::now();
        let idle = Calls {
            last: Some(at(t0, 5)),
            task_since: None,
        };
        assert_eq!(task_running(idle, t0, at(t0, 10)), None);
        let busy = Calls {
            last: Some(at(t0, 5)),
            task_since: Some(at(t0, 5)),
        };
        assert_eq!(
            task_running(busy, t0, at(t0, 65)),
            Some(Duration::from_secs(60))
        );
        // A task of an earlier run of the bot (it died in it) is not this run's.
        assert_eq!(task_running(busy, at(t0, 6), at(t0, 65)), None);
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
