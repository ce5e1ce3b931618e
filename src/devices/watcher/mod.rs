//! The device watcher: follows the adb server's device list (`--devices android`), reads
//! the iPhones each round (`--devices ios`), has the verdict decide both kinds at once and
//! publishes an immutable [`Snapshot`].
//!
//! One task owns all the watcher's state and reacts to one event at a time: a new device
//! list, the round clock's tick, a finished round, a finished reboot, or a
//! [`DeviceCommand`] from the hooks. Slow work never runs in that loop: rounds and
//! reboots are spawned tasks that report back as events, so a plug or an unplug reaches
//! the snapshot as soon as the server lists it, even while a round waits on a hung phone.
//! The tracker is not the whole truth: the adb server makes a phone `unauthorized`
//! without telling it, so a tick while any phone is listed other than `device` asks for
//! the list once before its round. Inside a round every phone runs in parallel (tasks on the current-thread runtime, not
//! threads), each under the round budget (`budget`); the iPhones' round runs beside them.
//! Without Android, no adb server is started or contacted.
//!
//! The loop talks to the phones through [`AndroidPhones`] and [`IosPhones`] and waits on
//! a [`Clock`]: `run` plugs in the real ones (the adb server, libimobiledevice's tools,
//! the timerfd round clock); the tests plug in fakes and run under tokio's paused time.
//!
//! Must not: parse output (that is `parse`), decide a phone's fate (that is `verdict`),
//! compute dimensions (that is `dimensions`), or block the runtime.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::actions;
use super::android::{self, build_device, settled_state, Adb};
use super::budget::Budget;
use super::phones::IosTools;
use super::phones::{AndroidPhones, Clock, IosPhones, PhoneRound};
use super::round::{self, RoundDone};
use super::verdict::{self, Action, Host, Memory, Outside, Thresholds};
use super::Context;
use crate::devices::adb::client::ShellProtocol;
use crate::devices::dimensions;
use crate::devices::ios;
use crate::devices::parse::devices_l::Listed;
use crate::runtime::clock::Ticker;
use crate::runtime::reaper::Reaper;
use crate::runtime::shutdown::Shutdown;
use crate::state::notes::Notes;
use crate::state::snapshot::{self, Device, Dimensions, Link, Snapshot};
use crate::state::DeviceCommand;

mod adb_side;
mod node_events;
mod reboots;

use adb_side::Silence;

use node_events::phone_events;

/// Everything that wakes the watcher besides the tick and the hooks' commands.
enum Event {
    /// A full device list from the tracker.
    Listing(String),
    /// The device list asked for once at a tick (see [`Watcher::tick`]); a round follows.
    Polled(Result<String, String>),
    /// A round finished.
    RoundDone(RoundDone),
    /// A reboot after a task ended, well or not.
    RebootDone {
        serial: String,
        outcome: Result<(), String>,
    },
}

/// Runs until shutdown: with Android, starts the adb server and follows its device list;
/// interrogates the phones of every kind watched.
pub async fn run(
    ctx: Context,
    commands: mpsc::UnboundedReceiver<DeviceCommand>,
    reaper: Reaper,
    ticker: Ticker,
    shutdown: Shutdown,
) {
    let config = &ctx.settings;
    let (kill, kill_requests) = mpsc::unbounded_channel();
    let server = config.devices.android.then(|| {
        tokio::spawn(crate::devices::adb::server::run(
            config.adb.clone(),
            config.adb_server,
            ctx.metrics.clone(),
            kill_requests,
            reaper.clone(),
            shutdown.clone(),
        ))
    });
    let usbmuxd = config.devices.ios.then(|| {
        tokio::spawn(ios::usbmuxd::run(
            config.usbmuxd.clone(),
            reaper.clone(),
            shutdown.clone(),
        ))
    });
    let budget = Budget::of(config.interrogate_every);
    let android = Arc::new(Adb::connect(
        config.adb_server,
        budget.io,
        config.interrogate_every,
        ctx.metrics.clone(),
        kill,
    ));
    let iphones = Arc::new(IosTools {
        tools: config.ios.clone(),
        metrics: ctx.metrics.clone(),
        reaper,
    });
    watch(ctx, commands, android, iphones, ticker, shutdown).await;
    // The adb server and usbmuxd are ours to stop: wait until they have.
    for daemon in [server, usbmuxd].into_iter().flatten() {
        let _ = daemon.await;
    }
}

/// The event loop, over whatever phones and clock it is given.
async fn watch(
    ctx: Context,
    mut commands: mpsc::UnboundedReceiver<DeviceCommand>,
    android: Arc<dyn AndroidPhones>,
    iphones: Arc<dyn IosPhones>,
    mut clock: impl Clock,
    mut shutdown: Shutdown,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (lists_tx, mut lists) = mpsc::unbounded_channel();
    if ctx.settings.devices.android {
        tokio::spawn(android.track(lists_tx, shutdown.clone()));
    }
    let mut notes = ctx.notes.subscribe();
    let mut w = Watcher::new(ctx, android, iphones, events_tx);
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = clock.tick() => {
                // This timer doubles as the runtime's proof of life for `/healthz`.
                w.ctx.liveness.tick();
                w.tick();
            }
            Some(cmd) = commands.recv() => w.command(cmd),
            Some(text) = lists.recv() => w.event(Event::Listing(text)),
            Some(event) = events.recv() => w.event(event),
            // An operator's note decides again at once, without waiting for a round.
            Ok(()) = notes.changed() => {
                w.notes = notes.borrow_and_update().clone();
                w.publish(false);
            }
        }
    }
}

