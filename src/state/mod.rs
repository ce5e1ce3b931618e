//! State shared by the runtime and the server threads, as one handle per piece, each
//! with one writer: the snapshot cell (the device watcher), the bot status (the
//! supervisor), the forced quarantine, the device commands and each bot's hook calls
//! (the hooks), the liveness
//! (the round clock's tick; the hooks' server start), the shutdown drain (`app`, at the
//! first termination signal), and the operator events (appended by the watcher and the
//! supervisor). A component is handed the handles it uses and
//! nothing else, so who writes what shows in its signature. [`Shared`] is the bundle
//! `app` builds, and what the status server, which reads everything, is given.
//!
//! Readers (the hook and metrics servers, on their own threads) take short locks that
//! are never held across I/O or an `.await`; writers swap whole values in. That is why
//! these are `std::sync` locks and not tokio ones.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;

pub mod bot_status;
pub mod device_view;
pub mod metrics;
pub mod notes;
pub mod snapshot;
pub mod token;

use crate::config::BotsMode;
pub use bot_status::BotStatus;
use metrics::Metrics;
use notes::Notes;
use snapshot::Snapshot;
use token::TokenCache;

/// Work the hook server asks of the device watcher. Sent, never awaited: hooks answer
/// at once and the watcher does the work on its own deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// A task started: hold off reboots until it ends.
    TaskStarted,
    /// A task ended: reboot the phones (unless disabled), wait for them, interrogate.
    TaskEnded,
    /// A task started on the bot of this phone alone (`--bots per-device`).
    PhoneTaskStarted(String),
    /// That task ended: reboot this phone alone (unless disabled).
    PhoneTaskEnded(String),
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

/// The latest [`Snapshot`] of the phones. Written by the device watcher only (or, when no
/// phone is watched, by `app`: once, then at each change of the operators' notes).
#[derive(Default)]
pub struct SnapshotCell {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Set once the first device round has been published.
    first_round_done: AtomicBool,
}

impl SnapshotCell {
    pub fn get(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a new snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
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
}

/// Why an operator event is also a Kubernetes Event on the node: its `reason`, a
/// CamelCase word a machine can match (`kubectl get events --field-selector reason=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventReason {
    /// A phone's verdict became usable.
    PhoneUsable,
    /// A phone's verdict became maintenance (a note, heat, a low battery...).
    PhoneMaintenance,
    /// A phone's verdict became quarantined.
    PhoneQuarantined,
    /// A phone climbed one step of the recovery ladder.
    RecoveryStep,
    /// A bot started crash-looping.
    BotCrashLoop,
    /// The monitor was asked to stop and drains its bots (the drain of #29 reports
    /// through this reason).
    Draining,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::PhoneUsable => "PhoneUsable",
            EventReason::PhoneMaintenance => "PhoneMaintenance",
            EventReason::PhoneQuarantined => "PhoneQuarantined",
            EventReason::RecoveryStep => "RecoveryStep",
            EventReason::BotCrashLoop => "BotCrashLoop",
            EventReason::Draining => "Draining",
        }
    }

    /// `Warning` for what a person may have to act on, else `Normal`.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::PhoneQuarantined | EventReason::BotCrashLoop
        )
    }
}

/// One operator event bound for the node's Kubernetes Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    pub reason: EventReason,
    /// The one-line log message.
    pub message: String,
}

/// How many node events may wait for the Kubernetes API before new ones are dropped
/// (and counted): the poster drains the queue on a thread of its own, so a slow or
/// absent API server never holds up a round or a hook.
pub const NODE_EVENTS_QUEUED: usize = 64;

/// The last [`EVENTS_KEPT`] operator events, oldest first, for the status page; and,
/// once the Kubernetes client runs, the queue of the ones that become node Events.
#[derive(Default)]
pub struct Events {
    kept: Mutex<VecDeque<Event>>,
    node: std::sync::OnceLock<std::sync::mpsc::SyncSender<NodeEvent>>,
    /// Node events dropped because the queue was full.
    node_dropped: AtomicU64,
    /// Node events queued and not yet handled by the poster.
    node_pending: AtomicU64,
}

