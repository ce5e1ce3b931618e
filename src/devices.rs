//! The device watcher: follows the adb server's device list (`--devices android`), reads
//! the iPhones each round (`--devices ios`, through `ios`), applies the health rules to
//! both kinds at once and publishes an immutable [`Snapshot`].
//!
//! One task owns all the watcher's state and reacts to one event at a time: a new device
//! list from `host:track-devices-l`, the `--interrogate-every` tick, a finished round, a
//! finished reboot, or a [`DeviceCommand`] from the hooks. Slow work never runs in that
//! loop: rounds and reboots are spawned tasks that report back as events, so a plug or an
//! unplug reaches the snapshot as soon as the server lists it, even while a round waits on
//! a hung phone. Inside a round every phone runs in parallel (tasks on the current-thread
//! runtime, not threads), each under a deadline shorter than the interval, and each
//! phone's commands run as one shell script on one connection (`parse::batch`): a Pi
//! pays per wake-up, and four requests cost four connections, transport switches and
//! phone-side shells where one does. The iPhones' round runs beside them. Without
//! Android, no adb server is started or contacted.
//!
//! Must not: parse output (that is `parse`), decide a phone's fate (that is `verdict`), compute
//! dimensions (that is `dimensions`), or block the runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::adb::client::{self, Client, ShellProtocol};
use crate::clock::Ticker;
use crate::dimensions;
use crate::ios;
use crate::parse::{self, battery::Battery, devices_l::Listed, thermal::Thermal};
use crate::reaper::Reaper;
use crate::shutdown::Shutdown;
use crate::snapshot::{Device, DeviceKind, Fault, Link, Reasons, Snapshot, State, Temperature};
use crate::state::{DeviceCommand, Shared};
use crate::verdict::{self, Action, Memory, Thresholds};

/// Props of one phone, as `getprop` printed them.
type Props = BTreeMap<String, String>;

/// Deadline of one socket connect or read to the adb server.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A round's commands (name, command), least likely to hang first: the kernel answers
/// `/proc/uptime`, init answers `getprop`, and the dumpsys calls need system_server
/// (battery, then the package manager) and then the thermal HAL. Thermal's stderr is
/// kept: `Can't find service` goes there.
const ROUND_COMMANDS: [(&str, &str); 5] = [
    ("uptime", "cat /proc/uptime"),
    ("getprop", "getprop"),
    ("battery", "dumpsys battery"),
    ("packages", parse::packages::COMMAND),
    ("thermal", "dumpsys thermalservice 2>&1"),
];

/// The longest a phone's round may take, whatever the interval.
const MAX_PHONE_DEADLINE: Duration = Duration::from_secs(20);
/// From `reboot:` to `sys.boot_completed=1`, or from `idevicediagnostics restart` to
/// the iPhone listed again. Phones take one to two minutes.
const REBOOT_DEADLINE: Duration = Duration::from_secs(240);
/// How often to ask a rebooting phone whether it has finished booting.
const BOOT_POLL: Duration = Duration::from_secs(2);
/// Delays between attempts to follow the device list while the server is away.
const TRACK_RETRY_MIN: Duration = Duration::from_millis(200);
const TRACK_RETRY_MAX: Duration = Duration::from_secs(2);

/// A phone's round must end well before the next one starts.
fn phone_deadline(interval: Duration) -> Duration {
    interval.mul_f64(0.75).min(MAX_PHONE_DEADLINE)
}

/// Everything that wakes the watcher besides the tick and the hooks' commands.
enum Event {
    /// A full device list from the tracker.
    Listing(String),
    /// A round finished.
    RoundDone(RoundDone),
    /// A reboot after a task ended, well or not.
    RebootDone {
        serial: String,
        outcome: Result<(), String>,
    },
}

/// A finished round: what each phone said, and what the round started from.
struct RoundDone {
    results: BTreeMap<String, PhoneRound>,
    /// The iPhones' round, when they are watched.
    ios: Option<Result<Vec<Device>, ios::IosError>>,
    took: Duration,
}

/// What one phone's round found. Only `props` is required for the phone to be usable;
/// the others are best effort (a phone without a thermal HAL is still a phone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhoneRound {
    pub props: Option<Props>,
    /// The packages the dimensions name, to their versions.
    pub packages: dimensions::Packages,
    pub battery: Option<Battery>,
    pub thermal: Vec<Temperature>,
    pub uptime: Option<f64>,
    /// Why `props` is missing.
    pub failure: Option<String>,
    /// The adb server answered the transport with `device offline`: the link is gone
    /// although the device list may still say `device`.
    pub offline: bool,
    /// Values every phone has that this round could not read, with why.
    pub missing_values: Vec<String>,
    /// The shell protocol the phone's features called for, once they were read.
    pub protocol: Option<ShellProtocol>,
}