struct Watcher {
    ctx: Context,
    android: Arc<dyn AndroidPhones>,
    ios: Arc<dyn IosPhones>,
    budget: Budget,
    events: mpsc::UnboundedSender<Event>,
    thresholds: Thresholds,
    /// The server's latest list; `None` until the tracker's first frame. Without
    /// Android it is empty from the start.
    listing: Option<Vec<Listed>>,
    /// Each present phone's latest round.
    rounds: BTreeMap<String, PhoneRound>,
    /// Shell protocol per (serial, transport id): features only change when the
    /// transport does.
    protocols: BTreeMap<(String, Option<u64>), ShellProtocol>,
    /// The iPhones as of the last finished round.
    iphones: ios::Iphones,
    /// Health memory as of the last finished round.
    memory: Memory,
    /// Phones (serials and UDIDs) rebooted that have not come back yet.
    rebooting: BTreeSet<String>,
    /// What each of them was rebooted for (`after task`, `for its care: ...`).
    reboot_for: BTreeMap<String, String>,
    /// Since when each phone listed `offline` has been so.
    offline_since: BTreeMap<String, tokio::time::Instant>,
    round_running: bool,
    /// Something asked for a round while one was running: start another after it.
    round_wanted: bool,
    /// (serial, value) for the values a phone's rounds could not read that were logged
    /// already: one warning per phone until the value is read again.
    warned_missing: BTreeSet<(String, String)>,
    /// The verdict's clock: tokio's, so that tests run it under paused time.
    origin: tokio::time::Instant,
    /// Between a task's start and its end: no phone is rebooted for its own care then.
    task_running: bool,
    /// The phones whose own bot runs a task (`--bots per-device`).
    phone_tasks: BTreeSet<String>,
    /// Since when the adb server has not answered the rounds' probes.
    server_silent: Option<Silence>,
    /// The operators' maintenance notes, as last received.
    notes: Notes,
}

impl Watcher {
    fn new(
        ctx: Context,
        android: Arc<dyn AndroidPhones>,
        ios: Arc<dyn IosPhones>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let thresholds = ctx.settings.thresholds;
        let notes = ctx.notes.get();
        let listing = (!ctx.settings.devices.android).then(Vec::new);
        Watcher {
            budget: Budget::of(ctx.settings.interrogate_every),
            ctx,
            android,
            ios,
            events,
            thresholds,
            listing,
            rounds: BTreeMap::new(),
            protocols: BTreeMap::new(),
            iphones: ios::Iphones::default(),
            memory: Memory::default(),
            rebooting: BTreeSet::new(),
            reboot_for: BTreeMap::new(),
            offline_since: BTreeMap::new(),
            round_running: false,
            round_wanted: false,
            warned_missing: BTreeSet::new(),
            origin: tokio::time::Instant::now(),
            task_running: false,
            phone_tasks: BTreeSet::new(),
            server_silent: None,
            notes,
        }
    }

