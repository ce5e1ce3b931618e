//! The supervised loop of the bot and the daemons: start the child (see `child`), forward
//! its output, wait for it to exit, restart it after a jittered [`Backoff`] that starts
//! over after a good run, notice crash loops, stop a child that its owner finds silent
//! (then restart it as after an exit), and stop it on shutdown: drained first when its
//! owner says it is in the middle of work (a bot running a task), see `child::stop`.
//!
//! What is particular to one child (what runs before each start, what its lines mean,
//! what its exits update, its log lines) are the [`Hooks`] of its owner. The restart
//! rules ([`RestartPolicy`]) are pure and tested without processes.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::runtime::backoff::Backoff;
use crate::runtime::child::{self, Child, Cut, Kill, Output, Sink, Step};
use crate::runtime::reaper::{Exit, Reaper};
use crate::runtime::retry::sleep_or_shutdown;
use crate::runtime::shutdown::Shutdown;

/// This many deaths within [`CRASH_WINDOW`] is a crash loop.
pub const CRASH_DEATHS: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long to wait after an exit for the output to reach end of file (the bot's shim
/// writes its line before it kills the bot); an orphan holding the pipes open must not
/// stall the restart.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Counts deaths and says when a child is crash-looping. Pure.
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

    /// The child has stayed up for a whole window: the loop is over.
    pub fn recovered(&mut self) {
        self.active = false;
        self.deaths.clear();
    }
}

/// What to do after an exit. Pure apart from the jitter source inside [`Backoff`].
pub struct RestartPolicy {
    backoff: Backoff,
    /// A run this long was good: the backoff starts over.
    good_run: Duration,
    pub crash: CrashLoop,
}

/// The policy's answer to one exit.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub delay: Duration,
    pub crashloop_started: bool,
}

impl RestartPolicy {
    pub fn new(backoff: Backoff, good_run: Duration) -> RestartPolicy {
        RestartPolicy {
            backoff,
            good_run,
            crash: CrashLoop::default(),
        }
    }

    pub fn on_exit(&mut self, ran_for: Duration, now: Instant) -> Decision {
        if ran_for >= self.good_run {
            self.backoff.reset();
        }
        Decision {
            crashloop_started: self.crash.death(now),
            delay: self.backoff.next_delay(),
        }
    }
}

/// What one supervised child's owner adds to the loop. Logging is the owner's: each
/// method that says "logs" writes that child's own line.
pub trait Hooks {
    /// The target of the loop's own log lines (the owner's `module_path!()`).
    fn target(&self) -> &'static str;
    /// For log lines: `the bot`, `the adb server`.
    fn name(&self) -> &str;
    /// How long the child has between SIGTERM and SIGKILL.
    fn grace(&self) -> Duration;
    /// Runs before every start; false ends the loop (shutdown came).
    fn before_start(&mut self, shutdown: &mut Shutdown) -> impl Future<Output = bool> + Send;
    fn command(&self) -> Command;
    /// Logs why the child could not start; the exit to report for it, if any.
    fn spawn_failed(&mut self, error: &io::Error) -> Option<Exit>;
    /// Logs the start; the sink for this run's output lines.
    fn started(&mut self, pid: i32) -> Sink;
    /// After an exit (`None`: its status was lost) and its output, before the delay.
    fn exited(&mut self, exit: Option<Exit>, ran_for: Duration, decision: &Decision);
    /// The child ran a whole [`CRASH_WINDOW`] while crash-looping.
    fn recovered(&mut self) {}
    /// How often [`Hooks::silent`] is asked while the child runs; `None`: never.
    fn silence_check_every(&self) -> Option<Duration> {
        None
    }
    /// Whether the child `pid`, started at `started`, has gone silent at `now`; if so
    /// it logs and counts that, and the loop stops the child (`child::stop`: SIGTERM,
    /// grace, SIGKILL of its group and every descendant) and restarts it as after an
    /// exit.
    fn silent(&mut self, _pid: i32, _started: Instant, _now: Instant) -> bool {
        false
    }
    /// Shutdown came while the child started at `started` runs: how long it may take
    /// after SIGTERM to finish its work and exit, before the grace; `None` (the
    /// default): it has no work to finish (a daemon, an idle bot).
    fn drain_limit(&mut self, _started: Instant) -> Option<Duration> {
        None
    }
    /// Shutdown: logs that the child is being stopped, drained for `drain` if given.
    fn stopping(&mut self, pid: i32, drain: Option<Duration>);
    /// The drain ended without the child's exit; the grace follows (logs it).
    fn drain_cut(&mut self, _pid: i32, _why: Cut) {}
    /// The grace was cut short; SIGKILL follows.
    fn killing(&mut self, pid: i32, why: Kill);
    /// Resolves when the child's owner wants it killed and started again, with why
    /// (a daemon that no longer answers on its socket). Never, by default.
    fn kill_requested(&mut self) -> impl Future<Output = String> + Send {
        std::future::pending()
    }
    /// Logs the kill that [`Hooks::kill_requested`] asked for (the child's pid, why).
    fn killing_on_request(&mut self, _pid: i32, _why: &str) {}
    /// The child is gone (`None`: it outlived SIGKILL); the loop ends.
    fn stopped(&mut self, pid: i32, exit: Option<Exit>);
}