/// The HAL's temperatures, plus the battery's own reading as `battery` when the HAL
/// named no sensor so (older phones have only the battery's).
pub fn temperatures(thermal: &[Temperature], battery: Option<&Battery>) -> Vec<Temperature> {
    let mut all = thermal.to_vec();
    let has_battery = all.iter().any(|t| t.sensor.eq_ignore_ascii_case("battery"));
    if let (false, Some(celsius)) = (has_battery, battery.and_then(|b| b.temperature_celsius)) {
        all.push(Temperature {
            sensor: "battery".into(),
            celsius,
        });
    }
    all
}

/// Every new transport is `offline` until its handshake ends, usually for milliseconds:
/// before this long it is shown as `connecting`, so that the offline rule (and its
/// `reconnect-offline`, which would break the handshake) only sees phones that stay.
pub const OFFLINE_SETTLE: Duration = Duration::from_secs(1);

/// `listed`, with a fresh `offline` shown as `connecting` (see [`OFFLINE_SETTLE`]).
pub fn settled_state(listed: &Listed, offline_since: Option<&Instant>) -> Listed {
    let mut l = listed.clone();
    if l.state == Link::Offline && offline_since.is_some_and(|t| t.elapsed() < OFFLINE_SETTLE) {
        l.state = Link::Connecting;
    }
    l
}

/// One phone as the snapshot shows it, from its listing, its last round (if any) and
/// whether we are rebooting it.
pub fn build_device(listed: &Listed, round: Option<&PhoneRound>, rebooting: bool) -> Device {
    let mut d = Device::listed(DeviceKind::Android, &listed.serial, listed.state.clone());
    if let Some(device_type) = &listed.device {
        d.device_type = Some(device_type.clone());
    }
    if let Some(r) = round {
        if let Some(props) = &r.props {
            if let Some(name) = dimensions::device_name(props) {
                d.device_type = Some(name);
            }
            d.booting = props.get("sys.boot_completed").map(|v| v.trim()) != Some("1");
            d.build = dimensions::android_build(props);
        }
        d.battery_percent = r.battery.as_ref().and_then(|b| b.percent);
        d.temperatures = temperatures(&r.thermal, r.battery.as_ref());
        d.uptime_secs = r.uptime;
        d.missing_values.clone_from(&r.missing_values);
    }
    d.fault = if rebooting {
        d.state = State::Rebooting;
        Some(Fault::Rebooting)
    } else if listed.state != Link::Device {
        Some(Fault::LinkNotReady)
    } else {
        match round {
            None => Some(Fault::NotInterrogated),
            Some(PhoneRound {
                props: None,
                failure,
                offline,
                ..
            }) => Some(Fault::NotAnswering {
                why: failure.clone().unwrap_or_else(|| "no getprop".into()),
                offline: *offline,
            }),
            Some(_) if d.booting => Some(Fault::Booting),
            Some(_) => None,
        }
    };
    if d.fault.is_none() {
        if let Some(props) = round.and_then(|r| r.props.as_ref()) {
            let packages = &round.map(|r| r.packages.clone()).unwrap_or_default();
            d.dimensions = dimensions::android_device(props, packages);
        }
    }
    d
}

/// Runs until shutdown: with Android, starts the adb server and follows its device list;
/// interrogates the phones of every kind watched.
pub async fn run(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<DeviceCommand>,
    reaper: Reaper,
    mut ticker: Ticker,
    mut shutdown: Shutdown,
) {
    let android = shared.config.devices.android;
    let server = android.then(|| {
        tokio::spawn(crate::adb::server::run(
            shared.clone(),
            reaper.clone(),
            shutdown.clone(),
        ))
    });
    let usbmuxd = shared.config.devices.ios.then(|| {
        tokio::spawn(ios::usbmuxd::run(
            shared.clone(),
            reaper.clone(),
            shutdown.clone(),
        ))
    });
    let interval = shared.config.interrogate_every;
    let client = Client::new(
        shared.config.adb_server,
        IO_TIMEOUT.min(phone_deadline(interval)),
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    if android {
        tokio::spawn(track(client.clone(), events_tx.clone(), shutdown.clone()));
    }
    let mut w = Watcher::new(shared, client, reaper, events_tx);
    loop {
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = ticker.tick() => {
                // This timer doubles as the runtime's proof of life for `/healthz`.
                w.shared.tick();
                w.want_round();
            }
            Some(cmd) = commands.recv() => w.command(cmd),
            Some(event) = events.recv() => w.event(event).await,
        }
    }
    // The adb server and usbmuxd are ours to stop: wait until they have.
    for daemon in [server, usbmuxd].into_iter().flatten() {
        let _ = daemon.await;
    }
}