    fn command(&mut self, cmd: DeviceCommand) {
        match cmd {
            // Phones are only ever rebooted when a task ends, so a running task is
            // never interrupted; nothing to do until then.
            DeviceCommand::TaskStarted => {
                log::debug!("task started");
                self.task_running = true;
            }
            DeviceCommand::TaskEnded => {
                self.task_running = false;
                if self.ctx.settings.no_reboot_after_task {
                    self.want_round();
                } else {
                    self.reboot_usable(None);
                }
            }
            DeviceCommand::PhoneTaskStarted(serial) => {
                log::debug!("task started on {serial}'s bot");
                self.phone_tasks.insert(serial);
                self.publish(false);
            }
            DeviceCommand::PhoneTaskEnded(serial) => {
                self.phone_tasks.remove(&serial);
                if self.ctx.settings.no_reboot_after_task {
                    self.publish(false);
                    self.want_round();
                } else {
                    self.reboot_usable(Some(&serial));
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Listing(text) => self.listing(&text, false),
            Event::Polled(polled) => {
                match polled {
                    Ok(text) => self.listing(&text, true),
                    Err(e) => log::warn!("cannot ask the adb server for its device list: {e}"),
                }
                // A phone the list shows online has started a round already.
                if !self.round_running {
                    self.want_round();
                }
            }
            Event::RoundDone(RoundDone {
                results,
                ios,
                server,
                took,
            }) => {
                self.round_running = false;
                if let Some(answered) = server {
                    self.server_probed(answered, took);
                }
                self.ctx
                    .metrics
                    .interrogation_duration_seconds
                    .observe((), took);
                let transports: BTreeMap<String, Option<u64>> = self
                    .listing
                    .iter()
                    .flatten()
                    .map(|l| (l.serial.clone(), l.transport_id))
                    .collect();
                for (serial, round) in results {
                    let Some(transport) = transports.get(&serial) else {
                        continue;
                    };
                    if self.rebooting.contains(&serial) {
                        continue;
                    }
                    if let Some(p) = round.protocol {
                        self.protocols.insert((serial.clone(), *transport), p);
                    }
                    self.warn_missing_values(&serial, &round);
                    let mut round = round;
                    round.at_unix = Some(unix_now());
                    self.rounds.insert(serial, round);
                }
                if let Some(outcome) = ios {
                    self.iphones.round_done(outcome, &self.rebooting);
                }
                for action in self.publish(true) {
                    match action {
                        Action::Reboot { serial, why } => {
                            let snapshot = self.ctx.snapshot.get();
                            if let Some(d) = snapshot.devices.iter().find(|d| d.serial == serial) {
                                log::info!("rebooting {serial} while idle, {why}");
                                self.reboot(d, &why);
                                self.publish(false);
                            }
                        }
                        Action::Reconnect(serial) => actions::reconnect(&self.android, &serial),
                        Action::ReconnectOffline => actions::reconnect_offline(&self.android),
                        Action::RestartAdbServer => actions::restart_server(&self.android),
                        Action::UsbReset { serial, devpath } => actions::usb_reset(serial, devpath),
                        Action::PowerCycle { serial, devpath } => {
                            actions::power_cycle(serial, devpath, self.ctx.settings.power_off)
                        }
                    }
                }
                if std::mem::take(&mut self.round_wanted) {
                    self.want_round();
                }
            }
            Event::RebootDone { serial, outcome } => {
                match outcome {
                    Ok(()) => log::info!("{serial} is back after its reboot"),
                    Err(why) => log::warn!("{serial} did not come back from its reboot: {why}"),
                }
                // Its last round stays until the next one replaces it, so the
                // dimensions do not flap.
                self.rebooting.remove(&serial);
                self.reboot_for.remove(&serial);
                self.want_round();
            }
        }
    }

    /// Every tick starts a round. While a phone is listed in a state other than
    /// `device`, the round waits for the server's list asked once: the adb server
    /// (version 29, the one Debian ships) changes a phone's state to `unauthorized`
    /// without telling its trackers, so the tracker would show a phone whose key waits
    /// for a person as `offline` or `connecting` for ever, and its reconnects would
    /// kick it again and again.
    fn tick(&mut self) {
        let unsettled = self
            .listing
            .iter()
            .flatten()
            .any(|l| l.state != Link::Device);
        if !unsettled {
            self.want_round();
            return;
        }
        let (list, events) = (self.android.list_now(), self.events.clone());
        tokio::spawn(async move {
            let _ = events.send(Event::Polled(list.await));
        });
    }

    /// Logs, once per phone, each value its rounds could not read.
    fn warn_missing_values(&mut self, serial: &str, round: &PhoneRound) {
        let warned = &mut self.warned_missing;
        for line in android::missing_value_warnings(warned, serial, &round.missing_values) {
            log::warn!("{line}");
        }
    }

    /// Starts a round unless one runs (then one more follows it). Nothing happens
    /// before the first device list: a snapshot without the Android phones would be
    /// wrong about them.
    fn want_round(&mut self) {
        let Some(listing) = &self.listing else { return };
        if self.round_running {
            self.round_wanted = true;
            return;
        }
        let online: Vec<Listed> = listing
            .iter()
            .filter(|l| l.state == Link::Device && !self.rebooting.contains(&l.serial))
            .cloned()
            .collect();
        let serials: Vec<&str> = online.iter().map(|l| l.serial.as_str()).collect();
        self.android.start_round(&serials);
        self.round_running = true;
        let deadline = self.budget.phone;
        let script = self.budget.script;
        let metrics = self.ctx.metrics.clone();
        let events = self.events.clone();
        let iphones = self
            .ctx
            .settings
            .devices
            .ios
            .then(|| self.ios.interrogate());
        let probe = self
            .ctx
            .settings
            .devices
            .android
            .then(|| self.android.probe_server());
        let began = tokio::time::Instant::now();
        let phones: Vec<_> = online
            .into_iter()
            .map(|l| {
                let known = self
                    .protocols
                    .get(&(l.serial.clone(), l.transport_id))
                    .copied();
                let round = self.android.interrogate(&l.serial, known, began + script);
                (l.serial, round)
            })
            .collect();
        tokio::spawn(async move {
            let done = round::run(phones, iphones, probe, deadline, &metrics).await;
            let _ = events.send(Event::RoundDone(done));
        });
    }

    /// Builds and swaps in a snapshot. After a finished round (`round_done`), and only
    /// then, the health memory advances and the actions are returned to be run.
    fn publish(&mut self, round_done: bool) -> Vec<Action> {
        let listing = self.listing.clone().unwrap_or_default();
        let mut devices: Vec<Device> = listing
            .iter()
            .map(|l| {
                let settled = settled_state(
                    l,
                    self.offline_since.get(&l.serial),
                    self.budget.offline_settle,
                );
                build_device(&settled, self.rounds.get(&l.serial))
            })
            .collect();
        devices.extend(self.iphones.devices());
        // A phone being rebooted may vanish from the list for a while; it still counts.
        for serial in &self.rebooting {
            if !devices.iter().any(|d| &d.serial == serial) {
                let gone = Listed {
                    serial: serial.clone(),
                    state: Link::Offline,
                    state_detail: None,
                    devpath: None,
                    product: None,
                    model: None,
                    device: None,
                    transport_id: None,
                };
                devices.push(build_device(&gone, self.rounds.get(serial)));
            }
        }
        // The one place a phone is marked as being rebooted, whatever its kind.
        for d in devices
            .iter_mut()
            .filter(|d| self.rebooting.contains(&d.serial))
        {
            let what_for = self
                .reboot_for
                .get(&d.serial)
                .map_or("after task", String::as_str);
            d.mark_rebooting(what_for);
        }
        let host = Host {
            adb_server_silent: self.server_silent.as_ref().map(|s| s.first.clone()),
            iphones_unlisted: self.iphones.listing_failure(),
        };
        let outcome = verdict::decide(
            &self.memory,
            &devices,
            &self.rebooting,
            Outside {
                host: &host,
                notes: &self.notes,
            },
            &self.thresholds,
            self.origin.elapsed().as_secs_f64(),
            !self.task_running && self.phone_tasks.is_empty(),
        );
        // Dimensions: the reachable phones, plus the phones being rebooted with their
        // last values, so the bot's dimensions do not flap after every task.
        // Each phone's own dimensions are made once, for the bot's and for its own: a
        // usable phone's device has them already, from the same round.
        let counted: Vec<(&str, Cow<Dimensions>)> = devices
            .iter()
            .filter(|d| d.reachable() || self.rebooting.contains(&d.serial))
            .filter_map(|d| {
                let r = self.rounds.get(&d.serial)?;
                let own = if d.dimensions.is_empty() {
                    Cow::Owned(dimensions::android_device(r.props.as_ref()?, &r.packages))
                } else {
                    Cow::Borrowed(&d.dimensions)
                };
                Some((d.serial.as_str(), own))
            })
            .collect();
        let android: Vec<&Dimensions> = counted.iter().map(|(_, own)| own.as_ref()).collect();
        let mut dims = dimensions::android_dimensions(&android);
        dimensions::merge_into(&mut dims, &self.iphones.dimensions(&self.rebooting));
        let mut phone_dimensions: BTreeMap<String, Dimensions> = counted
            .iter()
            .map(|(serial, own)| (serial.to_string(), dimensions::android_dimensions(&[own])))
            .collect();
        phone_dimensions.extend(self.iphones.each(&self.rebooting));
        let snapshot = Snapshot {
            taken_at_unix: unix_now(),
            devices: outcome.devices,
            dimensions: dims,
            reasons: outcome.reasons,
            host_reasons: outcome.host_reasons,
            phone_dimensions,
            busy_phones: self.phone_tasks.clone(),
        };
        let old = self.ctx.snapshot.get();
        for change in snapshot::changes(&old, &snapshot) {
            log::info!("{change}");
            self.ctx.events.record(change);
        }
        for (reason, text) in phone_events(&old, &snapshot) {
            log::info!("{text}");
            self.ctx.events.report(reason, text);
        }
        self.ctx.snapshot.publish(snapshot);
        if round_done {
            self.ctx.snapshot.mark_first_round_done();
            self.memory = outcome.memory;
            outcome.actions
        } else {
            Vec::new()
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceKinds;
    use crate::devices::phones::{BoxFuture, Props};
    use crate::devices::Settings;
    use crate::state::{DeviceCommands, SnapshotCell};
    use std::sync::Mutex;
    use std::time::Duration;
    use std::time::Instant;

    use crate::state::snapshot::Fault;

    /// How a fake phone answers its rounds.
    #[derive(Clone)]
    enum Answer {
        Reads(Box<PhoneRound>),
        /// Never answers: the round's deadline must end it.
        Hangs,
        /// The round fails with this reason, as when adbd is wedged.
        Fails(String),
        /// The transport answers `device offline`.
        Offline,
    }

    /// The Android side, scripted: the lists it sends, what each phone answers, and a
    /// record of every call.
    #[derive(Default)]
    struct FakeAndroid {
        lists: Mutex<Option<mpsc::UnboundedSender<String>>>,
        /// What `host:devices-l` answers, when it differs from the tracker's last list
        /// (the adb server does not tell its trackers every change).
        untracked: Mutex<Option<String>>,
        /// The tracker's last list.
        last_list: Mutex<String>,
        answers: Mutex<BTreeMap<String, Answer>>,
        calls: Mutex<Vec<String>>,
        /// The server accepts and never answers (stopped).
        server_silent: Mutex<bool>,
    }

    impl FakeAndroid {
        fn answer(&self, serial: &str, a: Answer) {
            self.answers.lock().unwrap().insert(serial.into(), a);
        }

        fn list(&self, text: &str) {
            *self.last_list.lock().unwrap() = text.into();
            let lists = self.lists.lock().unwrap();
            lists
                .as_ref()
                .expect("the watcher follows the list")
                .send(text.into())
                .unwrap();
        }

        fn calls(&self, prefix: &str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.starts_with(prefix))
                .count()
        }

        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    fn pixel(boot_completed: bool) -> PhoneRound {
        let mut props: Props = [
            ("ro.product.device", "redfin"),
            ("ro.build.id", "RQ3A.211001.001"),
            ("ro.build.version.incremental", "7641976"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if boot_completed {
            props.insert("sys.boot_completed".into(), "1".into());
        }
        PhoneRound {
            props: Some(props),
            protocol: Some(ShellProtocol::V2),
            server_answered: true,
            ..PhoneRound::default()
        }
    }

    impl AndroidPhones for Arc<FakeAndroid> {
        fn track(&self, lists: mpsc::UnboundedSender<String>, _: Shutdown) -> BoxFuture<()> {
            *self.lists.lock().unwrap() = Some(lists);
            Box::pin(async {})
        }

        fn list_now(&self) -> BoxFuture<Result<String, String>> {
            self.record("list".into());
            let text = self.untracked.lock().unwrap().clone();
            let text = text.unwrap_or_else(|| self.last_list.lock().unwrap().clone());
            Box::pin(async move { Ok(text) })
        }

        fn interrogate(
            &self,
            serial: &str,
            _: Option<ShellProtocol>,
            _: tokio::time::Instant,
        ) -> BoxFuture<PhoneRound> {
            self.record(format!("interrogate {serial}"));
            let answer = self.answers.lock().unwrap().get(serial).cloned();
            // A silent server answers no phone's requests either.
            let answer = match *self.server_silent.lock().unwrap() {
                true => Some(Answer::Hangs),
                false => answer,
            };
            Box::pin(async move {
                match answer.unwrap_or(Answer::Reads(Box::new(pixel(true)))) {
                    Answer::Reads(r) => *r,
                    Answer::Hangs => std::future::pending().await,
                    Answer::Fails(why) => PhoneRound {
                        failure: Some(why),
                        ..PhoneRound::default()
                    },
                    Answer::Offline => PhoneRound {
                        failure: Some("the server said FAIL: device offline".into()),
                        offline: true,
                        ..PhoneRound::default()
                    },
                }
            })
        }

        fn start_round(&self, online: &[&str]) {
            self.record(format!("round-starts {}", online.join(",")));
        }

        fn reboot(&self, serial: &str, _: ShellProtocol) -> BoxFuture<Result<(), String>> {
            self.record(format!("reboot {serial}"));
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
        }

        fn reconnect(&self, serial: &str) -> BoxFuture<Result<(), String>> {
            self.record(format!("reconnect {serial}"));
            Box::pin(async { Ok(()) })
        }

        fn reconnect_offline(&self) -> BoxFuture<Result<(), String>> {
            self.record("reconnect-offline".into());
            Box::pin(async { Ok(()) })
        }

        fn restart_server(&self) -> BoxFuture<Result<(), String>> {
            self.record("restart-server".into());
            Box::pin(async { Ok(()) })
        }

        fn probe_server(&self) -> BoxFuture<Result<(), String>> {
            let silent = *self.server_silent.lock().unwrap();
            Box::pin(async move {
                if silent {
                    std::future::pending().await
                } else {
                    Ok(())
                }
            })
        }

        fn kill_server(&self, why: String) {
            self.record(format!("kill-server {why}"));
        }
    }

    /// Without `--devices ios` the watcher must never touch the iPhones.
    struct NoIphones;

    impl IosPhones for NoIphones {
        fn interrogate(&self) -> BoxFuture<Result<Vec<Device>, ios::IosError>> {
            panic!("the iPhones were read without --devices ios")
        }

        fn reboot(&self, udid: &str, _: Duration) -> BoxFuture<Result<(), String>> {
            panic!("{udid} rebooted as an iPhone without --devices ios")
        }
    }

    /// Rounds every `period`, on tokio's clock (which the tests pause).
    struct Every(tokio::time::Interval);

    impl Clock for Every {
        async fn tick(&mut self) {
            self.0.tick().await;
        }
    }

    /// What a test reads and sends: the watcher's snapshot and the hooks' commands.
    struct Handles {
        snapshot: Arc<SnapshotCell>,
        commands: DeviceCommands,
    }

    /// The watcher's settings for a test: Android only, rounds every `every`, the test
    /// thresholds, the adb server at `adb_server`.
    fn settings(every: Duration, adb_server: u16) -> Settings {
        Settings {
            devices: DeviceKinds {
                android: true,
                ios: false,
            },
            interrogate_every: every,
            no_reboot_after_task: false,
            power_off: Duration::from_secs(5),
            adb: "/usr/bin/adb".into(),
            adb_server: ([127, 0, 0, 1], adb_server).into(),
            usbmuxd: "/usr/sbin/usbmuxd".into(),
            ios: ios::Tools {
                dir: "/usr/bin".into(),
                interrogate_every: every,
            },
            thresholds: verdict::TEST_THRESHOLDS,
        }
    }

    /// A context of fresh handles for `settings`, the handles the test keeps, and the
    /// watcher's end of the command channel.
    fn context(settings: Settings) -> (Context, Handles, mpsc::UnboundedReceiver<DeviceCommand>) {
        let snapshot = Arc::new(SnapshotCell::default());
        let (commands, rx) = DeviceCommands::channel();
        let ctx = Context {
            settings,
            metrics: Arc::default(),
            snapshot: snapshot.clone(),
            events: Arc::default(),
            liveness: Arc::default(),
            notes: Arc::default(),
        };
        (ctx, Handles { snapshot, commands }, rx)
    }

    struct Rig {
        shared: Handles,
        fake: Arc<FakeAndroid>,
        trigger: crate::runtime::shutdown::Trigger,
        watcher: tokio::task::JoinHandle<()>,
    }

    /// The watcher with fake phones, rounds every 30 s and reboots after tasks.
    async fn rig() -> Rig {
        let (ctx, shared, commands) = context(settings(Duration::from_secs(30), 5037));
        let (trigger, shutdown) = crate::runtime::shutdown::channel();
        let fake = Arc::new(FakeAndroid::default());
        let clock = Every(tokio::time::interval(Duration::from_secs(30)));
        let watcher = tokio::spawn(watch(
            ctx,
            commands,
            Arc::new(fake.clone()),
            Arc::new(NoIphones),
            clock,
            shutdown,
        ));
        while fake.lists.lock().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        Rig {
            shared,
            fake,
            trigger,
            watcher,
        }
    }

    impl Rig {
        /// Waits (on the paused clock) until the snapshot satisfies `f`; at most 10
        /// minutes of virtual time.
        async fn until(&self, what: &str, f: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
            let start = tokio::time::Instant::now();
            loop {
                let s = self.shared.snapshot.get();
                if f(&s) {
                    return s;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(600),
                    "gave up waiting for {what}: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        async fn stop(self) {
            self.trigger.fire();
            self.watcher.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_note_decides_again_at_once_without_a_round() {
        let (ctx, shared, commands) = context(settings(Duration::from_secs(30), 5037));
        let notes = ctx.notes.clone();
        let (trigger, shutdown) = crate::runtime::shutdown::channel();
        let clock = Every(tokio::time::interval(Duration::from_secs(3600)));
        let watcher = tokio::spawn(watch(
            ctx,
            commands,
            Arc::new(Arc::new(FakeAndroid::default())),
            Arc::new(NoIphones),
            clock,
            shutdown,
        ));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        notes.set(Notes {
            pi: Some("new USB hub (ana)".into()),
            phones: BTreeMap::new(),
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            shared.snapshot.get().reasons.maintenance,
            vec!["maintenance: new USB hub (ana)"]
        );
        notes.set(Notes::default());
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(shared.snapshot.get().reasons.maintenance.is_empty());
        trigger.fire();
        watcher.await.unwrap();
    }

    fn device<'a>(s: &'a Snapshot, serial: &str) -> Option<&'a Device> {
        s.devices.iter().find(|d| d.serial == serial)
    }

    #[tokio::test(start_paused = true)]
    async fn a_listed_phone_is_read_at_once_then_every_tick() {
        let rig = rig().await;
        let t0 = tokio::time::Instant::now();
        rig.fake.list("S1 device transport_id:1\n");
        let s = rig
            .until("S1 usable", |s| {
                device(s, "S1").is_some_and(Device::reachable)
            })
            .await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(s.dimensions["device_type"], vec!["redfin"]);
        assert!(rig.shared.snapshot.first_round_done());
        let before = rig.fake.calls("interrogate S1");
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert!(rig.fake.calls("interrogate S1") >= before + 3);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn each_phone_has_the_view_of_a_bot_of_its_own() {
        let rig = rig().await;
        rig.fake.answer("W", Answer::Fails("timed out".into()));
        rig.fake.list("S1 device\nS2 device\nW device\n");
        let s = rig
            .until("three phones read", |s| {
                s.devices.len() == 3
                    && s.devices
                        .iter()
                        .all(|d| d.read_at_unix.is_some() || d.fault.is_some())
                    && s.phone_dimensions.len() == 2
            })
            .await;
        assert_eq!(s.dimensions["android_devices"], vec!["1", "2"]);
        for serial in ["S1", "S2"] {
            let v = verdict::phone_view(&s, serial);
            assert_eq!(v.dimensions["android_devices"], vec!["1"], "{serial}");
            assert_eq!(v.dimensions["device_type"], vec!["redfin"], "{serial}");
            assert_eq!(v.dimensions["os"], vec!["Android"], "{serial}");
            assert_eq!(v.reasons, snapshot::Reasons::default(), "{serial}");
        }
        let w = verdict::phone_view(&s, "W");
        assert!(w.dimensions.is_empty(), "{w:?}");
        assert_eq!(w.reasons.maintenance.len(), 1, "{w:?}");
        assert!(
            w.reasons.maintenance[0].contains("W not answering"),
            "{w:?}"
        );
        assert!(verdict::phone_view(&s, "gone")
            .reasons
            .quarantined
            .contains(&"device gone is not listed".to_string()));
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_adb_server_is_reported_then_killed_after_its_rounds() {
        let rig = rig().await;
        rig.fake.list("S1 device transport_id:1\n");
        rig.until("S1 usable", |s| {
            device(s, "S1").is_some_and(Device::reachable)
        })
        .await;
        *rig.fake.server_silent.lock().unwrap() = true;
        let s = rig
            .until("the server reported", |s| {
                s.host_reasons
                    .maintenance
                    .iter()
                    .any(|r| r.starts_with("adb server not answering: no answer within"))
            })
            .await;
        assert!(s
            .reasons
            .maintenance
            .iter()
            .any(|r| r.starts_with("adb server")));
        // Rounds every 30 s: the third silent one kills it, not the second.
        assert_eq!(rig.fake.calls("kill-server"), 0);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(rig.fake.calls("kill-server"), 0);
        tokio::time::sleep(Duration::from_secs(30)).await;
        // The first silent round began 60 s before the third, which ran to its 20 s deadline.
        assert_eq!(
            rig.fake
                .calls("kill-server has not answered for 80.0s (3 rounds in a row;"),
            1,
            "{:?}",
            rig.fake.calls.lock().unwrap()
        );
        *rig.fake.server_silent.lock().unwrap() = false;
        rig.until("the reason cleared", |s| {
            s.host_reasons.maintenance.is_empty()
        })
        .await;
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_the_tracker_never_reports_is_read_at_the_next_tick() {
        let rig = rig().await;
        // A phone plugged in while the tracker runs: the server tells it `offline`,
        // then makes it `unauthorized` without a word to its trackers.
        rig.fake
            .list("U offline transport_id:2\nS1 device transport_id:1\n");
        *rig.fake.untracked.lock().unwrap() =
            Some("U unauthorized transport_id:2\nS1 device transport_id:1\n".into());
        let s = rig
            .until("U unauthorized", |s| {
                device(s, "U").is_some_and(|d| d.link() == Some(&Link::Unauthorized))
            })
            .await;
        assert!(
            s.reasons
                .quarantined
                .iter()
                .any(|r| r.contains("U is unauthorized")),
            "{:?}",
            s.reasons
        );
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert_eq!(
            rig.fake.calls("reconnect"),
            0,
            "a phone waiting for its key was kicked"
        );
        // Once every phone is `device`, ticks stop asking.
        rig.fake
            .list("U device transport_id:2\nS1 device transport_id:1\n");
        *rig.fake.untracked.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = rig.fake.calls("list");
        assert!(asked >= 3, "asked {asked} times");
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert_eq!(rig.fake.calls("list"), asked);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_phone_costs_only_its_own_round_and_is_reported() {
        let rig = rig().await;
        rig.fake.answer("H", Answer::Hangs);
        let t0 = tokio::time::Instant::now();
        rig.fake.list("H device\nK device\n");
        let s = rig
            .until("H's round to end", |s| {
                device(s, "H").is_some_and(|d| matches!(d.fault, Some(Fault::NotAnswering { .. })))
            })
            .await;
        // The round ended at the phone's deadline, not later.
        let budget = Budget::of(Duration::from_secs(30));
        assert!(
            t0.elapsed() <= budget.phone + Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        assert!(device(&s, "K").is_some_and(Device::reachable));
        let m = &s.reasons.maintenance;
        assert!(
            m.iter()
                .any(|r| r.starts_with("device H not answering (round took longer than")),
            "{m:?}"
        );
        assert_eq!(rig.fake.calls("reconnect H"), 1);
        // Still hung at the next round: quarantined; K is fine throughout.
        let s = rig
            .until("H quarantined", |s| !s.reasons.quarantined.is_empty())
            .await;
        assert!(
            s.reasons.quarantined[0]
                .starts_with("device H still does not answer after every recovery step"),
            "{:?}",
            s.reasons
        );
        assert!(s
            .reasons
            .quarantined
            .iter()
            .all(|r| !r.contains("device K")));
        assert_eq!(device(&s, "H").unwrap().verdict_word(), "quarantined");
        assert_eq!(device(&s, "K").unwrap().verdict_word(), "usable");
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_phone_that_stops_answering_then_answers_again_is_usable_again() {
        let rig = rig().await;
        rig.fake.list("W device\n");
        rig.until("W usable", |s| {
            device(s, "W").is_some_and(Device::reachable)
        })
        .await;
        rig.fake
            .answer("W", Answer::Fails("the round's script: timed out".into()));
        let s = rig
            .until("W in maintenance", |s| !s.reasons.maintenance.is_empty())
            .await;
        assert_eq!(
            s.reasons.maintenance,
            vec!["device W not answering (the round's script: timed out), reconnecting"]
        );
        assert!(
            !s.dimensions.contains_key("android_devices"),
            "{:?}",
            s.dimensions
        );
        rig.fake.answer("W", Answer::Reads(Box::new(pixel(true))));
        let s = rig
            .until("W back", |s| device(s, "W").is_some_and(Device::reachable))
            .await;
        assert_eq!(s.reasons, snapshot::Reasons::default());
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_transport_answering_device_offline_reconnects_offline_phones() {
        let rig = rig().await;
        rig.fake.answer("O", Answer::Offline);
        rig.fake.list("O device\n");
        let s = rig
            .until("O in maintenance", |s| !s.reasons.maintenance.is_empty())
            .await;
        assert_eq!(
            s.reasons.maintenance,
            vec!["device O offline, reconnecting"]
        );
        assert_eq!(rig.fake.calls("reconnect-offline"), 1);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_phone_up_too_long_is_rebooted_while_idle_and_not_while_a_task_runs() {
        let busy = rig().await;
        let mut old = pixel(true);
        old.uptime = Some(100_000.0);
        busy.fake.answer("B", Answer::Reads(Box::new(old.clone())));
        // B's task runs from the start: it is not rebooted for its uptime meanwhile.
        busy.shared.commands.send(DeviceCommand::TaskStarted);
        tokio::task::yield_now().await;
        busy.fake.list("B device\n");
        busy.until("B read", |s| device(s, "B").is_some_and(Device::reachable))
            .await;
        tokio::time::sleep(Duration::from_secs(70)).await;
        assert_eq!(busy.fake.calls("reboot B"), 0);
        busy.stop().await;

        let rig = rig().await;
        rig.fake.answer("U", Answer::Reads(Box::new(old)));
        rig.fake.list("U device\n");
        let s = rig
            .until("U rebooting", |s| {
                device(s, "U").is_some_and(|d| d.state_word() == "rebooting")
            })
            .await;
        assert_eq!(
            s.reasons.maintenance,
            vec!["rebooting U for its care: up for 27.8 h"]
        );
        assert_eq!(rig.fake.calls("reboot U"), 1);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reboot_after_a_task_holds_the_phone_until_it_is_back() {
        let rig = rig().await;
        rig.fake.list("R device\n");
        let before = rig
            .until("R usable", |s| {
                device(s, "R").is_some_and(Device::reachable)
            })
            .await;
        rig.shared.commands.send(DeviceCommand::TaskEnded);
        let s = rig
            .until("R rebooting", |s| !s.reasons.maintenance.is_empty())
            .await;
        assert_eq!(s.reasons.maintenance, vec!["rebooting R after task"]);
        assert_eq!(device(&s, "R").unwrap().state_word(), "rebooting");
        // The dimensions keep their last values while it reboots, even when the phone
        // leaves the list.
        assert_eq!(s.dimensions, before.dimensions);
        rig.fake.list("");
        tokio::time::sleep(Duration::from_secs(30)).await;
        let s = rig.shared.snapshot.get();
        assert_eq!(s.reasons.maintenance, vec!["rebooting R after task"]);
        assert!(s.reasons.quarantined.is_empty(), "{:?}", s.reasons);
        // Its kept-open shell was closed at the first round without it.
        assert!(rig.fake.calls("round-starts R") >= 1);
        assert!(rig
            .fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == "round-starts "));
        rig.fake.list("R device\n");
        let s = rig
            .until("R back", |s| s.reasons == snapshot::Reasons::default())
            .await;
        assert!(device(&s, "R").is_some_and(Device::reachable));
        assert_eq!(rig.fake.calls("reboot R"), 1);
        rig.stop().await;
    }

    /// The reboot after a task, end to end: the real adb server (`/usr/bin/adb`), a
    /// simulated phone that drops off on `reboot:` and comes back, and this watcher
    /// driven through the same channel the hooks use.
    #[test]
    fn reboot_after_task_through_the_real_adb_server() {
        use std::io::{BufRead, Read, Write};
        let _turn = crate::runtime::reaper::children_lock();
        /// Kills the child when the test ends, passed or not.
        struct Guard(std::process::Child);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _ = env_logger::builder().is_test(true).try_init();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let home = std::env::temp_dir().join(format!("tmm-reboot-{}", free()));
        std::fs::create_dir_all(&home).unwrap();
        let adb_port = free();
        let _server = Guard(
            std::process::Command::new("/usr/bin/adb")
                .args(["-P", &adb_port.to_string(), "nodaemon", "server"])
                .env("HOME", &home)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let sim_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/adb_sim.py");
        let mut sim = Guard(
            std::process::Command::new("python3")
                .args([sim_path, "--phone", "reboots:R", "--reboot-secs", "1"])
                // Like a real phone, it goes on answering for a while after `reboot:`.
                .args(["--shutdown-secs", "4"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = std::io::BufReader::new(sim.0.stdout.take().unwrap()).lines();
        // `PORT <port> <name>`, then `CONTROL <port>`.
        let mut next_port = || -> u16 {
            let line = lines.next().unwrap().unwrap();
            line.split(' ').nth(1).unwrap().parse().unwrap()
        };
        let port = next_port();
        let control = next_port();
        let serial = format!("127.0.0.1:{port}");

        let every = Duration::from_secs(1);
        let (ctx, shared, commands) = context(settings(every, adb_port));
        let (trigger, shutdown) = crate::runtime::shutdown::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        async fn wait(shared: &Handles, what: &str, f: impl Fn(&Snapshot) -> bool) {
            let start = Instant::now();
            while !f(&shared.snapshot.get()) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "gave up waiting: {what}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let usable = |s: &Snapshot| s.devices.iter().any(|d| d.unusable().is_none());
        let rebooting = format!("rebooting {serial} after task");
        runtime.block_on(async {
            let ticker = Ticker::new(every).unwrap();
            let watcher = tokio::spawn(run(ctx, commands, Reaper::new(), ticker, shutdown));
            tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", adb_port)).unwrap();
                let req = format!("host:connect:127.0.0.1:{port}");
                s.write_all(format!("{:04x}{req}", req.len()).as_bytes())
                    .unwrap();
                let _ = s.read_to_end(&mut Vec::new());
            })
            .await
            .unwrap();
            wait(&shared, "the phone to be usable", usable).await;
            let dims = shared.snapshot.get().dimensions.clone();
            assert!(!dims.is_empty());

            shared.commands.send(DeviceCommand::TaskEnded);
            wait(&shared, "the rebooting reason", |s: &Snapshot| {
                s.reasons.maintenance.contains(&rebooting)
            })
            .await;
            // While it reboots, the dimensions keep their last values.
            assert_eq!(shared.snapshot.get().dimensions, dims);
            // It still answers, boot completed, but has not gone down yet: still rebooting.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                shared
                    .snapshot
                    .get()
                    .reasons
                    .maintenance
                    .contains(&rebooting),
                "a phone that has not gone down yet counted as back: {:?}",
                shared.snapshot.get().reasons
            );
            wait(&shared, "the phone to come back", |s: &Snapshot| {
                usable(s) && !s.reasons.maintenance.contains(&rebooting)
            })
            .await;
            assert!(shared.snapshot.get().reasons.quarantined.is_empty());
            assert_eq!(shared.snapshot.get().dimensions, dims);
            trigger.fire();
            watcher.await.unwrap();
        });
        let mut c = std::net::TcpStream::connect(("127.0.0.1", control)).unwrap();
        c.write_all(b"reboots R\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply.trim(), "OK 1");
    }
}