/// Runs, restarts and finally stops `hooks`' child until shutdown.
pub async fn run<H: Hooks>(
    hooks: &mut H,
    reaper: &Reaper,
    policy: &mut RestartPolicy,
    shutdown: &mut Shutdown,
) {
    loop {
        if !hooks.before_start(shutdown).await {
            return;
        }
        let (exit, ran_for) = match child::spawn(reaper, &mut hooks.command()) {
            Err(e) => (hooks.spawn_failed(&e), Duration::ZERO),
            Ok(mut child) => {
                let started = Instant::now();
                let sink = hooks.started(child.pid);
                let output = Output::start(&mut child, hooks.target(), hooks.name(), sink);
                let Some(exit) = watch(hooks, &mut child, started, policy, shutdown).await else {
                    let pid = child.pid;
                    let drain = hooks.drain_limit(started);
                    hooks.stopping(pid, drain);
                    let grace = hooks.grace();
                    let exit =
                        child::stop(
                            pid,
                            &mut child.exit,
                            drain,
                            grace,
                            shutdown,
                            |step| match step {
                                Step::Cut(why) => hooks.drain_cut(pid, why),
                                Step::Kill(why) => hooks.killing(pid, why),
                            },
                        )
                        .await;
                    hooks.stopped(pid, exit);
                    return;
                };
                let ran_for = started.elapsed();
                output.drained(OUTPUT_DRAIN).await;
                log::debug!(target: hooks.target(), "{} (pid {}) ended", hooks.name(), child.pid);
                (exit, ran_for)
            }
        };
        let decision = policy.on_exit(ran_for, Instant::now());
        hooks.exited(exit, ran_for, &decision);
        if sleep_or_shutdown(decision.delay, shutdown).await {
            return;
        }
    }
}

/// Waits for the child to exit (`Some`; inside, `None` when its status was lost), and
/// ends a crash loop it outlives; `None` when shutdown came first.
async fn watch<H: Hooks>(
    hooks: &mut H,
    child: &mut Child,
    started: Instant,
    policy: &mut RestartPolicy,
    shutdown: &mut Shutdown,
) -> Option<Option<Exit>> {
    let check_every = hooks.silence_check_every();
    loop {
        let recover_in = CRASH_WINDOW.saturating_sub(started.elapsed());
        let crashlooping = policy.crash.active;
        tokio::select! {
            exit = &mut child.exit => return Some(exit.ok()),
            why = hooks.kill_requested() => {
                // SIGKILL: a stopped process keeps a SIGTERM pending for ever. Its exit
                // comes through `child.exit`, and the restart follows as after a crash.
                hooks.killing_on_request(child.pid, &why);
                child::signal_group(child.pid, libc::SIGKILL);
            }
            _ = tokio::time::sleep(recover_in), if crashlooping => {
                policy.crash.recovered();
                hooks.recovered();
            }
            _ = tokio::time::sleep(check_every.unwrap_or_default()), if check_every.is_some() => {
                let pid = child.pid;
                if hooks.silent(pid, started, Instant::now()) {
                    let grace = hooks.grace();
                    let exit = child::stop(pid, &mut child.exit, None, grace, shutdown, |step| {
                        if let Step::Kill(why) = step {
                            hooks.killing(pid, why)
                        }
                    })
                    .await;
                    return Some(exit);
                }
            }
            _ = shutdown.requested() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_RUN: Duration = Duration::from_secs(600);

    fn policy() -> RestartPolicy {
        RestartPolicy::new(
            Backoff::new(Duration::from_secs(1), Duration::from_secs(300), 99),
            GOOD_RUN,
        )
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
    fn a_good_run_resets_the_backoff() {
        let mut p = policy();
        let t = Instant::now();
        for _ in 0..6 {
            p.on_exit(Duration::from_secs(1), t);
        }
        let d = p.on_exit(GOOD_RUN, t);
        assert!(d.delay <= Duration::from_secs(1));
    }

    #[test]
    fn a_run_just_short_of_good_keeps_backing_off() {
        let mut p = policy();
        let t = Instant::now();
        for _ in 0..3 {
            p.on_exit(Duration::from_secs(1), t + GOOD_RUN * 2);
        }
        let d = p.on_exit(GOOD_RUN - Duration::from_millis(1), t + GOOD_RUN * 4);
        assert!(d.delay >= Duration::from_secs(4), "{d:?}");
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
    fn the_policy_reports_the_death_that_starts_a_crash_loop() {
        let mut p = policy();
        let t = Instant::now();
        let started: Vec<bool> = (0..6)
            .map(|i| {
                p.on_exit(Duration::from_secs(1), t + Duration::from_secs(i))
                    .crashloop_started
            })
            .collect();
        assert_eq!(started, [false, false, false, false, true, false]);
        assert!(p.crash.active);
    }
}