/// Follows `host:track-devices-l`, again and again: the server may be starting, or be
/// killed and restarted under us (an adb client of another version does that).
async fn track(client: Client, events: mpsc::UnboundedSender<Event>, mut shutdown: Shutdown) {
    let mut retry = TRACK_RETRY_MIN;
    let mut waiting_logged = false;
    loop {
        match client.track_devices().await {
            Ok(mut tracker) => {
                match client.version().await {
                    Ok(v) => log::info!("following the device list of adb server protocol {v}"),
                    Err(e) => log::info!("following the adb server's device list ({e})"),
                }
                retry = TRACK_RETRY_MIN;
                waiting_logged = false;
                loop {
                    tokio::select! {
                        frame = tracker.next() => match frame {
                            Ok(text) => {
                                if events.send(Event::Listing(text)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                log::warn!("lost the device list ({e}); following it again");
                                break;
                            }
                        },
                        _ = shutdown.requested() => return,
                    }
                }
            }
            Err(e) => {
                if !waiting_logged {
                    log::info!("waiting for the adb server: {e}");
                    waiting_logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.requested() => return,
        }
        retry = (retry * 2).min(TRACK_RETRY_MAX);
    }
}

struct Watcher {
    shared: Arc<Shared>,
    client: Client,
    reaper: Reaper,
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
    /// Phones (serials and UDIDs) rebooted after a task that have not come back yet.
    rebooting: BTreeSet<String>,
    /// Since when each phone listed `offline` has been so.
    offline_since: BTreeMap<String, Instant>,
    round_running: bool,
    /// Something asked for a round while one was running: start another after it.
    round_wanted: bool,
    /// (serial, value) for the values a phone's rounds could not read that were logged
    /// already: one warning per phone until the value is read again.
    warned_missing: BTreeSet<(String, String)>,
}

impl Watcher {
    fn new(
        shared: Arc<Shared>,
        client: Client,
        reaper: Reaper,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let thresholds = Thresholds::from_config(&shared.config);
        let listing = (!shared.config.devices.android).then(Vec::new);
        Watcher {
            shared,
            client,
            reaper,
            events,
            thresholds,
            listing,
            rounds: BTreeMap::new(),
            protocols: BTreeMap::new(),
            iphones: ios::Iphones::default(),
            memory: Memory::default(),
            rebooting: BTreeSet::new(),
            offline_since: BTreeMap::new(),
            round_running: false,
            round_wanted: false,
            warned_missing: BTreeSet::new(),
        }
    }

    fn command(&mut self, cmd: DeviceCommand) {
        match cmd {
            // Phones are only ever rebooted when a task ends, so a running task is
            // never interrupted; nothing to do until then.
            DeviceCommand::TaskStarted => log::debug!("task started"),
            DeviceCommand::TaskEnded => {
                if self.shared.config.no_reboot_after_task {
                    self.want_round();
                } else {
                    self.reboot_usable();
                }
            }
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Listing(text) => match parse::devices_l::parse(&text) {
                Ok(listing) => {
                    let present: BTreeSet<&str> =
                        listing.iter().map(|l| l.serial.as_str()).collect();
                    // Interrogate at once the phones that just became reachable;
                    // other changes (a phone going offline or away) need no round.
                    let was_device: BTreeSet<&str> = self
                        .listing
                        .iter()
                        .flatten()
                        .filter(|l| l.state == Link::Device)
                        .map(|l| l.serial.as_str())
                        .collect();
                    let newly_online = listing.iter().any(|l| {
                        l.state == Link::Device && !was_device.contains(l.serial.as_str())
                    });
                    let rebooting = &self.rebooting;
                    self.rounds
                        .retain(|s, _| present.contains(s.as_str()) || rebooting.contains(s));
                    self.protocols
                        .retain(|(s, _), _| present.contains(s.as_str()));
                    let now = Instant::now();
                    let mut offline_since = BTreeMap::new();
                    for l in listing.iter().filter(|l| l.state == Link::Offline) {
                        let since = self.offline_since.get(&l.serial).copied().unwrap_or(now);
                        offline_since.insert(l.serial.clone(), since);
                    }
                    self.offline_since = offline_since;
                    self.listing = Some(listing);
                    self.publish(false);
                    if newly_online {
                        self.want_round();
                    }
                }
                Err(e) => {
                    self.shared
                        .metrics
                        .interrogation_errors_total
                        .inc(&["parse"]);
                    log::warn!("cannot read the adb server's device list: {e}");
                }
            },
            Event::RoundDone(RoundDone { results, ios, took }) => {
                self.round_running = false;
                self.shared
                    .metrics
                    .interrogation_duration_seconds
                    .observe(&[], took);
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
                    self.rounds.insert(serial, round);
                }
                if let Some(outcome) = ios {
                    self.iphones.round_done(outcome, &self.rebooting);
                }
                for action in self.publish(true) {
                    match action {
                        Action::Reconnect(serial) => {
                            log::info!("asking the adb server to reconnect {serial}, which does not answer");
                            let client = self.client.clone();
                            let shared = self.shared.clone();
                            tokio::spawn(async move {
                                if let Err(e) = client.reconnect(&serial).await {
                                    shared
                                        .metrics
                                        .interrogation_errors_total
                                        .inc(&[e.metric_kind()]);
                                    log::warn!("{e}");
                                }
                            });
                        }
                        Action::ReconnectOffline => {
                            log::info!("asking the adb server to reconnect offline phones");
                            // Off the event loop: a wedged server must not hold up
                            // plug/unplug events and task commands for its timeouts.
                            let client = self.client.clone();
                            let shared = self.shared.clone();
                            tokio::spawn(async move {
                                if let Err(e) = client.reconnect_offline().await {
                                    shared
                                        .metrics
                                        .interrogation_errors_total
                                        .inc(&[e.metric_kind()]);
                                    log::warn!("{e}");
                                }
                            });
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
                self.want_round();
            }
        }
    }

    /// Logs, once per phone, each value its rounds could not read; a value read again
    /// is forgotten, so that losing it later warns again.
    fn warn_missing_values(&mut self, serial: &str, round: &PhoneRound) {
        let names: BTreeSet<String> = round
            .missing_values
            .iter()
            .map(|v| v.split(" (").next().unwrap_or(v).to_string())
            .collect();
        self.warned_missing
            .retain(|(s, name)| s != serial || names.contains(name));
        for (value, name) in round.missing_values.iter().zip(&names) {
            if self
                .warned_missing
                .insert((serial.to_string(), name.clone()))
            {
                log::warn!(
                    "{serial}: cannot read its {value}; the rules that need it cannot run \
                     until it is read again"
                );
            }
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
        self.round_running = true;
        let deadline = phone_deadline(self.shared.config.interrogate_every);
        let client = self.client.clone();
        let shared = self.shared.clone();
        let events = self.events.clone();
        let known = self.protocols.clone();
        let iphones = self.shared.config.devices.ios.then(|| {
            let (shared, reaper) = (self.shared.clone(), self.reaper.clone());
            async move { ios::interrogate(&shared.config, &reaper, &shared.metrics).await }
        });
        tokio::spawn(async move {
            let began = Instant::now();
            let iphones = iphones.map(tokio::spawn);
            let phones = online.into_iter().map(|l| {
                let client = client.clone();
                let shared = shared.clone();
                let known = known.get(&(l.serial.clone(), l.transport_id)).copied();
                tokio::spawn(async move {
                    let until = tokio::time::Instant::now() + deadline.mul_f64(0.9);
                    let round = match tokio::time::timeout(
                        deadline,
                        interrogate(&client, &shared, &l.serial, known, until),
                    )
                    .await
                    {
                        Ok(round) => round,
                        Err(_) => {
                            shared.metrics.interrogation_errors_total.inc(&["timeout"]);
                            PhoneRound {
                                failure: Some(format!("round took longer than {deadline:?}")),
                                ..PhoneRound::default()
                            }
                        }
                    };
                    (l.serial, round)
                })
            });
            let handles: Vec<_> = phones.collect();
            let mut results = BTreeMap::new();
            for h in handles {
                if let Ok((serial, round)) = h.await {
                    results.insert(serial, round);
                }
            }
            let ios = match iphones {
                Some(round) => round.await.ok(),
                None => None,
            };
            let _ = events.send(Event::RoundDone(RoundDone {
                results,
                ios,
                took: began.elapsed(),
            }));
        });
    }

    /// Builds and swaps in a snapshot. After a finished round (`round_done`), and only
    /// then, the health memory advances and the actions are returned to be run.
    fn publish(&mut self, round_done: bool) -> Vec<Action> {
        let listing = self.listing.clone().unwrap_or_default();
        let mut devices: Vec<Device> = listing
            .iter()
            .map(|l| {
                let settled = settled_state(l, self.offline_since.get(&l.serial));
                build_device(
                    &settled,
                    self.rounds.get(&l.serial),
                    self.rebooting.contains(&l.serial),
                )
            })
            .collect();
        devices.extend(self.iphones.devices(&self.rebooting));
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
                devices.push(build_device(&gone, self.rounds.get(serial), true));
            }
        }
        let mut fleet = Reasons::default();
        self.iphones.add_reasons(&mut fleet);
        let outcome = verdict::decide(
            &self.memory,
            &devices,
            &self.rebooting,
            &fleet,
            &self.thresholds,
        );
        // Dimensions: the reachable phones, plus the phones being rebooted with their
        // last values, so the bot's dimensions do not flap after every task.
        let counted: Vec<(&Props, &dimensions::Packages)> = devices
            .iter()
            .filter(|d| d.reachable() || self.rebooting.contains(&d.serial))
            .filter_map(|d| {
                let r = self.rounds.get(&d.serial)?;
                Some((r.props.as_ref()?, &r.packages))
            })
            .collect();
        let dims = dimensions::merge(&[
            &dimensions::android_fleet(&counted),
            &self.iphones.fleet(&self.rebooting),
        ]);
        let snapshot = Snapshot {
            taken_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            devices: outcome.devices,
            dimensions: dims,
            reasons: outcome.reasons,
        };
        log_changes(&self.shared.snapshot(), &snapshot);
        self.shared.publish_snapshot(snapshot);
        if round_done {
            self.shared.mark_first_round_done();
            self.memory = outcome.memory;
            outcome.actions
        } else {
            Vec::new()
        }
    }

    /// Reboots every usable phone (Android `reboot:`, iPhone `idevicediagnostics
    /// restart`), each on its own deadline.
    fn reboot_usable(&mut self) {
        let snapshot = self.shared.snapshot();
        let usable: Vec<&Device> = snapshot.devices.iter().filter(|d| d.reachable()).collect();
        if usable.is_empty() {
            self.want_round();
            return;
        }
        for d in usable {
            let serial = d.serial.clone();
            log::info!("rebooting {serial} after the task");
            self.rebooting.insert(serial.clone());
            let events = self.events.clone();
            if d.kind == DeviceKind::Ios {
                let (shared, reaper) = (self.shared.clone(), self.reaper.clone());
                tokio::spawn(async move {
                    let outcome = ios::reboot(&shared.config, &reaper, &serial, REBOOT_DEADLINE)
                        .await
                        .map_err(|e| {
                            shared
                                .metrics
                                .interrogation_errors_total
                                .inc(&[e.metric_kind()]);
                            e.to_string()
                        });
                    let _ = events.send(Event::RebootDone { serial, outcome });
                });
                continue;
            }
            let protocol = self
                .listing
                .iter()
                .flatten()
                .find(|l| l.serial == serial)
                .and_then(|l| self.protocols.get(&(serial.clone(), l.transport_id)))
                .copied()
                .unwrap_or(ShellProtocol::V1);
            let client = self.client.clone();
            tokio::spawn(async move {
                let outcome = match tokio::time::timeout(
                    REBOOT_DEADLINE,
                    reboot_and_wait(&client, &serial, protocol),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("not booted after {}s", REBOOT_DEADLINE.as_secs())),
                };
                let _ = events.send(Event::RebootDone { serial, outcome });
            });
        }
        // Show the rebooting state now, not at the next round.
        self.publish(false);
    }
}

/// `reboot:`, retried once after `host-serial:<s>:reconnect`, then waits until the phone
/// has gone down and come back with `sys.boot_completed` 1 (the caller owns the
/// deadline). A phone keeps answering for seconds after it accepted `reboot:`, with the
/// property still 1 from before: it only counts as back once a query has failed or
/// shown it booting, or its uptime has restarted.
async fn reboot_and_wait(
    client: &Client,
    serial: &str,
    protocol: ShellProtocol,
) -> Result<(), String> {
    let uptime_before = uptime(client, serial, protocol).await;
    if let Err(first) = client.reboot(serial).await {
        log::warn!("{first}; reconnecting {serial} and trying once more");
        let _ = client.reconnect(serial).await;
        tokio::time::sleep(BOOT_POLL).await;
        client.reboot(serial).await.map_err(|e| e.to_string())?;
    }
    let mut went_down = false;
    loop {
        tokio::time::sleep(BOOT_POLL).await;
        let booted = match client
            .shell(serial, "getprop sys.boot_completed", protocol)
            .await
        {
            Ok(out) => out.stdout.trim() == "1",
            Err(_) => false,
        };
        if !booted {
            went_down = true;
            continue;
        }
        if went_down {
            return Ok(());
        }
        if let (Some(before), Some(now)) = (uptime_before, uptime(client, serial, protocol).await) {
            if now < before {
                return Ok(());
            }
        }
    }
}

/// Seconds since the phone booted, if it answers.
async fn uptime(client: &Client, serial: &str, protocol: ShellProtocol) -> Option<f64> {
    let out = client
        .shell(serial, "cat /proc/uptime", protocol)
        .await
        .ok()?;
    crate::parse::uptime::parse(&out.stdout).ok()
}

/// One phone's round: uptime, getprop, dumpsys battery and temperatures, as one script;
/// whatever finished before `until` counts.
async fn interrogate(
    client: &Client,
    shared: &Shared,
    serial: &str,
    known: Option<ShellProtocol>,
    until: tokio::time::Instant,
) -> PhoneRound {
    let count = |e: &client::Error| {
        shared
            .metrics
            .interrogation_errors_total
            .inc(&[e.metric_kind()]);
        log::debug!("{e}");
    };
    let parse_failed = |what: &str, e: &dyn std::fmt::Display| {
        shared.metrics.interrogation_errors_total.inc(&["parse"]);
        log::debug!("{serial}: {what}: {e}");
    };
    let protocol = match known {
        Some(p) => p,
        None => match client.features(serial).await {
            Ok(f) => ShellProtocol::from_features(&f),
            Err(e) => {
                count(&e);
                return PhoneRound {
                    failure: Some(format!("reading its features: {}", e.what_happened())),
                    offline: says_offline(&e),
                    ..PhoneRound::default()
                };
            }
        },
    };
    // One script for the whole round (see `parse::batch`), read until a little before
    // the phone's deadline: a hung command costs only its own output and those after
    // it, so the commands go from least to most likely to hang.
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| parse::batch::script(&ROUND_COMMANDS));
    let ran = client.shell_until(serial, script, protocol, until).await;
    let (sections, finished) = match ran {
        Ok(p) => (parse::batch::split(&p.output.stdout), p.finished),
        Err(e) => {
            count(&e);
            return PhoneRound {
                protocol: Some(protocol),
                failure: Some(format!("the round's script: {}", e.what_happened())),
                offline: says_offline(&e),
                ..PhoneRound::default()
            };
        }
    };
    if !finished {
        // One timeout per round, whichever command hung.
        count(&client::Error::timed_out("the round's script", serial));
    }
    for s in sections.iter().filter(|s| s.exit_code != Some(0)) {
        // The output still counts if it parses: `dumpsys` exits non-zero on some OEMs.
        log::debug!("{serial}: {} exited with {:?}", s.name, s.exit_code);
    }
    let section = |name: &str| -> Result<String, String> {
        match sections.iter().find(|s| s.name == name) {
            Some(s) => Ok(s.text.clone()),
            None if !finished => Err(format!(
                "{serial}: {name}: no answer before the round's deadline"
            )),
            None => {
                // The script ran to its end: the phone's shell mangled it.
                shared.metrics.interrogation_errors_total.inc(&["parse"]);
                Err(format!(
                    "{serial}: {name}: the round's script ended without this output"
                ))
            }
        }
    };
    let thermal = match section("thermal") {
        Err(why) => Err(why),
        Ok(text) => match parse::thermal::parse_thermalservice(&text) {
            Ok(Thermal::Readings(t)) => Ok(Ok(t)),
            // Old phones: the zones in sysfs, one more request, only for them.
            Ok(Thermal::NoService) => {
                let cmd = parse::thermal::SYSFS_COMMAND;
                match tokio::time::timeout_at(until, client.shell(serial, cmd, protocol)).await {
                    Ok(Ok(out)) => Ok(parse::thermal::parse_sysfs(&out.stdout)),
                    Ok(Err(e)) => {
                        count(&e);
                        Err(e.to_string())
                    }
                    Err(_) => {
                        let e = client::Error::timed_out(cmd, serial);
                        count(&e);
                        Err(e.to_string())
                    }
                }
            }
            Err(e) => Ok(Err(e)),
        },
    };
    let mut round = PhoneRound {
        protocol: Some(protocol),
        ..PhoneRound::default()
    };
    match section("getprop").map(|t| parse::getprop::parse(&t)) {
        Ok(Ok(p)) => round.props = Some(p),
        Ok(Err(e)) => {
            parse_failed("getprop", &e);
            round.failure = Some(e.to_string());
        }
        Err(why) => round.failure = Some(why),
    }
    match section("battery").map(|t| parse::battery::parse(&t)) {
        Ok(Ok(b)) => round.battery = Some(b),
        Ok(Err(e)) => {
            // Every phone has a battery level: without it the battery rule cannot run.
            parse_failed("dumpsys battery", &e);
            round.missing_values.push(format!("battery level ({e})"));
        }
        Err(why) => log::debug!("{why}"),
    }
    match section("packages").map(|t| parse::packages::parse(&t)) {
        Ok(Ok(p)) => round.packages = p,
        Ok(Err(e)) => parse_failed("package versions", &e),
        Err(why) => log::debug!("{why}"),
    }
    match thermal {
        Ok(Ok(t)) => round.thermal = t,
        Ok(Err(e)) => parse_failed("temperatures", &e),
        Err(why) => log::debug!("{why}"),
    }
    match section("uptime").map(|t| parse::uptime::parse(&t)) {
        Ok(Ok(u)) => round.uptime = Some(u),
        Ok(Err(e)) => parse_failed("uptime", &e),
        Err(why) => log::debug!("{why}"),
    }
    round
}

/// Whether the adb server answered that the phone's transport is gone (`FAIL: device
/// offline`), which its device list may not show yet.
fn says_offline(e: &client::Error) -> bool {
    matches!(&e.kind, client::ErrorKind::Fail { message } if message.contains("device offline"))
}

/// One log line per device that appeared, disappeared or changed state, and per reason
/// set or cleared.
fn log_changes(old: &Snapshot, new: &Snapshot) {
    let states = |s: &Snapshot| -> BTreeMap<String, (String, Option<String>)> {
        s.devices
            .iter()
            .map(|d| (d.serial.clone(), (d.state_word().to_string(), d.unusable())))
            .collect()
    };
    let (before, after) = (states(old), states(new));
    for (serial, (state, unusable)) in &after {
        match before.get(serial) {
            None => log::info!("device {serial} appeared: {state}"),
            Some((was, _)) if was != state => {
                log::info!("device {serial} changed state: {was} -> {state}")
            }
            Some((_, was)) if was != unusable => match unusable {
                Some(why) => log::info!("device {serial} is not usable: {why}"),
                None => log::info!("device {serial} is usable"),
            },
            Some(_) => {}
        }
    }
    for serial in before.keys().filter(|s| !after.contains_key(*s)) {
        log::info!("device {serial} disappeared");
    }
    let diff = |kind: &str, was: &[String], now: &[String]| {
        for r in now.iter().filter(|r| !was.contains(r)) {
            log::info!("{kind} reason set: {r}");
        }
        for r in was.iter().filter(|r| !now.contains(r)) {
            log::info!("{kind} reason cleared: {r}");
        }
    };
    diff(
        "quarantine",
        &old.reasons.quarantined,
        &new.reasons.quarantined,
    );
    diff(
        "maintenance",
        &old.reasons.maintenance,
        &new.reasons.maintenance,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(serial: &str, state: &str) -> Listed {
        Listed {
            serial: serial.into(),
            state: Link::from_adb(state),
            state_detail: None,
            devpath: Some("usb:1-1".into()),
            product: Some("redfin".into()),
            model: Some("Pixel_5".into()),
            device: Some("redfin".into()),
            transport_id: Some(3),
        }
    }

    fn props(boot_completed: bool) -> Props {
        let mut p: Props = [
            ("ro.product.device", "redfin"),
            ("ro.build.id", "RQ3A.211001.001"),
            ("ro.build.version.incremental", "7641976"),
            ("ro.build.version.release", "11"),
            ("ro.product.cpu.abi", "arm64-v8a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if boot_completed {
            p.insert("sys.boot_completed".into(), "1".into());
        }
        p
    }

    fn battery(percent: f64, celsius: f64) -> Battery {
        Battery {
            percent: Some(percent),
            temperature_celsius: Some(celsius),
            voltage_mv: None,
            status: None,
            health: None,
            updates_stopped: false,
        }
    }

    fn temp(sensor: &str, celsius: f64) -> Temperature {
        Temperature {
            sensor: sensor.into(),
            celsius,
        }
    }

    fn answered(boot_completed: bool) -> PhoneRound {
        PhoneRound {
            props: Some(props(boot_completed)),
            battery: Some(battery(80.0, 28.0)),
            thermal: vec![temp("cpu0", 31.5)],
            uptime: Some(100.0),
            protocol: Some(ShellProtocol::V2),
            ..PhoneRound::default()
        }
    }

    #[test]
    fn battery_temperature_is_added_when_the_hal_has_none() {
        let b = battery(50.0, 28.0);
        assert_eq!(
            temperatures(&[temp("cpu0", 31.5)], Some(&b)),
            vec![temp("cpu0", 31.5), temp("battery", 28.0)]
        );
        assert_eq!(
            temperatures(&[temp("Battery", 27.0)], Some(&b)),
            vec![temp("Battery", 27.0)]
        );
        assert_eq!(temperatures(&[], None), vec![]);
    }

    #[test]
    fn a_phone_that_answered_is_usable_with_its_dimensions() {
        let d = build_device(&listed("S1", "device"), Some(&answered(true)), false);
        assert_eq!(d.unusable(), None);
        assert!(!d.booting);
        assert_eq!(d.build.as_deref(), Some("RQ3A.211001.001_7641976"));
        assert_eq!(d.device_type.as_deref(), Some("redfin"));
        assert_eq!(d.battery_percent, Some(80.0));
        assert_eq!(d.temperatures.len(), 2);
        assert_eq!(d.dimensions["device_type"], vec!["redfin".to_string()]);
    }

    #[test]
    fn a_booting_phone_is_not_usable() {
        let d = build_device(&listed("S1", "device"), Some(&answered(false)), false);
        assert_eq!(d.unusable().as_deref(), Some("booting"));
        assert!(d.dimensions.is_empty());
    }

    #[test]
    fn a_phone_not_in_device_state_is_not_usable() {
        let d = build_device(&listed("S1", "unauthorized"), None, false);
        assert_eq!(d.state_word(), "unauthorized");
        assert_eq!(d.unusable().as_deref(), Some("adb state unauthorized"));
    }

    #[test]
    fn a_phone_without_getprop_says_why() {
        let round = PhoneRound {
            failure: Some("timed out".into()),
            ..PhoneRound::default()
        };
        let d = build_device(&listed("S1", "device"), Some(&round), false);
        assert_eq!(d.unusable().as_deref(), Some("not answering: timed out"));
        let d = build_device(&listed("S1", "device"), None, false);
        assert_eq!(d.unusable().as_deref(), Some("not interrogated yet"));
    }

    #[test]
    fn a_transport_that_answers_device_offline_is_marked_so() {
        let round = PhoneRound {
            failure: Some("the round's script: the server said FAIL: device offline".into()),
            offline: true,
            ..PhoneRound::default()
        };
        let d = build_device(&listed("S1", "device"), Some(&round), false);
        assert!(matches!(
            d.fault,
            Some(Fault::NotAnswering { offline: true, .. })
        ));
        let fail = |message: &str| client::Error {
            kind: client::ErrorKind::Fail {
                message: message.into(),
            },
            request: "host:transport:S1".into(),
            serial: Some("S1".into()),
            detail: String::new(),
        };
        assert!(says_offline(&fail("device offline")));
        assert!(!says_offline(&fail("device 'S1' not found")));
        assert!(!says_offline(&client::Error::timed_out("x", "S1")));
    }

    #[test]
    fn the_name_falls_back_to_ro_build_product_then_ro_product_board() {
        let mut round = answered(true);
        let props = round.props.as_mut().unwrap();
        props.remove("ro.product.device");
        props.insert("ro.product.board".into(), "msm8998".into());
        let mut l = listed("S1", "device");
        l.device = None;
        assert_eq!(
            build_device(&l, Some(&round), false).device_type.as_deref(),
            Some("msm8998")
        );
        let props = round.props.as_mut().unwrap();
        props.insert("ro.build.product".into(), "sailfish".into());
        assert_eq!(
            build_device(&l, Some(&round), false).device_type.as_deref(),
            Some("sailfish")
        );
    }

    #[test]
    fn a_rebooting_phone_keeps_its_last_facts() {
        let d = build_device(&listed("S1", "offline"), Some(&answered(true)), true);
        assert_eq!(d.state_word(), "rebooting");
        assert_eq!(d.unusable().as_deref(), Some("rebooting after task"));
        assert_eq!(d.battery_percent, Some(80.0));
    }

    #[test]
    fn a_fresh_offline_is_shown_as_connecting() {
        let l = listed("S1", "offline");
        let now = Instant::now();
        assert_eq!(settled_state(&l, Some(&now)).state, Link::Connecting);
        let long_ago = now - OFFLINE_SETTLE;
        assert_eq!(settled_state(&l, Some(&long_ago)).state, Link::Offline);
        assert_eq!(
            settled_state(&listed("S1", "device"), Some(&now)).state,
            Link::Device
        );
    }

    #[test]
    fn no_permissions_is_quarantined_with_the_usb_remedy() {
        let text = "1-1.4                  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.4 transport_id:2\n";
        let listing = parse::devices_l::parse(text).unwrap();
        let d = build_device(&listing[0], None, false);
        assert_eq!(d.state_word(), "no permissions");
        let t = Thresholds {
            min_battery_percent: 30.0,
            max_temperature_celsius: 35.0,
        };
        let a = verdict::decide(
            &Memory::default(),
            &[d],
            &BTreeSet::new(),
            &Reasons::default(),
            &t,
        );
        assert_eq!(a.reasons.quarantined.len(), 1);
        assert!(
            a.reasons.quarantined[0].contains("/dev/bus/usb"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn phone_deadline_is_shorter_than_the_interval_and_capped() {
        assert_eq!(
            phone_deadline(Duration::from_secs(2)),
            Duration::from_millis(1500)
        );
        assert_eq!(phone_deadline(Duration::from_secs(300)), MAX_PHONE_DEADLINE);
    }

    /// The reboot after a task, end to end: the real adb server (`/usr/bin/adb`), a
    /// simulated phone that drops off on `reboot:` and comes back, and this watcher
    /// driven through the same channel the hooks use.
    #[test]
    fn reboot_after_task_through_the_real_adb_server() {
        use std::io::{BufRead, Read, Write};
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

        let args: Vec<String> = [
            "--no-bot",
            "--adb-server",
            &format!("127.0.0.1:{adb_port}"),
            "--interrogate-every",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let crate::config::Command::Run(config) =
            crate::config::parse(&args, &|_| None, "host").unwrap()
        else {
            panic!("expected a run configuration")
        };
        let (shared, commands) = Shared::new(*config);
        let (trigger, shutdown) = crate::shutdown::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        async fn wait(shared: &Shared, what: &str, f: impl Fn(&Snapshot) -> bool) {
            let start = Instant::now();
            while !f(&shared.snapshot()) {
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
            let ticker = Ticker::new(shared.config.interrogate_every).unwrap();
            let watcher = tokio::spawn(run(
                shared.clone(),
                commands,
                Reaper::new(),
                ticker,
                shutdown,
            ));
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
            let dims = shared.snapshot().dimensions.clone();
            assert!(!dims.is_empty());

            shared.send_device_command(DeviceCommand::TaskEnded);
            wait(&shared, "the rebooting reason", |s: &Snapshot| {
                s.reasons.maintenance.contains(&rebooting)
            })
            .await;
            // While it reboots, the dimensions keep their last values.
            assert_eq!(shared.snapshot().dimensions, dims);
            // It still answers, boot completed, but has not gone down yet: still rebooting.
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                shared.snapshot().reasons.maintenance.contains(&rebooting),
                "a phone that has not gone down yet counted as back: {:?}",
                shared.snapshot().reasons
            );
            wait(&shared, "the phone to come back", |s: &Snapshot| {
                usable(s) && !s.reasons.maintenance.contains(&rebooting)
            })
            .await;
            assert!(shared.snapshot().reasons.quarantined.is_empty());
            assert_eq!(shared.snapshot().dimensions, dims);
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