impl Events {
    /// Starts queueing node events; the Kubernetes client's poster drains the receiver.
    /// Called once; until then (and without Kubernetes) [`Events::report`] only keeps.
    pub fn queue_for_node(&self) -> Option<std::sync::mpsc::Receiver<NodeEvent>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(NODE_EVENTS_QUEUED);
        self.node.set(tx).ok().map(|()| rx)
    }

    /// Keeps an operator event that is also a node Event (the caller logs it too).
    /// Never blocks: a full queue drops the event and counts it.
    pub fn report(&self, reason: EventReason, text: impl Into<String>) {
        let text = text.into();
        self.record(text.clone());
        if let Some(tx) = self.node.get() {
            let event = NodeEvent {
                reason,
                message: text,
            };
            match tx.try_send(event) {
                Ok(()) => {
                    self.node_pending.fetch_add(1, Ordering::AcqRel);
                }
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    self.node_dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The poster is gone (it never is while the process runs).
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// The poster has handled one node event (posted, dropped or failed).
    pub fn node_handled(&self) {
        self.node_pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Node events queued and not yet handled: `app` waits, within a bound, for the
    /// last ones (the drain) before it exits.
    pub fn node_pending(&self) -> u64 {
        self.node_pending.load(Ordering::Acquire)
    }

    /// Node events dropped because the queue was full.
    pub fn node_dropped(&self) -> u64 {
        self.node_dropped.load(Ordering::Relaxed)
    }

    /// Keeps an operator event (the caller logs it too).
    pub fn record(&self, text: impl Into<String>) {
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut events = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            at_unix,
            text: text.into(),
        });
    }

    /// The kept events, oldest first.
    pub fn list(&self) -> Vec<Event> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What the supervisor knows of the bot; written by the supervisor only. The bot gauges,
/// the state hook's bot facts and the status page all derive from it.
#[derive(Default)]
pub struct BotStatusCell(Mutex<BotStatus>);

impl BotStatusCell {
    pub fn get(&self) -> BotStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut BotStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// When one bot last called a hook, and since when it runs a task; the hooks write it,
/// the bot's supervisor reads it to notice a bot that hangs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    pub last: Option<Instant>,
    /// Set by `on_before_task`, cleared by `on_after_task`: a bot calls no hook while
    /// it runs a task.
    pub task_since: Option<Instant>,
}

impl Calls {
    /// When the task this bot runs began, if it runs one begun (`on_before_task`) in
    /// its run that started at `started` and not ended: a bot that died in a task never
    /// called `on_after_task` for it.
    pub fn task_of_run(&self, started: Instant) -> Option<Instant> {
        self.task_since.filter(|t| *t >= started)
    }
}

/// One bot's [`Calls`]; written by the hooks only. The clock is read here, as the call
/// arrives.
#[derive(Default)]
pub struct HookCalls(Mutex<Calls>);

impl HookCalls {
    pub fn get(&self) -> Calls {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Any hook call of this bot.
    pub fn called(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).last = Some(Instant::now());
    }

    pub fn task_started(&self) {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.task_since = Some(Instant::now());
    }

    pub fn task_ended(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).task_since = None;
    }
}

/// The forced quarantine the last `get_state` answer carried, if any: the bot stays
/// quarantined on the server until its next `get_state`, so `/metrics` and
/// `/status.json` show it until then. Written by the state hook only. Held as the
/// request file that was found; `verdict::with_forced` says it as a reason.
#[derive(Default)]
pub struct ForcedQuarantine(Mutex<Option<PathBuf>>, Mutex<ForcedForBots>);

/// With `--bots per-device` the file quarantines every bot of the Pi once: the file,
/// and the bots that have not reported it yet.
#[derive(Default)]
struct ForcedForBots {
    file: Option<PathBuf>,
    pending: std::collections::BTreeSet<String>,
}

impl ForcedQuarantine {
    /// `--bots per-device`: the forced quarantine bot `id` reports now. A file just
    /// consumed (`fresh`) is owed to every bot `bots` gives; each reports it once.
    /// `bots` is only called then, so the usual poll, with no file, copies no ids.
    pub fn for_bot<I: IntoIterator<Item = String>>(
        &self,
        fresh: Option<PathBuf>,
        bots: impl FnOnce() -> I,
        id: &str,
    ) -> Option<PathBuf> {
        let mut f = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = fresh {
            f.file = Some(file);
            f.pending = bots().into_iter().collect();
            f.pending.insert(id.to_string());
        }
        if f.pending.remove(id) {
            f.file.clone()
        } else {
            None
        }
    }

    pub fn set(&self, file: Option<PathBuf>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = file;
    }

    /// The forced quarantine the latest `get_state` reported, if any (`verdict` merges
    /// it into the bot's reasons).
    pub fn get(&self) -> Option<PathBuf> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The operators' maintenance notes as the node's annotations last gave them; written
/// by the Kubernetes client only, read by the device watcher, which decides again at
/// once when they change.
pub struct NodeNotes(tokio::sync::watch::Sender<Notes>);

impl Default for NodeNotes {
    fn default() -> Self {
        NodeNotes(tokio::sync::watch::Sender::new(Notes::default()))
    }
}

impl NodeNotes {
    /// Swaps in the notes; the watcher is woken only when they differ.
    pub fn set(&self, notes: Notes) {
        self.0.send_if_modified(|old| {
            let changed = *old != notes;
            *old = notes;
            changed
        });
    }

    pub fn get(&self) -> Notes {
        self.0.borrow().clone()
    }

    /// A receiver woken on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Notes> {
        self.0.subscribe()
    }
}

/// What the Kubernetes client shows on the status page; written by it only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeView {
    /// `off: <why>`, or what it watches.
    pub state: String,
    /// The node's `metadata.uid`, once read (the node events carry it).
    pub node_uid: Option<String>,
    /// Since when (Unix seconds) the node could not be read or watched.
    pub unreachable_since_unix: Option<f64>,
    /// The last failure, while it lasts.
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct KubeStatus(Mutex<KubeView>);

impl KubeStatus {
    pub fn get(&self) -> KubeView {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut KubeView)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Proof of life for `/healthz` and the hook server's readiness for `/readyz`. The round
/// clock's tick writes the one, `app` the other.
pub struct Liveness {
    started: Instant,
    /// Milliseconds since `started` of the main loop's last tick.
    last_tick_ms: AtomicU64,
    hooks_serving: AtomicBool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            hooks_serving: AtomicBool::new(false),
        }
    }
}

