//! The record of one bot that its supervisor keeps: plain data, so that the readers
//! (the state hook, the status page, the bot gauges) depend on it and not on the
//! supervisor.

use crate::runtime::reaper::Exit;

/// What the supervisor knows of the bot, for the state hook, the status page and the bot
/// gauges, which are all derived from it. The supervisor is its one writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BotStatus {
    pub running: bool,
    /// Unix seconds when the running bot process started.
    pub started_at_unix: Option<f64>,
    /// The same moment on the monotonic clock of the hooks' [`super::Calls`], to tell
    /// this run's task from one of a run that died in it.
    pub started: Option<std::time::Instant>,
    pub restarts: u64,
    /// How the last bot process ended.
    pub last_exit: Option<Exit>,
    pub crashlooping: bool,
    /// Times the bot was killed for calling no hook past `--bot-silence-limit`.
    pub silence_kills: u64,
    /// Set while the bot drains for shutdown: it was told to stop while running a task,
    /// and is given `--drain-limit` to finish it.
    pub drain: Option<Drain>,
}

/// A bot's drain for shutdown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drain {
    /// Unix seconds when the drain began.
    pub since_unix: f64,
    /// Unix seconds when the task it finishes began (its `on_before_task`).
    pub task_started_unix: f64,
}
