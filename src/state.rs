//! State shared by the runtime and the server threads.
//!
//! Readers (the hook and metrics servers, on their own threads) take short locks that
//! are never held across I/O or an `.await`; writers swap whole values in. That is why
//! these are `std::sync` locks and not tokio ones.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::bot::token::TokenCache;
use crate::config::Config;
use crate::devices::snapshot::{Reasons, Snapshot};
use crate::devices::verdict;
use crate::runtime::reaper::Exit;
use crate::serve::metrics::Metrics;

/// Work the hook server asks of the device watcher. Sent, never awaited: hooks answer
/// at once and the watcher does the work on its own deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// A task started: hold off reboots until it ends.
    TaskStarted,
    /// A task ended: reboot the phones (unless disabled), wait for them, interrogate.
    TaskEnded,
}

/// What the supervisor knows of the bot, for the state hook, the status page and the bot
/// gauges, which are all derived from it. The supervisor is its one writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BotStatus {
    pub running: bool,
    /// Unix seconds when the running bot process started.
    pub started_at_unix: Option<f64>,
    pub restarts: u64,
    /// How the last bot process ended.
    pub last_exit: Option<Exit>,
    pub crashlooping: bool,
}

/// One operator event (a reason set or cleared, a phone appeared or gone, the bot
/// started or exited), for the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_unix: f64,
    pub text: String,
}

/// How many events the status page shows.
pub const EVENTS_KEPT: usize = 50;

pub struct Shared {
    pub config: Config,
    pub started: Instant,
    pub metrics: Metrics,
    pub token: TokenCache,
    snapshot: RwLock<Arc<Snapshot>>,
    bot: Mutex<BotStatus>,
    /// Milliseconds since `started` of the main loop's last tick (for the watchdog).
    last_tick_ms: AtomicU64,
    /// Set once the first device round has been published.
    first_round_done: AtomicBool,
    /// Set once the hook server is accepting requests.
    hooks_serving: AtomicBool,
    device_commands: mpsc::UnboundedSender<DeviceCommand>,
    /// The forced quarantine the last `get_state` answer carried, if any: the bot stays
    /// quarantined on the server until its next `get_state`, so `/metrics` and
    /// `/status.json` show it until then.
    forced_quarantine: Mutex<Option<String>>,
    /// The last [`EVENTS_KEPT`] events, oldest first.
    events: Mutex<VecDeque<Event>>,
}

impl Shared {
    /// Builds the shared state and the receiving end of the device-command channel.
    pub fn new(config: Config) -> (Arc<Shared>, mpsc::UnboundedReceiver<DeviceCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            config,
            started: Instant::now(),
            metrics: Metrics::default(),
            token: TokenCache::default(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            bot: Mutex::new(BotStatus::default()),
            last_tick_ms: AtomicU64::new(0),
            first_round_done: AtomicBool::new(false),
            hooks_serving: AtomicBool::new(false),
            device_commands: tx,
            forced_quarantine: Mutex::new(None),
            events: Mutex::new(VecDeque::with_capacity(EVENTS_KEPT)),
        };
        (Arc::new(shared), rx)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new snapshot.
    pub fn publish_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }

    /// Marks the first complete device round as published (for `/readyz`). A snapshot
    /// of a mere device list, before any phone was interrogated, does not count.
    pub fn mark_first_round_done(&self) {
        self.first_round_done.store(true, Ordering::Release);
    }

    pub fn first_round_done(&self) -> bool {
        self.first_round_done.load(Ordering::Acquire)
    }

    /// Keeps an operator event for the status page (the caller logs it too).
    pub fn record_event(&self, text: impl Into<String>) {
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            at_unix,
            text: text.into(),
        });
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Records what the latest `get_state` answered of the forced quarantine.
    pub fn set_forced_quarantine(&self, reason: Option<String>) {
        *self
            .forced_quarantine
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// The bot's reasons as the latest `get_state` reported them: the snapshot's, with
    /// the forced quarantine in force (see `verdict::with_forced`).
    pub fn bot_reasons(&self, snapshot: &Snapshot) -> Reasons {
        let forced = self
            .forced_quarantine
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        verdict::with_forced(&snapshot.reasons, forced.as_deref())
    }

    pub fn bot_status(&self) -> BotStatus {
        self.bot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update_bot_status(&self, f: impl FnOnce(&mut BotStatus)) {
        f(&mut self.bot.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn tick(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the main loop last ticked.
    pub fn since_last_tick(&self) -> std::time::Duration {
        let now = self.started.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(
            now.saturating_sub(self.last_tick_ms.load(Ordering::Relaxed)),
        )
    }

    pub fn set_hooks_serving(&self) {
        self.hooks_serving.store(true, Ordering::Release);
    }

    pub fn hooks_serving(&self) -> bool {
        self.hooks_serving.load(Ordering::Acquire)
    }

    /// Hands work to the device watcher; a closed channel (shutting down) is ignored.
    pub fn send_device_command(&self, cmd: DeviceCommand) {
        if self.device_commands.send(cmd.clone()).is_err() {
            log::debug!("device watcher gone; dropped {cmd:?}");
        }
    }
}