impl Liveness {
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

    /// How long the program has run.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn set_hooks_serving(&self) {
        self.hooks_serving.store(true, Ordering::Release);
    }

    pub fn hooks_serving(&self) -> bool {
        self.hooks_serving.load(Ordering::Acquire)
    }
}

/// Whether the program is draining for shutdown: set by `app` at the first termination
/// signal, never cleared. The hooks then report every bot in maintenance (a bot that
/// still polls takes no task), `/readyz` answers 503.
#[derive(Default)]
pub struct Draining(AtomicBool);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Hands work to the device watcher; the hooks are its only sender.
#[derive(Clone)]
pub struct DeviceCommands(mpsc::UnboundedSender<DeviceCommand>);

impl DeviceCommands {
    /// A channel of device commands: the hooks' end and the watcher's.
    pub fn channel() -> (DeviceCommands, mpsc::UnboundedReceiver<DeviceCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (DeviceCommands(tx), rx)
    }

    /// A closed channel (shutting down) is ignored.
    pub fn send(&self, cmd: DeviceCommand) {
        if self.0.send(cmd.clone()).is_err() {
            log::debug!("device watcher gone; dropped {cmd:?}");
        }
    }
}

/// One bot of `--bots per-device`, as the hooks and the status views see it.
#[derive(Clone)]
pub struct PerDeviceBot {
    pub serial: String,
    pub status: Arc<BotStatusCell>,
    pub calls: Arc<HookCalls>,
}

/// The bots of `--bots per-device` by id, and the phones refused a bot with the reason;
/// written by the fleet manager (`bot::bots`) only. The hooks find a calling bot's
/// phone through it.
#[derive(Default)]
pub struct PerDeviceBots(RwLock<(BTreeMap<String, PerDeviceBot>, BTreeMap<String, String>)>);

impl PerDeviceBots {
    pub fn set(&self, bots: BTreeMap<String, PerDeviceBot>, refused: BTreeMap<String, String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (bots, refused);
    }

    /// The bot with this id.
    pub fn bot(&self, id: &str) -> Option<PerDeviceBot> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(id)
            .cloned()
    }

    /// Every bot, by id.
    pub fn bots(&self) -> BTreeMap<String, PerDeviceBot> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The phones without a bot, with the reason, by serial.
    pub fn refused(&self) -> BTreeMap<String, String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

/// Every handle, as `app` builds them.
pub struct Shared {
    /// `--bots`: whose statuses `bots()` reads, the Pi's one bot's or the fleet's.
    pub bots_mode: BotsMode,
    pub metrics: Arc<Metrics>,
    pub token: Arc<TokenCache>,
    pub snapshot: Arc<SnapshotCell>,
    pub events: Arc<Events>,
    pub bot: Arc<BotStatusCell>,
    /// The hook calls of the Pi's one bot (`--bots one`).
    pub calls: Arc<HookCalls>,
    pub forced: Arc<ForcedQuarantine>,
    pub liveness: Arc<Liveness>,
    pub commands: DeviceCommands,
    pub per_device_bots: Arc<PerDeviceBots>,
    pub notes: Arc<NodeNotes>,
    pub kube: Arc<KubeStatus>,
    pub draining: Arc<Draining>,
}

impl Shared {
    /// Every bot's status and hook calls: the Pi's one bot, or each bot of
    /// `--bots per-device`.
    fn bots(&self) -> Vec<(BotStatus, Calls)> {
        match self.bots_mode {
            BotsMode::One => vec![(self.bot.get(), self.calls.get())],
            BotsMode::PerDevice => self
                .per_device_bots
                .bots()
                .values()
                .map(|b| (b.status.get(), b.calls.get()))
                .collect(),
        }
    }

    /// How many running bots run a task (between `on_before_task` and `on_after_task`).
    pub fn tasks_running(&self) -> usize {
        self.bots()
            .iter()
            .filter(|(s, c)| s.started.is_some_and(|at| c.task_of_run(at).is_some()))
            .count()
    }

    /// How many bots drain for shutdown, each finishing its task.
    pub fn tasks_draining(&self) -> usize {
        self.bots()
            .iter()
            .filter(|(s, _)| s.running && s.drain.is_some())
            .count()
    }

    /// Builds the handles and the receiving end of the device-command channel.
    pub fn new(bots_mode: BotsMode) -> (Arc<Shared>, mpsc::UnboundedReceiver<DeviceCommand>) {
        let (commands, rx) = DeviceCommands::channel();
        let shared = Shared {
            bots_mode,
            metrics: Arc::default(),
            token: Arc::default(),
            snapshot: Arc::default(),
            events: Arc::default(),
            bot: Arc::default(),
            calls: Arc::default(),
            forced: Arc::default(),
            liveness: Arc::default(),
            commands,
            per_device_bots: Arc::default(),
            notes: Arc::default(),
            kube: Arc::default(),
            draining: Arc::default(),
        };
        (Arc::new(shared), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_quarantine_reaches_every_bot_once() {
        let f = ForcedQuarantine::default();
        let bots = || ["a".to_string(), "b".to_string(), "c".to_string()];
        // With no fresh file the fleet's ids are not needed, so not asked for.
        let unused = || -> Vec<String> { panic!("the bot ids were asked for") };
        let reason = Some(PathBuf::from("/b/pi.force_quarantine"));
        assert_eq!(f.for_bot(reason.clone(), bots, "a"), reason);
        assert_eq!(f.for_bot(None, unused, "a"), None);
        assert_eq!(f.for_bot(None, unused, "b"), reason);
        assert_eq!(f.for_bot(None, unused, "c"), reason);
        assert_eq!(f.for_bot(None, unused, "b"), None);
        assert_eq!(f.for_bot(None, unused, "c"), None);
    }

    #[test]
    fn a_task_counts_only_in_the_run_of_the_bot_that_began_it() {
        let (shared, _commands) = Shared::new(crate::config::BotsMode::One);
        assert_eq!(shared.tasks_running(), 0);
        shared.calls.task_started();
        // No bot runs: nothing runs its task.
        assert_eq!(shared.tasks_running(), 0);
        // A bot started after the task began: a run that died in its task began it.
        shared.bot.update(|s| s.started = Some(Instant::now()));
        assert_eq!(shared.tasks_running(), 0);
        shared.calls.task_started();
        assert_eq!(shared.tasks_running(), 1);
        shared.calls.task_ended();
        assert_eq!(shared.tasks_running(), 0);
    }
}
